#!/usr/bin/env bash
# mqtt-lab against Mosquitto at scale, side by side in one run: many topics, many clients, many
# retained messages. Prints a markdown table of medians with the ratio mqtt-lab / Mosquitto on
# stdout (progress on stderr), also kept in BENCH_DIR/scale/table.md.
#
#   scripts/bench-scale.sh            # 3 rounds, about 4 minutes after the build
#   ROUNDS=1 scripts/bench-scale.sh   # a quick look
#
# 1. Start-up: from starting the broker until a client's CONNECT is answered (examples/bench
#    `startup`). mqtt-lab: `--headless --port 0 --topics FILE` with 100,000 listed topics and
#    --no-persistence; its port is read from its listening line. Mosquitto has no topic list: its
#    own start to the first CONNACK (tried every millisecond). Then both again with 100,000
#    retained messages on disk (mqtt-lab's state.sqlite3, Mosquitto's mosquitto.db).
# 2. 10,000 devices, each subscribed to its own devices/<id>/#, and 8 publishers sending 20,000
#    messages each to devices picked at random (devices/<id>/temperature), QoS 0 and QoS 1:
#    messages delivered per second; every message must reach its one device once.
# 3. 100,000 retained topics: 8 loaders retain one message (QoS 1) on each, every PUBACK awaited;
#    then a new client subscribes to `#` (QoS 1, then QoS 0 on the same broker): the time from
#    its SUBSCRIBE to the last of the 100,000 retained messages. Again with both brokers at their
#    shipped defaults, where Mosquitto's queue limit cuts a QoS 1 subscriber off.
#
# Both brokers get the same limits (max_inflight_messages 100, set_tcp_nodelay true, no
# persistence, and a queue of 200,000 messages a client, so that 100,000 retained messages for
# one subscriber are far from any queue limit), one broker at a time, a fresh one for each
# scenario and round; which goes first alternates by round. A run that loses or duplicates a
# message, errs or times out is a failed run: the table shows it as such and takes medians over
# the runs that passed.
#
# Env: ROUNDS (3)  MOSQ_PORT (18871)  LAB_PORT (18872)  BENCH_DIR (target/bench)  TIMEOUT (120 s
#      a run)  LAB_LOG (RUST_LOG for mqtt-lab, warn)  CARGO_TARGET_DIR (where the binaries are
#      built, target)
# Never uses port 1883; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
MOSQ_PORT=${MOSQ_PORT:-18871}
LAB_PORT=${LAB_PORT:-18872}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
TIMEOUT=${TIMEOUT:-120}
LAB_LOG=${LAB_LOG:-warn}
DEVICES=10000
TOPICS=100000
W=$BENCH_DIR/scale

BENCH_NAME=scale
source scripts/bench-lib.sh

START=$SECONDS
# Others' work on the machine moves these figures: the load average goes into the table.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not '$ROUNDS'"
for p in "$MOSQ_PORT" "$LAB_PORT"; do
    [[ $p =~ ^[0-9]+$ && $p != 1883 && $p -lt 65536 ]] || die "bad port $p (and 1883 is never used)"
done
[[ $MOSQ_PORT != "$LAB_PORT" ]] || die "MOSQ_PORT and LAB_PORT must differ"

# 10,000 devices are 10,000 open files in the load generator and as many in the broker (each
# process has its own limit; both inherit this one).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < DEVICES + 100)); then
    die "the open-file limit is $(ulimit -n); $DEVICES connections need more (raise the hard limit)"
fi

build_release
find_mosquitto

# Only what this script writes is removed, whatever BENCH_DIR points at.
rm -rf "$W"
mkdir -p "$W/home/.config"
RESULTS=$W/results.jsonl
INCIDENTS=$W/incidents.txt
: >"$RESULTS"
: >"$INCIDENTS"
echo '(allow_anonymous: true, users: [])' >"$W/users.ron"
# mqtt-lab serves listed topics only. The names are the ones examples/bench uses
# (scale.rs: retained_topic, and devices/<id>/temperature).
python3 - "$W" "$TOPICS" "$DEVICES" <<'EOF'
import sys
w, topics, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def write(name, names):
    with open(f"{w}/{name}", "w") as f:
        f.write("(topics: [\n")
        f.writelines(f'    "{t}",\n' for t in names)
        f.write("])\n")
write("retained-topics.ron", (f"retained/{i // 1000}/{i % 1000}" for i in range(topics)))
write("device-topics.ron", (f"devices/{i}/temperature" for i in range(devices)))
EOF

