/* host_view.h: the host's window on backend memory (DESIGN.md "Backends", the device model).
 *
 * Host code (weight init and loading, checkpoint save and load, eval's logits and
 * gradients) reads and writes a model buffer through a DsaHostView: on a backend whose
 * memory is host memory (be->host_memory, the CPU) the view is the buffer itself, so
 * nothing is copied and the counted peak is unchanged; on any other backend it is a host
 * copy, downloaded on open and uploaded by dsa_host_view_commit. Nothing else in pretrain/
 * dereferences backend memory (tests/test_sim.c proves it on the sim backend).
 */
#ifndef DSA_PRETRAIN_HOST_VIEW_H
#define DSA_PRETRAIN_HOST_VIEW_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "kernels/backend.h"

typedef struct {
    void *host;   /* what the host reads and writes */
    size_t bytes;
    bool staged;  /* host is a copy (freed by close) */
} DsaHostView;

/* Open a view of `bytes` of backend memory `dev` holding its current contents.
 * DSA_ERR_NOMEM naming `what` when the host copy cannot be allocated. */
DsaStatus dsa_host_view_open(DsaHostView *v, const DsaBackend *be, const void *dev, size_t bytes, const char *what);
/* Make dev hold what the host wrote into the view (an upload of a staged copy). */
void dsa_host_view_commit(const DsaHostView *v, const DsaBackend *be, void *dev);
/* Release the view (a staged copy is freed; the backend buffer is untouched). */
void dsa_host_view_close(DsaHostView *v);

#endif
