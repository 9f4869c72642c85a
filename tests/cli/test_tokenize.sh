# test_tokenize.sh: tools/tokenize_pack.py, raw text to shards with a Hugging Face
# tokenizer.json: text files, JSONL (--field) and Parquet through the tool and the pipe into
# `dsa pack --format u32 -`, read back with h5py and compared with tokenizers' own encode()
# + EOS (tests/cli/tokenize_check.py; the tokenizers are trained here, no hub); the same ids
# for 1 and 2 workers and for --ids-out; the recorded tokenizer name and vocab_size in `dsa
# inspect`; EOS from --eos, tokenizer_config.json or the special tokens; `dsa train` and
# `dsa eval` refusing a model whose vocab_size is below the shards'; bad inputs named by
# file and line, and a failed, interrupted or killed tool leaving no finished set.
. "$(dirname "$0")/lib.sh"

py=${PYENV:+$PYENV/bin/python}
if [ -z "$py" ] || ! "$py" -c 'import tokenizers, h5py, hdf5plugin, pyarrow' > /dev/null 2>&1; then
  skip "tokenize_pack.py" "no Python venv with tokenizers, h5py, hdf5plugin and pyarrow (make pyenv installs them)"
  exit 0
fi
tool() { "$py" tools/tokenize_pack.py --dsa "$DSA" --quiet "$@"; }
check() { "$py" tests/cli/tokenize_check.py "$@"; }
# expect_fail NAME PATTERN PREFIX CMD...: exit status 1, PATTERN in the output, no shard or
# manifest of PREFIX left behind
expect_fail() {
  local name=$1 pattern=$2 prefix=$3; shift 3
  "$@" > "$last_out" 2>&1
  local rc=$?
  if [ $rc -ne 1 ]; then echo "    (exit $rc, expected 1)" >> "$last_out"; not_ok "$name"
  elif ! grep -qE -- "$pattern" "$last_out"; then echo "    (pattern not found: $pattern)" >> "$last_out"; not_ok "$name"
  elif ls "$prefix"* "$(dirname "$prefix")"/.*tmp* > /dev/null 2>&1; then
    ls -la "$(dirname "$prefix")" >> "$last_out"; not_ok "$name (files left behind)"
  else ok "$name"; fi
}

tk=$work/tok c=$work/corpus
check make-tokenizers "$tk" > "$last_out" 2>&1 && check make-corpus "$c" >> "$last_out" 2>&1
if [ $? -eq 0 ]; then ok "tokenizers and corpus made in the test"; else not_ok "tokenizers and corpus made in the test"; exit 0; fi
plain=$tk/plain/tokenizer.json bos=$tk/bos/tokenizer.json

# ---- the three input formats, ids exactly as tokenizers encodes them ------------------------
expect_rc 0 "text files (one document each) to shards" tool --tokenizer "$plain" --out "$work/s/text/t" "$c/text"
expect_rc 0 "text shards hold tokenizers' ids + EOS" check compare "$plain" "$work/s/text/t" text - 1 "$c/text"
expect_rc 0 "JSONL --field content to shards" tool --tokenizer "$plain" --field content --out "$work/s/jsonl/j" "$c/docs.jsonl"
expect_rc 0 "JSONL shards hold tokenizers' ids + EOS" check compare "$plain" "$work/s/jsonl/j" jsonl content 1 "$c/docs.jsonl"
expect_rc 0 "Parquet column content to shards" tool --tokenizer "$plain" --field content --out "$work/s/pq/p" "$c/docs.parquet"
expect_rc 0 "Parquet shards hold tokenizers' ids + EOS" check compare "$plain" "$work/s/pq/p" parquet content 1 "$c/docs.parquet"
expect_output "the literal EOS inside a document is reported" "1 document\(s\) hold the EOS id inside" \
  tool --tokenizer "$plain" --field content --force --out "$work/s/jsonl/j" "$c/docs.jsonl"

# the BOS post-processor, EOS from tokenizer_config.json ("</s>"), and both turned off
expect_rc 0 "a BOS post-processor and tokenizer_config.json's eos_token" \
  tool --tokenizer "$bos" --field content --out "$work/s/bos/b" "$c/docs.jsonl"