# The same limits for both; errors and warnings only.
SAME_MOSQ=("max_inflight_messages 100" "set_tcp_nodelay true" "max_queued_messages 200000"
    "log_type error" "log_type warning")
SAME_LAB=(--max-inflight 100 --max-queued 200000 --sys-interval 0)
# mosquitto_conf NAME [config lines...]: a config of its own, listening on MOSQ_PORT.
mosquitto_conf() {
    local name=$1
    shift
    mkdir -p "$W/$name"
    {
        echo "listener $MOSQ_PORT 127.0.0.1"
        echo "allow_anonymous true"
        echo "log_dest stderr"
        printf '%s\n' "$@"
    } >"$W/$name/mosquitto.conf"
    echo "$W/$name/mosquitto.conf"
}
MOSQ_CONF=$(mosquitto_conf mosq "${SAME_MOSQ[@]}" "persistence false")
MOSQ_DEFAULTS_CONF=$(mosquitto_conf mosq-defaults)
# Mosquitto started as root writes its file as the user it drops to.
mkdir -p "$W/mosq-persist"
if ((EUID == 0)) && id mosquitto >/dev/null 2>&1; then chown mosquitto "$W/mosq-persist"; fi
MOSQ_PERSIST_CONF=$(mosquitto_conf mosq-persist "${SAME_MOSQ[@]}" "persistence true" \
    "persistence_location $W/mosq-persist/" "autosave_interval 3600")

