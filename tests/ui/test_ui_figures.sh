#!/bin/sh
# moescope - tests/ui/test_ui_figures.sh
# End-to-end test of the UI's `f` key: the sanitizer build in a detached tmux (80x24) on
# the default data, run in a temporary directory. From the Layers screen: e exports the
# CSV and s saves the partitions, then f (Enter accepts the default directory
# moescope-figures) writes the figures; the message line names the directory and the
# number of files. The files are checked like --batch --figures's
# (tests/fixtures/check_figures.py: every expected figure in pdf and png with its data
# sidecar, PNG signatures, sidecar numbers equal to the exported CSV's and to numpy's on
# the dump, heatmap blocks from the saved partitions) and with pdfinfo. Then from a layer
# screen, at the coact strategy and a tau, into a typed directory: that layer only. A bad
# directory is an error on the message line. No sanitizer report.
# SPDX-License-Identifier: MIT
set -u
if [ -z "${TMUX_BIN:-}" ]; then echo "SKIP: no tmux"; exit 77; fi
B="$top_builddir/tests/moescope-san"
[ -x "$B" ] || B="$top_builddir/src/moescope"
PY="${H5PY_PYTHON:-/usr/bin/python3}"
DATA="$top_builddir/data/stories260K.h5"
FIX="$top_srcdir/tests/fixtures"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moescope-uifig.XXXXXX")
T="$TMUX_BIN -S $tmp/sock -f /dev/null"
trap '$T kill-server >/dev/null 2>&1; rm -rf "$tmp"' EXIT
pass=0 failn=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
no() { failn=$((failn + 1)); echo "not ok - $1"; }
check() {
    if eval "$2"; then ok "$1"; else no "$1"; echo "    screen:"; sed 's/^/    | /' "$tmp/screen"; fi
}

cmd="cd '$tmp' && env TERM=xterm-256color LANG=C.UTF-8 \
ASAN_OPTIONS=detect_leaks=1:log_path=$tmp/asan '$B' '$DATA'; echo EXIT=\$?; sleep 600"
$T new-session -d -s ui -n main -x 80 -y 24 "$cmd"
$T resize-window -t ui:main -x 80 -y 24 2>/dev/null
cap() { $T capture-pane -p -t ui:main >"$tmp/screen"; }
# wait_for PATTERN [SECONDS]: polls the screen until grep -E finds the pattern.
wait_for() {
    end=$(( $(date +%s) + ${2:-30} ))
    while :; do
        cap
        grep -Eq -- "$1" "$tmp/screen" && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}
keys() { $T send-keys -t ui:main "$@"; }

