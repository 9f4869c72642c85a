/* plan.c: `dsa plan`: the device plan of every stage of a run (pretrain/plan.h): bytes per
 * device by kind and whether they fit, FLOPs, communication, time per step and GPU-hours
 * at a stated MFU, for a given layout or, without one, for every layout of --gpus that
 * fits, ranked; --layer prints issue 15's single-layer check. --json prints the same as
 * one JSON object. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/config.h"
#include "core/mem.h"
#include "core/strutil.h"
#include "pretrain/cli/cli.h"
#include "pretrain/plan.h"

enum { DEFAULT_TOP = 10, MAX_TOP = 1000 };

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa plan --config FILE [--set KEY=VALUE ...] --gpus N [--gpu-mem SIZE] [--seq L]\n"
            "                [--dp N] [--cp N] [--ep N] [--zero 0|1|2] [--recompute auto|on|off]\n"
            "                [--micro-batch N] [--precision bf16|fp32] [--peak-tflops X] [--mfu X]\n"
            "                [--bw GBPS] [--stage NAME] [--top N] [--layer] [--json]\n\n"
            "Plans every stage of the run in FILE on GPUs (host arithmetic, no GPU needed): bytes per\n"
            "device by kind (weights, fp32 master, fp32 gradients, AdamW moments, activations, KV\n"
            "latent, indexer q/k, top-k indices, scratch) against --gpu-mem, FLOPs per step (the\n"
            "indexer, top-k and KL counted: DSA-SPEC 8.4), communication per device per step, time\n"
            "per step and GPU-hours at --mfu of --peak-tflops, and the stage's tokens (steps x\n"
            "global_batch x seq_len). The memory model and its assumptions: docs/DESIGN.md, \"Device\n"
            "plan\", and pretrain/plan.h.\n\n"
            "Layout: gpus = dp x cp; dp groups run whole micro-batches, cp ranks split a sequence;\n"
            "the routed experts are split over ep ranks (ep divides dp x cp and n_routed_experts).\n"
            "Without --dp, --cp and --ep every layout of --gpus is planned and those that fit are\n"
            "listed, ranked by step time (compute at --mfu plus communication at --bw, no overlap),\n"
            "then fewer bytes per device, then smaller cp, then smaller ep; the best is detailed.\n\n"
            "options:\n"
            "  --config FILE        the run config (its stages: steps, global_batch, seq_len, top-k)\n"
            "  --set KEY=VALUE      override a config key (as dsa config)\n"
            "  --gpus N             devices (default: dp x cp of a given layout)\n"
            "  --gpu-mem SIZE       bytes per device: 80GB = 80e9, 80GiB = 80 x 2^30 (default 80GB)\n"
            "  --seq L              tokens per sequence in every stage, e.g. 131072 or 128Ki\n"
            "                       (default: each stage's seq_len)\n"
            "  --dp N, --cp N, --ep N  a layout (missing ones: cp 1, ep 1, dp = gpus / cp)\n"
            "  --zero 0|1|2         ZeRO stage: 1 shards master weights and moments over the\n"
            "                       replicas, 2 the gradients too (default 1)\n"
            "  --recompute MODE     activation recompute per layer: auto (on only when the stage\n"
            "                       does not fit without it; default), on, off\n"
            "  --micro-batch N      sequences per forward/backward of a dp group (default train.micro_batch)\n"
            "  --precision P        bf16 (bf16 weights and activations, fp32 master, gradients and\n"
            "                       moments; default) or fp32\n"
            "  --peak-tflops X      dense bf16 peak per GPU (default %.0f: H800/H200)\n"
            "  --mfu X              fraction of peak achieved (default %.2f)\n"
            "  --bw GBPS            collective bandwidth per GPU in GB/s (default %.0f: 400 Gb/s)\n"
            "  --stage NAME         only this stage (name or index)\n"
            "  --top N              fitting layouts to list per stage (default %d)\n"
            "  --layer              the single-layer check instead: one attention block (input norm,\n"
            "                       MLA, indexer) and one whole layer on one device, one sequence of\n"
            "                       --seq tokens: the bytes, whether it fits, how many layers fit\n"
            "  --json               print one JSON object instead of tables\n"
            "  -h, --help           this text\n\n"
            "examples:\n"
            "  dsa plan --config configs/deepseek-v3.2.json --gpus 2048 --gpu-mem 80GB --seq 131072\n"
            "  dsa plan --config configs/deepseek-v3.2.json --gpus 1024 --dp 16 --cp 64 --ep 64 --zero 2\n"
            "  dsa plan --config configs/deepseek-v3.2.json --layer --seq 131072\n",
            DSA_PLAN_DEFAULT_PEAK_TFLOPS, DSA_PLAN_DEFAULT_MFU, DSA_PLAN_DEFAULT_LINK_GBPS, DEFAULT_TOP);
}

typedef struct {
    const char *path;
    const char **sets;
    int n_sets;
    int64_t gpus, gpu_mem, seq, dp, cp, ep, micro_batch, top;
    int zero;
    DsaPlanRecompute recompute;
    DsaPlanPrecision precision;
    double peak_tflops, mfu, bw;
    const char *stage;
    bool layer, json;
} PlanArgs;

static const double GIB = 1024.0 * 1024.0 * 1024.0;

/* 2097152000 -> "2,097,152,000" */
static const char *grouped(int64_t v, char *buf) {
    char raw[32];
    int n = snprintf(raw, sizeof raw, "%lld", (long long)v), o = 0;
    for (int i = 0; i < n; i++) {
        buf[o++] = raw[i];
        if (raw[i] != '-' && (n - 1 - i) % 3 == 0 && i != n - 1) buf[o++] = ',';
    }
    buf[o] = 0;
    return buf;
}

