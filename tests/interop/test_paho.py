"""mqtt-lab against paho-mqtt 2.x (CallbackAPIVersion.VERSION2), MQTT 3.1.1 and 3.1."""

from __future__ import annotations

import os
import queue
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.packettypes import PacketTypes

from conftest import User

WAIT = 5.0        # bound for anything that should happen
QUIET = 0.75      # how long to listen for something that must NOT happen


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class Client:
    """A paho client on its own network thread, with blocking helpers and bounded waits.

    reconnect_on_failure=False: a client that is kicked or refused stays down, so that
    client-id takeover and CONNACK refusals are observed rather than retried.
    """

    def __init__(self, broker, client_id: Optional[str] = None, *, clean_session: bool = True,
                 protocol=mqtt.MQTTv311, username: Optional[str] = None,
                 password: Optional[str] = None, will: Optional[tuple] = None,
                 keepalive: int = 30):
        self.broker = broker
        self.client_id = client_id if client_id is not None else "t-" + uuid.uuid4().hex[:12]
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=clean_session, protocol=protocol,
                             reconnect_on_failure=False)
        self.keepalive = keepalive
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos=qos, retain=retain)
        self.messages: "queue.Queue[Msg]" = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_reason: Optional[ReasonCode] = None
        self.session_present: Optional[bool] = None
        self._subacks: dict[int, list] = {}
        self._suback_cv = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.log: list[str] = []
        self.c.on_log = lambda client, userdata, level, buf: self.log.append(buf)

    # callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_reason = reason_code
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.set()

    def _on_message(self, client, userdata, m):
        self.messages.put(Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup)))

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self._suback_cv:
            self._subacks[mid] = [rc.value for rc in reason_code_list]
            self._suback_cv.notify_all()

    # actions
    def connect(self, expect_ok: bool = True) -> "Client":
        self.c.connect(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self.c.loop_start()
        assert self.connected.wait(WAIT), f"{self.client_id}: no CONNACK within {WAIT}s"
        if expect_ok:
            assert not self.connack_reason.is_failure, \
                f"{self.client_id}: connection refused: {self.connack_reason}"
        return self

    def subscribe(self, topics, qos: int = 0) -> list[int]:
        """Subscribe and return the SUBACK return codes (0, 1, 2 or 0x80)."""
        if isinstance(topics, str):
            topics = [(topics, qos)]
        rc, mid = self.c.subscribe(list(topics))
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        with self._suback_cv:
            ok = self._suback_cv.wait_for(lambda: mid in self._subacks, timeout=WAIT)
            assert ok, f"{self.client_id}: no SUBACK for {topics} within {WAIT}s"
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload, qos: int = 0, retain: bool = False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), \
            f"{self.client_id}: QoS {qos} handshake for {topic} not completed within {WAIT}s"
        return info

    def get(self, timeout: float = WAIT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def get_n(self, n: int, timeout: float = WAIT) -> list[Msg]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(remaining, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: got {len(out)} of {n} messages within {timeout}s: "
                    f"{[(m.topic, m.payload[:40]) for m in out]}") from None
        return out

    def assert_no_message(self, timeout: float = QUIET) -> None:
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m}")

    def disconnect(self) -> None:
        self.c.disconnect()
        assert self.disconnected.wait(WAIT), f"{self.client_id}: clean disconnect not done"
        self.c.loop_stop()

    def drop(self) -> None:
        """End the TCP connection without DISCONNECT (an abnormal close for the broker)."""
        sock = self.c.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        assert self.disconnected.wait(WAIT)
        self.c.loop_stop()

    def close(self) -> None:
        try:
            if self.c.is_connected():
                self.c.disconnect()
                self.disconnected.wait(2)
        finally:
            self.c.loop_stop()


@pytest.fixture
def clients(broker_factory):
    """Factory for connected clients; everything is closed before the broker stops."""
    made: list[Client] = []

    def make(broker, client_id=None, *, connect=True, expect_ok=True, **kw) -> Client:
        cl = Client(broker, client_id, **kw)
        made.append(cl)
        if connect:
            cl.connect(expect_ok=expect_ok)
        return cl

    yield make
    for cl in reversed(made):
        cl.close()


