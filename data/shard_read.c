/* shard_read.c: opening, validating and reading token shards (format in shard.h).
 *
 * dsa_shard_open does all HDF5 work once, on the caller's thread: it checks every part
 * of the format and records the file offset and size of each compressed chunk. Reads
 * then use only pread and libzstd, which are thread-safe, so the loader's prefetch
 * thread never calls HDF5 (the Debian HDF5 build is not thread-safe).
 *
 * NOTE (corrupt files, shard.h "trust boundary"): before HDF5 sees a file, check_file
 * reads its first 9 bytes itself: the HDF5 signature at byte 0 and a superblock version
 * of at least 2, the formats whose metadata HDF5 checksums; the open(2) errno of an
 * unreadable file is reported as such. After H5Fopen, HDF5's end-of-file address must
 * equal the file size, and every allocation made from a count in the file (document
 * offsets, the chunk index) is bounded by the file size before it is made.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>
#include <zstd.h>

#include "core/mem.h"
#include "data/shard.h"
#include "data/shard_internal.h"

struct DsaShardScratch {
    ZSTD_DCtx *dctx;
    uint8_t *compressed;
    size_t compressed_cap;
    uint32_t *chunk; /* one decoded chunk */
    size_t chunk_cap; /* bytes */
};

/* ---- HDF5 error text ---------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t cap, len;
    int taken;
} ErrorWalk;

static herr_t collect_error(unsigned n, const H5E_error2_t *err, void *data) {
    ErrorWalk *walk = data;
    if (walk->taken >= 2 || !err->desc || !err->desc[0]) return 0;
    int w = snprintf(walk->buf + walk->len, walk->cap - walk->len, "%s%s", walk->taken ? "; " : "", err->desc);
    if (w > 0 && (size_t)w < walk->cap - walk->len) walk->len += (size_t)w;
    walk->taken++;
    return 0;
}

void shard_h5_error_text(char *buf, size_t cap) {
    ErrorWalk walk = {.buf = buf, .cap = cap};
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &walk);
    H5Eclear2(H5E_DEFAULT);
    if (!buf[0]) snprintf(buf, cap, "(no HDF5 detail)");
}

/* ---- scratch ------------------------------------------------------------------------ */

DsaStatus dsa_shard_scratch_new(DsaShardScratch **out) {
    *out = dsa_calloc(1, sizeof **out);
    if (!*out) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for shard read scratch");
    (*out)->dctx = ZSTD_createDCtx();
    if (!(*out)->dctx) {
        dsa_free(*out, sizeof **out);
        *out = NULL;
        DSA_FAIL(DSA_ERR_NOMEM, "cannot create a zstd decompression context");
    }
    return DSA_OK;
}

void dsa_shard_scratch_free(DsaShardScratch *s) {
    if (!s) return;
    ZSTD_freeDCtx(s->dctx);
    dsa_free(s->compressed, s->compressed_cap);
    dsa_free(s->chunk, s->chunk_cap);
    dsa_free(s, sizeof *s);
}

static DsaStatus grow(void **buf, size_t *cap, size_t need, const char *what) {
    if (*cap >= need) return DSA_OK;
    dsa_free(*buf, *cap);
    *cap = 0;
    DSA_TRY(dsa_alloc(buf, need, what));
    *cap = need;
    return DSA_OK;
}

/* ---- validation helpers ------------------------------------------------------------- */

/* Is `type` an unsigned integer of `bytes` bytes? */
static int is_unsigned_int(hid_t type, size_t bytes) {
    return H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == bytes && H5Tget_sign(type) == H5T_SGN_NONE;
}

