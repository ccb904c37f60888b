//! Publish/subscribe as clients see it: QoS both ways, wildcards, retained messages, the topic
//! list, `$SYS`.

mod common;

use std::time::Duration;

use common::*;
use mqtt_lab::broker::{Command, Config};
use rumqttc::{QoS, SubscribeReasonCode};

const ALL_QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

#[tokio::test]
async fn every_qos_both_ways_keeps_the_payload() {
    let broker = start().await;
    let addr = broker.local_addr();
    for sub_qos in ALL_QOS {
        let mut sub = Client::connect(options(addr, "sub")).await;
        sub.subscribe(&[("lab/a", sub_qos)]).await;
        let mut publisher = Client::connect(options(addr, "pub")).await;
        for pub_qos in ALL_QOS {
            let payload = format!("{pub_qos:?} to {sub_qos:?} \u{1F600}").into_bytes();
            publisher.publish("lab/a", pub_qos, false, &payload).await;
            if pub_qos != QoS::AtMostOnce {
                publisher.acked().await;
            }
            let got = sub.next_publish().await;
            assert_eq!(got.payload, payload);
            assert_eq!(got.topic, "lab/a");
            let delivered = if (pub_qos as u8) < (sub_qos as u8) {
                pub_qos
            } else {
                sub_qos
            };
            assert_eq!(got.qos, delivered, "delivered QoS is min(publish, granted)");
            assert!(!got.retain);
        }
        sub.client.disconnect().await.unwrap();
        publisher.client.disconnect().await.unwrap();
        let _ = sub.closed().await;
        let _ = publisher.closed().await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn qos2_outbound_completes_the_four_way_handshake() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Raw::connected(addr, "raw-sub").await;
    assert_eq!(sub.subscribe(1, &[("lab/a", 2)]).await, vec![2]);
    let publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::ExactlyOnce, false, b"x")
        .await;
    let p = sub.read().await.unwrap();
    let (_, pkid, payload) = p.publish();
    assert_eq!((p.qos(), payload.as_slice()), (2, &b"x"[..]));
    sub.send(&ack_packet(0x50, pkid)).await; // PUBREC
    let rel = sub.read().await.unwrap();
    assert_eq!(
        rel,
        RawPacket {
            byte1: 0x62,
            body: pkid.to_be_bytes().to_vec()
        }
    );
    sub.send(&ack_packet(0x70, pkid)).await; // PUBCOMP
    sub.ping().await;
    let snap = snapshot(&broker).await;
    let me = client(&snap, "raw-sub");
    assert_eq!(me.inflight, 0, "PUBCOMP ends the flow");
    broker.shutdown().await;
}

#[tokio::test]
async fn qos2_inbound_is_delivered_exactly_once() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;
    let mut publisher = Raw::connected(addr, "raw-pub").await;
    publisher
        .send(&publish_packet("lab/a", 2, 7, false, false, b"once"))
        .await;
    assert_eq!(
        publisher.read().await.unwrap(),
        RawPacket {
            byte1: 0x50,
            body: vec![0, 7]
        }
    );
    // The PUBREC is "lost": the client sends the PUBLISH again, with DUP.
    publisher
        .send(&publish_packet("lab/a", 2, 7, false, true, b"once"))
        .await;
    assert_eq!(
        publisher.read().await.unwrap(),
        RawPacket {
            byte1: 0x50,
            body: vec![0, 7]
        }
    );
    publisher.send(&ack_packet(0x62, 7)).await; // PUBREL
    assert_eq!(
        publisher.read().await.unwrap(),
        RawPacket {
            byte1: 0x70,
            body: vec![0, 7]
        }
    );
    assert_eq!(&sub.next_publish().await.payload[..], b"once");
    sub.no_publish().await;
    // After PUBREL the id is free again: a new message with it is a new message.
    publisher
        .send(&publish_packet("lab/a", 2, 7, false, false, b"twice"))
        .await;
    assert_eq!(publisher.read().await.unwrap().byte1, 0x50);
    assert_eq!(&sub.next_publish().await.payload[..], b"twice");
    broker.shutdown().await;
}