static const char *recompute_name(DsaPlanRecompute r) {
    return r == DSA_PLAN_RECOMPUTE_ON ? "on" : r == DSA_PLAN_RECOMPUTE_OFF ? "off" : "auto";
}

static void print_stage(const DsaConfig *cfg, const DsaPlanStage *p) {
    const DsaStageConfig *st = &cfg->stages[p->stage];
    const DsaPlanLayout *l = &p->layout;
    char a[40], b[40];
    printf("  layout       dp %lld, cp %lld, ep %lld on %lld GPUs; ZeRO-%d, recompute %s, micro-batch %lld x %lld "
           "tokens (%lld per step per dp group), %s\n",
           (long long)l->dp, (long long)l->cp, (long long)l->ep, (long long)p->gpus, l->zero, recompute_name(l->recompute),
           (long long)l->micro_batch, (long long)l->seq_len, (long long)p->micro_steps,
           l->precision == DSA_PLAN_FP32 ? "fp32" : "bf16");
    printf("  parameters   %s, %s trained in this stage\n", grouped(p->parameters, a), grouped(p->trained, b));
    printf("  bytes per device (activations per layer %.3f GiB):\n", (double)p->bytes.activations_per_layer / GIB);
    char table[2048];
    dsa_plan_format_bytes(&p->bytes, p->gpu_mem, table, sizeof table);
    fputs(table, stdout);
    const DsaPlanFlops *f = &p->flops;
    printf("  FLOPs/step   %.4g: linear %.4g, attention %.4g, indexer %.4g, KL %.4g, top-k %.4g, cp re-expansion "
           "%.4g, recompute %.4g; %.4g per device\n",
           f->total, f->linear, f->attention, f->indexer, f->kl, f->topk, f->cp_extra, f->recompute, f->per_device);
    const DsaPlanComm *c = &p->comm;
    printf("  comm/step    %.3f GiB sent per device: gradients %.3f, ZeRO all-gather %.3f, EP all-to-all %.3f, "
           "CP exchange %.3f\n",
           (double)c->total / GIB, (double)c->gradients / GIB, (double)c->zero_gather / GIB,
           (double)c->ep_all_to_all / GIB, (double)c->cp_exchange / GIB);
    printf("  time/step    %.3f s (compute %.3f s, communication %.3f s); %lld steps: %.1f GPU-hours\n", p->step_s,
           p->compute_s, p->comm_s, (long long)st->steps, p->gpu_hours);
}

