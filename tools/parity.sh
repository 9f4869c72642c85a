#!/usr/bin/env bash
# tools/parity.sh BUILD [TORCH_ENV]: `make parity`: ensure the PyTorch environment
# (tools/torch_env.sh: torch, numpy, safetensors, transformers) and run tools/hf_parity.py
# with BUILD/dsa: tiny random DeepSeek models from Hugging Face transformers, compared with
# `dsa eval` logit by logit. Ends with "tests: N passed, N failed, N skipped"; exits
# non-zero when a case fails or the environment cannot be made.
set -uo pipefail
build=${1:?usage: tools/parity.sh BUILD [TORCH_ENV]}
env_dir=${2:-.venv-torch}
cd "$(dirname "$0")/.."
if ! py=$(tools/torch_env.sh "$env_dir"); then
  echo "parity: could not create the PyTorch environment $env_dir (tools/torch_env.sh)"
  echo "not ok - parity environment"
  echo "tests: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
# the machine has few cores: one BLAS/OpenMP thread per process beside dsa's threads
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$py" tools/hf_parity.py --dsa "$build/dsa" --threads 2
