/* import_megatron.c: the `dsa pack` importer for Megatron-LM indexed datasets.
 *
 * A dataset is a pair prefix.idx / prefix.bin (megatron/core/datasets/indexed_dataset.py,
 * "MMIDIDX" version 1). The .idx, all little-endian:
 *   char     magic[9] = "MMIDIDX\0\0"
 *   uint64   version = 1
 *   uint8    dtype code: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
 *            7 float32, 8 uint16 (the float codes are refused: they are not token ids)
 *   uint64   sequence_count (S), uint64 document_count (D)
 *   int32    sequence_lengths[S]    (tokens)
 *   int64    sequence_pointers[S]   (byte offsets into .bin)
 *   int64    document_indices[D]    document d = sequences [di[d], di[d+1]);
 *                                   di[0] = 0, di[D-1] = S, so D - 1 documents
 * The .idx is mapped and validated whole before anything is packed (magic, version,
 * dtype, exact size, pointers and lengths inside .bin, monotone document indices), each
 * error naming the file and field. The .bin is streamed with pread in blocks. A trailing
 * eos_id of a document is dropped (the shard writer adds one).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/fileutil.h"
#include "core/mem.h"
#include "core/strutil.h"
#include "data/pack.h"

enum { MEGATRON_HEADER = 34, BIN_BLOCK = 4 << 20 };
static const char megatron_magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

typedef struct {
    char idx_path[DSA_PATH_CAP + 8], bin_path[DSA_PATH_CAP + 8];
    const uint8_t *map; /* (idx_size) the mapped .idx */
    int64_t idx_size, bin_size;
    int dtype, item;                               /* dtype code and its size in bytes */
    uint64_t seqs, docs;                           /* S and D */
    const uint8_t *lengths, *pointers, *doc_index; /* arrays inside map */
} Megatron;

static DsaStatus megatron_paths(Megatron *m, const char *path) {
    size_t len = strlen(path);
    if (dsa_ends_with(path, ".bin") || dsa_ends_with(path, ".idx")) len -= 4;
    if (len >= DSA_PATH_CAP) DSA_FAIL(DSA_ERR_ARG, "Megatron path too long: %s", path);
    snprintf(m->idx_path, sizeof m->idx_path, "%.*s.idx", (int)len, path);
    snprintf(m->bin_path, sizeof m->bin_path, "%.*s.bin", (int)len, path);
    return DSA_OK;
}

DsaStatus dsa_pack_megatron_bin_size(const char *path, int64_t *bytes) {
    Megatron m;
    DSA_TRY(megatron_paths(&m, path));
    DSA_TRY(dsa_file_size(m.bin_path, bytes));
    return DSA_OK;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static int64_t get_i64(const uint8_t *p) { return (int64_t)get_u64(p); }
static int32_t get_i32(const uint8_t *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static DsaStatus megatron_dtype(Megatron *m, int code) {
    static const int sizes[9] = {0, 1, 1, 2, 4, 8, 8, 4, 2};
    static const char *const names[9] = {"?",     "uint8",   "int8",    "int16", "int32",
                                         "int64", "float64", "float32", "uint16"};
    if (code == 6 || code == 7)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: dtype code %d (%s) holds no token ids; expected an integer dtype (1 uint8, "
                 "2 int8, 3 int16, 4 int32, 5 int64, 8 uint16)",
                 m->idx_path, code, names[code]);
    if (code < 1 || code > 8)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: unknown dtype code %d (expected 1..8, integer types 1-5 or 8)", m->idx_path,
                 code);
    m->dtype = code;
    m->item = sizes[code];
    return DSA_OK;
}

static DsaStatus megatron_header(Megatron *m) {
    const uint8_t *h = m->map;
    if (m->idx_size < MEGATRON_HEADER)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: truncated .idx: %lld bytes, the header alone needs %d", m->idx_path,
                 (long long)m->idx_size, MEGATRON_HEADER);
    if (memcmp(h, megatron_magic, 9) != 0)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: bad magic %02x %02x %02x %02x ..., expected \"MMIDIDX\\0\\0\" (a Megatron-LM "
                 "indexed dataset .idx)",
                 m->idx_path, h[0], h[1], h[2], h[3]);
    uint64_t version = get_u64(h + 9);
    if (version != 1)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: unsupported version %llu, expected 1", m->idx_path, (unsigned long long)version);
    DSA_TRY(megatron_dtype(m, h[17]));
    m->seqs = get_u64(h + 18);
    m->docs = get_u64(h + 26);
    uint64_t avail = (uint64_t)m->idx_size - MEGATRON_HEADER;
    if (m->seqs > avail / 12 || m->docs > avail / 8 || 12 * m->seqs + 8 * m->docs > avail)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: truncated .idx: sequence_count %llu and document_count %llu do not fit in its %lld "
                 "bytes (arrays need 12 bytes per sequence and 8 per document after the %d-byte header)",
                 m->idx_path, (unsigned long long)m->seqs, (unsigned long long)m->docs, (long long)m->idx_size,
                 MEGATRON_HEADER);
    uint64_t need = MEGATRON_HEADER + 12 * m->seqs + 8 * m->docs;
    if ((uint64_t)m->idx_size == need + m->seqs && m->seqs > 0)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: has sequence_modes (a multimodal dataset); only token datasets are supported",
                 m->idx_path);
    if ((uint64_t)m->idx_size != need)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s: %lld bytes, expected exactly %llu for sequence_count %llu and document_count %llu", m->idx_path,
                 (long long)m->idx_size, (unsigned long long)need, (unsigned long long)m->seqs,
                 (unsigned long long)m->docs);
    m->lengths = h + MEGATRON_HEADER;
    m->pointers = m->lengths + 4 * m->seqs;
    m->doc_index = m->pointers + 8 * m->seqs;
    return DSA_OK;
}

