/* inspect.c: `dsa inspect`: describe token shards (data/inspect.h).
 *
 * One section per shard (an aligned table, or with --json one object per shard inside
 * {"files": [...], "total": {...}}), then a total line. A shard that cannot be read is
 * reported on stderr, naming the file and what was wrong, and the others are still
 * inspected; the exit code is then non-zero. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/strutil.h"
#include "data/inspect.h"
#include "data/loader.h"
#include "pretrain/cli/cli.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa inspect [options] SHARD...\n\n"
            "Describes token shards (files, directories of *.h5, or glob patterns): attributes,\n"
            "token and document counts, document lengths, compression, and a token histogram\n"
            "(distinct ids, id range, EOS share, most frequent ids, unigram entropy). Every token\n"
            "is decoded, so a corrupt chunk or an id >= vocab_size is found and named.\n\n"
            "options:\n"
            "  --top N      most frequent ids to list (default %d, at most %d; 0: none)\n"
            "  --verify     also read every token through the HDF5 filter pipeline (h5py's path)\n"
            "               and check it agrees with the fast reader\n"
            "  --json       print {\"files\": [one object per shard], \"total\": {...}} instead of tables\n"
            "  --quiet      no progress line (shown on stderr for shards of 16Mi tokens or more)\n\n"
            "Document lengths include the EOS token. \"docs w/o EOS\" counts documents whose last\n"
            "token is not eos_id: the first pieces of documents split across shards (normal), or\n"
            "data written by another tool. ratio = raw uint32 bytes / compressed chunk bytes.\n\n"
            "examples:\n  dsa inspect data/web-00000.h5\n  dsa inspect --verify --top 20 data/\n"
            "  dsa inspect --json 'data/*.h5' > stats.json\n",
            DSA_INSPECT_DEFAULT_TOP, DSA_INSPECT_MAX_TOP);
}

typedef struct {
    DsaInspectOptions opts;
    int json;
} InspectArgs;

/* Inspect one argument (possibly several shards); failures are reported and counted. */
static int inspect_arg(const InspectArgs *a, const char *arg, DsaShardStats *stats, DsaInspectTotals *totals,
                       cJSON *files, int *printed) {
    char **paths = NULL;
    int npaths = 0, rc = 0;
    DsaStatus st = dsa_data_expand_paths(&arg, 1, &paths, &npaths);
    if (st != DSA_OK) {
        if (a->json) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", arg);
            cJSON_AddStringToObject(e, "error", dsa_error_message());
            cJSON_AddItemToArray(files, e);
        }
        return cli_report("inspect", st);
    }
    for (int i = 0; i < npaths; i++) {
        dsa_error_clear();
        st = dsa_inspect_shard(paths[i], &a->opts, stats);
        if (st != DSA_OK) {
            if (a->json) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "path", paths[i]);
                cJSON_AddStringToObject(e, "error", dsa_error_message());
                cJSON_AddItemToArray(files, e);
            }
            int r = cli_report("inspect", st);
            rc = r > rc ? r : rc;
            continue;
        }
        dsa_inspect_totals_add(totals, stats);
        if (a->json) {
            cJSON_AddItemToArray(files, dsa_inspect_to_json(stats, a->opts.verify));
        } else {
            if ((*printed)++) printf("\n");
            dsa_inspect_print_text(stdout, stats, a->opts.verify);
            fflush(stdout);
        }
    }
    dsa_data_paths_free(paths, npaths);
    return rc;
}

int cli_inspect(int argc, char **argv) {
    InspectArgs a = {.opts = dsa_inspect_options_default()};
    static const struct option longopts[] = {
        {"top", required_argument, 0, 't'}, {"verify", no_argument, 0, 'v'}, {"json", no_argument, 0, 'j'},
        {"quiet", no_argument, 0, 'q'},     {"help", no_argument, 0, 'h'},   {0, 0, 0, 0},
    };
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        int64_t v = 0;
        DsaStatus st = DSA_OK;
        switch (opt) {
        case 't':
            st = dsa_parse_count(optarg, &v, "--top");
            if (st == DSA_OK && v > DSA_INSPECT_MAX_TOP)
                st = dsa_error_set(DSA_ERR_ARG, __FILE__, __LINE__, "--top %lld is more than the %d ids inspect lists",
                                   (long long)v, DSA_INSPECT_MAX_TOP);
            a.opts.top_n = (int)v;
            break;
        case 'v': a.opts.verify = 1; break;
        case 'j': a.json = 1; break;
        case 'q': a.opts.progress = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (st != DSA_OK) return cli_report("inspect", st);
    }
    if (optind >= argc) {
        fprintf(stderr, "dsa inspect: no shards given\n\n");
        usage(stderr);
        return 2;
    }
    DsaShardStats *stats = dsa_malloc(sizeof *stats);
    if (!stats) return cli_report("inspect", dsa_error_set(DSA_ERR_NOMEM, __FILE__, __LINE__, "out of memory"));
    DsaInspectTotals totals = {0};
    cJSON *files = a.json ? cJSON_CreateArray() : NULL;
    int rc = 0, printed = 0;
    for (int i = optind; i < argc; i++) {
        int r = inspect_arg(&a, argv[i], stats, &totals, files, &printed);
        rc = r > rc ? r : rc;
    }
    if (a.json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddItemToObject(doc, "files", files);
        cJSON_AddItemToObject(doc, "total", dsa_inspect_totals_to_json(&totals));
        char *text = cJSON_Print(doc);
        if (text) printf("%s\n", text);
        free(text);
        cJSON_Delete(doc);
    } else if (totals.num_files > 1) {
        printf("\n");
        dsa_inspect_print_totals(stdout, &totals);
    }
    dsa_free(stats, sizeof *stats);
    return rc;
}