static const char *type_text(hid_t type, char *buf, size_t cap) {
    H5T_class_t cls = H5Tget_class(type);
    const char *name = cls == H5T_INTEGER ? (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int")
                       : cls == H5T_FLOAT ? "float"
                       : cls == H5T_STRING ? "string"
                                           : "non-numeric";
    snprintf(buf, cap, "%s%zu", name, H5Tget_size(type) * 8);
    return buf;
}

/* Open a 1-D dataset of unsigned integers of `bytes` bytes; returns its length. */
static DsaStatus open_vector(hid_t file, const char *name, size_t bytes, const char *path, hid_t *out, int64_t *len) {
    *out = -1;
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) DSA_FAIL(DSA_ERR_FORMAT, "%s: dataset %s is missing", path, name);
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    if (dset < 0) DSA_FAIL(DSA_ERR_FORMAT, "%s: %s is not a readable dataset", path, name);
    hid_t type = H5Dget_type(dset);
    hid_t space = H5Dget_space(dset);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[1] = {0};
    if (rank == 1) H5Sget_simple_extent_dims(space, dims, NULL);
    int type_ok = is_unsigned_int(type, bytes);
    char found[32];
    type_text(type, found, sizeof found);
    H5Tclose(type);
    H5Sclose(space);
    if (!type_ok) {
        H5Dclose(dset);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: dataset %s has type %s, expected uint%zu", path, name, found, bytes * 8);
    }
    if (rank != 1) {
        H5Dclose(dset);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: dataset %s has %d dimensions, expected 1", path, name, rank);
    }
    *out = dset;
    *len = (int64_t)dims[0];
    return DSA_OK;
}

/* Read a scalar integer attribute, converted to uint64. */
static DsaStatus read_uint_attr(hid_t file, const char *name, uint64_t *value, const char *path) {
    if (H5Aexists(file, name) <= 0) DSA_FAIL(DSA_ERR_FORMAT, "%s: attribute %s is missing", path, name);
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    hid_t type = attr >= 0 ? H5Aget_type(attr) : -1;
    int is_int = type >= 0 && H5Tget_class(type) == H5T_INTEGER;
    herr_t ok = is_int ? H5Aread(attr, H5T_NATIVE_UINT64, value) : -1;
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    if (!is_int) DSA_FAIL(DSA_ERR_FORMAT, "%s: attribute %s is not an integer", path, name);
    if (ok < 0) DSA_FAIL(DSA_ERR_FORMAT, "%s: attribute %s could not be read", path, name);
    return DSA_OK;
}

static DsaStatus read_string_attr(hid_t file, const char *name, char *out, size_t cap, const char *path) {
    if (H5Aexists(file, name) <= 0) DSA_FAIL(DSA_ERR_FORMAT, "%s: attribute %s is missing", path, name);
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    hid_t type = attr >= 0 ? H5Aget_type(attr) : -1;
    DsaStatus st = DSA_OK;
    if (type < 0 || H5Tget_class(type) != H5T_STRING) {
        st = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__, "%s: attribute %s is not a string", path, name);
    } else if (H5Tis_variable_str(type) > 0) {
        char *text = NULL;
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5T_VARIABLE);
        if (H5Aread(attr, mem, &text) < 0 || !text)
            st = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__, "%s: attribute %s could not be read", path, name);
        else
            snprintf(out, cap, "%.*s", (int)cap - 1, text);
        if (text) H5free_memory(text);
        H5Tclose(mem);
    } else {
        size_t size = H5Tget_size(type);
        char buf[256] = {0};
        if (size >= sizeof buf || H5Aread(attr, type, buf) < 0)
            st = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__, "%s: attribute %s is unreadable or too long", path,
                               name);
        else
            snprintf(out, cap, "%.*s", (int)cap - 1, buf);
    }
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    return st;
}