# ---- one broker at a time: start, stop (only the PID started here) ----------------------------
PID=
NAME=
listening() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -qiE "^ *[0-9]+: [0-9A-F]{8}:$hex [0-9A-F]{8}:0000 0A" /proc/net/tcp
}
port_of() { if [[ $1 == mosquitto* ]]; then echo "$MOSQ_PORT"; else echo "$LAB_PORT"; fi; }
stop() {
    [[ -n $PID ]] || return 0
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
        echo "$NAME (pid $PID) did not stop within 10 s of SIGTERM: killed" >>"$INCIDENTS"
        kill -9 "$PID" 2>/dev/null || true
    fi
    wait "$PID" 2>/dev/null || true
    PID=
}
trap stop EXIT
# start NAME CONFIG-OR-OPTIONS...: mosquitto* NAME takes a config file, mqtt-lab* NAME the
# options beyond the port, users and home.
start() {
    local name=$1 port
    shift
    port=$(port_of "$name")
    ! listening "$port" || die "port $port is already in use: not starting $name there"
    NAME=$name
    if [[ $name == mosquitto* ]]; then
        "$MOSQUITTO" -c "$1" >>"$W/$name.log" 2>&1 &
    else
        HOME=$W/home XDG_CONFIG_HOME=$W/home/.config RUST_LOG=$LAB_LOG "$LAB_BIN" --headless \
            --port "$LAB_PORT" --users "$W/users.ron" "$@" >>"$W/$name.out" 2>>"$W/$name.log" &
    fi
    PID=$!
    for _ in $(seq 300); do
        listening "$port" && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    tail -5 "$W/$name.log" >&2 || true
    die "$name did not start listening on 127.0.0.1:$port (log: $W/$name.log)"
}
# A broker that died during a run is written down; the next start is a fresh one anyway.
check_alive() {
    local key=$1 round=$2 rc=0
    [[ -n $PID ]] || return 0
    kill -0 "$PID" 2>/dev/null && return 0
    wait "$PID" 2>/dev/null || rc=$?
    {
        echo "$NAME died during $key (round $round), exit status $rc; end of its log:"
        tail -20 "$W/$NAME.log" | sed 's/^/    /'
    } >>"$INCIDENTS"
    log "$NAME DIED during $key (round $round), exit status $rc"
    PID=
}
# run KEY BROKER ROUND PORT BENCH-ARGS...: one run; its JSON line goes to $RESULTS under BROKER
# (the column it belongs to: mosquitto or mqtt-lab).
run() {
    local key=$1 b=$2 round=$3 port=$4 line
    shift 4
    line=$("$BENCH_BIN" --port "$port" --label "$b" --timeout "$TIMEOUT" "$@" \
        2> >(sed 's/^/    /' >&2)) || true
    [[ $line == \{* ]] || line='{"ok": false, "error": "bench printed no result"}'
    printf '{"broker": "%s", "key": "%s", "round": %s, "r": %s}\n' "$b" "$key" "$round" "$line" \
        >>"$RESULTS"
    check_alive "$key" "$round"
}
# The brokers in round R's order.
order() { if (($1 % 2)); then echo mosquitto mqtt-lab; else echo mqtt-lab mosquitto; fi; }
# The broker's own start: examples/bench starts it (so that the clock starts with the process),
# times the CONNACK and stops it.
startup() {
    local key=$1 b=$2 round=$3
    shift 3
    if [[ $b == mosquitto ]]; then
        run "$key" "$b" "$round" "$MOSQ_PORT" startup -- "$MOSQUITTO" -c "$@"
    else
        HOME=$W/home XDG_CONFIG_HOME=$W/home/.config RUST_LOG=$LAB_LOG \
            run "$key" "$b" "$round" 0 startup -- "$LAB_BIN" --headless --port 0 \
            --users "$W/users.ron" --topics "$W/retained-topics.ron" --sys-interval 0 "$@"
    fi
}

log "mosquitto $MOSQ_VERSION on 127.0.0.1:$MOSQ_PORT, mqtt-lab on 127.0.0.1:$LAB_PORT (and a port" \
    "of its choosing for start-up); $ROUNDS rounds"

log "start-up with $TOPICS listed topics"
for round in $(seq "$ROUNDS"); do
    for b in $(order "$round"); do
        if [[ $b == mosquitto ]]; then
            startup start "$b" "$round" "$MOSQ_CONF"
        else
            startup start "$b" "$round" --no-persistence
        fi
    done
done

log "start-up with $TOPICS retained messages on disk"
# Fill each broker's file once: retain the messages, check a subscriber gets them, stop (both
# write their state by then).
start mqtt-lab-fill --topics "$W/retained-topics.ron" --data-dir "$W/lab-persist" "${SAME_LAB[@]}"
run fill mqtt-lab 0 "$LAB_PORT" retained --topics "$TOPICS" --qos 0
stop
start mosquitto-fill "$MOSQ_PERSIST_CONF"
run fill mosquitto 0 "$MOSQ_PORT" retained --topics "$TOPICS" --qos 0
stop
for round in $(seq "$ROUNDS"); do
    for b in $(order "$round"); do
        if [[ $b == mosquitto ]]; then
            startup start-persisted "$b" "$round" "$MOSQ_PERSIST_CONF"
        else
            startup start-persisted "$b" "$round" --data-dir "$W/lab-persist"
        fi
    done
done
# What the start-up loaded: all of it, once each, to a new `#` subscriber.
start mqtt-lab-restored --topics "$W/retained-topics.ron" --data-dir "$W/lab-persist" "${SAME_LAB[@]}"
run restored mqtt-lab 0 "$LAB_PORT" retained --topics "$TOPICS" --qos 0 --loaded
stop
start mosquitto-restored "$MOSQ_PERSIST_CONF"
run restored mosquitto 0 "$MOSQ_PORT" retained --topics "$TOPICS" --qos 0 --loaded
stop

# 160,000 messages: a few seconds at Mosquitto's rate, so that the figure is not a blip.
DEVICE_LOAD=(--clients "$DEVICES" --publishers 8 --count 20000 --size 64 --window 100)
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: $DEVICES devices, a fresh broker each"
    for b in $(order "$round"); do
        if [[ $b == mosquitto ]]; then
            start mosquitto "$MOSQ_CONF"
        else
            start mqtt-lab --topics "$W/device-topics.ron" --no-persistence "${SAME_LAB[@]}"
        fi
        for q in 0 1; do
            run "devices-q$q" "$b" "$round" "$(port_of "$b")" devices --qos "$q" "${DEVICE_LOAD[@]}"
        done
        stop
    done
done

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: a # subscriber and $TOPICS retained topics, a fresh broker each"
    for b in $(order "$round"); do
        if [[ $b == mosquitto ]]; then
            start mosquitto "$MOSQ_CONF"
        else
            start mqtt-lab --topics "$W/retained-topics.ron" --no-persistence "${SAME_LAB[@]}"
        fi
        port=$(port_of "$b")
        run retained-q1 "$b" "$round" "$port" retained --topics "$TOPICS" --qos 1
        run retained-q0 "$b" "$round" "$port" retained --topics "$TOPICS" --qos 0 --loaded
        stop
        # Shipped defaults: Mosquitto with a listener and allow_anonymous only; mqtt-lab with
        # the topic list and a data folder of its own only (persistence on, as shipped).
        if [[ $b == mosquitto ]]; then
            start mosquitto-defaults "$MOSQ_DEFAULTS_CONF"
        else
            rm -rf "$W/lab-defaults"
            start mqtt-lab-defaults --topics "$W/retained-topics.ron" --data-dir "$W/lab-defaults"
        fi
        run defaults-retained-q1 "$b" "$round" "$port" retained --topics "$TOPICS" --qos 1
        run defaults-retained-q0 "$b" "$round" "$port" retained --topics "$TOPICS" --qos 0 --loaded
        stop
    done
done

ELAPSED=$((SECONDS - START))
log "done in ${ELAPSED} s; raw results in $RESULTS, broker logs in $W"

# ---- the table ------------------------------------------------------------------------------
CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
OS=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}" || true)
MEM=$(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown)
MACHINE="$(nproc) cores (${CPU:-unknown CPU}), $MEM, Linux $(uname -r)${OS:+, $OS}; mosquitto $MOSQ_VERSION; mqtt-lab $COMMIT; load average $LOAD_BEFORE before the run, $(cut -d' ' -f1-3 /proc/loadavg) after"
python3 - "$RESULTS" "$INCIDENTS" "$ROUNDS" "$MACHINE" "$ELAPSED" <<'EOF' | tee "$W/table.md"
import json, statistics, sys

