/* inspect_report.c: `dsa inspect`'s report of the statistics of inspect.c (inspect.h): one
 * block of text per shard with a total line, or the same fields as JSON.
 */
#include "data/inspect.h"

#include <string.h>

#include "core/progress.h"

/* ---- printing -------------------------------------------------------------------------- */

/* 1234567 -> "1,234,567". */
static const char *group(char *buf, size_t cap, int64_t v) {
    char raw[32];
    int len = snprintf(raw, sizeof raw, "%lld", (long long)(v < 0 ? -v : v));
    size_t o = 0;
    if (v < 0 && o + 1 < cap) buf[o++] = '-';
    for (int i = 0; i < len && o + 1 < cap; i++) {
        buf[o++] = raw[i];
        if ((len - 1 - i) % 3 == 0 && i != len - 1 && o + 1 < cap) buf[o++] = ',';
    }
    buf[o] = '\0';
    return buf;
}

static const char *human_bytes(char *buf, size_t cap, double bytes) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (bytes >= 1024.0 && i < 4) {
        bytes /= 1024.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", bytes, unit[i]);
    return buf;
}

void dsa_inspect_print_text(FILE *out, const DsaShardStats *s, int verify) {
    char a[32], b[32], c[32];
    const int w = 16;
    fprintf(out, "%-*s %s\n", w, "shard", s->path);
    fprintf(out, "%-*s %u\n", w, "format_version", s->format_version);
    fprintf(out, "%-*s %s\n", w, "tokenizer", s->meta.tokenizer);
    fprintf(out, "%-*s %s\n", w, "vocab_size", group(a, sizeof a, (int64_t)s->meta.vocab_size));
    fprintf(out, "%-*s %u\n", w, "eos_id", s->meta.eos_id);
    fprintf(out, "%-*s %s\n", w, "chunk_tokens", group(a, sizeof a, s->meta.chunk_tokens));
    fprintf(out, "%-*s %d\n", w, "zstd_level", s->meta.zstd_level);
    fprintf(out, "%-*s %s\n", w, "tokens", group(a, sizeof a, s->num_tokens));
    fprintf(out, "%-*s %s  (length min %s, mean %.1f, max %s)\n", w, "documents", group(a, sizeof a, s->num_docs),
            group(b, sizeof b, s->doc_min), s->doc_mean, group(c, sizeof c, s->doc_max));
    fprintf(out, "%-*s %s  (split across shards, or empty)\n", w, "docs w/o EOS", group(a, sizeof a, s->docs_without_eos));
    fprintf(out, "%-*s %s\n", w, "chunks", group(a, sizeof a, s->num_chunks));
    fprintf(out, "%-*s %s bytes (%s; file %s)\n", w, "compressed", group(a, sizeof a, (int64_t)s->compressed_bytes),
            human_bytes(b, sizeof b, (double)s->compressed_bytes), human_bytes(c, sizeof c, (double)s->file_bytes));
    fprintf(out, "%-*s %.2fx  (raw uint32 bytes / compressed bytes)\n", w, "ratio", s->compression_ratio);
    fprintf(out, "%-*s %.3f\n", w, "bits/token", s->bits_per_token);
    fprintf(out, "%-*s %s of %s\n", w, "distinct ids", group(a, sizeof a, s->distinct_ids),
            group(b, sizeof b, (int64_t)s->meta.vocab_size));
    fprintf(out, "%-*s %u .. %u\n", w, "id range", s->min_id, s->max_id);
    fprintf(out, "%-*s %.4f%%  (%s tokens)\n", w, "EOS share", 100.0 * s->eos_share, group(a, sizeof a, s->eos_count));
    fprintf(out, "%-*s %.4f bits/token (unigram)\n", w, "entropy", s->entropy_bits);
    if (s->num_top > 0) {
        char label[32];
        snprintf(label, sizeof label, "top %d ids", s->num_top);
        fprintf(out, "%-*s %4s  %10s  %15s  %8s\n", w, label, "rank", "id", "count", "share");
        for (int i = 0; i < s->num_top; i++)
            fprintf(out, "%-*s %4d  %10u  %15s  %7.3f%%\n", w, "", i + 1, s->top[i].id,
                    group(a, sizeof a, (int64_t)s->top[i].count), 100.0 * (double)s->top[i].count / (double)s->num_tokens);
    }
    if (verify)
        fprintf(out, "%-*s %s\n", w, "verify",
                s->verified ? "ok: the HDF5 filter pipeline reads the same tokens" : "not run");
    fprintf(out, "%-*s %.2f s (%s tokens/s)\n", w, "time", s->seconds,
            dsa_format_count(a, sizeof a, s->seconds > 0 ? (double)s->num_tokens / s->seconds : 0.0));
}