static DsaStatus read_attributes(DsaShard *s, hid_t file) {
    uint64_t vocab = 0, eos = 0, version = 0;
    DSA_TRY(read_uint_attr(file, "format_version", &version, s->path));
    if (version != DSA_SHARD_FORMAT_VERSION)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: shard format_version %llu, this dsa reads version %d; regenerate the shard with this "
                 "version's `dsa pack`",
                 s->path, (unsigned long long)version, DSA_SHARD_FORMAT_VERSION);
    s->format_version = (uint32_t)version;
    DSA_TRY(read_uint_attr(file, "vocab_size", &vocab, s->path));
    DSA_TRY(read_uint_attr(file, "eos_id", &eos, s->path));
    DSA_TRY(read_string_attr(file, "tokenizer", s->meta.tokenizer, sizeof s->meta.tokenizer, s->path));
    if (vocab < 1 || vocab > UINT32_MAX + 1ull)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: attribute vocab_size = %llu is out of range", s->path, (unsigned long long)vocab);
    if (eos >= vocab)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: attribute eos_id = %llu is not below vocab_size = %llu", s->path,
                 (unsigned long long)eos, (unsigned long long)vocab);
    s->meta.vocab_size = vocab;
    s->meta.eos_id = (uint32_t)eos;
    uint64_t level = 0;
    if (H5Aexists(file, "zstd_level") > 0) DSA_TRY(read_uint_attr(file, "zstd_level", &level, s->path));
    s->meta.zstd_level = (int)level;
    if (H5Aexists(file, "pack_manifest") > 0) {
        char *m = s->meta.pack_manifest;
        DSA_TRY(read_string_attr(file, "pack_manifest", m, sizeof s->meta.pack_manifest, s->path));
        if (!m[0] || strchr(m, '/') || !strcmp(m, ".") || !strcmp(m, ".."))
            DSA_FAIL(DSA_ERR_FORMAT, "%s: attribute pack_manifest = \"%s\" is not a plain file name", s->path, m);
    }
    return DSA_OK;
}

/* /tokens must be chunked with exactly the zstd filter; record the chunk size. */
static DsaStatus check_tokens_layout(DsaShard *s, hid_t tokens) {
    hid_t dcpl = H5Dget_create_plist(tokens);
    hsize_t chunk[1] = {0};
    int chunked = H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 1, chunk) == 1;
    int nfilters = H5Pget_nfilters(dcpl);
    unsigned flags = 0, cd[4];
    size_t ncd = 4;
    char name[64];
    H5Z_filter_t filter = nfilters == 1 ? H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, sizeof name, name, NULL) : -1;
    H5Pclose(dcpl);
    if (!chunked) DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens is not chunked; shards must be written by `dsa pack`", s->path);
    if (nfilters != 1 || filter != DSA_H5Z_FILTER_ZSTD)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens has %d filter(s) (first id %d), expected exactly the zstd filter %d",
                 s->path, nfilters, (int)filter, DSA_H5Z_FILTER_ZSTD);
    if (chunk[0] < 1 || chunk[0] > (1u << 26))
        DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens chunk size %llu is out of range", s->path, (unsigned long long)chunk[0]);
    s->meta.chunk_tokens = (int64_t)chunk[0];
    return DSA_OK;
}

static DsaStatus read_doc_offsets(DsaShard *s, hid_t file) {
    hid_t dset = -1;
    int64_t n = 0;
    DSA_TRY(open_vector(file, "/doc_offsets", 8, s->path, &dset, &n));
    DsaStatus st = DSA_OK;
    if (n < 2) DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: /doc_offsets has %lld entries, expected at least 2", s->path, (long long)n);
    if ((uint64_t)n > s->file_bytes / 8) /* stored uncompressed: 8 bytes an entry */
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: /doc_offsets claims %lld entries, more than a %llu-byte file holds",
                      s->path, (long long)n, (unsigned long long)s->file_bytes);
    DSA_TRY_GOTO(st, dsa_alloc((void **)&s->doc_offsets, (size_t)n * 8, "/doc_offsets"), done);
    s->num_docs = n - 1;
    if (H5Dread(dset, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->doc_offsets) < 0)
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: /doc_offsets could not be read (corrupt file?)", s->path);
    if (s->doc_offsets[0] != 0)
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: /doc_offsets[0] = %llu, expected 0", s->path,
                      (unsigned long long)s->doc_offsets[0]);
    for (int64_t i = 1; i < n; i++) {
        if (s->doc_offsets[i] < s->doc_offsets[i - 1])
            DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: /doc_offsets decreases at entry %lld (%llu after %llu)", s->path,
                          (long long)i, (unsigned long long)s->doc_offsets[i], (unsigned long long)s->doc_offsets[i - 1]);
    }
    if (s->doc_offsets[n - 1] != (uint64_t)s->num_tokens)
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: /doc_offsets ends at %llu but /tokens has %lld tokens", s->path,
                      (unsigned long long)s->doc_offsets[n - 1], (long long)s->num_tokens);