static cJSON *stage_json(const DsaPlanStage *p) {
    cJSON *o = cJSON_CreateObject();
    const DsaPlanLayout *l = &p->layout;
    cJSON *lay = cJSON_AddObjectToObject(o, "layout");
    cJSON_AddNumberToObject(lay, "dp", (double)l->dp);
    cJSON_AddNumberToObject(lay, "cp", (double)l->cp);
    cJSON_AddNumberToObject(lay, "ep", (double)l->ep);
    cJSON_AddNumberToObject(lay, "zero", l->zero);
    cJSON_AddStringToObject(lay, "recompute", recompute_name(l->recompute));
    cJSON_AddNumberToObject(lay, "micro_batch", (double)l->micro_batch);
    cJSON_AddNumberToObject(lay, "seq_len", (double)l->seq_len);
    cJSON_AddStringToObject(lay, "precision", l->precision == DSA_PLAN_FP32 ? "fp32" : "bf16");
    cJSON_AddNumberToObject(o, "gpus", (double)p->gpus);
    cJSON_AddNumberToObject(o, "micro_steps", (double)p->micro_steps);
    cJSON_AddNumberToObject(o, "parameters", (double)p->parameters);
    cJSON_AddNumberToObject(o, "trained", (double)p->trained);
    cJSON *by = cJSON_AddObjectToObject(o, "bytes");
    const DsaPlanBytes *b = &p->bytes;
    const struct { const char *k; int64_t v; } rows[] = {
        {"weights", b->weights}, {"master", b->master}, {"gradients", b->gradients}, {"optimizer", b->optimizer},
        {"activations", b->activations}, {"activations_per_layer", b->activations_per_layer},
        {"kv_latent", b->kv_latent}, {"indexer", b->indexer}, {"indices", b->indices}, {"scratch", b->scratch},
        {"total", b->total},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) cJSON_AddNumberToObject(by, rows[i].k, (double)rows[i].v);
    cJSON_AddNumberToObject(o, "gpu_mem", (double)p->gpu_mem);
    cJSON_AddBoolToObject(o, "fits", p->fits);
    cJSON *fl = cJSON_AddObjectToObject(o, "flops");
    const DsaPlanFlops *f = &p->flops;
    cJSON_AddNumberToObject(fl, "linear", f->linear);
    cJSON_AddNumberToObject(fl, "attention", f->attention);
    cJSON_AddNumberToObject(fl, "indexer", f->indexer);
    cJSON_AddNumberToObject(fl, "kl", f->kl);
    cJSON_AddNumberToObject(fl, "topk", f->topk);
    cJSON_AddNumberToObject(fl, "cp_extra", f->cp_extra);
    cJSON_AddNumberToObject(fl, "recompute", f->recompute);
    cJSON_AddNumberToObject(fl, "total", f->total);
    cJSON_AddNumberToObject(fl, "per_device", f->per_device);
    cJSON *cm = cJSON_AddObjectToObject(o, "comm_bytes");
    cJSON_AddNumberToObject(cm, "gradients", (double)p->comm.gradients);
    cJSON_AddNumberToObject(cm, "zero_gather", (double)p->comm.zero_gather);
    cJSON_AddNumberToObject(cm, "ep_all_to_all", (double)p->comm.ep_all_to_all);
    cJSON_AddNumberToObject(cm, "cp_exchange", (double)p->comm.cp_exchange);
    cJSON_AddNumberToObject(cm, "total", (double)p->comm.total);
    cJSON_AddNumberToObject(o, "compute_s", p->compute_s);
    cJSON_AddNumberToObject(o, "comm_s", p->comm_s);
    cJSON_AddNumberToObject(o, "step_s", p->step_s);
    cJSON_AddNumberToObject(o, "gpu_hours", p->gpu_hours);
    return o;
}

static void print_header(const DsaConfig *cfg, int s, int64_t tokens, int64_t seq) {
    const DsaStageConfig *st = &cfg->stages[s];
    char t[40];
    printf("\nstage %d \"%s\": %s attention, trains %s; %lld steps x %lld sequences x %lld tokens = %s tokens\n", s,
           st->name, st->attention, !strcmp(st->trainable, "all") ? "everything" : "the indexer (model frozen)",
           (long long)st->steps, (long long)st->global_batch, (long long)seq, grouped(tokens, t));
}

