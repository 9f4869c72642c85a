/* test_pack.c: `dsa pack` importers (data/pack.h): a round trip of every format (tokens,
 * document offsets and EOS placement read back from the shards), shard rollover and
 * document splitting, determinism, and every bad-input case, each error checked for
 * the file and position it names. Megatron inputs are written here byte by byte. */
#include "tests/test_util.h"

#include <sys/stat.h>

#include "core/mem.h"
#include "data/pack.h"
#include "data/tokenizer_bytes.h"

/* ---- expected streams and reading shards back ------------------------------------ */

enum { MAX_TOK = 1 << 20, MAX_DOCS = 4096 };

typedef struct {
    uint32_t *tokens; /* (n) the whole stream, EOS included */
    int64_t n;
    int64_t ends[MAX_DOCS]; /* stream position after each document's last token */
    int64_t ndocs;
    int shards;
    int64_t shard_tokens[64];
    DsaShardMeta meta;
} Stream;

static void stream_init(Stream *s) {
    memset(s, 0, sizeof *s);
    s->tokens = dsa_malloc(MAX_TOK * sizeof *s->tokens);
    assert_non_null(s->tokens);
}

static void stream_free(Stream *s) { dsa_free(s->tokens, MAX_TOK * sizeof *s->tokens); }

static void stream_doc(Stream *s, const uint32_t *t, int64_t n, uint32_t eos) {
    memcpy(s->tokens + s->n, t, (size_t)n * sizeof *t);
    s->n += n;
    s->tokens[s->n++] = eos;
    s->ends[s->ndocs++] = s->n;
}

static void stream_text(Stream *s, const char *text) {
    uint32_t t[4096];
    size_t n = strlen(text);
    dsa_tokenizer_bytes_encode((const uint8_t *)text, n, t);
    stream_doc(s, t, (int64_t)n, DSA_BYTES_EOS_ID);
}

/* Read every shard of `prefix` into `s` (document ends in stream positions). */
static void stream_read(Stream *s, const char *prefix) {
    DsaShardScratch *scratch = NULL;
    assert_ok(dsa_shard_scratch_new(&scratch));
    for (int i = 0;; i++) {
        char path[1024];
        dsa_shardset_path(path, sizeof path, prefix, i);
        if (access(path, F_OK) != 0) break;
        DsaShard sh;
        assert_ok(dsa_shard_open(&sh, path));
        assert_true(s->n + sh.num_tokens <= MAX_TOK);
        assert_ok(dsa_shard_read(&sh, 0, sh.num_tokens, s->tokens + s->n, scratch));
        for (int64_t d = 0; d < sh.num_docs; d++) s->ends[s->ndocs++] = s->n + (int64_t)sh.doc_offsets[d + 1];
        s->n += sh.num_tokens;
        s->shard_tokens[s->shards++] = sh.num_tokens;
        s->meta = sh.meta;
        dsa_shard_close(&sh);
    }
    dsa_shard_scratch_free(scratch);
}

static void assert_streams_equal(const Stream *want, const Stream *got) {
    assert_int_equal(got->n, want->n);
    for (int64_t i = 0; i < want->n; i++)
        if (want->tokens[i] != got->tokens[i])
            fail_msg("token %lld: want %u, got %u", (long long)i, want->tokens[i], got->tokens[i]);
    assert_int_equal(got->ndocs, want->ndocs);
    for (int64_t d = 0; d < want->ndocs; d++) assert_int_equal(got->ends[d], want->ends[d]);
}

static DsaPackOptions options(DsaPackFormat format, const char *const *inputs, int n, const char *out) {
    DsaPackOptions o;
    dsa_pack_options_default(&o);
    o.format = format;
    o.inputs = inputs;
    o.n_inputs = n;
    o.out_prefix = test_path(out);
    o.chunk_tokens = 7; /* several chunks even for tiny inputs */
    return o;
}

