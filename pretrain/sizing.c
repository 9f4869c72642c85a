/* sizing.c: the host memory of a training run, before anything is allocated
 * (sizing.h). The parameter count comes from the parameter table and the activations
 * from dsa_model_workspace_bytes, the same code dsa_model_init and dsa_model_reserve
 * size the trainer's buffers with; everything added on top here is checked 64-bit
 * arithmetic (core/checked.h). Errors name the config keys behind the size that failed. */
#include "pretrain/sizing.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/checked.h"
#include "core/mem.h"
#include "pretrain/model.h"
#include "pretrain/params.h"

/* The config keys a tensor's shape is made of (pretrain/params.h has the shapes). */
static const char *slot_keys(DsaWeightSlot s, bool q_lora) {
    switch (s) {
    case DSA_W_EMBED:
    case DSA_W_LM_HEAD: return "model.vocab_size x model.hidden_size";
    case DSA_W_FINAL_NORM:
    case DSA_W_INPUT_NORM:
    case DSA_W_POST_NORM: return "model.hidden_size";
    case DSA_W_Q_A: return "model.q_lora_rank x model.hidden_size";
    case DSA_W_Q_A_NORM: return "model.q_lora_rank";
    case DSA_W_Q_B:
        return "model.num_attention_heads * (model.qk_nope_head_dim + model.qk_rope_head_dim) x model.q_lora_rank";
    case DSA_W_Q:
        return "model.num_attention_heads * (model.qk_nope_head_dim + model.qk_rope_head_dim) x model.hidden_size";
    case DSA_W_KV_A: return "(model.kv_lora_rank + model.qk_rope_head_dim) x model.hidden_size";
    case DSA_W_KV_A_NORM: return "model.kv_lora_rank";
    case DSA_W_KV_B: return "model.num_attention_heads * (model.qk_nope_head_dim + model.v_head_dim) x model.kv_lora_rank";
    case DSA_W_O: return "model.hidden_size x model.num_attention_heads * model.v_head_dim";
    case DSA_W_GATE:
    case DSA_W_UP:
    case DSA_W_DOWN: return "model.intermediate_size x model.hidden_size";
    case DSA_W_IDX_WQ_B:
        return q_lora ? "model.index_n_heads * model.index_head_dim x model.q_lora_rank"
                      : "model.index_n_heads * model.index_head_dim x model.hidden_size";
    case DSA_W_IDX_WK: return "model.index_head_dim x model.hidden_size";
    case DSA_W_IDX_K_NORM:
    case DSA_W_IDX_K_NORM_BIAS: return "model.index_head_dim";
    case DSA_W_IDX_WEIGHTS_PROJ: return "model.index_n_heads x model.hidden_size";
    case DSA_W_ROUTER: return "model.n_routed_experts x model.hidden_size";
    case DSA_W_ROUTER_BIAS: return "model.n_routed_experts";
    case DSA_W_EXPERT_GATE:
    case DSA_W_EXPERT_UP:
    case DSA_W_EXPERT_DOWN: return "model.moe_intermediate_size x model.hidden_size, model.n_routed_experts of them";
    case DSA_W_SHARED_GATE:
    case DSA_W_SHARED_UP:
    case DSA_W_SHARED_DOWN: return "model.moe_intermediate_size * model.n_shared_experts x model.hidden_size";
    default: return "the model section";
    }
}

/* Values that must fit the types the code keeps them in, and a parameter table small
 * enough to build (the table is allocated before any tensor is sized). */
static DsaStatus check_model_ranges(const DsaConfig *cfg) {
    const char *src = cfg->source;
    const DsaModelConfig *m = &cfg->model;
    bool of = false;
    const int64_t experts = m->has_moe ? m->n_routed_experts : 0;
    int64_t tensors = dsa_add_sticky(3, dsa_mul_sticky(m->num_hidden_layers, dsa_add_sticky(23, dsa_mul_sticky(3, experts, &of), &of), &of), &of);
    if (of || tensors > DSA_SIZING_MAX_TENSORS)
        DSA_FAIL(DSA_ERR_CONFIG,
                 "%s: model.num_hidden_layers = %lld with model.n_routed_experts = %lld makes up to %lld tensors, more "
                 "than the %d the parameter table is sized for: a value is out of range",
                 src, (long long)m->num_hidden_layers, (long long)experts, (long long)tensors, DSA_SIZING_MAX_TENSORS);
    if (m->vocab_size > INT32_MAX)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: model.vocab_size = %lld is out of range: token ids are int32, at most %d", src,
                 (long long)m->vocab_size, INT32_MAX);
    if (m->has_moe && m->n_routed_experts > DSA_SIZING_MAX_EXPERTS)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: model.n_routed_experts = %lld is out of range: at most %d routed experts", src,
                 (long long)m->n_routed_experts, DSA_SIZING_MAX_EXPERTS);
    return DSA_OK;
}

