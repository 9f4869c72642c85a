# test_reliability.sh: the fault-injection sweep of tests/reliability.sh (a SIGKILL, and a
# full disk, at every file-system operation of dsa train, convert, export and pack; about
# a minute, two under ASan) as part of the suite. `make reliability` runs it alone.
. "$(dirname "$0")/lib.sh"
# The shim is an LD_PRELOAD library without ASan, loaded before ASan's runtime.
[ -n "${ASAN_OPTIONS:-}" ] && export ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0"
bash "$(dirname "$0")/../reliability.sh" "${BUILD:-$(dirname "$DSA")}" | grep -v '^tests: '
exit "${PIPESTATUS[0]}"
