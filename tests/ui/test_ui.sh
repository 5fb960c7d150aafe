#!/bin/sh
# moescope - tests/ui/test_ui.sh
# End-to-end tests of the terminal UI: the real binary (the sanitizer build) in a detached
# tmux at fixed sizes (80x24 and 200x60). Opens the default data, changes E and k, waits
# for the recomputation and checks that the Layers screen shows the numbers `--batch`
# prints for the same knobs; moves, opens a layer, walks the screens, shows the help,
# resizes (with the message below 80x24), exports CSV (same rows as --batch), quits with q
# (terminal restored) and on SIGTERM; NO_COLOR + LANG=C render without colour, ASCII only.
# SPDX-License-Identifier: MIT
set -u
if [ -z "${TMUX_BIN:-}" ]; then echo "SKIP: no tmux"; exit 77; fi
B="$top_builddir/tests/moescope-san"
[ -x "$B" ] || B="$top_builddir/src/moescope"
PY="${H5PY_PYTHON:-/usr/bin/python3}"
DATA="$top_builddir/data/stories260K.h5"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moescope-ui.XXXXXX")
T="$TMUX_BIN -S $tmp/sock -f /dev/null"
trap '$T kill-server >/dev/null 2>&1; rm -rf "$tmp"' EXIT
pass=0 failn=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
no() { failn=$((failn + 1)); echo "not ok - $1"; }
check() { if eval "$2"; then ok "$1"; else no "$1"; echo "    screen:"; sed 's/^/    | /' "$tmp/screen"; fi; }

# start NAME WIDTH HEIGHT ENV...: runs moescope on the default data in a new window.
start() {
    name=$1 w=$2 h=$3; shift 3
    cmd="cd '$tmp' && env TERM=xterm-256color ASAN_OPTIONS=detect_leaks=1:log_path=$tmp/asan $* '$B' '$DATA'; echo EXIT=\$?; sleep 600"
    if $T has-session -t ui 2>/dev/null; then
        $T new-window -d -t ui -n "$name" "$cmd"
    else
        $T new-session -d -s ui -n "$name" -x "$w" -y "$h" "$cmd"
    fi
    $T resize-window -t "ui:$name" -x "$w" -y "$h" 2>/dev/null
}
cap() { $T capture-pane -p -t "ui:$1" >"$tmp/screen"; }
# wait_for WINDOW PATTERN [SECONDS]: polls the screen until grep -E finds the pattern.
wait_for() {
    end=$(( $(date +%s) + ${3:-30} ))
    while :; do
        cap "$1"
        grep -Eq -- "$2" "$tmp/screen" && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}
# wait_idle WINDOW: until the activity line says idle and no value is stale or pending.
wait_idle() {
    end=$(( $(date +%s) + ${2:-60} ))
    while :; do
        cap "$1"
        if grep -q "idle: up to date" "$tmp/screen" && ! grep -Eq '~[0-9]|·' "$tmp/screen"; then
            return 0
        fi
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}
keys() { w=$1; shift; $T send-keys -t "ui:$w" "$@"; }

# --- 80x24: the home screen, knob changes and the numbers against --batch -------------
start main 80 24 LANG=C.UTF-8
check "first screen shows the Layers table" "wait_for main 'sparsity.*oracle@2' 20"
check "all five layers listed" "wait_for main '^ +4 layers\.4' 10"
check "numbers fill in and the UI goes idle" "wait_idle main"
keys main : E=16 Enter
keys main : k=4 Enter
check "knob line shows E=16 k=4" "wait_for main 'E=16 +k=4' 10"
check "recomputation finishes" "wait_idle main"
cp "$tmp/screen" "$tmp/layers80.txt"
"$B" --batch -q --experts 16 --k 4 --strategy param --router oracle,similarity,topk_neurons \
    --no-measure -o "$tmp/batch.csv" "$DATA" 2>"$tmp/batch.err" \
    && ok "batch run for the same knobs" || { no "batch run"; cat "$tmp/batch.err"; }
# compare SCREEN CSV STRATEGY ROUTER: the Layers rows against the batch rows at the printed
# precision.
compare() {
"$PY" - "$@" <<'PYEOF'
import csv, re, sys
screen, path, strategy, router = sys.argv[1:5]
rows = {}
for r in csv.DictReader(open(path)):
    rows[(r["layer"], r["strategy"], r["router"], r["metric"])] = float(r["value"])
seen = 0
for line in open(screen):
    m = re.match(r"^ +(\d+) ", line)
    if not m:
        continue
    f = line.split()
    layer = m.group(1)
    sparsity, oracle, recall, err, flops, speed = f[-6:]
    def same(shown, key, fmt):
        want = fmt % rows[key]
        assert shown == want, (layer, key, shown, want)
    same(sparsity, (layer, "", "", "sparsity"), "%.4f")
    same(oracle, (layer, strategy, "oracle", "mass_recall"), "%.4f")
    same(recall, (layer, strategy, router, "mass_recall"), "%.4f")
    same(err, (layer, strategy, router, "output_rel_err"), "%.4f")
    same(flops, (layer, strategy, router, "flops_fraction"), "%.4f")
    same(speed, (layer, strategy, router, "ideal_speedup"), "%.2fx")
    seen += 1
assert seen == 5, seen
PYEOF
}
compare "$tmp/layers80.txt" "$tmp/batch.csv" param similarity \
    && ok "Layers screen equals --batch (E=16 k=4)" || no "Layers screen equals --batch (E=16 k=4)"

