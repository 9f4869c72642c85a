# test_plan.sh: `dsa plan` end to end (pretrain/plan.h; the figures themselves are
# tests/test_plan.c): help, usage errors that name the flag, the paper's token counts of
# configs/deepseek-v3.2.json in the table and in the JSON, the JSON parsing with Python,
# the search listing only layouts that fit (ranked by step time), a given layout, and the
# single-layer check of issue 15 (one V3.2 attention layer of 131072 tokens fits 80 GB in
# both stages).
. "$(dirname "$0")/lib.sh"

v32=configs/deepseek-v3.2.json

expect_output "dsa --help lists plan" "plan +plan a run on GPUs" "$DSA" --help
expect_output "--help names the layout flags" "--dp N, --cp N, --ep N" "$DSA" plan --help
expect_output "--help states the ranking rule" "ranked by step time" "$DSA" plan --help
expect_rc 0 "--help exits 0" "$DSA" plan --help

# ---- usage errors: exit 2, naming the flag -----------------------------------------------
expect_rc 2 "no --config is a usage error" "$DSA" plan --gpus 8
expect_output "no --config says to give one" "give the run config: --config FILE" "$DSA" plan --gpus 8
expect_output "no --gpus and no layout says to give one" "give --gpus N" "$DSA" plan --config "$v32"
expect_rc 2 "--zero 3 exits 2" "$DSA" plan --config "$v32" --gpus 8 --zero 3
expect_output "--zero 3 is named" '--zero "3": expected 0, 1 or 2' "$DSA" plan --config "$v32" --gpus 8 --zero 3
expect_output "--recompute sometimes is named" '--recompute "sometimes": expected auto, on or off' \
  "$DSA" plan --config "$v32" --gpus 8 --recompute sometimes
expect_output "--gpu-mem 80XB is named" '--gpu-mem.*unknown suffix' "$DSA" plan --config "$v32" --gpus 8 --gpu-mem 80XB
expect_output "--mfu 1.5 is refused" '--mfu "1.5": expected a number in \(0, 1\]' "$DSA" plan --config "$v32" --gpus 8 --mfu 1.5
expect_output "--gpus 0 is refused" '--gpus 0: must be at least 1' "$DSA" plan --config "$v32" --gpus 0
expect_output "an unknown option is named" 'unknown option "--gpu"' "$DSA" plan --config "$v32" --gpu 8
expect_output "a flag without its value is named" 'option --gpus needs a value' "$DSA" plan --config "$v32" --gpus
expect_output "--stage with a typo suggests the stage" 'did you mean "sparse"' "$DSA" plan --config "$v32" --gpus 8 --stage sprase
expect_rc 2 "a layout the warm-up cannot run exits 2" "$DSA" plan --config "$v32" --dp 32 --cp 1 --ep 1
expect_output "... and names the flag and the key" "--dp 32 x --micro-batch 1 does not divide stages.0.global_batch = 16" \
  "$DSA" plan --config "$v32" --dp 32 --cp 1 --ep 1
expect_output "dp x cp must equal --gpus" "--dp 4 x --cp 4 = 16 devices, but --gpus 8" \
  "$DSA" plan --config "$v32" --gpus 8 --dp 4 --cp 4
expect_output "--ep must divide dp x cp" "--ep 3 does not divide dp x cp = 4" "$DSA" plan --config "$v32" --dp 4 --ep 3 --stage sparse
expect_output "--ep must divide the experts" "--ep 3 does not divide model.n_routed_experts = 256" \
  "$DSA" plan --config "$v32" --dp 3 --ep 3 --stage sparse
expect_rc 1 "a missing config file exits 1" "$DSA" plan --config "$work/none.json" --gpus 8

# ---- the paper's token counts (DSA-SPEC §1) -------------------------------------------------
"$DSA" plan --config "$v32" --gpus 2048 --gpu-mem 80GB --seq 131072 --zero 2 --top 3 > "$work/v32.txt" 2> "$last_out"
rc=$?
cp "$work/v32.txt" "$last_out" 2> /dev/null
if [ $rc -eq 0 ] && grep -q '1000 steps x 16 sequences x 131072 tokens = 2,097,152,000 tokens' "$work/v32.txt" &&
  grep -q '15000 steps x 480 sequences x 131072 tokens = 943,718,400,000 tokens' "$work/v32.txt"; then
  ok "V3.2 stages: 2,097,152,000 warm-up tokens and 943,718,400,000 sparse tokens"
else not_ok "V3.2 stages: 2,097,152,000 warm-up tokens and 943,718,400,000 sparse tokens"; fi
expect_output "the table prints every byte kind, FLOPs, comm and time" \
  "master \(fp32\)" grep -A30 'the best' "$work/v32.txt"
for what in 'gradients \(fp32\)' 'optimizer \(AdamW\)' 'activations ' 'kv latent' 'indexer q/k' 'top-k indices' 'scratch' \
  'FLOPs/step.*indexer.*KL.*top-k' 'comm/step.*EP all-to-all.*CP exchange' 'time/step.*GPU-hours'; do
  expect_output "the table has $what" "$what" cat "$work/v32.txt"
