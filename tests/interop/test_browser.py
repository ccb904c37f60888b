"""A real browser: Debian's Chromium, headless, loads tests/browser/index.html, which runs the
Eclipse Paho JavaScript client (npm paho-mqtt 1.1.0) or MQTT.js (npm mqtt 5.x, MQTT 3.1.1)
against the broker over ws:// and wss://; and MQTT.js in MQTT 5 (protocolVersion 5), where the
broker's answers carry reason codes and messages carry properties.

The page (tests/browser/scenario.js) subscribes at QoS 2, gets a retained message set here over
plain MQTT, publishes at QoS 0, 1 and 2 and gets each back at that QoS, and gets the will of a
second client whose iframe it removes (the WebSocket closes with no DISCONNECT, as when a tab
is closed). It reports its console and what it saw to a small HTTP server here, which also
serves the page; the assertions are made here.

The MQTT 5 tests run one of the page's MQTT 5 scenarios each (tests/browser/scenario5.js,
query `scenario=v5-…`): message properties from one MQTT.js client to another, the topic list's
refusals as reason codes (SUBACK 0x8F, PUBACK/PUBREC 0x90), DISCONNECT 0x8E to a client whose
id is taken over, and topic aliases both ways. The page reports the reason codes, properties
and packets MQTT.js parsed, and each test checks the codes themselves, so a broker answering
as in 3.1.1 fails it.

For wss:// Chromium really checks the broker's certificate: its HOME holds a fresh NSS database
in which the CA the broker made on first run is a trusted root (certutil, libnss3-tools); a
browser without it is refused. Nothing drives the browser: it is started with the page's URL
and stopped when the page has reported.

Needs chromium, certutil and tests/browser/node_modules: scripts/install-test-deps.sh installs
them. The test fails, and says so, when one is missing.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

PAGE_DIR = Path(__file__).resolve().parent.parent / "browser"
LIBRARIES = ("node_modules/paho-mqtt/paho-mqtt.js", "node_modules/mqtt/dist/mqtt.min.js")
CHROMIUM = "/usr/bin/chromium"
# The flags a closed network needs: no sign-in, updates, sync or QUIC probes going out.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
REPORT_TIMEOUT = 60.0   # the page gives each of its steps 10 s

ECHO, RETAINED, WILL = "lab/browser/echo", "lab/browser/retained", "lab/browser/will"
EXPECTED = [
    {"topic": RETAINED, "payload": "set before the page loaded", "qos": 1, "retain": True},
    {"topic": ECHO, "payload": "qos 0", "qos": 0, "retain": False},
    {"topic": ECHO, "payload": "qos 1", "qos": 1, "retain": False},
    {"topic": ECHO, "payload": "qos 2", "qos": 2, "retain": False},
    {"topic": WILL, "payload": "tab closed", "qos": 1, "retain": False},
]


def require_browser() -> None:
    missing = [what for what, ok in (
        (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
        ("certutil", shutil.which("certutil") is not None),
        *((f"tests/browser/{lib}", (PAGE_DIR / lib).is_file()) for lib in LIBRARIES),
    ) if not ok]
    if missing:
        pytest.fail(f"the browser test needs {', '.join(missing)}: run "
                    f"scripts/install-test-deps.sh (Debian chromium and libnss3-tools, "
                    f"`npm ci` in tests/browser)", pytrace=False)


@dataclass
class Run:
    log: list = field(default_factory=list)
    result: "queue.Queue[dict]" = field(default_factory=queue.Queue)


class PageServer(ThreadingHTTPServer):
    """Serves tests/browser and takes the pages' reports: POST /report/<run>/log|result."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), partial(Handler, directory=str(PAGE_DIR)))
        self.runs: dict[str, Run] = {}

    def url(self, query: dict) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/index.html?{urlencode(query)}"


