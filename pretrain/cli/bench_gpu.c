/* bench_gpu.c: `dsa bench gpu`: the attention-block ops of one DeepSeek-V3.2 layer on the
 * CUDA backend, at long sequence lengths (default 8K, 32K, 128K; one sequence).
 *
 * Each op is called through the backend tables (kernels/backend.h, kernels/indexer_ops.h)
 * on device memory from be->alloc, filled with seeded random values (never zeros):
 *   indexer_topk  iops->topk: the indexer scores over all causal pairs + the top-k select
 *   dense_fwd     be->attention_forward, MHA form (the stage-1 target, DSA-SPEC §4.1)
 *   dense_bwd     be->attention_backward
 *   kl_dense      iops->kl_dense with gradients: the stage-1 KL target and ∂ (§8.1)
 *   sparse_fwd    be->sparse_attention_forward, MQA form over the top-k indices (§4.2)
 *   sparse_bwd    be->sparse_attention_backward
 *   kl_sparse     iops->kl_sparse with gradients: the stage-2 KL over S_t (§8.2)
 * and two sums of them: warmup_step (indexer_topk + dense_fwd + kl_dense: the warm-up's
 * attention block) and sparse_step (indexer_topk + sparse_fwd + sparse_bwd + kl_sparse),
 * with each part's share. The sparse ops use the indices the top-k op returned. FLOPs are
 * DSA-SPEC §8.4's, from pretrain/plan.c (dsa_plan_attention_flops); time is the median of
 * --reps runs after one warm-up run, the host waiting for the device (be->synchronize)
 * around each, on the monotonic clock. An op whose time, predicted from its rate at the
 * previous length, would not fit the remaining --budget is skipped and says so; so is one
 * whose buffers exceed the device's free memory.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strutil.h"
#include "indexer/indexer.h"
#include "kernels/backend.h"
#include "kernels/device.h"
#include "pretrain/cli/cli.h"
#include "pretrain/plan.h"

enum { OP_TOPK = 0, OP_DENSE_FWD, OP_DENSE_BWD, OP_KL_DENSE, OP_SPARSE_FWD, OP_SPARSE_BWD, OP_KL_SPARSE, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"indexer_topk", "dense_fwd", "dense_bwd", "kl_dense",
                                               "sparse_fwd",   "sparse_bwd", "kl_sparse"};

typedef struct {
    const DsaBackend *be;
    const DsaIndexerOps *iops;
    const DsaModelConfig *m;
    int reps;
    double budget_s, t_start;
    bool want[OP_COUNT];
    double rate[OP_COUNT]; /* FLOP/s at the last length it ran, for the prediction */
    int json;
    uint64_t seed;
    float *pattern; /* host: random values tiled into device buffers */
} Bench;

typedef struct {
    double ms, flops;
    const char *status; /* "ok", "skipped" */
    char note[160];
} OpResult;

enum { PATTERN_FLOATS = 1 << 22 };

/* ---- device buffers -------------------------------------------------------------------- */

static void *dev_alloc(Bench *b, size_t bytes, DsaStatus *st, const char *what) {
    if (*st != DSA_OK) return NULL;
    void *p = b->be->alloc(bytes);
    if (!p) *st = dsa_error_set(DSA_ERR_NOMEM, __FILE__, __LINE__, "%s (%.2f GiB)", what, bytes / 1073741824.0);
    return p;
}

static void dev_free(Bench *b, void *p, size_t bytes) {
    if (p) b->be->release(p, bytes);
}

/* Fill n floats with the host pattern scaled by `scale` (uploads of the tiled pattern). */
static void dev_fill(Bench *b, float *dst, size_t n, float scale, uint64_t stream) {
    float *tmp = malloc(PATTERN_FLOATS * sizeof *tmp);
    if (!tmp) return; /* the buffer stays zero-filled: still a valid input */
    size_t off = (size_t)(dsa_mix64(stream) % (PATTERN_FLOATS / 2));
    for (size_t i = 0; i < PATTERN_FLOATS; i++) tmp[i] = scale * b->pattern[(i + off) % PATTERN_FLOATS];
    for (size_t done = 0; done < n; done += PATTERN_FLOATS) {
        size_t c = n - done < PATTERN_FLOATS ? n - done : PATTERN_FLOATS;
        b->be->upload(dst + done, tmp, c * sizeof *tmp);
    }
    free(tmp);
}

