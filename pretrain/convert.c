/* convert.c: `dsa convert`, the streamed import and `--add-indexer` (convert.h). */
#include "pretrain/convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf.h"
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

DsaStatus dsa_convert_import(const char *src, const char *out_dir, const DsaAddIndexerOptions *add, bool progress,
                             char *written, size_t cap) {
    char dir[1024];
    bool verified = false;
    DsaModelConfig from, to;
    DSA_TRY(dsa_model_open_dir(src, dir, sizeof dir, &from, &verified));
    if (add && from.has_indexer)
        DSA_FAIL(DSA_ERR_CONFIG, "%s/config.json: the model already has a lightning indexer (index_topk = %lld); nothing to add",
                 dir, (long long)from.index_topk);
    if (add) {
        DSA_TRY(dsa_model_of(&from, add, &to));
    } else {
        to = from;
    }
    to.num_nextn_predict_layers = 0; /* DSA-SPEC §3.1 Decision (MTP) */

    DsaParamTable t = {0};
    DsaDType *dtypes = NULL;
    DsaHfReader r = {0};
    DsaHfWriter hw = {0};
    DsaCheckpointWriter w = {0};
    bool writer_open = false;
    char *json = NULL;
    DsaModelStreamStats stats = {0};
    DsaStatus st = DSA_OK;
    DSA_TRY_GOTO(st, dsa_param_table_build(&t, &to), out);
    DSA_TRY_GOTO(st, dsa_alloc((void **)&dtypes, (size_t)t.count * sizeof *dtypes, "dtype list"), out);
    for (int i = 0; i < t.count; i++) dtypes[i] = DSA_F32;
    DSA_TRY_GOTO(st, dsa_model_hf_open(&r, dir, &from), out);
    /* every source tensor checked before anything is written */
    DSA_TRY_GOTO(st, dsa_model_hf_check(&r, &from, &t, add != NULL), out);

    DSA_TRY_GOTO(st, dsa_checkpoint_begin(&w, out_dir, "converted"), out);
    DSA_TRY_GOTO(st, dsa_hf_writer_init(&hw, w.tmp_dir, 0), fail);
    writer_open = true;
    DsaModelStream s = {
        .src = &r,
        .table = &t,
        .dtypes = dtypes,
        .block = {DSA_HF_DEFAULT_BLOCK, DSA_HF_DEFAULT_BLOCK},
        .fresh_indexer = add != NULL,
        .seed = add ? add->seed : 0,
        .std = to.initializer_range,
        .label = "convert",
        .progress = progress,
    };
    DSA_TRY_GOTO(st, dsa_model_stream(&s, &hw, &stats), fail);
    DSA_TRY_GOTO(st, dsa_hf_writer_finish(&hw), fail);
    dsa_hf_writer_abort(&hw); /* after finish: only frees */
    writer_open = false;
    DSA_TRY_GOTO(st, dsa_model_config_to_hf_json(&to, &json), fail);
    DSA_TRY_GOTO(st, dsa_checkpoint_write_text(&w, "config.json", json), fail);
    DSA_TRY_GOTO(st, dsa_checkpoint_commit(&w), fail);
    snprintf(written, cap, "%s/converted", out_dir);
    if (add)
        dsa_log(DSA_LOG_INFO,
                "added indexers (%lld heads x %lld dims, top-k %lld, %lld parameters per layer, seed %llu) to %s%s -> %s",
                (long long)to.index_n_heads, (long long)to.index_head_dim, (long long)to.index_topk,
                (long long)dsa_model_indexer_param_count(&to), (unsigned long long)add->seed, dir,
                verified ? "" : " (no manifest: checksums not verified)", written);
    dsa_log(DSA_LOG_INFO,
            "converted %d tensors (%s%s, %d shard%s) to F32: %.3f GB written in %.1f s; largest tensor %lld "
            "elements; peak RSS %.1f MB",
            stats.tensors, r.sharded ? "sharded " : "", from.has_fp8 ? "FP8 source" : "source", r.n_shards,
            r.n_shards == 1 ? "" : "s", (double)stats.bytes_written / 1e9, stats.seconds, (long long)stats.max_numel,
            (double)dsa_mem_rss_peak() / 1e6);
    goto out;
fail:
    if (writer_open) dsa_hf_writer_abort(&hw);
    dsa_checkpoint_abort(&w);
out:
    free(json);
    dsa_hf_close(&r);
    dsa_free(dtypes, (size_t)t.count * sizeof *dtypes);
    dsa_param_table_free(&t);
    return st;
}

DsaStatus dsa_convert_add_indexer(const char *src, const char *out_dir, const DsaAddIndexerOptions *opts,
                                  char *written, size_t cap) {
    DSA_TRY(dsa_convert_import(src, out_dir, opts, false, written, cap));
    return DSA_OK;
}
