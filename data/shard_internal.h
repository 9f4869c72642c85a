/* shard_internal.h: helpers shared by the shard reader and writer; not public API. */
#ifndef DSA_DATA_SHARD_INTERNAL_H
#define DSA_DATA_SHARD_INTERNAL_H

#include <stddef.h>

#include "data/shard.h"

/* The innermost messages of HDF5's current error stack ("unable to open file: ..."),
 * then clears the stack. Writes "(no HDF5 detail)" when the stack is empty. */
void shard_h5_error_text(char *buf, size_t cap);

/* Check a writer's meta (vocab_size >= 1, eos_id < vocab_size, chunk_tokens in
 * [1, 2^26], level in 1..22, a tokenizer name, a plain pack manifest name); `path`
 * names the shard or prefix in errors. */
DsaStatus shard_validate_meta(const DsaShardMeta *meta, const char *path);

#endif