def round_trip_marker(pub: Client, sub: Client, topic: str = "lab/c") -> None:
    """Publish a marker on `topic` and wait for it: everything routed before it has arrived."""
    marker = b"marker-" + uuid.uuid4().hex.encode()
    pub.publish(topic, marker, qos=1)
    deadline = time.monotonic() + WAIT
    while True:
        m = sub.get(timeout=max(deadline - time.monotonic(), 0.001))
        if m.payload == marker:
            return
        raise AssertionError(f"{sub.client_id}: unexpected message before marker: {m}")


def payload_of(size: int) -> bytes:
    """Every byte value, then random bytes: catches any text/length mangling."""
    return (bytes(range(256)) + os.urandom(size))[:size] if size else b""


def connect_packet(*, client_id: str = "raw", username: Optional[str] = None,
                   password: Optional[str] = None, clean: bool = True,
                   protocol: tuple = ("MQTT", 4), will: Optional[tuple] = None,
                   keepalive: int = 30) -> bytes:
    """A hand-built CONNECT packet (MQTT 3.1.1 by default). will = (topic, payload, qos, retain)."""
    def s(x) -> bytes:
        b = x.encode() if isinstance(x, str) else x
        return struct.pack("!H", len(b)) + b

    flags = 0x02 if clean else 0x00
    payload = s(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += s(topic) + s(message)
    if username is not None:
        flags |= 0x80
        payload += s(username)
    if password is not None:
        flags |= 0x40
        payload += s(password)
    body = s(protocol[0]) + bytes([protocol[1], flags]) + struct.pack("!H", keepalive) + payload
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def assert_closed(sock: socket.socket, what: str) -> None:
    try:
        rest = sock.recv(1)
    except ConnectionResetError:
        rest = b""
    assert rest == b"", f"connection still open after {what} (got {rest!r})"


def raw_connack(broker, *, then_closed: bool = False, **connect_kw) -> bytes:
    """Send a hand-built CONNECT and return the 4 CONNACK bytes.

    then_closed: also assert that the broker closes the connection after the CONNACK."""
    with socket.create_connection((broker.host, broker.port), timeout=WAIT) as sock:
        sock.sendall(connect_packet(**connect_kw))
        data = recv_exactly(sock, 4)
        if then_closed:
            assert_closed(sock, f"CONNACK {data!r}")
    return data


# --------------------------------------------------------------------------- QoS round trips


@pytest.mark.parametrize("sub_qos", [0, 1, 2])
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_round_trip_qos(broker, clients, pub_qos, sub_qos):
    sub = clients(broker)
    assert sub.subscribe("lab/a", sub_qos) == [sub_qos]
    pub = clients(broker)
    payloads = [payload_of(0), payload_of(1), payload_of(300), payload_of(70_000)]
    for p in payloads:
        pub.publish("lab/a", p, qos=pub_qos)
    got = sub.get_n(len(payloads))
    for p, m in zip(payloads, got):
        assert m.topic == "lab/a"
        assert m.payload == p, f"payload of {len(p)} bytes changed (got {len(m.payload)})"
        assert m.qos == min(pub_qos, sub_qos)
        assert m.retain is False
    sub.assert_no_message(0.2)


@pytest.mark.parametrize("qos", [1, 2])
def test_many_messages_arrive_in_order(broker, clients, qos):
    """More than the in-flight window (20), each way, at QoS 1 and 2."""
    sub = clients(broker)
    assert sub.subscribe("lab/b", qos) == [qos]
    pub = clients(broker)
    n = 120
    infos = [pub.c.publish("lab/b", f"m{i:04d}".encode(), qos=qos) for i in range(n)]
    for info in infos:
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()
    got = sub.get_n(n, timeout=10)
    assert [m.payload for m in got] == [f"m{i:04d}".encode() for i in range(n)]
    assert all(m.qos == qos for m in got)


def test_large_payload(broker, clients):
    sub = clients(broker)
    assert sub.subscribe("lab/a", 2) == [2]
    pub = clients(broker)
    big = payload_of(2 * 1024 * 1024)
    pub.publish("lab/a", big, qos=2)
    m = sub.get(timeout=10)
    assert len(m.payload) == len(big) and m.payload == big


def test_unsubscribe_stops_delivery(broker, clients):
    sub = clients(broker)
    assert sub.subscribe([("lab/a", 1), ("lab/b", 1)]) == [1, 1]
    done = threading.Event()
    sub.c.on_unsubscribe = lambda *a: done.set()
    rc, _mid = sub.c.unsubscribe("lab/a")
    assert rc == mqtt.MQTT_ERR_SUCCESS
    assert done.wait(WAIT), "no UNSUBACK"
    pub = clients(broker)
    pub.publish("lab/a", b"not any more", qos=1)
    pub.publish("lab/b", b"still subscribed", qos=1)
    m = sub.get()
    assert (m.topic, m.payload) == ("lab/b", b"still subscribed")
    sub.assert_no_message(0.3)


def test_mqtt31_client(broker, clients):
    """Protocol level 3 (MQIsdp): connect, subscribe and exchange messages at every QoS."""
    sub = clients(broker, protocol=mqtt.MQTTv31)
    assert sub.connack_reason == ReasonCode(PacketTypes.CONNACK, "Success")
    assert sub.subscribe("lab/a", 2) == [2]
    pub = clients(broker, protocol=mqtt.MQTTv31)
    for qos in (0, 1, 2):
        pub.publish("lab/a", f"v31-q{qos}".encode(), qos=qos)
    got = sub.get_n(3)
    assert [(m.payload, m.qos) for m in got] == [(b"v31-q0", 0), (b"v31-q1", 1), (b"v31-q2", 2)]


def test_mqtt31_and_311_interoperate(broker, clients):
    sub = clients(broker, protocol=mqtt.MQTTv31)
    assert sub.subscribe("lab/b", 1) == [1]
    pub = clients(broker, protocol=mqtt.MQTTv311)
    pub.publish("lab/b", b"from 3.1.1", qos=1)
    m = sub.get()
    assert (m.topic, m.payload, m.qos) == ("lab/b", b"from 3.1.1", 1)


# --------------------------------------------------------------------------- wildcards / topic list


def test_wildcard_plus(broker, clients):
    sub = clients(broker)
    assert sub.subscribe("lab/+", 1) == [1]
    pub = clients(broker)
    for t in ("lab/a", "lab/x/y", "other/z", "lab/b"):
        pub.publish(t, t.encode(), qos=1)
    got = sub.get_n(2)
    assert sorted(m.topic for m in got) == ["lab/a", "lab/b"]
    sub.assert_no_message()


def test_wildcard_hash(broker, clients):
    sub_lab = clients(broker)
    assert sub_lab.subscribe("lab/#", 1) == [1]
    sub_all = clients(broker)
    assert sub_all.subscribe("#", 1) == [1]
    sub_mid = clients(broker)
    assert sub_mid.subscribe("+/x/#", 1) == [1]
    pub = clients(broker)
    topics = ("lab/a", "lab/x/y", "other/z")
    for t in topics:
        pub.publish(t, t.encode(), qos=1)
    assert sorted(m.topic for m in sub_lab.get_n(2)) == ["lab/a", "lab/x/y"]
    got_all = sub_all.get_n(3)
    assert [m.topic for m in got_all] == list(topics)
    assert all(m.payload == m.topic.encode() for m in got_all)
    assert [m.topic for m in sub_mid.get_n(1)] == ["lab/x/y"]
    for s in (sub_lab, sub_all, sub_mid):
        s.assert_no_message(0.3)


def test_suback_refuses_unlisted_filter_and_grants_the_others(broker, clients):
    sub = clients(broker)
    codes = sub.subscribe([("lab/a", 1), ("nope/x", 0), ("lab/+", 2), ("nope/#", 1)])
    assert codes == [1, 0x80, 2, 0x80]
    pub = clients(broker)
    pub.publish("lab/a", b"still works", qos=1)
    m = sub.get()
    assert (m.topic, m.payload) == ("lab/a", b"still works")


def test_sys_filters_always_granted(broker, clients):
    sub = clients(broker)
    assert sub.subscribe([("$SYS/#", 0), ("$SYS/broker/uptime", 1), ("nope", 0)]) == [0, 1, 0x80]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_to_unlisted_topic_is_dropped(broker, clients, qos):
    sub = clients(broker)
    assert sub.subscribe("#", 2) == [2]
    pub = clients(broker)
    pub.publish("nope/x", b"must not arrive", qos=qos)   # handshake completes (asserted inside)
    pub.publish("lab", b"parent of listed topics, itself unlisted", qos=qos)
    round_trip_marker(pub, sub)
    # and it was not retained either
    pub.publish("nope/x", b"retained?", qos=1, retain=True)
    late = clients(broker)
    late.subscribe("#", 1)
    round_trip_marker(pub, late)


# --------------------------------------------------------------------------- retained messages


def test_retained_message_for_later_subscriber_then_cleared(broker, clients):
    pub = clients(broker)
    pub.publish("lab/a", b"21.5", qos=1, retain=True)

    late = clients(broker)
    assert late.subscribe("lab/a", 1) == [1]
    m = late.get()
    assert (m.topic, m.payload, m.qos, m.retain) == ("lab/a", b"21.5", 1, True)

    # a newer retained value replaces it; delivered QoS = min(retained QoS, granted QoS)
    pub.publish("lab/a", b"22.0", qos=2, retain=True)
    assert late.get().payload == b"22.0"
    late0 = clients(broker)
    assert late0.subscribe("lab/+", 0) == [0]
    m = late0.get()
    assert (m.topic, m.payload, m.qos, m.retain) == ("lab/a", b"22.0", 0, True)
    late0.assert_no_message(0.3)

    # empty retained payload deletes it
    pub.publish("lab/a", b"", qos=1, retain=True)
    later = clients(broker)
    assert later.subscribe("lab/a", 1) == [1]
    round_trip_marker(pub, later, topic="lab/a")


def test_retain_flag_is_0_for_established_subscriptions(broker, clients):
    """MQTT-3.3.1-9: a message matching an existing subscription goes out with RETAIN 0;
    MQTT-3.3.1-10/11: an empty retained payload is still forwarded to current subscribers."""
    sub = clients(broker)
    assert sub.subscribe("lab/b", 1) == [1]
    pub = clients(broker)
    pub.publish("lab/b", b"v", qos=1, retain=True)
    m = sub.get()
    assert (m.payload, m.retain) == (b"v", False)
    pub.publish("lab/b", b"", qos=1, retain=True)
    m = sub.get()
    assert (m.topic, m.payload, m.retain) == ("lab/b", b"", False)


# --------------------------------------------------------------------------- last will


def test_will_published_on_abnormal_close(broker, clients):
    watcher = clients(broker)
    assert watcher.subscribe("lab/will", 1) == [1]
    dying = clients(broker, will=("lab/will", b"dying gasp", 1, False))
    dying.drop()
    m = watcher.get()
    assert (m.topic, m.payload, m.qos) == ("lab/will", b"dying gasp", 1)
    watcher.assert_no_message(0.3)


def test_will_not_published_after_clean_disconnect(broker, clients):
    watcher = clients(broker)
    assert watcher.subscribe("lab/will", 1) == [1]
    polite = clients(broker, will=("lab/will", b"should not appear", 1, False))
    polite.disconnect()
    watcher.assert_no_message(1.0)
    other = clients(broker)
    round_trip_marker(other, watcher, topic="lab/will")


def test_retained_will(broker, clients):
    dying = clients(broker, will=("lab/will", b"offline", 1, True))
    dying.drop()
    # The will is published asynchronously: poll with late subscribers until it is retained.
    deadline = time.monotonic() + WAIT
    while True:
        late = clients(broker)
        late.subscribe("lab/will", 1)
        try:
            m = late.get(timeout=0.3)
            break
        except AssertionError:
            late.close()
            assert time.monotonic() < deadline, "retained will never appeared"
    assert (m.payload, m.retain) == (b"offline", True)


# --------------------------------------------------------------------------- sessions


def test_persistent_session_keeps_subscription_and_offline_messages(broker, clients):
    cid = "persist-" + uuid.uuid4().hex[:8]
    s1 = clients(broker, cid, clean_session=False)
    assert s1.session_present is False
    assert s1.subscribe([("lab/a", 1), ("lab/b", 2)]) == [1, 2]
    s1.disconnect()

    pub = clients(broker)
    sent = []
    for i in range(5):
        p = f"offline-{i}".encode()
        pub.publish("lab/a" if i % 2 == 0 else "lab/b", p, qos=1)
        sent.append(p)

    s2 = clients(broker, cid, clean_session=False)   # no SUBSCRIBE this time
    assert s2.session_present is True, "CONNACK session-present must be 1 for a stored session"
    got = s2.get_n(len(sent))
    assert [m.payload for m in got] == sent
    assert all(m.qos == 1 for m in got)
    assert not any(m.dup for m in got), "never sent before, so DUP must be 0"
    s2.assert_no_message(0.3)
    # the subscriptions themselves survived, too
    pub.publish("lab/b", b"live again", qos=2)
    m = s2.get()
    assert (m.payload, m.qos) == (b"live again", 2)


def test_clean_session_discards_stored_session(broker, clients):
    cid = "clean-" + uuid.uuid4().hex[:8]
    s1 = clients(broker, cid, clean_session=False)
    assert s1.subscribe("lab/a", 1) == [1]
    s1.disconnect()
    pub = clients(broker)
    pub.publish("lab/a", b"queued", qos=1)

    s2 = clients(broker, cid, clean_session=True)
    assert s2.session_present is False
    pub.publish("lab/a", b"after clean", qos=1)
    s2.assert_no_message()
    s2.disconnect()

    s3 = clients(broker, cid, clean_session=False)
    assert s3.session_present is False, "a clean-session connection must not leave a session"


def test_client_id_takeover(broker, clients):
    cid = "takeover-" + uuid.uuid4().hex[:8]
    watcher = clients(broker)
    assert watcher.subscribe("lab/will", 1) == [1]
    first = clients(broker, cid, will=("lab/will", b"first kicked", 1, False))
    assert first.subscribe("lab/a", 1) == [1]

    second = clients(broker, cid)
    assert first.disconnected.wait(WAIT), "first connection was not closed by the takeover"
    assert not first.c.is_connected()
    # DESIGN.md: the old connection is closed as an abnormal close, so its will fires.
    m = watcher.get()
    assert m.payload == b"first kicked"

    # the newcomer is connected and works, and stays connected
    assert second.subscribe("lab/b", 1) == [1]
    pub = clients(broker)
    pub.publish("lab/b", b"to the second", qos=1)
    assert second.get().payload == b"to the second"
    time.sleep(0.3)
    assert second.c.is_connected() and not second.disconnected.is_set()


def test_takeover_hands_the_persistent_session_to_the_newcomer(broker, clients):
    cid = "takeover-p-" + uuid.uuid4().hex[:8]
    first = clients(broker, cid, clean_session=False)
    assert first.subscribe("lab/a", 1) == [1]
    second = clients(broker, cid, clean_session=False)
    assert first.disconnected.wait(WAIT)
    assert second.session_present is True
    pub = clients(broker)
    pub.publish("lab/a", b"for the session", qos=1)
    assert second.get().payload == b"for the session"   # subscription came with the session
    first.assert_no_message(0.2)


# --------------------------------------------------------------------------- login


ALICE = User("alice", "correct horse", email="alice@lab.example")


@pytest.fixture
def auth_broker(broker_factory):
    return broker_factory(users=[ALICE, User("bob", "b0b")], allow_anonymous=False)


@pytest.mark.parametrize("login", ["alice", "alice@lab.example"])
def test_login_with_username_or_email(auth_broker, clients, login):
    cl = clients(auth_broker, username=login, password=ALICE.password)
    assert cl.connack_reason == ReasonCode(PacketTypes.CONNACK, "Success")
    assert cl.subscribe("lab/a", 1) == [1]
    cl.publish("lab/a", b"logged in", qos=1)
    assert cl.get().payload == b"logged in"


@pytest.mark.parametrize("login,password", [
    ("alice", "wrong"),
    ("alice@lab.example", "b0b"),     # another user's password
    ("bob", "correct horse"),
    ("mallory", "whatever"),          # unknown user
    ("alice", ""),
])
def test_bad_credentials_refused_with_rc4(auth_broker, clients, login, password):
    cl = clients(auth_broker, username=login, password=password, expect_ok=False)
    assert cl.connack_reason == ReasonCode(PacketTypes.CONNACK, "Bad user name or password")
    assert cl.disconnected.wait(WAIT), "broker must close the connection after a refused CONNACK"
    assert raw_connack(auth_broker, username=login, password=password) == b"\x20\x02\x00\x04"


def test_anonymous_refused_with_rc5(auth_broker, clients):
    cl = clients(auth_broker, expect_ok=False)
    assert cl.connack_reason == ReasonCode(PacketTypes.CONNACK, "Not authorized")
    assert cl.disconnected.wait(WAIT)
    assert raw_connack(auth_broker) == b"\x20\x02\x00\x05"


def test_anonymous_allowed_when_configured(broker_factory, clients):
    b = broker_factory(users=[ALICE], allow_anonymous=True)
    anon = clients(b)
    assert anon.connack_reason == ReasonCode(PacketTypes.CONNACK, "Success")
    assert raw_connack(b) == b"\x20\x02\x00\x00"
    named = clients(b, username="alice@lab.example", password=ALICE.password)
    assert named.connack_reason == ReasonCode(PacketTypes.CONNACK, "Success")
    assert raw_connack(b, username="alice", password="nope") == b"\x20\x02\x00\x04"


# --------------------------------------------------------------------------- $SYS


def test_sys_uptime_and_hash_does_not_match_sys(broker_factory, clients):
    b = broker_factory(extra_args=["--sys-interval", "1"])
    everything = clients(b)
    assert everything.subscribe("#", 0) == [0]
    sys_sub = clients(b)
    assert sys_sub.subscribe("$SYS/#", 0) == [0]

    deadline = time.monotonic() + WAIT
    seen = {}
    while "$SYS/broker/uptime" not in seen:
        m = sys_sub.get(timeout=max(deadline - time.monotonic(), 0.001))
        assert m.topic.startswith("$SYS/"), m
        seen[m.topic] = m.payload
    assert re.fullmatch(rb"\d+ seconds", seen["$SYS/broker/uptime"]), seen["$SYS/broker/uptime"]

    # let at least one more $SYS round go by, then check '#' saw none of it
    time.sleep(1.2)
    pub = clients(b)
    pub.publish("lab/a", b"normal", qos=1)
    m = everything.get()
    assert (m.topic, m.payload) == ("lab/a", b"normal"), f"'#' received {m}"
    everything.assert_no_message(0.2)


# --------------------------------------------------------------------------- more protocol details


def test_unacknowledged_qos1_resent_with_dup_after_reconnect(broker, clients):
    """MQTT-4.4.0-1: on reconnect with clean session 0 the server re-sends unacknowledged
    PUBLISH packets (DESIGN.md: with DUP = 1, in order)."""
    cid = "dup1-" + uuid.uuid4().hex[:8]
    s1 = clients(broker, cid, clean_session=False)
    s1.c.manual_ack_set(True)                       # receive, but never PUBACK
    assert s1.subscribe("lab/a", 1) == [1]
    pub = clients(broker)
    sent = [f"unacked-{i}".encode() for i in range(3)]
    for p in sent:
        pub.publish("lab/a", p, qos=1)
    first = s1.get_n(3)
    assert [m.payload for m in first] == sent and not any(m.dup for m in first)
    s1.drop()

    s2 = clients(broker, cid, clean_session=False)
    assert s2.session_present is True
    again = s2.get_n(3)
    assert [m.payload for m in again] == sent
    assert all(m.dup and m.qos == 1 for m in again), again
    s2.assert_no_message(0.3)


def test_qos2_outbound_resumes_with_pubrel_not_a_second_delivery(broker, clients):
    """The client sent PUBREC but not PUBCOMP: after reconnect the server re-sends PUBREL
    (MQTT-4.4.0-1), and the message is not delivered a second time."""
    cid = "dup2-" + uuid.uuid4().hex[:8]
    s1 = clients(broker, cid, clean_session=False)
    s1.c.manual_ack_set(True)                       # PUBREC is sent, PUBCOMP withheld
    assert s1.subscribe("lab/b", 2) == [2]
    pub = clients(broker)
    pub.publish("lab/b", b"exactly once", qos=2)
    assert s1.get().payload == b"exactly once"
    s1.drop()

    s2 = clients(broker, cid, clean_session=False)
    assert s2.session_present is True
    deadline = time.monotonic() + WAIT
    while not any(l.startswith("Received PUBREL") for l in s2.log):
        assert time.monotonic() < deadline, f"no PUBREL re-sent; client log: {s2.log}"
        time.sleep(0.05)
    s2.assert_no_message(0.3)
    pub.publish("lab/b", b"next", qos=2)
    assert s2.get().payload == b"next"


def test_will_published_after_protocol_error(broker, clients):
    """A second CONNECT is a protocol violation (MQTT-3.1.0-2): the connection is closed and,
    not being a DISCONNECT, the will is published."""
    watcher = clients(broker)
    assert watcher.subscribe("lab/will", 1) == [1]
    with socket.create_connection((broker.host, broker.port), timeout=WAIT) as sock:
        sock.sendall(connect_packet(client_id="bad-" + uuid.uuid4().hex[:8],
                                    will=("lab/will", b"protocol error", 1, False)))
        assert recv_exactly(sock, 4) == b"\x20\x02\x00\x00"
        sock.sendall(connect_packet(client_id="again"))
        assert_closed(sock, "a second CONNECT")
    m = watcher.get()
    assert (m.topic, m.payload, m.qos) == ("lab/will", b"protocol error", 1)


def test_overlapping_subscriptions_deliver_once_at_highest_qos(broker, clients):
    sub = clients(broker)
    assert sub.subscribe([("lab/a", 0), ("lab/+", 2), ("#", 1)]) == [0, 2, 1]
    pub = clients(broker)
    pub.publish("lab/a", b"once", qos=2)
    m = sub.get()
    assert (m.payload, m.qos) == (b"once", 2)
    sub.assert_no_message(0.5)


def test_keepalive_expiry_closes_and_fires_will(broker, clients):
    watcher = clients(broker)
    assert watcher.subscribe("lab/will", 1) == [1]
    silent = clients(broker, will=("lab/will", b"timed out", 1, False), keepalive=1)
    silent.c.loop_stop()            # socket stays open, but no PINGREQ is ever sent again
    t0 = time.monotonic()
    m = watcher.get(timeout=4)
    elapsed = time.monotonic() - t0
    assert m.payload == b"timed out"
    assert elapsed >= 0.9, f"will fired after {elapsed:.2f}s, before the keepalive expired"


def test_zero_length_client_id(broker):
    assert raw_connack(broker, client_id="", clean=True) == b"\x20\x02\x00\x00"
    assert raw_connack(broker, client_id="", clean=False, then_closed=True) == b"\x20\x02\x00\x02"


@pytest.mark.parametrize("protocol", [("MQTT", 6), ("MQTT", 2)])
def test_unsupported_protocol_level_gets_connack_1(broker, protocol):
    assert raw_connack(broker, protocol=protocol, then_closed=True) == b"\x20\x02\x00\x01"


def test_connect_timeout(broker_factory):
    b = broker_factory(extra_args=["--connect-timeout", "1"])
    with socket.create_connection((b.host, b.port), timeout=4) as sock:
        t0 = time.monotonic()
        try:
            data = sock.recv(1)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - t0
    assert data == b"", data
    assert 0.5 <= elapsed < 3.5, f"closed after {elapsed:.2f}s with --connect-timeout 1"


SYS_TOPICS = [
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/disconnected",
    "$SYS/broker/clients/total",
    "$SYS/broker/clients/maximum",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
]


def test_sys_topics_are_retained_with_mosquitto_names(broker_factory, clients):
    b = broker_factory(extra_args=["--sys-interval", "1"])
    # wait for a round published while `first` is connected (a live message, RETAIN 0: the
    # retained one may date from before any client connected), then a late subscriber must
    # get them all as retained messages
    first = clients(b)
    first.subscribe("$SYS/broker/uptime", 0)
    deadline = time.monotonic() + 3
    while first.get(timeout=max(deadline - time.monotonic(), 0.001)).retain:
        pass
    late = clients(b)
    assert late.subscribe("$SYS/broker/#", 0) == [0]
    got = {}
    deadline = time.monotonic() + 3
    while not set(SYS_TOPICS) <= set(got) and time.monotonic() < deadline:
        try:
            m = late.messages.get(timeout=0.2)
        except queue.Empty:
            continue
        got.setdefault(m.topic, m)
    missing = sorted(set(SYS_TOPICS) - set(got))
    assert not missing, f"missing $SYS topics {missing}; got {sorted(got)}"
    assert all(got[t].retain for t in SYS_TOPICS), [t for t in SYS_TOPICS if not got[t].retain]
    assert re.fullmatch(rb"\d+ seconds", got["$SYS/broker/uptime"].payload)
    for t in SYS_TOPICS[2:]:
        assert re.fullmatch(rb"\d+", got[t].payload), (t, got[t].payload)
    assert int(got["$SYS/broker/clients/connected"].payload) >= 1


def test_sys_interval_0_turns_sys_off(broker_factory, clients):
    b = broker_factory(extra_args=["--sys-interval", "0"])
    sub = clients(b)
    assert sub.subscribe("$SYS/#", 0) == [0]
    sub.assert_no_message(1.2)


# --------------------------------------------------------------------------- clients that do not wait


def test_subscribe_sent_right_after_connect_is_answered_at_once(broker):
    """The README's own example: connect(), subscribe() and loop, without waiting for CONNACK.
    paho sends SUBSCRIBE straight behind CONNECT, often in the same TCP segment; its SUBACK
    must not wait for the next packet (the first PINGREQ, keepalive seconds later)."""
    got = queue.Queue()
    subacked = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="eager-" + uuid.uuid4().hex[:8])
    c.on_subscribe = lambda *a: subacked.set()
    c.on_message = lambda client, userdata, m: got.put(m.payload)
    c.connect(broker.host, broker.port, keepalive=60)
    c.subscribe("lab/a", qos=1)
    c.loop_start()
    try:
        assert subacked.wait(2.0), "no SUBACK within 2 s of a SUBSCRIBE sent behind CONNECT"
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub-" + uuid.uuid4().hex[:8])
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        pub.publish("lab/a", b"right away", qos=1).wait_for_publish(WAIT)
        assert got.get(timeout=WAIT) == b"right away"
        pub.disconnect()
        pub.loop_stop()
    finally:
        c.disconnect()
        c.loop_stop()


def test_connect_publish_disconnect_in_one_write_is_delivered_and_fires_no_will(broker, clients):
    sub = clients(broker)
    sub.subscribe([("lab/a", 1), ("lab/b", 1)])
    will_topic = b"lab/b"
    body = (struct.pack(">H", 4) + b"MQTT" + bytes([4, 0x02 | 0x04 | 0x08]) + struct.pack(">H", 60)
            + struct.pack(">H", 3) + b"one"
            + struct.pack(">H", len(will_topic)) + will_topic + struct.pack(">H", 4) + b"will")
    connect = bytes([0x10, len(body)]) + body
    publish_body = struct.pack(">H", 5) + b"lab/a" + b"in one write"
    publish = bytes([0x30, len(publish_body)]) + publish_body
    with socket.create_connection((broker.host, broker.port), timeout=WAIT) as s:
        s.sendall(connect + publish + b"\xe0\x00")
        assert recv_exactly(s, 4) == b"\x20\x02\x00\x00"
    m = sub.get()
    assert (m.topic, m.payload) == ("lab/a", b"in one write")
    sub.assert_no_message()
