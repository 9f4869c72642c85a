/* import_synthetic.c: the `dsa pack --format synthetic` source: documents from the
 * synthetic-v1 generator (data/synthetic.h), written in index order. The vocabulary
 * comes from --vocab-size when given, else from the synthetic options. */
#include "data/pack.h"

DsaStatus dsa_pack_import_synthetic(DsaPackSink *s) {
    DsaSyntheticOptions so = s->opts->synthetic;
    so.vocab_size = s->vocab_size;
    DsaSynGen *gen = NULL;
    DSA_TRY(dsa_synthetic_gen_new(&gen, &so));
    DsaStatus st = DSA_OK;
    int64_t len = dsa_synthetic_gen_doc_len(gen), docs = dsa_synthetic_gen_num_docs(gen);
    DSA_TRY_GOTO(st, dsa_pack_sink_reserve(s, len), done);
    for (int64_t i = 0; i < docs; i++) {
        DSA_TRY_GOTO(st, dsa_synthetic_gen_doc(gen, i, s->doc), done);
        s->doc_len = len;
        DSA_TRY_GOTO(st, dsa_pack_sink_end_doc(s), done);
        dsa_pack_sink_progress(s, (i + 1) * (len + 1));
    }
done:
    s->doc_len = 0;
    dsa_synthetic_gen_free(gen);
    return st;
}
