/* eval.c: `dsa eval`: the LM loss of a checkpoint on held-out data; for a DSA model
 * (one with an indexer) also the loss with sparse top-k attention, each layer's indexer
 * KL and top-k recall against the dense attention (DSA-SPEC §6.1, §6.2), and the
 * accuracy of the synthetic recall tasks (data/synthetic.h), dense and sparse.
 *
 * Data come from token shards (--data, read with the streaming loader in epoch-0 order
 * of seed 0) or from a raw little-endian uint32 token file (--tokens: window b is tokens
 * [b·L, b·L + L + 1), the same rule as the loader's). With --grads the gradient of the
 * mean loss over all evaluated windows is written as safetensors with the parameter
 * names: tools/torch_ref.py computes the same with PyTorch, and tools/compare_tensors.py
 * compares the two (the parity test). With --logits-out the logits of every evaluated
 * window are written as F32 safetensors ("logits" [N, L, V], and for a DSA model
 * "logits_sparse" from the sparse pass): tools/hf_parity.py compares them with Hugging
 * Face transformers' DeepSeek models. NOTE: they are kept in memory until the end, N·L·V
 * floats per pass: meant for small checks, not for a 128K-token evaluation. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/safetensors.h"
#include "core/fileutil.h"
#include "core/log.h"
#include "core/mem.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "kernels/backend.h"
#include "pretrain/cli/cli.h"
#include "pretrain/host_view.h"
#include "pretrain/model.h"
#include "pretrain/model_io.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa eval CHECKPOINT (--data SHARDS... | --tokens FILE) [--seq-len L] [--windows N]\n"
            "                [--batch B] [--topk K] [--no-fp8] [--grads OUT.safetensors] [--threads N]\n"
            "                [--device NAME] [--precision fp32|bf16]\n"
            "                [--logits-out OUT.safetensors] [--json]\n\n"
            "Reports the mean next-token cross-entropy (and perplexity) of the model in CHECKPOINT\n"
            "(a checkpoint directory, a run directory with `latest`, or a Hugging Face model dir)\n"
            "over N windows of L tokens. For a DSA model (with a lightning indexer) it reports the\n"
            "loss with dense attention and with sparse top-k attention, each layer's indexer KL\n"
            "and top-k recall (the share of dense attention mass inside the selected keys), and,\n"
            "on synthetic-v1 data, the exact-match accuracy of the recall tasks' answers\n"
            "(teacher-forced argmax), dense and sparse.\n\n"
            "options:\n"
            "  --data PATH          shard file, directory or glob (repeatable)\n"
            "  --tokens FILE        raw little-endian uint32 tokens instead of shards\n"
            "  --seq-len L          tokens per window (default 1024, at most max_position_embeddings)\n"
            "  --windows N          windows to evaluate (default 16; with --tokens at most all)\n"
            "  --batch B            windows per forward pass (default 1)\n"
            "  --topk K             keys per query for the sparse loss (default: the model's index_topk)\n"
            "  --no-fp8             indexer without the FP8 round trip of q and k\n"
            "  --grads FILE         also write the gradient of the mean (dense) loss as F32 safetensors\n"
            "  --logits-out FILE    also write the logits as F32 safetensors: \"logits\" [N, L, V] (the\n"
            "                       dense pass) and, for a DSA model, \"logits_sparse\" (the sparse pass);\n"
            "                       held in memory until the end (N·L·V floats per pass)\n"
            "  --threads N          CPU threads (0 = all cores)\n"
            "  --device NAME        backend: cpu (default) or sim (the test device: the CPU ops on\n"
            "                       memory the host cannot dereference; same results as cpu)\n"
            "  --precision P        fp32 (default) or bf16: every GEMM on bf16-rounded operands with\n"
            "                       fp32 accumulation, the MoE router in fp32 (as train.precision)\n"
            "  --json               print one JSON object instead of text\n"
            "  -h, --help           this text\n");
}

typedef struct {
    const char *checkpoint, *tokens_path, *grads_path, *logits_path, *device, *precision;
    const char *data[64];
    int num_data;
    int64_t seq_len, windows, batch, topk;
    int threads, json, no_fp8;
} EvalArgs;

/* Synthetic recall tasks: exact-match answers per task (dense and sparse passes). */
enum { TASK_KV = 0, TASK_NEEDLE, TASK_COUNT };
static const char *const task_names[TASK_COUNT] = {"kv", "needle"};
typedef struct {
    int64_t total[TASK_COUNT];
    int64_t correct[2][TASK_COUNT]; /* [pass][task] */
} TaskScore;

