/* host_view.c: host views of backend memory (host_view.h). */
#include "pretrain/host_view.h"

#include <string.h>

#include "core/mem.h"

DsaStatus dsa_host_view_open(DsaHostView *v, const DsaBackend *be, const void *dev, size_t bytes, const char *what) {
    memset(v, 0, sizeof *v);
    v->bytes = bytes;
    if (be->host_memory) {
        v->host = (void *)dev;
        return DSA_OK;
    }
    v->host = dsa_malloc(bytes ? bytes : 1);
    if (!v->host) DSA_FAIL(DSA_ERR_NOMEM, "%s: a host copy of %zu bytes of %s memory", what, bytes, be->name);
    v->staged = true;
    if (bytes) be->download(v->host, dev, bytes);
    return DSA_OK;
}

void dsa_host_view_commit(const DsaHostView *v, const DsaBackend *be, void *dev) {
    if (v->staged && v->bytes) be->upload(dev, v->host, v->bytes);
}

void dsa_host_view_close(DsaHostView *v) {
    if (v->staged) dsa_free(v->host, v->bytes ? v->bytes : 1);
    memset(v, 0, sizeof *v);
}
