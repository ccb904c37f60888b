//! The window, driven with egui_kittest against a real broker on port 0 and real rumqttc clients.
#![cfg(feature = "gui")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use mqtt_lab::broker::Config;
use mqtt_lab::broker::trace::What;
use mqtt_lab::gui::runner::Live;
use mqtt_lab::gui::{MainView, Tab};
use rumqttc::{LastWill, QoS, SubscribeReasonCode};

fn view(config: Config) -> MainView {
    MainView::new(Box::new(move || Ok(config.clone())), None)
}

fn harness(view: MainView) -> Harness<'static, MainView> {
    Harness::builder()
        .with_size([1400.0, 900.0])
        .build_ui_state(|ui, v: &mut MainView| v.ui(ui), view)
}

/// Steps the window until `done` holds for its latest broker state (the broker runs on its own
/// thread, so this is real time), then a few frames more so the screen shows it. (Not `run`,
/// which fails while something animates: a spinner that waits for the broker's answer.)
fn wait_for(h: &mut Harness<'static, MainView>, what: &str, done: impl Fn(&Live) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        h.step();
        if h.state().live().is_some_and(&done) {
            h.run_steps(3);
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Steps the window until a label containing `text` shows.
fn wait_for_label(h: &mut Harness<'static, MainView>, text: &str) {
    let deadline = Instant::now() + WAIT;
    while h.query_by_label_contains(text).is_none() {
        assert!(Instant::now() < deadline, "no label with {text:?}");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn type_into(h: &mut Harness<'static, MainView>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.run();
    h.get_by_label(label).type_text(text);
    h.run();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn addr(h: &Harness<'static, MainView>) -> std::net::SocketAddr {
    h.state().address().expect("broker running")
}

#[test]
fn added_topic_can_be_subscribed_and_deleted_topic_is_refused() {
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "first snapshot", |_| true);
    type_into(&mut h, "New topic or pattern", "lab/fresh");
    h.get_by_label("Add topic").click();
    wait_for(&mut h, "the new topic", |l| {
        l.snapshot.topics.iter().any(|t| t.name == "lab/fresh")
    });
    h.get_by_label("lab/fresh"); // listed in the grid

    let addr = addr(&h);
    let mut sub = rt.block_on(Client::connect(options(addr, "student")));
    let codes = rt.block_on(sub.subscribe(&[("lab/fresh", QoS::AtLeastOnce)]));
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    wait_for(&mut h, "a subscriber", |l| {
        l.snapshot
            .topics
            .iter()
            .any(|t| t.name == "lab/fresh" && t.subscribers == 1)
    });

    h.get_by_label("Delete lab/fresh").click();
    wait_for(&mut h, "the topic gone", |l| {
        l.snapshot.topics.iter().all(|t| t.name != "lab/fresh")
    });
    assert!(h.query_by_label("lab/fresh").is_none());
    let codes = rt.block_on(sub.subscribe(&[("lab/fresh", QoS::AtLeastOnce)]));
    assert_eq!(codes, vec![SubscribeReasonCode::Failure]);
    // The refusal is shown: which client, which filter.
    wait_for(&mut h, "the refusal", |l| {
        l.snapshot
            .events
            .iter()
            .any(|e| e.who == "student" && e.text.contains("lab/fresh"))
    });
    h.get_by_label_contains("SUBSCRIBE \"lab/fresh\" refused");

    // A name that is not a topic name is refused in the window, with the reason.
    type_into(&mut h, "New topic or pattern", "bad/#/x");
    h.get_by_label("Add topic").click();
    h.run();
    h.get_by_label_contains("is not a topic name or pattern");
    h.state_mut().shutdown();
}

#[test]
fn connected_client_is_listed_and_kick_fires_its_will() {
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "first snapshot", |_| true);
    let addr = addr(&h);
    let mut watcher = rt.block_on(Client::connect(options(addr, "watcher")));
    rt.block_on(watcher.subscribe(&[("lab/#", QoS::AtLeastOnce)]));
    let mut opts = options(addr, "esp32-kitchen");
    opts.set_last_will(LastWill::new(
        "lab/a",
        "kitchen offline",
        QoS::AtLeastOnce,
        false,
    ));
    let mut victim = rt.block_on(Client::connect(opts));

    h.state_mut().tab = Tab::Clients;
    wait_for(&mut h, "the client", |l| {
        l.snapshot
            .clients
            .iter()
            .any(|c| c.client_id == "esp32-kitchen")
    });
    h.get_by_label("esp32-kitchen");
    h.get_by_label("lab/# (1)"); // the watcher's subscription with its granted QoS
    h.get_by_label("Kick esp32-kitchen").click();
    wait_for(&mut h, "the client gone", |l| {
        l.snapshot
            .clients
            .iter()
            .all(|c| c.client_id != "esp32-kitchen")
    });
    assert!(h.query_by_label("esp32-kitchen").is_none());
    let will = rt.block_on(watcher.next_publish());
    assert_eq!(&will.payload[..], b"kitchen offline");
    rt.block_on(victim.closed());
    h.state_mut().shutdown();
}

#[test]
fn history_shows_the_last_ten_values() {
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "first snapshot", |_| true);
    let addr = addr(&h);
    let mut publisher = rt.block_on(Client::connect(options(addr, "thermometer")));
    for i in 0..12 {
        rt.block_on(async {
            publisher
                .publish(
                    "lab/b",
                    QoS::AtLeastOnce,
                    false,
                    format!("{}.5", 20 + i).as_bytes(),
                )
                .await;
            publisher.acked().await;
        });
    }
    h.state_mut().tab = Tab::History;
    wait_for(&mut h, "twelve messages", |l| {
        l.snapshot
            .topics
            .iter()
            .any(|t| t.name == "lab/b" && t.messages == 12)
    });
    h.get_by_label("12 messages; the last 10 values, newest first");
    for i in 2..12 {
        h.get_by_label(&format!("{}.5", 20 + i));
    }
    assert!(h.query_by_label("20.5").is_none() && h.query_by_label("21.5").is_none());
    assert_eq!(h.get_all_by_label("thermometer").count(), 10);
    h.state_mut().shutdown();
}

#[test]
fn user_added_in_the_window_can_log_in() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let users_path = dir.path().join("users.ron");
    let mut config = config();
    config.users.allow_anonymous = false;
    config.users_path = Some(users_path.clone());
    let mut h = harness(view(config));
    wait_for(&mut h, "first snapshot", |_| true);
    h.state_mut().tab = Tab::Users;
    h.run();
    type_into(&mut h, "User name", "dana");
    type_into(&mut h, "E-mail (optional)", "dana@lab.example");
    type_into(&mut h, "Password", "s3cret");
    type_into(&mut h, "Password again", "s3cret");
    h.get_by_label("Add user").click();
    wait_for(&mut h, "the user", |l| {
        l.snapshot.users.find("dana").is_some()
    });
    let deadline = Instant::now() + WAIT;
    while h.query_by_label("Added user dana").is_none() {
        assert!(Instant::now() < deadline, "no confirmation shown");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = std::fs::read_to_string(&users_path).unwrap();
    assert!(saved.contains("dana@lab.example") && !saved.contains("s3cret"));

    let addr = addr(&h);
    let mut opts = options(addr, "laptop");
    opts.set_credentials("dana@lab.example", "s3cret");
    let c = rt.block_on(Client::connect(opts));
    rt.block_on(c.client.disconnect()).unwrap();
    let mut opts = options(addr, "laptop2");
    opts.set_credentials("dana", "wrong");
    let err = rt.block_on(async { Client::start(opts).closed().await });
    assert!(err.contains("BadUserNamePassword"), "{err}");

    // Mismatched passwords never reach the broker.
    type_into(&mut h, "User name", "eve");
    type_into(&mut h, "Password", "one");
    type_into(&mut h, "Password again", "two");
    h.get_by_label("Add user").click();
    h.run();
    h.get_by_label("Not saved: the two passwords differ");
    h.state_mut().shutdown();
}

#[test]
fn opening_a_bad_topic_file_shows_where_and_keeps_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("gui.ron");
    let bad = dir.path().join("bad.ron");
    std::fs::write(
        &bad,
        "(\n  topics: [\n    \"ok\",\n    \"no/#/x\",\n  ],\n)\n",
    )
    .unwrap();
    let good = dir.path().join("good.ron");
    std::fs::write(&good, "(topics: [\"room/1\", \"room/2\"])").unwrap();
    let cfg = config();
    let mut h = harness(MainView::new(
        Box::new(move || Ok(cfg.clone())),
        Some(settings.clone()),
    ));
    wait_for(&mut h, "first snapshot", |_| true);

    type_into(&mut h, "File path", bad.to_str().unwrap());
    h.get_by_label("Open path").click();
    // The broker reads the file, off the window's thread: the answer comes a few frames later.
    wait_for_label(&mut h, &format!("{}:4:5:", bad.display()));
    assert_eq!(
        h.state().live().unwrap().snapshot.topics.len(),
        TOPICS.len()
    );

    h.get_by_label("File path").focus();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run();
    h.get_by_label("File path")
        .type_text(good.to_str().unwrap());
    h.run();
    h.get_by_label("Open path").click();
    wait_for(&mut h, "the new list", |l| {
        l.snapshot
            .topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            == ["room/1", "room/2"]
    });
    h.get_by_label("room/1");
    // The window remembers the file once the broker has confirmed the load, a frame or more
    // after the new list shows.
    let deadline = Instant::now() + WAIT;
    loop {
        let remembered = mqtt_lab::gui::settings::Settings::load(&settings);
        if remembered.last_topics_file.as_deref() == Some(good.as_path()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the file opened is not remembered"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.state_mut().shutdown();
}

#[test]
fn a_port_in_use_is_reported_and_another_port_can_be_used() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config();
    cfg.listen = taken.local_addr().unwrap();
    let mut h = harness(view(cfg));
    h.run();
    assert!(h.state().failure().unwrap().contains("cannot listen on"));
    h.get_by_label("The broker did not start");
    h.get_by_label("Use any free port").click();
    wait_for(&mut h, "the broker", |_| true);
    assert_ne!(addr(&h), taken.local_addr().unwrap());
    h.get_by_label_contains("mqtt://127.0.0.1:");
    h.state_mut().shutdown();
}

#[test]
fn a_websocket_port_in_use_is_named_and_another_can_be_used() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config();
    cfg.ws_listen = Some(taken.local_addr().unwrap());
    let mut h = harness(view(cfg));
    h.run();
    assert!(
        h.state()
            .failure()
            .unwrap()
            .contains("cannot listen for WebSocket clients")
    );
    h.get_by_label("WebSocket port");
    h.get_by_label("Use any free port").click();
    wait_for(&mut h, "the broker", |_| true);
    // Every listener's address is in the status bar, to copy.
    h.get_by_label_contains("mqtt://127.0.0.1:");
    h.get_by_label_contains("ws://127.0.0.1:");
    let taken_url = format!("ws://{}/mqtt", taken.local_addr().unwrap());
    assert!(
        h.query_by_label(&taken_url).is_none(),
        "not on the port in use"
    );
    h.state_mut().shutdown();
}

#[test]
fn tls_listeners_and_the_local_ca_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let local = mqtt_lab::broker::tls::local_ca(dir.path()).unwrap();
    let mut cfg = config();
    cfg.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.wss_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.tls = Some(mqtt_lab::broker::tls::server_config(&local.files).unwrap());
    cfg.tls_ca = Some((local.ca.clone(), local.fingerprint.clone()));
    let mut h = harness(view(cfg));
    wait_for(&mut h, "the broker", |_| true);
    h.get_by_label_contains("mqtts://127.0.0.1:");
    h.get_by_label_contains("wss://127.0.0.1:");
    h.get_by_label(&local.ca.display().to_string());
    h.state_mut().shutdown();
}

