/* pack.h: `dsa pack`: turn text, JSON lines, raw token files, Megatron-LM indexed
 * datasets or synthetic recall tasks into token shards (format in data/shard.h).
 *
 * Input formats (DsaPackFormat):
 *   text      each input file is one document, byte-tokenized ("bytes-v1", vocab 257,
 *             EOS 256; data/tokenizer_bytes.h).
 *   jsonl     one JSON object per line. {"text": "..."} is byte-tokenized;
 *             {"input_ids": [..]} is pre-tokenized (needs vocab_size and eos_id). One run
 *             takes one kind; blank lines are skipped; a line with both keys is refused.
 *   u16, u32  raw little-endian token ids (pre-tokenized). eos_id tokens delimit
 *             documents; a trailing piece without EOS is a document of its own. The
 *             input "-" is standard input, read to its end (tools/tokenize_pack.py
 *             pipes a Hugging Face tokenizer's ids in this way).
 *   megatron  Megatron-LM MMIDIDX indexed dataset (data/import_megatron.c), given as
 *             prefix, prefix.bin or prefix.idx. One Megatron document = one document.
 *   synthetic generated long-range recall documents (data/synthetic.h); no inputs.
 * An input directory stands for its regular files sorted by name (dot files skipped;
 * for megatron, its *.idx files).
 *
 * Every document goes to dsa_shardset_add_doc, which appends EOS. Pre-tokenized
 * documents (jsonl ids, megatron) that already end with eos_id keep one EOS, not two.
 * Empty documents are dropped; no document at all is an error. Output is a pure
 * function of the inputs and options (byte-identical token streams).
 *
 * NOTE: the open document is held whole in memory (4 bytes per token), because the
 * shard set takes whole documents (it must know where a document ends to place EOS and
 * to split it across shards). Inputs are otherwise streamed: a text file or a raw file
 * without EOS is one document and needs 4x its token count in memory.
 *
 * NOTE: existing shards "<out>-00000.h5"... are refused unless `overwrite` is set (they
 * are then removed first, their manifest before them), and a failed run removes the
 * shards it wrote, so a prefix never holds a mix of two runs. A run that was killed
 * leaves shards without the set's manifest "<out>.manifest.json" (written last,
 * data/shard.h): readers refuse them by name, and the next run into the same prefix
 * replaces them without --force (with a warning), after removing the hidden
 * ".<out>-NNNNN.h5.tmp.PID" temporaries of the killed run.
 */
#ifndef DSA_DATA_PACK_H
#define DSA_DATA_PACK_H

#include <stdint.h>

#include "core/error.h"
#include "core/progress.h"
#include "data/shard.h"
#include "data/synthetic.h"

typedef enum {
    DSA_PACK_TEXT = 0,
    DSA_PACK_JSONL,
    DSA_PACK_U16,
    DSA_PACK_U32,
    DSA_PACK_MEGATRON,
    DSA_PACK_SYNTHETIC,
} DsaPackFormat;

typedef struct {
    DsaPackFormat format;
    const char *const *inputs; /* (n_inputs) files or directories; none for synthetic */
    int n_inputs;
    const char *out_prefix; /* shard i is "<out_prefix>-%05d.h5" */
    int64_t shard_tokens;   /* tokens per shard, default 64Mi (see the NOTE below) */
    int64_t chunk_tokens;   /* HDF5 chunk, default 16384 */
    int zstd_level;         /* 1..22, default 3 */
    uint64_t vocab_size;    /* pre-tokenized: required (0 = not given); synthetic: V (0 = default) */
    int64_t eos_id;         /* pre-tokenized: required (-1 = not given) */
    const char *tokenizer;  /* name recorded for pre-tokenized input; NULL = "external" */
    const char *text_key;   /* jsonl text key, default "text"; NULL or "" = none */
    const char *ids_key;    /* jsonl ids key, default "input_ids"; NULL or "" = none */
    int show_progress;      /* progress line on stderr */
    int overwrite;          /* replace existing shards of out_prefix */
    DsaSyntheticOptions synthetic;
} DsaPackOptions;

