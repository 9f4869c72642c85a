/* test_cuda_indexer.c: the CUDA indexer entries (kernels/cuda/indexer.cu, indexer_topk.cu;
 * DSA-SPEC §5, §7) against the CPU reference entries, and the host logic of the CUDA top-k.
 *
 * Always run, GPU or not (they cannot skip):
 *  - the registry: a backend named "cuda" gets the CUDA table where built, an error elsewhere;
 *  - the selection order as one 64-bit key (kernels/rules/topk_order.h dsa_topk_order_key)
 *    against dsa_topk_worse on ±0, ±inf, subnormals, FLT_MAX and equal scores, and its inverse;
 *  - the CUDA top-k algorithm (kernels/cuda/topk_select.h: plan, threshold, radix descent,
 *    cuts) run on one host thread, with tiles of 1, 3 and 256 keys, against dsa_indexer_topk
 *    bit for bit on random, tied, all-zero, ascending (every key survives) and extreme rows,
 *    k below, equal to and above L, L = 1.
 * On a CUDA device (dsa_backend_get("cuda"); they skip, saying why, where it fails), memory
 * only through be->alloc / upload / download:
 *  - FP8: codes, scales and dequantized values identical to indexer/fp8.c on groups of 16 …
 *    256 values at scale extremes (1e-45 … 3e38), zeros, NaN and the DSA-SPEC §5.2 table;
 *  - forward on projection-exact inputs (values whose GEMMs are exact in any summation order
 *    and in bf16/TF32 too), at scales 2^-100, 1 and 2^40, FP8 on and off: q̂, k̂, w, k_norm,
 *    k_rstd bit-identical to the CPU;
 *  - forward on random inputs: FP8 off within 1e-5 of the max (fp32 GEMM order), FP8 on: at
 *    least 99% of the values bit-identical and every other within one e4m3 step;
 *  - top-k on the same adversarial rows as above: indices and scores bit-identical;
 *  - backward from the CPU's saved state: the LayerNorm input gradient and the rotated ∂q̂
 *    bit-identical, parameter gradients accumulated (+=) within 1e-5 (projections; GEMM
 *    order) and 1e-6 (k_norm; chunked double sums);
 *  - run-to-run: forward, top-k and backward twice give the same bits.
 */
#include <float.h>

#include "indexer/fp8.h"
#include "indexer/indexer.h"
#include "kernels/cuda/topk_select.h"
#include "kernels/rules/index_score.h"
#include "kernels/rules/topk_order.h"
#ifdef DSA_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif
#include "test_cuda_indexer_util.h"

/* ---------------------------------------------------------------- order key */

static void test_order_key(void **state) {
    (void)state;
    const float sc[] = {-INFINITY, -FLT_MAX, -1.5f, -1.0f, -FLT_MIN, -0x1p-149f, -0.0f, 0.0f, 0x1p-149f,
                        FLT_MIN,   0.25f,    1.0f,  nextafterf(1.0f, 2.0f), FLT_MAX, INFINITY};
    const int32_t ix[] = {0, 1, 2, 255, 256, 65537, 2147483647};
    const int ns = (int)(sizeof sc / sizeof sc[0]), ni = (int)(sizeof ix / sizeof ix[0]);
    for (int a = 0; a < ns * ni; a++) {
        const DsaTopkCand ca = {sc[a / ni], ix[a % ni]};
        const uint64_t ka = dsa_topk_order_key(ca.score, ca.index);
        const DsaTopkCand back = dsa_topk_order_cand(ka);
        assert_int_equal(back.index, ca.index);
        assert_true(back.score == ca.score && !signbit(back.score) == !(signbit(ca.score) && ca.score != 0.0f));
        assert_true(ka > 0); /* 0 pads the sort below every real candidate */
        for (int b = 0; b < ns * ni; b++) {
            const DsaTopkCand cb = {sc[b / ni], ix[b % ni]};
            const uint64_t kb = dsa_topk_order_key(cb.score, cb.index);
            if (ka > kb) assert_true(dsa_topk_worse(cb, ca));
            if (ka < kb) assert_true(dsa_topk_worse(ca, cb));
            if (ka == kb) assert_true(ca.index == cb.index && ca.score == cb.score); /* −0 == +0 */
        }
    }
}