done

# ---- JSON: parses, only fitting layouts, ranked -----------------------------------------------
"$DSA" plan --config "$v32" --gpus 2048 --gpu-mem 80GB --seq 131072 --json --top 1000 > "$work/v32.json" 2> "$last_out"
if python3 - "$work/v32.json" > "$last_out" 2>&1 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
warm, sparse = d["stages"]
assert warm["tokens"] == 2097152000 and sparse["tokens"] == 943718400000, (warm["tokens"], sparse["tokens"])
assert 0 < warm["layouts_fit"] < warm["layouts_valid"], (warm["layouts_fit"], warm["layouts_valid"])
assert len(warm["layouts"]) == warm["layouts_fit"]
for l in warm["layouts"]:
    assert l["fits"] and l["bytes"]["total"] <= d["gpu_mem"], l
    assert l["gpus"] == 2048 == l["layout"]["dp"] * l["layout"]["cp"], l["layout"]
    kinds = ["weights", "master", "gradients", "optimizer", "activations", "kv_latent", "indexer", "indices", "scratch"]
    assert sum(l["bytes"][k] for k in kinds) == l["bytes"]["total"], l["bytes"]
times = [l["step_s"] for l in warm["layouts"]]
assert times == sorted(times), times
# ZeRO-1 cannot hold the sparse stage's fp32 gradients: no layout fits, the closest is named
assert sparse["layouts_fit"] == 0 and sparse["layouts"] == [] and not sparse["closest"]["fits"], sparse["layouts_fit"]
assert d["all_fit"] is False
print(f'{warm["layouts_fit"]} of {warm["layouts_valid"]} warm-up layouts fit, ranked')
PY
then ok "JSON parses; the search lists only fitting layouts, ranked by step time ($(tail -n 1 "$last_out"))"
else not_ok "JSON parses; the search lists only fitting layouts, ranked by step time"; fi

# ---- a given layout ------------------------------------------------------------------------------
"$DSA" plan --config "$v32" --stage sparse --dp 32 --cp 64 --ep 256 --zero 2 --json > "$work/fixed.json" 2> "$last_out"
if python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
(s,) = d["stages"]
p = s["plan"]
assert s["name"] == "sparse" and p["layout"] == {"dp": 32, "cp": 64, "ep": 256, "zero": 2, "recompute": "on",
    "micro_batch": 1, "seq_len": 131072, "precision": "bf16"}, p["layout"]
assert p["fits"] and p["micro_steps"] == 15 and p["gpus"] == 2048
assert p["flops"]["indexer"] > 0 and p["flops"]["kl"] > 0 and p["comm_bytes"]["ep_all_to_all"] > 0
' "$work/fixed.json" > "$last_out" 2>&1; then ok "a given layout is planned (recompute chosen by the sizing)"
else not_ok "a given layout is planned (recompute chosen by the sizing)"; fi

# ---- the single-layer check (issue 15) -------------------------------------------------------------
expect_output "--layer: the V3.2 attention layer at 128K fits 80GB in the sparse stage" \
  "layers that fit: 1 without recompute, [0-9]+ with recompute" "$DSA" plan --config "$v32" --layer --seq 131072 --stage sparse
"$DSA" plan --config "$v32" --layer --seq 131072 --gpu-mem 80GB --json > "$work/layer.json" 2> "$last_out"
if python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
att = [c for c in d["layer_check"] if c["block"] == "attention"]
assert [c["stage"] for c in att] == [0, 1] and all(c["fits"] and c["bytes"]["total"] <= 80e9 for c in att), att
assert all(c["layers_fit"] >= 1 for c in att)
assert all(1 <= c["layers_fit"] <= c["layers_fit_recompute"] <= c["layers_total"] == 61 for c in att), att
' "$work/layer.json" > "$last_out" 2>&1; then ok "--layer --json: one V3.2 attention layer at 128K fits 80 GB, warm-up and sparse"
else not_ok "--layer --json: one V3.2 attention layer at 128K fits 80 GB, warm-up and sparse"; fi
expect_output "--layer: the warm-up attention layer fits every layer of V3.2, capped at the model's 61" \
  "layers that fit: 61 \\(all\\) without recompute, 61 \\(all\\) with recompute \\(the model has 61\\)" \
  "$DSA" plan --config "$v32" --layer --seq 131072 --stage warmup
expect_output "--gpu-mem 40GB: the sparse-stage layer no longer fits" "layers that fit: 0 without recompute, 0 with" \
  "$DSA" plan --config "$v32" --layer --seq 131072 --gpu-mem 40GB --stage sparse

# ---- a small dense config without indexer -----------------------------------------------------------
expect_output "a dense model without indexer plans (no indexer bytes)" "indexer q/k +0.000 GiB" \
  "$DSA" plan --config configs/tiny-dense.json --gpus 1
