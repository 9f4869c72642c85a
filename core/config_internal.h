/* config_internal.h: what the parts of the configuration reader share (private to core/;
 * the public interface is core/config.h, its one entry point).
 *
 * The parts, one concern each:
 *   config.c           entry points: parse (the pipeline), load, defaults, the JSON writer,
 *                      the hash, and the derived quantities of a model config
 *   config_schema.c    the key tables of every section and the defaults they give
 *   config_json.c      reading a JSON tree through the tables (types, choices, unknown keys)
 *   config_hf.c        normalizing a file's shape: HF config.json (V2, V3, transformers >= 5
 *                      spellings) and the reference code's config become our model section
 *   config_override.c  --set overrides applied to the tree, and the origin of every key
 *   config_validate.c  range checks from the tables and the relations between keys
 * Reading a file goes: parse the text (config.c) -> normalize its shape (config_hf.c) ->
 * apply the --set overrides to the JSON tree (config_override.c) -> read the tree through
 * the tables (config_json.c, config_schema.c). Validation (config_validate.c) runs later,
 * on the struct.
 */
#ifndef DSA_CORE_CONFIG_INTERNAL_H
#define DSA_CORE_CONFIG_INTERNAL_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"

enum { KEY_CAP = 256, WHERE_CAP = 600, MAX_DEPTH = 8, MAX_CANDIDATES = 128 };
#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: larger integers do not survive a double */
#define LL(x) ((long long)(x))

/* Who is being read, for messages: the file, and the overrides that may have set a key;
 * `origins` records which keys the overrides set (DsaConfig.origins). */
typedef struct {
    const char *source;
    const char *const *overrides;
    int n_overrides;
    DsaConfigOrigins *origins;
} ParseCtx;

typedef enum {
    KT_INT = 1, /* int64_t */
    KT_FLOAT,   /* double */
    KT_BOOL,    /* bool */
    KT_STRING,  /* char[size] */
    KT_STRLIST, /* char[max_count][size] + int count at count_off */
    KT_INT2,    /* int64_t[2] */
    KT_OBJECT,  /* a nested struct described by `sub` */
    KT_STAGES,  /* DsaConfig.stages (the only list of objects) */
    KT_VERSION, /* "format_version": must equal DSA_CONFIG_FORMAT_VERSION, not stored */
} KeyType;

struct Table;

typedef struct {
    const char *name;
    KeyType type;
    size_t off;        /* offset of the value in its section struct */
    size_t size;       /* KT_STRING, KT_STRLIST: bytes of one string */
    size_t has1;       /* 1 + offset of a bool set by a value and cleared by null; 0: none */
    bool def_has;      /* default of that bool */
    bool nullable;     /* JSON null accepted */
    int64_t null_i;    /* KT_INT: stored for null */
    int64_t def_i;     /* default of KT_INT, KT_BOOL, KT_INT2 (both entries) */
    double def_f;      /* default of KT_FLOAT */
    const char *def_s; /* default of KT_STRING */
    int64_t min_i;     /* KT_INT, KT_INT2: smallest valid value (validation) */
    bool positive;     /* KT_FLOAT: must be > 0 (else >= 0) */
    size_t count_off;  /* KT_STRLIST: offset of the int entry count */
    int max_count;     /* KT_STRLIST: capacity */
    const char *const *choices; /* KT_STRING: allowed values, NULL-terminated */
    const struct Table *sub;    /* KT_OBJECT, KT_STAGES: the nested table */
} KeyDesc;

/* Another spelling of a key: `target` is a path relative to the same object ("a.b"). */
typedef struct {
    const char *alias, *target;
} Alias;

/* A key we accept but do not store, whose value must be the one we implement. */
typedef struct {
    const char *name;
    char kind;    /* 'b' boolean, 'n' number */
    double value; /* required value (0/1 for booleans) */
    const char *why;
} FixedKey;

typedef struct Table {
    const KeyDesc *keys;
    int n;
    const Alias *aliases;
    int n_aliases;
    const char *const *ignored; /* accepted and ignored, NULL-terminated (or NULL) */
    const FixedKey *fixed;
    int n_fixed;
    void (*on_null)(void *obj);      /* KT_OBJECT read as null: set its "none" values */
    bool (*is_null)(const void *obj); /* KT_OBJECT written as null? */
    DsaStatus (*post)(ParseCtx *c, const cJSON *obj, void *base, const char *path);
} Table;

