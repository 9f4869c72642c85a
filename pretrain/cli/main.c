/* main.c: the `dsa` command: dispatches to a subcommand (one file per subcommand in pretrain/cli/).
 *
 * Every subcommand is also a library call in libdsa.a; this file only parses the
 * subcommand name, prints help, and maps errors to exit codes. */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "core/strutil.h"
#include "data/shard.h"
#include "pretrain/cli/cli.h"
#include "pretrain/trainer.h"

/* The release, and the versions of the files dsa writes (each refuses other versions). */
#define DSA_VERSION "0.1.0"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Subcommand;

static const Subcommand subcommands[] = {
    {"pack", cli_pack, "build HDF5+zstd token shards from text, JSONL, raw tokens, Megatron, or synthetic tasks"},
    {"inspect", cli_inspect, "describe shards: attributes, tokens, documents, compression, histogram; --verify"},
    {"stream", cli_stream, "run the streaming loader over shards and print what it yields"},
    {"convert", cli_convert, "import an HF checkpoint (sharded, bf16, FP8), streamed; --add-indexer adds an indexer"},
    {"train", cli_train, "train a model: stages, gradient accumulation, AdamW, checkpoints, exact resume"},
    {"export", cli_export, "write a DeepSeek-V3.2-layout Hugging Face checkpoint (bf16, FP8 or f32, sharded)"},
    {"eval", cli_eval, "held-out loss (dense and sparse), indexer KL and recall, task accuracy; --grads"},
    {"config", cli_config, "print or check a resolved configuration (HF config.json keys, --set overrides)"},
    {"plan", cli_plan, "plan a run on GPUs: bytes per device, FLOPs, communication, time; searches layouts"},
    {"bench", cli_bench, "benchmarks: loader, training steps (tokens/s, GFLOP/s, memory), SGEMM, dense vs sparse"},
    {"info", cli_info, "show the build (CUDA compiled?) and the devices found"},
};
enum { NUM_SUBCOMMANDS = sizeof subcommands / sizeof subcommands[0] };

static void print_usage(FILE *out) {
    fprintf(out,
            "dsa: continued pre-training of dense MLA models into DeepSeek Sparse Attention\n\n"
            "usage: dsa <command> [options]    (dsa <command> --help for its options)\n"
            "       dsa --version\n\ncommands:\n");
    for (int i = 0; i < NUM_SUBCOMMANDS; i++) fprintf(out, "  %-9s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(out, "\nThe math the help texts cite as \"DSA-SPEC N\" is docs/DSA-SPEC.md in the repository;\n"
                 "README.md walks through the commands, docs/DESIGN.md describes the architecture.\n");
}

static void print_version(void) {
    printf("dsa %s\nformats: shards %d, run config %d, trainer state %d\nCUDA: %s\n", DSA_VERSION,
           DSA_SHARD_FORMAT_VERSION, DSA_CONFIG_FORMAT_VERSION, DSA_TRAIN_STATE_VERSION,
#ifdef DSA_HAVE_CUDA
           "compiled (dsa info lists the devices)"
#else
           "not compiled (a CPU build)"
#endif
    );
}

int cli_report(const char *sub, DsaStatus status) {
    if (status == DSA_OK) return 0;
    fprintf(stderr, "dsa %s: %s:\n%s", sub, dsa_status_name(status), dsa_error_message());
    return status == DSA_ERR_ARG ? 2 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        print_version();
        return 0;
    }
    for (int i = 0; i < NUM_SUBCOMMANDS; i++) {
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].run(argc - 1, argv + 1);
    }
    const char *names[NUM_SUBCOMMANDS + 1];
    for (int i = 0; i < NUM_SUBCOMMANDS; i++) names[i] = subcommands[i].name;
    names[NUM_SUBCOMMANDS] = NULL;
    const char *guess = dsa_closest_word(argv[1], names);
    fprintf(stderr, "dsa: unknown command \"%s\"%s%s%s\n", argv[1], guess ? "; did you mean \"" : "", guess ? guess : "",
            guess ? "\"?" : "");
    print_usage(stderr);
    return 2;
}
