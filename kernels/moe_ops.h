/* moe_ops.h: the DeepSeek MoE FFN's routing, dispatch and combine as backend ops, and the
 * shape they share (pretrain/moe.h documents the math; the model drives the expert GEMMs
 * through the DsaBackend linear ops).
 *
 * A backend that runs MoE layers points DsaBackend.moe at a DsaMoeOps: the CPU entries are
 * kernels/cpu/moe.c (the reference), a device backend provides its own with exactly these
 * contracts on its own memory. Every pointer argument is backend memory; the shape is a host
 * struct. The N·K (token, expert) pairs p = n·K + k are grouped expert-major: row r of the
 * dispatched buffers holds pair pair[r], expert e owns rows [start[e], start[e + 1]).
 * The host reads only start (E + 1 ints, download) to launch one GEMM per expert.
 */
#ifndef DSA_KERNELS_MOE_OPS_H
#define DSA_KERNELS_MOE_OPS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { DSA_MOE_SIGMOID = 0, DSA_MOE_SOFTMAX } DsaMoeScoring;
typedef enum { DSA_MOE_NOAUX_TC = 0, DSA_MOE_GREEDY, DSA_MOE_GROUP_LIMITED_GREEDY } DsaMoeTopkMethod;

/* Shape and routing rule of one MoE FFN over N tokens. */
typedef struct {
    int64_t tokens;       /* N */
    int64_t dim;          /* D */
    int64_t experts;      /* E routed experts */
    int64_t topk;         /* K = num_experts_per_tok */
    int64_t inter;        /* I_e = moe_intermediate_size */
    int64_t shared_inter; /* I_s = I_e · n_shared_experts; 0 = no shared experts */
    int64_t n_group, topk_group;
    DsaMoeScoring scoring;
    DsaMoeTopkMethod method;
    bool norm_topk_prob;
    float scaling;        /* routed_scaling_factor */
} DsaMoeShape;

/* At most this many routed experts (per-token routing scratch; DeepSeek-V3 has 256). */
enum { DSA_MOE_MAX_EXPERTS = 4096 };

typedef struct DsaMoeOps {
    const char *name; /* the backend's name */
    /* scores [N, E], chosen experts sel [N, K] (ascending) and weights [N, K] from the
     * router logits [N, E] (pretrain/moe.h: the rule of each scoring and method); bias [E]
     * read only by noaux_tc (NULL = zeros). Same bits for any thread count. */
    void (*route)(int32_t *sel, float *weight, float *scores, const float *logits, const float *bias,
                  const DsaMoeShape *s);
    /* dlogits [N, E] (overwritten) from dweight [N, K] = ∂loss/∂w, selection constant. */
    void (*route_backward)(float *dlogits, const float *dweight, const int32_t *sel, const float *scores,
                           const DsaMoeShape *s);
    /* Expert-major grouping: a stable counting sort of the pairs by sel; pair [N·K] (pair of
     * row r), row [N·K] (its inverse), start [E + 1]. */
    void (*group)(int32_t *pair, int32_t *row, int32_t *start, const int32_t *sel, const DsaMoeShape *s);
    /* Dispatch: xg [N·K, D], xg[r] = x[token of pair[r]]. */
    void (*gather)(float *xg, const float *x, const int32_t *pair, const DsaMoeShape *s);
    /* Combine: out [N, D] = Σ_k weight[n, k] · y[row[n·K + k]] (k ascending, from 0), then
     * + shared[n] when shared is not NULL. */
    void (*combine)(float *out, const float *y, const float *weight, const int32_t *row, const float *shared,
                    const DsaMoeShape *s);
    /* dweight [N·K]: dweight[p] = ⟨dout[token of p], y[row[p]]⟩, summed in double in d order. */
    void (*weight_grad)(float *dweight, const float *y, const float *dout, const int32_t *row,
                        const DsaMoeShape *s);
    /* The combine's transpose into the rows: dy [N·K, D], dy[r] = weight[pair[r]] · dout[token]. */
    void (*dispatch_grad)(float *dy, const float *dout, const float *weight, const int32_t *pair,
                          const DsaMoeShape *s);
    /* The dispatch's transpose: dx [N, D] (overwritten) = Σ_k dy[row[n·K + k]], k ascending. */
    void (*gather_backward)(float *dx, const float *dy, const int32_t *row, const DsaMoeShape *s);
} DsaMoeOps;

/* The CPU reference entries (kernels/cpu/moe.c). */
const DsaMoeOps *dsa_moe_ops_cpu(void);

#endif
