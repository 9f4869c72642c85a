/* h5z_zstd.c: the zstd HDF5 filter callback (see h5z_zstd.h).
 *
 * HDF5 calls the filter with a buffer it owns: we return a new buffer allocated with
 * H5allocate_memory (so a dynamically loaded copy of this code frees with the same
 * allocator as the library) and free the old one. Returning 0 signals failure, which
 * HDF5 turns into a read or write error naming the dataset.
 */
#include "data/h5z_zstd.h"

#include <zstd.h>

enum { ZSTD_FILTER_ID = 32015, ZSTD_DEFAULT_LEVEL = 3 };

static size_t zstd_decode(size_t nbytes, size_t *buf_size, void **buf) {
    unsigned long long out_size = ZSTD_getFrameContentSize(*buf, nbytes);
    if (out_size == ZSTD_CONTENTSIZE_ERROR || out_size == ZSTD_CONTENTSIZE_UNKNOWN) return 0;
    void *out = H5allocate_memory((size_t)out_size, 0);
    if (!out) return 0;
    size_t got = ZSTD_decompress(out, (size_t)out_size, *buf, nbytes);
    if (ZSTD_isError(got) || got != out_size) {
        H5free_memory(out);
        return 0;
    }
    H5free_memory(*buf);
    *buf = out;
    *buf_size = (size_t)out_size;
    return got;
}

static size_t zstd_encode(int level, size_t nbytes, size_t *buf_size, void **buf) {
    size_t cap = ZSTD_compressBound(nbytes);
    void *out = H5allocate_memory(cap, 0);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!out || !cctx) goto fail;
    if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level))) goto fail;
    if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1))) goto fail;
    size_t got = ZSTD_compress2(cctx, out, cap, *buf, nbytes);
    if (ZSTD_isError(got)) goto fail;
    ZSTD_freeCCtx(cctx);
    H5free_memory(*buf);
    *buf = out;
    *buf_size = cap;
    return got;
fail:
    ZSTD_freeCCtx(cctx);
    if (out) H5free_memory(out);
    return 0;
}

static size_t dsa_h5z_zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                                  size_t nbytes, size_t *buf_size, void **buf) {
    if (flags & H5Z_FLAG_REVERSE) return zstd_decode(nbytes, buf_size, buf);
    int level = cd_nelmts > 0 ? (int)cd_values[0] : ZSTD_DEFAULT_LEVEL;
    return zstd_encode(level, nbytes, buf_size, buf);
}

const H5Z_class2_t dsa_h5z_zstd_class[1] = {{
    .version = H5Z_CLASS_T_VERS,
    .id = (H5Z_filter_t)ZSTD_FILTER_ID,
    .encoder_present = 1,
    .decoder_present = 1,
    .name = "Zstandard compression: http://www.zstd.net",
    .can_apply = NULL,
    .set_local = NULL,
    .filter = dsa_h5z_zstd_filter,
}};
