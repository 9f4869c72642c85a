# test_cli.sh: the `dsa` command end to end: help and usage errors, pack -> inspect ->
# stream, stock HDF5 tools and h5py reading our shards, determinism, resume, rank split,
# and error messages that name the file.
. "$(dirname "$0")/lib.sh"

# ---- help and usage -----------------------------------------------------------------
expect_rc 0 "dsa --help exits 0" "$DSA" --help
expect_output "dsa --help lists the commands" "pack.*" "$DSA" --help
expect_rc 2 "dsa with no command exits 2" "$DSA"
expect_output "unknown command suggests the closest" 'did you mean "pack"' "$DSA" pakc
for sub in pack inspect stream config plan bench info; do
  expect_output "dsa $sub --help prints usage" "usage: dsa $sub" "$DSA" $sub --help
done
expect_output "dsa info reports the CUDA backend" "cuda backend: (compiled|not compiled)" "$DSA" info

# ---- pack raw uint32 tokens, read back three ways -------------------------------------
python3 - "$work/stream.u32" <<'PY'
import struct, sys
toks = []
for d in range(500):
    toks += [1 + (d * 31 + j * 7) % 999 for j in range(1 + d % 90)] + [0]
open(sys.argv[1], "wb").write(struct.pack("<%dI" % len(toks), *toks))
PY
expect_rc 0 "pack u32" "$DSA" pack --format u32 --vocab-size 1000 --eos-id 0 --chunk-tokens 1000 --out "$work/raw/part" --quiet "$work/stream.u32"
shard=$work/raw/part-00000.h5
expect_output "inspect shows tokens and documents" "500" "$DSA" inspect "$shard"
expect_rc 0 "inspect --verify agrees with the HDF5 filter path" "$DSA" inspect --verify "$shard"
expect_output "inspect --json is JSON" '^[[:space:]]*[\[{]' "$DSA" inspect --json "$shard"

if command -v h5dump > /dev/null; then
  expect_output "h5dump shows the zstd filter id 32015" "FILTER_ID 32015" h5dump -H -p -d /tokens "$shard"
  plugin=$(cd "$BUILD/hdf5-plugin" 2> /dev/null && pwd)
  HDF5_PLUGIN_PATH=$plugin h5dump -d /tokens -s 0 -c 5 "$shard" > "$last_out" 2>&1
  first=$(python3 -c 'import struct,sys; print(", ".join(str(t) for t in struct.unpack("<5I", open(sys.argv[1],"rb").read(20))))' "$work/stream.u32")
  if grep -q "(0): $first" "$last_out"; then ok "h5dump decodes tokens with the dsa plugin"; else not_ok "h5dump decodes tokens with the dsa plugin"; fi
else
  skip "h5dump checks" "h5dump not installed (make deps installs hdf5-tools)"
fi

if [ -n "${PYENV:-}" ] && [ -x "$PYENV/bin/python" ]; then
  expect_rc 0 "h5py + hdf5plugin read the same tokens" "$PYENV/bin/python" tools/check_shard.py "$shard" "$work/stream.u32"
else
  skip "h5py cross-check" "no Python venv given (make test creates .venv with h5py and hdf5plugin)"
fi

# ---- pack u32 from standard input (the pipe tools/tokenize_pack.py writes into) ----------
expect_rc 0 "pack u32 from standard input (-)" bash -c 'cat "$1" | "$2" pack --format u32 --vocab-size 1000 --eos-id 0 \
  --chunk-tokens 1000 --out "$3" --quiet -' _ "$work/stream.u32" "$DSA" "$work/piped/part"
"$DSA" stream --seq-len 100 --seed 3 "$work/raw" 2>&1 | grep '^epoch' > "$work/from-file.txt"
"$DSA" stream --seq-len 100 --seed 3 "$work/piped" 2>&1 | grep '^epoch' > "$work/from-pipe.txt"
if [ -s "$work/from-file.txt" ] && cmp -s "$work/from-file.txt" "$work/from-pipe.txt"; then
  ok "... the same windows as the file packed directly"; else not_ok "... the same windows as the file packed directly"; fi
expect_output "a stream cut inside a token is refused" "standard input: ends with 2 byte\(s\) after token 3, less than one u32 token" \
  bash -c 'head -c 14 "$1" | "$2" pack --format u32 --vocab-size 1000 --eos-id 0 --out "$3" -' _ "$work/stream.u32" "$DSA" "$work/cut/part"