/* Pack, read back and compare with `want`; also checks the run's stats. */
static void pack_and_check(const DsaPackOptions *o, const Stream *want) {
    DsaShardSetStats stats;
    assert_ok(dsa_pack_run(o, &stats));
    Stream got;
    stream_init(&got);
    stream_read(&got, o->out_prefix);
    assert_streams_equal(want, &got);
    assert_int_equal(stats.num_tokens, want->n);
    assert_int_equal(stats.num_docs, want->ndocs);
    assert_int_equal(stats.num_shards, got.shards);
    stream_free(&got);
}

static DsaShardMeta read_meta(const char *prefix) {
    char path[1024];
    dsa_shardset_path(path, sizeof path, prefix, 0);
    DsaShard sh;
    assert_ok(dsa_shard_open(&sh, path));
    DsaShardMeta m = sh.meta;
    dsa_shard_close(&sh);
    return m;
}

static int shard_exists(const char *prefix, int i) {
    char path[1024];
    dsa_shardset_path(path, sizeof path, prefix, i);
    return access(path, F_OK) == 0;
}

/* ---- text and jsonl ---------------------------------------------------------------- */

static void test_text(void **state) {
    (void)state;
    const char *a = "hello, world\n", *b = "w\xc3\xb6rld\x01\xff";
    mkdir(test_path("texts"), 0755);
    test_write_file("texts/b.txt", b, strlen(b));
    test_write_file("texts/a.txt", a, strlen(a));
    test_write_file("texts/empty.txt", "", 0);
    test_write_file("texts/.hidden", "x", 1);
    const char *single = test_write_file("one.txt", "z", 1);
    const char *inputs[] = {single, test_path("texts")};
    DsaPackOptions o = options(DSA_PACK_TEXT, inputs, 2, "text/out");
    Stream want;
    stream_init(&want);
    stream_text(&want, "z");
    stream_text(&want, a); /* directory order: a.txt, b.txt; empty.txt dropped */
    stream_text(&want, b);
    pack_and_check(&o, &want);
    DsaShardMeta m = read_meta(o.out_prefix);
    assert_string_equal(m.tokenizer, "bytes-v1");
    assert_int_equal(m.vocab_size, 257);
    assert_int_equal(m.eos_id, 256);
    assert_int_equal(m.chunk_tokens, 7);
    assert_int_equal(m.zstd_level, 3);
    stream_free(&want);
}

static void test_jsonl_text(void **state) {
    (void)state;
    char *big = dsa_malloc(300001);
    memset(big, 'q', 300000);
    big[300000] = '\0';
    FILE *f = fopen(test_path("t.jsonl"), "w");
    fprintf(f, "{\"text\": \"first\\nline\", \"meta\": 1}\n\n   \n{\"text\": \"\"}\n{\"text\": \"caf\\u00e9\"}\n");
    fprintf(f, "{\"text\": \"%s\"}", big); /* the last line has no newline */
    fclose(f);
    const char *inputs[] = {test_path("t.jsonl")};
    DsaPackOptions o = options(DSA_PACK_JSONL, inputs, 1, "jt");
    o.chunk_tokens = 4096;
    Stream want;
    stream_init(&want);
    stream_text(&want, "first\nline");
    stream_text(&want, "caf\xc3\xa9");
    uint32_t *t = dsa_malloc(300000 * sizeof *t);
    dsa_tokenizer_bytes_encode((const uint8_t *)big, 300000, t);
    stream_doc(&want, t, 300000, DSA_BYTES_EOS_ID);
    pack_and_check(&o, &want);
    assert_string_equal(read_meta(o.out_prefix).tokenizer, "bytes-v1");
    dsa_free(t, 300000 * sizeof *t);
    dsa_free(big, 300001);
    stream_free(&want);
}