class Handler(SimpleHTTPRequestHandler):
    def do_POST(self):
        parts = self.path.strip("/").split("/")
        run = self.server.runs.get(parts[1]) if len(parts) == 3 and parts[0] == "report" else None
        if run is None or parts[2] not in ("log", "result"):
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if parts[2] == "log":
            run.log.append(body)
        else:
            run.result.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_server():
    require_browser()
    server = PageServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def home(tmp_path) -> Path:
    """The broker's HOME (where it makes its CA) and Chromium's (where it finds its NSS db)."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def browser_broker(broker_factory, home):
    # MQTT.js reads aliased topics, so the broker may send them (off by default: see README).
    b = broker_factory(topics=[ECHO, RETAINED, WILL],
                       extra_args=["--ws-port", "0", "--wss-port", "0", "--send-topic-aliases"],
                       env={"HOME": str(home)})
    b.ca = home / ".config" / "mqtt-lab" / "tls" / "ca.pem"
    assert b.ca.exists(), "the local CA is made on first run"
    return b


def trust_ca(home: Path, ca: Path) -> None:
    """A fresh NSS database in Chromium's HOME, with the broker's CA as a trusted root."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-t", "C,,", "-n", "mqtt-lab-ca", "-i", str(ca)]):
        subprocess.run(["certutil", "-d", f"sql:{db}", *args], check=True, timeout=30,
                       capture_output=True)


def set_retained(broker) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="setter-" + uuid.uuid4().hex[:8])
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        c.publish(RETAINED, EXPECTED[0]["payload"], qos=1, retain=True).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def run_page(server: PageServer, tmp_path: Path, home: Path, **query) -> tuple[dict, Run, str]:
    """Start Chromium on the page, wait for its report, stop it.

    Returns the page's result, its run (the console lines) and a text for failure messages:
    the console and the tail of Chromium's stderr."""
    run_id = "b" + uuid.uuid4().hex[:8]
    run = server.runs[run_id] = Run()
    profile = tmp_path / f"chromium-{run_id}"
    stderr_file = tmp_path / f"chromium-{run_id}.log"
    url = server.url({**query, "run": run_id, "report": f"/report/{run_id}"})
    with open(stderr_file, "wb") as err:
        proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            env={**os.environ, "HOME": str(home)},
        )
    try:
        result = run.result.get(timeout=REPORT_TIMEOUT)
    except queue.Empty:
        result = None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Without a D-Bus session Chromium complains of it at every start; the rest is worth seeing.
    stderr = [line for line in stderr_file.read_text(errors="replace").splitlines()
              if ":ERROR:dbus/" not in line]
    log = ("---- browser console ----\n" + "\n".join(run.log)
           + "\n---- chromium stderr (tail) ----\n" + "\n".join(stderr[-30:]))
    assert result is not None, f"the page did not report within {REPORT_TIMEOUT} s\n{log}"
    return result, run, log


def door_url(broker, door: str) -> str:
    if door == "ws":
        return f"ws://127.0.0.1:{broker.ws_port}/mqtt"
    return f"wss://localhost:{broker.wss_port}/mqtt"   # the certificate names localhost


@pytest.mark.parametrize("door", ["ws", "wss"])
@pytest.mark.parametrize("client", ["paho", "mqttjs"])
def test_browser_clients(page_server, browser_broker, home, tmp_path, client, door):
    trust_ca(home, browser_broker.ca)
    set_retained(browser_broker)
    result, run, log = run_page(page_server, tmp_path, home, client=client,
                                url=door_url(browser_broker, door))
    assert result["error"] is None, f"{client} over {door}: {result['error']}\n{log}"
    assert result["granted"] == [2, 2, 2], f"granted QoS per SUBSCRIBE\n{log}"
    assert result["received"] == EXPECTED, f"{client} over {door} received\n{log}"
    assert not [line for line in run.log if " error: " in line], f"errors on the page\n{log}"