#[tokio::test]
async fn wildcards_match_levels() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut plus = Client::connect(options(addr, "plus")).await;
    let mut hash = Client::connect(options(addr, "hash")).await;
    assert_eq!(
        plus.subscribe(&[("lab/+", QoS::AtMostOnce)]).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    hash.subscribe(&[("lab/#", QoS::AtMostOnce)]).await;
    let publisher = Client::connect(options(addr, "pub")).await;
    for t in ["lab/a", "lab/c/d", "other"] {
        publisher
            .publish(t, QoS::AtMostOnce, false, t.as_bytes())
            .await;
    }
    assert_eq!(plus.next_publish().await.topic, "lab/a");
    plus.no_publish().await;
    assert_eq!(hash.next_publish().await.topic, "lab/a");
    assert_eq!(hash.next_publish().await.topic, "lab/c/d");
    hash.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[
        ("lab/+", QoS::AtMostOnce),
        ("lab/a", QoS::ExactlyOnce),
        ("#", QoS::AtLeastOnce),
    ])
    .await;
    let publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::ExactlyOnce, false, b"1")
        .await;
    publisher
        .publish("lab/b", QoS::ExactlyOnce, false, b"2")
        .await;
    let a = sub.next_publish().await;
    assert_eq!((a.topic.as_str(), a.qos), ("lab/a", QoS::ExactlyOnce));
    let b = sub.next_publish().await;
    assert_eq!((b.topic.as_str(), b.qos), ("lab/b", QoS::AtLeastOnce));
    sub.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_keeps_other_filters() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Raw::connected(addr, "sub").await;
    sub.subscribe(1, &[("lab/a", 1), ("lab/#", 0)]).await;
    let mut body = vec![0, 2];
    body.extend_from_slice(&[0, 5]);
    body.extend_from_slice(b"lab/a");
    sub.send(&packet(0xa2, &body)).await;
    assert_eq!(
        sub.read().await.unwrap(),
        RawPacket {
            byte1: 0xb0,
            body: vec![0, 2]
        }
    );
    let publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::AtLeastOnce, false, b"x")
        .await;
    let p = sub.read().await.unwrap();
    assert_eq!(p.qos(), 0, "only lab/# (QoS 0) is left");
    assert!(sub.read_quiet().await.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_messages_go_to_new_subscribers_and_are_cleared_by_an_empty_one() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::AtLeastOnce, true, b"21.5")
        .await;
    publisher.acked().await;
    let mut early = Client::connect(options(addr, "early")).await;
    early.subscribe(&[("lab/+", QoS::AtLeastOnce)]).await;
    let r = early.next_publish().await;
    assert!(
        r.retain,
        "a retained message sent for a new subscription has RETAIN set"
    );
    assert_eq!((&r.payload[..], r.qos), (&b"21.5"[..], QoS::AtLeastOnce));
    // A live delivery of a retained publish does not carry RETAIN.
    publisher
        .publish("lab/a", QoS::AtMostOnce, true, b"22.0")
        .await;
    let live = early.next_publish().await;
    assert!(!live.retain);
    // The retained message is replaced; the new subscriber sees only the latest.
    let mut late = Client::connect(options(addr, "late")).await;
    late.subscribe(&[("lab/a", QoS::AtMostOnce)]).await;
    let r = late.next_publish().await;
    assert_eq!(
        (&r.payload[..], r.qos, r.retain),
        (&b"22.0"[..], QoS::AtMostOnce, true)
    );
    // An empty retained payload deletes it (and is delivered as usual).
    publisher.publish("lab/a", QoS::AtMostOnce, true, b"").await;
    assert!(late.next_publish().await.payload.is_empty());
    let mut last = Client::connect(options(addr, "last")).await;
    last.subscribe(&[("lab/a", QoS::AtMostOnce)]).await;
    last.no_publish().await;
    broker.shutdown().await;
}