static DsaStatus check_run_ranges(const DsaConfig *cfg) {
    const char *src = cfg->source;
    if (cfg->train.threads > DSA_SIZING_MAX_THREADS)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: train.threads = %lld is out of range: at most %d", src,
                 (long long)cfg->train.threads, DSA_SIZING_MAX_THREADS);
    for (int s = 0; s < cfg->num_stages; s++)
        if (cfg->stages[s].seq_len > INT32_MAX - 1)
            DSA_FAIL(DSA_ERR_CONFIG, "%s: stages.%d.seq_len = %lld is out of range: positions are int32, at most %d",
                     src, s, (long long)cfg->stages[s].seq_len, INT32_MAX - 1);
    return DSA_OK;
}

/* `bytes` (-1: overflowed) of `what` must fit a process's address space. */
static DsaStatus check_alloc(const DsaConfig *cfg, int64_t bytes, const char *what, const char *keys) {
    if (bytes < 0)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: the size of %s overflows 64-bit arithmetic (%s): a value is out of range",
                 cfg->source, what, keys);
    if (bytes > DSA_SIZING_MAX_ALLOC_BYTES)
        DSA_FAIL(DSA_ERR_CONFIG,
                 "%s: %s: %lld bytes (%.3g TiB), more than the 2^47 bytes (128 TiB) of address space any machine "
                 "gives a process, so it could never be allocated (%s)",
                 cfg->source, what, (long long)bytes, (double)bytes / 1099511627776.0, keys);
    return DSA_OK;
}

/* The parameter table: count, tensors and the fp32 buffer. */
static DsaStatus size_parameters(const DsaConfig *cfg, DsaSizing *out) {
    DsaParamTable t;
    if (dsa_param_table_build(&t, &cfg->model) != DSA_OK) {
        dsa_error_push(__FILE__, __LINE__, "sizing the parameters of %s (model.num_hidden_layers = %lld)", cfg->source,
                       (long long)cfg->model.num_hidden_layers);
        return dsa_error_status();
    }
    bool of = false;
    int64_t count = 0, largest = -1;
    for (int i = 0; i < t.count; i++) {
        count = dsa_add_sticky(count, t.info[i].numel, &of);
        if (largest < 0 || t.info[i].numel > t.info[largest].numel) largest = i;
    }
    out->parameters = count;
    out->tensors = t.count;
    out->param_bytes = dsa_mul_sticky(t.total, (int64_t)sizeof(float), &of);
    char keys[512] = "the model section";
    if (largest >= 0) {
        const DsaParamInfo *p = &t.info[largest];
        snprintf(keys, sizeof keys, "the largest tensor is %s [%lld, %lld]: %s", p->name, (long long)p->shape[0],
                 (long long)p->shape[1], slot_keys(p->slot, cfg->model.has_q_lora));
    }
    dsa_param_table_free(&t);
    DSA_TRY(check_alloc(cfg, of ? -1 : out->param_bytes, "one fp32 copy of the model parameters", keys));
    return DSA_OK;
}

