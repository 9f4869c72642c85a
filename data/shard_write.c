/* shard_write.c: writing token shards (format in shard.h).
 *
 * The writer buffers exactly one HDF5 chunk of tokens and writes it when full, so HDF5
 * compresses every chunk once through the zstd filter. Document boundaries are kept in
 * memory (8 bytes per document) and written as /doc_offsets on close. The file lives
 * under a temporary name until close renames it into place.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "data/h5z_zstd.h"
#include "data/shard.h"
#include "data/shard_internal.h"

struct DsaShardWriter {
    char path[DSA_PATH_CAP];
    char tmp_path[DSA_PATH_CAP + 64];
    DsaShardMeta meta;
    hid_t file, tokens;
    uint32_t *chunk;       /* (chunk_tokens) tokens not yet written */
    int64_t chunk_fill;    /* tokens in `chunk` */
    int64_t written;       /* tokens already in the file */
    uint64_t *doc_offsets; /* (docs_cap) boundaries so far, starting with 0 */
    int64_t num_docs, docs_cap;
    int64_t doc_start;     /* first token of the open document */
};

DsaShardMeta dsa_shard_meta_default(uint64_t vocab_size, uint32_t eos_id) {
    DsaShardMeta meta = {.vocab_size = vocab_size,
                         .eos_id = eos_id,
                         .chunk_tokens = DSA_SHARD_DEFAULT_CHUNK_TOKENS,
                         .zstd_level = DSA_SHARD_DEFAULT_ZSTD_LEVEL};
    snprintf(meta.tokenizer, sizeof meta.tokenizer, "external");
    return meta;
}

static pthread_once_t register_once = PTHREAD_ONCE_INIT;
static herr_t register_result;

/* NOTE: libhdf5 1.10.8 leaves a file whose H5Fclose failed (its final flush hit a full
 * disk) half closed, and its exit handler, H5_term_library, then crashes closing it
 * again. H5dont_atexit (before the library initializes) drops that handler: the process
 * exits with the clean error, and other files work on after the failed close (measured
 * by tests/reliability.sh's full-disk sweep of dsa pack). */
static void register_filter(void) {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    register_result = H5Zregister(dsa_h5z_zstd_class);
}

DsaStatus dsa_h5z_zstd_register(void) {
    pthread_once(&register_once, register_filter);
    if (register_result < 0) DSA_FAIL(DSA_ERR_INTERNAL, "could not register the zstd HDF5 filter (id 32015)");
    return DSA_OK;
}


DsaStatus shard_validate_meta(const DsaShardMeta *meta, const char *path) {
    if (meta->vocab_size < 1 || meta->vocab_size > UINT32_MAX + 1ull)
        DSA_FAIL(DSA_ERR_ARG, "%s: vocab_size %llu out of range [1, 2^32]", path, (unsigned long long)meta->vocab_size);
    if (meta->eos_id >= meta->vocab_size)
        DSA_FAIL(DSA_ERR_ARG, "%s: eos_id %u must be < vocab_size %llu", path, meta->eos_id,
                 (unsigned long long)meta->vocab_size);
    if (meta->chunk_tokens < 1 || meta->chunk_tokens > (1 << 26))
        DSA_FAIL(DSA_ERR_ARG, "%s: chunk_tokens %lld out of range [1, 2^26]", path, (long long)meta->chunk_tokens);
    if (meta->zstd_level < 1 || meta->zstd_level > 22)
        DSA_FAIL(DSA_ERR_ARG, "%s: zstd level %d out of range [1, 22]", path, meta->zstd_level);
    if (!meta->tokenizer[0]) DSA_FAIL(DSA_ERR_ARG, "%s: tokenizer name is empty", path);
    if (memchr(meta->pack_manifest, 0, sizeof meta->pack_manifest) == NULL || strchr(meta->pack_manifest, '/'))
        DSA_FAIL(DSA_ERR_ARG, "%s: pack manifest name is not a plain file name", path);
    return DSA_OK;
}

