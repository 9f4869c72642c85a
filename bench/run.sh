#!/bin/sh
# bench/run.sh BUILD_DIR: run the benchmarks with the binaries already built in BUILD_DIR
# (`make bench` builds them first) and append the results to bench/RESULTS.md.
#
# Builds nothing. Takes about 15 minutes on 2 cores:
#  - loader: 3 data sets of 128Mi tokens (about 1.3 GB of temporary files under $TMPDIR
#    or /tmp, removed afterwards), 5 timed runs of each measurement, median reported;
#  - training steps (forward, backward, AdamW) of configs/tiny-dense.json at 4K and 32K
#    tokens and of configs/small-dense.json (150M parameters) at 4K and 8K, with the
#    machine's SGEMM rate measured by the same binary beside them;
#  - the DSA sweep (configs/bench-dsa.json, `dsa bench dsa`): one training step with dense
#    attention, the indexer warm-up step and the sparse top-k step at 4K..32K tokens with
#    k = 512, and the sparse step with k = 2048 (about 25 more minutes on 2 cores);
#  - the indexer's top-k against scoring alone (`dsa bench topk`, one thread, 4K..16K,
#    k = 512 and 2048, about 2 minutes);
#  - the same steps in PyTorch (tools/torch_ref.py bench, same config and threads) when
#    a torch environment exists (TORCH_PY, default .venv-torch/bin/python; make one with
#    tools/torch_env.sh), so the ratio comes from one run;
#  - tools/tokenize_pack.py from 50 MB of generated text to shards with 1 and 2 workers
#    (tools/bench_tokenize.py, about 2 minutes) when the tools' venv exists (PYENV,
#    default .venv; make pyenv).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: bench/run.sh BUILD_DIR" >&2
    exit 2
fi
build=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dsa="$build/dsa"
if [ ! -x "$dsa" ]; then
    echo "bench/run.sh: $dsa not found; build it first (make bench)" >&2
    exit 1
fi
cd "$root"
threads=${THREADS:-$(nproc)}
"$dsa" bench loader --repeat 5 --record bench/RESULTS.md
"$dsa" bench gemm --threads "$threads" | tee /tmp/dsa-bench-gemm.txt
gemm=$("$dsa" bench gemm --threads "$threads" --json)
"$dsa" bench train --config configs/tiny-dense.json --seq-len 4096,32768 --steps 1 --threads "$threads" \
    --record bench/RESULTS.md
"$dsa" bench train --config configs/small-dense.json --seq-len 4096,8192 --steps 1 --threads "$threads" \
    --record bench/RESULTS.md
"$dsa" bench dsa --config configs/bench-dsa.json --seq-len 4096,8192,16384,32768 --kinds dense,warmup,sparse \
    --set model.index_topk=512 --threads "$threads" --record bench/RESULTS.md
"$dsa" bench dsa --config configs/bench-dsa.json --seq-len 4096,8192,16384,32768 --kinds sparse \
    --threads "$threads" --record bench/RESULTS.md
"$dsa" bench topk --config configs/bench-dsa.json --seq-len 4096,8192,16384 --topk 512,2048 \
    --threads 1 --record bench/RESULTS.md
printf '\nSGEMM through OpenBLAS in the same run: `%s`\n' "$gemm" >> bench/RESULTS.md
torch_py=${TORCH_PY:-.venv-torch/bin/python}
if [ -x "$torch_py" ] && "$torch_py" -c 'import torch' 2> /dev/null; then
    {
        printf '\nPyTorch CPU eager, same configs, %s threads (`tools/torch_ref.py bench`):\n\n' "$threads"
        for spec in "configs/tiny-dense.json 4096" "configs/tiny-dense.json 32768" "configs/small-dense.json 4096"; do
            set -- $spec
            if out=$("$torch_py" tools/torch_ref.py bench --config "$1" --seq-len "$2" --steps 1 --warmup 1 \
                --threads "$threads" --json 2>&1); then
                echo "$out" | tail -n 1 | sed 's/^/    /'
            else
                echo "    $1 at $2 tokens: PyTorch failed (exit $?; 137 = killed, e.g. by the OOM killer)"
            fi
        done
    } >> bench/RESULTS.md
else
    printf '\nPyTorch comparison not run: no torch environment at %s.\n' "$torch_py" >> bench/RESULTS.md
fi
pyenv=${PYENV:-.venv}
if [ -x "$pyenv/bin/python" ] && "$pyenv/bin/python" -c 'import tokenizers' 2> /dev/null; then
    "$pyenv/bin/python" tools/bench_tokenize.py --dsa "$dsa" --record bench/RESULTS.md
else
    printf '\ntokenize_pack.py benchmark not run: no tools venv with tokenizers at %s (make pyenv).\n' "$pyenv" >> bench/RESULTS.md
fi
