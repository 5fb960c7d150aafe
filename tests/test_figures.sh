#!/bin/sh
# moescope - tests/test_figures.sh
# End-to-end test of `moescope --batch --figures DIR` on the default data: every expected
# figure exists in SVG, PDF and PNG; PDFs open in pdfinfo and embed every font
# (pdffonts); PNGs and SVGs are valid and each figure's plotted numbers equal the CSV's
# and numpy's (tests/fixtures/check_figures.py). Also the multi-tau file names, bad
# option values, and a small run of the sanitizer build.
set -u
B="$top_builddir/src/moescope"
BSAN="$top_builddir/tests/moescope-san"
PY="${H5PY_PYTHON:-/usr/bin/python3}"
DATA="$top_builddir/data/stories260K.h5"
FIX="$top_srcdir/tests/fixtures"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moescope-fig.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 failn=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
no() { failn=$((failn + 1)); echo "not ok - $1"; }
# run NAME STATUS PATTERN -- command...: runs it, checks the status and stderr
run() {
    name=$1 want=$2 pat=$3; shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ "$rc" -ne "$want" ]; then no "$name: status $rc, expected $want"; sed 's/^/    /' "$tmp/err"; return 1; fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" "$tmp/err"; then
        no "$name: stderr lacks '$pat'"; sed 's/^/    /' "$tmp/err"; return 1; fi
    if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error' "$tmp/err"; then
        no "$name: sanitizer report"; sed 's/^/    /' "$tmp/err"; return 1; fi
    ok "$name"
}

# PDF checks: pdfinfo reads each file, pdffonts lists fonts and every one is embedded.
check_pdfs() {
    dir=$1 bad=0 n=0
    if ! command -v pdfinfo >/dev/null || ! command -v pdffonts >/dev/null; then
        echo "ok - PDF checks # SKIP poppler-utils (pdfinfo, pdffonts) not installed"; return; fi
    for f in "$dir"/*.pdf; do
        n=$((n + 1))
        pdfinfo "$f" >"$tmp/info" 2>&1 && grep -q '^Pages: *1$' "$tmp/info" \
            || { echo "    pdfinfo: $f"; bad=$((bad + 1)); continue; }
        pdffonts "$f" >"$tmp/fonts" 2>&1 || { echo "    pdffonts failed: $f"; bad=$((bad + 1)); continue; }
        # Columns from the right: emb sub uni object ID.
        fonts=$(awk 'NR > 2' "$tmp/fonts" | wc -l)
        notemb=$(awk 'NR > 2 && $(NF-4) != "yes"' "$tmp/fonts" | wc -l)
        if [ "$fonts" -eq 0 ] || [ "$notemb" -ne 0 ]; then
            echo "    $f: $fonts fonts, $notemb not embedded"; cat "$tmp/fonts"; bad=$((bad + 1)); fi
    done
    [ "$n" -gt 0 ] && [ "$bad" -eq 0 ] && ok "$n PDFs open in pdfinfo with every font embedded" \
        || no "PDF checks: $bad of $n bad"
}

# The run of the issue, at tau 0.1 (at tau 0 SiLU layers are dense and the heatmaps flat).
if run "batch with --figures" 0 "" -- "$B" --batch -q --experts 4,8 --k 1,2,4 --mlp-epochs 2 \
        --no-measure --tau 0.1 --partitions "$tmp/parts.h5" --figures "$tmp/fig" \
        --figure-format svg,pdf,png --out "$tmp/R.csv" "$DATA"; then
    "$PY" "$FIX/check_figures.py" "$tmp/R.csv" "$tmp/fig" "$DATA" "$tmp/parts.h5" \
        --formats svg,pdf,png >"$tmp/check" 2>&1 \
        && ok "figures match the CSV and numpy (check_figures.py)" \
        || no "figures match the CSV and numpy (check_figures.py)"
    cat "$tmp/check"
    check_pdfs "$tmp/fig"
    for f in layer0_sparsity layer4_coact_coact_E8 layer2_recall_param_E4 layer3_tradeoff summary; do
        [ -s "$tmp/fig/$f.pdf" ] && [ -s "$tmp/fig/$f.png" ] && [ -s "$tmp/fig/$f.svg" ] \
            || no "figure $f in three formats"
    done
    ok "named figures exist in three formats"
fi

# Several taus: _tau<g> names; the default formats are pdf and png.
if run "two taus, default formats" 0 "" -- "$B" --batch -q --layers 1 --experts 4 --k 1,2 \
        --tau 0,0.2 --strategy random,coact --router oracle,topk_neurons --mlp-epochs 1 \
        --no-measure --partitions "$tmp/parts2.h5" --figures "$tmp/fig2/sub" --out "$tmp/R2.csv" "$DATA"; then
    "$PY" "$FIX/check_figures.py" "$tmp/R2.csv" "$tmp/fig2/sub" "$DATA" "$tmp/parts2.h5" \
        --formats pdf,png >"$tmp/check" 2>&1 \
        && ok "two-tau figures match the CSV" || { no "two-tau figures match the CSV"; cat "$tmp/check"; }
    [ -s "$tmp/fig2/sub/layer1_sparsity_tau0.2.pdf" ] && [ -s "$tmp/fig2/sub/summary_tau0.png" ] \
        && [ -z "$(ls "$tmp/fig2/sub" | grep '\.svg$')" ] \
        && ok "_tau<g> names, no SVG by default" || no "_tau<g> names, no SVG by default"
fi

# Bad values: exit 2, one message, no CSV and no figures left behind.
run "unknown figure format" 2 "unknown format 'jpg'" -- "$B" --batch -q --layers 0 --experts 4 \
    --k 1 --figures "$tmp/bad" --figure-format png,jpg --out "$tmp/bad.csv" "$DATA"
[ ! -e "$tmp/bad.csv" ] && [ ! -e "$tmp/bad" ] && ok "a bad format leaves nothing" \
    || no "a bad format leaves nothing"
: >"$tmp/file"
run "figures dir is a file" 2 "not a directory" -- "$B" --batch -q --layers 0 --experts 4 \
    --k 1 --figures "$tmp/file" --out "$tmp/bad.csv" "$DATA"
[ ! -e "$tmp/bad.csv" ] && ok "a bad figures dir leaves no CSV" || no "a bad figures dir leaves no CSV"

# The sanitizer build draws every kind of figure without a report.
if [ -x "$BSAN" ]; then
    run "figures under ASan and UBSan" 0 "" -- "$BSAN" --batch -q --layers 2 --experts 4 --k 1,2 \
        --tau 0.1 --strategy random,coact --router oracle,similarity,topk_neurons --mlp-epochs 1 \
        --no-measure --figures "$tmp/fig3" --figure-format svg,pdf,png --out "$tmp/R3.csv" "$DATA"
    [ "$(ls "$tmp/fig3" | wc -l)" -eq 28 ] && ok "sanitizer run wrote 7 figures x 4 files" \
        || { no "sanitizer run wrote 7 figures x 4 files"; ls "$tmp/fig3"; }
fi

echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
