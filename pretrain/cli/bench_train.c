/* bench_train.c: `dsa bench train` and `dsa bench gemm`.
 *
 * bench train: whole training steps (forward, backward, AdamW) of a config's model on
 * random tokens, at one or more sequence lengths: tokens/s, ms/step, achieved GFLOP/s
 * (dsa_model_train_flops_per_token: 6 × matmul weights + 6 × causal attention per
 * token), counted peak memory and peak RSS. The first step of each length is a warm-up
 * and is not timed.
 * bench gemm: the machine's single-precision GEMM rate through OpenBLAS (cblas_sgemm,
 * square N×N×N), the yardstick the step's GFLOP/s is compared against.
 * Both print a table; --json prints one JSON object per line instead (bench/run.sh
 * collects them); --record FILE appends a markdown section.
 */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strutil.h"
#include "kernels/backend.h"
#include "pretrain/cli/cli.h"
#include "pretrain/model.h"
#include "pretrain/optim.h"

typedef struct {
    double tokens_per_s, ms_per_step, gflops;
    int64_t peak_bytes, rss_bytes;
} StepResult;

static DsaStatus bench_steps(const DsaConfig *cfg, int64_t batch, int64_t L, int steps, StepResult *r) {
    const DsaBackend *be = dsa_backend_cpu();
    DsaModel m;
    DSA_TRY(dsa_model_init(&m, &cfg->model, be));
    DsaOptimizer o;
    DsaStatus st = DSA_OK;
    int32_t *in = NULL, *tgt = NULL;
    bool *trainable = NULL;
    size_t ntok = (size_t)(batch * L);
    DSA_TRY_GOTO(st, dsa_optim_init(&o, &m.table, be), out_model);
    DSA_TRY_GOTO(st, dsa_model_init_weights(&m, 1), out);
    in = dsa_malloc(ntok * sizeof *in);
    tgt = dsa_malloc(ntok * sizeof *tgt);
    trainable = dsa_malloc((size_t)m.table.count * sizeof *trainable);
    if (!in || !tgt || !trainable) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "bench buffers");
    for (size_t i = 0; i < ntok; i++) {
        in[i] = (int32_t)(dsa_rng_u32_at(2, 0, i) % (uint64_t)cfg->model.vocab_size);
        tgt[i] = (int32_t)(dsa_rng_u32_at(2, 1, i) % (uint64_t)cfg->model.vocab_size);
    }
    for (int i = 0; i < m.table.count; i++) trainable[i] = true;
    dsa_mem_reset_peak();
    double t_total = 0;
    for (int s = 0; s <= steps; s++) {
        double t0 = dsa_time_now(), sum = 0;
        int64_t count = 0;
        dsa_model_zero_grad(&m);
        DSA_TRY_GOTO(st, dsa_model_forward(&m, in, tgt, batch, L, &sum, &count), out);
        dsa_model_backward(&m, (float)(1.0 / (double)count));
        DsaOptimStepInfo info;
        dsa_optim_step(&o, m.params, m.grads, trainable, &cfg->optimizer, 1e-4, &info);
        if (s > 0) t_total += dsa_time_now() - t0; /* step 0 warms up */
    }
    r->ms_per_step = 1e3 * t_total / steps;
    r->tokens_per_s = (double)ntok * steps / t_total;
    r->gflops = r->tokens_per_s * dsa_model_train_flops_per_token(&cfg->model, L) / 1e9;
    r->peak_bytes = (int64_t)dsa_mem_peak();
    r->rss_bytes = dsa_mem_rss_peak();
out:
    dsa_free(in, ntok * sizeof *in);
    dsa_free(tgt, ntok * sizeof *tgt);
    dsa_free(trainable, (size_t)m.table.count * sizeof *trainable);
    dsa_optim_free(&o);
out_model:
    dsa_model_free(&m);
    return st;
}

void cli_bench_record_header(FILE *f, const char *what, int argc, char **argv) {
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d", localtime(&now));
    char cpu[256] = "unknown CPU";
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char line[512];
        while (fgets(line, sizeof line, ci))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) snprintf(cpu, sizeof cpu, "%s", c + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(ci);
    }
    /* argv[0] is the benchmark's name (train, gemm, dsa): the command is `dsa bench NAME ...` */
    fprintf(f, "\n## %s, %s\n\n- device: %s, %d threads\n- command: `dsa bench", what, date, cpu,
            dsa_backend_cpu_threads());
    for (int i = 0; i < argc; i++) fprintf(f, " %s", argv[i]);
    fprintf(f, "`\n\n");
}

