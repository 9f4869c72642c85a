# test_messages.sh: outcomes that used to be silent or misleading say what happened and
# what to do: --resume on a finished run, --resume without a run, eval asked for more
# windows than the data holds, train repeating its windows, a seq_len longer than the
# data, eval --topk on a dense model, errors caused by a --set override (named, with the
# key to change), other frameworks' key names, `dsa --version`, `dsa --help`'s bench
# line, and `export --quiet` (no log lines, only the result line, as `train --quiet`).
. "$(dirname "$0")/lib.sh"

cd "$work" || exit 1
root=$(cd "$OLDPWD" && pwd)
cfg=$root/configs/tiny-dense.json
"$DSA" pack --format synthetic --tokens 64Ki --doc-tokens 1Ki --distances 16,64,200 --out lm/syn --quiet > /dev/null
"$DSA" pack --format synthetic --tokens 1Ki --doc-tokens 1Ki --distances 16 --out small/s --quiet > /dev/null
run=(--config "$cfg" --set data.train=lm --set train.steps=2 --set optimizer.lr_warmup_steps=0 --quiet)

# ---- dsa --version, dsa --help ------------------------------------------------------------
expect_output "--version prints the release" '^dsa [0-9]+\.[0-9]+\.[0-9]+$' "$DSA" --version
expect_output "--version prints the file format versions" '^formats: shards 1, run config 1, trainer state 1$' \
  "$DSA" --version
expect_rc 0 "--version exits 0" "$DSA" --version
expect_output "--help describes bench's four benchmarks" \
  '^  bench +benchmarks: loader, training steps .*SGEMM, dense vs sparse$' "$DSA" --help
if "$DSA" --help | grep -q 'measure loader throughput'; then not_ok "--help no longer calls bench a loader benchmark"
else ok "--help no longer calls bench a loader benchmark"; fi

# ---- train: finished runs, missing runs ------------------------------------------------------
expect_rc 0 "a 2-step run" "$DSA" train "${run[@]}" --set train.out_dir=done
expect_output "--resume of a finished run says it is complete" \
  '^run already complete: done is at step 2 of 2 \(done/step-00000002\); nothing to train$' \
  "$DSA" train "${run[@]}" --set train.out_dir=done --resume
expect_rc 0 "--resume of a finished run exits 0" "$DSA" train "${run[@]}" --set train.out_dir=done --resume
if "$DSA" train "${run[@]}" --set train.out_dir=done --resume 2>&1 | grep -q 'last loss 0.0000\|steps 3\.\.2'; then
  not_ok "--resume of a finished run prints no empty step range nor a zero loss"
else ok "--resume of a finished run prints no empty step range nor a zero loss"; fi
expect_output "--resume without a run says to start without --resume" \
  'train.out_dir nowhere does not exist, so there is no run to resume: start the run without --resume' \
  "$DSA" train "${run[@]}" --set train.out_dir=nowhere --resume
mkdir -p empty
expect_output "--resume in a directory without checkpoints gives the fix" \
  '--resume: no checkpoint to resume in train.out_dir empty: start the run without --resume' \
  "$DSA" train "${run[@]}" --set train.out_dir=empty --resume
expect_rc 1 "--resume without a run exits 1" "$DSA" train "${run[@]}" --set train.out_dir=nowhere --resume

# ---- data too small for the run --------------------------------------------------------------
expect_output "train warns when it repeats the data's windows, with the figures" \
  'warn\] stage 0 "lm": 2 steps x 8 sequences need 16 windows of 257 tokens, but the data \(1 shard\(s\) starting with small/s-00000.h5, 1024 tokens\) holds 3: each window is used about 5.33 times, several times within every step' \
  "$DSA" train "${run[@]}" --set train.out_dir=rep --set data.train=small
if "$DSA" train "${run[@]}" --set train.out_dir=norep 2>&1 | grep -q 'warn\]'; then
  not_ok "no repeat warning when the data holds enough windows"
else ok "no repeat warning when the data holds enough windows"; fi
expect_output "a seq_len longer than the data names the key to lower" \
  'stages.0 \("lm"\) reads windows of seq_len \+ 1 = 1025 tokens: lower stages.0.seq_len \(or data.seq_len, which stages inherit\)' \
  "$DSA" train "${run[@]}" --set train.out_dir=long --set data.train=small --set data.seq_len=1024
expect_output "eval warns when the data holds fewer windows than --windows" \
  'warn\] eval: the data holds 1 window of 512 tokens \(1024 tokens\), fewer than the 2 asked for \(--windows\): evaluating 1' \
  "$DSA" eval done --data small --seq-len 512 --windows 2
expect_output "eval with a window longer than the data says to shorten it" \
  '--seq-len 1024: use a shorter window, or give more data' "$DSA" eval done --data small --seq-len 1024 --windows 1
expect_output "eval --topk on a dense model points to dsa convert --add-indexer" \
  '--topk: done/step-00000002 has no lightning indexer .*`dsa convert --add-indexer done --out DIR`' \
  "$DSA" eval done --data lm --seq-len 64 --windows 1 --topk 4

# ---- configuration errors ---------------------------------------------------------------------
expect_output "an error caused by --set names the override and the key to change" \
  'config_validate\.c:[0-9]+: --set train.steps=2: stages.0.lr_warmup_steps = 20 exceeds stages.0.steps = 2 .*: lower optimizer.lr_warmup_steps or raise train.steps$' \
  "$DSA" train --config "$cfg" --set data.train=lm --set train.out_dir=x --set train.steps=2
if "$DSA" train --config "$cfg" --set data.train=lm --set train.out_dir=x --set train.steps=2 2>&1 |
  grep -q 'config_validate\.c:[0-9]*: [^ ]*tiny-dense.json: stages'; then not_ok "the error does not blame the config file"
else ok "the error does not blame the config file"; fi
expect_output "optimizer.learning_rate points to optimizer.lr" 'did you mean optimizer.lr\?' \
  "$DSA" train --config "$cfg" --set optimizer.learning_rate=1e-3

# ---- export --quiet -----------------------------------------------------------------------------
"$DSA" export done --out quiet --quiet > q.out 2> q.err
if [ $? -eq 0 ] && [ ! -s q.err ] && [ "$(cat q.out)" = "exported: quiet (bf16)" ] && [ -f quiet/config.json ]; then
  ok "export --quiet prints only its result line, no log lines"
else cat q.out q.err > "$last_out"; not_ok "export --quiet prints only its result line, no log lines"; fi
expect_output "export without --quiet reports the export" '^exported: loud \(bf16\)$' "$DSA" export done --out loud