static void test_jsonl_ids(void **state) {
    (void)state;
    const char *text = "{\"input_ids\": [5, 6, 7]}\n"
                       "{\"input_ids\": [9, 0]}\n" /* ends with EOS 0: kept once */
                       "{\"input_ids\": []}\n"     /* empty: dropped */
                       "{\"input_ids\": [0]}\n"    /* only EOS: empty, dropped */
                       "{\"input_ids\": [99, 0, 98], \"text_len\": 3}\n";
    const char *inputs[] = {test_write_file("ids.jsonl", text, strlen(text))};
    DsaPackOptions o = options(DSA_PACK_JSONL, inputs, 1, "ji");
    o.vocab_size = 100;
    o.eos_id = 0;
    o.tokenizer = "test-tok";
    Stream want;
    stream_init(&want);
    stream_doc(&want, (const uint32_t[]){5, 6, 7}, 3, 0);
    stream_doc(&want, (const uint32_t[]){9}, 1, 0);
    stream_doc(&want, (const uint32_t[]){99, 0, 98}, 3, 0);
    pack_and_check(&o, &want);
    DsaShardMeta m = read_meta(o.out_prefix);
    assert_string_equal(m.tokenizer, "test-tok");
    assert_int_equal(m.vocab_size, 100);
    assert_int_equal(m.eos_id, 0);
    /* Custom keys. */
    const char *custom = "{\"body\": \"ab\"}\n";
    const char *in2[] = {test_write_file("custom.jsonl", custom, strlen(custom))};
    DsaPackOptions o2 = options(DSA_PACK_JSONL, in2, 1, "jc");
    o2.text_key = "body";
    Stream want2;
    stream_init(&want2);
    stream_text(&want2, "ab");
    pack_and_check(&o2, &want2);
    stream_free(&want);
    stream_free(&want2);
}

/* ---- raw tokens -------------------------------------------------------------------- */

static void test_raw(void **state) {
    (void)state;
    /* EOS = 3: documents [1 2], [] (dropped), [65535 4], trailing [7]. */
    const uint16_t u16[] = {1, 2, 3, 3, 65535, 4, 3, 7};
    const char *in16[] = {test_write_file("a.u16", u16, sizeof u16)};
    DsaPackOptions o = options(DSA_PACK_U16, in16, 1, "u16");
    o.vocab_size = 65536;
    o.eos_id = 3;
    Stream want;
    stream_init(&want);
    stream_doc(&want, (const uint32_t[]){1, 2}, 2, 3);
    stream_doc(&want, (const uint32_t[]){65535, 4}, 2, 3);
    stream_doc(&want, (const uint32_t[]){7}, 1, 3);
    pack_and_check(&o, &want);
    assert_string_equal(read_meta(o.out_prefix).tokenizer, "external");
    stream_free(&want);

    /* u32, two files: the second's leading EOS ends nothing; files end documents. */
    const uint32_t a[] = {100000, 129279}, b[] = {1, 5, 1};
    const char *in32[] = {test_write_file("a.u32", a, sizeof a), test_write_file("b.u32", b, sizeof b)};
    o = options(DSA_PACK_U32, in32, 2, "u32");
    o.vocab_size = 129280;
    o.eos_id = 1;
    stream_init(&want);
    stream_doc(&want, a, 2, 1);
    stream_doc(&want, (const uint32_t[]){5}, 1, 1);
    pack_and_check(&o, &want);
    stream_free(&want);
}

/* ---- Megatron ------------------------------------------------------------------------ */

typedef struct {
    uint8_t buf[4096];
    size_t len;
} Bytes;

static void put(Bytes *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) b->buf[b->len++] = (uint8_t)(v >> (8 * i));
}

/* A Megatron dataset of `nseq` sequences (lengths `lens`, tokens of `item` bytes taken
 * from `tokens` in order) grouped by `docidx` (ndoc entries). Returns the .idx bytes
 * in `idx` and writes <name>.bin. */
static void megatron_build(Bytes *idx, const char *name, int dtype, int item, const int64_t *tokens,
                           const int32_t *lens, int nseq, const int64_t *docidx, int ndoc) {
    Bytes bin = {0};
    idx->len = 0;
    memcpy(idx->buf, "MMIDIDX\0\0", 9);
    idx->len = 9;
    put(idx, 1, 8);
    put(idx, (uint64_t)dtype, 1);
    put(idx, (uint64_t)nseq, 8);
    put(idx, (uint64_t)ndoc, 8);
    int64_t k = 0;
    for (int s = 0; s < nseq; s++) put(idx, (uint64_t)(uint32_t)lens[s], 4);
    for (int s = 0; s < nseq; s++) {
        put(idx, bin.len, 8);
        for (int j = 0; j < lens[s]; j++) put(&bin, (uint64_t)tokens[k++], item);
    }
    for (int d = 0; d < ndoc; d++) put(idx, (uint64_t)docidx[d], 8);
    char path[200];
    snprintf(path, sizeof path, "%s.bin", name);
    test_write_file(path, bin.buf, bin.len);
}

