#!/usr/bin/env bash
# What "nothing lost" costs and gives, mqtt-lab beside Mosquitto on the same machine in one run;
# prints markdown tables on stdout (progress on stderr), also kept in BENCH_DIR/durability.md.
#
#   scripts/bench-durability.sh            # 3 rounds, about 5 minutes after the build
#   ROUNDS=1 scripts/bench-durability.sh
#
# 1. Shipped defaults: each broker as a user gets it (Mosquitto with only a listener and
#    allow_anonymous; mqtt-lab with no option at all, so persistence on), a fresh broker per
#    QoS, the burst 8 publishers x 10,000 x 64 B into one subscriber on bench/#: how many of the
#    80,000 arrive, and how fast.
# 2. Persistence on both sides, the same limits (max_inflight_messages 100, max_queued_messages
#    100000, set_tcp_nodelay true; Mosquitto `persistence true`, mqtt-lab's default): fan-in QoS 1
#    with a clean subscriber, and fan-in QoS 1 and 2 with a persistent subscriber (clean session
#    0), for which mqtt-lab writes every message to disk before acknowledging it and Mosquitto
#    keeps it in memory until its autosave. mqtt-lab's durable writes (commits) per second of
#    load come from the count it logs when it stops.
# 3. A subscriber that never reads, under 8 x 100,000 QoS 0 messages: each broker's peak RSS
#    (VmHWM) at its defaults.
# 4. Start-up with 1,000,000 stored messages: 10 offline persistent sessions on bench/#, 100,000
#    QoS 1 messages published to them; the time from starting mqtt-lab to its listening line
#    (the state is loaded before it listens), and the file's size.
#
# Env: ROUNDS (3)  MOSQ_PORT (18851)  LAB_PORT (18852)  BENCH_DIR (target/bench)  TIMEOUT (120)
# Never uses port 1883; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
MOSQ_PORT=${MOSQ_PORT:-18851}
LAB_PORT=${LAB_PORT:-18852}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
TIMEOUT=${TIMEOUT:-120}
W=$BENCH_DIR/durability
BENCH_NAME=durability
source scripts/bench-lib.sh
for p in "$MOSQ_PORT" "$LAB_PORT"; do [[ $p != 1883 ]] || die "port 1883 is never used"; done
ulimit -n 65536 2>/dev/null || true

build_release
find_mosquitto
command -v mosquitto_pub >/dev/null || die "mosquitto_pub is not installed"

rm -rf "$W"
mkdir -p "$W/home/.config"
RESULTS=$W/results.jsonl
: >"$RESULTS"
echo '(allow_anonymous: true, users: [])' >"$W/users.ron"
PID=

listening() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -qiE "^ *[0-9]+: [0-9A-F]{8}:$hex [0-9A-F]{8}:0000 0A" /proc/net/tcp
}
wait_listening() {
    for _ in $(seq 300); do
        listening "$1" && return 0
        kill -0 "$PID" 2>/dev/null || die "the broker exited; see $W/*.log"
        sleep 0.05
    done
    die "nothing listening on $1"
}
stop() {
    [[ -n $PID ]] || return 0
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
}
trap stop EXIT

