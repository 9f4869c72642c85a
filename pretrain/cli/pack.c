/* pack.c: `dsa pack`: build token shards from text, JSON lines, raw token files,
 * Megatron-LM datasets or synthetic recall tasks (data/pack.h does the work).
 *
 * Parses the flags into DsaPackOptions, runs dsa_pack_run and prints a summary:
 * shards, documents, tokens, bytes on disk and time. Usage errors exit 2 with a
 * message; runtime errors print the error trail through cli_report. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/strutil.h"
#include "data/pack.h"
#include "pretrain/cli/cli.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa pack --format FMT --out PREFIX [options] INPUT...\n\n"
            "Packs documents into HDF5 token shards PREFIX-00000.h5, PREFIX-00001.h5, ... (uint32\n"
            "tokens, zstd chunks, every document ended by EOS) and, last, PREFIX.manifest.json,\n"
            "which marks the set finished (readers refuse the shards of a pack that was stopped;\n"
            "running the same pack again replaces them). INPUT is a file or a directory (its\n"
            "regular files, sorted by name). JSON lines holding a NUL character are refused.\n\n"
            "formats:\n"
            "  text       each file is one document, byte-tokenized (bytes-v1: vocab 257, EOS 256)\n"
            "  jsonl      one JSON object per line: {\"text\": \"...\"} (byte-tokenized) or\n"
            "             {\"input_ids\": [..]} (pre-tokenized); one kind per run, blank lines skipped\n"
            "  u16, u32   raw little-endian token ids; eos-id tokens separate documents; INPUT - reads\n"
            "             standard input (a pipe; tools/tokenize_pack.py feeds a tokenizer.json's ids so)\n"
            "  megatron   Megatron-LM indexed dataset: PREFIX, PREFIX.bin or PREFIX.idx (a directory:\n"
            "             every *.idx in it); one Megatron document = one document\n"
            "  synthetic  generated long-range recall tasks (synthetic-v1; no INPUT)\n\n"
            "options:\n"
            "  --format FMT          input format (required)\n"
            "  --out PREFIX          output prefix; its directory is created (required)\n"
            "  --shard-tokens N      tokens per shard (default 64Mi); longer documents are split\n"
            "  --chunk-tokens N      HDF5 chunk size in tokens (default 16384)\n"
            "  --zstd-level N        zstd level 1..22 (default 3)\n"
            "  --vocab-size N        pre-tokenized formats: vocabulary size (required);\n"
            "                        synthetic: V (default 512, at least 64)\n"
            "  --eos-id N            pre-tokenized formats: end-of-document id (required)\n"
            "  --tokenizer NAME      pre-tokenized formats: name stored in the shards (default external)\n"
            "  --text-key KEY        jsonl: key of the text (default text; '' for none)\n"
            "  --ids-key KEY         jsonl: key of the token ids (default input_ids; '' for none)\n"
            "  --force               replace the existing finished set PREFIX-*.h5\n"
            "  --quiet               no progress line\n\n"
            "synthetic options:\n"
            "  --tokens N            total tokens, rounded up to whole documents (default 16Mi)\n"
            "  --doc-tokens N        tokens per document including EOS (default 128Ki)\n"
            "  --distances LIST      record-to-answer distances, e.g. 256,4Ki,32Ki (default 64,256,\n"
            "                        1Ki,4Ki,... up to doc-tokens - 10)\n"
            "  --task kv|needle|mixed  key-value recall, needle retrieval, or both alternating\n"
            "  --queries-per-doc N   queries per document (default 16)\n"
            "  --seed N              generator seed (default 0)\n\n"
            "Numbers take K/M/G (x1000) or Ki/Mi/Gi (x1024) suffixes. Pre-tokenized documents that\n"
            "already end with eos-id keep a single EOS. The same inputs give identical tokens.\n\n"
            "examples:\n"
            "  dsa pack --format text --out data/books books/\n"
            "  dsa pack --format jsonl --out data/web web-00.jsonl web-01.jsonl\n"
            "  dsa pack --format jsonl --vocab-size 129280 --eos-id 1 --out data/tok tokenized.jsonl\n"
            "  dsa pack --format u16 --vocab-size 50257 --eos-id 50256 --out data/owt train.bin\n"
            "  dsa pack --format u32 --vocab-size 129280 --eos-id 1 --tokenizer deepseek-v3 --out data/v3 ids.u32\n"
            "  my_tokenizer | dsa pack --format u32 --vocab-size 129280 --eos-id 1 --tokenizer deepseek-v3 --out data/v3 -\n"
            "  dsa pack --format megatron --vocab-size 129280 --eos-id 1 --out data/mg corpus_text_document\n"
            "  dsa pack --format synthetic --task mixed --tokens 64Mi --doc-tokens 128Ki \\\n"
            "           --distances 256,4Ki,32Ki,128000 --seed 1 --out data/recall\n");
}

enum {
    OPT_FORMAT = 256,
    OPT_OUT,
    OPT_SHARD_TOKENS,
    OPT_CHUNK_TOKENS,
    OPT_ZSTD_LEVEL,
    OPT_VOCAB,
    OPT_EOS,
    OPT_TOKENIZER,
    OPT_TEXT_KEY,
    OPT_IDS_KEY,
    OPT_FORCE,
    OPT_TOKENS,
    OPT_DOC_TOKENS,
    OPT_DISTANCES,
    OPT_TASK,
    OPT_SEED,
    OPT_QUERIES,
};

static const struct option longopts[] = {
    {"format", required_argument, 0, OPT_FORMAT},
    {"out", required_argument, 0, OPT_OUT},
    {"shard-tokens", required_argument, 0, OPT_SHARD_TOKENS},
    {"chunk-tokens", required_argument, 0, OPT_CHUNK_TOKENS},
    {"zstd-level", required_argument, 0, OPT_ZSTD_LEVEL},
    {"vocab-size", required_argument, 0, OPT_VOCAB},
    {"eos-id", required_argument, 0, OPT_EOS},
    {"tokenizer", required_argument, 0, OPT_TOKENIZER},
    {"text-key", required_argument, 0, OPT_TEXT_KEY},
    {"ids-key", required_argument, 0, OPT_IDS_KEY},
    {"force", no_argument, 0, OPT_FORCE},
    {"quiet", no_argument, 0, 'q'},
    {"help", no_argument, 0, 'h'},
    {"tokens", required_argument, 0, OPT_TOKENS},
    {"doc-tokens", required_argument, 0, OPT_DOC_TOKENS},
    {"distances", required_argument, 0, OPT_DISTANCES},
    {"task", required_argument, 0, OPT_TASK},
    {"seed", required_argument, 0, OPT_SEED},
    {"queries-per-doc", required_argument, 0, OPT_QUERIES},
    {0, 0, 0, 0},
};

/* Parse one option into `o`; `synthetic_flag` is set to the option's name when it is a
 * synthetic-only flag. */
