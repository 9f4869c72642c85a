/* bench.c: `dsa bench`: benchmarks. `dsa bench loader` measures the streaming
 * loader against a plain read of the same tokens and against bare zstd decoding
 * (the measurement itself is dsa_bench_loader_run in data/bench_loader.c).
 *
 * The first word names the benchmark so later ones (kernels, steps) can join; each
 * prints a table and, with --record FILE, appends a markdown section to FILE
 * (bench/RESULTS.md: device, date, command, figures; newest last). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>
#include <zstd.h>

#include "core/progress.h"
#include "core/strutil.h"
#include "data/inspect.h"
#include "pretrain/cli/cli.h"

enum {
    TARGET_TOKENS_PER_S = 200000000, /* the aim for one loader thread */
    FLOOR_TOKENS_PER_S = 50000000,   /* and the level it must never fall below */
};

static void usage_top(FILE *out) {
    fprintf(out,
            "usage: dsa bench <benchmark> [options]    (dsa bench <benchmark> --help)\n\n"
            "benchmarks:\n"
            "  loader   streaming loader throughput vs a plain read of the same tokens and bare zstd\n"
            "  train    whole training steps of a config's model: tokens/s, GFLOP/s, peak memory\n"
            "  gemm     the machine's single-precision GEMM rate through OpenBLAS\n"
            "  dsa      one training step with dense attention vs sparse top-k attention, by length\n"
            "  topk     the indexer's streaming top-k vs scoring the same pairs alone\n");
}

static void usage_loader(FILE *out) {
    DsaBenchLoaderOptions d = dsa_bench_loader_options_default();
    fprintf(out,
            "usage: dsa bench loader [options]\n\n"
            "Generates a data set per distribution, writes it as shards (HDF5 + zstd, as `dsa pack`\n"
            "does) and as one raw uint32 file holding the same token stream, then measures on a warm\n"
            "page cache (every file is read once before timing):\n"
            "  loader p0   dsa_loader_next over one shuffled epoch, decoding on the caller's thread\n"
            "  loader p2   the same with prefetch 2 (one background decoding thread)\n"
            "  plain read  pread of the same windows, in the same order, from the raw file\n"
            "  zstd only   ZSTD_decompressDCtx over every chunk, from memory: the ceiling\n"
            "  range only  the loader's token-id range check alone\n"
            "Tokens/s count the seq_len + 1 tokens of every window delivered; GB/s are of uint32\n"
            "data. Each measurement runs R times; the table shows the median and the best.\n"
            "Before timing, the loader's first windows are compared with the raw file.\n\n"
            "options:\n"
            "  --tokens N        tokens per data set (default %lldMi; K/M/G/Ki/Mi/Gi suffixes)\n"
            "  --dist LIST       comma-separated data sets: text-like (Zipf ids over 32000 with repeated\n"
            "                    phrases, BPE-like), synthetic (data/synthetic.h tasks, mixed), uniform\n"
            "                    (i.i.d. ids over 129280: the worst case for zstd)\n"
            "                    (default text-like,synthetic,uniform)\n"
            "  --seq-len N       loader window minus one (default %lld)\n"
            "  --chunk-tokens N  shard chunk size (default %lld)\n"
            "  --zstd-level L    1..22 (default %d)\n"
            "  --shard-tokens N  tokens per shard (default %lldMi)\n"
            "  --repeat R        timed runs per measurement, median reported (default %d)\n"
            "  --seed N          data and order seed (default %llu)\n"
            "  --dir DIR         write the data sets under DIR (default: a new temporary directory)\n"
            "  --keep            keep the generated files (default: removed after each data set)\n"
            "  --record FILE     append the results as a markdown section to FILE\n"
            "  --quiet           no progress lines\n\n"
            "example:\n  dsa bench loader --tokens 64Mi --dist text --record bench/RESULTS.md\n",
            (long long)(d.tokens >> 20), (long long)d.seq_len, (long long)d.chunk_tokens, d.zstd_level,
            (long long)(d.shard_tokens >> 20), d.repeat, (unsigned long long)d.seed);
}

typedef struct {
    DsaBenchLoaderOptions opts;
    DsaBenchDist dists[DSA_BENCH_NUM_DISTS];
    int num_dists;
    const char *dir, *record;
    int keep, quiet;
    char command[2048];
} BenchArgs;

