//! The mDNS advertiser on loopback, browsed by a second responder in the test: what is advertised,
//! a rename from the window, and the goodbyes on stop. On a port of its own and on loopback only,
//! so nothing reaches a real network. (The whole broker, on a network namespace, is browsed by
//! python-zeroconf in tests/interop/test_mdns.py.)

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};
use mqtt_lab::broker::Transport;
use mqtt_lab::broker::mdns::{Advertiser, MdnsConfig, Scope};

const WAIT: Duration = Duration::from_secs(10);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for the next event on `rx` that `pick` turns into a value.
async fn next<T>(
    rx: &mdns_sd::Receiver<ServiceEvent>,
    mut pick: impl FnMut(ServiceEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = rx.recv_async().await.expect("browser stopped");
            if let Some(v) = pick(e) {
                return v;
            }
        }
    })
    .await
    .expect("no such mDNS event in time")
}

#[tokio::test]
async fn advertises_renames_and_says_goodbye() {
    let port = free_udp_port();
    let doors: [(Transport, SocketAddr); 2] = [
        (Transport::Tcp, "127.0.0.1:18830".parse().unwrap()),
        (Transport::WebSocket, "127.0.0.1:19001".parse().unwrap()),
    ];
    let config = MdnsConfig {
        name: "first name".into(),
        port,
        scope: None,
    };
    let (advertiser, task) = Advertiser::start(&config, Scope::Loopback, &doors).unwrap();

    let browser = ServiceDaemon::new_with_port(port).unwrap();
    browser.disable_interface(IfKind::All).unwrap();
    browser.enable_interface(IfKind::LoopbackV4).unwrap();
    let tcp = browser.browse("_mqtt._tcp.local.").unwrap();
    let ws = browser.browse("_mqtt-ws._tcp.local.").unwrap();

    let resolved = |rx| async move {
        next(rx, |e| match e {
            ServiceEvent::ServiceResolved(s) => Some(s),
            _ => None,
        })
        .await
    };
    let s = resolved(&tcp).await;
    assert_eq!(s.get_fullname(), "first name._mqtt._tcp.local.");
    assert_eq!(s.get_port(), 18830);
    let s = resolved(&ws).await;
    assert_eq!(s.get_port(), 19001);
    assert_eq!(s.get_property_val_str("path"), Some("/mqtt"));
    let now = advertiser.advertised();
    assert_eq!(now.name, "first name");
    assert_eq!(
        now.services,
        vec![
            ("_mqtt._tcp".into(), 18830),
            ("_mqtt-ws._tcp".into(), 19001)
        ]
    );

    // A bad name is refused before anything is withdrawn.
    assert!(advertiser.rename("").is_err());
    assert_eq!(advertiser.advertised().name, "first name");

    advertiser.rename("Lab 2.14").unwrap();
    // The old name is withdrawn and the new one announced (browsers may see them in any order).
    let (mut gone, mut found) = (None, None);
    while gone.is_none() || found.is_none() {
        match next(&tcp, |e| match e {
            ServiceEvent::ServiceRemoved(..) | ServiceEvent::ServiceResolved(_) => Some(e),
            _ => None,
        })
        .await
        {
            ServiceEvent::ServiceRemoved(_, name) => gone = Some(name),
            ServiceEvent::ServiceResolved(s) => found = Some(s.get_fullname().to_owned()),
            _ => unreachable!(),
        }
    }
    assert_eq!(gone.unwrap(), "first name._mqtt._tcp.local.");
    assert_eq!(found.unwrap(), "Lab 2.14._mqtt._tcp.local.");
    let mut watch = advertiser.watch();
    tokio::time::timeout(WAIT, watch.wait_for(|a| a.name == "Lab 2.14"))
        .await
        .unwrap()
        .unwrap();

    advertiser.stop().await;
    task.await.unwrap();
    let gone = next(&tcp, |e| match e {
        ServiceEvent::ServiceRemoved(_, name) => Some(name),
        _ => None,
    })
    .await;
    assert!(gone.starts_with("Lab"), "{gone}");
    let _ = browser.shutdown();
}
