/* bench_topk.c: `dsa bench topk`: the indexer's streaming top-k (indexer/topk.c,
 * DSA-SPEC §5.4) against the scoring it cannot avoid.
 *
 * For each sequence length and k, one sequence of random indexer activations (q̂, k̂, w of
 * the config's indexer shape) is scored and selected:
 *   scores  every causal (query, key) score, tile by tile (dsa_indexer_score_tile, the
 *           arithmetic top-k does inside), nothing kept
 *   top-k   dsa_indexer_topk: the same scores plus the selection
 * so top-k − scores is the selection's own cost and its share of the top-k time is what a
 * faster selection can win. Before timing, the first rows' selections are checked against
 * a full sort of their scores (the same run measures and verifies). Best of --reps runs.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strutil.h"
#include "indexer/indexer.h"
#include "kernels/rules/topk_order.h"
#include "pretrain/cli/cli.h"

enum { TILE_Q = 16, TILE_K = 128, CHECK_ROWS = 3 };

typedef struct {
    double score_s, topk_s;
} TopkTimes;

static int by_rank(const void *pa, const void *pb) {
    const DsaTopkCand a = *(const DsaTopkCand *)pa, b = *(const DsaTopkCand *)pb;
    return dsa_topk_worse(a, b) ? 1 : dsa_topk_worse(b, a) ? -1 : 0;
}

/* Every causal score once, in tiles of TILE_Q rows × TILE_K keys (the top-k's tiling). */
static DsaStatus score_all(const DsaIndexerActs *a, const DsaIndexerShape *s) {
    const int64_t L = s->seq_len;
    DsaStatus st = DSA_OK;
#pragma omp parallel
    {
        float *tile = dsa_malloc((size_t)(TILE_Q * TILE_K) * sizeof(float));
        float *relu = dsa_malloc((size_t)(TILE_Q * s->heads * TILE_K) * sizeof(float));
        if (!tile || !relu) {
#pragma omp critical
            st = DSA_ERR_NOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t0 = 0; t0 < L; t0 += TILE_Q) {
            if (!tile || !relu) continue;
            const int64_t nq = L - t0 < TILE_Q ? L - t0 : TILE_Q;
            for (int64_t s0 = 0; s0 < t0 + nq; s0 += TILE_K) {
                const int64_t nk = t0 + nq - s0 < TILE_K ? t0 + nq - s0 : TILE_K;
                dsa_indexer_score_tile(tile, relu, TILE_K, a, s, 0, t0, nq, s0, nk);
            }
        }
        dsa_free(tile, (size_t)(TILE_Q * TILE_K) * sizeof(float));
        dsa_free(relu, (size_t)(TILE_Q * s->heads * TILE_K) * sizeof(float));
    }
    if (st != DSA_OK) DSA_FAIL(st, "bench topk: score tile scratch");
    return DSA_OK;
}

/* The last CHECK_ROWS rows' selections against a full sort of their scores. */
static DsaStatus check_rows(const int32_t *idx, const DsaIndexerActs *a, const DsaIndexerShape *s) {
    const int64_t L = s->seq_len, K = s->topk;
    float *row = dsa_malloc((size_t)L * sizeof(float));
    DsaTopkCand *all = dsa_malloc((size_t)L * sizeof *all);
    DsaStatus st = DSA_OK;
    if (!row || !all) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "bench topk: check buffers");
    for (int64_t t = L - CHECK_ROWS > 0 ? L - CHECK_ROWS : 0; t < L; t++) {
        dsa_indexer_score_tile(row, NULL, L, a, s, 0, t, 1, 0, t + 1);
        for (int64_t c = 0; c <= t; c++) all[c] = (DsaTopkCand){row[c], (int32_t)c};
        qsort(all, (size_t)(t + 1), sizeof *all, by_rank);
        for (int64_t j = 0; j < K; j++) {
            const int32_t want = j <= t ? all[j].index : DSA_TOPK_PAD_INDEX;
            if (idx[t * K + j] != want)
                DSA_FAIL_GOTO(st, out, DSA_ERR_INTERNAL, "bench topk: row %lld rank %lld: key %d, a full sort says %d",
                              (long long)t, (long long)j, idx[t * K + j], want);
        }
    }
out:
    dsa_free(row, (size_t)L * sizeof(float));
    dsa_free(all, (size_t)L * sizeof *all);
    return st;
}