#[test]
fn the_name_on_the_network_is_shown_and_renamed() {
    let mut cfg = config();
    // On loopback and a port of its own: nothing reaches a real network.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.mdns = Some(mqtt_lab::broker::mdns::MdnsConfig {
        name: "Lab bench".into(),
        port,
        scope: Some(mqtt_lab::broker::mdns::Scope::Loopback),
    });
    let mut h = harness(view(cfg));
    wait_for(&mut h, "the broker", |_| true);
    h.get_by_label("“Lab bench”").click();
    wait_for_label(&mut h, "Name on the network");

    // The field has the keyboard with the old name selected: typing replaces it. A name DNS-SD
    // cannot carry is refused in the window, and nothing changes.
    h.run_steps(2);
    h.get_by_label("Name").type_text(&"x".repeat(64));
    h.run_steps(2);
    h.get_by_label("Rename").click();
    wait_for_label(&mut h, "DNS-SD allows 63");
    h.query_by_label("“Lab bench”").expect("still the old name");

    h.get_by_label("Name").focus();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label("Name").type_text("Room 2.14");
    h.run_steps(2);
    h.get_by_label("Rename").click();
    wait_for_label(&mut h, "“Room 2.14”");
    assert!(
        h.query_by_label("Name on the network").is_none(),
        "the window closed"
    );
    h.state_mut().shutdown();
}

