/* indexer_ops.h: the lightning indexer's types and its table of ops (DSA-SPEC §5-§7),
 * shared by every backend: the CPU reference entries are the functions of indexer/indexer.h
 * (indexer/ops.c puts them in a DsaIndexerOps), a device backend provides its own table
 * with exactly these contracts, on its own memory (kernels/backend.h, "memory").
 *
 * The types live here, not in indexer/, because kernels/ may not include indexer/ and the
 * device entries need them (DESIGN.md, Layout). indexer/indexer.h documents each entry's
 * math and contract in full; a short form is repeated next to each field below.
 */
#ifndef DSA_KERNELS_INDEXER_OPS_H
#define DSA_KERNELS_INDEXER_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/backend.h"

typedef struct {
    int64_t batch, seq_len;   /* N = batch · seq_len tokens, sequences independent */
    int64_t heads, head_dim;  /* H_I, d_I (a power of two) */
    int64_t rope_dim;         /* d_r (even, <= d_I) */
    int64_t q_in, x_in;       /* widths of cQ and x */
    int64_t topk;             /* k */
    bool fp8;                 /* FP8 round trip of q and k (off for gradient checks) */
    float scale;              /* c = (H_I d_I)^-1/2 */
    float eps;                /* k_norm LayerNorm epsilon (1e-6) */
} DsaIndexerShape;

/* Parameters (HF storage [out, in]); gradients alike, NULL where not wanted. */
typedef struct {
    const float *wq_b;         /* [H_I · d_I, q_in] */
    const float *wk;           /* [d_I, x_in] */
    const float *k_norm_weight, *k_norm_bias; /* [d_I] */
    const float *weights_proj; /* [H_I, x_in] */
} DsaIndexerWeights;

typedef struct {
    float *wq_b, *wk, *k_norm_weight, *k_norm_bias, *weights_proj;
} DsaIndexerGrads;

/* Saved forward state for N tokens (caller-owned buffers, see dsa_indexer_acts_floats). */
typedef struct {
    float *q;      /* [N, H_I, d_I] q̂: what the scores use (dequantized FP8 or plain) */
    float *k;      /* [N, d_I] k̂ */
    float *w;      /* [N, H_I] head weights */
    float *k_norm; /* [N, d_I] (k̃ − μ) / σ before the affine part (LayerNorm backward) */
    float *k_rstd; /* [N] 1 / σ */
} DsaIndexerActs;

/* Per-row results of a KL pass (§6.1); rows of all sequences, N entries each. */
typedef struct {
    double kl_sum;    /* Σ_t KL_t over the rows */
    double mass_sum;  /* Σ_t M_t: dense attention mass inside S_t (recall), rows measured */
    int64_t rows;     /* rows counted in kl_sum */
    int64_t mass_rows; /* rows counted in mass_sum */
    double selected_sum; /* Σ_t |S_t| (keys attended) */
} DsaIndexerLoss;

/* The main model's attention in MHA form (DSA-SPEC §4.1), for the dense target. */
typedef struct {
    const float *q, *k;   /* [N, H, dqk] each (rope part rotated) */
    const float *lse;     /* [batch, H, seq_len] from the dense attention forward */
    int64_t heads, qk_dim;
    float scale;          /* τ */
} DsaDenseTarget;

/* The main model's attention in MQA form (DSA-SPEC §4.2), for the sparse target. */
typedef struct {
    const float *q;       /* [N, H, qk_dim] absorbed queries */
    const float *kv;      /* [N, qk_dim] shared key rows */
    const float *lse;     /* [batch, H, seq_len] from the sparse attention forward */
    int64_t heads, qk_dim;
    float scale;          /* τ */
} DsaSparseTarget;

/* The indexer's part of a backend. Every pointer argument is backend memory except the
 * DsaIndexerLoss outputs (host structs, the scalars the host loop reads) and the shape,
 * weight, target and grads structs themselves (host structs holding backend pointers). */
typedef struct DsaIndexerOps {
    const char *name; /* the backend's name */
    /* q̂, k̂, w of N tokens from the detached x and cQ (indexer.h dsa_indexer_forward) */
    void (*forward)(DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                    const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin, const DsaBackend *be);
    /* idx [N, k] and their scores (§5.4 order, −1 / −∞ padding) */
    DsaStatus (*topk)(int32_t *idx, float *scores, const DsaIndexerActs *a, const DsaIndexerShape *s);
    /* stage 1 KL over all causal keys, its gradients when grad_scale != 0 (§6.2, §8.1) */
    DsaStatus (*kl_dense)(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                          const DsaIndexerShape *s, const DsaDenseTarget *target, const int32_t *idx,
                          const float *idx_scores, float grad_scale);
    /* stage 2 KL over S_t (§6.3, §8.2) */
    DsaStatus (*kl_sparse)(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                           const DsaIndexerShape *s, const DsaSparseTarget *target, const int32_t *idx,
                           const float *idx_scores, float grad_scale);
    /* recall of S_t against dense attention on sampled rows (§6.2 metric) */
    void (*sparse_recall)(DsaIndexerLoss *out, const DsaIndexerShape *s, const DsaSparseTarget *target,
                          const int32_t *idx, int64_t rows_per_seq);
    /* parameter gradients from ∂q̂, ∂k̂, ∂w (§7) */
    void (*backward)(const DsaIndexerGrads *g, float *dq, float *dk, const float *dw, const DsaIndexerActs *a,
                     const float *x, const float *cq, const DsaIndexerWeights *wt, const DsaIndexerShape *s,
                     const float *rope_cos, const float *rope_sin, const DsaBackend *be);
} DsaIndexerOps;

#endif
