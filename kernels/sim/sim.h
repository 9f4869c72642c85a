/* sim.h: the simulated device backend ("sim", kernels/backend.h dsa_backend_sim): the CPU
 * reference ops on memory whose pointers the host cannot dereference.
 *
 * Scheme: `alloc` takes host memory and returns its address with bit 62 set (XOR
 * DSA_SIM_TAG). User-space addresses on x86-64 (and AArch64) are below 2^47 (2^56 with
 * 5-level paging), so a tagged address is non-canonical: any load or store through it
 * faults (SIGSEGV) instead of silently reading the data. Offsets added to a tagged base stay
 * tagged (no carry reaches bit 62), so carving an arena, `W(m, l, slot) + offset` and the
 * like keep working; every sim op and memory entry translates its pointers back with
 * dsa_sim_real before calling the CPU entry, and the sim indexer entries (indexer/ops_sim.c)
 * translate the pointers inside their structs. NULL stays NULL ("not needed" gradients).
 *
 * Results are the CPU backend's bits: the same functions run on the same values. What the
 * sim adds is the proof that host code reaches backend memory only through upload,
 * download, copy and fill_zero (tests/test_sim.c trains the tiny configs on it, and checks
 * that a direct dereference crashes).
 */
#ifndef DSA_KERNELS_SIM_SIM_H
#define DSA_KERNELS_SIM_SIM_H

#include <stdint.h>

#include "kernels/backend.h"

#define DSA_SIM_TAG ((uintptr_t)1 << 62)

/* The host address of a sim pointer (NULL stays NULL). */
static inline void *dsa_sim_real(const void *p) {
    return p ? (void *)((uintptr_t)p ^ DSA_SIM_TAG) : (void *)0;
}

/* The sim MoE entries (kernels/sim/moe_sim.c). */
extern const struct DsaMoeOps dsa_sim_moe_ops;

#endif