expect_rc 0 "... the shards hold BOS + ids + </s>" check compare "$bos" "$work/s/bos/b" jsonl content 1 "$c/docs.jsonl"
expect_output "... eos_id is </s>'s id, 1" '"eos_id":[[:space:]]*1,' "$DSA" inspect --json "$work/s/bos/b-00000.h5"
expect_rc 0 "--no-add-special-tokens --eos '<|endoftext|>'" tool --tokenizer "$bos" --field content \
  --no-add-special-tokens --eos '<|endoftext|>' --out "$work/s/nobos/b" "$c/docs.jsonl"
expect_rc 0 "... the shards hold ids + <|endoftext|>, no BOS" \
  check compare "$bos" "$work/s/nobos/b" jsonl content 0 "$c/docs.jsonl"

# ---- workers, batches, shard splits and --ids-out give the same stream -----------------------------
expect_rc 0 "2 workers, 64-character batches, 100-token shards" tool --tokenizer "$plain" --field content \
  --workers 2 --batch-chars 64 --shard-tokens 100 --out "$work/s/w2/j" "$c/docs.jsonl"
expect_rc 0 "... the same ids (the check spans every shard)" check compare "$plain" "$work/s/w2/j" jsonl content 1 "$c/docs.jsonl"
shards=$(ls "$work/s/w2/"j-*.h5 | wc -l)
if [ "$shards" -gt 2 ]; then ok "... in $shards shards"; else echo "$shards shards" > "$last_out"; not_ok "... in several shards"; fi
expect_rc 0 "--ids-out writes the uint32 stream" tool --tokenizer "$plain" --field content --workers 2 \
  --batch-chars 100 --ids-out "$work/ids.u32" "$c/docs.jsonl"
expect_rc 0 "... the shards' stream" check same-stream "$work/s/jsonl/j" "$work/ids.u32"

# ---- what the shards record ---------------------------------------------------------------------
sha=$("$py" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:12])' "$plain")
expect_output "dsa inspect shows the tokenizer name (directory@sha256)" "^tokenizer +plain@$sha\$" \
  "$DSA" inspect "$work/s/jsonl/j-00000.h5"
expect_output "dsa inspect shows the vocab_size (largest id + 1)" "^vocab_size +400\$" "$DSA" inspect "$work/s/jsonl/j-00000.h5"
expect_output "the manifest records both" "^vocab_size 400 eos_id 0 tokenizer plain@$sha\$" check manifest "$work/s/jsonl/j"
expect_rc 0 "--name and --vocab-size are recorded" tool --tokenizer "$plain" --name deepseek-v3-test --vocab-size 700 \
  --field content --out "$work/s/v700/j" "$c/docs.jsonl"
expect_output "... tokenizer deepseek-v3-test, vocab_size 700" "^vocab_size 700 eos_id 0 tokenizer deepseek-v3-test\$" \
  check manifest "$work/s/v700/j"

# ---- dsa train and dsa eval refuse a model whose vocabulary is smaller -----------------------------
train() { "$DSA" train --config configs/tiny-dense.json --set data.seq_len=32 --set train.steps=1 \
  --set optimizer.lr_warmup_steps=0 --set train.micro_batch=1 --set train.global_batch=1 --quiet "$@"; }
expect_output "dsa train refuses vocab_size 399 for shards of 400, naming the shard and both" \
  "j-00000.h5: shard vocab_size 400 \(tokenizer plain@$sha\) exceeds the model's vocab_size 399.*vocab_size >= 400" \
  train --set "data.train=$work/s/jsonl" --set train.out_dir="$work/run399" --set model.vocab_size=399
if [ ! -e "$work/run399" ]; then ok "... before writing anything"; else not_ok "... before writing anything"; fi
cp "$last_out" "$work/saved"
expect_output "... and names the override" "model.vocab_size = 399 \(from --set model.vocab_size=399\)" cat "$work/saved"
expect_output "the demo model (vocab_size 512) refuses shards recorded as 700" \
  "j-00000.h5: shard vocab_size 700 \(tokenizer deepseek-v3-test\) exceeds the model's vocab_size 512" \
  train --set "data.train=$work/s/v700" --set train.out_dir="$work/run512"
