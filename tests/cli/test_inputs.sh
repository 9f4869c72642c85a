# test_inputs.sh: bad input of every kind the tools read gets an error that names the
# file (and the key, tensor or line, and what was expected): JSON lines with NUL bytes
# (escaped \u0000 and raw: refused naming file:line), an unreadable shard (its errno), a
# config.json without the size keys (a warning naming the defaulted keys, then a shape
# error naming the tensor file and the config.json), a tensor missing from an index's
# weight_map (the index file), an empty input (which one), num_hidden_layers 1e9 in a
# checkpoint's config.json (the file), a bad data cursor, trainer state and latest
# pointer, a truncated Megatron .idx; and the shards that crashed libhdf5
# (tests/data/shard-fuzz/) give a clean error naming each under `dsa inspect`.
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)

# names FILE NAME PATTERN CMD...: CMD fails (status 1 or 2), its output names FILE and matches PATTERN.
names() {
  local file=$1 name=$2 pattern=$3; shift 3
  "$@" > "$last_out" 2>&1
  local rc=$?
  if { [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ]; } && grep -qF -- "$file" "$last_out" && grep -qE -- "$pattern" "$last_out"; then
    ok "$name"
  else
    echo "    (exit $rc; wanted the file $file and /$pattern/)" >> "$last_out"; not_ok "$name"
  fi
}

# ---- JSON lines with NUL bytes: refused, naming file and line ---------------------------
printf '{"text": "fine"}\n{"text": "abc\\u0000defgh"}\n' > "$work/esc.jsonl"
names "$work/esc.jsonl:2" "an escaped NUL (\\u0000) in a JSON line is refused by file:line" 'NUL' \
  "$DSA" pack --format jsonl --out "$work/esc/part" --quiet "$work/esc.jsonl"
printf '{"text": "fine"}\n{"text": "abc\0defgh"}\n' > "$work/raw.jsonl"
names "$work/raw.jsonl:2" "a raw NUL byte in a JSON line is refused by file:line" 'NUL byte' \
  "$DSA" pack --format jsonl --out "$work/rawnul/part" --quiet "$work/raw.jsonl"
if [ -e "$work/esc/part-00000.h5" ] || [ -e "$work/rawnul/part-00000.h5" ]; then not_ok "a refused pack leaves no shard"; else ok "a refused pack leaves no shard"; fi
printf 'abc\0def' > "$work/nul.txt"
expect_rc 0 "a NUL byte in a text file is kept (bytes-v1 token 0)" \
  "$DSA" pack --format text --out "$work/txt/part" --quiet "$work/nul.txt"
expect_output "...all 7 bytes and the EOS" "^tokens +8$" "$DSA" inspect "$work/txt/part-00000.h5"
printf '{"text": "a\\\\u0000b"}\n' > "$work/bs.jsonl" # an escaped backslash, then the letters u0000
expect_output "an escaped backslash before u0000 is no NUL: kept" "tokens +9 " \
  "$DSA" pack --format jsonl --out "$work/bs/part" "$work/bs.jsonl"
printf '{"text": "abc\\u0001def"}\n' > "$work/ctl.jsonl"
expect_rc 0 "other escaped control characters are kept" "$DSA" pack --format jsonl --out "$work/ctl/part" --quiet "$work/ctl.jsonl"

# ---- an empty input is named --------------------------------------------------------------
: > "$work/empty.txt"
names "$work/empty.txt" "no documents: the empty input is named" "no documents" \
  "$DSA" pack --format text --out "$work/none/part" --quiet "$work/empty.txt"

# ---- shards -------------------------------------------------------------------------------
"$DSA" pack --format synthetic --tokens 8Ki --doc-tokens 512 --vocab-size 512 --out "$work/data/syn" --quiet > "$last_out" 2>&1 ||
  not_ok "pack a shard"
shard=$work/data/syn-00000.h5
if [ "$(id -u)" -eq 0 ] && command -v setpriv > /dev/null; then
  # root reads any file: ask as an unprivileged user, who may enter the directories
  # (and run dsa) but not read the shard
  cp "$shard" "$work/locked.h5"; chmod 600 "$work/locked.h5"; chmod 755 "$work"
  if setpriv --reuid=65534 --regid=65534 --clear-groups "$DSA" --help > /dev/null 2>&1; then
    names "$work/locked.h5" "an unreadable shard is reported with its errno" "Permission denied" \
      setpriv --reuid=65534 --regid=65534 --clear-groups "$DSA" inspect "$work/locked.h5"
  else
    skip "an unreadable shard is reported with its errno" "the unprivileged user cannot run $DSA"
  fi
elif [ "$(id -u)" -ne 0 ]; then
  cp "$shard" "$work/locked.h5"; chmod 000 "$work/locked.h5"
  names "$work/locked.h5" "an unreadable shard is reported with its errno" "Permission denied" "$DSA" inspect "$work/locked.h5"
