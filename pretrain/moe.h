/* moe.h: the DeepSeek MoE FFN (routed experts, shared experts, the router) with forward
 * and backward through a DsaBackend.
 *
 * DSA-SPEC has no MoE section; the math follows the DeepSeek reference inference code
 * (DeepSeek-V3 inference/model.py, Gate and MoE) and transformers' DeepseekV3 and
 * DeepseekV2 models, whose semantics this file matches exactly (the parity tests compare
 * against transformers). For one token x (the post-attention RMSNorm output, row of D):
 *
 *   logits = x · W_routerᵀ  (fp32, [E])
 *   s      = sigmoid(logits)            (scoring_func "sigmoid", DeepSeek-V3)
 *          | softmax(logits)            (scoring_func "softmax", DeepSeek-V2)
 *   selection (not differentiable):
 *     noaux_tc:  choice = s + e_score_correction_bias; a group's score is the sum of its
 *                two largest `choice` values; keep the topk_group best groups; the top
 *                num_experts_per_tok experts by `choice` among the kept groups
 *     group_limited_greedy: a group's score is the max of its s; keep topk_group groups;
 *                top-k experts by s inside them
 *     greedy:    top-k experts by s
 *   weights w_k = s[e_k] (the bias never enters the weights);
 *     sigmoid scoring with norm_topk_prob: w_k /= (Σ_j w_j + 1e-20);
 *     then w_k *= routed_scaling_factor (always, as transformers does)
 *   out = Σ_k w_k · Expert_{e_k}(x) + Shared(x),  Expert(x) = down(silu(gate x) ⊙ up x)
 *
 * NOTE (softmax and norm_topk_prob): transformers' DeepseekV2 router never normalizes the
 * top-k weights and always multiplies by routed_scaling_factor; the DeepSeek-V3
 * inference code does the same for softmax scores. We follow that: norm_topk_prob only
 * acts on sigmoid scores. (DeepSeek-V2's original remote code normalized *instead of*
 * scaling when norm_topk_prob was set; no released V2 config sets it, and V2-Lite has
 * norm_topk_prob false and scaling 1.0, where every rule agrees.)
 * NOTE (ties): every top-k here (groups and experts) takes the larger value first and,
 * among equal values, the lower index first. Masked groups are excluded outright (V2's
 * transformers code fills them with 0.0, which only differs when a softmax score
 * underflows to exactly 0).
 * NOTE (order): the chosen experts of a token are stored in ascending expert index, and
 * the routed sum is accumulated in that order from zero before the shared experts are
 * added: the order of transformers' expert loop (index_add_ per expert, then + shared).
 *
 * Gradients flow through the chosen weights into s (the normalization's Jacobian, then
 * sigmoid's s(1−s) or the full softmax Jacobian), the logits and W_router, and through
 * every expert. The bias gets none (DSA-SPEC §3.1 Decision (router bias): frozen). The
 * sequence-wise balance loss is off (same Decision) and not implemented.
 *
 * Layout: the N·K (token, expert) pairs are grouped expert-major (expert 0's tokens in
 * token order, then expert 1's, ...), so each expert runs as one GEMM over its rows.
 * Saved activations are O(N·(E + K·I_e + I_s)): no [N, E, I] buffer; the expert outputs
 * (N·K rows of D) are recomputed in the backward rather than stored. Every loop of our
 * own has a fixed accumulation order (each output element is summed by one thread, in
 * k or expert order), so results do not depend on the thread count beyond what the
 * backend's GEMM does (kernels/cpu/linear.c; tests/test_moe.c checks 1 vs 3 threads bit
 * for bit). Parity with transformers (tools/hf_parity.py v3-moe, v2-greedy,
 * v2-group-limited) is ~1e-6 relative on the logits.
 */
#ifndef DSA_PRETRAIN_MOE_H
#define DSA_PRETRAIN_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "kernels/backend.h"
#include "kernels/moe_ops.h"

/* DsaMoeShape, the scoring and method enums and the backend entries (routing, dispatch,
 * combine) are in kernels/moe_ops.h. */

/* The shape of model `c`'s MoE layers for N tokens (c->has_moe must be true). */
DsaMoeShape dsa_moe_shape(const DsaModelConfig *c, int64_t tokens);

