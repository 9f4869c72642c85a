# test_configs.sh: configs/deepseek-*.json against the published configs of the real models
# (tests/data/hf-configs/, sources in its README). Each published file must load unchanged
# (`dsa config --check`), and the model section `dsa config` resolves from it must equal,
# key by key, the one resolved from our config; a difference names the key and both values.
# Known, intended differences are listed per pair below, each with its reason.
. "$(dirname "$0")/lib.sh"

pub=tests/data/hf-configs

# resolved_model FILE OUT: the resolved model section of FILE as JSON in OUT.
resolved_model() {
  "$DSA" config --config "$1" > "$work/full.json" 2> "$last_out" || return 1
  python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["model"], open(sys.argv[2], "w"))' \
    "$work/full.json" "$2"
}

# same_model NAME OURS PUBLISHED [ALLOWED_KEY=OURS_VALUE/PUBLISHED_VALUE ...]
same_model() {
  local name=$1 ours=$2 published=$3; shift 3
  if ! resolved_model "$ours" "$work/a.json" || ! resolved_model "$published" "$work/b.json"; then
    not_ok "$name"; return
  fi
  if python3 - "$work/a.json" "$work/b.json" "$ours" "$published" "$@" > "$last_out" 2>&1 <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ours, pub = sys.argv[3:5]
allowed = dict(x.split("=", 1) for x in sys.argv[5:])

def flat(d, pre=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, pre + k + "."))
        else:
            out[pre + k] = v
    return out

fa, fb = flat(a), flat(b)
bad = []
for k in sorted(set(fa) | set(fb)):
    va, vb = fa.get(k, "(absent)"), fb.get(k, "(absent)")
    if va == vb:
        if k in allowed:
            bad.append(f"model.{k}: listed as a known difference but equal ({va!r})")
        continue
    if allowed.get(k) == f"{json.dumps(va)}/{json.dumps(vb)}":
        print(f"known difference model.{k}: {va!r} in {ours}, {vb!r} in {pub}")
        continue
    bad.append(f"model.{k}: {va!r} in {ours}, {vb!r} in {pub}")
print("\n".join(bad) if bad else f"{len(fa)} keys equal")
sys.exit(1 if bad else 0)
PY
  then ok "$name ($(tail -n 1 "$last_out"))"; else not_ok "$name"; fi
}

for f in "$pub"/*.json; do
  expect_output "published $(basename "$f") loads unchanged" "^ok: " "$DSA" config --config "$f" --check
done

# DeepSeek-V3 and V3.1(-Terminus) have the same architecture and config.json values except
# quantization_config.scale_fmt (absent in V3: activation scales amax/448; "ue8m0" in
# V3.1: power-of-two scales). configs/deepseek-v3.json follows V3.1, the base model of
# DeepSeek-V3.2-Exp; for V3 weights either value reads the same weight scales.
same_model "configs/deepseek-v3.json = DeepSeek-V3.1 reference config (config_v3.1.json)" \
  configs/deepseek-v3.json "$pub/deepseek-v3.1.reference-config_v3.1.json"
same_model "configs/deepseek-v3.json = DeepSeek-V3 config.json but for scale_fmt" \
  configs/deepseek-v3.json "$pub/deepseek-v3.config.json" 'quantization_config.scale_fmt="ue8m0"/null'
same_model "configs/deepseek-v3.json = DeepSeek-V3 reference config (config_671B.json) but for scale_fmt" \
  configs/deepseek-v3.json "$pub/deepseek-v3.reference-config_671B.json" 'quantization_config.scale_fmt="ue8m0"/null'
# The reference code's config has no model_type (read as our default deepseek_v3).
same_model "configs/deepseek-v3.2.json = DeepSeek-V3.2-Exp reference config (config_671B_v3.2.json)" \
  configs/deepseek-v3.2.json "$pub/deepseek-v3.2-exp.reference-config_671B_v3.2.json" \
  'model_type="deepseek_v32"/"deepseek_v3"'
same_model "configs/deepseek-v2-lite.json = DeepSeek-V2-Lite(-Chat) config.json" \
  configs/deepseek-v2-lite.json "$pub/deepseek-v2-lite-chat.transformers5.config.json"

# The comparison can fail: a changed value in our config is reported by key.
sed 's/"num_experts_per_tok": 6/"num_experts_per_tok": 7/' configs/deepseek-v2-lite.json > "$work/changed.json"
resolved_model "$work/changed.json" "$work/a.json" && resolved_model "$pub/deepseek-v2-lite-chat.transformers5.config.json" "$work/b.json"
if python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); sys.exit(0 if a["num_experts_per_tok"]==7 and b["num_experts_per_tok"]==6 else 1)' \
  "$work/a.json" "$work/b.json"; then ok "a changed value resolves differently (the comparison is live)"
else not_ok "a changed value resolves differently (the comparison is live)"; fi

# transformers >= 5 spellings and the deepseek_v2 defaults (core/config_hf.c prepare_hf_v5/_v2).
cat > "$work/v5.json" <<'JSON'
{"model_type": "deepseek_v2", "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "qk_head_dim": 192,
 "rope_parameters": {"rope_type": "default", "rope_theta": 50000.0}}
JSON
if resolved_model "$work/v5.json" "$work/r.json" && python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
want = {"rope_theta": 50000.0, "rope_scaling": None, "scoring_func": "softmax", "topk_method": "greedy",
        "num_nextn_predict_layers": 0}
bad = {k: m.get(k) for k in want if m.get(k) != want[k]}
print(bad or "ok"); sys.exit(1 if bad else 0)' "$work/r.json" > "$last_out" 2>&1
then ok "rope_parameters default -> rope_theta, no scaling; deepseek_v2 -> softmax, greedy, no MTP"
else not_ok "rope_parameters default -> rope_theta, no scaling; deepseek_v2 -> softmax, greedy, no MTP"; fi
sed 's/"qk_head_dim": 192/"qk_head_dim": 190/' "$work/v5.json" > "$work/bad.json"
expect_output "a qk_head_dim other than qk_nope_head_dim + qk_rope_head_dim is an error naming it and the file" \
  "bad.json: model.qk_head_dim must be qk_nope_head_dim \+ qk_rope_head_dim = 192" \
  "$DSA" config --config "$work/bad.json" --check