# mosquitto NAME [config lines...]: a fresh Mosquitto with a config of its own.
mosquitto() {
    local name=$1
    shift
    mkdir -p "$W/$name"
    { echo "listener $MOSQ_PORT 127.0.0.1"; echo "allow_anonymous true"; printf '%s\n' "$@"; } >"$W/$name/mosquitto.conf"
    "$MOSQUITTO" -c "$W/$name/mosquitto.conf" >>"$W/$name.log" 2>&1 &
    PID=$!
    wait_listening "$MOSQ_PORT"
}
# lab NAME [options...]: a fresh mqtt-lab with its own data folder.
lab() {
    local name=$1
    shift
    rm -rf "$W/$name"
    mkdir -p "$W/$name"
    HOME=$W/home XDG_CONFIG_HOME=$W/home/.config RUST_LOG=info "$LAB_BIN" --headless \
        --port "$LAB_PORT" --topics "$ROOT/bench/topics.ron" --users "$W/users.ron" \
        --data-dir "$W/$name/data" "$@" >"$W/$name.out" 2>>"$W/$name.log" &
    PID=$!
    wait_listening "$LAB_PORT"
}
port_of() { if [[ $1 == mosquitto* ]]; then echo "$MOSQ_PORT"; else echo "$LAB_PORT"; fi; }
# load KEY BROKER ROUND BENCH-ARGS...
load() {
    local key=$1 b=$2 round=$3 line
    shift 3
    line=$("$BENCH_BIN" --port "$(port_of "$b")" --label "$b" --timeout "$TIMEOUT" "$@" \
        2> >(sed 's/^/    /' >&2)) || true
    [[ $line == \{* ]] || line='{"ok": false, "error": "bench printed no result"}'
    printf '{"broker": "%s", "key": "%s", "round": %s, "r": %s}\n' "$b" "$key" "$round" "$line" >>"$RESULTS"
}

BURST="--publishers 8 --count 10000 --size 64 --window 100"
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: the burst at the shipped defaults, a fresh broker per run"
    for q in 0 1 2; do
        mosquitto "mosq-defaults"
        load "defaults-q$q" mosquitto "$round" fanin --qos "$q" $BURST
        stop
        lab "lab-defaults"
        load "defaults-q$q" mqtt-lab "$round" fanin --qos "$q" $BURST
        stop
    done
done

log "persistence on both sides, the same limits"
MOSQ_SAME=("max_inflight_messages 100" "max_queued_messages 100000" "set_tcp_nodelay true"
    "persistence true" "persistence_location $W/mosq-persist/")
LAB_SAME=(--max-inflight 100 --max-queued 100000 --sys-interval 0)
mosquitto "mosq-persist" "${MOSQ_SAME[@]}"
for round in $(seq "$ROUNDS"); do
    load "persist-clean-q1" mosquitto "$round" fanin --qos 1 $BURST
    load "persist-sub-q1" mosquitto "$round" fanin --qos 1 --persistent $BURST
    load "persist-sub-q2" mosquitto "$round" fanin --qos 2 --persistent $BURST
done
stop
lab "lab-persist" "${LAB_SAME[@]}"
for round in $(seq "$ROUNDS"); do
    load "persist-clean-q1" mqtt-lab "$round" fanin --qos 1 $BURST
    load "persist-sub-q1" mqtt-lab "$round" fanin --qos 1 --persistent $BURST
    load "persist-sub-q2" mqtt-lab "$round" fanin --qos 2 --persistent $BURST
done
stop
COMMITS=$(sed -n 's/.*state written: \([0-9]*\) durable writes.*/\1/p' "$W/lab-persist.log" | tail -1)

log "a subscriber that never reads, under 8 x 100,000 QoS 0 messages"
seq 100000 | sed 's/$/ ..................................................../' | cut -c1-64 >"$W/lines.txt"
stuck() {
    local b=$1
    "$ROOT/scripts/never-reads.py" "$(port_of "$b")" never-reads 'bench/#' 600 &
    local sub=$!
    sleep 1
    local t0=$SECONDS pubs=()
    for i in $(seq 0 7); do
        timeout 300 mosquitto_pub -p "$(port_of "$b")" -q 0 -t "bench/$i" -l <"$W/lines.txt" &
        pubs+=($!)
    done
    for p in "${pubs[@]}"; do wait "$p" || true; done
    local hwm
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")
    echo "{\"broker\": \"$b\", \"key\": \"stuck\", \"hwm_kib\": $hwm, \"secs\": $((SECONDS - t0))}" >>"$W/stuck.jsonl"
    kill "$sub" 2>/dev/null || true
}
: >"$W/stuck.jsonl"
mosquitto "mosq-stuck"
stuck mosquitto
stop
lab "lab-stuck"
stuck mqtt-lab
stop

log "start-up with 1,000,000 stored messages"
lab "lab-startup" --sys-interval 0
for i in $(seq 0 9); do
    mosquitto_sub -p "$LAB_PORT" -i "keeper$i" -c -q 1 -t 'bench/#' -W 1 >/dev/null 2>&1 || true
done
fill=()
for i in $(seq 0 7); do
    head -12500 "$W/lines.txt" | timeout 600 mosquitto_pub -p "$LAB_PORT" -q 1 -M 100 -t "bench/$i" -l &
    fill+=($!)
done
for p in "${fill[@]}"; do wait "$p" || true; done
stop
SIZE=$(du -b "$W/lab-startup/data/state.sqlite3" | cut -f1)
: >"$W/startup.txt"
for round in $(seq "$ROUNDS"); do
    t0=$(date +%s.%N)
    HOME=$W/home XDG_CONFIG_HOME=$W/home/.config RUST_LOG=info "$LAB_BIN" --headless \
        --port "$LAB_PORT" --topics "$ROOT/bench/topics.ron" --users "$W/users.ron" \
        --data-dir "$W/lab-startup/data" --sys-interval 0 >"$W/startup.out" 2>>"$W/lab-startup.log" &
    PID=$!
    for _ in $(seq 2000); do
        grep -q "listening on" "$W/startup.out" 2>/dev/null && break
        sleep 0.005
    done
    t1=$(date +%s.%N)
    echo "$t0 $t1" >>"$W/startup.txt"
    stop
done
RESTORED=$(grep -o 'messages=[0-9]*' "$W/lab-startup.log" | tail -1 | cut -d= -f2)

python3 - "$RESULTS" "$W/stuck.jsonl" "$W/startup.txt" "${COMMITS:-0}" "$SIZE" "${RESTORED:-0}" \
    "$ROUNDS" "$MOSQ_VERSION" "$(git describe --always --dirty)" <<'EOF' | tee "$W/durability.md"
import json, statistics, sys
results, stuck, startup, commits, size, restored, rounds, mosq, commit = sys.argv[1:]
runs = {}
for line in open(results):
    d = json.loads(line)
    runs.setdefault((d["broker"], d["key"]), []).append(d["r"])
def med(xs):
    return statistics.median(xs) if xs else None
def f(x, d=0):
    return "-" if x is None else f"{x:,.{d}f}"
print(f"mosquitto {mosq}, mqtt-lab {commit}; medians of {rounds} rounds\n")
print("Shipped defaults: 8 publishers x 10,000 x 64 B -> 1 subscriber on bench/#\n")
print("| QoS | Mosquitto delivered | mqtt-lab delivered | Mosquitto msg/s | mqtt-lab msg/s |")
print("|---|---|---|---|---|")
for q in range(3):
    row = [f"{q}"]
    for b in ("mosquitto", "mqtt-lab"):
        rs = runs.get((b, f"defaults-q{q}"), [])
        row.append(" / ".join(f(r.get("received")) for r in rs) + " of 80,000")
    for b in ("mosquitto", "mqtt-lab"):
        rs = [r for r in runs.get((b, f"defaults-q{q}"), []) if r.get("ok")]
        row.append(f(med([r["msgs_per_s"] for r in rs if "msgs_per_s" in r])) if rs else "- (lost messages)")
    print("| " + " | ".join(row) + " |")
print("\nPersistence on both sides (Mosquitto `persistence true`), the same limits: msg/s\n")
print("| load | Mosquitto | mqtt-lab | mqtt-lab / Mosquitto |")
print("|---|---|---|---|")
secs = 0.0
for key, title in [("persist-clean-q1", "fan-in QoS 1, clean subscriber"),
                   ("persist-sub-q1", "fan-in QoS 1, persistent subscriber"),
                   ("persist-sub-q2", "fan-in QoS 2, persistent subscriber")]:
    m = {}
    for b in ("mosquitto", "mqtt-lab"):
        rs = runs.get((b, key), [])
        good = [r for r in rs if r.get("ok")]
        bad = len(rs) - len(good)
        m[b] = med([r["msgs_per_s"] for r in good])
        if b == "mqtt-lab":
            secs += sum(r.get("duration_s") or 0 for r in rs)
        if bad:
            m[b + "!"] = f" ({bad} failed)"
    ratio = f"{m['mqtt-lab'] / m['mosquitto']:.2f}x" if m["mqtt-lab"] and m["mosquitto"] else "-"
    print(f"| {title} | {f(m['mosquitto'])}{m.get('mosquitto!', '')} | {f(m['mqtt-lab'])}{m.get('mqtt-lab!', '')} | {ratio} |")
if secs:
    print(f"\nmqtt-lab made {int(commits):,} durable writes (SQLite commits, each one fsync) in {secs:.1f} s of these loads: {int(commits) / secs:,.0f} a second.")
print("\nA subscriber that never reads, 8 x 100,000 QoS 0 x 64 B published at it (shipped defaults): peak RSS\n")
print("| broker | peak RSS | publishers done in |")
print("|---|---|---|")
for line in open(stuck):
    d = json.loads(line)
    print(f"| {d['broker']} | {d['hwm_kib'] / 1024:.1f} MiB | {d['secs']} s |")
times = [float(b) - float(a) for a, b in (l.split() for l in open(startup))]
print(f"\nStart-up with {int(restored):,} stored messages ({int(size) / 1048576:.0f} MiB file): "
      f"{med(times):.2f} s median to the listening line ({', '.join(f'{t:.2f}' for t in times)}).")
EOF
