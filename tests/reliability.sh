#!/usr/bin/env bash
# reliability.sh: crash consistency of every writer, by fault injection (tests/fault_shim.c,
# an LD_PRELOAD library). For dsa train, dsa convert, dsa export and dsa pack: run the
# command once under the shim to count the file-system operations it performs in its
# output directory (N), then for every n in 1..N run it again
#   - killed (SIGKILL) just before operation n, and
#   - with a full disk from operation n on (that operation and every later one that
#     needs space fails with ENOSPC);
# and check, after each fault, that what the output directory held before is still
# loadable, and that running the same command again (dsa train: with --resume, as the
# README's "Failures and resume" says) finishes with output identical to an
# uninterrupted run's (train: bit-identical checkpoint files) and leaves no temporaries.
#
#   tests/reliability.sh BUILD_DIR        (make reliability; .ci/run runs it)
# RELIABILITY_STRIDE=k tests every k-th n only (default 1: every one).
# Prints TAP-style lines and ends with "tests: N passed, N failed, 0 skipped".
#
# A multi-rank writer is tested the same way: give sweep() the mpirun command line and
# DSA_FAULT_RANK (fault_shim.c explains how each rank counts and which one faults).
set -u
build=${1:?usage: tests/reliability.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
DSA=$(cd "$build" && pwd)/dsa
SHIM=$(cd "$build" && pwd)/tests/libfault_shim.so
stride=${RELIABILITY_STRIDE:-1}
work=$(mktemp -d "${TMPDIR:-/tmp}/dsa-reliability-XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; failed=$((failed + 1)); [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/    | /' "$2" | tail -n 25; }

if [ ! -x "$DSA" ] || [ ! -f "$SHIM" ]; then
  not_ok "build: $DSA and $SHIM (make tests-build BUILD=$build)"
  echo "tests: $passed passed, $failed failed, 0 skipped"
  exit 1
fi

# shim MODE N DIR LOG CMD...: run CMD with the fault shim counting operations under DIR
# (MODE kill|enospc; N 0 = count only); DSA_FAULT_LOG goes to LOG. Returns CMD's status.
shim() {
  local mode=$1 n=$2 dir=$3 log=$4; shift 4
  LD_PRELOAD=$SHIM DSA_FAULT_DIR=$dir DSA_FAULT_AT=$n DSA_FAULT_MODE=$mode DSA_FAULT_LOG=$log "$@"
}

# temporaries DIR: names of what an unfinished write leaves, under DIR.
temporaries() {
  find "$1" \( -name '.tmp-*' -o -name '.latest.tmp' -o -name '.*.tmp.*' -o -name '*.incomplete*' \) 2> /dev/null
}

# same_files A B: every file of directory A is in B with the same bytes, and B has no other.
same_files() {
  diff -r -q "$1" "$2" > /dev/null 2>&1
}

# sweep NAME DIR PREPARE CHECK CMD...: the fault sweep of one writer. CMD writes under
# DIR; PREPARE (a function) resets DIR before every run; CHECK MODE N RC LOG (a function)
# judges one faulted run (it may rerun CMD) and prints a reason on failure.
sweep() {
  local name=$1 dir=$2 prepare=$3 check=$4; shift 4
  "$prepare"
  rm -f "$work/count.log"
  if ! shim kill 0 "$dir" "$work/count.log" "$@" > "$work/count.out" 2>&1; then
    not_ok "$name: the counting run succeeds" "$work/count.out"
    return
  fi
  local total
  total=$(grep -c . "$work/count.log")
  for mode in kill enospc; do
    local bad=0 tried=0 n
    for ((n = 1; n <= total; n += stride)); do
      "$prepare"
      shim "$mode" "$n" "$dir" /dev/null "$@" > "$work/fault.out" 2>&1
      local rc=$?
      tried=$((tried + 1))
      if ! "$check" "$mode" "$n" "$rc" "$work/fault.out" > "$work/why.txt" 2>&1; then
        bad=$((bad + 1))
        if [ "$bad" -le 3 ]; then
          { echo "operation $n: $(sed -n "${n}p" "$work/count.log")"; cat "$work/why.txt"; echo "-- faulted run:"
            tail -n 8 "$work/fault.out"; } > "$work/detail.txt"
          not_ok "$name, $mode at operation $n of $total" "$work/detail.txt"
        fi
      fi
    done
    if [ "$bad" -eq 0 ]; then
      ok "$name: $mode at each of $tried of its $total file-system operations: previous state loadable, rerun identical, no temporaries"
    elif [ "$bad" -gt 3 ]; then
      not_ok "$name, $mode: $bad of $tried fault points failed (first 3 shown)"
    fi
  done
}

# fault_rc_ok MODE RC LOG: a kill ends the process by SIGKILL; a full disk ends it with a
# clean error (status 1) naming the cause, or not at all when the failed writes were not
# needed (a full disk at the metrics log).
fault_rc_ok() {
  local mode=$1 rc=$2 log=$3
  if [ "$mode" = kill ]; then
    [ "$rc" -eq 137 ] || { echo "exit status $rc, expected 137 (SIGKILL)"; return 1; }
  else
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then echo "exit status $rc under ENOSPC, expected 0 or 1"; return 1; fi
    if [ "$rc" -eq 1 ] && ! grep -q "No space left on device" "$log"; then echo "the error does not say the disk is full"; return 1; fi
  fi
  return 0
}

# ---- data ---------------------------------------------------------------------------------
data=$work/data
"$DSA" pack --format synthetic --tokens 16Ki --doc-tokens 512 --vocab-size 512 --seed 2 --out "$data/syn" --quiet \
  > "$work/pack.out" 2>&1 || not_ok "pack the training data" "$work/pack.out"

# ---- dsa train ------------------------------------------------------------------------------
# Two steps, a checkpoint after each; one thread, so a resumed run is bit-identical.
train_args=(--config configs/tiny-dense.json --set "data.train=[\"$data\"]" --set data.seq_len=32
  --set model.num_hidden_layers=1 --set model.hidden_size=64 --set model.intermediate_size=96
  --set train.global_batch=2 --set train.micro_batch=1 --set train.steps=2 --set train.checkpoint_every=1
  --set optimizer.lr_warmup_steps=1 --set train.threads=1 --quiet)
# (run_config.json records train.out_dir: the reference is trained in the same directory)
run=$work/run
train_ref=$work/train-ref
"$DSA" train "${train_args[@]}" --set "train.out_dir=$run" > "$work/train-ref.out" 2>&1 ||
  not_ok "uninterrupted training run" "$work/train-ref.out"
mv "$run" "$train_ref"
prepare_train() { rm -rf "$run"; }
check_train() {
  local mode=$1 n=$2 rc=$3 log=$4
  fault_rc_ok "$mode" "$rc" "$log" || return 1
  # what latest names must load as it is (dsa eval resolves latest and verifies the manifest)
  if [ -e "$run/latest" ] && ! "$DSA" eval "$run" --data "$data" --seq-len 32 --windows 1 --threads 1 > "$work/eval.out" 2>&1; then
    echo "after the fault, the checkpoint latest names does not load:"; tail -n 5 "$work/eval.out"; return 1
  fi
  # the rule: resume when a checkpoint was written (latest, or a step directory that
  # recovery adopts); otherwise start again
  local resume=()
  if [ -e "$run/latest" ] || compgen -G "$run/step-*" > /dev/null; then resume=(--resume); fi
  "$DSA" train "${train_args[@]}" --set "train.out_dir=$run" "${resume[@]}" > "$work/resume.out" 2>&1
  local rrc=$?
  [ "$rrc" -eq 0 ] || { echo "the rerun failed (exit $rrc):"; tail -n 8 "$work/resume.out"; return 1; }
  same_files "$train_ref/step-00000002" "$run/step-00000002" ||
    { echo "step-00000002 differs from the uninterrupted run's"; diff -r -q "$train_ref/step-00000002" "$run/step-00000002"; return 1; }
  cmp -s "$train_ref/latest" "$run/latest" || { echo "latest is not step-00000002"; return 1; }
  [ -z "$(temporaries "$run")" ] || { echo "left behind:"; temporaries "$run"; return 1; }
}
sweep "dsa train" "$run" prepare_train check_train "$DSA" train "${train_args[@]}" --set "train.out_dir=$run"

# ---- dsa convert ----------------------------------------------------------------------------
conv_ref=$work/conv-ref
"$DSA" convert "$train_ref" --out "$conv_ref" --quiet > "$work/conv-ref.out" 2>&1 || not_ok "uninterrupted convert" "$work/conv-ref.out"
conv=$work/conv
prepare_convert() { rm -rf "$conv"; }
check_convert() {
  local mode=$1 n=$2 rc=$3 log=$4
  fault_rc_ok "$mode" "$rc" "$log" || return 1
  if [ -e "$conv/latest" ] && ! "$DSA" eval "$conv" --data "$data" --seq-len 32 --windows 1 --threads 1 > "$work/eval.out" 2>&1; then
    echo "after the fault, the conversion latest names does not load:"; tail -n 5 "$work/eval.out"; return 1
  fi
  "$DSA" convert "$train_ref" --out "$conv" --quiet > "$work/rerun.out" 2>&1
  local rrc=$?
  if [ "$rrc" -ne 0 ] && ! grep -q "converted already exists" "$work/rerun.out"; then
    echo "the rerun failed (exit $rrc):"; tail -n 8 "$work/rerun.out"; return 1
  fi
  same_files "$conv_ref/converted" "$conv/converted" || { echo "converted/ differs from the uninterrupted conversion"; return 1; }
  cmp -s "$conv_ref/latest" "$conv/latest" || { echo "latest does not name converted"; return 1; }
  [ -z "$(temporaries "$conv")" ] || { echo "left behind:"; temporaries "$conv"; return 1; }
}
sweep "dsa convert" "$conv" prepare_convert check_convert "$DSA" convert "$train_ref" --out "$conv" --quiet

# ---- dsa export -----------------------------------------------------------------------------
exp_ref=$work/exp-ref/model
"$DSA" export "$train_ref" --out "$exp_ref" --shard-size 60000 --quiet > "$work/exp-ref.out" 2>&1 ||
  not_ok "uninterrupted export" "$work/exp-ref.out"
exp_parent=$work/exp
prepare_export() { rm -rf "$exp_parent"; mkdir -p "$exp_parent"; }
check_export() {
  local mode=$1 n=$2 rc=$3 log=$4
  fault_rc_ok "$mode" "$rc" "$log" || return 1
  # the target appears whole (renamed into place at the end) or not at all
  if [ -e "$exp_parent/model" ] && ! same_files "$exp_ref" "$exp_parent/model"; then
    echo "after the fault, $exp_parent/model exists but is not the complete export"; return 1
  fi
  "$DSA" export "$train_ref" --out "$exp_parent/model" --shard-size 60000 --quiet > "$work/rerun.out" 2>&1
  local rrc=$?
  if [ "$rrc" -ne 0 ] && ! grep -q "is not empty" "$work/rerun.out"; then
    echo "the rerun failed (exit $rrc):"; tail -n 8 "$work/rerun.out"; return 1
  fi
  same_files "$exp_ref" "$exp_parent/model" || { echo "the export differs from the uninterrupted one"; return 1; }
  [ -z "$(temporaries "$exp_parent")" ] || { echo "left behind:"; temporaries "$exp_parent"; return 1; }
}
sweep "dsa export" "$exp_parent" prepare_export check_export \
  "$DSA" export "$train_ref" --out "$exp_parent/model" --shard-size 60000 --quiet

# ---- dsa pack -------------------------------------------------------------------------------
# Three shards; the set is finished only when syn.manifest.json exists.
pack_args=(pack --format synthetic --tokens 8Ki --doc-tokens 512 --vocab-size 512 --seed 3 --shard-tokens 3000
  --chunk-tokens 1024 --quiet)
pack_ref=$work/pack-ref
"$DSA" "${pack_args[@]}" --out "$pack_ref/syn" > "$work/pack-ref.out" 2>&1 || not_ok "uninterrupted pack" "$work/pack-ref.out"
# the windows a reader gets (stream's lines "epoch ..."; its summary has timings)
stream_windows() { "$DSA" stream --seq-len 64 --windows 40 "$1" > "$2" 2>&1 && grep '^epoch' "$2" > "$2.w"; }
stream_windows "$pack_ref" "$work/stream-ref.txt" || not_ok "stream the packed set" "$work/stream-ref.txt"
packd=$work/pack
prepare_pack() { rm -rf "$packd"; mkdir -p "$packd"; }
check_pack() {
  local mode=$1 n=$2 rc=$3 log=$4
  fault_rc_ok "$mode" "$rc" "$log" || return 1
  # a reader sees the whole set, or refuses the shards of the unfinished pack by name
  if stream_windows "$packd" "$work/stream.txt"; then
    diff -q "$work/stream-ref.txt.w" "$work/stream.txt.w" > /dev/null || { echo "a partial set streams as if complete"; return 1; }
  elif ! grep -qE "syn.manifest.json, which .dsa pack. writes after the last shard, is missing|contains no .h5 shards" "$work/stream.txt"; then
    echo "the reader's error does not name the missing manifest:"; tail -n 4 "$work/stream.txt"; return 1
  fi
  "$DSA" "${pack_args[@]}" --out "$packd/syn" > "$work/rerun.out" 2>&1
  local rrc=$?
  if [ "$rrc" -ne 0 ] && ! grep -q "already exist" "$work/rerun.out"; then
    echo "the rerun failed (exit $rrc):"; tail -n 8 "$work/rerun.out"; return 1
  fi
  stream_windows "$packd" "$work/stream.txt"
  diff -q "$work/stream-ref.txt.w" "$work/stream.txt.w" > /dev/null || { echo "the packed set differs from the uninterrupted one"; return 1; }
  [ -z "$(temporaries "$packd")" ] || { echo "left behind:"; temporaries "$packd"; return 1; }
}
sweep "dsa pack" "$packd" prepare_pack check_pack "$DSA" "${pack_args[@]}" --out "$packd/syn"

echo "tests: $passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
