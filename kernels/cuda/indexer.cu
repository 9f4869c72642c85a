/* indexer.cu: the CUDA lightning indexer forward and backward (DSA-SPEC §5 steps 1-7, §7),
 * the twins of indexer/indexer.c's dsa_indexer_forward and dsa_indexer_backward (same
 * contracts, on device memory), and the FP8 round trip alone (dsa_cuda_fp8_quantize).
 *
 * Bits. Every step after the projections computes what the CPU computes, in its order:
 *  - LayerNorm (§5 step 3) and its backward (§7 step 4) run one thread per token over the
 *    d_I values in index order, in double like the CPU, each operation through
 *    kernels/rules/hd.h's dsa_rn_* (never contracted into FMA); 1/sqrt is __dsqrt_rn and
 *    __ddiv_rn (IEEE, as glibc's sqrt and the division), so k_norm, k_rstd and the
 *    LayerNorm input gradient are the CPU's bits;
 *  - NeoX RoPE (§4.4), the Hadamard butterflies (§5.1, one IEEE add or subtract per value and
 *    stage, then the product by 1/sqrtf(d_I) computed on the host as the CPU computes it)
 *    and the FP8 round trip (§5.2, kernels/rules/fp8.h; the group max is order-free) give
 *    the CPU's bits, so on identical projection outputs q̂, k̂ and the FP8 codes and scales
 *    are identical;
 *  - the k_norm weight and bias gradients sum over tokens in double, in chunks of
 *    LN_CHUNK tokens and then over the chunks in order (the CPU: one sequential double sum),
 *    then round to float: they differ from the CPU only where the two double sums (which
 *    agree to ~1e-16 relative) fall on different sides of a float rounding boundary, one
 *    float ulp at most.
 * The projections and the weight gradients are the backend's linear_forward /
 * linear_backward (cuBLASLt), which sum in their own order: those outputs match the CPU
 * within fp32 GEMM rounding (~1e-6 relative in fp32 mode), and an FP8 code near a rounding
 * boundary can then land one e4m3 step away. Deterministic: no atomics anywhere.
 */
#include "kernels/cuda/common.cuh"
#include "kernels/rules/fp8.h"
#include "kernels/rules/hd.h"

extern "C" {
#include "kernels/cuda/cuda_ops.h"
}

