//! Bridges, against a real Mosquitto (Debian's `mosquitto`, which the test set-up installs) as
//! the remote broker: out, in, both, prefixes, the remote going away and coming back, and a
//! bridge back from Mosquitto.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use common::*;
use mqtt_lab::broker::bridge::{BridgeConfig, BridgeState, Direction, TopicRule};
use mqtt_lab::broker::snapshot::BridgeInfo;
use mqtt_lab::broker::{Broker, Command};
use rumqttc::{Packet, QoS};
use tokio::time::{Instant, sleep, timeout};

/// A Mosquitto of its own for one test, on a port found free, in a folder of its own (its
/// persistence file there).
struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: String,
}

impl Mosquitto {
    fn start(extra: &str) -> Mosquitto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = data_dir();
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
            extra: extra.to_owned(),
        };
        m.run();
        m
    }

    fn run(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser {user}\npersistence true\npersistence_location {dir}/\nmax_queued_messages 10000\n{extra}\n",
                port = self.port,
                // Started as root, Mosquitto becomes user `mosquitto`, who may not write here.
                user = if unsafe { libc::geteuid() } == 0 { "root" } else { "mosquitto" },
                dir = self.dir.display(),
                extra = self.extra,
            ),
        )
        .unwrap();
        // Debian puts it in /usr/sbin, which a user's PATH may not have.
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Process::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/install-test-deps.sh)");
        self.child = Some(child);
        // Listening once a connection is taken.
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (Mosquitto saves its sessions then) and wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rule(pattern: &str, direction: Direction, local: &str, remote: &str) -> TopicRule {
    TopicRule {
        pattern: pattern.into(),
        direction,
        qos: 1,
        local_prefix: local.into(),
        remote_prefix: remote.into(),
    }
}

fn bridge(name: &str, address: String, topics: Vec<TopicRule>) -> BridgeConfig {
    BridgeConfig {
        name: name.into(),
        address,
        ca_file: None,
        client_id: None,
        username: None,
        password: None,
        clean_session: false,
        keepalive: 30,
        enabled: true,
        topics,
    }
}

async fn start_bridged(bridges: Vec<BridgeConfig>) -> Broker {
    start_with(mqtt_lab::broker::Config {
        bridges,
        ..config()
    })
    .await
}

async fn bridge_info(broker: &Broker, name: &str) -> BridgeInfo {
    snapshot(broker)
        .await
        .bridges
        .into_iter()
        .find(|b| b.config.name == name)
        .expect("the bridge in the snapshot")
}

