/* bench_dsa.c: `dsa bench dsa`: one training step of a DSA config's model with dense
 * attention and with sparse top-k attention, over a sweep of sequence lengths.
 *
 * Steps timed (after one untimed warm-up step of each kind, random tokens):
 *   dense   LM step: dense MLA (MHA form) forward and backward, AdamW; no indexer work
 *   warmup  stage-1 step: dense forward, the indexer's top-k, dense KL and indexer
 *           backward per layer (DSA-SPEC §8.1); no LM backward; AdamW on the indexer
 *   sparse  stage-2 step: the indexer's streaming top-k, sparse MLA (MQA form) forward
 *           and backward over S_t, the sparse KL and indexer backward (§8.2), AdamW
 * Attention FLOPs per step (all layers, forward + backward counted as 3.5 x forward):
 *   dense  3.5 · 2·H·(d_qk + d_v) · Σ_t (t+1)
 *   sparse 3.5 · 2·H·(d_c + d_r + d_c) · Σ_t min(t+1, k)          (§8.3)
 * and the indexer's, 2·H_I·d_I per scored pair: Σ_t (t+1) pairs for the top-k, plus
 * 3 × that over the KL's pairs (scores, ∂q, ∂k).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strutil.h"
#include "kernels/backend.h"
#include "pretrain/cli/cli.h"
#include "pretrain/model.h"
#include "pretrain/optim.h"

typedef enum { STEP_DENSE = 0, STEP_WARMUP, STEP_SPARSE, STEP_KINDS } StepKind;
static const char *const kind_names[STEP_KINDS] = {"dense", "warmup", "sparse"};

typedef struct {
    double ms, attn_gflop, indexer_gflop;
    int64_t peak_bytes, rss_bytes;
} KindResult;

/* Pairs Σ_t min(t + 1, cap) of a causal sequence of L tokens. */
static double causal_pairs(int64_t L, int64_t cap) {
    double p = 0;
    for (int64_t t = 0; t < L; t++) p += (double)(t + 1 < cap ? t + 1 : cap);
    return p;
}

static void flops_of(const DsaModelConfig *c, StepKind kind, int64_t L, int64_t k, int64_t batch, KindResult *r) {
    const double H = (double)c->num_attention_heads, nl = (double)c->num_hidden_layers * (double)batch;
    const double dqk = (double)(c->qk_nope_head_dim + c->qk_rope_head_dim), dv = (double)c->v_head_dim;
    const double dm = (double)(c->kv_lora_rank + c->qk_rope_head_dim), dc = (double)c->kv_lora_rank;
    const double idx = 2.0 * (double)c->index_n_heads * (double)c->index_head_dim;
    const double dense = causal_pairs(L, L), sparse = causal_pairs(L, k);
    const bool is_sparse = kind == STEP_SPARSE && L > k;
    r->attn_gflop = nl * (is_sparse ? 3.5 * 2 * H * (dm + dc) * sparse : (kind == STEP_WARMUP ? 1.0 : 3.5) * 2 * H * (dqk + dv) * dense) / 1e9;
    r->indexer_gflop = kind == STEP_DENSE ? 0.0 : nl * idx * (dense + 3.0 * (is_sparse ? sparse : dense)) / 1e9;
}

static DsaStatus bench_kind(DsaModel *m, DsaOptimizer *o, const DsaConfig *cfg, StepKind kind, int64_t batch,
                            int64_t L, int steps, const int32_t *in, const int32_t *tgt, bool *trainable,
                            KindResult *r) {
    DsaForwardMode md = dsa_forward_mode_default(&cfg->model);
    md.sparse = kind == STEP_SPARSE;
    md.indexer_loss = kind != STEP_DENSE;
    md.topk = cfg->model.index_topk;
    md.indexer_grad_scale = (float)(1.0 / (double)(batch * L));
    md.recall_rows = 0; /* the sampled recall metric is not part of the step being timed */
    DSA_TRY(dsa_model_set_mode(m, &md));
    for (int i = 0; i < m->table.count; i++) {
        bool indexer = m->table.info[i].group == DSA_GROUP_INDEXER;
        trainable[i] = kind == STEP_WARMUP ? indexer : kind == STEP_SPARSE ? true : !indexer;
        m->requires_grad[i] = trainable[i];
    }
    dsa_mem_reset_peak();
    double total = 0;
    for (int s = 0; s <= steps; s++) {
        double t0 = dsa_time_now(), sum = 0;
        int64_t count = 0;
        dsa_model_zero_grad(m);
        dsa_model_reset_indexer_stats(m);
        DSA_TRY(dsa_model_forward(m, in, tgt, batch, L, &sum, &count));
        if (kind != STEP_WARMUP) dsa_model_backward(m, (float)(1.0 / (double)count));
        DsaOptimStepInfo info;
        dsa_optim_step(o, m->params, m->grads, trainable, &cfg->optimizer, 1e-5, &info);
        if (s > 0) total += dsa_time_now() - t0;
    }
    r->ms = 1e3 * total / steps;
    r->peak_bytes = (int64_t)dsa_mem_peak();
    r->rss_bytes = dsa_mem_rss_peak();
    flops_of(&cfg->model, kind, L, cfg->model.index_topk, batch, r);
    return DSA_OK;
}

