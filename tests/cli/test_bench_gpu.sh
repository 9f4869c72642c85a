# test_bench_gpu.sh: `dsa bench gpu`: usage errors, the refusal without a CUDA device, and
# the whole benchmark (allocation through the backend table, every op, the step sums, the
# JSON lines, the budget) run on the CPU backend with the tiny DSA shapes (--device cpu).
. "$(dirname "$0")/lib.sh"

expect_output "dsa bench gpu --help prints usage" "usage: dsa bench gpu" "$DSA" bench gpu --help
expect_output "dsa bench lists gpu" "^  gpu " "$DSA" bench --help
expect_rc 2 "an unknown op is a usage error" "$DSA" bench gpu --ops dense_fwd,sparse_fdw
expect_output "... and names the closest op" 'unknown op "sparse_fdw".*did you mean "sparse_fwd"' "$DSA" bench gpu --ops sparse_fdw
expect_rc 2 "--reps 0 is a usage error" "$DSA" bench gpu --reps 0
if "$DSA" info 2>&1 | grep -q '^cuda devices: none'; then
  expect_output "without a CUDA device it refuses by name" "needs (a CUDA device|the CUDA backend)" "$DSA" bench gpu
else
  skip "without a CUDA device it refuses by name" "this machine has a CUDA device"
fi

cpu=(bench gpu --device cpu --config configs/tiny-dsa.json --reps 1)
"$DSA" "${cpu[@]}" --seq-len 48,96 --json > "$work/b.jsonl" 2> "$last_out"
rc=$?
n_ok=$(grep -c '"status":"ok"' "$work/b.jsonl")
if [ "$rc" -eq 0 ] && [ "$n_ok" -eq 18 ]; then ok "every op and both step sums at 2 lengths on the CPU backend (18 JSON lines)"
else cat "$work/b.jsonl" >> "$last_out"; not_ok "dsa bench gpu --device cpu: exit $rc, $n_ok of 18 ok"; fi
python3 - "$work/b.jsonl" > "$last_out" 2>&1 << 'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["seq_len"], r["op"]): r for r in rows}
for L in (48, 96):
    parts = ["indexer_topk", "dense_fwd", "kl_dense"]
    step = by[(L, "warmup_step")]
    assert abs(step["ms"] - sum(by[(L, p)]["ms"] for p in parts)) < 1e-2, step
    assert abs(step["flops"] - sum(by[(L, p)]["flops"] for p in parts)) <= 1e-6 * step["flops"], step
    for r in rows:
        assert r["flops"] > 0 and r["ms"] > 0 and r["tflops"] > 0, r
# dsa_plan_attention_flops at L = 96 (tiny-dsa: H 4, d_qk 48, d_v 32; DSA-SPEC 8.4): Pd = 4656
assert by[(96, "dense_fwd")]["flops"] == 2 * 4 * (48 + 32) * 4656, by[(96, "dense_fwd")]
assert by[(96, "dense_bwd")]["flops"] == 2.5 * by[(96, "dense_fwd")]["flops"]
print("ok")
PY
if [ $? -eq 0 ]; then ok "step rows sum their parts; FLOPs are plan.c's (dense forward 2·H·(d_qk + d_v)·Pd)"; else not_ok "the JSON lines add up"; fi
"$DSA" "${cpu[@]}" --seq-len 48,32768 --ops indexer_topk --budget 1 > "$work/t.txt" 2>&1
if grep -qE '^32768 +indexer_topk .*skipped: (predicted|--budget)' "$work/t.txt" && grep -qE '^48 +indexer_topk +[0-9.]+ ' "$work/t.txt" &&
   grep -qE '^48 +dense_fwd .*skipped: not in --ops' "$work/t.txt"; then
  ok "--ops limits the ops; an op over --budget is skipped, saying so"
else cp "$work/t.txt" "$last_out"; not_ok "--ops and --budget"; fi
