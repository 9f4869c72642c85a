"""st_diff.py: the largest difference between the F32 tensors of two safetensors files (Python
standard library only), for the multi-rank tests (tests/cli/test_mpi.sh).

  python3 tests/cli/st_diff.py A.safetensors B.safetensors
prints "max_abs <x> max_rel <y> tensor <name>" where max_abs is over every element, max_rel
is max_abs / max |a| of the tensor holding it; exits 1 when the tensor names or shapes differ.
"""
import json
import struct
import sys
from array import array


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        if e["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {e['dtype']}, F32 expected")
        a = array("f")
        a.frombytes(data[e["data_offsets"][0]:e["data_offsets"][1]])
        out[name] = (tuple(e["shape"]), a)
    return out


def main():
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if a.keys() != b.keys():
        print("tensor names differ:", sorted(a.keys() ^ b.keys())[:5])
        return 1
    worst = (0.0, 0.0, "")
    for name in sorted(a):
        (sa, va), (sb, vb) = a[name], b[name]
        if sa != sb:
            print(f"{name}: shape {sa} vs {sb}")
            return 1
        d = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
        scale = max((abs(x) for x in va), default=0.0) or 1.0
        if d > worst[0]:
            worst = (d, d / scale, name)
    print(f"max_abs {worst[0]:.3g} max_rel {worst[1]:.3g} tensor {worst[2] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
