/* mem.c: counted allocation and arenas (see mem.h). */
#include "core/mem.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DSA_ALIGN = 64 };

static atomic_size_t live_bytes;
static atomic_size_t peak_bytes;

static void count_alloc(size_t bytes) {
    size_t now = atomic_fetch_add(&live_bytes, bytes) + bytes;
    size_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
    }
}

void *dsa_malloc(size_t bytes) {
    if (bytes == 0) return NULL;
    size_t rounded = (bytes + DSA_ALIGN - 1) / DSA_ALIGN * DSA_ALIGN;
    if (rounded < bytes) return NULL;
    void *p = aligned_alloc(DSA_ALIGN, rounded);
    if (p) count_alloc(bytes);
    return p;
}

void *dsa_calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    void *p = dsa_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *dsa_realloc(void *ptr, size_t old_bytes, size_t new_bytes) {
    void *p = dsa_malloc(new_bytes);
    if (!p) return NULL;
    if (ptr) memcpy(p, ptr, old_bytes < new_bytes ? old_bytes : new_bytes);
    dsa_free(ptr, old_bytes);
    return p;
}

void dsa_free(void *ptr, size_t bytes) {
    if (!ptr) return;
    atomic_fetch_sub(&live_bytes, bytes);
    free(ptr);
}

size_t dsa_mem_live(void) { return atomic_load(&live_bytes); }
size_t dsa_mem_peak(void) { return atomic_load(&peak_bytes); }
void dsa_mem_reset_peak(void) { atomic_store(&peak_bytes, atomic_load(&live_bytes)); }

DsaStatus dsa_alloc(void **out, size_t bytes, const char *what) {
    *out = dsa_malloc(bytes);
    if (!*out && bytes) DSA_FAIL(DSA_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return DSA_OK;
}

DsaStatus dsa_arena_init(DsaArena *arena, size_t capacity, const char *what) {
    memset(arena, 0, sizeof *arena);
    DSA_TRY(dsa_alloc((void **)&arena->base, capacity, what));
    arena->capacity = capacity;
    return DSA_OK;
}

void dsa_arena_init_sizing(DsaArena *arena) { memset(arena, 0, sizeof *arena); }

void dsa_arena_free(DsaArena *arena) {
    dsa_free(arena->base, arena->capacity);
    memset(arena, 0, sizeof *arena);
}

void *dsa_arena_push(DsaArena *arena, size_t bytes) {
    size_t start = (arena->used + DSA_ALIGN - 1) / DSA_ALIGN * DSA_ALIGN;
    size_t end = start + bytes;
    if (!arena->base) {
        arena->used = end;
        if (end > arena->high) arena->high = end;
        return NULL;
    }
    if (end > arena->capacity || end < start) {
        dsa_error_set(DSA_ERR_NOMEM, __FILE__, __LINE__,
                      "arena full: %zu bytes requested, %zu of %zu used", bytes, arena->used, arena->capacity);
        return NULL;
    }
    arena->used = end;
    if (end > arena->high) arena->high = end;
    memset(arena->base + start, 0, bytes);
    return arena->base + start;
}

void dsa_arena_reset(DsaArena *arena, size_t mark) {
    DSA_ASSERT(mark <= arena->used);
    arena->used = mark;
}

int64_t dsa_mem_rss_peak(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kib) == 1) break;
    fclose(f);
    return (int64_t)kib * 1024;
}
