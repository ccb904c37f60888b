//! Shared subscriptions (`$share/GROUP/FILTER`) for MQTT 3.1.1 clients, as Mosquitto, EMQX and
//! HiveMQ serve them: each message to one member of the group, beside ordinary subscribers.

mod common;

use std::collections::HashSet;

use common::*;
use mqtt_lab::broker::Config;
use rumqttc::{QoS, SubscribeReasonCode};

async fn take(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(String::from_utf8(c.next_publish().await.payload.to_vec()).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_goes_to_one_member_in_turn_and_to_every_ordinary_subscriber() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut a = Client::connect(options(addr, "worker-a")).await;
    let mut b = Client::connect(options(addr, "worker-b")).await;
    let mut all = Client::connect(options(addr, "dashboard")).await;
    for w in [&mut a, &mut b] {
        let codes = w
            .subscribe(&[("$share/workers/lab/#", QoS::AtLeastOnce)])
            .await;
        assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    }
    all.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let mut p = Client::connect(options(addr, "pub")).await;
    for i in 0..10 {
        p.publish("lab/a", QoS::AtLeastOnce, false, i.to_string().as_bytes())
            .await;
        p.acked().await;
    }
    let got_a = take(&mut a, 5).await;
    let got_b = take(&mut b, 5).await;
    a.no_publish().await;
    b.no_publish().await;
    let both: HashSet<String> = got_a.iter().chain(&got_b).cloned().collect();
    assert_eq!(
        both.len(),
        10,
        "each message once in the group: {got_a:?} {got_b:?}"
    );
    assert_eq!(got_a, ["0", "2", "4", "6", "8"], "in turn");
    assert_eq!(
        take(&mut all, 10).await.len(),
        10,
        "the ordinary subscriber gets all"
    );

    // Shown as a group.
    let snap = snapshot(&broker).await;
    let topic = snap.topics.iter().find(|t| t.name == "lab/a").unwrap();
    assert_eq!(topic.subscribers, 1);
    assert_eq!(topic.shared, [("$share/workers/lab/#".to_string(), 2)]);

    // A member that leaves: the other gets everything.
    b.client.disconnect().await.unwrap();
    b.closed().await;
    tokio::time::sleep(QUIET).await;
    for i in 10..14 {
        p.publish("lab/b", QoS::AtLeastOnce, false, i.to_string().as_bytes())
            .await;
        p.acked().await;
    }
    assert_eq!(take(&mut a, 4).await, ["10", "11", "12", "13"]);
    // Unsubscribed, it gets nothing more.
    a.client.unsubscribe("$share/workers/lab/#").await.unwrap();
    tokio::time::sleep(QUIET).await;
    p.publish("lab/a", QoS::AtLeastOnce, false, b"after").await;
    p.acked().await;
    a.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_or_unlisted_shared_filters_are_refused_and_no_retained_message_is_sent() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut p = Client::connect(options(addr, "pub")).await;
    p.publish("lab/a", QoS::AtLeastOnce, true, b"kept").await;
    p.acked().await;
    // Raw: rumqttc will not send the malformed ones.
    let mut c = Raw::connected(addr, "c").await;
    let codes = c
        .subscribe(
            1,
            &[
                ("$share/g/nowhere/#", 0),
                ("$share//lab/a", 0),
                ("$share/g+/lab/a", 0),
                ("$share/g", 0),
                ("$share/g/lab/a", 0),
            ],
        )
        .await;
    assert_eq!(codes, [0x80, 0x80, 0x80, 0x80, 0x00]);
    assert!(c.read_quiet().await.is_none(), "no retained message");
    let snap = snapshot(&broker).await;
    assert!(
        snap.events
            .iter()
            .any(|e| e.text.contains("not a valid shared subscription")),
        "{:?}",
        snap.events
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_persistent_members_group_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let persisted = || Config {
        data_dir: Some(dir.path().to_owned()),
        ..config()
    };
    let broker = start_with(persisted()).await;
    let mut opts = options(broker.local_addr(), "member");
    opts.set_clean_session(false);
    let mut m = Client::connect(opts).await;
    m.subscribe(&[("$share/g/lab/a", QoS::AtLeastOnce)]).await;
    drop(m);
    broker.shutdown().await;

    let broker = start_with(persisted()).await;
    let snap = snapshot(&broker).await;
    let topic = snap.topics.iter().find(|t| t.name == "lab/a").unwrap();
    assert_eq!(topic.shared, [("$share/g/lab/a".to_string(), 1)]);
    let mut p = Client::connect(options(broker.local_addr(), "pub")).await;
    p.publish("lab/a", QoS::AtLeastOnce, false, b"queued").await;
    p.acked().await;
    let mut opts = options(broker.local_addr(), "member");
    opts.set_clean_session(false);
    let mut m = Client::connect(opts).await;
    assert_eq!(&m.next_publish().await.payload[..], b"queued");
    broker.shutdown().await;
}
