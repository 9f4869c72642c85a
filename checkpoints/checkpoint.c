/* checkpoint.c: atomic checkpoint directories with checksummed manifests
 * (checkpoint.h). */
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

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Remove a directory holding only plain files. */
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[DSA_CHECKPOINT_PATH_CAP + 256];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

DsaStatus dsa_checkpoint_begin(DsaCheckpointWriter *w, const char *out_dir, const char *name) {
    memset(w, 0, sizeof *w);
    snprintf(w->out_dir, sizeof w->out_dir, "%s", out_dir);
    snprintf(w->name, sizeof w->name, "%s", name);
    DSA_TRY(dsa_mkdir_p(out_dir));
    DIR *d = opendir(out_dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot list: %s", out_dir, strerror(errno));
    struct dirent *e;
    char path[DSA_CHECKPOINT_PATH_CAP + 256];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-", 5) != 0) continue;
        snprintf(path, sizeof path, "%s/%s", out_dir, e->d_name);
        dsa_log(DSA_LOG_WARN, "removing %s, left by a save that did not finish", path);
        remove_flat_dir(path);
    }
    closedir(d);
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    if (exists(path)) DSA_FAIL(DSA_ERR_IO, "%s already exists; a checkpoint is never overwritten", path);
    snprintf(w->tmp_dir, sizeof w->tmp_dir, "%s/.tmp-%s-%ld", out_dir, name, (long)getpid());
    if (mkdir(w->tmp_dir, 0755) != 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot create: %s", w->tmp_dir, strerror(errno));
    return DSA_OK;
}

const char *dsa_checkpoint_file(DsaCheckpointWriter *w, const char *file_name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", w->tmp_dir, file_name);
    return buf;
}

static DsaStatus write_file_synced(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t r = write(fd, text + off, n - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            close(fd);
            DSA_FAIL(DSA_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        off += (size_t)r;
    }
    if (fsync(fd) != 0 || close(fd) != 0) DSA_FAIL(DSA_ERR_IO, "%s: fsync/close failed: %s", path, strerror(errno));
    return DSA_OK;
}

DsaStatus dsa_checkpoint_write_text(DsaCheckpointWriter *w, const char *file_name, const char *text) {
    char path[DSA_CHECKPOINT_PATH_CAP + 256];
    return write_file_synced(dsa_checkpoint_file(w, file_name, path, sizeof path), text);
}

/* Size and CRC32 of a file, streamed. */
static DsaStatus file_crc(const char *path, uint64_t *bytes, uint32_t *crc) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    static __thread unsigned char buf[1 << 20];
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            close(fd);
            DSA_FAIL(DSA_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        }
        if (r == 0) break;
        c = crc32(c, buf, (uInt)r);
        total += (uint64_t)r;
    }
    close(fd);
    *bytes = total;
    *crc = (uint32_t)c;
    return DSA_OK;
}

static DsaStatus write_manifest(DsaCheckpointWriter *w) {
    DIR *d = opendir(w->tmp_dir);
    if (!d) DSA_FAIL(DSA_ERR_IO, "%s: cannot list: %s", w->tmp_dir, strerror(errno));
    cJSON *root = cJSON_CreateObject(), *files = NULL;
    cJSON_AddNumberToObject(root, "format_version", DSA_CHECKPOINT_MANIFEST_VERSION);
    files = cJSON_AddObjectToObject(root, "files");
    struct dirent *e;
    char path[DSA_CHECKPOINT_PATH_CAP + 256];
    DsaStatus st = DSA_OK;
    while (st == DSA_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "manifest.json")) continue;
        snprintf(path, sizeof path, "%s/%s", w->tmp_dir, e->d_name);
        uint64_t bytes = 0;
        uint32_t crc = 0;
        st = file_crc(path, &bytes, &crc);
        if (st != DSA_OK) break;
        char hex[16];
        snprintf(hex, sizeof hex, "%08x", crc);
        cJSON *f = cJSON_AddObjectToObject(files, e->d_name);
        cJSON_AddNumberToObject(f, "bytes", (double)bytes);
        cJSON_AddStringToObject(f, "crc32", hex);
    }
    closedir(d);
    char *text = st == DSA_OK ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    DSA_TRY(st);
    if (!text) DSA_FAIL(DSA_ERR_NOMEM, "manifest text");
    st = dsa_checkpoint_write_text(w, "manifest.json", text);
    free(text);
    return st;
}

