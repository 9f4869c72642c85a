/* config_override.c: the --set overrides of the JSON configuration (config.h) and the
 * origin of every key (config_internal.h describes the parts).
 *
 * An override "key.path=value" is walked through the tables (every component checked,
 * reference spellings followed to their HF key) and set in the JSON tree before the tree
 * is read, so an override is read exactly as the same key in the file. The origins record
 * which override set a key, and which section key a stage inherited, so that an error names
 * the --set behind a value and the key to change (STYLE.md rule 16).
 */
#include "core/config_internal.h"

#include <stdlib.h>

#include "core/error.h"

/* The last --set that names key `path` (or a parent of it), or NULL. */
const char *cfg_override_of(const ParseCtx *c, const char *path) {
    for (int i = c->n_overrides - 1; i >= 0; i--) {
        const char *ov = c->overrides[i];
        const char *eq = strchr(ov, '=');
        size_t n = eq ? (size_t)(eq - ov) : strlen(ov);
        if (n > 0 && !strncmp(path, ov, n) && (path[n] == '\0' || path[n] == '.')) return ov;
    }
    return NULL;
}

/* Where a key's value came from: the last --set that names it (or a parent), else the file. */
const char *cfg_where(const ParseCtx *c, const char *path, char *buf) {
    const char *ov = cfg_override_of(c, path);
    if (!ov) return c->source;
    snprintf(buf, WHERE_CAP, "--set %s", ov);
    return buf;
}

const DsaConfigOrigin *cfg_origin_find(const DsaConfigOrigins *o, const char *key) {
    for (int i = 0; o && i < o->count; i++)
        if (!strcmp(o->entry[i].key, key)) return &o->entry[i];
    return NULL;
}

/* Record that `key` holds the value of `via`, set by override `set` (NULL: the file);
 * key == via from the file is the default and removes any entry. Beyond the table's
 * capacity nothing is recorded (messages then name the file). */
void cfg_origin_note(DsaConfigOrigins *o, const char *key, const char *via, const char *set) {
    if (!o) return;
    DsaConfigOrigin *e = (DsaConfigOrigin *)cfg_origin_find(o, key);
    if (!set && !strcmp(key, via)) {
        if (e) *e = o->entry[--o->count];
        return;
    }
    if (!e && o->count == DSA_CONFIG_MAX_ORIGINS) return;
    if (!e) e = &o->entry[o->count++];
    set_str(e->key, sizeof e->key, key);
    set_str(e->via, sizeof e->via, via);
    set_str(e->set, sizeof e->set, set);
}

/* ---- overrides ------------------------------------------------------------------------ */

/* The JSON value of an override: JSON when it parses, else the text as a string; text
 * for string keys even when it looks like a number ("stages.0.name=1"). */
static cJSON *override_value(const KeyDesc *k, const char *text) {
    cJSON *v = cJSON_ParseWithOpts(text, NULL, true);
    bool wants_text = k && (k->type == KT_STRING || k->type == KT_STRLIST);
    if (v && wants_text && !(cJSON_IsString(v) || cJSON_IsArray(v) || cJSON_IsNull(v))) {
        cJSON_Delete(v);
        v = NULL;
    }
    return v ? v : cJSON_CreateString(text);
}

/* Make `parent`[name] (object) or `parent`[index] (array) a container of the given kind. */
static cJSON *ensure_child(cJSON *parent, const char *comp, bool want_array) {
    cJSON *child = NULL;
    if (cJSON_IsArray(parent)) {
        int idx = atoi(comp);
        while (cJSON_GetArraySize(parent) <= idx)
            if (!cJSON_AddItemToArray(parent, cJSON_CreateObject())) return NULL;
        child = cJSON_GetArrayItem(parent, idx);
        if (cJSON_IsObject(child)) return child;
        cJSON *fresh = cJSON_CreateObject();
        return fresh && cJSON_ReplaceItemInArray(parent, idx, fresh) ? fresh : NULL;
    }
    child = get(parent, comp);
    if (child && (want_array ? cJSON_IsArray(child) : cJSON_IsObject(child))) return child;
    cJSON *fresh = want_array ? cJSON_CreateArray() : cJSON_CreateObject();
    if (!fresh) return NULL;
    bool ok = child ? cJSON_ReplaceItemInObjectCaseSensitive(parent, comp, fresh)
                    : cJSON_AddItemToObject(parent, comp, fresh);
    return ok ? fresh : NULL;
}

