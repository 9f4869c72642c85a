#!/usr/bin/env bash
# tools/torch_env.sh [DIR]: create or update a virtual environment (default .venv-torch)
# with PyTorch, numpy, safetensors, transformers and accelerate for tools/torch_ref.py (parity tests and
# the PyTorch side of `make bench`) and tools/hf_parity.py (`make parity`). Prints the environment's python. PyPI's torch wheel brings its
# CUDA libraries (a few GB); only the CPU is used.
set -euo pipefail
dir=${1:-.venv-torch}
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import torch, safetensors, numpy, transformers, accelerate' 2> /dev/null; then
  echo "$dir/bin/python"
  exit 0
fi
python3 -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check -r "$(dirname "$0")/requirements-torch.txt" >&2
"$dir/bin/python" -c 'import torch, transformers' >&2
echo "$dir/bin/python"
