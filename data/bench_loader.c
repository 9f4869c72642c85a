/* bench_loader.c: the measurements of the loader benchmark (inspect.h, `dsa bench
 * loader`) over the data set of bench_data.c, on warm page cache: the loader (prefetch 0
 * and 2) over one shuffled epoch, pread of the same windows from the raw file, and plain
 * zstd decoding of the shards' chunks (the ceiling). Sampled windows from the loader are
 * compared with the raw file before any figure is reported.
 */
#include "data/bench_loader_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "core/log.h"
#include "core/mem.h"
#include "data/loader.h"

/* ---- loader benchmark: measurements ------------------------------------------------------ */

/* Read a whole file once so later reads come from the page cache. */
static DsaStatus warm_file(const char *path, void *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ssize_t got;
    while ((got = read(fd, buf, cap)) > 0) {
    }
    close(fd);
    if (got < 0) DSA_FAIL(DSA_ERR_IO, "%s: read failed: %s", path, strerror(errno));
    return DSA_OK;
}

typedef struct {
    const DsaBenchLoaderOptions *o;
    DsaBenchLoaderResult *res;
    char **paths;        /* (num_shards) */
    DsaShard *shards;    /* (num_shards), open */
    int64_t *order;      /* (windows) window indices in the loader's epoch-0 order */
    uint32_t *window;    /* (window_cap): one window, or one chunk if that is larger */
    int64_t window_cap;
    uint8_t *compressed; /* every chunk of every shard, back to back */
    int raw_fd;
} Bench;

static DsaStatus time_loader(Bench *b, int prefetch, double *seconds, double *open_s, int record_order) {
    const DsaBenchLoaderOptions *o = b->o;
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)b->paths;
    lo.num_paths = b->res->num_shards;
    lo.seq_len = o->seq_len;
    lo.seed = o->seed;
    lo.prefetch = prefetch;
    DsaLoader *loader = NULL;
    double t_open = dsa_time_now();
    DSA_TRY(dsa_loader_open(&loader, &lo));
    *open_s = dsa_time_now() - t_open;
    DsaStatus st = DSA_OK;
    int64_t n = dsa_loader_rank_windows(loader);
    uint64_t sink = 0;
    double t0 = dsa_time_now();
    for (int64_t i = 0; i < n; i++) {
        DsaWindow w;
        DSA_TRY_GOTO(st, dsa_loader_next(loader, &w), done);
        sink += w.tokens[0];
        if (record_order) b->order[i] = w.window;
        else if (b->order[i] != w.window)
            DSA_FAIL_GOTO(st, done, DSA_ERR_INTERNAL, "benchmark: loader order differs between runs at position %lld",
                          (long long)i);
    }
    *seconds = dsa_time_now() - t0;
    __asm__ volatile("" : : "r"(sink));
done:
    dsa_loader_close(loader);
    return st;
}

static DsaStatus pread_window(int fd, uint32_t *dst, int64_t count, int64_t first) {
    size_t len = (size_t)count * 4;
    off_t off = (off_t)first * 4;
    uint8_t *p = (uint8_t *)dst;
    while (len) {
        ssize_t got = pread(fd, p, len, off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) DSA_FAIL(DSA_ERR_IO, "benchmark raw file: read at byte %lld failed", (long long)off);
        p += got;
        len -= (size_t)got;
        off += got;
    }
    return DSA_OK;
}

static DsaStatus time_plain(Bench *b, double *seconds) {
    int64_t len = b->o->seq_len + 1;
    uint64_t sink = 0;
    double t0 = dsa_time_now();
    for (int64_t i = 0; i < b->res->windows; i++) {
        DSA_TRY(pread_window(b->raw_fd, b->window, len, b->order[i] * b->o->seq_len));
        sink += b->window[0];
    }
    *seconds = dsa_time_now() - t0;
    __asm__ volatile("" : : "r"(sink));
    return DSA_OK;
}

/* Decode every chunk of every shard from memory, into a window-sized buffer in turn
 * (as the loader decodes into its window), with one context: the zstd ceiling. */
