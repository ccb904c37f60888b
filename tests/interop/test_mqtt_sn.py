"""mqtt-lab's MQTT-SN gateway against a real MQTT-SN 1.2 client from PyPI (mqtt-sn-12), beside
paho-mqtt and mosquitto_pub over TCP.

mqtt-sn-12 1.0.9 has two faults on its receiving side that a test must step around: a read
with a timeout blocks for ever, and it never acknowledges a PUBLISH it receives. `SnClient`
below mends both (the library's own sending side is used as it is).
"""
import socket
import struct
import subprocess
import time

import pytest
from mqttsn12.MqttSnConstants import MqttSnConstants as C
from mqttsn12.client.MqttSnClient import MqttSnClient, MqttSnListener
from mqttsn12.client.MqttSnClientException import MqttSnClientException
from mqttsn12.packets import PublishPacket

from test_paho import Client

WAIT = 5.0


class SnClient(MqttSnClient):
    def receive_packet(self, blocking):
        # Upstream sets a timeout and then blocking mode, which clears it.
        self.datagram_socket.settimeout(self.timeout if blocking else 0.0)
        try:
            data, _ = self.datagram_socket.recvfrom(65535)
        except (BlockingIOError, socket.timeout):
            if blocking:
                raise MqttSnClientException("timeout waiting for the gateway")
            return None
        self.last_receive = int(time.time())
        return data

    def recv_publish(self, timeout=WAIT):
        """The next PUBLISH, acknowledged as its QoS asks (upstream never does)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            buf = self.receive_packet(False)
            if buf is None:
                time.sleep(0.01)
                continue
            kind = buf[3] if buf[0] == 1 else buf[1]
            if kind == C.TYPE_REGISTER:
                self.process_register(buf)
            elif kind == C.TYPE_PUBREL:
                self.send_packet(bytes([4, C.TYPE_PUBCOMP]) + buf[2:4])
            elif kind == C.TYPE_PUBLISH:
                p = PublishPacket()
                p.decode(buf)
                if p.get_qos() == 1:
                    self.send_puback(p, C.ACCEPTED)
                elif p.get_qos() == 2:
                    self.send_packet(bytes([4, C.TYPE_PUBREC]) + struct.pack(">H", p.get_message_id()))
                return p.get_topic_id(), p.get_qos(), p.get_data()
        raise TimeoutError("no PUBLISH from the gateway")


def sn_client(broker, client_id, keep_alive=30):
    c = SnClient()
    c.set_client_id(client_id)
    c.set_clean_session(True)
    c.set_keep_alive(keep_alive)
    c.set_timeout(WAIT)
    c.open("127.0.0.1", broker.sn_port)
    return c


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def sn_broker(broker_factory, tmp_path):
    predefined = tmp_path / "sn-topics.ron"
    predefined.write_text('(topics: {5: "lab/c"})\n')
    return broker_factory(extra_args=["--sn-port", str(free_udp_port()),
                                      "--sn-predefined", str(predefined)])


def test_a_node_registers_and_publishes_at_qos_1_and_2_to_a_paho_subscriber(sn_broker):
    sub = Client(sn_broker).connect()
    assert sub.subscribe("lab/a", 2) == [2]
    node = sn_client(sn_broker, "node-1")
    node.send_connect()
    topic_id = node.send_register("lab/a")
    node.send_publish_with_id(topic_id, C.TOPIC_TYPE_NORMAL, b"21.5", 1)
    node.send_publish_with_id(topic_id, C.TOPIC_TYPE_NORMAL, b"21.7", 2)
    got = [sub.messages.get(timeout=WAIT) for _ in range(2)]
    assert [(m.topic, m.payload, m.qos) for m in got] == [("lab/a", b"21.5", 1), ("lab/a", b"21.7", 2)]
    node.send_disconnect()
    node.close()


def test_a_node_subscribed_by_name_gets_what_mosquitto_pub_sends(sn_broker):
    node = sn_client(sn_broker, "node-2")
    node.send_connect()
    node.send_subscribe("lab/b", 1, MqttSnListener())
    topic_id = node.search_topic_id("lab/b")
    assert topic_id
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(sn_broker.port),
                    "-t", "lab/b", "-m", "on", "-q", "1"], check=True, timeout=WAIT)
    assert node.recv_publish() == (topic_id, 1, b"on")
    node.send_disconnect()
    node.close()


def test_qos_minus_one_to_a_predefined_id_needs_no_connection(sn_broker):
    sub = Client(sn_broker).connect()
    assert sub.subscribe("lab/c", 0) == [0]
    node = sn_client(sn_broker, "never-connects")
    node.send_publish_predefined(5, b"beacon", -1)
    m = sub.messages.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("lab/c", b"beacon")
    node.close()


def test_a_silent_nodes_will_reaches_paho(sn_broker):
    sub = Client(sn_broker).connect()
    assert sub.subscribe("lab/a", 1) == [1]
    node = sn_client(sn_broker, "door", keep_alive=1)
    node.set_will("lab/a", "door sensor lost", 1, False)
    node.send_connect()
    node.close()   # no DISCONNECT: silent from here
    m = sub.messages.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("lab/a", b"door sensor lost")
