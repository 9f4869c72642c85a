/* linear.cu: the CUDA backend's linear layer through cuBLASLt (kernels/backend.h; the CPU
 * twin is kernels/cpu/linear.c), weights stored as Hugging Face does (DSA-SPEC §3),
 * W[out, in] row-major:
 *   forward  y[N, out] = x[N, in] · Wᵀ
 *   backward dx[N, in] = dy · W (overwritten),  dW[out, in] += dyᵀ · x (beta = 1)
 * fp32 in, fp32 out, CUBLAS_COMPUTE_32F: every product and sum in fp32, TF32 off (that
 * needs CUBLAS_COMPUTE_32F_FAST_TF32), the fp32 mode that is compared with the CPU.
 *
 * cuBLASLt is column-major; a row-major [r, c] matrix is the column-major [c, r] matrix
 * with leading dimension c, its transpose. So each GEMM is written on the transposes:
 *   yᵀ[out, N]  = (W viewed [in, out])ᵀ · (x viewed [in, N])
 *   dxᵀ[in, N]  = (W viewed [in, out]) · (dy viewed [out, N])
 *   dWᵀ[in, out] += (x viewed [in, N]) · (dy viewed [out, N])ᵀ
 * NOTE: the heuristic is told each pointer's true alignment (views into fused buffers
 * are not 256-byte aligned, the default it assumes). The handle and a 32 MiB workspace
 * (NVIDIA's figure for Hopper) are created on first use and kept; all GEMMs run on the
 * compute stream, so one workspace serves them in order. cuBLAS gives the same bits run
 * to run for the same shapes, pointers' alignment and GPU (its reproducibility rule;
 * every split-K reduction scheme of cuBLASLt is ordered), not the CPU's bits: OpenBLAS
 * sums in another order, hence the fp32 tolerances of tests/test_cuda_ops.c.
 *
 * bf16 entries (train.precision "bf16", DSA-SPEC §3.2): each fp32 operand is rounded to
 * bf16 storage (kernels/rules/bf16.h, the CPU twin's rounding) in the backend workspace,
 * then the same GEMM runs with CUDA_R_16BF A and B, fp32 C/D and CUBLAS_COMPUTE_32F:
 * products of bf16 values are exact in fp32, sums fp32, the output and dW's accumulation
 * fp32. The twin is kernels/cpu/linear.c's bf16 entries (the fp32 GEMM of the rounded
 * operands): equal up to the order of the fp32 sums.
 */
#include <cublasLt.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

extern "C" {
#include "kernels/rules/bf16.h"
}

enum { LT_WORKSPACE_BYTES = 32 << 20 };

static void lt_check(cublasStatus_t st, const char *what, int line) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    std::fprintf(stderr, "cublasLt: %s failed at %s:%d: %s (%s)\n", what, __FILE__, line, cublasLtGetStatusString(st),
                 cublasLtGetStatusName(st));
    std::fflush(stderr);
    std::abort();
}
#define LT_CHECK(call) lt_check((call), #call, __LINE__)

static cublasLtHandle_t lt_handle;
static void *lt_workspace;

static cublasLtHandle_t handle(void) {
    if (!lt_handle) {
        LT_CHECK(cublasLtCreate(&lt_handle));
        DSA_CUDA_CHECK(cudaMalloc(&lt_workspace, LT_WORKSPACE_BYTES));
    }
    return lt_handle;
}

/* The largest power of two up to 256 that divides the address (at least 4: a float's). */
static uint32_t alignment_of(const void *p) {
    const uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 4 && a % al) al /= 2;
    return al;
}

/* Column-major D[m, n] (leading dimension ldd) = op(A) · op(B) + beta · D, D fp32, where
 * op(A) is [m, k] (A stored [k, m] when ta, else [m, k]) and op(B) is [k, n] (B stored
 * [n, k] when tb, else [k, n]); A and B of type `ab` (CUDA_R_32F or CUDA_R_16BF).
 * m, n, k > 0. */
static void gemm_typed(cudaDataType_t ab, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
                       const void *b, int64_t ldb, float beta, float *d, int64_t ldd) {
    cublasLtHandle_t h = handle();
    cublasLtMatmulDesc_t op;
    LT_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    cublasLtMatrixLayout_t la, lb, ld;
    LT_CHECK(cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)(ta ? k : m), (uint64_t)(ta ? m : k), lda));
    LT_CHECK(cublasLtMatrixLayoutCreate(&lb, ab, (uint64_t)(tb ? n : k), (uint64_t)(tb ? k : n), ldb));
    LT_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, (uint64_t)m, (uint64_t)n, ldd));
    cublasLtMatmulPreference_t pref;
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = LT_WORKSPACE_BYTES;
    const uint32_t al_a = alignment_of(a), al_b = alignment_of(b), al_d = alignment_of(d);
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d));
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    LT_CHECK(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, ld, ld, pref, 1, &result, &found));
    if (found < 1) {
        std::fprintf(stderr,
                     "cublasLt: no %s algorithm for D[%lld, %lld] = op(A) op(B), k = %lld (transa %d, transb %d, "
                     "alignments %u/%u/%u bytes)\n",
                     ab == CUDA_R_16BF ? "bf16" : "fp32", (long long)m, (long long)n, (long long)k, (int)ta, (int)tb,
                     al_a, al_b, al_d);
        std::abort();
    }
    const float alpha = 1.0f;
    /* C = D (in place, same layout): beta = 1 accumulates into dW */
    LT_CHECK(cublasLtMatmul(h, op, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &result.algo, lt_workspace,
                            LT_WORKSPACE_BYTES, dsa_cuda_stream()));
    LT_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    LT_CHECK(cublasLtMatrixLayoutDestroy(ld));
    LT_CHECK(cublasLtMatrixLayoutDestroy(lb));
    LT_CHECK(cublasLtMatrixLayoutDestroy(la));
    LT_CHECK(cublasLtMatmulDescDestroy(op));
}