static DsaStatus parse_option(int opt, const char *arg, DsaPackOptions *o, int *have_format,
                              const char **synthetic_flag) {
    int64_t v = 0;
    switch (opt) {
    case OPT_FORMAT: *have_format = 1; return dsa_pack_format_parse(arg, &o->format);
    case OPT_OUT: o->out_prefix = arg; return DSA_OK;
    case OPT_SHARD_TOKENS: return dsa_parse_count(arg, &o->shard_tokens, "--shard-tokens");
    case OPT_CHUNK_TOKENS: return dsa_parse_count(arg, &o->chunk_tokens, "--chunk-tokens");
    case OPT_ZSTD_LEVEL:
        DSA_TRY(dsa_parse_count(arg, &v, "--zstd-level"));
        if (v < 1 || v > 22) DSA_FAIL(DSA_ERR_ARG, "--zstd-level %lld out of range [1, 22]", (long long)v);
        o->zstd_level = (int)v;
        return DSA_OK;
    case OPT_VOCAB:
        DSA_TRY(dsa_parse_count(arg, &v, "--vocab-size"));
        if (v < 1) DSA_FAIL(DSA_ERR_ARG, "--vocab-size must be >= 1");
        o->vocab_size = (uint64_t)v;
        return DSA_OK;
    case OPT_EOS: return dsa_parse_count(arg, &o->eos_id, "--eos-id");
    case OPT_TOKENIZER: o->tokenizer = arg; return DSA_OK;
    case OPT_TEXT_KEY: o->text_key = arg; return DSA_OK;
    case OPT_IDS_KEY: o->ids_key = arg; return DSA_OK;
    case OPT_FORCE: o->overwrite = 1; return DSA_OK;
    case 'q': o->show_progress = 0; return DSA_OK;
    default: break;
    }
    DsaSyntheticOptions *so = &o->synthetic;
    switch (opt) {
    case OPT_TOKENS: *synthetic_flag = "--tokens"; return dsa_parse_count(arg, &so->total_tokens, "--tokens");
    case OPT_DOC_TOKENS: *synthetic_flag = "--doc-tokens"; return dsa_parse_count(arg, &so->doc_tokens, "--doc-tokens");
    case OPT_DISTANCES:
        *synthetic_flag = "--distances";
        return dsa_parse_count_list(arg, so->distances, DSA_SYN_MAX_DISTANCES, &so->n_distances, "--distances");
    case OPT_TASK: *synthetic_flag = "--task"; return dsa_synthetic_task_parse(arg, &so->task);
    case OPT_SEED:
        *synthetic_flag = "--seed";
        DSA_TRY(dsa_parse_count(arg, &v, "--seed"));
        so->seed = (uint64_t)v;
        return DSA_OK;
    case OPT_QUERIES:
        *synthetic_flag = "--queries-per-doc";
        return dsa_parse_count(arg, &so->queries_per_doc, "--queries-per-doc");
    default: DSA_FAIL(DSA_ERR_ARG, "unknown option");
    }
}

