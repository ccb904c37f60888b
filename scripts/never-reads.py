#!/usr/bin/env python3
"""An MQTT 3.1.1 client that subscribes and then reads nothing: the subscriber a broker's flow
control must not let freeze a room (scripts/gui-smoke.sh, scripts/bench-durability.sh).

    scripts/never-reads.py PORT CLIENT_ID FILTER SECONDS
"""
import socket
import sys
import time

port, client_id, topic_filter, seconds = sys.argv[1:5]
s = socket.create_connection(("127.0.0.1", int(port)))
cid = client_id.encode()
body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
s.sendall(bytes([0x10, len(body)]) + body)
s.recv(4)  # CONNACK
f = topic_filter.encode()
sub = b"\x00\x01" + len(f).to_bytes(2, "big") + f + b"\x00"
s.sendall(bytes([0x82, len(sub)]) + sub)
time.sleep(float(seconds))  # and reads nothing more
