/* import_text.c: the `dsa pack` importers for plain text files and JSON lines.
 *
 * text:  the whole file is one document, byte-tokenized (bytes-v1), read in blocks.
 * jsonl: each non-blank line is a JSON object holding either the text key (a string,
 *        byte-tokenized) or the ids key (an array of non-negative integer token ids).
 *        Lines are read with getline, so a line may be any length. Every error names
 *        file:line (and the array element for ids).
 *
 * NOTE (NUL bytes): a JSON line holding a NUL character, as the escape \u0000 or as a raw
 * byte (which JSON forbids inside a string), is refused naming file:line:column. cJSON
 * keeps strings NUL-terminated without a length, so the bytes after a NUL would be lost
 * without a word (the truncation `dsa pack` used to do); keeping them would need a JSON
 * string decoder of our own. In text in the wild a NUL is corruption (a binary file, a
 * mis-decoded UTF-16 one) far more often than content. The text format keeps every
 * byte, NUL included (bytes-v1 token 0): a text file has no encoding to misread.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "core/mem.h"
#include "data/pack.h"
#include "data/tokenizer_bytes.h"

enum { TEXT_BLOCK = 1 << 20 };

DsaStatus dsa_pack_import_text(DsaPackSink *s, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *block = dsa_malloc(TEXT_BLOCK);
    DsaStatus st = DSA_OK;
    if (!block) DSA_FAIL_GOTO(st, done, DSA_ERR_NOMEM, "%s: out of memory for a read buffer", path);
    int64_t done_bytes = 0;
    for (;;) {
        size_t got = fread(block, 1, TEXT_BLOCK, f);
        if (got > 0) {
            DSA_TRY_GOTO(st, dsa_pack_sink_reserve(s, (int64_t)got), done);
            dsa_tokenizer_bytes_encode(block, got, s->doc + s->doc_len);
            s->doc_len += (int64_t)got;
            done_bytes += (int64_t)got;
            dsa_pack_sink_progress(s, done_bytes);
        }
        if (got < TEXT_BLOCK) break;
    }
    if (ferror(f)) DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: read error after %lld bytes", path, (long long)done_bytes);
    DSA_TRY_GOTO(st, dsa_pack_sink_end_doc(s), done);
done:
    s->doc_len = 0;
    dsa_free(block, TEXT_BLOCK);
    fclose(f);
    return st;
}

static int is_blank(const char *line, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n') return 0;
    return 1;
}

static const char *json_type_name(const cJSON *item) {
    if (cJSON_IsString(item)) return "a string";
    if (cJSON_IsNumber(item)) return "a number";
    if (cJSON_IsArray(item)) return "an array";
    if (cJSON_IsObject(item)) return "an object";
    if (cJSON_IsBool(item)) return "a boolean";
    if (cJSON_IsNull(item)) return "null";
    return "an invalid value";
}

static DsaStatus jsonl_text(DsaPackSink *s, const cJSON *item, const char *path, int64_t line, const char *where) {
    if (!cJSON_IsString(item))
        DSA_FAIL(DSA_ERR_FORMAT, "%s:%lld: key \"%s\" is %s, expected a string", path, (long long)line,
                 s->opts->text_key, json_type_name(item));
    DSA_TRY(dsa_pack_sink_kind(s, DSA_PACK_KIND_BYTES, where));
    size_t n = strlen(item->valuestring);
    DSA_TRY(dsa_pack_sink_reserve(s, (int64_t)n));
    dsa_tokenizer_bytes_encode((const uint8_t *)item->valuestring, n, s->doc + s->doc_len);
    s->doc_len += (int64_t)n;
    return DSA_OK;
}

static DsaStatus jsonl_ids(DsaPackSink *s, const cJSON *item, const char *path, int64_t line, const char *where) {
    if (!cJSON_IsArray(item))
        DSA_FAIL(DSA_ERR_FORMAT, "%s:%lld: key \"%s\" is %s, expected an array of token ids", path, (long long)line,
                 s->opts->ids_key, json_type_name(item));
    DSA_TRY(dsa_pack_sink_kind(s, DSA_PACK_KIND_IDS, where));
    DSA_TRY(dsa_pack_sink_reserve(s, cJSON_GetArraySize(item)));
    int64_t k = 0;
    for (const cJSON *e = item->child; e; e = e->next, k++) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1.0;
        if (!cJSON_IsNumber(e) || v < 0 || v != floor(v))
            DSA_FAIL(DSA_ERR_FORMAT, "%s:%lld: %s[%lld] is %s%s, expected a non-negative integer token id", path,
                     (long long)line, s->opts->ids_key, (long long)k, json_type_name(e),
                     cJSON_IsNumber(e) ? " that is negative or fractional" : "");
        if (v >= (double)s->vocab_size)
            DSA_FAIL(DSA_ERR_RANGE, "%s:%lld: %s[%lld] = %.0f is >= vocab_size %llu", path, (long long)line,
                     s->opts->ids_key, (long long)k, v, (unsigned long long)s->vocab_size);
        s->doc[s->doc_len++] = (uint32_t)v;
    }
    /* A document that already ends with EOS keeps one: the shard writer adds it. */
    if (s->doc_len > 0 && s->doc[s->doc_len - 1] == s->eos_id) s->doc_len--;
    return DSA_OK;
}

