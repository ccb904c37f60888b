#!/usr/bin/env bash
# mqtt-lab against Mosquitto, side by side: the same MQTT 3.1.1 loads, interleaved, several rounds;
# prints a markdown table of medians with the ratio mqtt-lab / Mosquitto on stdout (progress on
# stderr).
#
#   scripts/bench.sh               # 3 rounds, about 3 minutes after the build
#   ROUNDS=1 scripts/bench.sh      # a quick look
#
# What it does: builds the headless broker (`--no-default-features`: the same broker code without
# the window, a much shorter build) and the load generator (examples/bench); installs Debian's
# mosquitto if it is missing; starts Mosquitto (its best settings: max_inflight_messages 100,
# set_tcp_nodelay true, max_queued_messages 100000) and mqtt-lab with the same limits, both on
# loopback; runs every message scenario against one broker then the other (which one goes first
# alternates by round), ROUNDS times; then, for `conns`, starts a fresh broker per run so that its
# memory growth is the connections' alone; stops the brokers it started (by PID) and prints the
# table. A run that loses messages, duplicates them, errs or times out is a failed run: the table
# shows it as such and takes medians over the runs that passed.
#
# Env: ROUNDS (3)  MOSQ_PORT (18841)  LAB_PORT (18842)  BENCH_DIR (target/bench: configs, broker
#      logs, results.jsonl, table.md)  TIMEOUT (60 s per run)  LAB_LOG (RUST_LOG for mqtt-lab, warn)
#      BENCH_THREADS (load generator worker threads, 0 = one per core)
# Never uses port 1883; the load generator refuses any host that is not loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
MOSQ_PORT=${MOSQ_PORT:-18841}
LAB_PORT=${LAB_PORT:-18842}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
TIMEOUT=${TIMEOUT:-60}
LAB_LOG=${LAB_LOG:-warn}
BENCH_THREADS=${BENCH_THREADS:-0}
CONNS=5000

