//! Connections and sessions: CONNACK codes, logins, wills, keepalive, persistent sessions,
//! takeover, kick, in-flight window and queues.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mqtt_lab::broker::users::Users;
use mqtt_lab::broker::{Command, Config};
use rumqttc::QoS;

#[tokio::test]
async fn connack_codes_for_protocol_level_and_client_id() {
    let broker = start().await;
    let addr = broker.local_addr();
    // Unknown levels: CONNACK 0x01, then close (MQTT 5 is tests/mqtt5.rs').
    for level in [6u8, 2] {
        let mut bytes = connect_packet(&ConnectOpts {
            client_id: "x",
            ..Default::default()
        });
        bytes[8] = level;
        let mut raw = Raw::open(addr).await;
        raw.send(&bytes).await;
        assert_eq!(
            raw.read().await,
            Some(RawPacket {
                byte1: 0x20,
                body: vec![0, 1]
            })
        );
        raw.expect_closed().await;
    }
    // MQTT 3.1 (MQIsdp, level 3) is spoken.
    let mut body = vec![0, 6];
    body.extend_from_slice(b"MQIsdp");
    body.extend_from_slice(&[3, 0x02, 0, 30, 0, 3]);
    body.extend_from_slice(b"old");
    let mut raw = Raw::open(addr).await;
    raw.send(&packet(0x10, &body)).await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            byte1: 0x20,
            body: vec![0, 0]
        })
    );
    assert_eq!(raw.subscribe(1, &[("lab/a", 1)]).await, vec![1]);
    // A 3.1 client resuming its persistent session: CONNACK's first byte is reserved in 3.1
    // (Session Present came with 3.1.1), so 0, though the session and its subscription stay.
    let mut body = vec![0, 6];
    body.extend_from_slice(b"MQIsdp");
    body.extend_from_slice(&[3, 0x00, 0, 30, 0, 5]);
    body.extend_from_slice(b"old31");
    for round in 0..2 {
        let mut raw = Raw::open(addr).await;
        raw.send(&packet(0x10, &body)).await;
        let ack = raw.read().await.expect("CONNACK");
        assert_eq!(
            (ack.byte1, ack.body.clone()),
            (0x20, vec![0, 0]),
            "round {round}"
        );
        if round == 0 {
            assert_eq!(raw.subscribe(1, &[("lab/b", 1)]).await, vec![1]);
        }
    }
    let snap = snapshot(&broker).await;
    let old31 = client(&snap, "old31");
    assert_eq!(old31.subscriptions.len(), 1, "the session was resumed");
    // Zero-length client id: accepted with a clean session, refused (0x02) without.
    let (mut anon, sp, rc) = Raw::connect(addr, &ConnectOpts::default()).await;
    assert_eq!((sp, rc), (false, 0));
    anon.ping().await;
    let (mut refused, _, rc) = Raw::connect(
        addr,
        &ConnectOpts {
            persistent: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rc, 2);
    refused.expect_closed().await;
    let snap = snapshot(&broker).await;
    assert!(
        snap.clients
            .iter()
            .any(|c| c.client_id.starts_with("auto-")),
        "an id was assigned"
    );
    assert!(
        snap.clients
            .iter()
            .any(|c| c.client_id == "old" && c.connection.as_ref().unwrap().protocol_level == 3)
    );
    broker.shutdown().await;
}

fn users_config(allow_anonymous: bool) -> Config {
    let mut users = Users {
        allow_anonymous,
        ..Users::default()
    };
    users
        .upsert("alice", Some("alice@lab.example"), "wonderland")
        .unwrap();
    Config { users, ..config() }
}

#[tokio::test]
async fn login_by_user_name_or_email() {
    let broker = start_with(users_config(false)).await;
    let addr = broker.local_addr();
    for (user, password, expected) in [
        (Some("alice"), Some(&b"wonderland"[..]), 0u8),
        (Some("alice@lab.example"), Some(b"wonderland"), 0),
        (Some("alice"), Some(b"wrong"), 4),
        (Some("bob"), Some(b"wonderland"), 4),
        (Some("alice"), None, 4),
        (None, None, 5),
    ] {
        let opts = ConnectOpts {
            client_id: "c",
            user,
            password,
            ..Default::default()
        };
        let (mut raw, _, rc) = Raw::connect(addr, &opts).await;
        assert_eq!(rc, expected, "user {user:?}");
        if rc == 0 {
            raw.ping().await;
        } else {
            raw.expect_closed().await;
        }
    }
    // rumqttc sees the same.
    let mut opts = options(addr, "rumqttc");
    opts.set_credentials("alice@lab.example", "wonderland");
    let c = Client::connect(opts).await;
    c.client.disconnect().await.unwrap();
    let mut opts = options(addr, "rumqttc2");
    opts.set_credentials("alice", "nope");
    let err = Client::start(opts).closed().await;
    assert!(err.contains("BadUserNamePassword"), "{err}");
    assert_eq!(snapshot(&broker).await.refused_connections, 5);
    broker.shutdown().await;
}