results, incidents, rounds, machine, elapsed = sys.argv[1:]
runs = {}
for line in open(results):
    d = json.loads(line)
    runs.setdefault((d["broker"], d["key"]), []).append(d["r"])
A, B = "mosquitto", "mqtt-lab"

def num(x, digits=0):
    return f"{x:,.{digits}f}"

def med(rs, field):
    v = [r[field] for r in rs if isinstance(r.get(field), (int, float))]
    return statistics.median(v) if v else None

def failures(rs):
    """What went wrong in the runs that failed, e.g. 'FAILED 3/3: lost 296,940 of 300,000'."""
    bad = [r for r in rs if not r.get("ok")]
    if not bad:
        return ""
    what = []
    lost = sum(r.get("lost") or 0 for r in bad)
    if lost:
        what.append(f"lost {num(lost)} of {num(sum(r.get('expected') or 0 for r in bad))}")
    for k in ("duplicates", "corrupt", "protocol_errors"):
        n = sum(r.get(k) or 0 for r in bad)
        if n:
            what.append(f"{num(n)} {k.replace('_', ' ')}")
    t = sum(1 for r in bad if r.get("timed_out"))
    if t:
        what.append(f"{t} timed out")
    errs = sorted({r["error"] for r in bad if r.get("error") and not r.get("timed_out")})
    if errs:
        what.append("error: " + "; ".join(errs)[:120])
    return f"**FAILED {len(bad)}/{len(rs)}**" + (": " + ", ".join(what) if what else "")

def cell(b, key, field, fmt):
    """A broker's median of `field` over the runs that passed, as a cell, and the median."""
    rs = runs.get((b, key), [])
    if not rs:
        return "not run", None
    ok = [r for r in rs if r.get("ok")]
    m = med(ok, field)
    f = failures(rs)
    text = fmt(m) if m is not None else ""
    if f:
        text += (", " if text else "") + f
        fast = med(rs, field)
        if m is None and fast is not None:
            text += f" (not counted: {fmt(fast)})"
    elif rs[0].get("lost") is not None:
        text += ", lost 0"
    return text, m

rows = []

def row(title, key, field, fmt, target, higher_better):
    (ca, a), (cb, b) = cell(A, key, field, fmt), cell(B, key, field, fmt)
    if a is None or b is None or not a or not b:
        who = [n for n, v in ((A, a), (B, b)) if v is None]
        ratio = f"n/a ({' and '.join(who)} failed)" if who else "n/a"
        verdict = "-"
    else:
        r = b / a
        ratio = f"{r:.2f}"
        if any(not x.get("ok") for k in (A, B) for x in runs.get((k, key), [])):
            ratio += " (some runs failed)"
        verdict = "-"
        if target:
            kind, goal = target
            if kind == "times":
                better = r if higher_better else 1 / r
                verdict = f"≥ {goal} × Mosquitto: **{'met' if better >= goal else 'missed'}** ({better:.2f} ×)"
            else:  # an absolute bound on mqtt-lab's figure
                verdict = f"< {goal} s: **{'met' if b < goal else 'missed'}**"
    rows.append((title, ca, cb, ratio, verdict))

