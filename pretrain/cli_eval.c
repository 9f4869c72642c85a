/* cli_eval.c: `dsa eval`: the LM loss of a checkpoint on held-out data.
 *
 * Data come from token shards (--data, read with the streaming loader in epoch-0 order
 * of seed 0) or from a raw little-endian uint32 token file (--tokens: window b is tokens
 * [b·L, b·L + L + 1), the same rule as the loader's). With --grads the gradient of the
 * mean loss over all evaluated windows is written as safetensors with the parameter
 * names: tools/torch_ref.py computes the same with PyTorch, and tools/compare_tensors.py
 * compares the two (the parity test). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"
#include "data/loader.h"
#include "kernels/backend.h"
#include "pretrain/cli.h"
#include "pretrain/model.h"
#include "pretrain/model_io.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa eval CHECKPOINT (--data SHARDS... | --tokens FILE) [--seq-len L] [--windows N]\n"
            "                [--batch B] [--grads OUT.safetensors] [--threads N] [--json]\n\n"
            "Reports the mean next-token cross-entropy (and perplexity) of the model in CHECKPOINT\n"
            "(a checkpoint directory, a run directory with `latest`, or a Hugging Face model dir)\n"
            "over N windows of L tokens.\n\n"
            "options:\n"
            "  --data PATH          shard file, directory or glob (repeatable)\n"
            "  --tokens FILE        raw little-endian uint32 tokens instead of shards\n"
            "  --seq-len L          tokens per window (default 1024, at most max_position_embeddings)\n"
            "  --windows N          windows to evaluate (default 16; with --tokens at most all)\n"
            "  --batch B            windows per forward pass (default 1)\n"
            "  --grads FILE         also write the gradient of the mean loss as F32 safetensors\n"
            "  --threads N          CPU threads (0 = all cores)\n"
            "  --json               print one JSON object instead of text\n"
            "  -h, --help           this text\n");
}

typedef struct {
    const char *checkpoint, *tokens_path, *grads_path;
    const char *data[64];
    int num_data;
    int64_t seq_len, windows, batch;
    int threads, json;
} EvalArgs;

/* Window source: shards through the loader, or a token file in memory. */
typedef struct {
    DsaLoader *loader;
    char **paths;
    int num_paths;
    uint32_t *file_tokens;
    int64_t file_count;
    int64_t next;
} Source;

static DsaStatus source_open(Source *s, const EvalArgs *a, int64_t vocab) {
    memset(s, 0, sizeof *s);
    if (a->tokens_path) {
        char *buf = NULL;
        size_t len = 0;
        DSA_TRY(dsa_file_read_all(a->tokens_path, &buf, &len));
        if (len % 4 != 0 || len < (size_t)(a->seq_len + 1) * 4) {
            dsa_free(buf, len + 1);
            DSA_FAIL(DSA_ERR_FORMAT, "%s: %zu bytes: expected a uint32 token file of at least seq_len + 1 = %lld tokens",
                     a->tokens_path, len, (long long)(a->seq_len + 1));
        }
        s->file_count = (int64_t)(len / 4);
        s->file_tokens = dsa_malloc(len);
        if (!s->file_tokens) {
            dsa_free(buf, len + 1);
            DSA_FAIL(DSA_ERR_NOMEM, "%s: %zu bytes", a->tokens_path, len);
        }
        memcpy(s->file_tokens, buf, len);
        dsa_free(buf, len + 1);
        return DSA_OK;
    }
    DSA_TRY(dsa_data_expand_paths(a->data, a->num_data, &s->paths, &s->num_paths));
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)s->paths;
    lo.num_paths = s->num_paths;
    lo.seq_len = a->seq_len;
    lo.seed = 0;
    lo.prefetch = 1;
    lo.vocab_size = (uint64_t)vocab;
    return dsa_loader_open(&s->loader, &lo);
}

static int64_t source_windows(const Source *s, int64_t L) {
    return s->loader ? dsa_loader_rank_windows(s->loader) : (s->file_count - 1) / L;
}

static DsaStatus source_next(Source *s, int64_t L, int64_t vocab, int32_t *in, int32_t *tgt, const char *what) {
    const uint32_t *tok;
    DsaWindow w;
    if (s->loader) {
        DSA_TRY(dsa_loader_next(s->loader, &w));
        tok = w.tokens;
    } else {
        tok = s->file_tokens + s->next * L;
        for (int64_t i = 0; i <= L; i++)
            if (tok[i] >= (uint64_t)vocab)
                DSA_FAIL(DSA_ERR_RANGE, "%s: token %lld is %u, outside the model's vocabulary of %lld", what,
                         (long long)(s->next * L + i), tok[i], (long long)vocab);
    }
    s->next++;
    for (int64_t i = 0; i < L; i++) in[i] = (int32_t)tok[i], tgt[i] = (int32_t)tok[i + 1];
    return DSA_OK;
}

static void source_close(Source *s) {
    if (s->loader) dsa_loader_close(s->loader);
    if (s->paths) dsa_data_paths_free(s->paths, s->num_paths);
    dsa_free(s->file_tokens, (size_t)s->file_count * 4);
}

