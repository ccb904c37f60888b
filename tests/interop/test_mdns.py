"""Finding the broker on the network: mDNS/DNS-SD, browsed with python-zeroconf.

Everything happens in a network namespace the test makes (two veth ends, 10.213.N.1 and
10.213.N.2), so nothing is sent to, or heard from, a real network. Needs root (for `ip netns`),
as CI has; elsewhere these tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TYPES = ["_mqtt._tcp.local.", "_mqtt-ws._tcp.local.", "_secure-mqtt._tcp.local.",
         "_mqtt-wss._tcp.local."]


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def lab_net():
    """A network namespace with two addressed, multicast-capable interfaces."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    n = random.randint(1, 250)
    ns = f"mqtt-lab-test-{os.getpid()}-{n}"
    run("ip", "netns", "add", ns)
    try:
        inside = ["ip", "netns", "exec", ns]
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        addrs = [f"10.213.{n}.1", f"10.213.{n}.2"]
        for dev, addr in zip(("v0", "v1"), addrs):
            run(*inside, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            run(*inside, "ip", "link", "set", dev, "up")
        yield ns, addrs
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class Browser:
    """mdns_browse.py running in the namespace; its events, as they come."""

    def __init__(self, ns: str, seconds: float = 30.0):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(HERE / "mdns_browse.py"),
             str(seconds), *TYPES],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda e: e["event"] == "browsing", 10)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait_for(self, pred, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not seen within {timeout} s; seen: {self.seen}")
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(e)
            if pred(e):
                return e

    def added(self, count: int, timeout: float = 10) -> dict[tuple[str, str], dict]:
        found: dict[tuple[str, str], dict] = {}
        deadline = time.monotonic() + timeout
        while len(found) < count:
            e = self.wait_for(lambda e: e["event"] == "added", deadline - time.monotonic())
            found[(e["type"], e["name"])] = e
        return found

    def settle(self, seconds: float) -> list[dict]:
        """Everything seen in the next `seconds`."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.seen.append(self.events.get(timeout=left))
            except queue.Empty:
                pass
        return self.seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def browser(lab_net):
    made: list[Browser] = []

    def start() -> Browser:
        made.append(Browser(lab_net[0]))
        return made[-1]

    yield start
    for b in made:
        b.close()


def test_every_listener_is_advertised_found_and_withdrawn(lab_net, broker_factory, browser,
                                                          tmp_path):
    ns, addrs = lab_net
    home = tmp_path / "home"
    home.mkdir()
    b = broker_factory(bind="0.0.0.0", netns=ns, env={"HOME": str(home)},
                       extra_args=["--ws-port", "0", "--tls-port", "0", "--wss-port", "0",
                                   "--mdns-name", "Room 2.14 broker"])
    seen = browser().added(4)
    by_type = {t: e for (t, _), e in seen.items()}
    assert set(by_type) == set(TYPES), seen
    expected_ports = {"_mqtt._tcp.local.": b.port, "_mqtt-ws._tcp.local.": b.ws_port,
                      "_secure-mqtt._tcp.local.": b.tls_port, "_mqtt-wss._tcp.local.": b.wss_port}
    for t, e in by_type.items():
        assert e["name"] == f"Room 2.14 broker.{t}", e
        assert e["port"] == expected_ports[t], (t, e, expected_ports)
        assert sorted(e["addresses"]) == sorted(addrs), e
    assert by_type["_mqtt-ws._tcp.local."]["txt"].get("path") == "/mqtt"
    assert by_type["_mqtt-wss._tcp.local."]["txt"].get("path") == "/mqtt"

    # What was advertised is what a client needs: publish there with a real client.
    e = by_type["_mqtt._tcp.local."]
    res = subprocess.run(["ip", "netns", "exec", ns, "mosquitto_pub", "-h", e["addresses"][0],
                          "-p", str(e["port"]), "-t", "lab/a", "-m", "found", "-q", "1"],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr

    # Stopping says goodbye: browsers drop the broker at once, not after the records' TTL.
    watcher = browser()
    watcher.added(4)
    assert b.stop() == 0
    gone = set()
    while len(gone) < 4:
        e = watcher.wait_for(lambda e: e["event"] == "removed", 5)
        gone.add(e["type"])
    assert gone == set(TYPES)


def test_silent_on_loopback_and_with_no_mdns(lab_net, broker_factory, browser):
    ns, _ = lab_net
    broker_factory(bind="0.0.0.0", netns=ns, extra_args=["--no-mdns"])
    broker_factory(bind="127.0.0.1", netns=ns, extra_args=["--mdns-name", "on loopback"])
    # A broker that is advertised, so that hearing nothing else means something.
    broker_factory(bind="0.0.0.0", netns=ns, extra_args=["--mdns-name", "control"])
    w = browser()
    w.added(1)
    names = {e["name"] for e in w.settle(3) if e["event"] == "added"}
    assert names == {"control._mqtt._tcp.local."}, w.seen


def test_a_name_taken_on_the_network_gets_a_suffix(lab_net, broker_factory, browser):
    ns, _ = lab_net
    first = broker_factory(bind="0.0.0.0", netns=ns, extra_args=["--mdns-name", "bench"])
    time.sleep(1.5)  # the first has probed and owns the name
    second = broker_factory(bind="0.0.0.0", netns=ns, extra_args=["--mdns-name", "bench"])
    seen = browser().added(2)
    ports = {name: e["port"] for (_, name), e in seen.items()}
    assert ports == {"bench._mqtt._tcp.local.": first.port,
                     "bench (2)._mqtt._tcp.local.": second.port}, seen
    assert "already in use on the network" in second.log()


def test_bound_to_one_address_advertises_that_address(lab_net, broker_factory, browser):
    ns, addrs = lab_net
    b = broker_factory(bind=addrs[1], netns=ns, extra_args=["--mdns-name", "one address"])
    ((_, e),) = browser().added(1).items()
    assert (e["name"], e["port"], e["addresses"]) == \
        ("one address._mqtt._tcp.local.", b.port, [addrs[1]])


def test_bad_names_are_refused_on_the_command_line(tmp_path):
    from conftest import broker_bin
    for args, why in [(["--mdns-name", "x" * 64], "63"),
                      (["--mdns-name", ""], "empty"),
                      (["--no-mdns", "--mdns-name", "x"], "cannot be used with")]:
        res = subprocess.run([str(broker_bin()), "--headless", *args], capture_output=True,
                             text=True, timeout=10)
        assert res.returncode == 2 and why in res.stderr, (args, res.stderr)