/* One stage: a given layout, or the search. The best plan goes to *best (ok false when none). */
static DsaStatus plan_one(const PlanArgs *a, const DsaConfig *cfg, int s, const DsaPlanLayout *base,
                          const DsaPlanHardware *hw, bool fixed, cJSON *jstages, DsaPlanStage *best, bool *ok) {
    *ok = false;
    const int64_t seq = a->seq ? a->seq : cfg->stages[s].seq_len;
    cJSON *js = jstages ? cJSON_CreateObject() : NULL;
    if (js) {
        cJSON_AddItemToArray(jstages, js);
        cJSON_AddNumberToObject(js, "index", s);
        cJSON_AddStringToObject(js, "name", cfg->stages[s].name);
        cJSON_AddStringToObject(js, "attention", cfg->stages[s].attention);
        cJSON_AddStringToObject(js, "trainable", cfg->stages[s].trainable);
        cJSON_AddNumberToObject(js, "steps", (double)cfg->stages[s].steps);
        cJSON_AddNumberToObject(js, "global_batch", (double)cfg->stages[s].global_batch);
        cJSON_AddNumberToObject(js, "seq_len", (double)seq);
    }
    if (fixed) {
        DsaStatus st = dsa_plan_stage(cfg, s, base, hw, best);
        if (st != DSA_OK) {
            dsa_error_push(__FILE__, __LINE__, "planning stage %d (\"%s\")", s, cfg->stages[s].name);
            return st;
        }
        *ok = true;
        if (js) {
            cJSON_AddNumberToObject(js, "tokens", (double)best->tokens);
            cJSON_AddItemToObject(js, "plan", stage_json(best));
        } else {
            print_header(cfg, s, best->tokens, seq);
            print_stage(cfg, best);
        }
        return DSA_OK;
    }
    DsaPlanStage *list = dsa_malloc((size_t)a->top * sizeof *list), closest;
    if (!list) DSA_FAIL(DSA_ERR_NOMEM, "the layout list");
    int n_fit = 0, n_valid = 0;
    memset(&closest, 0, sizeof closest);
    DsaStatus st = dsa_plan_search(cfg, s, a->gpus, base, hw, list, (int)a->top, &n_fit, &n_valid, &closest);
    int64_t tokens = 0;
    if (st == DSA_OK) st = dsa_plan_stage_tokens(cfg, s, a->seq, &tokens);
    if (st != DSA_OK) goto done;
    const int shown = n_fit < a->top ? n_fit : (int)a->top;
    if (js) {
        cJSON_AddNumberToObject(js, "tokens", (double)tokens);
        cJSON_AddNumberToObject(js, "layouts_valid", n_valid);
        cJSON_AddNumberToObject(js, "layouts_fit", n_fit);
        cJSON *arr = cJSON_AddArrayToObject(js, "layouts");
        for (int i = 0; i < shown; i++) cJSON_AddItemToArray(arr, stage_json(&list[i]));
        if (!n_fit && n_valid) cJSON_AddItemToObject(js, "closest", stage_json(&closest));
    } else {
        print_header(cfg, s, tokens, seq);
        printf("  %d of the %d layouts of %lld GPUs this stage can run fit in %.1f GiB", n_fit, n_valid,
               (long long)a->gpus, (double)hw->gpu_mem / GIB);
        if (n_fit) {
            printf(" (ranked by step time, then bytes per device, then smaller cp, smaller ep):\n");
            printf("  %4s %6s %6s %6s %9s %12s %10s %12s\n", "rank", "dp", "cp", "ep", "recompute", "GiB/device",
                   "s/step", "GPU-hours");
            for (int i = 0; i < shown; i++)
                printf("  %4d %6lld %6lld %6lld %9s %12.2f %10.3f %12.1f\n", i + 1, (long long)list[i].layout.dp,
                       (long long)list[i].layout.cp, (long long)list[i].layout.ep,
                       recompute_name(list[i].layout.recompute), (double)list[i].bytes.total / GIB, list[i].step_s,
                       list[i].gpu_hours);
            printf("  the best:\n");
            print_stage(cfg, &list[0]);
        } else if (n_valid) {
            printf(".\n  The layout that needs the least memory (%.2f GiB per device):\n",
                   (double)closest.bytes.total / GIB);
            print_stage(cfg, &closest);
        } else {
            printf(": dp x micro-batch must divide global_batch = %lld, cp divide %lld tokens\n",
                   (long long)cfg->stages[s].global_batch, (long long)seq);
        }
    }
    if (n_fit) *best = list[0], *ok = true;
done:
    dsa_free(list, (size_t)a->top * sizeof *list);
    return st;
}

