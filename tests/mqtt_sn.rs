//! The MQTT-SN gateway, driven with raw UDP datagrams: every message type, beside TCP clients.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use mqtt_lab::broker::sn::SnConfig;
use mqtt_lab::broker::sn::codec::{self, Flags, Message, TopicRef};
use mqtt_lab::broker::{Broker, Transport};
use rumqttc::QoS;
use tokio::net::UdpSocket;
use tokio::time::{sleep, timeout};

fn sn_config() -> SnConfig {
    SnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        predefined: HashMap::from([(1, "lab/a".to_owned()), (5, "other".to_owned())]),
        advertise: None,
        max_clients: 10,
        retry: Duration::from_millis(300),
    }
}

async fn start_sn(sn: SnConfig) -> (Broker, SocketAddr) {
    let mut topics = config().topics;
    topics.push("ab".into());
    let broker = start_with(mqtt_lab::broker::Config {
        sn: Some(sn),
        topics,
        ..config()
    })
    .await;
    let gw = broker
        .door_addr(Transport::MqttSn)
        .expect("the gateway's port");
    (broker, gw)
}

/// A sensor node: a UDP socket of its own.
struct Node {
    sock: UdpSocket,
    gw: SocketAddr,
}

impl Node {
    async fn new(gw: SocketAddr) -> Node {
        Node {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            gw,
        }
    }

    /// A node connected with a clean session and this keepalive.
    async fn connected(gw: SocketAddr, id: &str, duration: u16) -> Node {
        let n = Node::new(gw).await;
        n.send(&Message::Connect {
            flags: Flags {
                clean_session: true,
                ..Flags::default()
            },
            duration,
            client_id: id.into(),
        })
        .await;
        assert_eq!(n.recv().await, Message::ConnAck { code: 0 });
        n
    }

    /// A node connected with a will, through the exchange the gateway asks for: WILLTOPICREQ,
    /// WILLTOPIC (`will_flags`: its QoS and retain), WILLMSGREQ, WILLMSG, CONNACK.
    async fn connected_with_will(
        gw: SocketAddr,
        connect: Message,
        will_flags: Flags,
        topic: &str,
        payload: &'static [u8],
    ) -> Node {
        let n = Node::new(gw).await;
        n.send(&connect).await;
        assert_eq!(n.recv().await, Message::WillTopicReq);
        n.send(&Message::WillTopic {
            flags: will_flags,
            topic: Some(topic.into()),
        })
        .await;
        assert_eq!(n.recv().await, Message::WillMsgReq);
        n.send(&Message::WillMsg {
            payload: Bytes::from_static(payload),
        })
        .await;
        assert_eq!(n.recv().await, Message::ConnAck { code: 0 });
        n
    }

    async fn send(&self, m: &Message) {
        self.send_raw(&codec::encode(m)).await;
    }

