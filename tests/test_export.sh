#!/bin/sh
# moescope - tests/test_export.sh
# End-to-end tests of scripts/moescope-export.py on small random PyTorch models built by
# tests/fixtures/export_models.py (T5-style ReLU, BERT-style GELU, LLaMA-style gated SiLU
# and a custom gated block that needs --in/--out/--gate/--act): the command line (help,
# exports, a wrong --act failing with status 2 and naming the layer, no file left), the
# library exports and every file's layout and values (tests/fixtures/export_check.py),
# then `moescope` (summary) and `moescope --batch` on every exported file.
# Skipped (77) when the python has no torch.
set -u
PY="${H5PY_PYTHON:-/usr/bin/python3}"
EXP="$top_srcdir/scripts/moescope-export.py"
CMD="$top_builddir/scripts/moescope-export"      # what make install installs
FIX="$top_srcdir/tests/fixtures"
MODELS="$FIX/export_models.py"
M="$top_builddir/src/moescope"
if ! "$PY" -c 'import torch, h5py, numpy' 2>/dev/null; then
    echo "SKIP: $PY cannot import torch, h5py and numpy (Debian: python3-torch python3-h5py)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moescope-export.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 failn=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
no() { failn=$((failn + 1)); echo "not ok - $1"; }
# expect STATUS GREP-PATTERN NAME -- command...: runs it, checks status and stderr
expect() {
    want=$1 pat=$2 name=$3; shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ "$rc" -ne "$want" ]; then
        no "$name: status $rc, expected $want"; sed 's/^/    /' "$tmp/err"; return; fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" "$tmp/err"; then
        no "$name: stderr lacks '$pat'"; sed 's/^/    /' "$tmp/err"; return; fi
    if grep -q 'Traceback\|HDF5-DIAG' "$tmp/err"; then
        no "$name: traceback or HDF5 stack"; sed 's/^/    /' "$tmp/err"; return; fi
    ok "$name"
}

[ -x "$EXP" ] && [ -x "$CMD" ] && ok "the exporter is executable" \
    || no "the exporter is executable"
expect 0 "" "--help" -- "$PY" "$EXP" --help
for opt in --model-module --ffn --family --in --out --gate --act --float16 --gzip --no-h; do
    grep -q -- "$opt" "$tmp/out" || no "--help lists $opt"
done
grep -q "Examples:" "$tmp/out" && ok "--help lists the options and examples" \
    || no "--help has examples"
expect 2 "expects FILE.py:FUNCTION" "bad --model-module" -- \
    "$PY" "$EXP" --model-module "$MODELS" -o "$tmp/x.h5"

# Command-line exports: a T5 by pattern (float32) with the built command, the custom block
# by flags (float16, gzip).
expect 0 "wrote $tmp/cli_t5.h5: 3 layers" "CLI export of the T5-style model" -- \
    "$CMD" --model-module "$MODELS:t5" --ffn 'encoder.block.*.layer.1.DenseReluDense' \
    -o "$tmp/cli_t5.h5"
grep -q "layer 2 encoder.block.2.layer.1.DenseReluDense: d_model 24, d_ff 64, relu" "$tmp/err" \
    && ok "CLI reports each layer" || { no "CLI reports each layer"; cat "$tmp/err"; }
expect 0 "" "CLI export of the custom model with --in/--out/--gate/--act" -- \
    "$PY" "$EXP" --model-module "$MODELS:custom" --ffn 're:blocks\.[0-9]+\.ffn' \
    --gate proj_a --in proj_b --out proj_c --act gelu_tanh --float16 --gzip 4 -q \
    -o "$tmp/cli_custom.h5"
[ ! -s "$tmp/err" ] && ok "-q prints nothing" || no "-q prints nothing"
expect 2 "layer 0 (blocks.0.ffn): h recomputed with activation 'relu'" \
    "a wrong --act fails naming the layer" -- \
    "$PY" "$EXP" --model-module "$MODELS:custom" --ffn 'blocks.*.ffn' \
    --gate proj_a --in proj_b --out proj_c --act relu -o "$tmp/bad.h5"
[ -z "$(ls "$tmp" | grep '^bad')" ] && ok "a failed export leaves no file" \
    || no "a failed export leaves no file"
expect 2 "no module matches --ffn model.layers.\*.ffn" "a pattern matching nothing" -- \
    "$PY" "$EXP" --model-module "$MODELS:llama" --ffn 'model.layers.*.ffn' -o "$tmp/bad.h5"
expect 2 "no projection 'proj_x'" "a missing projection" -- \
    "$PY" "$EXP" --model-module "$MODELS:custom" --ffn 'blocks.*.ffn' \
    --gate proj_a --in proj_x --out proj_c -o "$tmp/bad.h5"

# Library exports of every family, and every file checked against the model.
"$PY" "$FIX/export_check.py" "$EXP" "$tmp" t5="$tmp/cli_t5.h5" \
    custom="$tmp/cli_custom.h5,float16,gzip" >"$tmp/check" 2>&1
crc=$?
cat "$tmp/check"
[ "$crc" -eq 0 ] && ok "export_check.py" || no "export_check.py (status $crc)"

# moescope reads every file: the summary has one line per layer, the batch CSV has finite
# mass_recall rows for every layer and k.
n=0 f0=$failn
: >"$tmp/csvs"
while IFS="$(printf '\t')" read -r f nl; do
    n=$((n + 1))
    b=$(basename "$f" .h5)
    if ! "$M" "$f" >"$tmp/$b.sum" 2>"$tmp/err"; then
        no "moescope summary of $b"; cat "$tmp/err"; continue; fi
    got=$(grep -c '^[0-9]' "$tmp/$b.sum")
    [ "$got" -eq "$nl" ] || { no "summary of $b has $got layer lines, expected $nl"; continue; }
    if ! "$M" --batch -q --experts 4 --k 1,2 --mlp-epochs 2 --no-measure \
            --out "$tmp/$b.csv" "$f" 2>"$tmp/err"; then
        no "moescope --batch on $b"; cat "$tmp/err"; continue; fi
    printf '%s\t%s\n' "$tmp/$b.csv" "$nl" >>"$tmp/csvs"
done <"$tmp/manifest.tsv"
"$PY" - "$tmp/csvs" <<'PYEOF' || no "batch CSVs"
import csv, math, sys
for line in open(sys.argv[1]):
    path, n = line.rstrip("\n").split("\t")
    rows = [r for r in csv.DictReader(open(path)) if r["metric"] == "mass_recall"]
    layers = {r["layer"] for r in rows}
    assert layers == {str(i) for i in range(int(n))}, (path, layers)
    assert all(math.isfinite(float(r["value"])) and 0 <= float(r["value"]) <= 1 + 1e-6
               for r in rows), (path, [r["value"] for r in rows])
    assert {r["k"] for r in rows} == {"1", "2"}, (path, {r["k"] for r in rows})
PYEOF
[ "$n" -ge 13 ] && [ "$failn" -eq "$f0" ] \
    && ok "moescope summary and --batch on all $n exported files" \
    || no "moescope on the $n exported files"

echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