DsaStatus dsa_checkpoint_commit(DsaCheckpointWriter *w) {
    char final_dir[DSA_CHECKPOINT_PATH_CAP + 256], path[DSA_CHECKPOINT_PATH_CAP + 256], tmp[DSA_CHECKPOINT_PATH_CAP + 256];
    DSA_TRY(write_manifest(w));
    DSA_TRY(dsa_fsync_path(w->tmp_dir));
    if (w->pause_before_commit_ms > 0) {
        fprintf(stderr, "checkpoint: paused before commit of %s\n", w->name);
        fflush(stderr);
        struct timespec ts = {w->pause_before_commit_ms / 1000, (w->pause_before_commit_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    snprintf(final_dir, sizeof final_dir, "%s/%s", w->out_dir, w->name);
    if (exists(final_dir)) DSA_FAIL(DSA_ERR_IO, "%s already exists; a checkpoint is never overwritten", final_dir);
    if (rename(w->tmp_dir, final_dir) != 0)
        DSA_FAIL(DSA_ERR_IO, "rename %s -> %s failed: %s", w->tmp_dir, final_dir, strerror(errno));
    w->tmp_dir[0] = 0;
    DSA_TRY(dsa_fsync_path(w->out_dir));
    snprintf(path, sizeof path, "%s/latest", w->out_dir);
    snprintf(tmp, sizeof tmp, "%s/.latest.tmp", w->out_dir);
    char line[300];
    snprintf(line, sizeof line, "%s\n", w->name);
    DSA_TRY(write_file_synced(tmp, line));
    DSA_TRY(dsa_rename_durable(tmp, path));
    return DSA_OK;
}

void dsa_checkpoint_abort(DsaCheckpointWriter *w) {
    if (w->tmp_dir[0]) remove_flat_dir(w->tmp_dir);
    w->tmp_dir[0] = 0;
}

DsaStatus dsa_checkpoint_resolve(const char *path, char *dir, size_t cap) {
    char probe[DSA_CHECKPOINT_PATH_CAP + 64];
    struct stat sb;
    if (stat(path, &sb) != 0) DSA_FAIL(DSA_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) DSA_FAIL(DSA_ERR_IO, "%s is not a directory (a checkpoint or run directory)", path);
    snprintf(probe, sizeof probe, "%s/manifest.json", path);
    bool is_ckpt = exists(probe);
    snprintf(probe, sizeof probe, "%s/model.safetensors", path);
    is_ckpt |= exists(probe);
    if (is_ckpt) {
        snprintf(dir, cap, "%s", path);
        return DSA_OK;
    }
    snprintf(probe, sizeof probe, "%s/latest", path);
    char *text = NULL;
    size_t len = 0;
    if (dsa_file_read_all(probe, &text, &len) != DSA_OK) {
        dsa_error_clear();
        DSA_FAIL(DSA_ERR_IO, "%s: no checkpoint here (no manifest.json or model.safetensors, and no 'latest' file)", path);
    }
    text[strcspn(text, "\r\n")] = 0;
    bool bad = !text[0] || strchr(text, '/') || !strcmp(text, "..") || !strcmp(text, ".");
    if (!bad) snprintf(dir, cap, "%s/%s", path, text);
    dsa_free(text, len + 1);
    if (bad) DSA_FAIL(DSA_ERR_FORMAT, "%s: does not name a checkpoint directory", probe);
    if (!exists(dir)) DSA_FAIL(DSA_ERR_FORMAT, "%s names %s, which does not exist", probe, dir);
    return DSA_OK;
}

DsaStatus dsa_checkpoint_verify(const char *dir, bool *verified) {
    char path[DSA_CHECKPOINT_PATH_CAP + 256];
    *verified = false;
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    if (!exists(path)) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (exists(path)) return DSA_OK; /* a plain Hugging Face model directory */
        DSA_FAIL(DSA_ERR_FORMAT, "%s: no manifest.json and no model.safetensors: not a checkpoint", dir);
    }
    char *text = NULL;
    size_t len = 0;
    DSA_TRY(dsa_file_read_all(path, &text, &len));
    cJSON *root = cJSON_Parse(text);
    dsa_free(text, len + 1);
    DsaStatus st = DSA_OK;
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "format_version");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!cJSON_IsObject(root) || !cJSON_IsNumber(ver) || !cJSON_IsObject(files))
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: not a checkpoint manifest (format_version and files expected)", path);
    if (ver->valuedouble != DSA_CHECKPOINT_MANIFEST_VERSION)
        DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: format_version %g, this build reads %d", path, ver->valuedouble,
                      DSA_CHECKPOINT_MANIFEST_VERSION);
    const cJSON *f;
    cJSON_ArrayForEach(f, files) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(f, "bytes"), *c = cJSON_GetObjectItemCaseSensitive(f, "crc32");
        if (!cJSON_IsNumber(b) || !cJSON_IsString(c) || strchr(f->string, '/'))
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: entry \"%s\" lacks bytes or crc32", path, f->string);
        char fp[DSA_CHECKPOINT_PATH_CAP + 256];
        snprintf(fp, sizeof fp, "%s/%s", dir, f->string);
        if (!exists(fp)) DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: missing (listed in %s)", fp, path);
        uint64_t bytes = 0;
        uint32_t crc = 0;
        DSA_TRY_GOTO(st, file_crc(fp, &bytes, &crc), out);
        if ((double)bytes != b->valuedouble)
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: %llu bytes, the manifest says %.0f (truncated or torn write)", fp,
                          (unsigned long long)bytes, b->valuedouble);
        char hex[16];
        snprintf(hex, sizeof hex, "%08x", crc);
        if (strcmp(hex, c->valuestring) != 0)
            DSA_FAIL_GOTO(st, out, DSA_ERR_FORMAT, "%s: CRC32 %s, the manifest says %s (the file is corrupt)", fp, hex,
                          c->valuestring);
    }
    *verified = true;
out:
    cJSON_Delete(root);
    return st;
}