namespace {

enum PrepMode {
    PREP_FORWARD = 0,  /* RoPE, Hadamard, then the FP8 round trip when fp8 */
    PREP_BACKWARD = 1, /* Hadamard, then the RoPE transpose (straight-through FP8) */
    PREP_QUANT = 2     /* the FP8 round trip alone */
};

constexpr int kPrepThreads = 256;
constexpr int64_t LN_CHUNK = 512;

struct PrepParams {
    const float *in;         /* [count, d] */
    float *out;              /* [count, d] (may alias in), or NULL */
    uint8_t *codes;          /* [count, d] or NULL */
    float *scales;           /* [count, d / g] or NULL */
    const float *cos, *sin;  /* [seq_len, rope_dim / 2] */
    int64_t count, heads, seq_len;
    int dim, rope_dim, group;
    int mode;
    bool fp8;
    float norm; /* 1 / sqrtf(d), the CPU's value */
};

/* NeoX half-split rotation of one vector (DSA-SPEC §4.4), indexer.c dsa_rope_neox:
 * y_i = v_i cos − v_{i+h} sin, y_{i+h} = v_i sin + v_{i+h} cos; the transpose uses −sin. */
__device__ void prep_rope(float *v, const PrepParams &p, int64_t vec, bool inverse) {
    const int half = p.rope_dim / 2, e = threadIdx.x;
    if (e < half) {
        const int64_t pos = (vec / p.heads) % p.seq_len;
        const float c = p.cos[pos * half + e], sn = p.sin[pos * half + e], si = inverse ? -sn : sn;
        const float a = v[e], b = v[e + half];
        v[e] = dsa_rn_sub(dsa_rn_mul(a, c), dsa_rn_mul(b, si));
        v[e + half] = dsa_rn_add(dsa_rn_mul(a, si), dsa_rn_mul(b, c));
    }
    __syncthreads();
}

/* Ĥ v (DSA-SPEC §5.1), hadamard.c's butterflies: stage h pairs (i, i + h) for i with bit h clear. */
__device__ void prep_hadamard(float *v, const PrepParams &p) {
    const int e = threadIdx.x;
    for (int h = 1; h < p.dim; h <<= 1) {
        if ((e & h) == 0) {
            const float x = v[e], y = v[e + h];
            v[e] = dsa_rn_add(x, y);
            v[e + h] = dsa_rn_sub(x, y);
        }
        __syncthreads();
    }
    v[e] = dsa_rn_mul(v[e], p.norm);
    __syncthreads();
}

/* The FP8 round trip (DSA-SPEC §5.2), fp8.c dsa_fp8_quantize: the group's amax by a tree of
 * fmaxf (order-free: fmaxf drops NaN wherever it sits, as the CPU's running fmaxf from 0 does), σ by
 * dsa_fp8_group_scale, then e4m3_round(v / σ) · σ. */
__device__ void prep_fp8(float *v, float *red, const PrepParams &p, int64_t vec, bool live) {
    const int e = threadIdx.x, g = p.group, lane = e % g;
    red[e] = fabsf(v[e]);
    __syncthreads();
    for (int off = g / 2; off > 0; off >>= 1) {
        if (lane < off) red[e] = fmaxf(red[e], red[e + off]);
        __syncthreads();
    }
    const float s = dsa_fp8_group_scale(red[e - lane]);
    const float q = dsa_e4m3_round(dsa_rn_div(v[e], s));
    if (live && p.codes) p.codes[vec * p.dim + e] = dsa_e4m3_encode(q);
    if (live && p.scales && lane == 0) p.scales[vec * (p.dim / g) + e / g] = s;
    v[e] = dsa_rn_mul(q, s);
}

/* One block: blockDim.y vectors of d = blockDim.x values, staged in shared memory. */
__global__ void prep_kernel(PrepParams p) {
    extern __shared__ float prep_smem[];
    const int64_t vec = (int64_t)blockIdx.x * blockDim.y + threadIdx.y;
    const bool live = vec < p.count;
    float *v = prep_smem + threadIdx.y * p.dim, *red = prep_smem + (blockDim.y + threadIdx.y) * p.dim;
    const int e = threadIdx.x;
    v[e] = live ? p.in[vec * p.dim + e] : 0.0f;
    __syncthreads();
    if (p.mode == PREP_FORWARD) {
        if (p.rope_dim > 0) prep_rope(v, p, vec, false);
        prep_hadamard(v, p);
        if (p.fp8) prep_fp8(v, red, p, vec, live);
    } else if (p.mode == PREP_BACKWARD) {
        prep_hadamard(v, p);
        if (p.rope_dim > 0) prep_rope(v, p, vec, true);
    } else {
        prep_fp8(v, red, p, vec, live);
    }
    if (live && p.out) p.out[vec * p.dim + e] = v[e];
}

void prep_launch(PrepParams p) {
    DSA_ASSERT(p.dim >= 1 && p.dim <= 1024 && (p.dim & (p.dim - 1)) == 0);
    DSA_ASSERT(p.rope_dim % 2 == 0 && p.rope_dim <= p.dim);
    if (p.count == 0) return;
    p.group = (int)dsa_fp8_group_size(p.dim);
    p.norm = 1.0f / sqrtf((float)p.dim); /* host arithmetic, not contracted: hadamard.c's value */
    const int vpb = p.dim >= kPrepThreads ? 1 : kPrepThreads / p.dim;
    const dim3 block((unsigned)p.dim, (unsigned)vpb);
    const size_t shared = 2 * (size_t)vpb * (size_t)p.dim * sizeof(float);
    prep_kernel<<<dsa_cuda_blocks(p.count, vpb), block, shared, dsa_cuda_stream()>>>(p);
    DSA_CUDA_LAUNCHED(prep_kernel);
}

PrepParams prep_params(float *v, int64_t count, int64_t heads, int64_t dim, const DsaIndexerShape *s,
                       const float *cos, const float *sin, int mode) {
    PrepParams p = {};
    p.in = v, p.out = v, p.cos = cos, p.sin = sin;
    p.count = count, p.heads = heads, p.seq_len = s->seq_len;
    p.dim = (int)dim, p.rope_dim = (int)s->rope_dim, p.mode = mode, p.fp8 = s->fp8;
    return p;
}

/* LayerNorm with bias of k, one thread per token (indexer.c, §5 step 3): k ← γ ⊙ n + β with
 * n = (k − μ)/σ saved in kn and 1/σ in rstd. */
__global__ void layernorm_kernel(float *__restrict__ k, float *__restrict__ kn, float *__restrict__ rstd_out,
                                 const float *__restrict__ gamma, const float *__restrict__ beta, int64_t n_tok,
                                 int dim, float eps) {
    const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= n_tok) return;
    float *kr = k + n * dim, *knr = kn + n * dim;
    double mean = 0, var = 0;
    for (int i = 0; i < dim; i++) mean = dsa_rn_dadd(mean, (double)kr[i]);
    mean = __ddiv_rn(mean, (double)dim);
    for (int i = 0; i < dim; i++) {
        const double d = dsa_rn_dsub((double)kr[i], mean);
        var = dsa_rn_dadd(var, dsa_rn_dmul(d, d));
    }
    var = __ddiv_rn(var, (double)dim); /* biased variance, as torch's LayerNorm */
    const float rstd = (float)__ddiv_rn(1.0, __dsqrt_rn(dsa_rn_dadd(var, (double)eps)));
    rstd_out[n] = rstd;
    for (int i = 0; i < dim; i++) {
        const float x = dsa_rn_mul((float)dsa_rn_dsub((double)kr[i], mean), rstd);
        knr[i] = x;
        kr[i] = dsa_rn_add(dsa_rn_mul(gamma[i], x), beta[i]);
    }
}