# Export: the same tidy CSV as --batch (every exported row is in the batch CSV, same value).
keys main e
check "export writes a CSV and names it" "wait_for main 'exported [0-9]+ rows to moescope-layers-param-similarity-E16-k4.csv' 30"
"$PY" - "$tmp/moescope-layers-param-similarity-E16-k4.csv" "$tmp/batch.csv" <<'PYEOF' && ok "exported rows equal the batch rows" || no "exported rows equal the batch rows"
import csv, sys
exp = list(csv.reader(open(sys.argv[1])))
bat = list(csv.reader(open(sys.argv[2])))
assert exp[0] == bat[0], (exp[0], bat[0])
want = {tuple(r[:9]): r[9] for r in bat[1:]}
metrics = set()
for r in exp[1:]:
    assert tuple(r[:9]) in want, r
    assert r[9] == want[tuple(r[:9])], (r, want[tuple(r[:9])])
    metrics.add(r[8])
for m in ("sparsity", "intra_coact", "mass_recall", "output_rel_err", "flops_fraction", "K"):
    assert m in metrics, m
assert len(exp) > 5 * 20, len(exp)
PYEOF
ls "$tmp" | grep -q '\.tmp' && no "no temporary file left by the export" || ok "no temporary file left by the export"

# s: the partitions of every layer to HDF5, as --batch --partitions writes them.
keys main s
check "s saves the partitions and names the file" "wait_for main 'saved 5 partitions to moescope-partitions-param-E16.h5' 30"
"$B" --batch -q --experts 16 --k 4 --strategy param --router oracle --no-measure \
    --partitions "$tmp/batch-parts.h5" -o "$tmp/b2.csv" "$DATA" 2>/dev/null
"$PY" - "$tmp/moescope-partitions-param-E16.h5" "$tmp/batch-parts.h5" <<'PYEOF' && ok "saved partitions equal --batch --partitions" || no "saved partitions equal --batch --partitions"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert sorted(a["layers"]) == sorted(b["layers"]), (list(a["layers"]), list(b["layers"]))
for i in a["layers"]:
    for name in ("partition", "partitions/param_E16_tau0"):
        x, y = a["layers"][i][name], b["layers"][i][name]
        assert np.array_equal(x[...], y[...]), (i, name)
        for attr in ("strategy", "experts", "seed", "source"):
            assert x.attrs[attr] == y.attrs[attr], (i, name, attr, x.attrs[attr], y.attrs[attr])
    assert np.bincount(a["layers"][i]["partition"][...]).size == 16
PYEOF

# Another strategy and router, with a tau and a seed: coact + mlp.
keys main : strategy=coact Enter : router=mlp Enter : tau=0.1 Enter : seed=3 Enter
check "knob line shows coact, mlp, tau 0.1, seed 3" "wait_for main 'strategy=coact +router=mlp +tau=0.1 .*seed=3' 10"
check "recomputation finishes (coact, mlp)" "wait_idle main 120"
cp "$tmp/screen" "$tmp/layers80b.txt"
"$B" --batch -q --experts 16 --k 4 --strategy coact --router oracle,mlp --tau 0.1 --seed 3 \
    --no-measure -o "$tmp/batch2.csv" "$DATA" 2>/dev/null
compare "$tmp/layers80b.txt" "$tmp/batch2.csv" coact mlp \
    && ok "Layers screen equals --batch (coact, mlp, tau 0.1, seed 3)" \
    || no "Layers screen equals --batch (coact, mlp, tau 0.1, seed 3)"
keys main : strategy=param Enter : router=similarity Enter : tau=0 Enter : seed=0 Enter
check "back to the first knobs: cached, no recomputation" "wait_for main 'strategy=param +router=similarity +tau=0 ' 10 && wait_idle main 5"

# Moving, opening a layer, the screens.
keys main Down Down Enter
check "Enter opens the cursor's layer (Sparsity)" "wait_for main 'layer 2 layers\.2\.feed_forward' 10 && grep -q '\[2Sparsity\]' '$tmp/screen'"
check "Sparsity screen draws its histograms" "wait_for main 'Active neurons per token' 10"
keys main Tab
check "Tab: Partition screen" "wait_for main 'intra-expert co-activation [0-9]' 30"
keys main Tab
check "Tab: Router screen" "wait_for main 'top-K neurons +[0-9.]+ +K = ' 30"
keys main Right
check "Right: next layer" "wait_for main 'layer 3 layers\.3' 10"
keys main Tab
check "Tab: Estimates screen" "wait_for main 'FLOPs fraction 0\.2' 30"
keys main q
check "q goes back to Layers" "wait_for main '\[1Layers\]' 10"
keys main '?'
check "? shows the help" "wait_for main 'Finding and sorting' 10 && grep -q 'Moving' '$tmp/screen' && grep -q 'Q F10 ' '$tmp/screen'"
keys main PageDown
check "the help scrolls to the knobs" "wait_for main 'Knobs \\(every' 10 && grep -q 'F2 O ' '$tmp/screen'"
keys main End
check "the help ends with the knob table and notes" "wait_for main 'About the numbers' 10 && grep -q 'target (off)' '$tmp/screen'"
keys main q
check "q closes the help" "wait_for main 'oracle@4' 10"
keys main / 'layers.4' Enter
check "/ finds a layer (cursor row moves)" "wait_for main 'layers.4' 5"
keys main F10
check "F10 quits with status 0" "wait_for main '^EXIT=0' 20"
check "the terminal is restored (no alternate screen, cursor on)" \
    "[ \"\$($T display -p -t ui:main '#{alternate_on} #{cursor_flag}')\" = '0 1' ]"