static double free_bytes(const Bench *b) {
    size_t fr = 0, total = 0;
    b->be->memory_info(&fr, &total);
    return (double)fr;
}

/* ---- timing ---------------------------------------------------------------------------- */

typedef struct {
    Bench *b;
    int op;
    /* the call's arguments */
    void *a[12];
    const void *shape;
    DsaIndexerActs *acts;
    const DsaIndexerShape *ishape;
    const void *target;
    DsaIndexerLoss loss;
} Call;

static DsaStatus call_once(Call *c) {
    const DsaBackend *be = c->b->be;
    const DsaIndexerOps *io = c->b->iops;
    void **a = c->a;
    memset(&c->loss, 0, sizeof c->loss);
    switch (c->op) {
    case OP_TOPK: return io->topk(a[0], a[1], c->acts, c->ishape);
    case OP_DENSE_FWD: be->attention_forward(a[0], a[1], a[2], a[3], a[4], c->shape); return DSA_OK;
    case OP_DENSE_BWD:
        be->attention_backward(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], c->shape, a[9]);
        return DSA_OK;
    case OP_KL_DENSE:
        return io->kl_dense(&c->loss, a[0], a[1], a[2], c->acts, c->ishape, c->target, a[3], a[4], 1.0f / 1024);
    case OP_SPARSE_FWD: be->sparse_attention_forward(a[0], a[1], a[2], a[3], a[4], c->shape); return DSA_OK;
    case OP_SPARSE_BWD:
        be->sparse_attention_backward(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], c->shape, a[8]);
        return DSA_OK;
    case OP_KL_SPARSE:
        return io->kl_sparse(&c->loss, a[0], a[1], a[2], c->acts, c->ishape, c->target, a[3], a[4], 1.0f / 1024);
    }
    return DSA_OK;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Warm-up run, then reps timed runs (fewer when the budget runs short); median. */
