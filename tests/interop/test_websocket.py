"""paho-mqtt over WebSocket (transport="websockets") against the built binary's --ws-port."""

from __future__ import annotations

import queue
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

WAIT = 5.0


@pytest.fixture
def ws_broker(broker_factory):
    return broker_factory(extra_args=["--ws-port", "0"])


def ws_client(broker, *, path="/mqtt", will=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, transport="websockets",
                    client_id="ws-" + uuid.uuid4().hex[:8], reconnect_on_failure=False)
    c.ws_set_options(path=path)
    if will:
        c.will_set(*will)
    got: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_message = lambda client, userdata, m: got.put(m)
    c.connect(broker.host, broker.ws_port, keepalive=30)
    c.loop_start()
    assert connected.wait(WAIT), "no CONNACK over WebSocket"
    return c, got


def tcp_client(broker):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tcp-" + uuid.uuid4().hex[:8])
    got: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
    subscribed = threading.Event()
    c.on_message = lambda client, userdata, m: got.put(m)
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c, got, subscribed


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_websocket_and_tcp_clients_talk_both_ways(ws_broker, qos):
    ws, ws_got = ws_client(ws_broker)
    tcp, tcp_got, subscribed = tcp_client(ws_broker)
    try:
        ws.subscribe("lab/a", qos=qos)
        tcp.subscribe("lab/b", qos=qos)
        assert subscribed.wait(WAIT)
        # The retained value set over TCP reaches a later WebSocket subscriber.
        tcp.publish("lab/c", b"retained", qos=1, retain=True).wait_for_publish(WAIT)
        ws.subscribe("lab/c", qos=qos)
        m = ws_got.get(timeout=WAIT)
        assert (m.topic, m.payload, m.retain) == ("lab/c", b"retained", True)
        tcp.publish("lab/a", b"to the browser", qos=qos).wait_for_publish(WAIT)
        m = ws_got.get(timeout=WAIT)
        assert (m.topic, m.payload, m.qos) == ("lab/a", b"to the browser", qos)
        ws.publish("lab/b", b"from the browser", qos=qos).wait_for_publish(WAIT)
        m = tcp_got.get(timeout=WAIT)
        assert (m.topic, m.payload, m.qos) == ("lab/b", b"from the browser", qos)
    finally:
        for c in (ws, tcp):
            c.disconnect()
            c.loop_stop()


def test_a_websocket_clients_will_fires_when_it_drops(ws_broker):
    tcp, tcp_got, subscribed = tcp_client(ws_broker)
    tcp.subscribe("lab/b", qos=1)
    assert subscribed.wait(WAIT)
    ws, _ = ws_client(ws_broker, will=("lab/b", b"tab closed", 1, False))
    ws.socket().close()   # the page went away without DISCONNECT
    m = tcp_got.get(timeout=WAIT)
    assert m.payload == b"tab closed"
    ws.loop_stop()
    tcp.disconnect()
    tcp.loop_stop()
