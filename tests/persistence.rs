//! Persistence: what a restart keeps (retained messages, persistent sessions with their
//! subscriptions, queued and in-flight messages, inbound QoS 2 packet ids), and what a data
//! folder that is not ours gets (refused, and left as it was).

mod common;

use std::path::Path;

use common::*;
use mqtt_lab::broker::store::{FILE_NAME, StoreError};
use mqtt_lab::broker::{Broker, Command, Config, StartError};
use rumqttc::QoS;

fn persisted(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_owned()),
        ..config()
    }
}

async fn restart(broker: Broker, dir: &Path) -> Broker {
    broker.shutdown().await;
    start_with(persisted(dir)).await
}

#[tokio::test]
async fn retained_messages_and_offline_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with(persisted(dir.path())).await;
    let addr = broker.local_addr();
    // A persistent subscriber, then offline.
    let opts = ConnectOpts {
        client_id: "keeper",
        persistent: true,
        keep_alive: 60,
        ..Default::default()
    };
    let (mut keeper, _, _) = Raw::connect(addr, &opts).await;
    keeper
        .send(&subscribe_packet(1, &[("lab/a", 1), ("lab/c/#", 2)]))
        .await;
    assert_eq!(keeper.read().await.unwrap().kind(), 9);
    drop(keeper);
    let mut p = Client::connect(options(addr, "pub")).await;
    p.publish("lab/b", QoS::AtLeastOnce, true, b"retained b")
        .await;
    p.acked().await;
    p.publish("lab/a", QoS::AtLeastOnce, false, b"one").await;
    p.acked().await;
    p.publish("lab/c/d", QoS::ExactlyOnce, false, b"two").await;
    p.acked().await;
    drop(p);

    let broker = restart(broker, dir.path()).await;
    let addr = broker.local_addr();
    let snap = snapshot(&broker).await;
    assert_eq!(snap.retained, 1);
    assert_eq!((snap.persistent_sessions, snap.stored_messages), (1, 2));
    let status = snap.persistence.expect("persistence is on");
    assert_eq!(status.path, dir.path().join(FILE_NAME));
    assert!(status.bytes > 0);

    let (mut keeper, present, code) = Raw::connect(addr, &opts).await;
    assert_eq!((present, code), (true, 0), "the session was kept");
    let first = keeper.read().await.unwrap();
    assert_eq!(first.publish().2, b"one");
    assert_eq!(first.qos(), 1);
    let second = keeper.read().await.unwrap();
    assert_eq!(second.publish().2, b"two");
    assert_eq!(second.qos(), 2);
    // And the subscriptions: a new message reaches it.
    let p = Client::connect(options(addr, "pub")).await;
    p.publish("lab/a", QoS::AtMostOnce, false, b"three").await;
    assert_eq!(keeper.read().await.unwrap().publish().2, b"three");
    let mut fresh = Client::connect(options(addr, "fresh")).await;
    fresh.subscribe(&[("lab/b", QoS::AtLeastOnce)]).await;
    let r = fresh.next_publish().await;
    assert!(r.retain);
    assert_eq!(&r.payload[..], b"retained b");
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_in_flight_are_sent_again_with_their_packet_ids_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with(persisted(dir.path())).await;
    let addr = broker.local_addr();
    let opts = ConnectOpts {
        client_id: "slow",
        persistent: true,
        keep_alive: 60,
        ..Default::default()
    };
    let (mut slow, _, _) = Raw::connect(addr, &opts).await;
    slow.send(&subscribe_packet(1, &[("lab/a", 2)])).await;
    slow.read().await.unwrap();
    let mut p = Client::connect(options(addr, "pub")).await;
    for text in ["a", "b"] {
        p.publish("lab/a", QoS::ExactlyOnce, false, text.as_bytes())
            .await;
        p.acked().await;
    }
    let (_, id_a, _) = slow.read().await.unwrap().publish();
    let (_, id_b, _) = slow.read().await.unwrap().publish();
    // PUBREC for the first: the broker answers PUBREL and remembers that it did.
    slow.send(&ack_packet(0x50, id_a)).await;
    let pubrel = slow.read().await.unwrap();
    assert_eq!(
        (pubrel.byte1, pubrel.body.clone()),
        (0x62, id_a.to_be_bytes().to_vec())
    );
    drop(slow);
    drop(p);

    let broker = restart(broker, dir.path()).await;
    let (mut slow, present, _) = Raw::connect(broker.local_addr(), &opts).await;
    assert!(present);
    let again = slow.read().await.unwrap();
    assert_eq!(
        (again.byte1, again.body.clone()),
        (0x62, id_a.to_be_bytes().to_vec()),
        "PUBREL again for the released one"
    );
    let again = slow.read().await.unwrap();
    assert!(again.dup(), "the other again, as a duplicate");
    assert_eq!(again.publish(), ("lab/a".into(), id_b, b"b".to_vec()));
    broker.shutdown().await;
}