static DsaStatus bench_length(const DsaConfig *cfg, int64_t batch, int64_t L, int steps, const bool *kinds,
                              KindResult *res) {
    DsaModel m;
    DSA_TRY(dsa_model_init(&m, &cfg->model, dsa_backend_cpu()));
    DsaOptimizer o;
    DsaStatus st = DSA_OK;
    size_t ntok = (size_t)(batch * L);
    int32_t *in = dsa_malloc(ntok * sizeof *in), *tgt = dsa_malloc(ntok * sizeof *tgt);
    bool *trainable = dsa_malloc((size_t)m.table.count * sizeof *trainable);
    DSA_TRY_GOTO(st, dsa_optim_init(&o, &m.table, m.be), out_model);
    if (!in || !tgt || !trainable) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "bench buffers");
    DSA_TRY_GOTO(st, dsa_model_init_weights(&m, 1), out);
    for (size_t i = 0; i < ntok; i++) {
        in[i] = (int32_t)(dsa_rng_u32_at(2, 0, i) % (uint64_t)cfg->model.vocab_size);
        tgt[i] = (int32_t)(dsa_rng_u32_at(2, 1, i) % (uint64_t)cfg->model.vocab_size);
    }
    for (int k = 0; k < STEP_KINDS; k++) {
        if (!kinds[k]) continue;
        DSA_TRY_GOTO(st, bench_kind(&m, &o, cfg, (StepKind)k, batch, L, steps, in, tgt, trainable, &res[k]), out);
        dsa_log(DSA_LOG_INFO, "L = %lld: %s step %.1f ms", (long long)L, kind_names[k], res[k].ms);
    }
out:
    dsa_optim_free(&o);
out_model:
    dsa_free(in, ntok * sizeof *in);
    dsa_free(tgt, ntok * sizeof *tgt);
    dsa_free(trainable, (size_t)m.table.count * sizeof *trainable);
    dsa_model_free(&m);
    return st;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa bench dsa --config FILE [--seq-len LIST] [--kinds LIST] [--batch B] [--steps N]\n"
            "                     [--threads T] [--set KEY=VALUE ...] [--json] [--record FILE]\n\n"
            "Times one training step of the config's DSA model (it must have an indexer) with dense\n"
            "attention (\"dense\": the LM step without indexer), the indexer warm-up step (\"warmup\")\n"
            "and the sparse top-k step (\"sparse\") at each sequence length of LIST (default\n"
            "4096,8192; K/Ki suffixes), after an untimed warm-up step of each kind. Prints ms per\n"
            "step, attention and indexer GFLOP per step (forward + backward, DSA-SPEC 8.3) and peak\n"
            "memory, so the length where sparse overtakes dense and the L*k growth of the sparse\n"
            "attention cost can be read off.\n\n"
            "options:\n"
            "  --kinds LIST   which steps: dense,warmup,sparse (default all three)\n"
            "  --steps N      timed steps per kind and length (default 1)\n");
}