static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
                 int64_t ldb, float beta, float *d, int64_t ldd) {
    gemm_typed(CUDA_R_32F, ta, tb, m, n, k, a, lda, b, ldb, beta, d, ldd);
}

static void check_dims(int64_t n, int64_t in, int64_t out) { DSA_ASSERT(n >= 0 && in >= 0 && out >= 0); }

extern "C" void dsa_cuda_linear_forward(float *y, const float *x, const float *w, int64_t n, int64_t in, int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || out == 0) return;
    if (in == 0) { /* an empty sum, as the CPU twin */
        dsa_cuda_fill_zero(y, (size_t)(n * out) * sizeof(float));
        return;
    }
    gemm(true, false, out, n, in, w, in, x, in, 0.0f, y, out);
}

extern "C" void dsa_cuda_linear_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                         int64_t n, int64_t in, int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || in == 0) return;
    if (dx && out == 0) dsa_cuda_fill_zero(dx, (size_t)(n * in) * sizeof(float));
    if (out == 0) return;
    if (dx) gemm(false, false, in, n, out, w, in, dy, out, 0.0f, dx, in);
    if (dw) gemm(false, true, in, out, n, x, in, dy, out, 1.0f, dw, in);
}

/* ---- bf16 entries ---------------------------------------------------------------------- */

static __global__ void round_to_bf16(uint16_t *dst, const float *src, int64_t count) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = dsa_bf16_from_f32(src[i]);
}

/* Carves bf16 copies out of one workspace request, each 256-byte aligned (the alignment the
 * GEMM heuristic is then told). */
typedef struct {
    const float *src[3];
    int64_t count[3];
    uint16_t *dst[3];
} RoundSet;

static size_t padded_bytes(int64_t count) { return ((size_t)count * sizeof(uint16_t) + 255) & ~(size_t)255; }

static void round_operands(RoundSet *r) {
    size_t total = 0;
    for (int i = 0; i < 3; i++) total += r->src[i] ? padded_bytes(r->count[i]) : 0;
    char *ws = (char *)dsa_cuda_workspace(total);
    for (int i = 0; i < 3; i++) {
        r->dst[i] = NULL;
        if (!r->src[i]) continue;
        r->dst[i] = (uint16_t *)ws;
        ws += padded_bytes(r->count[i]);
        const unsigned blocks = dsa_cuda_blocks(r->count[i], 256);
        round_to_bf16<<<blocks < 4096 ? blocks : 4096, 256, 0, dsa_cuda_stream()>>>(r->dst[i], r->src[i], r->count[i]);
        DSA_CUDA_LAUNCHED(round_to_bf16);
    }
}

extern "C" void dsa_cuda_linear_forward_bf16(float *y, const float *x, const float *w, int64_t n, int64_t in,
                                             int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || out == 0 || in == 0) {
        dsa_cuda_linear_forward(y, x, w, n, in, out);
        return;
    }
    RoundSet r = {{x, w, NULL}, {n * in, out * in, 0}, {NULL, NULL, NULL}};
    round_operands(&r);
    gemm_typed(CUDA_R_16BF, true, false, out, n, in, r.dst[1], in, r.dst[0], in, 0.0f, y, out);
}

extern "C" void dsa_cuda_linear_backward_bf16(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                              int64_t n, int64_t in, int64_t out) {
    check_dims(n, in, out);
    if (n == 0 || in == 0 || out == 0) {
        dsa_cuda_linear_backward(dx, dw, dy, x, w, n, in, out);
        return;
    }
    RoundSet r = {{dy, dx ? w : NULL, dw ? x : NULL}, {n * out, out * in, n * in}, {NULL, NULL, NULL}};
    round_operands(&r);
    if (dx) gemm_typed(CUDA_R_16BF, false, false, in, n, out, r.dst[1], in, r.dst[0], out, 0.0f, dx, in);
    if (dw) gemm_typed(CUDA_R_16BF, false, true, in, out, n, r.dst[2], in, r.dst[0], out, 1.0f, dw, in);
}