log() { echo "[bench $(date +%T)] $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

START=$SECONDS
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not '$ROUNDS'"
for p in "$MOSQ_PORT" "$LAB_PORT"; do
    [[ $p =~ ^[0-9]+$ && $p != 1883 && $p -lt 65536 ]] || die "bad port $p (and 1883 is never used)"
done
[[ $MOSQ_PORT != "$LAB_PORT" ]] || die "MOSQ_PORT and LAB_PORT must differ"

# 5000 idle connections need more than 5000 open files, here and in the brokers (which inherit it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < CONNS + 100)); then
    die "the open-file limit is $(ulimit -n); $CONNS connections need more (raise the hard limit)"
fi

# Only what this script writes is removed, whatever BENCH_DIR points at.
mkdir -p "$BENCH_DIR"
rm -rf "$BENCH_DIR/home"
rm -f "$BENCH_DIR"/{results.jsonl,incidents.txt,table.md,mosquitto.conf,users.ron,mosquitto.log,mqtt-lab.log}
mkdir -p "$BENCH_DIR/home/.config"
RESULTS=$BENCH_DIR/results.jsonl
INCIDENTS=$BENCH_DIR/incidents.txt
: >"$RESULTS"
: >"$INCIDENTS"

log "building the headless broker and the load generator (release)"
cargo build --release --locked --no-default-features --bin mqtt-lab --example bench >&2
LAB_BIN=$ROOT/target/release/mqtt-lab
BENCH_BIN=$ROOT/target/release/examples/bench

MOSQUITTO=$(command -v mosquitto || true)
[[ -n $MOSQUITTO ]] || [[ ! -x /usr/sbin/mosquitto ]] || MOSQUITTO=/usr/sbin/mosquitto
if [[ -z $MOSQUITTO ]]; then
    log "installing Debian's mosquitto (the package may start a system broker on 1883: unused here)"
    SUDO=
    ((EUID == 0)) || SUDO=sudo
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q mosquitto >&2
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
MOSQ_VERSION=$("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/^mosquitto //' || true)

# Mosquitto at its best; errors and warnings only, like mqtt-lab below.
cat >"$BENCH_DIR/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
max_inflight_messages 100
set_tcp_nodelay true
max_queued_messages 100000
persistence false
log_dest stderr
log_type error
log_type warning
EOF
cat >"$BENCH_DIR/users.ron" <<EOF
(allow_anonymous: true, users: [])
EOF

# ---- brokers: start, check, stop (only the PIDs started here) -----------------------------------
declare -A PID=() PORT=([mosquitto]=$MOSQ_PORT [mqtt-lab]=$LAB_PORT)
cleanup() {
    for b in "${!PID[@]}"; do
        [[ -n ${PID[$b]} ]] && kill "${PID[$b]}" 2>/dev/null
    done
    true
}
trap cleanup EXIT

# Is something listening on 127.0.0.1:PORT? (/proc/net/tcp, state 0A = LISTEN)
listening() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -qiE "^ *[0-9]+: [0-9A-F]{8}:$hex [0-9A-F]{8}:0000 0A" /proc/net/tcp
}

start_broker() {
    local b=$1 port=${PORT[$1]} pid
    listening "$port" && die "port $port is already in use: not starting $b there (set ${b^^}_PORT)"
    case $b in
    mosquitto)
        "$MOSQUITTO" -c "$BENCH_DIR/mosquitto.conf" >>"$BENCH_DIR/mosquitto.log" 2>&1 &
        ;;
    mqtt-lab)
        HOME=$BENCH_DIR/home XDG_CONFIG_HOME=$BENCH_DIR/home/.config RUST_LOG=$LAB_LOG \
            "$LAB_BIN" --headless --port "$port" --topics "$ROOT/bench/topics.ron" \
            --users "$BENCH_DIR/users.ron" --max-inflight 100 --max-queued 100000 \
            --sys-interval 0 >>"$BENCH_DIR/mqtt-lab.log" 2>&1 &
        ;;
    esac
    pid=$!
    PID[$b]=$pid
    for _ in $(seq 100); do
        listening "$port" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -5 "$BENCH_DIR/$b.log" >&2 || true
    die "$b did not start listening on 127.0.0.1:$port (log: $BENCH_DIR/$b.log)"
}

stop_broker() {
    local b=$1 pid=${PID[$1]:-}
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$b (pid $pid) did not stop within 5 s of SIGTERM: killed" >>"$INCIDENTS"
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    PID[$b]=
}

# A broker that died during a run is written down (with the end of its log) and restarted.
check_alive() {
    local b=$1 key=$2 round=$3 rc=0
    kill -0 "${PID[$b]}" 2>/dev/null && return 0
    wait "${PID[$b]}" 2>/dev/null || rc=$?
    {
        echo "$b died during $key (round $round), exit status $rc; end of its log:"
        tail -20 "$BENCH_DIR/$b.log" | sed 's/^/    /'
    } >>"$INCIDENTS"
    log "$b DIED during $key (round $round), exit status $rc: restarting it"
    PID[$b]=
    start_broker "$b"
}

