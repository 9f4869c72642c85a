/* checkpoint.c: atomic checkpoint directories with checksummed manifests, and the
 * recovery of a run directory after an interrupted save (checkpoint.h; DESIGN.md,
 * "Checkpoints").
 *
 * Durability follows the usual POSIX recipe: a file's data are durable after fsync on
 * it, a new name after fsync on its directory. commit therefore fsyncs every file (also
 * those the caller wrote itself), the temporary directory, then renames it and fsyncs
 * OUT; `latest` is replaced by write-fsync-rename-fsync. The manifest's sizes and CRC32s
 * are computed by reading the files back, so they describe what is on disk.
 *
 * NOTE (resume rule): the one window in which a stopped save leaves more than
 * temporaries is between the rename of the checkpoint and the switch of `latest`. The
 * manifest's "previous" (what `latest` named when the save began) identifies the
 * checkpoint that window produced without relying on names or clocks: recovery adopts
 * the checkpoint whose "previous" is the current `latest` once it verifies, and sets it
 * aside otherwise (checkpoint.h has the whole rule). Manifests written before
 * "previous" existed are never adopted.
 */
#include "checkpoints/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <zlib.h>

#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"

enum { JOIN_CAP = DSA_CHECKPOINT_PATH_CAP + DSA_CHECKPOINT_NAME_CAP + 16, CRC_CHUNK = 1 << 20 };

static const char MANIFEST[] = "manifest.json";
static const char LATEST[] = "latest";
static const char LATEST_TMP[] = ".latest.tmp";
static const char INCOMPLETE[] = ".incomplete"; /* suffix of a set-aside checkpoint */

/* "a/b" into buf; false when it does not fit. */
static bool join(char *buf, size_t cap, const char *a, const char *b) {
    int n = snprintf(buf, cap, "%s/%s", a, b);
    return n >= 0 && (size_t)n < cap;
}

/* A plain file name: non-empty, no '/', not "." or "..". */
static bool plain_name(const char *s) { return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0; }

static bool path_exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Size and CRC32 (zlib) of a file, streamed; fsyncs it first when `sync`. */
static DsaStatus file_crc(const char *path, bool sync, uint64_t *bytes, uint32_t *crc) {
    int fd = dsa_open_retry(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    DsaStatus st = DSA_OK;
    unsigned char *buf = NULL;
    if (sync && dsa_fsync_retry(fd) != 0)
        DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    DSA_TRY_GOTO(st, dsa_alloc((void **)&buf, CRC_CHUNK, "checksum buffer"), out);
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, CRC_CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r == 0) break;
        c = crc32(c, buf, (uInt)r);
        total += (uint64_t)r;
    }
    *bytes = total;
    *crc = (uint32_t)c;
out:
    dsa_free(buf, CRC_CHUNK);
    close(fd);
    return st;
}

/* Remove OUT/.tmp-* directories and OUT/.latest.tmp left by saves that were killed or
 * failed without abort, and the OUT/.<name>.tmp.<pid> files of processes that are gone
 * (the metrics file's rewrite, for one). */
static DsaStatus remove_stale_temporaries(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot list: %s", out_dir, strerror(errno));
    struct dirent *e;
    char path[JOIN_CAP + 256];
    while ((e = readdir(d))) {
        struct stat sb;
        bool tmp_dir = !strncmp(e->d_name, ".tmp-", 5), latest_tmp = !strcmp(e->d_name, LATEST_TMP);
        if ((!tmp_dir && !latest_tmp) || !join(path, sizeof path, out_dir, e->d_name)) continue;
        if (lstat(path, &sb) != 0 || (tmp_dir && !S_ISDIR(sb.st_mode)) || (latest_tmp && !S_ISREG(sb.st_mode))) continue;
        dsa_log(DSA_LOG_WARN, "removing %s, left by a checkpoint save that did not finish", path);
        if (tmp_dir) dsa_remove_flat_dir(path);
        else if (unlink(path) != 0) dsa_log(DSA_LOG_WARN, "cannot remove %s: %s", path, strerror(errno));
    }
    closedir(d);
    dsa_temp_remove_stale(out_dir, NULL, false);
    return DSA_OK;
}