static DsaStatus parse_dists(const char *text, BenchArgs *a) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    a->num_dists = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        DsaBenchDist d;
        DSA_TRY(dsa_bench_dist_parse(tok, &d));
        for (int i = 0; i < a->num_dists; i++)
            if (a->dists[i] == d) DSA_FAIL(DSA_ERR_ARG, "--dist lists %s twice", dsa_bench_dist_name(d));
        a->dists[a->num_dists++] = d;
    }
    if (a->num_dists == 0) DSA_FAIL(DSA_ERR_ARG, "--dist is empty");
    return DSA_OK;
}

/* ---- host facts ------------------------------------------------------------------ */

static void cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) continue;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(buf, cap, "%s", v);
        buf[strcspn(buf, "\n")] = '\0';
        break;
    }
    fclose(f);
}

/* The 1-minute load average, to tell a busy machine from a slow loader. */
static double load_average(void) {
    double load = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = -1.0;
        fclose(f);
    }
    return load;
}

/* ---- output ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    const DsaBenchTiming *t;
} Row;

static double rate(const DsaBenchTiming *t, int best) {
    double s = best ? t->best_s : t->median_s;
    return s > 0 ? (double)t->tokens / s : 0.0;
}

static int rows_of(const DsaBenchLoaderResult *r, Row rows[5]) {
    rows[0] = (Row){"loader, prefetch 0 (caller decodes)", &r->loader_p0};
    rows[1] = (Row){"loader, prefetch 2 (thread decodes)", &r->loader_p2};
    rows[2] = (Row){"plain pread, uncompressed", &r->plain};
    rows[3] = (Row){"zstd decode only (ceiling)", &r->zstd};
    rows[4] = (Row){"token-range check only", &r->range};
    return 5;
}

static const char *verdict(double tokens_per_s) {
    return tokens_per_s >= TARGET_TOKENS_PER_S ? "meets the 200M target"
           : tokens_per_s >= FLOOR_TOKENS_PER_S ? "below the 200M target, above the 50M floor"
                                                : "BELOW the 50M floor";
}

static void print_result(FILE *out, const DsaBenchLoaderResult *r, const DsaBenchLoaderOptions *o) {
    char a[32];
    fprintf(out, "\n%s: %.1fM tokens in %d shard(s), %lld documents, compression %.2fx (%.2f bits/token), %lld windows; "
                 "generated and written in %.1f s; %lld windows checked against the raw file\n",
            dsa_bench_dist_name(r->dist), (double)r->stream_tokens / 1e6, r->num_shards, (long long)r->num_docs,
            r->compression_ratio, 32.0 / r->compression_ratio, (long long)r->windows, r->generate_s,
            (long long)r->checked_windows);
    fprintf(out, "  %-37s %12s %9s %10s %12s\n", "measurement (median)", "tokens/s", "GB/s", "vs plain", "best tok/s");
    Row rows[5];
    int n = rows_of(r, rows);
    double plain = rate(&r->plain, 0);
    for (int i = 0; i < n; i++) {
        double v = rate(rows[i].t, 0);
        char best[32];
        fprintf(out, "  %-37s %12s %9.2f %9.3fx %12s\n", rows[i].name, dsa_format_count(a, sizeof a, v), v * 4 / 1e9,
                plain > 0 ? v / plain : 0.0, dsa_format_count(best, sizeof best, rate(rows[i].t, 1)));
    }
    int64_t delivered = r->windows * (o->seq_len + 1);
    fprintf(out, "  loader open (%d shard(s), %lld chunks): %.3f s, %.1f us per chunk (not in the figures above)\n",
            r->num_shards, (long long)r->num_chunks, r->open.median_s, 1e6 * r->open.median_s / (double)r->num_chunks);
    fprintf(out, "  the loader decodes %.4f tokens per token delivered (whole %lld-token chunks)\n",
            (double)r->decoded_tokens / (double)delivered, (long long)o->chunk_tokens);
    fprintf(out, "  one loader thread: %s tokens/s, %s\n", dsa_format_count(a, sizeof a, rate(&r->loader_p0, 0)),
            verdict(rate(&r->loader_p0, 0)));
}

static DsaStatus record_results(const BenchArgs *a, const DsaBenchLoaderResult *res, int nres, const char *cpu,
                                long cores, double load_before, double load_after) {
    FILE *f = fopen(a->record, "a");
    if (!f) DSA_FAIL(DSA_ERR_IO, "%s: cannot open for appending the results", a->record);
    const DsaBenchLoaderOptions *o = &a->opts;
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    fprintf(f, "\n## %s: `dsa bench loader` (CPU)\n\n", date);
    fprintf(f, "- device: CPU only, %s, %ld cores online; zstd %s, HDF5 %u.%u.%u\n", cpu, cores, ZSTD_versionString(), maj,
            min, rel);
    fprintf(f, "- command: `%s`\n", a->command);
    fprintf(f, "- 1-minute load average %.2f before, %.2f after (the benchmark itself keeps one core busy; more means "
               "other work shared the machine and the best column is the cleaner figure)\n",
            load_before, load_after);
    fprintf(f, "- settings: seq_len %lld (windows of %lld tokens), chunk %lld tokens, zstd level %d, %lld tokens per "
               "shard, seed %llu; median of %d runs (best in the last column)\n",
            (long long)o->seq_len, (long long)(o->seq_len + 1), (long long)o->chunk_tokens, o->zstd_level,
            (long long)o->shard_tokens, (unsigned long long)o->seed, o->repeat);
    fprintf(f, "- page cache warm for every measurement (each file read once before timing); one epoch of windows in "
               "shuffled order per run; tokens/s count the seq_len + 1 tokens of each window delivered\n\n");
    fprintf(f, "| data | tokens | ratio | measurement | tokens/s | GB/s (uint32) | vs plain read | best tokens/s |\n");
    fprintf(f, "|---|---:|---:|---|---:|---:|---:|---:|\n");
    for (int i = 0; i < nres; i++) {
        const DsaBenchLoaderResult *r = &res[i];
        Row rows[5];
        int n = rows_of(r, rows);
        double plain = rate(&r->plain, 0);
        for (int k = 0; k < n; k++) {
            double v = rate(rows[k].t, 0);
            char tokens[32] = "", ratio[32] = "";
            if (k == 0) {
                snprintf(tokens, sizeof tokens, "%.1fM", (double)r->stream_tokens / 1e6);
                snprintf(ratio, sizeof ratio, "%.2fx", r->compression_ratio);
            }
            fprintf(f, "| %s | %s | %s | %s | %.1fM | %.2f | %.3fx | %.1fM |\n", k ? "" : dsa_bench_dist_name(r->dist),
                    tokens, ratio, rows[k].name, v / 1e6, v * 4 / 1e9, plain > 0 ? v / plain : 0.0,
                    rate(rows[k].t, 1) / 1e6);
        }
    }
    fprintf(f, "\n");
    for (int i = 0; i < nres; i++) {
        const DsaBenchLoaderResult *r = &res[i];
        fprintf(f,
                "- %s: one loader thread %.1fM tokens/s (%s); decodes %.4f tokens per token delivered; loader open "
                "%.3f s for %d shard(s), %lld chunks (%.1f us per chunk)\n",
                dsa_bench_dist_name(r->dist), rate(&r->loader_p0, 0) / 1e6, verdict(rate(&r->loader_p0, 0)),
                (double)r->decoded_tokens / (double)(r->windows * (o->seq_len + 1)), r->open.median_s, r->num_shards,
                (long long)r->num_chunks, 1e6 * r->open.median_s / (double)r->num_chunks);
    }
    if (fclose(f) != 0) DSA_FAIL(DSA_ERR_IO, "%s: write failed", a->record);
    return DSA_OK;
}

static DsaStatus run_loader_bench(BenchArgs *a) {
    DSA_TRY(dsa_bench_loader_check(&a->opts));
    char dir[1024];
    int made_dir = 0;
    if (a->dir) {
        snprintf(dir, sizeof dir, "%s", a->dir);
    } else {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/dsa-bench-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(dir)) DSA_FAIL(DSA_ERR_IO, "%s: cannot create a temporary directory", dir);
        made_dir = 1;
    }
    a->opts.dir = dir;
    a->opts.progress = !a->quiet;
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double load_before = load_average();
    printf("dsa bench loader: %s, %ld cores; seq_len %lld (windows of %lld tokens), chunk %lld tokens, zstd level %d; "
           "median of %d runs\npage cache: warm (every file read once before timing); data under %s\n",
           cpu, cores, (long long)a->opts.seq_len, (long long)(a->opts.seq_len + 1), (long long)a->opts.chunk_tokens,
           a->opts.zstd_level, a->opts.repeat, dir);
    fflush(stdout);
    DsaBenchLoaderResult res[DSA_BENCH_NUM_DISTS];
    DsaStatus st = DSA_OK;
    int done = 0;
    for (int i = 0; i < a->num_dists; i++) {
        a->opts.dist = a->dists[i];
        if (!a->quiet) fprintf(stderr, "bench: %s data set\n", dsa_bench_dist_name(a->dists[i]));
        st = dsa_bench_loader_run(&a->opts, &res[i]);
        if (!a->keep) dsa_bench_loader_cleanup(dir, a->dists[i]);
        if (st != DSA_OK) {
            dsa_error_push(__FILE__, __LINE__, "benchmarking the %s data set under %s", dsa_bench_dist_name(a->dists[i]), dir);
            break;
        }
        print_result(stdout, &res[i], &a->opts);
        fflush(stdout);
        done++;
    }
    if (made_dir && !a->keep) rmdir(dir);
    if (st != DSA_OK) return st;
    if (a->record) {
        DSA_TRY(record_results(a, res, done, cpu, cores, load_before, load_average()));
        printf("\nresults appended to %s\n", a->record);
    }
    return DSA_OK;
}

static int cli_bench_loader(int argc, char **argv) {
    BenchArgs a = {.opts = dsa_bench_loader_options_default(),
                   .dists = {DSA_BENCH_TEXT, DSA_BENCH_SYNTHETIC, DSA_BENCH_UNIFORM},
                   .num_dists = 3};
    size_t len = (size_t)snprintf(a.command, sizeof a.command, "dsa bench");
    for (int i = 0; i < argc && len < sizeof a.command; i++)
        len += (size_t)snprintf(a.command + len, sizeof a.command - len, " %s", argv[i]);
    static const struct option longopts[] = {
        {"tokens", required_argument, 0, 'T'},     {"dist", required_argument, 0, 'D'},
        {"seq-len", required_argument, 0, 'L'},    {"chunk-tokens", required_argument, 0, 'c'},
        {"zstd-level", required_argument, 0, 'z'}, {"shard-tokens", required_argument, 0, 'S'},
        {"repeat", required_argument, 0, 'r'},     {"seed", required_argument, 0, 's'},
        {"dir", required_argument, 0, 'd'},        {"keep", no_argument, 0, 'k'},
        {"record", required_argument, 0, 'R'},     {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        int64_t v = 0;
        DsaStatus st = DSA_OK;
        switch (opt) {
        case 'T': st = dsa_parse_count(optarg, &a.opts.tokens, "--tokens"); break;
        case 'D': st = parse_dists(optarg, &a); break;
        case 'L': st = dsa_parse_count(optarg, &a.opts.seq_len, "--seq-len"); break;
        case 'c': st = dsa_parse_count(optarg, &a.opts.chunk_tokens, "--chunk-tokens"); break;
        case 'z': st = dsa_parse_count(optarg, &v, "--zstd-level"); a.opts.zstd_level = v > 99 ? 99 : (int)v; break;
        case 'S': st = dsa_parse_count(optarg, &a.opts.shard_tokens, "--shard-tokens"); break;
        case 'r': st = dsa_parse_count(optarg, &v, "--repeat"); a.opts.repeat = v > 1000 ? 1000 : (int)v; break;
        case 's': st = dsa_parse_count(optarg, &v, "--seed"); a.opts.seed = (uint64_t)v; break;
        case 'd': a.dir = optarg; break;
        case 'k': a.keep = 1; break;
        case 'R': a.record = optarg; break;
        case 'q': a.quiet = 1; break;
        case 'h': usage_loader(stdout); return 0;
        default: usage_loader(stderr); return 2;
        }
        if (st != DSA_OK) return cli_report("bench loader", st);
    }
    if (optind < argc) {
        fprintf(stderr, "dsa bench loader: unexpected argument \"%s\" (see dsa bench loader --help)\n", argv[optind]);
        return 2;
    }
    return cli_report("bench loader", run_loader_bench(&a));
}

int cli_bench(int argc, char **argv) {
    if (argc < 2) {
        usage_top(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage_top(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "loader")) return cli_bench_loader(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return cli_bench_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "gemm")) return cli_bench_gemm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "dsa")) return cli_bench_dsa(argc - 1, argv + 1);
    if (!strcmp(argv[1], "topk")) return cli_bench_topk(argc - 1, argv + 1);
    static const char *const names[] = {"loader", "train", "gemm", "dsa", "topk", NULL};
    const char *guess = dsa_closest_word(argv[1], names);
    fprintf(stderr, "dsa bench: unknown benchmark \"%s\"%s%s%s\n\n", argv[1], guess ? "; did you mean \"" : "",
            guess ? guess : "", guess ? "\"?" : "");
    usage_top(stderr);
    return 2;
}
