/* sparse_attention.c: sparse MLA attention in the absorbed (MQA) form over top-k key
 * indices, forward and backward (DSA-SPEC §4.2, §8.2 passes F2 and B; kernels/backend.h
 * sparse_attention_*).
 *
 * Shapes: N = batch·L query rows, H heads, qk_dim = Dq (576 = 512 latent + 64 rope in the
 * 671B config), v_dim = Dv (512). Query row n has H·Dq contiguous values q[n, h, :]; every
 * key is one row K_s = kv[s, :Dq] shared by all heads, whose first Dv entries are also its
 * value. idx[n, :topk] lists the key positions s (within n's own sequence, key row
 * b·L + s) that row n attends to, −1 for "no key". Per (n, h), with S_n the valid entries:
 *
 *     a_s = τ · q_{n,h} · K_s,   lse = log Σ_{s∈S_n} exp(a_s),   P_s = exp(a_s − lse)
 *     out_{n,h} = Σ_{s∈S_n} P_s K_s[:Dv]                                       (§4.2)
 *
 * and, for the upstream gradient g = dout (FlashAttention-2's backward on the gathered
 * keys; D_{n,h} = g_{n,h} · out_{n,h}):
 *
 *     dP_s = g_{n,h} · K_s[:Dv],   dS_s = τ · P_s (dP_s − D_{n,h})
 *     dq_{n,h} = Σ_{s∈S_n} dS_s K_s
 *     dkv_s    = Σ_{(n,h): s∈S_n} dS_{n,h,s} q_{n,h}  +  [P_{n,h,s} g_{n,h} on the first Dv]
 *
 * Forward (pass F2): one task per query row, online softmax (the rules of
 * kernels/rules/softmax.h) over chunks of BK = 64 valid keys, all heads of the row at once
 * (in groups of HG) so each gathered 576-wide key row is read once per chunk for every
 * head. Nothing is gathered: the tile products read key rows in place through a pointer
 * per key.
 *
 * Backward (pass B), in three steps:
 *  1. D_{n,h} for every row;
 *  2. row pass, one task per query row: recompute P from lse and dS, dq += dS·K;
 *  3. key pass, one task per block of KB consecutive key positions of one sequence:
 *     walk the query rows that selected any key of the block, in ascending row order,
 *     recompute P and dS for those (row, key) pairs and accumulate dkv of the block's
 *     keys. The list of pairs per block is the transposed index (CSR by key block), built
 *     in the caller's scratch by a counting sort; it is what
 *     sparse_attention_scratch_bytes sizes.
 *     KB is 256, 128 or 64: the largest that still gives every thread 8 blocks. A row's
 *     q and dout (H·(Dq + Dv) floats, from memory) are loaded once per (row, block), so
 *     larger blocks reuse them over more keys (k = 512 of 8K random: 256 vs 64 measured
 *     1.25x on the backward); smaller blocks balance the threads.
 *     NOTE: KB depends on the thread count but the bits do not: each dkv_s is still the
 *     sum over its selecting rows in ascending order of one FMA chain per row (over the
 *     heads), whatever other keys share its block or tile.
 * NOTE: the key pass recomputes the QK and dP products the row pass already made (≈ 3.5×
 * the forward's FLOPs in all instead of 2.5×): keeping P and dS for every (row, head,
 * key) would take 2·N·H·topk floats (256 GiB at 128K tokens, 128 heads, k = 2048), and a
 * scatter-add of dkv from the row pass would need atomics or per-thread copies, neither
 * deterministic nor small.
 *
 * Determinism: every output element is written by one task that sums in an order fixed
 * by the data alone (keys in slot order, chunked by BK; key-pass pairs by ascending query
 * row, then slot), so the bits are the same for any thread count. The counting sort's
 * row chunks are a fixed number (NCHUNK), not one per thread.
 *
 * The two tile products (register-blocked, explicit FMA, vectors of VW floats):
 *  - dots: C[i][j] = X_i · Y_j over a common length, X and Y rows given by pointers; the
 *    accumulators of one DA×DB block (DA·DB = VW) are reduced by one transposition tree,
 *    whose shape is the same for every element (a result does not depend on its place in
 *    the block);
 *  - axpys: C_i[c] (+)= Σ_k A(i, k) B_k[c], C and B rows given by pointers, vectors along
 *    c, each element one FMA chain over k then added to C.
 * Kernels own no memory: the tiles are fixed-size arrays on each thread's stack (≈ 9 KiB
 * forward, 17 KiB backward); the backward's transposed index lives in the caller's scratch.
 * Measured (AMD EPYC Zen 3, AVX2, one core's worth of CPU time): L 8192, H 8, qk 288, v 256,
 * k 2048 random subsets: forward ≈ 40 GFLOP/s, backward ≈ 28 GFLOP/s counting 2.5× the
 * forward's FLOPs (OpenBLAS SGEMM on the same core: 84).
 */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "kernels/cpu/ops.h"
