#!/bin/sh
# moescope - tests/run-test.sh
# Runs one test under the automake driver. Its full output goes to the .log file
# (stdout); cmocka's summary lines also go to fd 9 so that `make check` shows them.
out=$(mktemp "${TMPDIR:-/tmp}/moescope-test.XXXXXX") || exit 99
"$@" >"$out" 2>&1
rc=$?
cat "$out"
name=$(basename "$1")
[ "$name" = sh ] || [ "$name" = bash ] && name=$(basename "$2")
if { true >&9; } 2>/dev/null; then
    grep -E '^\[ *(PASSED|FAILED|SKIPPED) *\]|^\[=+\] .*(ran|tests)|^[0-9]+ passed, [0-9]+ failed' "$out" \
        | sed "s|^|$name: |" >&9
fi
rm -f "$out"
exit $rc