# check_pdfs DIR: pdfinfo opens every PDF, one page each.
check_pdfs() {
    if ! command -v pdfinfo >/dev/null; then
        echo "ok - PDFs open in pdfinfo # SKIP poppler-utils not installed"; return; fi
    n=0 bad=0
    for f in "$1"/*.pdf; do
        n=$((n + 1))
        pdfinfo "$f" 2>&1 | grep -q '^Pages: *1$' \
            || { echo "    pdfinfo: $f"; bad=$((bad + 1)); }
    done
    [ "$n" -gt 0 ] && [ "$bad" -eq 0 ] && ok "$n PDFs open in pdfinfo ($1)" \
        || no "PDFs open in pdfinfo ($1): $bad of $n bad"
}

# count_files DIR EXT: figure files of one format.
count_files() { ls "$1" | grep -c "\.$2\$"; }

# --- Layers screen: every layer, the default knobs and directory -----------------------
check "first screen shows the Layers table" "wait_for 'sparsity.*oracle@2' 20"
check "the UI goes idle" "wait_for 'idle: up to date' 60"
keys e
check "e exports the CSV" \
    "wait_for 'exported [0-9]+ rows to moescope-layers-param-similarity-E8-k2.csv' 30"
keys s
check "s saves the partitions" \
    "wait_for 'saved 5 partitions to moescope-partitions-param-E8.h5' 30"
keys f
check "f asks for the directory, moescope-figures by default" \
    "wait_for 'Figures directory: moescope-figures' 10"
keys Enter
check "the message line names the directory and the number of files" \
    "wait_for 'wrote [0-9]+ figure files to moescope-figures' 60"
nfig=$(sed -n 's/.*wrote \([0-9]*\) figure files.*/\1/p' "$tmp/screen" | head -n1)
F="$tmp/moescope-figures"
[ -n "$nfig" ] && [ "$nfig" -eq $(( $(count_files "$F" pdf) + $(count_files "$F" png) )) ] \
    && [ "$(count_files "$F" pdf)" -eq "$(count_files "$F" png)" ] \
    && [ "$(count_files "$F" pdf)" -eq "$(count_files "$F" data.csv)" ] \
    && ok "the count is the pdf and png files, one sidecar each" \
    || { no "the count is the pdf and png files, one sidecar each ($nfig)"; ls "$F"; }
missing=
for f in layer0_sparsity layer4_coact_param_E8 layer2_recall_param_E8 layer3_tradeoff \
    summary; do
    [ -s "$F/$f.pdf" ] && [ -s "$F/$f.png" ] && [ -s "$F/$f.data.csv" ] || missing="$missing $f"
done
[ -z "$missing" ] && ok "named figures exist in pdf and png with sidecars" \
    || no "named figures exist in pdf and png with sidecars:$missing"
"$PY" "$FIX/check_figures.py" "$tmp/moescope-layers-param-similarity-E8-k2.csv" "$F" "$DATA" \
    "$tmp/moescope-partitions-param-E8.h5" >"$tmp/check" 2>&1 \
    && ok "figures match the exported CSV and numpy (check_figures.py)" \
    || no "figures match the exported CSV and numpy (check_figures.py)"
cat "$tmp/check"
check_pdfs "$F"
# The sidecar of a recall figure holds exactly the exported values (as printed, %.9g).
"$PY" - "$tmp/moescope-layers-param-similarity-E8-k2.csv" "$F/layer1_recall_param_E8.data.csv" \
    <<'PYEOF' && ok "recall sidecar equals the exported rows" \
    || no "recall sidecar equals the exported rows"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
want = {(r["router"], int(r["k"])): r["value"] for r in rows
        if r["layer"] == "1" and r["metric"] == "mass_recall" and r["split"] == "test"}
got = {}
for r in csv.DictReader(open(sys.argv[2])):
    if "metric=mass_recall;" in r["source"] and "router=" in r["source"]:
        router = r["source"].split("router=")[1].split(";")[0]
        got[(router, int(float(r["x"])))] = "%.9g" % float(r["y"])
assert want and got == want, (got, want)
PYEOF

keys C-p
check "the history holds the wait and the outcome" \
    "wait_for 'figures: waiting for the numbers' 10 && grep -q 'wrote [0-9]* figure files' '$tmp/screen'"
keys q
# The help lists f (it is generated from the key table).
keys '?'
found=no
wait_for 'Finding and sorting' 10 >/dev/null
for i in 1 2 3 4 5 6 7 8; do
    grep -Eq '^ *f +write figures' "$tmp/screen" && { found=yes; break; }
    keys PageDown
    sleep 0.3
    cap
done
[ "$found" = yes ] && ok "the help lists f" || { no "the help lists f"; cat "$tmp/screen"; }
keys q

# --- a layer screen, coact at tau 0.1, a typed directory: that layer only --------------
keys : strategy=coact Enter : tau=0.1 Enter
check "knobs: coact, tau 0.1" "wait_for 'strategy=coact .*tau=0.1' 10"
keys Down Down Enter
check "Enter opens layer 2" "wait_for 'layer 2 layers\.2\.feed_forward' 10"
keys f
check "f on a layer screen asks for the directory" "wait_for 'Figures directory: ' 10"
keys C-u "figs/layer two" Enter
check "the message line names the typed directory" \
    "wait_for 'wrote [0-9]+ figure files to figs/layer two' 60"
keys e
check "e exports layer 2" \
    "wait_for 'exported [0-9]+ rows to moescope-layer2-coact-similarity-E8-k2-tau0.1.csv' 30"
keys 1 s
check "s saves the coact partitions" \
    "wait_for 'saved 5 partitions to moescope-partitions-coact-E8.h5' 30"
G="$tmp/figs/layer two"
ls "$G" | grep -v '^layer2_\|^summary\.' >"$tmp/others"
[ ! -s "$tmp/others" ] && [ -s "$G/layer2_coact_coact_E8.png" ] \
    && ok "layer screen: figures of layer 2 only" \
    || { no "layer screen: figures of layer 2 only"; ls "$G"; }
"$PY" "$FIX/check_figures.py" "$tmp/moescope-layer2-coact-similarity-E8-k2-tau0.1.csv" "$G" \
    "$DATA" "$tmp/moescope-partitions-coact-E8.h5" >"$tmp/check" 2>&1 \
    && ok "layer 2 figures match its export and numpy (coact heatmap)" \
    || no "layer 2 figures match its export and numpy (coact heatmap)"
cat "$tmp/check"
check_pdfs "$G"

# --- a directory that cannot be made: an error, ^E shows it ----------------------------
: >"$tmp/plainfile"
keys f C-u "plainfile/sub" Enter
check "a bad directory is an error on the message line" "wait_for 'figures: .*plainfile' 30"
keys C-e
check "^E shows it again" "wait_for 'figures: .*plainfile' 10"
ls "$tmp" | grep -q '\.tmp' && no "no temporary file left" || ok "no temporary file left"

keys Q
check "Q quits with status 0" "wait_for '^EXIT=0' 20"
# (LeakSanitizer lists the suppressions it used, fontconfig's caches, in the log: no report.)
if cat "$tmp"/asan* 2>/dev/null | grep -q 'ERROR: \|runtime error\|SUMMARY: '; then
    no "no sanitizer report"; cat "$tmp"/asan*; else ok "no sanitizer report"; fi

echo "# $pass passed, $failn failed"
[ "$failn" -eq 0 ]