static void print_layer_check(const DsaConfig *cfg, const DsaPlanLayerCheck *c, int64_t seq, int64_t gpu_mem) {
    const DsaStageConfig *st = &cfg->stages[c->stage];
    const bool moe = cfg->model.has_moe;
    printf("\nstage %d \"%s\" (%s attention, trains %s), %lld tokens, %s:\n", c->stage, st->name, st->attention,
           !strcmp(st->trainable, "all") ? "everything" : "the indexer", (long long)(seq ? seq : st->seq_len),
           c->attention_only ? "one attention block (input norm, MLA, indexer)"
                             : moe ? "one whole MoE layer" : "one whole dense layer");
    char table[2048];
    dsa_plan_format_bytes(&c->one, gpu_mem, table, sizeof table);
    fputs(table, stdout);
    printf("  layers that fit: %lld%s without recompute, %lld%s with recompute (the model has %lld)\n",
           (long long)c->layers_fit, c->layers_fit == c->layers_total ? " (all)" : "",
           (long long)c->layers_fit_recompute, c->layers_fit_recompute == c->layers_total ? " (all)" : "",
           (long long)c->layers_total);
}

static cJSON *layer_json(const DsaPlanLayerCheck *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "stage", c->stage);
    cJSON_AddStringToObject(o, "block", c->attention_only ? "attention" : "layer");
    cJSON *by = cJSON_AddObjectToObject(o, "bytes");
    const DsaPlanBytes *b = &c->one;
    cJSON_AddNumberToObject(by, "weights", (double)b->weights);
    cJSON_AddNumberToObject(by, "master", (double)b->master);
    cJSON_AddNumberToObject(by, "gradients", (double)b->gradients);
    cJSON_AddNumberToObject(by, "optimizer", (double)b->optimizer);
    cJSON_AddNumberToObject(by, "activations", (double)b->activations);
    cJSON_AddNumberToObject(by, "kv_latent", (double)b->kv_latent);
    cJSON_AddNumberToObject(by, "indexer", (double)b->indexer);
    cJSON_AddNumberToObject(by, "indices", (double)b->indices);
    cJSON_AddNumberToObject(by, "scratch", (double)b->scratch);
    cJSON_AddNumberToObject(by, "total", (double)b->total);
    cJSON_AddBoolToObject(o, "fits", c->one_fits);
    cJSON_AddNumberToObject(o, "layers_fit", (double)c->layers_fit);
    cJSON_AddNumberToObject(o, "layers_fit_recompute", (double)c->layers_fit_recompute);
    cJSON_AddNumberToObject(o, "layers_total", (double)c->layers_total);
    return o;
}

/* The stages to plan: all, or --stage NAME (or index). */
static DsaStatus pick_stages(const PlanArgs *a, const DsaConfig *cfg, int *first, int *last) {
    *first = 0, *last = cfg->num_stages - 1;
    if (!a->stage) return DSA_OK;
    const char *names[DSA_CONFIG_MAX_STAGES + 1];
    for (int s = 0; s < cfg->num_stages; s++) {
        names[s] = cfg->stages[s].name;
        char idx[16];
        snprintf(idx, sizeof idx, "%d", s);
        if (!strcmp(a->stage, cfg->stages[s].name) || !strcmp(a->stage, idx)) {
            *first = *last = s;
            return DSA_OK;
        }
    }
    names[cfg->num_stages] = NULL;
    const char *guess = dsa_closest_word(a->stage, names);
    DSA_FAIL(DSA_ERR_ARG, "--stage %s: %s has no such stage%s%s%s", a->stage, cfg->source,
             guess ? "; did you mean \"" : "", guess ? guess : "", guess ? "\"?" : "");
}