int cli_bench_dsa(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'}, {"seq-len", required_argument, 0, 'L'},
        {"batch", required_argument, 0, 'b'},  {"steps", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"set", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},         {"record", required_argument, 0, 'r'},
        {"kinds", required_argument, 0, 'k'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *path = NULL, *lens = "4096,8192", *record = NULL, *kinds_arg = "dense,warmup,sparse";
    long long batch = 1, steps = 1, threads = 0;
    int json = 0, rc = -1, opt, n_sets = 0;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end = NULL;
        long long v = 0;
        if (strchr("bnt", opt)) {
            v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || v < (opt == 't' ? 0 : 1)) {
                fprintf(stderr, "dsa bench dsa: --%s wants a %s integer, got \"%s\"\n",
                        opt == 'b' ? "batch" : opt == 'n' ? "steps" : "threads", opt == 't' ? "non-negative" : "positive",
                        optarg);
                rc = 2;
                break;
            }
        }
        switch (opt) {
        case 'c': path = optarg; break;
        case 'L': lens = optarg; break;
        case 'b': batch = v; break;
        case 'n': steps = v; break;
        case 't': threads = v; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'j': json = 1; break;
        case 'r': record = optarg; break;
        case 'k': kinds_arg = optarg; break;
        case 'h': usage(stdout); rc = 0; break;
        default: usage(stderr); rc = 2; break;
        }
    }
    bool kinds[STEP_KINDS] = {false};
    if (rc < 0) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", kinds_arg);
        for (char *tok = strtok(buf, ","); tok && rc < 0; tok = strtok(NULL, ",")) {
            int k = 0;
            while (k < STEP_KINDS && strcmp(tok, kind_names[k])) k++;
            if (k == STEP_KINDS) {
                fprintf(stderr, "dsa bench dsa: --kinds: unknown step \"%s\" (dense, warmup, sparse)\n", tok);
                rc = 2;
            } else {
                kinds[k] = true;
            }
        }
    }
    if (rc < 0 && (!path || optind < argc)) {
        fprintf(stderr, "dsa bench dsa: --config FILE is required\n\n");
        usage(stderr);
        rc = 2;
    }
    int64_t L[16];
    int nL = 0;
    if (rc < 0 && dsa_parse_count_list(lens, L, 16, &nL, "--seq-len") != DSA_OK) rc = cli_report("bench dsa", DSA_ERR_ARG);
    if (rc >= 0) {
        free(sets);
        return rc;
    }
    DsaConfig *cfg = NULL;
    FILE *rec = NULL;
    DsaStatus st = cli_bench_open(path, sets, n_sets, (int)threads, true, record, "Dense vs sparse training step",
                                  "| seq_len x batch | step | ms/step | attention GFLOP | indexer GFLOP | peak alloc | "
                                  "peak RSS |\n|---|---|---|---|---|---|---|\n",
                                  argc, argv, &cfg, &rec);
    if (st == DSA_OK && !json)
        printf("%-16s %-7s %10s %16s %14s %11s %10s\n", "seq_len x batch", "step", "ms/step", "attention GFLOP",
               "indexer GFLOP", "peak alloc", "peak RSS");
    for (int i = 0; st == DSA_OK && i < nL; i++) {
        KindResult r[STEP_KINDS] = {{0}};
        st = bench_length(cfg, batch, L[i], (int)steps, kinds, r);
        for (int k = 0; st == DSA_OK && k < STEP_KINDS; k++) {
            if (!kinds[k]) continue;
            if (json) {
                printf("{\"bench\":\"dsa\",\"config\":\"%s\",\"seq_len\":%lld,\"batch\":%lld,\"topk\":%lld,\"step\":\"%s\","
                       "\"threads\":%d,\"ms_per_step\":%.3f,\"attention_gflop\":%.3f,\"indexer_gflop\":%.3f,"
                       "\"peak_alloc_bytes\":%lld,\"peak_rss_bytes\":%lld}\n",
                       path, (long long)L[i], batch, (long long)cfg->model.index_topk, kind_names[k],
                       dsa_backend_cpu_threads(), r[k].ms, r[k].attn_gflop, r[k].indexer_gflop,
                       (long long)r[k].peak_bytes, (long long)r[k].rss_bytes);
            } else {
                char dims[48];
                snprintf(dims, sizeof dims, "%lld x %lld", (long long)L[i], batch);
                printf("%-16s %-7s %10.1f %16.1f %14.1f %9.0fMi %8.0fMi\n", dims, kind_names[k], r[k].ms,
                       r[k].attn_gflop, r[k].indexer_gflop, r[k].peak_bytes / 1048576.0, r[k].rss_bytes / 1048576.0);
            }
            if (rec)
                fprintf(rec, "| %lld x %lld | %s | %.1f | %.1f | %.1f | %.0f MiB | %.0f MiB |\n", (long long)L[i], batch,
                        kind_names[k], r[k].ms, r[k].attn_gflop, r[k].indexer_gflop, r[k].peak_bytes / 1048576.0,
                        r[k].rss_bytes / 1048576.0);
        }
        fflush(stdout);
    }
    if (rec) fclose(rec);
    dsa_free(cfg, sizeof *cfg);
    free(sets);
    return cli_report("bench dsa", st);
}