static DsaStatus megatron_check_index(const Megatron *m) {
    for (uint64_t i = 0; i < m->seqs; i++) {
        int32_t len = get_i32(m->lengths + 4 * i);
        int64_t ptr = get_i64(m->pointers + 8 * i);
        if (len < 0)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: sequence_lengths[%llu] = %d is negative", m->idx_path, (unsigned long long)i,
                     len);
        if (ptr < 0 || ptr > m->bin_size || (int64_t)len * m->item > m->bin_size - ptr)
            DSA_FAIL(DSA_ERR_FORMAT,
                     "%s: sequence_pointers[%llu] = %lld with length %d x %d bytes reaches past the end of "
                     "%s (%lld bytes)",
                     m->idx_path, (unsigned long long)i, (long long)ptr, len, m->item, m->bin_path,
                     (long long)m->bin_size);
    }
    if (m->docs < 1)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: document_count is 0, expected >= 1 (document_indices starts with 0)",
                 m->idx_path);
    int64_t prev = 0;
    for (uint64_t d = 0; d < m->docs; d++) {
        int64_t v = get_i64(m->doc_index + 8 * d);
        if ((d == 0 && v != 0) || v < prev || v > (int64_t)m->seqs)
            DSA_FAIL(DSA_ERR_FORMAT, "%s: document_indices[%llu] = %lld, expected %s", m->idx_path,
                     (unsigned long long)d, (long long)v,
                     d == 0     ? "0"
                     : v < prev ? "a value >= the previous entry"
                                : "<= sequence_count");
        prev = v;
    }
    if (prev != (int64_t)m->seqs)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: document_indices ends at %lld, expected sequence_count %llu", m->idx_path,
                 (long long)prev, (unsigned long long)m->seqs);
    return DSA_OK;
}

/* Decode n ids of the dataset's dtype into the sink, checking sign and vocabulary. */
static DsaStatus megatron_decode(DsaPackSink *s, const Megatron *m, const uint8_t *p, int64_t n, uint64_t seq,
                                 int64_t first) {
    for (int64_t i = 0; i < n; i++, p += m->item) {
        int64_t v;
        switch (m->dtype) {
        case 1: v = p[0]; break;
        case 2: v = (int8_t)p[0]; break;
        case 3: v = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
        case 4: v = get_i32(p); break;
        case 5: v = get_i64(p); break;
        default: v = (uint16_t)(p[0] | p[1] << 8); break;
        }
        if (v < 0)
            DSA_FAIL(DSA_ERR_RANGE, "%s: token %lld of sequence %llu is %lld, negative", m->bin_path,
                     (long long)(first + i), (unsigned long long)seq, (long long)v);
        if ((uint64_t)v >= s->vocab_size)
            DSA_FAIL(DSA_ERR_RANGE, "%s: token %lld of sequence %llu is %lld, >= vocab_size %llu", m->bin_path,
                     (long long)(first + i), (unsigned long long)seq, (long long)v, (unsigned long long)s->vocab_size);
        s->doc[s->doc_len++] = (uint32_t)v;
    }
    return DSA_OK;
}