/* The name OUT/latest holds, into name (cap bytes); *have = false when there is no
 * latest file. Its content must be exactly a plain name and "\n" (or "\r\n", or
 * nothing). */
static DsaStatus read_latest(const char *out_dir, char *name, size_t cap, bool *have) {
    char probe[JOIN_CAP];
    *have = false;
    name[0] = 0;
    if (!join(probe, sizeof probe, out_dir, LATEST)) DSA_FAIL(DSA_ERR_ARG, "path too long: %.200s", out_dir);
    if (!path_exists(probe)) return DSA_OK;
    char *text = NULL;
    size_t len = 0;
    DSA_TRY(dsa_file_read_all(probe, &text, &len));
    size_t n = strcspn(text, "\r\n");
    const char *rest = text + n;
    bool bad = strlen(text) != len || !(rest[0] == 0 || !strcmp(rest, "\n") || !strcmp(rest, "\r\n"));
    text[n] = 0;
    bad = bad || !plain_name(text);
    bool fits = snprintf(name, cap, "%s", text) < (int)cap;
    dsa_free(text, len + 1);
    if (bad || !fits)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: does not hold the name of a checkpoint directory and a newline", probe);
    *have = true;
    return DSA_OK;
}

/* Point OUT/latest at `name`: write OUT/.latest.tmp, fsync, rename, fsync OUT. */
static DsaStatus switch_latest(const char *out_dir, const char *name) {
    char latest[JOIN_CAP], latest_tmp[JOIN_CAP], line[DSA_CHECKPOINT_NAME_CAP + 2];
    join(latest, sizeof latest, out_dir, LATEST);
    join(latest_tmp, sizeof latest_tmp, out_dir, LATEST_TMP);
    int n = snprintf(line, sizeof line, "%s\n", name);
    DSA_TRY(dsa_file_write_synced(latest_tmp, line, (size_t)n));
    DSA_TRY(dsa_rename_durable(latest_tmp, latest)); /* fsyncs OUT */
    return DSA_OK;
}

