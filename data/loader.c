/* loader.c: the streaming loader (see loader.h for the order, split and cursor rules).
 *
 * Threading: the producer (background thread, or the caller when prefetch = 0) owns
 * `produce` (the cursor of the next window to decode) and the epoch permutation; the
 * consumer owns `consume`. They share only the ring counters, under `lock`:
 *   produced - released = slots in use (decoded, or held by the caller)
 *   consumed            = slots handed to the caller
 * A producer error is stored with the slot count at which it happened and re-raised on
 * the caller's thread when the caller reaches that window.
 */
#include "data/loader.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "core/rng.h"

enum { ERROR_TEXT_CAP = 4096, MAX_PREFETCH = 64 };

typedef struct {
    uint32_t *tokens;
    int32_t *segment_ids;
    int64_t window;
    uint64_t epoch, position;
} Slot;

typedef struct {
    uint64_t epoch, position;
} Position;

struct DsaLoader {
    DsaLoaderOptions opts;
    DsaShard *shards;      /* (num_shards) */
    int64_t *shard_start;  /* (num_shards + 1) global index of each shard's first token */
    int num_shards;
    int64_t total_tokens, num_windows, rank_windows;

    /* producer state */
    DsaShardScratch *scratch;
    uint32_t *perm;        /* (num_windows) permutation of perm_epoch */
    uint64_t perm_epoch;
    int perm_valid;
    Position produce;

    /* ring */
    Slot *slots;
    int num_slots;
    uint64_t produced, consumed, released;
    int holding;           /* the caller holds slot (consumed - 1) */
    Position consume;      /* cursor of the next window returned to the caller */

    /* background thread */
    pthread_t thread;
    int thread_running, stop;
    pthread_mutex_t lock;
    pthread_cond_t can_produce, can_consume;
    DsaStatus error;
    char error_text[ERROR_TEXT_CAP];
};

DsaLoaderOptions dsa_loader_options_default(void) {
    return (DsaLoaderOptions){.seq_len = 131072, .seed = 0, .rank = 0, .world = 1, .prefetch = 2};
}

/* ---- order ------------------------------------------------------------------------ */