secs = lambda v: f"{v:.3f} s"
ms = lambda v: f"{v * 1000:,.0f} ms"
rate = lambda v: f"{num(v)} msg/s"
row("start-up, no persistence: start to first CONNACK (mqtt-lab with 100,000 listed topics; Mosquitto has no topic list) (lower is better)",
    "start", "start_s", ms, ("abs", 1), False)
row("start-up with 100,000 retained messages on disk (mqtt-lab's state.sqlite3 and its 100,000 listed topics; Mosquitto's mosquitto.db)",
    "start-persisted", "start_s", ms, None, False)
row("10,000 devices on devices/<id>/#, 8 pubs × 20,000 × 64 B QoS 0 to random devices: delivered msg/s (higher is better)",
    "devices-q0", "msgs_per_s", rate, ("times", 3), True)
row("10,000 devices, the same at QoS 1 (window 100 a publisher, devices subscribed at QoS 1)",
    "devices-q1", "msgs_per_s", rate, ("times", 3), True)
row("new `#` subscriber (QoS 1) on 100,000 retained topics: SUBSCRIBE to the last retained message (lower is better)",
    "retained-q1", "retained_s", secs, ("times", 3), False)
row("new `#` subscriber (QoS 0), the same broker and messages", "retained-q0", "retained_s", secs, ("times", 3), False)
row("the same, QoS 1 subscriber, each broker at its shipped defaults (Mosquitto: max_queued_messages 1000, max_inflight_messages 20; mqtt-lab: max-queued 100,000, max-inflight 20, persistence on)",
    "defaults-retained-q1", "retained_s", secs, None, False)
row("the same, QoS 0 subscriber, shipped defaults", "defaults-retained-q0", "retained_s", secs, None, False)

notes = []
loads = []
for b in (A, B):
    for key, what in (("retained-q1", "the same limits"), ("defaults-retained-q1", "shipped defaults")):
        m = med([r for r in runs.get((b, key), []) if r.get("load_msgs_per_s")], "load_msgs_per_s")
        if m:
            loads.append(f"{b} {num(m)} msg/s ({what})")
if loads:
    notes.append("Retaining the 100,000 messages (8 loaders, QoS 1, window 100, every PUBACK awaited; not in the figures): " + "; ".join(loads) + ".")
firsts = []
for key, what in (("retained-q1", "QoS 1"), ("retained-q0", "QoS 0")):
    parts = []
    for b in (A, B):
        m = med([r for r in runs.get((b, key), []) if r.get("ok")], "first_s")
        if m is not None:
            parts.append(f"{b} {m * 1000:,.0f} ms")
    if parts:
        firsts.append(f"{what}: " + ", ".join(parts))
if firsts:
    notes.append("Of the `#` subscriber's time, until the first retained message arrived (matching and queueing, before any sending): " + "; ".join(firsts) + ".")
for b in (A, B):
    for key in ("fill", "restored"):
        for r in runs.get((b, key), []):
            if not r.get("ok"):
                notes.append(f"{b}: the {key} run for the persisted start-up failed ({failures([r])}): that row's file may not hold all 100,000 messages.")
restored = [b for b in (A, B) if any(r.get("ok") for r in runs.get((b, "restored"), []))]
if restored:
    notes.append("After the persisted start-ups, a new `#` subscriber got all 100,000 retained messages back from " + " and ".join(restored) + ".")
setup = []
for b in (A, B):
    m = med(runs.get((b, "devices-q0"), []) + runs.get((b, "devices-q1"), []), "setup_s")
    if m is not None:
        setup.append(f"{b} {m:.1f} s")
if setup:
    notes.append("Connecting and subscribing the 10,000 devices (100 handshakes at a time, not in the figures): " + ", ".join(setup) + " (median).")
notes.append("mqtt-lab serves only listed topics: the devices rows run it with the 10,000 devices/<id>/temperature topics listed, the retained rows with the 100,000 retained/<a>/<b> topics.")
print(f"Medians of {rounds} rounds (runs that passed; a run that loses, duplicates or corrupts a message, errs or times out fails).")
print("Ratio = mqtt-lab / mosquitto: above 1 is better for msg/s, below 1 is better for ms and s.\n")
print(f"| scenario | {A} | {B} | ratio ({B} / {A}) | target |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
for note in notes:
    print(f"\nNote: {note}")
print(f"\nMachine: {machine}.  ")
print(f"Whole run (build included): {elapsed} s.")
inc = open(incidents).read().strip()
if inc:
    print("\nIncidents:\n\n```\n" + inc + "\n```")
EOF