cp "$last_out" "$work/saved"
expect_output "... and names the config file" "model.vocab_size = 512 \(from configs/tiny-dense.json\)" cat "$work/saved"
expect_rc 0 "dsa train accepts vocab_size 400" \
  train --set "data.train=$work/s/jsonl" --set train.out_dir="$work/run400" --set model.vocab_size=400
expect_output "dsa eval refuses shards of 700 for that model" \
  "j-00000.h5: shard vocab_size 700 \(tokenizer deepseek-v3-test\) exceeds the model's vocab_size 400" \
  "$DSA" eval "$work/run400" --data "$work/s/v700" --seq-len 32 --windows 1
expect_rc 0 "dsa eval reads the 400-token shards" "$DSA" eval "$work/run400" --data "$work/s/jsonl" --seq-len 32 --windows 1

# ---- bad inputs: named by file and line; nothing packed -----------------------------------------
bad=$work/bad o=$work/s/bad/x
mkdir -p "$bad"
printf '{"text": "fine"}\n{"text": "also fine"}\n{"text": "cut\n' > "$bad/json.jsonl"
expect_fail "broken JSON names file:line" "json.jsonl:3: not valid JSON" "$o" tool --tokenizer "$plain" --out "$o" "$bad/json.jsonl"
printf '{"text": "a"}\n{"body": "b", "id": 2}\n' > "$bad/field.jsonl"
expect_fail "a missing field names file:line, the keys and --field" 'field.jsonl:2: no field "text" \(keys: body, id\); choose one with --field' \
  "$o" tool --tokenizer "$plain" --out "$o" "$bad/field.jsonl"
printf '{"text": 17}\n' > "$bad/type.jsonl"
expect_fail "a non-string field names file:line" 'type.jsonl:1: field "text" is 17, expected a string' "$o" \
  tool --tokenizer "$plain" --out "$o" "$bad/type.jsonl"
printf 'good line\nbad \xff byte\n' > "$bad/latin.txt"
expect_fail "invalid UTF-8 in a text file names file:line and byte" 'latin.txt:2: invalid UTF-8 at byte 14 \(0xff\)' "$o" \
  tool --tokenizer "$plain" --out "$o" "$bad/latin.txt"
printf '{"text": "lone \\ud800 surrogate"}\n' > "$bad/surrogate.jsonl"
expect_fail "text the tokenizer refuses names file:line" 'surrogate.jsonl:1: the tokenizer refused the text: character 5 is an unpaired surrogate \(U\+D800\)' "$o" \
  tool --tokenizer "$plain" --out "$o" "$bad/surrogate.jsonl"
"$py" -c 'import pyarrow as pa, pyarrow.parquet as pq, sys; pq.write_table(pa.table({"text": ["a", None], "n": [1, 2]}), sys.argv[1])' "$bad/null.parquet"
expect_fail "a null Parquet value names file and row" 'null.parquet: row 2: column "text" is null' "$o" \
  tool --tokenizer "$plain" --out "$o" "$bad/null.parquet"
expect_fail "a missing Parquet column lists the columns" 'null.parquet: no column "body" \(columns: text, n\)' "$o" \
  tool --tokenizer "$plain" --field body --out "$o" "$bad/null.parquet"
expect_fail "a Parquet column of numbers is refused" 'column "n" holds int64, expected strings' "$o" \
  tool --tokenizer "$plain" --field n --out "$o" "$bad/null.parquet"
printf 'PAR1 not really' > "$bad/fake.parquet"
expect_fail "a damaged Parquet file is named" 'fake.parquet: not a readable Parquet file' "$o" tool --tokenizer "$plain" --out "$o" "$bad/fake.parquet"
: > "$bad/empty.jsonl"
expect_fail "no documents at all" 'no documents found in .*empty.jsonl' "$o" tool --tokenizer "$plain" --out "$o" "$bad/empty.jsonl"
expect_fail "a tokenizer without an EOS lists its special tokens" \
  "noeos.json: which token ends a document\? none of its special tokens is one; its special tokens: '<pad>' \(0\), '<unk>' \(1\); name it with --eos" \
  "$o" tool --tokenizer "$tk/noeos.json" --out "$o" "$c/docs.jsonl"