static DsaStatus run_plan(PlanArgs *a) {
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    if (!cfg) DSA_FAIL(DSA_ERR_NOMEM, "out of memory allocating a config");
    cJSON *root = NULL, *jstages = NULL;
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_config_load(cfg, a->path, a->sets, a->n_sets), done);
    DSA_TRY_GOTO(st, dsa_config_validate(cfg), done);
    int first, last;
    DSA_TRY_GOTO(st, pick_stages(a, cfg, &first, &last), done);
    const DsaPlanHardware hw = {.peak_flops = a->peak_tflops * 1e12, .mfu = a->mfu, .link_bytes_s = a->bw * 1e9,
                                .gpu_mem = a->gpu_mem};
    const bool fixed = a->dp || a->cp || a->ep;
    DsaPlanLayout base = {.dp = 1, .cp = a->cp ? a->cp : 1, .ep = a->ep ? a->ep : 1, .zero = a->zero,
                          .precision = a->precision, .recompute = a->recompute,
                          .micro_batch = a->micro_batch ? a->micro_batch : cfg->train.micro_batch, .seq_len = a->seq};
    if (fixed) {
        base.dp = a->dp ? a->dp : a->gpus ? a->gpus / base.cp : 1;
        int64_t devices = 0;
        if (!dsa_mul_i64(base.dp, base.cp, &devices) || devices > INT32_MAX)
            DSA_FAIL_GOTO(st, done, DSA_ERR_ARG, "--dp %lld x --cp %lld devices is out of range", (long long)base.dp,
                          (long long)base.cp);
        if (base.dp < 1 || (a->gpus && devices != a->gpus))
            DSA_FAIL_GOTO(st, done, DSA_ERR_ARG, "--dp %lld x --cp %lld = %lld devices, but --gpus %lld: gpus = dp x cp",
                          (long long)base.dp, (long long)base.cp, (long long)devices, (long long)a->gpus);
        a->gpus = devices;
    } else if (!a->gpus && !a->layer) {
        DSA_FAIL_GOTO(st, done, DSA_ERR_ARG, "give --gpus N (or a layout: --dp, --cp, --ep; see dsa plan --help)");
    }
    if (a->json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "config", cfg->source);
        cJSON_AddNumberToObject(root, "gpu_mem", (double)a->gpu_mem);
        cJSON_AddNumberToObject(root, "peak_tflops", a->peak_tflops);
        cJSON_AddNumberToObject(root, "mfu", a->mfu);
        cJSON_AddNumberToObject(root, "bw_gbps", a->bw);
    }
    if (a->layer) {
        const int64_t seq = a->seq;
        cJSON *arr = root ? cJSON_AddArrayToObject(root, "layer_check") : NULL;
        if (!root)
            printf("single-layer check: one device of %.1f GiB, one sequence (micro-batch 1), bf16, ZeRO-0, the stage's "
                   "training step\n", (double)a->gpu_mem / GIB);
        for (int s = first; s <= last; s++)
            for (int attention_only = 1; attention_only >= 0; attention_only--) {
                DsaPlanLayerCheck c;
                DSA_TRY_GOTO(st, dsa_plan_layer_check(cfg, s, seq, attention_only, &hw, &c), done);
                if (root) cJSON_AddItemToArray(arr, layer_json(&c));
                else print_layer_check(cfg, &c, seq, a->gpu_mem);
            }
    } else {
        if (root) {
            cJSON_AddNumberToObject(root, "gpus", (double)a->gpus);
            jstages = cJSON_AddArrayToObject(root, "stages");
        } else {
            printf("dsa plan: %s on %lld GPUs of %.1f GiB, peak %.0f TFLOP/s at MFU %.0f%%, %.0f GB/s per GPU\n",
                   cfg->source, (long long)a->gpus, (double)a->gpu_mem / GIB, a->peak_tflops, a->mfu * 100, a->bw);
        }
        double hours = 0;
        int64_t tokens = 0;
        bool all = true;
        for (int s = first; s <= last; s++) {
            DsaPlanStage best;
            bool ok = false;
            DSA_TRY_GOTO(st, plan_one(a, cfg, s, &base, &hw, fixed, jstages, &best, &ok), done);
            if (ok) hours += best.gpu_hours, tokens += best.tokens;
            all = all && ok && best.fits;
        }
        char t[40];
        if (root) {
            cJSON_AddBoolToObject(root, "all_fit", all);
            cJSON_AddNumberToObject(root, "tokens", (double)tokens);
            cJSON_AddNumberToObject(root, "gpu_hours", all ? hours : 0);
        } else if (all)
            printf("\ntotal: %s tokens, %.1f GPU-hours (%.1f days on %lld GPUs)\n", grouped(tokens, t), hours,
                   hours / (double)a->gpus / 24, (long long)a->gpus);
        else
            printf("\ntotal: not every stage fits with this layout on %lld GPUs of %.1f GiB\n", (long long)a->gpus,
                   (double)a->gpu_mem / GIB);
    }
    if (root) {
        char *text = cJSON_Print(root);
        if (!text) DSA_FAIL_GOTO(st, done, DSA_ERR_NOMEM, "printing the plan as JSON");
        printf("%s\n", text);
        free(text);
    }