# run BROKER KEY ROUND BENCH-ARGS...: one run; its JSON line goes to $RESULTS
run() {
    local b=$1 key=$2 round=$3 line
    shift 3
    line=$("$BENCH_BIN" --port "${PORT[$b]}" --label "$b" --timeout "$TIMEOUT" \
        --threads "$BENCH_THREADS" "$@" 2> >(sed 's/^/    /' >&2)) || true
    [[ $line == \{* ]] || line='{"ok": false, "error": "bench printed no result"}'
    printf '{"broker": "%s", "key": "%s", "round": %s, "r": %s}\n' "$b" "$key" "$round" "$line" \
        >>"$RESULTS"
}

# The loads: KEY|arguments of examples/bench.
SCENARIOS=(
    "fanin-q0|fanin --qos 0 --publishers 8 --count 10000 --size 64"
    "fanin-q1|fanin --qos 1 --publishers 8 --count 10000 --size 64 --window 100"
    "fanin-q2|fanin --qos 2 --publishers 8 --count 10000 --size 64 --window 100"
    "fanout-q0|fanout --qos 0 --subscribers 32 --count 10000 --size 64"
    "latency-q0|latency --qos 0 --rate 1000 --count 5000 --size 64"
    "latency-q1|latency --qos 1 --rate 1000 --count 5000 --size 64"
)
order() { if (($1 % 2)); then echo mosquitto mqtt-lab; else echo mqtt-lab mosquitto; fi; }

log "mosquitto $MOSQ_VERSION on 127.0.0.1:$MOSQ_PORT, mqtt-lab on 127.0.0.1:$LAB_PORT; $ROUNDS rounds"
start_broker mosquitto
start_broker mqtt-lab
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: message loads"
    for s in "${SCENARIOS[@]}"; do
        key=${s%%|*}
        read -ra args <<<"${s#*|}"
        for b in $(order "$round"); do
            run "$b" "$key" "$round" "${args[@]}"
            check_alive "$b" "$key" "$round"
        done
    done
done
stop_broker mosquitto
stop_broker mqtt-lab

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: $CONNS idle connections, a fresh broker for each run"
    for b in $(order "$round"); do
        start_broker "$b"
        sleep 0.5 # let it finish starting before its memory is read
        run "$b" "conns" "$round" conns --connections "$CONNS" --pid "${PID[$b]}"
        check_alive "$b" conns "$round"
        stop_broker "$b"
    done
done

ELAPSED=$((SECONDS - START))
log "done in ${ELAPSED} s; raw results in $RESULTS, broker logs in $BENCH_DIR"

# ---- the table ------------------------------------------------------------------------------
CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
OS=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}" || true)
MEM=$(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown)
MACHINE="$(nproc) cores (${CPU:-unknown CPU}), $MEM, Linux $(uname -r)${OS:+, $OS}; mosquitto $MOSQ_VERSION; mqtt-lab $COMMIT"
python3 - "$RESULTS" "$INCIDENTS" "$ROUNDS" "$MACHINE" "$ELAPSED" <<'EOF' | tee "$BENCH_DIR/table.md"
import json, sys, statistics

results, incidents, rounds, machine, elapsed = sys.argv[1:]
runs = {}
for line in open(results):
    d = json.loads(line)
    runs.setdefault((d["broker"], d["key"]), []).append(d["r"])
A, B = "mosquitto", "mqtt-lab"

def good(rs):
    return [r for r in rs if r.get("ok")]

def med(rs, field):
    v = [r[field] for r in rs if isinstance(r.get(field), (int, float))]
    return statistics.median(v) if v else None

def num(x, digits=0):
    return f"{x:,.{digits}f}"

def failures(rs):
    """What went wrong in the runs that failed, e.g. 'FAILED 3/3: lost 219,000 of 240,000'."""
    bad = [r for r in rs if not r.get("ok")]
    if not bad:
        return ""
    what = []
    lost = sum(r.get("lost") or 0 for r in bad)
    expected = sum(r.get("expected") or r.get("connections") or 0 for r in bad)
    if lost:
        what.append(f"lost {num(lost)} of {num(expected)}")
    dups = sum(r.get("duplicates") or 0 for r in bad)
    if dups:
        what.append(f"{num(dups)} duplicates")
    for k in ("corrupt", "protocol_errors"):
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

rows = []

def throughput(key, title):
    cells, vals = [], []
    for b in (A, B):
        rs = runs.get((b, key), [])
        ok = good(rs)
        m = med(ok, "msgs_per_s")
        lost = sum(r.get("lost") or 0 for r in rs)
        f = failures(rs)
        text = (f"{num(m)} msg/s, " if m is not None else "") + (f if f else f"lost {num(lost)}")
        if not ok and rs and med(rs, "msgs_per_s"):
            text += f" (fast but not counted: {num(med(rs, 'msgs_per_s'))} msg/s)"
        cells.append(text if rs else "not run")
        vals.append(m)
    ratio = ratio_of(vals, runs.get((A, key), []), runs.get((B, key), []))
    rows.append((title, *cells, ratio))