static DsaStatus bench_one(const DsaModelConfig *mc, int64_t L, int64_t K, int reps, TopkTimes *r) {
    const int64_t HI = mc->index_n_heads, dI = mc->index_head_dim;
    DsaIndexerShape s = {.batch = 1, .seq_len = L, .heads = HI, .head_dim = dI, .rope_dim = mc->qk_rope_head_dim,
                         .topk = K, .fp8 = true, .scale = 1.0f / sqrtf((float)(HI * dI)), .eps = 1e-6f};
    const size_t nq = (size_t)(L * HI * dI), nk = (size_t)(L * dI), nw = (size_t)(L * HI), ni = (size_t)(L * K);
    float *q = dsa_malloc(nq * sizeof(float)), *k = dsa_malloc(nk * sizeof(float)), *w = dsa_malloc(nw * sizeof(float));
    int32_t *idx = dsa_malloc(ni * sizeof *idx);
    float *sc = dsa_malloc(ni * sizeof *sc);
    DsaStatus st = DSA_OK;
    if (!q || !k || !w || !idx || !sc) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "bench topk: %lld tokens, k %lld", (long long)L, (long long)K);
    /* uniform values on a 1/1024 grid: FP8-like activations, with exact score ties */
    for (size_t i = 0; i < nq; i++) q[i] = (float)((int)(dsa_rng_u32_at(7, 0, i) % 2049) - 1024) / 1024.0f;
    for (size_t i = 0; i < nk; i++) k[i] = (float)((int)(dsa_rng_u32_at(7, 1, i) % 2049) - 1024) / 1024.0f;
    for (size_t i = 0; i < nw; i++) w[i] = (float)(dsa_rng_u32_at(7, 2, i) % 1025) / 1024.0f;
    DsaIndexerActs a = {.q = q, .k = k, .w = w};
    DSA_TRY_GOTO(st, dsa_indexer_topk(idx, sc, &a, &s), out);
    DSA_TRY_GOTO(st, check_rows(idx, &a, &s), out);
    r->score_s = r->topk_s = INFINITY;
    for (int i = 0; i < reps; i++) {
        double t0 = dsa_time_now();
        DSA_TRY_GOTO(st, score_all(&a, &s), out);
        double t1 = dsa_time_now();
        DSA_TRY_GOTO(st, dsa_indexer_topk(idx, sc, &a, &s), out);
        double t2 = dsa_time_now();
        if (t1 - t0 < r->score_s) r->score_s = t1 - t0;
        if (t2 - t1 < r->topk_s) r->topk_s = t2 - t1;
    }
out:
    dsa_free(q, nq * sizeof(float));
    dsa_free(k, nk * sizeof(float));
    dsa_free(w, nw * sizeof(float));
    dsa_free(idx, ni * sizeof *idx);
    dsa_free(sc, ni * sizeof *sc);
    return st;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa bench topk --config FILE [--seq-len LIST] [--topk LIST] [--reps N] [--threads T]\n"
            "                      [--set KEY=VALUE ...] [--json] [--record FILE]\n\n"
            "Times the indexer's streaming top-k (scores and selection) against scoring the same\n"
            "causal pairs alone, for one sequence of each length in LIST (default 4096,8192) and\n"
            "each k in LIST (default the config's index_topk), with the config's indexer heads and\n"
            "head dim. Prints seconds of each, the selection's share of the top-k time, and the\n"
            "scoring rate (2·H_I·d_I + 2·H_I FLOP per pair). Checks the last rows' selections\n"
            "against a full sort first.\n\n"
            "options:\n"
            "  --reps N       timed runs, best reported (default 2)\n"
            "  --threads T    CPU threads (default all)\n"
            "example:\n  dsa bench topk --config configs/bench-dsa.json --seq-len 8192,16384 --topk 512,2048 --threads 1\n");
}

