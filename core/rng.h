/* rng.h: counter-based, splittable random numbers (Philox4x32-10).
 *
 * A random word is a pure function of (seed, stream, index): Philox4x32-10 with
 * key = seed and counter = (index / 4, stream), word index % 4. So the same seed gives
 * the same numbers on any number of threads or ranks: element i of a tensor is drawn
 * from index i (or 2i, 2i+1 for a normal), whoever computes it. Streams separate
 * consumers (data order per epoch, init per tensor, sampling) and are derived by
 * dsa_rng_split from a parent stream and an id.
 *
 * Philox4x32-10 is Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"
 * (SC'11); tests check the Random123 known-answer vectors.
 */
#ifndef DSA_CORE_RNG_H
#define DSA_CORE_RNG_H

#include <stdint.h>

/* One Philox4x32-10 block: out = philox(counter, key). */
void dsa_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* A sequential view of one stream: `index` counts the 32-bit words drawn so far. */
typedef struct {
    uint64_t seed;
    uint64_t stream;
    uint64_t index;
} DsaRng;

DsaRng dsa_rng_init(uint64_t seed, uint64_t stream);
/* A child stream, independent of the parent and of siblings with other ids. */
DsaRng dsa_rng_split(const DsaRng *parent, uint64_t id);

uint32_t dsa_rng_u32(DsaRng *rng);
uint64_t dsa_rng_u64(DsaRng *rng);
/* Uniform in [0, n), unbiased (Lemire's multiply-and-reject); n > 0. */
uint64_t dsa_rng_below(DsaRng *rng, uint64_t n);
/* Uniform double in [0, 1) with 53 random bits. */
double dsa_rng_uniform(DsaRng *rng);
/* Standard normal (Box-Muller, one value per two words). */
double dsa_rng_normal(DsaRng *rng);

/* Stateless access: word `index` of (seed, stream); normal number `index` uses words
 * 2*index and 2*index + 1. These are what parallel fills call. */
uint32_t dsa_rng_u32_at(uint64_t seed, uint64_t stream, uint64_t index);
double dsa_rng_normal_at(uint64_t seed, uint64_t stream, uint64_t index);

/* SplitMix64 finalizer: a good 64-bit mixing function (for deriving streams, hashes). */
uint64_t dsa_mix64(uint64_t x);

#endif
