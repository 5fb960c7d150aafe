#!/bin/sh
# moescope - tests/test_cli.sh
# End-to-end tests of the moescope binary (the sanitizer build, tests/moescope-san):
# options, exit statuses and messages, the per-layer summary against numpy, and the batch
# CSV against SPEC §6 and the identities of §2-§5 (tests/fixtures/check_batch.py).
set -u
B="$top_builddir/tests/moescope-san"
PY="${H5PY_PYTHON:-/usr/bin/python3}"
DATA="$top_builddir/data/stories260K.h5"
FIX="$top_srcdir/tests/fixtures"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moescope-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 failn=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
no() { failn=$((failn + 1)); echo "not ok - $1"; }
# expect STATUS GREP-PATTERN NAME -- command...: runs it, checks status and stderr
expect() {
    want=$1 pat=$2 name=$3; shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ "$rc" -ne "$want" ]; then no "$name: status $rc, expected $want"; sed 's/^/    /' "$tmp/err"; return; fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" "$tmp/err"; then
        no "$name: stderr lacks '$pat'"; sed 's/^/    /' "$tmp/err"; return; fi
    if grep -q 'HDF5-DIAG\|ERROR: AddressSanitizer\|runtime error' "$tmp/err"; then
        no "$name: HDF5 stack or sanitizer report"; sed 's/^/    /' "$tmp/err"; return; fi
    ok "$name"
}

expect 0 "" "--help" -- "$B" --help
grep -q -- "--batch" "$tmp/out" && ok "--help lists --batch" || no "--help lists --batch"
expect 0 "" "--version" -- "$B" --version
grep -q "^moescope [0-9]" "$tmp/out" && ok "--version prints the version" || no "--version output"
expect 2 "unknown option '--nope'" "unknown option" -- "$B" --nope
expect 2 "needs a value" "missing option value" -- "$B" --experts
expect 2 "$tmp/missing.h5" "missing file" -- "$B" "$tmp/missing.h5"
printf 'not an hdf5 file\n' >"$tmp/text.h5"
expect 2 "$tmp/text.h5" "not an HDF5 file" -- "$B" "$tmp/text.h5"
expect 2 "k = 5 is more than E = 4" "k > E" -- "$B" --batch -q --experts 4 --k 5 -o "$tmp/x.csv" "$DATA"
expect 2 "more than layer 0's d_ff = 172" "E > d_ff" -- "$B" --batch -q --experts 500 --k 1 -o "$tmp/x.csv" "$DATA"
expect 2 "unknown strategy 'nope'" "unknown strategy" -- "$B" --batch --strategy random,nope "$DATA"
expect 2 "unknown router 'nope'" "unknown router" -- "$B" --batch --router nope "$DATA"
expect 2 "no layer 9" "unknown layer" -- "$B" --batch -q --layers 9 -o "$tmp/x.csv" "$DATA"
expect 2 "expected a value from" "tau out of range" -- "$B" --batch --tau=-1 "$DATA"
[ ! -e "$tmp/x.csv" ] && [ -z "$(ls "$tmp" | grep 'x.csv.tmp')" ] && ok "failed runs leave no file" \
    || no "failed runs leave no file"

# The summary (default data: no file argument) against numpy on the same file.
expect 0 "" "summary on the default data" -- "$B"
cp "$tmp/out" "$tmp/summary.txt"
"$PY" - "$DATA" "$tmp/summary.txt" <<'PYEOF' && ok "summary equals numpy" || no "summary equals numpy"
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
lines = [l.split() for l in open(sys.argv[2]) if not l.startswith("#") and not l.startswith("layer")]
assert len(lines) == len(f["layers"]), (len(lines), len(f["layers"]))
for l in lines:
    g = f["layers"][l[0]]
    h = np.abs(g["h"][...].astype(np.float32)).ravel()
    assert int(l[2]) == g["x"].shape[1] and int(l[3]) == g["h"].shape[1] and int(l[4]) == h.size // int(l[3])
    assert l[5] == g.attrs["activation"] and l[6] == ("yes" if "w_gate" in g else "no")
    s0 = 1 - np.count_nonzero(h > 0) / h.size
    v = np.sort(h); tau = v[int(np.ceil(0.9 * h.size)) - 1]
    s_tau = 1 - np.count_nonzero(h > tau) / h.size
    assert abs(float(l[7]) - s0) < 2e-6, (l, s0)
    assert abs(float(l[8]) - tau) <= 1e-5 * max(1.0, tau), (l, tau)
    assert abs(float(l[9]) - s_tau) < 2e-6 and s_tau >= 0.9, (l, s_tau)