done:
    H5Dclose(dset);
    return st;
}

/* File offset and compressed size of every chunk, checked against the file size. */
static DsaStatus read_chunk_index(DsaShard *s, hid_t file, hid_t tokens) {
    struct stat st_buf;
    if (fstat(s->fd, &st_buf) != 0) DSA_FAIL(DSA_ERR_IO, "%s: fstat failed: %s", s->path, strerror(errno));
    hsize_t userblock = 0;
    hid_t fcpl = H5Fget_create_plist(file);
    H5Pget_userblock(fcpl, &userblock);
    H5Pclose(fcpl);
    int64_t ct = s->meta.chunk_tokens;
    s->num_chunks = s->num_tokens / ct + (s->num_tokens % ct != 0);
    if ((uint64_t)s->num_chunks > (uint64_t)st_buf.st_size) /* every chunk takes at least one byte */
        DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens claims %lld tokens in %lld chunks, more than a %lld-byte file holds",
                 s->path, (long long)s->num_tokens, (long long)s->num_chunks, (long long)st_buf.st_size);
    DSA_TRY(dsa_alloc((void **)&s->chunk_addr, (size_t)s->num_chunks * sizeof *s->chunk_addr, "chunk index"));
    DSA_TRY(dsa_alloc((void **)&s->chunk_bytes, (size_t)s->num_chunks * sizeof *s->chunk_bytes, "chunk index"));
    s->compressed_bytes = 0;
    for (int64_t c = 0; c < s->num_chunks; c++) {
        hsize_t offset[1] = {(hsize_t)(c * ct)}, size = 0;
        haddr_t addr = HADDR_UNDEF;
        unsigned mask = 0;
        if (H5Dget_chunk_info_by_coord(tokens, offset, &mask, &addr, &size) < 0 || addr == HADDR_UNDEF)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens chunk %lld (tokens from %lld) is missing from the file", s->path,
                     (long long)c, (long long)(c * ct));
        if (mask != 0)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens chunk %lld was stored without the zstd filter", s->path, (long long)c);
        if (size == 0 || size > UINT32_MAX || addr + userblock + size > (uint64_t)st_buf.st_size)
            DSA_FAIL(DSA_ERR_FORMAT,
                     "%s: /tokens chunk %lld lies at bytes %llu..%llu but the file has %lld bytes (truncated file?)",
                     s->path, (long long)c, (unsigned long long)(addr + userblock),
                     (unsigned long long)(addr + userblock + size), (long long)st_buf.st_size);
        s->chunk_addr[c] = addr + userblock;
        s->chunk_bytes[c] = (uint32_t)size;
        s->compressed_bytes += size;
    }
    return DSA_OK;
}

/* Check the path names a readable HDF5 file in a checksummed format before HDF5 sees
 * it (see the NOTE at the top). */