else
  skip "an unreadable shard is reported with its errno" "running as root without setpriv"
fi
n=0 bad=0
for f in "$root"/tests/data/shard-fuzz/*; do
  case "$f" in *.md) continue ;; esac
  n=$((n + 1))
  "$DSA" inspect "$f" > "$last_out" 2>&1
  rc=$?
  if [ "$rc" -ne 1 ] || ! grep -qF "$f" "$last_out"; then bad=$((bad + 1)); cp "$last_out" "$work/fuzz-bad.txt"; fi
done
if [ "$n" -eq 34 ] && [ "$bad" -eq 0 ]; then ok "dsa inspect refuses the 34 shards that crashed libhdf5, naming each"
else cp "$work/fuzz-bad.txt" "$last_out" 2> /dev/null; not_ok "dsa inspect refuses the shards that crashed libhdf5 ($bad of $n bad)"; fi

# ---- stream --resume with a damaged cursor -----------------------------------------------
echo '{"epoch": "x"}' > "$work/cursor.json"
names "$work/cursor.json" "a malformed data cursor names its file and field" 'epoch' \
  "$DSA" stream --seq-len 64 --windows 1 --resume "$work/cursor.json" "$work/data"

# ---- Megatron .idx ------------------------------------------------------------------------
printf 'MMIDIDX\0\0' > "$work/mg.idx"; : > "$work/mg.bin"
names "$work/mg.idx" "a truncated Megatron .idx is named" "idx" \
  "$DSA" pack --format megatron --vocab-size 100 --eos-id 0 --out "$work/mg/part" --quiet "$work/mg"

# ---- checkpoints ----------------------------------------------------------------------------
train=(--config configs/tiny-dense.json --set "data.train=[\"$work/data\"]" --set data.seq_len=32
  --set model.num_hidden_layers=1 --set train.global_batch=1 --set train.micro_batch=1 --set train.steps=1
  --set train.checkpoint_every=0 --set optimizer.lr_warmup_steps=0 --set train.threads=1 --quiet)
"$DSA" train "${train[@]}" --set "train.out_dir=$work/run" > "$last_out" 2>&1 || not_ok "train one step"
ck=$work/run/step-00000001
cp -r "$ck" "$work/ck"
rm "$work/ck/manifest.json" # a plain Hugging Face directory: its config.json is read as is
python3 - "$work/ck/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); del c["hidden_size"]; json.dump(c, open(sys.argv[1], "w"))
PY
names "$work/ck/config.json" "a config.json without hidden_size: a warning names the defaulted key" \
  "hidden_size.*7168" "$DSA" eval "$work/ck" --data "$work/data" --seq-len 32 --windows 1
names "$work/ck/model.safetensors" "...and the shape error names the tensor file" "config.json" \
  "$DSA" eval "$work/ck" --data "$work/data" --seq-len 32 --windows 1
cp -r "$ck" "$work/ck2"
rm "$work/ck2/manifest.json"
python3 - "$work/ck2/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = 1000000000; json.dump(c, open(sys.argv[1], "w"))
PY
names "$work/ck2/config.json" "num_hidden_layers 1e9 in a checkpoint's config.json names the file" "num_hidden_layers" \
  "$DSA" export "$work/ck2" --out "$work/ck2-out"
cp -r "$work/run" "$work/run2"
echo '{"format_version": 1, "step": "many"}' > "$work/run2/step-00000001/trainer_state.json"
names "$work/run2/step-00000001" "a damaged trainer_state.json is named (manifest CRC)" "trainer_state.json" \
  "$DSA" train "${train[@]}" --set "train.out_dir=$work/run2" --resume
printf 'garbage\nmore\n' > "$work/run2/latest"
names "$work/run2/latest" "a garbled latest is named" "latest" "$DSA" eval "$work/run2" --data "$work/data" --seq-len 32

# a sharded checkpoint whose index lacks a tensor: the index file is named
python3 "$root/tools/gen_checkpoint.py" --out "$work/hf" --shard-size 100000 > "$last_out" 2>&1 || not_ok "generate a sharded checkpoint"
python3 - "$work/hf/model.safetensors.index.json" <<'PY'
import json, sys
p = sys.argv[1]; idx = json.load(open(p)); idx["weight_map"].pop("model.norm.weight"); json.dump(idx, open(p, "w"))
PY
names "$work/hf/model.safetensors.index.json" "a tensor missing from weight_map names the index file" "model.norm.weight" \
  "$DSA" convert "$work/hf" --out "$work/hf-out" --quiet
echo '{"weight_map": 3}' > "$work/hf/model.safetensors.index.json"
names "$work/hf/model.safetensors.index.json" "a malformed index names the file" "weight_map" \
  "$DSA" convert "$work/hf" --out "$work/hf-out2" --quiet
