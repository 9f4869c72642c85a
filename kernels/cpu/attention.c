/* attention.c: causal attention of the CPU backend, forward and backward, tiled with an
 * online softmax (DSA-SPEC §4.1 MHA form, §8 tiling; DESIGN.md memory rule).
 *
 * Tiles are BQ = 64 queries × BK = 64 keys of one (sequence, head); tiles above the
 * diagonal are skipped and the diagonal tile is masked (key s > query t). Nothing of size
 * L×L exists: the forward keeps per query a running max m, a running sum l and the output
 * rows (accumulated in place in `out`), and saves lse = m + log l (natural log); the
 * backward recomputes P = exp(τ q·k − lse) tile by tile (FlashAttention-2).
 *
 * Layout of a tile: the score tile is kept transposed, St[key][query], so the softmax
 * statistics (per query) run along the contiguous query axis and vectorize without
 * horizontal reductions. The query block is transposed (and pre-scaled by τ·log2 e, so
 * the softmax is exp2) once per query block into Qt[dim][query]; keys, values, queries
 * and output rows are otherwise read and written in place through their row stride
 * H·d. Every product is one small dense mat-mult, C (+)= A·B, with B row-major and A
 * read through a (row, column) stride pair, done by one register-blocked micro-kernel
 * (MR rows × 2 vectors of C in registers, explicit FMA).
 * NOTE: the kernel allocates nothing: its buffers are fixed-size arrays on each thread's
 * stack (80 KiB forward, 160 KiB backward; OpenMP's default thread stack is MiBs).
 * Head dimensions above DC = 256 are processed in chunks of DC, the query block then
 * re-transposed per chunk and tile, so that bound holds for any qk_dim and v_dim.
 *
 * Determinism: every output element is accumulated by exactly one thread in a fixed
 * order, so results are bit-identical for any thread count:
 *  - forward: one task per (sequence, head, query block), longest first;
 *  - backward, one-pass scheme: one task per (sequence, head) walks the query blocks in
 *    order and, inside, the key blocks 0…qb; it owns all of that head's dq, dk, dv;
 *  - backward, two-pass scheme: pass 1, one task per (sequence, head, key block) owns
 *    dk, dv of its keys and walks the query blocks kb…last; pass 2, one task per
 *    (sequence, head, query block) owns dq and walks key blocks 0…qb.
 * Both schemes run the same tile code, and each gradient row sees the same sequence of
 * tile updates (dk/dv over query blocks ascending, dq over key blocks ascending), so they
 * give the same bits; the scheme is chosen by load balance: one-pass when the (sequence,
 * head) tasks fill the threads (≥ 75% busy), two-pass otherwise (e.g. one head).
 * NOTE: two-pass recomputes the score and dP tiles and re-transposes the query block
 * per tile in pass 1 (≈ 40% more work than one pass at qk 48 / v 32; measured 1.5x
 * slower per FLOP), the price of reproducible gradients without float atomics when
 * there are fewer (sequence, head) pairs than threads.
 */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "kernels/cpu/ops.h"
#include "kernels/rules/softmax.h"

enum { BQ = 64, BK = 64, DC = 256 };
_Static_assert(BQ == BK, "the causal walks pair query block b with key block b on the diagonal");

static const float LOG2E = DSA_SOFTMAX_LOG2E;

/* ---- vectors ----
 * Vec is the ISA's float vector (a GCC vector type, so + − * < & work on it); FMA is
 * explicit, as -std=c11 does not contract a*b + c. Without AVX2 or AVX-512, plain
 * 4-wide GCC vectors. */
