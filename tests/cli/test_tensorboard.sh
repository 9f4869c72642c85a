# test_tensorboard.sh: tools/metrics_tensorboard.py. A short DSA run (configs/tiny-dsa.json,
# 4 warm-up + 4 sparse steps, indexer KL and recall in every line) and a stopped-then-resumed
# one are converted and read back with TensorBoard's own EventAccumulator: every tag that a
# line's fields map to, each step once, each value the line's as float32, and the stage text
# at each switch. Converting again leaves one event file with the same scalars. --follow is
# started before a run exists, converts it while it trains, survives a simulated kill (the
# last checkpoint removed) and the resume that cuts metrics.jsonl back and logs the steps
# again, and stops by itself at the final step; on a synthetic run it rewrites the file when
# a line is logged again, stops after --idle-exit, on SIGTERM, and refuses a second writer.
# Bad input: missing, empty, malformed and mistyped lines (exit 1 naming file and line, the
# previous event file kept), a truncated last line (skipped), nan values, usage errors.
. "$(dirname "$0")/lib.sh"

py=${PYENV:+$PYENV/bin/python}
if [ -z "$py" ] || ! "$py" -c 'import tensorboard.backend.event_processing.event_accumulator' > /dev/null 2>&1; then
  skip "metrics_tensorboard.py" "no Python venv with tensorboard (make pyenv installs it)"
  exit 0
fi
tb=tools/metrics_tensorboard.py

# check.py: `check RUN_LOGDIR METRICS.jsonl` compares the event files with the lines (the
# tag table below is this test's own copy of the tool's); `steps RUN_LOGDIR` prints the
# steps of loss/lm.
cat > "$work/check.py" << 'EOF'
import json, math, os, sys
import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea

SCALARS = {"loss": "loss/lm", "indexer_loss": "indexer/kl/sum", "selected": "indexer/selected",
           "indexer_grad_norm": "indexer/grad_norm", "lr": "optim/lr", "grad_norm": "optim/grad_norm",
           "clip": "optim/clip", "tokens_per_s": "perf/tokens_per_s", "step_time_s": "perf/step_time_s",
           "tokens": "perf/tokens", "peak_mem_bytes": "memory/peak_bytes", "peak_rss_bytes": "memory/peak_rss_bytes"}

def load(d):
    acc = ea.EventAccumulator(d, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc

def expected(path):
    rows = []
    for text in open(path, encoding="utf-8"):
        if not text.endswith("\n"):
            break  # a truncated last line
        r = json.loads(text.replace(":nan", ":NaN"))
        rows = [x for x in rows if x["step"] < r["step"]] + [r]  # a step logged again replaces the rest
    want, texts, stages, prev = {}, {}, [], None
    for r in rows:
        s = r["step"]
        if r["stage"] not in stages:
            stages.append(r["stage"])
        if r["stage"] != prev:
            texts[s] = f"step {s}: stage {r['stage']}" + (f" (attention {r['attention']})" if "attention" in r else "")
        prev = r["stage"]
        vals = {tag: r[k] for k, tag in SCALARS.items() if k in r}
        for k, group in (("indexer_kl", "indexer/kl"), ("recall", "indexer/recall")):
            for i, v in enumerate(r.get(k, [])):
                vals[f"{group}/layer_{i}"] = v
        if "recall" in r:
            vals["indexer/recall/mean"] = sum(r["recall"]) / len(r["recall"])
        vals["stage/index"] = stages.index(r["stage"])
        if "attention" in r:
            vals["stage/sparse"] = float(r["attention"] == "sparse")
        for k, v in r.items():
            if k not in SCALARS and k not in ("step", "stage", "attention", "indexer_kl", "recall") and isinstance(v, (int, float)):
                vals[f"other/{k}"] = v
        want[s] = vals
    return want, texts

cmd, d = sys.argv[1], sys.argv[2]
acc = load(d)
if cmd == "steps":
    print(" ".join(str(e.step) for e in acc.Scalars("loss/lm")) if "loss/lm" in acc.Tags()["scalars"] else "")
    sys.exit(0)
want, texts = expected(sys.argv[3])
tags = sorted({t for v in want.values() for t in v})
bad = []
if sorted(acc.Tags()["scalars"]) != tags:
    bad.append(f"tags {sorted(acc.Tags()['scalars'])} != {tags}")
for tag in tags:
    got = acc.Scalars(tag) if tag in acc.Tags()["scalars"] else []
    steps = [s for s in sorted(want) if tag in want[s]]
    if [e.step for e in got] != steps:
        bad.append(f"{tag}: steps {[e.step for e in got]} != {steps}")
        continue
    for e in got:
        w = np.float32(want[e.step][tag])
        if not (e.value == w or (math.isnan(w) and math.isnan(e.value))):
            bad.append(f"{tag} step {e.step}: {e.value!r} != {w!r}")
got_texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("stage")} if "stage" in acc.Tags()["tensors"] else {}
if got_texts != texts:
    bad.append(f"stage texts {got_texts} != {texts}")