#[tokio::test]
async fn users_changed_while_running_apply_to_new_logins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.ron");
    let config = Config {
        users_path: Some(path.clone()),
        ..users_config(true)
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut users = Users {
        allow_anonymous: false,
        ..Users::default()
    };
    users.upsert("bob", None, "builder").unwrap();
    let (reply, rx) = tokio::sync::oneshot::channel();
    broker
        .handle()
        .send(Command::SetUsers {
            users: users.clone(),
            reply: Some(reply),
        })
        .await;
    assert_eq!(rx.await.unwrap(), Ok(()));
    assert_eq!(
        Users::load(&path).unwrap(),
        users,
        "saved to the users file"
    );
    let login = |user: &'static str, pw: &'static [u8]| ConnectOpts {
        client_id: "c",
        user: Some(user),
        password: Some(pw),
        ..Default::default()
    };
    assert_eq!(Raw::connect(addr, &login("bob", b"builder")).await.2, 0);
    assert_eq!(
        Raw::connect(addr, &login("alice", b"wonderland")).await.2,
        4
    );
    assert_eq!(Raw::connect(addr, &ConnectOpts::default()).await.2, 5);
    broker.shutdown().await;
}

/// A subscriber to `lab/will` and a client with a will on it.
async fn will_setup(broker: &mqtt_lab::broker::Broker, id: &str) -> (Client, Raw) {
    let addr = broker.local_addr();
    let mut watcher = Client::connect(options(addr, &format!("{id}-watcher"))).await;
    watcher.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let opts = ConnectOpts {
        client_id: id,
        keep_alive: 60,
        will: Some(("lab/a", b"gone", 1, false)),
        ..Default::default()
    };
    let (raw, _, rc) = Raw::connect(addr, &opts).await;
    assert_eq!(rc, 0);
    (watcher, raw)
}

#[tokio::test]
async fn will_is_published_when_the_socket_drops_but_not_after_disconnect() {
    let broker = start().await;
    let (mut watcher, raw) = will_setup(&broker, "dropper").await;
    drop(raw);
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..], will.qos),
        ("lab/a", &b"gone"[..], QoS::AtLeastOnce)
    );

    let (mut watcher, mut raw) = will_setup(&broker, "polite").await;
    raw.send(&[0xe0, 0]).await; // DISCONNECT
    raw.expect_closed().await;
    watcher.no_publish().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn will_is_published_after_a_protocol_error() {
    let broker = start().await;
    let (mut watcher, mut raw) = will_setup(&broker, "faulty").await;
    raw.send(&[0x82, 2, 0, 1]).await; // SUBSCRIBE with no filters
    raw.expect_closed().await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"gone");
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_will_is_kept() {
    let broker = start().await;
    let addr = broker.local_addr();
    let opts = ConnectOpts {
        client_id: "willing",
        will: Some(("lab/b", b"offline", 0, true)),
        ..Default::default()
    };
    let (raw, _, _) = Raw::connect(addr, &opts).await;
    drop(raw);
    wait_for(&broker, "the will", |s| gone(s, "willing")).await;
    let mut late = Client::connect(options(addr, "late")).await;
    late.subscribe(&[("lab/b", QoS::AtMostOnce)]).await;
    let p = late.next_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"offline"[..], true));
    broker.shutdown().await;
}

