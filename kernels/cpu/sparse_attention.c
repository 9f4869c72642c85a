/* sparse_attention.c: sparse MLA attention in the absorbed (MQA) form over top-k key
 * indices (DSA-SPEC §4.2; kernels/backend.h sparse_attention_*).
 *
 * PLACEHOLDER: plain per-row loops (forward parallel over rows, backward serial for the
 * key-side scatter). Being replaced by the tiled, deterministic-parallel version.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"

static float dotf(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void dsa_cpu_sparse_attention_forward(float *out, float *lse, const float *q, const float *kv,
                                      const int32_t *idx, const DsaSparseAttnShape *sh) {
    const int64_t L = sh->seq_len, H = sh->heads, dqk = sh->qk_dim, dv = sh->v_dim, K = sh->topk;
    const int64_t N = sh->batch * L;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int64_t b = n / L, t = n % L;
        const int32_t *row = idx + n * K;
        for (int64_t h = 0; h < H; h++) {
            const float *qh = q + (n * H + h) * dqk;
            float *o = out + (n * H + h) * dv;
            memset(o, 0, (size_t)dv * sizeof(float));
            float m = -INFINITY, l = 0.0f;
            for (int64_t i = 0; i < K; i++) {
                if (row[i] < 0) continue;
                const float *ks = kv + (b * L + row[i]) * dqk;
                float a = sh->scale * dotf(qh, ks, dqk);
                float m2 = a > m ? a : m;
                float corr = expf(m - m2), p = expf(a - m2);
                l = l * corr + p;
                for (int64_t d = 0; d < dv; d++) o[d] = o[d] * corr + p * ks[d];
                m = m2;
            }
            if (l > 0.0f)
                for (int64_t d = 0; d < dv; d++) o[d] /= l;
            lse[(b * H + h) * L + t] = l > 0.0f ? m + logf(l) : -INFINITY;
        }
    }
}

void dsa_cpu_sparse_attention_backward(float *dq, float *dkv, const float *dout, const float *out,
                                       const float *lse, const float *q, const float *kv,
                                       const int32_t *idx, const DsaSparseAttnShape *sh,
                                       void *scratch) {
    (void)scratch;
    const int64_t L = sh->seq_len, H = sh->heads, dqk = sh->qk_dim, dv = sh->v_dim, K = sh->topk;
    const int64_t N = sh->batch * L;
    memset(dq, 0, (size_t)(N * H * dqk) * sizeof(float));
    memset(dkv, 0, (size_t)(N * dqk) * sizeof(float));
    for (int64_t n = 0; n < N; n++) {
        const int64_t b = n / L, t = n % L;
        const int32_t *row = idx + n * K;
        for (int64_t h = 0; h < H; h++) {
            const float *qh = q + (n * H + h) * dqk, *doh = dout + (n * H + h) * dv;
            float *dqh = dq + (n * H + h) * dqk;
            const float row_lse = lse[(b * H + h) * L + t];
            if (!isfinite(row_lse)) continue;
            const float D = dotf(doh, out + (n * H + h) * dv, dv);
            for (int64_t i = 0; i < K; i++) {
                if (row[i] < 0) continue;
                const float *ks = kv + (b * L + row[i]) * dqk;
                float *dks = dkv + (b * L + row[i]) * dqk;
                float p = expf(sh->scale * dotf(qh, ks, dqk) - row_lse);
                float dp = dotf(doh, ks, dv);
                float ds = p * (dp - D) * sh->scale;
                for (int64_t d = 0; d < dqk; d++) dqh[d] += ds * ks[d];
                for (int64_t d = 0; d < dqk; d++) dks[d] += ds * qh[d];
                for (int64_t d = 0; d < dv; d++) dks[d] += p * doh[d];
            }
        }
    }
}

int64_t dsa_cpu_sparse_attention_scratch_bytes(const DsaSparseAttnShape *sh) {
    (void)sh;
    return 0;
}