/* Partial sums of the k_norm gradients (§7 step 4) over tokens [c·LN_CHUNK, (c+1)·LN_CHUNK):
 * part_w[c][i] = Σ dk·n, part_b[c][i] = Σ dk, in token order, in double. */
__global__ void ln_param_partials_kernel(double *__restrict__ part_w, double *__restrict__ part_b,
                                         const float *__restrict__ dk, const float *__restrict__ kn, int64_t n_tok,
                                         int dim) {
    const int64_t xblocks = (dim + blockDim.x - 1) / blockDim.x, c = blockIdx.x / xblocks;
    const int i = (int)((blockIdx.x % xblocks) * blockDim.x + threadIdx.x);
    if (i >= dim) return;
    const int64_t n0 = c * LN_CHUNK, n1 = n0 + LN_CHUNK < n_tok ? n0 + LN_CHUNK : n_tok;
    double gw = 0, gb = 0;
    for (int64_t n = n0; n < n1; n++) {
        gw = dsa_rn_dadd(gw, dsa_rn_dmul((double)dk[n * dim + i], (double)kn[n * dim + i]));
        gb = dsa_rn_dadd(gb, (double)dk[n * dim + i]);
    }
    part_w[c * dim + i] = gw, part_b[c * dim + i] = gb;
}

/* The chunks' sums in chunk order, rounded to float and accumulated (+=) into the gradients. */
__global__ void ln_param_sum_kernel(float *gw_out, float *gb_out, const double *__restrict__ part_w,
                                    const double *__restrict__ part_b, int64_t chunks, int dim) {
    const int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= dim) return;
    double gw = 0, gb = 0;
    for (int64_t c = 0; c < chunks; c++) gw = dsa_rn_dadd(gw, part_w[c * dim + i]), gb = dsa_rn_dadd(gb, part_b[c * dim + i]);
    if (gw_out) gw_out[i] = dsa_rn_add(gw_out[i], (float)gw);
    if (gb_out) gb_out[i] = dsa_rn_add(gb_out[i], (float)gb);
}

/* LayerNorm input gradient, one thread per token (§7 step 4), in place on dk:
 * ∂k̃ = (dn − mean(dn) − n · mean(dn ⊙ n)) / σ with dn = dk ⊙ γ, in double as indexer.c. */
__global__ void layernorm_backward_kernel(float *__restrict__ dk, const float *__restrict__ kn,
                                          const float *__restrict__ rstd, const float *__restrict__ gamma,
                                          int64_t n_tok, int dim) {
    const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= n_tok) return;
    float *d = dk + n * dim;
    const float *knr = kn + n * dim;
    double mean_dn = 0, mean_dn_n = 0;
    for (int i = 0; i < dim; i++) {
        const double dn = dsa_rn_dmul((double)d[i], (double)gamma[i]);
        mean_dn = dsa_rn_dadd(mean_dn, dn);
        mean_dn_n = dsa_rn_dadd(mean_dn_n, dsa_rn_dmul(dn, (double)knr[i]));
    }
    mean_dn = __ddiv_rn(mean_dn, (double)dim), mean_dn_n = __ddiv_rn(mean_dn_n, (double)dim);
    for (int i = 0; i < dim; i++) {
        const double dn = dsa_rn_dmul((double)d[i], (double)gamma[i]);
        const double r = dsa_rn_dsub(dsa_rn_dsub(dn, mean_dn), dsa_rn_dmul((double)knr[i], mean_dn_n));
        d[i] = (float)dsa_rn_dmul(r, (double)rstd[n]);
    }
}

constexpr int kTokThreads = 128;

} // namespace

