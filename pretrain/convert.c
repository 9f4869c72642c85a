/* convert.c: `dsa convert --add-indexer` (convert.h). */
#include "pretrain/convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/checkpoint.h"
#include "core/config.h"
#include "core/log.h"
#include "core/mem.h"
#include "pretrain/model_io.h"
#include "pretrain/params.h"

/* The DSA model section: the source's plus the indexer keys, checked against §2's rules
 * by the config validator (which names the offending key). */
static DsaStatus dsa_model_of(const DsaModelConfig *src, const DsaAddIndexerOptions *o, DsaModelConfig *out) {
    DsaConfig *cfg = dsa_malloc(sizeof *cfg);
    if (!cfg) DSA_FAIL(DSA_ERR_NOMEM, "config");
    DsaStatus st = dsa_config_defaults(cfg);
    if (st == DSA_OK) {
        cfg->model = *src;
        snprintf(cfg->model.model_type, sizeof cfg->model.model_type, "deepseek_v32");
        cfg->model.has_indexer = true;
        cfg->model.index_n_heads = o->index_n_heads;
        cfg->model.index_head_dim = o->index_head_dim;
        cfg->model.index_topk = o->index_topk;
        cfg->data.seq_len = 1;
        for (int i = 0; i < cfg->num_stages; i++) cfg->stages[i].seq_len = 1, cfg->stages[i].index_topk = o->index_topk;
        snprintf(cfg->source, sizeof cfg->source, "dsa convert --add-indexer");
        st = dsa_config_validate(cfg);
        *out = cfg->model;
    }
    dsa_free(cfg, sizeof *cfg);
    return st;
}

DsaStatus dsa_convert_add_indexer(const char *src, const char *out_dir, const DsaAddIndexerOptions *opts,
                                  char *written, size_t cap) {
    char dir[1024], path[1100];
    DSA_TRY(dsa_checkpoint_resolve(src, dir, sizeof dir));
    bool verified = false;
    DSA_TRY(dsa_checkpoint_verify(dir, &verified));
    snprintf(path, sizeof path, "%s/config.json", dir);
    DsaModelConfig dense, dsa;
    DSA_TRY(dsa_model_config_load(&dense, path));
    if (dense.has_indexer)
        DSA_FAIL(DSA_ERR_CONFIG, "%s: the model already has a lightning indexer (index_topk = %lld); nothing to add",
                 path, (long long)dense.index_topk);
    DSA_TRY(dsa_model_of(&dense, opts, &dsa));

    DsaParamTable td = {0}, tn = {0};
    float *pd = NULL, *pn = NULL;
    DsaCheckpointWriter w = {0};
    char *json = NULL;
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_param_table_build(&td, &dense), out);
    DSA_TRY_GOTO(st, dsa_param_table_build(&tn, &dsa), out);
    pd = dsa_malloc((size_t)td.total * sizeof(float));
    pn = dsa_calloc((size_t)tn.total, sizeof(float));
    if (!pd || !pn) DSA_FAIL_GOTO(st, out, DSA_ERR_NOMEM, "model weights: 2 x %lld floats", (long long)tn.total);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    DSA_TRY_GOTO(st, dsa_model_read_tensors(path, &td, "", pd, false), out);
    /* every source tensor unchanged, by name; then the fresh indexers */
    for (int i = 0; i < tn.count; i++) {
        const DsaParamInfo *p = &tn.info[i];
        if (p->group == DSA_GROUP_INDEXER) continue;
        const DsaParamInfo *q = dsa_param_find(&td, p->name);
        DSA_ASSERT(q && q->numel == p->numel);
        memcpy(pn + p->offset, pd + q->offset, (size_t)p->numel * sizeof(float));
    }
    dsa_param_init_indexer(&tn, pn, opts->seed, dsa.initializer_range);

    DSA_TRY_GOTO(st, dsa_checkpoint_begin(&w, out_dir, "converted"), out);
    DSA_TRY_GOTO(st, dsa_model_write_weights(dsa_checkpoint_file(&w, "model.safetensors", path, sizeof path), &tn, pn),
                 fail);
    DSA_TRY_GOTO(st, dsa_model_config_to_hf_json(&dsa, &json), fail);
    DSA_TRY_GOTO(st, dsa_checkpoint_write_text(&w, "config.json", json), fail);
    DSA_TRY_GOTO(st, dsa_checkpoint_commit(&w), fail);
    snprintf(written, cap, "%s/converted", out_dir);
    dsa_log(DSA_LOG_INFO,
            "added indexers (%lld heads x %lld dims, top-k %lld, %lld parameters per layer, seed %llu) to %s%s -> %s",
            (long long)dsa.index_n_heads, (long long)dsa.index_head_dim, (long long)dsa.index_topk,
            (long long)dsa_model_indexer_param_count(&dsa), (unsigned long long)opts->seed, dir,
            verified ? "" : " (no manifest: checksums not verified)", written);
    goto out;
fail:
    dsa_checkpoint_abort(&w);
out:
    free(json);
    dsa_free(pd, (size_t)td.total * sizeof(float));
    dsa_free(pn, (size_t)tn.total * sizeof(float));
    dsa_param_table_free(&td);
    dsa_param_table_free(&tn);
    return st;
}
