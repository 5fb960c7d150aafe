#!/bin/sh
# moescope - tests/test_manpages.sh
# Keeps --help and the manual pages in step: every long option that a program's --help
# lists must appear in its page, and every page must render without warnings.
set -u
pass=0 failn=0
check_prog() { # check_prog BINARY PAGE
    bin=$1 page=$2
    opts=$("$bin" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
    [ -n "$opts" ] || { failn=$((failn + 1)); echo "not ok - $bin --help lists no option"; return; }
    for o in $opts; do
        pat=$(printf '%s' "$o" | sed 's/-/\\\\-/g')
        if grep -q -- "$pat" "$page"; then pass=$((pass + 1))
        else failn=$((failn + 1)); echo "not ok - $o of $(basename "$bin") is missing from $(basename "$page")"; fi
    done
}
check_prog "$top_builddir/src/moescope" "$top_srcdir/man/moescope.1"
check_prog "$top_builddir/src/moescope-dump" "$top_srcdir/man/moescope-dump.1"
check_prog "$top_builddir/src/moescope-synth" "$top_srcdir/man/moescope-synth.1"
if command -v man >/dev/null 2>&1; then
    for page in "$top_srcdir"/man/*.[15]; do
        warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
        if [ -z "$warn" ]; then pass=$((pass + 1))
        else failn=$((failn + 1)); echo "not ok - $(basename "$page") renders with warnings: $warn"; fi
    done
fi
echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
