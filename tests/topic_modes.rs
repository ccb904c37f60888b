//! Which topics exist: strict (the list), patterns on the list, and open mode, with real
//! clients.

mod common;

use common::*;
use mqtt_lab::broker::Command;
use mqtt_lab::broker::config::TopicsMode;
use rumqttc::{QoS, SubscribeReasonCode};

const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);

fn names(snap: &mqtt_lab::broker::Snapshot) -> Vec<(String, bool)> {
    snap.topics
        .iter()
        .map(|t| (t.name.clone(), t.listed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_on_the_list_grants_the_topics_it_matches() {
    let mut config = config();
    config.topics = vec!["lab/a".into(), "devices/+/temperature".into()];
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "teacher")).await;
    let codes = sub
        .subscribe(&[
            ("devices/7/temperature", QoS::AtLeastOnce),
            ("devices/+/temperature", QoS::AtLeastOnce),
            ("devices/7/humidity", QoS::AtLeastOnce),
            ("devices/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        codes,
        [GRANTED, GRANTED, SubscribeReasonCode::Failure, GRANTED]
    );
    let mut esp = Client::connect(options(addr, "esp32-7")).await;
    esp.publish("devices/7/temperature", QoS::AtLeastOnce, false, b"21.5")
        .await;
    esp.acked().await;
    esp.publish("devices/9/temperature", QoS::AtLeastOnce, false, b"19.0")
        .await;
    esp.acked().await;
    // Not matched by the pattern: acknowledged, not delivered, counted.
    esp.publish("devices/7/humidity", QoS::AtLeastOnce, false, b"40")
        .await;
    esp.acked().await;
    let a = sub.next_publish().await;
    assert_eq!(
        (a.topic.as_str(), &a.payload[..]),
        ("devices/7/temperature", &b"21.5"[..])
    );
    let b = sub.next_publish().await;
    assert_eq!(b.topic, "devices/9/temperature");
    sub.no_publish().await;

    let snap = snapshot(&broker).await;
    assert_eq!(snap.unlisted, 1);
    assert_eq!(
        names(&snap),
        [
            ("devices/7/temperature".to_string(), false),
            ("devices/9/temperature".to_string(), false),
            ("lab/a".to_string(), true),
        ]
    );
    assert_eq!(snap.patterns.len(), 1);
    assert_eq!(snap.patterns[0].pattern, "devices/+/temperature");
    assert_eq!(snap.patterns[0].topics, 2);

    // The publisher leaves: the teacher's wildcard subscriptions still use both topics.
    esp.client.disconnect().await.unwrap();
    esp.closed().await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(snapshot(&broker).await.topics.len(), 3);
    // Without them devices/9 has no use left; devices/7 keeps its subscriber.
    sub.client.unsubscribe("devices/#").await.unwrap();
    sub.client
        .unsubscribe("devices/+/temperature")
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;
    let snap = snapshot(&broker).await;
    assert_eq!(
        names(&snap),
        [
            ("devices/7/temperature".to_string(), false),
            ("lab/a".to_string(), true),
        ]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_without_patterns_is_unchanged() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "s")).await;
    let codes = sub
        .subscribe(&[("lab/a", QoS::AtLeastOnce), ("new/topic", QoS::AtLeastOnce)])
        .await;
    assert_eq!(codes, [GRANTED, SubscribeReasonCode::Failure]);
    let mut p = Client::connect(options(addr, "p")).await;
    p.publish("new/topic", QoS::AtLeastOnce, true, b"x").await;
    p.acked().await;
    tokio::time::sleep(QUIET).await;
    let snap = snapshot(&broker).await;
    assert!(snap.topics.iter().all(|t| t.listed));
    assert_eq!(snap.topics.len(), TOPICS.len());
    assert_eq!(snap.unlisted, 1);
    assert_eq!(snap.topics_mode, TopicsMode::Strict);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_creates_topics_when_used_and_removes_them_when_unused() {
    let mut config = config();
    config.topics_mode = TopicsMode::Open;
    config.topics.clear();
    let broker = start_with(config).await;
    let addr = broker.local_addr();

    // A subscriber brings its topic into being, and any filter is granted.
    let mut sub = Client::connect(options(addr, "student-1")).await;
    let codes = sub
        .subscribe(&[
            ("class/room1/light", QoS::AtLeastOnce),
            ("sensors/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(codes, [GRANTED, GRANTED]);
    let snap = snapshot(&broker).await;
    assert!(names(&snap).contains(&("class/room1/light".to_string(), false)));

    // A publish to any topic goes to whoever matches.
    let mut p = Client::connect(options(addr, "esp32")).await;
    p.publish("sensors/a1/temp", QoS::AtLeastOnce, false, b"20")
        .await;
    p.acked().await;
    p.publish("class/room1/light", QoS::AtLeastOnce, false, b"on")
        .await;
    p.acked().await;
    // A retained value brings a topic into being and keeps it.
    p.publish("notes/today", QoS::AtLeastOnce, true, b"quiz")
        .await;
    p.acked().await;
    assert_eq!(sub.next_publish().await.topic, "sensors/a1/temp");
    assert_eq!(sub.next_publish().await.topic, "class/room1/light");
    sub.no_publish().await;
    let snap = snapshot(&broker).await;
    assert_eq!(snap.topics.len(), 3, "{:?}", names(&snap));
    assert!(snap.topics.iter().all(|t| !t.listed));
    assert_eq!(snap.unlisted, 0);

    // Put one on the list from the window: it stays whatever clients do, and is saved.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("topics.ron");
    ask(&broker, |reply| Command::ReplaceTopics {
        topics: vec![],
        path: Some(list.clone()),
        reply: Some(reply),
    })
    .await
    .unwrap();
    ask(&broker, |reply| Command::AddTopic {
        topic: "sensors/a1/temp".into(),
        reply: Some(reply),
    })
    .await
    .unwrap();

    // Everyone leaves: what only they used goes; the listed one and the retained one stay.
    sub.client.disconnect().await.unwrap();
    sub.closed().await;
    p.client.disconnect().await.unwrap();
    p.closed().await;
    tokio::time::sleep(QUIET).await;
    let snap = snapshot(&broker).await;
    assert_eq!(
        names(&snap),
        [
            ("notes/today".to_string(), false),
            ("sensors/a1/temp".to_string(), true),
        ]
    );
    let saved = std::fs::read_to_string(&list).unwrap();
    assert!(saved.contains("sensors/a1/temp"), "{saved}");
    assert!(
        !saved.contains("notes/today"),
        "clients never change the file: {saved}"
    );

    // Clearing the retained value lets its topic go, once the client that cleared it (a
    // publisher, so a user of it too) has left.
    let mut p = Client::connect(options(addr, "esp32")).await;
    p.publish("notes/today", QoS::AtLeastOnce, true, b"").await;
    p.acked().await;
    assert_eq!(snapshot(&broker).await.topics.len(), 2);
    p.client.disconnect().await.unwrap();
    p.closed().await;
    tokio::time::sleep(QUIET).await;
    let snap = snapshot(&broker).await;
    assert_eq!(names(&snap), [("sensors/a1/temp".to_string(), true)]);
    let p = Client::connect(options(addr, "esp32")).await;

    // Back to strict: topics not on the list go, and only listed ones are served.
    p.publish("x/y", QoS::AtLeastOnce, true, b"1").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(snapshot(&broker).await.topics.len(), 2);
    broker
        .handle()
        .send(Command::SetTopicsMode {
            mode: TopicsMode::Strict,
        })
        .await;
    let snap = snapshot(&broker).await;
    assert_eq!(names(&snap), [("sensors/a1/temp".to_string(), true)]);
    assert_eq!(snap.topics_mode, TopicsMode::Strict);
    let mut s = Client::connect(options(addr, "late")).await;
    assert_eq!(
        s.subscribe(&[("x/y", QoS::AtLeastOnce)]).await,
        [SubscribeReasonCode::Failure]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_keeps_at_most_the_limit_of_unlisted_topics() {
    let mut config = config();
    config.topics_mode = TopicsMode::Open;
    config.max_unlisted_topics = 3;
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut all = Client::connect(options(addr, "all")).await;
    all.subscribe(&[("#", QoS::AtLeastOnce)]).await;
    let mut p = Client::connect(options(addr, "p")).await;
    for i in 0..5 {
        p.publish(&format!("t/{i}"), QoS::AtLeastOnce, false, b"v")
            .await;
        p.acked().await;
    }
    for i in 0..3 {
        assert_eq!(all.next_publish().await.topic, format!("t/{i}"));
    }
    all.no_publish().await;
    let snap = snapshot(&broker).await;
    assert_eq!(snap.topics.len(), 3 + TOPICS.len());
    assert_eq!(snap.topics_full, 2);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_values_of_appeared_topics_come_back_after_a_restart() {
    let dir = data_dir();
    let mut c = config();
    c.topics_mode = TopicsMode::Open;
    c.data_dir = Some(dir.clone());
    let broker = start_with(c.clone()).await;
    let addr = broker.local_addr();
    let mut p = Client::connect(options(addr, "p")).await;
    p.publish("appeared/one", QoS::AtLeastOnce, true, b"kept")
        .await;
    p.acked().await;
    broker.shutdown().await;

    let broker = start_with(c).await;
    let mut s = Client::connect(options(broker.local_addr(), "s")).await;
    s.subscribe(&[("appeared/#", QoS::AtLeastOnce)]).await;
    let got = s.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("appeared/one", &b"kept"[..])
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_filters_deeper_than_128_levels_are_refused_and_the_broker_goes_on() {
    let mut config = config();
    config.topics_mode = TopicsMode::Open;
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut raw = Raw::connected(addr, "deep").await;
    // 65,531 levels under $SYS, which strict mode always serves: refused.
    let deep = format!("$SYS{}", "/".repeat(65_530));
    assert_eq!(raw.subscribe(1, &[(deep.as_str(), 1)]).await, [0x80]);
    let ok = "a/".repeat(127) + "a";
    assert_eq!(raw.subscribe(2, &[(ok.as_str(), 1)]).await, [1]);
    // A PUBLISH to a name that deep is not a topic: that connection closes.
    raw.send(&publish_packet(&"/".repeat(200), 0, 0, false, false, b"x"))
        .await;
    raw.expect_closed().await;
    let mut s = Client::connect(options(addr, "after")).await;
    assert_eq!(
        s.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await,
        [GRANTED],
        "the broker goes on"
    );
    broker.shutdown().await;
}