DsaStatus cli_bench_open(const char *path, const char *const *sets, int n_sets, int threads, bool need_indexer,
                         const char *record, const char *title, const char *table_header, int argc, char **argv,
                         DsaConfig **cfg, FILE **rec) {
    *rec = NULL;
    dsa_backend_cpu_set_threads(threads);
    *cfg = dsa_calloc(1, sizeof **cfg);
    if (!*cfg) DSA_FAIL(DSA_ERR_NOMEM, "config");
    DSA_TRY(dsa_config_load(*cfg, path, sets, n_sets));
    DSA_TRY(dsa_config_validate(*cfg));
    if (need_indexer && !(*cfg)->model.has_indexer)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: the model has no indexer (model.index_topk is null)", path);
    if (record) {
        *rec = fopen(record, "a");
        if (!*rec) DSA_FAIL(DSA_ERR_IO, "%s: cannot append", record);
        cli_bench_record_header(*rec, title, argc, argv);
        fputs(table_header, *rec);
    }
    return DSA_OK;
}

static void usage_train(FILE *out) {
    fprintf(out,
            "usage: dsa bench train --config FILE [--seq-len LIST] [--batch B] [--steps N] [--threads T]\n"
            "                       [--set KEY=VALUE ...] [--json] [--record FILE]\n\n"
            "Times whole training steps (forward, backward, AdamW) of the config's model on random\n"
            "tokens at each sequence length of LIST (default 4096; K/Ki suffixes), after one untimed\n"
            "warm-up step. GFLOP/s use 6 x (matmul weights) + 6 x (causal attention QK and PV) FLOPs\n"
            "per token. Peak memory is what the toolkit allocated and the process's peak RSS.\n");
}

static int parse_common_int(const char *opt, const char *arg, long long *v) {
    char *end = NULL;
    *v = strtoll(arg, &end, 10);
    if (!*arg || *end || *v < 0) {
        fprintf(stderr, "dsa bench: --%s wants a non-negative integer, got \"%s\"\n", opt, arg);
        return 2;
    }
    return 0;
}

int cli_bench_train(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'}, {"seq-len", required_argument, 0, 'L'},
        {"batch", required_argument, 0, 'b'},  {"steps", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"set", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},         {"record", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *path = NULL, *lens = "4096", *record = NULL;
    long long batch = 1, steps = 2, threads = 0;
    int json = 0, rc = -1, opt, n_sets = 0;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'L': lens = optarg; break;
        case 'b': rc = parse_common_int("batch", optarg, &batch) ? 2 : -1; break;
        case 'n': rc = parse_common_int("steps", optarg, &steps) ? 2 : -1; break;
        case 't': rc = parse_common_int("threads", optarg, &threads) ? 2 : -1; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'j': json = 1; break;
        case 'r': record = optarg; break;
        case 'h': usage_train(stdout); rc = 0; break;
        default: usage_train(stderr); rc = 2; break;
        }
    }
    if (rc < 0 && (!path || optind < argc || batch < 1 || steps < 1)) {
        fprintf(stderr, "dsa bench train: --config FILE is required; --batch and --steps must be >= 1\n\n");
        usage_train(stderr);
        rc = 2;
    }
    int64_t L[16];
    int nL = 0;
    if (rc < 0 && dsa_parse_count_list(lens, L, 16, &nL, "--seq-len") != DSA_OK) rc = cli_report("bench train", DSA_ERR_ARG);
    if (rc >= 0) {
        free(sets);
        return rc;
    }
    DsaConfig *cfg = NULL;
    FILE *rec = NULL;
    DsaStatus st = cli_bench_open(path, sets, n_sets, (int)threads, false, record, "Training step",
                                  "| config | params | seq_len x batch | ms/step | tokens/s | GFLOP/s | peak alloc | "
                                  "peak RSS |\n|---|---|---|---|---|---|---|---|\n",
                                  argc, argv, &cfg, &rec);
    if (st == DSA_OK && !json)
        printf("%-24s %10s %16s %10s %11s %9s %11s %10s\n", "config", "params", "seq_len x batch", "ms/step",
               "tokens/s", "GFLOP/s", "peak alloc", "peak RSS");
    for (int i = 0; st == DSA_OK && i < nL; i++) {
        StepResult r = {0};
        st = bench_steps(cfg, batch, L[i], (int)steps, &r);
        if (st != DSA_OK) break;
        long long params = (long long)dsa_model_param_count(&cfg->model);
        if (json) {
            printf("{\"bench\":\"train\",\"config\":\"%s\",\"params\":%lld,\"seq_len\":%lld,\"batch\":%lld,"
                   "\"threads\":%d,\"ms_per_step\":%.3f,\"tokens_per_s\":%.1f,\"gflops\":%.2f,\"peak_alloc_bytes\":%lld,"
                   "\"peak_rss_bytes\":%lld}\n",
                   path, params, (long long)L[i], batch, dsa_backend_cpu_threads(), r.ms_per_step, r.tokens_per_s,
                   r.gflops, (long long)r.peak_bytes, (long long)r.rss_bytes);
        } else {
            char dims[48];
            snprintf(dims, sizeof dims, "%lld x %lld", (long long)L[i], batch);
            printf("%-24s %10lld %16s %10.1f %11.0f %9.2f %9.0fMi %8.0fMi\n", path, params, dims, r.ms_per_step,
                   r.tokens_per_s, r.gflops, r.peak_bytes / 1048576.0, r.rss_bytes / 1048576.0);
        }
        if (rec)
            fprintf(rec, "| %s | %lld | %lld x %lld | %.1f | %.0f | %.2f | %.0f MiB | %.0f MiB |\n", path, params,
                    (long long)L[i], batch, r.ms_per_step, r.tokens_per_s, r.gflops, r.peak_bytes / 1048576.0,
                    r.rss_bytes / 1048576.0);
        fflush(stdout);
    }
    if (rec) fclose(rec);
    dsa_free(cfg, sizeof *cfg);
    free(sets);
    return cli_report("bench train", st);
}

