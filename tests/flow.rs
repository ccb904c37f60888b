//! Flow control: a burst that outruns its subscriber loses nothing (the publishers are held
//! back instead), and a subscriber that stops reading holds no one back for long.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mqtt_lab::broker::config::OnStuck;
use mqtt_lab::broker::events::EventKind;
use mqtt_lab::broker::snapshot::Flow;
use mqtt_lab::broker::{Broker, Config};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::time::timeout;

const PUBLISHERS: usize = 8;
const PER_PUBLISHER: u32 = 10_000;
const PAYLOAD: usize = 64;

fn bench_config() -> Config {
    let mut c = config();
    c.topics = (0..PUBLISHERS).map(|i| format!("bench/{i}")).collect();
    c
}

/// Publishes `n` messages of 64 B, numbered, as fast as rumqttc lets it, then waits for the
/// last acknowledgement (QoS 1/2) or for DISCONNECT to go out after them (QoS 0).
async fn publisher(addr: SocketAddr, i: usize, n: u32, qos: QoS) {
    let mut opts = options(addr, &format!("pub-{i}"));
    opts.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let topic = format!("bench/{i}");
    tokio::spawn(async move {
        for seq in 0..n {
            let mut payload = vec![b'.'; PAYLOAD];
            payload[..8].copy_from_slice(&(i as u32).to_be_bytes().repeat(2));
            payload[8..12].copy_from_slice(&seq.to_be_bytes());
            client.publish(&topic, qos, false, payload).await.unwrap();
        }
        // After the last PUBLISH: at QoS 0 it says when they are all written. (At QoS 1
        // and 2 the acknowledgements do, and a DISCONNECT would cut a QoS 2 flow short.)
        if qos == QoS::AtMostOnce {
            client.disconnect().await.unwrap();
        }
    });
    let mut acked = 0;
    loop {
        match timeout(Duration::from_secs(60), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)))) => {
                acked += 1;
                if acked == n {
                    break;
                }
            }
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) if qos == QoS::AtMostOnce => {
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher {i} failed after {acked} acks: {e}"),
            Err(_) => panic!("publisher {i} stalled after {acked} acks"),
        }
    }
    if qos != QoS::AtMostOnce {
        assert_eq!(acked, n, "publisher {i}: every message acknowledged");
    }
}

