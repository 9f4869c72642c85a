# test_readme.sh: README.md's blocks run as written, in order, in a fresh copy of the
# repository (its tracked and not-ignored files), as one shell session: exported variables
# and the directory carry from block to block, `dsa` comes from the README's own
# `make install` into a scratch HOME. ```sh blocks run with bash (-e, pipefail), ```python
# blocks with the .venv python; ```text blocks are examples and are not run.
#
# The first block is the set-up (`make demo`, `make test`): it is checked to be exactly
# those two commands and is not run (make test is this suite; what the later blocks need
# from make demo, the build and .venv, is linked in from BUILD and PYENV).
#
# Sizes: by default the training runs are cut to a few steps by the substitutions in
# SHRINK below; each must match README.md, so an edit of those lines fails here until the
# list is updated. README_FULL=1 runs the blocks exactly as written (a few minutes more);
# README_LOGS=DIR keeps every block and its output.
#
# Also checked: no block touches runs/demo (the demo's outputs), nothing is written outside
# runs/ and HOME, and the README's h5dump line decodes tokens, also from another directory
# (without the plugin h5dump prints an empty DATA block and exits 0).
. "$(dirname "$0")/lib.sh"

root=$(pwd)
build=${BUILD:-build}
if [ -n "${ASAN_OPTIONS:-}" ]; then
  skip "README blocks" "under the sanitizers (make asan): the blocks run in make test"
  exit 0
fi
py=${PYENV:+$(cd "$root" && cd "$PYENV" 2> /dev/null && pwd)/bin/python}
if [ -z "$py" ] || ! "$py" -c 'import h5py, hdf5plugin, matplotlib' > /dev/null 2>&1; then
  skip "README blocks" "no Python venv with h5py, hdf5plugin and matplotlib (make pyenv installs it)"
  exit 0
fi
case $build in */*) skip "README blocks" "BUILD=$build is a path; the copy links a build folder by name"; exit 0 ;; esac
if ! command -v git > /dev/null || ! git -C "$root" rev-parse --git-dir > /dev/null 2>&1; then
  skip "README blocks" "not a git checkout: the fresh copy is made from git's file list"
  exit 0
fi

# ---- a fresh copy: what a clone has, plus the build and the venv make demo leaves ----------
clone=$work/clone home=$work/home
mkdir -p "$clone" "$home"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --no-recursion) |
  tar -C "$clone" -xf -
ln -s "$root/$build" "$clone/$build"
ln -s "$(dirname "$(dirname "$py")")" "$clone/.venv"

# ---- the blocks -------------------------------------------------------------------------------
blocks=$work/blocks
mkdir -p "$blocks"
SHRINK=(
  '--set train.out_dir=runs/tiny-dense > runs/tiny-dense.json'
  '--set train.out_dir=runs/tiny-dense --set train.steps=6 --set train.checkpoint_every=2 --set optimizer.lr_warmup_steps=2 > runs/tiny-dense.json'
  '--stop-at 150'
  '--stop-at 3'
  '--set train.out_dir=runs/tiny-dsa > runs/tiny-dsa.json'
  '--set train.out_dir=runs/tiny-dsa --set stages.0.steps=3 --set stages.1.steps=3 --set stages.1.lr_warmup_steps=1 --set train.checkpoint_every=2 > runs/tiny-dsa.json'
  '--windows 32'
  '--windows 4'
)
[ "${README_FULL:-0}" = 1 ] && SHRINK=()
python3 - "$root/README.md" "$blocks" "${SHRINK[@]}" << 'EOF' > "$blocks/list" 2> "$blocks/extract.err"
import re, sys
readme, out, subs = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open(readme, encoding="utf-8").read()
for old, new in zip(subs[::2], subs[1::2]):
    if old not in text:
        sys.exit(f"README.md no longer contains {old!r}: update SHRINK in tests/cli/test_readme.sh")
    text = text.replace(old, new)
n = 0
for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M):
    lang, body = m.group(1), m.group(2)
    line = text[:m.start()].count("\n") + 1
    if lang not in ("sh", "python", "text"):
        sys.exit(f"README.md:{line}: a ```{lang or '(no language)'} block: mark it sh, python or text")
    if lang == "text":
        continue
    n += 1
    ext = "sh" if lang == "sh" else "py"
    open(f"{out}/{n:02d}.{ext}", "w").write(body)
    first = next((l for l in body.splitlines() if l.strip() and not l.startswith("#")), "").strip()
    print(f"{n:02d}.{ext}\t{line}\t{first[:70]}")
EOF
if [ -s "$blocks/extract.err" ]; then cp "$blocks/extract.err" "$last_out"; not_ok "README blocks extracted"; exit 0; fi
ok "README blocks extracted ($(wc -l < "$blocks/list") shell and Python blocks)"

setup=$(grep -v '^\s*$' "$blocks/01.sh" | sed 's/ *#.*//')
if [ "$setup" = "$(printf 'make demo\nmake test')" ]; then ok "the first block is the set-up: make demo, make test"
else printf '%s\n' "$setup" > "$last_out"; not_ok "the first block is the set-up: make demo, make test"; fi
if grep -l 'runs/demo' "$blocks"/0[2-9].* "$blocks"/[1-9]?.* 2> /dev/null > "$last_out"; then
  not_ok "no block after the set-up touches the demo's runs/demo"