static void megatron_write_idx(const char *name, const Bytes *idx, size_t len) {
    char path[200];
    snprintf(path, sizeof path, "%s.idx", name);
    test_write_file(path, idx->buf, len);
}

/* Five sequences in four documents: [10 11][12] | [] | [13 2(eos)] | [2][14 15]. */
static const int64_t mg_tokens[] = {10, 11, 12, 13, 2, 2, 14, 15};
static const int32_t mg_lens[] = {2, 1, 2, 1, 2};
static const int64_t mg_docidx[] = {0, 2, 2, 3, 5};

static void expect_megatron(Stream *want) {
    stream_doc(want, (const uint32_t[]){10, 11, 12}, 3, 2);
    stream_doc(want, (const uint32_t[]){13}, 1, 2); /* its EOS is not doubled */
    stream_doc(want, (const uint32_t[]){2, 14, 15}, 3, 2);
}

static void test_megatron(void **state) {
    (void)state;
    static const struct { int dtype, item; } types[] = {{8, 2}, {4, 4}, {5, 8}, {1, 1}, {3, 2}, {2, 1}};
    for (int t = 0; t < 6; t++) {
        char name[64], out[64];
        snprintf(name, sizeof name, "mg%d", t);
        snprintf(out, sizeof out, "mgout%d/x", t);
        Bytes idx;
        megatron_build(&idx, name, types[t].dtype, types[t].item, mg_tokens, mg_lens, 5, mg_docidx, 5);
        megatron_write_idx(name, &idx, idx.len);
        /* The three spellings of a dataset: prefix, .bin, .idx. */
        char given[600];
        snprintf(given, sizeof given, "%s%s", test_path(name), t % 3 == 0 ? "" : t % 3 == 1 ? ".bin" : ".idx");
        const char *inputs[] = {given};
        DsaPackOptions o = options(DSA_PACK_MEGATRON, inputs, 1, out);
        o.vocab_size = 16;
        o.eos_id = 2;
        Stream want;
        stream_init(&want);
        expect_megatron(&want);
        pack_and_check(&o, &want);
        stream_free(&want);
    }
    /* A directory of datasets: every *.idx in name order. */
    mkdir(test_path("mgdir"), 0755);
    Bytes idx;
    megatron_build(&idx, "mgdir/b", 8, 2, mg_tokens, mg_lens, 5, mg_docidx, 5);
    megatron_write_idx("mgdir/b", &idx, idx.len);
    const int64_t one[] = {7};
    const int32_t one_len[] = {1};
    const int64_t one_doc[] = {0, 1};
    megatron_build(&idx, "mgdir/a", 8, 2, one, one_len, 1, one_doc, 2);
    megatron_write_idx("mgdir/a", &idx, idx.len);
    const char *inputs[] = {test_path("mgdir")};
    DsaPackOptions o = options(DSA_PACK_MEGATRON, inputs, 1, "mgdirout");
    o.vocab_size = 16;
    o.eos_id = 2;
    Stream want;
    stream_init(&want);
    stream_doc(&want, (const uint32_t[]){7}, 1, 2);
    expect_megatron(&want);
    pack_and_check(&o, &want);
    stream_free(&want);
}

/* A good uint16 dataset's .idx, corrupted by `edit`, must fail with `needle`. */
static void megatron_bad(const char *name, void (*edit)(Bytes *, size_t *), DsaStatus status, const char *needle) {
    Bytes idx;
    megatron_build(&idx, name, 8, 2, mg_tokens, mg_lens, 5, mg_docidx, 5);
    size_t len = idx.len;
    edit(&idx, &len);
    megatron_write_idx(name, &idx, len);
    const char *inputs[] = {test_path(name)};
    DsaPackOptions o = options(DSA_PACK_MEGATRON, inputs, 1, "mgbad");
    o.vocab_size = 16;
    o.eos_id = 2;
    assert_fails_with(dsa_pack_run(&o, NULL), status, needle);
    assert_non_null(strstr(dsa_error_message(), name));
    assert_false(shard_exists(o.out_prefix, 0));
}