DsaStatus dsa_checkpoint_begin(DsaCheckpointWriter *w, const char *out_dir, const char *name) {
    memset(w, 0, sizeof *w);
    char final_dir[JOIN_CAP];
    if (!out_dir || !out_dir[0]) DSA_FAIL(DSA_ERR_ARG, "checkpoint: empty output directory");
    if (!name || !plain_name(name) || name[0] == '.' || !strcmp(name, LATEST) || strstr(name, INCOMPLETE))
        DSA_FAIL(DSA_ERR_ARG,
                 "%s: invalid checkpoint name \"%s\" (a plain name, not starting with '.', not \"%s\", without "
                 "\"%s\")",
                 out_dir, name ? name : "(null)", LATEST, INCOMPLETE);
    if (snprintf(w->out_dir, sizeof w->out_dir, "%s", out_dir) >= (int)sizeof w->out_dir ||
        snprintf(w->name, sizeof w->name, "%s", name) >= (int)sizeof w->name)
        DSA_FAIL(DSA_ERR_ARG, "checkpoint path too long: %.200s/%.100s", out_dir, name);
    char tmp[DSA_CHECKPOINT_PATH_CAP]; /* w->tmp_dir stays "" until the directory exists */
    int n = snprintf(tmp, sizeof tmp, "%s/.tmp-%s-%ld", out_dir, name, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        DSA_FAIL(DSA_ERR_ARG, "checkpoint path too long: %.200s/%.100s", out_dir, name);
    DSA_TRY(dsa_mkdir_p(out_dir));
    DSA_TRY(dsa_checkpoint_recover(out_dir));
    bool have = false;
    DSA_TRY(read_latest(out_dir, w->previous, sizeof w->previous, &have));
    join(final_dir, sizeof final_dir, out_dir, name);
    if (path_exists(final_dir)) DSA_FAIL(DSA_ERR_IO, "%s already exists; a checkpoint is never overwritten", final_dir);
    if (mkdir(tmp, 0755) != 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    memcpy(w->tmp_dir, tmp, sizeof tmp);
    return DSA_OK;
}

DsaStatus dsa_checkpoint_join(DsaCheckpointWriter *w, const char *out_dir, const char *name, const char *tmp_dir) {
    memset(w, 0, sizeof *w);
    char want[DSA_CHECKPOINT_PATH_CAP];
    int n = snprintf(want, sizeof want, "%s/.tmp-%s-", out_dir, name);
    if (n < 0 || (size_t)n >= sizeof want || strncmp(tmp_dir, want, (size_t)n) != 0 || !plain_name(name) ||
        strlen(tmp_dir) >= sizeof w->tmp_dir)
        DSA_FAIL(DSA_ERR_ARG, "%s: not the temporary directory of checkpoint %s in %s", tmp_dir, name, out_dir);
    struct stat sb;
    if (stat(tmp_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        DSA_FAIL(DSA_ERR_IO, "%s: the checkpoint's temporary directory cannot be accessed from this process: %s "
                 "(every rank must see train.out_dir on a shared file system)", tmp_dir, strerror(errno));
    snprintf(w->out_dir, sizeof w->out_dir, "%s", out_dir);
    snprintf(w->name, sizeof w->name, "%s", name);
    snprintf(w->tmp_dir, sizeof w->tmp_dir, "%s", tmp_dir);
    w->joined = true;
    return DSA_OK;
}

const char *dsa_checkpoint_file(DsaCheckpointWriter *w, const char *file_name, char *buf, size_t cap) {
    DSA_ASSERT(w->tmp_dir[0] && plain_name(file_name));
    bool fits = join(buf, cap, w->tmp_dir, file_name);
    DSA_ASSERT(fits);
    return buf;
}

DsaStatus dsa_checkpoint_write_text(DsaCheckpointWriter *w, const char *file_name, const char *text) {
    if (!plain_name(file_name) || !strcmp(file_name, MANIFEST))
        DSA_FAIL(DSA_ERR_ARG, "%s: cannot write \"%s\" into a checkpoint (a plain name other than %s)", w->tmp_dir,
                 file_name, MANIFEST);
    char path[JOIN_CAP + 256];
    if (!join(path, sizeof path, w->tmp_dir, file_name))
        DSA_FAIL(DSA_ERR_ARG, "path too long: %s/%s", w->tmp_dir, file_name);
    return dsa_file_write_synced(path, text, strlen(text));
}

/* A growable list of file names (each < 256 bytes). */
typedef struct {
    char (*names)[256];
    int count, cap;
} NameList;

static int cmp_names(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static void names_free(NameList *l) {
    dsa_free(l->names, (size_t)l->cap * sizeof *l->names);
    memset(l, 0, sizeof *l);
}

/* The regular files of `dir` except the manifest, sorted; anything else is refused. */
static DsaStatus list_files(const char *dir, NameList *l) {
    memset(l, 0, sizeof *l);
    DIR *d = opendir(dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    DsaStatus st = DSA_OK;
    struct dirent *e;
    char path[JOIN_CAP + 256];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, MANIFEST)) continue;
        struct stat sb;
        if (!join(path, sizeof path, dir, e->d_name) || lstat(path, &sb) != 0)
            DSA_FAIL_GOTO(st, out, DSA_ERR_IO, "%s/%s: cannot stat: %s", dir, e->d_name, strerror(errno));
        if (!S_ISREG(sb.st_mode))
            DSA_FAIL_GOTO(st, out, DSA_ERR_ARG, "%s: not a regular file; a checkpoint holds plain files only", path);
        if (l->count == l->cap) {
            int cap = l->cap ? 2 * l->cap : 16;
            void *p = dsa_realloc(l->names, (size_t)l->cap * sizeof *l->names, (size_t)cap * sizeof *l->names);
            if (!p) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "%s: file list", dir);
            l->names = p, l->cap = cap;
        }
        snprintf(l->names[l->count++], sizeof *l->names, "%s", e->d_name);
    }
    if (l->count > 1) qsort(l->names, (size_t)l->count, sizeof *l->names, cmp_names);
out:
    closedir(d);
    if (st != DSA_OK) names_free(l);
    return st;
}

/* fsync every file of the temporary directory and write manifest.json describing them. */
static DsaStatus write_manifest(DsaCheckpointWriter *w) {
    NameList l;
    DSA_TRY(list_files(w->tmp_dir, &l));
    DsaStatus st = DSA_OK;
    char *text = NULL, *line = NULL;
    size_t n = 0;
    cJSON *root = cJSON_CreateObject(), *files = NULL;
    bool ok = root && cJSON_AddNumberToObject(root, "format_version", DSA_CHECKPOINT_MANIFEST_VERSION) &&
              cJSON_AddStringToObject(root, "name", w->name) &&
              (w->previous[0] ? cJSON_AddStringToObject(root, "previous", w->previous) != NULL
                              : cJSON_AddNullToObject(root, "previous") != NULL) &&
              (files = cJSON_AddObjectToObject(root, "files"));
    char path[JOIN_CAP + 256];
    for (int i = 0; ok && i < l.count; i++) {
        uint64_t bytes = 0;
        uint32_t crc = 0;
        join(path, sizeof path, w->tmp_dir, l.names[i]);
        DSA_TRY_GOTO(st, file_crc(path, true, &bytes, &crc), out);
        char hex[16];
        snprintf(hex, sizeof hex, "%08x", (unsigned)crc);
        cJSON *f = cJSON_AddObjectToObject(files, l.names[i]);
        ok = f && cJSON_AddNumberToObject(f, "bytes", (double)bytes) && cJSON_AddStringToObject(f, "crc32", hex);
    }
    if (ok) text = cJSON_Print(root);
    if (!text) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "%s: building %s", w->tmp_dir, MANIFEST);
    join(path, sizeof path, w->tmp_dir, MANIFEST);
    n = strlen(text);
    DSA_TRY_GOTO(st, dsa_alloc((void **)&line, n + 1, MANIFEST), out);
    memcpy(line, text, n);
    line[n] = '\n';
    DSA_TRY_GOTO(st, dsa_file_write_synced(path, line, n + 1), out);
out:
    dsa_free(line, line ? n + 1 : 0);
    free(text);
    cJSON_Delete(root);
    names_free(&l);
    return st;
}

/* Sleep `ms` milliseconds, resuming after signals. */
static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* rename(from, to) that never replaces `to`: renameat2(RENAME_NOREPLACE) where the file
 * system supports it, else a check then rename (rename(2) would silently replace an
 * empty directory). Returns 0 or the errno (EEXIST when `to` exists). */
static int rename_excl(const char *from, const char *to) {
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return errno;
    if (path_exists(to)) return EEXIST;
    return rename(from, to) == 0 ? 0 : errno;
}

static DsaStatus rename_noreplace(const char *from, const char *to) {
    int err = rename_excl(from, to);
    if (err == EEXIST) DSA_FAIL(DSA_ERR_IO, "%s already exists; a checkpoint is never overwritten", to);
    if (err) DSA_FAIL(DSA_ERR_IO, "cannot rename %s to %s: %s", from, to, strerror(err));
    return DSA_OK;
}

DsaStatus dsa_checkpoint_commit(DsaCheckpointWriter *w) {
    DSA_ASSERT(w->tmp_dir[0] && !w->joined); /* begin succeeded, and no commit or abort since */
    char final_dir[JOIN_CAP], latest[JOIN_CAP];
    join(final_dir, sizeof final_dir, w->out_dir, w->name);
    join(latest, sizeof latest, w->out_dir, LATEST);
    DSA_TRY(write_manifest(w));
    DSA_TRY(dsa_fsync_path(w->tmp_dir));
    if (w->pause_before_commit_ms > 0) {
        fprintf(stderr, "checkpoint: paused before commit of %s\n", w->name);
        fflush(stderr);
        sleep_ms(w->pause_before_commit_ms);
    }
    DSA_TRY(rename_noreplace(w->tmp_dir, final_dir));
    w->tmp_dir[0] = 0; /* the checkpoint exists now: nothing to abort */
    DsaStatus st = dsa_fsync_path(w->out_dir);
    if (st == DSA_OK) st = switch_latest(w->out_dir, w->name);
    if (st != DSA_OK)
        dsa_error_push(__FILE__, __LINE__,
                       "%s was written, but %s could not be switched to it (the next save or `dsa train --resume` "
                       "adopts it once the cause is fixed)",
                       final_dir, latest);
    return st;
}

void dsa_checkpoint_abort(DsaCheckpointWriter *w) {
    if (w->joined) return; /* the committing rank removes the directory */
    if (w->tmp_dir[0]) dsa_remove_flat_dir(w->tmp_dir);
    w->tmp_dir[0] = 0;
}

/* A Hugging Face model directory: model.safetensors or its sharding index. */
static bool is_hf_model_dir(const char *dir) {
    char p[JOIN_CAP + 64];
    return (join(p, sizeof p, dir, "model.safetensors") && path_exists(p)) ||
           (join(p, sizeof p, dir, "model.safetensors.index.json") && path_exists(p));
}

DsaStatus dsa_checkpoint_resolve(const char *path, char *dir, size_t cap) {
    char probe[JOIN_CAP + 64];
    struct stat sb;
    if (stat(path, &sb) != 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot access: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        DSA_FAIL(DSA_ERR_IO, "%s is not a directory (a checkpoint or run directory expected)", path);
    if (!join(probe, sizeof probe, path, MANIFEST)) DSA_FAIL(DSA_ERR_ARG, "path too long: %.200s", path);
    if (path_exists(probe) || is_hf_model_dir(path)) {
        if (snprintf(dir, cap, "%s", path) >= (int)cap) DSA_FAIL(DSA_ERR_ARG, "path too long: %.200s", path);
        return DSA_OK;
    }
    char name[DSA_CHECKPOINT_NAME_CAP];
    bool have = false;
    DSA_TRY(read_latest(path, name, sizeof name, &have));
    join(probe, sizeof probe, path, LATEST);
    if (!have)
        DSA_FAIL(DSA_ERR_IO,
                 "%s: no checkpoint here: no '%s' file and no %s (nor the model.safetensors of a Hugging "
                 "Face model directory)",
                 path, LATEST, MANIFEST);
    if (!join(dir, cap, path, name)) DSA_FAIL(DSA_ERR_ARG, "path too long: %.200s/%s", path, name);
    if (stat(dir, &sb) != 0)
        DSA_FAIL(DSA_ERR_FORMAT, "%s names %s, which cannot be accessed: %s", probe, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) DSA_FAIL(DSA_ERR_FORMAT, "%s names %s, which is not a directory", probe, dir);
    return DSA_OK;
}

/* One manifest entry against the file on disk. */
static DsaStatus verify_file(const char *dir, const char *manifest, const cJSON *f) {
    const char *name = f->string;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(f, "bytes"), *c = cJSON_GetObjectItemCaseSensitive(f, "crc32");
    uint64_t want_bytes = 0;
    unsigned long want_crc = 0;
    char *end = NULL;
    if (!plain_name(name)) DSA_FAIL(DSA_ERR_FORMAT, "%s: entry \"%s\" is not a plain file name", manifest, name);
    if (!cJSON_IsNumber(b) || !(b->valuedouble >= 0) || b->valuedouble > 9007199254740992.0 ||
        (double)(uint64_t)b->valuedouble != b->valuedouble)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: entry \"%s\": \"bytes\" missing or not a non-negative integer", manifest, name);
    want_bytes = (uint64_t)b->valuedouble;
    if (cJSON_IsString(c)) want_crc = strtoul(c->valuestring, &end, 16);
    if (!cJSON_IsString(c) || strlen(c->valuestring) != 8 || strspn(c->valuestring, "0123456789abcdefABCDEF") != 8 ||
        *end)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: entry \"%s\": \"crc32\" missing or not 8 hex digits", manifest, name);
    char path[JOIN_CAP + 256];
    if (!join(path, sizeof path, dir, name)) DSA_FAIL(DSA_ERR_ARG, "path too long: %.200s/%s", dir, name);
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT) DSA_FAIL(DSA_ERR_FORMAT, "%s: missing (listed in %s)", path, manifest);
        DSA_FAIL(DSA_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) DSA_FAIL(DSA_ERR_FORMAT, "%s: not a regular file (listed in %s)", path, manifest);
    if ((uint64_t)sb.st_size != want_bytes)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: %llu bytes, %s says %llu (truncated or torn write)", path,
                 (unsigned long long)sb.st_size, manifest, (unsigned long long)want_bytes);
    uint64_t bytes = 0;
    uint32_t crc = 0;
    DSA_TRY(file_crc(path, false, &bytes, &crc));
    if (bytes != want_bytes)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: %llu bytes read, %s says %llu (the file changed while being read)", path,
                 (unsigned long long)bytes, manifest, (unsigned long long)want_bytes);
    if (crc != want_crc)
        DSA_FAIL(DSA_ERR_FORMAT, "%s: CRC32 %08x, %s says %08lx (the file is corrupt)", path, (unsigned)crc, manifest,
                 want_crc);
    return DSA_OK;
}