int cli_bench_gemm(int argc, char **argv) {
    long long n = 2048, repeat = 5, threads = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (i + 1 < argc && !strcmp(argv[i], "--size")) {
            if (parse_common_int("size", argv[++i], &n)) return 2;
        } else if (i + 1 < argc && !strcmp(argv[i], "--repeat")) {
            if (parse_common_int("repeat", argv[++i], &repeat)) return 2;
        } else if (i + 1 < argc && !strcmp(argv[i], "--threads")) {
            if (parse_common_int("threads", argv[++i], &threads)) return 2;
        } else {
            fprintf(!strcmp(argv[i], "--help") ? stdout : stderr,
                    "usage: dsa bench gemm [--size N] [--repeat R] [--threads T] [--json]\n\n"
                    "Single-precision GEMM rate of OpenBLAS (cblas_sgemm, N x N x N, default 2048):\n"
                    "the best of R runs, in GFLOP/s (2 N^3 FLOPs per call).\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (n < 1 || repeat < 1) return 2;
    dsa_backend_cpu_set_threads((int)threads);
    size_t bytes = (size_t)(n * n) * sizeof(float);
    float *a = dsa_malloc(bytes), *b = dsa_malloc(bytes), *c = dsa_malloc(bytes);
    if (!a || !b || !c) {
        dsa_free(a, bytes), dsa_free(b, bytes), dsa_free(c, bytes);
        return cli_report("bench gemm", dsa_error_set(DSA_ERR_NOMEM, __FILE__, __LINE__, "3 x %zu bytes", bytes));
    }
    for (long long i = 0; i < n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    double best = 1e30;
    for (long long r = 0; r <= repeat; r++) {
        double t0 = dsa_time_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, a, (int)n, b, (int)n, 0.0f,
                    c, (int)n);
        double dt = dsa_time_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    double gflops = 2.0 * (double)n * (double)n * (double)n / best / 1e9;
    if (json)
        printf("{\"bench\":\"gemm\",\"size\":%lld,\"threads\":%d,\"gflops\":%.2f}\n", n, dsa_backend_cpu_threads(), gflops);
    else
        printf("sgemm %lld x %lld x %lld, %d threads: %.2f GFLOP/s (best of %lld)\n", n, n, n, dsa_backend_cpu_threads(),
               gflops, repeat);
    dsa_free(a, bytes), dsa_free(b, bytes), dsa_free(c, bytes);
    return 0;
}
