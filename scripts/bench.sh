#!/usr/bin/env bash
# mqtt-lab against Mosquitto, side by side: the same MQTT 3.1.1 loads, interleaved, several rounds,
# and the fan-in QoS 1 and fan-out loads again in MQTT 5; prints a markdown table of medians with
# the ratio mqtt-lab / Mosquitto on stdout (progress on stderr).
#
#   scripts/bench.sh               # 3 rounds, about 4 to 5 minutes after the build
#   ROUNDS=1 scripts/bench.sh      # a quick look
#
# What it does: builds the headless broker (`--no-default-features`: the same broker code without
# the window, a much shorter build) and the load generator (examples/bench); installs Debian's
# mosquitto (and openssl) if missing; makes a throwaway CA and a server certificate for localhost
# (EC P-256) that both brokers' TLS listeners use; starts Mosquitto (its best settings:
# max_inflight_messages 100, set_tcp_nodelay true, max_queued_messages 100000; a plain and a TLS
# listener) and mqtt-lab with the same limits (plain, TLS, WebSocket and secure WebSocket doors),
# all on loopback; runs every message scenario against one broker then the other (which one goes
# first alternates by round), ROUNDS times; then, for `conns`, starts a fresh broker per run so
# that its memory growth is the connections' alone; stops the brokers it started (by PID) and
# prints the table. A run that loses messages, duplicates them, errs or times out is a failed run:
# the table shows it as such and takes medians over the runs that passed.
#
# TLS rows: both brokers on their TLS listeners with the same certificate and key. WebSocket rows:
# mqtt-lab only (Debian's Mosquitto 2.0.11 cannot open a WebSocket listener: "Unable to start any
# listening sockets"), held against mqtt-lab's own plain TCP figure and Mosquitto's from the same
# run; secure WebSocket against the two TLS figures.
#
# MQTT 5 rows: the plain TCP fan-in QoS 1 and fan-out QoS 0 loads with every client at protocol
# level 5 (`--v5`), and again with topic aliases (`--aliases`: each publisher sets one on its first
# PUBLISH and then sends the alias alone; subscribers take up to 10 from the broker), against both
# brokers (both offer 10 aliases); each is held against mqtt-lab's MQTT 3.1.1 row of the same load
# in the same run (the target: within 10 %, 0 lost) and against Mosquitto's MQTT 5 figure.
#
# Env: ROUNDS (3)  MOSQ_PORT (18841)  LAB_PORT (18842)  MOSQ_TLS_PORT (18843)  LAB_TLS_PORT (18844)
#      LAB_WS_PORT (18845)  LAB_WSS_PORT (18846)  BENCH_DIR (target/bench: configs, certificates,
#      broker logs, results.jsonl, table.md)  TIMEOUT (60 s per run)  LAB_LOG (RUST_LOG for
#      mqtt-lab, warn)  BENCH_THREADS (load generator worker threads, 0 = one per core)
#      CONNS (20000 idle connections; fewer if the open-file hard limit cannot hold them, said
#      in the log and the table)
# Never uses port 1883; the load generator refuses any host that is not loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
MOSQ_PORT=${MOSQ_PORT:-18841}
LAB_PORT=${LAB_PORT:-18842}
MOSQ_TLS_PORT=${MOSQ_TLS_PORT:-18843}
LAB_TLS_PORT=${LAB_TLS_PORT:-18844}
LAB_WS_PORT=${LAB_WS_PORT:-18845}
LAB_WSS_PORT=${LAB_WSS_PORT:-18846}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
TIMEOUT=${TIMEOUT:-60}
LAB_LOG=${LAB_LOG:-warn}
BENCH_THREADS=${BENCH_THREADS:-0}
CONNS=${CONNS:-20000}

BENCH_NAME=bench
source scripts/bench-lib.sh

START=$SECONDS
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not '$ROUNDS'"
ALL_PORTS=("$MOSQ_PORT" "$LAB_PORT" "$MOSQ_TLS_PORT" "$LAB_TLS_PORT" "$LAB_WS_PORT" "$LAB_WSS_PORT")
for p in "${ALL_PORTS[@]}"; do
    [[ $p =~ ^[0-9]+$ && $p != 1883 && $p -lt 65536 ]] || die "bad port $p (and 1883 is never used)"
