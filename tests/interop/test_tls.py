"""TLS with the local CA the app makes on first run: paho-mqtt with tls_set(ca_certs=...) and
mosquitto_pub/sub with --cafile check the certificate (no verification turned off)."""

from __future__ import annotations

import queue
import ssl
import subprocess
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

WAIT = 5.0


@pytest.fixture
def tls_broker(broker_factory, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    b = broker_factory(extra_args=["--tls-port", "0", "--wss-port", "0"], env={"HOME": str(home)})
    b.ca = home / ".config" / "mqtt-lab" / "tls" / "ca.pem"
    assert b.ca.exists(), "the local CA is made on first run"
    return b


def connect(broker, port, ca, *, transport="tcp"):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, transport=transport,
                    client_id="tls-" + uuid.uuid4().hex[:8], reconnect_on_failure=False)
    c.tls_set(ca_certs=str(ca))   # verifies the chain and the host name
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    got: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
    ready = threading.Event()
    c.on_connect = lambda *a: ready.set()
    c.on_message = lambda client, userdata, m: got.put(m)
    c.connect("localhost", port, keepalive=30)
    c.loop_start()
    assert ready.wait(WAIT), "no CONNACK over TLS"
    return c, got


@pytest.mark.parametrize("door", ["mqtts", "wss"])
def test_paho_checks_the_certificate_and_talks(tls_broker, door):
    port, transport = ((tls_broker.tls_port, "tcp") if door == "mqtts"
                       else (tls_broker.wss_port, "websockets"))
    c, got = connect(tls_broker, port, tls_broker.ca, transport=transport)
    try:
        c.subscribe("lab/a", qos=1)
        c.publish("lab/a", b"encrypted", qos=1).wait_for_publish(WAIT)
        assert got.get(timeout=WAIT).payload == b"encrypted"
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_broker, tmp_path):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="doubter")
    c.tls_set()   # the system's CAs, which never signed a local certificate
    with pytest.raises(ssl.SSLError):
        c.connect("localhost", tls_broker.tls_port)


def test_mosquitto_clients_with_cafile(tls_broker):
    common = ["-h", "localhost", "-p", str(tls_broker.tls_port), "--cafile", str(tls_broker.ca)]
    sub = subprocess.Popen(["mosquitto_sub", *common, "-t", "lab/b", "-C", "1", "-W", "10"],
                           stdout=subprocess.PIPE, text=True)
    try:
        # Publish until the subscriber (which connects at its own pace) has one.
        for _ in range(50):
            subprocess.run(["mosquitto_pub", *common, "-t", "lab/b", "-m", "via mosquitto",
                            "-q", "1"], check=True, timeout=10)
            try:
                out, _ = sub.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            pytest.fail("mosquitto_sub got nothing over TLS")
        assert out.strip() == "via mosquitto"
    finally:
        sub.kill()
