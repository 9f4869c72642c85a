# test_plot.sh: tools/plot_metrics.py on synthetic metrics.jsonl files: the three PNGs and
# summary.txt of a two-stage run (warmup, sparse) followed by a plain LM run, the --eval
# table, the labelled stage switches and the note on a later run's shifted steps, a truncated last line (tolerated), a malformed middle line and a missing file
# (exit 1 naming the file and line), usage errors (exit 2). Skips without matplotlib.
. "$(dirname "$0")/lib.sh"

py=${PYENV:+$PYENV/bin/python}
if [ -z "$py" ] || ! "$py" -c 'import matplotlib, numpy' > /dev/null 2>&1; then
  skip "plot_metrics.py" "no Python venv with matplotlib (make pyenv installs it)"
  exit 0
fi
plot=tools/plot_metrics.py

# A DSA run: 30 warmup steps (dense attention), 30 sparse steps; 2 layers. Then an LM run.
mkdir -p "$work/dsa" "$work/lm"
"$py" - "$work/dsa/metrics.jsonl" "$work/lm/metrics.jsonl" << 'EOF'
import json, math, sys
with open(sys.argv[1], "w") as f:
    for s in range(1, 61):
        stage = "warmup" if s <= 30 else "sparse"
        kl = [2.0 * math.exp(-s / 10) + 0.01 * l for l in range(2)]
        f.write(json.dumps({"step": s, "stage": stage, "lr": 1e-3, "loss": 6 - s / 20, "grad_norm": 1.0,
                            "clip": 1.0, "tokens": 512 * s, "tokens_per_s": 1000.0 + s, "step_time_s": 0.5,
                            "peak_mem_bytes": 1, "peak_rss_bytes": 1,
                            "attention": "dense" if stage == "warmup" else "sparse",
                            "indexer_loss": sum(kl), "indexer_kl": kl, "recall": [1 - k / 4 for k in kl],
                            "selected": 64.0, "indexer_grad_norm": 0.5}) + "\n")
with open(sys.argv[2], "w") as f:
    for s in range(1, 11):
        f.write(json.dumps({"step": s, "stage": "lm", "lr": 1e-4, "loss": 3.0, "grad_norm": 1.0, "clip": 1.0,
                            "tokens": 512 * s, "tokens_per_s": 900.0, "step_time_s": 0.5,
                            "peak_mem_bytes": 1, "peak_rss_bytes": 1}) + "\n")
EOF
printf '{"step": 61, "stage": "sparse", "lr": 0.001, "lo' >> "$work/dsa/metrics.jsonl"
cat > "$work/eval.json" << 'EOF'
{"dense_loss": 3.21, "sparse_loss": 3.25, "layers": [{"kl": 0.02, "recall": 0.97}, {"kl": 0.04, "recall": 0.95}],
 "tasks": {"copy": 0.91, "recall_far": 0.62}}
EOF

expect_output "--help prints usage" "usage: plot_metrics.py" "$py" $plot --help
expect_rc 2 "no run directory is a usage error" "$py" $plot --out "$work/out"
expect_rc 2 "no --out is a usage error" "$py" $plot "$work/dsa"
expect_output "a truncated last line is skipped with a warning" "warning: .*metrics.jsonl:61: skipping truncated" \
  "$py" $plot "$work/dsa" "$work/lm" --out "$work/out" --eval "$work/eval.json" --title test
for png in lm_loss indexer_kl recall; do
  if [ "$(head -c 8 "$work/out/$png.png" 2> /dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
    ok "$png.png is a PNG"; else not_ok "$png.png is a PNG"; fi
done
expect_output "summary.txt has the warmup stage" "^dsa +warmup +1-30 " cat "$work/out/summary.txt"
expect_output "summary.txt has the sparse stage" "^dsa +sparse +31-60 " cat "$work/out/summary.txt"
expect_output "summary.txt has the LM run" "^lm +lm +1-10 +3\.0000 +3\.0000 +- +- +- +- +900" cat "$work/out/summary.txt"
expect_output "summary.txt has the eval table" "^eval.json +3\.2100 +3\.2500 +\+0\.0400 +0\.03 +0\.9600 +0\.910 +0\.620" \
  cat "$work/out/summary.txt"

# stage switches are labelled, and a later run's shifted steps are said
"$py" $plot "$work/dsa" "$work/lm" --out "$work/out" > "$work/plot.out" 2>&1
expect_output "the stage switch is labelled with the stage it starts" '^switch at x = 31: sparse$' cat "$work/plot.out"
expect_output "the run switch names the run and its own first step" '^switch at x = 61: step 1: lm / lm$' \
  cat "$work/plot.out"
expect_output "the shifted run's offset is said" '^note: lm: steps 1-10 plotted at 61-70 \(shifted by 60 to follow dsa\)$' \
  cat "$work/plot.out"
expect_output "summary.txt lists the shift" '^  lm: steps 1-10 plotted at 61-70' cat "$work/out/summary.txt"
expect_output "summary.txt lists the switches" '^  x = 31: sparse$' cat "$work/out/summary.txt"
mkdir -p "$work/late"
sed -n '5,10p' "$work/lm/metrics.jsonl" > "$work/late/metrics.jsonl"
expect_output "a run that starts after step 1 says so" '^note: late: starts at step 5' \
  "$py" $plot "$work/late" --out "$work/out4"
if "$py" $plot "$work/lm" --out "$work/out5" | grep -q '^note:'; then not_ok "a single run from step 1 has no note"
else ok "a single run from step 1 has no note"; fi

expect_output "an LM-only run skips the indexer plots" "skipping indexer_kl.png" "$py" $plot "$work/lm" --out "$work/out2"
if [ -f "$work/out2/lm_loss.png" ] && [ ! -e "$work/out2/recall.png" ]; then
  ok "an LM-only run writes only lm_loss.png"; else not_ok "an LM-only run writes only lm_loss.png"; fi

sed -i '5s/.*/{"step": 5, "stage": "warm/' "$work/dsa/metrics.jsonl"
expect_rc 1 "a malformed middle line is a data error" "$py" $plot "$work/dsa" --out "$work/out3"
expect_output "the error names the file and line" "dsa/metrics.jsonl:5: malformed" "$py" $plot "$work/dsa" --out "$work/out3"
expect_rc 1 "a missing metrics.jsonl is a data error" "$py" $plot "$work/nothing" --out "$work/out3"
expect_output "the error names the missing file" "nothing/metrics.jsonl: cannot read" "$py" $plot "$work/nothing" --out "$work/out3"