static DsaStatus check_file(const char *path, uint64_t *bytes) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    struct stat st;
    if (stat(path, &st) != 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open shard: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) DSA_FAIL(DSA_ERR_IO, "%s: not a regular file", path);
    if (st.st_size == 0) DSA_FAIL(DSA_ERR_FORMAT, "%s: file is empty (0 bytes), not an HDF5 shard", path);
    *bytes = (uint64_t)st.st_size;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open shard for reading: %s", path, strerror(errno));
    unsigned char head[9] = {0};
    ssize_t got;
    do got = pread(fd, head, sizeof head, 0);
    while (got < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    if (got < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot read: %s", path, strerror(err));
    if (got < (ssize_t)sizeof head || memcmp(head, sig, sizeof sig) != 0)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature at byte 0)", path);
    if (head[8] < 2)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: HDF5 superblock version %u, expected 2 or later: a file in the older HDF5 format has no "
                 "metadata checksums, and libhdf5 cannot be trusted with it if it is damaged; write the shards again "
                 "with this `dsa pack` (or convert one with `HDF5_PLUGIN_PATH=build/hdf5-plugin h5repack -L OLD NEW`)",
                 path, head[8]);
    return DSA_OK;
}

/* HDF5's end-of-file address must be the file size: a file cut short, or one with bytes
 * appended, is refused before any of its metadata beyond the superblock is read. */
static DsaStatus check_eof(const char *path, hid_t file) {
    haddr_t eoa = HADDR_UNDEF;
    hsize_t size = 0;
    if (H5Fget_eoa(file, &eoa) < 0 || H5Fget_filesize(file, &size) < 0 || eoa == HADDR_UNDEF)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: HDF5 cannot tell the file's end-of-file address (corrupt superblock?)", path);
    if ((uint64_t)eoa != (uint64_t)size)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: the file has %llu bytes but its HDF5 superblock says %llu (%s)", path,
                 (unsigned long long)size, (unsigned long long)eoa, size < eoa ? "truncated" : "bytes appended");
    return DSA_OK;
}

DsaStatus dsa_shard_open(DsaShard *s, const char *path) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    DSA_TRY(dsa_h5z_zstd_register());
    if (strlen(path) >= sizeof s->path) DSA_FAIL(DSA_ERR_ARG, "shard path too long: %s", path);
    snprintf(s->path, sizeof s->path, "%s", path);
    DSA_TRY(check_file(path, &s->file_bytes));
    DsaStatus st = DSA_OK;
    hid_t tokens = -1;
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        char h5[512];
        shard_h5_error_text(h5, sizeof h5);
        DSA_FAIL_GOTO(st, fail, DSA_ERR_FORMAT, "%s: HDF5 cannot open the file (truncated or corrupt?): %s", path, h5);
    }
    DSA_TRY_GOTO(st, check_eof(path, file), fail);
    DSA_TRY_GOTO(st, read_attributes(s, file), fail);
    DSA_TRY_GOTO(st, open_vector(file, "/tokens", 4, path, &tokens, &s->num_tokens), fail);
    if (s->num_tokens == 0) DSA_FAIL_GOTO(st, fail, DSA_ERR_FORMAT, "%s: /tokens is empty (0 tokens)", path);
    DSA_TRY_GOTO(st, check_tokens_layout(s, tokens), fail);
    DSA_TRY_GOTO(st, read_doc_offsets(s, file), fail);
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) DSA_FAIL_GOTO(st, fail, DSA_ERR_IO, "%s: cannot open for reading: %s", path, strerror(errno));
    DSA_TRY_GOTO(st, read_chunk_index(s, file, tokens), fail);
    H5Dclose(tokens);
    H5Fclose(file);
    return DSA_OK;
fail:
    if (tokens >= 0) H5Dclose(tokens);
    if (file >= 0) H5Fclose(file);
    H5Eclear2(H5E_DEFAULT);
    dsa_shard_close(s);
    return st;
}

