/* rng.c: Philox4x32-10 and the streams built on it (see rng.h). */
#include "core/rng.h"

#include <math.h>

#include "core/error.h"

enum { PHILOX_ROUNDS = 10 };
static const uint32_t PHILOX_M0 = 0xD2511F53u, PHILOX_M1 = 0xCD9E8D57u;
static const uint32_t PHILOX_W0 = 0x9E3779B9u, PHILOX_W1 = 0xBB67AE85u;

void dsa_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < PHILOX_ROUNDS; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

uint64_t dsa_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint32_t dsa_rng_u32_at(uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t block = index >> 2;
    uint32_t counter[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    dsa_philox4x32_10(counter, key, out);
    return out[index & 3];
}

/* Box-Muller from two words; u1 in (0, 1] so the log is finite. */
static double box_muller(uint32_t a, uint32_t b) {
    double u1 = ((double)a + 1.0) / 4294967296.0;
    double u2 = (double)b / 4294967296.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double dsa_rng_normal_at(uint64_t seed, uint64_t stream, uint64_t index) {
    return box_muller(dsa_rng_u32_at(seed, stream, 2 * index), dsa_rng_u32_at(seed, stream, 2 * index + 1));
}

DsaRng dsa_rng_init(uint64_t seed, uint64_t stream) { return (DsaRng){.seed = seed, .stream = stream, .index = 0}; }

DsaRng dsa_rng_split(const DsaRng *parent, uint64_t id) {
    uint64_t child = dsa_mix64(parent->stream ^ dsa_mix64(id + 0x632BE59BD9B4E019ull));
    return dsa_rng_init(parent->seed, child);
}

uint32_t dsa_rng_u32(DsaRng *rng) { return dsa_rng_u32_at(rng->seed, rng->stream, rng->index++); }

uint64_t dsa_rng_u64(DsaRng *rng) {
    uint64_t lo = dsa_rng_u32(rng);
    uint64_t hi = dsa_rng_u32(rng);
    return (hi << 32) | lo;
}

uint64_t dsa_rng_below(DsaRng *rng, uint64_t n) {
    DSA_ASSERT(n > 0);
    unsigned __int128 m = (unsigned __int128)dsa_rng_u64(rng) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)dsa_rng_u64(rng) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double dsa_rng_uniform(DsaRng *rng) { return (double)(dsa_rng_u64(rng) >> 11) * (1.0 / 9007199254740992.0); }

double dsa_rng_normal(DsaRng *rng) {
    uint32_t a = dsa_rng_u32(rng);
    uint32_t b = dsa_rng_u32(rng);
    return box_muller(a, b);
}
