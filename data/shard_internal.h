/* shard_internal.h: helpers shared by the shard reader and writer; not public API. */
#ifndef DSA_DATA_SHARD_INTERNAL_H
#define DSA_DATA_SHARD_INTERNAL_H

#include <stddef.h>

/* The innermost messages of HDF5's current error stack ("unable to open file: ..."),
 * then clears the stack. Writes "(no HDF5 detail)" when the stack is empty. */
void shard_h5_error_text(char *buf, size_t cap);

#endif
