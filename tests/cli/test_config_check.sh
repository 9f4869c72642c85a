# test_config_check.sh: `dsa config --check` sizes the run (pretrain/sizing.h) and refuses
# what cannot run. Every integer key of two configs (configs/tiny.json: MoE;
# configs/tiny-dsa.json: indexer and stages), found in `dsa config`'s own output, is set in
# turn to the extremes -1, 0, 1, 2^31 - 1, 2^31, 2^32, 2^40, 2^53 and 2^53 + 2: each run
# either passes with finite, non-negative figures under 2^47 bytes, or is refused
# (exit 1) by an error that names the key (or the stage key it sets) and the figure, and
# names the config file; never a crash. Plus the figures of tiny-dense.json and the
# refusal of the issue's example, model.hidden_size = 2^40.
. "$(dirname "$0")/lib.sh"

expect_output "--check prints the parameters and the memory of a step" \
  "parameters +2288512 in 51 tensors.*" "$DSA" config --config configs/tiny-dense.json --check
expect_output "--check prints the activations of the largest stage" "activations .*one micro-batch of stage 0: 4 x 256 tokens" \
  "$DSA" config --config configs/tiny-dense.json --check
expect_rc 1 "model.hidden_size = 2^40 is refused" "$DSA" config --config configs/tiny-dense.json --set model.hidden_size=1099511627776 --check
expect_output "the refusal names the key and the figure" "model.hidden_size.*|1099511627776.*model.hidden_size" \
  "$DSA" config --config configs/tiny-dense.json --set model.hidden_size=1099511627776 --check

for base in configs/tiny.json configs/tiny-dsa.json; do
  python3 - "$DSA" "$base" > "$work/extremes.txt" 2>&1 <<'PY'
import json, subprocess, sys
dsa, base = sys.argv[1], sys.argv[2]
cfg = json.loads(subprocess.run([dsa, "config", "--config", base], capture_output=True, text=True, check=True).stdout)
keys = []
def walk(node, path):
    if isinstance(node, dict):
        for k, v in node.items(): walk(v, path + [k])
    elif isinstance(node, list):
        if path == ["stages"]:
            for i, v in enumerate(node): walk(v, path + [str(i)])
        elif node and all(isinstance(x, int) and not isinstance(x, bool) for x in node):
            keys.append((".".join(path), "list"))
    elif isinstance(node, int) and not isinstance(node, bool) and path != ["format_version"]:
        keys.append((".".join(path), "int"))
walk(cfg, [])
# keys a stage inherits: an error about them names the stage key
inherit = {"data.seq_len": "seq_len", "train.global_batch": "global_batch", "train.steps": "steps",
           "optimizer.lr_warmup_steps": "lr_warmup_steps", "model.index_topk": "index_topk"}
values = [-1, 0, 1, 2**31 - 1, 2**31, 2**32, 2**40, 2**53, 2**53 + 2]
bad = 0
for key, kind in keys:
    problems = []
    for v in values:
        text = f"[{v}, {v}]" if kind == "list" else str(v)
        r = subprocess.run([dsa, "config", "--config", base, "--set", f"{key}={text}", "--check"],
                           capture_output=True, text=True)
        out = r.stdout + r.stderr
        if r.returncode == 0:
            figures = [l for l in r.stdout.splitlines() if "bytes)" in l]
            try:
                step = int(figures[-1].split("(")[-1].split()[0])
                good = 0 <= step <= 2**47 and "nan" not in out and "inf" not in out and "-" not in r.stdout.split("parameters")[1].split("\n")[0]
            except Exception:
                good = False
            if not good: problems.append(f"{v}: accepted with figures {r.stdout.strip()!r}")
        elif r.returncode == 1:
            leaf = key.split(".")[-1]
            named = key in out or (key in inherit and inherit[key] in out) or (key.startswith("stages.") and leaf in out)
            figure = str(v) in out or "overflow" in out or "bytes" in out or "expected an integer" in out
            in_file = base in out or "--set" in out
            if not (named and figure and in_file): problems.append(f"{v}: refused without naming key/figure/file: {out.strip()[:300]}")
        else:
            problems.append(f"{v}: exit {r.returncode}: {out.strip()[-300:]}")
    if problems:
        bad += 1
        print(f"not ok - {base}: {key} at its extremes")
        for p in problems: print("    | " + p)
    else:
        print(f"ok - {base}: {key} at its extremes (-1 .. 2^53 + 2) passes with sane figures or is refused by name")
sys.exit(1 if bad else 0)
PY
  cat "$work/extremes.txt"
done