# --- 200x60, resizes and the small-terminal message -------------------------------------
start big 200 60 LANG=C.UTF-8
check "200x60: full layer names" "wait_for big '^ +4 layers\.4\.feed_forward ' 20"
$T resize-window -t ui:big -x 70 -y 20
check "below 80x24: a clear message" "wait_for big 'needs at least 80x24' 10 && grep -q 'this terminal is 70x20' '$tmp/screen'"
$T resize-window -t ui:big -x 80 -y 24
check "back to 80x24: the table again" "wait_for big 'oracle@2' 10"
$T resize-window -t ui:big -x 200 -y 60
check "back to 200x60" "wait_for big '^ +0 layers\.0\.feed_forward ' 10"
keys big q
check "q on Layers quits with status 0" "wait_for big '^EXIT=0' 20"
check "terminal restored after q" "[ \"\$($T display -p -t ui:big '#{alternate_on} #{cursor_flag}')\" = '0 1' ]"

# --- colours: on by default, none with NO_COLOR; ASCII only with LANG=C -----------------
start col 80 24 LANG=C.UTF-8
wait_for col 'idle: up to date' 30 >/dev/null
$T capture-pane -e -p -t ui:col >"$tmp/col.txt"
start mono 80 24 NO_COLOR=1 LANG=C LC_ALL=C
check "NO_COLOR LANG=C run starts" "wait_for mono 'idle: up to date' 30"
$T capture-pane -e -p -t ui:mono >"$tmp/mono.txt"
"$PY" - "$tmp/col.txt" "$tmp/mono.txt" <<'PYEOF' && ok "colour by default, none with NO_COLOR" || no "colour by default, none with NO_COLOR"
import re, sys
def colours(path):
    n = 0
    for params in re.findall(r"\x1b\[([0-9;:]*)m", open(path, encoding="utf-8", errors="replace").read()):
        p = [int(x) for x in re.split("[;:]", params) if x]
        n += sum(1 for x in p if (30 <= x <= 49 and x not in (39, 49)) or 90 <= x <= 107)
    return n
assert colours(sys.argv[1]) > 0, "no colour in the default run"
assert colours(sys.argv[2]) == 0, "colour despite NO_COLOR"
PYEOF
cap mono
check "LANG=C renders ASCII only" "! LC_ALL=C grep -q '[^ -~]' '$tmp/screen'"
keys mono '?'
wait_for mono 'Finding and sorting' 10 >/dev/null
check "LANG=C help is ASCII only" "! LC_ALL=C grep -q '[^ -~]' '$tmp/screen'"
keys mono Q
check "Q quits" "wait_for mono '^EXIT=0' 20"

# --- SIGTERM restores the terminal -------------------------------------------------------
start sig 80 24 LANG=C.UTF-8
wait_for sig 'oracle@2' 20 >/dev/null
shell=$($T display -p -t ui:sig '#{pane_pid}')
pid=$(ps -o pid= --ppid "$shell" | head -n1 | tr -d ' ')
kill -TERM "$pid"
check "SIGTERM ends the UI (status 143)" "wait_for sig '^EXIT=143' 20"
check "terminal restored after SIGTERM" "[ \"\$($T display -p -t ui:sig '#{alternate_on} #{cursor_flag}')\" = '0 1' ]"

# --- SIGSEGV: the handler ends curses before the default action (sanitizer's off) -------
start segv 80 24 LANG=C.UTF-8 ASAN_OPTIONS=handle_segv=0:detect_leaks=0
wait_for segv 'oracle@2' 20 >/dev/null
shell=$($T display -p -t ui:segv '#{pane_pid}')
pid=$(ps -o pid= --ppid "$shell" | head -n1 | tr -d ' ')
kill -SEGV "$pid"
check "SIGSEGV ends the UI (status 139)" "wait_for segv '^EXIT=139' 20"
check "terminal restored after SIGSEGV" "[ \"\$($T display -p -t ui:segv '#{alternate_on} #{cursor_flag}')\" = '0 1' ]"

# No sanitizer report from any run.
if ls "$tmp"/asan* >/dev/null 2>&1; then no "no sanitizer report"; cat "$tmp"/asan*; else ok "no sanitizer report"; fi

echo "# $pass passed, $failn failed"
[ "$failn" -eq 0 ]