/* Activations and token buffers of every stage; the largest are kept. */
static DsaStatus size_stages(const DsaConfig *cfg, DsaSizing *out) {
    const int64_t mb = cfg->train.micro_batch;
    for (int s = 0; s < cfg->num_stages; s++) {
        const DsaStageConfig *st = &cfg->stages[s];
        const int64_t L = st->seq_len, k = cfg->model.has_indexer ? st->index_topk : 0;
        char keys[512];
        snprintf(keys, sizeof keys,
                 "train.micro_batch = %lld sequences of stages.%d.seq_len = %lld tokens, stages.%d.index_topk = %lld, "
                 "and the model sizes",
                 (long long)mb, s, (long long)L, s, (long long)k);
        char what[96];
        snprintf(what, sizeof what, "the activations of one micro-batch of stage %d (\"%s\")", s, st->name);
        int64_t ws = dsa_model_workspace_bytes(&cfg->model, mb, L, k);
        DSA_TRY(check_alloc(cfg, ws, what, keys));
        if (ws > out->workspace_bytes) out->workspace_bytes = ws, out->workspace_stage = s;
        /* trainer ids: 2 x int32 per token; loader: (prefetch + 1) windows of L + 1 tokens */
        bool of = false;
        int64_t ids = dsa_mul_sticky(dsa_mul_sticky(mb, L, &of), 2 * (int64_t)sizeof(int32_t), &of);
        int64_t windows = dsa_mul_sticky(dsa_add_sticky(cfg->data.prefetch, 1, &of),
                                         dsa_mul_sticky(dsa_add_sticky(L, 1, &of), cfg->data.segment_ids ? 8 : 4, &of),
                                         &of);
        snprintf(keys, sizeof keys, "train.micro_batch = %lld, stages.%d.seq_len = %lld, data.prefetch = %lld",
                 (long long)mb, s, (long long)L, (long long)cfg->data.prefetch);
        DSA_TRY(check_alloc(cfg, of ? -1 : ids, "the trainer's token ids", keys));
        DSA_TRY(check_alloc(cfg, of ? -1 : windows, "the loader's window buffers", keys));
        int64_t tokens = dsa_add_sticky(ids, windows, &of);
        if (tokens > out->token_bytes) out->token_bytes = tokens;
    }
    return DSA_OK;
}

/* ---- which key makes a size too large ------------------------------------------------ */

/* The integer keys that sizes are made of, with where they live in a DsaConfig. */
typedef struct {
    const char *key;
    size_t off; /* of the int64_t in DsaConfig; stage keys: of stages[0]'s, stepped per stage */
    bool stage;
} SizeKey;

#define MK(f) {"model." #f, offsetof(DsaConfig, model.f), false}
static const SizeKey size_keys[] = {
    MK(vocab_size),       MK(hidden_size),       MK(intermediate_size), MK(moe_intermediate_size),
    MK(num_hidden_layers), MK(num_attention_heads), MK(q_lora_rank),     MK(kv_lora_rank),
    MK(qk_nope_head_dim), MK(qk_rope_head_dim),  MK(v_head_dim),        MK(n_routed_experts),
    MK(n_shared_experts), MK(num_experts_per_tok), MK(index_n_heads),   MK(index_head_dim),
    {"train.micro_batch", offsetof(DsaConfig, train.micro_batch), false},
    {"data.prefetch", offsetof(DsaConfig, data.prefetch), false},
    {"seq_len", offsetof(DsaConfig, stages[0].seq_len), true},
    {"index_topk", offsetof(DsaConfig, stages[0].index_topk), true},
};
#undef MK

/* The bytes of one step (model_only: of one parameter copy), or INT64_MAX when a size
 * overflows; raises no error. */
static int64_t step_bytes_quiet(const DsaConfig *cfg, bool model_only) {
    DsaSizing z;
    memset(&z, 0, sizeof z);
    DsaStatus st = check_model_ranges(cfg);
    if (st == DSA_OK && !model_only) st = check_run_ranges(cfg);
    if (st == DSA_OK) st = size_parameters(cfg, &z);
    if (st == DSA_OK && !model_only) st = size_stages(cfg, &z);
    bool of = st != DSA_OK;
    dsa_error_clear();
    int64_t total = model_only ? z.param_bytes
                               : dsa_add_sticky(dsa_mul_sticky(z.param_bytes, 4, &of),
                                                dsa_add_sticky(z.workspace_bytes, z.token_bytes, &of), &of);
    return of ? INT64_MAX : total;
}

/* Name the keys a failed size grows with: each size key in turn is set to 1 (every stage's,
 * for stage keys) and the step re-sized; the keys whose change alone makes it fit (or,
 * if none does, those whose change shrinks it most) are named with their values, in a
 * context line of the current error. */
