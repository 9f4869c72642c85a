/* convert.c: `dsa convert`: the streamed import of a checkpoint and adding a
 * lightning indexer (pretrain/convert.h). */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "pretrain/cli/cli.h"
#include "pretrain/convert.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa convert --add-indexer SRC --out DIR [--index-n-heads N] [--index-head-dim D]\n"
            "                   [--index-topk K] [--seed S] [--quiet]\n"
            "       dsa convert SRC --out DIR [--quiet]\n\n"
            "Imports the checkpoint SRC into DIR/converted (with DIR/latest naming it), ready for\n"
            "`dsa train --init DIR`, `dsa eval` and `dsa export`. SRC is a Hugging Face directory\n"
            "(config.json of deepseek_v2, deepseek_v3 or deepseek_v32, one model.safetensors or shards\n"
            "with model.safetensors.index.json; F32, BF16, F16, or FP8 e4m3 with weight_scale_inv\n"
            "block scales), a checkpoint directory or a run directory (its latest). Tensors are\n"
            "streamed one at a time (memory of the order of the largest tensor) and written F32;\n"
            "FP8 weights are dequantized (DSA-SPEC 3.2). The MTP layer is dropped\n"
            "(num_nextn_predict_layers 0); the source's quantization_config is kept so that\n"
            "`dsa export` writes FP8 again by default.\n\n"
            "With --add-indexer, also adds a freshly initialized lightning indexer to every layer of\n"
            "a dense MLA model: config.json gets model_type deepseek_v32 and the index_n_heads,\n"
            "index_head_dim and index_topk keys, ready for the dense warm-up.\n"
            "Initialization (DSA-SPEC 3.2): wq_b, wk, weights_proj ~ N(0, initializer_range^2),\n"
            "k_norm.weight = 1, k_norm.bias = 0, from the Philox stream of (seed, layer, tensor).\n\n"
            "options:\n"
            "  --add-indexer SRC    add an indexer to SRC (checkpoint dir, run dir or Hugging Face dir)\n"
            "  --out DIR            output directory (must not hold a conversion already)\n"
            "  --index-n-heads N    indexer heads H_I (default 64)\n"
            "  --index-head-dim D   indexer head dim d_I, a power of two >= qk_rope_head_dim (default 128)\n"
            "  --index-topk K       keys per query k (default 2048)\n"
            "  --seed S             initialization seed (default 0)\n"
            "  --quiet              no progress or log lines (warnings and the result line stay)\n"
            "  -h, --help           this text\n\n"
            "examples:\n"
            "  dsa convert hf/DeepSeek-V3.1-Terminus --out runs/v31\n"
            "  dsa convert --add-indexer runs/demo/tiny-dense --out runs/demo/tiny-dsa-init \\\n"
            "      --index-n-heads 4 --index-head-dim 32 --index-topk 32\n");
}

int cli_convert(int argc, char **argv) {
    static const struct option longopts[] = {
        {"add-indexer", required_argument, 0, 'a'}, {"out", required_argument, 0, 'o'},
        {"index-n-heads", required_argument, 0, 'n'}, {"index-head-dim", required_argument, 0, 'd'},
        {"index-topk", required_argument, 0, 'k'},  {"seed", required_argument, 0, 's'},
        {"quiet", no_argument, 0, 'q'},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    DsaAddIndexerOptions o = {.index_n_heads = 64, .index_head_dim = 128, .index_topk = 2048, .seed = 0};
    const char *src = NULL, *out = NULL;
    bool add = false, progress = true;
    int rc = -1, opt;
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end = NULL;
        long long v = 0;
        switch (opt) {
        case 'a': src = optarg, add = true; break;
        case 'q': progress = false; break;
        case 'o': out = optarg; break;
        case 'n':
        case 'd':
        case 'k':
        case 's':
            v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || v < (opt == 's' ? 0 : 1)) {
                fprintf(stderr, "dsa convert: --%s wants a %s integer, got \"%s\"\n",
                        opt == 'n' ? "index-n-heads" : opt == 'd' ? "index-head-dim" : opt == 'k' ? "index-topk" : "seed",
                        opt == 's' ? "non-negative" : "positive", optarg);
                rc = 2;
            } else if (opt == 'n') {
                o.index_n_heads = v;
            } else if (opt == 'd') {
                o.index_head_dim = v;
            } else if (opt == 'k') {
                o.index_topk = v;
            } else {
                o.seed = (uint64_t)v;
            }
            break;
        case 'h': usage(stdout); rc = 0; break;
        default: usage(stderr); rc = 2; break;
        }
    }
    if (rc < 0 && !add && optind < argc) src = argv[optind++];
    if (rc < 0 && optind < argc) {
        fprintf(stderr, "dsa convert: unexpected argument \"%s\"\n\n", argv[optind]);
        usage(stderr);
        rc = 2;
    }
    if (rc < 0 && (!src || !out)) {
        fprintf(stderr, "dsa convert: SRC (or --add-indexer SRC) and --out DIR are required\n\n");
        usage(stderr);
        rc = 2;
    }
    if (rc < 0) {
        char written[1100];
        if (!progress) dsa_log_set_level(DSA_LOG_WARN); /* --quiet: no log lines but warnings, as export */
        DsaStatus st = dsa_convert_import(src, out, add ? &o : NULL, progress, written, sizeof written);
        if (st == DSA_OK) printf("converted: %s\n", written);
        rc = cli_report("convert", st);
    }
    return rc;
}