/// Mosquitto's order for a wildcard subscription's retained messages (checked against Debian's
/// Mosquitto 2.0.11 with this publish order): depth first, a level before the levels under it,
/// siblings in the order their first retained message came; a cleared one keeps its place.
#[tokio::test]
async fn retained_messages_come_in_mosquittos_topic_tree_order() {
    let published = ["b/2", "a/1", "b/1", "a/2", "c", "a", "b/1/x", "a/0"];
    let broker = start_with(Config {
        topics: published.iter().map(|t| t.to_string()).collect(),
        ..config()
    })
    .await;
    let addr = broker.local_addr();
    let mut publisher = Client::connect(options(addr, "pub")).await;
    for t in published {
        publisher
            .publish(t, QoS::AtLeastOnce, true, t.as_bytes())
            .await;
        publisher.acked().await;
    }
    // Cleared and set again: a/1 keeps its place.
    publisher.publish("a/1", QoS::AtLeastOnce, true, b"").await;
    publisher.acked().await;
    publisher
        .publish("a/1", QoS::AtLeastOnce, true, b"a/1")
        .await;
    publisher.acked().await;
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[("#", QoS::AtMostOnce), ("b/+", QoS::AtMostOnce)])
        .await;
    let mut got = Vec::new();
    for _ in 0..published.len() + 2 {
        got.push(String::from_utf8(sub.next_publish().await.payload.to_vec()).unwrap());
    }
    assert_eq!(
        got,
        [
            "b/2", "b/1", "b/1/x", "a", "a/1", "a/2", "a/0", "c", "b/2", "b/1"
        ],
        "each filter's retained messages in tree order, filter by filter"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn subscribing_to_an_unlisted_topic_is_refused_per_filter() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "sub")).await;
    let codes = sub
        .subscribe(&[
            ("lab/a", QoS::AtLeastOnce),
            ("nope/x", QoS::AtMostOnce),
            ("lab/+/x", QoS::ExactlyOnce),
            ("zzz/#", QoS::AtMostOnce),
            ("$SYS/#", QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure, // lab/+/x: matches no listed topic
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        ]
    );
    // Not a valid filter (rumqttc will not send it): refused beside a granted one.
    let mut raw = Raw::connected(addr, "raw").await;
    assert_eq!(
        raw.subscribe(7, &[("a/b+", 0), ("lab/a", 1)]).await,
        [0x80, 0x01]
    );
    let codes = sub
        .subscribe(&[("lab/c/+", QoS::ExactlyOnce), ("#", QoS::AtMostOnce)])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
            SubscribeReasonCode::Success(QoS::AtMostOnce)
        ]
    );
    assert_eq!(snapshot(&broker).await.refused_subscriptions, 4);
    broker.shutdown().await;
}

#[tokio::test]
async fn publishing_to_an_unlisted_topic_is_acknowledged_but_dropped() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[("#", QoS::AtLeastOnce)]).await;
    let mut publisher = Client::connect(options(addr, "pub")).await;
    for qos in ALL_QOS {
        publisher.publish("not/listed", qos, true, b"x").await;
        if qos != QoS::AtMostOnce {
            publisher.acked().await; // the handshake completes so the client does not hang
        }
    }
    publisher
        .publish("lab/a", QoS::AtLeastOnce, false, b"listed")
        .await;
    assert_eq!(&sub.next_publish().await.payload[..], b"listed");
    sub.no_publish().await;
    let snap = snapshot(&broker).await;
    assert_eq!(snap.unlisted, 3);
    assert!(snap.topics.iter().all(|t| t.name != "not/listed"));
    broker.shutdown().await;
}

