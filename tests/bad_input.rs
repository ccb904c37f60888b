//! Malformed input closes that one connection and nothing else; many clients and half-open
//! sockets do not lock out a new client.

mod common;

use std::time::Duration;

use common::*;
use mqtt_lab::broker::Config;
use rumqttc::QoS;

/// Each case: what a connected client sends, and why it is malformed.
fn malformed_after_connect() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "remaining length of five bytes",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        (
            "SUBSCRIBE with reserved flags 0x80",
            vec![0x80, 6, 0, 1, 0, 1, b'a', 0],
        ),
        ("PUBREL with reserved flags 0x60", vec![0x60, 2, 0, 1]),
        (
            "second CONNECT",
            connect_packet(&ConnectOpts {
                client_id: "again",
                ..Default::default()
            }),
        ),
        (
            "PUBLISH topic with a wildcard",
            publish_packet("lab/+", 0, 0, false, false, b"x"),
        ),
        (
            "PUBLISH topic with #",
            publish_packet("lab/#", 0, 0, false, false, b"x"),
        ),
        (
            "empty PUBLISH topic",
            publish_packet("", 0, 0, false, false, b"x"),
        ),
        (
            "PUBLISH topic with U+0000",
            publish_packet("lab/\0", 0, 0, false, false, b"x"),
        ),
        ("PUBLISH topic not UTF-8", {
            let mut p = publish_packet("lab/aa", 0, 0, false, false, b"x");
            p[6] = 0xc3;
            p[7] = 0x28;
            p
        }),
        ("PUBLISH QoS 3", vec![0x36, 5, 0, 1, b'a', 0, 1]),
        (
            "QoS 1 PUBLISH with packet id 0",
            publish_packet("lab/a", 1, 0, false, false, b"x"),
        ),
        ("SUBSCRIBE without filters", vec![0x82, 2, 0, 1]),
        (
            "SUBSCRIBE reserved option bits",
            vec![0x82, 6, 0, 1, 0, 1, b'a', 0x41],
        ),
        ("UNSUBSCRIBE without filters", vec![0xa2, 2, 0, 1]),
        ("CONNACK from a client", vec![0x20, 2, 0, 0]),
        ("packet type 0", vec![0x00, 0]),
        (
            "packet over the maximum size",
            publish_packet("lab/a", 0, 0, false, false, &[7; 2000]),
        ),
    ]
}