static void edit_magic(Bytes *b, size_t *len) {
    (void)len;
    b->buf[0] = 'X';
}
static void edit_version(Bytes *b, size_t *len) {
    (void)len;
    b->buf[9] = 2;
}
static void edit_float(Bytes *b, size_t *len) {
    (void)len;
    b->buf[17] = 7;
}
static void edit_dtype(Bytes *b, size_t *len) {
    (void)len;
    b->buf[17] = 9;
}
static void edit_truncate(Bytes *b, size_t *len) {
    (void)b;
    *len -= 8;
}
static void edit_header(Bytes *b, size_t *len) {
    (void)b;
    *len = 20;
}
static void edit_trailing(Bytes *b, size_t *len) { b->buf[(*len)++] = 0; }
static void edit_pointer(Bytes *b, size_t *len) {
    (void)len;
    b->buf[34 + 5 * 4 + 4 * 8] = 15;
} /* pointer 4 -> 15 */
static void edit_length(Bytes *b, size_t *len) {
    (void)len;
    b->buf[34 + 4 * 4 + 3] = 0x80;
} /* length 4 < 0 */
static void edit_docidx(Bytes *b, size_t *len) {
    (void)len;
    b->buf[34 + 5 * 12 + 2 * 8] = 1;
} /* 0,2,1,3,5 */
static void edit_docfirst(Bytes *b, size_t *len) {
    (void)len;
    b->buf[34 + 5 * 12] = 1;
} /* 1,2,2,3,5 */
static void edit_doclast(Bytes *b, size_t *len) {
    (void)len;
    b->buf[34 + 5 * 12 + 4 * 8] = 4;
} /* ends at 4 */

static void test_megatron_errors(void **state) {
    (void)state;
    megatron_bad("bad_magic", edit_magic, DSA_ERR_FORMAT, "bad magic");
    megatron_bad("bad_version", edit_version, DSA_ERR_FORMAT, "unsupported version 2, expected 1");
    megatron_bad("bad_float", edit_float, DSA_ERR_FORMAT, "dtype code 7 (float32)");
    megatron_bad("bad_dtype", edit_dtype, DSA_ERR_FORMAT, "unknown dtype code 9");
    megatron_bad("bad_trunc", edit_truncate, DSA_ERR_FORMAT, "truncated .idx");
    megatron_bad("bad_header", edit_header, DSA_ERR_FORMAT, "the header alone needs 34");
    megatron_bad("bad_trailing", edit_trailing, DSA_ERR_FORMAT, "expected exactly");
    megatron_bad("bad_pointer", edit_pointer, DSA_ERR_FORMAT, "sequence_pointers[4] = 15");
    megatron_bad("bad_length", edit_length, DSA_ERR_FORMAT, "sequence_lengths[4]");
    megatron_bad("bad_docidx", edit_docidx, DSA_ERR_FORMAT, "document_indices[2] = 1");
    megatron_bad("bad_docfirst", edit_docfirst, DSA_ERR_FORMAT, "document_indices[0] = 1, expected 0");
    megatron_bad("bad_doclast", edit_doclast, DSA_ERR_FORMAT, "document_indices ends at 4");

    /* Negative ids (int16) and ids past the vocabulary name the .bin and the position. */
    const int64_t neg[] = {1, -5};
    const int32_t lens[] = {2};
    const int64_t docs[] = {0, 1};
    Bytes idx;
    megatron_build(&idx, "neg", 3, 2, neg, lens, 1, docs, 2);
    megatron_write_idx("neg", &idx, idx.len);
    const char *inputs[] = {test_path("neg")};
    DsaPackOptions o = options(DSA_PACK_MEGATRON, inputs, 1, "mgneg");
    o.vocab_size = 16;
    o.eos_id = 2;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_RANGE, "neg.bin: token 1 of sequence 0 is -5, negative");
    const int64_t big[] = {1, 16};
    megatron_build(&idx, "big", 8, 2, big, lens, 1, docs, 2);
    megatron_write_idx("big", &idx, idx.len);
    inputs[0] = test_path("big.idx");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_RANGE, "big.bin: token 1 of sequence 0 is 16, >= vocab_size 16");
    /* A .bin shorter than the index says; a missing .bin. */
    megatron_build(&idx, "short", 8, 2, big, lens, 1, docs, 2);
    megatron_write_idx("short", &idx, idx.len);
    test_write_file("short.bin", "\1", 1);
    inputs[0] = test_path("short");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "past the end of");
    inputs[0] = test_path("missing");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_IO, "missing.idx");
}

