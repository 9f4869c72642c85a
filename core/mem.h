/* mem.h: byte-counted allocation and bump arenas.
 *
 * Every heap allocation of the toolkit goes through dsa_malloc/dsa_free, which count
 * live and peak bytes (process-wide, atomic), so tests and metrics can check peak
 * memory. An arena carves many tensors out of one allocation (llm.c style): a sizing
 * pass can compute a run's memory before anything is allocated, and freeing is one call.
 */
#ifndef DSA_CORE_MEM_H
#define DSA_CORE_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Allocate `bytes` (64-byte aligned). Returns NULL on failure (or bytes == 0). */
void *dsa_malloc(size_t bytes);
/* As dsa_malloc, zero-filled; `count * size` is checked for overflow. */
void *dsa_calloc(size_t count, size_t size);
/* Grow or shrink a dsa_malloc block, keeping its content; `old_bytes` is its size. */
void *dsa_realloc(void *ptr, size_t old_bytes, size_t new_bytes);
/* Free a block from dsa_malloc/dsa_calloc; `bytes` must be its size (NULL is a no-op). */
void dsa_free(void *ptr, size_t bytes);

/* Bytes currently live, and the largest value that count reached. */
size_t dsa_mem_live(void);
size_t dsa_mem_peak(void);
/* Restart peak tracking from the current live count. */
void dsa_mem_reset_peak(void);

/* The process's peak resident set size in bytes (VmHWM of /proc/self/status; 0 where
 * unavailable): what the OS saw, including memory not allocated through dsa_malloc. */
int64_t dsa_mem_rss_peak(void);

/* Allocate with an error trail: on failure records "out of memory allocating N bytes
 * for WHAT" and returns DSA_ERR_NOMEM. */
DsaStatus dsa_alloc(void **out, size_t bytes, const char *what);

/* A bump allocator over one block. Sizing pass: an arena with base == NULL counts bytes
 * without storing anything (dsa_arena_push returns NULL but advances `used`). */
typedef struct {
    uint8_t *base;   /* the block, or NULL for a sizing-only arena */
    size_t capacity; /* bytes in the block */
    size_t used;     /* bytes handed out, including alignment padding */
    size_t high;     /* largest `used` seen (for reports) */
} DsaArena;

/* Allocate the block of an arena. */
DsaStatus dsa_arena_init(DsaArena *arena, size_t capacity, const char *what);
/* A sizing-only arena: counts, allocates nothing. */
void dsa_arena_init_sizing(DsaArena *arena);
void dsa_arena_free(DsaArena *arena);
/* Take `bytes` (64-byte aligned, zero-filled). Returns NULL and records an error when
 * the arena is full; a sizing arena always returns NULL. */
void *dsa_arena_push(DsaArena *arena, size_t bytes);
/* Roll back to an earlier `used` value (a stack mark). */
void dsa_arena_reset(DsaArena *arena, size_t mark);

#endif
