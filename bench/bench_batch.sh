#!/bin/sh
# moescope - bench/bench_batch.sh
# The engine issue's batch targets on T5-base-shaped layers from moescope-synth
# (d_model 768, d_ff 3072, 32768 tokens, 90% sparse): wall time of --batch over LAYERS
# layers with three strategies and all routers (target: 12 layers in under 60 s), and
# peak resident memory against 1.5 x one layer's h plus the N x N co-activation matrix.
# usage: bench/bench_batch.sh [LAYERS] [--no-measure] (run from the build directory; default
# 12 layers; --no-measure leaves out the measured speedups, to show what their timings cost)
set -eu
layers=${1:-12}
extra=${2:-}
case "$extra" in
"" | --no-measure) ;;
*) echo "usage: bench/bench_batch.sh [LAYERS] [--no-measure]" >&2; exit 2 ;;
esac
file=${MOESCOPE_BENCH_FILE:-/tmp/moescope-bench-t5-$layers.h5}
if [ ! -f "$file" ]; then
    echo "writing $file ($layers T5-base layers)..."
    src/moescope-synth -o "$file" --layers "$layers"
fi
# The file is read once first, so that the figure is the engine's and not the disk's: a
# file that has sat unread for a while may have been dropped from the page cache (this VM
# pages cold memory out), and then its first layers come off the disk at its speed.
cat "$file" >/dev/null
cmd="src/moescope --batch -q $extra --experts 32 --k 1,2,4 --strategy random,param,coact \
--router oracle,similarity,mlp,sigmoid,topk_neurons --out /tmp/moescope-bench.csv $file"
echo "command: /usr/bin/time -f '%e s %M KiB' $cmd"
# CPU time the VM's host took away during the run (/proc/stat "steal", 1/100 s, all CPUs):
# on a shared host it explains run-to-run spread that no change of ours does.
steal() { awk '/^cpu /{print $9}' /proc/stat; }
s0=$(steal)
/usr/bin/time -f '%e %M' -o /tmp/moescope-bench.time $cmd
s1=$(steal)
read secs kib </tmp/moescope-bench.time
h_mib=$((32768 * 3072 * 4 / 1048576))
c_mib=$((3072 * 3072 * 4 / 1048576))
limit=$(( (h_mib * 3 / 2) + c_mib ))
echo "batch over $layers layers${extra:+ ($extra)}: $secs s (target: 12 layers < 60 s); CPU stolen by the host: $(( (s1 - s0) / 100 )) s"
echo "peak RSS: $((kib / 1024)) MiB (target <= 1.5 x h ($h_mib MiB) + C ($c_mib MiB) = $limit MiB)"