def test_a_browser_without_the_ca_is_refused(page_server, browser_broker, home, tmp_path):
    """No NSS database in HOME: the broker's certificate is not trusted, so no connection."""
    result, _, log = run_page(page_server, tmp_path, home, client="paho", expect="refused",
                              url=door_url(browser_broker, "wss"))
    assert result["error"] is not None and result["error"].startswith("connect failed"), \
        f"expected the connection to fail, got {result}\n{log}"
    assert result["received"] == [], log
    # Refused in the TLS handshake (Chromium: ERR_CERT_AUTHORITY_INVALID), not for another
    # reason; the broker may log it a moment after the page has heard.
    deadline = time.monotonic() + 5
    while "TLS handshake failed" not in browser_broker.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "TLS handshake failed" in browser_broker.log(), log


# ---- MQTT 5: MQTT.js with protocolVersion 5 (tests/browser/scenario5.js) ----

def run_v5_page(server, broker, home, tmp_path, scenario, door="ws") -> tuple[dict, str]:
    """Run one MQTT 5 scenario of the page; fail on an error on the page. Returns its result."""
    if door == "wss":
        trust_ca(home, broker.ca)
    result, run, log = run_page(server, tmp_path, home, client="mqttjs", scenario=scenario,
                                url=door_url(broker, door))
    log = f"result: {json.dumps(result, indent=1)}\n{log}"
    assert result["error"] is None, f"{scenario} over {door}: {result['error']}\n{log}"
    assert not [line for line in run.log if " error: " in line], f"errors on the page\n{log}"
    return result, log


def ack(cmd: str, code: int, **properties) -> dict:
    """An acknowledgement or DISCONNECT as the page reports it."""
    return {"cmd": cmd, "reasonCode": code, "properties": properties}


def with_reason_string(packet: dict) -> dict:
    """The packet without its Reason String, after checking it has one in words."""
    props = dict(packet["properties"])
    reason = props.pop("reasonString", None)
    assert isinstance(reason, str) and reason.strip(), f"no Reason String in {packet}"
    return {**packet, "properties": props}


def assert_connack_v5(connack: dict, log: str) -> None:
    # A 3.1.1 broker answers protocol level 5 with return code 1 and MQTT.js never connects.
    assert connack["reasonCode"] == 0 and connack["sessionPresent"] is False, \
        f"CONNACK {connack}\n{log}"
    assert connack["properties"].get("topicAliasMaximum") == 10, f"CONNACK {connack}\n{log}"


@pytest.mark.parametrize("door", ["ws", "wss"])
def test_browser_mqtt5_properties_pass_through(page_server, browser_broker, home, tmp_path,
                                                door):
    result, log = run_v5_page(page_server, browser_broker, home, tmp_path, "v5-properties", door)
    assert_connack_v5(result["connack"], log)
    assert result["suback"] == {"granted": [1], "error": None}, log
    # A subscriber matched: PUBACK 0 (an MQTT 5 PUBACK of two bytes reads as 0).
    assert result["publish"] == {"acks": [ack("puback", 0)], "error": None}, log
    assert len(result["received"]) == 1, log
    message = result["received"][0]
    props = dict(message["properties"])
    # Passed on as the time left: at most what was sent, and little less.
    expiry = props.pop("messageExpiryInterval", None)
    assert expiry is not None and 3590 <= expiry <= 3600, f"Message Expiry Interval\n{log}"
    assert {**message, "properties": props} == {
        "topic": ECHO, "payload": '{"temp": 21.5}', "qos": 1, "retain": False,
        "properties": {
            "payloadFormatIndicator": True,
            "contentType": "application/json",
            "responseTopic": "lab/browser/reply",
            "correlationData": [0x00, 0xFF, 0x80, 0x7F, 0x72, 0x65, 0x71],
            # Two User Properties named room, in their order.
            "userProperties": {"unit": "C", "room": ["lab 2", "lab 3"]},
        },
    }, f"the message as the MQTT 5 subscriber got it\n{log}"