/* Defaults as listed above; format text, no inputs, no output prefix. */
void dsa_pack_options_default(DsaPackOptions *opts);
/* "text", "jsonl", "u16", "u32", "megatron", "synthetic" -> format. */
DsaStatus dsa_pack_format_parse(const char *name, DsaPackFormat *out);
const char *dsa_pack_format_name(DsaPackFormat format);

/* Pack everything; on success `stats` (may be NULL) says what was written. On failure
 * no shard of this run is left behind. */
DsaStatus dsa_pack_run(const DsaPackOptions *opts, DsaShardSetStats *stats);

/* ---- importer interface (data/import_*.c; not for other callers) ----------------- */

typedef enum { DSA_PACK_KIND_NONE = 0, DSA_PACK_KIND_BYTES, DSA_PACK_KIND_IDS, DSA_PACK_KIND_SYNTHETIC } DsaPackKind;

/* Where importers put documents: one document buffered, then written to the shard
 * set, which is opened at the first document (so a run that fails early writes
 * nothing). */
typedef struct {
    const DsaPackOptions *opts;
    DsaPackKind kind;     /* fixed by the first dsa_pack_sink_kind call */
    char kind_where[256]; /* input (file:line) that fixed it, for mixing errors */
    uint64_t vocab_size;  /* valid once kind is set */
    uint32_t eos_id;
    DsaShardSet *set;
    uint32_t *doc; /* (doc_cap) tokens of the open document */
    int64_t doc_len, doc_cap;
    DsaProgress progress;
    int64_t progress_base; /* progress units of finished inputs */
} DsaPackSink;

/* Declare what kind of tokens follow; `where` names the input. The first call fixes
 * the kind (and vocab_size/eos_id: 257/256 for bytes, the options for ids, which must
 * then be given); a later different kind is an error naming both places. */
DsaStatus dsa_pack_sink_kind(DsaPackSink *sink, DsaPackKind kind, const char *where);
/* Make room for `n` more tokens at sink->doc + sink->doc_len (the caller writes them
 * and adds n to doc_len). */
DsaStatus dsa_pack_sink_reserve(DsaPackSink *sink, int64_t n);
/* Write the open document (dropped when empty) and start a new one. */
DsaStatus dsa_pack_sink_end_doc(DsaPackSink *sink);
/* Report progress: `done` units of the current input. */
void dsa_pack_sink_progress(DsaPackSink *sink, int64_t done);

DsaStatus dsa_pack_import_text(DsaPackSink *sink, const char *path);
DsaStatus dsa_pack_import_jsonl(DsaPackSink *sink, const char *path);
DsaStatus dsa_pack_import_raw(DsaPackSink *sink, const char *path, int token_bytes);
/* `path`: prefix, prefix.bin or prefix.idx. */
DsaStatus dsa_pack_import_megatron(DsaPackSink *sink, const char *path);
DsaStatus dsa_pack_import_synthetic(DsaPackSink *sink);

/* Bytes of .bin data in a Megatron dataset (for progress totals). */
DsaStatus dsa_pack_megatron_bin_size(const char *path, int64_t *bytes);

/* NOTE (shard size): opening a shard asks HDF5 1.10 for every chunk's file offset
 * (H5Dget_chunk_info_by_coord), which costs time quadratic in the chunk count: 0.07 s for
 * 4096 chunks, 0.55 s for 8192, 37 s for 65536 (measured on the 2-core CI machine). The
 * default of 64Mi tokens per shard keeps shards at 4096 chunks of 16Ki tokens; dsa pack
 * warns when a shard would have more than 8192 chunks. */
enum { DSA_PACK_WARN_CHUNKS_PER_SHARD = 8192 };

#endif
