/* hadamard.h: the normalized Walsh-Hadamard rotation Ĥ = H_n / √n of the indexer
 * (DSA-SPEC §5.1): symmetric, orthogonal, its own inverse, so the backward applies the
 * same transform to the gradient (§7 step 2). */
#ifndef DSA_INDEXER_HADAMARD_H
#define DSA_INDEXER_HADAMARD_H

#include <stdint.h>

/* v ← Ĥ v in place; n a power of two. Butterflies h = 1, 2, 4, …: (a, a+h) ← (a+b, a−b),
 * then all values times n^-1/2. */
void dsa_hadamard(float *v, int64_t n);

#endif
