//! Clients that do not wait for each answer: packets in the same write as CONNECT, long runs of
//! pipelined SUBSCRIBEs, and answers that must come back in the order the packets went in.

mod common;

use common::*;
use rumqttc::QoS;

const CONNACK: u8 = 0x20;
const PUBACK: u8 = 0x40;
const SUBACK: u8 = 0x90;
const UNSUBACK: u8 = 0xb0;
const PINGRESP: u8 = 0xd0;

fn connect(client_id: &str) -> Vec<u8> {
    connect_packet(&ConnectOpts {
        client_id,
        keep_alive: 60,
        ..Default::default()
    })
}

fn unsubscribe_packet(pkid: u16, filter: &str) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    packet(0xa2, &body)
}

/// The issue's own reproduction: CONNECT and a QoS 1 PUBLISH in one `send`.
#[tokio::test]
async fn a_publish_in_the_same_write_as_connect_is_acknowledged_at_once() {
    let broker = start().await;
    let mut raw = Raw::open(broker.local_addr()).await;
    raw.send(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01p\x32\x0b\x00\x05lab/a\x00\x01hi")
        .await;
    assert_eq!(raw.read().await.expect("CONNACK").byte1, CONNACK);
    let ack = raw
        .read()
        .await
        .expect("PUBACK, without waiting for another read");
    assert_eq!((ack.byte1, &ack.body[..]), (PUBACK, &[0u8, 1][..]));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_subscribe_in_the_same_write_as_connect_is_answered_and_served() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut raw = Raw::open(addr).await;
    let mut bytes = connect("eager");
    bytes.extend(subscribe_packet(7, &[("lab/a", 1)]));
    raw.send(&bytes).await;
    assert_eq!(raw.read().await.expect("CONNACK").byte1, CONNACK);
    let suback = raw.read().await.expect("SUBACK");
    assert_eq!((suback.byte1, &suback.body[..]), (SUBACK, &[0u8, 7, 1][..]));
    let publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::AtMostOnce, false, b"reached")
        .await;
    let p = raw.read().await.expect("the message");
    assert_eq!(p.publish().2, b"reached");
    broker.shutdown().await;
}

#[tokio::test]
async fn connect_publish_disconnect_in_one_write_delivers_the_message() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;
    let mut raw = Raw::open(addr).await;
    let mut bytes = connect("fire-and-forget");
    bytes.extend(publish_packet("lab/a", 0, 0, false, false, b"one shot"));
    bytes.extend([0xe0, 0]);
    raw.send(&bytes).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"one shot");
    broker.shutdown().await;
}

#[tokio::test]
async fn connect_with_a_will_then_disconnect_in_one_write_does_not_publish_the_will() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[("lab/b", QoS::AtLeastOnce)]).await;
    let mut raw = Raw::open(addr).await;
    let mut bytes = connect_packet(&ConnectOpts {
        client_id: "polite",
        keep_alive: 60,
        will: Some(("lab/b", b"will", 1, false)),
        ..Default::default()
    });
    bytes.extend([0xe0, 0]);
    raw.send(&bytes).await;
    raw.expect_closed().await;
    wait_for(&broker, "the client to be gone", |s| gone(s, "polite")).await;
    sub.no_publish().await;
    broker.shutdown().await;
}

/// Packets pipelined behind CONNECT are answered in the order they came: a PINGRESP or PUBACK
/// made by the connection does not overtake a SUBACK or CONNACK made by the router.
#[tokio::test]
async fn answers_come_back_in_the_order_of_the_packets() {
    let broker = start().await;
    let mut raw = Raw::open(broker.local_addr()).await;
    let mut bytes = connect("orderly");
    bytes.extend([0xc0, 0]);
    bytes.extend(subscribe_packet(1, &[("lab/a", 0)]));
    bytes.extend([0xc0, 0]);
    bytes.extend(publish_packet("other", 1, 2, false, false, b"x"));
    bytes.extend(unsubscribe_packet(3, "lab/a"));
    bytes.extend([0xc0, 0]);
    bytes.extend(publish_packet("other", 1, 4, false, false, b"y"));
    raw.send(&bytes).await;
    let mut got = Vec::new();
    for _ in 0..8 {
        let p = raw.read().await.expect("an answer");
        got.push(p.byte1);
    }
    assert_eq!(
        got,
        [
            CONNACK, PINGRESP, SUBACK, PINGRESP, PUBACK, UNSUBACK, PINGRESP, PUBACK
        ]
    );
    broker.shutdown().await;
}

/// The same, each packet in a write of its own, from a persistent session (persistence is on):
/// a quiet broker answers a lone run of acknowledgements after its subscribers' deliveries,
/// and the SUBSCRIBE or UNSUBSCRIBE that comes next still cannot overtake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_keep_their_order_when_each_packet_comes_alone() {
    let broker = start().await;
    let (mut raw, _, rc) = Raw::connect(
        broker.local_addr(),
        &ConnectOpts {
            client_id: "one-by-one",
            persistent: true,
            keep_alive: 60,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rc, 0);
    for round in 0..100u16 {
        let id = round * 4 + 1;
        for p in [
            publish_packet("other", 1, id, false, false, b"x"),
            subscribe_packet(id + 1, &[("lab/a", 1)]),
            publish_packet("lab/a", 1, id + 2, false, false, b"y"),
            unsubscribe_packet(id + 3, "lab/a"),
        ] {
            raw.send(&p).await;
        }
        let mut got = Vec::new();
        while got.len() < 4 {
            let p = raw.read().await.expect("an answer");
            // Its own message, delivered while it was subscribed, is not an answer.
            if p.kind() == 3 {
                let (_, pkid, _) = p.publish();
                raw.send(&ack_packet(0x40, pkid)).await;
                continue;
            }
            got.push(p.byte1);
        }
        assert_eq!(got, [PUBACK, SUBACK, PUBACK, UNSUBACK], "round {round}");
    }
    broker.shutdown().await;
}

/// A client that sends thousands of SUBSCRIBEs and UNSUBSCRIBEs without waiting, and reads the
/// answers, is a busy client, not a stalled one.
#[tokio::test]
async fn thousands_of_pipelined_subscribes_are_all_answered() {
    const N: u16 = 5000;
    let broker = start().await;
    let raw = Raw::connected(broker.local_addr(), "busy").await;
    let mut bytes = Vec::new();
    for i in 1..=N {
        bytes.extend(subscribe_packet(i, &[("lab/a", 1)]));
    }
    for i in 1..=N {
        bytes.extend(unsubscribe_packet(i, "lab/a"));
    }
    // Write and read at once, as a real client does: the broker's answers must not be held
    // up by a test that writes everything before it reads anything.
    let (mut rd, mut wr) = raw.stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        wr.write_all(&bytes).await.unwrap();
        wr
    });
    let mut reader = Reader::new(&mut rd);
    for i in 1..=N {
        let p = reader.read().await.expect("SUBACK, connection open");
        assert_eq!((p.byte1, &p.body[..2]), (SUBACK, &i.to_be_bytes()[..]));
    }
    for i in 1..=N {
        let p = reader.read().await.expect("UNSUBACK, connection open");
        assert_eq!((p.byte1, &p.body[..2]), (UNSUBACK, &i.to_be_bytes()[..]));
    }
    let _wr = writer.await.unwrap();
    let snap = snapshot(&broker).await;
    assert!(
        snap.clients
            .iter()
            .any(|c| c.client_id == "busy" && c.connection.is_some())
    );
    broker.shutdown().await;
}