static DsaStatus create_tokens_dataset(DsaShardWriter *w) {
    hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {(hsize_t)w->meta.chunk_tokens};
    unsigned level = (unsigned)w->meta.zstd_level;
    hid_t space = H5Screate_simple(1, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    herr_t ok = (space < 0 || dcpl < 0) ? -1 : H5Pset_chunk(dcpl, 1, chunk);
    if (ok >= 0) ok = H5Pset_filter(dcpl, DSA_H5Z_FILTER_ZSTD, H5Z_FLAG_MANDATORY, 1, &level);
    if (ok >= 0) w->tokens = H5Dcreate2(w->file, "/tokens", H5T_STD_U32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    if (ok < 0 || w->tokens < 0) {
        char h5[512];
        shard_h5_error_text(h5, sizeof h5);
        DSA_FAIL(DSA_ERR_IO, "%s: cannot create dataset /tokens: %s", w->path, h5);
    }
    return DSA_OK;
}

DsaStatus dsa_shard_writer_open(DsaShardWriter **out, const char *path, const DsaShardMeta *meta) {
    *out = NULL;
    DSA_TRY(dsa_h5z_zstd_register());
    DSA_TRY(shard_validate_meta(meta, path));
    if (strlen(path) >= DSA_PATH_CAP) DSA_FAIL(DSA_ERR_ARG, "shard path too long: %s", path);
    DsaShardWriter *w = dsa_calloc(1, sizeof *w);
    if (!w) DSA_FAIL(DSA_ERR_NOMEM, "%s: out of memory for the shard writer", path);
    DsaStatus st = DSA_OK;
    snprintf(w->path, sizeof w->path, "%s", path);
    dsa_temp_path(w->tmp_path, sizeof w->tmp_path, path);
    w->meta = *meta;
    w->file = w->tokens = -1;
    w->docs_cap = 1024;
    w->doc_offsets = dsa_calloc((size_t)w->docs_cap, sizeof *w->doc_offsets);
    w->chunk = dsa_malloc((size_t)meta->chunk_tokens * sizeof *w->chunk);
    if (!w->doc_offsets || !w->chunk) DSA_FAIL_GOTO(st, fail, DSA_ERR_NOMEM, "%s: out of memory for buffers", path);
    /* NOTE: the HDF5 1.10 file format (superblock 3, object headers 2, chunk index by
     * extensible array) checksums every piece of metadata, so HDF5 refuses a corrupt
     * header before decoding it; shard_read.c refuses files without checksums. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) >= 0)
        w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    char h5[512];
    shard_h5_error_text(h5, sizeof h5); /* before H5Pclose, which clears HDF5's error stack */
    if (fapl >= 0) H5Pclose(fapl);
    if (w->file < 0) DSA_FAIL_GOTO(st, fail, DSA_ERR_IO, "%s: cannot create (as %s): %s", path, w->tmp_path, h5);
    DSA_TRY_GOTO(st, create_tokens_dataset(w), fail);
    *out = w;
    return DSA_OK;
fail:
    dsa_shard_writer_abort(w);
    return st;
}

static DsaStatus flush_chunk(DsaShardWriter *w) {
    if (w->chunk_fill == 0) return DSA_OK;
    hsize_t start[1] = {(hsize_t)w->written}, count[1] = {(hsize_t)w->chunk_fill};
    hsize_t extent[1] = {(hsize_t)(w->written + w->chunk_fill)};
    herr_t ok = H5Dset_extent(w->tokens, extent);
    hid_t fspace = ok >= 0 ? H5Dget_space(w->tokens) : -1;
    hid_t mspace = H5Screate_simple(1, count, NULL);
    if (fspace >= 0) ok = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    if (ok >= 0 && fspace >= 0 && mspace >= 0) ok = H5Dwrite(w->tokens, H5T_NATIVE_UINT32, mspace, fspace, H5P_DEFAULT, w->chunk);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (ok < 0 || fspace < 0 || mspace < 0) {
        char h5[512];
        shard_h5_error_text(h5, sizeof h5);
        DSA_FAIL(DSA_ERR_IO, "%s: writing tokens %lld..%lld failed: %s", w->path, (long long)w->written,
                 (long long)(w->written + w->chunk_fill), h5);
    }
    w->written += w->chunk_fill;
    w->chunk_fill = 0;
    return DSA_OK;
}

int64_t dsa_shard_writer_tokens(const DsaShardWriter *w) { return w->written + w->chunk_fill; }

int64_t dsa_shard_writer_docs(const DsaShardWriter *w) {
    return w->num_docs + (dsa_shard_writer_tokens(w) > w->doc_start ? 1 : 0);
}

DsaStatus dsa_shard_writer_append(DsaShardWriter *w, const uint32_t *tokens, int64_t n) {
    int64_t bad = dsa_tokens_first_out_of_range(tokens, n, w->meta.vocab_size);
    if (bad >= 0)
        DSA_FAIL(DSA_ERR_RANGE, "%s: token id %u at shard position %lld is >= vocab_size %llu", w->path, tokens[bad],
                 (long long)(dsa_shard_writer_tokens(w) + bad), (unsigned long long)w->meta.vocab_size);
    while (n > 0) {
        int64_t take = w->meta.chunk_tokens - w->chunk_fill;
        if (take > n) take = n;
        memcpy(w->chunk + w->chunk_fill, tokens, (size_t)take * sizeof *tokens);
        w->chunk_fill += take;
        tokens += take;
        n -= take;
        if (w->chunk_fill == w->meta.chunk_tokens) DSA_TRY(flush_chunk(w));
    }
    return DSA_OK;
}

DsaStatus dsa_shard_writer_end_doc(DsaShardWriter *w, int with_eos) {
    if (dsa_shard_writer_tokens(w) == w->doc_start) return DSA_OK; /* empty document: dropped */
    if (with_eos) DSA_TRY(dsa_shard_writer_append(w, &w->meta.eos_id, 1));
    if (w->num_docs + 2 > w->docs_cap) {
        int64_t cap = w->docs_cap * 2;
        uint64_t *grown = dsa_realloc(w->doc_offsets, (size_t)w->docs_cap * sizeof *grown, (size_t)cap * sizeof *grown);
        if (!grown) DSA_FAIL(DSA_ERR_NOMEM, "%s: out of memory for %lld document offsets", w->path, (long long)cap);
        w->doc_offsets = grown;
        w->docs_cap = cap;
    }
    w->doc_start = dsa_shard_writer_tokens(w);
    w->doc_offsets[++w->num_docs] = (uint64_t)w->doc_start;
    return DSA_OK;
}

static DsaStatus write_attr(hid_t file, const char *name, hid_t file_type, hid_t mem_type, const void *value,
                            const char *path) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = space >= 0 ? H5Acreate2(file, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    herr_t ok = attr >= 0 ? H5Awrite(attr, mem_type, value) : -1;
    char h5[512] = "";
    if (ok < 0) shard_h5_error_text(h5, sizeof h5); /* before the closes, which clear HDF5's error stack */
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    if (ok < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot write attribute %s: %s", path, name, h5);
    return DSA_OK;
}

static DsaStatus write_metadata(DsaShardWriter *w) {
    hsize_t n[1] = {(hsize_t)(w->num_docs + 1)};
    hid_t space = H5Screate_simple(1, n, NULL);
    hid_t dset = space >= 0 ? H5Dcreate2(w->file, "/doc_offsets", H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                         H5P_DEFAULT)
                            : -1;
    herr_t ok = dset >= 0 ? H5Dwrite(dset, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, w->doc_offsets) : -1;
    char h5[512] = "";
    if (ok < 0) shard_h5_error_text(h5, sizeof h5);
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    if (ok < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot write /doc_offsets: %s", w->path, h5);

    uint32_t version = DSA_SHARD_FORMAT_VERSION;
    uint64_t chunk = (uint64_t)w->meta.chunk_tokens;
    int32_t level = w->meta.zstd_level;
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, strlen(w->meta.tokenizer) + 1);
    H5Tset_strpad(str, H5T_STR_NULLTERM);
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, write_attr(w->file, "vocab_size", H5T_STD_U64LE, H5T_NATIVE_UINT64, &w->meta.vocab_size, w->path), done);
    DSA_TRY_GOTO(st, write_attr(w->file, "eos_id", H5T_STD_U32LE, H5T_NATIVE_UINT32, &w->meta.eos_id, w->path), done);
    DSA_TRY_GOTO(st, write_attr(w->file, "tokenizer", str, str, w->meta.tokenizer, w->path), done);
    DSA_TRY_GOTO(st, write_attr(w->file, "format_version", H5T_STD_U32LE, H5T_NATIVE_UINT32, &version, w->path), done);
    DSA_TRY_GOTO(st, write_attr(w->file, "chunk_tokens", H5T_STD_U64LE, H5T_NATIVE_UINT64, &chunk, w->path), done);
    DSA_TRY_GOTO(st, write_attr(w->file, "zstd_level", H5T_STD_I32LE, H5T_NATIVE_INT32, &level, w->path), done);
    if (w->meta.pack_manifest[0]) {
        H5Tset_size(str, strlen(w->meta.pack_manifest) + 1);
        DSA_TRY_GOTO(st, write_attr(w->file, "pack_manifest", str, str, w->meta.pack_manifest, w->path), done);
    }
done:
    H5Tclose(str);
    return st;
}

DsaStatus dsa_shard_writer_close(DsaShardWriter *w) {
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_shard_writer_end_doc(w, 0), fail);
    if (w->num_docs == 0) DSA_FAIL_GOTO(st, fail, DSA_ERR_ARG, "%s: no tokens were written; refusing to create an empty shard", w->path);
    DSA_TRY_GOTO(st, flush_chunk(w), fail);
    DSA_TRY_GOTO(st, write_metadata(w), fail);
    herr_t ok = H5Dclose(w->tokens);
    w->tokens = -1;
    if (ok >= 0) ok = H5Fclose(w->file); /* flushes HDF5's metadata */
    w->file = -1;
    if (ok < 0) {
        char h5[512];
        shard_h5_error_text(h5, sizeof h5);
        DSA_FAIL_GOTO(st, fail, DSA_ERR_IO, "%s: writing the file (as %s) failed at close: %s", w->path, w->tmp_path,
                      h5);
    }
    DSA_TRY_GOTO(st, dsa_fsync_path(w->tmp_path), fail);
    DSA_TRY_GOTO(st, dsa_rename_durable(w->tmp_path, w->path), fail);
    w->tmp_path[0] = '\0';
    dsa_shard_writer_abort(w);
    return DSA_OK;
fail:
    dsa_shard_writer_abort(w);
    return st;
}

void dsa_shard_writer_abort(DsaShardWriter *w) {
    if (!w) return;
    if (w->tokens >= 0) H5Dclose(w->tokens);
    if (w->file >= 0) H5Fclose(w->file);
    if (w->tmp_path[0]) unlink(w->tmp_path);
    dsa_free(w->chunk, (size_t)w->meta.chunk_tokens * sizeof *w->chunk);
    dsa_free(w->doc_offsets, (size_t)w->docs_cap * sizeof *w->doc_offsets);
    dsa_free(w, sizeof *w);
}