/* ---------------------------------------------------------------- the top-k algorithm on the host */

/* The CUDA top-k's algorithm on one host thread (kernels/cuda/topk_select.h), row n. */
typedef struct {
    uint64_t key;
    float score; /* beside its key, as on the device (the key maps −0.0 to +0.0) */
} Slot;

static int64_t emulate_cut(Slot *list, int64_t count, const DsaCudaTopkPlan *p, uint64_t *thr, bool *have) {
    if (count <= p->keep) return count;
    uint64_t prefix = 0, mask = 0;
    uint32_t rank = (uint32_t)p->keep, hist[DSA_CUDA_TOPK_BINS];
    for (int shift = 56; shift >= 0; shift -= 8) {
        memset(hist, 0, sizeof hist);
        for (int64_t i = 0; i < count; i++)
            if ((list[i].key & mask) == prefix) hist[(list[i].key >> shift) & 0xff]++;
        prefix |= (uint64_t)dsa_topk_radix_digit(hist, &rank) << shift;
        mask |= (uint64_t)0xff << shift;
    }
    int64_t kept = 0, above = 0;
    for (int64_t i = 0; i < count; i++) above += list[i].key > prefix;
    assert_int_equal(above, p->keep - 1); /* prefix is exactly the keep-th largest */
    for (int64_t i = 0; i < count; i++)
        if (list[i].key >= prefix) list[kept++] = list[i];
    *thr = prefix, *have = true;
    return kept;
}