files = [f for f in os.listdir(d) if "tfevents" in f]
if len(files) != 1:
    bad.append(f"{len(files)} event files: {files}")
print("\n".join(bad[:10]) if bad else f"match: {len(want)} steps, {len(tags)} tags, stages at {sorted(texts)}")
sys.exit(1 if bad else 0)
EOF
# matches NAME LOGDIR/RUN METRICS: the event files hold exactly the lines' scalars
matches() {
  if "$py" "$work/check.py" check "$2" "$3" > "$last_out" 2>&1; then ok "$1 ($(cat "$last_out"))"; else not_ok "$1"; fi
}
# wait_for CMD...: up to 60 s for CMD to succeed (a bound on progress, not a timing check)
wait_for() {
  local i
  for i in $(seq 600); do "$@" > /dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
# expect_error NAME PATTERN CMD...: CMD exits 1 (a data error) and prints PATTERN
expect_error() {
  local name=$1 pattern=$2; shift 2
  "$@" > "$last_out" 2>&1
  local rc=$?
  if [ $rc -eq 1 ] && grep -qE -- "$pattern" "$last_out"; then ok "$name"; else echo "    (exit $rc)" >> "$last_out"; not_ok "$name"; fi
}
has_step() { "$py" "$work/check.py" steps "$1" | grep -qw "$2"; }
# follow_bg RCFILE OUTFILE ARGS...: the tool in the background; RCFILE receives its exit status
follow_bg() {
  local rcf=$1 out=$2; shift 2
  ( "$py" $tb "$@" > "$out" 2>&1; echo $? > "$rcf" ) &
}
# finished NAME RCFILE OUTFILE PATTERN: the background tool ended by itself, exit 0, PATTERN in its output
finished() {
  if ! wait_for test -s "$2"; then cp "$3" "$last_out"; not_ok "$1 (still running after 60 s)"; return; fi
  wait
  cp "$3" "$last_out"
  if [ "$(cat "$2")" = 0 ] && grep -qE "$4" "$3"; then ok "$1"; else not_ok "$1 (exit $(cat "$2"))"; fi
}

"$DSA" pack --format synthetic --tokens 64Ki --doc-tokens 512 --distances 8,32,100 --seed 4 \
  --out "$work/lm/syn" --quiet > "$last_out" 2>&1 || not_ok "pack training data"
train=("$DSA" train --config configs/tiny-dsa.json --set "data.train=[\"$work/lm\"]" --set data.seq_len=64
  --set train.global_batch=2 --set train.micro_batch=2 --set train.threads=2 --set stages.0.steps=4
  --set stages.1.steps=4 --set stages.1.lr_warmup_steps=1 --set train.checkpoint_every=3 --quiet)

# ---- a run converted after the fact -------------------------------------------------------
expect_rc 0 "train tiny-dsa (4 warm-up + 4 sparse steps)" "${train[@]}" --set "train.out_dir=$work/dsa"
expect_output "convert a finished run" "^dsa: steps 1-8 \(8 events, stages warmup, sparse\) -> .*/tb/dsa/events.out.tfevents" \
  "$py" $tb "$work/dsa" --logdir "$work/tb"
matches "every scalar of every line reads back through EventAccumulator" "$work/tb/dsa" "$work/dsa/metrics.jsonl"
before=$(ls "$work/tb/dsa")
expect_rc 0 "convert it again" "$py" $tb "$work/dsa/metrics.jsonl" --logdir "$work/tb"
matches "converting again leaves one event file, no scalar twice" "$work/tb/dsa" "$work/dsa/metrics.jsonl"
if [ "$(ls "$work/tb/dsa")" != "$before" ]; then ok "the new event file replaced the old one"
else not_ok "the new event file replaced the old one"; fi

# ---- stopped and resumed -----------------------------------------------------------------------
expect_rc 0 "train to --stop-at 5" "${train[@]}" --set "train.out_dir=$work/res" --stop-at 5
expect_rc 0 "resume to the end" "${train[@]}" --set "train.out_dir=$work/res" --resume
expect_rc 0 "convert the resumed run" "$py" $tb "$work/res" --logdir "$work/tb"
matches "a resumed run converts to each step once" "$work/tb/res" "$work/res/metrics.jsonl"

# ---- --follow: live, through a kill and a resume -----------------------------------------------
follow_bg "$work/follow.rc" "$work/follow.out" "$work/live" --logdir "$work/tb" --follow --poll 0.05
if wait_for grep -q "^live: waiting for .*/live/metrics.jsonl" "$work/follow.out"; then ok "the follower waits for the run to start"
else cp "$work/follow.out" "$last_out"; not_ok "the follower waits for the run to start"; fi
expect_rc 0 "train the followed run to --stop-at 7" "${train[@]}" --set "train.out_dir=$work/live" \
  --set stages.1.steps=6 --stop-at 7
if wait_for has_step "$work/tb/live" 7 && [ ! -e "$work/follow.rc" ]; then
  ok "the follower converts the run while it is unfinished (step 7 of 10, still following)"
else cp "$work/follow.out" "$last_out"; not_ok "the follower converts the run while it is unfinished"; fi
# the state a kill after step 7's line and before its checkpoint leaves: latest is step 6
rm -r "$work/live/step-00000007" && printf 'step-00000006\n' > "$work/live/latest"
expect_rc 0 "resume the followed run (logs step 7 again, then 8-10)" "${train[@]}" --set "train.out_dir=$work/live" \
  --set stages.1.steps=6 --resume
finished "the follower stops by itself at the final step" "$work/follow.rc" "$work/follow.out" "^live: final step 10 logged"
matches "the followed run: each step once, step 7 as logged again" "$work/tb/live" "$work/live/metrics.jsonl"
expect_output "--follow of a finished run converts it and stops" "final step 10 logged" \
  "$py" $tb "$work/live" --logdir "$work/tb2" --follow

# ---- --follow on a synthetic run: a line logged again, --idle-exit, SIGTERM, one writer -----------
mkdir -p "$work/syn/step-00000006"
echo '{"stages": [{"steps": 2}, {"steps": 4}]}' > "$work/syn/step-00000006/run_config.json"
line() { # step stage loss tokens_per_s
  printf '{"step":%d,"stage":"%s","lr":0.001,"loss":%s,"tokens_per_s":%s,"attention":"dense","indexer_loss":0.5,"indexer_kl":[0.2,0.3],"recall":[0.9,0.8],"selected":16,"extra":7}\n' "$@"
}
{ for s in 1 2 3 4 5; do line $s $([ $s -le 2 ] && echo warmup || echo sparse) 5.$s 1000; done; } > "$work/syn/metrics.jsonl"
follow_bg "$work/follow2.rc" "$work/follow2.out" "$work/syn" --logdir "$work/tb" --follow --poll 0.05
wait_for has_step "$work/tb/syn" 5 || not_ok "the follower converts the synthetic run"
expect_error "a second writer of the same run is refused" "tb/syn: another metrics_tensorboard.py is writing there" \
  "$py" $tb "$work/syn" --logdir "$work/tb"
# a resume replaces metrics.jsonl: steps 4 and 5 logged again with other values, then 6 (the last)
{ for s in 1 2 3; do line $s $([ $s -le 2 ] && echo warmup || echo sparse) 5.$s 1000; done
  for s in 4 5 6; do line $s sparse 4.$s 2000; done; } > "$work/syn/metrics.new"
mv "$work/syn/metrics.new" "$work/syn/metrics.jsonl"
echo step-00000006 > "$work/syn/latest"
finished "the follower rewrites the event file when steps are logged again, and stops at the last" \
  "$work/follow2.rc" "$work/follow2.out" "no longer holds the lines converted from step 4 on"
matches "...to the lines metrics.jsonl holds (steps 4 and 5 once, with their new values)" "$work/tb/syn" "$work/syn/metrics.jsonl"
# within one file: step 3 again after 5 replaces 3-5 (one-off conversion)
mkdir -p "$work/rep"
{ for s in 1 2 3 4 5; do line $s warmup 5.$s 1000; done; line 3 warmup 3.3 3000; line 4 sparse 3.4 3000; } > "$work/rep/metrics.jsonl"
expect_rc 0 "convert a file where step 3 comes again after 5" "$py" $tb "$work/rep" --logdir "$work/tb"
matches "a step logged again within one file replaces it and what followed" "$work/tb/rep" "$work/rep/metrics.jsonl"

rm "$work/syn/latest"
line 7 sparse 4.7 2000 >> "$work/syn/metrics.jsonl"
expect_output "--idle-exit stops a follower that sees no new line" "no new metrics line for 0.3 s \(--idle-exit\)" \
  "$py" $tb "$work/syn" --logdir "$work/tb" --follow --poll 0.05 --idle-exit 0.3
"$py" $tb "$work/syn" --logdir "$work/tb" --follow --poll 0.05 > "$work/follow3.out" 2>&1 &
follower=$!
wait_for has_step "$work/tb/syn" 7 || not_ok "the follower converts the synthetic run"
kill -TERM $follower
wait $follower
rc=$?
cp "$work/follow3.out" "$last_out"
if [ $rc -eq 0 ] && grep -q "stopped by SIGTERM" "$work/follow3.out"; then ok "SIGTERM stops the follower cleanly"
else not_ok "SIGTERM stops the follower cleanly (exit $rc)"; fi
matches "...with the event file complete" "$work/tb/syn" "$work/syn/metrics.jsonl"

# ---- an LM run and bad input --------------------------------------------------------------------
mkdir -p "$work/lmrun"
for s in 1 2 3; do
  printf '{"step":%d,"stage":"lm","lr":1e-4,"loss":%s,"grad_norm":1,"tokens":%d,"tokens_per_s":900}\n' $s 3.$s $((512 * s))
done > "$work/lmrun/metrics.jsonl"
printf '{"step":4,"stage":"lm","lr":1e-4,"lo' >> "$work/lmrun/metrics.jsonl"
expect_output "a truncated last line is skipped with a warning" "warning: .*lmrun/metrics.jsonl:4: skipping truncated last line" \
  "$py" $tb "$work/lmrun" "$work/dsa" --logdir "$work/tb3"
matches "an LM run has no indexer tags (two runs in one logdir)" "$work/tb3/lmrun" "$work/lmrun/metrics.jsonl"
matches "...and the DSA run beside it its own" "$work/tb3/dsa" "$work/dsa/metrics.jsonl"
mkdir -p "$work/nan"
printf '{"step":1,"stage":"lm","loss":nan,"lr":-inf}\n{"step":2,"stage":"lm","loss":inf,"lr":0}\n' > "$work/nan/metrics.jsonl"
expect_rc 0 "bare nan and inf values (a diverged loss) convert" "$py" $tb "$work/nan" --logdir "$work/tb3"
"$py" - "$work/tb3/nan" << 'EOF' > "$last_out" 2>&1 && ok "...as NaN and Infinity" || not_ok "...as NaN and Infinity"
import math, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1]); acc.Reload()
loss, lr = [e.value for e in acc.Scalars("loss/lm")], [e.value for e in acc.Scalars("optim/lr")]
print(loss, lr)
assert math.isnan(loss[0]) and loss[1] == math.inf and lr == [-math.inf, 0.0]
EOF