#include "kernels/rules/softmax.h"

enum {
    BK = 64,     /* valid keys per chunk (row passes); rows of a score tile */
    KB_MIN_BITS = 6, /* key-pass blocks of 2^6 … 2^8 key positions */
    KB_MAX_BITS = 8, /* (a CSR entry packs row << KB_MAX_BITS | place in the block) */
    HG = 32,     /* heads per group: one group's tiles are HG × BK */
    NCHUNK = 64, /* fixed row chunks of the counting sort */
};

static const float LOG2E = DSA_SOFTMAX_LOG2E;

/* ---- vectors ----
 * Vec: VW floats as a GCC vector type. VW = 16 with AVX-512, 8 with AVX2 + FMA, else 4
 * (-DDSA_SPARSE_VW=n forces generic vectors of n lanes: a test hook that runs the
 * AVX-512 code shape on a machine without it). FMA explicit: -std=c11 does not contract
 * a*b + c. */
#if defined(DSA_SPARSE_VW)
#define VW DSA_SPARSE_VW
#define VEC_GENERIC 1
#elif defined(__AVX512F__)
#define VW 16
#elif defined(__AVX2__) && defined(__FMA__)
#define VW 8
#else
#define VW 4
#define VEC_GENERIC 1
#endif

typedef float Vec __attribute__((vector_size(VW * 4)));
typedef float VecU __attribute__((vector_size(VW * 4), aligned(4), may_alias));
typedef int32_t Veci __attribute__((vector_size(VW * 4)));
typedef uint32_t Vecu __attribute__((vector_size(VW * 4)));

/* dots: DA × DB accumulators per block, DA·DB = VW (one result vector); axpys: AR rows
 * × AN vectors of C in registers. */
#if VW == 16
enum { DA = 4, DB = 4, AR = 4, AN = 4 };
#elif VW == 8
enum { DA = 2, DB = 4, AR = 4, AN = 2 };
#elif VW == 4
enum { DA = 2, DB = 2, AR = 4, AN = 2 };
#else
#error "DSA_SPARSE_VW must be 4, 8 or 16"
#endif
_Static_assert(DA * DB == VW, "a dot block reduces to one vector");
_Static_assert(AN >= 1 && AN <= 4, "axpys dispatches 1 to 4 vectors per block");

/* LANES(F, a): F(0, a), F(1, a), …, F(VW − 1, a), for vector initializers. */
#define LANES4(F, a, o) F((o) + 0, a), F((o) + 1, a), F((o) + 2, a), F((o) + 3, a)
#define LANES8(F, a, o) LANES4(F, a, o), LANES4(F, a, (o) + 4)
#define LANES16(F, a, o) LANES8(F, a, o), LANES8(F, a, (o) + 8)
#if VW == 16
#define LANES(F, a) LANES16(F, a, 0)
#elif VW == 8
#define LANES(F, a) LANES8(F, a, 0)
#else
#define LANES(F, a) LANES4(F, a, 0)
#endif

static inline Vec vload(const float *p) { return *(const VecU *)p; }
static inline void vstore(float *p, Vec v) { *(VecU *)p = v; }
/* NOTE: an initializer of VW copies (LANES below), which GCC turns into one broadcast; a
 * loop over the lanes became a chain of lane inserts (measured 2x on the P·V product). */
#define SPLAT_LANE(l, x) (x)
static inline Vec vsplat(float x) { return (Vec){LANES(SPLAT_LANE, x)}; }