static DsaStatus pread_full(int fd, uint8_t *buf, size_t want, int64_t offset, const char *path) {
    for (size_t got = 0; got < want;) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)offset + (off_t)got);
        if (n <= 0)
            DSA_FAIL(DSA_ERR_IO, "%s: read of %zu bytes at byte %lld failed: %s", path, want, (long long)offset,
                     n < 0 ? strerror(errno) : "file shrank while packing");
        got += (size_t)n;
    }
    return DSA_OK;
}

static DsaStatus megatron_pack(DsaPackSink *s, const Megatron *m, int fd, uint8_t *block) {
    int64_t done_bytes = 0;
    for (uint64_t d = 0; d + 1 < m->docs; d++) {
        uint64_t a = (uint64_t)get_i64(m->doc_index + 8 * d), b = (uint64_t)get_i64(m->doc_index + 8 * (d + 1));
        for (uint64_t q = a; q < b; q++) {
            int64_t len = get_i32(m->lengths + 4 * q), ptr = get_i64(m->pointers + 8 * q);
            DSA_TRY(dsa_pack_sink_reserve(s, len));
            for (int64_t first = 0; first < len;) {
                int64_t n = len - first < BIN_BLOCK / m->item ? len - first : BIN_BLOCK / m->item;
                size_t want = (size_t)(n * m->item);
                DSA_TRY(pread_full(fd, block, want, ptr + first * m->item, m->bin_path));
                DSA_TRY(megatron_decode(s, m, block, n, q, first));
                first += n;
                done_bytes += (int64_t)want;
            }
        }
        if (s->doc_len > 0 && s->doc[s->doc_len - 1] == s->eos_id) s->doc_len--;
        DSA_TRY(dsa_pack_sink_end_doc(s));
        dsa_pack_sink_progress(s, done_bytes);
    }
    return DSA_OK;
}

DsaStatus dsa_pack_import_megatron(DsaPackSink *s, const char *path) {
    Megatron m = {0};
    DSA_TRY(megatron_paths(&m, path));
    DSA_TRY(dsa_file_size(m.idx_path, &m.idx_size));
    DSA_TRY(dsa_file_size(m.bin_path, &m.bin_size));
    DsaStatus st = DSA_OK;
    int idx_fd = open(m.idx_path, O_RDONLY), bin_fd = open(m.bin_path, O_RDONLY);
    uint8_t *block = NULL;
    void *map = MAP_FAILED;
    if (idx_fd < 0 || bin_fd < 0)
        DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: cannot open: %s", idx_fd < 0 ? m.idx_path : m.bin_path,
                      strerror(errno));
    if (m.idx_size > 0) {
        map = mmap(NULL, (size_t)m.idx_size, PROT_READ, MAP_PRIVATE, idx_fd, 0);
        if (map == MAP_FAILED) DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: cannot map: %s", m.idx_path, strerror(errno));
    }
    m.map = map == MAP_FAILED ? (const uint8_t *)"" : map;
    DSA_TRY_GOTO(st, megatron_header(&m), done);
    DSA_TRY_GOTO(st, megatron_check_index(&m), done);
    block = dsa_malloc(BIN_BLOCK);
    if (!block) DSA_FAIL_GOTO(st, done, DSA_ERR_NOMEM, "%s: out of memory for a read buffer", m.bin_path);
    DSA_TRY_GOTO(st, megatron_pack(s, &m, bin_fd, block), done);
done:
    s->doc_len = 0;
    dsa_free(block, BIN_BLOCK);
    if (map != MAP_FAILED) munmap(map, (size_t)m.idx_size);
    if (idx_fd >= 0) close(idx_fd);
    if (bin_fd >= 0) close(bin_fd);
    return st;
}
