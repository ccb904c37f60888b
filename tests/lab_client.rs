//! The lab clients the window demonstrates with, against a real broker: QoS 0/1/2 both ways, a
//! refused subscription, the will on a pulled plug (and none on DISCONNECT), keepalive expiry
//! when it stops answering, a persistent session collecting messages while offline.

mod common;

use std::time::Duration;

use common::*;
use mqtt_lab::broker::QoS;
use mqtt_lab::lab::{LabClient, LabCommand, LabConfig, LabState, LabWill, Publish, Status};
use tokio::runtime::Handle;

async fn until(c: &LabClient, what: &str, within: Duration, f: impl Fn(&LabState) -> bool) {
    let mut w = c.watch();
    let ok = tokio::time::timeout(within, w.wait_for(|s| f(s))).await;
    assert!(ok.is_ok(), "{what}: state is {:#?}", *c.state());
}

async fn connected(addr: std::net::SocketAddr, config: LabConfig) -> LabClient {
    let c = LabClient::spawn(&Handle::current(), addr, config);
    c.send_async(LabCommand::Connect).await;
    until(&c, "connected", WAIT, |s| {
        matches!(s.status, Status::Connected { .. })
    })
    .await;
    c
}

fn publish(topic: &str, payload: &str, qos: QoS) -> LabCommand {
    LabCommand::Publish(Publish {
        topic: topic.into(),
        payload: payload.into(),
        qos,
        retain: false,
    })
}

#[tokio::test]
async fn qos_both_ways_and_a_refused_subscription() {
    let broker = start().await;
    let addr = broker.local_addr();
    let sub = connected(addr, LabConfig::new("lab-sub")).await;
    sub.send_async(LabCommand::Subscribe("lab/a".into(), QoS::ExactlyOnce))
        .await;
    sub.send_async(LabCommand::Subscribe("nowhere".into(), QoS::AtMostOnce))
        .await;
    until(&sub, "SUBACKs", WAIT, |s| {
        s.subscriptions.len() == 2 && s.subscriptions.iter().all(|(_, _, code)| code.is_some())
    })
    .await;
    let codes: Vec<_> = sub.state().subscriptions.iter().map(|s| s.2).collect();
    assert_eq!(codes, [Some(2), Some(0x80)]);

    let publisher = connected(addr, LabConfig::new("lab-pub")).await;
    for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .send_async(publish("lab/a", &format!("q{}", q as u8), q))
            .await;
    }
    until(&sub, "three messages", WAIT, |s| s.received.len() == 3).await;
    let got: Vec<_> = sub
        .state()
        .received
        .iter()
        .map(|r| (r.qos, String::from_utf8_lossy(&r.payload).into_owned()))
        .collect();
    assert_eq!(
        got,
        [
            (QoS::AtMostOnce, "q0".to_owned()),
            (QoS::AtLeastOnce, "q1".to_owned()),
            (QoS::ExactlyOnce, "q2".to_owned())
        ]
    );
    until(&publisher, "every ack", WAIT, |s| {
        s.unacked == 0 && s.sent == 3
    })
    .await;
}

#[tokio::test]
async fn the_will_fires_on_a_pulled_plug_and_not_on_disconnect() {
    let broker = start().await;
    let addr = broker.local_addr();
    let watcher = connected(addr, LabConfig::new("watcher")).await;
    watcher
        .send_async(LabCommand::Subscribe("lab/b".into(), QoS::AtLeastOnce))
        .await;
    until(&watcher, "SUBACK", WAIT, |s| {
        s.subscriptions.first().is_some_and(|x| x.2 == Some(1))
    })
    .await;
    let with_will = |id: &str| {
        let mut c = LabConfig::new(id);
        c.will = Some(LabWill {
            topic: "lab/b".into(),
            payload: format!("{id} is gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
        });
        c
    };
    let polite = connected(addr, with_will("polite")).await;
    polite.send_async(LabCommand::Disconnect).await;
    let unplugged = connected(addr, with_will("unplugged")).await;
    unplugged.send_async(LabCommand::PullPlug).await;
    until(&watcher, "the will", WAIT, |s| !s.received.is_empty()).await;
    tokio::time::sleep(QUIET).await;
    let wills: Vec<_> = watcher
        .state()
        .received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert_eq!(wills, ["unplugged is gone"]);
}

#[tokio::test]
async fn a_silent_client_is_closed_at_one_and_a_half_keepalives() {
    let broker = start().await;
    let mut cfg = LabConfig::new("sleepy");
    cfg.keep_alive = 1;
    let c = connected(broker.local_addr(), cfg).await;
    // Answering, it stays well past 1.5 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(c.state().status, Status::Connected { .. }));
    c.send_async(LabCommand::Silent(true)).await;
    let t0 = std::time::Instant::now();
    until(
        &c,
        "closed by the broker",
        Duration::from_secs(4),
        |s| matches!(&s.status, Status::Closed(why) if why.contains("broker closed")),
    )
    .await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
}

#[tokio::test]
async fn a_persistent_session_collects_messages_while_offline() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut cfg = LabConfig::new("sleeper");
    cfg.clean_session = false;
    let c = connected(addr, cfg).await;
    c.send_async(LabCommand::Subscribe("lab/c/d".into(), QoS::AtLeastOnce))
        .await;
    until(&c, "SUBACK", WAIT, |s| {
        s.subscriptions.first().is_some_and(|x| x.2 == Some(1))
    })
    .await;
    c.send_async(LabCommand::Disconnect).await;
    until(&c, "offline", WAIT, |s| {
        matches!(s.status, Status::Closed(_))
    })
    .await;
    let p = connected(addr, LabConfig::new("meanwhile")).await;
    for i in 0..3 {
        p.send_async(publish("lab/c/d", &i.to_string(), QoS::AtLeastOnce))
            .await;
    }
    until(&p, "acked", WAIT, |s| s.sent == 3 && s.unacked == 0).await;
    c.send_async(LabCommand::Connect).await;
    until(&c, "the queued messages", WAIT, |s| s.received.len() == 3).await;
    assert_eq!(
        c.state().status,
        Status::Connected {
            session_present: true
        }
    );
}