#[test]
fn the_trace_shows_a_qos2_handshake_in_order_and_exports_it() {
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "the broker", |_| true);
    let addr = addr(&h);
    h.get_by_label("Trace").click();
    h.run_steps(3);
    let (mut sub, publisher) = rt.block_on(async {
        let mut sub = Client::connect(options(addr, "watcher")).await;
        sub.subscribe(&[("lab/a", QoS::ExactlyOnce)]).await;
        let mut p = Client::connect(options(addr, "sensor")).await;
        p.publish("lab/a", QoS::ExactlyOnce, false, b"21.5").await;
        p.acked().await;
        (sub, p)
    });
    rt.block_on(sub.next_publish());
    // The sensor's four steps, in order, with one packet id.
    let deadline = Instant::now() + WAIT;
    let steps = loop {
        h.step();
        let steps: Vec<String> = h
            .state()
            .trace
            .events()
            .filter(|e| &*e.client_id == "sensor")
            .filter_map(|e| match &e.what {
                What::Packet(s) if s.packet_id().is_some() => {
                    Some(format!("{} {}", s.kind(), s.packet_id().unwrap()))
                }
                _ => None,
            })
            .collect();
        if steps.len() >= 4 || Instant::now() > deadline {
            break steps;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(steps, ["PUBLISH 1", "PUBREC 1", "PUBREL 1", "PUBCOMP 1"]);

    // The table says the same in words; the topic filter keeps the handshake's acks.
    h.get_by_label("Table").click();
    type_into(&mut h, "Topic", "lab/a");
    // Each handshake's last step (the sensor's and the watcher's), and the message both ways.
    let deadline = Instant::now() + WAIT;
    while h.query_all_by_label("PUBCOMP").count() < 2 {
        assert!(Instant::now() < deadline, "no PUBCOMP rows");
        h.step();
    }
    let publishes = h.query_all_by_label_contains("lab/a q2 id=1 4 B \"21.5\"");
    assert_eq!(publishes.count(), 2);
    assert!(
        h.query_by_label("CONNECT").is_none(),
        "filtered out by topic"
    );

    // Export what is shown; tshark reads it as MQTT.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shown.pcap");
    type_into(&mut h, "Export as pcap", file.to_str().unwrap());
    h.get_by_label("Export").click();
    wait_for_label(&mut h, "packets written to");
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-Y", "mqtt", "-T", "fields", "-e", "mqtt.msgtype"])
        .output()
        .expect("tshark");
    let types = String::from_utf8(out.stdout).unwrap();
    let shown = h.state().trace.shown().len();
    assert_eq!(types.lines().count(), shown, "{types}");
    assert!(types.lines().any(|t| t == "7"), "PUBCOMP is there: {types}");
    drop(publisher);
    h.state_mut().shutdown();
}

#[test]
fn lab_clients_made_in_the_window_publish_subscribe_and_leave_a_will() {
    let mut h = harness(view(config()));
    wait_for(&mut h, "the broker", |_| true);
    h.get_by_label("Lab clients").click();
    h.run_steps(2);
    // A listener, then a sensor with a will.
    type_into(&mut h, "Client id", "listener");
    h.get_by_label("Create and connect").click();
    wait_for_label(&mut h, "connected (session present: no)");
    type_into(&mut h, "Subscribe to", "lab/#");
    h.get_by_label("Subscribe").click();
    wait_for_label(&mut h, "granted QoS 0");

    type_into(&mut h, "Client id", "sensor");
    h.get_by_label("Will").click();
    h.run_steps(2);
    type_into(&mut h, "Will topic", "lab/b");
    h.get_by_label("Create and connect").click();
    let deadline = Instant::now() + WAIT;
    while h.query_all_by_label_contains("connected (session").count() < 1
        || h.state().lab.clients().len() < 2
        || !matches!(
            h.state().lab.clients()[1].state().status,
            mqtt_lab::lab::Status::Connected { .. }
        )
    {
        assert!(Instant::now() < deadline, "the sensor did not connect");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    type_into(&mut h, "Publish to", "lab/a");
    let payload = || (egui::accesskit::Role::TextInput, "Payload");
    h.get_by_role_and_label(payload().0, payload().1).focus();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_role_and_label(payload().0, payload().1)
        .type_text("21.5");
    h.run_steps(2);
    h.get_by_label("Publish").click();
    h.run_steps(2);
    h.get_by_label("Pull the plug").click();

    // The listener got the reading, then the will.
    h.get_by_label("listener").click();
    let deadline = Instant::now() + WAIT;
    loop {
        h.step();
        let got: Vec<String> = h.state().lab.clients()[0]
            .state()
            .received
            .iter()
            .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
            .collect();
        if got.len() >= 2 {
            assert_eq!(got, ["lab/a 21.5", "lab/b offline"]);
            break;
        }
        assert!(Instant::now() < deadline, "received {got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_label(&mut h, "offline");
    h.state_mut().shutdown();
}

#[test]
fn the_status_bar_says_where_the_state_is_saved_and_clear_forgets_it() {
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "first snapshot", |_| true);
    let addr = addr(&h);
    let mut p = rt.block_on(Client::connect(options(addr, "thermometer")));
    rt.block_on(p.publish("lab/a", QoS::AtLeastOnce, true, b"21.5"));
    rt.block_on(p.acked());
    wait_for(&mut h, "the retained value", |l| l.snapshot.retained == 1);
    h.get_by_label_contains("Saved ").click();
    h.run_steps(3);
    h.get_by_label_contains("state.sqlite3");
    h.get_by_label("Clear saved state…").click();
    h.run_steps(3);
    h.get_by_label("Yes, clear").click();
    wait_for(&mut h, "the state cleared", |l| l.snapshot.retained == 0);
    wait_for_label(&mut h, "Cleared retained messages and offline sessions");
    h.state_mut().shutdown();
}

#[test]
fn a_slow_subscriber_and_the_publishers_it_holds_back_are_shown() {
    let rt = runtime();
    let mut h = harness(view(Config {
        stall_timeout: Duration::from_secs(600),
        ..config()
    }));
    wait_for(&mut h, "first snapshot", |_| true);
    let addr = addr(&h);
    // Subscribes and then reads nothing.
    let mut slow = rt.block_on(Raw::connected(addr, "slow-reader"));
    rt.block_on(slow.subscribe(1, &[("lab/a", 0)]));
    let p = rt.block_on(Client::connect(options(addr, "chatty")));
    let big = vec![b'x'; 8 * 1024];
    rt.spawn(async move {
        for _ in 0..4000 {
            if p.client
                .publish("lab/a", QoS::AtMostOnce, false, big.clone())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    h.get_by_label("Clients").click();
    wait_for(&mut h, "the publisher held back", |l| {
        l.snapshot.clients.iter().any(|c| {
            c.client_id == "chatty" && c.flow == mqtt_lab::broker::snapshot::Flow::HeldBack
        })
    });
    h.get_by_label_contains("slow: 1 publisher wait");
    h.get_by_label_contains("held back");
    drop(slow);
    h.state_mut().shutdown();
}

#[test]
fn a_shared_subscription_shows_as_a_group_in_topics() {
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "first snapshot", |_| true);
    let addr = addr(&h);
    let mut members = Vec::new();
    for id in ["worker-1", "worker-2"] {
        let mut c = rt.block_on(Client::connect(options(addr, id)));
        rt.block_on(c.subscribe(&[("$share/workers/lab/#", QoS::AtLeastOnce)]));
        members.push(c);
    }
    wait_for(&mut h, "the group", |l| {
        l.snapshot
            .topics
            .iter()
            .any(|t| t.name == "lab/a" && t.shared.first().is_some_and(|g| g.1 == 2))
    });
    h.get_by_label("Topics").click();
    h.run_steps(3);
    assert!(h.query_all_by_label_contains("group workers ×2").count() >= 1);
    h.state_mut().shutdown();
}

#[test]
fn open_mode_and_patterns_in_the_topics_panel() {
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "first snapshot", |_| true);
    h.state_mut().tab = Tab::Topics;
    h.run();
    // A pattern grants the topics it matches; it is shown as a pattern with its count.
    type_into(&mut h, "New topic or pattern", "devices/+/temperature");
    h.get_by_label("Add topic").click();
    wait_for(&mut h, "the pattern", |l| l.snapshot.patterns.len() == 1);
    let addr = addr(&h);
    let mut esp = rt.block_on(Client::connect(options(addr, "esp32-7")));
    rt.block_on(esp.publish("devices/7/temperature", QoS::AtLeastOnce, false, b"21"));
    rt.block_on(esp.acked());
    wait_for(&mut h, "the topic to appear", |l| {
        l.snapshot
            .topics
            .iter()
            .any(|t| t.name == "devices/7/temperature")
    });
    h.get_by_label("matches 1");
    h.get_by_label("not on the list");
    // Open mode from the window, shown in the status bar.
    h.get_by_label("Open: any topic clients use").click();
    wait_for(&mut h, "open mode", |l| {
        l.snapshot.topics_mode == mqtt_lab::broker::config::TopicsMode::Open
    });
    h.get_by_label_contains("Topics: open");
    let mut s = rt.block_on(Client::connect(options(addr, "student")));
    let codes = rt.block_on(s.subscribe(&[("anything/new", QoS::AtLeastOnce)]));
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    wait_for(&mut h, "the subscribed topic", |l| {
        l.snapshot.topics.iter().any(|t| t.name == "anything/new")
    });
    // Put on the list with one click.
    h.get_by_label("Add anything/new to the list").click();
    wait_for(&mut h, "listed", |l| {
        l.snapshot
            .topics
            .iter()
            .any(|t| t.name == "anything/new" && t.listed)
    });
    h.state_mut().shutdown();
}

#[test]
fn rules_and_class_accounts_in_the_users_panel() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.topics = vec!["students/#".into(), "lab/a".into()];
    config.users_path = Some(dir.path().join("users.ron"));
    let mut h = harness(view(config));
    wait_for(&mut h, "first snapshot", |_| true);
    h.state_mut().tab = Tab::Users;
    h.run();
    // Three accounts with the default student rules.
    h.get_by_label("how many").set_value_accesskit(3.0);
    h.run();
    h.get_by_label("Create accounts").click();
    wait_for(&mut h, "the accounts", |l| {
        l.snapshot.users.users.len() == 3
    });
    let deadline = Instant::now() + WAIT;
    while h.query_by_label("New accounts").is_none() {
        assert!(Instant::now() < deadline, "no window with the passwords");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    let csv = dir.path().join("accounts.csv");
    type_into(&mut h, "Export as CSV", csv.to_str().unwrap());
    h.get_by_label("Export").click();
    let deadline = Instant::now() + WAIT;
    while !csv.exists() {
        assert!(Instant::now() < deadline, "no CSV written");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "username,password");
    let (name, password) = lines[2].split_once(',').unwrap();
    assert_eq!(name, "student02");
    // The account logs in with its password and publishes only under its own branch.
    let addr = addr(&h);
    let mut watcher = rt.block_on(Client::connect(options(addr, "teacher")));
    rt.block_on(watcher.subscribe(&[("students/#", QoS::AtLeastOnce)]));
    let mut opts = options(addr, "s2-laptop");
    opts.set_credentials(name, password);
    let mut s2 = rt.block_on(Client::connect(opts));
    rt.block_on(s2.publish("students/student01/x", QoS::AtLeastOnce, false, b"no"));
    rt.block_on(s2.acked());
    rt.block_on(s2.publish("students/student02/x", QoS::AtLeastOnce, false, b"yes"));
    rt.block_on(s2.acked());
    let got = rt.block_on(watcher.next_publish());
    assert_eq!(got.topic, "students/student02/x");
    h.run();
    h.get_by_label("Done: forget the passwords").click();
    h.run();
    assert!(h.query_by_label("Done: forget the passwords").is_none());

    // Rules edited in the window reach the connected client.
    h.get_by_label("Rules of student02").click();
    h.run();
    let field = h.get_by_label("publish to filters of student02");
    field.focus();
    h.run();
    h.get_by_label("publish to filters of student02")
        .type_text(", lab/a");
    h.run();
    h.get_by_label("Save rules").click();
    wait_for(&mut h, "the rules", |l| {
        l.snapshot
            .users
            .users
            .iter()
            .any(|u| u.rules.publish.as_ref().is_some_and(|p| p.len() == 2))
    });
    let mut lab = rt.block_on(Client::connect(options(addr, "lab-watcher")));
    rt.block_on(lab.subscribe(&[("lab/a", QoS::AtLeastOnce)]));
    rt.block_on(s2.publish("lab/a", QoS::AtLeastOnce, false, b"now allowed"));
    rt.block_on(s2.acked());
    assert_eq!(rt.block_on(lab.next_publish()).topic, "lab/a");
    h.state_mut().shutdown();
}

#[test]
fn an_mqtt_5_client_shows_its_settings_and_its_messages_their_properties() {
    use rumqttc::v5::mqttbytes::v5::{ConnectProperties, PublishProperties};
    let rt = runtime();
    let mut h = harness(view(config()));
    wait_for(&mut h, "first snapshot", |_| true);
    let addr = addr(&h);
    let mut opts = rumqttc::v5::MqttOptions::new("meter-5", addr.ip().to_string(), addr.port());
    opts.set_clean_start(false);
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(120);
    props.receive_maximum = Some(5);
    props.topic_alias_max = Some(3);
    opts.set_connect_properties(props);
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 10);
    rt.spawn(async move { while eventloop.poll().await.is_ok() {} });
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("unit".into(), "C".into())],
        ..Default::default()
    };
    rt.block_on(client.publish_with_properties(
        "lab/b",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "21.5",
        props,
    ))
    .unwrap();

    h.state_mut().tab = Tab::Clients;
    wait_for(&mut h, "the MQTT 5 client", |l| {
        l.snapshot.clients.iter().any(|c| c.client_id == "meter-5")
    });
    h.get_by_label_contains("5/TCP");
    h.get_by_label("receive 5 · aliases 3");
    h.get_by_label("kept 120 s");

    h.state_mut().tab = Tab::History;
    wait_for(&mut h, "its message", |l| {
        l.snapshot
            .topics
            .iter()
            .any(|t| t.name == "lab/b" && t.messages == 1)
    });
    h.get_by_label("content type text/plain · unit=C");
    h.state_mut().shutdown();
}

#[test]
fn a_bridge_made_in_the_bridges_panel_forwards_and_shows_its_state() {
    let rt = runtime();
    // The remote: another mqtt-lab with the same topics.
    let remote = rt.block_on(start());
    let dir = tempfile::tempdir().unwrap();
    let bridges_path = dir.path().join("bridges.ron");
    let mut h = harness(view(Config {
        bridges_path: Some(bridges_path.clone()),
        ..config()
    }));
    wait_for(&mut h, "first snapshot", |_| true);
    h.state_mut().tab = Tab::Bridges;
    h.run();
    h.get_by_label("Add bridge").click();
    h.run();
    type_into(&mut h, "Name", "dept");
    // Not an address: refused, and the form stays for the fix.
    type_into(&mut h, "Remote address", "gopher://nowhere");
    h.get_by_label("Save bridge").click();
    wait_for_label(&mut h, "is not mqtt, mqtts, ws or wss");
    assert!(h.state().live().unwrap().snapshot.bridges.is_empty());
    h.get_by_label("Name");
    h.get_by_label("Cancel").click();
    h.run();
    h.get_by_label("Add bridge").click();
    h.run();
    type_into(&mut h, "Name", "dept");
    let url = format!("mqtt://{}", remote.local_addr());
    type_into(&mut h, "Remote address", &url);
    h.get_by_label("Save bridge").click();
    wait_for(&mut h, "the bridge up", |l| {
        l.snapshot.bridges.first().is_some_and(|b| {
            matches!(
                b.status.state,
                mqtt_lab::broker::bridge::BridgeState::Up { .. }
            )
        })
    });
    wait_for_label(&mut h, "up since");
    // The form closes once bridges.ron is written, which the bridge does not wait for.
    let deadline = Instant::now() + WAIT;
    while h.query_by_label("Save bridge").is_some() {
        assert!(Instant::now() < deadline, "the form did not close");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = std::fs::read_to_string(&bridges_path).unwrap();
    assert!(saved.contains(&url) && saved.contains("lab/#"), "{saved}");

    // The default rule sends lab/# out.
    let mut there = rt.block_on(Client::connect(options(remote.local_addr(), "there")));
    rt.block_on(there.subscribe(&[("lab/a", QoS::AtLeastOnce)]));
    let here = rt.block_on(Client::connect(options(addr(&h), "here")));
    rt.block_on(here.publish("lab/a", QoS::AtLeastOnce, false, b"21.5"));
    let p = rt.block_on(there.next_publish());
    assert_eq!(&p.payload[..], b"21.5");
    wait_for(&mut h, "the count", |l| {
        l.snapshot.bridges[0].status.counters.sent == 1
    });

    // Disabled from its row: its local side goes, and the table says so.
    h.get_by_label("Disable dept").click();
    wait_for(&mut h, "disabled", |l| {
        l.snapshot.bridges[0].status.state == mqtt_lab::broker::bridge::BridgeState::Disabled
    });
    h.get_by_label("disabled");
    // The notice waits for bridges.ron to be written, which may end after
    // the snapshot that shows the bridge disabled.
    wait_for_label(&mut h, "Bridge \"dept\" disabled");
    h.state_mut().shutdown();
    rt.block_on(remote.shutdown());
}

#[test]
fn an_mqtt_sn_node_is_a_client_in_the_clients_panel() {
    let mut h = harness(view(Config {
        sn: Some(mqtt_lab::broker::sn::SnConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            predefined: Default::default(),
            advertise: None,
            max_clients: 10,
            retry: Duration::from_secs(10),
        }),
        ..config()
    }));
    wait_for(&mut h, "first snapshot", |_| true);
    // The gateway's port, from the listeners the status bar shows.
    let url = wait_for_sn_url(&mut h);
    let gw: std::net::SocketAddr = url
        .trim_start_matches("mqtt-sn://")
        .trim_end_matches(" (UDP)")
        .parse()
        .unwrap();
    let node = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    node.set_read_timeout(Some(WAIT)).unwrap();
    // CONNECT, clean session, keepalive 60, "soil-probe".
    let mut connect = vec![0, 0x04, 0x04, 0x01, 0, 60];
    connect.extend_from_slice(b"soil-probe");
    connect[0] = connect.len() as u8;
    node.send_to(&connect, gw).unwrap();
    let mut buf = [0u8; 16];
    let n = node.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[0x03, 0x05, 0x00], "CONNACK accepted");
    h.state_mut().tab = Tab::Clients;
    wait_for(&mut h, "the node", |l| {
        l.snapshot
            .clients
            .iter()
            .any(|c| c.client_id == "soil-probe")
    });
    h.get_by_label("soil-probe");
    h.get_by_label("MQTT-SN/UDP");
    h.state_mut().shutdown();
}

/// The MQTT-SN listener's URL, once the window knows it.
fn wait_for_sn_url(h: &mut Harness<'static, MainView>) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        h.step();
        if let Some(n) = h.query_by_label_contains("mqtt-sn://") {
            use egui_kittest::kittest::NodeT as _;
            return n.accesskit_node().label().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "no MQTT-SN listener shown");
        std::thread::sleep(Duration::from_millis(20));
    }
}
