/* attention.c: causal attention, tiled with an online softmax, forward and backward
 * (DSA-SPEC §4.1 MHA form, §8 tiling; DESIGN.md memory rule).
 *
 * Tiles are TILE query rows × TILE keys of one (sequence, head). Tiles above the
 * diagonal are skipped and the diagonal tile is masked (s > t). Nothing of size L×L
 * exists: the forward keeps per row a running max m, a running sum l and the output
 * accumulator, and saves lse = m + log l (natural log) for the backward, which
 * recomputes P = exp(τ q·k − lse) tile by tile (FlashAttention-2).
 *
 * Determinism: every output element is accumulated by exactly one thread in a fixed
 * order, so results are bit-identical for every thread count:
 *  - forward: one task per (sequence, head, query block);
 *  - backward pass 1: one task per (sequence, head, key block) owns dK and dV of its
 *    keys and loops over the query blocks at or below the diagonal;
 *  - backward pass 2: one task per (sequence, head, query block) owns dQ.
 * NOTE: the two passes recompute the score tile twice (about 25% more work than one
 * pass with atomic dQ updates), the price of reproducible gradients without atomics.
 *
 * Inner loops: the K tile is transposed to [d][key] so the score loop runs along keys
 * and vectorizes; P·V and dS·K run along the head dimension.
 * NOTE: each task takes its tile buffers with malloc (a few hundred KiB at d = 192), the
 * one exception to "kernels own no memory": the count of OpenMP threads is not fixed
 * when the caller sizes its scratch.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"

enum { TILE = 64 };

/* exp(x) for the softmax, vectorizable (libm's expf is a scalar call per score and
 * dominated the tile loops): x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6
 * polynomial (Taylor; relative error < 2e-7 on that interval, about 2 ulp overall),
 * 2^n built in the exponent bits. Inputs below −87.3 give 0 (the masked −inf scores and
 * every e^x < FLT_MIN), inputs are ≤ 0 here (scores minus their row maximum). */
#pragma omp declare simd
static inline float softmax_exp(float x) {
    x = x < -87.3f ? -87.3f : x;
    const float n = __builtin_floorf(x * 1.44269504f + 0.5f);
    const float r = x - n * 0.693145752f - n * 1.42860677e-6f; /* ln2 split in two for accuracy */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        float f;
        int32_t i;
    } scale = {.i = ((int32_t)n + 127) << 23};
    return x <= -87.3f ? 0.0f : p * scale.f;
}

typedef struct {
    int64_t L, H, dq, dv;
    float scale;
} Dims;

/* Copy up to TILE rows of head h starting at token n0 into dst [rows][d] (row stride of
 * the source is H·d). */
static void load_rows(float *restrict dst, const float *src, int64_t n0, int64_t rows, int64_t h, int64_t H, int64_t d) {
    for (int64_t r = 0; r < rows; r++) memcpy(dst + r * d, src + ((n0 + r) * H + h) * d, (size_t)d * sizeof(float));
}

/* Same, transposed: dst[d][TILE]. */
static void load_rows_t(float *restrict dst, const float *src, int64_t n0, int64_t rows, int64_t h, int64_t H,
                        int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        const float *s = src + ((n0 + r) * H + h) * d;
        for (int64_t c = 0; c < d; c++) dst[c * TILE + r] = s[c];
    }
}

/* C[M×N] (+)= op(A)[M×K] · B[K×N] for the small tile products, row-major with leading
 * dimensions; op(A) = A, or Aᵀ when A is stored K×M. Register-blocked: 4 rows × 16
 * columns of C stay in registers across the K loop (the compiler vectorizes the 16).
 * Columns past the last multiple of 16 take a plain loop. `accumulate` false zeroes C. */
