/* stream.c: `dsa stream`: run the streaming loader and print what it yields.
 *
 * One line per window (epoch, position, window index, first tokens, a checksum of the
 * whole window), then the cursor to resume from and the throughput. With --save-cursor
 * and --resume two invocations can be chained to check that a resumed stream continues
 * exactly where the first stopped. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strutil.h"
#include "data/loader.h"
#include "pretrain/cli/cli.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa stream [options] SHARD...\n\n"
            "Streams windows of seq_len + 1 tokens from shards (files, directories or glob patterns)\n"
            "in the loader's shuffled, per-rank order, and prints one line per window.\n\n"
            "options:\n"
            "  --seq-len N        tokens per window minus one (default 131072; K/Ki suffixes ok)\n"
            "  --windows N        windows to print (default: one epoch of this rank)\n"
            "  --seed N           order seed (default 0)\n"
            "  --rank R --world W this process's share of the data (default 0 of 1)\n"
            "  --prefetch N       windows decoded ahead by the background thread (default 2)\n"
            "  --segment-ids      also print the number of documents in each window\n"
            "  --vocab-size N     refuse shards whose vocabulary exceeds the model's N\n"
            "  --resume FILE      continue from a cursor saved by --save-cursor\n"
            "  --save-cursor FILE write the cursor after the last window (JSON)\n"
            "  --quiet            only the summary\n\n"
            "example:\n  dsa stream --seq-len 4096 --windows 8 runs/demo/data/\n");
}

/* FNV-1a over the window's tokens: a cheap fingerprint to compare runs. */
static uint64_t window_checksum(const uint32_t *tokens, int64_t n) {
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++) h = (h ^ tokens[i]) * 1099511628211ull;
    return h;
}

static DsaStatus load_cursor(const char *path, DsaLoaderCursor *cursor) {
    char *text = NULL;
    size_t len = 0;
    DSA_TRY(dsa_file_read_all(path, &text, &len));
    cJSON *json = cJSON_Parse(text);
    dsa_free(text, len + 1);
    if (!json) DSA_FAIL(DSA_ERR_FORMAT, "%s: not valid JSON", path);
    DsaStatus st = dsa_loader_cursor_from_json(json, cursor, path);
    cJSON_Delete(json);
    return st;
}

static DsaStatus save_cursor(const char *path, const DsaLoaderCursor *cursor) {
    cJSON *json = dsa_loader_cursor_to_json(cursor);
    char *text = json ? cJSON_Print(json) : NULL;
    cJSON_Delete(json);
    if (!text) DSA_FAIL(DSA_ERR_NOMEM, "cannot format the cursor");
    FILE *f = fopen(path, "w");
    int ok = f && fprintf(f, "%s\n", text) > 0;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    if (!ok) DSA_FAIL(DSA_ERR_IO, "%s: cannot write the cursor", path);
    return DSA_OK;
}

typedef struct {
    DsaLoaderOptions opts;
    int64_t windows; /* -1: one epoch */
    const char *resume, *save;
    int quiet;
} StreamArgs;

static DsaStatus run_stream(StreamArgs *a, char **args, int nargs) {
    char **paths = NULL;
    int npaths = 0;
    DSA_TRY(dsa_data_expand_paths((const char *const *)args, nargs, &paths, &npaths));
    a->opts.paths = (const char *const *)paths;
    a->opts.num_paths = npaths;
    DsaLoader *l = NULL;
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_loader_open(&l, &a->opts), done);
    if (a->resume) {
        DsaLoaderCursor c;
        DSA_TRY_GOTO(st, load_cursor(a->resume, &c), done);
        DSA_TRY_GOTO(st, dsa_loader_seek(l, &c), done);
    }
    int64_t n = a->windows >= 0 ? a->windows : dsa_loader_rank_windows(l);
    int64_t len = a->opts.seq_len + 1;
    printf("# %d shard(s), %lld tokens, %lld windows of %lld tokens, %lld per rank per epoch (rank %d of %d)\n", npaths,
           (long long)dsa_loader_total_tokens(l), (long long)dsa_loader_num_windows(l), (long long)len,
           (long long)dsa_loader_rank_windows(l), a->opts.rank, a->opts.world);
    double t0 = dsa_time_now();
    for (int64_t i = 0; i < n; i++) {
        DsaWindow w;
        DSA_TRY_GOTO(st, dsa_loader_next(l, &w), done);
        if (a->quiet) continue;
        printf("epoch %llu pos %llu window %lld tokens %u %u %u %u ... checksum %016llx", (unsigned long long)w.epoch,
               (unsigned long long)w.position, (long long)w.window, w.tokens[0], len > 1 ? w.tokens[1] : 0,
               len > 2 ? w.tokens[2] : 0, len > 3 ? w.tokens[3] : 0,
               (unsigned long long)window_checksum(w.tokens, len));
        if (w.segment_ids) printf(" docs %d", w.segment_ids[len - 1] + 1);
        printf("\n");
    }
    double secs = dsa_time_now() - t0;
    DsaLoaderCursor c = dsa_loader_cursor(l);
    printf("# %lld windows, %.3f s, %.1f M tokens/s; next: epoch %llu position %llu\n", (long long)n, secs,
           secs > 0 ? (double)(n * len) / secs / 1e6 : 0.0, (unsigned long long)c.epoch, (unsigned long long)c.position);
    if (a->save) DSA_TRY_GOTO(st, save_cursor(a->save, &c), done);
done:
    dsa_loader_close(l);
    dsa_data_paths_free(paths, npaths);
    return st;
}

int cli_stream(int argc, char **argv) {
    StreamArgs a = {.opts = dsa_loader_options_default(), .windows = -1};
    static const struct option longopts[] = {
        {"seq-len", required_argument, 0, 'L'}, {"windows", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'},    {"rank", required_argument, 0, 'r'},
        {"world", required_argument, 0, 'w'},   {"prefetch", required_argument, 0, 'p'},
        {"segment-ids", no_argument, 0, 'S'},   {"vocab-size", required_argument, 0, 'V'},
        {"resume", required_argument, 0, 'R'},  {"save-cursor", required_argument, 0, 'C'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        int64_t v = 0;
        DsaStatus st = DSA_OK;
        switch (opt) {
        case 'L': st = dsa_parse_count(optarg, &a.opts.seq_len, "--seq-len"); break;
        case 'n': st = dsa_parse_count(optarg, &a.windows, "--windows"); break;
        case 's': st = dsa_parse_count(optarg, &v, "--seed"); a.opts.seed = (uint64_t)v; break;
        case 'r': st = dsa_parse_count(optarg, &v, "--rank"); a.opts.rank = (int)v; break;
        case 'w': st = dsa_parse_count(optarg, &v, "--world"); a.opts.world = (int)v; break;
        case 'p': st = dsa_parse_count(optarg, &v, "--prefetch"); a.opts.prefetch = (int)v; break;
        case 'V': st = dsa_parse_count(optarg, &v, "--vocab-size"); a.opts.vocab_size = (uint64_t)v; break;
        case 'S': a.opts.segment_ids = 1; break;
        case 'R': a.resume = optarg; break;
        case 'C': a.save = optarg; break;
        case 'q': a.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (st != DSA_OK) return cli_report("stream", st);
    }
    if (optind >= argc) {
        fprintf(stderr, "dsa stream: no shards given\n\n");
        usage(stderr);
        return 2;
    }
    return cli_report("stream", run_stream(&a, argv + optind, argc - optind));
}