static void name_culprits(const DsaConfig *cfg, bool model_only) {
    DsaConfig *probe = dsa_malloc(sizeof *probe);
    if (!probe) return;
    enum { N = sizeof size_keys / sizeof size_keys[0] };
    int64_t after[N];
    char saved[8192];
    dsa_error_save(saved, sizeof saved);
    DsaStatus status = dsa_error_status();
    int64_t best = INT64_MAX;
    for (int i = 0; i < N; i++) {
        after[i] = INT64_MAX;
        if (model_only && strncmp(size_keys[i].key, "model.", 6) != 0) continue;
        memcpy(probe, cfg, sizeof *probe);
        for (int sidx = 0; sidx < (size_keys[i].stage ? cfg->num_stages : 1); sidx++)
            *(int64_t *)((char *)probe + size_keys[i].off + (size_t)sidx * sizeof probe->stages[0]) = 1;
        after[i] = step_bytes_quiet(probe, model_only);
        if (after[i] < best) best = after[i];
    }
    dsa_error_restore(status, saved);
    /* the keys whose change alone makes the step fit; else those that shrink it most */
    bool any_fits = best <= DSA_SIZING_MAX_ALLOC_BYTES;
    char names[1024] = "";
    for (int i = 0; i < N && best < INT64_MAX; i++) {
        if (any_fits ? after[i] > DSA_SIZING_MAX_ALLOC_BYTES : after[i] != best) continue;
        size_t len = strlen(names);
        if (size_keys[i].stage)
            for (int sidx = 0; sidx < cfg->num_stages; sidx++) {
                const int64_t v = *(const int64_t *)((const char *)cfg + size_keys[i].off + (size_t)sidx * sizeof cfg->stages[0]);
                len = strlen(names);
                snprintf(names + len, sizeof names - len, "%sstages.%d.%s = %lld", len ? ", " : "", sidx, size_keys[i].key,
                         (long long)v);
            }
        else
            snprintf(names + len, sizeof names - len, "%s%s = %lld", len ? ", " : "", size_keys[i].key,
                     (long long)*(const int64_t *)((const char *)cfg + size_keys[i].off));
    }
    dsa_free(probe, sizeof *probe);
    if (names[0])
        dsa_error_push(__FILE__, __LINE__, "%s: the sizes %s with a smaller value of one of: %s", cfg->source,
                       any_fits ? "fit" : "shrink most", names);
}

DsaStatus dsa_sizing_model(const DsaModelConfig *m, const char *source, DsaSizing *out) {
    memset(out, 0, sizeof *out);
    DsaConfig *cfg = dsa_malloc(sizeof *cfg);
    if (!cfg) DSA_FAIL(DSA_ERR_NOMEM, "%s: sizing the model", source);
    DsaStatus st = dsa_config_defaults(cfg);
    cfg->model = *m;
    snprintf(cfg->source, sizeof cfg->source, "%s", source);
    if (st == DSA_OK) st = check_model_ranges(cfg);
    if (st == DSA_OK) {
        st = size_parameters(cfg, out);
        if (st != DSA_OK) name_culprits(cfg, true);
    }
    dsa_free(cfg, sizeof *cfg);
    return st;
}

DsaStatus dsa_sizing_train(const DsaConfig *cfg, DsaSizing *out) {
    memset(out, 0, sizeof *out);
    DSA_TRY(check_model_ranges(cfg));
    DSA_TRY(check_run_ranges(cfg));
    DsaStatus st = size_parameters(cfg, out);
    if (st == DSA_OK) st = size_stages(cfg, out);
    if (st != DSA_OK) {
        name_culprits(cfg, false);
        return st;
    }
    bool of = false;
    out->optimizer_bytes = dsa_mul_sticky(out->param_bytes, 3, &of);
    out->step_bytes =
        dsa_add_sticky(dsa_add_sticky(out->param_bytes, out->optimizer_bytes, &of),
                       dsa_add_sticky(out->workspace_bytes, out->token_bytes, &of), &of);
    char keys[256];
    snprintf(keys, sizeof keys, "%lld parameters, stage %d's activations and token buffers",
             (long long)out->parameters, out->workspace_stage);
    st = check_alloc(cfg, of ? -1 : out->step_bytes, "the host memory of one training step", keys);
    if (st != DSA_OK) name_culprits(cfg, false);
    return st;
}