DsaStatus dsa_checkpoint_verify(const char *dir, bool *verified) {
    char manifest[JOIN_CAP + 64];
    *verified = false;
    if (!join(manifest, sizeof manifest, dir, MANIFEST)) DSA_FAIL(DSA_ERR_ARG, "path too long: %.200s", dir);
    if (!path_exists(manifest)) {
        if (is_hf_model_dir(dir)) return DSA_OK; /* a plain Hugging Face model directory: nothing to check */
        DSA_FAIL(DSA_ERR_FORMAT, "%s: no %s and no model.safetensors: not a checkpoint directory", dir, MANIFEST);
    }
    char *text = NULL;
    size_t len = 0;
    DSA_TRY(dsa_file_read_all(manifest, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    dsa_free(text, len + 1);
    DsaStatus st = DSA_OK;
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "format_version");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!cJSON_IsObject(root))
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: not valid JSON (a corrupt checkpoint manifest)", manifest);
    if (!cJSON_IsNumber(ver) || !cJSON_IsObject(files))
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT,
                      "%s: not a checkpoint manifest (\"format_version\" and \"files\" expected)", manifest);
    if (ver->valuedouble != DSA_CHECKPOINT_MANIFEST_VERSION)
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT,
                      "%s: format_version %g, this build reads %d (the checkpoint was written by another version of "
                      "dsa; save it again with this one, or use the matching build)",
                      manifest, ver->valuedouble, DSA_CHECKPOINT_MANIFEST_VERSION);
    const cJSON *f;
    cJSON_ArrayForEach(f, files) DSA_TRY_GOTO(st, verify_file(dir, manifest, f), out);
    *verified = true;
