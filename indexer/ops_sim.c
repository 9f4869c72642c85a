/* ops_sim.c: the indexer's op table (kernels/indexer_ops.h) of the simulated device
 * (kernels/sim/sim.h): the CPU entries of indexer.h, called with every pointer translated
 * back to host memory, the ones inside the acts, weights, grads and target structs too.
 * The CPU entries run their projections on the CPU backend (real pointers from here on),
 * in the caller's precision (the CPU's bf16 table when `be` is sim's).
 */
#include "indexer/indexer.h"
#include "kernels/sim/sim.h"

#define R(p) dsa_sim_real(p)

static DsaIndexerActs real_acts(const DsaIndexerActs *a) {
    return (DsaIndexerActs){.q = R(a->q), .k = R(a->k), .w = R(a->w), .k_norm = R(a->k_norm), .k_rstd = R(a->k_rstd)};
}

static DsaIndexerWeights real_weights(const DsaIndexerWeights *w) {
    return (DsaIndexerWeights){.wq_b = R(w->wq_b), .wk = R(w->wk), .k_norm_weight = R(w->k_norm_weight),
                               .k_norm_bias = R(w->k_norm_bias), .weights_proj = R(w->weights_proj)};
}

static DsaSparseTarget real_sparse(const DsaSparseTarget *t) {
    DsaSparseTarget r = *t;
    r.q = R(t->q), r.kv = R(t->kv), r.lse = R(t->lse);
    return r;
}

/* The CPU table of be's precision (kernels/backend.h dsa_backend_for_precision). */
static const DsaBackend *cpu_twin(const DsaBackend *be) {
    const DsaBackend *t = dsa_backend_cpu();
    if (be->fp32_table && dsa_backend_for_precision(t, "bf16", &t) != DSA_OK) t = dsa_backend_cpu();
    return t;
}

static void sim_forward(DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                        const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin, const DsaBackend *be) {
    DsaIndexerActs ra = real_acts(a);
    DsaIndexerWeights rw = real_weights(wt);
    dsa_indexer_forward(&ra, R(x), R(cq), &rw, s, R(rope_cos), R(rope_sin), cpu_twin(be));
}

static DsaStatus sim_topk(int32_t *idx, float *scores, const DsaIndexerActs *a, const DsaIndexerShape *s) {
    DsaIndexerActs ra = real_acts(a);
    return dsa_indexer_topk(R(idx), R(scores), &ra, s);
}

static DsaStatus sim_kl_dense(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                              const DsaIndexerShape *s, const DsaDenseTarget *target, const int32_t *idx,
                              const float *idx_scores, float grad_scale) {
    DsaIndexerActs ra = real_acts(a);
    DsaDenseTarget rt = *target;
    rt.q = R(target->q), rt.k = R(target->k), rt.lse = R(target->lse);
    return dsa_indexer_kl_dense(out, R(dq), R(dk), R(dw), &ra, s, &rt, R(idx), R(idx_scores), grad_scale);
}

static DsaStatus sim_kl_sparse(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                               const DsaIndexerShape *s, const DsaSparseTarget *target, const int32_t *idx,
                               const float *idx_scores, float grad_scale) {
    DsaIndexerActs ra = real_acts(a);
    DsaSparseTarget rt = real_sparse(target);
    return dsa_indexer_kl_sparse(out, R(dq), R(dk), R(dw), &ra, s, &rt, R(idx), R(idx_scores), grad_scale);
}

static void sim_sparse_recall(DsaIndexerLoss *out, const DsaIndexerShape *s, const DsaSparseTarget *target,
                              const int32_t *idx, int64_t rows_per_seq) {
    DsaSparseTarget rt = real_sparse(target);
    dsa_indexer_sparse_recall(out, s, &rt, R(idx), rows_per_seq);
}

static void sim_backward(const DsaIndexerGrads *g, float *dq, float *dk, const float *dw, const DsaIndexerActs *a,
                         const float *x, const float *cq, const DsaIndexerWeights *wt, const DsaIndexerShape *s,
                         const float *rope_cos, const float *rope_sin, const DsaBackend *be) {
    DsaIndexerGrads rg = {.wq_b = R(g->wq_b), .wk = R(g->wk), .k_norm_weight = R(g->k_norm_weight),
                          .k_norm_bias = R(g->k_norm_bias), .weights_proj = R(g->weights_proj)};
    DsaIndexerActs ra = real_acts(a);
    DsaIndexerWeights rw = real_weights(wt);
    dsa_indexer_backward(&rg, R(dq), R(dk), R(dw), &ra, R(x), R(cq), &rw, s, R(rope_cos), R(rope_sin),
                         cpu_twin(be));
}

static const DsaIndexerOps sim_indexer_ops = {
    .name = "sim",
    .forward = sim_forward,
    .topk = sim_topk,
    .kl_dense = sim_kl_dense,
    .kl_sparse = sim_kl_sparse,
    .sparse_recall = sim_sparse_recall,
    .backward = sim_backward,
};

const DsaIndexerOps *dsa_indexer_ops_sim(void) { return &sim_indexer_ops; }