/* Score the answers of the last forward's windows (logits [b·L, V]): at each ANSWER
 * token the value tokens follow; an answer counts as correct when the argmax at every
 * one of its positions is the next token. kv answers have 2 tokens, needle answers 4
 * (the token before ANSWER is NEEDLE for a needle query). */
static void score_answers(const DsaModel *m, const float *logits, const int32_t *in, const int32_t *tgt, int64_t b,
                          int64_t L, int pass, TaskScore *ts) {
    const int64_t V = m->cfg.vocab_size;
    for (int64_t w = 0; w < b; w++)
        for (int64_t t = 1; t < L; t++) {
            const int64_t n = w * L + t;
            if (in[n] != DSA_SYN_ANSWER) continue;
            const int task = in[n - 1] == DSA_SYN_NEEDLE ? TASK_NEEDLE : TASK_KV;
            const int64_t len = task == TASK_NEEDLE ? DSA_SYN_NEEDLE_VALUE_LEN : DSA_SYN_KV_VALUE_LEN;
            if (t + len > L) continue; /* answer cut by the window end */
            bool ok = true;
            for (int64_t i = 0; i < len && ok; i++) {
                const float *row = logits + (n + i) * V;
                int64_t best = 0;
                for (int64_t v = 1; v < V; v++)
                    if (row[v] > row[best]) best = v;
                ok = best == tgt[n + i];
            }
            if (pass == 0) ts->total[task]++;
            ts->correct[pass][task] += ok;
        }
}

/* The last forward's logits as the host sees them (host_view.h): the task score, and a
 * copy into keep (b·L·V floats) for --logits-out when keep is not NULL. */
static DsaStatus read_logits(const DsaModel *m, const int32_t *in, const int32_t *tgt, int64_t b, int64_t L, int pass,
                             TaskScore *ts, float *keep) {
    const size_t bytes = (size_t)(b * L * m->cfg.vocab_size) * sizeof(float);
    DsaHostView v;
    DSA_TRY(dsa_host_view_open(&v, m->be, m->logits, bytes, "eval logits"));
    score_answers(m, v.host, in, tgt, b, L, pass, ts);
    if (keep) memcpy(keep, v.host, bytes);
    dsa_host_view_close(&v);
    return DSA_OK;
}

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
            DSA_FAIL(DSA_ERR_FORMAT,
                     "%s: %zu bytes: expected a uint32 token file of at least seq_len + 1 = %lld tokens%s",
                     a->tokens_path, len, (long long)(a->seq_len + 1),
                     len % 4 == 0 && len >= 8 ? " (a shorter --seq-len fits: at most the file's tokens - 1)" : "");
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
    DsaStatus st = dsa_data_check_vocab((const char *const *)s->paths, s->num_paths, (uint64_t)vocab);
    if (st != DSA_OK) {
        dsa_error_push(__FILE__, __LINE__, "--data does not fit the model of %s (vocab_size %lld)", a->checkpoint,
                       (long long)vocab);
        return st;
    }
    DsaLoaderOptions lo = dsa_loader_options_default();
    lo.paths = (const char *const *)s->paths;
    lo.num_paths = s->num_paths;
    lo.seq_len = a->seq_len;
    lo.seed = 0;
    lo.prefetch = 1;
    lo.vocab_size = (uint64_t)vocab;
    st = dsa_loader_open(&s->loader, &lo);
    if (st == DSA_ERR_RANGE)
        dsa_error_push(__FILE__, __LINE__, "--seq-len %lld: use a shorter window, or give more data",
                       (long long)a->seq_len);
    return st;
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

