//! The packet trace: off until watched; then every packet in and out with the fields that
//! matter, in order; and `--trace FILE.pcap` read back by tshark as MQTT, none malformed.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mqtt_lab::broker::QoS as Q;
use mqtt_lab::broker::trace::{Direction, Event, PAYLOAD_HEAD, Summary, Trace, What};
use rumqttc::QoS;

/// Waits until the trace holds an event that `done` picks.
async fn events_until(trace: &Trace, done: impl Fn(&[Arc<Event>]) -> bool) -> Vec<Arc<Event>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = trace.since(0).await.expect("broker running");
        if done(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "trace so far: {events:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn of<'a>(events: &'a [Arc<Event>], client: &str) -> Vec<(Direction, &'a Summary)> {
    events
        .iter()
        .filter(|e| &*e.client_id == client)
        .filter_map(|e| match &e.what {
            What::Packet(s) => Some((e.direction, s)),
            What::Closed(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn off_until_watched_then_every_packet_in_order() {
    let broker = start().await;
    let trace = broker.trace();
    assert!(!trace.is_on());
    let mut early = Raw::connected(broker.local_addr(), "before").await;
    early.ping().await;
    assert!(
        trace.since(0).await.unwrap().is_empty(),
        "nothing while nobody watches"
    );

    trace.watch(true);
    let mut sub = Client::connect(options(broker.local_addr(), "sub")).await;
    let codes = sub
        .subscribe(&[("lab/a", QoS::ExactlyOnce), ("nowhere", QoS::AtMostOnce)])
        .await;
    assert_eq!(codes.len(), 2);
    let mut publisher = Client::connect(options(broker.local_addr(), "pub")).await;
    let payload = vec![b'x'; 100];
    publisher
        .publish("lab/a", QoS::ExactlyOnce, false, &payload)
        .await;
    publisher.acked().await;
    assert_eq!(sub.next_publish().await.payload.len(), 100);
    let mut bad = Raw::connected(broker.local_addr(), "bad").await;
    bad.send(&[0x36, 0x03, 0x00, 0x01, b'a']).await; // a PUBLISH at QoS 3
    bad.expect_closed().await;

    let events = events_until(&trace, |ev| {
        let sub_done = of(ev, "sub")
            .iter()
            .any(|(d, s)| *d == Direction::In && matches!(s, Summary::PubComp(_)));
        let closed = ev
            .iter()
            .any(|e| &*e.client_id == "bad" && matches!(e.what, What::Closed(_)));
        sub_done && closed
    })
    .await;
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(of(&events, "before").is_empty(), "traced before watching");

    // The publisher's QoS 2 handshake, as it went: PUBLISH, PUBREC, PUBREL, PUBCOMP.
    let p = of(&events, "pub");
    let kinds: Vec<_> = p.iter().map(|(d, s)| (*d, s.kind())).collect();
    use Direction::{In, Out};
    assert_eq!(
        kinds,
        [
            (In, "CONNECT"),
            (Out, "CONNACK"),
            (In, "PUBLISH"),
            (Out, "PUBREC"),
            (In, "PUBREL"),
            (Out, "PUBCOMP")
        ]
    );
    let ids: Vec<_> = p[2..].iter().map(|(_, s)| s.packet_id()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.is_some()),
        "{ids:?}"
    );

    // The subscriber: its SUBACK with the refusal, then the message with its fields and only
    // the first bytes of its payload.
    let s = of(&events, "sub");
    assert!(s.iter().any(
        |(d, x)| *d == Out && matches!(x, Summary::SubAck { codes, .. } if codes == &[2, 0x80])
    ));
    let delivered = s
        .iter()
        .find_map(|(d, x)| match x {
            Summary::Publish {
                topic,
                qos,
                size,
                payload,
                ..
            } if *d == Out => Some((topic.as_str(), *qos, *size, payload.len())),
            _ => None,
        })
        .expect("the delivery");
    assert_eq!(delivered, ("lab/a", Q::ExactlyOnce, 100, PAYLOAD_HEAD));

    // A malformed packet ends its connection, with the reason.
    let why = events
        .iter()
        .find_map(|e| match &e.what {
            What::Closed(r) if &*e.client_id == "bad" => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        why.contains("malformed") || why.contains("protocol"),
        "{why}"
    );

    // Off again: nothing more is kept.
    trace.watch(false);
    let before = trace.since(0).await.unwrap().len();
    early.ping().await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(trace.since(0).await.unwrap().len(), before);
    assert_eq!(trace.dropped(), 0);
    broker.shutdown().await;
}

/// tshark's fields for every MQTT message in a pcap file, one line each.
fn tshark(file: &std::path::Path, fields: &[&str], filter: &str) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark (Debian package tshark; scripts/install-test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_trace_file_is_mqtt_to_wireshark() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trace.pcap");
    let mut cfg = config();
    cfg.trace_file = Some(file.clone());
    cfg.users.allow_anonymous = true;
    let broker = start_with(cfg).await;
    let trace = broker.trace();
    assert!(trace.is_on(), "on from the start with a file");

    let (mut raw, _, rc) = Raw::connect(
        broker.local_addr(),
        &ConnectOpts {
            client_id: "secretive",
            user: Some("nobody"),
            password: Some(b"hunter2"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rc, 4, "an unknown user is refused");
    raw.expect_closed().await;
    let big = |id| {
        let mut o = options(broker.local_addr(), id);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o
    };
    let mut sub = Client::connect(big("sub")).await;
    sub.subscribe(&[("lab/#", QoS::ExactlyOnce), ("nope", QoS::AtMostOnce)])
        .await;
    let publisher = Client::connect(big("pub")).await;
    for (qos, size) in [
        (QoS::AtMostOnce, 10),
        (QoS::AtLeastOnce, 70_000), // more than one IP packet
        (QoS::ExactlyOnce, 200),
    ] {
        publisher
            .publish("lab/a", qos, qos == QoS::AtLeastOnce, &vec![7u8; size])
            .await;
        sub.next_publish().await;
    }
    sub.client.unsubscribe("lab/#").await.unwrap();
    sub.client.disconnect().await.unwrap();
    let _ = sub.closed().await;
    let events = events_until(&trace, |ev| {
        ev.iter()
            .any(|e| &*e.client_id == "sub" && matches!(e.what, What::Closed(_)))
            && of(ev, "pub").len() >= 9
    })
    .await;
    let packets = events
        .iter()
        .filter(|e| matches!(e.what, What::Packet(_)))
        .count();
    broker.shutdown().await;

    let types = tshark(&file, &["mqtt.msgtype"], "mqtt");
    let listed: usize = types.iter().map(|l| l.split(',').count()).sum();
    assert_eq!(listed, packets, "every packet, once: {types:?}");
    assert!(
        tshark(
            &file,
            &["frame.number"],
            "_ws.malformed || _ws.expert.severity >= error"
        )
        .is_empty(),
        "nothing malformed"
    );
    let sizes = tshark(&file, &["mqtt.len"], "mqtt.msgtype == 3 && mqtt.qos == 1");
    assert!(
        sizes.iter().any(|l| l.split(',').any(|n| n == "70009")),
        "{sizes:?}"
    );
    // The refused login's CONNECT is there, with its user name and without its password.
    let logins = tshark(
        &file,
        &["mqtt.username", "mqtt.passwd"],
        "mqtt.msgtype == 1",
    );
    assert!(logins.contains(&"nobody\t".to_owned()), "{logins:?}");
    let refusals = tshark(&file, &["mqtt.conack.val"], "mqtt.msgtype == 2");
    assert!(refusals.contains(&"4".to_owned()), "{refusals:?}");
}

#[tokio::test]
async fn a_connection_s_end_is_marked_after_its_last_answer() {
    let broker = start().await;
    let trace = broker.trace();
    trace.watch(true);
    let mut raw = Raw::connected(broker.local_addr(), "hasty").await;
    // SUBSCRIBE and DISCONNECT in one write: the router's SUBACK still goes out, before the
    // end is marked.
    let mut both = subscribe_packet(3, &[("lab/a", 1)]);
    both.extend_from_slice(&[0xE0, 0]);
    raw.send(&both).await;
    raw.expect_closed().await;
    let events = events_until(&trace, |ev| {
        ev.iter()
            .any(|e| &*e.client_id == "hasty" && matches!(e.what, What::Closed(_)))
    })
    .await;
    let order: Vec<&str> = events
        .iter()
        .filter(|e| &*e.client_id == "hasty")
        .map(|e| match &e.what {
            What::Packet(s) => s.kind(),
            What::Closed(_) => "CLOSE",
        })
        .collect();
    assert_eq!(
        order,
        [
            "CONNECT",
            "CONNACK",
            "SUBSCRIBE",
            "DISCONNECT",
            "SUBACK",
            "CLOSE"
        ]
    );
    broker.shutdown().await;
}