static DsaStatus time_zstd(Bench *b, ZSTD_DCtx *dctx, double *seconds) {
    int64_t ct = b->o->chunk_tokens, per_window = (b->o->seq_len + 1) / ct;
    if (per_window < 1) per_window = 1;
    size_t want = (size_t)ct * 4;
    const uint8_t *src = b->compressed;
    int64_t k = 0;
    double t0 = dsa_time_now();
    for (int s = 0; s < b->res->num_shards; s++) {
        const DsaShard *sh = &b->shards[s];
        for (int64_t c = 0; c < sh->num_chunks; c++, k++) {
            uint32_t *dst = b->window + (k % per_window) * ct;
            size_t got = ZSTD_decompressDCtx(dctx, dst, want, src, sh->chunk_bytes[c]);
            if (ZSTD_isError(got) || got != want)
                DSA_FAIL(DSA_ERR_FORMAT, "%s: chunk %lld does not decode: %s", sh->path, (long long)c,
                         ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short output");
            src += sh->chunk_bytes[c];
        }
    }
    *seconds = dsa_time_now() - t0;
    return DSA_OK;
}

/* The loader's token-range check (dsa_tokens_first_out_of_range), alone, per window. */
static void time_range(Bench *b, double *seconds) {
    int64_t len = b->o->seq_len + 1, bad = 0;
    double t0 = dsa_time_now();
    for (int64_t i = 0; i < b->res->windows; i++) {
        const uint32_t *t = b->window;
        __asm__ volatile("" : : "r"(t) : "memory");
        bad |= dsa_tokens_first_out_of_range(t, len, b->shards[0].meta.vocab_size);
    }
    *seconds = dsa_time_now() - t0;
    __asm__ volatile("" : : "r"(bad));
}

/* Tokens the loader decodes for the epoch: whole chunks, per shard piece of each window. */
static int64_t decoded_tokens(const Bench *b) {
    int64_t total = 0, len = b->o->seq_len + 1;
    for (int64_t i = 0; i < b->res->windows; i++) {
        int64_t start = b->order[i] * b->o->seq_len, end = start + len, base = 0;
        for (int s = 0; s < b->res->num_shards; s++) {
            const DsaShard *sh = &b->shards[s];
            int64_t lo = start > base ? start : base, hi = end < base + sh->num_tokens ? end : base + sh->num_tokens;
            if (lo < hi) {
                int64_t ct = sh->meta.chunk_tokens;
                total += (((hi - base - 1) / ct) - ((lo - base) / ct) + 1) * ct;
            }
            base += sh->num_tokens;
        }
    }
    return total;
}

/* Before any timing: the loader's first windows equal the raw file at the same place. */
static DsaStatus check_windows(Bench *b) {
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)b->paths;
    lo.num_paths = b->res->num_shards;
    lo.seq_len = b->o->seq_len;
    lo.seed = b->o->seed;
    lo.prefetch = 0;
    DsaLoader *loader = NULL;
    DSA_TRY(dsa_loader_open(&loader, &lo));
    DsaStatus st = DSA_OK;
    int64_t len = b->o->seq_len + 1, n = b->res->windows < BENCH_CHECK_WINDOWS ? b->res->windows : BENCH_CHECK_WINDOWS;
    for (int64_t i = 0; i < n; i++) {
        DsaWindow w;
        DSA_TRY_GOTO(st, dsa_loader_next(loader, &w), done);
        DSA_TRY_GOTO(st, pread_window(b->raw_fd, b->window, len, w.window * b->o->seq_len), done);
        if (memcmp(w.tokens, b->window, (size_t)len * 4) != 0)
            DSA_FAIL_GOTO(st, done, DSA_ERR_INTERNAL,
                          "benchmark: loader window %lld differs from the raw file at the same offset", (long long)w.window);
    }
    b->res->checked_windows = n;
done:
    dsa_loader_close(loader);
    return st;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void set_timing(DsaBenchTiming *t, int64_t tokens, double *runs, int n) {
    qsort(runs, (size_t)n, sizeof *runs, compare_doubles);
    t->tokens = tokens;
    t->best_s = runs[0];
    t->median_s = n % 2 ? runs[n / 2] : 0.5 * (runs[n / 2 - 1] + runs[n / 2]);
}

static DsaStatus open_shards(Bench *b) {
    char prefix[DSA_PATH_CAP];
    dsa_bench_prefix(prefix, sizeof prefix, b->o->dir, b->o->dist);
    int n = b->res->num_shards;
    b->paths = dsa_calloc((size_t)n, sizeof *b->paths);
    b->shards = dsa_calloc((size_t)n, sizeof *b->shards);
    if (!b->paths || !b->shards) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the benchmark's shard list");
    for (int i = 0; i < n; i++) {
        DSA_TRY(dsa_alloc((void **)&b->paths[i], DSA_PATH_CAP + 16, "shard path"));
        dsa_shardset_path(b->paths[i], DSA_PATH_CAP + 16, prefix, i);
        b->shards[i].fd = -1;
    }
    for (int i = 0; i < n; i++) {
        DSA_TRY(dsa_shard_open(&b->shards[i], b->paths[i]));
        b->res->compressed_bytes += b->shards[i].compressed_bytes;
    }
    return DSA_OK;
}

/* Warm the page cache and load every compressed chunk into memory. */
static DsaStatus load_files(Bench *b) {
    size_t cap = (size_t)b->window_cap * 4;
    for (int i = 0; i < b->res->num_shards; i++) DSA_TRY(warm_file(b->paths[i], b->window, cap));
    char raw_path[DSA_PATH_CAP + 64];
    dsa_bench_raw_path(raw_path, sizeof raw_path, b->o->dir, b->o->dist);
    DSA_TRY(warm_file(raw_path, b->window, cap));
    b->raw_fd = open(raw_path, O_RDONLY | O_CLOEXEC);
    if (b->raw_fd < 0) DSA_FAIL(DSA_ERR_IO, "%s: cannot open: %s", raw_path, strerror(errno));
    DSA_TRY(dsa_alloc((void **)&b->compressed, b->res->compressed_bytes, "compressed chunks"));
    uint8_t *dst = b->compressed;
    for (int s = 0; s < b->res->num_shards; s++) {
        const DsaShard *sh = &b->shards[s];
        for (int64_t c = 0; c < sh->num_chunks; c++) {
            if (pread(sh->fd, dst, sh->chunk_bytes[c], (off_t)sh->chunk_addr[c]) != (ssize_t)sh->chunk_bytes[c])
                DSA_FAIL(DSA_ERR_IO, "%s: cannot read chunk %lld", sh->path, (long long)c);
            dst += sh->chunk_bytes[c];
        }
    }
    return DSA_OK;
}

static void bench_free(Bench *b) {
    int n = b->res->num_shards;
    for (int i = 0; b->shards && i < n; i++) dsa_shard_close(&b->shards[i]);
    for (int i = 0; b->paths && i < n; i++) dsa_free(b->paths[i], DSA_PATH_CAP + 16);
    dsa_free(b->paths, (size_t)n * sizeof *b->paths);
    dsa_free(b->shards, (size_t)n * sizeof *b->shards);
    dsa_free(b->order, (size_t)b->res->windows * sizeof *b->order);
    dsa_free(b->window, (size_t)b->window_cap * 4);
    dsa_free(b->compressed, b->res->compressed_bytes);
    if (b->raw_fd >= 0) close(b->raw_fd);
}

DsaStatus dsa_bench_loader_check(const DsaBenchLoaderOptions *o) {
    if (o->seq_len < 1) DSA_FAIL(DSA_ERR_ARG, "benchmark: seq_len %lld must be >= 1", (long long)o->seq_len);
    if (o->tokens < 2 * (o->seq_len + 1))
        DSA_FAIL(DSA_ERR_ARG, "benchmark: --tokens %lld is too few for windows of %lld tokens (need at least %lld)",
                 (long long)o->tokens, (long long)(o->seq_len + 1), (long long)(2 * (o->seq_len + 1)));
    if (o->repeat < 1 || o->repeat > 100) DSA_FAIL(DSA_ERR_ARG, "benchmark: repeat %d out of range [1, 100]", o->repeat);
    if (o->shard_tokens < o->seq_len + 1)
        DSA_FAIL(DSA_ERR_ARG, "benchmark: shard_tokens %lld is below one window (%lld tokens)", (long long)o->shard_tokens,
                 (long long)(o->seq_len + 1));
    if (o->chunk_tokens < 1 || o->chunk_tokens > (1 << 26))
        DSA_FAIL(DSA_ERR_ARG, "benchmark: chunk_tokens %lld out of range [1, 2^26]", (long long)o->chunk_tokens);
    if (o->zstd_level < 1 || o->zstd_level > 22)
        DSA_FAIL(DSA_ERR_ARG, "benchmark: zstd level %d out of range [1, 22]", o->zstd_level);
    return DSA_OK;
}

static DsaStatus check_bench_options(const DsaBenchLoaderOptions *o) {
    if (!o->dir || !*o->dir) DSA_FAIL(DSA_ERR_ARG, "benchmark: no directory given for the data set");
    if ((int)o->dist < 0 || (int)o->dist >= DSA_BENCH_NUM_DISTS)
        DSA_FAIL(DSA_ERR_ARG, "benchmark: unknown distribution %d", (int)o->dist);
    DSA_TRY(dsa_bench_loader_check(o));
    return DSA_OK;
}

static DsaStatus measure(Bench *b) {
    const DsaBenchLoaderOptions *o = b->o;
    DsaBenchLoaderResult *res = b->res;
    int r = o->repeat;
    double p0[100], p2[100], plain[100], zs[100], range[100], open0[100], open2[100];
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx) DSA_FAIL(DSA_ERR_NOMEM, "cannot create a zstd decompression context");
    DsaStatus st = DSA_OK;
    int64_t total_chunk_tokens = 0;
    for (int s = 0; s < res->num_shards; s++) total_chunk_tokens += b->shards[s].num_chunks * b->shards[s].meta.chunk_tokens;
    DSA_TRY_GOTO(st, check_windows(b), done);
    for (int i = 0; i < r; i++) {
        DSA_TRY_GOTO(st, time_loader(b, 0, &p0[i], &open0[i], i == 0), done);
        DSA_TRY_GOTO(st, time_loader(b, 2, &p2[i], &open2[i], 0), done);
        DSA_TRY_GOTO(st, time_plain(b, &plain[i]), done);
        DSA_TRY_GOTO(st, time_zstd(b, dctx, &zs[i]), done);
        time_range(b, &range[i]);
        if (i == 0) res->decoded_tokens = decoded_tokens(b);
    }
    int64_t delivered = res->windows * (o->seq_len + 1);
    set_timing(&res->loader_p0, delivered, p0, r);
    set_timing(&res->loader_p2, delivered, p2, r);
    set_timing(&res->plain, delivered, plain, r);
    set_timing(&res->zstd, total_chunk_tokens, zs, r);
    set_timing(&res->range, delivered, range, r);
    set_timing(&res->open, 0, open0, r);
    res->num_chunks = total_chunk_tokens / o->chunk_tokens;
done:
    ZSTD_freeDCtx(dctx);
    return st;
}

DsaStatus dsa_bench_loader_run(const DsaBenchLoaderOptions *o, DsaBenchLoaderResult *res) {
    DSA_TRY(check_bench_options(o));
    memset(res, 0, sizeof *res);
    res->dist = o->dist;
    double t0 = dsa_time_now();
    DSA_TRY(dsa_bench_generate(o, res));
    res->generate_s = dsa_time_now() - t0;
    res->windows = (res->stream_tokens - 1) / o->seq_len;
    Bench b = {.o = o, .res = res, .raw_fd = -1};
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, open_shards(&b), done);
    res->compression_ratio = 4.0 * (double)res->stream_tokens / (double)res->compressed_bytes;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&b.order, (size_t)res->windows * sizeof *b.order, "window order"), done);
    b.window_cap = o->seq_len + 1 > o->chunk_tokens ? o->seq_len + 1 : o->chunk_tokens;
    DSA_TRY_GOTO(st, dsa_alloc((void **)&b.window, (size_t)b.window_cap * 4, "window buffer"), done);
    DSA_TRY_GOTO(st, load_files(&b), done);
    DSA_TRY_GOTO(st, measure(&b), done);
done:
    bench_free(&b);
    return st;
}