static void tile_mm(float *restrict C, int64_t ldc, const float *restrict A, int64_t lda, bool trans_a,
                    const float *restrict B, int64_t ldb, int64_t M, int64_t N, int64_t K, bool accumulate) {
    const int64_t N16 = N / 16 * 16;
    for (int64_t i0 = 0; i0 < M; i0 += 4) {
        const int64_t mr = M - i0 < 4 ? M - i0 : 4;
        for (int64_t j0 = 0; j0 < N16; j0 += 16) {
            float acc[4][16] = {{0}};
            for (int64_t k = 0; k < K; k++) {
                const float *restrict b = B + k * ldb + j0;
                float a[4];
                for (int r = 0; r < 4; r++)
                    a[r] = r < mr ? (trans_a ? A[k * lda + i0 + r] : A[(i0 + r) * lda + k]) : 0.0f;
                for (int r = 0; r < 4; r++)
#pragma omp simd
                    for (int jj = 0; jj < 16; jj++) acc[r][jj] += a[r] * b[jj];
            }
            for (int r = 0; r < mr; r++) {
                float *restrict c = C + (i0 + r) * ldc + j0;
                for (int jj = 0; jj < 16; jj++) c[jj] = accumulate ? c[jj] + acc[r][jj] : acc[r][jj];
            }
        }
        for (int64_t j = N16; j < N; j++)
            for (int r = 0; r < mr; r++) {
                float sum = 0.0f;
                for (int64_t k = 0; k < K; k++)
                    sum += (trans_a ? A[k * lda + i0 + r] : A[(i0 + r) * lda + k]) * B[k * ldb + j];
                float *c = C + (i0 + r) * ldc + j;
                *c = accumulate ? *c + sum : sum;
            }
    }
}

/* S[i][j] = Σ_c Q[i][c] · Kt[c][j] for i < nq, all TILE columns (Kt is zero-padded). */
static void scores(float *restrict S, const float *restrict Q, const float *restrict Kt, int64_t nq, int64_t nk,
                   int64_t d) {
    (void)nk;
    tile_mm(S, TILE, Q, d, false, Kt, TILE, nq, TILE, d, false);
}

static void forward_block(float *out, float *lse, const float *q, const float *k, const float *v, const Dims *D,
                          int64_t b, int64_t h, int64_t qb, float *buf) {
    const int64_t L = D->L, H = D->H, dq = D->dq, dv = D->dv;
    const int64_t t0 = qb * TILE, nq = L - t0 < TILE ? L - t0 : TILE, base = b * L;
    float *Q = buf, *Kt = Q + TILE * dq, *V = Kt + TILE * dq, *S = V + TILE * dv, *acc = S + TILE * TILE;
    float m[TILE], l[TILE];
    load_rows(Q, q, base + t0, nq, h, H, dq);
    for (int64_t i = 0; i < nq; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
        for (int64_t c = 0; c < dv; c++) acc[i * dv + c] = 0.0f;
    }
    for (int64_t kb = 0; kb <= qb; kb++) {
        const int64_t s0 = kb * TILE, nk = L - s0 < TILE ? L - s0 : TILE;
        memset(Kt, 0, sizeof(float) * (size_t)(TILE * dq));
        load_rows_t(Kt, k, base + s0, nk, h, H, dq);
        load_rows(V, v, base + s0, nk, h, H, dv);
        scores(S, Q, Kt, nq, nk, dq);
        for (int64_t i = 0; i < nq; i++) {
            float *restrict row = S + i * TILE;
            const int64_t valid = kb == qb ? i + 1 : nk; /* causal mask on the diagonal tile */
            float mx = m[i];
            for (int64_t j = 0; j < valid; j++) mx = row[j] * D->scale > mx ? row[j] * D->scale : mx;
            const float corr = softmax_exp(m[i] - mx);
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < valid; j++) {
                row[j] = softmax_exp(row[j] * D->scale - mx);
                sum += row[j];
            }
            l[i] = l[i] * corr + sum;
            m[i] = mx;
            for (int64_t j = valid; j < TILE; j++) row[j] = 0.0f; /* masked and padding keys */
            float *restrict a = acc + i * dv;
            for (int64_t c = 0; c < dv; c++) a[c] *= corr;
        }
        tile_mm(acc, dv, S, TILE, false, V, dv, nq, dv, nk, true); /* acc += P · V */
    }
    for (int64_t i = 0; i < nq; i++) {
        float *o = out + ((base + t0 + i) * H + h) * dv;
        const float inv = 1.0f / l[i];
        for (int64_t c = 0; c < dv; c++) o[c] = acc[i * dv + c] * inv;
        lse[(b * H + h) * L + t0 + i] = m[i] + logf(l[i]);
    }
}