/* The first n < VW lanes; the others read as 0 / left untouched (tails of odd dims). */
static inline Vec vload_part(const float *p, int64_t n) {
    Vec v = vsplat(0.0f);
    for (int64_t i = 0; i < n; i++) v[i] = p[i];
    return v;
}
static inline void vstore_part(float *p, Vec v, int64_t n) {
    for (int64_t i = 0; i < n; i++) p[i] = v[i];
}

#if !defined(VEC_GENERIC) && VW == 16
static inline Vec vfma(Vec a, Vec b, Vec c) { return (Vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }
#elif !defined(VEC_GENERIC) && VW == 8
static inline Vec vfma(Vec a, Vec b, Vec c) { return (Vec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#else
static inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
#endif

#if defined(__FMA__) || defined(__AVX512F__)
#define FMAF(a, b, c) fmaf(a, b, c)
#else
#define FMAF(a, b, c) ((a) * (b) + (c))
#endif

#include "kernels/cpu/vexp2.h" /* vexp2: needs Vec, Veci, Vecu, vsplat, vfma above */

/* ---- horizontal sums of VW accumulators: lane a of the result = Σ lanes of acc[a] ----
 * A transposition tree of log2(VW) levels. Level w (w = VW/2, …, 1) pairs vectors u, v
 * holding partial sums in segments of 2w lanes and halves each segment:
 * out segment s (w lanes) = (s odd ? v : u) [segment s>>1, first half + second half].
 * Pairing vector i with i + count/2 leaves the sums in natural order. Every accumulator
 * goes through the same add tree whatever its index. */
#define SHUF_LO(l, w) ((((l) / (w)) >> 1) * 2 * (w) + (l) % (w) + (((l) / (w)) & 1) * VW)
#define SHUF_HI(l, w) (SHUF_LO(l, w) + (w))
#define MASK(F, w) ((Veci){LANES(F, w)})
#define HSUM_LEVEL(w)                                                                   \
    for (int i = 0; i < cnt / 2; i++)                                                    \
        acc[i] = __builtin_shuffle(acc[i], acc[i + cnt / 2], MASK(SHUF_LO, w)) +          \
                 __builtin_shuffle(acc[i], acc[i + cnt / 2], MASK(SHUF_HI, w));           \
    cnt /= 2;

static inline __attribute__((always_inline)) Vec hsum(Vec acc[VW]) {
    int cnt = VW;
#if VW == 16
    HSUM_LEVEL(8)
#endif
#if VW >= 8
    HSUM_LEVEL(4)
#endif
    HSUM_LEVEL(2)
    HSUM_LEVEL(1)
    (void)cnt;
    return acc[0];
}

/* ---- dots: C[i·ldc + j] = X_i · Y_j over len, i < nx, j < ny ---- */

static inline __attribute__((always_inline)) Vec dot_block(const float *const x[DA], const float *const y[DB],
                                                           int64_t len) {
    Vec acc[VW];
    for (int a = 0; a < VW; a++) acc[a] = vsplat(0.0f);
    int64_t d = 0;
    for (; d + VW <= len; d += VW) {
        Vec xv[DA], yv[DB];
        for (int i = 0; i < DA; i++) xv[i] = vload(x[i] + d);
        for (int j = 0; j < DB; j++) yv[j] = vload(y[j] + d);
        for (int i = 0; i < DA; i++)
            for (int j = 0; j < DB; j++) acc[i * DB + j] = vfma(xv[i], yv[j], acc[i * DB + j]);
    }
    if (d < len) { /* zero-filled tail: adds exact zeros */
        Vec xv[DA], yv[DB];
        for (int i = 0; i < DA; i++) xv[i] = vload_part(x[i] + d, len - d);
        for (int j = 0; j < DB; j++) yv[j] = vload_part(y[j] + d, len - d);
        for (int i = 0; i < DA; i++)
            for (int j = 0; j < DB; j++) acc[i * DB + j] = vfma(xv[i], yv[j], acc[i * DB + j]);
    }
    return hsum(acc);
}

/* Blocks past nx or ny repeat the last row (computed, never stored). Key blocks outer:
 * the DB key rows of a block stay in L1 while every head block passes over them. */
static void dots(float *restrict C, int64_t ldc, const float *const *x, int64_t nx, const float *const *y, int64_t ny,
                 int64_t len) {
    for (int64_t j0 = 0; j0 < ny; j0 += DB) {
        const int64_t my = ny - j0 < DB ? ny - j0 : DB;
        const float *yp[DB];
        for (int j = 0; j < DB; j++) yp[j] = y[j0 + (j < my ? j : my - 1)];
        for (int64_t i0 = 0; i0 < nx; i0 += DA) {
            const int64_t mx = nx - i0 < DA ? nx - i0 : DA;
            const float *xp[DA];
            for (int i = 0; i < DA; i++) xp[i] = x[i0 + (i < mx ? i : mx - 1)];
            float r[VW];
            vstore(r, dot_block(xp, yp, len));
            for (int64_t i = 0; i < mx; i++)
                for (int64_t j = 0; j < my; j++) C[(i0 + i) * ldc + j0 + j] = r[i * DB + j];
        }
    }
}

/* ---- axpys: c[i][col + u] (+)= Σ_{k<K} A[i·sai + k·sak] · b[k][col + u] ---- */

/* AR rows (mr valid; the others repeat row mr−1 and are not stored) × nv whole vectors. */
static inline __attribute__((always_inline)) void axpy_block(float *const *c, int64_t mr, const float *A, int64_t sai,
                                                             int64_t sak, const float *const *b, int64_t K,
                                                             int64_t col, bool acc, const int nv) {
    const float *a[AR];
    for (int r = 0; r < AR; r++) a[r] = A + (r < mr ? r : mr - 1) * sai;
    Vec s[AR][AN];
    for (int r = 0; r < AR; r++)
        for (int u = 0; u < nv; u++) s[r][u] = vsplat(0.0f);
    for (int64_t k = 0; k < K; k++) {
        Vec bv[AN];
        for (int u = 0; u < nv; u++) bv[u] = vload(b[k] + col + u * VW);
        for (int r = 0; r < AR; r++) {
            const Vec x = vsplat(a[r][k * sak]);
            for (int u = 0; u < nv; u++) s[r][u] = vfma(x, bv[u], s[r][u]);
        }
    }
    for (int r = 0; r < AR; r++)
        if (r < mr)
            for (int u = 0; u < nv; u++) {
                float *p = c[r] + col + u * VW;
                vstore(p, acc ? vload(p) + s[r][u] : s[r][u]);
            }
}

/* Columns [col0, col0 + ncols) of C rows c[0..m). Columns past the last whole vector:
 * scalar chains with the same operation order as a vector lane. */
static void axpys(float *const *c, int64_t m, const float *A, int64_t sai, int64_t sak, const float *const *b,
                  int64_t K, int64_t col0, int64_t ncols, bool acc) {
    const int64_t whole = ncols / VW * VW;
    for (int64_t j = 0; j < whole; j += AN * VW) {
        const int64_t nv = (whole - j) / VW < AN ? (whole - j) / VW : AN;
        for (int64_t i0 = 0; i0 < m; i0 += AR) {
            const int64_t mr = m - i0 < AR ? m - i0 : AR;
            const float *Ai = A + i0 * sai;
            /* constant vector counts, so that the block loops unroll (AN ≤ 4) */
            if (nv == AN)
                axpy_block(c + i0, mr, Ai, sai, sak, b, K, col0 + j, acc, AN);
            else if (nv == 1)
                axpy_block(c + i0, mr, Ai, sai, sak, b, K, col0 + j, acc, 1);
            else if (nv == 2)
                axpy_block(c + i0, mr, Ai, sai, sak, b, K, col0 + j, acc, AN < 2 ? AN : 2);
            else
                axpy_block(c + i0, mr, Ai, sai, sak, b, K, col0 + j, acc, AN < 3 ? AN : 3);
        }
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = col0 + whole; j < col0 + ncols; j++) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) s = FMAF(A[i * sai + k * sak], b[k][j], s);
            c[i][j] = acc ? c[i][j] + s : s;
        }
}

/* ---- shape ---- */

typedef struct {
    int64_t L, H, Dq, Dv, K, N;
    float scale;
} Dims;

static Dims dims_check(const DsaSparseAttnShape *sh) {
    DSA_ASSERT(sh->batch >= 0 && sh->seq_len >= 0 && sh->heads >= 0 && sh->topk >= 0);
    DSA_ASSERT(sh->qk_dim >= 1 && sh->v_dim >= 1 && sh->v_dim <= sh->qk_dim);
    DSA_ASSERT(sh->scale > 0.0f);
    const Dims d = {sh->seq_len, sh->heads, sh->qk_dim, sh->v_dim, sh->topk, sh->batch * sh->seq_len, sh->scale};
    DSA_ASSERT(d.N < ((int64_t)1 << (32 - KB_MAX_BITS))); /* CSR entries: row << KB_MAX_BITS | key */
    return d;
}

/* ---- forward (DSA-SPEC §4.2; §8.2 pass F2) ---- */

/* One chunk of c ≤ BK valid keys kp[] for heads qp[0..hg): scores, online softmax
 * update of (m, l) in log2 units, out rows op[] rescaled and += P·K[:Dv]. */
static void forward_chunk(float *restrict st, float *const *op, const float *const *qp, int64_t hg,
                          const float *const *kp, int64_t c, bool first, float *m, float *l, const Dims *d) {
    dots(st, BK, qp, hg, kp, c, d->Dq); /* st[h][j] = q_h · K_j */
    const float c2 = dsa_softmax_log2_scale(d->scale);
    float corr[HG];
    for (int64_t h = 0; h < hg; h++) {
        float *restrict row = st + h * BK;
        float mx = m[h];
        for (int64_t j = 0; j < c; j++) {
            row[j] *= c2; /* a · log2 e */
            mx = dsa_softmax_max(row[j], mx);
        }
        const Vec vm = vsplat(mx);
        int64_t j = 0;
        for (; j + VW <= c; j += VW) vstore(row + j, vexp2(vload(row + j) - vm));
        if (j < c) vstore_part(row + j, vexp2(vload_part(row + j, c - j) - vm), c - j);
        float sum = 0.0f;
        for (j = 0; j < c; j++) sum += row[j];
        corr[h] = dsa_softmax_corr(m[h], mx); /* 0 on the first chunk (m = −inf) */
        l[h] = l[h] * corr[h] + sum;
        m[h] = mx;
    }
    if (!first)
        for (int64_t h = 0; h < hg; h++)
            for (int64_t x = 0; x < d->Dv; x++) op[h][x] *= corr[h];
    axpys(op, hg, st, BK, 1, kp, c, 0, d->Dv, !first); /* out_h (+)= Σ_j P_hj K_j[:Dv] */
}

void dsa_cpu_sparse_attention_forward(float *out, float *lse, const float *q, const float *kv, const int32_t *idx,
                                      const DsaSparseAttnShape *shape) {
    const Dims d = dims_check(shape);
    const int64_t L = d.L, H = d.H, Dq = d.Dq, Dv = d.Dv, K = d.K;
#pragma omp parallel
    {
        _Alignas(64) float st[HG * BK];
        const float *kp[BK], *qp[HG];
        float *op[HG];
        float m[HG], l[HG];
#pragma omp for schedule(dynamic, 4)
        for (int64_t n = 0; n < d.N; n++) {
            const int64_t b = n / L, t = n % L;
            const int32_t *row = idx + n * K;
            for (int64_t h0 = 0; h0 < H; h0 += HG) {
                const int64_t hg = H - h0 < HG ? H - h0 : HG;
                for (int64_t h = 0; h < hg; h++) {
                    qp[h] = q + (n * H + h0 + h) * Dq, op[h] = out + (n * H + h0 + h) * Dv;
                    m[h] = -INFINITY, l[h] = 0.0f;
                }
                int64_t c = 0;
                bool first = true;
                for (int64_t i = 0; i < K; i++) {
                    const int32_t s = row[i];
                    if (s < 0) continue;
                    DSA_ASSERT(s < L);
                    kp[c++] = kv + (b * L + s) * Dq;
                    if (c == BK) forward_chunk(st, op, qp, hg, kp, c, first, m, l, &d), first = false, c = 0;
                }
                if (c > 0) forward_chunk(st, op, qp, hg, kp, c, first, m, l, &d), first = false;
                for (int64_t h = 0; h < hg; h++) {
                    float *lrow = lse + (b * H + h0 + h) * L + t;
                    if (first) { /* no valid key */
                        memset(op[h], 0, sizeof(float) * (size_t)Dv);
                        *lrow = DSA_SOFTMAX_EMPTY_LSE;
                        continue;
                    }
                    const float inv = dsa_softmax_inv(l[h]);
                    for (int64_t x = 0; x < Dv; x++) op[h][x] *= inv;
                    *lrow = dsa_softmax_lse(m[h], l[h]);
                }
            }
        }
    }
}

/* ---- backward (DSA-SPEC §4.2; §8.2 pass B) ---- */

/* Scratch layout: D [N·H] floats, then the CSR: off [nblk + 1] and the per-chunk cursors
 * cur [NCHUNK · nblk] (int64), then entries [N·topk] (uint32: row << KB_MAX_BITS | key's
 * place in its block). nblk = batch · ceil(L / KB), sized for the smallest KB. */
typedef struct {
    float *D;
    int64_t *off, *cur;
    uint32_t *ent;
    int64_t kb, nkb, nblk; /* key block size, blocks per sequence, blocks in all */
} Scratch;

static size_t round64(size_t x) { return (x + 63) / 64 * 64; }

static Scratch scratch_layout(const DsaSparseAttnShape *sh, void *base, size_t *bytes) {
    const int64_t N = sh->batch * sh->seq_len, kmin = (int64_t)1 << KB_MIN_BITS;
    const int64_t nblk = sh->batch * ((sh->seq_len + kmin - 1) / kmin);
    const size_t sD = round64(sizeof(float) * (size_t)(N * sh->heads));
    const size_t sOff = round64(sizeof(int64_t) * (size_t)(nblk + 1));
    const size_t sCur = round64(sizeof(int64_t) * (size_t)(NCHUNK * nblk));
    const size_t sEnt = sizeof(uint32_t) * (size_t)(N * sh->topk);
    *bytes = sD + sOff + sCur + sEnt;
    char *p = base;
    Scratch s = {0};
    if (p) {
        s.D = (float *)p, s.off = (int64_t *)(p + sD), s.cur = (int64_t *)(p + sD + sOff);
        s.ent = (uint32_t *)(p + sD + sOff + sCur);
    }
    /* the largest block with ≥ 8 blocks per thread */
    s.kb = (int64_t)1 << KB_MAX_BITS;
    const int64_t want = 8 * (int64_t)omp_get_max_threads();
    while (s.kb > kmin && sh->batch * ((sh->seq_len + s.kb - 1) / s.kb) < want) s.kb /= 2;
    s.nkb = (sh->seq_len + s.kb - 1) / s.kb, s.nblk = sh->batch * s.nkb;
    return s;
}

int64_t dsa_cpu_sparse_attention_scratch_bytes(const DsaSparseAttnShape *shape) {
    size_t bytes;
    scratch_layout(shape, NULL, &bytes);
    return (int64_t)bytes;
}

/* The transposed index: for key block B (sequence b, positions [B'·KB, B'·KB + KB)), the
 * entries off[B] … off[B+1] list every (row n, key) with idx[n, i] in that block, sorted
 * by n, then by slot i. A counting sort over NCHUNK fixed chunks of rows: count per
 * (chunk, block), one prefix sum in (block, chunk) order, then every chunk fills its own
 * cursors; the order is that of a serial sort whatever the thread count. */
static void csr_build(const Scratch *s, const int32_t *idx, const Dims *d) {
    const int64_t N = d->N, L = d->L, K = d->K, nblk = s->nblk;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < NCHUNK; c++) {
        int64_t *cnt = s->cur + c * nblk;
        memset(cnt, 0, sizeof(int64_t) * (size_t)nblk);
        for (int64_t n = N * c / NCHUNK; n < N * (c + 1) / NCHUNK; n++) {
            const int64_t base = (n / L) * s->nkb;
            for (int64_t i = 0; i < K; i++) {
                const int32_t key = idx[n * K + i];
                if (key < 0) continue;
                DSA_ASSERT(key < L);
                cnt[base + key / s->kb]++;
            }
        }
    }
    int64_t run = 0;
    for (int64_t blk = 0; blk < nblk; blk++) {
        s->off[blk] = run;
        for (int64_t c = 0; c < NCHUNK; c++) {
            const int64_t k = s->cur[c * nblk + blk];
            s->cur[c * nblk + blk] = run;
            run += k;
        }
    }
    s->off[nblk] = run;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < NCHUNK; c++) {
        int64_t *cur = s->cur + c * nblk;
        for (int64_t n = N * c / NCHUNK; n < N * (c + 1) / NCHUNK; n++) {
            const int64_t base = (n / L) * s->nkb;
            for (int64_t i = 0; i < K; i++) {
                const int32_t key = idx[n * K + i];
                if (key >= 0) s->ent[cur[base + key / s->kb]++] = (uint32_t)n << KB_MAX_BITS | (uint32_t)(key % s->kb);
            }
        }
    }
}