static int desc_key(const void *a, const void *b) {
    uint64_t x = ((const Slot *)a)->key, y = ((const Slot *)b)->key;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void emulate_topk(int32_t *idx, float *scores, const TopkCase *c, int64_t tile) {
    const DsaIndexerShape *s = &c->sh;
    const int64_t L = s->seq_len, K = s->topk, HI = s->heads, dI = s->head_dim;
    const DsaCudaTopkPlan p = dsa_cuda_topk_plan(K, L, HI, dI, tile);
    Slot *list = malloc((size_t)p.capacity * sizeof *list);
    assert_non_null(list);
    for (int64_t n = 0; n < s->batch * L; n++) {
        const int64_t t = n % L, row0 = n - t;
        int64_t count = 0;
        uint64_t thr = 0;
        bool have = false;
        for (int64_t s0 = 0; s0 <= t; s0 += tile) {
            for (int64_t j = s0; j < s0 + tile && j <= t; j++) {
                const float sc = dsa_index_score(c->a.q + n * HI * dI, c->a.w + n * HI, c->a.k + (row0 + j) * dI, HI,
                                                 dI, s->scale, t, j);
                const uint64_t key = dsa_topk_order_key(sc, (int32_t)j);
                if (!have || key > thr) list[count++] = (Slot){key, sc};
            }
            assert_true(count <= p.capacity);
            if (dsa_cuda_topk_must_cut(&p, count)) count = emulate_cut(list, count, &p, &thr, &have);
        }
        count = emulate_cut(list, count, &p, &thr, &have);
        qsort(list, (size_t)count, sizeof *list, desc_key);
        for (int64_t j = 0; j < K; j++) {
            const int64_t fill = j < count;
            DsaTopkCand cand = fill ? dsa_topk_order_cand(list[j].key) : (DsaTopkCand){0.0f, 0};
            if (fill) cand.score = list[j].score;
            idx[n * K + j] = dsa_topk_slot_index(&cand, fill, 0);
            scores[n * K + j] = dsa_topk_slot_score(&cand, fill, 0);
        }
    }
    free(list);
}

/* Every adversarial case at (L, K) through `run` (host emulation or device) against the CPU. */
typedef void (*TopkRun)(int32_t *idx, float *sc, const TopkCase *c, void *ctx);

static void each_topk_case(TopkRun run, void *ctx) {
    static const int64_t shapes[][3] = {{1, 1, 1},  {1, 4, 1},  {2, 37, 5},  {1, 37, 37},
                                        {1, 37, 50}, {2, 300, 16}, {1, 600, 7}, {1, 513, 600}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int kind = 0; kind < CASE_KINDS; kind++) {
            TopkCase c = topk_case(kind, shapes[si][0], shapes[si][1], shapes[si][2], 100 + si * 10 + (uint64_t)kind);
            const int64_t n = c.sh.batch * c.sh.seq_len * c.sh.topk;
            int32_t *ri = calloc((size_t)n, sizeof *ri), *gi = calloc((size_t)n, sizeof *gi);
            float *rs = test_falloc(n), *gs = test_falloc(n);
            assert_non_null(ri), assert_non_null(gi);
            assert_ok(dsa_indexer_topk(ri, rs, &c.a, &c.sh));
            run(gi, gs, &c, ctx);
            expect_same_topk(c.what, gi, gs, ri, rs, &c.sh);
            free(ri), free(gi), free(rs), free(gs), free(c.buf);
        }
}

static void run_emulated(int32_t *idx, float *sc, const TopkCase *c, void *ctx) {
    emulate_topk(idx, sc, c, *(const int64_t *)ctx);
}

static void test_topk_algorithm_on_host(void **state) {
    (void)state;
    static const int64_t tiles[] = {1, 3, DSA_CUDA_TOPK_TILE};
    for (int i = 0; i < 3; i++) each_topk_case(run_emulated, (void *)&tiles[i]);
}

static void test_topk_plan(void **state) {
    (void)state;
    /* V3.2's indexer (64 × 128, k 2048) at 128K: 2·2048 + 256 keys, q row, w row, histogram */
    const DsaCudaTopkPlan p = dsa_cuda_topk_plan(2048, 131072, 64, 128, DSA_CUDA_TOPK_TILE);
    assert_int_equal(p.keep, 2048);
    assert_int_equal(p.capacity, 4352);
    assert_int_equal(p.shared_bytes, 4352 * 12 + (64 * 128 + 64) * 4 + 256 * 4);
    assert_true(p.shared_bytes < 227 * 1024); /* fits sm_90's opt-in shared memory per block */
    const DsaCudaTopkPlan q = dsa_cuda_topk_plan(50, 37, 1, 1, 256); /* k > L keeps L */
    assert_int_equal(q.keep, 37);
    assert_true(dsa_cuda_pow2_at_least(37) == 64 && dsa_cuda_pow2_at_least(q.keep) <= q.capacity); /* the sort fits */
    assert_false(dsa_cuda_topk_must_cut(&q, q.capacity - q.tile));
    assert_true(dsa_cuda_topk_must_cut(&q, q.capacity - q.tile + 1));
}

/* The registry (indexer/ops.c) hands a backend named "cuda" the CUDA table where built. */
static void test_registry(void **state) {
    (void)state;
    DsaBackend named_cuda = *dsa_backend_cpu();
    named_cuda.name = "cuda";
    const DsaIndexerOps *ops = NULL;
#ifdef DSA_HAVE_CUDA
    assert_ok(dsa_indexer_ops_get(&named_cuda, &ops));
    assert_string_equal(ops->name, "cuda");
    assert_true(ops == dsa_indexer_ops_cuda());
    assert_true(ops->forward == dsa_cuda_indexer_forward && ops->topk == dsa_cuda_indexer_topk &&
                ops->backward == dsa_cuda_indexer_backward);
#else
    assert_fails_with(dsa_indexer_ops_get(&named_cuda, &ops), DSA_ERR_DEVICE, "has no indexer entries");
#endif
    assert_ok(dsa_indexer_ops_get(dsa_backend_cpu(), &ops));
    assert_true(ops == dsa_indexer_ops_cpu());
}

/* ---------------------------------------------------------------- on a CUDA device */

static void test_cuda_fp8(void **state) {
    (void)state;
    const DsaBackend *be = cuda_backend_or_skip();
#ifdef DSA_HAVE_CUDA
    static const float table[6][4] = {{1.0f, 0.3f, 0.01f, -0.5f}, {448.0f, 1.0f, -3.3f}, {450.0f, 0.7f},
                                      {7.0f, 100.0f},             {1e-5f, -2e-5f},        {0}};
    static const int64_t widths[] = {16, 128, 256};
    for (int wi = 0; wi < 3; wi++) {
        const int64_t d = widths[wi], count = 14, n = d * count, g = dsa_fp8_group_size(d);
        float *v = test_falloc(n), *deq = test_falloc(n), *sc = test_falloc(n / g);
        uint8_t *codes = calloc((size_t)n, 1);
        DsaRng r = dsa_rng_init(7 + (uint64_t)wi, 1);
        for (int64_t c = 0; c < count; c++) {
            static const float mags[8] = {1e-30f, 1e-45f, 1e30f, 1.5e38f, 1.0f, 1e-4f, 2.2e-3f, 3e38f};
            for (int64_t e = 0; e < d; e++)
                v[c * d + e] = c < 6 ? (e < 4 ? table[c][e] : 0.0f) : mags[c - 6] * (float)dsa_rng_normal(&r);
        }
        v[10 * d + 3] = NAN, v[11 * d + d - 1] = INFINITY, v[12 * d + 1] = -0.0f; /* NaN, inf, −0 groups */
        for (int64_t e = 0; e < d; e++) v[13 * d + e] = e % 2 ? 448.0f : -448.0f * 0x1p-60f; /* one group at 448 */
        dsa_fp8_quantize(codes, sc, deq, v, n, g);
        float *dv = dput(be, v, 4 * (size_t)n), *ddeq = dput(be, NULL, 4 * (size_t)n), *dsc = dput(be, NULL, 4 * (size_t)(n / g));
        uint8_t *dcodes = dput(be, NULL, (size_t)n);
        dsa_cuda_fp8_quantize(dcodes, dsc, ddeq, dv, count, d);
        uint8_t *gc = dget(be, dcodes, (size_t)n);
        float *gd = dget(be, ddeq, 4 * (size_t)n), *gs = dget(be, dsc, 4 * (size_t)(n / g));
        for (int64_t i = 0; i < n; i++)
            if (gc[i] != codes[i])
                fail_msg("fp8 width %lld: code %lld (value %.9g): device 0x%02x, CPU 0x%02x", (long long)d, (long long)i,
                         v[i], gc[i], codes[i]);
        expect_same_bits("fp8 scales", gs, sc, n / g);
        expect_same_bits("fp8 dequantized", gd, deq, n);
        /* in place, without codes: the forward's form */
        dsa_cuda_fp8_quantize(NULL, dsc, dv, dv, count, d);
        free(gd), gd = dget(be, dv, 4 * (size_t)n);
        expect_same_bits("fp8 dequantized in place", gd, deq, n);
        be->release(dv, 4 * (size_t)n), be->release(ddeq, 4 * (size_t)n), be->release(dsc, 4 * (size_t)(n / g));
        be->release(dcodes, (size_t)n);
        free(v), free(deq), free(sc), free(codes), free(gc), free(gd), free(gs);
    }
#else
    (void)be;
    fail_msg("a CUDA backend in a build without CUDA");
#endif
}

/* CPU forward into a host buffer (returned) and device forward into *dev_acts (a device
 * buffer of the same size, returned in *dev_buf), downloaded into *gpu. */
static float *forward_both(const DsaBackend *be, const FwdCase *c, const DevCase *d, float **gpu, float **dev_buf) {
    const int64_t na = dsa_indexer_acts_floats(&c->sh);
    float *cpu = test_falloc(na);
    DsaIndexerActs a;
    dsa_indexer_acts_carve(&a, cpu, &c->sh);
    const DsaIndexerWeights W = weights(c->wt), DW = weights(d->wt);
    dsa_indexer_forward(&a, c->x, c->cq, &W, &c->sh, c->cos, c->sin, dsa_backend_cpu());
    *dev_buf = dput(be, NULL, 4 * (size_t)na);
    DsaIndexerActs da;
    dsa_indexer_acts_carve(&da, *dev_buf, &c->sh);
    cuda_indexer(be)->forward(&da, d->x, d->cq, &DW, &c->sh, d->cos, d->sin, be);
    *gpu = dget(be, *dev_buf, 4 * (size_t)na);
    return cpu;
}

/* The five parts of an acts buffer, in dsa_indexer_acts_carve's order. */
static void acts_parts(const DsaIndexerShape *s, const char **names, int64_t *len) {
    const int64_t N = s->batch * s->seq_len;
    static const char *const nm[5] = {"q̂", "k̂", "k_norm", "w", "k_rstd"};
    const int64_t l[5] = {N * s->heads * s->head_dim, N * s->head_dim, N * s->head_dim, N * s->heads, N};
    for (int i = 0; i < 5; i++) names[i] = nm[i], len[i] = l[i];
}

static void test_cuda_forward_exact(void **state) {
    (void)state;
    const DsaBackend *be = cuda_backend_or_skip();
    /* NOTE: 2^40, not more: the scores of 2^40 inputs reach ~2^104 (q̂ ~ 2^46, w ~ 2^43), and
     * at 2^64 they would overflow to ±inf and then NaN, which top-k refuses */
    static const float mags[3] = {0x1p-100f, 1.0f, 0x1p40f};
    static const int64_t dims[2][2] = {{4, 64}, {2, 128}};
    for (int di = 0; di < 2; di++)
        for (int m = 0; m < 3; m++)
            for (int fp8 = 0; fp8 < 2; fp8++) {
                FwdCase c = fwd_case(dims[di][0], dims[di][1], fp8, true, mags[m], 40 + (uint64_t)(di * 6 + m * 2 + fp8));
                DevCase d = dev_case(be, &c);
                float *gpu, *dbuf, *cpu = forward_both(be, &c, &d, &gpu, &dbuf);
                const char *nm[5];
                int64_t len[5], off = 0;
                acts_parts(&c.sh, nm, len);
                char what[96];
                for (int i = 0; i < 5; off += len[i], i++) {
                    snprintf(what, sizeof what, "exact forward %s (d_I %lld, scale 2^%d, fp8 %d)", nm[i],
                             (long long)dims[di][1], m == 0 ? -100 : m == 1 ? 0 : 40, fp8);
                    expect_same_bits(what, gpu + off, cpu + off, len[i]);
                }
                /* identical saved state: top-k identical too, at the FP8 scale extremes */
                DsaIndexerActs a, da;
                dsa_indexer_acts_carve(&a, cpu, &c.sh), dsa_indexer_acts_carve(&da, dbuf, &c.sh);
                const int64_t nk = c.sh.batch * c.sh.seq_len * c.sh.topk;
                int32_t *ri = calloc((size_t)nk, 4), *di_ = dput(be, NULL, 4 * (size_t)nk);
                float *rs = test_falloc(nk), *ds = dput(be, NULL, 4 * (size_t)nk);
                assert_ok(dsa_indexer_topk(ri, rs, &a, &c.sh));
                assert_ok(cuda_indexer(be)->topk(di_, ds, &da, &c.sh));
                int32_t *gi = dget(be, di_, 4 * (size_t)nk);
                float *gs = dget(be, ds, 4 * (size_t)nk);
                expect_same_topk("top-k of the exact forward", gi, gs, ri, rs, &c.sh);
                be->release(di_, 4 * (size_t)nk), be->release(ds, 4 * (size_t)nk);
                be->release(dbuf, 4 * (size_t)dsa_indexer_acts_floats(&c.sh));
                free(ri), free(rs), free(gi), free(gs), free(cpu), free(gpu);
                dev_case_free(be, &d, &c), fwd_case_free(&c);
            }
}

/* Random inputs: the projections are the backend's GEMMs, summed in their own order. */
static void test_cuda_forward_random(void **state) {
    (void)state;
    const DsaBackend *be = cuda_backend_or_skip();
    for (int fp8 = 0; fp8 < 2; fp8++) {
        FwdCase c = fwd_case(4, 64, fp8, false, 1.0f, 70 + (uint64_t)fp8);
        DevCase d = dev_case(be, &c);
        float *gpu, *dbuf, *cpu = forward_both(be, &c, &d, &gpu, &dbuf);
        const char *nm[5];
        int64_t len[5], off = 0;
        acts_parts(&c.sh, nm, len);
        for (int i = 0; i < 5; off += len[i], i++) {
            if (!fp8 || i >= 2) { /* fp32 GEMM order: 1e-5 of the largest value (fp32 mode, TF32 off) */
                expect_close(nm[i], gpu + off, cpu + off, len[i], 1e-5);
                continue;
            }
            /* FP8 on: a value the GEMM's rounding moves across an e4m3 rounding boundary lands one
             * step away (1/8 of its magnitude at most, or a subnormal step of its group) */
            const int64_t dI = c.sh.head_dim;
            int64_t same = 0;
            for (int64_t v = 0; v < len[i] / dI; v++) {
                float vmax = 0;
                for (int64_t e = 0; e < dI; e++) vmax = fmaxf(vmax, fabsf(cpu[off + v * dI + e]));
                for (int64_t e = 0; e < dI; e++) {
                    const float a = gpu[off + v * dI + e], b = cpu[off + v * dI + e];
                    same += a == b;
                    if (!(fabsf(a - b) <= 0.125f * fmaxf(fabsf(a), fabsf(b)) + 1e-5f * vmax))
                        fail_msg("fp8 forward %s: vector %lld value %lld: device %.9g, CPU %.9g (more than one e4m3 step)",
                                 nm[i], (long long)v, (long long)e, a, b);
                }
            }
            if (same < len[i] * 99 / 100)
                fail_msg("fp8 forward %s: only %lld of %lld values bit-identical", nm[i], (long long)same, (long long)len[i]);
        }
        /* run to run: the same bits */
        DsaIndexerActs da;
        dsa_indexer_acts_carve(&da, dbuf, &c.sh);
        const DsaIndexerWeights DW = weights(d.wt);
        cuda_indexer(be)->forward(&da, d.x, d.cq, &DW, &c.sh, d.cos, d.sin, be);
        float *again = dget(be, dbuf, 4 * (size_t)dsa_indexer_acts_floats(&c.sh));
        expect_same_bits("forward run to run", again, gpu, dsa_indexer_acts_floats(&c.sh));
        be->release(dbuf, 4 * (size_t)dsa_indexer_acts_floats(&c.sh));
        free(cpu), free(gpu), free(again);
        dev_case_free(be, &d, &c), fwd_case_free(&c);
    }
}

typedef struct {
    const DsaBackend *be;
    const DsaIndexerOps *ops;
} DeviceRun;

/* Device top-k of a case: twice (the same bits), and once without scores (the same indices). */
static void run_device(int32_t *idx, float *sc, const TopkCase *c, void *ctx) {
    const DeviceRun *r = ctx;
    const size_t na = 4 * (size_t)dsa_indexer_acts_floats(&c->sh), nk = 4 * (size_t)(c->sh.batch * c->sh.seq_len * c->sh.topk);
    float *dbuf = dput(r->be, c->buf, na), *ds = dput(r->be, NULL, nk);
    int32_t *di = dput(r->be, NULL, nk);
    DsaIndexerActs da;
    dsa_indexer_acts_carve(&da, dbuf, &c->sh);
    assert_ok(r->ops->topk(di, ds, &da, &c->sh));
    r->be->download(idx, di, nk), r->be->download(sc, ds, nk);
    assert_ok(r->ops->topk(di, NULL, &da, &c->sh));
    int32_t *gi = dget(r->be, di, nk);
    assert_ok(r->ops->topk(di, ds, &da, &c->sh));
    float *gs = dget(r->be, ds, nk);
    assert_memory_equal(gi, idx, nk);
    assert_memory_equal(gs, sc, nk);
    r->be->release(dbuf, na), r->be->release(ds, nk), r->be->release(di, nk);
    free(gi), free(gs);
}

static void test_cuda_topk(void **state) {
    (void)state;
    DeviceRun r = {cuda_backend_or_skip(), NULL};
    r.ops = cuda_indexer(r.be);
    each_topk_case(run_device, &r);
}

/* Backward from the CPU's saved state (uploaded, so both start from the same bits). */
static void test_cuda_backward(void **state) {
    (void)state;
    const DsaBackend *be = cuda_backend_or_skip();
    const DsaIndexerOps *ops = cuda_indexer(be);
    FwdCase c = fwd_case(4, 64, true, false, 1.0f, 90);
    DevCase d = dev_case(be, &c);
    const DsaIndexerShape *s = &c.sh;
    const int64_t N = s->batch * s->seq_len, nq = N * s->heads * s->head_dim, nk = N * s->head_dim, nw = N * s->heads;
    const int64_t na = dsa_indexer_acts_floats(s);
    float *acts = test_falloc(na);
    DsaIndexerActs a, da;
    dsa_indexer_acts_carve(&a, acts, s);
    const DsaIndexerWeights W = weights(c.wt), DW = weights(d.wt);
    dsa_indexer_forward(&a, c.x, c.cq, &W, s, c.cos, c.sin, dsa_backend_cpu());
    float *dacts = dput(be, acts, 4 * (size_t)na);
    dsa_indexer_acts_carve(&da, dacts, s);
    float *dq = test_randn(nq, 91, 1.0), *dk = test_randn(nk, 92, 1.0), *dw = test_randn(nw, 93, 1.0);
    float *ddw = dput(be, dw, 4 * (size_t)nw);
    float *g0[5], *gpu_g[5];
    for (int w = 0; w < 5; w++) g0[w] = test_randn(c.wn[w], 94 + (uint64_t)w, 0.5); /* += onto these */
    for (int variant = 0; variant < 2; variant++) { /* all gradients; then wk and k_norm.bias not wanted */
        float *cg[5], *dg[5], *cdq = malloc(4 * (size_t)nq), *cdk = malloc(4 * (size_t)nk);
        memcpy(cdq, dq, 4 * (size_t)nq), memcpy(cdk, dk, 4 * (size_t)nk);
        for (int w = 0; w < 5; w++) {
            const bool off = variant == 1 && (w == 1 || w == 3);
            cg[w] = off ? NULL : malloc(4 * (size_t)c.wn[w]);
            if (cg[w]) memcpy(cg[w], g0[w], 4 * (size_t)c.wn[w]);
            dg[w] = off ? NULL : dput(be, g0[w], 4 * (size_t)c.wn[w]);
        }
        const DsaIndexerGrads G = {cg[0], cg[1], cg[2], cg[3], cg[4]}, DG = {dg[0], dg[1], dg[2], dg[3], dg[4]};
        dsa_indexer_backward(&G, cdq, cdk, dw, &a, c.x, c.cq, &W, s, c.cos, c.sin, dsa_backend_cpu());
        for (int run = 0; run < 2; run++) {
            float *ddq = dput(be, dq, 4 * (size_t)nq), *ddk = dput(be, dk, 4 * (size_t)nk);
            for (int w = 0; w < 5; w++)
                if (dg[w]) be->upload(dg[w], g0[w], 4 * (size_t)c.wn[w]);
            ops->backward(&DG, ddq, ddk, ddw, &da, d.x, d.cq, &DW, s, d.cos, d.sin, be);
            float *gq = dget(be, ddq, 4 * (size_t)nq), *gk = dget(be, ddk, 4 * (size_t)nk);
            /* the scratch holds Ĥ-and-RoPE⁻¹ of ∂q̂ and the LayerNorm input gradient: the CPU's bits */
            expect_same_bits("backward: rotated dq", gq, cdq, nq);
            expect_same_bits("backward: LayerNorm input gradient", gk, cdk, nk);
            static const char *const nm[5] = {"d wq_b", "d wk", "d k_norm.weight", "d k_norm.bias", "d weights_proj"};
            for (int w = 0; w < 5; w++) {
                if (!dg[w]) continue;
                float *h = dget(be, dg[w], 4 * (size_t)c.wn[w]);
                /* projections: fp32 GEMM order; k_norm: chunked double sums, one float ulp */
                expect_close(nm[w], h, cg[w], c.wn[w], w == 2 || w == 3 ? 1e-6 : 1e-5);
                if (variant == 0 && run == 0) gpu_g[w] = h;
                else if (variant == 0) expect_same_bits("backward run to run", h, gpu_g[w], c.wn[w]), free(h);
                else free(h);
            }
            be->release(ddq, 4 * (size_t)nq), be->release(ddk, 4 * (size_t)nk);
            free(gq), free(gk);
        }
        for (int w = 0; w < 5; w++) {
            free(cg[w]);
            if (dg[w]) be->release(dg[w], 4 * (size_t)c.wn[w]);
        }
        free(cdq), free(cdk);
    }
    for (int w = 0; w < 5; w++) free(g0[w]), free(gpu_g[w]);
    be->release(dacts, 4 * (size_t)na), be->release(ddw, 4 * (size_t)nw);
    free(acts), free(dq), free(dk), free(dw);
    dev_case_free(be, &d, &c), fwd_case_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_key),          cmocka_unit_test(test_topk_plan),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_topk_algorithm_on_host), cmocka_unit_test(test_cuda_fp8),
        cmocka_unit_test(test_cuda_forward_exact), cmocka_unit_test(test_cuda_forward_random),
        cmocka_unit_test(test_cuda_topk),          cmocka_unit_test(test_cuda_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