DsaStatus dsa_shard_read_meta(const char *path, DsaShardMeta *meta) {
    DsaShard s; /* only path and meta are used: no chunk index, no descriptor */
    memset(&s, 0, sizeof s);
    memset(meta, 0, sizeof *meta);
    DSA_TRY(dsa_h5z_zstd_register());
    if (strlen(path) >= sizeof s.path) DSA_FAIL(DSA_ERR_ARG, "shard path too long: %s", path);
    snprintf(s.path, sizeof s.path, "%s", path);
    DSA_TRY(check_file(path, &s.file_bytes));
    DsaStatus st = DSA_OK;
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        char h5[512];
        shard_h5_error_text(h5, sizeof h5);
        DSA_FAIL(DSA_ERR_FORMAT, "%s: HDF5 cannot open the file (truncated or corrupt?): %s", path, h5);
    }
    DSA_TRY_GOTO(st, check_eof(path, file), done);
    DSA_TRY_GOTO(st, read_attributes(&s, file), done);
    *meta = s.meta;
done:
    H5Fclose(file);
    if (st != DSA_OK) H5Eclear2(H5E_DEFAULT);
    return st;
}

void dsa_shard_close(DsaShard *s) {
    if (s->fd >= 0) close(s->fd);
    dsa_free(s->doc_offsets, (size_t)(s->num_docs + 1) * 8);
    dsa_free(s->chunk_addr, (size_t)s->num_chunks * sizeof *s->chunk_addr);
    dsa_free(s->chunk_bytes, (size_t)s->num_chunks * sizeof *s->chunk_bytes);
    s->doc_offsets = NULL;
    s->chunk_addr = NULL;
    s->chunk_bytes = NULL;
    s->fd = -1;
}

/* ---- reading ------------------------------------------------------------------------ */

static DsaStatus pread_all(int fd, void *buf, size_t len, uint64_t offset, const char *path) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t got = pread(fd, p, len, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) DSA_FAIL(DSA_ERR_IO, "%s: read at byte %llu failed: %s", path, (unsigned long long)offset, strerror(errno));
        if (got == 0) DSA_FAIL(DSA_ERR_FORMAT, "%s: unexpected end of file at byte %llu (truncated?)", path, (unsigned long long)offset);
        p += got;
        len -= (size_t)got;
        offset += (uint64_t)got;
    }
    return DSA_OK;
}

/* Decode chunk `c` into `dst`, which holds a full chunk (chunk_tokens tokens). */
static DsaStatus decode_chunk(const DsaShard *s, int64_t c, uint32_t *dst, DsaShardScratch *scratch) {
    size_t bytes = s->chunk_bytes[c];
    DSA_TRY(grow((void **)&scratch->compressed, &scratch->compressed_cap, bytes, "compressed chunk"));
    DSA_TRY(pread_all(s->fd, scratch->compressed, bytes, s->chunk_addr[c], s->path));
    size_t want = (size_t)s->meta.chunk_tokens * 4;
    unsigned long long size = ZSTD_getFrameContentSize(scratch->compressed, bytes);
    if (size != want)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens chunk %lld is corrupt: zstd frame header %s (expected %zu bytes)", s->path,
                 (long long)c, size == ZSTD_CONTENTSIZE_ERROR ? "is invalid" : "declares another size", want);
    size_t got = ZSTD_decompressDCtx(scratch->dctx, dst, want, scratch->compressed, bytes);
    if (ZSTD_isError(got) || got != want)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: /tokens chunk %lld (tokens %lld..%lld) is corrupt: zstd: %s", s->path, (long long)c,
                 (long long)(c * s->meta.chunk_tokens), (long long)((c + 1) * s->meta.chunk_tokens),
                 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short output");
    return DSA_OK;
}

int64_t dsa_tokens_first_out_of_range(const uint32_t *tokens, int64_t n, uint64_t vocab_size) {
    if (vocab_size > UINT32_MAX) return -1; /* every uint32 id is in range */
    /* NOTE: an OR of comparisons over fixed blocks vectorizes with plain SSE2, where an
     * unsigned 32-bit max does not (4.5x faster: about 13% of the loader's time before). */
    uint32_t limit = (uint32_t)(vocab_size - 1), any = 0;
    int64_t i = 0;
    for (; i + 64 <= n && !any; i += 64) {
        for (int k = 0; k < 64; k++) any |= tokens[i + k] > limit;
    }
    for (; i < n; i++) any |= tokens[i] > limit;
    if (!any) return -1;
    for (i = 0; tokens[i] <= limit; i++) {
    }
    return i;
}