/* --logits-out: the kept logits of both passes ([n, L, V] each; sparse NULL for a dense
 * model) as F32 safetensors. */
static DsaStatus write_logits(const char *path, const float *dense, const float *sparse, int64_t n, int64_t L,
                              int64_t V) {
    DsaStTensorRef refs[2];
    memset(refs, 0, sizeof refs);
    const char *names[2] = {"logits", "logits_sparse"};
    const float *bufs[2] = {dense, sparse};
    int count = sparse ? 2 : 1;
    for (int i = 0; i < count; i++) {
        refs[i].name = names[i];
        refs[i].dtype = DSA_F32;
        refs[i].ndim = 3;
        refs[i].shape[0] = n, refs[i].shape[1] = L, refs[i].shape[2] = V;
        refs[i].data = bufs[i];
    }
    static const char *const keys[] = {"format"}, *const values[] = {"pt"};
    DSA_TRY(dsa_safetensors_write(path, refs, count, keys, values, 1));
    return DSA_OK;
}

static DsaStatus run_eval(EvalArgs *a) {
    const DsaBackend *be = NULL;
    DSA_TRY(dsa_backend_get(a->device ? a->device : "cpu", &be));
    DSA_TRY(dsa_backend_for_precision(be, a->precision ? a->precision : "fp32", &be));
    dsa_backend_cpu_set_threads(a->threads);
    DsaModel m;
    char dir[1024];
    DSA_TRY(dsa_model_load(&m, a->checkpoint, be, dir, sizeof dir));
    DsaStatus st = DSA_OK;
    Source src;
    int32_t *in = NULL, *tgt = NULL;
    float *keep[2] = {NULL, NULL}; /* --logits-out: [n, L, V] of the dense and sparse passes */
    size_t keep_bytes = 0;
    const int64_t L = a->seq_len, B = a->batch, V = m.cfg.vocab_size;
    memset(&src, 0, sizeof src);
    if (a->seq_len > m.cfg.max_position_embeddings)
        DSA_FAIL_GOTO(st, out, DSA_ERR_ARG, "--seq-len %lld exceeds the model's max_position_embeddings %lld",
                      (long long)a->seq_len, (long long)m.cfg.max_position_embeddings);
    st = source_open(&src, a, m.cfg.vocab_size);
    if (st != DSA_OK) goto out;
    int64_t avail = source_windows(&src, a->seq_len);
    int64_t n = a->windows < avail ? a->windows : avail;
    if (n < 1) DSA_FAIL_GOTO(st, out, DSA_ERR_ARG, "no complete window of %lld tokens in the data", (long long)a->seq_len);
    if (n < a->windows)
        dsa_log(DSA_LOG_WARN, "eval: the data holds %lld window%s of %lld tokens (%lld tokens), fewer than the %lld "
                "asked for (--windows): evaluating %lld",
                (long long)avail, avail == 1 ? "" : "s", (long long)L,
                (long long)(src.loader ? dsa_loader_total_tokens(src.loader) : src.file_count), (long long)a->windows,
                (long long)n);
    in = dsa_malloc((size_t)(B * L) * sizeof *in);
    tgt = dsa_malloc((size_t)(B * L) * sizeof *tgt);
    if (!in || !tgt) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "token buffers");
    if (a->logits_path) {
        keep_bytes = (size_t)n * (size_t)L * (size_t)V * sizeof(float);
        for (int p = 0; p < (m.cfg.has_indexer ? 2 : 1); p++)
            if (!(keep[p] = dsa_malloc(keep_bytes)))
                DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "--logits-out: %zu bytes for the logits of %lld windows",
                              keep_bytes, (long long)n);
    }
    if (a->grads_path) dsa_model_zero_grad(&m);
    /* DSA model: the dense pass also measures the indexer (no indexer gradients) */
    const bool dsa = m.cfg.has_indexer;
    DsaForwardMode dense_mode = dsa_forward_mode_default(&m.cfg), sparse_mode;
    dense_mode.indexer_loss = dsa;
    dense_mode.indexer_fp8 = !a->no_fp8;
    if (a->topk) dense_mode.topk = a->topk;
    sparse_mode = dense_mode;
    sparse_mode.indexer_loss = false;
    sparse_mode.sparse = true;
    if (!a->grads_path)
        for (int i = 0; i < m.table.count; i++) m.requires_grad[i] = false;
    if (!dsa && a->topk)
        DSA_FAIL_GOTO(st, out, DSA_ERR_ARG,
                      "--topk: %s has no lightning indexer (a dense model), so it has no sparse attention to "
                      "evaluate: drop --topk, or add an indexer with `dsa convert --add-indexer %s --out DIR` and "
                      "train it (the warm-up and sparse stages of configs/tiny-dsa.json)",
                      dir, a->checkpoint);
    dsa_model_reset_indexer_stats(&m);
    double loss_sum = 0, sparse_sum = 0, t0 = dsa_time_now();
    int64_t count = 0;
    TaskScore ts = {0};
    const char *what = a->tokens_path ? a->tokens_path : "shards";
    for (int64_t done = 0; done < n; done += B) {
        int64_t b = n - done < B ? n - done : B;
        for (int64_t i = 0; i < b; i++) DSA_TRY_GOTO(st, source_next(&src, L, m.cfg.vocab_size, in + i * L, tgt + i * L, what), out);
        double ls = 0;
        int64_t c = 0;
        DSA_TRY_GOTO(st, dsa_model_set_mode(&m, &dense_mode), out);
        DSA_TRY_GOTO(st, dsa_model_forward(&m, in, tgt, b, L, &ls, &c), out);
        DSA_TRY_GOTO(st, read_logits(&m, in, tgt, b, L, 0, &ts, keep[0] ? keep[0] + done * L * V : NULL), out);
        if (a->grads_path) dsa_model_backward(&m, (float)(1.0 / ((double)n * (double)L)));
        loss_sum += ls, count += c;
        if (dsa) {
            DSA_TRY_GOTO(st, dsa_model_set_mode(&m, &sparse_mode), out);
            DSA_TRY_GOTO(st, dsa_model_forward(&m, in, tgt, b, L, &ls, &c), out);
            DSA_TRY_GOTO(st, read_logits(&m, in, tgt, b, L, 1, &ts, keep[1] ? keep[1] + done * L * V : NULL), out);
            sparse_sum += ls;
        }
        if (!a->json && n > B) dsa_log(DSA_LOG_DEBUG, "eval: %lld/%lld windows", (long long)(done + b), (long long)n);
    }
    double loss = loss_sum / (double)count, secs = dsa_time_now() - t0;
    double sparse_loss = sparse_sum / (double)count;
    double gnorm = 0;
    if (a->grads_path) {
        DsaHostView gv;
        DSA_TRY_GOTO(st, dsa_host_view_open(&gv, be, m.grads, (size_t)m.table.total * sizeof(float), a->grads_path), out);
        st = dsa_model_write_weights(a->grads_path, &m.table, gv.host);
        dsa_host_view_close(&gv);
        if (st != DSA_OK) goto out;
        gnorm = sqrt(be->sum_squares(m.grads, m.table.total));
    }
    if (a->logits_path) DSA_TRY_GOTO(st, write_logits(a->logits_path, keep[0], keep[1], n, L, V), out);
    const int nL = (int)m.cfg.num_hidden_layers;
    if (a->json) {
        printf("{\"checkpoint\":\"%s\",\"windows\":%lld,\"seq_len\":%lld,\"tokens\":%lld,\"loss\":%.9g,"
               "\"perplexity\":%.9g,\"seconds\":%.3f",
               dir, (long long)n, (long long)L, (long long)count, loss, exp(loss), secs);
        if (a->grads_path) printf(",\"grad_norm\":%.9g,\"grads\":\"%s\"", gnorm, a->grads_path);
        if (a->logits_path) printf(",\"logits\":\"%s\"", a->logits_path);
        if (dsa) {
            printf(",\"topk\":%lld,\"dense_loss\":%.9g,\"sparse_loss\":%.9g,\"layers\":[", (long long)dense_mode.topk,
                   loss, sparse_loss);
            for (int l = 0; l < nL; l++) {
                const DsaIndexerLoss *x = &m.idx_stats[l];
                printf("%s{\"kl\":%.9g,\"recall\":%.6g}", l ? "," : "", x->kl_sum / (double)x->rows,
                       x->mass_sum / (double)x->mass_rows);
            }
            printf("]");
        }
        printf(",\"tasks\":{");
        for (int k = 0, first = 1; k < TASK_COUNT; k++) {
            if (!ts.total[k]) continue;
            printf("%s\"%s\":%.6g", first ? "" : ",", task_names[k], (double)ts.correct[0][k] / (double)ts.total[k]);
            if (dsa)
                printf(",\"%s_sparse\":%.6g", task_names[k], (double)ts.correct[1][k] / (double)ts.total[k]);
            first = 0;
        }
        printf("}}\n");
    } else {
        printf("checkpoint  %s\nwindows     %lld x %lld tokens\n", dir, (long long)n, (long long)L);
        if (!dsa) {
            printf("loss        %.6f\nperplexity  %.4f\n", loss, exp(loss));
        } else {
            printf("\n%-18s %12s %12s\n", "", "dense", "sparse");
            printf("%-18s %12s %12lld\n", "keys per query", "all", (long long)dense_mode.topk);
            printf("%-18s %12.6f %12.6f   (%+.2f%%)\n", "loss", loss, sparse_loss, 100.0 * (sparse_loss - loss) / loss);
            printf("%-18s %12.4f %12.4f\n", "perplexity", exp(loss), exp(sparse_loss));
        }
        for (int k = 0; k < TASK_COUNT; k++) {
            if (!ts.total[k]) continue;
            char label[64];
            snprintf(label, sizeof label, "%s accuracy", task_names[k]);
            printf("%-18s %12.4f", label, (double)ts.correct[0][k] / (double)ts.total[k]);
            if (dsa) printf(" %12.4f", (double)ts.correct[1][k] / (double)ts.total[k]);
            printf("   (%lld answers)\n", (long long)ts.total[k]);
        }
        if (dsa) {
            printf("\n%-6s %12s %12s\n", "layer", "indexer KL", "recall");
            for (int l = 0; l < nL; l++) {
                const DsaIndexerLoss *x = &m.idx_stats[l];
                printf("%-6d %12.6f %12.4f\n", l, x->kl_sum / (double)x->rows, x->mass_sum / (double)x->mass_rows);
            }
        }
        if (a->grads_path) printf("grad norm   %.6g (written to %s)\n", gnorm, a->grads_path);
        if (a->logits_path) printf("logits      written to %s\n", a->logits_path);
    }
out:
    dsa_free(in, (size_t)(B * L) * sizeof *in);
    dsa_free(tgt, (size_t)(B * L) * sizeof *tgt);
    dsa_free(keep[0], keep[0] ? keep_bytes : 0);
    dsa_free(keep[1], keep[1] ? keep_bytes : 0);
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
        {"topk", required_argument, 0, 'K'},    {"no-fp8", no_argument, 0, 'F'},
        {"logits-out", required_argument, 0, 'o'}, {"device", required_argument, 0, 'D'},
        {"precision", required_argument, 0, 'P'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    EvalArgs a = {.seq_len = 1024, .windows = 16, .batch = 1};
    int rc = -1, opt;
    char *end = NULL;
    optind = 1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        long long v = 0;
        if (strchr("LnbtK", opt)) {
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
        case 'o': a.logits_path = optarg; break;
        case 'D': a.device = optarg; break;
        case 'P': a.precision = optarg; break;
        case 't': a.threads = (int)v; break;
        case 'j': a.json = 1; break;
        case 'K': a.topk = v; break;
        case 'F': a.no_fp8 = 1; break;
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
