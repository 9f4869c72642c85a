#!/usr/bin/env python3
"""Cross-check a shard written by `dsa pack` with an independent reader.

Reads the shard with h5py, whose zstd decoder comes from hdf5plugin (not from dsa),
and compares its tokens with a raw little-endian uint32 file holding the same stream.

    check_shard.py SHARD.h5 TOKENS.u32

Exit status 0 when everything matches; prints what differs otherwise.
"""
import sys

import h5py
import hdf5plugin  # noqa: F401  (registers the zstd filter, id 32015, with HDF5)
import numpy as np


def main(shard_path: str, raw_path: str) -> int:
    expected = np.fromfile(raw_path, dtype="<u4")
    with h5py.File(shard_path, "r") as f:
        tokens = f["/tokens"]
        filters = tokens._filters  # e.g. {'32015': (3,)}
        if "32015" not in filters:
            print(f"{shard_path}: /tokens filters {filters}, expected zstd (32015)")
            return 1
        data = tokens[...]
        offsets = f["/doc_offsets"][...]
        attrs = {k: f.attrs[k] for k in f.attrs}
    problems = []
    if data.dtype != np.uint32:
        problems.append(f"/tokens dtype {data.dtype}, expected uint32")
    if data.shape != expected.shape or not np.array_equal(data, expected):
        diff = np.nonzero(data[: len(expected)] != expected[: len(data)])[0]
        where = int(diff[0]) if len(diff) else min(len(data), len(expected))
        problems.append(f"tokens differ: {len(data)} vs {len(expected)} tokens, first difference at {where}")
    if offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets.astype(np.int64)) < 0):
        problems.append("/doc_offsets is not a monotone 0..N sequence")
    for key in ("vocab_size", "eos_id", "tokenizer", "format_version"):
        if key not in attrs:
            problems.append(f"attribute {key} missing")
    if not problems and int(data.max()) >= int(attrs["vocab_size"]):
        problems.append("a token id is >= vocab_size")
    if problems:
        print(f"{shard_path}: " + "; ".join(problems))
        return 1
    print(f"{shard_path}: {len(data)} tokens, {len(offsets) - 1} documents match (h5py {h5py.__version__}, "
          f"filters {filters})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