/* dot of two rows in a fixed order (vector lanes, then lanes in order, then the tail). */
static float dot_row(const float *x, const float *y, int64_t len) {
    Vec acc = vsplat(0.0f);
    int64_t i = 0;
    for (; i + VW <= len; i += VW) acc = vfma(vload(x + i), vload(y + i), acc);
    float s = 0.0f;
    for (int u = 0; u < VW; u++) s += acc[u];
    for (; i < len; i++) s = FMAF(x[i], y[i], s);
    return s;
}

/* Query-side data of one row n and head group [h0, h0 + hg). */
typedef struct {
    const float *qp[HG], *gp[HG]; /* q_{n,h} (Dq), g_{n,h} = dout (Dv) */
    float lse2[HG], Dn[HG];       /* lse · log2 e, D_{n,h} */
    int64_t hg;
} RowHeads;

static void row_heads(RowHeads *r, int64_t n, int64_t h0, const float *q, const float *dout, const float *lse,
                      const float *D, const Dims *d) {
    const int64_t b = n / d->L, t = n % d->L, H = d->H;
    r->hg = H - h0 < HG ? H - h0 : HG;
    for (int64_t h = 0; h < r->hg; h++) {
        r->qp[h] = q + (n * H + h0 + h) * d->Dq, r->gp[h] = dout + (n * H + h0 + h) * d->Dv;
        r->lse2[h] = lse[(b * H + h0 + h) * d->L + t] * LOG2E;
        r->Dn[h] = D[n * H + h0 + h];
    }
}