def ratio_of(vals, ra, rb, digits=2):
    a, b = vals
    if a is None or b is None or a == 0:
        who = [n for n, v in ((A, a), (B, b)) if v is None]
        return f"n/a ({' and '.join(who)} failed)" if who else "n/a"
    r = f"{b / a:.{digits}f}"
    if len(good(ra)) < len(ra) or len(good(rb)) < len(rb):
        r += " (some runs failed)"
    return r

def latency(key, title):
    cells, meds = [], []
    for b in (A, B):
        rs = runs.get((b, key), [])
        ok = good(rs)
        p = [med(ok, k) for k in ("p50_us", "p99_us", "max_us")]
        lost = sum(r.get("lost") or 0 for r in rs)
        f = failures(rs)
        if None in p:
            cells.append(f or "not run")
        else:
            cells.append(" / ".join(num(x) for x in p) + " µs, " + (f if f else f"lost {num(lost)}"))
        meds.append(p)
    ra, rb = runs.get((A, key), []), runs.get((B, key), [])
    if None in meds[0] or None in meds[1]:
        ratio = ratio_of([None if None in meds[0] else 1, None if None in meds[1] else 1], ra, rb)
    else:
        ratio = " / ".join(f"{b / a:.2f}" if a else "n/a" for a, b in zip(*meds))
        if len(good(ra)) < len(ra) or len(good(rb)) < len(rb):
            ratio += " (some runs failed)"
    rows.append((title, *cells, ratio))

def conns(field, unit, digits, title):
    cells, vals = [], []
    for b in (A, B):
        rs = runs.get((b, "conns"), [])
        ok = good(rs)
        m = med(ok, field)
        f = failures(rs)
        failed = sum(r.get("failed") or 0 for r in rs)
        text = f"{num(m, digits)} {unit}" if m is not None else ""
        text += (", " if text else "") + (f if f else f"{failed} failed")
        cells.append(text if rs else "not run")
        vals.append(m)
    rows.append((title, *cells, ratio_of(vals, runs.get((A, "conns"), []), runs.get((B, "conns"), []))))

throughput("fanin-q0", "fan-in QoS 0: 8 pubs × 10,000 × 64 B → 1 sub on bench/# (received msg/s; higher is better)")
throughput("fanin-q1", "fan-in QoS 1 (same, window 100 per publisher)")
throughput("fanin-q2", "fan-in QoS 2 (same, window 100 per publisher)")
throughput("fanout-q0", "fan-out QoS 0: 1 pub × 10,000 × 64 B → 32 subs (deliveries/s in total; higher is better)")
latency("latency-q0", "latency QoS 0: 5,000 msgs at 1,000 msg/s, p50 / p99 / max (µs; lower is better)")
latency("latency-q1", "latency QoS 1 (same)")
conns("connect_s", "s", 2, "5,000 idle connections (CONNECT + SUBSCRIBE): time until all are acknowledged (s; lower is better)")
conns("rss_per_conn_kb", "kB", 1, "5,000 idle connections: broker memory per connection (RSS growth, kB; lower is better)")

notes = []
for (b, key), rs in sorted(runs.items()):
    open_hs = [r.get("open_handshakes") or 0 for r in rs if r.get("ok")]
    if any(open_hs):
        notes.append(f"{b}, {key}: every message arrived, but a median of {num(statistics.median(open_hs))} "
                     "QoS 2 PUBRELs were still unsent 2 s after the last one (slow handshakes, not lost messages).")
print(f"Medians of {rounds} rounds (runs that passed; a run that loses, duplicates or corrupts a message, errs or times out fails).")
print("Ratio = mqtt-lab / mosquitto: above 1 is better for msg/s, below 1 is better for µs, s and kB.\n")
print(f"| scenario | {A} | {B} | ratio ({B} / {A}) |")
print("|---|---|---|---|")
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