/* Weights of one MoE layer (HF layout [out, in]); expert arrays hold E pointers. */
typedef struct {
    const float *router;          /* [E, D] mlp.gate.weight */
    const float *router_bias;     /* [E] e_score_correction_bias; NULL = zeros (only read by noaux_tc) */
    const float *const *gate;     /* (E) each [I_e, D] */
    const float *const *up;       /* (E) each [I_e, D] */
    const float *const *down;     /* (E) each [D, I_e] */
    const float *shared_gate, *shared_up; /* [I_s, D]; NULL when I_s = 0 */
    const float *shared_down;     /* [D, I_s] */
} DsaMoeWeights;

/* Gradients (accumulated, +=); any pointer, or any entry of the expert arrays, may be
 * NULL: that gradient is skipped. The arrays themselves may be NULL too. */
typedef struct {
    float *router;
    float *const *gate, *const *up, *const *down; /* (E) */
    float *shared_gate, *shared_up, *shared_down;
} DsaMoeGrads;

/* Saved forward state (caller-owned, see dsa_moe_acts_floats). Rows r < N·K are the
 * expert-major (token, expert) pairs. */
typedef struct {
    float *scores;   /* (N, E) s: sigmoid or softmax of the router logits */
    int32_t *sel;    /* (N, K) chosen experts, ascending */
    float *weight;   /* (N, K) routing weights w */
    int32_t *pair;   /* (N·K) pair n·K + k held by row r */
    int32_t *row;    /* (N·K) row of pair n·K + k (inverse of pair) */
    int32_t *start;  /* (E + 1) first row of each expert; start[E] = N·K */
    float *gate, *up, *act; /* (N·K, I_e) expert pre-activations and silu(gate) ⊙ up */
    float *sgate, *sup, *sact; /* (N, I_s) shared experts; NULL when I_s = 0 */
} DsaMoeActs;

/* Scratch shared by every layer (caller-owned, see dsa_moe_scratch_floats). */
typedef struct {
    float *logits;   /* (N, E) router logits; ∂logits in the backward */
    float *xg;       /* (N·K, D) gathered expert inputs */
    float *ya;       /* (N·K, D) expert outputs / ∂ of them */
    float *yb;       /* (N·K, D) ∂ expert inputs */
    float *da, *db, *dc; /* (max(N·K·I_e, N·I_s)) ∂act, ∂gate, ∂up */
    float *dw;       /* (N, K) ∂ routing weights */
    float *tmp;      /* (N, D) shared expert output, ∂x parts */
} DsaMoeScratch;

/* Floats of DsaMoeActs / DsaMoeScratch for shape s (int32 arrays count as floats, each
 * buffer rounded up to 16), and the carve of one buffer of that many floats. */
int64_t dsa_moe_acts_floats(const DsaMoeShape *s);
void dsa_moe_acts_carve(DsaMoeActs *a, float *buf, const DsaMoeShape *s);
int64_t dsa_moe_scratch_floats(const DsaMoeShape *s);
void dsa_moe_scratch_carve(DsaMoeScratch *sc, float *buf, const DsaMoeShape *s);

/* The CPU reference routing (kernels/moe_ops.h route and route_backward of
 * dsa_moe_ops_cpu) on host memory, for tests: scores [N, E], the chosen experts sel [N, K]
 * (ascending) and their weights [N, K] from the router logits [N, E] by the rule of s
 * (header comment); bias [E] is read only by noaux_tc (NULL = zeros). The backward gives
 * dlogits [N, E] (overwritten) from dweight [N, K]; selection is constant: experts not
 * chosen get ∂s = 0 (they still get ∂logit through softmax). */
void dsa_moe_route(int32_t *sel, float *weight, float *scores, const float *logits, const float *bias,
                   const DsaMoeShape *s);
void dsa_moe_route_backward(float *dlogits, const float *dweight, const int32_t *sel, const float *scores,
                            const DsaMoeShape *s);

/* out [N, D] (overwritten) = MoE(x [N, D]); saves what the backward needs in a. Every
 * pointer is backend memory: routing, dispatch and combine run through be->moe (which must
 * be set), the GEMMs through be's linear ops; the host reads back only the E + 1 row
 * offsets of the experts. */
void dsa_moe_forward(float *out, DsaMoeActs *a, const float *x, const DsaMoeWeights *w, const DsaMoeShape *s,
                     DsaMoeScratch *sc, const DsaBackend *be);
/* dx [N, D] overwritten with ∂loss/∂x from dout [N, D] = ∂loss/∂out; parameter
 * gradients accumulate into g. a and x are the forward's. */
void dsa_moe_backward(float *dx, const DsaMoeGrads *g, const float *dout, const DsaMoeActs *a, const float *x,
                      const DsaMoeWeights *w, const DsaMoeShape *s, DsaMoeScratch *sc, const DsaBackend *be);

#endif
