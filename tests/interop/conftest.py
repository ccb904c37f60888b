"""Fixtures for the interop suite: run the real mqtt-lab binary on an ephemeral port.

The binary is taken from $MQTT_LAB_BIN, or ../../target/debug/mqtt-lab relative to this file
(build it with `cargo build`).  Every broker gets its own topics.ron / users.ron in tmp_path,
listens on 127.0.0.1 with `--port 0`, and is stopped with SIGTERM at teardown, where the suite
asserts a clean exit (code 0 within 10 s).

    def test_x(broker):                 # default topics, anonymous allowed
        broker.host, broker.port

    def test_y(broker_factory):         # custom topics / users / options
        b = broker_factory(topics=["lab/a"], allow_anonymous=False,
                           users=[User("alice", "pw", email="alice@lab.example")],
                           extra_args=["--sys-interval", "1"])
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_BIN = HERE / ".." / ".." / "target" / "debug" / "mqtt-lab"

LISTEN_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LISTEN_RE = re.compile(
    r"^mqtt-lab: listening on (?:mqtts?|wss?|mqtt-sn)://[0-9.]+:(\d+)(?:/mqtt| \(UDP\))?$")

DEFAULT_TOPICS = (
    "lab/a",
    "lab/b",
    "lab/c",
    "lab/x/y",
    "lab/will",
    "other/z",
)


def broker_bin() -> Path:
    path = Path(os.environ.get("MQTT_LAB_BIN", str(DEFAULT_BIN))).resolve()
    if not path.is_file():
        pytest.fail(
            f"mqtt-lab binary not found at {path}: run `cargo build` in the repository "
            f"or set MQTT_LAB_BIN",
            pytrace=False,
        )
    return path


@dataclass(frozen=True)
class User:
    name: str
    password: str
    email: Optional[str] = None


@dataclass
class Broker:
    host: str
    port: int
    topics_file: Path
    users_file: Path
    stderr_file: Path
    proc: subprocess.Popen = field(repr=False)
    ws_port: Optional[int] = None
    tls_port: Optional[int] = None
    wss_port: Optional[int] = None
    sn_port: Optional[int] = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def log(self) -> str:
        try:
            return self.stderr_file.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM the broker and return its exit code (raises TimeoutExpired after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()


def ron_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_topics(path: Path, topics: Iterable[str]) -> None:
    body = "".join(f"        {ron_string(t)},\n" for t in topics)
    path.write_text(f"(\n    topics: [\n{body}    ],\n)\n")


def write_users(path: Path, allow_anonymous: bool) -> None:
    path.write_text(
        f"(\n    allow_anonymous: {'true' if allow_anonymous else 'false'},\n    users: [],\n)\n"
    )


def add_user(bin_path: Path, users_file: Path, user: User) -> None:
    cmd = [str(bin_path), "user", "add", user.name, "--password", user.password,
           "--users", str(users_file)]
    if user.email is not None:
        cmd += ["--email", user.email]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"`user add {user.name}` failed: {res.stderr}"


def _wait_listening(proc: subprocess.Popen, stderr_file: Path, lines: int = 1) -> list[int]:
    """Read stdout until `lines` listening lines are in; return their ports, in order."""
    assert proc.stdout is not None
    deadline = time.monotonic() + LISTEN_TIMEOUT
    buf = b""
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait(5)
                pytest.fail(f"broker did not print its listening line within {LISTEN_TIMEOUT}s;"
                            f" stdout so far {buf!r}; stderr:\n{stderr_file.read_text()}")
            if not sel.select(timeout=remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = proc.wait(5)
                pytest.fail(f"broker exited ({code}) before listening; stdout {buf!r};"
                            f" stderr:\n{stderr_file.read_text()}")
            buf += chunk
            if buf.count(b"\n") >= lines:
                ports = []
                for raw in buf.split(b"\n")[:lines]:
                    line = raw.decode(errors="replace").rstrip("\r")
                    m = LISTEN_RE.match(line)
                    if not m:
                        proc.kill()
                        proc.wait(5)
                        pytest.fail(f"unexpected stdout line from broker: {line!r}")
                    ports.append(int(m.group(1)))
                return ports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def broker_factory(tmp_path, request):
    """Start brokers with per-test topics, users and extra command-line args."""
    bin_path = broker_bin()
    started: list[Broker] = []

    def start(topics: Sequence[str] = DEFAULT_TOPICS,
              users: Sequence[User] = (),
              allow_anonymous: bool = True,
              extra_args: Sequence[str] = (),
              env: Optional[dict] = None,
              bind: str = "127.0.0.1",
              netns: Optional[str] = None) -> Broker:
        d = tmp_path / f"broker{len(started)}"
        d.mkdir()
        topics_file = d / "topics.ron"
        users_file = d / "users.ron"
        stderr_file = d / "stderr.log"
        write_topics(topics_file, topics)
        write_users(users_file, allow_anonymous)
        for u in users:
            add_user(bin_path, users_file, u)
        # Each broker keeps its state in a folder of its own (persistence is on by default).
        data_args = [] if any(a in extra_args for a in ("--data-dir", "--no-persistence")) \
            else ["--data-dir", str(d / "data")]
        with open(stderr_file, "wb") as err:
            inside = ["ip", "netns", "exec", netns] if netns else []
            proc = subprocess.Popen(
                [*inside, str(bin_path), "--headless", "--bind", bind, "--port", "0",
                 "--topics", str(topics_file), "--users", str(users_file), *data_args,
                 *extra_args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                env={**os.environ, "NO_COLOR": "1", **(env or {})},
            )
        order = ("--ws-port", "--tls-port", "--wss-port", "--sn-port")
        doors = [a for a in order if a in extra_args]
        ports = _wait_listening(proc, stderr_file, 1 + len(doors))
        # The lines come in this order: mqtt, ws, mqtts, wss, mqtt-sn (those asked for).
        by_door = dict(zip(doors, ports[1:]))
        b = Broker(bind, ports[0], topics_file, users_file, stderr_file, proc,
                   ws_port=by_door.get("--ws-port"), tls_port=by_door.get("--tls-port"),
                   wss_port=by_door.get("--wss-port"), sn_port=by_door.get("--sn-port"))
        started.append(b)
        return b

    yield start

    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for b in started:   # shown under "Captured stdout teardown"
            print(f"---- broker {b.url} stderr (tail) ----\n{b.log()[-4000:]}")

    failures = []
    for b in started:
        try:
            code = b.stop()
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait(5)
            failures.append(f"broker on port {b.port} did not exit within {STOP_TIMEOUT}s "
                            f"of SIGTERM")
            continue
        if code != 0:
            failures.append(f"broker on port {b.port} exited with {code} after SIGTERM;"
                            f" stderr tail:\n{b.log()[-2000:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A broker with DEFAULT_TOPICS and anonymous access."""
    return broker_factory()