/* ---- synthetic ---------------------------------------------------------------------- */

static void test_synthetic(void **state) {
    (void)state;
    DsaPackOptions o = options(DSA_PACK_SYNTHETIC, NULL, 0, "syn/s");
    o.synthetic.task = DSA_SYN_TASK_MIXED;
    o.synthetic.doc_tokens = 2048;
    o.synthetic.total_tokens = 5 * 2048 - 100; /* rounded up to 5 documents */
    o.synthetic.n_distances = 2;
    o.synthetic.distances[0] = 50;
    o.synthetic.distances[1] = 2000;
    o.synthetic.seed = 7;
    o.vocab_size = 300;
    o.shard_tokens = 3 * 2048; /* 2 shards, documents not split */
    o.synthetic.vocab_size = 300;
    DsaSynGen *gen = NULL;
    assert_ok(dsa_synthetic_gen_new(&gen, &o.synthetic));
    Stream want;
    stream_init(&want);
    uint32_t doc[2047];
    for (int64_t d = 0; d < 5; d++) {
        assert_ok(dsa_synthetic_gen_doc(gen, d, doc));
        stream_doc(&want, doc, 2047, DSA_SYN_EOS);
    }
    dsa_synthetic_gen_free(gen);
    pack_and_check(&o, &want);
    DsaShardMeta m = read_meta(o.out_prefix);
    assert_string_equal(m.tokenizer, "synthetic-v1");
    assert_int_equal(m.vocab_size, 300);
    assert_int_equal(m.eos_id, 1);
    assert_true(shard_exists(o.out_prefix, 1) && !shard_exists(o.out_prefix, 2));
    /* The scanner on the packed stream: every answer found, in its document. */
    Stream got;
    stream_init(&got);
    stream_read(&got, o.out_prefix);
    DsaSynScan scan = {0};
    assert_ok(dsa_synthetic_scan(got.tokens, got.n, &scan));
    assert_true(scan.count >= 5);
    for (int64_t a = 0; a < scan.count; a++) {
        assert_true(scan.answers[a].values_match);
        assert_true(scan.answers[a].distance == 50 || scan.answers[a].distance == 2000);
    }
    dsa_synthetic_scan_free(&scan);
    stream_free(&got);
    stream_free(&want);
    /* --eos-id other than 1 conflicts; a bad distance is refused before writing. */
    o.eos_id = 0;
    o.overwrite = 1;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "synthetic-v1 has EOS id 1");
    o.eos_id = -1;
    o.synthetic.distances[1] = 2048;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "distance 2048 does not fit");
}

/* ---- shards: rollover, splitting, overwrite ---------------------------------------- */