static DsaStatus time_op(Call *c, double flops, OpResult *r) {
    Bench *b = c->b;
    r->flops = flops;
    r->ms = 0;
    r->status = "skipped";
    if (!b->want[c->op]) {
        snprintf(r->note, sizeof r->note, "not in --ops");
        return DSA_OK;
    }
    double left = b->budget_s - (dsa_time_now() - b->t_start);
    if (b->rate[c->op] > 0 && flops / b->rate[c->op] * (1 + b->reps) > left) {
        snprintf(r->note, sizeof r->note, "predicted %.0f s per run from the last length's rate; %.0f s of --budget left",
                 flops / b->rate[c->op], left);
        return DSA_OK;
    }
    double t[64];
    int n = 0;
    for (int i = 0; i <= b->reps; i++) {
        b->be->synchronize();
        double t0 = dsa_time_now();
        DSA_TRY(call_once(c));
        b->be->synchronize();
        double dt = dsa_time_now() - t0;
        if (i > 0) t[n++] = dt;
        if (i == 0 && b->budget_s - (dsa_time_now() - b->t_start) < dt * b->reps) {
            t[n++] = dt; /* no time for more: report the warm-up run */
            snprintf(r->note, sizeof r->note, "one run only (the warm-up: includes first-launch costs): budget");
            break;
        }
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    r->ms = 1e3 * t[n / 2];
    r->status = "ok";
    b->rate[c->op] = r->ms > 0 ? flops / (r->ms / 1e3) : 0;
    return DSA_OK;
}

/* ---- one length -------------------------------------------------------------------------- */

static void skip_all(OpResult *r, int from, int to, const char *why) {
    for (int i = from; i < to; i++) snprintf(r[i].note, sizeof r[i].note, "%s", why);
}

/* A device allocation that failed skips the ops of its phase, not the run. */
static bool out_of_memory(DsaStatus *st, OpResult *r, int from, int to) {
    if (*st != DSA_ERR_NOMEM) return false;
    char why[160];
    snprintf(why, sizeof why, "device allocation failed: %s", dsa_error_message());
    why[strcspn(why, "\n")] = '\0';
    skip_all(r, from, to, why);
    dsa_error_clear();
    *st = DSA_OK;
    return true;
}

static DsaStatus bench_length(Bench *b, int64_t L, OpResult r[OP_COUNT]) {
    const DsaModelConfig *m = b->m;
    const int64_t H = m->num_attention_heads, dqk = m->qk_nope_head_dim + m->qk_rope_head_dim, dv = m->v_head_dim;
    const int64_t dc = m->kv_lora_rank, dm = dc + m->qk_rope_head_dim, HI = m->index_n_heads, dI = m->index_head_dim;
    const int64_t k = m->index_topk < L ? m->index_topk : L;
    DsaPlanAttnFlops f;
    dsa_plan_attention_flops(m, L, &f);
    const double fl[OP_COUNT] = {f.indexer_topk, f.dense_fwd, f.dense_bwd, f.kl_dense, f.sparse_fwd, f.sparse_bwd, f.kl_sparse};
    for (int i = 0; i < OP_COUNT; i++) r[i] = (OpResult){.flops = fl[i], .status = "skipped"};
    if (dsa_time_now() - b->t_start >= b->budget_s) {
        skip_all(r, 0, OP_COUNT, "--budget spent at the previous lengths");
        return DSA_OK;
    }
    const size_t n = (size_t)L, F = sizeof(float);
    DsaIndexerShape is = {.batch = 1, .seq_len = L, .heads = HI, .head_dim = dI, .rope_dim = m->qk_rope_head_dim,
                          .q_in = m->q_lora_rank > 0 ? m->q_lora_rank : m->hidden_size, .x_in = m->hidden_size,
                          .topk = k, .fp8 = true, .scale = (float)(1.0 / sqrt((double)(HI * dI))), .eps = 1e-6f};
    DsaStatus st = DSA_OK;
    /* indexer state, kept for the whole length: q̂, k̂, w, the selection, the KL gradients */
    DsaIndexerActs acts = {0};
    acts.q = dev_alloc(b, n * HI * dI * F, &st, "indexer q");
    acts.k = dev_alloc(b, n * dI * F, &st, "indexer k");
    acts.w = dev_alloc(b, n * HI * F, &st, "indexer w");
    int32_t *idx = dev_alloc(b, n * k * sizeof(int32_t), &st, "top-k indices");
    float *isc = dev_alloc(b, n * k * F, &st, "top-k scores");
    float *gq = dev_alloc(b, n * HI * dI * F, &st, "indexer dq");
    float *gk = dev_alloc(b, n * dI * F, &st, "indexer dk");
    float *gw = dev_alloc(b, n * HI * F, &st, "indexer dw");
    if (out_of_memory(&st, r, 0, OP_COUNT) || st != DSA_OK) goto out_indexer;
    dev_fill(b, acts.q, n * HI * dI, 0.5f, 1);
    dev_fill(b, acts.k, n * dI, 0.5f, 2);
    dev_fill(b, acts.w, n * HI, 1.0f, 3);
    Call c = {.b = b, .acts = &acts, .ishape = &is};
    c.op = OP_TOPK;
    c.a[0] = idx, c.a[1] = isc;
    DSA_TRY_GOTO(st, time_op(&c, fl[OP_TOPK], &r[OP_TOPK]), out_indexer);
    if (strcmp(r[OP_TOPK].status, "ok")) { /* the sparse ops need a selection: one untimed top-k run */
        DSA_TRY_GOTO(st, call_once(&c), out_indexer);
    }

    /* dense phase: MHA q, k, v, out, lse; the backward's dq, dk, dv (dout aliases out) */
    DsaAttnShape ds = {.batch = 1, .seq_len = L, .heads = H, .qk_dim = dqk, .v_dim = dv, .scale = (float)(1.0 / sqrt((double)dqk))};
    double need = (double)n * H * (4 * dqk + 3 * dv) * F;
    if (need > free_bytes(b)) {
        char why[160];
        snprintf(why, sizeof why, "the dense ops need %.1f GiB of device memory, %.1f GiB free", need / 1073741824.0,
                 free_bytes(b) / 1073741824.0);
        skip_all(r, OP_DENSE_FWD, OP_KL_DENSE + 1, why);
    } else {
        float *q = dev_alloc(b, n * H * dqk * F, &st, "dense q"), *kk = dev_alloc(b, n * H * dqk * F, &st, "dense k");
        float *v = dev_alloc(b, n * H * dv * F, &st, "dense v"), *o = dev_alloc(b, n * H * dv * F, &st, "dense out");
        float *lse = dev_alloc(b, n * H * F, &st, "dense lse");
        bool dense_ok = !out_of_memory(&st, r, OP_DENSE_FWD, OP_KL_DENSE + 1);
        if (dense_ok) {
            dev_fill(b, q, n * H * dqk, 1.0f, 4), dev_fill(b, kk, n * H * dqk, 1.0f, 5), dev_fill(b, v, n * H * dv, 1.0f, 6);
            c = (Call){.b = b, .op = OP_DENSE_FWD, .shape = &ds, .a = {o, lse, q, kk, v}};
            st = time_op(&c, fl[OP_DENSE_FWD], &r[OP_DENSE_FWD]);
            if (strcmp(r[OP_DENSE_FWD].status, "ok") && st == DSA_OK) st = call_once(&c); /* lse for the KL */
        }
        if (st == DSA_OK && dense_ok) {
            size_t scr = (size_t)b->be->attention_scratch_floats(&ds) * F;
            float *dq = dev_alloc(b, n * H * dqk * F, &st, "dense dq"), *dk = dev_alloc(b, n * H * dqk * F, &st, "dense dk");
            float *dvv = dev_alloc(b, n * H * dv * F, &st, "dense dv");
            float *s = dev_alloc(b, scr ? scr : F, &st, "attention scratch");
            if (!out_of_memory(&st, r, OP_DENSE_BWD, OP_DENSE_BWD + 1)) {
                c = (Call){.b = b, .op = OP_DENSE_BWD, .shape = &ds, .a = {dq, dk, dvv, o, o, lse, q, kk, v, s}};
                st = time_op(&c, fl[OP_DENSE_BWD], &r[OP_DENSE_BWD]);
            }
            dev_free(b, dq, n * H * dqk * F), dev_free(b, dk, n * H * dqk * F), dev_free(b, dvv, n * H * dv * F);
            dev_free(b, s, scr ? scr : F);
        }
        if (st == DSA_OK && dense_ok) {
            DsaDenseTarget tg = {.q = q, .k = kk, .lse = lse, .heads = H, .qk_dim = dqk, .scale = ds.scale};
            c = (Call){.b = b, .op = OP_KL_DENSE, .acts = &acts, .ishape = &is, .target = &tg, .a = {gq, gk, gw, idx, isc}};
            st = time_op(&c, fl[OP_KL_DENSE], &r[OP_KL_DENSE]);
        }
        dev_free(b, q, n * H * dqk * F), dev_free(b, kk, n * H * dqk * F), dev_free(b, v, n * H * dv * F);
        dev_free(b, o, n * H * dv * F), dev_free(b, lse, n * H * F);
        if (st != DSA_OK) goto out_indexer;
    }

    /* sparse phase: absorbed q [L, H, d_c + d_r], latent kv [L, d_c + d_r], out, lse; dq, dkv */
    DsaSparseAttnShape ss = {.batch = 1, .seq_len = L, .heads = H, .qk_dim = dm, .v_dim = dc, .topk = k,
                             .scale = (float)(1.0 / sqrt((double)dqk))};
    size_t scr = (size_t)b->be->sparse_attention_scratch_bytes(&ss);
    need = (double)n * H * (2 * dm + dc) * F + (double)n * 2 * dm * F + (double)scr;
    if (need > free_bytes(b)) {
        char why[160];
        snprintf(why, sizeof why, "the sparse ops need %.1f GiB of device memory, %.1f GiB free", need / 1073741824.0,
                 free_bytes(b) / 1073741824.0);
        skip_all(r, OP_SPARSE_FWD, OP_KL_SPARSE + 1, why);
        goto out_indexer;
    }
    float *q = dev_alloc(b, n * H * dm * F, &st, "sparse q"), *kv = dev_alloc(b, n * dm * F, &st, "latent kv");
    float *o = dev_alloc(b, n * H * dc * F, &st, "sparse out"), *lse = dev_alloc(b, n * H * F, &st, "sparse lse");
    bool sparse_ok = !out_of_memory(&st, r, OP_SPARSE_FWD, OP_KL_SPARSE + 1);
    if (sparse_ok) {
        dev_fill(b, q, n * H * dm, 1.0f, 7), dev_fill(b, kv, n * dm, 1.0f, 8);
        c = (Call){.b = b, .op = OP_SPARSE_FWD, .shape = &ss, .a = {o, lse, q, kv, idx}};
        st = time_op(&c, fl[OP_SPARSE_FWD], &r[OP_SPARSE_FWD]);
        if (strcmp(r[OP_SPARSE_FWD].status, "ok") && st == DSA_OK) st = call_once(&c);
    }
    if (st == DSA_OK && sparse_ok) {
        float *dq = dev_alloc(b, n * H * dm * F, &st, "sparse dq"), *dkv = dev_alloc(b, n * dm * F, &st, "latent dkv");
        void *s = dev_alloc(b, scr ? scr : F, &st, "sparse attention scratch");
        if (!out_of_memory(&st, r, OP_SPARSE_BWD, OP_SPARSE_BWD + 1)) {
            c = (Call){.b = b, .op = OP_SPARSE_BWD, .shape = &ss, .a = {dq, dkv, o, o, lse, q, kv, idx, s}};
            st = time_op(&c, fl[OP_SPARSE_BWD], &r[OP_SPARSE_BWD]);
        }
        dev_free(b, dq, n * H * dm * F), dev_free(b, dkv, n * dm * F), dev_free(b, s, scr ? scr : F);
    }
    if (st == DSA_OK && sparse_ok) {
        DsaSparseTarget tg = {.q = q, .kv = kv, .lse = lse, .heads = H, .qk_dim = dm, .scale = ss.scale};
        c = (Call){.b = b, .op = OP_KL_SPARSE, .acts = &acts, .ishape = &is, .target = &tg, .a = {gq, gk, gw, idx, isc}};
        st = time_op(&c, fl[OP_KL_SPARSE], &r[OP_KL_SPARSE]);
    }
    dev_free(b, q, n * H * dm * F), dev_free(b, kv, n * dm * F), dev_free(b, o, n * H * dc * F), dev_free(b, lse, n * H * F);
out_indexer:
    dev_free(b, acts.q, n * HI * dI * F), dev_free(b, acts.k, n * dI * F), dev_free(b, acts.w, n * HI * F);
    dev_free(b, idx, n * k * sizeof(int32_t)), dev_free(b, isc, n * k * F);
    dev_free(b, gq, n * HI * dI * F), dev_free(b, gk, n * dI * F), dev_free(b, gw, n * HI * F);
    return st;
}

/* ---- output -------------------------------------------------------------------------------- */

static double tflops(const OpResult *r) { return r->ms > 0 ? r->flops / (r->ms / 1e3) / 1e12 : 0; }

static void print_row(const Bench *b, int64_t L, const char *op, const OpResult *r) {
    if (b->json) {
        printf("{\"bench\":\"gpu\",\"impl\":\"dsa\",\"seq_len\":%lld,\"op\":\"%s\",\"status\":\"%s\",\"ms\":%.4f,"
               "\"flops\":%.15g,\"tflops\":%.6g,\"note\":\"%s\"}\n",
               (long long)L, op, r->status, r->ms, r->flops, tflops(r), r->note);
    } else if (!strcmp(r->status, "ok")) {
        printf("%-8lld %-13s %12.3f %12.4g %9.4g  %s\n", (long long)L, op, r->ms, r->flops / 1e12, tflops(r), r->note);
    } else {
        printf("%-8lld %-13s %12s %12.4g %9s  skipped: %s\n", (long long)L, op, "-", r->flops / 1e12, "-", r->note);
    }
}

/* A stage's attention-block step as the sum of its parts, with each part's share. */
static void print_step(const Bench *b, int64_t L, const char *name, const OpResult *r, const int *parts, int np) {
    OpResult sum = {.status = "ok"};
    for (int i = 0; i < np; i++) {
        if (strcmp(r[parts[i]].status, "ok")) {
            sum.status = "skipped";
            snprintf(sum.note, sizeof sum.note, "%s did not run", op_names[parts[i]]);
        }
        sum.ms += r[parts[i]].ms, sum.flops += r[parts[i]].flops;
    }
    if (strcmp(sum.status, "ok")) sum.ms = 0;
    size_t len = 0;
    for (int i = 0; i < np && !strcmp(sum.status, "ok"); i++)
        len += (size_t)snprintf(sum.note + len, sizeof sum.note - len, "%s%s %.0f%%", i ? ", " : "", op_names[parts[i]],
                                100 * r[parts[i]].ms / sum.ms);
    print_row(b, L, name, &sum);
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa bench gpu [--seq-len LIST] [--reps N] [--ops LIST] [--budget S] [--config FILE]\n"
            "                     [--seed N] [--device NAME] [--json]\n\n"
            "Times the attention-block ops of one layer of the config's shapes (default the\n"
            "DeepSeek-V3.2 layer: 128 heads, kv_lora 512, rope 64, indexer 64 x 128, top-2048) on\n"
            "the CUDA backend, one sequence per length, on device memory through the backend\n"
            "tables: indexer_topk (scores over all causal pairs + top-k), dense_fwd, dense_bwd,\n"
            "kl_dense (stage-1 KL target with gradients), sparse_fwd, sparse_bwd, kl_sparse; and\n"
            "warmup_step / sparse_step, the sum of a stage's parts with each part's share.\n"
            "Prints ms (median of --reps after one warm-up run, the host synchronizing around each),\n"
            "TFLOP counted as DSA-SPEC 8.4 (dsa plan's counts) and TFLOPS. Refused without a CUDA\n"
            "device. tools/bench_gpu_torch.py runs the same ops as plain PyTorch for a ratio.\n\n"
            "options:\n"
            "  --seq-len LIST  sequence lengths (default 8Ki,32Ki,128Ki; K/Ki suffixes)\n"
            "  --reps N        timed runs per op and length (default 3)\n"
            "  --ops LIST      which ops (default all): indexer_topk,dense_fwd,dense_bwd,kl_dense,\n"
            "                  sparse_fwd,sparse_bwd,kl_sparse\n"
            "  --budget S      seconds for the whole run (default 300): an op whose time, predicted\n"
            "                  from its rate at the previous length, does not fit is skipped, saying so\n"
            "  --config FILE   the shapes (default configs/deepseek-v3.2.json)\n"
            "  --seed N        input values (default 1)\n"
            "  --device NAME   the backend (default cuda; cpu runs the same calls on the CPU reference,\n"
            "                  with small --config shapes: a check of the benchmark, not of a GPU)\n"
            "  --json          one JSON object per op and length instead of the table\n\n"
            "example:\n  dsa bench gpu --seq-len 8Ki,32Ki --reps 5 --json > bench-gpu.jsonl\n");
}