expect_fail "an unknown --eos token is named" "--eos '</eos>': no such token" "$o" tool --tokenizer "$plain" --eos '</eos>' --out "$o" "$c/text"
echo '{"model": "nonsense"' > "$bad/tokenizer.json"
expect_fail "a broken tokenizer.json is named" "bad/tokenizer.json: not a tokenizer.json that tokenizers" "$o" \
  tool --tokenizer "$bad/tokenizer.json" --out "$o" "$c/text"
expect_fail "a missing input is named" "input $bad/nope.jsonl: no such file" "$o" tool --tokenizer "$plain" --out "$o" "$bad/nope.jsonl"
expect_rc 2 "--vocab-size below the tokenizer's is refused" tool --tokenizer "$plain" --vocab-size 10 --out "$o" "$c/text"
cp "$last_out" "$work/saved"
expect_output "... naming both" "--vocab-size 10 is below .*largest id \+ 1 = 400" cat "$work/saved"
expect_rc 2 "--workers 0 is a usage error" tool --tokenizer "$plain" --workers 0 --out "$o" "$c/text"
expect_output "an existing set: pack's own refusal is shown" "output shards already exist.*--force" \
  tool --tokenizer "$plain" --out "$work/s/text/t" "$c/text"

# a bad line after pack has written whole shards: the stream is aborted, pack removes them
{ for i in $(seq 1 300); do printf '{"text": "document %d of a longer file"}\n' "$i"; done; echo '{"text": 1}'; } > "$bad/late.jsonl"
expect_fail "an error after several shards leaves no shard and no manifest" 'late.jsonl:301: field "text" is 1' "$o" \
  tool --tokenizer "$plain" --shard-tokens 64 --batch-chars 50 --workers 2 --out "$o" "$bad/late.jsonl"

# ---- stopped from outside: SIGTERM aborts cleanly; SIGKILL takes pack down with it ----------------
# The input is a pipe the test holds open, so the tool is mid-run for as long as it must be.
stop_test() { # SIGNAL NAME
  local sig=$1 name=$2 fifo=$work/fifo-$1 prefix=$work/s/stop-$1/x pack_pid="" i
  mkfifo "$fifo"
  "$py" tools/tokenize_pack.py --dsa "$DSA" --quiet --tokenizer "$plain" --batch-chars 1 --workers 1 --out "$prefix" \
    "$fifo" > "$work/stop-$sig.log" 2>&1 &
  local tool_pid=$!
  exec 7> "$fifo"
  for i in $(seq 1 20); do printf '{"text": "line %d before the stop"}\n' "$i" >&7; done
  for i in $(seq 1 200); do # wait (bounded) until pack runs as the tool's child
    pack_pid=$(pgrep -P "$tool_pid" -f "pack --format u32" | head -1)
    [ -n "$pack_pid" ] && break
    sleep 0.05
  done
  kill -"$sig" "$tool_pid"
  wait "$tool_pid" 2> /dev/null
  local rc=$?
  exec 7>&-
  for i in $(seq 1 200); do [ -n "$pack_pid" ] && kill -0 "$pack_pid" 2> /dev/null || break; sleep 0.05; done
  { echo "tool exit $rc, pack pid ${pack_pid:-none}"; cat "$work/stop-$sig.log"; ls -a "$(dirname "$prefix")" 2> /dev/null; } > "$last_out"
  if [ -z "$pack_pid" ] || kill -0 "$pack_pid" 2> /dev/null; then not_ok "$name: pack ended with the tool"
  elif [ -e "$prefix.manifest.json" ]; then not_ok "$name: no finished set"
  else ok "$name: pack ended with the tool, no finished set"; fi
  rm -f "$fifo"
}
stop_test TERM "SIGTERM"
if ls "$work/s/stop-TERM/" 2> /dev/null | grep -q .; then not_ok "SIGTERM: pack removed its shards"
else ok "SIGTERM: pack removed its shards"; fi
expect_output "SIGTERM: the tool says nothing was packed" "terminated; nothing was packed" cat "$work/stop-TERM.log"
stop_test KILL "SIGKILL of the tool"
