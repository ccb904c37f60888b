"""Browses DNS-SD on mDNS with python-zeroconf and prints what it sees, one JSON object a line:

    {"event": "added", "type": "_mqtt._tcp.local.", "name": "...", "port": 1883,
     "addresses": ["10.1.2.3"], "txt": {"path": "/mqtt"}}
    {"event": "removed", "type": "...", "name": "..."}

    python3 mdns_browse.py SECONDS TYPE...

Run inside the test's own network namespace (`ip netns exec NS python3 mdns_browse.py ...`), so
nothing is asked of, or heard from, a real network. Ends after SECONDS, or when stdin closes.
"""

from __future__ import annotations

import json
import sys
import threading

from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf

lock = threading.Lock()


def say(**fields) -> None:
    with lock:
        print(json.dumps(fields), flush=True)


class Listener(ServiceListener):
    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        info = zc.get_service_info(type_, name, timeout=3000)
        if info is None:
            say(event="unresolved", type=type_, name=name)
            return
        txt = {k.decode(): (v.decode() if v is not None else None)
               for k, v in info.properties.items() if k}
        say(event="added", type=type_, name=name, port=info.port,
            addresses=sorted(info.parsed_addresses()), txt=txt)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        say(event="removed", type=type_, name=name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass


def main() -> None:
    seconds = float(sys.argv[1])
    types = sys.argv[2:]
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    try:
        ServiceBrowser(zc, types, Listener())
        say(event="browsing")
        done = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait(seconds)
    finally:
        zc.close()


if __name__ == "__main__":
    main()