def test_browser_mqtt5_refusals_carry_reason_codes(page_server, browser_broker, home, tmp_path):
    result, log = run_v5_page(page_server, browser_broker, home, tmp_path, "v5-refusals")
    assert_connack_v5(result["connack"], log)
    # One SUBSCRIBE of the listed topic and of a filter no listed topic matches: 3.1.1's 0x80
    # would fail here, as would a SUBACK with one code.
    assert result["suback"]["granted"] == [1, 0x8F], log
    publish = result["publish"]
    # MQTT.js fails a publish whose PUBACK or PUBREC has a code of 0x80 or more, and stops
    # there: no PUBREL after PUBREC 0x90.
    for name, cmd in (("unlisted qos 1", "puback"), ("unlisted qos 2", "pubrec")):
        got = publish[name]
        assert got["error"] is not None and got["error"]["code"] == 0x90, f"{name}\n{log}"
        assert [a["cmd"] for a in got["acks"]] == [cmd], f"{name}\n{log}"
        assert with_reason_string(got["acks"][0]) == ack(cmd, 0x90), f"{name}\n{log}"
    # Listed, and no one subscribes: accepted, with 0x10.
    got = publish["no subscribers qos 1"]
    assert got["error"] is None and [(a["cmd"], a["reasonCode"]) for a in got["acks"]] \
        == [("puback", 0x10)], log
    assert publish["subscribed qos 1"] == {"acks": [ack("puback", 0)], "error": None}, log
    assert result["received"] == [
        {"topic": ECHO, "payload": "subscribed qos 1", "qos": 1, "retain": False,
         "properties": {}},
    ], f"only the listed topic's message comes back\n{log}"
    # An UNSUBSCRIBE of a filter the client does not have.
    assert result["unsuback"] == [0x11], log
    assert result["stillConnected"] is True and result["disconnects"] == [], \
        f"refusals close nothing\n{log}"


def test_browser_mqtt5_takeover_gets_disconnect_0x8e(page_server, browser_broker, home,
                                                      tmp_path):
    result, log = run_v5_page(page_server, browser_broker, home, tmp_path, "v5-takeover")
    assert_connack_v5(result["connack"], log)
    assert_connack_v5(result["secondConnack"], log)
    # 3.1.1 closes the old connection without a word; MQTT 5 sends DISCONNECT 0x8E first.
    assert [with_reason_string(d) for d in result["disconnects"]] \
        == [ack("disconnect", 0x8E)], f"the DISCONNECTs the first client got\n{log}"
    assert result["secondConnected"] is True and result["secondDisconnects"] == [], log
    got = result["secondPublish"]
    assert got["error"] is None and [(a["cmd"], a["reasonCode"]) for a in got["acks"]] \
        == [("puback", 0x10)], f"the second client after the takeover\n{log}"


def test_browser_mqtt5_topic_aliases_both_ways(page_server, browser_broker, home, tmp_path):
    result, log = run_v5_page(page_server, browser_broker, home, tmp_path, "v5-aliases")
    assert_connack_v5(result["publisherConnack"], log)
    assert result["suback"] == {"granted": [1], "error": None}, log
    # MQTT.js (autoAssignTopicAlias) sent the topic once with an alias, then the alias alone...
    sent = result["sent"]
    alias = sent[0]["alias"]
    assert alias is not None and sent == [
        {"dir": "out", "topic": ECHO, "alias": alias},
        {"dir": "out", "topic": "", "alias": alias},
        {"dir": "out", "topic": "", "alias": alias},
    ], f"what MQTT.js sent\n{log}"
    # ... and the broker took each for its topic.
    assert result["publish"] == [{"acks": [ack("puback", 0)], "error": None}] * 3, log
    # The broker gives the subscriber, which takes up to 5, the topic once with an alias, then
    # the alias alone; MQTT.js gives back the topic each time.
    wire = result["wire"]
    alias = wire[0]["alias"]
    assert alias is not None and 1 <= alias <= 5 and wire == [
        {"dir": "in", "topic": ECHO, "alias": alias},
        {"dir": "in", "topic": "", "alias": alias},
        {"dir": "in", "topic": "", "alias": alias},
    ], f"what the broker sent the subscriber\n{log}"
    assert [(m["topic"], m["payload"]) for m in result["received"]] \
        == [(ECHO, f"aliased {i}") for i in (1, 2, 3)], log
    assert result["disconnects"] == [], log