int cli_bench_topk(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'}, {"seq-len", required_argument, 0, 'L'},
        {"topk", required_argument, 0, 'k'},   {"reps", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"set", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},         {"record", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *path = NULL, *lens = "4096,8192", *ks = NULL, *record = NULL;
    long long reps = 2, threads = 0;
    int json = 0, rc = -1, opt, n_sets = 0;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end = NULL;
        long long v = 0;
        if (opt == 'n' || opt == 't') {
            v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || v < (opt == 't' ? 0 : 1)) {
                fprintf(stderr, "dsa bench topk: --%s wants a %s integer, got \"%s\"\n", opt == 'n' ? "reps" : "threads",
                        opt == 't' ? "non-negative" : "positive", optarg);
                rc = 2;
                break;
            }
        }
        switch (opt) {
        case 'c': path = optarg; break;
        case 'L': lens = optarg; break;
        case 'k': ks = optarg; break;
        case 'n': reps = v; break;
        case 't': threads = v; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'j': json = 1; break;
        case 'r': record = optarg; break;
        case 'h': usage(stdout); rc = 0; break;
        default: usage(stderr); rc = 2; break;
        }
    }
    if (rc < 0 && (!path || optind < argc)) {
        fprintf(stderr, "dsa bench topk: --config FILE is required\n\n");
        usage(stderr);
        rc = 2;
    }
    int64_t L[16], K[16];
    int nL = 0, nK = 0;
    if (rc < 0 && dsa_parse_count_list(lens, L, 16, &nL, "--seq-len") != DSA_OK) rc = cli_report("bench topk", DSA_ERR_ARG);
    if (rc < 0 && ks && dsa_parse_count_list(ks, K, 16, &nK, "--topk") != DSA_OK) rc = cli_report("bench topk", DSA_ERR_ARG);
    for (int i = 0; rc < 0 && i < nK + nL; i++)
        if ((i < nK ? K[i] : L[i - nK]) < 1) {
            fprintf(stderr, "dsa bench topk: --%s wants positive counts, got %lld\n", i < nK ? "topk" : "seq-len",
                    (long long)(i < nK ? K[i] : L[i - nK]));
            rc = 2;
        }
    if (rc >= 0) {
        free(sets);
        return rc;
    }
    DsaConfig *cfg = NULL;
    FILE *rec = NULL;
    DsaStatus st = cli_bench_open(path, sets, n_sets, (int)threads, true, record, "Indexer top-k vs scoring alone",
                                  "| seq_len | k | threads | scores s | top-k s | selection share | scoring GFLOP/s |\n"
                                  "|---|---|---|---|---|---|---|\n",
                                  argc, argv, &cfg, &rec);
    if (st == DSA_OK && !ks) K[0] = cfg->model.index_topk, nK = 1;
    if (st == DSA_OK && !json)
        printf("%8s %6s %8s %10s %10s %16s %16s\n", "seq_len", "k", "threads", "scores s", "top-k s", "selection share",
               "scoring GFLOP/s");
    for (int i = 0; st == DSA_OK && i < nL; i++)
        for (int j = 0; st == DSA_OK && j < nK; j++) {
            TopkTimes r = {0, 0};
            st = bench_one(&cfg->model, L[i], K[j], (int)reps, &r);
            if (st != DSA_OK) break;
            const double pairs = (double)L[i] * (double)(L[i] + 1) / 2.0;
            const double gflops = pairs * (2.0 * cfg->model.index_n_heads * cfg->model.index_head_dim +
                                           2.0 * cfg->model.index_n_heads) / r.score_s / 1e9;
            const double share = r.topk_s > r.score_s ? (r.topk_s - r.score_s) / r.topk_s : 0.0;
            const int th = dsa_backend_cpu_threads();
            if (json)
                printf("{\"bench\":\"topk\",\"config\":\"%s\",\"seq_len\":%lld,\"topk\":%lld,\"threads\":%d,"
                       "\"scores_s\":%.4f,\"topk_s\":%.4f,\"selection_share\":%.4f,\"scoring_gflops\":%.2f}\n",
                       path, (long long)L[i], (long long)K[j], th, r.score_s, r.topk_s, share, gflops);
            else
                printf("%8lld %6lld %8d %10.3f %10.3f %15.1f%% %16.1f\n", (long long)L[i], (long long)K[j], th, r.score_s,
                       r.topk_s, 100.0 * share, gflops);
            if (rec)
                fprintf(rec, "| %lld | %lld | %d | %.3f | %.3f | %.1f%% | %.1f |\n", (long long)L[i], (long long)K[j], th,
                        r.score_s, r.topk_s, 100.0 * share, gflops);
            fflush(stdout);
        }
    if (rec) fclose(rec);
    dsa_free(cfg, sizeof *cfg);
    free(sets);
    return cli_report("bench topk", st);
}