    async fn send_raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.gw).await.unwrap();
    }

    async fn recv(&self) -> Message {
        self.recv_within(WAIT)
            .await
            .expect("a datagram from the gateway")
    }

    async fn recv_within(&self, wait: Duration) -> Option<Message> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = timeout(wait, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(codec::decode(&buf[..n]).expect("a well-formed datagram"))
    }

    async fn subscribe(&self, msg_id: u16, topic: TopicRef, qos: i8) -> (u16, u8, i8) {
        self.send(&Message::Subscribe {
            flags: Flags {
                qos,
                ..Flags::default()
            },
            msg_id,
            topic,
        })
        .await;
        match self.recv().await {
            Message::SubAck {
                flags,
                topic_id,
                msg_id: m,
                code,
            } if m == msg_id => (topic_id, code, flags.qos),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn register(&self, msg_id: u16, topic: &str) -> u16 {
        self.send(&Message::Register {
            topic_id: 0,
            msg_id,
            topic: topic.into(),
        })
        .await;
        match self.recv().await {
            Message::RegAck {
                topic_id,
                msg_id: m,
                code: 0,
            } if m == msg_id => topic_id,
            other => panic!("expected REGACK, got {other:?}"),
        }
    }

    /// PUBLISH at QoS 1 to a topic id, and its PUBACK, accepted.
    async fn publish_acked(&self, topic: TopicRef, msg_id: u16, payload: &[u8]) {
        let topic_id = match topic {
            TopicRef::Id(id) | TopicRef::Predefined(id) => id,
            _ => panic!("PUBACK names a topic id"),
        };
        self.publish(topic, 1, msg_id, payload).await;
        assert_eq!(
            self.recv().await,
            Message::PubAck {
                topic_id,
                msg_id,
                code: 0
            }
        );
    }

    /// PUBLISH at QoS 2, and the PUBREC / PUBREL / PUBCOMP that complete it.
    async fn publish_exactly_once(&self, topic: TopicRef, msg_id: u16, payload: &[u8]) {
        self.publish(topic, 2, msg_id, payload).await;
        assert_eq!(self.recv().await, Message::PubRec { msg_id });
        self.send(&Message::PubRel { msg_id }).await;
        assert_eq!(self.recv().await, Message::PubComp { msg_id });
    }

    async fn publish(&self, topic: TopicRef, qos: i8, msg_id: u16, payload: &[u8]) {
        self.send(&Message::Publish {
            flags: Flags {
                qos,
                ..Flags::default()
            },
            topic,
            msg_id,
            payload: Bytes::copy_from_slice(payload),
        })
        .await;
    }
}

fn payload_of(m: &Message) -> &[u8] {
    match m {
        Message::Publish { payload, .. } => payload,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_publish_at_every_qos_and_subscribe_beside_tcp_clients() {
    let (broker, gw) = start_sn(sn_config()).await;
    let mut tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    tcp.subscribe(&[("lab/#", QoS::ExactlyOnce)]).await;
    let node = Node::connected(gw, "node-1", 30).await;

    // REGISTER, then PUBLISH at QoS 0, 1 and 2.
    let id = node.register(1, "lab/b").await;
    assert_ne!(id, 0);
    node.publish(TopicRef::Id(id), 0, 0, b"q0").await;
    node.publish_acked(TopicRef::Id(id), 2, b"q1").await;
    node.publish_exactly_once(TopicRef::Id(id), 3, b"q2").await;
    for want in [&b"q0"[..], b"q1", b"q2"] {
        let p = tcp.next_publish().await;
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("lab/b", want));
    }
    // An unknown topic id: refused.
    node.publish(TopicRef::Id(999), 1, 4, b"x").await;
    assert_eq!(
        node.recv().await,
        Message::PubAck {
            topic_id: 999,
            msg_id: 4,
            code: codec::INVALID_TOPIC_ID
        }
    );

    // SUBSCRIBE by name: SUBACK carries the topic id the messages come under.
    let (sub_id, code, qos) = node.subscribe(5, TopicRef::Name("lab/a".into()), 1).await;
    assert_eq!((code, qos), (0, 1));
    tcp.publish("lab/a", QoS::AtLeastOnce, false, b"21.5").await;
    match node.recv().await {
        Message::Publish {
            flags,
            topic,
            msg_id,
            payload,
        } => {
            assert_eq!(
                (flags.qos, topic, &payload[..]),
                (1, TopicRef::Id(sub_id), &b"21.5"[..])
            );
            node.send(&Message::PubAck {
                topic_id: sub_id,
                msg_id,
                code: 0,
            })
            .await;
        }
        other => panic!("{other:?}"),
    }
    // QoS 2 to the node: PUBREC, PUBREL, PUBCOMP.
    node.send(&Message::Unsubscribe {
        msg_id: 6,
        topic: TopicRef::Name("lab/a".into()),
    })
    .await;
    assert_eq!(node.recv().await, Message::UnsubAck { msg_id: 6 });
    let (sub_id, _, _) = node.subscribe(7, TopicRef::Name("lab/a".into()), 2).await;
    tcp.publish("lab/a", QoS::ExactlyOnce, false, b"22").await;
    let Message::Publish { msg_id, topic, .. } = node.recv().await else {
        panic!()
    };
    assert_eq!(topic, TopicRef::Id(sub_id));
    node.send(&Message::PubRec { msg_id }).await;
    assert_eq!(node.recv().await, Message::PubRel { msg_id });
    node.send(&Message::PubComp { msg_id }).await;

    // The node is a client like the others.
    let snap = snapshot(&broker).await;
    let c = client(&snap, "node-1");
    let conn = c.connection.as_ref().unwrap();
    assert_eq!(conn.transport.to_string(), "MQTT-SN/UDP");
    assert_eq!(conn.peer, node.sock.local_addr().unwrap());
    assert_eq!(
        c.subscriptions,
        [("lab/a".to_owned(), mqtt_lab::broker::QoS::ExactlyOnce)]
    );
    // PINGREQ, DISCONNECT.
    node.send(&Message::PingReq { client_id: None }).await;
    assert_eq!(node.recv().await, Message::PingResp);
    node.send(&Message::Disconnect { duration: None }).await;
    assert_eq!(node.recv().await, Message::Disconnect { duration: None });
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_register_topics_before_publishing_them() {
    let (broker, gw) = start_sn(sn_config()).await;
    let node = Node::connected(gw, "node-2", 30).await;
    let (id, code, _) = node.subscribe(1, TopicRef::Name("lab/#".into()), 0).await;
    assert_eq!((id, code), (0, 0), "a filter has no id");
    let tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    tcp.publish("lab/c/d", QoS::AtMostOnce, false, b"1").await;
    let Message::Register {
        topic_id,
        msg_id,
        topic,
    } = node.recv().await
    else {
        panic!()
    };
    assert_eq!(topic, "lab/c/d");
    // Until REGACK, nothing under it; but the router's other answers still come (a SUBACK).
    assert_eq!(node.recv_within(QUIET).await, None);
    tcp.publish("lab/c/d", QoS::AtMostOnce, false, b"1b").await;
    assert_eq!(
        node.subscribe(9, TopicRef::Name("other".into()), 0).await.1,
        0
    );
    node.send(&Message::RegAck {
        topic_id,
        msg_id,
        code: 0,
    })
    .await;
    // Then the held messages, in order.
    let p = node.recv().await;
    assert!(matches!(&p, Message::Publish { topic: TopicRef::Id(t), .. } if *t == topic_id));
    assert_eq!(payload_of(&p), b"1");
    assert_eq!(payload_of(&node.recv().await), b"1b");
    // The next one on that topic needs no REGISTER.
    tcp.publish("lab/c/d", QoS::AtMostOnce, false, b"2").await;
    assert_eq!(payload_of(&node.recv().await), b"2");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predefined_ids_short_names_and_qos_minus_one() {
    let (broker, gw) = start_sn(sn_config()).await;
    let tcp = Client::connect(options(broker.local_addr(), "tcp-pub")).await;
    let node = Node::connected(gw, "node-3", 30).await;
    // Subscribed by predefined id and by short name: messages come under the same.
    let (id, code, _) = node.subscribe(1, TopicRef::Predefined(5), 0).await;
    assert_eq!((id, code), (5, 0));
    let (id, code, _) = node.subscribe(2, TopicRef::Short(*b"ab"), 0).await;
    assert_eq!((id, code), (0, 0));
    assert_eq!(
        node.subscribe(3, TopicRef::Predefined(77), 0).await.1,
        codec::INVALID_TOPIC_ID
    );
    tcp.publish("other", QoS::AtMostOnce, false, b"p").await;
    assert!(matches!(
        node.recv().await,
        Message::Publish {
            topic: TopicRef::Predefined(5),
            ..
        }
    ));
    tcp.publish("ab", QoS::AtMostOnce, false, b"s").await;
    assert!(
        matches!(node.recv().await, Message::Publish { topic: TopicRef::Short(s), .. } if &s == b"ab")
    );
    // Publishing to them, connected...
    let mut tcp = Client::connect(options(broker.local_addr(), "tcp-sub")).await;
    tcp.subscribe(&[("lab/a", QoS::AtMostOnce), ("ab", QoS::AtMostOnce)])
        .await;
    node.publish_acked(TopicRef::Predefined(1), 4, b"by id")
        .await;
    assert_eq!(&tcp.next_publish().await.payload[..], b"by id");
    // ... and at QoS -1, from a node that never connected.
    let stranger = Node::new(gw).await;
    stranger
        .publish(TopicRef::Predefined(1), -1, 0, b"fire and forget")
        .await;
    stranger
        .publish(TopicRef::Short(*b"ab"), -1, 0, b"short")
        .await;
    let got = [tcp.next_publish().await, tcp.next_publish().await];
    assert_eq!(&got[0].payload[..], b"fire and forget");
    assert_eq!(
        (got[1].topic.as_str(), &got[1].payload[..]),
        ("ab", &b"short"[..])
    );
    assert_eq!(
        stranger.recv_within(QUIET).await,
        None,
        "QoS -1 is not answered"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_is_asked_for_and_published_when_the_node_falls_silent() {
    let (broker, gw) = start_sn(sn_config()).await;
    let mut tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    tcp.subscribe(&[("lab/b", QoS::AtLeastOnce)]).await;
    let connect = Message::Connect {
        flags: Flags {
            will: true,
            clean_session: true,
            ..Flags::default()
        },
        duration: 1,
        client_id: "door-sensor".into(),
    };
    let _node = Node::connected_with_will(
        gw,
        connect,
        Flags {
            qos: 1,
            ..Flags::default()
        },
        "lab/b",
        b"door sensor lost",
    )
    .await;
    // Silent for more than 1.5 × its 1 s keepalive.
    let p = tcp.next_publish().await;
    assert_eq!(&p.payload[..], b"door sensor lost");
    let snap = snapshot(&broker).await;
    assert!(snap.clients.iter().all(|c| c.client_id != "door-sensor"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_node_gets_what_came_when_it_wakes() {
    let (broker, gw) = start_sn(sn_config()).await;
    let node = Node::connected(gw, "sleepy", 30).await;
    let (id, _, _) = node.subscribe(1, TopicRef::Name("lab/a".into()), 1).await;
    node.send(&Message::Disconnect { duration: Some(60) }).await;
    assert_eq!(node.recv().await, Message::Disconnect { duration: None });
    let tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    for v in ["1", "2", "3"] {
        tcp.publish("lab/a", QoS::AtLeastOnce, false, v.as_bytes())
            .await;
    }
    // Asleep: nothing is sent, it waits (and the session shows it).
    assert_eq!(node.recv_within(Duration::from_millis(500)).await, None);
    let snap = snapshot(&broker).await;
    let c = client(&snap, "sleepy");
    assert!(c.connection.is_some());
    // Awake for a moment: all three, then PINGRESP.
    node.send(&Message::PingReq {
        client_id: Some("sleepy".into()),
    })
    .await;
    let mut got = Vec::new();
    loop {
        match node.recv().await {
            Message::Publish {
                msg_id,
                payload,
                topic,
                ..
            } => {
                assert_eq!(topic, TopicRef::Id(id));
                got.push(payload);
                node.send(&Message::PubAck {
                    topic_id: id,
                    msg_id,
                    code: 0,
                })
                .await;
            }
            Message::PingResp => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, [&b"1"[..], b"2", b"3"].map(Bytes::copy_from_slice));
    // Asleep again: the next one waits too.
    tcp.publish("lab/a", QoS::AtLeastOnce, false, b"4").await;
    assert_eq!(node.recv_within(Duration::from_millis(500)).await, None);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_message_is_sent_again_with_dup() {
    let (broker, gw) = start_sn(sn_config()).await;
    let node = Node::connected(gw, "lossy", 30).await;
    let (id, _, _) = node.subscribe(1, TopicRef::Name("lab/a".into()), 1).await;
    let tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    tcp.publish("lab/a", QoS::AtLeastOnce, false, b"x").await;
    let Message::Publish { flags, msg_id, .. } = node.recv().await else {
        panic!()
    };
    assert!(!flags.dup);
    // "Lost": not acknowledged. It comes again, marked DUP, with the same id.
    let Message::Publish {
        flags,
        msg_id: again,
        ..
    } = node.recv().await
    else {
        panic!()
    };
    assert!(flags.dup);
    assert_eq!(again, msg_id);
    node.send(&Message::PubAck {
        topic_id: id,
        msg_id,
        code: 0,
    })
    .await;
    assert_eq!(node.recv_within(Duration::from_millis(700)).await, None);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_list_holds_for_nodes_too() {
    let (broker, gw) = start_sn(sn_config()).await;
    let node = Node::connected(gw, "node-4", 30).await;
    let (_, code, _) = node
        .subscribe(1, TopicRef::Name("nowhere/#".into()), 0)
        .await;
    assert_eq!(code, codec::INVALID_TOPIC_ID);
    let mut tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    tcp.subscribe(&[("#", QoS::AtMostOnce)]).await;
    let id = node.register(2, "nowhere").await;
    // Acknowledged (the node does not hang), not delivered.
    node.publish_acked(TopicRef::Id(id), 3, b"x").await;
    tcp.no_publish().await;
    assert!(snapshot(&broker).await.unlisted >= 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams_are_dropped_and_counted_and_the_gateway_goes_on() {
    let (broker, gw) = start_sn(SnConfig {
        max_clients: 2,
        ..sn_config()
    })
    .await;
    let node = Node::connected(gw, "node-5", 30).await;
    let bad: [&[u8]; 7] = [
        &[],                                   // empty
        &[0x05, 0x17],                         // length says 5, 2 bytes came
        &[0x02, 0x03],                         // unknown type
        &[0x03, 0x0e, 0x00],                   // PUBCOMP cut short
        &[0x01, 0x00],                         // a three-byte length cut short
        &[0x07, 0x0c, 0x03, 0, 1, 0, 1],       // reserved topic id type
        &[0x06, 0x04, 0x00, 0x02, 0x00, 0x0a], // CONNECT, protocol id 2
    ];
    for b in bad {
        node.send_raw(b).await;
    }
    // Nothing answers them, and the node is still served.
    node.send(&Message::PingReq { client_id: None }).await;
    assert_eq!(node.recv().await, Message::PingResp);
    // From an address with no client: dropped.
    let stranger = Node::new(gw).await;
    stranger.send(&Message::PingReq { client_id: None }).await;
    stranger
        .send(&Message::Register {
            topic_id: 0,
            msg_id: 1,
            topic: "lab/a".into(),
        })
        .await;
    assert_eq!(stranger.recv_within(QUIET).await, None);
    // SEARCHGW is answered by anyone.
    stranger.send(&Message::SearchGw { radius: 0 }).await;
    assert_eq!(
        stranger.recv().await,
        Message::GwInfo {
            gw_id: 1,
            address: Bytes::new()
        }
    );
    // Bounded: two clients at most here.
    let _second = Node::connected(gw, "node-6", 30).await;
    let third = Node::new(gw).await;
    third
        .send(&Message::Connect {
            flags: Flags::default(),
            duration: 30,
            client_id: "node-7".into(),
        })
        .await;
    assert_eq!(
        third.recv().await,
        Message::ConnAck {
            code: codec::CONGESTION
        }
    );
    let (taken, dropped) = snapshot(&broker).await.sn.expect("the gateway's counts");
    assert!(dropped >= 9, "{dropped} dropped");
    assert!(taken >= 14, "{taken} taken");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_advertises_itself() {
    let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (broker, _) = start_sn(SnConfig {
        advertise: Some((listener.local_addr().unwrap(), Duration::from_secs(60))),
        ..sn_config()
    })
    .await;
    let mut buf = [0u8; 64];
    let (n, _) = timeout(WAIT, listener.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        codec::decode(&buf[..n]),
        Ok(Message::Advertise {
            gw_id: 1,
            duration: 60
        })
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_anonymous_logins_nodes_are_refused() {
    let users = mqtt_lab::broker::users::Users {
        allow_anonymous: false,
        ..Default::default()
    };
    let broker = start_with(mqtt_lab::broker::Config {
        sn: Some(sn_config()),
        users,
        ..config()
    })
    .await;
    let gw = broker.door_addr(Transport::MqttSn).unwrap();
    let node = Node::new(gw).await;
    node.send(&Message::Connect {
        flags: Flags::default(),
        duration: 30,
        client_id: "n".into(),
    })
    .await;
    assert_eq!(
        node.recv().await,
        Message::ConnAck {
            code: codec::NOT_SUPPORTED
        }
    );
    // QoS -1 neither.
    node.publish(TopicRef::Predefined(1), -1, 0, b"x").await;
    let snap = snapshot(&broker).await;
    assert!(snap.clients.is_empty());
    assert_eq!(snap.refused_connections, 1, "logged as a refused login");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_again_is_a_lost_connack_or_a_wake_up_not_a_new_client() {
    let (broker, gw) = start_sn(sn_config()).await;
    let mut watcher = Client::connect(options(broker.local_addr(), "watcher")).await;
    watcher.subscribe(&[("lab/b", QoS::AtLeastOnce)]).await;
    // With a will, and persistent.
    let connect = Message::Connect {
        flags: Flags {
            will: true,
            ..Flags::default()
        },
        duration: 30,
        client_id: "valve".into(),
    };
    let node =
        Node::connected_with_will(gw, connect, Flags::default(), "lab/b", b"valve lost").await;
    let (id, _, _) = node.subscribe(1, TopicRef::Name("lab/a".into()), 1).await;
    // CONNECT again (as if the CONNACK had been lost): CONNACK, same session, no will.
    node.send(&Message::Connect {
        flags: Flags::default(),
        duration: 30,
        client_id: "valve".into(),
    })
    .await;
    assert_eq!(node.recv().await, Message::ConnAck { code: 0 });
    watcher.no_publish().await;
    // Asleep, a message waits; CONNECT wakes it to active, and it comes.
    node.send(&Message::Disconnect { duration: Some(60) }).await;
    assert_eq!(node.recv().await, Message::Disconnect { duration: None });
    let tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    tcp.publish("lab/a", QoS::AtLeastOnce, false, b"open").await;
    assert_eq!(node.recv_within(Duration::from_millis(400)).await, None);
    node.send(&Message::Connect {
        flags: Flags::default(),
        duration: 30,
        client_id: "valve".into(),
    })
    .await;
    assert_eq!(node.recv().await, Message::ConnAck { code: 0 });
    let p = node.recv().await;
    assert!(matches!(&p, Message::Publish { topic: TopicRef::Id(t), .. } if *t == id));
    assert_eq!(payload_of(&p), b"open");
    watcher.no_publish().await;
    // Another id from that address is a new node: the old one goes without its will.
    node.send(&Message::Connect {
        flags: Flags {
            clean_session: true,
            ..Flags::default()
        },
        duration: 30,
        client_id: "valve-2".into(),
    })
    .await;
    assert_eq!(node.recv().await, Message::ConnAck { code: 0 });
    watcher.no_publish().await;
    // The broker's own ids are not a node's to take.
    let other = Node::new(gw).await;
    other
        .send(&Message::Connect {
            flags: Flags::default(),
            duration: 30,
            client_id: "$bridge/x".into(),
        })
        .await;
    assert_eq!(
        other.recv().await,
        Message::ConnAck {
            code: codec::NOT_SUPPORTED
        }
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_will_is_not_published_when_the_broker_stops() {
    let data = data_dir();
    let sn_broker = || async {
        let broker = start_with(mqtt_lab::broker::Config {
            sn: Some(sn_config()),
            data_dir: Some(data.clone()),
            ..config()
        })
        .await;
        let gw = broker.door_addr(Transport::MqttSn).unwrap();
        (broker, gw)
    };
    let (broker, gw) = sn_broker().await;
    let connect = Message::Connect {
        flags: Flags {
            will: true,
            clean_session: true,
            ..Flags::default()
        },
        duration: 30,
        client_id: "pump".into(),
    };
    let _node = Node::connected_with_will(
        gw,
        connect,
        Flags {
            retain: true,
            ..Flags::default()
        },
        "lab/b",
        b"pump lost",
    )
    .await;
    broker.shutdown().await;
    // A retained will would be there after a restart.
    let (broker, _) = sn_broker().await;
    let mut c = Client::connect(options(broker.local_addr(), "c")).await;
    c.subscribe(&[("lab/b", QoS::AtMostOnce)]).await;
    c.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_forgot_a_topic_id_gets_it_registered_again() {
    let (broker, gw) = start_sn(sn_config()).await;
    let node = Node::connected(gw, "forgetful", 30).await;
    let (id, _, _) = node.subscribe(1, TopicRef::Name("lab/b".into()), 1).await;
    let tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    tcp.publish("lab/b", QoS::AtLeastOnce, false, b"v").await;
    let Message::Publish { msg_id, .. } = node.recv().await else {
        panic!()
    };
    // "Invalid topic id" (as after a reboot): REGISTER anew, then the message again.
    node.send(&Message::PubAck {
        topic_id: id,
        msg_id,
        code: codec::INVALID_TOPIC_ID,
    })
    .await;
    let Message::Register {
        topic_id,
        msg_id: reg,
        topic,
    } = node.recv().await
    else {
        panic!()
    };
    assert_eq!(topic, "lab/b");
    node.send(&Message::RegAck {
        topic_id,
        msg_id: reg,
        code: 0,
    })
    .await;
    let Message::Publish {
        flags,
        topic,
        msg_id: again,
        payload,
    } = node.recv().await
    else {
        panic!()
    };
    assert_eq!(
        (topic, again, &payload[..]),
        (TopicRef::Id(topic_id), msg_id, &b"v"[..])
    );
    assert!(flags.dup);
    node.send(&Message::PubAck {
        topic_id,
        msg_id,
        code: 0,
    })
    .await;
    assert_eq!(node.recv_within(Duration::from_millis(500)).await, None);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_node_holds_no_publisher_back() {
    let broker = start_with(mqtt_lab::broker::Config {
        sn: Some(sn_config()),
        high_water: 10,
        stall_timeout: Duration::from_secs(30),
        ..config()
    })
    .await;
    let gw = broker.door_addr(Transport::MqttSn).unwrap();
    let node = Node::connected(gw, "dozy", 300).await;
    node.subscribe(1, TopicRef::Name("lab/b".into()), 1).await;
    node.send(&Message::Disconnect {
        duration: Some(300),
    })
    .await;
    assert_eq!(node.recv().await, Message::Disconnect { duration: None });
    sleep(Duration::from_millis(200)).await;
    // 50 messages for it, far past the high-water mark: the publisher is not held back (it
    // would wait the 30 s stall deadline for its acknowledgements).
    let mut tcp = Client::connect(options(broker.local_addr(), "tcp")).await;
    for i in 0..50u32 {
        tcp.publish("lab/b", QoS::AtLeastOnce, false, &i.to_be_bytes())
            .await;
    }
    for _ in 0..50 {
        tcp.acked().await;
    }
    let snap = snapshot(&broker).await;
    let c = client(&snap, "dozy");
    assert_eq!(c.flow, mqtt_lab::broker::snapshot::Flow::Flowing);
    assert!(c.queued + c.inflight >= 50);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_acknowledgements_come_at_once() {
    // No journal, a level-4 client: the router answers no `Acks`, and the gateway must not
    // wait for one.
    let broker = start_with(mqtt_lab::broker::Config {
        sn: Some(sn_config()),
        data_dir: None,
        ..config()
    })
    .await;
    let gw = broker.door_addr(Transport::MqttSn).unwrap();
    let node = Node::connected(gw, "plain", 30).await;
    let id = node.register(1, "lab/b").await;
    node.publish_acked(TopicRef::Id(id), 2, b"q1").await;
    node.publish_exactly_once(TopicRef::Id(id), 3, b"q2").await;
    broker.shutdown().await;
}
