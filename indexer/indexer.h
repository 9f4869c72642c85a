/* indexer.h: the lightning indexer (DSA-SPEC §5, §7), its top-k selection (§5.4) and the
 * KL losses that train it (§6), CPU reference.
 *
 * One layer's indexer reads two detached inputs per token: the query latent cQ (d_q wide,
 * or the hidden state x where the model has no query latent) and the attention-block
 * input x (D wide). Per token t (H_I heads of d_I dims, d_r rotary dims):
 *
 *   q_t,j = (W_qI cQ_t)_j                       k_t = LayerNorm(W_kI x_t; γ, β)
 *   NeoX RoPE on dims [0, d_r) of every q_t,j and of k_t, then Ĥ (Hadamard) on each
 *   q̂, k̂ = FP8 e4m3 round trip with a power-of-two scale per group (or the identity
 *   when fp8 is off)                            w_t,j = W_w[j] · x_t
 *   I_t,s = c Σ_j w_t,j ReLU(q̂_t,j · k̂_s) for s ≤ t,   c = (H_I d_I)^-1/2
 *
 * Precision: fp32 throughout (the reference rounds intermediate activations to bf16;
 * DESIGN.md: the CPU backend computes in fp32). The FP8 quantization itself is exact.
 *
 * Memory: saved activations are O(N · H_I · d_I); score tiles are (query block) ×
 * (key block) and live in per-thread scratch; no L × L buffer exists (DESIGN.md).
 * Every function is deterministic for any thread count: reductions run in fixed orders
 * (row-major passes for row quantities, key-major passes for key quantities).
 */
#ifndef DSA_INDEXER_INDEXER_H
#define DSA_INDEXER_INDEXER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/indexer_ops.h"

/* Floats for DsaIndexerActs of N tokens, and a carve of one buffer of that size. */
int64_t dsa_indexer_acts_floats(const DsaIndexerShape *s);
void dsa_indexer_acts_carve(DsaIndexerActs *a, float *buf, const DsaIndexerShape *s);

/* Forward up to q̂, k̂, w. rope_cos/sin: [seq_len, d_r / 2] (DSA-SPEC §4.3, shared with
 * MLA). Projections go through the backend's linear op. */
void dsa_indexer_forward(DsaIndexerActs *a, const float *x, const float *cq, const DsaIndexerWeights *wt,
                         const DsaIndexerShape *s, const float *rope_cos, const float *rope_sin,
                         const DsaBackend *be);

/* Scores I[t, s0 + j] for query rows t0 ≤ t < t0 + nq and keys s0 ≤ s < s0 + nk of the
 * same sequence (row-major nq × nk, stride ld; −∞ where s > t). `relu_in` (scratch of
 * nq · H_I rows of stride ld) receives the head dot products u[(t − t0)·H_I + j][s − s0]
 * that the ReLU masks of the backward need. Rows are
 * token indices n = b·L + t; t0 and s0 are positions within sequence b. */
void dsa_indexer_score_tile(float *scores, float *relu_in, int64_t ld, const DsaIndexerActs *a,
                            const DsaIndexerShape *s, int64_t b, int64_t t0, int64_t nq, int64_t s0, int64_t nk);

/* Top-k per query row (DSA-SPEC §5.4): idx[n, :] the min(k, t + 1) best keys by
 * (score descending, index ascending), then −1; scores[n, :] their scores (−∞ for
 * padding). Streams over key blocks; scratch is per thread, O(block · k). */
DsaStatus dsa_indexer_topk(int32_t *idx, float *scores, const DsaIndexerActs *a, const DsaIndexerShape *s);

/* Stage 1 (DSA-SPEC §6.2, §8.1): KL(p ‖ softmax(I)) over all causal keys per row, with
 * p the head-mean of the dense attention probabilities (recomputed tile-wise from q, k
 * and the saved lse). Adds the loss sums to *out; with idx (the top-k of
 * dsa_indexer_topk) also the captured mass M_t of each row. When grad_scale is not 0,
 * writes dq [N, H_I, d_I], dk [N, d_I], dw [N, H_I] = ∂(grad_scale · Σ_t KL_t)/∂(q̂, k̂, w)
 * (G = grad_scale · (π − p), §7); else they may be NULL. */
DsaStatus dsa_indexer_kl_dense(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                               const DsaIndexerShape *s, const DsaDenseTarget *target, const int32_t *idx,
                               const float *idx_scores, float grad_scale);

/* Stage 2 (DSA-SPEC §6.3, §8.2 F3): the same over S_t only: p = head-mean of the sparse
 * attention's own probabilities over S_t, π = softmax of I over S_t (idx_scores are the
 * top-k scores). Gradients as above, the key side summed over the queries that
 * selected each key (deterministic key-major pass). */
DsaStatus dsa_indexer_kl_sparse(DsaIndexerLoss *out, float *dq, float *dk, float *dw, const DsaIndexerActs *a,
                                const DsaIndexerShape *s, const DsaSparseTarget *target, const int32_t *idx,
                                const float *idx_scores, float grad_scale);

/* Recall of S_t against the dense attention (§6.2 metric) on a sample of query rows:
 * rows_per_seq rows per sequence, evenly spaced and ending at the last row. Dense
 * per-head log-sum-exps are recomputed for those rows from the MQA form (O(rows · L)).
 * Adds to out->mass_sum / mass_rows. */
void dsa_indexer_sparse_recall(DsaIndexerLoss *out, const DsaIndexerShape *s, const DsaSparseTarget *target,
                               const int32_t *idx, int64_t rows_per_seq);

/* Backward of the indexer (DSA-SPEC §7) from dq = ∂L/∂q̂, dk = ∂L/∂k̂, dw = ∂L/∂w:
 * straight-through FP8, Hadamard, NeoX RoPE transpose, LayerNorm, linears; parameter
 * gradients accumulate into g (entries may be NULL). dq and dk are overwritten (used
 * as scratch). No gradient flows to x or cQ (detached inputs, §6.4). */
void dsa_indexer_backward(const DsaIndexerGrads *g, float *dq, float *dk, const float *dw, const DsaIndexerActs *a,
                          const float *x, const float *cq, const DsaIndexerWeights *wt, const DsaIndexerShape *s,
                          const float *rope_cos, const float *rope_sin, const DsaBackend *be);

/* NeoX (half-split) RoPE on the first rope_dim values of `heads` vectors of width `dim`
 * per token (DSA-SPEC §4.4): pairs (i, i + rope_dim/2). inverse = true applies the
 * transpose (rotation by −φ) for the backward. cos/sin: [seq_len, rope_dim / 2]. */
void dsa_rope_neox(float *x, const float *cos, const float *sin, int64_t n, int64_t seq_len, int64_t heads,
                   int64_t dim, int64_t rope_dim, bool inverse);

/* The indexer's op table of the CPU reference backend (indexer/ops.c): the functions
 * above. dsa_indexer_ops_get gives the table of the backend named `be->name` ("cpu", "sim";
 * "cuda" where built): DSA_ERR_DEVICE when that backend has no indexer entries. */
const DsaIndexerOps *dsa_indexer_ops_cpu(void);
/* The simulated device's table (indexer/ops_sim.c, kernels/sim/sim.h). */
const DsaIndexerOps *dsa_indexer_ops_sim(void);
DsaStatus dsa_indexer_ops_get(const DsaBackend *be, const DsaIndexerOps **out);

#endif
