//! Per-user rules from `users.ron`: who may publish and subscribe where, with `%u` and `%c`.

mod common;

use common::*;
use mqtt_lab::broker::Command;
use mqtt_lab::broker::acl::Rules;
use mqtt_lab::broker::users::Users;
use rumqttc::{QoS, SubscribeReasonCode};

const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);
const REFUSED: SubscribeReasonCode = SubscribeReasonCode::Failure;

fn student_rules() -> Rules {
    Rules {
        publish: Some(vec!["students/%u/#".into()]),
        subscribe: Some(vec!["students/#".into(), "lab/%c".into()]),
    }
}

async fn broker_with_students() -> mqtt_lab::broker::Broker {
    let mut users = Users {
        allow_anonymous: true,
        anonymous: Rules {
            publish: Some(vec![]),
            subscribe: None,
        },
        ..Users::default()
    };
    for name in ["ada", "bob"] {
        users.upsert(name, None, "pw").unwrap();
        users.users.last_mut().unwrap().rules = student_rules();
    }
    let mut config = config();
    config.topics = vec![
        "students/#".into(),
        "lab/a".into(),
        "lab/b".into(),
        "other".into(),
    ];
    config.users = users;
    start_with(config).await
}

fn login(addr: std::net::SocketAddr, id: &str, user: &str) -> rumqttc::MqttOptions {
    let mut o = options(addr, id);
    o.set_credentials(user, "pw");
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_student_publishes_only_under_its_own_branch() {
    let broker = broker_with_students().await;
    let addr = broker.local_addr();
    let mut teacher = Client::connect(options(addr, "teacher")).await;
    assert_eq!(
        teacher.subscribe(&[("#", QoS::AtLeastOnce)]).await,
        [GRANTED],
        "anonymous clients subscribe freely"
    );
    let mut ada = Client::connect(login(addr, "ada-laptop", "ada")).await;
    // Allowed, then not: the refused one is acknowledged like any other.
    ada.publish("students/ada/temp", QoS::AtLeastOnce, false, b"21")
        .await;
    ada.acked().await;
    ada.publish("students/bob/temp", QoS::AtLeastOnce, false, b"spoof")
        .await;
    ada.acked().await;
    ada.publish("other", QoS::ExactlyOnce, false, b"x").await;
    ada.acked().await;
    // Anonymous clients here may publish nowhere.
    let mut anon = Client::connect(options(addr, "anon")).await;
    anon.publish("lab/a", QoS::AtLeastOnce, false, b"no").await;
    anon.acked().await;
    let got = teacher.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("students/ada/temp", &b"21"[..])
    );
    teacher.no_publish().await;
    let snap = snapshot(&broker).await;
    assert_eq!(snap.denied, 3);
    assert!(
        snap.events
            .iter()
            .any(|e| e.who == "ada-laptop" && e.text.contains("students/bob/temp")),
        "logged with the client and topic"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_within_the_rules_are_granted_and_others_refused() {
    let broker = broker_with_students().await;
    let addr = broker.local_addr();
    let mut bob = Client::connect(login(addr, "b", "bob")).await;
    let codes = bob
        .subscribe(&[
            ("students/+/temp", QoS::AtLeastOnce),
            ("students/#", QoS::AtLeastOnce),
            ("lab/b", QoS::AtLeastOnce),
            ("lab/a", QoS::AtLeastOnce),
            ("#", QoS::AtLeastOnce),
            ("$share/g/students/bob/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        codes,
        [GRANTED, GRANTED, GRANTED, REFUSED, REFUSED, GRANTED]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_outside_the_rules_is_not_published() {
    let broker = broker_with_students().await;
    let addr = broker.local_addr();
    let mut teacher = Client::connect(options(addr, "teacher")).await;
    teacher.subscribe(&[("#", QoS::AtLeastOnce)]).await;
    for (id, topic) in [("w1", "students/ada/status"), ("w2", "lab/a")] {
        let opts = ConnectOpts {
            client_id: id,
            keep_alive: 60,
            will: Some((topic, b"gone", 1, false)),
            user: Some("ada"),
            password: Some(b"pw"),
            ..Default::default()
        };
        let (raw, _, rc) = Raw::connect(addr, &opts).await;
        assert_eq!(rc, 0);
        drop(raw); // the socket closes without DISCONNECT: the will is due
    }
    let got = teacher.next_publish().await;
    assert_eq!(got.topic, "students/ada/status");
    teacher.no_publish().await;
    // Counted and logged like a refused PUBLISH.
    let snap = snapshot(&broker).await;
    assert_eq!(snap.denied, 1);
    assert!(
        snap.events
            .iter()
            .any(|e| e.who == "w2" && e.text.contains("will to \"lab/a\"")),
        "{:?}",
        snap.events
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rules_reach_connected_clients_and_remove_what_they_no_longer_allow() {
    let broker = broker_with_students().await;
    let addr = broker.local_addr();
    let mut ada = Client::connect(login(addr, "ada-1", "ada")).await;
    assert_eq!(
        ada.subscribe(&[
            ("students/#", QoS::AtLeastOnce),
            ("lab/ada-1", QoS::AtLeastOnce)
        ])
        .await,
        [GRANTED, REFUSED],
        "lab/ada-1 is allowed by the rules but not on the topic list"
    );
    let tighter = Rules {
        publish: Some(vec![]),
        subscribe: Some(vec!["students/%u/#".into()]),
    };
    ask(&broker, |reply| Command::SetRules {
        username: Some("ada".into()),
        rules: tighter.clone(),
        reply: Some(reply),
    })
    .await
    .unwrap();
    let snap = snapshot(&broker).await;
    let client = client(&snap, "ada-1");
    assert!(
        client.subscriptions.is_empty(),
        "{:?}",
        client.subscriptions
    );
    assert_eq!(
        snap.users
            .users
            .iter()
            .find(|u| u.username == "ada")
            .unwrap()
            .rules,
        tighter
    );
    // Publishing is now refused too.
    let mut watcher = Client::connect(options(addr, "w")).await;
    watcher.subscribe(&[("students/#", QoS::AtLeastOnce)]).await;
    ada.publish("students/ada/x", QoS::AtLeastOnce, false, b"1")
        .await;
    ada.acked().await;
    watcher.no_publish().await;
    // Bad rules are refused and change nothing.
    let err = ask(&broker, |reply| Command::SetRules {
        username: Some("ada".into()),
        rules: Rules {
            publish: Some(vec!["a/#/b".into()]),
            subscribe: None,
        },
        reply: Some(reply),
    })
    .await
    .unwrap_err();
    assert!(err.contains("a/#/b"), "{err}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_accounts_is_added_all_or_nothing() {
    let broker = broker_with_students().await;
    let addr = broker.local_addr();
    let batch: Vec<(String, String)> = (1..=3)
        .map(|i| (format!("student{i:02}"), format!("pw-{i}")))
        .collect();
    ask(&broker, |reply| Command::AddUsers {
        users: batch.clone(),
        rules: student_rules(),
        reply: Some(reply),
    })
    .await
    .unwrap();
    let snap = snapshot(&broker).await;
    assert_eq!(snap.users.users.len(), 5);
    // Each logs in with its own password and gets the rules.
    let mut o = options(addr, "s2");
    o.set_credentials("student02", "pw-2");
    let mut s2 = Client::connect(o).await;
    assert_eq!(
        s2.subscribe(&[
            ("students/#", QoS::AtLeastOnce),
            ("other", QoS::AtLeastOnce)
        ])
        .await,
        [GRANTED, REFUSED]
    );
    // A batch with a name that exists adds none.
    let err = ask(&broker, |reply| Command::AddUsers {
        users: vec![("student09".into(), "x".into()), ("ada".into(), "y".into())],
        rules: Rules::default(),
        reply: Some(reply),
    })
    .await
    .unwrap_err();
    assert!(err.contains("\"ada\""), "{err}");
    assert_eq!(snapshot(&broker).await.users.users.len(), 5);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_by_e_mail_gets_the_users_rules_and_a_removed_user_gets_none() {
    let mut users = Users::default();
    users.upsert("ada", Some("ada@lab.example"), "pw").unwrap();
    users.users[0].rules = student_rules();
    let mut config = config();
    config.topics = vec!["students/#".into(), "lab/a".into()];
    config.users = users;
    let broker = start_with(config).await;
    let addr = broker.local_addr();
    let mut o = options(addr, "ada-phone");
    o.set_credentials("ada@lab.example", "pw");
    let mut ada = Client::connect(o).await;
    assert_eq!(
        ada.subscribe(&[
            ("lab/a", QoS::AtLeastOnce),
            ("students/#", QoS::AtLeastOnce)
        ])
        .await,
        [REFUSED, GRANTED],
        "the same rules as by user name"
    );
    let snap = snapshot(&broker).await;
    let c = client(&snap, "ada-phone");
    assert_eq!(
        c.connection.as_ref().unwrap().username.as_deref(),
        Some("ada")
    );
    // Removed while connected: nothing is allowed any more.
    ask(&broker, |reply| Command::RemoveUser {
        username: "ada".into(),
        reply: Some(reply),
    })
    .await
    .unwrap();
    let snap = snapshot(&broker).await;
    let c = client(&snap, "ada-phone");
    assert!(c.subscriptions.is_empty(), "{:?}", c.subscriptions);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_keeps_only_what_its_rules_allow() {
    let broker = broker_with_students().await;
    let addr = broker.local_addr();
    // The teacher (anonymous, no subscribe rules) leaves a persistent session on `#`.
    let mut o = options(addr, "shared-id");
    o.set_clean_session(false);
    let mut teacher = Client::connect(o).await;
    teacher.subscribe(&[("#", QoS::AtLeastOnce)]).await;
    teacher.client.disconnect().await.unwrap();
    teacher.closed().await;
    // Messages queue for it while it is away.
    let mut bob = Client::connect(login(addr, "b", "bob")).await;
    for i in 0..3 {
        bob.publish(
            "students/bob/x",
            QoS::AtLeastOnce,
            false,
            format!("{i}").as_bytes(),
        )
        .await;
        bob.acked().await;
    }
    let snap = snapshot(&broker).await;
    let queued = |snap: &mqtt_lab::broker::Snapshot| {
        let c = client(snap, "shared-id");
        c.queued + c.inflight
    };
    assert_eq!(queued(&snap), 3);
    // A student resumes it with the same client id: its rules do not allow `#`, so neither
    // the subscription nor what queued for it is the student's.
    let mut o = login(addr, "shared-id", "ada");
    o.set_clean_session(false);
    let mut ada = Client::connect(o).await;
    ada.no_publish().await;
    let snap = snapshot(&broker).await;
    assert_eq!(queued(&snap), 0);
    let c = client(&snap, "shared-id");
    assert!(c.connection.is_some());
    assert!(c.subscriptions.is_empty(), "{:?}", c.subscriptions);
    broker.shutdown().await;
}
