/* memory.c: the CPU backend's memory entries (kernels/backend.h, "memory"): device memory
 * is host memory, every copy a memcpy, and there is one stream, so ordering is free.
 * Allocation goes through core/mem.h, so the counted peak that tests check includes it.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"
#include "kernels/cpu/ops.h"

void *dsa_cpu_alloc(size_t bytes) { return dsa_calloc(bytes ? bytes : 1, 1); }

void dsa_cpu_release(void *p, size_t bytes) { dsa_free(p, bytes ? bytes : 1); }

void dsa_cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}

void dsa_cpu_fill_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}

void dsa_cpu_no_wait(void) {}

void dsa_cpu_memory_info(size_t *free_bytes, size_t *total_bytes) {
    long page = sysconf(_SC_PAGESIZE), avail = sysconf(_SC_AVPHYS_PAGES), all = sysconf(_SC_PHYS_PAGES);
    *free_bytes = page > 0 && avail > 0 ? (size_t)page * (size_t)avail : 0;
    *total_bytes = page > 0 && all > 0 ? (size_t)page * (size_t)all : 0;
}
