#!/usr/bin/env bash
# The window under load (release build): the broker's throughput with the window open against
# the same broker headless, and the window's frame times while it carries a steady load.
# Prints a small markdown table. Not part of the test suite (it measures, it does not check).
#
# Env: ROUNDS (3)  COUNT (100000 per publisher)  RATE (50000 msg/s for the frame-time load)
#      SECONDS_LOAD (6)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-50000}
SECONDS_LOAD=${SECONDS_LOAD:-6}
COUNT=${COUNT:-100000} # per publisher: long enough runs for the window to draw many frames
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
log() { echo "[gui-load $(date +%T)] $*" >&2; }

log "building (release, with the window) and the load generator"
cargo build --release --quiet --bin mqtt-lab
cargo build --release --quiet --no-default-features --example bench
BIN=target/release/mqtt-lab
BENCH=target/release/examples/bench

# The benchmark topics without the 5000 idle ones: the window shows a realistic list.
cat >"$WORK/topics.ron" <<'RON'
(topics: ["bench/0", "bench/1", "bench/2", "bench/3", "bench/4", "bench/5", "bench/6", "bench/7", "bench/fanout", "bench/latency"])
RON
echo '(allow_anonymous: true, users: [])' >"$WORK/users.ron"

DISPLAY_NUM=:$((90 + RANDOM % 9))
Xvfb "$DISPLAY_NUM" -screen 0 1100x720x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
pids+=($!)
sleep 0.5

# start MODE: runs the broker (headless or window); sets PORT_<MODE> and APP_<MODE>
declare -A PORT APPS
start() {
    local mode=$1 args=() port=
    [[ $mode == headless ]] && args=(--headless)
    HOME=$WORK DISPLAY=$DISPLAY_NUM WAYLAND_DISPLAY= "$BIN" "${args[@]}" --port 0 \
        --topics "$WORK/topics.ron" --users "$WORK/users.ron" --max-inflight 100 \
        --max-queued 2000000 >"$WORK/$mode.out" 2>"$WORK/$mode.log" &
    APPS[$mode]=$!
    pids+=($!)
    for _ in $(seq 200); do
        port=$(sed -n 's|^mqtt-lab: listening on mqtt://127.0.0.1:||p' "$WORK/$mode.out")
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { echo "the $mode broker did not start" >&2; cat "$WORK/$mode.log" >&2; exit 1; }
    PORT[$mode]=$port
}
rate() {
    local port=$1
    shift
    "$BENCH" --port "$port" "$@" 2>/dev/null |
        python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(d.get("msgs_per_s") or 0, d.get("lost") or 0)'
}

# Both brokers run side by side and the loads alternate between them, so a noisy spell on this
# shared machine hits both alike.
start headless
start window
sleep 1.5 # let the window come up and draw
declare -A RES
for i in $(seq "$ROUNDS"); do
    for q in 0 1; do
        for mode in headless window; do
            read -r r lost < <(rate "${PORT[$mode]}" fanin --qos "$q" --publishers 8 --count "$COUNT")
            log "$mode fanin qos$q round $i: $r msg/s, lost $lost"
            RES[$mode,$q]+="$r "
        done
    done
done
count=$((RATE * SECONDS_LOAD))
log "window: steady load of $RATE msg/s for ${SECONDS_LOAD}s"
"$BENCH" --port "${PORT[window]}" latency --qos 0 --rate "$RATE" --count "$count" 2>&1 >/dev/null | sed 's/^/    /' >&2
for mode in headless window; do
    kill -TERM "${APPS[$mode]}"
    wait "${APPS[$mode]}" || true
done
FRAMES=$(grep -h 'frame times' "$WORK/window.log" | sed 's/.*frame times //' || true)

python3 - "${RES[headless,0]}" "${RES[window,0]}" "${RES[headless,1]}" "${RES[window,1]}" "$FRAMES" "$RATE" "$ROUNDS" "$COUNT" <<'PY'
import statistics as st, sys
h0, w0, h1, w1, frames, rate, rounds, count = sys.argv[1:]
med = lambda s: st.median(float(x) for x in s.split())
print(f"Medians of {rounds} rounds, fan-in 8 publishers x {int(count):,} x 64 B; window under Xvfb (software OpenGL)\n")
print("| load | headless | window open | window / headless |")
print("|---|---|---|---|")
for name, h, w in (("fan-in QoS 0 (msg/s)", h0, w0), ("fan-in QoS 1 (msg/s)", h1, w1)):
    print(f"| {name} | {med(h):,.0f} | {med(w):,.0f} | {med(w) / med(h):.2f} |")
print(f"\nWindow frame times (CPU per frame) over the whole run, including {int(rate):,} msg/s steady: {frames}")
PY