static void test_rollover(void **state) {
    (void)state;
    /* Documents of 3, 4, 25 and 2 tokens (+ EOS) into shards of 10 tokens. */
    uint32_t raw[40];
    int64_t n = 0, lens[] = {3, 4, 25, 2};
    Stream want;
    stream_init(&want);
    for (int d = 0; d < 4; d++) {
        uint32_t doc[32];
        for (int64_t j = 0; j < lens[d]; j++) doc[j] = raw[n++] = (uint32_t)(10 + d * 30 + j);
        raw[n++] = 0;
        stream_doc(&want, doc, lens[d], 0);
    }
    const char *inputs[] = {test_write_file("roll.u32", raw, (size_t)n * 4)};
    DsaPackOptions o = options(DSA_PACK_U32, inputs, 1, "roll/r");
    o.vocab_size = 200;
    o.eos_id = 0;
    o.shard_tokens = 10;
    DsaShardSetStats stats;
    assert_ok(dsa_pack_run(&o, &stats));
    Stream got;
    stream_init(&got);
    stream_read(&got, o.out_prefix);
    assert_true(got.shards >= 4);
    assert_int_equal(stats.num_shards, got.shards);
    assert_int_equal(stats.num_docs, 4);
    /* The concatenated stream is the input; every shard is within budget. */
    assert_int_equal(got.n, want.n);
    assert_memory_equal(got.tokens, want.tokens, (size_t)want.n * 4);
    for (int s = 0; s < got.shards; s++) assert_true(got.shard_tokens[s] <= 10);
    /* Every real document end is a shard document end, after its EOS; the extra ends
     * (pieces of the split document) fall exactly on shard ends, without EOS. */
    int64_t k = 0, boundary = 0, s = 0;
    for (int64_t d = 0; d < got.ndocs; d++) {
        while (s < got.shards && boundary + got.shard_tokens[s] < got.ends[d]) boundary += got.shard_tokens[s++];
        if (k < want.ndocs && got.ends[d] == want.ends[k]) {
            assert_int_equal(got.tokens[got.ends[d] - 1], 0);
            k++;
        } else {
            assert_int_equal(got.ends[d], boundary + got.shard_tokens[s]); /* a split at a shard end */
            assert_int_not_equal(got.tokens[got.ends[d] - 1], 0);
        }
    }
    assert_int_equal(k, want.ndocs);
    assert_true(got.ndocs > want.ndocs); /* the 25-token document was split */
    stream_free(&got);
    stream_free(&want);
}

static void test_overwrite_and_determinism(void **state) {
    (void)state;
    const char *inputs[] = {test_write_file("det.txt", "determinism", 11)};
    DsaPackOptions o = options(DSA_PACK_TEXT, inputs, 1, "det");
    Stream want;
    stream_init(&want);
    stream_text(&want, "determinism");
    pack_and_check(&o, &want);
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "already exist");
    assert_true(shard_exists(o.out_prefix, 0)); /* refused, not removed */
    o.overwrite = 1;
    pack_and_check(&o, &want); /* same tokens again */
    stream_free(&want);
    /* Overwrite removes stale shards beyond the new run's count. */
    o.shard_tokens = 4;
    assert_ok(dsa_pack_run(&o, NULL));
    assert_true(shard_exists(o.out_prefix, 2));
    o.shard_tokens = 100;
    assert_ok(dsa_pack_run(&o, NULL));
    assert_false(shard_exists(o.out_prefix, 1));
}

/* ---- bad inputs -------------------------------------------------------------------- */