PYEOF

# Batch on the real data: every metric, checked independently.
expect 0 "" "batch on stories260K" -- "$B" --batch -q --experts 4,43 --k 1,2,4 --mlp-epochs 3 \
    --train --partitions "$tmp/parts.h5" --out "$tmp/res.csv" "$DATA"
"$PY" "$FIX/check_batch.py" "$tmp/res.csv" "$DATA" --expect-E 4,43 --expect-k 1,2,4 >"$tmp/check" 2>&1 \
    && ok "batch CSV passes check_batch.py" || { no "batch CSV passes check_batch.py"; cat "$tmp/check"; }
for m in sparsity tau_for_sparsity_0.9 dead_fraction active_per_token_mean intra_coact \
         coact_fallback_random mass_recall overlap output_rel_err load_max_over_mean \
         load_entropy_norm flops_fraction ideal_speedup measured_speedup_batch \
         measured_speedup_token meo_mass_recall meo_seqsel_output_rel_err \
         meo_output_rel_err_sum_position meo_output_rel_err_softmax_aligned meo_flops_fraction K; do
    grep -q ",$m," "$tmp/res.csv" || { no "batch CSV has metric $m"; continue; }
done
ok "batch CSV has every SPEC §6 metric"

# A saved partition read back with --strategy file gives the same numbers.
expect 0 "" "batch with a saved partition" -- "$B" --batch -q --experts 4 --k 1,2 --strategy random \
    --router oracle,similarity --no-measure --out "$tmp/a.csv" --partitions "$tmp/p4.h5" "$DATA"
expect 0 "" "batch with --strategy file" -- "$B" --batch -q --k 1,2 --strategy file \
    --router oracle,similarity --no-measure --out "$tmp/b.csv" "$DATA" "$tmp/p4.h5"
"$PY" - "$tmp/a.csv" "$tmp/b.csv" <<'PYEOF' && ok "file partition reproduces random" || no "file partition reproduces random"
import csv, sys
def load(p):
    return {(r["layer"], r["router"], r["E"], r["k"], r["split"], r["metric"]): r["value"]
            for r in csv.DictReader(open(p)) if r["router"] and r["router"] != "topk_neurons"}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a and a.keys() == b.keys(), (len(a), len(b))
assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]
PYEOF

# A layer run after others (its buffers reused, its bytes prefetched) gives the same rows
# as the layer run alone.
opts="--batch -q --experts 4 --k 1,2 --strategy random,param --router oracle,similarity,mlp,sigmoid --mlp-epochs 2 --no-measure"
expect 0 "" "batch over every layer" -- "$B" $opts --out "$tmp/all.csv" "$DATA"
expect 0 "" "batch over layer 3 alone" -- "$B" $opts --layers 3 --out "$tmp/one.csv" "$DATA"
"$PY" - "$tmp/all.csv" "$tmp/one.csv" <<'PYEOF' && ok "a layer after others equals it alone" || no "a layer after others equals it alone"
import csv, sys
rows = lambda p: [r for r in csv.DictReader(open(p)) if r["layer"] == "3"]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert a and a == b, (len(a), len(b), [(x, y) for x, y in zip(a, b) if x != y][:3])
PYEOF

echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