/* Store `v` at the last component (taking ownership of v). */
static bool set_leaf(cJSON *parent, const char *comp, cJSON *v) {
    if (cJSON_IsArray(parent)) {
        int idx = atoi(comp);
        while (cJSON_GetArraySize(parent) <= idx)
            if (!cJSON_AddItemToArray(parent, cJSON_CreateObject())) return false;
        return cJSON_ReplaceItemInArray(parent, idx, v);
    }
    if (get(parent, comp)) return cJSON_ReplaceItemInObjectCaseSensitive(parent, comp, v);
    return cJSON_AddItemToObject(parent, comp, v);
}

static DsaStatus apply_key(const ParseCtx *c, cJSON *root, const char *key, const char *value, int depth);

/* Split "a.b.c" into components (in place). */
static int split_key(char *key, char **comps) {
    int n = 0;
    for (char *p = key; n < MAX_DEPTH;) {
        comps[n++] = p;
        char *dot = strchr(p, '.');
        if (!dot) return n;
        *dot = '\0';
        p = dot + 1;
    }
    return MAX_DEPTH + 1;
}

/* An alias at component i: rewrite the key with the target spelling and apply that. */
static DsaStatus apply_alias(const ParseCtx *c, cJSON *root, const Table *t, char **comps, int n, int i,
                             const char *value, int depth) {
    for (int a = 0; a < t->n_aliases; a++) {
        if (strcmp(t->aliases[a].alias, comps[i])) continue;
        char key[KEY_CAP] = "";
        for (int j = 0; j < n; j++) {
            size_t len = strlen(key);
            snprintf(key + len, sizeof key - len, "%s%s", j ? "." : "", j == i ? t->aliases[a].target : comps[j]);
        }
        DSA_TRY(apply_key(c, root, key, value, depth + 1));
    }
    return DSA_OK;
}

/* Walk `key` through the tables (checking every component), then set it in the tree. */
static DsaStatus apply_key(const ParseCtx *c, cJSON *root, const char *key, const char *value, int depth) {
    char buf[KEY_CAP], prefix[KEY_CAP] = "";
    char *comps[MAX_DEPTH + 1];
    bool is_array[MAX_DEPTH + 1] = {false};
    snprintf(buf, sizeof buf, "%s", key);
    int n = split_key(buf, comps);
    DSA_ASSERT(depth < 3);
    if (n > MAX_DEPTH) DSA_FAIL(DSA_ERR_CONFIG, "--set %s: key path too deep", key);
    const Table *t = &cfg_root_table;
    const KeyDesc *k = NULL;
    bool want_index = false;
    for (int i = 0; i < n; i++) {
        char *end = NULL;
        if (want_index) {
            long idx = strtol(comps[i], &end, 10);
            if (end == comps[i] || *end || idx < 0 || idx >= DSA_CONFIG_MAX_STAGES)
                DSA_FAIL(DSA_ERR_CONFIG, "--set %s=%s: \"%s\" after %s is not a stage index 0..%d", key, value,
                         comps[i], prefix, DSA_CONFIG_MAX_STAGES - 1);
            want_index = false, t = &cfg_stage_table, k = NULL;
        } else if (!t) {
            DSA_FAIL(DSA_ERR_CONFIG, "--set %s=%s: %s is %s, not an object", key, value, prefix, cfg_expected(k));
        } else if (!(k = find_key(t, comps[i]))) {
            if (find_alias(t, comps[i])) return apply_alias(c, root, t, comps, n, i, value, depth);
            if (i == n - 1 && (is_ignored(t, comps[i]) || find_fixed(t, comps[i]))) break;
            return cfg_unknown_key(c, t, prefix, comps[i]);
        } else {
            is_array[i] = k->type == KT_STAGES;
            want_index = k->type == KT_STAGES;
            t = k->type == KT_OBJECT ? k->sub : NULL;
        }
        join(prefix, prefix, comps[i]);
    }
    cJSON *node = root;
    for (int i = 0; i < n - 1 && node; i++) node = ensure_child(node, comps[i], is_array[i]);
    cJSON *v = node ? override_value(want_index ? NULL : k, value) : NULL;
    if (!v || !set_leaf(node, comps[n - 1], v)) {
        cJSON_Delete(v); /* not attached */
        DSA_FAIL(DSA_ERR_NOMEM, "out of memory applying --set %s", key);
    }
    return DSA_OK;
}

DsaStatus cfg_apply_override(const ParseCtx *c, cJSON *root, const char *ov) {
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov || (size_t)(eq - ov) >= KEY_CAP)
        DSA_FAIL(DSA_ERR_ARG, "--set %s: expected key.path=value (e.g. model.index_topk=64)", ov);
    char key[KEY_CAP];
    snprintf(key, sizeof key, "%.*s", (int)(eq - ov), ov);
    DSA_TRY(apply_key(c, root, key, eq + 1, 0));
    return DSA_OK;
}
