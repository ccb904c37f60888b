//! Login storms: wrong passwords by the hundred cost a bounded amount of work, are refused
//! clearly when the broker cannot keep up, and do not lock out a correct login or slow the
//! clients already connected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mqtt_lab::broker::Config;
use mqtt_lab::broker::auth::LoginLimits;
use mqtt_lab::broker::users::Users;
use rumqttc::QoS;

const BAD_CREDENTIALS: u8 = 0x04;
const SERVER_UNAVAILABLE: u8 = 0x03;

fn config_with_alice(logins: LoginLimits) -> Config {
    let mut users = Users::default(); // anonymous logins allowed, for the healthy pair
    users.upsert("alice", None, "wonderland").unwrap();
    Config {
        users,
        logins,
        ..config()
    }
}

async fn login(addr: std::net::SocketAddr, id: &str, password: &[u8]) -> u8 {
    let opts = ConnectOpts {
        client_id: id,
        user: Some("alice"),
        password: Some(password),
        ..Default::default()
    };
    let mut raw = Raw::open(addr).await;
    raw.send(&connect_packet(&opts)).await;
    // A refusal may come late (the penalty), past the usual wait.
    let ack = raw
        .read_within(Duration::from_secs(30))
        .await
        .expect("a CONNACK before the close");
    assert_eq!(ack.byte1, 0x20, "{ack:?}");
    ack.body[1]
}

#[tokio::test]
async fn a_login_storm_is_refused_without_locking_out_anyone() {
    let limits = LoginLimits {
        workers: 1,
        queue: 4,
        max_penalty: Duration::from_secs(1),
    };
    let broker = start_with(config_with_alice(limits)).await;
    let addr = broker.local_addr();
    let mut sub = Client::connect(options(addr, "healthy-sub")).await;
    sub.subscribe(&[("lab/a", QoS::AtLeastOnce)]).await;
    let mut publisher = Client::connect(options(addr, "healthy-pub")).await;

    // A brute force: every client tries another password, so each must be hashed.
    let storm: Vec<_> = (0..64)
        .map(|i| {
            tokio::spawn(async move {
                let password = format!("guess{i}");
                login(addr, &format!("storm{i}"), password.as_bytes()).await
            })
        })
        .collect();
    // The pair already connected carries on while the storm is checked.
    for i in 0..20u8 {
        publisher
            .publish("lab/a", QoS::AtLeastOnce, false, &[i])
            .await;
        publisher.acked().await;
        assert_eq!(&sub.next_publish().await.payload[..], &[i]);
    }
    let mut codes = Vec::new();
    for t in storm {
        codes.push(t.await.unwrap());
    }
    assert!(
        codes
            .iter()
            .all(|&c| c == BAD_CREDENTIALS || c == SERVER_UNAVAILABLE),
        "{codes:?}"
    );
    assert!(
        codes.contains(&SERVER_UNAVAILABLE),
        "a queue of 4 cannot take 64 logins at once: {codes:?}"
    );

    // A correct password is never held back by the failures of others on its address.
    let started = Instant::now();
    let mut rc = login(addr, "alice-laptop", b"wonderland").await;
    while rc == SERVER_UNAVAILABLE {
        tokio::time::sleep(Duration::from_millis(50)).await;
        rc = login(addr, "alice-laptop", b"wonderland").await;
    }
    assert_eq!(rc, 0);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a correct login waited {:?}, as long as a penalised failure",
        started.elapsed()
    );
    let snap = snapshot(&broker).await;
    assert!(
        snap.events.iter().any(|e| e.text.contains("CONNACK 0x03")),
        "the refusals are in the log the window shows"
    );
    broker.shutdown().await;
}

/// A room of devices still configured with an old password: the same wrong pair from many
/// clients at once, again and again, is hashed once.
#[tokio::test]
async fn the_same_wrong_password_from_many_clients_is_hashed_once() {
    let limits = LoginLimits {
        max_penalty: Duration::from_secs(1),
        ..LoginLimits::default()
    };
    let broker = start_with(config_with_alice(limits)).await;
    let addr = broker.local_addr();
    for round in 0..2 {
        let storm: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(async move { login(addr, &format!("d{round}-{i}"), b"old").await })
            })
            .collect();
        for t in storm {
            assert_eq!(t.await.unwrap(), BAD_CREDENTIALS);
        }
    }
    assert_eq!(broker.stats().snapshot().password_checks, 1);
    // A password changed since is checked afresh: the memory is of the pair and the hash.
    let mut users = (*snapshot(&broker).await.users).clone();
    users.upsert("alice", None, "old").unwrap();
    let (reply, done) = tokio::sync::oneshot::channel();
    let set = mqtt_lab::broker::Command::SetUsers {
        users,
        reply: Some(reply),
    };
    assert!(broker.handle().send(set).await);
    done.await.unwrap().unwrap();
    assert_eq!(login(addr, "d-new", b"old").await, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_answered_later_and_later() {
    let broker = start_with(config_with_alice(LoginLimits::default())).await;
    let addr = broker.local_addr();
    let mut took = Vec::new();
    for i in 0..6 {
        let started = Instant::now();
        assert_eq!(
            login(addr, &format!("guess{i}"), b"guess").await,
            BAD_CREDENTIALS
        );
        took.push(started.elapsed());
    }
    // The first three are typos and cost nothing extra; then 250 ms, 500 ms, 1 s, each spread
    // over its upper half.
    assert!(took[4] >= Duration::from_millis(250), "{took:?}");
    assert!(took[5] >= Duration::from_millis(500), "{took:?}");
    assert!(took[5] > took[2], "{took:?}");
    broker.shutdown().await;
}

/// `mqtt-lab user add` beside a running broker (or a hand edit): the broker picks the file up;
/// a file that does not parse changes nothing and says so in the log.
#[tokio::test]
async fn users_added_to_the_file_beside_the_running_broker_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.ron");
    let mut users = Users {
        allow_anonymous: false,
        ..Users::default()
    };
    users.save(&path).unwrap();
    let config = Config {
        users: users.clone(),
        users_path: Some(path.clone()),
        ..config()
    };
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    users.upsert("alice", None, "wonderland").unwrap();
    users.save(&path).unwrap();
    wait_for_long(&broker, "the new user", |s| s.users.find("alice").is_some()).await;
    assert_eq!(login(addr, "laptop", b"wonderland").await, 0);

    std::fs::write(&path, "(allow_anonymous: false, users: [oops])").unwrap();
    wait_for_long(&broker, "the refusal to reload", |s| {
        s.events.iter().any(|e| e.text.contains("not reloaded"))
    })
    .await;
    assert_eq!(
        login(addr, "laptop", b"wonderland").await,
        0,
        "alice is kept"
    );
    broker.shutdown().await;
}

/// `wait_for` with room for the file watcher's poll.
async fn wait_for_long(
    broker: &mqtt_lab::broker::Broker,
    what: &str,
    done: impl Fn(&mqtt_lab::broker::Snapshot) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&snapshot(broker).await) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