void dsa_inspect_print_totals(FILE *out, const DsaInspectTotals *t) {
    char a[32], b[32], c[32], d[32], e[32];
    double ratio = t->compressed_bytes ? 4.0 * (double)t->num_tokens / (double)t->compressed_bytes : 0.0;
    double bits = t->num_tokens ? 8.0 * (double)t->compressed_bytes / (double)t->num_tokens : 0.0;
    fprintf(out, "total: %d files, %s tokens, %s documents (%s w/o EOS), %s chunks, %s compressed, ratio %.2fx, %.3f bits/token\n",
            t->num_files, group(a, sizeof a, t->num_tokens), group(b, sizeof b, t->num_docs),
            group(c, sizeof c, t->docs_without_eos), group(d, sizeof d, t->num_chunks),
            human_bytes(e, sizeof e, (double)t->compressed_bytes), ratio, bits);
}

cJSON *dsa_inspect_to_json(const DsaShardStats *s, int verify) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", s->path);
    cJSON_AddNumberToObject(j, "format_version", s->format_version);
    cJSON_AddStringToObject(j, "tokenizer", s->meta.tokenizer);
    cJSON_AddNumberToObject(j, "vocab_size", (double)s->meta.vocab_size);
    cJSON_AddNumberToObject(j, "eos_id", s->meta.eos_id);
    cJSON_AddNumberToObject(j, "chunk_tokens", (double)s->meta.chunk_tokens);
    cJSON_AddNumberToObject(j, "zstd_level", s->meta.zstd_level);
    cJSON_AddNumberToObject(j, "tokens", (double)s->num_tokens);
    cJSON_AddNumberToObject(j, "documents", (double)s->num_docs);
    cJSON_AddNumberToObject(j, "doc_len_min", (double)s->doc_min);
    cJSON_AddNumberToObject(j, "doc_len_mean", s->doc_mean);
    cJSON_AddNumberToObject(j, "doc_len_max", (double)s->doc_max);
    cJSON_AddNumberToObject(j, "docs_without_eos", (double)s->docs_without_eos);
    cJSON_AddNumberToObject(j, "chunks", (double)s->num_chunks);
    cJSON_AddNumberToObject(j, "compressed_bytes", (double)s->compressed_bytes);
    cJSON_AddNumberToObject(j, "file_bytes", (double)s->file_bytes);
    cJSON_AddNumberToObject(j, "compression_ratio", s->compression_ratio);
    cJSON_AddNumberToObject(j, "bits_per_token", s->bits_per_token);
    cJSON_AddNumberToObject(j, "distinct_ids", (double)s->distinct_ids);
    cJSON_AddNumberToObject(j, "min_id", s->min_id);
    cJSON_AddNumberToObject(j, "max_id", s->max_id);
    cJSON_AddNumberToObject(j, "eos_count", (double)s->eos_count);
    cJSON_AddNumberToObject(j, "eos_share", s->eos_share);
    cJSON_AddNumberToObject(j, "entropy_bits", s->entropy_bits);
    cJSON *top = cJSON_AddArrayToObject(j, "top");
    for (int i = 0; i < s->num_top; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", s->top[i].id);
        cJSON_AddNumberToObject(e, "count", (double)s->top[i].count);
        cJSON_AddNumberToObject(e, "share", (double)s->top[i].count / (double)s->num_tokens);
        cJSON_AddItemToArray(top, e);
    }
    if (verify) cJSON_AddBoolToObject(j, "verified", s->verified);
    cJSON_AddNumberToObject(j, "seconds", s->seconds);
    return j;
}

cJSON *dsa_inspect_totals_to_json(const DsaInspectTotals *t) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "files", t->num_files);
    cJSON_AddNumberToObject(j, "tokens", (double)t->num_tokens);
    cJSON_AddNumberToObject(j, "documents", (double)t->num_docs);
    cJSON_AddNumberToObject(j, "docs_without_eos", (double)t->docs_without_eos);
    cJSON_AddNumberToObject(j, "chunks", (double)t->num_chunks);
    cJSON_AddNumberToObject(j, "eos_count", (double)t->eos_count);
    cJSON_AddNumberToObject(j, "compressed_bytes", (double)t->compressed_bytes);
    cJSON_AddNumberToObject(j, "file_bytes", (double)t->file_bytes);
    cJSON_AddNumberToObject(j, "compression_ratio",
                            t->compressed_bytes ? 4.0 * (double)t->num_tokens / (double)t->compressed_bytes : 0.0);
    cJSON_AddNumberToObject(j, "bits_per_token",
                            t->num_tokens ? 8.0 * (double)t->compressed_bytes / (double)t->num_tokens : 0.0);
    return j;
}
