/* cli_convert.c: `dsa convert`: model conversions (pretrain/convert.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "pretrain/cli.h"
#include "pretrain/convert.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa convert --add-indexer SRC --out DIR [--index-n-heads N] [--index-head-dim D]\n"
            "                   [--index-topk K] [--seed S]\n\n"
            "Adds a freshly initialized lightning indexer to every layer of a dense MLA checkpoint\n"
            "(DeepSeek-V3 shape) and writes a DeepSeek-V3.2-shape checkpoint DIR/converted with\n"
            "DIR/latest naming it, ready for `dsa train --init DIR` (the dense warm-up).\n"
            "Source tensors are copied unchanged; config.json gets model_type deepseek_v32 and the\n"
            "index_n_heads, index_head_dim and index_topk keys.\n\n"
            "Initialization (DSA-SPEC 3.2): wq_b, wk, weights_proj ~ N(0, initializer_range^2),\n"
            "k_norm.weight = 1, k_norm.bias = 0, from the Philox stream of (seed, layer, tensor).\n\n"
            "options:\n"
            "  --add-indexer SRC    checkpoint dir, run dir (uses its latest) or Hugging Face dir\n"
            "  --out DIR            output directory (must not hold a conversion already)\n"
            "  --index-n-heads N    indexer heads H_I (default 64)\n"
            "  --index-head-dim D   indexer head dim d_I, a power of two >= qk_rope_head_dim (default 128)\n"
            "  --index-topk K       keys per query k (default 2048)\n"
            "  --seed S             initialization seed (default 0)\n"
            "  -h, --help           this text\n\n"
            "example:\n"
            "  dsa convert --add-indexer runs/demo/tiny-dense --out runs/demo/tiny-dsa-init \\\n"
            "      --index-n-heads 4 --index-head-dim 32 --index-topk 32\n");
}

int cli_convert(int argc, char **argv) {
    static const struct option longopts[] = {
        {"add-indexer", required_argument, 0, 'a'}, {"out", required_argument, 0, 'o'},
        {"index-n-heads", required_argument, 0, 'n'}, {"index-head-dim", required_argument, 0, 'd'},
        {"index-topk", required_argument, 0, 'k'},  {"seed", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0},
    };
    DsaAddIndexerOptions o = {.index_n_heads = 64, .index_head_dim = 128, .index_topk = 2048, .seed = 0};
    const char *src = NULL, *out = NULL;
    int rc = -1, opt;
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end = NULL;
        long long v = 0;
        switch (opt) {
        case 'a': src = optarg; break;
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
    if (rc < 0 && optind < argc) {
        fprintf(stderr, "dsa convert: unexpected argument \"%s\"\n\n", argv[optind]);
        usage(stderr);
        rc = 2;
    }
    if (rc < 0 && (!src || !out)) {
        fprintf(stderr, "dsa convert: --add-indexer SRC and --out DIR are required\n\n");
        usage(stderr);
        rc = 2;
    }
    if (rc < 0) {
        char written[1100];
        DsaStatus st = dsa_convert_add_indexer(src, out, &o, written, sizeof written);
        if (st == DSA_OK) printf("converted: %s\n", written);
        rc = cli_report("convert", st);
    }
    return rc;
}