static int64_t tile_floats(const Dims *D) { return 3 * TILE * D->dq + 3 * TILE * D->dv + 2 * TILE * TILE; }

void dsa_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                               const DsaAttnShape *shape) {
    const Dims D = {shape->seq_len, shape->heads, shape->qk_dim, shape->v_dim, shape->scale};
    const int64_t blocks = (D.L + TILE - 1) / TILE, tasks = shape->batch * D.H * blocks;
#pragma omp parallel
    {
        float *buf = malloc(sizeof(float) * (size_t)tile_floats(&D));
        DSA_ASSERT(buf);
        /* Longest (last) query blocks first balances the causal triangle. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t qb = blocks - 1 - task % blocks, bh = task / blocks;
            forward_block(out, lse, q, k, v, &D, bh / D.H, bh % D.H, qb, buf);
        }
        free(buf);
    }
}

int64_t dsa_cpu_attention_scratch_floats(const DsaAttnShape *shape) {
    return shape->batch * shape->heads * shape->seq_len;
}

/* Recompute P (into S) and dS (into dP) of the tile (qb, kb); Q, Kt, dO, Vt loaded. */
static void tile_grads(float *restrict S, float *restrict dP, const float *Q, const float *Kt, const float *dO,
                       const float *Vt, const float *lse_rows, const float *Drows, int64_t nq, int64_t nk, bool diag,
                       int64_t i_off, int64_t j_off, const Dims *D) {
    scores(S, Q, Kt, nq, nk, D->dq);
    scores(dP, dO, Vt, nq, nk, D->dv);
    for (int64_t i = 0; i < nq; i++) {
        float *restrict p = S + i * TILE, *restrict dp = dP + i * TILE;
        const int64_t valid = diag ? (i + i_off - j_off + 1 < nk ? i + i_off - j_off + 1 : nk) : nk;
        const float l = lse_rows[i], d = Drows[i];
#pragma omp simd
        for (int64_t j = 0; j < TILE; j++) {
            const float pj = j < valid ? softmax_exp(p[j] * D->scale - l) : 0.0f;
            p[j] = pj;
            dp[j] = pj * (dp[j] - d);
        }
    }
}

void dsa_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                const float *lse, const float *q, const float *k, const float *v,
                                const DsaAttnShape *shape, float *scratch) {
    const Dims D = {shape->seq_len, shape->heads, shape->qk_dim, shape->v_dim, shape->scale};
    const int64_t L = D.L, H = D.H, dqd = D.dq, dvd = D.dv, B = shape->batch;
    const int64_t blocks = (L + TILE - 1) / TILE, tasks = B * H * blocks;
    float *Drow = scratch; /* [B, H, L]: dout · out per row */
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < B * L; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *o = out + (n * H + h) * dvd, *g = dout + (n * H + h) * dvd;
            float s = 0.0f;
            for (int64_t c = 0; c < dvd; c++) s += o[c] * g[c];
            Drow[((n / L) * H + h) * L + n % L] = s;
        }
    const int64_t buf_floats = 3 * TILE * dqd + 2 * TILE * dvd + 2 * TILE * TILE + TILE * dqd + TILE * dvd;
#pragma omp parallel
    {
        float *buf = malloc(sizeof(float) * (size_t)buf_floats);
        DSA_ASSERT(buf);
        float *Q = buf, *Kt = Q + TILE * dqd, *dO = Kt + TILE * dqd, *Vt = dO + TILE * dvd, *S = Vt + TILE * dvd,
              *dP = S + TILE * TILE, *acc_k = dP + TILE * TILE, *acc_v = acc_k + TILE * dqd,
              *Krow = acc_v + TILE * dvd;
        /* pass 1: dK, dV, one task per key block */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t kb = task % blocks, bh = task / blocks, b = bh / H, h = bh % H, base = b * L;
            const int64_t s0 = kb * TILE, nk = L - s0 < TILE ? L - s0 : TILE;
            memset(Kt, 0, sizeof(float) * (size_t)(TILE * dqd));
            memset(Vt, 0, sizeof(float) * (size_t)(TILE * dvd));
            load_rows_t(Kt, k, base + s0, nk, h, H, dqd);
            load_rows_t(Vt, v, base + s0, nk, h, H, dvd);
            memset(acc_k, 0, sizeof(float) * (size_t)(TILE * dqd));
            memset(acc_v, 0, sizeof(float) * (size_t)(TILE * dvd));
            for (int64_t qb = kb; qb < blocks; qb++) {
                const int64_t t0 = qb * TILE, nq = L - t0 < TILE ? L - t0 : TILE;
                load_rows(Q, q, base + t0, nq, h, H, dqd);
                load_rows(dO, dout, base + t0, nq, h, H, dvd);
                const float *lrow = lse + (b * H + h) * L + t0, *drow = Drow + (b * H + h) * L + t0;
                tile_grads(S, dP, Q, Kt, dO, Vt, lrow, drow, nq, nk, qb == kb, t0, s0, &D);
                tile_mm(acc_v, dvd, S, TILE, true, dO, dvd, nk, dvd, nq, true);  /* dV += Pᵀ · dO */
                tile_mm(acc_k, dqd, dP, TILE, true, Q, dqd, nk, dqd, nq, true); /* dK += dSᵀ · Q (τ later) */
            }
            for (int64_t j = 0; j < nk; j++) {
                for (int64_t c = 0; c < dqd; c++) acc_k[j * dqd + c] *= D.scale;
                memcpy(dk + ((base + s0 + j) * H + h) * dqd, acc_k + j * dqd, sizeof(float) * (size_t)dqd);
                memcpy(dv + ((base + s0 + j) * H + h) * dvd, acc_v + j * dvd, sizeof(float) * (size_t)dvd);
            }
        }
        /* pass 2: dQ, one task per query block */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t qb = blocks - 1 - task % blocks, bh = task / blocks, b = bh / H, h = bh % H, base = b * L;
            const int64_t t0 = qb * TILE, nq = L - t0 < TILE ? L - t0 : TILE;
            load_rows(Q, q, base + t0, nq, h, H, dqd);
            load_rows(dO, dout, base + t0, nq, h, H, dvd);
            memset(acc_k, 0, sizeof(float) * (size_t)(TILE * dqd));
            const float *lrow = lse + (b * H + h) * L + t0, *drow = Drow + (b * H + h) * L + t0;
            for (int64_t kb = 0; kb <= qb; kb++) {
                const int64_t s0 = kb * TILE, nk = L - s0 < TILE ? L - s0 : TILE;
                memset(Kt, 0, sizeof(float) * (size_t)(TILE * dqd));
                memset(Vt, 0, sizeof(float) * (size_t)(TILE * dvd));
                load_rows_t(Kt, k, base + s0, nk, h, H, dqd);
                load_rows_t(Vt, v, base + s0, nk, h, H, dvd);
                tile_grads(S, dP, Q, Kt, dO, Vt, lrow, drow, nq, nk, qb == kb, t0, s0, &D);
                load_rows(Krow, k, base + s0, nk, h, H, dqd);
                tile_mm(acc_k, dqd, dP, TILE, false, Krow, dqd, nq, dqd, nk, true); /* dQ += dS · K */
            }
            for (int64_t i = 0; i < nq; i++) {
                for (int64_t c = 0; c < dqd; c++) acc_k[i * dqd + c] *= D.scale;
                memcpy(dq + ((base + t0 + i) * H + h) * dqd, acc_k + i * dqd, sizeof(float) * (size_t)dqd);
            }
        }
        free(buf);
    }
}
