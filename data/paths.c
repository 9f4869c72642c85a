/* paths.c: expanding shard arguments (files, directories, globs) into a sorted list,
 * and the loader cursor's JSON form (see loader.h). */
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/mem.h"
#include "core/strutil.h"
#include "data/loader.h"

typedef struct {
    char **items;
    int count, cap;
} PathList;

static DsaStatus list_add(PathList *list, const char *path) {
    for (int i = 0; i < list->count; i++) {
        if (!strcmp(list->items[i], path)) DSA_FAIL(DSA_ERR_ARG, "shard %s is listed twice", path);
    }
    if (list->count == list->cap) {
        int cap = list->cap ? list->cap * 2 : 16;
        char **grown = dsa_realloc(list->items, (size_t)list->cap * sizeof *grown, (size_t)cap * sizeof *grown);
        if (!grown) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the shard list");
        list->items = grown;
        list->cap = cap;
    }
    size_t len = strlen(path) + 1;
    list->items[list->count] = dsa_malloc(len);
    if (!list->items[list->count]) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the shard list");
    memcpy(list->items[list->count++], path, len);
    return DSA_OK;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static DsaStatus add_directory(PathList *list, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot read directory: %s", dir, strerror(errno));
    int first = list->count;
    DsaStatus st = DSA_OK;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || !dsa_ends_with(e->d_name, ".h5")) continue;
        char path[DSA_PATH_CAP];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if ((st = list_add(list, path)) != DSA_OK) break;
    }
    closedir(d);
    if (st != DSA_OK) return st;
    if (list->count == first) DSA_FAIL(DSA_ERR_IO, "%s: directory contains no .h5 shards", dir);
    qsort(list->items + first, (size_t)(list->count - first), sizeof *list->items, compare_strings);
    return DSA_OK;
}

static DsaStatus add_argument(PathList *list, const char *arg) {
    struct stat st;
    if (stat(arg, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return add_directory(list, arg);
        return list_add(list, arg);
    }
    if (errno != ENOENT && errno != ENOTDIR) DSA_FAIL(DSA_ERR_IO, "%s: cannot access: %s", arg, strerror(errno));
    glob_t g;
    int rc = glob(arg, 0, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        if (rc == 0) globfree(&g);
        DSA_FAIL(DSA_ERR_IO, "%s: no such file, and no file matches it as a pattern", arg);
    }
    if (rc != 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot expand pattern", arg);
    DsaStatus status = DSA_OK;
    for (size_t i = 0; i < g.gl_pathc && status == DSA_OK; i++) status = list_add(list, g.gl_pathv[i]);
    globfree(&g);
    return status; /* glob() sorts its matches */
}

DsaStatus dsa_data_expand_paths(const char *const *args, int num_args, char ***paths, int *num_paths) {
    PathList list = {0};
    *paths = NULL;
    *num_paths = 0;
    if (num_args < 1) DSA_FAIL(DSA_ERR_ARG, "no shard files given");
    for (int i = 0; i < num_args; i++) {
        DsaStatus st = add_argument(&list, args[i]);
        if (st != DSA_OK) {
            dsa_data_paths_free(list.items, list.count);
            return st;
        }
    }
    /* Shrink the array to its count so dsa_data_paths_free knows its size. */
    char **exact = dsa_malloc((size_t)list.count * sizeof *exact);
    if (!exact) {
        dsa_data_paths_free(list.items, list.count);
        DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the shard list");
    }
    memcpy(exact, list.items, (size_t)list.count * sizeof *exact);
    dsa_free(list.items, (size_t)list.cap * sizeof *list.items);
    *paths = exact;
    *num_paths = list.count;
    return DSA_OK;
}

void dsa_data_paths_free(char **paths, int num_paths) {
    if (!paths) return;
    for (int i = 0; i < num_paths; i++) dsa_free(paths[i], strlen(paths[i]) + 1);
    dsa_free(paths, (size_t)num_paths * sizeof *paths);
}

/* ---- cursor JSON ----------------------------------------------------------------- */

cJSON *dsa_loader_cursor_to_json(const DsaLoaderCursor *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    /* 64-bit values as strings: JSON numbers are doubles and would lose bits. */
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c->epoch);
    cJSON_AddStringToObject(o, "epoch", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c->position);
    cJSON_AddStringToObject(o, "position", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c->seed);
    cJSON_AddStringToObject(o, "seed", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)c->seq_len);
    cJSON_AddStringToObject(o, "seq_len", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)c->total_tokens);
    cJSON_AddStringToObject(o, "total_tokens", buf);
    cJSON_AddNumberToObject(o, "rank", c->rank);
    cJSON_AddNumberToObject(o, "world", c->world);
    cJSON_AddNumberToObject(o, "num_shards", c->num_shards);
    return o;
}

static DsaStatus get_u64(const cJSON *o, const char *key, uint64_t *out, const char *source) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(item)) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(item->valuestring, &end, 10);
        if (errno == 0 && end != item->valuestring && *end == '\0' && item->valuestring[0] != '-') {
            *out = v;
            return DSA_OK;
        }
    } else if (cJSON_IsNumber(item) && item->valuedouble >= 0 && item->valuedouble < 9007199254740992.0 &&
               item->valuedouble == (double)(uint64_t)item->valuedouble) {
        *out = (uint64_t)item->valuedouble;
        return DSA_OK;
    }
    DSA_FAIL(DSA_ERR_FORMAT, "%s: data cursor field \"%s\" is %s, expected a non-negative integer", source, key,
             item ? "malformed" : "missing");
}

DsaStatus dsa_loader_cursor_from_json(const cJSON *json, DsaLoaderCursor *c, const char *source) {
    if (!cJSON_IsObject(json)) DSA_FAIL(DSA_ERR_FORMAT, "%s: data cursor is not a JSON object", source);
    uint64_t v[8];
    const char *keys[8] = {"epoch", "position", "seed", "seq_len", "total_tokens", "rank", "world", "num_shards"};
    for (int i = 0; i < 8; i++) DSA_TRY(get_u64(json, keys[i], &v[i], source));
    *c = (DsaLoaderCursor){.epoch = v[0],
                           .position = v[1],
                           .seed = v[2],
                           .seq_len = (int64_t)v[3],
                           .total_tokens = (int64_t)v[4],
                           .rank = (int32_t)v[5],
                           .world = (int32_t)v[6],
                           .num_shards = (int32_t)v[7]};
    return DSA_OK;
}