/* Column (1-based) of the first NUL character of a JSON line: a raw NUL byte, or a \u0000
 * escape (one preceded by an even number of backslashes); 0 when there is none. *raw
 * says which. */
static size_t find_nul(const char *text, size_t len, bool *raw) {
    const char *z = memchr(text, 0, len);
    for (size_t i = 0; i + 6 <= len && (!z || text + i < z); i++) {
        if (text[i] != '\\') continue;
        size_t run = 1;
        while (i + run < len && text[i + run] == '\\') run++;
        if (run % 2 == 1 && i + run + 5 <= len && text[i + run] == 'u' && !memcmp(text + i + run + 1, "0000", 4)) {
            *raw = false;
            return i + run; /* the backslash that starts the escape, 1-based */
        }
        i += run - 1;
    }
    *raw = true;
    return z ? (size_t)(z - text) + 1 : 0;
}

static DsaStatus jsonl_line(DsaPackSink *s, const char *text, size_t len, const char *path, int64_t line) {
    bool raw = false;
    size_t nul = find_nul(text, len, &raw);
    if (nul)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s:%lld: %s at column %zu: dsa pack refuses NUL characters in JSON lines (the text would be cut "
                 "there); remove them from the input, or pack it as --format text",
                 path, (long long)line, raw ? "a raw NUL byte" : "a NUL character (\\u0000)", nul);
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!obj) {
        long col = end ? (long)(end - text) + 1 : 1;
        DSA_FAIL(DSA_ERR_FORMAT, "%s:%lld: malformed JSON near column %ld (expected one JSON object per line)", path,
                 (long long)line, col);
    }
    DsaStatus st = DSA_OK;
    const DsaPackOptions *o = s->opts;
    char where[512];
    snprintf(where, sizeof where, "%s:%lld", path, (long long)line);
    if (!cJSON_IsObject(obj))
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: line is %s, expected a JSON object", where, json_type_name(obj));
    const cJSON *text_item = o->text_key && *o->text_key ? cJSON_GetObjectItemCaseSensitive(obj, o->text_key) : NULL;
    const cJSON *ids_item = o->ids_key && *o->ids_key ? cJSON_GetObjectItemCaseSensitive(obj, o->ids_key) : NULL;
    if (text_item && ids_item)
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT,
                      "%s: object has both \"%s\" and \"%s\"; pass --text-key '' or --ids-key '' to use one", where,
                      o->text_key, o->ids_key);
    const char *tk = o->text_key && *o->text_key ? o->text_key : NULL,
               *ik = o->ids_key && *o->ids_key ? o->ids_key : NULL;
    if (!text_item && !ids_item && tk && ik)
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: object has neither \"%s\" (text) nor \"%s\" (token ids)", where,
                      tk, ik);
    if (!text_item && !ids_item)
        DSA_FAIL_GOTO(st, done, DSA_ERR_FORMAT, "%s: object has no key \"%s\"", where, tk ? tk : ik);
    if (text_item) DSA_TRY_GOTO(st, jsonl_text(s, text_item, path, line, where), done);
    if (ids_item) DSA_TRY_GOTO(st, jsonl_ids(s, ids_item, path, line, where), done);
    DSA_TRY_GOTO(st, dsa_pack_sink_end_doc(s), done);
done:
    cJSON_Delete(obj);
    return st;
}

DsaStatus dsa_pack_import_jsonl(DsaPackSink *s, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* NOTE: getline's buffer comes from libc malloc (not dsa_malloc): one reused line. */
    char *buf = NULL;
    size_t cap = 0;
    DsaStatus st = DSA_OK;
    int64_t line = 0, done_bytes = 0;
    for (ssize_t len; (len = getline(&buf, &cap, f)) >= 0;) {
        line++;
        done_bytes += len;
        if (!is_blank(buf, (size_t)len)) DSA_TRY_GOTO(st, jsonl_line(s, buf, (size_t)len, path, line), done);
        dsa_pack_sink_progress(s, done_bytes);
    }
    if (ferror(f)) DSA_FAIL_GOTO(st, done, DSA_ERR_IO, "%s: read error at line %lld", path, (long long)line + 1);
done:
    s->doc_len = 0;
    free(buf);
    fclose(f);
    return st;
}