extern "C" void dsa_cuda_fp8_quantize(uint8_t *codes, float *scales, float *deq, const float *v, int64_t count,
                                      int64_t d) {
    PrepParams p = {};
    p.in = v, p.out = deq, p.codes = codes, p.scales = scales;
    p.count = count, p.heads = 1, p.seq_len = 1, p.dim = (int)d, p.mode = PREP_QUANT, p.fp8 = true;
    prep_launch(p);
}

extern "C" void dsa_cuda_indexer_forward(DsaIndexerActs *a, const float *x, const float *cq,
                                         const DsaIndexerWeights *wt, const DsaIndexerShape *s, const float *rope_cos,
                                         const float *rope_sin, const DsaBackend *be) {
    const int64_t N = s->batch * s->seq_len, HI = s->heads, dI = s->head_dim;
    if (N == 0) return;
    /* §5 steps 1, 4, 5, 6: q from the query latent, rotary part rotated, Hadamard, FP8 */
    be->linear_forward(a->q, cq, wt->wq_b, N, s->q_in, HI * dI);
    prep_launch(prep_params(a->q, N * HI, HI, dI, s, rope_cos, rope_sin, PREP_FORWARD));
    /* steps 2-6 for k: projection, LayerNorm with bias, RoPE, Hadamard, FP8 */
    be->linear_forward(a->k, x, wt->wk, N, s->x_in, dI);
    layernorm_kernel<<<dsa_cuda_blocks(N, kTokThreads), kTokThreads, 0, dsa_cuda_stream()>>>(
        a->k, a->k_norm, a->k_rstd, wt->k_norm_weight, wt->k_norm_bias, N, (int)dI, s->eps);
    DSA_CUDA_LAUNCHED(layernorm_kernel);
    prep_launch(prep_params(a->k, N, 1, dI, s, rope_cos, rope_sin, PREP_FORWARD));
    /* step 7: head weights from x */
    be->linear_forward(a->w, x, wt->weights_proj, N, s->x_in, HI);
}

extern "C" void dsa_cuda_indexer_backward(const DsaIndexerGrads *g, float *dq, float *dk, const float *dw,
                                          const DsaIndexerActs *a, const float *x, const float *cq,
                                          const DsaIndexerWeights *wt, const DsaIndexerShape *s,
                                          const float *rope_cos, const float *rope_sin, const DsaBackend *be) {
    const int64_t N = s->batch * s->seq_len, HI = s->heads, dI = s->head_dim;
    if (N == 0) return;
    cudaStream_t st = dsa_cuda_stream();
    /* §7 steps 1-3: straight-through FP8 (identity), Hadamard (its own transpose), RoPE⁻¹ */
    prep_launch(prep_params(dq, N * HI, HI, dI, s, rope_cos, rope_sin, PREP_BACKWARD));
    prep_launch(prep_params(dk, N, 1, dI, s, rope_cos, rope_sin, PREP_BACKWARD));
    /* step 4: LayerNorm; γ, β gradients from the incoming dk, before it is overwritten */
    if (g->k_norm_weight || g->k_norm_bias) {
        const int64_t chunks = (N + LN_CHUNK - 1) / LN_CHUNK;
        double *part = static_cast<double *>(dsa_cuda_workspace(2 * (size_t)(chunks * dI) * sizeof(double)));
        const unsigned grid = dsa_cuda_blocks(chunks * (int64_t)dsa_cuda_blocks(dI, kTokThreads), 1);
        ln_param_partials_kernel<<<grid, kTokThreads, 0, st>>>(part, part + chunks * dI, dk, a->k_norm, N, (int)dI);
        DSA_CUDA_LAUNCHED(ln_param_partials_kernel);
        ln_param_sum_kernel<<<dsa_cuda_blocks(dI, kTokThreads), kTokThreads, 0, st>>>(
            g->k_norm_weight, g->k_norm_bias, part, part + chunks * dI, chunks, (int)dI);
        DSA_CUDA_LAUNCHED(ln_param_sum_kernel);
    }
    layernorm_backward_kernel<<<dsa_cuda_blocks(N, kTokThreads), kTokThreads, 0, st>>>(
        dk, a->k_norm, a->k_rstd, wt->k_norm_weight, N, (int)dI);
    DSA_CUDA_LAUNCHED(layernorm_backward_kernel);
    /* step 5: the three projections; no input gradient (detached) */
    if (g->wq_b) be->linear_backward(NULL, g->wq_b, dq, cq, wt->wq_b, N, s->q_in, HI * dI);
    if (g->wk) be->linear_backward(NULL, g->wk, dk, x, wt->wk, N, s->x_in, dI);
    if (g->weights_proj) be->linear_backward(NULL, g->weights_proj, dw, x, wt->weights_proj, N, s->x_in, HI);
}
