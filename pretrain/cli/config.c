/* config.c: `dsa config`: print or check a resolved configuration.
 *
 * Reads a config (our format, an HF config.json or a reference-code config; or only the
 * defaults), applies --set overrides in order, validates the relations between values
 * (DSA-SPEC §2), and prints the fully resolved result in our format, which `dsa config
 * --config` reads back unchanged. With --check it also sizes the run (pretrain/sizing.h:
 * the parameter count and the host memory of a step, refusing sizes that are out of
 * range) and prints "ok: FILE" and the figures. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"
#include "core/mem.h"
#include "pretrain/cli/cli.h"
#include "pretrain/sizing.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa config [--config FILE] [--set key.path=value ...] [--check]\n\n"
            "Prints the resolved configuration as JSON: the defaults, then FILE (our format with\n"
            "sections model, data, optimizer, train, stages; or a Hugging Face config.json; or the\n"
            "DeepSeek reference code's config), then every --set in order. Validates it first.\n\n"
            "options:\n"
            "  --config FILE        config to read (default: built-in defaults only)\n"
            "  --set KEY=VALUE      override one key; KEY is a dotted path, stages by index;\n"
            "                       VALUE is JSON, or a plain string when it is not JSON\n"
            "  --check              only validate and size the run: print \"ok: FILE\", the parameter\n"
            "                       count and the memory of a training step; sizes that overflow or\n"
            "                       could never be allocated are refused, naming the key\n"
            "  -h, --help           this text\n\n"
            "examples:\n"
            "  dsa config --config configs/tiny.json --set model.index_topk=64 --set stages.1.lr=1e-4\n"
            "  dsa config --config config.json --set 'data.train=[\"a.h5\",\"b.h5\"]' --set train.out_dir=runs/x\n"
            "  dsa config --config configs/deepseek-v3.2.json --check\n");
}

static void print_sizing(const DsaSizing *z, const DsaConfig *cfg) {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    printf("  parameters   %lld in %lld tensors: %.3f GiB per fp32 copy\n", (long long)z->parameters,
           (long long)z->tensors, (double)z->param_bytes / gib);
    printf("  optimizer    %.3f GiB (gradients, AdamW m and v)\n", (double)z->optimizer_bytes / gib);
    printf("  activations  %.3f GiB (one micro-batch of stage %d: %lld x %lld tokens)\n",
           (double)z->workspace_bytes / gib, z->workspace_stage, (long long)cfg->train.micro_batch,
           (long long)cfg->stages[z->workspace_stage].seq_len);
    printf("  tokens       %.3f GiB (trainer ids, loader windows)\n", (double)z->token_bytes / gib);
    printf("  step         %.3f GiB of host memory in one process (%lld bytes)\n", (double)z->step_bytes / gib,
           (long long)z->step_bytes);
}

static DsaStatus run_config(const char *path, const char *const *sets, int n_sets, int check) {
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    if (!cfg) DSA_FAIL(DSA_ERR_NOMEM, "out of memory allocating a config");
    char *text = NULL;
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_config_load(cfg, path, sets, n_sets), done);
    DSA_TRY_GOTO(st, dsa_config_validate(cfg), done);
    if (check) {
        DsaSizing z;
        DSA_TRY_GOTO(st, dsa_sizing_train(cfg, &z), done);
        printf("ok: %s\n", path ? path : "<defaults>");
        print_sizing(&z, cfg);
    } else {
        DSA_TRY_GOTO(st, dsa_config_to_json(cfg, &text), done);
        printf("%s\n", text);
    }
done:
    free(text);
    dsa_free(cfg, sizeof *cfg);
    return st;
}

int cli_config(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},
        {"set", required_argument, 0, 's'},
        {"check", no_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *path = NULL;
    int check = 0, n_sets = 0;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    if (!sets) return cli_report("config", DSA_ERR_NOMEM);
    optind = 1;
    int opt, rc = -1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'k': check = 1; break;
        case 'h': usage(stdout); rc = 0; break;
        default: usage(stderr); rc = 2; break;
        }
    }
    if (rc < 0 && optind < argc) {
        fprintf(stderr, "dsa config: unexpected argument \"%s\" (the file goes after --config)\n\n", argv[optind]);
        usage(stderr);
        rc = 2;
    }
    if (rc < 0) rc = cli_report("config", run_config(path, sets, n_sets, check));
    free(sets);
    return rc;
}
