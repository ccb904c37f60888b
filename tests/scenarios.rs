//! Every guided scenario driven to its end in the window (egui_kittest, a real broker, real lab
//! clients), at a twentieth of a class's pace, and the trace it leaves checked.
#![cfg(feature = "gui")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use mqtt_lab::broker::trace::{Direction, Event, Summary, What};
use mqtt_lab::gui::MainView;
use mqtt_lab::gui::scenarios::SCENARIOS;
use mqtt_lab::lab::LabState;

fn play(name: &str) -> Harness<'static, MainView> {
    let mut cfg = config();
    cfg.sys_interval = Some(Duration::from_secs(1));
    let mut view = MainView::new(Box::new(move || Ok(cfg.clone())), None);
    view.scenarios.pace = 0.05;
    let mut h = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_ui_state(|ui, v: &mut MainView| v.ui(ui), view);
    let deadline = Instant::now() + WAIT;
    while h.state().live().is_none() {
        assert!(Instant::now() < deadline, "the broker did not start");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.get_by_label("Scenarios").click();
    h.run_steps(2);
    // The list may be longer than the window: scroll to the button first.
    h.get_by_label(&format!("Run {name}")).scroll_to_me();
    h.run_steps(3);
    h.get_by_label(&format!("Run {name}")).click();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        h.step();
        let run = h.state().scenarios.run.as_ref().expect("running");
        assert!(run.failed.is_none(), "{name}: {:?}", run.failed);
        if run.done {
            break;
        }
        assert!(Instant::now() < deadline, "{name} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last packets reach the window's trace.
    for _ in 0..10 {
        h.step();
        std::thread::sleep(Duration::from_millis(30));
    }
    h
}

fn client(h: &Harness<'static, MainView>, label: &str) -> LabState {
    let run = h.state().scenarios.run.as_ref().unwrap();
    run.client(label).expect(label).state().clone()
}

fn events(h: &Harness<'static, MainView>, client_id: &str) -> Vec<Arc<Event>> {
    h.state()
        .trace
        .events()
        .filter(|e| &*e.client_id == client_id)
        .cloned()
        .collect()
}

fn payloads(s: &LabState) -> Vec<String> {
    s.received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

fn stop(mut h: Harness<'static, MainView>) {
    h.state_mut().shutdown();
}

#[test]
fn every_scenario_has_a_run_button_and_a_sentence() {
    assert_eq!(SCENARIOS.len(), 9);
    for s in SCENARIOS {
        assert!(!s.about.is_empty() && !(s.steps)().is_empty(), "{}", s.name);
    }
}

#[test]
fn qos_0_1_2_side_by_side() {
    let h = play("QoS 0, 1 and 2");
    let qos: Vec<u8> = client(&h, "subscriber")
        .received
        .iter()
        .map(|r| r.qos as u8)
        .collect();
    assert_eq!(qos, [0, 1, 2]);
    // The publisher's QoS 2 message: the four steps, one packet id, in order.
    let ev = events(&h, "publisher");
    let start = ev
        .iter()
        .position(
            |e| matches!(&e.what, What::Packet(Summary::Publish { qos, .. }) if *qos as u8 == 2),
        )
        .expect("the QoS 2 PUBLISH");
    let steps: Vec<(Direction, &str, Option<u16>)> = ev[start..]
        .iter()
        .filter_map(|e| match &e.what {
            What::Packet(s) if s.packet_id().is_some() => {
                Some((e.direction, s.kind(), s.packet_id()))
            }
            _ => None,
        })
        .take(4)
        .collect();
    let id = steps[0].2;
    assert_eq!(
        steps,
        [
            (Direction::In, "PUBLISH", id),
            (Direction::Out, "PUBREC", id),
            (Direction::In, "PUBREL", id),
            (Direction::Out, "PUBCOMP", id)
        ]
    );
    // Its topic was added for it, and is gone again.
    let deadline = Instant::now() + WAIT;
    let mut h = h;
    while h
        .state()
        .live()
        .is_some_and(|l| l.snapshot.topics.iter().any(|t| t.name == "demo/qos"))
    {
        assert!(Instant::now() < deadline, "demo/qos stayed on the list");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(h);
}

#[test]
fn a_retained_value_for_a_late_subscriber() {
    let h = play("A retained value for a late subscriber");
    let late = client(&h, "late");
    // The retained value at once, flagged; then, as a subscriber by now, the empty message
    // that cleared it (not flagged: it is a live delivery).
    assert_eq!(payloads(&late), ["21.5", ""]);
    assert!(late.received[0].retain && !late.received[1].retain);
    assert!(client(&h, "later").received.is_empty(), "cleared");
    stop(h);
}

#[test]
fn a_will_on_an_abrupt_close_only() {
    let h = play("A will on an abrupt close");
    assert_eq!(payloads(&client(&h, "watcher")), ["abrupt went away"]);
    stop(h);
}

#[test]
fn keepalive_expiry() {
    let h = play("Keepalive expiry");
    let closed = events(&h, "sleepy")
        .iter()
        .find_map(|e| match &e.what {
            What::Closed(r) => Some(r.clone()),
            _ => None,
        })
        .expect("closed");
    assert!(closed.contains("keepalive"), "{closed}");
    assert_eq!(payloads(&client(&h, "watcher")), ["sleepy timed out"]);
    stop(h);
}

#[test]
fn a_persistent_session() {
    let h = play("A persistent session");
    let phone = client(&h, "phone");
    assert!(phone.received.len() >= 3);
    let connacks: Vec<bool> = events(&h, "phone")
        .iter()
        .filter_map(|e| match &e.what {
            What::Packet(Summary::ConnAck {
                session_present, ..
            }) => Some(*session_present),
            _ => None,
        })
        .collect();
    assert_eq!(connacks, [false, true]);
    stop(h);
}

#[test]
fn a_topic_not_on_the_list() {
    let h = play("A topic not on the list");
    assert_eq!(client(&h, "student").subscriptions[0].2, Some(0x80));
    assert!(events(&h, "student").iter().any(|e| matches!(
        &e.what,
        What::Packet(Summary::SubAck { codes, .. }) if codes == &[0x80]
    )));
    stop(h);
}

#[test]
fn client_id_takeover() {
    let h = play("Client id takeover");
    let closes: Vec<String> = events(&h, "laptop")
        .iter()
        .filter_map(|e| match &e.what {
            What::Closed(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert!(closes.iter().any(|r| r.contains("took over")), "{closes:?}");
    stop(h);
}

#[test]
fn wildcards() {
    let h = play("Wildcards + and #");
    assert_eq!(payloads(&client(&h, "plus")), ["21.5", "19.0"]);
    assert_eq!(payloads(&client(&h, "hash")), ["21.5", "19.0", "40"]);
    stop(h);
}

#[test]
fn sys_topics() {
    let h = play("$SYS");
    let got = client(&h, "curious");
    assert!(!got.received.is_empty());
    assert_eq!(got.received[0].topic, "$SYS/broker/clients/connected");
    stop(h);
}