/// Asks `check` again every 50 ms until it passes; fails with its last complaint after
/// `wait`.
async fn until(wait: Duration, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + wait;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the bridge is up (its subscriptions made on both sides).
async fn bridge_up(broker: &Broker, name: &str) {
    until(Duration::from_secs(10), async || {
        let info = bridge_info(broker, name).await;
        match info.status.state {
            BridgeState::Up { .. } => Ok(()),
            _ => Err(format!("bridge {name} not up: {:?}", info.status)),
        }
    })
    .await;
    // The subscriptions are asked for before it says so; give the remote's SUBACK a moment.
    sleep(Duration::from_millis(200)).await;
}

fn mosquitto_client(m: &Mosquitto, id: &str) -> rumqttc::MqttOptions {
    options(m.addr(), id)
}

/// Every PUBLISH that arrives within `wait`, as (topic, payload).
async fn gather(c: &mut Client, wait: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, c.events.recv()).await {
        if let Ok(Packet::Publish(p)) = ev {
            got.push((p.topic, String::from_utf8_lossy(&p.payload).into_owned()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_cross_out_in_and_both_ways_renamed_by_their_prefixes() {
    let m = Mosquitto::start("");
    let broker = start_bridged(vec![bridge(
        "dept",
        m.url(),
        vec![
            rule("lab/a", Direction::Out, "", "labs/one/"),
            rule("+", Direction::In, "", "dept/"),
            rule("b", Direction::Both, "lab/", "shared/"),
        ],
    )])
    .await;
    bridge_up(&broker, "dept").await;
    let mut remote = Client::connect(mosquitto_client(&m, "remote")).await;
    remote
        .subscribe(&[("labs/#", QoS::AtLeastOnce), ("shared/#", QoS::AtLeastOnce)])
        .await;
    let mut local = Client::connect(options(broker.local_addr(), "local")).await;
    local
        .subscribe(&[("lab/#", QoS::AtLeastOnce), ("other", QoS::AtLeastOnce)])
        .await;

    // Out, renamed.
    local
        .publish("lab/a", QoS::AtLeastOnce, false, b"out")
        .await;
    let p = remote.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("labs/one/lab/a", &b"out"[..])
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let _ = gather(&mut local, QUIET).await; // the local subscriber's own copy

    // In, renamed, and held to the topic list: `dept/other` is `other` here, which is listed;
    // `dept/nowhere` is not.
    remote
        .publish("dept/nowhere", QoS::AtLeastOnce, false, b"x")
        .await;
    remote
        .publish("dept/other", QoS::AtLeastOnce, false, b"in")
        .await;
    let got = gather(&mut local, Duration::from_secs(1)).await;
    assert_eq!(got, [("other".to_owned(), "in".to_owned())]);

    // Both: each side's message arrives once on the other, and does not come back.
    remote
        .publish("shared/b", QoS::AtLeastOnce, false, b"from there")
        .await;
    local
        .publish("lab/b", QoS::AtLeastOnce, false, b"from here")
        .await;
    let here = gather(&mut local, Duration::from_secs(1)).await;
    let there = gather(&mut remote, QUIET).await;
    let count = |v: &[(String, String)], t: &str, p: &str| {
        v.iter().filter(|(a, b)| a == t && b == p).count()
    };
    assert_eq!(count(&here, "lab/b", "from there"), 1, "{here:?}");
    assert_eq!(count(&here, "lab/b", "from here"), 1, "{here:?}");
    assert_eq!(count(&there, "shared/b", "from here"), 1, "{there:?}");
    assert_eq!(count(&there, "shared/b", "from there"), 1, "{there:?}");
    assert_eq!(here.len() + there.len(), 4, "{here:?} {there:?}");

    let info = bridge_info(&broker, "dept").await;
    assert_eq!(info.status.counters.sent, 2, "{:?}", info.status);
    assert_eq!(info.status.counters.received, 2, "{:?}", info.status);
    assert_eq!(info.status.counters.refused, 1, "{:?}", info.status);
    // The bridge is a client here, shown as such.
    let snap = snapshot(&broker).await;
    let c = client(&snap, "$bridge/dept");
    assert_eq!(
        c.connection.as_ref().map(|c| c.transport.to_string()),
        Some("bridge".into())
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_going_away_and_back_loses_nothing_at_qos_1() {
    let mut m = Mosquitto::start("");
    let broker = start_bridged(vec![bridge(
        "dept",
        m.url(),
        vec![rule("lab/#", Direction::Out, "", "")],
    )])
    .await;
    bridge_up(&broker, "dept").await;
    // A persistent subscriber on the remote, which Mosquitto keeps across its restart.
    let mut opts = mosquitto_client(&m, "keeper");
    opts.set_clean_session(false);
    let mut keeper = Client::connect(opts.clone()).await;
    keeper.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    keeper.client.disconnect().await.unwrap();
    let _ = keeper.closed().await;

    m.stop();
    let publisher = Client::connect(options(broker.local_addr(), "pub")).await;
    let n = 200;
    for i in 0..n {
        publisher
            .publish("lab/a", QoS::AtLeastOnce, false, i.to_string().as_bytes())
            .await;
    }
    // Held here, in the bridge's session, while the remote is away.
    until(WAIT, async || {
        let info = bridge_info(&broker, "dept").await;
        if info.queued == n && !matches!(info.status.state, BridgeState::Up { .. }) {
            assert!(info.status.last_error.is_some());
            return Ok(());
        }
        Err(format!("{} queued, {:?}", info.queued, info.status))
    })
    .await;
    m.run();
    let mut keeper = Client::connect(opts).await;
    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, keeper.events.recv()).await {
            Ok(Some(Ok(Packet::Publish(p)))) => {
                *seen
                    .entry(String::from_utf8_lossy(&p.payload).into_owned())
                    .or_insert(0) += 1;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "{} of {n} arrived, then {other:?}; {:?}",
                seen.len(),
                bridge_info(&broker, "dept").await
            ),
        }
    }
    assert!((0..n).all(|i| seen.contains_key(&i.to_string())));
    until(WAIT, async || {
        let info = bridge_info(&broker, "dept").await;
        assert_eq!(info.dropped, 0);
        match info.queued == 0 && info.status.counters.sent >= n as u64 {
            true => Ok(()),
            false => Err(format!("{} still queued, {:?}", info.queued, info.status)),
        }
    })
    .await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_back_from_mosquitto_makes_no_loop() {
    // Our broker first, so that Mosquitto's bridge has somewhere to connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut m = Mosquitto::start("");
    m.stop();
    m.extra = format!(
        "connection back\naddress 127.0.0.1:{port}\nbridge_protocol_version mqttv50\nrestart_timeout 1\ntopic lab/# both 1\n"
    );
    let broker = start_with(mqtt_lab::broker::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        bridges: vec![bridge(
            "dept",
            m.url(),
            vec![rule("lab/#", Direction::Both, "", "")],
        )],
        ..config()
    })
    .await;
    m.run();
    bridge_up(&broker, "dept").await;
    // Mosquitto's bridge is connected here too.
    until(Duration::from_secs(10), async || {
        let snap = snapshot(&broker).await;
        let theirs = snap
            .clients
            .iter()
            .any(|c| c.connection.is_some() && !c.client_id.starts_with("$bridge/"));
        match theirs {
            true => Ok(()),
            false => Err("mosquitto's bridge did not connect".into()),
        }
    })
    .await;
    sleep(Duration::from_millis(300)).await;
    let mut remote = Client::connect(mosquitto_client(&m, "remote")).await;
    remote.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let mut local = Client::connect(options(broker.local_addr(), "local")).await;
    local.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;

    local
        .publish("lab/a", QoS::AtLeastOnce, false, b"here")
        .await;
    remote
        .publish("lab/b", QoS::AtLeastOnce, false, b"there")
        .await;
    let here = gather(&mut local, Duration::from_secs(2)).await;
    let there = gather(&mut remote, Duration::from_millis(200)).await;
    // Two bridges between the same brokers carry a message both ways; it may arrive more than
    // once, but it stops.
    for (side, got) in [("here", &here), ("there", &there)] {
        for (topic, payload) in [("lab/a", "here"), ("lab/b", "there")] {
            let n = got
                .iter()
                .filter(|(t, p)| t == topic && p == payload)
                .count();
            assert!((1..=3).contains(&n), "{side}: {topic} {n} times: {got:?}");
        }
    }
    // Nothing more: the loop was cut.
    assert!(gather(&mut local, Duration::from_secs(1)).await.is_empty());
    assert!(gather(&mut remote, QUIET).await.is_empty());
    let snap = snapshot(&broker).await;
    let info = &snap.bridges[0];
    assert!(
        info.status.counters.loops + snap.bridge_loops > 0,
        "{:?} {}",
        info.status,
        snap.bridge_loops
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_change_while_running_and_a_bad_list_changes_nothing() {
    let m = Mosquitto::start("");
    let broker = start().await;
    let good = bridge(
        "dept",
        m.url(),
        vec![rule("lab/#", Direction::Out, "", "x/")],
    );
    ask(&broker, |reply| Command::SetBridges {
        bridges: vec![good.clone()],
        path: None,
        reply: Some(reply),
    })
    .await
    .unwrap();
    bridge_up(&broker, "dept").await;
    let mut bad = good.clone();
    bad.address = "gopher://h".into();
    let e = ask(&broker, |reply| Command::SetBridges {
        bridges: vec![bad],
        path: None,
        reply: Some(reply),
    })
    .await
    .unwrap_err();
    assert!(e.contains("gopher"), "{e}");
    assert!(matches!(
        bridge_info(&broker, "dept").await.status.state,
        BridgeState::Up { .. }
    ));
    // Disabled: its local side goes offline, its session stays.
    let mut off = good.clone();
    off.enabled = false;
    ask(&broker, |reply| Command::SetBridges {
        bridges: vec![off],
        path: None,
        reply: Some(reply),
    })
    .await
    .unwrap();
    until(WAIT, async || {
        let snap = snapshot(&broker).await;
        let offline = client(&snap, "$bridge/dept").connection.is_none();
        match offline && snap.bridges[0].status.state == BridgeState::Disabled {
            true => Ok(()),
            false => Err(format!("{:?}", snap.bridges[0].status)),
        }
    })
    .await;
    // A network client may not take a bridge's id.
    let (_, _, code) = Raw::connect(
        broker.local_addr(),
        &ConnectOpts {
            client_id: "$bridge/dept",
            persistent: false,
            keep_alive: 30,
            will: None,
            user: None,
            password: None,
        },
    )
    .await;
    assert_eq!(code, 2);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mqtt_labs_bridged_both_ways_pass_each_message_once_and_trace_it() {
    let remote = start().await;
    let broker = start_bridged(vec![bridge(
        "peer",
        format!("mqtt://{}", remote.local_addr()),
        vec![
            rule("lab/#", Direction::Both, "", ""),
            // Not on the remote's list: its SUBACK refuses it, and the panel says so.
            rule("nowhere/#", Direction::In, "", ""),
        ],
    )])
    .await;
    let trace = broker.trace();
    trace.watch(true);
    bridge_up(&broker, "peer").await;
    let mut there = Client::connect(options(remote.local_addr(), "there")).await;
    there.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let mut here = Client::connect(options(broker.local_addr(), "here")).await;
    here.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    here.publish("lab/a", QoS::AtLeastOnce, false, b"here")
        .await;
    there
        .publish("lab/b", QoS::AtLeastOnce, false, b"there")
        .await;
    let got_here = gather(&mut here, Duration::from_secs(1)).await;
    let got_there = gather(&mut there, QUIET).await;
    let both = [
        ("lab/a".to_owned(), "here".to_owned()),
        ("lab/b".to_owned(), "there".to_owned()),
    ];
    for got in [got_here, got_there] {
        let mut got = got;
        got.sort();
        assert_eq!(got, both);
    }
    // The bridge's local side is in the trace like any client: its CONNECT, the PUBLISH it
    // brought in and the one it was sent.
    until(WAIT, async || {
        let events = trace.since(0).await.unwrap();
        let mine: Vec<_> = events
            .iter()
            .filter(|e| &*e.client_id == "$bridge/peer")
            .collect();
        use mqtt_lab::broker::trace::{Direction as D, Summary, What};
        let has = |d: D, topic: &str| {
            mine.iter().any(|e| {
                e.direction == d
                    && matches!(&e.what, What::Packet(Summary::Publish { topic: t, .. }) if t == topic)
            })
        };
        if mine
            .iter()
            .any(|e| matches!(e.what, What::Packet(Summary::Connect { .. })))
            && has(D::In, "lab/b")
            && has(D::Out, "lab/a")
        {
            assert!(mine.iter().all(|e| e.transport.to_string() == "bridge"));
            return Ok(());
        }
        Err(format!("{mine:#?}"))
    })
    .await;
    until(WAIT, async || {
        match bridge_info(&broker, "peer").await.status.last_error {
            Some(e) => {
                assert!(e.contains("the remote refused \"nowhere/#\""), "{e}");
                Ok(())
            }
            None => Err("no error shown".into()),
        }
    })
    .await;
    broker.shutdown().await;
    remote.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_over_mqtts_with_a_ca_file_and_over_websocket() {
    use mqtt_lab::broker::Transport;
    use mqtt_lab::broker::tls::{self, LocalCa};
    let dir = tempfile::tempdir().unwrap();
    let LocalCa { ca, files, .. } = tls::local_ca(dir.path()).unwrap();
    let remote = start_with(mqtt_lab::broker::Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(tls::server_config(&files).unwrap()),
        ..config()
    })
    .await;
    let tls_addr = remote.door_addr(Transport::Tls).unwrap();
    let ws_addr = remote.ws_addr().unwrap();
    let mut over_tls = bridge(
        "tls",
        format!("mqtts://localhost:{}", tls_addr.port()),
        vec![rule("lab/a", Direction::Out, "", "")],
    );
    over_tls.ca_file = Some(ca.clone());
    let over_ws = bridge(
        "ws",
        format!("ws://127.0.0.1:{}/mqtt", ws_addr.port()),
        vec![rule("lab/b", Direction::Out, "", "")],
    );
    // Without the CA, the remote's certificate is not trusted: the bridge says so and waits.
    let mut untrusted = over_tls.clone();
    untrusted.name = "untrusted".into();
    untrusted.ca_file = Some(files.cert.clone());
    let broker = start_bridged(vec![over_tls, over_ws, untrusted]).await;
    bridge_up(&broker, "tls").await;
    bridge_up(&broker, "ws").await;
    let mut there = Client::connect(options(remote.local_addr(), "there")).await;
    there.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let here = Client::connect(options(broker.local_addr(), "here")).await;
    here.publish("lab/a", QoS::AtLeastOnce, false, b"tls").await;
    here.publish("lab/b", QoS::AtLeastOnce, false, b"ws").await;
    let mut got = gather(&mut there, Duration::from_secs(1)).await;
    got.sort();
    assert_eq!(
        got,
        [
            ("lab/a".to_owned(), "tls".to_owned()),
            ("lab/b".to_owned(), "ws".to_owned())
        ]
    );
    let info = bridge_info(&broker, "untrusted").await;
    assert!(
        !matches!(info.status.state, BridgeState::Up { .. }),
        "{:?}",
        info.status
    );
    let error = info.status.last_error.unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    broker.shutdown().await;
    remote.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_remote_kept_for_an_absent_bridge_comes_in_when_it_is_back() {
    let m = Mosquitto::start("");
    let config = bridge("dept", m.url(), vec![rule("lab/#", Direction::In, "", "")]);
    let broker = start_bridged(vec![config.clone()]).await;
    bridge_up(&broker, "dept").await;
    let mut here = Client::connect(options(broker.local_addr(), "here")).await;
    here.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let set = |enabled: bool| {
        let mut b = config.clone();
        b.enabled = enabled;
        ask(&broker, move |reply| Command::SetBridges {
            bridges: vec![b],
            path: None,
            reply: Some(reply),
        })
    };
    set(false).await.unwrap();
    // Gone from Mosquitto (its session kept there), then 100 messages for it.
    until(WAIT, async || {
        let state = bridge_info(&broker, "dept").await.status.state;
        match state {
            BridgeState::Disabled => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    sleep(Duration::from_millis(300)).await;
    let there = Client::connect(mosquitto_client(&m, "there")).await;
    for i in 0..100 {
        there
            .publish("lab/a", QoS::AtLeastOnce, false, i.to_string().as_bytes())
            .await;
    }
    sleep(Duration::from_millis(300)).await;
    assert!(gather(&mut here, QUIET).await.is_empty());
    set(true).await.unwrap();
    let got = gather(&mut here, Duration::from_secs(3)).await;
    let payloads: Vec<String> = got.into_iter().map(|(_, p)| p).collect();
    let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected, "all, in order, once");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_crosses_at_qos_1_and_a_bridge_refuses_a_qos_2_rule() {
    let m = Mosquitto::start("");
    let mut two = rule("lab/#", Direction::Out, "", "");
    two.qos = 2;
    let broker = start().await;
    let e = ask(&broker, |reply| Command::SetBridges {
        bridges: vec![bridge("dept", m.url(), vec![two])],
        path: None,
        reply: Some(reply),
    })
    .await
    .unwrap_err();
    assert!(e.contains("QoS 0 or 1"), "{e}");
    broker.shutdown().await;

    let broker = start_bridged(vec![bridge(
        "dept",
        m.url(),
        vec![rule("lab/#", Direction::Out, "", "")],
    )])
    .await;
    bridge_up(&broker, "dept").await;
    let mut there = Client::connect(mosquitto_client(&m, "there")).await;
    there.subscribe(&[("lab/#", QoS::ExactlyOnce)]).await;
    let here = Client::connect(options(broker.local_addr(), "here")).await;
    for i in 0..30 {
        here.publish("lab/a", QoS::ExactlyOnce, false, i.to_string().as_bytes())
            .await;
    }
    let mut got = Vec::new();
    while got.len() < 30 {
        let p = there.next_publish().await;
        assert_eq!(p.qos, QoS::AtLeastOnce);
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(got, (0..30).map(|i| i.to_string()).collect::<Vec<_>>());
    // Every message acknowledged by the remote is done with here.
    until(WAIT, async || {
        let snap = snapshot(&broker).await;
        let c = client(&snap, "$bridge/dept");
        match c.inflight == 0 && c.queued == 0 && snap.bridges[0].status.counters.sent == 30 {
            true => Ok(()),
            false => Err(format!("{} in flight, {} queued", c.inflight, c.queued)),
        }
    })
    .await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_bridge_comes_back() {
    let m = Mosquitto::start("");
    let broker = start_bridged(vec![bridge(
        "dept",
        m.url(),
        vec![rule("lab/#", Direction::Out, "", "")],
    )])
    .await;
    bridge_up(&broker, "dept").await;
    ask(&broker, |reply| Command::Kick {
        client_id: "$bridge/dept".into(),
        reply: Some(reply),
    })
    .await
    .unwrap();
    // Down, then up again after its back-off, and forwarding.
    until(Duration::from_secs(10), async || {
        let info = bridge_info(&broker, "dept").await;
        let kicked = info.status.last_error.as_deref();
        match kicked.is_some_and(|e| e.contains("kicked")) {
            true => Ok(()),
            false => Err(format!("{:?}", info.status)),
        }
    })
    .await;
    bridge_up(&broker, "dept").await;
    let mut there = Client::connect(mosquitto_client(&m, "there")).await;
    there.subscribe(&[("lab/#", QoS::AtLeastOnce)]).await;
    let here = Client::connect(options(broker.local_addr(), "here")).await;
    here.publish("lab/a", QoS::AtLeastOnce, false, b"after")
        .await;
    assert_eq!(&there.next_publish().await.payload[..], b"after");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_rules_drop_old_subscriptions_and_a_removed_bridge_its_session() {
    let m = Mosquitto::start("");
    let first = bridge("dept", m.url(), vec![rule("lab/#", Direction::Out, "", "")]);
    let broker = start_bridged(vec![first.clone()]).await;
    bridge_up(&broker, "dept").await;
    let subs = |snap: &mqtt_lab::broker::Snapshot| {
        client(snap, "$bridge/dept")
            .subscriptions
            .iter()
            .map(|(f, _)| f.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(subs(&snapshot(&broker).await), ["lab/#"]);
    // Now only lab/a goes out: lab/# is not kept beside it.
    let mut second = first.clone();
    second.topics = vec![rule("lab/a", Direction::Out, "", "")];
    let set = |list: Vec<BridgeConfig>| {
        ask(&broker, move |reply| Command::SetBridges {
            bridges: list,
            path: None,
            reply: Some(reply),
        })
    };
    set(vec![second]).await.unwrap();
    until(Duration::from_secs(10), async || {
        let snap = snapshot(&broker).await;
        let up = matches!(snap.bridges[0].status.state, BridgeState::Up { .. });
        match up && subs(&snap) == ["lab/a"] {
            true => Ok(()),
            false => Err(format!("{:?}", subs(&snap))),
        }
    })
    .await;
    // Removed: its session goes too.
    set(vec![]).await.unwrap();
    until(WAIT, async || {
        let snap = snapshot(&broker).await;
        match snap.clients.iter().any(|c| c.client_id == "$bridge/dept") {
            true => Err("the removed bridge's session stays".into()),
            false => Ok(()),
        }
    })
    .await;
    broker.shutdown().await;
}
