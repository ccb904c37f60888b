#!/usr/bin/env bash
# Runs the real window under Xvfb against live clients (mosquitto_pub/sub) and saves
# screenshots of the Topics, Clients, History (a chart), Scenarios (the QoS scenario run to its
# end), Lab clients, Trace, Users and Bridges panels, Clients under flow control and the saved-state window in
# OUT_DIR (default target/gui-smoke).
# Fails if the window does not come up, the broker does not serve, a screenshot is blank, or
# the window does not stop cleanly when closed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MQTT_LAB_BIN:-target/debug/mqtt-lab}
OUT_DIR=${OUT_DIR:-target/gui-smoke}
WORK=$(mktemp -d)
mkdir -p "$OUT_DIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [[ -n ${KEEP:-} ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT

DISPLAY_NUM=:$((90 + RANDOM % 9))
Xvfb "$DISPLAY_NUM" -screen 0 1100x720x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [[ -e /tmp/.X11-unix/X${DISPLAY_NUM#:} ]] && break; sleep 0.1; done

cat >"$WORK/topics.ron" <<'RON'
(topics: ["lab/temperature", "lab/humidity", "lab/door", "lab/led", "lab/chat", "lab/light", "devices/+/temperature", "students/#"])
RON
# Two students who may publish only under their own branch, and open anonymous logins.
for s in ada bob; do "$BIN" user add "$s" --password "pw-$s" --users "$WORK/users.ron" 2>/dev/null; done
python3 - "$WORK/users.ron" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
rules = 'rules: (publish: ["students/%u/#"], subscribe: ["students/#"]),'
text = re.sub(r'(password_hash: "[^"]*",)', r'\1 ' + rules, text)
open(path, "w").write(text)
EOF
# A department's Mosquitto that the lab bridges its readings to (and takes the LED's commands
# from), and a bridge to a broker that is not there.
MPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$MPORT" >"$WORK/mosquitto.conf"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
pids+=($!)
cat >"$WORK/bridges.ron" <<RON
(bridges: [
    (name: "department", address: "mqtt://127.0.0.1:$MPORT", topics: [
        (pattern: "lab/#", direction: Out, qos: 1, remote_prefix: "labs/lab-2/"),
        (pattern: "lab/led", direction: In, qos: 1, remote_prefix: "commands/lab-2/"),
    ]),
    (name: "cloud", address: "mqtt://127.0.0.1:1", topics: [(pattern: "lab/temperature", direction: Out)]),
])
RON
HOME=$WORK DISPLAY=$DISPLAY_NUM WAYLAND_DISPLAY= LIBGL_ALWAYS_SOFTWARE=1 \
    "$BIN" --port 0 --ws-port 0 --topics "$WORK/topics.ron" --users "$WORK/users.ron" \
    --bridges "$WORK/bridges.ron" --sn-port 0 >"$WORK/out" 2>"$WORK/log" &
pids+=($!)
app=$!
port=
for _ in $(seq 200); do
    port=$(sed -n 's|^mqtt-lab: listening on mqtt://127.0.0.1:||p' "$WORK/out")
    [[ -n $port ]] && break
    kill -0 "$app" 2>/dev/null || { cat "$WORK/log" >&2; echo "the app exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n $port ]] || { cat "$WORK/log" >&2; echo "no listening line" >&2; exit 1; }
echo "window up, broker on port $port" >&2

P=(-h 127.0.0.1 -p "$port")
mosquitto_sub -h 127.0.0.1 -p "$MPORT" -i department-dashboard -t 'labs/#' -v -q 1 >"$WORK/remote.out" &
pids+=($!)
mosquitto_sub "${P[@]}" -i dashboard -t 'lab/#' -q 1 >"$WORK/sub.out" &
pids+=($!)
mosquitto_sub "${P[@]}" -i esp32-door -t lab/door -t lab/led -c -q 1 --will-topic lab/door --will-payload offline >/dev/null &
pids+=($!)
# Two displays sharing the work of one subscription: the Topics panel shows them as a group.
for d in 1 2; do
    mosquitto_sub "${P[@]}" -i "display-$d" -t '$share/displays/lab/temperature' -q 1 >/dev/null &
    pids+=($!)
done
# An MQTT 5 client: Clients shows its version and what it asked for.
mosquitto_sub "${P[@]}" -V mqttv5 -i meter-v5 -t 'lab/humidity' -q 1 \
    -D connect session-expiry-interval 300 -D connect receive-maximum 10 \
    -D connect topic-alias-maximum 5 -F '%t %p %P' >"$WORK/sub5.out" &
pids+=($!)
sleep 0.5
for v in 20.5 20.7 21.0 21.4; do mosquitto_pub "${P[@]}" -i thermometer -t lab/temperature -m "$v" -q 1 -r; done
mosquitto_pub "${P[@]}" -i student-3 -t lab/chat -m 'hello from the lab' -q 2
# In MQTT 5, with properties that History shows and the MQTT 5 subscriber gets.
for v in 48 51 47 53 50; do
    mosquitto_pub "${P[@]}" -V mqttv5 -i hygrometer -t lab/humidity -m "{\"humidity\": $v}" -r \
        -D publish content-type application/json -D publish user-property room lab-2
    sleep 0.2
done
mosquitto_sub "${P[@]}" -i curious -t 'secret/#' -C 1 -W 1 >/dev/null 2>&1 || true
# A sensor node over MQTT-SN (UDP): CONNECT, REGISTER lab/light, PUBLISH at QoS 1.
snport=$(sed -n 's|^mqtt-lab: listening on mqtt-sn://127.0.0.1:\([0-9]*\) (UDP)|\1|p' "$WORK/out")
python3 - "$snport" <<'PY'
import socket, struct, sys
gw = ("127.0.0.1", int(sys.argv[1]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
def send(kind, body):
    s.sendto(bytes([len(body) + 2, kind]) + body, gw)
    return s.recv(1024)
cid = b"sn-light-sensor"
assert send(0x04, bytes([0x04, 0x01]) + struct.pack(">H", 120) + cid)[2] == 0    # CONNACK
regack = send(0x0A, struct.pack(">HH", 0, 1) + b"lab/light")                       # REGACK
topic_id = struct.unpack(">H", regack[2:4])[0]
for lux in (310, 295, 320):
    send(0x0C, bytes([0x20]) + struct.pack(">HH", topic_id, lux) + str(lux).encode())  # PUBACK
PY
# A command from the department, over the bridge to the lab's LED.
mosquitto_pub -h 127.0.0.1 -p "$MPORT" -i department-console -t commands/lab-2/lab/led -m on -q 1
# A device on the pattern devices/+/temperature: its topic appears, marked as not on the list.
mosquitto_pub "${P[@]}" -i esp32-7 -t devices/7/temperature -m 22.5 -q 1 -r
# A student within its rules, and one outside them (acknowledged, not delivered, logged).
mosquitto_pub "${P[@]}" -i ada-laptop -u ada -P pw-ada -t students/ada/hello -m hi -q 1 -r
mosquitto_pub "${P[@]}" -i bob-laptop -u bob -P pw-bob -t students/ada/hello -m spoof -q 1
sleep 1.5
grep -q 'hello from the lab' "$WORK/sub.out" || { echo "the subscriber got nothing" >&2; exit 1; }
grep -q 'room:lab-2' "$WORK/sub5.out" || { echo "the MQTT 5 subscriber got no properties" >&2; exit 1; }
grep -q 'labs/lab-2/lab/temperature 21.4' "$WORK/remote.out" || { echo "the bridge forwarded nothing" >&2; exit 1; }
grep -qx 'on' "$WORK/sub.out" || { echo "the bridge brought nothing in" >&2; exit 1; }

export DISPLAY=$DISPLAY_NUM
shot() {
    local out=$OUT_DIR/$1.png colors
    sleep 0.5
    import -window root "$out"
    colors=$(convert "$out" -format '%k' info:)
    echo "screenshot $out ($colors colours)" >&2
    ((colors > 16)) || { echo "the screenshot is blank" >&2; exit 1; }
}
# The tabs sit in the top bar; click them where egui lays them out at the default font size:
# Lab clients, Scenarios, Topics, Clients, History, Trace, Users, Bridges, Log.
tab() { xdotool mousemove "$1" 12 click 1; }
tab 289
shot topics
tab 350
shot clients
tab 415
# The humidity readings (MQTT 5, with properties), fifth in the list of recent topics (those
# published after them come first): their chart and properties.
xdotool mousemove 60 336 click 1
shot history
# The QoS scenario (the first Run button), caught after its QoS 2 exchange, then its lab
# clients and the Trace.
tab 219
sleep 0.5
xdotool mousemove 35 162 click 1
sleep 10
shot scenario-qos
# The scenario's lab clients really connected to the broker.
grep -q 'client connected client_id=publisher' "$WORK/log" ||
    { echo "the QoS scenario did not run (no publisher connected)" >&2; exit 1; }
tab 137
shot lab-clients
tab 475
shot trace
tab 530
shot users
tab 585
sleep 0.3
# The department bridge's Edit button: its form under the table.
xdotool mousemove 938 125 click 1
shot bridges
kill -0 "$app" || { echo "the app died" >&2; exit 1; }

# Flow control on screen: a subscriber that reads nothing and a publisher flooding its topic;
# within the stall deadline (5 s) Clients shows the one slow and the other held back.
scripts/never-reads.py "$port" frozen-display lab/chat 30 &
pids+=($!)
sleep 0.5
head -c 8000 /dev/zero | tr '\0' x >"$WORK/line"
for _ in $(seq 3000); do cat "$WORK/line"; echo; done >"$WORK/flood"
mosquitto_pub "${P[@]}" -i flooder -t lab/chat -q 0 -l <"$WORK/flood" &
pids+=($!)
tab 350
sleep 2
shot clients-flow
# The saved state: the status bar's last item opens its window.
xdotool mousemove 835 708 click 1
shot saved-state
xdotool key Escape
# Back to Topics: the Trace panel polls the broker ten times a second while it is open.
tab 289

# An idle window should cost next to nothing: CPU time over 5 s with no traffic.
ticks() { awk '{print $14 + $15}' "/proc/$app/stat"; }
t0=$(ticks)
sleep 5
idle=$(( $(ticks) - t0 ))
echo "idle: $idle clock ticks of CPU in 5 s ($(getconf CLK_TCK)/s)" >&2

# SIGTERM closes the window the normal way (as a window manager's close does): the broker
# stops, clients are disconnected, the process exits 0.
kill -TERM "$app"
status=0
wait "$app" || status=$?
((status == 0)) || { tail -20 "$WORK/log" >&2; echo "the app exited with $status" >&2; exit 1; }
grep -q 'closing every connection' "$WORK/log" || { echo "the broker was not stopped cleanly" >&2; exit 1; }
echo "window closed, broker stopped, exit 0" >&2
grep -h 'frame times' "$WORK/log" >&2 || true
