#!/bin/sh
# moescope - tests/ui/test_ui_soak.sh
# Soak test of the terminal UI under AddressSanitizer + UBSan (tests/moescope-san): a few
# thousand random keys (every binding but the quitting ones, prompts with random text,
# knob changes that start and cancel work) and random resizes, sent while the workers
# compute. The UI must then quit on F10 with status 0, the terminal restored, and the
# sanitizers (leaks included) must have reported nothing.
# SOAK_KEYS (default 3000) and SOAK_SEED (default 1) change the run.
# SPDX-License-Identifier: MIT
set -u
if [ -z "${TMUX_BIN:-}" ]; then echo "SKIP: no tmux"; exit 77; fi
B="$top_builddir/tests/moescope-san"
[ -x "$B" ] || { echo "SKIP: no sanitizer build"; exit 77; }
PY="${H5PY_PYTHON:-/usr/bin/python3}"
DATA="$top_builddir/data/stories260K.h5"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moescope-soak.XXXXXX")
T="$TMUX_BIN -S $tmp/sock -f /dev/null"
trap '$T kill-server >/dev/null 2>&1; rm -rf "$tmp"' EXIT
N=${SOAK_KEYS:-3000}
SEED=${SOAK_SEED:-1}

# ESCDELAY: a function key's escape sequence split by a busy terminal must not read as Esc.
$T new-session -d -s soak -x 80 -y 24 "cd '$tmp' && env TERM=xterm-256color LANG=C.UTF-8 ESCDELAY=1000 \
ASAN_OPTIONS=detect_leaks=1:log_path=$tmp/asan UBSAN_OPTIONS=print_stacktrace=1:log_path=$tmp/ubsan \
'$B' '$DATA'; echo EXIT=\$?; sleep 600"
$T resize-window -t soak -x 80 -y 24

wait_for() {
    end=$(( $(date +%s) + $2 ))
    while :; do
        $T capture-pane -p -t soak >"$tmp/screen"
        grep -Eq -- "$1" "$tmp/screen" && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.2
    done
}
wait_for 'oracle@2' 30 || { echo "not ok - the UI did not start"; cat "$tmp/screen"; exit 1; }

# The key script: lines "K <tmux key names...>" or "R <w> <h>".
"$PY" - "$N" "$SEED" >"$tmp/script" <<'PYEOF'
import random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(seed)
named = ["Up", "Down", "Left", "Right", "PageUp", "PageDown", "Home", "End", "Enter", "Tab",
         "BTab", "Space", "BSpace", "DC", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9",
         "C-p", "C-l", "C-e", "C-g", "C-u", "C-b", "C-f"]
chars = list("abcdefghijklmnoprstuvwxyzABCDEFGHIJKLMNOPRSTUVWXYZ0123456789+-=:/?{}[]<>,.!@#%^&*()_|~")
sizes = [(80, 24), (200, 60), (60, 20), (120, 40), (81, 25), (100, 30)]
sent = 0
while sent < n:
    batch = []
    for _ in range(rnd.randint(5, 30)):
        r = rnd.random()
        if r < 0.45:
            batch.append(rnd.choice(named))
        else:
            batch.append(rnd.choice(chars))
    sent += len(batch)
    print("K " + " ".join(batch))
    if rnd.random() < 0.08:
        print("R %d %d" % rnd.choice(sizes))
PYEOF

start=$(date +%s)
while read -r kind a b; do
    case $kind in
    K) set -f
       # shellcheck disable=SC2086
       $T send-keys -t soak -- $a $b
       set +f
       sleep 0.02 ;;
    R) $T resize-window -t soak -x "$a" -y "$b" ;;
    esac
done <"$tmp/script"
echo "# sent $N keys in $(( $(date +%s) - start )) s"

# Back to a known state and quit: ^G cancels a prompt, F10 quits from anywhere else.
$T resize-window -t soak -x 80 -y 24
$T send-keys -t soak C-g
sleep 0.3
$T send-keys -t soak F10
fail=0
if wait_for '^EXIT=0' 90; then echo "ok - F10 quits with status 0 after the soak"; else
    echo "not ok - F10 quits with status 0 after the soak"; sed 's/^/    | /' "$tmp/screen"; fail=1; fi
if [ "$($T display -p -t soak '#{alternate_on} #{cursor_flag}')" = "0 1" ]; then
    echo "ok - terminal restored"; else echo "not ok - terminal restored"; fail=1; fi
if ls "$tmp"/asan* "$tmp"/ubsan* >/dev/null 2>&1; then
    echo "not ok - sanitizers silent"; cat "$tmp"/asan* "$tmp"/ubsan* 2>/dev/null | head -80; fail=1
else
    echo "ok - sanitizers silent (no error, no leak)"
fi
echo "# $([ $fail -eq 0 ] && echo 3 || echo 0) passed, $fail failed"
exit $fail
