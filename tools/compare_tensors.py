#!/usr/bin/env python3
"""compare_tensors.py A.safetensors B.safetensors [--rtol R] [--atol A]: compare every
tensor of two safetensors files (B is the reference). Per tensor: max abs error, the max
error relative to max|B| of that tensor, the worst index and both values there. Names
present in only one file are failures. Exit 1 on any failure; prints a table."""
import argparse
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-4, help="max |a-b| / max|b| per tensor")
    ap.add_argument("--atol", type=float, default=1e-7, help="absolute slack for all-zero tensors")
    args = ap.parse_args()
    a, b = load_file(args.a), load_file(args.b)
    bad = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"FAIL {name}: only in {args.a if name in a else args.b}")
            bad += 1
            continue
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        if x.shape != y.shape:
            print(f"FAIL {name}: shape {x.shape} vs {y.shape}")
            bad += 1
            continue
        err = np.abs(x - y)
        worst = int(np.argmax(err)) if err.size else 0
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        rel = float(err.flat[worst]) / scale if scale > 0 else float(err.flat[worst])
        ok = rel <= args.rtol or float(err.flat[worst]) <= args.atol
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:60s} max abs {float(err.flat[worst]):.3e}  rel {rel:.3e}  "
              f"at {np.unravel_index(worst, x.shape) if x.size else ()}: {x.flat[worst] if x.size else 0:.9g} vs "
              f"{y.flat[worst] if y.size else 0:.9g}")
    print(f"{len(set(a) | set(b)) - bad} of {len(set(a) | set(b))} tensors within rtol {args.rtol}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