done:
    cJSON_Delete(root);
    dsa_free(cfg, sizeof *cfg);
    return st;
}

/* ---- arguments ----------------------------------------------------------------------------- */

static DsaStatus parse_int(const char *flag, const char *text, int64_t lo, int64_t *out) {
    DSA_TRY(dsa_parse_count(text, out, flag));
    if (*out < lo) DSA_FAIL(DSA_ERR_ARG, "%s %s: must be at least %lld", flag, text, (long long)lo);
    return DSA_OK;
}

static DsaStatus parse_real(const char *flag, const char *text, double lo, double hi, double *out) {
    char *end = NULL;
    *out = strtod(text, &end);
    if (end == text || *end || !isfinite(*out) || *out <= lo || *out > hi)
        DSA_FAIL(DSA_ERR_ARG, "%s \"%s\": expected a number in (%g, %g]", flag, text, lo, hi);
    return DSA_OK;
}

/* 80GB = 80e9 bytes, 80GiB = 80 x 2^30, 80G and 80Gi the same, a plain number bytes. */
static DsaStatus parse_mem(const char *text, int64_t *out) {
    char buf[64];
    size_t n = strlen(text);
    if (n == 0 || n >= sizeof buf) DSA_FAIL(DSA_ERR_ARG, "--gpu-mem \"%s\": expected a size such as 80GB", text);
    memcpy(buf, text, n + 1);
    if (n > 1 && (buf[n - 1] == 'B' || buf[n - 1] == 'b') && buf[n - 2] != 'B') buf[--n] = 0;
    DSA_TRY(dsa_parse_count(buf, out, "--gpu-mem"));
    if (*out < 1) DSA_FAIL(DSA_ERR_ARG, "--gpu-mem %s: must be positive", text);
    return DSA_OK;
}

