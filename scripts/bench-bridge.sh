#!/usr/bin/env bash
# A bridge's throughput beside Mosquitto's, in the same run: 8 publishers send QoS 1 messages to
# the broker under test, which bridges bench/# out to a remote Mosquitto, where one subscriber
# takes them all (`bench fanin --sub-port`). Rows: mqtt-lab with persistence off (as Mosquitto
# runs here) and on (its default), and Mosquitto bridging to the same remote. 0 lost or the row
# fails. Usage: scripts/bench-bridge.sh [ROUNDS] (default 3); a table of medians on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=bench-bridge
source scripts/bench-lib.sh
ROUNDS=${1:-3}
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

build_release
find_mosquitto
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

REMOTE=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$REMOTE" >"$WORK/remote.conf"
"$MOSQUITTO" -c "$WORK/remote.conf" >"$WORK/remote.log" 2>&1 &
pids+=($!)

# The broker under test, with a bridge of bench/# out to the remote at QoS 1.
printf '(topics: [%s])\n' "$(for i in $(seq 0 7); do printf '"bench/%s", ' "$i"; done)" >"$WORK/topics.ron"
cat >"$WORK/bridges.ron" <<RON
(bridges: [(name: "remote", address: "mqtt://127.0.0.1:$REMOTE", clean_session: true,
    topics: [(pattern: "bench/#", direction: Out, qos: 1)])])
RON
start_lab() {
    LAB_PORT=$(free_port)
    "$LAB_BIN" --headless --port "$LAB_PORT" --topics "$WORK/topics.ron" --users "$WORK/users.ron" \
        --bridges "$WORK/bridges.ron" --sys-interval 0 "$@" >"$WORK/lab.out" 2>"$WORK/lab.log" &
    LAB_PID=$!
    for _ in $(seq 100); do grep -q listening "$WORK/lab.out" && break; sleep 0.1; done
    sleep 1 # the bridge connects
}
start_mosq_bridge() {
    LAB_PORT=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nconnection remote\naddress 127.0.0.1:%s\ntopic bench/# out 1\ncleansession true\n' \
        "$LAB_PORT" "$REMOTE" >"$WORK/local.conf"
    "$MOSQUITTO" -c "$WORK/local.conf" >"$WORK/local.log" 2>&1 &
    LAB_PID=$!
    sleep 1.5
}
printf '(allow_anonymous: true, users: [])\n' >"$WORK/users.ron"

run() { # label, then how to start the broker
    local label=$1
    shift
    "$@"
    "$BENCH_BIN" --port "$LAB_PORT" --sub-port "$REMOTE" --label "$label" --timeout 120 \
        fanin --qos 1 --publishers 8 --count 5000 --window 100 >>"$WORK/results.jsonl" || true
    kill "$LAB_PID" 2>/dev/null || true
    wait "$LAB_PID" 2>/dev/null || true
}
for r in $(seq "$ROUNDS"); do
    log "round $r of $ROUNDS"
    run "mqtt-lab, persistence off" start_lab --no-persistence
    run "mqtt-lab, defaults" start_lab --data-dir "$WORK/data"
    run "mosquitto $MOSQ_VERSION" start_mosq_bridge
done
python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["label"], []).append(r)
print("| broker (QoS 1, 8 × 5,000 through a bridge) | msg/s (median) | lost |")
print("|---|---|---|")
for label, rs in rows.items():
    ok = [r["msgs_per_s"] for r in rs if r.get("ok")]
    lost = sum(r.get("lost", 0) for r in rs)
    med = f"{statistics.median(ok):,.0f}" if ok else "failed"
    print(f"| {label} | {med} ({len(ok)} of {len(rs)} rounds) | {lost} |")
PY