static void test_errors(void **state) {
    (void)state;
    const char *inputs[2] = {test_path("nope.txt")};
    DsaPackOptions o = options(DSA_PACK_TEXT, inputs, 1, "err");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_IO, "nope.txt: no such file");

    const char *bad = "{\"text\": \"ok\"}\n\n{\"text\": \"unterminated}\n";
    inputs[0] = test_write_file("bad.jsonl", bad, strlen(bad));
    o = options(DSA_PACK_JSONL, inputs, 1, "err");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "bad.jsonl:3: malformed JSON");
    assert_false(shard_exists(o.out_prefix, 0)); /* no partial output */

    const char *notobj = "[1, 2]\n";
    inputs[0] = test_write_file("arr.jsonl", notobj, strlen(notobj));
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "arr.jsonl:1: line is an array");
    const char *nokey = "{\"txt\": \"a\"}\n";
    inputs[0] = test_write_file("nokey.jsonl", nokey, strlen(nokey));
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "nokey.jsonl:1: object has neither \"text\"");
    const char *both = "{\"text\": \"a\", \"input_ids\": [1]}\n";
    inputs[0] = test_write_file("both.jsonl", both, strlen(both));
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "both.jsonl:1: object has both");
    const char *wrongtype = "{\"text\": 5}\n";
    inputs[0] = test_write_file("type.jsonl", wrongtype, strlen(wrongtype));
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "type.jsonl:1: key \"text\" is a number");

    const char *ids = "{\"input_ids\": [1, 2]}\n{\"input_ids\": [3, 999]}\n";
    inputs[0] = test_write_file("range.jsonl", ids, strlen(ids));
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "range.jsonl:1: pre-tokenized input needs --vocab-size");
    o.vocab_size = 100;
    o.eos_id = 0;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_RANGE, "range.jsonl:2: input_ids[1] = 999 is >= vocab_size 100");
    const char *frac = "{\"input_ids\": [1.5]}\n";
    inputs[0] = test_write_file("frac.jsonl", frac, strlen(frac));
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "frac.jsonl:1: input_ids[0]");
    const char *mixed = "{\"input_ids\": [1]}\n{\"text\": \"x\"}\n";
    inputs[0] = test_write_file("mixed.jsonl", mixed, strlen(mixed));
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "mixed.jsonl:2: text (bytes-v1 tokenizer) record");
    assert_non_null(strstr(dsa_error_message(), "mixed.jsonl:1 fixed this run"));
    /* Mixing across files. */
    const char *idsonly = "{\"input_ids\": [4]}\n", *textonly = "{\"text\": \"x\"}\n";
    inputs[0] = test_write_file("ids1.jsonl", idsonly, strlen(idsonly));
    inputs[1] = test_write_file("text1.jsonl", textonly, strlen(textonly));
    o.n_inputs = 2;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "text1.jsonl:1: text (bytes-v1 tokenizer) record");
    assert_non_null(strstr(dsa_error_message(), "packing input 2 of 2"));

    /* Raw files: odd size, ids out of range, missing vocabulary. */
    inputs[0] = test_write_file("odd.u16", "\1\0\2\0\3", 5);
    o = options(DSA_PACK_U16, inputs, 1, "err");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "--format u16: pre-tokenized input needs --vocab-size");
    o.vocab_size = 10;
    o.eos_id = 0;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "odd.u16: size 5 bytes is not a multiple of 2");
    const uint16_t big[] = {1, 0, 12, 3};
    inputs[0] = test_write_file("big.u16", big, sizeof big);
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_RANGE,
                      "big.u16: token 2 (byte offset 4) is 12, >= vocab_size 10");
    o.eos_id = 10;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "--eos-id 10 must be < --vocab-size 10");

    /* Text with a conflicting vocabulary; all-empty inputs; a directory without files. */
    inputs[0] = test_write_file("empty.txt", "", 0);
    o = options(DSA_PACK_TEXT, inputs, 1, "err");
    o.vocab_size = 1000;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "bytes-v1");
    o.vocab_size = 0;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_FORMAT, "empty.txt (it is empty)");
    mkdir(test_path("emptydir"), 0755);
    inputs[0] = test_path("emptydir");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_IO, "emptydir holds no regular files");
    o = options(DSA_PACK_TEXT, inputs, 0, "err");
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_ARG, "needs at least one input");
    DsaPackFormat f;
    assert_fails_with(dsa_pack_format_parse("jsnol", &f), DSA_ERR_ARG, "did you mean \"jsonl\"");
}

/* A failure after whole shards were written removes them all. */
static void test_failure_cleans_up(void **state) {
    (void)state;
    uint32_t raw[64];
    for (int i = 0; i < 63; i++) raw[i] = (uint32_t)(i % 5 + 1);
    raw[63] = 77; /* out of range at the very end */
    const char *inputs[] = {test_write_file("late.u32", raw, sizeof raw)};
    DsaPackOptions o = options(DSA_PACK_U32, inputs, 1, "late/x");
    o.vocab_size = 10;
    o.eos_id = 5;
    o.shard_tokens = 4;
    assert_fails_with(dsa_pack_run(&o, NULL), DSA_ERR_RANGE, "late.u32: token 63");
    assert_false(shard_exists(o.out_prefix, 0));
    assert_false(shard_exists(o.out_prefix, 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_jsonl_text),
        cmocka_unit_test(test_jsonl_ids),
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_megatron),
        cmocka_unit_test(test_megatron_errors),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_rollover),
        cmocka_unit_test(test_overwrite_and_determinism),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_failure_cleans_up),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
