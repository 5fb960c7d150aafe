#!/bin/sh
# moescope - tests/test_layers.sh
# Keeps the module layering of STYLE.md: util -> io -> core -> jobs -> views -> ui, each
# directory including only its own layer or layers to its left (core never io), and
# each library reached from one layer only: HDF5 and cairo from io, GSL, cblas and
# METIS from core, curses from ui.
set -u
src="$top_srcdir/src"
pass=0 failn=0
bad() { failn=$((failn + 1)); echo "not ok - $1"; }

allowed() { # the layers a directory may include
    case $1 in
    util) echo "util" ;;
    io) echo "util io" ;;
    core) echo "util core" ;;
    jobs) echo "util io core jobs" ;;
    views) echo "util io core jobs views" ;;
    ui) echo "util io core jobs views ui" ;;
    esac
}
for dir in util io core jobs views ui; do
    ok=$(allowed $dir)
    for f in "$src/$dir"/*.[ch]; do
        [ -e "$f" ] || continue
        for inc in $(sed -n 's|^#include "\([a-z]*\)/.*|\1|p' "$f" | sort -u); do
            case " $ok " in
            *" $inc "*) pass=$((pass + 1)) ;;
            *) bad "$dir/$(basename "$f") includes $inc/ (allowed: $ok)" ;;
            esac
        done
    done
done
# lib_only PATTERN DIR NAME: PATTERN may be included only under src/DIR
lib_only() {
    hits=$(grep -rlE "^#include [<\"]($1)" "$src" | grep -v "^$src/$2/")
    if [ -z "$hits" ]; then pass=$((pass + 1)); else bad "$3 included outside src/$2: $hits"; fi
}
lib_only 'hdf5|H5[A-Za-z]*public' io "HDF5"
lib_only 'cairo' io "cairo"
lib_only 'gsl/|cblas|metis' core "GSL, cblas or METIS"
lib_only 'n?curses' ui "curses"
echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