#[tokio::test]
async fn malformed_packets_close_only_their_connection() {
    let config = Config {
        max_packet_size: 1024,
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut bystander = Client::connect(options(addr, "bystander")).await;
    bystander.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let mut publisher = Client::connect(options(addr, "publisher")).await;
    for (i, (what, bytes)) in malformed_after_connect().into_iter().enumerate() {
        let id = format!("bad{i}");
        let opts = ConnectOpts {
            client_id: &id,
            keep_alive: 60,
            will: Some(("lab/b", what.as_bytes(), 0, false)),
            ..Default::default()
        };
        let (mut bad, _, rc) = Raw::connect(addr, &opts).await;
        assert_eq!(rc, 0);
        bad.send(&bytes).await;
        let closed =
            tokio::time::timeout(WAIT, async { while bad.read().await.is_some() {} }).await;
        assert!(closed.is_ok(), "{what}: connection not closed");
        // The will fires (a protocol error is not a clean DISCONNECT)...
        let will = bystander.next_publish().await;
        assert_eq!(&will.payload[..], what.as_bytes(), "{what}");
        // ...and everyone else carries on.
        publisher
            .publish("lab/a", QoS::AtLeastOnce, false, what.as_bytes())
            .await;
        publisher.acked().await;
        let p = bystander.next_publish().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            ("lab/a", what.as_bytes()),
            "{what}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_connects_are_closed_without_a_session() {
    let broker = start().await;
    let addr = broker.local_addr();
    let good = connect_packet(&ConnectOpts {
        client_id: "c",
        ..Default::default()
    });
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("first packet not CONNECT", vec![0xc0, 0]),
        ("CONNECT with flags 0x1F", {
            let mut p = good.clone();
            p[0] = 0x1f;
            p
        }),
        ("CONNECT reserved bit 0", {
            let mut p = good.clone();
            p[9] |= 0x01;
            p
        }),
        ("password without user name", {
            let mut p = good.clone();
            p[9] |= 0x40;
            p.extend_from_slice(&[0, 1, b'x']);
            p[1] += 3;
            p
        }),
        ("unknown protocol name", {
            let mut p = good.clone();
            p[4] = b'X';
            p
        }),
        ("truncated CONNECT", packet(0x10, &[0, 4, b'M', b'Q'])),
    ];
    cases.push(("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()));
    for (what, bytes) in cases {
        let mut raw = Raw::open(addr).await;
        raw.send(&bytes).await;
        assert_eq!(
            raw.read().await,
            None,
            "{what}: expected a close without CONNACK"
        );
    }
    let mut ok = Raw::connected(addr, "still-fine").await;
    ok.ping().await;
    let snap = snapshot(&broker).await;
    assert_eq!(snap.clients.len(), 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_declared_length_is_not_trusted() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut raw = Raw::connected(addr, "liar").await;
    // Declares 16 MiB minus a little, sends 3 bytes and waits: the broker waits too, without
    // reserving 16 MiB, and keeps serving others.
    raw.send(&[0x30, 0xf0, 0xff, 0xff, 0x07, 0, 1, b'a']).await;
    let mut other = Raw::connected(addr, "other").await;
    other.ping().await;
    assert!(raw.read_quiet().await.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn many_clients_and_half_open_sockets_do_not_lock_out_a_new_client() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut clients = Vec::new();
    for i in 0..300 {
        clients.push(Raw::connected(addr, &format!("crowd{i}")).await);
    }
    let mut half_open = Vec::new();
    for _ in 0..50 {
        let mut raw = Raw::open(addr).await;
        raw.send(&[0x10]).await; // the first byte of a CONNECT, and nothing more
        half_open.push(raw);
    }
    let mut sub = Client::connect(options(addr, "newcomer-sub")).await;
    sub.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;
    let mut newcomer = Client::connect(options(addr, "newcomer")).await;
    newcomer
        .publish("lab/a", QoS::AtLeastOnce, false, b"made it")
        .await;
    newcomer.acked().await;
    assert_eq!(&sub.next_publish().await.payload[..], b"made it");
    let snap = snapshot(&broker).await;
    assert_eq!(
        snap.clients
            .iter()
            .filter(|c| c.connection.is_some())
            .count(),
        302
    );
    for c in clients.iter_mut().step_by(50) {
        c.ping().await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn half_open_sockets_are_closed_after_the_connect_timeout() {
    let config = Config {
        connect_timeout: Duration::from_millis(300),
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut half_open = Vec::new();
    for _ in 0..50 {
        let mut raw = Raw::open(addr).await;
        raw.send(&[0x10, 20, 0, 4]).await; // a CONNECT that never finishes
        half_open.push(raw);
    }
    for raw in &mut half_open {
        raw.expect_closed().await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_costs_bounded_memory_and_others_carry_on() {
    let config = Config {
        max_buffered: 100,
        max_queued: 100,
        // The publisher is held back for this long before the stuck client is let go.
        stall_timeout: Duration::from_millis(200),
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut stuck = Raw::connected(addr, "stuck").await;
    stuck.subscribe(1, &[("lab/a", 0)]).await;
    // Make the kernel buffers small so the backlog reaches the broker quickly.
    let mut healthy = Client::connect(options(addr, "healthy")).await;
    healthy.subscribe(&[("lab/b", QoS::AtMostOnce)]).await;
    let mut publisher = Client::connect(options(addr, "pub")).await;
    let payload = vec![0u8; 4096];
    for _ in 0..20 {
        for _ in 0..100 {
            publisher
                .publish("lab/a", QoS::AtMostOnce, false, &payload)
                .await;
        }
        publisher
            .publish("lab/b", QoS::AtLeastOnce, false, b"ping")
            .await;
        publisher.acked().await;
        assert_eq!(&healthy.next_publish().await.payload[..], b"ping");
    }
    // 8 MB were sent to a client that reads nothing: most were dropped, and counted.
    let snap = snapshot(&broker).await;
    let me = client(&snap, "stuck");
    assert!(me.dropped > 0, "nothing dropped: {me:?}");
    assert_eq!(snap.dropped, me.dropped);
    broker.shutdown().await;
}