#[tokio::test]
async fn keepalive_expires_at_one_and_a_half_times() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut watcher = Client::connect(options(addr, "watcher")).await;
    watcher.subscribe(&[("lab/a", QoS::AtMostOnce)]).await;
    let opts = ConnectOpts {
        client_id: "sleepy",
        keep_alive: 1,
        will: Some(("lab/a", b"timed out", 0, false)),
        ..Default::default()
    };
    let (mut raw, _, _) = Raw::connect(addr, &opts).await;
    let t0 = Instant::now();
    // Traffic keeps it alive...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        raw.ping().await;
    }
    // ...silence does not.
    let quiet = Instant::now();
    raw.expect_closed().await;
    let waited = quiet.elapsed();
    assert!(t0.elapsed() > Duration::from_millis(1800));
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(2600),
        "closed after {waited:?}, expected about 1.5 s"
    );
    assert_eq!(&watcher.next_publish().await.payload[..], b"timed out");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_socket_that_never_sends_connect_is_closed() {
    let config = Config {
        connect_timeout: Duration::from_millis(500),
        ..config()
    };
    let broker = start_with(config).await;
    let mut raw = Raw::open(broker.local_addr()).await;
    let t0 = Instant::now();
    raw.expect_closed().await;
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "closed too early: {:?}",
        t0.elapsed()
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_messages_while_offline() {
    let broker = start().await;
    let addr = broker.local_addr();
    let persistent = ConnectOpts {
        client_id: "keeper",
        persistent: true,
        keep_alive: 60,
        ..Default::default()
    };
    let (mut raw, sp, _) = Raw::connect(addr, &persistent).await;
    assert!(!sp);
    raw.subscribe(1, &[("lab/a", 1), ("lab/b", 2)]).await;
    let mut publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::AtLeastOnce, false, b"m0")
        .await;
    let (_, first_id, _) = raw.read().await.unwrap().publish();
    drop(raw); // offline with m0 unacknowledged
    wait_for(&broker, "keeper offline", |s| offline(s, "keeper")).await;
    for (topic, qos, text) in [
        ("lab/a", QoS::AtLeastOnce, "m1"),
        ("lab/b", QoS::ExactlyOnce, "m2"),
        ("lab/a", QoS::AtMostOnce, "q0"), // QoS 0 is not kept for offline clients
        ("lab/a", QoS::AtLeastOnce, "m3"),
    ] {
        publisher.publish(topic, qos, false, text.as_bytes()).await;
        if qos != QoS::AtMostOnce {
            publisher.acked().await;
        }
    }
    let snap = snapshot(&broker).await;
    let offline = client(&snap, "keeper");
    assert!(offline.connection.is_none());
    assert_eq!((offline.inflight, offline.queued), (1, 3));

    let (mut raw, sp, rc) = Raw::connect(addr, &persistent).await;
    assert_eq!((sp, rc), (true, 0), "session present");
    // The unacknowledged message first, again, with DUP and its packet id; then the queue.
    let p = raw.read().await.unwrap();
    let (_, id, payload) = p.publish();
    assert_eq!(
        (id, payload.as_slice(), p.dup()),
        (first_id, &b"m0"[..], true)
    );
    let mut rest = vec![];
    for _ in 0..3 {
        let p = raw.read().await.unwrap();
        assert!(!p.dup());
        let (_, id, payload) = p.publish();
        raw.send(&ack_packet(if p.qos() == 2 { 0x50 } else { 0x40 }, id))
            .await;
        rest.push(String::from_utf8(payload).unwrap());
    }
    assert_eq!(rest, vec!["m1", "m2", "m3"]);
    // The subscriptions survived too.
    publisher
        .publish("lab/b", QoS::AtMostOnce, false, b"live")
        .await;
    loop {
        let p = raw.read().await.unwrap();
        if p.kind() == 3 {
            assert_eq!(p.publish().2, b"live");
            break;
        }
    }
    // A clean session throws it all away.
    drop(raw);
    let (raw, sp, _) = Raw::connect(
        addr,
        &ConnectOpts {
            client_id: "keeper",
            ..Default::default()
        },
    )
    .await;
    assert!(!sp);
    drop(raw);
    wait_for(&broker, "the clean session gone", |s| gone(s, "keeper")).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn persistent_session_with_rumqttc() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut opts = options(addr, "rumqttc-keeper");
    opts.set_clean_session(false);
    let mut c = Client::connect(opts.clone()).await;
    c.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;
    c.client.disconnect().await.unwrap();
    let _ = c.closed().await;
    let mut publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::AtLeastOnce, false, b"while away")
        .await;
    publisher.acked().await;
    let mut c = Client::start(opts);
    match c.next().await {
        Ok(rumqttc::Packet::ConnAck(ack)) => assert!(ack.session_present),
        other => panic!("{other:?}"),
    }
    assert_eq!(&c.next_publish().await.payload[..], b"while away");
    broker.shutdown().await;
}