static DsaStatus check_token_range(const DsaShard *s, const uint32_t *tokens, int64_t n, int64_t first) {
    int64_t bad = dsa_tokens_first_out_of_range(tokens, n, s->meta.vocab_size);
    if (bad >= 0)
        DSA_FAIL(DSA_ERR_RANGE, "%s: token id %u at position %lld is >= vocab_size %llu", s->path, tokens[bad],
                 (long long)(first + bad), (unsigned long long)s->meta.vocab_size);
    return DSA_OK;
}

DsaStatus dsa_shard_read(const DsaShard *s, int64_t start, int64_t count, uint32_t *out, DsaShardScratch *scratch) {
    if (start < 0 || count < 0 || start + count > s->num_tokens)
        DSA_FAIL(DSA_ERR_RANGE, "%s: read of tokens %lld..%lld is outside the shard's %lld tokens", s->path,
                 (long long)start, (long long)(start + count), (long long)s->num_tokens);
    int64_t ct = s->meta.chunk_tokens;
    DSA_TRY(grow((void **)&scratch->chunk, &scratch->chunk_cap, (size_t)ct * 4, "decoded chunk"));
    int64_t pos = start, end = start + count;
    uint32_t *dst = out;
    while (pos < end) {
        int64_t c = pos / ct, chunk_start = c * ct;
        int64_t from = pos - chunk_start;
        int64_t upto = end - chunk_start < ct ? end - chunk_start : ct;
        if (from == 0 && upto == ct) {
            DSA_TRY(decode_chunk(s, c, dst, scratch)); /* whole chunk: decode in place */
        } else {
            DSA_TRY(decode_chunk(s, c, scratch->chunk, scratch));
            memcpy(dst, scratch->chunk + from, (size_t)(upto - from) * 4);
        }
        dst += upto - from;
        pos = chunk_start + upto;
    }
    DSA_TRY(check_token_range(s, out, count, start));
    return DSA_OK;
}

DsaStatus dsa_shard_read_hdf5(const DsaShard *s, int64_t start, int64_t count, uint32_t *out) {
    if (start < 0 || count < 0 || start + count > s->num_tokens)
        DSA_FAIL(DSA_ERR_RANGE, "%s: read of tokens %lld..%lld is outside the shard's %lld tokens", s->path,
                 (long long)start, (long long)(start + count), (long long)s->num_tokens);
    DsaStatus st = DSA_OK;
    hid_t file = H5Fopen(s->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dset = file >= 0 ? H5Dopen2(file, "/tokens", H5P_DEFAULT) : -1;
    hid_t fspace = dset >= 0 ? H5Dget_space(dset) : -1;
    hsize_t off[1] = {(hsize_t)start}, cnt[1] = {(hsize_t)count};
    hid_t mspace = H5Screate_simple(1, cnt, NULL);
    herr_t ok = fspace >= 0 ? H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, cnt, NULL) : -1;
    if (ok >= 0) ok = H5Dread(dset, H5T_NATIVE_UINT32, mspace, fspace, H5P_DEFAULT, out);
    if (ok < 0) {
        char h5[512];
        shard_h5_error_text(h5, sizeof h5);
        st = dsa_error_set(DSA_ERR_FORMAT, __FILE__, __LINE__, "%s: HDF5 read of /tokens %lld..%lld failed: %s",
                           s->path, (long long)start, (long long)(start + count), h5);
    }
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (dset >= 0) H5Dclose(dset);
    if (file >= 0) H5Fclose(file);
    if (st == DSA_OK) DSA_TRY(check_token_range(s, out, count, start));
    return st;
}