static DsaStatus parse_ops(const char *text, bool *want) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    memset(want, 0, OP_COUNT * sizeof *want);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int i = 0;
        while (i < OP_COUNT && strcmp(tok, op_names[i])) i++;
        if (i == OP_COUNT) {
            const char *names[OP_COUNT + 1] = {NULL};
            memcpy(names, op_names, sizeof op_names);
            const char *guess = dsa_closest_word(tok, names);
            DSA_FAIL(DSA_ERR_ARG, "--ops: unknown op \"%s\"%s%s%s (see dsa bench gpu --help)", tok,
                     guess ? "; did you mean \"" : "", guess ? guess : "", guess ? "\"?" : "");
        }
        want[i] = true;
    }
    return DSA_OK;
}

static DsaStatus run(Bench *b, const char *device, const char *path, const int64_t *L, int nL) {
    DsaCudaInfo info;
    dsa_device_cuda_query(&info);
    if (!strcmp(device, "cuda")) {
        if (!info.compiled) DSA_FAIL(DSA_ERR_DEVICE, "needs the CUDA backend: %s", info.why_unavailable);
        if (info.device_count < 1) DSA_FAIL(DSA_ERR_DEVICE, "needs a CUDA device: none is usable (%s)", info.why_unavailable);
    } else {
        snprintf(info.name, sizeof info.name, "%s backend (not a GPU: a check of the benchmark itself)", device);
        info.total_memory = 0, info.cc_major = info.cc_minor = 0;
    }
    DSA_TRY(dsa_backend_get(device, &b->be));
    DSA_TRY(dsa_indexer_ops_get(b->be, &b->iops));
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    if (!cfg) DSA_FAIL(DSA_ERR_NOMEM, "config");
    DsaStatus st = dsa_config_load(cfg, path, NULL, 0);
    if (st == DSA_OK && !cfg->model.has_indexer)
        DSA_FAIL_GOTO(st, out, DSA_ERR_CONFIG, "%s has no indexer (model.index_topk is null): dsa bench gpu times DSA ops", path);
    if (st != DSA_OK) goto out;
    b->m = &cfg->model;
    b->pattern = malloc(PATTERN_FLOATS * sizeof *b->pattern);
    if (!b->pattern) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "host pattern buffer");
    for (size_t i = 0; i < PATTERN_FLOATS; i++)
        b->pattern[i] = (float)((double)dsa_rng_u32_at(b->seed, 0, i) / 4294967296.0 * 2.0 - 1.0);
    if (!strcmp(device, "cuda"))
        fprintf(stderr, "dsa bench gpu: %s, %.1f GiB, sm_%d%d; %s; reps %d, budget %.0f s\n", info.name,
                (double)info.total_memory / 1073741824.0, info.cc_major, info.cc_minor, path, b->reps, b->budget_s);
    else
        fprintf(stderr, "dsa bench gpu: %s; %s; reps %d, budget %.0f s\n", info.name, path, b->reps, b->budget_s);
    if (!b->json)
        printf("%-8s %-13s %12s %12s %9s  %s\n", "seq_len", "op", "ms", "TFLOP", "TFLOPS", "note");
    b->t_start = dsa_time_now();
    for (int i = 0; st == DSA_OK && i < nL; i++) {
        OpResult r[OP_COUNT];
        st = bench_length(b, L[i], r);
        if (st != DSA_OK) {
            dsa_error_push(__FILE__, __LINE__, "at seq_len %lld", (long long)L[i]);
            break;
        }
        for (int o = 0; o < OP_COUNT; o++) print_row(b, L[i], op_names[o], &r[o]);
        print_step(b, L[i], "warmup_step", r, (const int[]){OP_TOPK, OP_DENSE_FWD, OP_KL_DENSE}, 3);
        print_step(b, L[i], "sparse_step", r, (const int[]){OP_TOPK, OP_SPARSE_FWD, OP_SPARSE_BWD, OP_KL_SPARSE}, 4);
        fflush(stdout);
    }