done
(($(printf '%s\n' "${ALL_PORTS[@]}" | sort -u | wc -l) == ${#ALL_PORTS[@]})) ||
    die "the six ports must differ: ${ALL_PORTS[*]}"

[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "CONNS must be a positive number, not '$CONNS'"
# N idle connections need more than N open files in the load generator and in each broker: they
# all inherit this shell's soft limit, raised here as far as the hard limit lets it (only root,
# or a raised hard limit, gets more). Both brokers get the same limit; mqtt-lab would raise its
# own soft limit to the hard one anyway, Mosquitto does not.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CONNS_WANTED=$CONNS
if (($(ulimit -n) < CONNS + 100)); then
    CONNS=$(($(ulimit -n) - 100))
    ((CONNS > 0)) || die "the open-file limit is $(ulimit -n): too low for idle connections"
    log "the open-file limit is $(ulimit -n) (hard $(ulimit -Hn)): $CONNS idle connections, not" \
        "$CONNS_WANTED (raise the hard limit for all of them)"
fi

# Only what this script writes is removed, whatever BENCH_DIR points at.
mkdir -p "$BENCH_DIR"
rm -rf "$BENCH_DIR/home" "$BENCH_DIR/tls"
rm -f "$BENCH_DIR"/{results.jsonl,incidents.txt,table.md,mosquitto.conf,users.ron,mosquitto.log,mqtt-lab.log}
mkdir -p "$BENCH_DIR/home/.config"
RESULTS=$BENCH_DIR/results.jsonl
INCIDENTS=$BENCH_DIR/incidents.txt
: >"$RESULTS"
: >"$INCIDENTS"

build_release
find_mosquitto

# One certificate for both brokers, so both do the same cryptography: a throwaway CA and a server
# certificate it signs for localhost and 127.0.0.1, both EC P-256. The key is readable by all:
# Mosquitto started as root reads it after dropping to its own user, and it guards nothing.
if ! command -v openssl >/dev/null; then
    log "installing openssl (for the benchmark's certificates)"
    SUDO=
    ((EUID == 0)) || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q openssl >&2
fi
TLS_DIR=$BENCH_DIR/tls
mkdir -p "$TLS_DIR"
(
    cd "$TLS_DIR"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 30 -subj "/CN=bench CA"
    openssl req -new "${ec[@]}" -keyout server-key.pem -out server.csr -subj "/CN=localhost"
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
        -extfile server.ext -out server.pem
    chmod 644 server.pem server-key.pem ca.pem
) >"$TLS_DIR/openssl.log" 2>&1 || die "openssl could not make the certificates (see $TLS_DIR/openssl.log)"
CERT_TYPE="EC P-256 (prime256v1), signed by a throwaway EC P-256 CA"

# Mosquitto at its best; errors and warnings only, like mqtt-lab below.
cat >"$BENCH_DIR/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
listener $MOSQ_TLS_PORT 127.0.0.1
certfile $TLS_DIR/server.pem
keyfile $TLS_DIR/server-key.pem
allow_anonymous true
max_inflight_messages 100
set_tcp_nodelay true
max_queued_messages 100000
max_topic_alias 10
persistence false
log_dest stderr
log_type error
log_type warning
EOF
cat >"$BENCH_DIR/users.ron" <<EOF
(allow_anonymous: true, users: [])
EOF

# ---- brokers: start, check, stop (only the PIDs started here) -----------------------------------
declare -A PID=()
# The port of each broker's door; a broker waits for all of its doors when it starts.
declare -A PORT=([mosquitto/tcp]=$MOSQ_PORT [mosquitto/tls]=$MOSQ_TLS_PORT
    [mqtt-lab/tcp]=$LAB_PORT [mqtt-lab/tls]=$LAB_TLS_PORT [mqtt-lab/ws]=$LAB_WS_PORT
    [mqtt-lab/wss]=$LAB_WSS_PORT)
declare -A DOORS=([mosquitto]="tcp tls" [mqtt-lab]="tcp tls ws wss")
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

# Are all of broker B's doors listening?
all_listening() {
    local d
    for d in ${DOORS[$1]}; do
        listening "${PORT[$1/$d]}" || return 1
    done
}

start_broker() {
    local b=$1 d pid
    for d in ${DOORS[$b]}; do
        ! listening "${PORT[$b/$d]}" ||
            die "port ${PORT[$b/$d]} is already in use: not starting $b there (see the ports in Env above)"
    done
    case $b in
    mosquitto)
        "$MOSQUITTO" -c "$BENCH_DIR/mosquitto.conf" >>"$BENCH_DIR/mosquitto.log" 2>&1 &
        ;;
    mqtt-lab)
        HOME=$BENCH_DIR/home XDG_CONFIG_HOME=$BENCH_DIR/home/.config RUST_LOG=$LAB_LOG \
            "$LAB_BIN" --headless --port "$LAB_PORT" --tls-port "$LAB_TLS_PORT" \
            --ws-port "$LAB_WS_PORT" --wss-port "$LAB_WSS_PORT" \
            --cert "$TLS_DIR/server.pem" --key "$TLS_DIR/server-key.pem" \
            --topics "$ROOT/bench/topics.ron" \
            --users "$BENCH_DIR/users.ron" --max-inflight 100 --max-queued 100000 \
            --max-topic-alias 10 --send-topic-aliases \
            --sys-interval 0 >>"$BENCH_DIR/mqtt-lab.log" 2>&1 &
        ;;
    esac
    pid=$!
    PID[$b]=$pid
    for _ in $(seq 100); do
        all_listening "$b" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -5 "$BENCH_DIR/$b.log" >&2 || true
    local ports=
    for d in ${DOORS[$b]}; do ports+=" ${PORT[$b/$d]} ($d)"; done
    die "$b did not start listening on 127.0.0.1 at all of:$ports (log: $BENCH_DIR/$b.log)"
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

# run BROKER TRANSPORT KEY ROUND BENCH-ARGS...: one run; its JSON line goes to $RESULTS
run() {
    local b=$1 t=$2 key=$3 round=$4 line
    shift 4
    line=$("$BENCH_BIN" --port "${PORT[$b/$t]}" --transport "$t" --cafile "$TLS_DIR/ca.pem" \
        --label "$b" --timeout "$TIMEOUT" --threads "$BENCH_THREADS" "$@" \
        2> >(sed 's/^/    /' >&2)) || true
    [[ $line == \{* ]] || line='{"ok": false, "error": "bench printed no result"}'
    printf '{"broker": "%s", "key": "%s", "round": %s, "r": %s}\n' "$b" "$key" "$round" "$line" \
        >>"$RESULTS"
}

# The loads: KEY|transport|brokers|arguments of examples/bench. The TLS, WebSocket, secure WebSocket
# and MQTT 5 loads are the plain fan-in QoS 1 and fan-out ones; each WebSocket load runs right after
# the load it is held against, and the MQTT 5 ones right after that, so that they all see the
# machine as alike as it gets.
FANIN_Q1="fanin --qos 1 --publishers 8 --count 10000 --size 64 --window 100"
FANOUT_Q0="fanout --qos 0 --subscribers 32 --count 10000 --size 64"
BOTH="mosquitto mqtt-lab"
SCENARIOS=(
    "fanin-q0|tcp|$BOTH|fanin --qos 0 --publishers 8 --count 10000 --size 64"
    "fanin-q1|tcp|$BOTH|$FANIN_Q1"
    "ws-fanin-q1|ws|mqtt-lab|$FANIN_Q1"
    "v5-fanin-q1|tcp|$BOTH|$FANIN_Q1 --v5"
    "v5-alias-fanin-q1|tcp|$BOTH|$FANIN_Q1 --v5 --aliases"
    "fanin-q2|tcp|$BOTH|fanin --qos 2 --publishers 8 --count 10000 --size 64 --window 100"
    "fanout-q0|tcp|$BOTH|$FANOUT_Q0"
    "ws-fanout-q0|ws|mqtt-lab|$FANOUT_Q0"
    "v5-fanout-q0|tcp|$BOTH|$FANOUT_Q0 --v5"
    "v5-alias-fanout-q0|tcp|$BOTH|$FANOUT_Q0 --v5 --aliases"
    "latency-q0|tcp|$BOTH|latency --qos 0 --rate 1000 --count 5000 --size 64"
    "latency-q1|tcp|$BOTH|latency --qos 1 --rate 1000 --count 5000 --size 64"
    "tls-fanin-q1|tls|$BOTH|$FANIN_Q1"
    "wss-fanin-q1|wss|mqtt-lab|$FANIN_Q1"
    "tls-fanout-q0|tls|$BOTH|$FANOUT_Q0"
    "wss-fanout-q0|wss|mqtt-lab|$FANOUT_Q0"
)
# The brokers of a load that runs on BROKERS, in round R's order.
order() {
    local r=$1 b
    shift
    for b in $(if ((r % 2)); then echo mosquitto mqtt-lab; else echo mqtt-lab mosquitto; fi); do
        if [[ " $* " == *" $b "* ]]; then echo "$b"; fi
    done
}

log "mosquitto $MOSQ_VERSION on 127.0.0.1:$MOSQ_PORT (TLS $MOSQ_TLS_PORT), mqtt-lab on" \
    "127.0.0.1:$LAB_PORT (TLS $LAB_TLS_PORT, WebSocket $LAB_WS_PORT, secure WebSocket $LAB_WSS_PORT);" \
    "$ROUNDS rounds"
start_broker mosquitto
start_broker mqtt-lab
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: message loads"
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r key transport brokers rest <<<"$s"
        read -ra args <<<"$rest"
        for b in $(order "$round" $brokers); do
            run "$b" "$transport" "$key" "$round" "${args[@]}"
            check_alive "$b" "$key" "$round"
        done
    done
done
stop_broker mosquitto
stop_broker mqtt-lab

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: $CONNS idle connections, a fresh broker for each run"
    for b in $(order "$round" $BOTH); do
        start_broker "$b"
        # Let it finish starting, and its allocator give back what starting freed (jemalloc,
        # within a second), before its memory is read.
        sleep 3
        grep -i '^Max open files' "/proc/${PID[$b]}/limits" | sed "s/^/    $b: /" >&2 || true
        run "$b" tcp "conns" "$round" conns --connections "$CONNS" --pid "${PID[$b]}"
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
python3 - "$RESULTS" "$INCIDENTS" "$ROUNDS" "$MACHINE" "$ELAPSED" "$CERT_TYPE" "$CONNS" "$CONNS_WANTED" <<'EOF' | tee "$BENCH_DIR/table.md"
import json, sys, statistics

results, incidents, rounds, machine, elapsed, cert_type, conns_n, conns_wanted = sys.argv[1:]
conns_n, conns_wanted = int(conns_n), int(conns_wanted)
runs = {}
for line in open(results):
    d = json.loads(line)
    d["r"]["script_round"] = d["round"]
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
    for k in ("corrupt", "protocol_errors", "refused"):
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

def rate_cell(b, key):
    """A broker's median msg/s for a load, as a cell, and the median (None if no run passed)."""
    rs = runs.get((b, key), [])
    ok = good(rs)
    m = med(ok, "msgs_per_s")
    lost = sum(r.get("lost") or 0 for r in rs)
    f = failures(rs)
    text = (f"{num(m)} msg/s, " if m is not None else "") + (f if f else f"lost {num(lost)}")
    if not ok and rs and med(rs, "msgs_per_s"):
        text += f" (fast but not counted: {num(med(rs, 'msgs_per_s'))} msg/s)"
    return (text if rs else "not run"), m

def throughput(key, title):
    (ca, a), (cb, b) = rate_cell(A, key), rate_cell(B, key)
    ratio = ratio_of([a, b], runs.get((A, key), []), runs.get((B, key), []))
    rows.append((title, ca, cb, ratio))

def mqtt_lab_only(key, title, ref_key, ref_name, why):
    """A load only mqtt-lab runs: its figure against both brokers' `ref_key` figures of the same run."""
    cell, m = rate_cell(B, key)
    parts = []
    for who, b in (("mqtt-lab", B), ("Mosquitto", A)):
        ref = rate_cell(b, ref_key)[1]
        if m is None or not ref:
            parts.append(f"n/a against {who}'s {ref_name} (a run failed)")
        else:
            parts.append(f"{m / ref:.2f} × {who}'s {ref_name}")
    rows.append((title, why, cell, "; ".join(parts)))

# MQTT 5 loads: each against mqtt-lab's MQTT 3.1.1 load of the same run; the target.
V5_TARGET = 0.90

def v5_row(key, ref_key, title):
    """An MQTT 5 load: both brokers' figures; the ratio to mqtt-lab's MQTT 3.1.1 figure for the same
    load (against the target), then to Mosquitto's MQTT 5 figure."""
    (ca, a), (cb, b) = rate_cell(A, key), rate_cell(B, key)
    ref = rate_cell(B, ref_key)[1]
    ra, rb = runs.get((A, key), []), runs.get((B, key), [])
    if b is None or not ref:
        own = "n/a against mqtt-lab's MQTT 3.1.1 (a run failed)"
    else:
        r = b / ref
        # The target is the ratio with nothing lost: a failed run misses it whatever the median.
        if len(good(rb)) < len(rb):
            verdict = "**missed** (a run failed)"
        else:
            verdict = "met" if r >= V5_TARGET else "**missed**"
        own = f"{r:.2f} × mqtt-lab's MQTT 3.1.1 (target ≥ {V5_TARGET:.2f}, 0 lost: {verdict})"
    parts = [own]
    if ra:
        parts.append(ratio_of([a, b], ra, rb) + " × Mosquitto's MQTT 5")
    rows.append((title, ca, cb, "; ".join(parts)))

def per_round(b, key, ref_key):
    """Round by round: broker b's figure for `key` over its figure for `ref_key` in the same round."""
    ref = {r["script_round"]: r.get("msgs_per_s") for r in good(runs.get((b, ref_key), []))}
    out = []
    for r in runs.get((b, key), []):
        x, y = r.get("msgs_per_s") if r.get("ok") else None, ref.get(r["script_round"])
        out.append(f"{x / y:.2f}" if x and y else "n/a")
    return ", ".join(out)

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
conns("connect_s", "s", 2, f"{conns_n:,} idle connections (CONNECT + SUBSCRIBE): time until all are acknowledged (s; lower is better)")
conns("rss_per_conn_kb", "kB", 1, f"{conns_n:,} idle connections: broker memory per connection (RSS growth, kB; lower is better)")
throughput("tls-fanin-q1", "TLS fan-in QoS 1: fan-in QoS 1 over TLS (each broker's TLS listener, one certificate for both)")
throughput("tls-fanout-q0", "TLS fan-out QoS 0: fan-out QoS 0 over TLS")
NO_WS = "no WebSocket listener (see the note)"
mqtt_lab_only("ws-fanin-q1", "WebSocket fan-in QoS 1: fan-in QoS 1 over ws://…/mqtt, mqtt-lab only (ratio: to each broker's plain TCP fan-in QoS 1)",
              "fanin-q1", "plain TCP", NO_WS)
mqtt_lab_only("ws-fanout-q0", "WebSocket fan-out QoS 0: fan-out QoS 0 over ws://…/mqtt, mqtt-lab only (ratio: to each broker's plain TCP fan-out)",
              "fanout-q0", "plain TCP", NO_WS)
mqtt_lab_only("wss-fanin-q1", "secure WebSocket fan-in QoS 1: over wss://…/mqtt, mqtt-lab only (ratio: to each broker's TLS fan-in QoS 1)",
              "tls-fanin-q1", "TLS", NO_WS)
mqtt_lab_only("wss-fanout-q0", "secure WebSocket fan-out QoS 0: over wss://…/mqtt, mqtt-lab only (ratio: to each broker's TLS fan-out)",
              "tls-fanout-q0", "TLS", NO_WS)
V5_LOADS = (
    ("v5-fanin-q1", "fanin-q1", "fan-in QoS 1",
     "MQTT 5 fan-in QoS 1: fan-in QoS 1 with every client at protocol level 5 (ratio: to mqtt-lab's MQTT 3.1.1 fan-in QoS 1 of the same run, and to Mosquitto's MQTT 5)"),
    ("v5-alias-fanin-q1", "fanin-q1", "fan-in QoS 1 with aliases",
     "MQTT 5 fan-in QoS 1 with topic aliases: each publisher sends its alias alone after the first PUBLISH; the subscriber takes up to 10"),
    ("v5-fanout-q0", "fanout-q0", "fan-out",
     "MQTT 5 fan-out QoS 0 (ratio: to mqtt-lab's MQTT 3.1.1 fan-out of the same run, and to Mosquitto's MQTT 5)"),
    ("v5-alias-fanout-q0", "fanout-q0", "fan-out with aliases",
     "MQTT 5 fan-out QoS 0 with topic aliases (publisher and the 32 subscribers)"),
)
for key, ref_key, _, title in V5_LOADS:
    v5_row(key, ref_key, title)

notes = []
if conns_n < conns_wanted:
    notes.append(f"Idle connections: {conns_n:,}, not {conns_wanted:,}: the open-file hard limit of this "
                 "machine holds no more (each broker and the load generator need one descriptor per connection).")
for (b, key), rs in sorted(runs.items()):
    open_hs = [r.get("open_handshakes") or 0 for r in rs if r.get("ok")]
    if any(open_hs):
        notes.append(f"{b}, {key}: every message arrived, but a median of {num(statistics.median(open_hs))} "
                     "QoS 2 PUBRELs were still unsent 2 s after the last one (slow handshakes, not lost messages).")
suites = {}
for (b, key), rs in runs.items():
    for r in rs:
        if r.get("tls"):
            suites.setdefault(b, set()).add(r["tls"])
if suites:
    said = "; ".join(f"{b} {', '.join(sorted(v))}" for b, v in sorted(suites.items()))
    notes.append(f"TLS: both brokers use one certificate and key, {cert_type}; negotiated: {said}.")
cost = []
for b, name in ((A, "mosquitto"), (B, "mqtt-lab")):
    pairs = []
    for plain, tls, what in (("fanin-q1", "tls-fanin-q1", "fan-in QoS 1"), ("fanout-q0", "tls-fanout-q0", "fan-out")):
        p, t = rate_cell(b, plain)[1], rate_cell(b, tls)[1]
        if p and t is not None:
            pairs.append(f"{what} {t / p:.2f}")
    if pairs:
        cost.append(f"{name} {', '.join(pairs)}")
if cost:
    notes.append("TLS against plain TCP, each broker against itself in the same run: " + "; ".join(cost) + ".")
v5_keys = [load for load in V5_LOADS if any(k == load[0] for _, k in runs)]
if v5_keys:
    said = []
    for b in (A, B):
        pairs = [f"{what} {num(rate_cell(b, key)[1] / rate_cell(b, ref)[1], 2)}"
                 for key, ref, what, _ in v5_keys if rate_cell(b, key)[1] and rate_cell(b, ref)[1]]
        if pairs:
            said.append(f"{b} {', '.join(pairs)}")
    if said:
        notes.append("MQTT 5 against MQTT 3.1.1, each broker against itself in the same run (medians): "
                     + "; ".join(said) + ".")
    notes.append("MQTT 5 against MQTT 3.1.1 round by round, mqtt-lab: "
                 + "; ".join(f"{what} {per_round(B, key, ref)}" for key, ref, what, _ in v5_keys) + ".")
    used = []
    for b in (A, B):
        for key, _, what, _ in v5_keys:
            if "alias" not in key:
                continue
            ok = good(runs.get((b, key), []))
            if ok:
                sent = statistics.median(r.get("aliased_sent") or 0 for r in ok)
                got = statistics.median(r.get("aliased_received") or 0 for r in ok)
                rx = statistics.median(r.get("received") or 0 for r in ok)
                used.append(f"{b}, {what}: {num(sent)} alias-only PUBLISHes taken from the publishers, "
                            f"{num(got)} of {num(rx)} deliveries sent with the alias alone")
    if used:
        notes.append("Topic aliases (medians per run): " + "; ".join(used) + ".")
if any(k.startswith("ws") for _, k in runs):
    notes.append("WebSocket rows are mqtt-lab's alone: Debian's Mosquitto 2.0.11 cannot open a WebSocket "
                 "listener (\"Unable to start any listening sockets\"), so they are held against the plain "
                 "TCP rows (secure WebSocket: the TLS rows) of both brokers in the same run.")
print(f"Medians of {rounds} rounds (runs that passed; a run that loses, duplicates or corrupts a message, errs or times out fails).")
print("Ratio = mqtt-lab / mosquitto (unless the row says otherwise): above 1 is better for msg/s, below 1 is better for µs, s and kB.\n")
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
