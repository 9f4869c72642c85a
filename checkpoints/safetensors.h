/* safetensors.h: the Hugging Face safetensors format: write, and read through a
 * read-only mmap after validating the whole header.
 *
 * Layout (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian
 * u64 N, N bytes of UTF-8 JSON
 *     {"__metadata__": {"key": "value", ...},
 *      "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * then the data buffer; offsets are bytes relative to the start of the buffer, tensors
 * are row-major little-endian.
 *
 * The reader refuses what the reference implementation refuses, each time with
 * DSA_ERR_FORMAT naming the file and, where there is one, the tensor: a file shorter
 * than 8 bytes, a header size past the end of the file or over 100 MB, a header that is
 * not UTF-8 JSON or not an object, an entry lacking dtype/shape/data_offsets or with
 * mistyped values, unknown dtypes, negative or fractional dims, more than DSA_MAX_DIMS
 * dims, data_offsets that run backwards or past the buffer, a byte count other than
 * numel * dtype size, duplicate names, non-string metadata values, and tensors that do
 * not tile the buffer exactly (overlaps, holes, trailing bytes). A truncated file fails
 * the "past the buffer" check, naming the tensor that lost its bytes.
 */
#ifndef DSA_CHECKPOINTS_SAFETENSORS_H
#define DSA_CHECKPOINTS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

enum {
    DSA_ST_PATH_CAP = 4096,
    DSA_ST_MAX_HEADER_BYTES = 100 * 1000 * 1000, /* larger headers are refused as absurd */
};

/* A tensor to write. The caller owns `name` and `data` (numel * dtype size bytes,
 * row-major, little-endian; may be NULL only when numel is 0). ndim 0 is a scalar. */
typedef struct {
    const char *name;
    DsaDType dtype;
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    const void *data;
} DsaStTensorRef;

/* Write `count` tensors and `n_meta` string metadata pairs (`meta_keys[i]` ->
 * `meta_values[i]`, both may be NULL when n_meta is 0) to `path`, replacing it, then
 * fsync the file. Not atomic: the caller writes into a checkpoint's temporary directory
 * (checkpoint.h), which is renamed whole. On failure the partial file is removed.
 *
 * NOTE: layout. The header is padded with spaces to a multiple of 8 bytes, so the data
 * buffer starts 8-byte aligned. Tensors are stored in the order given, except that a
 * stable sort by element size (largest first) runs first, as the reference Python
 * writer does: every tensor then starts at a multiple of its element size (natural
 * alignment for mmap access) with no padding between tensors, which readers would
 * refuse as holes. All-F32 files keep the given order exactly.
 *
 * Refused with DSA_ERR_ARG: empty, duplicate, non-UTF-8 or "__metadata__" names, bad
 * dtypes, ndim outside [0, DSA_MAX_DIMS], negative dims, NULL data, duplicate or NULL
 * metadata keys/values. */
DsaStatus dsa_safetensors_write(const char *path, const DsaStTensorRef *tensors, int count,
                                const char *const *meta_keys, const char *const *meta_values, int n_meta);

/* The layout dsa_safetensors_write gives `count` tensors, computed without writing, for
 * streaming writers (hf.h) that write each tensor's bytes later at its final offset
 * (data are not looked at and may be NULL). Same argument checks as
 * dsa_safetensors_write otherwise. Free with dsa_safetensors_layout_free. */
typedef struct {
    uint8_t *header;       /* (header_bytes) what goes at file offset 0: the 8-byte size,
                            * then the JSON padded with spaces to a multiple of 8 */
    size_t header_bytes;   /* where the data buffer starts */
    uint64_t *offsets;     /* (count) file offset of tensors[i]'s first byte (caller's order) */
    uint64_t *bytes;       /* (count) byte count of tensors[i] */
    int *order;            /* (count) storage order: indices into the caller's tensors */
    int count;
    uint64_t file_bytes;   /* header_bytes + every tensor's bytes: the file's size */
    size_t header_cap;     /* allocation sizes (private) */
    void *aux;
    size_t aux_bytes;
} DsaStLayout;

DsaStatus dsa_safetensors_layout(DsaStLayout *lay, const char *path, const DsaStTensorRef *tensors, int count,
                                 const char *const *meta_keys, const char *const *meta_values, int n_meta);
/* Free a layout; `lay` is zeroed (freeing a zeroed layout is a no-op). */
void dsa_safetensors_layout_free(DsaStLayout *lay);

/* One tensor of an open file. */
typedef struct {
    const char *name; /* owned by the DsaSafetensors */
    DsaDType dtype;
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data buffer, end exclusive */
} DsaStEntry;

/* An open file. All fields are read-only for the caller and valid until close. */
typedef struct {
    char path[DSA_ST_PATH_CAP];
    void *map; /* the whole file, mapped read-only */
    size_t map_bytes;
    uint64_t header_bytes; /* N, the JSON header's length */
    const uint8_t *buffer; /* start of the data buffer inside the map */
    uint64_t buffer_bytes;
    DsaStEntry *entries; /* (count) in header order */
    int count;
    const DsaStEntry **by_name;            /* (count) entries sorted by name, for find */
    const char **meta_keys, **meta_values; /* (n_meta) in header order */
    int n_meta;
    void *block; /* (block_bytes) one allocation: the arrays above, then the names,
                  * keys and values as NUL-terminated strings */
    size_t block_bytes;
} DsaSafetensors;

/* Map `path` read-only and validate its header and layout (see the file comment). On
 * failure nothing stays open and `st` is zeroed; on success close it with
 * dsa_safetensors_close. The data stay on disk (mmap), whatever the file's size. */
DsaStatus dsa_safetensors_open(DsaSafetensors *st, const char *path);
/* Unmap and free; `st` is zeroed (closing a zeroed struct is a no-op). */
void dsa_safetensors_close(DsaSafetensors *st);
/* The entry called `name`, or NULL (binary search). */
const DsaStEntry *dsa_safetensors_find(const DsaSafetensors *st, const char *name);
/* The bytes of an entry inside the map, valid until close. Aligned to the element size
 * in files this writer made; files from elsewhere may leave it unaligned. */
const void *dsa_safetensors_data(const DsaSafetensors *st, const DsaStEntry *e);
/* A metadata value, or NULL when the key is absent. Owned by `st`. */
const char *dsa_safetensors_meta(const DsaSafetensors *st, const char *key);
/* Copy tensor `name` into `out` (caller memory of numel floats) as F32, after checking
 * it has `ndim` dims equal to `shape` (shape may be NULL when ndim is 0). F32 is copied,
 * BF16 and F16 are widened exactly; other dtypes are refused by name (F8_E4M3 needs its
 * block scales, which this function does not read). A missing tensor, another shape or
 * a refused dtype is DSA_ERR_FORMAT naming the file, the tensor, and the expected and
 * found shape and dtype. */
DsaStatus dsa_safetensors_read_f32(const DsaSafetensors *st, const char *name, int ndim, const int64_t *shape,
                                   float *out);

#endif