static void print_summary(const DsaPackOptions *o, const DsaShardSetStats *stats, double seconds) {
    int64_t disk = 0;
    char first[DSA_PATH_CAP + 32], last[DSA_PATH_CAP + 32];
    for (int i = 0; i < stats->num_shards; i++) {
        struct stat sb;
        dsa_shardset_path(last, sizeof last, o->out_prefix, i);
        if (stat(last, &sb) == 0) disk += sb.st_size;
    }
    dsa_shardset_path(first, sizeof first, o->out_prefix, 0);
    char manifest[DSA_PATH_CAP + 32];
    dsa_shardset_manifest_path(manifest, sizeof manifest, o->out_prefix);
    printf("dsa pack: %d shard%s (%s%s%s), set manifest %s\n", stats->num_shards, stats->num_shards == 1 ? "" : "s",
           first, stats->num_shards > 1 ? " .. " : "", stats->num_shards > 1 ? last : "", manifest);
    printf("  documents  %lld\n  tokens     %lld (including one EOS per document)\n", (long long)stats->num_docs,
           (long long)stats->num_tokens);
    printf("  on disk    %.2f MiB (%.2f bits/token; raw uint32 is 32)\n", (double)disk / (1 << 20),
           stats->num_tokens ? 8.0 * (double)disk / (double)stats->num_tokens : 0.0);
    printf("  time       %.2f s (%.3g tokens/s)\n", seconds, seconds > 0 ? (double)stats->num_tokens / seconds : 0.0);
}

int cli_pack(int argc, char **argv) {
    DsaPackOptions o;
    dsa_pack_options_default(&o);
    o.show_progress = 1;
    int have_format = 0, opt;
    const char *synthetic_flag = NULL;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            return 0;
        }
        if (opt == '?') {
            fprintf(stderr, "(see dsa pack --help)\n");
            return 2;
        }
        DsaStatus st = parse_option(opt, optarg, &o, &have_format, &synthetic_flag);
        if (st != DSA_OK) return cli_report("pack", st);
    }
    if (!have_format || !o.out_prefix) {
        fprintf(stderr, "dsa pack: %s is required (see dsa pack --help)\n", !have_format ? "--format" : "--out");
        return 2;
    }
    if (synthetic_flag && o.format != DSA_PACK_SYNTHETIC) {
        fprintf(stderr, "dsa pack: %s is only for --format synthetic\n", synthetic_flag);
        return 2;
    }
    if (o.format == DSA_PACK_SYNTHETIC && optind < argc) {
        fprintf(stderr, "dsa pack: --format synthetic takes no inputs, got \"%s\"\n", argv[optind]);
        return 2;
    }
    if (o.format != DSA_PACK_SYNTHETIC && optind >= argc) {
        fprintf(stderr, "dsa pack: no inputs given for --format %s (see dsa pack --help)\n",
                dsa_pack_format_name(o.format));
        return 2;
    }
    o.inputs = (const char *const *)(argv + optind);
    o.n_inputs = argc - optind;
    DsaShardSetStats stats = {0};
    double t0 = dsa_time_now();
    DsaStatus st = dsa_pack_run(&o, &stats);
    if (st != DSA_OK) return cli_report("pack", st);
    print_summary(&o, &stats, dsa_time_now() - t0);
    return 0;
}