#[tokio::test]
async fn clients_cannot_publish_into_sys() {
    let config = Config {
        sys_interval: Some(Duration::from_secs(3600)),
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[("$SYS/broker/version", QoS::AtMostOnce)])
        .await;
    let p = sub.next_publish().await;
    assert!(p.retain, "{p:?}"); // the broker's own, retained
    let publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("$SYS/broker/version", QoS::AtMostOnce, false, b"fake")
        .await;
    sub.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn sys_topics_are_published_and_hidden_from_hash() {
    let config = Config {
        sys_interval: Some(Duration::from_millis(200)),
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut all = Client::connect(options(addr, "all")).await;
    all.subscribe(&[("#", QoS::AtMostOnce)]).await;
    let mut sys = Client::connect(options(addr, "sys")).await;
    sys.subscribe(&[("$SYS/#", QoS::AtMostOnce)]).await;
    let mut seen = std::collections::HashMap::new();
    while seen.len() < mqtt_lab::broker::sys::topics().count() {
        let p = sys.next_publish().await;
        seen.insert(
            p.topic.clone(),
            String::from_utf8(p.payload.to_vec()).unwrap(),
        );
    }
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    assert!(seen["$SYS/broker/version"].starts_with("mqtt-lab version "));
    // Two clients are connected; each sent at least CONNECT and SUBSCRIBE.
    let p = loop {
        let p = sys.next_publish().await;
        if p.topic == "$SYS/broker/clients/connected" {
            break p;
        }
    };
    assert_eq!(&p.payload[..], b"2");
    all.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn deleting_a_topic_drops_its_retained_message_and_orphaned_subscriptions() {
    let broker = start().await;
    let addr = broker.local_addr();
    let handle = broker.handle();
    let mut publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("other", QoS::AtLeastOnce, true, b"kept?")
        .await;
    publisher.acked().await;
    let mut sub = Client::connect(options(addr, "sub")).await;
    sub.subscribe(&[("other", QoS::AtLeastOnce), ("lab/#", QoS::AtMostOnce)])
        .await;
    assert!(sub.next_publish().await.retain);

    let remove = |reply| Command::RemoveTopic {
        topic: "other".into(),
        reply: Some(reply),
    };
    assert_eq!(ask(&broker, remove).await, Ok(()));
    assert!(
        ask(&broker, remove)
            .await
            .unwrap_err()
            .contains("not on the topic list")
    );
    let snap = snapshot(&broker).await;
    assert!(snap.topics.iter().all(|t| t.name != "other"));
    let me = client(&snap, "sub");
    assert_eq!(
        me.subscriptions,
        vec![("lab/#".to_string(), mqtt_lab::broker::QoS::AtMostOnce)]
    );
    assert_eq!(
        sub.subscribe(&[("other", QoS::AtMostOnce)]).await,
        vec![SubscribeReasonCode::Failure]
    );

    // Added back: existing wildcard subscriptions see it, and no retained message survived.
    let (reply, rx) = tokio::sync::oneshot::channel();
    handle
        .send(Command::AddTopic {
            topic: "lab/new".into(),
            reply: Some(reply),
        })
        .await;
    assert_eq!(rx.await.unwrap(), Ok(()));
    publisher
        .publish("lab/new", QoS::AtMostOnce, false, b"hello")
        .await;
    assert_eq!(sub.next_publish().await.topic, "lab/new");
    let (reply, rx) = tokio::sync::oneshot::channel();
    handle
        .send(Command::AddTopic {
            topic: "bad/+x".into(),
            reply: Some(reply),
        })
        .await;
    assert!(
        rx.await
            .unwrap()
            .unwrap_err()
            .contains("not alone in its level")
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn history_keeps_the_last_ten_values_per_topic() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut publisher = Client::connect(options(addr, "pub")).await;
    for i in 0..15 {
        publisher
            .publish("lab/b", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
        publisher.acked().await;
    }
    let snap = snapshot(&broker).await;
    let topic = snap.topics.iter().find(|t| t.name == "lab/b").unwrap();
    let values: Vec<String> = topic
        .history
        .iter()
        .map(|h| String::from_utf8(h.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(values, (5..15).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(topic.history[0].from.as_deref(), Some("pub"));
    assert_eq!(topic.messages, 15);
    broker.shutdown().await;
}

#[tokio::test]
async fn topic_changes_are_saved_to_the_file_in_use_and_a_bad_list_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.ron");
    let config = Config {
        topics_path: Some(first.clone()),
        ..config()
    };
    let broker = start_with(config).await;
    let handle = broker.handle();
    let (reply, rx) = tokio::sync::oneshot::channel();
    handle
        .send(Command::AddTopic {
            topic: "lab/z".into(),
            reply: Some(reply),
        })
        .await;
    assert_eq!(rx.await.unwrap(), Ok(()));
    let saved = mqtt_lab::broker::topic_list::load(&first).unwrap();
    assert!(saved.contains(&"lab/z".to_string()) && saved.len() == TOPICS.len() + 1);

    let (reply, rx) = tokio::sync::oneshot::channel();
    let bad = vec!["fine".to_string(), "not/#/fine".to_string()];
    handle
        .send(Command::ReplaceTopics {
            topics: bad,
            path: None,
            reply: Some(reply),
        })
        .await;
    assert!(rx.await.unwrap().is_err());
    assert_eq!(
        snapshot(&broker).await.topics.len(),
        TOPICS.len() + 1,
        "unchanged"
    );

    // "Save as": the same list, written to a new file that becomes the one in use.
    let second = dir.path().join("second.ron");
    let (reply, rx) = tokio::sync::oneshot::channel();
    let list = vec!["x/1".to_string(), "x/2".to_string()];
    handle
        .send(Command::ReplaceTopics {
            topics: list.clone(),
            path: Some(second.clone()),
            reply: Some(reply),
        })
        .await;
    assert_eq!(rx.await.unwrap(), Ok(()));
    assert_eq!(mqtt_lab::broker::topic_list::load(&second).unwrap(), list);
    assert_eq!(
        mqtt_lab::broker::topic_list::load(&first).unwrap(),
        saved,
        "the old file is left alone"
    );
    let snap = snapshot(&broker).await;
    assert_eq!(snap.topics_path.as_deref(), Some(second.as_path()));
    let names: Vec<_> = snap.topics.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, list);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_burst_larger_than_the_connection_buffer_waits_in_the_queue_in_order() {
    let config = Config {
        max_buffered: 10,
        max_queued: 10_000,
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut sub = Raw::connected(addr, "sub").await;
    sub.subscribe(1, &[("lab/a", 0)]).await;
    let mut publisher = Raw::connected(addr, "pub").await;
    // 5000 QoS 0 messages in one write: far more than the 10 the connection task may hold.
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        burst.extend(publish_packet(
            "lab/a",
            0,
            0,
            false,
            false,
            &i.to_be_bytes(),
        ));
    }
    publisher.send(&burst).await;
    for i in 0..5000u32 {
        let p = sub.read().await.expect("every message arrives");
        assert_eq!(p.publish().2, i.to_be_bytes(), "in order");
    }
    assert_eq!(snapshot(&broker).await.dropped, 0);
    broker.shutdown().await;
}

/// The window opens a topic list file through the broker, which reads it off its router: a bad
/// file is refused with its line and column and changes nothing; a good one becomes the list
/// in use, and its file.
#[tokio::test]
async fn opening_a_topic_list_file_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ron");
    std::fs::write(&bad, "(topics: [\n  \"ok\",\n  \"no/#/x\",\n])").unwrap();
    let good = dir.path().join("good.ron");
    std::fs::write(&good, "(topics: [\"room/1\", \"room/2\"])").unwrap();
    let broker = start().await;
    let open = |path: &std::path::Path| {
        let path = path.to_owned();
        move |reply| Command::OpenTopicsFile {
            path,
            reply: Some(reply),
        }
    };
    let err = ask(&broker, open(&bad)).await.unwrap_err();
    assert!(err.contains(&format!("{}:3:3:", bad.display())), "{err}");
    assert_eq!(snapshot(&broker).await.topics.len(), TOPICS.len());
    assert_eq!(ask(&broker, open(&good)).await, Ok(()));
    let snap = snapshot(&broker).await;
    let names: Vec<_> = snap.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["room/1", "room/2"]);
    assert_eq!(snap.topics_path.as_deref(), Some(good.as_path()));
    broker.shutdown().await;
}
