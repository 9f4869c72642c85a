/* safetensors.h: the Hugging Face safetensors format: read (mmap, fully validated) and
 * write.
 *
 * Layout: an 8-byte little-endian header size N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {..}},
 * then the data buffer; offsets are relative to the buffer. The reader refuses what the
 * reference implementation refuses: bad JSON, unknown dtypes, sizes that disagree with
 * shapes, offsets past the buffer, overlaps, holes and trailing bytes. Every error names
 * the file, and the tensor where there is one.
 */
#ifndef DSA_CHECKPOINTS_SAFETENSORS_H
#define DSA_CHECKPOINTS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

/* A tensor to write: the caller owns `name` and `data`. */
typedef struct {
    const char *name;
    DsaDType dtype;
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    const void *data;
} DsaStTensorRef;

/* Write tensors in the order given, with optional string metadata, to `path`, then
 * fsync it. Atomicity is the caller's (checkpoint directories are renamed whole). */
DsaStatus dsa_safetensors_write(const char *path, const DsaStTensorRef *tensors, int count,
                                const char *const *meta_keys, const char *const *meta_values, int n_meta);

typedef struct {
    char *name; /* owned by the DsaSafetensors */
    DsaDType dtype;
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data buffer */
} DsaStEntry;

typedef struct {
    char path[1024];
    void *map;
    size_t map_bytes;
    const uint8_t *buffer; /* start of the data buffer inside the map */
    uint64_t buffer_bytes;
    DsaStEntry *entries; /* (count), in file order */
    int count;
    char **meta_keys, **meta_values; /* (n_meta) */
    int n_meta;
} DsaSafetensors;

/* Map `path` read-only and validate its header and layout. */
DsaStatus dsa_safetensors_open(DsaSafetensors *st, const char *path);
void dsa_safetensors_close(DsaSafetensors *st);
/* The entry called `name`, or NULL. */
const DsaStEntry *dsa_safetensors_find(const DsaSafetensors *st, const char *name);
/* Pointer to the bytes of an entry (valid until close). */
const void *dsa_safetensors_data(const DsaSafetensors *st, const DsaStEntry *e);
/* A metadata value, or NULL. */
const char *dsa_safetensors_meta(const DsaSafetensors *st, const char *key);
/* Copy tensor `name` into `out` as fp32, checking it has `ndim` dims of `shape`. F32,
 * BF16 and F16 are accepted; other dtypes are refused by name. */
DsaStatus dsa_safetensors_read_f32(const DsaSafetensors *st, const char *name, int ndim, const int64_t *shape,
                                   float *out);

#endif
