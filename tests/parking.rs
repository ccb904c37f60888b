//! Quiet plain-TCP connections give up their task and wait in the parking lot: whatever comes
//! for them (a message, a packet, a kick, a silent keepalive, a closed socket, the broker
//! stopping) must find them as if they had never left.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use mqtt_lab::broker::{Broker, Command, Config};
use rumqttc::QoS;
use tokio::time::Instant;

/// Short enough for tests; the broker's default is seconds.
const PARK_AFTER: Duration = Duration::from_millis(200);

async fn broker() -> Broker {
    start_with(Config {
        park_after: Some(PARK_AFTER),
        ..config()
    })
    .await
}

fn parked(broker: &Broker) -> u64 {
    broker.stats().parked.load(Relaxed)
}

/// Waits until `n` connections are parked.
async fn until_parked(broker: &Broker, n: u64) {
    let deadline = Instant::now() + WAIT;
    while parked(broker) != n {
        assert!(
            Instant::now() < deadline,
            "{} parked, not {n}",
            parked(broker)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_parked_subscriber_gets_every_message_and_a_parked_publisher_is_heard() {
    let broker = broker().await;
    let mut sub = Client::connect(options(broker.local_addr(), "sub")).await;
    sub.subscribe(&[("lab/#", QoS::ExactlyOnce)]).await;
    let mut publisher = Client::connect(options(broker.local_addr(), "pub")).await;
    until_parked(&broker, 2).await;
    for round in 0..2 {
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let payload = format!("{round}.{i}");
            publisher
                .publish("lab/a", qos, false, payload.as_bytes())
                .await;
            let p = sub.next_publish().await;
            assert_eq!((p.qos, &p.payload[..]), (qos, payload.as_bytes()));
            if qos != QoS::AtMostOnce {
                publisher.acked().await;
            }
        }
        // Both quiet again: both park again, and the next round wakes them from there.
        until_parked(&broker, 2).await;
    }
    let snap = snapshot(&broker).await;
    assert_eq!(client(&snap, "sub").messages_out, 6);
    broker.shutdown().await;
}

#[tokio::test]
async fn packets_pipelined_to_a_parked_connection_are_answered_in_order() {
    let broker = broker().await;
    let mut raw = Raw::connected(broker.local_addr(), "pipeliner").await;
    until_parked(&broker, 1).await;
    let mut burst = vec![0xC0, 0]; // PINGREQ
    burst.extend(subscribe_packet(1, &[("lab/a", 1)]));
    burst.extend(publish_packet("lab/a", 1, 7, false, false, b"to myself"));
    raw.send(&burst).await;
    assert_eq!(raw.read().await.unwrap().kind(), 13, "PINGRESP first");
    assert_eq!(raw.read().await.unwrap().kind(), 9, "then SUBACK");
    let mut rest = [raw.read().await.unwrap(), raw.read().await.unwrap()];
    rest.sort_by_key(|p| p.kind());
    assert_eq!(rest[0].publish().2, b"to myself");
    assert_eq!(
        rest[1],
        RawPacket {
            byte1: 0x40,
            body: vec![0, 7]
        },
        "PUBACK"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_silent_parked_client_is_closed_at_its_keepalive_and_its_will_fires() {
    let broker = broker().await;
    let mut watcher = Client::connect(options(broker.local_addr(), "watcher")).await;
    watcher.subscribe(&[("lab/b", QoS::AtLeastOnce)]).await;
    let opts = ConnectOpts {
        client_id: "silent",
        keep_alive: 1,
        will: Some(("lab/b", b"gone quiet", 1, false)),
        ..Default::default()
    };
    let connected = Instant::now();
    let (mut silent, _, rc) = Raw::connect(broker.local_addr(), &opts).await;
    assert_eq!(rc, 0);
    until_parked(&broker, 2).await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"gone quiet");
    // 1.5 keepalives, and not much more: the lot looks at its deadlines every second.
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(4000),
        "closed after {waited:?}"
    );
    silent.expect_closed().await;
    wait_for(&broker, "the silent client gone", |s| gone(s, "silent")).await;
    // The watcher, woken by the will, parks again.
    until_parked(&broker, 1).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_parked_client_is_kicked_taken_over_and_seen_leaving() {
    let broker = broker().await;
    let mut watcher = Client::connect(options(broker.local_addr(), "watcher")).await;
    watcher.subscribe(&[("lab/c/d", QoS::AtLeastOnce)]).await;
    let with_will = |client_id| ConnectOpts {
        client_id,
        will: Some(("lab/c/d", client_id.as_bytes(), 1, false)),
        ..Default::default()
    };
    let (mut victim, _, _) = Raw::connect(broker.local_addr(), &with_will("victim")).await;
    let (twin, _, _) = Raw::connect(broker.local_addr(), &with_will("twin")).await;
    let (leaver, _, _) = Raw::connect(broker.local_addr(), &with_will("leaver")).await;
    until_parked(&broker, 4).await;

    let kick = ask(&broker, |reply| Command::Kick {
        client_id: "victim".into(),
        reply: Some(reply),
    });
    assert_eq!(kick.await, Ok(()));
    victim.expect_closed().await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"victim");

    // A new connection with the parked one's client id takes its session over.
    let mut twin = twin;
    let _again = Raw::connected(broker.local_addr(), "twin").await;
    twin.expect_closed().await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"twin");

    // A socket closed while parked is noticed at once, not at the keepalive.
    drop(leaver);
    assert_eq!(&watcher.next_publish().await.payload[..], b"leaver");
    wait_for(&broker, "the leaver gone", |s| gone(s, "leaver")).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_parked_mqtt5_client_hears_the_broker_stopping() {
    let broker = broker().await;
    // CONNECT, MQTT 5, clean start, keepalive 0, no properties, client id "v5".
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0];
    body.extend_from_slice(&[0, 2, b'v', b'5']);
    let mut raw = Raw::open(broker.local_addr()).await;
    raw.send(&packet(0x10, &body)).await;
    assert_eq!(raw.read().await.unwrap().kind(), 2, "CONNACK");
    until_parked(&broker, 1).await;
    broker.shutdown().await;
    let goodbye = raw.read().await.expect("DISCONNECT before the close");
    assert_eq!(
        (goodbye.kind(), goodbye.body[0]),
        (14, 0x8B),
        "server shutting down"
    );
    raw.expect_closed().await;
}

#[tokio::test]
async fn connections_keep_their_tasks_when_parking_is_off() {
    let broker = start_with(Config {
        park_after: None,
        ..config()
    })
    .await;
    let mut sub = Client::connect(options(broker.local_addr(), "sub")).await;
    sub.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;
    tokio::time::sleep(PARK_AFTER * 3).await;
    assert_eq!(parked(&broker), 0);
    let publisher = Client::connect(options(broker.local_addr(), "pub")).await;
    publisher
        .publish("lab/a", QoS::AtLeastOnce, false, b"x")
        .await;
    assert_eq!(&sub.next_publish().await.payload[..], b"x");
    broker.shutdown().await;
}