static DsaStatus parse_args(int argc, char **argv, PlanArgs *a, int *help) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},      {"set", required_argument, 0, 's'},
        {"gpus", required_argument, 0, 'g'},        {"gpu-mem", required_argument, 0, 'm'},
        {"seq", required_argument, 0, 'L'},         {"dp", required_argument, 0, 'd'},
        {"cp", required_argument, 0, 'C'},          {"ep", required_argument, 0, 'e'},
        {"zero", required_argument, 0, 'z'},        {"recompute", required_argument, 0, 'r'},
        {"micro-batch", required_argument, 0, 'b'}, {"precision", required_argument, 0, 'p'},
        {"peak-tflops", required_argument, 0, 'P'}, {"mfu", required_argument, 0, 'u'},
        {"bw", required_argument, 0, 'w'},          {"stage", required_argument, 0, 'S'},
        {"top", required_argument, 0, 't'},         {"layer", no_argument, 0, 'l'},
        {"json", no_argument, 0, 'j'},              {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    opterr = 0;
    int opt;
    int64_t v = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': a->path = optarg; break;
        case 's': a->sets[a->n_sets++] = optarg; break;
        case 'g': DSA_TRY(parse_int("--gpus", optarg, 1, &a->gpus)); break;
        case 'm': DSA_TRY(parse_mem(optarg, &a->gpu_mem)); break;
        case 'L': DSA_TRY(parse_int("--seq", optarg, 1, &a->seq)); break;
        case 'd': DSA_TRY(parse_int("--dp", optarg, 1, &a->dp)); break;
        case 'C': DSA_TRY(parse_int("--cp", optarg, 1, &a->cp)); break;
        case 'e': DSA_TRY(parse_int("--ep", optarg, 1, &a->ep)); break;
        case 'b': DSA_TRY(parse_int("--micro-batch", optarg, 1, &a->micro_batch)); break;
        case 't':
            DSA_TRY(parse_int("--top", optarg, 1, &a->top));
            if (a->top > MAX_TOP) DSA_FAIL(DSA_ERR_ARG, "--top %s: at most %d", optarg, MAX_TOP);
            break;
        case 'z':
            if (dsa_parse_count(optarg, &v, "--zero") != DSA_OK || v > DSA_PLAN_MAX_ZERO) {
                dsa_error_clear();
                DSA_FAIL(DSA_ERR_ARG, "--zero \"%s\": expected 0, 1 or 2", optarg);
            }
            a->zero = (int)v;
            break;
        case 'r':
            if (!strcmp(optarg, "auto")) a->recompute = DSA_PLAN_RECOMPUTE_AUTO;
            else if (!strcmp(optarg, "on")) a->recompute = DSA_PLAN_RECOMPUTE_ON;
            else if (!strcmp(optarg, "off")) a->recompute = DSA_PLAN_RECOMPUTE_OFF;
            else DSA_FAIL(DSA_ERR_ARG, "--recompute \"%s\": expected auto, on or off", optarg);
            break;
        case 'p':
            if (!strcmp(optarg, "bf16")) a->precision = DSA_PLAN_BF16;
            else if (!strcmp(optarg, "fp32")) a->precision = DSA_PLAN_FP32;
            else DSA_FAIL(DSA_ERR_ARG, "--precision \"%s\": expected bf16 or fp32", optarg);
            break;
        case 'P': DSA_TRY(parse_real("--peak-tflops", optarg, 0, 1e9, &a->peak_tflops)); break;
        case 'u': DSA_TRY(parse_real("--mfu", optarg, 0, 1, &a->mfu)); break;
        case 'w': DSA_TRY(parse_real("--bw", optarg, 0, 1e9, &a->bw)); break;
        case 'S': a->stage = optarg; break;
        case 'l': a->layer = true; break;
        case 'j': a->json = true; break;
        case 'h': *help = 1; return DSA_OK;
        default:
            if (optopt)
                DSA_FAIL(DSA_ERR_ARG, "option %s needs a value (see dsa plan --help)", argv[optind - 1]);
            DSA_FAIL(DSA_ERR_ARG, "unknown option \"%s\" (see dsa plan --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) DSA_FAIL(DSA_ERR_ARG, "unexpected argument \"%s\" (the file goes after --config)", argv[optind]);
    if (!a->path) DSA_FAIL(DSA_ERR_ARG, "give the run config: --config FILE (e.g. configs/deepseek-v3.2.json)");
    return DSA_OK;
}

int cli_plan(int argc, char **argv) {
    PlanArgs a = {.gpu_mem = 80000000000LL, .zero = 1, .recompute = DSA_PLAN_RECOMPUTE_AUTO,
                  .precision = DSA_PLAN_BF16, .peak_tflops = DSA_PLAN_DEFAULT_PEAK_TFLOPS,
                  .mfu = DSA_PLAN_DEFAULT_MFU, .bw = DSA_PLAN_DEFAULT_LINK_GBPS, .top = DEFAULT_TOP};
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    if (!a.sets) return cli_report("plan", DSA_ERR_NOMEM);
    int help = 0, rc;
    DsaStatus st = parse_args(argc, argv, &a, &help);
    if (help) {
        usage(stdout);
        rc = 0;
    } else if (st != DSA_OK) {
        rc = cli_report("plan", st);
    } else {
        rc = cli_report("plan", run_plan(&a));
    }
    free(a.sets);
    return rc;
}