out:
    free(b->pattern);
    dsa_free(cfg, sizeof *cfg);
    return st;
}

int cli_bench_gpu(int argc, char **argv) {
    static const struct option longopts[] = {
        {"seq-len", required_argument, 0, 'L'}, {"reps", required_argument, 0, 'n'},
        {"ops", required_argument, 0, 'o'},     {"budget", required_argument, 0, 'B'},
        {"config", required_argument, 0, 'c'},  {"seed", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},          {"device", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *device = "cuda";
    Bench b = {.reps = 3, .budget_s = 300, .seed = 1};
    for (int i = 0; i < OP_COUNT; i++) b.want[i] = true;
    const char *lens = "8Ki,32Ki,128Ki", *path = "configs/deepseek-v3.2.json";
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int64_t v = 0;
        DsaStatus st = DSA_OK;
        switch (opt) {
        case 'L': lens = optarg; break;
        case 'n':
            st = dsa_parse_count(optarg, &v, "--reps");
            if (st == DSA_OK && (v < 1 || v > 63)) st = dsa_error_set(DSA_ERR_ARG, __FILE__, __LINE__, "--reps %lld: 1 to 63", (long long)v);
            b.reps = (int)v;
            break;
        case 'o': st = parse_ops(optarg, b.want); break;
        case 'B':
            st = dsa_parse_count(optarg, &v, "--budget");
            if (st == DSA_OK && v < 1) st = dsa_error_set(DSA_ERR_ARG, __FILE__, __LINE__, "--budget must be at least 1 s");
            b.budget_s = (double)v;
            break;
        case 'c': path = optarg; break;
        case 's': st = dsa_parse_count(optarg, &v, "--seed"); b.seed = (uint64_t)v; break;
        case 'j': b.json = 1; break;
        case 'd': device = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (st != DSA_OK) {
            cli_report("bench gpu", st);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dsa bench gpu: unexpected argument \"%s\" (see dsa bench gpu --help)\n", argv[optind]);
        return 2;
    }
    int64_t L[16];
    int nL = 0;
    if (dsa_parse_count_list(lens, L, 16, &nL, "--seq-len") != DSA_OK) {
        cli_report("bench gpu", DSA_ERR_ARG);
        return 2;
    }
    for (int i = 0; i < nL; i++)
        if (L[i] < 2 || L[i] > INT32_MAX / 2) {
            fprintf(stderr, "dsa bench gpu: --seq-len %lld is out of range (2 to %d)\n", (long long)L[i], INT32_MAX / 2);
            return 2;
        }
    return cli_report("bench gpu", run(&b, device, path, L, nL));
}