/* The gradient tile of one row's head group and c ≤ BK keys kp[]: T is [2·HG][BK];
 * rows 0..hg hold dS[h][j] = τ P (dP − D) and rows hg..2hg hold P[h][j] = exp(a − lse),
 * so that A(i = key, k) = T[k·BK + i] is [dS | P] for the key pass's dkv update. */
static void grad_tile(float *restrict T, const RowHeads *r, const float *const *kp, int64_t c, const Dims *d) {
    const int64_t hg = r->hg;
    dots(T + hg * BK, BK, r->qp, hg, kp, c, d->Dq); /* q_h · K_j */
    dots(T, BK, r->gp, hg, kp, c, d->Dv);           /* dP = g_h · K_j[:Dv] */
    const Vec c2 = vsplat(dsa_softmax_log2_scale(d->scale)), tau = vsplat(d->scale);
    for (int64_t h = 0; h < hg; h++) {
        float *restrict ps = T + (hg + h) * BK, *restrict ds = T + h * BK;
        const Vec l2 = vsplat(r->lse2[h]), Dh = vsplat(r->Dn[h]);
        for (int64_t j = 0; j < c; j += VW) {
            const int64_t w = c - j < VW ? c - j : VW;
            const Vec p = vexp2(vload_part(ps + j, w) * c2 - l2); /* P = 2^(a·log2 e − lse·log2 e) */
            const Vec g = p * (vload_part(ds + j, w) - Dh) * tau; /* dS = τ P (dP − D) */
            if (w == VW)
                vstore(ps + j, p), vstore(ds + j, g);
            else
                vstore_part(ps + j, p, w), vstore_part(ds + j, g, w);
        }
    }
}

