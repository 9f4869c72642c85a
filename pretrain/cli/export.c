/* export.c: `dsa export`: a DeepSeek-V3.2-layout Hugging Face checkpoint
 * (pretrain/export.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/strutil.h"
#include "pretrain/cli/cli.h"
#include "pretrain/export.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa export SRC --out DIR [--dtype bf16|fp8|f32] [--shard-size BYTES] [--quiet]\n\n"
            "Writes the model of SRC (checkpoint dir, run dir (its latest), or Hugging Face dir) as a\n"
            "DeepSeek-V3.2-layout Hugging Face checkpoint in DIR: HF tensor names (self_attn.indexer.*\n"
            "included), config.json with model_type deepseek_v32, the index_* keys and\n"
            "num_nextn_predict_layers 0, shards with model.safetensors.index.json. A model without\n"
            "an indexer is written in DeepSeek-V3 layout. Tensors are streamed one at a time; DIR is\n"
            "written as a temporary sibling and renamed at the end (an existing non-empty DIR is\n"
            "refused).\n\n"
            "dtypes (DSA-SPEC 3.1, 3.2):\n"
            "  fp8   e4m3 + F32 weight_scale_inv, power-of-two scales per 128x128 block, for the\n"
            "        attention, indexer wq_b/wk and FFN/expert projections; embeddings, lm_head, norms,\n"
            "        router and indexer weights_proj bf16; e_score_correction_bias F32\n"
            "  bf16  everything bf16 except e_score_correction_bias (F32)\n"
            "  f32   everything F32 (exact round trips)\n"
            "  default: fp8 when the model came from an FP8 checkpoint, else bf16\n\n"
            "options:\n"
            "  --out DIR            output directory (absent or empty)\n"
            "  --dtype D            bf16, fp8 or f32 (default: see above)\n"
            "  --shard-size BYTES   largest shard, e.g. 5GB, 500MB, 2GiB, 1000000 (default: one file)\n"
            "  --quiet              no progress or log lines (warnings and errors still show); only\n"
            "                       the result line \"exported: DIR (DTYPE)\" is printed\n"
            "  -h, --help           this text\n\n"
            "example:\n"
            "  dsa export runs/demo/tiny-dsa --out runs/demo/tiny-dsa-hf --shard-size 5GB\n");
}

/* "5GB", "500MB", "2GiB", "123": bytes (a trailing B is optional). */
static DsaStatus parse_bytes(const char *text, uint64_t *out) {
    char buf[64];
    size_t n = strlen(text);
    if (n == 0 || n >= sizeof buf) DSA_FAIL(DSA_ERR_ARG, "--shard-size \"%s\": expected bytes such as 5GB", text);
    memcpy(buf, text, n + 1);
    if (n > 1 && (buf[n - 1] == 'B' || buf[n - 1] == 'b')) buf[n - 1] = 0;
    int64_t v = 0;
    DSA_TRY(dsa_parse_count(buf, &v, "--shard-size"));
    if (v <= 0) DSA_FAIL(DSA_ERR_ARG, "--shard-size \"%s\": must be positive", text);
    *out = (uint64_t)v;
    return DSA_OK;
}

int cli_export(int argc, char **argv) {
    static const struct option longopts[] = {
        {"out", required_argument, 0, 'o'},   {"dtype", required_argument, 0, 'd'},
        {"shard-size", required_argument, 0, 's'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    DsaExportOptions o = {.dtype = DSA_EXPORT_AUTO, .shard_bytes = 0, .progress = true};
    const char *out = NULL;
    int rc = -1, opt;
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'o': out = optarg; break;
        case 'd':
            if (dsa_export_dtype_parse(optarg, &o.dtype) != DSA_OK) rc = cli_report("export", DSA_ERR_ARG);
            break;
        case 's':
            if (parse_bytes(optarg, &o.shard_bytes) != DSA_OK) rc = cli_report("export", DSA_ERR_ARG);
            break;
        case 'q': o.progress = false; break;
        case 'h': usage(stdout); rc = 0; break;
        default: usage(stderr); rc = 2; break;
        }
    }
    const char *src = NULL;
    if (rc < 0 && optind < argc) src = argv[optind++];
    if (rc < 0 && optind < argc) {
        fprintf(stderr, "dsa export: unexpected argument \"%s\"\n\n", argv[optind]);
        usage(stderr);
        rc = 2;
    }
    if (rc < 0 && (!src || !out)) {
        fprintf(stderr, "dsa export: SRC and --out DIR are required\n\n");
        usage(stderr);
        rc = 2;
    }
    if (rc < 0) {
        DsaExportDType used = DSA_EXPORT_AUTO;
        if (!o.progress) dsa_log_set_level(DSA_LOG_WARN); /* --quiet: no log lines but warnings, as train */
        DsaStatus st = dsa_export(src, out, &o, &used);
        if (st == DSA_OK) printf("exported: %s (%s)\n", out, dsa_export_dtype_name(used));
        rc = cli_report("export", st);
    }
    return rc;
}