static DsaStatus run_eval(EvalArgs *a) {
    const DsaBackend *be = dsa_backend_cpu();
    dsa_backend_cpu_set_threads(a->threads);
    DsaModel m;
    char dir[1024];
    DSA_TRY(dsa_model_load(&m, a->checkpoint, be, dir, sizeof dir));
    DsaStatus st = DSA_OK;
    Source src;
    int32_t *in = NULL, *tgt = NULL;
    const int64_t L = a->seq_len, B = a->batch;
    memset(&src, 0, sizeof src);
    if (a->seq_len > m.cfg.max_position_embeddings)
        DSA_FAIL_GOTO(st, out, DSA_ERR_ARG, "--seq-len %lld exceeds the model's max_position_embeddings %lld",
                      (long long)a->seq_len, (long long)m.cfg.max_position_embeddings);
    DSA_TRY_GOTO(st, source_open(&src, a, m.cfg.vocab_size), out);
    int64_t avail = source_windows(&src, a->seq_len);
    int64_t n = a->windows < avail ? a->windows : avail;
    if (n < 1) DSA_FAIL_GOTO(st, out, DSA_ERR_ARG, "no complete window of %lld tokens in the data", (long long)a->seq_len);
    in = dsa_malloc((size_t)(B * L) * sizeof *in);
    tgt = dsa_malloc((size_t)(B * L) * sizeof *tgt);
    if (!in || !tgt) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "token buffers");
    if (a->grads_path) dsa_model_zero_grad(&m);
    double loss_sum = 0, t0 = dsa_time_now();
    int64_t count = 0;
    const char *what = a->tokens_path ? a->tokens_path : "shards";
    for (int64_t done = 0; done < n; done += B) {
        int64_t b = n - done < B ? n - done : B;
        for (int64_t i = 0; i < b; i++) DSA_TRY_GOTO(st, source_next(&src, L, m.cfg.vocab_size, in + i * L, tgt + i * L, what), out);
        double ls = 0;
        int64_t c = 0;
        DSA_TRY_GOTO(st, dsa_model_forward(&m, in, tgt, b, L, &ls, &c), out);
        if (a->grads_path) dsa_model_backward(&m, (float)(1.0 / ((double)n * (double)L)));
        loss_sum += ls, count += c;
    }
    double loss = loss_sum / (double)count, secs = dsa_time_now() - t0;
    double gnorm = 0;
    if (a->grads_path) {
        DSA_TRY_GOTO(st, dsa_model_write_weights(a->grads_path, &m.table, m.grads), out);
        gnorm = sqrt(be->sum_squares(m.grads, m.table.total));
    }
    if (a->json) {
        printf("{\"checkpoint\":\"%s\",\"windows\":%lld,\"seq_len\":%lld,\"tokens\":%lld,\"loss\":%.9g,"
               "\"perplexity\":%.9g,\"seconds\":%.3f%s",
               dir, (long long)n, (long long)L, (long long)count, loss, exp(loss), secs, a->grads_path ? "" : "}\n");
        if (a->grads_path) printf(",\"grad_norm\":%.9g,\"grads\":\"%s\"}\n", gnorm, a->grads_path);
    } else {
        printf("checkpoint  %s\nwindows     %lld x %lld tokens\nloss        %.6f\nperplexity  %.4f\n", dir, (long long)n,
               (long long)L, loss, exp(loss));
        if (a->grads_path) printf("grad norm   %.6g (written to %s)\n", gnorm, a->grads_path);
    }
out:
    dsa_free(in, (size_t)(B * L) * sizeof *in);
    dsa_free(tgt, (size_t)(B * L) * sizeof *tgt);
    source_close(&src);
    dsa_model_free(&m);
    return st;
}

int cli_eval(int argc, char **argv) {
    static const struct option longopts[] = {
        {"data", required_argument, 0, 'd'},    {"tokens", required_argument, 0, 'k'},
        {"seq-len", required_argument, 0, 'L'}, {"windows", required_argument, 0, 'n'},
        {"batch", required_argument, 0, 'b'},   {"grads", required_argument, 0, 'g'},
        {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    EvalArgs a = {.seq_len = 1024, .windows = 16, .batch = 1};
    int rc = -1, opt;
    char *end = NULL;
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        long long v = 0;
        if (strchr("Lnbt", opt)) {
            v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || v < (opt == 't' ? 0 : 1)) {
                fprintf(stderr, "dsa eval: option wants a %s integer, got \"%s\"\n", opt == 't' ? "non-negative" : "positive",
                        optarg);
                rc = 2;
                break;
            }
        }
        switch (opt) {
        case 'd':
            if (a.num_data == 64) {
                fprintf(stderr, "dsa eval: at most 64 --data arguments (use a directory or a glob)\n");
                rc = 2;
            } else {
                a.data[a.num_data++] = optarg;
            }
            break;
        case 'k': a.tokens_path = optarg; break;
        case 'L': a.seq_len = v; break;
        case 'n': a.windows = v; break;
        case 'b': a.batch = v; break;
        case 'g': a.grads_path = optarg; break;
        case 't': a.threads = (int)v; break;
        case 'j': a.json = 1; break;
        case 'h': usage(stdout); rc = 0; break;
        default: usage(stderr); rc = 2; break;
        }
    }
    if (rc < 0 && optind + 1 != argc) {
        fprintf(stderr, "dsa eval: expected exactly one CHECKPOINT argument\n\n");
        usage(stderr);
        rc = 2;
    }
    if (rc < 0 && !!a.tokens_path == !!a.num_data) {
        fprintf(stderr, "dsa eval: give either --data SHARDS or --tokens FILE\n\n");
        usage(stderr);
        rc = 2;
    }
    if (rc >= 0) return rc;
    a.checkpoint = argv[optind];
    return cli_report("eval", run_eval(&a));
}
