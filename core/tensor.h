/* tensor.h: a minimal tensor view: dtype, shape, and a pointer it does not own.
 *
 * Tensors are carved out of arenas (mem.h) or checkpoint buffers; the struct only
 * describes memory. Shapes are row-major, up to 4 dimensions, element counts int64_t.
 */
#ifndef DSA_CORE_TENSOR_H
#define DSA_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/mem.h"

typedef enum {
    DSA_F32 = 0,
    DSA_BF16,
    DSA_F16,
    DSA_F8_E4M3,
    DSA_I32,
    DSA_U32,
    DSA_I64,
    DSA_U8,
    DSA_DTYPE_COUNT,
} DsaDType;

enum { DSA_MAX_DIMS = 4 };

typedef struct {
    void *data;
    DsaDType dtype;
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    const char *name; /* for error messages; not owned */
} DsaTensor;

/* Bytes per element of `dtype`. */
size_t dsa_dtype_size(DsaDType dtype);
/* The safetensors spelling ("F32", "BF16", ...), or NULL. */
const char *dsa_dtype_name(DsaDType dtype);
/* Parse a safetensors dtype name; DSA_ERR_FORMAT naming `what` when unknown. */
DsaStatus dsa_dtype_parse(const char *name, DsaDType *out, const char *what);

/* A tensor description (no data yet) of the given shape. */
DsaTensor dsa_tensor_make(const char *name, DsaDType dtype, int ndim, const int64_t *shape);
int64_t dsa_tensor_numel(const DsaTensor *t);
size_t dsa_tensor_bytes(const DsaTensor *t);
/* Give `t` memory from `arena` (zero-filled); a sizing arena only counts. */
DsaStatus dsa_tensor_alloc(DsaTensor *t, DsaArena *arena);
/* "[d0, d1, ...]" of a shape into buf (cap bytes, truncated to fit); returns buf. */
const char *dsa_shape_text(char *buf, size_t cap, int ndim, const int64_t *shape);
/* Check that `t` has the expected shape; the error names the tensor and both shapes. */
DsaStatus dsa_tensor_check_shape(const DsaTensor *t, int ndim, const int64_t *shape);

#endif