/// Subscribes to `bench/#` and reads slowly: a pause every 200 messages, so that eight
/// publishers outrun it. Returns the messages per publisher, checking that each publisher's
/// arrive in order.
async fn slow_subscriber(
    addr: SocketAddr,
    qos: QoS,
    expected: u32,
    ready: tokio::sync::oneshot::Sender<()>,
) -> HashMap<u32, u32> {
    let mut opts = options(addr, "slow-sub");
    opts.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client.subscribe("bench/#", qos).await.unwrap();
    let mut ready = Some(ready);
    let mut seen: HashMap<u32, u32> = HashMap::new();
    let mut total = 0;
    while total < expected {
        let Ok(event) = timeout(Duration::from_secs(20), eventloop.poll()).await else {
            panic!("nothing for 20 s after {total} messages: {seen:?}");
        };
        let event = event.unwrap_or_else(|e| {
            panic!("the subscriber's connection ended after {total} messages: {e}")
        });
        match event {
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(r) = ready.take() {
                    r.send(()).unwrap();
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let from = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
                let seq = u32::from_be_bytes(p.payload[8..12].try_into().unwrap());
                let next = seen.entry(from).or_default();
                assert_eq!(
                    seq, *next,
                    "publisher {from}'s messages in order, none missing"
                );
                *next += 1;
                total += 1;
                if total % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            _ => {}
        }
    }
    seen
}

async fn burst(broker: &Broker, qos: QoS) {
    let addr = broker.local_addr();
    let expected = PUBLISHERS as u32 * PER_PUBLISHER;
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let sub = tokio::spawn(slow_subscriber(addr, qos, expected, ready_tx));
    ready.await.unwrap();
    let pubs: Vec<_> = (0..PUBLISHERS)
        .map(|i| tokio::spawn(publisher(addr, i, PER_PUBLISHER, qos)))
        .collect();
    for p in pubs {
        p.await.unwrap();
    }
    let seen = sub.await.unwrap();
    for i in 0..PUBLISHERS as u32 {
        assert_eq!(seen.get(&i), Some(&PER_PUBLISHER), "all of publisher {i}'s");
    }
    let snap = snapshot(broker).await;
    assert_eq!(snap.dropped, 0, "nothing dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_the_defaults_loses_nothing_qos0() {
    let broker = start_with(bench_config()).await;
    burst(&broker, QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_the_defaults_loses_nothing_qos1() {
    let broker = start_with(bench_config()).await;
    burst(&broker, QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_the_defaults_loses_nothing_qos2() {
    let broker = start_with(bench_config()).await;
    burst(&broker, QoS::ExactlyOnce).await;
}

/// With a queue limit of a sixteenth of the burst, only flow control keeps the burst whole:
/// without it the queue overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_held_back_rather_than_a_short_queue_overflowing() {
    let broker = start_with(Config {
        max_queued: 5_000,
        ..bench_config()
    })
    .await;
    burst(&broker, QoS::AtMostOnce).await;
}

/// A subscriber that never reads: after the stall deadline it holds no one back, the other
/// subscriber gets everything, and its queue stays within its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_stops_holding_the_room_back() {
    let broker = start_with(Config {
        stall_timeout: Duration::from_millis(300),
        max_queued: 2_000,
        ..config()
    })
    .await;
    let addr = broker.local_addr();
    let mut stuck = Raw::connected(addr, "stuck").await;
    stuck.send(&subscribe_packet(1, &[("lab/a", 1)])).await;
    assert_eq!(stuck.read().await.expect("SUBACK").kind(), 9);
    // From here on it reads nothing and acknowledges nothing.
    let mut fast = Client::connect(options(addr, "fast")).await;
    fast.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;

    let n = 20_000;
    // Returns the publisher's event loop, so that it stays connected until the end.
    let publishing = tokio::spawn(async move {
        let mut opts = options(addr, "publisher");
        opts.set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        tokio::spawn(async move {
            for i in 0..n {
                let payload = format!("{i:08}").into_bytes();
                client
                    .publish("lab/a", QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
        });
        let mut acked = 0;
        while acked < n {
            match timeout(Duration::from_secs(20), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                other => panic!("publisher stopped after {acked} acks: {other:?}"),
            }
        }
        eventloop
    });
    for i in 0..n {
        let p = timeout(Duration::from_secs(20), fast.next_publish())
            .await
            .unwrap_or_else(|_| panic!("the fast subscriber got only {i}"));
        assert_eq!(p.payload, format!("{i:08}").as_bytes());
    }
    let _publisher = publishing.await.unwrap();

    let snap = snapshot(&broker).await;
    let s = client(&snap, "stuck");
    assert_eq!(s.flow, Flow::Stuck);
    assert!(s.queued <= 2_000, "queue within its limit: {}", s.queued);
    assert!(s.dropped > 0, "what overflowed was dropped and counted");
    assert_eq!(client(&snap, "publisher").flow, Flow::Flowing);
    assert!(
        snap.events
            .iter()
            .any(|e| e.kind == EventKind::Stuck && e.who == "stuck"),
        "the log says which client was stuck: {:?}",
        snap.events
    );
    assert_eq!(client(&snap, "fast").dropped, 0);
}

/// With `OnStuck::Disconnect` the stuck subscriber is closed instead, and its will fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_can_be_disconnected_instead() {
    let broker = start_with(Config {
        stall_timeout: Duration::from_millis(300),
        on_stuck: OnStuck::Disconnect,
        ..config()
    })
    .await;
    let addr = broker.local_addr();
    let mut watcher = Client::connect(options(addr, "watcher")).await;
    watcher.subscribe(&[("lab/b", QoS::AtLeastOnce)]).await;
    let opts = ConnectOpts {
        client_id: "stuck",
        persistent: true,
        keep_alive: 60,
        will: Some(("lab/b", b"gone", 1, false)),
        ..Default::default()
    };
    let (mut stuck, _, code) = Raw::connect(addr, &opts).await;
    assert_eq!(code, 0);
    stuck.send(&subscribe_packet(1, &[("lab/a", 1)])).await;
    assert_eq!(stuck.read().await.expect("SUBACK").kind(), 9);

    let mut opts = options(addr, "publisher");
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let publisher = Client::connect(opts).await;
    let big = vec![b'x'; 16 * 1024];
    let flood = tokio::spawn(async move {
        // Enough to fill the socket, the connection's buffers and the high-water mark.
        for _ in 0..2_000 {
            if publisher
                .client
                .publish("lab/a", QoS::AtMostOnce, false, big.clone())
                .await
                .is_err()
            {
                break;
            }
        }
        publisher
    });
    let will = loop {
        match timeout(Duration::from_secs(20), watcher.events.recv()).await {
            Ok(Some(Ok(Packet::Publish(p)))) => break p,
            Ok(Some(Ok(_))) => {}
            other => panic!("waiting for the stuck client's will: {other:?}"),
        }
    };
    assert_eq!(will.payload, &b"gone"[..]);
    let snap = snapshot(&broker).await;
    assert!(client(&snap, "stuck").connection.is_none(), "disconnected");
    assert!(
        snap.events
            .iter()
            .any(|e| e.kind == EventKind::Stuck && e.text.contains("did not move")),
        "{:?}",
        snap.events
    );
    drop(flood.await.unwrap());
}
