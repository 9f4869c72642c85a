# lib.sh: helpers for the CLI tests: TAP-style result lines and a scratch directory.
# Each check prints "ok - name" or "not ok - name" plus the command's output.
set -u
: "${DSA:?DSA must point at the dsa binary}"
DSA=$(cd "$(dirname "$DSA")" && pwd)/$(basename "$DSA")
work=$(mktemp -d "${TMPDIR:-/tmp}/dsa-cli-XXXXXX")
trap 'rm -rf "$work"' EXIT
last_out=$work/.last

ok() { echo "ok - $1"; }
not_ok() { echo "not ok - $1"; [ -f "$last_out" ] && sed 's/^/    | /' "$last_out" | tail -n 30; }
skip() { echo "ok - $1 # SKIP $2"; }

# expect_rc CODE NAME CMD...: run CMD, require exit status CODE.
expect_rc() {
  local want=$1 name=$2; shift 2
  "$@" > "$last_out" 2>&1
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok "$name"; else echo "    (exit $rc, expected $want)" >> "$last_out"; not_ok "$name"; fi
}

# expect_output NAME PATTERN CMD...: run CMD (any exit status), require PATTERN (grep -E) in its output.
expect_output() {
  local name=$1 pattern=$2; shift 2
  "$@" > "$last_out" 2>&1
  if grep -qE -- "$pattern" "$last_out"; then ok "$name"; else echo "    (pattern not found: $pattern)" >> "$last_out"; not_ok "$name"; fi
}

# u32_file PATH v1 v2 ...: write little-endian uint32 tokens.
u32_file() {
  local path=$1; shift
  python3 -c 'import struct,sys; open(sys.argv[1],"wb").write(struct.pack("<%dI" % (len(sys.argv)-2), *map(int, sys.argv[2:])))' "$path" "$@"
}