cp "$work/lmrun/metrics.jsonl" "$work/lmrun/good"
sed -i '2s/.*/{"step": 2, "stage": "lm", "lo/' "$work/lmrun/metrics.jsonl"
expect_error "a malformed middle line is a data error naming the file and line" "error: .*lmrun/metrics.jsonl:2: malformed line" \
  "$py" $tb "$work/lmrun" --logdir "$work/tb3"
matches "a failed conversion keeps the previous event file" "$work/tb3/lmrun" "$work/lmrun/good"
sed -i '2s/.*/{"step": 2, "stage": "lm", "loss": "low"}/' "$work/lmrun/metrics.jsonl"
expect_error "a mistyped field is named with file and line" "lmrun/metrics.jsonl:2: loss must be a number, got 'low'" \
  "$py" $tb "$work/lmrun" --logdir "$work/tb3"
sed -i '2s/.*/{"stage": "lm", "loss": 1}/' "$work/lmrun/metrics.jsonl"
expect_error "a line without a step is named" "lmrun/metrics.jsonl:2: missing step" "$py" $tb "$work/lmrun" --logdir "$work/tb3"
sed -i '2s/.*/{"step": 2, "stage": "lm", "loss": 1, "recall": [0.5, "x"]}/' "$work/lmrun/metrics.jsonl"
expect_error "a per-layer list that is not numbers is named" "lmrun/metrics.jsonl:2: recall must be a non-empty list of numbers" \
  "$py" $tb "$work/lmrun" --logdir "$work/tb3"
expect_error "a missing metrics.jsonl is a data error naming the file" "nothing/metrics.jsonl: cannot read: No such file" \
  "$py" $tb "$work/nothing" --logdir "$work/tb3"
mkdir -p "$work/empty" && : > "$work/empty/metrics.jsonl"
expect_error "an empty metrics.jsonl is a data error" "empty/metrics.jsonl: no metrics lines" \
  "$py" $tb "$work/empty" --logdir "$work/tb3"

expect_output "--help prints usage" "usage: metrics_tensorboard.py" "$py" $tb --help
expect_rc 2 "no --logdir is a usage error" "$py" $tb "$work/dsa"
expect_rc 2 "--idle-exit without --follow is a usage error" "$py" $tb "$work/dsa" --logdir "$work/tb3" --idle-exit 5
mkdir -p "$work/other/dsa"
expect_output "two runs of one name are refused" "would both be the run dsa" \
  "$py" $tb "$work/dsa" "$work/other/dsa" --logdir "$work/tb3"