/* ---- small helpers, inline in every part --------------------------------------- */

static inline void *at(void *base, size_t off) { return (char *)base + off; }
static inline const void *cat(const void *base, size_t off) { return (const char *)base + off; }

/* Copy `src` into a fixed array, zero-filling the rest (so structs compare with memcmp). */
static inline void set_str(char *dst, size_t cap, const char *src) {
    memset(dst, 0, cap);
    if (!src) return;
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
}

/* out = "prefix.name", or "name" at the root (out may be prefix; truncated to KEY_CAP). */
static inline void join(char *out, const char *prefix, const char *name) {
    size_t len = strlen(prefix);
    if (out != prefix) memmove(out, prefix, len + 1);
    if (len && len < KEY_CAP - 1) out[len++] = '.';
    size_t n = strlen(name);
    if (len + n > KEY_CAP - 1) n = len < KEY_CAP - 1 ? KEY_CAP - 1 - len : 0;
    memcpy(out + len, name, n);
    out[len + n] = '\0';
}

/* out = "prefix.<index>". */
static inline void join_index(char *out, const char *prefix, int index) {
    char num[16];
    snprintf(num, sizeof num, "%d", index);
    join(out, prefix, num);
}

static inline cJSON *get(const cJSON *obj, const char *name) { return cJSON_GetObjectItemCaseSensitive(obj, name); }

static inline const KeyDesc *find_key(const Table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->keys[i].name, name)) return &t->keys[i];
    return NULL;
}

static inline const Alias *find_alias(const Table *t, const char *name) {
    for (int i = 0; i < t->n_aliases; i++)
        if (!strcmp(t->aliases[i].alias, name)) return &t->aliases[i];
    return NULL;
}

static inline const FixedKey *find_fixed(const Table *t, const char *name) {
    for (int i = 0; i < t->n_fixed; i++)
        if (!strcmp(t->fixed[i].name, name)) return &t->fixed[i];
    return NULL;
}

static inline bool is_ignored(const Table *t, const char *name) {
    for (int i = 0; t->ignored && t->ignored[i]; i++)
        if (!strcmp(t->ignored[i], name)) return true;
    return false;
}

/* ---- shared between the parts ------------------------------------------------------ */

/* config_schema.c: the root, model and stage tables (the others hang below them). */
extern const Table cfg_root_table, cfg_model_table, cfg_stage_table;
/* Every key of table `t` in `base` takes its default (nested tables too). */
void cfg_apply_defaults(const Table *t, void *base);
/* Stage i of n before its own keys are read: the values it inherits (config.h). */
void cfg_stage_init(const DsaConfig *cfg, DsaStageConfig *s, int i, int n, DsaConfigOrigins *origins);

/* config_override.c: which --set gave a key, and the record of it in DsaConfig.origins. */
const char *cfg_override_of(const ParseCtx *c, const char *path);
const char *cfg_where(const ParseCtx *c, const char *path, char *buf); /* buf: WHERE_CAP bytes */
const DsaConfigOrigin *cfg_origin_find(const DsaConfigOrigins *o, const char *key);
void cfg_origin_note(DsaConfigOrigins *o, const char *key, const char *via, const char *set);
/* Apply one "key.path=value" override to the tree. */
DsaStatus cfg_apply_override(const ParseCtx *c, cJSON *root, const char *ov);

/* config_json.c: reading the tree through the tables, and its messages. */
void cfg_describe(const cJSON *v, char *buf, size_t cap);
const char *cfg_expected(const KeyDesc *k);
DsaStatus cfg_check_choice(const KeyDesc *k, const char *s, const char *path, const char *in);
DsaStatus cfg_unknown_key(const ParseCtx *c, const Table *t, const char *prefix, const char *name);
DsaStatus cfg_read_table(ParseCtx *c, const Table *t, const cJSON *obj, void *base, const char *path);

/* config_hf.c: bring a file's shape into ours; the model section's reference spellings. */
DsaStatus cfg_normalize(const ParseCtx *c, cJSON **root);
DsaStatus cfg_normalize_model(const ParseCtx *c, cJSON *root);

#endif
