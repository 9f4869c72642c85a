/* h5z_zstd.h: the Zstandard HDF5 filter (registered filter id 32015).
 *
 * Implemented here with libzstd so neither `dsa` nor its users need a plugin install;
 * the same code is also built as an HDF5 plugin (data/h5z_zstd_plugin.c) so stock HDF5
 * tools such as h5dump can decode shards. Compatible with hdf5plugin's Zstd filter:
 * cd_values[0] is the compression level, each chunk is one zstd frame with its content
 * size in the header (we also add a content checksum, which every decoder verifies).
 */
#ifndef DSA_DATA_H5Z_ZSTD_H
#define DSA_DATA_H5Z_ZSTD_H

#include <hdf5.h>

/* The filter class to pass to H5Zregister. */
extern const H5Z_class2_t dsa_h5z_zstd_class[1];

#endif