#if defined(__AVX512F__)
enum { VW = 16, MR = 8 };
typedef __m512 Vec;
static inline Vec vload(const float *p) { return _mm512_loadu_ps(p); }
static inline void vstore(float *p, Vec v) { _mm512_storeu_ps(p, v); }
static inline Vec vsplat(float x) { return _mm512_set1_ps(x); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
static inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
#elif defined(__AVX2__) && defined(__FMA__)
enum { VW = 8, MR = 4 };
typedef __m256 Vec;
static inline Vec vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void vstore(float *p, Vec v) { _mm256_storeu_ps(p, v); }
static inline Vec vsplat(float x) { return _mm256_set1_ps(x); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
static inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
#else
enum { VW = 4, MR = 4 };
typedef float Vec __attribute__((vector_size(16)));
typedef float VecU __attribute__((vector_size(16), aligned(4), may_alias));
typedef int32_t VecM __attribute__((vector_size(16)));
static inline Vec vload(const float *p) { return *(const VecU *)p; }
static inline void vstore(float *p, Vec v) { *(VecU *)p = v; }
static inline Vec vsplat(float x) { return (Vec){x, x, x, x}; }
static inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
static inline Vec vadd(Vec a, Vec b) { return a + b; }
static inline Vec vmax(Vec a, Vec b) {
    const VecM gt = a > b; /* (max(a, NaN) = NaN as maxps: the second operand) */
    return (Vec)((gt & (VecM)a) | (~gt & (VecM)b));
}
#endif
typedef int32_t Veci __attribute__((vector_size(sizeof(Vec))));
typedef uint32_t Vecu __attribute__((vector_size(sizeof(Vec))));

#if defined(__FMA__) || defined(__AVX512F__)
#define FMAF(a, b, c) fmaf(a, b, c)
#else
#define FMAF(a, b, c) ((a) * (b) + (c))
#endif

#include "kernels/cpu/vexp2.h" /* vexp2: needs Vec, Veci, Vecu, vsplat, vfma above */

/* ---- the tile mat-mult: C[M×N] (+)= A[M×K] · B[K×N] ----
 * A(i, k) = A[i·sai + k·sak] (row-major: sak = 1; transposed: sai = 1); B row-major with
 * leading dimension ldb, C with ldc. acc: C += A·B, else C = A·B. Each C element is one
 * FMA chain over k in order, then added to C: the same bits whatever M, and whichever
 * caller. Rows past M inside the last MR block repeat row M−1 (read, never stored). */
static inline __attribute__((always_inline)) void micro(float *restrict C, int64_t ldc, int64_t mr,
                                                        const float *restrict A, int64_t sai, int64_t sak,
                                                        const float *restrict B, int64_t ldb, int64_t K, bool acc,
                                                        const int nv) {
    const float *a[MR];
    for (int r = 0; r < MR; r++) a[r] = A + (r < mr ? r : mr - 1) * sai;
    Vec c[MR][2];
    for (int r = 0; r < MR; r++)
        for (int u = 0; u < nv; u++) c[r][u] = vsplat(0.0f);
    for (int64_t kk = 0; kk < K; kk++) {
        Vec b[2];
        for (int u = 0; u < nv; u++) b[u] = vload(B + kk * ldb + u * VW);
        for (int r = 0; r < MR; r++) {
            const Vec x = vsplat(a[r][kk * sak]);
            for (int u = 0; u < nv; u++) c[r][u] = vfma(x, b[u], c[r][u]);
        }
    }
    for (int r = 0; r < MR; r++)
        if (r < mr)
            for (int u = 0; u < nv; u++) {
                float *p = C + r * ldc + u * VW;
                vstore(p, acc ? vadd(vload(p), c[r][u]) : c[r][u]);
            }
}

/* Columns past the last whole vector (odd head dimensions): plain loops. */
static void micro_tail(float *restrict C, int64_t ldc, int64_t M, const float *restrict A, int64_t sai, int64_t sak,
                       const float *restrict B, int64_t ldb, int64_t N, int64_t K, bool acc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float s = 0.0f;
            for (int64_t kk = 0; kk < K; kk++) s = FMAF(A[i * sai + kk * sak], B[kk * ldb + j], s);
            C[i * ldc + j] = acc ? C[i * ldc + j] + s : s;
        }
}

static inline __attribute__((always_inline)) void tile_mm(float *restrict C, int64_t ldc, const float *restrict A,
                                                          int64_t sai, int64_t sak, const float *restrict B,
                                                          int64_t ldb, int64_t M, int64_t N, int64_t K, bool acc) {
    for (int64_t i0 = 0; i0 < M; i0 += MR) {
        const int64_t mr = M - i0 < MR ? M - i0 : MR;
        const float *Ai = A + i0 * sai;
        float *Ci = C + i0 * ldc;
        int64_t j0 = 0;
        for (; j0 + 2 * VW <= N; j0 += 2 * VW) micro(Ci + j0, ldc, mr, Ai, sai, sak, B + j0, ldb, K, acc, 2);
        for (; j0 + VW <= N; j0 += VW) micro(Ci + j0, ldc, mr, Ai, sai, sak, B + j0, ldb, K, acc, 1);
        if (j0 < N) micro_tail(Ci + j0, ldc, mr, Ai, sai, sak, B + j0, ldb, N - j0, K, acc);
    }
}

/* A row-major with row stride lda. */
static void mm_rows(float *restrict C, int64_t ldc, const float *restrict A, int64_t lda, const float *restrict B,
                    int64_t ldb, int64_t M, int64_t N, int64_t K, bool acc) {
    tile_mm(C, ldc, A, lda, 1, B, ldb, M, N, K, acc);
}

/* A stored transposed: A(i, k) = A[k·lda + i]. */
static void mm_cols(float *restrict C, int64_t ldc, const float *restrict A, int64_t lda, const float *restrict B,
                    int64_t ldb, int64_t M, int64_t N, int64_t K, bool acc) {
    tile_mm(C, ldc, A, 1, lda, B, ldb, M, N, K, acc);
}

/* ---- one (sequence, head) ---- */

/* Pointers and strides of one (sequence, head): row t of q is q + t·ldq, etc. */
typedef struct {
    const float *q, *k, *v, *dout;
    float *out, *dq, *dk, *dv;
    const float *lse, *D; /* [L] rows of lse and of dot(dout, out) */
    float *lse_out;
    int64_t L, ldq, ldv, dq_dim, dv_dim;
    float scale;
} Head;

/* dst[c][i] = mul · src[i·ld + c0 + c] for c < dc, i < rows; zero for rows ≤ i < BQ. */
static void transpose_block(float *restrict dst, const float *restrict src, int64_t ld, int64_t rows, int64_t c0,
                            int64_t dc, float mul) {
    for (int64_t c = 0; c < dc; c++)
        for (int64_t i = rows; i < BQ; i++) dst[c * BQ + i] = 0.0f;
    for (int64_t i = 0; i < rows; i++) {
        const float *s = src + i * ld + c0;
        for (int64_t c = 0; c < dc; c++) dst[c * BQ + i] = s[c] * mul;
    }
}

/* St[j][i] (j < nk, all BQ columns) = Σ_c A[j][c] · Xt[c][i] over dim columns: A rows in
 * place (stride lda), X the query-side block (nq rows, stride ldx) transposed into xt per
 * chunk of DC columns, unless `ready` (dim ≤ DC and xt already holds it). */
static void scores_t(float *restrict st, const float *A, int64_t lda, int64_t nk, const float *X, int64_t ldx,
                     int64_t nq, int64_t dim, float mul, float *restrict xt, bool ready) {
    for (int64_t c0 = 0; c0 < dim; c0 += DC) {
        const int64_t dc = dim - c0 < DC ? dim - c0 : DC;
        if (!ready) transpose_block(xt, X, ldx, nq, c0, dc, mul);
        mm_rows(st, BQ, A + c0, lda, xt, BQ, nk, BQ, dc, c0 > 0);
    }
}

/* ---- forward ---- */

static void forward_block(const Head *hd, int64_t qb, float *restrict qt, float *restrict st) {
    const int64_t L = hd->L, ldq = hd->ldq, ldv = hd->ldv, dqd = hd->dq_dim, dvd = hd->dv_dim;
    const int64_t t0 = qb * BQ, nq = L - t0 < BQ ? L - t0 : BQ;
    const float *qrow = hd->q + t0 * ldq;
    float *orow = hd->out + t0 * ldv;
    const float qmul = dsa_softmax_log2_scale(hd->scale); /* scores in log2 units: P = exp2(St − m) */
    const bool ready = dqd <= DC;
    float m[BQ], l[BQ], corr[BQ];
    for (int64_t i = 0; i < BQ; i++) m[i] = -INFINITY, l[i] = 0.0f;
    if (ready) transpose_block(qt, qrow, ldq, nq, 0, dqd, qmul);
    const int64_t last = (t0 + nq - 1) / BK;
    for (int64_t kb = 0; kb <= last; kb++) {
        const int64_t s0 = kb * BK, nk = L - s0 < BK ? L - s0 : BK;
        scores_t(st, hd->k + s0 * ldq, ldq, nk, qrow, ldq, nq, dqd, qmul, qt, ready);
        if (s0 + nk - 1 > t0) /* diagonal tile: mask key s0+j > query t0+i */
            for (int64_t j = 0; j < nk; j++) {
                float *restrict row = st + j * BQ;
                const int64_t lim = s0 + j - t0; /* masked for i < lim */
#pragma omp simd
                for (int64_t i = 0; i < BQ; i++) row[i] = i < lim ? -INFINITY : row[i];
            }
        /* the rules of kernels/rules/softmax.h, lane for lane: vmax(s, m) is dsa_softmax_max,
         * vexp2(m − m') dsa_softmax_corr */
        for (int64_t u = 0; u < BQ; u += VW) {
            Vec x = vload(m + u);
            for (int64_t j = 0; j < nk; j++) x = vmax(vload(st + j * BQ + u), x);
            const Vec c = vexp2(vload(m + u) - x); /* rescales the old sum and output */
            vstore(corr + u, c);
            vstore(l + u, vload(l + u) * c);
            vstore(m + u, x);
        }
        for (int64_t j = 0; j < nk; j++)
            for (int64_t u = 0; u < BQ; u += VW) {
                const Vec e = vexp2(vload(st + j * BQ + u) - vload(m + u));
                vstore(st + j * BQ + u, e);
                vstore(l + u, vadd(vload(l + u), e));
            }
        if (kb > 0)
            for (int64_t i = 0; i < nq; i++) {
                float *restrict o = orow + i * ldv;
                for (int64_t c = 0; c < dvd; c++) o[c] *= corr[i];
            }
        mm_cols(orow, ldv, st, BQ, hd->v + s0 * ldv, ldv, nq, dvd, nk, kb > 0); /* out += P·V */
    }
    for (int64_t i = 0; i < nq; i++) {
        float *restrict o = orow + i * ldv;
        const float inv = dsa_softmax_inv(l[i]);
        for (int64_t c = 0; c < dvd; c++) o[c] *= inv;
        hd->lse_out[t0 + i] = dsa_softmax_lse(m[i], l[i]);
    }
}

/* The Head of (sequence, head) bh; NULL arrays stay NULL. */
static Head head_bind(const DsaAttnShape *s, int64_t bh, const float *q, const float *k, const float *v,
                      const float *dout, float *out, float *dq, float *dk, float *dv, const float *lse, const float *D,
                      float *lse_out) {
    const int64_t b = bh / s->heads, h = bh % s->heads, row0 = b * s->seq_len * s->heads + h;
    const int64_t oq = row0 * s->qk_dim, ov = row0 * s->v_dim, ol = bh * s->seq_len;
    Head hd = {0};
    hd.L = s->seq_len, hd.ldq = s->heads * s->qk_dim, hd.ldv = s->heads * s->v_dim;
    hd.dq_dim = s->qk_dim, hd.dv_dim = s->v_dim, hd.scale = s->scale;
    hd.q = q + oq, hd.k = k + oq, hd.v = v + ov;
    hd.dout = dout ? dout + ov : NULL, hd.out = out ? out + ov : NULL;
    hd.dq = dq ? dq + oq : NULL, hd.dk = dk ? dk + oq : NULL, hd.dv = dv ? dv + ov : NULL;
    hd.lse = lse ? lse + ol : NULL, hd.D = D ? D + ol : NULL, hd.lse_out = lse_out ? lse_out + ol : NULL;
    return hd;
}

void dsa_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                               const DsaAttnShape *shape) {
    DSA_ASSERT(shape->batch >= 0 && shape->seq_len >= 0 && shape->heads >= 0);
    DSA_ASSERT(shape->qk_dim >= 1 && shape->v_dim >= 1);
    const int64_t BH = shape->batch * shape->heads, blocks = (shape->seq_len + BQ - 1) / BQ;
#pragma omp parallel
    {
        _Alignas(64) float qt[DC * BQ];
        _Alignas(64) float st[BK * BQ];
        /* Longest (last) query blocks first balances the causal triangle. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < BH * blocks; task++) {
            const int64_t qb = blocks - 1 - task / BH, bh = task % BH;
            const Head hd = head_bind(shape, bh, q, k, v, NULL, out, NULL, NULL, NULL, NULL, NULL, lse);
            forward_block(&hd, qb, qt, st);
        }
    }
}

int64_t dsa_cpu_attention_scratch_floats(const DsaAttnShape *shape) {
    return shape->batch * shape->heads * shape->seq_len;
}

/* ---- backward ---- */

/* A query block prepared for the backward: Qt (pre-scaled by τ·log2 e) and dOt transposed
 * (when the head dims fit one chunk), lse in log2 units, D = dot(dout, out). */
typedef struct {
    float *qt, *dot; /* [DC][BQ] each */
    float lse2[BQ], D[BQ];
    int64_t t0, nq;
    bool q_ready, o_ready;
} QBlock;

static void qblock_prepare(QBlock *qk, const Head *hd, int64_t qb) {
    const int64_t L = hd->L;
    qk->t0 = qb * BQ, qk->nq = L - qk->t0 < BQ ? L - qk->t0 : BQ;
    for (int64_t i = 0; i < BQ; i++) {
        qk->lse2[i] = i < qk->nq ? hd->lse[qk->t0 + i] * LOG2E : 0.0f;
        qk->D[i] = i < qk->nq ? hd->D[qk->t0 + i] : 0.0f;
    }
    qk->q_ready = hd->dq_dim <= DC, qk->o_ready = hd->dv_dim <= DC;
    if (qk->q_ready)
        transpose_block(qk->qt, hd->q + qk->t0 * hd->ldq, hd->ldq, qk->nq, 0, hd->dq_dim,
                        dsa_softmax_log2_scale(hd->scale));
    if (qk->o_ready) transpose_block(qk->dot, hd->dout + qk->t0 * hd->ldv, hd->ldv, qk->nq, 0, hd->dv_dim, 1.0f);
}

/* Zero rows [t0, t0 + n) of a gradient with row stride ld and width d. */
static void zero_rows(float *x, int64_t t0, int64_t n, int64_t ld, int64_t d) {
    for (int64_t i = 0; i < n; i++) memset(x + (t0 + i) * ld, 0, sizeof(float) * (size_t)d);
}

/* Tile (qb, kb): recompute Pt and dSt = τ · Pt ⊙ (dPt − D) (transposed, [key][query]),
 * then dv, dk of the key block += Pᵀ·dO, dSᵀ·Q (want_kv) and dq of the query block
 * += dS·K (want_q). */
static void backward_tile(const Head *hd, QBlock *qk, int64_t kb, float *restrict st, float *restrict dpt, bool want_kv,
                          bool want_q) {
    const int64_t L = hd->L, ldq = hd->ldq, ldv = hd->ldv, dqd = hd->dq_dim, dvd = hd->dv_dim;
    const int64_t t0 = qk->t0, nq = qk->nq, s0 = kb * BK, nk = L - s0 < BK ? L - s0 : BK;
    const float *qrow = hd->q + t0 * ldq, *grow = hd->dout + t0 * ldv;
    const float *krow = hd->k + s0 * ldq, *vrow = hd->v + s0 * ldv;
    scores_t(st, krow, ldq, nk, qrow, ldq, nq, dqd, dsa_softmax_log2_scale(hd->scale), qk->qt, qk->q_ready);
    scores_t(dpt, vrow, ldv, nk, grow, ldv, nq, dvd, 1.0f, qk->dot, qk->o_ready);
    const Vec scale = vsplat(hd->scale);
    for (int64_t j = 0; j < nk; j++) {
        float *restrict p = st + j * BQ, *restrict ds = dpt + j * BQ;
        for (int64_t u = 0; u < BQ; u += VW) {
            const Vec e = vexp2(vload(p + u) - vload(qk->lse2 + u));
            vstore(p + u, e);
            vstore(ds + u, e * (vload(ds + u) - vload(qk->D + u)) * scale);
        }
        const int64_t lim = s0 + j - t0; /* query i sees key j when i >= lim */
        if (lim > 0) {
            const size_t bytes = sizeof(float) * (size_t)(lim < BQ ? lim : BQ);
            memset(p, 0, bytes), memset(ds, 0, bytes);
        }
    }
    if (want_kv) {
        mm_rows(hd->dv + s0 * ldv, ldv, st, BQ, grow, ldv, nk, dvd, nq, true);  /* dV += Pᵀ·dO */
        mm_rows(hd->dk + s0 * ldq, ldq, dpt, BQ, qrow, ldq, nk, dqd, nq, true); /* dK += dSᵀ·Q */
    }
    if (want_q) mm_cols(hd->dq + t0 * ldq, ldq, dpt, BQ, krow, ldq, nq, dqd, nk, true); /* dQ += dS·K */
}

/* One-pass: the whole (sequence, head) by one thread, query blocks in order. */
static void backward_head(const Head *hd, QBlock *qk, float *st, float *dpt) {
    const int64_t blocks = (hd->L + BQ - 1) / BQ;
    for (int64_t qb = 0; qb < blocks; qb++) {
        qblock_prepare(qk, hd, qb);
        zero_rows(hd->dq, qk->t0, qk->nq, hd->ldq, hd->dq_dim);
        zero_rows(hd->dk, qk->t0, qk->nq, hd->ldq, hd->dq_dim); /* key block qb is first used now */
        zero_rows(hd->dv, qk->t0, qk->nq, hd->ldv, hd->dv_dim);
        for (int64_t kb = 0; kb <= qb; kb++) backward_tile(hd, qk, kb, st, dpt, true, true);
    }
}

void dsa_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                const float *lse, const float *q, const float *k, const float *v,
                                const DsaAttnShape *shape, float *scratch) {
    DSA_ASSERT(shape->batch >= 0 && shape->seq_len >= 0 && shape->heads >= 0);
    DSA_ASSERT(shape->qk_dim >= 1 && shape->v_dim >= 1);
    const int64_t L = shape->seq_len, H = shape->heads, dvd = shape->v_dim, BH = shape->batch * H;
    const int64_t blocks = (L + BQ - 1) / BQ;
    float *D = scratch; /* [B, H, L]: dot(dout, out) per query row */
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < shape->batch * L; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *o = out + (n * H + h) * dvd, *g = dout + (n * H + h) * dvd;
            float s = 0.0f;
            for (int64_t c = 0; c < dvd; c++) s = FMAF(o[c], g[c], s);
            D[((n / L) * H + h) * L + n % L] = s;
        }
    const int64_t T = omp_get_max_threads(), rounds = (BH + T - 1) / T;
    const bool one_pass = (double)BH / (double)(T * rounds) >= 0.75;
#pragma omp parallel
    {
        _Alignas(64) float qt[DC * BQ];
        _Alignas(64) float dot[DC * BQ];
        _Alignas(64) float st[BK * BQ];
        _Alignas(64) float dpt[BK * BQ];
        QBlock qk = {.qt = qt, .dot = dot};
        if (one_pass) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t bh = 0; bh < BH; bh++) {
                const Head hd = head_bind(shape, bh, q, k, v, dout, NULL, dq, dk, dv, lse, D, NULL);
                backward_head(&hd, &qk, st, dpt);
            }
        } else {
            /* pass 1: dk, dv; one task per key block, longest (first) key blocks first */
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < BH * blocks; task++) {
                const int64_t kb = task / BH, bh = task % BH;
                const Head hd = head_bind(shape, bh, q, k, v, dout, NULL, dq, dk, dv, lse, D, NULL);
                const int64_t s0 = kb * BK, nk = L - s0 < BK ? L - s0 : BK;
                zero_rows(hd.dk, s0, nk, hd.ldq, hd.dq_dim);
                zero_rows(hd.dv, s0, nk, hd.ldv, hd.dv_dim);
                for (int64_t qb = kb; qb < blocks; qb++) {
                    qblock_prepare(&qk, &hd, qb);
                    backward_tile(&hd, &qk, kb, st, dpt, true, false);
                }
            }
            /* pass 2: dq; one task per query block, longest (last) first */
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < BH * blocks; task++) {
                const int64_t qb = blocks - 1 - task / BH, bh = task % BH;
                const Head hd = head_bind(shape, bh, q, k, v, dout, NULL, dq, dk, dv, lse, D, NULL);
                qblock_prepare(&qk, &hd, qb);
                zero_rows(hd.dq, qk.t0, qk.nq, hd.ldq, hd.dq_dim);
                for (int64_t kb = 0; kb <= qb; kb++) backward_tile(&hd, &qk, kb, st, dpt, false, true);
            }
        }
    }
}