else ok "no block after the set-up touches the demo's runs/demo"; fi

(cd "$clone" && find . -path ./runs -prune -o -print | sort) > "$work/before"
# make install in the copy must see the build as configured (CUDA=0 or 1), or it would
# rebuild the linked build folder another way
cuda=$(sed -n 's/.* CUDA=\([01]\).*/\1/p' "$root/$build.config.txt" 2> /dev/null)
env -i HOME="$home" PATH="$PATH" LANG=C.UTF-8 TMPDIR="${TMPDIR:-/tmp}" BUILD="$build" ${cuda:+CUDA=$cuda} \
  bash -c 'export -p' > "$work/env.sh"
echo "$clone" > "$work/cwd"
t_all=$(date +%s)
while IFS=$'\t' read -r file line first; do
  [ "$file" = 01.sh ] && continue
  name="README block at line $line: $first"
  t0=$(date +%s)
  if [ "${file##*.}" = sh ]; then
    timeout 900 bash -c 'set -eo pipefail; . "$1"; cd "$(cat "$2")"; . "$3"; export -p > "$1"; pwd > "$2"' \
      _ "$work/env.sh" "$work/cwd" "$blocks/$file" > "$blocks/$file.log" 2>&1
  else
    timeout 900 bash -c '. "$1"; cd "$(cat "$2")" && .venv/bin/python "$3"' _ "$work/env.sh" "$work/cwd" \
      "$blocks/$file" > "$blocks/$file.log" 2>&1
  fi
  rc=$?
  if [ $rc -eq 0 ]; then ok "$name ($(($(date +%s) - t0)) s)"
  else { tail -n 25 "$blocks/$file.log"; echo "(exit $rc)"; } > "$last_out"; not_ok "$name"; fi
done < "$blocks/list"
echo "# all blocks: $(($(date +%s) - t_all)) s"

# ---- what the blocks did ------------------------------------------------------------------------
(cd "$clone" && find . -path ./runs -prune -o -print | sort) > "$work/after"
comm -13 "$work/before" "$work/after" | grep -vx "./$build.config.txt" > "$last_out"
if [ -s "$last_out" ]; then not_ok "the blocks write nothing outside runs/ and HOME"
else ok "the blocks write nothing outside runs/ and HOME"; fi
if [ -x "$home/.local/bin/dsa" ] && grep -q "$home/.local/bin" "$work/env.sh"; then
  ok "the blocks use the dsa that make install put on the PATH"
else not_ok "the blocks use the dsa that make install put on the PATH"; fi
dump=$(grep -l 'h5dump' "$blocks"/*.sh | grep -v '/01.sh' | head -1)
expect_output "the README's h5dump prints the tokens" '^ *\(0\): [0-9]+, [0-9]+' cat "$dump.log"
shard=$clone/runs/shards/synth/tasks-00000.h5
expect_output "h5dump with the installed plugin decodes from any directory" '^ *\(0\): [0-9]+, [0-9]+' \
  bash -c 'cd / && HDF5_PLUGIN_PATH="$1/.local/lib/hdf5/plugin" h5dump -d /tokens -c 10 "$2"' _ "$home" "$shard"
expect_output "the plots were written under runs/" 'lm_loss.png' ls "$clone/runs/plots"
# README_LOGS=DIR keeps each block's text and output there
if [ -n "${README_LOGS:-}" ]; then mkdir -p "$README_LOGS" && cp "$blocks"/* "$README_LOGS"/; fi