#[tokio::test]
async fn qos2_in_flight_on_disconnect_resumes_with_pubrel() {
    let broker = start().await;
    let addr = broker.local_addr();
    let persistent = ConnectOpts {
        client_id: "q2",
        persistent: true,
        keep_alive: 60,
        ..Default::default()
    };
    let (mut raw, _, _) = Raw::connect(addr, &persistent).await;
    raw.subscribe(1, &[("lab/a", 2)]).await;
    let publisher = Client::connect(options(addr, "pub")).await;
    publisher
        .publish("lab/a", QoS::ExactlyOnce, false, b"x")
        .await;
    let (_, id, _) = raw.read().await.unwrap().publish();
    raw.send(&ack_packet(0x50, id)).await; // PUBREC
    assert_eq!(raw.read().await.unwrap().byte1, 0x62); // PUBREL
    drop(raw); // gone before PUBCOMP
    wait_for(&broker, "q2 offline", |s| offline(s, "q2")).await;
    let (mut raw, sp, _) = Raw::connect(addr, &persistent).await;
    assert!(sp);
    assert_eq!(
        raw.read().await.unwrap(),
        RawPacket {
            byte1: 0x62,
            body: id.to_be_bytes().to_vec()
        }
    );
    raw.send(&ack_packet(0x70, id)).await;
    assert!(
        raw.read_quiet().await.is_none(),
        "not sent again after PUBCOMP"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn inflight_window_and_bounded_queue() {
    let config = Config {
        max_inflight: 3,
        max_queued: 5,
        // The publisher is held back until the subscriber, which acknowledges nothing, is
        // found stuck.
        stall_timeout: std::time::Duration::from_millis(100),
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut raw = Raw::connected(addr, "slow").await;
    raw.subscribe(1, &[("lab/a", 1)]).await;
    let mut publisher = Client::connect(options(addr, "pub")).await;
    for i in 0..10 {
        publisher
            .publish("lab/a", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
        publisher.acked().await;
    }
    // Three in flight, five queued, two dropped and counted.
    let mut got = vec![];
    while let Some(p) = raw.read_quiet().await {
        got.push(p.publish());
    }
    assert_eq!(
        got.len(),
        3,
        "only the in-flight window is sent before acks"
    );
    let snap = snapshot(&broker).await;
    let me = client(&snap, "slow");
    assert_eq!((me.inflight, me.queued, me.dropped), (3, 5, 2));
    assert_eq!(snap.dropped, 2);
    // Each PUBACK lets one more through, in order.
    let mut texts: Vec<String> = got
        .iter()
        .map(|g| String::from_utf8(g.2.clone()).unwrap())
        .collect();
    let mut pending: std::collections::VecDeque<u16> = got.iter().map(|g| g.1).collect();
    while let Some(id) = pending.pop_front() {
        raw.send(&ack_packet(0x40, id)).await;
        if let Some(p) = raw.read_quiet().await {
            let (_, id, payload) = p.publish();
            pending.push_back(id);
            texts.push(String::from_utf8(payload).unwrap());
        }
    }
    assert_eq!(texts, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn same_client_id_takes_over_and_the_old_will_fires() {
    let broker = start().await;
    let addr = broker.local_addr();
    let (mut watcher, mut old) = will_setup(&broker, "twin").await;
    let new = Raw::connected(addr, "twin").await;
    old.expect_closed().await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"gone");
    let snap = snapshot(&broker).await;
    assert_eq!(
        snap.clients
            .iter()
            .filter(|c| c.client_id == "twin")
            .count(),
        1
    );
    drop(new);
    broker.shutdown().await;
}

#[tokio::test]
async fn kick_closes_the_connection_and_publishes_the_will() {
    let broker = start().await;
    let (mut watcher, mut victim) = will_setup(&broker, "victim").await;
    let kick = |id: &str| {
        let client_id = id.to_string();
        move |reply| Command::Kick {
            client_id,
            reply: Some(reply),
        }
    };
    assert_eq!(ask(&broker, kick("victim")).await, Ok(()));
    victim.expect_closed().await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"gone");
    wait_for(&broker, "the victim gone", |s| gone(s, "victim")).await;
    let err = ask(&broker, kick("victim")).await.unwrap_err();
    assert!(err.contains("not connected"), "{err}");
    broker.shutdown().await;
}

#[tokio::test]
async fn offline_sessions_can_be_discarded() {
    let broker = start().await;
    let addr = broker.local_addr();
    let opts = ConnectOpts {
        client_id: "ghost",
        persistent: true,
        ..Default::default()
    };
    let (raw, _, _) = Raw::connect(addr, &opts).await;
    drop(raw);
    wait_for(&broker, "ghost offline", |s| offline(s, "ghost")).await;
    let discard = |reply| Command::DiscardSession {
        client_id: "ghost".into(),
        reply: Some(reply),
    };
    assert_eq!(ask(&broker, discard).await, Ok(()));
    let err = ask(&broker, discard).await.unwrap_err();
    assert!(err.contains("no offline session"), "{err}");
    assert!(
        snapshot(&broker)
            .await
            .clients
            .iter()
            .all(|c| c.client_id != "ghost")
    );
    let (_, sp, _) = Raw::connect(addr, &opts).await;
    assert!(!sp);
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_connection() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut a = Raw::connected(addr, "a").await;
    let mut b = Client::connect(options(addr, "b")).await;
    broker.shutdown().await;
    a.expect_closed().await;
    let _ = b.closed().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn user_edits_from_the_window_apply_and_are_saved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.ron");
    let config = Config {
        users_path: Some(path.clone()),
        ..users_config(true)
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let upsert = |name: &str, email: Option<&str>, password: &str| {
        let (username, email, password) = (
            name.to_string(),
            email.map(str::to_string),
            password.to_string(),
        );
        move |reply| Command::UpsertUser {
            username,
            email,
            password,
            reply: Some(reply),
        }
    };
    assert_eq!(
        ask(&broker, upsert("carol", Some("carol@lab.example"), "pw")).await,
        Ok(())
    );
    let login = ConnectOpts {
        client_id: "c",
        user: Some("carol@lab.example"),
        password: Some(b"pw"),
        ..Default::default()
    };
    assert_eq!(Raw::connect(addr, &login).await.2, 0);
    // A second user with carol's e-mail, an empty password, an e-mail that is not one: refused
    // by the broker itself, whoever sends them, and nothing changes.
    let clash = ask(&broker, upsert("carla", Some("carol@lab.example"), "pw")).await;
    assert!(clash.unwrap_err().contains("already"));
    let empty = ask(&broker, upsert("dave", None, "")).await;
    assert!(empty.unwrap_err().contains("password must not be empty"));
    let bad_email = ask(&broker, upsert("erin", Some("not an address"), "pw")).await;
    assert!(bad_email.unwrap_err().contains("not an e-mail address"));
    let saved = Users::load(&path).unwrap();
    let names: Vec<_> = saved.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "carol"]);
    assert_eq!(
        ask(&broker, |r| Command::SetAllowAnonymous {
            allow: false,
            reply: Some(r)
        })
        .await,
        Ok(())
    );
    assert_eq!(Raw::connect(addr, &ConnectOpts::default()).await.2, 5);
    assert_eq!(
        ask(&broker, |r| Command::RemoveUser {
            username: "carol".into(),
            reply: Some(r)
        })
        .await,
        Ok(())
    );
    assert_eq!(Raw::connect(addr, &login).await.2, 4);
    let saved = Users::load(&path).unwrap();
    assert!(!saved.allow_anonymous);
    let names: Vec<_> = saved.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice"], "the other users are kept");
    let snap = snapshot(&broker).await;
    assert_eq!(*snap.users, saved);
    broker.shutdown().await;
}

#[tokio::test]
async fn refusals_and_faults_are_in_the_event_log() {
    use mqtt_lab::broker::events::EventKind;
    let broker = start_with(users_config(true)).await;
    let addr = broker.local_addr();
    let mut c = Raw::connected(addr, "asker").await;
    assert_eq!(c.subscribe(1, &[("no/such", 0)]).await, vec![0x80]);
    let bad = ConnectOpts {
        client_id: "intruder",
        user: Some("alice"),
        password: Some(b"x"),
        ..Default::default()
    };
    Raw::connect(addr, &bad).await;
    let mut faulty = Raw::connected(addr, "faulty").await;
    faulty.send(&[0x30, 4, 0, 2, b'a', b'+']).await;
    faulty.expect_closed().await;
    let events = wait_for(&broker, "the fault logged", |s| {
        s.events
            .iter()
            .any(|e| e.who == "faulty" && e.kind == EventKind::Fault)
    })
    .await
    .events;
    let find = |kind: EventKind, who: &str| {
        events
            .iter()
            .find(|e| e.kind == kind && e.who == who)
            .unwrap_or_else(|| panic!("no {kind:?} event for {who}: {events:#?}"))
            .text
            .clone()
    };
    assert!(find(EventKind::SubscriptionRefused, "asker").contains("\"no/such\""));
    assert!(find(EventKind::LoginRefused, "intruder").contains("0x04"));
    assert!(find(EventKind::Fault, "faulty").contains("wildcard"));
    assert!(find(EventKind::Connected, "asker").starts_with("connected from 127.0.0.1:"));
    broker.shutdown().await;
}