/* Fisher-Yates over all windows, from the RNG stream of (seed, epoch). */
static void make_permutation(DsaLoader *l, uint64_t epoch) {
    DsaRng root = dsa_rng_init(l->opts.seed, 0x6c6f61646572ull /* "loader" */);
    DsaRng rng = dsa_rng_split(&root, epoch);
    for (int64_t i = 0; i < l->num_windows; i++) l->perm[i] = (uint32_t)i;
    for (int64_t i = l->num_windows - 1; i > 0; i--) {
        int64_t j = (int64_t)dsa_rng_below(&rng, (uint64_t)i + 1);
        uint32_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
    l->perm_epoch = epoch;
    l->perm_valid = 1;
}

static int64_t window_at(DsaLoader *l, Position p) {
    if (!l->perm_valid || l->perm_epoch != p.epoch) make_permutation(l, p.epoch);
    return l->perm[(int64_t)p.position * l->opts.world + l->opts.rank];
}

static Position advance(const DsaLoader *l, Position p) {
    if (++p.position == (uint64_t)l->rank_windows) {
        p.position = 0;
        p.epoch++;
    }
    return p;
}

/* ---- decoding one window ---------------------------------------------------------- */

static int find_shard(const DsaLoader *l, int64_t token) {
    int lo = 0, hi = l->num_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (l->shard_start[mid] <= token) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Document ids for shard-local tokens [a, b), continuing from *seg; every document
 * piece (and so every shard) starts a new id, except at the very start of the window. */
static void fill_segments(const DsaShard *s, int64_t a, int64_t b, int32_t *out, int32_t *seg, int first_piece) {
    int64_t lo = 0, hi = s->num_docs - 1; /* last doc with offset <= a */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if ((int64_t)s->doc_offsets[mid] <= a) lo = mid;
        else hi = mid - 1;
    }
    int64_t pos = a;
    for (int64_t d = lo; pos < b; d++) {
        int64_t end = (int64_t)s->doc_offsets[d + 1] < b ? (int64_t)s->doc_offsets[d + 1] : b;
        if (!(first_piece && pos == a)) (*seg)++;
        for (; pos < end; pos++) *out++ = *seg;
    }
}

static DsaStatus decode_window(DsaLoader *l, Position p, Slot *slot) {
    int64_t w = window_at(l, p);
    int64_t len = l->opts.seq_len + 1, start = w * l->opts.seq_len, end = start + len;
    int32_t seg = 0;
    int64_t done = 0;
    for (int s = find_shard(l, start); done < len; s++) {
        int64_t a = start + done - l->shard_start[s];
        int64_t b = (end < l->shard_start[s + 1] ? end : l->shard_start[s + 1]) - l->shard_start[s];
        DSA_TRY(dsa_shard_read(&l->shards[s], a, b - a, slot->tokens + done, l->scratch));
        if (slot->segment_ids) fill_segments(&l->shards[s], a, b, slot->segment_ids + done, &seg, done == 0);
        done += b - a;
    }
    slot->window = w;
    slot->epoch = p.epoch;
    slot->position = p.position;
    return DSA_OK;
}

/* ---- producer thread ---------------------------------------------------------------- */

static void *producer_main(void *arg) {
    DsaLoader *l = arg;
    pthread_mutex_lock(&l->lock);
    while (!l->stop && l->error == DSA_OK) {
        if (l->produced - l->released >= (uint64_t)l->num_slots) {
            pthread_cond_wait(&l->can_produce, &l->lock);
            continue;
        }
        Slot *slot = &l->slots[l->produced % (uint64_t)l->num_slots];
        pthread_mutex_unlock(&l->lock);
        DsaStatus st = decode_window(l, l->produce, slot);
        pthread_mutex_lock(&l->lock);
        if (st != DSA_OK) {
            l->error = st;
            dsa_error_save(l->error_text, sizeof l->error_text);
        } else {
            l->produce = advance(l, l->produce);
            l->produced++;
        }
        pthread_cond_broadcast(&l->can_consume);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

static DsaStatus start_thread(DsaLoader *l) {
    if (l->opts.prefetch == 0) return DSA_OK;
    l->stop = 0;
    if (pthread_create(&l->thread, NULL, producer_main, l) != 0)
        DSA_FAIL(DSA_ERR_INTERNAL, "cannot start the data prefetch thread");
    l->thread_running = 1;
    return DSA_OK;
}

static void stop_thread(DsaLoader *l) {
    if (!l->thread_running) return;
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_cond_broadcast(&l->can_produce);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    l->thread_running = 0;
}

/* ---- public API ------------------------------------------------------------------- */

static DsaStatus check_options(const DsaLoaderOptions *o) {
    if (o->num_paths < 1) DSA_FAIL(DSA_ERR_ARG, "the loader needs at least one shard");
    if (o->seq_len < 1) DSA_FAIL(DSA_ERR_ARG, "seq_len %lld must be >= 1", (long long)o->seq_len);
    if (o->world < 1 || o->rank < 0 || o->rank >= o->world)
        DSA_FAIL(DSA_ERR_ARG, "rank %d of world %d is invalid (need 0 <= rank < world)", o->rank, o->world);
    if (o->prefetch < 0 || o->prefetch > MAX_PREFETCH)
        DSA_FAIL(DSA_ERR_ARG, "prefetch %d out of range [0, %d]", o->prefetch, MAX_PREFETCH);
    return DSA_OK;
}

/* The one wording of a shard whose ids a model cannot embed (loader and run checks). */
static DsaStatus vocab_too_small(const char *path, const DsaShardMeta *meta, uint64_t model_vocab) {
    DSA_FAIL(DSA_ERR_RANGE,
             "%s: shard vocab_size %llu (tokenizer %s) exceeds the model's vocab_size %llu: its token ids may reach "
             "%llu, past the model's embedding; use a model with vocab_size >= %llu, or pack the data with the "
             "model's tokenizer",
             path, (unsigned long long)meta->vocab_size, meta->tokenizer, (unsigned long long)model_vocab,
             (unsigned long long)meta->vocab_size - 1, (unsigned long long)meta->vocab_size);
}

DsaStatus dsa_data_check_vocab(const char *const *paths, int num_paths, uint64_t model_vocab) {
    for (int i = 0; i < num_paths; i++) {
        DsaShardMeta meta;
        DSA_TRY(dsa_shard_read_meta(paths[i], &meta));
        if (meta.vocab_size > model_vocab) return vocab_too_small(paths[i], &meta, model_vocab);
    }
    return DSA_OK;
}

static DsaStatus check_shard_agrees(const DsaLoader *l, const DsaShard *s) {
    const DsaShard *first = &l->shards[0];
    if (l->opts.vocab_size && s->meta.vocab_size > l->opts.vocab_size)
        return vocab_too_small(s->path, &s->meta, l->opts.vocab_size);
    if (s == first) return DSA_OK;
    if (s->meta.vocab_size != first->meta.vocab_size || s->meta.eos_id != first->meta.eos_id ||
        strcmp(s->meta.tokenizer, first->meta.tokenizer) != 0)
        DSA_FAIL(DSA_ERR_FORMAT,
                 "%s (vocab_size %llu, eos_id %u, tokenizer %s) does not match %s (vocab_size %llu, eos_id %u, "
                 "tokenizer %s): all shards of a run must share one tokenizer",
                 s->path, (unsigned long long)s->meta.vocab_size, s->meta.eos_id, s->meta.tokenizer, first->path,
                 (unsigned long long)first->meta.vocab_size, first->meta.eos_id, first->meta.tokenizer);
    return DSA_OK;
}

static DsaStatus open_shards(DsaLoader *l) {
    int n = l->opts.num_paths;
    DSA_TRY(dsa_alloc((void **)&l->shards, (size_t)n * sizeof *l->shards, "shard table"));
    DSA_TRY(dsa_alloc((void **)&l->shard_start, (size_t)(n + 1) * sizeof *l->shard_start, "shard table"));
    l->shard_start[0] = 0;
    DsaShardSetCheck set = {0}; /* each shard of a set must be listed by its finished set's manifest */
    DsaStatus st = DSA_OK;
    for (int i = 0; i < n && st == DSA_OK; i++) {
        DSA_TRY_GOTO(st, dsa_shard_open(&l->shards[i], l->opts.paths[i]), done);
        l->num_shards = i + 1;
        DSA_TRY_GOTO(st, dsa_shard_check_set(&set, &l->shards[i]), done);
        DSA_TRY_GOTO(st, check_shard_agrees(l, &l->shards[i]), done);
        l->shard_start[i + 1] = l->shard_start[i] + l->shards[i].num_tokens;
    }
    l->total_tokens = l->shard_start[n];
done:
    dsa_shard_check_set_free(&set);
    return st;
}

static DsaStatus size_windows(DsaLoader *l) {
    const DsaLoaderOptions *o = &l->opts;
    l->num_windows = (l->total_tokens - 1) / o->seq_len;
    if (l->num_windows == 0)
        DSA_FAIL(DSA_ERR_RANGE,
                 "a window of seq_len + 1 = %lld tokens is longer than the data: %d shard(s) starting with %s hold "
                 "%lld tokens",
                 (long long)(o->seq_len + 1), l->num_shards, o->paths[0], (long long)l->total_tokens);
    if (l->num_windows > (int64_t)UINT32_MAX)
        DSA_FAIL(DSA_ERR_RANGE, "%d shard(s) starting with %s hold %lld windows of seq_len %lld, more than 2^32; use a "
                 "longer seq_len", l->num_shards, o->paths[0], (long long)l->num_windows, (long long)o->seq_len);
    l->rank_windows = l->num_windows / o->world;
    if (l->rank_windows == 0)
        DSA_FAIL(DSA_ERR_RANGE, "%d shard(s) starting with %s hold %lld windows of %lld tokens, fewer than the %d ranks",
                 l->num_shards, o->paths[0], (long long)l->num_windows, (long long)(o->seq_len + 1), o->world);
    return DSA_OK;
}

static DsaStatus alloc_buffers(DsaLoader *l) {
    int64_t len = l->opts.seq_len + 1;
    l->num_slots = l->opts.prefetch + 1;
    DSA_TRY(dsa_alloc((void **)&l->perm, (size_t)l->num_windows * sizeof *l->perm, "window permutation"));
    l->slots = dsa_calloc((size_t)l->num_slots, sizeof *l->slots);
    if (!l->slots) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for loader slots");
    for (int i = 0; i < l->num_slots; i++) {
        DSA_TRY(dsa_alloc((void **)&l->slots[i].tokens, (size_t)len * 4, "window buffer"));
        if (l->opts.segment_ids) DSA_TRY(dsa_alloc((void **)&l->slots[i].segment_ids, (size_t)len * 4, "segment ids"));
    }
    return DSA_OK;
}

DsaStatus dsa_loader_open(DsaLoader **out, const DsaLoaderOptions *opts) {
    *out = NULL;
    DSA_TRY(check_options(opts));
    DsaLoader *l = dsa_calloc(1, sizeof *l);
    if (!l) DSA_FAIL(DSA_ERR_NOMEM, "out of memory for the loader");
    l->opts = *opts;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->can_produce, NULL);
    pthread_cond_init(&l->can_consume, NULL);
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, open_shards(l), fail);
    DSA_TRY_GOTO(st, size_windows(l), fail);
    DSA_TRY_GOTO(st, alloc_buffers(l), fail);
    DSA_TRY_GOTO(st, dsa_shard_scratch_new(&l->scratch), fail);
    DSA_TRY_GOTO(st, start_thread(l), fail);
    *out = l;
    return DSA_OK;
fail:
    dsa_loader_close(l);
    return st;
}

DsaStatus dsa_loader_next(DsaLoader *l, DsaWindow *window) {
    Slot *slot;
    if (l->opts.prefetch == 0) {
        slot = &l->slots[0];
        DSA_TRY(decode_window(l, l->consume, slot));
    } else {
        pthread_mutex_lock(&l->lock);
        if (l->holding) {
            l->released++;
            l->holding = 0;
            pthread_cond_broadcast(&l->can_produce);
        }
        while (l->consumed == l->produced && l->error == DSA_OK) pthread_cond_wait(&l->can_consume, &l->lock);
        if (l->consumed == l->produced) {
            DsaStatus st = l->error;
            pthread_mutex_unlock(&l->lock);
            dsa_error_restore(st, l->error_text);
            dsa_error_push(__FILE__, __LINE__, "in the data prefetch thread, decoding epoch %llu position %llu",
                           (unsigned long long)l->consume.epoch, (unsigned long long)l->consume.position);
            return st;
        }
        slot = &l->slots[l->consumed % (uint64_t)l->num_slots];
        l->consumed++;
        l->holding = 1;
        pthread_mutex_unlock(&l->lock);
    }
    DSA_ASSERT(slot->epoch == l->consume.epoch && slot->position == l->consume.position);
    l->consume = advance(l, l->consume);
    *window = (DsaWindow){.tokens = slot->tokens,
                          .segment_ids = slot->segment_ids,
                          .window = slot->window,
                          .epoch = slot->epoch,
                          .position = slot->position};
    return DSA_OK;
}

DsaLoaderCursor dsa_loader_cursor(const DsaLoader *l) {
    return (DsaLoaderCursor){.epoch = l->consume.epoch,
                             .position = l->consume.position,
                             .seed = l->opts.seed,
                             .seq_len = l->opts.seq_len,
                             .rank = l->opts.rank,
                             .world = l->opts.world,
                             .total_tokens = l->total_tokens,
                             .num_shards = l->num_shards};
}

DsaStatus dsa_loader_seek(DsaLoader *l, const DsaLoaderCursor *c) {
    DsaLoaderCursor mine = dsa_loader_cursor(l);
#define CHECK_FIELD(field, fmt, cast)                                                                             \
    if (c->field != mine.field)                                                                                   \
        DSA_FAIL(DSA_ERR_FORMAT, "data cursor was saved with " #field " = " fmt " but the loader has " #field " = " fmt \
                 " (%d shard(s) starting with %s); resuming needs the same data and data options", (cast)c->field,     \
                 (cast)mine.field, l->num_shards, l->opts.paths[0]);
    CHECK_FIELD(seed, "%llu", unsigned long long)
    CHECK_FIELD(seq_len, "%lld", long long)
    CHECK_FIELD(world, "%d", int)
    CHECK_FIELD(rank, "%d", int)
    CHECK_FIELD(num_shards, "%d", int)
    CHECK_FIELD(total_tokens, "%lld", long long)
#undef CHECK_FIELD
    if (c->position >= (uint64_t)l->rank_windows)
        DSA_FAIL(DSA_ERR_FORMAT, "data cursor position %llu is past the %lld windows of an epoch of %s (%d shard(s))",
                 (unsigned long long)c->position, (long long)l->rank_windows, l->opts.paths[0], l->num_shards);
    stop_thread(l);
    l->produced = l->consumed = l->released = 0;
    l->holding = 0;
    l->error = DSA_OK;
    l->produce = l->consume = (Position){.epoch = c->epoch, .position = c->position};
    DSA_TRY(start_thread(l));
    return DSA_OK;
}

void dsa_loader_close(DsaLoader *l) {
    if (!l) return;
    stop_thread(l);
    for (int i = 0; i < l->num_shards; i++) dsa_shard_close(&l->shards[i]);
    int64_t len = l->opts.seq_len + 1;
    for (int i = 0; l->slots && i < l->num_slots; i++) {
        dsa_free(l->slots[i].tokens, (size_t)len * 4);
        dsa_free(l->slots[i].segment_ids, (size_t)len * 4);
    }
    dsa_free(l->slots, (size_t)l->num_slots * sizeof *l->slots);
    dsa_free(l->perm, (size_t)l->num_windows * sizeof *l->perm);
    dsa_free(l->shards, (size_t)l->opts.num_paths * sizeof *l->shards);
    dsa_free(l->shard_start, (size_t)(l->opts.num_paths + 1) * sizeof *l->shard_start);
    dsa_shard_scratch_free(l->scratch);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->can_produce);
    pthread_cond_destroy(&l->can_consume);
    dsa_free(l, sizeof *l);
}

int64_t dsa_loader_total_tokens(const DsaLoader *l) { return l->total_tokens; }
int64_t dsa_loader_num_windows(const DsaLoader *l) { return l->num_windows; }
int64_t dsa_loader_rank_windows(const DsaLoader *l) { return l->rank_windows; }
const DsaShardMeta *dsa_loader_meta(const DsaLoader *l) { return &l->shards[0].meta; }