#[tokio::test]
async fn an_inbound_qos2_packet_id_survives_a_restart_so_a_resend_is_not_delivered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with(persisted(dir.path())).await;
    let addr = broker.local_addr();
    let mut watcher = Client::connect(options(addr, "watcher")).await;
    watcher.subscribe(&[("lab/a", QoS::ExactlyOnce)]).await;
    let opts = ConnectOpts {
        client_id: "sender",
        persistent: true,
        keep_alive: 60,
        ..Default::default()
    };
    let (mut sender, _, _) = Raw::connect(addr, &opts).await;
    sender
        .send(&publish_packet("lab/a", 2, 7, false, false, b"once"))
        .await;
    assert_eq!(sender.read().await.unwrap().byte1, 0x50, "PUBREC");
    assert_eq!(&watcher.next_publish().await.payload[..], b"once");
    drop(sender);
    drop(watcher);

    let broker = restart(broker, dir.path()).await;
    let addr = broker.local_addr();
    let mut watcher = Client::connect(options(addr, "watcher")).await;
    watcher.subscribe(&[("lab/a", QoS::ExactlyOnce)]).await;
    let (mut sender, present, _) = Raw::connect(addr, &opts).await;
    assert!(present);
    // The client did not see the PUBREC (say): it sends the PUBLISH again.
    sender
        .send(&publish_packet("lab/a", 2, 7, false, true, b"once"))
        .await;
    assert_eq!(sender.read().await.unwrap().byte1, 0x50, "PUBREC again");
    sender.send(&ack_packet(0x62, 7)).await;
    assert_eq!(sender.read().await.unwrap().byte1, 0x70, "PUBCOMP");
    watcher.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn clear_forgets_retained_messages_and_offline_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with(persisted(dir.path())).await;
    let addr = broker.local_addr();
    let opts = ConnectOpts {
        client_id: "gone",
        persistent: true,
        keep_alive: 60,
        ..Default::default()
    };
    drop(Raw::connect(addr, &opts).await);
    let mut p = Client::connect(options(addr, "pub")).await;
    p.publish("lab/b", QoS::AtLeastOnce, true, b"x").await;
    p.acked().await;
    drop(p);
    ask(&broker, |reply| Command::ClearState { reply: Some(reply) })
        .await
        .unwrap();
    let snap = snapshot(&broker).await;
    assert_eq!((snap.retained, snap.persistent_sessions), (0, 0));
    let broker = restart(broker, dir.path()).await;
    let snap = snapshot(&broker).await;
    assert_eq!(
        (snap.retained, snap.persistent_sessions),
        (0, 0),
        "on disk too"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_file_that_is_not_ours_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    for (content, expect) in [
        (&b"retained: [1, 2, 3]\n"[..], "not an SQLite database"),
        (
            &b"SQLite format 3\0 and then garbage that is no database page at all......"[..],
            "damaged",
        ),
    ] {
        std::fs::write(&path, content).unwrap();
        let Err(e) = Broker::start(persisted(dir.path())).await else {
            panic!("started on a file that is not ours");
        };
        let text = e.to_string();
        assert!(
            matches!(e, StartError::Store(_)) && text.contains(expect),
            "{text}"
        );
        assert!(
            text.contains(&path.display().to_string()),
            "names the file: {text}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), content, "left as it was");
    }
    // Someone else's SQLite database.
    std::fs::remove_file(&path).unwrap();
    {
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    match Broker::start(persisted(dir.path())).await {
        Err(StartError::Store(StoreError::Foreign(p, _))) => assert_eq!(p, path),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started on someone else's database"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "left as it was");
}

#[tokio::test]
async fn one_data_folder_serves_one_broker() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_with(persisted(dir.path())).await;
    match Broker::start(persisted(dir.path())).await {
        Err(StartError::Store(StoreError::InUse(_))) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("two brokers on one data folder"),
    }
    first.shutdown().await;
}