out:
    cJSON_Delete(root);
    return st;
}

/* ---- recovery (the resume rule of checkpoint.h) ----------------------------------- */

/* What dir/manifest.json says about "previous": 1 a name (into prev), 0 null, -1 no
 * manifest, an unreadable one, or one without the key (written before it existed). */
static int manifest_previous(const char *dir, char *prev, size_t cap) {
    char path[JOIN_CAP + 64];
    char *text = NULL;
    size_t len = 0;
    if (!join(path, sizeof path, dir, MANIFEST) || !path_exists(path)) return -1;
    if (dsa_file_read_all(path, &text, &len) != DSA_OK) {
        dsa_error_clear();
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    dsa_free(text, len + 1);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "previous");
    int kind = cJSON_IsNull(p) ? 0 : cJSON_IsString(p) && snprintf(prev, cap, "%s", p->valuestring) < (int)cap ? 1 : -1;
    cJSON_Delete(root);
    return kind;
}

/* The checkpoint directory saved after `latest` (NULL: none yet) whose save did not
 * switch `latest`: its manifest's "previous" equals it. The greatest name wins when
 * there are several (only possible with two writers); *found says whether there is one. */
static DsaStatus find_unswitched(const char *out_dir, const char *latest, char *name, size_t cap, bool *found) {
    *found = false;
    DIR *d = opendir(out_dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot list: %s", out_dir, strerror(errno));
    char path[JOIN_CAP + 256], prev[DSA_CHECKPOINT_NAME_CAP];
    int count = 0;
    for (struct dirent *e; (e = readdir(d));) {
        struct stat sb;
        if (e->d_name[0] == '.' || !strcmp(e->d_name, LATEST) || strstr(e->d_name, INCOMPLETE) ||
            (latest && !strcmp(e->d_name, latest)) || strlen(e->d_name) >= cap ||
            !join(path, sizeof path, out_dir, e->d_name) || lstat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
            continue;
        int kind = manifest_previous(path, prev, sizeof prev);
        if (!(latest ? kind == 1 && !strcmp(prev, latest) : kind == 0)) continue;
        if (count++ && strcmp(e->d_name, name) <= 0) continue;
        snprintf(name, cap, "%s", e->d_name);
    }
    closedir(d);
    if (count > 1)
        dsa_log(DSA_LOG_WARN, "%s: %d checkpoints claim to follow %s (two runs wrote into one directory?); taking %s",
                out_dir, count, latest ? latest : "nothing", name);
    *found = count > 0;
    return DSA_OK;
}

/* Rename OUT/<name> to OUT/<name>.incomplete (or .incomplete.2, ...) and fsync OUT; the
 * new name goes into moved (cap bytes). */
static DsaStatus set_aside(const char *out_dir, const char *name, char *moved, size_t cap) {
    char from[JOIN_CAP], to[JOIN_CAP + 32];
    join(from, sizeof from, out_dir, name);
    for (int i = 1; i <= 100; i++) {
        if (i == 1) snprintf(to, sizeof to, "%s%s", from, INCOMPLETE);
        else snprintf(to, sizeof to, "%s%s.%d", from, INCOMPLETE, i);
        int err = rename_excl(from, to);
        if (err == EEXIST) continue;
        if (err) DSA_FAIL(DSA_ERR_IO, "cannot set %s aside as %s: %s", from, to, strerror(err));
        snprintf(moved, cap, "%s", to);
        return dsa_fsync_path(out_dir);
    }
    DSA_FAIL(DSA_ERR_IO, "cannot set %s aside: %s%s.1..100 all exist", from, from, INCOMPLETE);
}

DsaStatus dsa_checkpoint_recover(const char *out_dir) {
    struct stat sb;
    if (stat(out_dir, &sb) != 0) {
        if (errno == ENOENT) return DSA_OK;
        DSA_FAIL(DSA_ERR_IO, "%s: cannot access: %s", out_dir, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) DSA_FAIL(DSA_ERR_IO, "%s is not a directory (a run directory expected)", out_dir);
    DSA_TRY(remove_stale_temporaries(out_dir));
    for (;;) {
        char latest[DSA_CHECKPOINT_NAME_CAP], next[DSA_CHECKPOINT_NAME_CAP], dir[JOIN_CAP];
        bool have = false, found = false, verified = false;
        DSA_TRY(read_latest(out_dir, latest, sizeof latest, &have));
        DSA_TRY(find_unswitched(out_dir, have ? latest : NULL, next, sizeof next, &found));
        if (!found) return DSA_OK;
        join(dir, sizeof dir, out_dir, next);
        DsaStatus st = dsa_checkpoint_verify(dir, &verified);
        if (st == DSA_OK && verified) {
            dsa_log(DSA_LOG_WARN,
                    "%s: adopting %s, a complete checkpoint whose save stopped before `latest` was switched to it "
                    "(latest named %s)",
                    out_dir, next, have ? latest : "nothing");
            DSA_TRY(switch_latest(out_dir, next));
            continue;
        }
        char why[512], moved[JOIN_CAP + 32];
        snprintf(why, sizeof why, "%s", dsa_error_message());
        why[strcspn(why, "\n")] = 0;
        dsa_error_clear();
        DSA_TRY(set_aside(out_dir, next, moved, sizeof moved));
        dsa_log(DSA_LOG_WARN, "%s: set %s aside as %s: its save stopped before `latest` was switched and it does not "
                "verify (%s); latest stays %s", out_dir, next, moved, why, have ? latest : "(none)");
    }
}
