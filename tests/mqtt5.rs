//! MQTT 5 clients: rumqttc's v5 client for what a library sends, raw bytes for what it will not
//! (a property given twice, a topic alias the broker did not offer, AUTH).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use mqtt_lab::broker::Command;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Packet, PubAckReason, Publish,
    PublishProperties, SubscribeReasonCode, UnsubAckReason,
};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// An MQTT 5 client whose incoming packets arrive on a channel, and the CONNACK it got.
struct Client5 {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Packet, String>>,
    connack: ConnAck,
}

fn options5(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

impl Client5 {
    async fn connect(opts: MqttOptions) -> Client5 {
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let connack = match timeout(WAIT, rx.recv()).await {
            Ok(Some(Ok(Packet::ConnAck(c)))) => c,
            other => panic!("no CONNACK: {other:?}"),
        };
        Client5 {
            client,
            rx,
            connack,
        }
    }

    async fn next(&mut self) -> Packet {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(Ok(p))) => p,
            other => panic!("no packet: {other:?}"),
        }
    }

    /// The next packet that is not a PINGRESP.
    async fn next_of<T>(&mut self, pick: impl Fn(Packet) -> Option<T>) -> T {
        loop {
            let p = self.next().await;
            let shown = format!("{p:?}");
            match pick(p) {
                Some(t) => return t,
                None if shown.starts_with("PingResp") => continue,
                None => panic!("unexpected {shown}"),
            }
        }
    }

    async fn publish_received(&mut self) -> Publish {
        self.next_of(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn puback(&mut self) -> PubAckReason {
        self.next_of(|p| match p {
            Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.unwrap();
        self.next_of(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes[0]),
            _ => None,
        })
        .await
    }

    /// The DISCONNECT the broker sent, or the error the connection ended with.
    async fn disconnected(&mut self) -> Result<DisconnectReasonCode, String> {
        loop {
            match timeout(WAIT, self.rx.recv()).await {
                Ok(Some(Ok(Packet::Disconnect(d)))) => return Ok(d.reason_code),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(e),
                other => panic!("still connected: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_tells_the_truth_and_properties_pass_through() {
    let broker = start().await;
    let addr = broker.local_addr();
    // No client id: the broker gives one and says which.
    let anon = Client5::connect(options5(addr, "")).await;
    assert_eq!(anon.connack.code, ConnectReturnCode::Success);
    let props = anon.connack.properties.clone().expect("CONNACK properties");
    assert!(
        props
            .assigned_client_identifier
            .is_some_and(|id| !id.is_empty())
    );
    // Subscription Identifiers are offered: absent means available.
    assert_eq!(props.subscription_identifiers_available.unwrap_or(1), 1);
    assert_eq!(props.topic_alias_max, Some(10));
    assert!(props.max_packet_size.is_some());

    let mut sub5 = Client5::connect(options5(addr, "sub5")).await;
    assert_eq!(
        sub5.subscribe("lab/#", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    // A 3.1.1 subscriber of the same topic gets the message without the properties.
    let mut sub4 = Client::connect(options(addr, "sub4")).await;
    sub4.subscribe(&[("lab/a", rumqttc::QoS::AtLeastOnce)])
        .await;

    let mut p = Client5::connect(options5(addr, "pub5")).await;
    let properties = PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: Some("lab/b".into()),
        correlation_data: Some(Bytes::from_static(b"req-1")),
        user_properties: vec![("unit".into(), "C".into()), ("unit".into(), "K".into())],
        message_expiry_interval: Some(3600),
        ..Default::default()
    };
    p.client
        .publish_with_properties(
            "lab/a",
            QoS::AtLeastOnce,
            false,
            "{\"t\": 21.5}",
            properties,
        )
        .await
        .unwrap();
    assert_eq!(p.puback().await, PubAckReason::Success);

    let got = sub5.publish_received().await;
    assert_eq!(&got.topic[..], b"lab/a");
    assert_eq!(&got.payload[..], b"{\"t\": 21.5}");
    let gp = got.properties.expect("properties passed on");
    assert_eq!(gp.content_type.as_deref(), Some("application/json"));
    assert_eq!(gp.response_topic.as_deref(), Some("lab/b"));
    assert_eq!(gp.correlation_data.as_deref(), Some(&b"req-1"[..]));
    assert_eq!(
        gp.user_properties,
        vec![("unit".into(), "C".into()), ("unit".into(), "K".into())]
    );
    // The time left, counted down from the publisher's hour.
    let left = gp.message_expiry_interval.expect("expiry passed on");
    assert!((3590..=3600).contains(&left), "{left}");
    assert_eq!(&sub4.next_publish().await.payload[..], b"{\"t\": 21.5}");

    // And a 3.1.1 publisher reaches the MQTT 5 subscriber.
    sub4.publish("lab/c/d", rumqttc::QoS::AtMostOnce, false, b"from 3.1.1")
        .await;
    let got = sub5.publish_received().await;
    assert_eq!(&got.payload[..], b"from 3.1.1");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reason_codes_say_why() {
    let broker = start().await;
    let addr = broker.local_addr();
    // rumqttc 0.25 takes refusing acknowledgements as events like any other (and logs them).
    let mut c = Client5::connect(options5(addr, "student")).await;
    assert_eq!(
        c.subscribe("nowhere/#", QoS::AtMostOnce).await,
        SubscribeReasonCode::TopicFilterInvalid
    );
    c.client
        .publish("nowhere", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(c.puback().await, PubAckReason::TopicNameInvalid);
    // Listed, but no one subscribes.
    c.client
        .publish("other", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(c.puback().await, PubAckReason::NoMatchingSubscribers);
    // Delivered.
    c.subscribe("lab/a", QoS::AtMostOnce).await;
    c.client
        .publish("lab/a", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let (mut acked, mut got) = (None, None);
    while acked.is_none() || got.is_none() {
        match c.next().await {
            Packet::PubAck(a) => acked = Some(a.reason),
            Packet::Publish(p) => got = Some(p.payload),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(acked, Some(PubAckReason::Success));
    // UNSUBACK says which filters there were.
    c.client.unsubscribe("lab/a").await.unwrap();
    let codes = c
        .next_of(|p| match p {
            Packet::UnsubAck(u) => Some(u.reasons),
            _ => None,
        })
        .await;
    assert_eq!(codes, [UnsubAckReason::Success]);
    c.client.unsubscribe("lab/b").await.unwrap();
    let codes = c
        .next_of(|p| match p {
            Packet::UnsubAck(u) => Some(u.reasons),
            _ => None,
        })
        .await;
    assert_eq!(codes, [UnsubAckReason::NoSubscriptionExisted]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_says_why_it_closes() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut old = Client5::connect(options5(addr, "twin")).await;
    let _new = Client5::connect(options5(addr, "twin")).await;
    // rumqttc reports the server's DISCONNECT as the error its connection ended with.
    let said = |r: Result<DisconnectReasonCode, String>| match r {
        Ok(code) => format!("{code:?}"),
        Err(e) => e,
    };
    let err = said(old.disconnected().await);
    assert!(err.contains("SessionTakenOver"), "{err}");
    let mut kicked = Client5::connect(options5(addr, "kicked")).await;
    let (tx, _rx) = tokio::sync::oneshot::channel();
    assert!(
        broker
            .handle()
            .send(Command::Kick {
                client_id: "kicked".into(),
                reply: Some(tx),
            })
            .await
    );
    let err = said(kicked.disconnected().await);
    assert!(err.contains("AdministrativeAction"), "{err}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_last_as_long_as_the_client_says() {
    let broker = start().await;
    let addr = broker.local_addr();
    let opts = |expiry: u32| {
        let mut o = options5(addr, "sleepy");
        o.set_clean_start(false);
        let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
        props.session_expiry_interval = Some(expiry);
        o.set_connect_properties(props);
        o
    };
    let mut c = Client5::connect(opts(2)).await;
    assert!(!c.connack.session_present);
    c.subscribe("lab/a", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    tokio::time::sleep(QUIET).await;
    // Back within the interval: the session and what was queued for it are there.
    let mut p = Client::connect(options(addr, "pub")).await;
    p.publish("lab/a", rumqttc::QoS::AtLeastOnce, false, b"while away")
        .await;
    p.acked().await;
    let mut c = Client5::connect(opts(2)).await;
    assert!(c.connack.session_present);
    assert_eq!(&c.publish_received().await.payload[..], b"while away");
    c.client.disconnect().await.unwrap();
    // Away longer than the interval: the session is gone.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let c = Client5::connect(opts(2)).await;
    assert!(!c.connack.session_present);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_will_publishes_it() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut watcher = Client::connect(options(addr, "watcher")).await;
    watcher
        .subscribe(&[("lab/b", rumqttc::QoS::AtLeastOnce)])
        .await;
    // Raw: DISCONNECT with reason 0x04.
    let mut raw = Raw::open(addr).await;
    // A will with no properties, on lab/b, saying "gone".
    let will = [
        0, 0, 5, b'l', b'a', b'b', b'/', b'b', 0, 4, b'g', b'o', b'n', b'e',
    ];
    raw.send(&connect5_full(0x06, 30, &[], "w", &will)).await;
    let connack = raw.read().await.expect("CONNACK");
    assert_eq!((connack.kind(), connack.body[1]), (2, 0));
    raw.send(&[0xe0, 1, 0x04]).await;
    assert_eq!(&watcher.next_publish().await.payload[..], b"gone");
    broker.shutdown().await;
}

/// A raw MQTT 5 CONNECT with Clean Start, a keep alive of 30 s and these CONNECT properties.
fn connect5(client_id: &str, props: &[u8]) -> Vec<u8> {
    connect5_full(0x02, 30, props, client_id, &[])
}

/// A raw MQTT 5 CONNECT: its flags, keep alive and properties, the client id, and what
/// follows it (a will's properties, topic and message).
fn connect5_full(
    flags: u8,
    keep_alive: u16,
    props: &[u8],
    client_id: &str,
    rest: &[u8],
) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    encode_len(props.len(), &mut body);
    body.extend_from_slice(props);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    body.extend_from_slice(rest);
    packet(0x10, &body)
}

async fn connected5(addr: SocketAddr, id: &str, props: &[u8]) -> Raw {
    let mut raw = Raw::open(addr).await;
    raw.send(&connect5(id, props)).await;
    let connack = raw.read().await.expect("CONNACK");
    assert_eq!((connack.kind(), connack.body[1]), (2, 0), "{connack:?}");
    raw
}

/// Reads until the broker's DISCONNECT: its reason code; then the connection must close.
async fn disconnect_reason(raw: &mut Raw) -> u8 {
    let p = raw.read().await.expect("DISCONNECT");
    assert_eq!(p.kind(), 14, "{p:?}");
    assert!(raw.read().await.is_none(), "closed after DISCONNECT");
    p.body[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_properties_close_with_the_right_reason() {
    let broker = start().await;
    let addr = broker.local_addr();
    // The same property twice: a Protocol Error.
    let mut raw = connected5(addr, "twice", &[]).await;
    let publish = packet(
        0x30,
        &[0, 5, b'l', b'a', b'b', b'/', b'a', 4, 1, 1, 1, 0, b'x'],
    );
    raw.send(&publish).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x82);
    // A property a client may not send (a Subscription Identifier on PUBLISH): malformed.
    let mut raw = connected5(addr, "subid", &[]).await;
    let publish = packet(
        0x30,
        &[0, 5, b'l', b'a', b'b', b'/', b'a', 2, 0x0B, 1, b'x'],
    );
    raw.send(&publish).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x81);
    // A topic alias over the maximum the broker offered (10).
    let mut raw = connected5(addr, "alias", &[]).await;
    let publish = packet(
        0x30,
        &[0, 5, b'l', b'a', b'b', b'/', b'a', 3, 0x23, 0, 11, b'x'],
    );
    raw.send(&publish).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x94);
    // A payload that says it is UTF-8 and is not.
    let mut raw = connected5(addr, "utf8", &[]).await;
    let publish = packet(
        0x30,
        &[0, 5, b'l', b'a', b'b', b'/', b'a', 2, 0x01, 1, 0xff],
    );
    raw.send(&publish).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x99);
    // AUTH, with no authentication method agreed.
    let mut raw = connected5(addr, "auth", &[]).await;
    raw.send(&[0xf0, 0]).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x82);
    // Enhanced authentication asked for in CONNECT: CONNACK 0x8C.
    let mut raw = Raw::open(addr).await;
    raw.send(&connect5(
        "scram",
        &[0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'],
    ))
    .await;
    let connack = raw.read().await.expect("CONNACK");
    assert_eq!((connack.kind(), connack.body[1]), (2, 0x8c));
    // A 3.1.1 client on the same broker is not affected.
    let mut c = Client::connect(options(addr, "classic")).await;
    c.subscribe(&[("lab/a", rumqttc::QoS::AtMostOnce)]).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_bounds_what_is_in_flight() {
    let broker = start().await;
    let addr = broker.local_addr();
    // Receive Maximum 1: one unacknowledged QoS 1 message at a time.
    let mut raw = connected5(addr, "slow", &[0x21, 0, 1]).await;
    let mut sub = vec![0, 1, 0, 0, 5];
    sub.extend_from_slice(b"lab/a");
    sub.push(1);
    raw.send(&packet(0x82, &sub)).await;
    assert_eq!(raw.read().await.expect("SUBACK").kind(), 9);
    let mut p = Client::connect(options(addr, "pub")).await;
    for i in 0..3 {
        p.publish("lab/a", rumqttc::QoS::AtLeastOnce, false, &[b'0' + i])
            .await;
        p.acked().await;
    }
    for i in 0..3u8 {
        let m = raw.read().await.expect("PUBLISH");
        assert_eq!(m.kind(), 3);
        // topic (2 + 5), packet id, property length 0, payload
        let pkid = u16::from_be_bytes([m.body[7], m.body[8]]);
        assert_eq!(m.body[9], 0);
        assert_eq!(m.body[10], b'0' + i);
        // Nothing more until this one is acknowledged.
        assert!(raw.read_quiet().await.is_none());
        raw.send(&ack_packet(0x40, pkid)).await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_qos2_publish_ends_at_pubrec_and_frees_its_id() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut raw = connected5(addr, "q2", &[]).await;
    let publish = |topic: &[u8]| {
        let mut body = vec![0, topic.len() as u8];
        body.extend_from_slice(topic);
        body.extend_from_slice(&[0, 1, 0, b'x']); // packet id 1, no properties
        packet(0x34, &body)
    };
    raw.send(&publish(b"nowhere")).await;
    let pubrec = raw.read().await.expect("PUBREC");
    assert_eq!((pubrec.kind(), &pubrec.body[..3]), (5, &[0, 1, 0x90][..]));
    // The exchange is over: the same id starts a new one at once, which is delivered.
    let mut sub = Client::connect(options(addr, "watch")).await;
    sub.subscribe(&[("lab/a", rumqttc::QoS::ExactlyOnce)]).await;
    raw.send(&publish(b"lab/a")).await;
    let pubrec = raw.read().await.expect("PUBREC");
    assert_eq!((pubrec.kind(), &pubrec.body[..]), (5, &[0, 1][..]));
    raw.send(&ack_packet(0x62, 1)).await;
    let pubcomp = raw.read().await.expect("PUBCOMP");
    assert_eq!((pubcomp.kind(), &pubcomp.body[..]), (7, &[0, 1][..]));
    assert_eq!(&sub.next_publish().await.payload[..], b"x");
    // A PUBREL for an id not held: PUBCOMP 0x92.
    raw.send(&ack_packet(0x62, 9)).await;
    let pubcomp = raw.read().await.expect("PUBCOMP");
    assert_eq!((pubcomp.kind(), &pubcomp.body[..3]), (7, &[0, 9, 0x92][..]));
    broker.shutdown().await;
}

/// Subscribes with MQTT 5's options and an identifier; returns the SUBACK codes.
async fn subscribe_with(
    c: &mut Client5,
    filters: Vec<rumqttc::v5::mqttbytes::v5::Filter>,
    id: Option<usize>,
) -> Vec<SubscribeReasonCode> {
    let props = rumqttc::v5::mqttbytes::v5::SubscribeProperties {
        id,
        user_properties: Vec::new(),
    };
    c.client
        .subscribe_many_with_properties(filters, props)
        .await
        .unwrap();
    c.next_of(|p| match p {
        Packet::SubAck(s) => Some(s.return_codes),
        _ => None,
    })
    .await
}

fn filter(path: &str, qos: QoS) -> rumqttc::v5::mqttbytes::v5::Filter {
    rumqttc::v5::mqttbytes::v5::Filter::new(path, qos)
}

/// Waits QUIET and says whether a PUBLISH came meanwhile.
async fn quiet(c: &mut Client5) -> bool {
    loop {
        match timeout(QUIET, c.rx.recv()).await {
            Err(_) => return true,
            Ok(Some(Ok(Packet::Publish(_)))) => return false,
            Ok(Some(Ok(_))) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_options_and_identifiers() {
    use rumqttc::v5::mqttbytes::v5::RetainForwardRule;
    let broker = start().await;
    let addr = broker.local_addr();
    let mut c = Client5::connect(options5(addr, "opts")).await;
    // No Local: its own messages do not come back; another client's do.
    let mut nl = filter("lab/a", QoS::AtMostOnce);
    nl.nolocal = true;
    assert_eq!(
        subscribe_with(&mut c, vec![nl], None).await,
        [SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    c.client
        .publish("lab/a", QoS::AtMostOnce, false, "mine")
        .await
        .unwrap();
    assert!(quiet(&mut c).await, "No Local sent its own message back");
    let other = Client::connect(options(addr, "other")).await;
    other
        .publish("lab/a", rumqttc::QoS::AtMostOnce, false, b"theirs")
        .await;
    assert_eq!(&c.publish_received().await.payload[..], b"theirs");

    // Identifiers: each message carries those of the subscriptions it matched; Retain As
    // Published keeps the retain flag on a live message.
    let mut rap = filter("lab/c/+", QoS::AtMostOnce);
    rap.preserve_retain = true;
    subscribe_with(&mut c, vec![rap], Some(7)).await;
    subscribe_with(&mut c, vec![filter("lab/#", QoS::AtMostOnce)], Some(9)).await;
    other
        .publish("lab/c/d", rumqttc::QoS::AtMostOnce, true, b"kept")
        .await;
    let got = c.publish_received().await;
    assert_eq!(&got.payload[..], b"kept");
    assert!(got.retain, "Retain As Published");
    let mut ids = got.properties.unwrap().subscription_identifiers;
    ids.sort();
    assert_eq!(ids, [7, 9]);
    // Without Retain As Published, a live message's retain flag is cleared.
    let mut plain = Client5::connect(options5(addr, "plain")).await;
    subscribe_with(&mut plain, vec![filter("lab/b", QoS::AtMostOnce)], None).await;
    other
        .publish("lab/b", rumqttc::QoS::AtMostOnce, true, b"live")
        .await;
    assert!(!plain.publish_received().await.retain);

    // Retain Handling: 2 never sends retained messages; 1 only for a new subscription.
    let mut rh = Client5::connect(options5(addr, "rh")).await;
    let mut never = filter("lab/c/d", QoS::AtMostOnce);
    never.retain_forward_rule = RetainForwardRule::Never;
    subscribe_with(&mut rh, vec![never], None).await;
    assert!(
        quiet(&mut rh).await,
        "Retain Handling 2 sent a retained message"
    );
    let mut once = filter("lab/b", QoS::AtMostOnce);
    once.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    subscribe_with(&mut rh, vec![once.clone()], Some(3)).await;
    let got = rh.publish_received().await;
    assert!(got.retain && &got.payload[..] == b"live");
    assert_eq!(got.properties.unwrap().subscription_identifiers, [3]);
    subscribe_with(&mut rh, vec![once], None).await;
    assert!(quiet(&mut rh).await, "Retain Handling 1 sent again");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered() {
    let broker = start().await;
    let addr = broker.local_addr();
    let opts = || {
        let mut o = options5(addr, "away");
        o.set_clean_start(false);
        let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
        props.session_expiry_interval = Some(60);
        o.set_connect_properties(props);
        o
    };
    let mut c = Client5::connect(opts()).await;
    c.subscribe("lab/a", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    tokio::time::sleep(QUIET).await;
    let p = Client5::connect(options5(addr, "pub")).await;
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    p.client
        .publish_with_properties("lab/a", QoS::AtLeastOnce, false, "short", expiring(1))
        .await
        .unwrap();
    p.client
        .publish_with_properties("lab/a", QoS::AtLeastOnce, false, "long", expiring(600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Back after the first ran out while queued: only the second comes, with the time left.
    let mut c = Client5::connect(opts()).await;
    let got = c.publish_received().await;
    assert_eq!(&got.payload[..], b"long");
    let left = got.properties.unwrap().message_expiry_interval.unwrap();
    assert!((590..=598).contains(&left), "{left}");
    assert!(quiet(&mut c).await);
    broker.shutdown().await;
}

/// The PUBLISH fields a raw MQTT 5 client reads: topic, alias (0: none), payload.
fn publish5(p: &RawPacket) -> (String, u16, Vec<u8>) {
    assert_eq!(p.kind(), 3, "not a PUBLISH: {p:?}");
    let b = &p.body;
    let len = u16::from_be_bytes([b[0], b[1]]) as usize;
    let topic = String::from_utf8(b[2..2 + len].to_vec()).unwrap();
    let mut at = 2 + len + if p.qos() > 0 { 2 } else { 0 };
    let props_len = b[at] as usize; // short in these tests
    let props = &b[at + 1..at + 1 + props_len];
    at += 1 + props_len;
    let mut alias = 0;
    let mut i = 0;
    while i < props.len() {
        match props[i] {
            0x23 => {
                alias = u16::from_be_bytes([props[i + 1], props[i + 2]]);
                i += 3;
            }
            other => panic!("property {other:#x} not expected here"),
        }
    }
    (topic, alias, b[at..].to_vec())
}

/// A raw MQTT 5 SUBSCRIBE of one filter at QoS 0.
fn subscribe5(pkid: u16, filter: &str) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    packet(0x82, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_both_ways() {
    let broker = start_with(mqtt_lab::broker::Config {
        send_topic_aliases: true,
        ..common::config()
    })
    .await;
    let addr = broker.local_addr();
    // The subscriber takes 1 alias (Topic Alias Maximum 1).
    let mut sub = connected5(addr, "sub", &[0x22, 0, 1]).await;
    sub.send(&subscribe5(1, "lab/#")).await;
    assert_eq!(sub.read().await.unwrap().kind(), 9);
    // The publisher sets alias 3 for lab/a, then sends with the alias alone.
    let mut publ = connected5(addr, "pub", &[]).await;
    let with_alias = |topic: &str, alias: u16, payload: &[u8]| {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&[3, 0x23]);
        body.extend_from_slice(&alias.to_be_bytes());
        body.extend_from_slice(payload);
        packet(0x30, &body)
    };
    publ.send(&with_alias("lab/a", 3, b"1")).await;
    publ.send(&with_alias("", 3, b"2")).await;
    // The subscriber gets the topic with alias 1 once, then the alias alone; a second topic
    // finds no alias left and comes whole.
    assert_eq!(
        publish5(&sub.read().await.unwrap()),
        ("lab/a".into(), 1, b"1".to_vec())
    );
    assert_eq!(
        publish5(&sub.read().await.unwrap()),
        (String::new(), 1, b"2".to_vec())
    );
    publ.send(&with_alias("lab/b", 4, b"3")).await;
    assert_eq!(
        publish5(&sub.read().await.unwrap()),
        ("lab/b".into(), 0, b"3".to_vec())
    );
    // An alias never set is a Protocol Error; one over the maximum (10) is 0x94.
    publ.send(&with_alias("", 5, b"x")).await;
    assert_eq!(disconnect_reason(&mut publ).await, 0x82);
    let mut publ = connected5(addr, "pub2", &[]).await;
    publ.send(&with_alias("lab/a", 11, b"x")).await;
    assert_eq!(disconnect_reason(&mut publ).await, 0x94);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_larger_than_the_client_takes() {
    let broker = start().await;
    let addr = broker.local_addr();
    // Maximum Packet Size 64 bytes.
    let mut sub = connected5(addr, "small", &[0x27, 0, 0, 0, 64]).await;
    let mut body = vec![0, 1, 0, 0, 5];
    body.extend_from_slice(b"lab/a");
    body.push(1);
    sub.send(&packet(0x82, &body)).await;
    assert_eq!(sub.read().await.unwrap().kind(), 9);
    let p = Client::connect(options(addr, "pub")).await;
    p.publish("lab/a", rumqttc::QoS::AtLeastOnce, false, &[b'x'; 100])
        .await;
    p.publish("lab/a", rumqttc::QoS::AtLeastOnce, false, b"fits")
        .await;
    // The large one is dropped (and does not hold the window); the small one comes.
    let m = sub.read().await.unwrap();
    assert_eq!(m.kind(), 3);
    assert!(m.body.ends_with(b"fits"), "{m:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_waits_and_a_client_back_in_time_cancels_it() {
    let broker = start().await;
    let addr = broker.local_addr();
    let mut watcher = Client::connect(options(addr, "watcher")).await;
    watcher
        .subscribe(&[("lab/b", rumqttc::QoS::AtLeastOnce)])
        .await;
    // A CONNECT with Session Expiry 60, Clean Start 0, and a will delayed by 1 s.
    let connect = |id: &str| {
        let mut will = vec![5, 0x18, 0, 0, 0, 1]; // will properties: delay 1 s
        will.extend_from_slice(&[0, 5]);
        will.extend_from_slice(b"lab/b");
        will.extend_from_slice(&[0, 4]);
        will.extend_from_slice(b"gone");
        connect5_full(0x04, 30, &[0x11, 0, 0, 0, 60], id, &will)
    };
    let open = |id: &'static str| async move {
        let mut raw = Raw::open(addr).await;
        raw.send(&connect(id)).await;
        assert_eq!(raw.read().await.unwrap().kind(), 2);
        raw
    };
    // Dropped, and back within the delay: no will.
    let raw = open("flaky").await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = open("flaky").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    watcher.no_publish().await;
    // Dropped for good: the will comes after the delay, not at once.
    drop(back);
    watcher.no_publish().await;
    let m = watcher.next_publish().await;
    assert_eq!(&m.payload[..], b"gone");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_sessions_and_properties_survive_a_restart() {
    // The same data folder on both starts (each on a port of its own).
    let config = common::config();
    let broker = start_with(config.clone()).await;
    let addr = broker.local_addr();
    let opts = |addr: SocketAddr| {
        let mut o = options5(addr, "keeper");
        o.set_clean_start(false);
        let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
        props.session_expiry_interval = Some(600);
        o.set_connect_properties(props);
        o
    };
    let mut c = Client5::connect(opts(addr)).await;
    subscribe_with(&mut c, vec![filter("lab/a", QoS::AtLeastOnce)], Some(42)).await;
    c.client.disconnect().await.unwrap();
    tokio::time::sleep(QUIET).await;
    let p = Client5::connect(options5(addr, "pub")).await;
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(3600),
        ..Default::default()
    };
    p.client
        .publish_with_properties("lab/a", QoS::AtLeastOnce, false, "kept", props)
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;
    broker.shutdown().await;
    let broker = start_with(config.clone()).await;
    let mut c = Client5::connect(opts(broker.local_addr())).await;
    assert!(c.connack.session_present);
    let got = c.publish_received().await;
    assert_eq!(&got.payload[..], b"kept");
    let gp = got.properties.unwrap();
    assert_eq!(gp.content_type.as_deref(), Some("text/plain"));
    assert_eq!(gp.user_properties, vec![("k".into(), "v".into())]);
    assert_eq!(gp.subscription_identifiers, [42]);
    assert!(gp.message_expiry_interval.is_some_and(|l| l > 3500));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_size_and_shutdown_are_said_with_their_reasons() {
    let broker = start_with(mqtt_lab::broker::Config {
        max_packet_size: 64,
        ..common::config()
    })
    .await;
    let addr = broker.local_addr();
    // Over the broker's Maximum Packet Size: 0x95.
    let mut raw = connected5(addr, "big", &[]).await;
    let mut body = vec![0, 5];
    body.extend_from_slice(b"lab/a");
    body.push(0);
    body.extend_from_slice(&[b'x'; 100]);
    raw.send(&packet(0x30, &body)).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x95);
    // Silent past 1.5 x a keep alive of 1 s: 0x8D.
    let mut raw = Raw::open(addr).await;
    raw.send(&connect5_full(0x02, 1, &[], "quiet", &[])).await;
    assert_eq!(raw.read().await.unwrap().kind(), 2);
    assert_eq!(disconnect_reason(&mut raw).await, 0x8D);
    // A DISCONNECT that gives a session expiry after CONNECT's 0: a Protocol Error.
    let mut raw = connected5(addr, "zero", &[]).await;
    raw.send(&[0xe0, 7, 0, 5, 0x11, 0, 0, 0, 9]).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x82);
    // The broker stopping: 0x8B.
    let mut raw = connected5(addr, "last", &[]).await;
    broker.shutdown().await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x8B);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_and_quiet_clients() {
    let broker = start().await;
    let addr = broker.local_addr();
    // Two MQTT 5 members of one group, one with an identifier: each message to one of them.
    let mut a = Client5::connect(options5(addr, "member-a")).await;
    let mut b = Client5::connect(options5(addr, "member-b")).await;
    subscribe_with(
        &mut a,
        vec![filter("$share/g/lab/a", QoS::AtLeastOnce)],
        Some(5),
    )
    .await;
    subscribe_with(
        &mut b,
        vec![filter("$share/g/lab/a", QoS::AtLeastOnce)],
        None,
    )
    .await;
    let p = Client::connect(options(addr, "pub")).await;
    for i in 0..4u8 {
        p.publish("lab/a", rumqttc::QoS::AtLeastOnce, false, &[b'0' + i])
            .await;
    }
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let m = a.publish_received().await;
        assert_eq!(m.properties.unwrap().subscription_identifiers, [5]);
        got_a.push(m.payload[0]);
        got_b.push(b.publish_received().await.payload[0]);
    }
    let mut all: Vec<u8> = got_a.iter().chain(&got_b).copied().collect();
    all.sort();
    assert_eq!(all, b"0123");
    // A client that turned problem information off gets the reason code without the words.
    let mut raw = connected5(addr, "quiet", &[0x17, 0]).await;
    let mut body = vec![0, 7];
    body.extend_from_slice(b"nowhere");
    body.extend_from_slice(&[0, 1, 0, b'x']);
    raw.send(&packet(0x32, &body)).await;
    let ack = raw.read().await.unwrap();
    assert_eq!((ack.kind(), &ack.body[..]), (4, &[0, 1, 0x90, 0][..]));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_cases_acks_expiry_windows_and_sizes() {
    let broker = start().await;
    let addr = broker.local_addr();
    // PUBREC for an id never sent: PUBREL 0x92.
    let mut raw = connected5(addr, "q2", &[]).await;
    raw.send(&ack_packet(0x50, 9)).await;
    let pubrel = raw.read().await.unwrap();
    assert_eq!((pubrel.byte1, &pubrel.body[..3]), (0x62, &[0, 9, 0x92][..]));
    // A QoS 1 PUBLISH and DISCONNECT 0x04 in one write: the PUBACK still comes.
    let mut body = vec![0, 5];
    body.extend_from_slice(b"lab/a");
    body.extend_from_slice(&[0, 3, 0, b'x']);
    let mut both = packet(0x32, &body);
    both.extend_from_slice(&[0xe0, 1, 0x04]);
    raw.send(&both).await;
    let ack = raw.read().await.unwrap();
    assert_eq!((ack.kind(), &ack.body[..2]), (4, &[0, 3][..]));

    // A refused change of expiry from 0 is not taken: no session is kept.
    let mut raw = connected5(addr, "zero", &[]).await;
    raw.send(&subscribe5(1, "lab/b")).await;
    assert_eq!(raw.read().await.unwrap().kind(), 9);
    raw.send(&[0xe0, 7, 0, 5, 0x11, 0, 0, 0, 99]).await;
    assert_eq!(disconnect_reason(&mut raw).await, 0x82);
    let mut again = Raw::open(addr).await;
    again.send(&connect5_full(0x00, 30, &[], "zero", &[])).await;
    let connack = again.read().await.unwrap();
    assert_eq!(&connack.body[..2], &[0, 0], "no session present");

    // Back with a smaller Receive Maximum: its in-flight messages a window at a time.
    let persistent =
        |receive: u8| connect5_full(0x00, 30, &[0x11, 0, 0, 1, 0, 0x21, 0, receive], "slow", &[]);
    let mut raw = Raw::open(addr).await;
    raw.send(&persistent(10)).await;
    assert_eq!(raw.read().await.unwrap().kind(), 2);
    let mut sub = vec![0, 1, 0, 0, 5];
    sub.extend_from_slice(b"lab/c/d");
    sub[4] = 7;
    sub.push(1);
    raw.send(&packet(0x82, &sub)).await;
    assert_eq!(raw.read().await.unwrap().kind(), 9);
    let p = Client::connect(options(addr, "pub")).await;
    for i in 0..5u8 {
        p.publish("lab/c/d", rumqttc::QoS::AtLeastOnce, false, &[b'0' + i])
            .await;
    }
    for _ in 0..5 {
        assert_eq!(raw.read().await.unwrap().kind(), 3); // not acknowledged
    }
    drop(raw);
    tokio::time::sleep(QUIET).await;
    let mut raw = Raw::open(addr).await;
    raw.send(&persistent(2)).await;
    assert_eq!(raw.read().await.unwrap().kind(), 2);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let m = raw.read().await.unwrap();
        assert!(m.dup(), "{m:?}");
        ids.push(u16::from_be_bytes([m.body[9], m.body[10]]));
    }
    assert!(
        raw.read_quiet().await.is_none(),
        "more than Receive Maximum in flight"
    );
    raw.send(&ack_packet(0x40, ids[0])).await;
    assert!(
        raw.read().await.unwrap().dup(),
        "the third, once there is room"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reason_strings_never_take_a_packet_past_the_client_s_maximum() {
    let broker = start().await;
    let addr = broker.local_addr();
    // Maximum Packet Size 10: PUBACK 0x90 comes without its words.
    let mut raw = connected5(addr, "tiny", &[0x27, 0, 0, 0, 10]).await;
    let mut body = vec![0, 7];
    body.extend_from_slice(b"nowhere");
    body.extend_from_slice(&[0, 1, 0, b'x']);
    raw.send(&packet(0x32, &body)).await;
    let ack = raw.read().await.unwrap();
    assert_eq!((ack.kind(), &ack.body[..]), (4, &[0, 1, 0x90, 0][..]));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waited_offline_is_held_to_the_maximum_packet_size_of_the_return() {
    let broker = start().await;
    let addr = broker.local_addr();
    let persistent = |max: Option<u8>| {
        let mut props = vec![0x11, 0, 0, 1, 0];
        if let Some(m) = max {
            props.extend_from_slice(&[0x27, 0, 0, 0, m]);
        }
        connect5_full(0x00, 30, &props, "later", &[])
    };
    let mut raw = Raw::open(addr).await;
    raw.send(&persistent(None)).await;
    assert_eq!(raw.read().await.unwrap().kind(), 2);
    let mut sub = vec![0, 1, 0, 0, 5];
    sub.extend_from_slice(b"lab/a");
    sub.push(1);
    raw.send(&packet(0x82, &sub)).await;
    assert_eq!(raw.read().await.unwrap().kind(), 9);
    drop(raw);
    tokio::time::sleep(QUIET).await;
    let p = Client::connect(options(addr, "pub")).await;
    p.publish("lab/a", rumqttc::QoS::AtLeastOnce, false, &[b'x'; 1000])
        .await;
    p.publish("lab/a", rumqttc::QoS::AtLeastOnce, false, b"small")
        .await;
    tokio::time::sleep(QUIET).await;
    // Back, taking packets of 100 bytes at most: the large one is dropped, the small comes.
    let mut raw = Raw::open(addr).await;
    raw.send(&persistent(Some(100))).await;
    assert_eq!(raw.read().await.unwrap().kind(), 2);
    let m = raw.read().await.unwrap();
    assert!(m.body.ends_with(b"small"), "{m:?}");
    broker.shutdown().await;
}
