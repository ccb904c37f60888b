"""mqtt-lab against the mosquitto command-line clients (mosquitto_pub / mosquitto_sub 2.x).

mosquitto_sub runs with -d (debug) so that the test can see the SUBACK ("Subscribed (mid: 1): 0, 128")
before it publishes, under `stdbuf -oL` so that those lines are not stuck in a pipe buffer, and
with -F so that every received message is one line: MSG|topic|qos|retain|hex(payload).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import pytest

from conftest import User

WAIT = 5  # seconds: bound for anything that should happen

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="mosquitto-clients not installed",
)

FMT = "MSG|%t|%q|%r|%x"
SUBSCRIBED_RE = re.compile(r"^Subscribed \(mid: \d+\): ([\d, ]+)$")


@dataclass(frozen=True)
class Msg:
    topic: str
    qos: int
    retain: bool
    payload: bytes


@dataclass
class Result:
    rc: int
    messages: list
    stdout: list
    stderr: str


def _conn_args(broker, username=None, password=None, version=None) -> list[str]:
    args = ["-h", broker.host, "-p", str(broker.port)]
    if username is not None:
        args += ["-u", username]
    if password is not None:
        args += ["-P", password]
    if version is not None:
        args += ["-V", version]
    return args


class MosquittoSub:
    def __init__(self, broker, topics: Sequence[str], *, qos: int = 0, count: Optional[int] = None,
                 timeout: int = WAIT, username=None, password=None, version=None,
                 extra: Sequence[str] = ()):
        cmd = ["mosquitto_sub", *_conn_args(broker, username, password, version),
               "-d", "-q", str(qos), "-F", FMT, "-W", str(timeout)]
        for t in topics:
            cmd += ["-t", t]
        if count is not None:
            cmd += ["-C", str(count)]
        cmd += list(extra)
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL", *cmd]
        self.timeout = timeout
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.all_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next_line(self, deadline) -> Optional[str]:
        try:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            raise AssertionError(f"mosquitto_sub: no output within the deadline; so far "
                                 f"{self.all_lines}") from None
        if line is not None:
            self.all_lines.append(line)
        return line

    def wait_subscribed(self, timeout: float = WAIT) -> list[int]:
        """Wait for mosquitto_sub's SUBACK line and return the return codes it reports."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line is None:
                raise AssertionError(f"mosquitto_sub ended before SUBACK: {self.all_lines}, "
                                     f"stderr {self.proc.stderr.read()!r}")
            m = SUBSCRIBED_RE.match(line)
            if m:
                return [int(x) for x in m.group(1).split(",")]

    def finish(self, timeout: Optional[float] = None) -> Result:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout + 3)
        while self._next_line(deadline) is not None:
            pass
        try:
            rc = self.proc.wait(timeout=max(deadline - time.monotonic(), 0.5))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("mosquitto_sub did not exit") from None
        stderr = self.proc.stderr.read()
        msgs = []
        for line in self.all_lines:
            if line.startswith("MSG|"):
                _, topic, qos, retain, hexpayload = line.split("|", 4)
                msgs.append(Msg(topic, int(qos), retain == "1", bytes.fromhex(hexpayload)))
        return Result(rc, msgs, self.all_lines, stderr)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def subs():
    made: list[MosquittoSub] = []

    def make(*a, **kw) -> MosquittoSub:
        s = MosquittoSub(*a, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def pub(broker, topic: str, *, message: Optional[bytes] = None, file=None, null: bool = False,
        qos: int = 0, retain: bool = False, username=None, password=None, version=None,
        check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["mosquitto_pub", *_conn_args(broker, username, password, version),
           "-t", topic, "-q", str(qos)]
    if retain:
        cmd.append("-r")
    if null:
        cmd.append("-n")
    elif file is not None:
        cmd += ["-f", str(file)]
    else:
        cmd += ["-m", (message or b"").decode()]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=WAIT + 5)
    if check:
        assert res.returncode == 0, f"{cmd} -> {res.returncode}: {res.stderr}"
    return res


# --------------------------------------------------------------------------- pub/sub


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_sub_at_qos(broker, subs, tmp_path, qos):
    binary = bytes(range(256)) + os.urandom(20_000)
    f = tmp_path / "payload.bin"
    f.write_bytes(binary)

    sub = subs(broker, ["lab/a"], qos=qos, count=3)
    assert sub.wait_subscribed() == [qos]
    pub(broker, "lab/a", message=b"hello mqtt-lab", qos=qos)
    pub(broker, "lab/a", file=f, qos=qos)
    pub(broker, "lab/a", null=True, qos=qos)
    res = sub.finish()

    assert res.rc == 0, res
    assert [m.payload for m in res.messages] == [b"hello mqtt-lab", binary, b""]
    assert all(m.topic == "lab/a" and m.qos == qos and not m.retain for m in res.messages)


def test_delivered_qos_is_the_minimum(broker, subs):
    sub1 = subs(broker, ["lab/b"], qos=1, count=2)
    assert sub1.wait_subscribed() == [1]
    pub(broker, "lab/b", message=b"two", qos=2)
    pub(broker, "lab/b", message=b"zero", qos=0)
    res = sub1.finish()
    assert res.rc == 0
    assert [(m.payload, m.qos) for m in res.messages] == [(b"two", 1), (b"zero", 0)]


def test_mqtt31_clients(broker, subs):
    sub = subs(broker, ["lab/+"], qos=2, count=2, version="mqttv31")
    assert sub.wait_subscribed() == [2]
    pub(broker, "lab/a", message=b"v31 q1", qos=1, version="mqttv31")
    pub(broker, "lab/b", message=b"v31 q2", qos=2, version="mqttv31")
    res = sub.finish()
    assert res.rc == 0
    assert [(m.topic, m.payload, m.qos) for m in res.messages] == [
        ("lab/a", b"v31 q1", 1), ("lab/b", b"v31 q2", 2)]


def test_wildcards(broker, subs):
    sub = subs(broker, ["lab/#", "+/z"], qos=1, count=3)
    assert sub.wait_subscribed() == [1, 1]
    for t in ("lab/x/y", "other/z", "lab/a"):
        pub(broker, t, message=t.encode(), qos=1)
    res = sub.finish()
    assert res.rc == 0
    assert [(m.topic, m.payload) for m in res.messages] == [
        ("lab/x/y", b"lab/x/y"), ("other/z", b"other/z"), ("lab/a", b"lab/a")]


# --------------------------------------------------------------------------- retained


def test_retained_then_later_subscriber(broker, subs):
    pub(broker, "lab/c", message=b"retained value", qos=1, retain=True)

    sub = subs(broker, ["lab/c"], qos=1, count=1)
    res = sub.finish()
    assert res.rc == 0, res
    assert res.messages == [Msg("lab/c", 1, True, b"retained value")]

    # -n -r clears it: a new subscriber's first message is a live one, not the old value
    pub(broker, "lab/c", null=True, qos=1, retain=True)
    sub2 = subs(broker, ["lab/c"], qos=1, count=1)
    assert sub2.wait_subscribed() == [1]
    pub(broker, "lab/c", message=b"live", qos=1)
    res = sub2.finish()
    assert res.rc == 0
    assert res.messages == [Msg("lab/c", 1, False, b"live")]


def test_retained_on_several_topics_keep_their_qos(broker, subs):
    pub(broker, "lab/a", message=b"A", qos=0, retain=True)
    pub(broker, "lab/b", message=b"B", qos=2, retain=True)
    sub = subs(broker, ["lab/+"], qos=2, count=2)
    res = sub.finish()
    assert res.rc == 0
    assert sorted((m.topic, m.payload, m.qos, m.retain) for m in res.messages) == [
        ("lab/a", b"A", 0, True), ("lab/b", b"B", 2, True)]


def test_persistent_session_with_c_flag(broker, subs):
    """mosquitto_sub -c -i ID: messages published at QoS 1 while it is away arrive on return."""
    cid = "mosq-persist-" + os.urandom(4).hex()
    first = subs(broker, ["lab/b"], qos=1, extra=["-c", "-i", cid, "-E"])
    assert first.wait_subscribed() == [1]
    assert first.finish().rc == 0
    for i in range(3):
        pub(broker, "lab/b", message=f"offline {i}".encode(), qos=1)
    again = subs(broker, ["lab/b"], qos=1, count=3, extra=["-c", "-i", cid])
    res = again.finish()
    assert res.rc == 0, res
    assert [m.payload for m in res.messages] == [b"offline 0", b"offline 1", b"offline 2"]
    assert "received CONNACK (0)" in "\n".join(res.stdout)


# --------------------------------------------------------------------------- topic list


def test_subscribe_to_unlisted_topic_is_refused(broker, subs):
    # mosquitto_sub 2.0 prints a warning on stderr and exits (status 0) when every filter of
    # its SUBSCRIBE is refused with 0x80, without waiting for its -W timeout.
    sub = subs(broker, ["nope/x"], count=1, timeout=WAIT)
    res = sub.finish()
    elapsed = time.monotonic() - sub.started
    assert "All subscription requests were denied." in res.stderr, res
    assert "Subscribed (mid: 1): 128" in res.stdout, res
    assert res.messages == []
    assert res.rc == 0, res
    assert elapsed < WAIT - 1, f"mosquitto_sub waited for its timeout ({elapsed:.1f}s)"


def test_subscribe_mixed_listed_and_unlisted(broker, subs):
    sub = subs(broker, ["nope/x", "lab/a", "lab/nope/#"], qos=1, count=1)
    assert sub.wait_subscribed() == [0x80, 1, 0x80]
    pub(broker, "lab/a", message=b"granted one works", qos=1)
    res = sub.finish()
    assert res.rc == 0
    assert "All subscription requests were denied." not in res.stderr
    assert [m.payload for m in res.messages] == [b"granted one works"]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_to_unlisted_topic(broker, subs, qos):
    sub = subs(broker, ["#"], qos=2, count=1)
    assert sub.wait_subscribed() == [2]
    res_pub = pub(broker, "nope/x", message=b"dropped", qos=qos)   # handshake completes: rc 0
    assert res_pub.returncode == 0
    pub(broker, "lab/a", message=b"marker", qos=1)
    res = sub.finish()
    assert res.rc == 0
    assert [(m.topic, m.payload) for m in res.messages] == [("lab/a", b"marker")]


# --------------------------------------------------------------------------- login


ALICE = User("alice", "s3cret pw", email="alice@lab.example")


@pytest.fixture
def auth_broker(broker_factory):
    return broker_factory(users=[ALICE], allow_anonymous=False)


def test_login_username_and_email(auth_broker, subs):
    sub = subs(auth_broker, ["lab/a"], qos=1, count=1,
               username="alice@lab.example", password=ALICE.password)
    assert sub.wait_subscribed() == [1]
    pub(auth_broker, "lab/a", message=b"from alice", qos=1,
        username="alice", password=ALICE.password)
    res = sub.finish()
    assert res.rc == 0, res
    assert [m.payload for m in res.messages] == [b"from alice"]


@pytest.mark.parametrize("who,password", [("alice", "wrong"), ("alice@lab.example", "wrong"),
                                          ("nobody", ALICE.password)])
def test_bad_credentials(auth_broker, subs, who, password):
    res = pub(auth_broker, "lab/a", message=b"x", qos=1, username=who, password=password,
              check=False)
    assert res.returncode == 4, res
    assert "bad user name or password" in res.stderr.lower(), res.stderr

    res = subs(auth_broker, ["lab/a"], username=who, password=password).finish()
    assert res.rc == 4, res
    assert "bad user name or password" in res.stderr.lower(), res.stderr


def test_anonymous_refused(auth_broker, subs):
    res = pub(auth_broker, "lab/a", message=b"x", check=False)
    assert res.returncode == 5, res
    assert "not authori" in res.stderr.lower(), res.stderr

    res = subs(auth_broker, ["lab/a"]).finish()
    assert res.rc == 5, res
    assert "not authori" in res.stderr.lower(), res.stderr