void dsa_cpu_sparse_attention_backward(float *dq, float *dkv, const float *dout, const float *out, const float *lse,
                                       const float *q, const float *kv, const int32_t *idx,
                                       const DsaSparseAttnShape *shape, void *scratch) {
    const Dims d = dims_check(shape);
    const int64_t L = d.L, H = d.H, Dq = d.Dq, Dv = d.Dv, K = d.K, N = d.N;
    if (N == 0) return;
    size_t bytes;
    const Scratch s = scratch_layout(shape, scratch, &bytes);
    DSA_ASSERT(scratch != NULL && (uintptr_t)scratch % 8 == 0);

    /* 1. D_{n,h} = g_{n,h} · out_{n,h} */
#pragma omp parallel for schedule(static)
    for (int64_t nh = 0; nh < N * H; nh++) s.D[nh] = dot_row(dout + nh * Dv, out + nh * Dv, Dv);

    csr_build(&s, idx, &d);

#pragma omp parallel
    {
        _Alignas(64) float T[2 * HG * BK];
        const float *kp[BK];
        float *cp[BK];
        const float *bp[2 * HG];
        RowHeads r;

        /* 2. row pass: dq_{n,h} = Σ_j dS_hj K_j, chunks of BK valid keys in slot order */
#pragma omp for schedule(dynamic, 4) nowait
        for (int64_t n = 0; n < N; n++) {
            const int64_t b = n / L;
            const int32_t *row = idx + n * K;
            for (int64_t h0 = 0; h0 < H; h0 += HG) {
                row_heads(&r, n, h0, q, dout, lse, s.D, &d);
                float **dqp = cp; /* (HG ≤ BK pointers) */
                for (int64_t h = 0; h < r.hg; h++) {
                    dqp[h] = dq + (n * H + h0 + h) * Dq;
                    memset(dqp[h], 0, sizeof(float) * (size_t)Dq);
                }
                int64_t c = 0;
                for (int64_t i = 0; i <= K; i++) {
                    if (i < K && row[i] >= 0) kp[c++] = kv + (b * L + row[i]) * Dq;
                    if (c == BK || (i == K && c > 0)) {
                        grad_tile(T, &r, kp, c, &d);
                        axpys(dqp, r.hg, T, BK, 1, kp, c, 0, Dq, true);
                        c = 0;
                    }
                }
            }
        }

        /* 3. key pass: dkv of one key block, from the rows that selected its keys in
         * ascending row order. A run = the keys of the block selected by one row (split
         * into tiles of BK keys). */
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < s.nblk; blk++) {
            const int64_t b = blk / s.nkb, s0 = (blk % s.nkb) * s.kb, nk = L - s0 < s.kb ? L - s0 : s.kb;
            float *dblk = dkv + (b * L + s0) * Dq;
            const float *kblk = kv + (b * L + s0) * Dq;
            memset(dblk, 0, sizeof(float) * (size_t)(nk * Dq));
            for (int64_t e = s.off[blk]; e < s.off[blk + 1];) {
                const int64_t n = s.ent[e] >> KB_MAX_BITS;
                int64_t m = 0;
                for (; e < s.off[blk + 1] && (s.ent[e] >> KB_MAX_BITS) == n && m < BK; e++, m++) {
                    const int64_t j = s.ent[e] & ((1u << KB_MAX_BITS) - 1);
                    kp[m] = kblk + j * Dq, cp[m] = dblk + j * Dq;
                }
                for (int64_t h0 = 0; h0 < H; h0 += HG) {
                    row_heads(&r, n, h0, q, dout, lse, s.D, &d);
                    grad_tile(T, &r, kp, m, &d);
                    for (int64_t h = 0; h < r.hg; h++) bp[h] = r.qp[h], bp[r.hg + h] = r.gp[h];
                    /* dkv_j[:Dv] += Σ_h dS_hj q_h[:Dv] + P_hj g_h;  dkv_j[Dv:] += Σ_h dS_hj q_h[Dv:] */
                    axpys(cp, m, T, 1, BK, bp, 2 * r.hg, 0, Dv, true);
                    if (Dq > Dv) axpys(cp, m, T, 1, BK, bp, r.hg, Dv, Dq - Dv, true);
                }
            }
        }
    }
}
