/* h5z_zstd_plugin.c: exports the zstd filter as an HDF5 dynamic plugin, so that
 * `HDF5_PLUGIN_PATH=build/hdf5-plugin h5dump -d /tokens shard.h5` prints tokens.
 * Not part of libdsa: `dsa` registers the filter itself. */
#include <H5PLextern.h>

#include "data/h5z_zstd.h"

H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
const void *H5PLget_plugin_info(void) { return dsa_h5z_zstd_class; }