if ls "$work/cut" 2> /dev/null | grep -q .; then not_ok "... and leaves no shard"; else ok "... and leaves no shard"; fi
expect_output "- is only for raw token formats" 'input "-" \(standard input\) is only for --format u16 or u32' \
  "$DSA" pack --format jsonl --out "$work/x/part" -

# ---- stream: determinism, resume, rank split ----------------------------------------
"$DSA" stream --seq-len 100 --windows 40 --seed 7 "$work/raw" > "$work/a.txt" 2>&1
"$DSA" stream --seq-len 100 --windows 40 --seed 7 --prefetch 0 "$work/raw" > "$work/b.txt" 2>&1
if diff <(grep -v '^#' "$work/a.txt") <(grep -v '^#' "$work/b.txt") > "$last_out" && [ "$(grep -c '^epoch' "$work/a.txt")" -eq 40 ]; then
  ok "stream is deterministic and prefetch-independent"; else not_ok "stream is deterministic and prefetch-independent"; fi
"$DSA" stream --seq-len 100 --windows 15 --seed 7 --save-cursor "$work/cursor.json" "$work/raw" > "$work/c1.txt" 2>&1
"$DSA" stream --seq-len 100 --windows 25 --seed 7 --resume "$work/cursor.json" "$work/raw" > "$work/c2.txt" 2>&1
if diff <(grep '^epoch' "$work/a.txt") <(cat "$work/c1.txt" "$work/c2.txt" | grep '^epoch') > "$last_out"; then
  ok "stream resumed from a saved cursor continues exactly"; else not_ok "stream resumed from a saved cursor continues exactly"; fi
expect_output "resume with other data options is refused" "seq_len = 100 but the loader has seq_len = 90" \
  "$DSA" stream --seq-len 90 --windows 1 --seed 7 --resume "$work/cursor.json" "$work/raw"
epoch=$(grep -c '^epoch' <("$DSA" stream --seq-len 100 "$work/raw"))
"$DSA" stream --seq-len 100 --rank 0 --world 2 "$work/raw" | grep '^epoch' | awk '{print $6}' > "$work/r0"
"$DSA" stream --seq-len 100 --rank 1 --world 2 "$work/raw" | grep '^epoch' | awk '{print $6}' > "$work/r1"
both=$(cat "$work/r0" "$work/r1" | sort -n | uniq | wc -l)
if [ "$both" -eq $(( epoch - epoch % 2 )) ] && [ -z "$(comm -12 <(sort "$work/r0") <(sort "$work/r1"))" ]; then
  ok "two ranks are disjoint and cover the epoch"; else echo "epoch $epoch union $both" > "$last_out"; not_ok "two ranks are disjoint and cover the epoch"; fi

# ---- errors name the file -----------------------------------------------------------
expect_output "inspect of a missing file names it" "$work/missing.h5" "$DSA" inspect "$work/missing.h5"
expect_rc 1 "inspect of a missing file exits 1" "$DSA" inspect "$work/missing.h5"
echo "not a shard" > "$work/fake.h5"
expect_output "a non-HDF5 file is named and refused" "fake.h5: not an HDF5 file" "$DSA" inspect "$work/fake.h5"
expect_output "a window longer than the data is refused" "longer than the data" "$DSA" stream --seq-len 1000000 "$work/raw"
expect_rc 2 "pack with an unknown format is a usage error" "$DSA" pack --format xml --out "$work/x" "$work/stream.u32"
u32_file "$work/bad.u32" 1 2 5000 0
expect_output "pack names an out-of-range token" "5000" "$DSA" pack --format u32 --vocab-size 1000 --eos-id 0 --out "$work/bad/part" --quiet "$work/bad.u32"
expect_output "pack warns when a shard would have too many chunks to open quickly" "chunks per shard" \
  "$DSA" pack --format synthetic --tokens 64Ki --doc-tokens 16Ki --chunk-tokens 4 --shard-tokens 64Ki --out "$work/many/part" --quiet

# ---- dsa bench topk: a small run checks its selections against a full sort, then times --
expect_output "bench topk runs, verified, on a small shape" '"bench":"topk".*"seq_len":300.*"topk":64' \
  "$DSA" bench topk --config configs/tiny-dsa.json --seq-len 300 --topk 64 --reps 1 --json
expect_rc 2 "bench topk without --config is a usage error" "$DSA" bench topk --seq-len 300
expect_output "bench topk refuses a bad --topk list by name" "--topk" "$DSA" bench topk --config configs/tiny-dsa.json --topk 0
