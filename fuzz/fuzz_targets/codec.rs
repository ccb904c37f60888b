//! The MQTT codecs: the broker's (`broker::codec`) and the lab client's (`lab::wire`).
//!
//! Each input is used three ways:
//! 1. as bytes from a client, decoded packet after packet from one buffer as a connection does,
//!    with a large and a small maximum packet size, and again arriving one byte at a time: the
//!    packets must not depend on how the bytes were cut, and each one must be what the broker
//!    may accept (valid topic names, no packet id 0, ...). Twice: as MQTT 3.1.1 (`decode`), and
//!    as MQTT 5 (`decode_as(.., 5)`), whose PUBLISH, re-encoded for an MQTT 5 subscriber, must
//!    read back the same (but for the Message Expiry, which counts down);
//! 2. as bytes from a broker, through the lab client's decoder: no panic;
//! 3. as a list of packets (`arbitrary`): those the broker sends, encoded by the broker and
//!    decoded by the lab client, and those a client sends, encoded by the lab client and
//!    decoded by the broker. Each side must read back what the other wrote;
//! 4. as one MQTT-SN datagram (`sn::codec`): no panic, and what decodes re-encodes to the same.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use mqtt_lab::broker::codec::{self, DecodeError};
use mqtt_lab::broker::protocol::{
    Connect, ConnectCode, Dialect, Disconnect, MessageProps, Outgoing, Packet, Publish, QoS,
    Reason, SubOptions, SubscribeCode, Will,
};
use mqtt_lab::broker::sn::codec as sn;
use mqtt_lab::broker::topics;
use mqtt_lab::lab::wire::{self, ConnectFields, FromBroker};

/// The broker's default maximum packet size is far above anything a fuzz input holds.
const LARGE_MAX: usize = 1 << 20;
/// Small enough that many seeds are refused by it.
const SMALL_MAX: usize = 16;

/// How the broker writes to an MQTT 5 client that asked for reason strings.
const V5: Dialect = Dialect {
    level: 5,
    problem_info: true,
    max_alias: 10,
    max_packet: u32::MAX,
};

fuzz_target!(|data: &[u8]| {
    from_a_client(data, 4);
    from_a_client(data, 5);
    from_a_broker(data);
    mqtt_sn_datagram(data);
    let mut u = Unstructured::new(data);
    if let Ok(packets) = Vec::<ToClient>::arbitrary(&mut u) {
        broker_to_client(&packets);
    }
    if let Ok(packets) = Vec::<ToBroker>::arbitrary(&mut u) {
        client_to_broker(&packets);
    }
});

// ---- 1. bytes from a client -------------------------------------------------------------------

/// What one call of `codec::decode_as` gave.
#[derive(Debug, PartialEq)]
enum Step {
    /// A packet (its expiry instants made all the same, see `same_instants`), and how many
    /// bytes it took.
    Packet(Packet, usize),
    /// An error: the connection closes.
    Error(DecodeError),
    /// The bytes left, waiting for more.
    NeedMore(usize),
}

/// `level`: 4 decodes as `codec::decode` (MQTT 3.1.1, and every CONNECT), 5 as an MQTT 5
/// connection does after its CONNECT.
fn from_a_client(data: &[u8], level: u8) {
    let whole = decode_whole(data, LARGE_MAX, level);
    let bytewise = decode_bytewise(data, LARGE_MAX, level);
    assert_eq!(
        whole, bytewise,
        "the packets depend on how the bytes came in"
    );
    let small = decode_whole(data, SMALL_MAX, level);
    // With a small maximum: the same packets, up to one that is too large for it.
    for (i, step) in small.iter().enumerate() {
        match step {
            Step::Error(DecodeError::TooLarge { size, max }) => {
                assert_eq!(*max, SMALL_MAX);
                assert!(*size > SMALL_MAX);
                match &whole[i] {
                    Step::Packet(_, n) => assert_eq!(n, size),
                    // Refused on its header alone, before the rest arrived.
                    Step::Error(_) | Step::NeedMore(_) => {}
                }
            }
            Step::Packet(_, n) => {
                assert!(*n <= SMALL_MAX);
                assert_eq!(step, &whole[i]);
            }
            _ => assert_eq!(step, &whole[i]),
        }
    }
}

/// One call of the decoder of protocol `level`: `codec::decode` for 3.1.1 (what the broker
/// calls until a CONNECT says otherwise), `codec::decode_as` for MQTT 5.
fn decode(buf: &mut BytesMut, max: usize, level: u8) -> Result<Option<Packet>, DecodeError> {
    if level >= 5 {
        codec::decode_as(buf, max, level)
    } else {
        codec::decode(buf, max)
    }
}

/// The whole input in one read: packets until one is incomplete or an error.
fn decode_whole(data: &[u8], max: usize, level: u8) -> Vec<Step> {
    let mut buf = BytesMut::from(data);
    let mut steps = Vec::new();
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match decode(&mut buf, max, level) {
            Ok(Some(p)) => {
                let n = before - buf.len();
                assert!(n > 0, "a packet of no bytes");
                let frame = &data[consumed..consumed + n];
                if level >= 5 {
                    check_packet_v5(&p, frame, max);
                } else {
                    check_packet(&p, frame, max);
                }
                consumed += n;
                steps.push(Step::Packet(same_instants(p), n));
            }
            Ok(None) => {
                assert_eq!(&buf[..], &data[consumed..], "waiting must not consume");
                steps.push(Step::NeedMore(buf.len()));
                return steps;
            }
            Err(e) => {
                check_error(&e, max);
                steps.push(Step::Error(e));
                return steps;
            }
        }
    }
}

/// The input arriving one byte at a time, decoded after each as a connection does.
fn decode_bytewise(data: &[u8], max: usize, level: u8) -> Vec<Step> {
    let mut buf = BytesMut::new();
    let mut steps = Vec::new();
    for &b in data {
        buf.extend_from_slice(&[b]);
        loop {
            let before = buf.len();
            match decode(&mut buf, max, level) {
                Ok(Some(p)) => steps.push(Step::Packet(same_instants(p), before - buf.len())),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "waiting must not consume");
                    break;
                }
                Err(e) => {
                    steps.push(Step::Error(e));
                    return steps;
                }
            }
        }
    }
    steps.push(Step::NeedMore(buf.len()));
    steps
}

/// Every expiry instant in `p` made the same, so that packets decoded at different moments
/// compare equal when they came from the same bytes (an `Expiry` starts when it is decoded).
fn same_instants(mut p: Packet) -> Packet {
    static BASE: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    let props = match &mut p {
        Packet::Publish(p) => p.props.as_deref_mut(),
        Packet::Connect(c) => c.will.as_mut().and_then(|w| w.props.as_deref_mut()),
        _ => None,
    };
    if let Some(e) = props.and_then(|m| m.expiry.as_mut()) {
        e.from = *BASE;
    }
    p
}

fn check_error(e: &DecodeError, max: usize) {
    match e {
        DecodeError::TooLarge { size, max: m } => assert!(*m == max && *size > max),
        DecodeError::UnsupportedLevel(_) => {}
        DecodeError::Malformed(why) | DecodeError::Protocol(why) => assert!(!why.is_empty()),
        DecodeError::WithReason(reason, why) => {
            assert!(reason.is_error(), "{reason}");
            assert!(!why.is_empty());
        }
    }
    // What an MQTT 5 client is told in the DISCONNECT that closes the connection.
    assert!(e.reason().is_error(), "{e:?}");
}

/// The frame's fixed header (which may write the remaining length in more bytes than needed:
/// MQTT 3.1.1 does not forbid it) and the remaining length it declares, which must be the rest
/// of the frame. Returns the remaining length.
fn check_frame(frame: &[u8], max: usize) -> usize {
    assert!(
        frame.len() <= max,
        "{} bytes over the maximum {max}",
        frame.len()
    );
    let header_len = 1 + frame[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    assert!(header_len <= 5);
    let remaining = frame[1..header_len]
        .iter()
        .rev()
        .fold(0usize, |n, b| n << 7 | usize::from(b & 0x7f));
    assert_eq!(header_len + remaining, frame.len());
    remaining
}

fn no_null(s: &str) {
    assert!(!s.contains('\0'), "{s:?}");
}

/// What every CONNECT the broker accepted must be, whichever decoder read it (CONNECT is the
/// same code in both, and carries its own level).
fn check_connect(c: &Connect) {
    assert!((3..=5).contains(&c.level), "level {}", c.level);
    assert_eq!(c.v5.is_some(), c.level == 5, "{c:?}");
    no_null(&c.client_id);
    if let Some(w) = &c.will {
        assert_eq!(
            topics::validate_name(&w.topic),
            Ok(()),
            "will {:?}",
            w.topic
        );
        if c.level < 5 {
            assert!(w.props.is_none() && w.delay == 0, "{w:?}");
        }
        if let Some(m) = &w.props {
            check_message_props(m, &w.payload);
        }
    }
    if let Some(u) = &c.username {
        no_null(u);
    }
    // MQTT 5 allows a password without a user name.
    if c.level < 5 {
        assert!(c.password.is_none() || c.username.is_some());
    }
}

/// Message properties as decoded: only there when there is one.
fn check_message_props(m: &MessageProps, payload: &[u8]) {
    assert_ne!(m, &MessageProps::default(), "empty properties are None");
    if m.payload_utf8 {
        assert!(std::str::from_utf8(payload).is_ok());
    }
    if let Some(t) = &m.response_topic {
        assert_eq!(topics::validate_name(t), Ok(()), "response topic {t:?}");
    }
}

fn check_publish_fields(p: &Publish) {
    // MQTT 5: an empty topic with a Topic Alias is the connection's to resolve.
    if !(p.topic.is_empty() && p.alias != 0) {
        assert_eq!(topics::validate_name(&p.topic), Ok(()), "{:?}", p.topic);
    }
    if p.qos == QoS::AtMostOnce {
        assert!(p.pkid == 0 && !p.dup);
    } else {
        assert_ne!(p.pkid, 0);
    }
}

/// What a packet the broker accepted must be. `frame` is the bytes it came from.
fn check_packet(p: &Packet, frame: &[u8], max: usize) {
    let remaining = check_frame(frame, max);
    match p {
        Packet::Connect(c) => {
            check_connect(c);
            // The lab client writes MQTT 3.1 and 3.1.1 only.
            if c.level < 5 {
                connect_round_trip(c);
            }
        }
        Packet::Publish(p) => {
            check_publish_fields(p);
            assert!(p.props.is_none(), "3.1.1 has no properties");
            // The broker forwards it as it came: the lab client reads the same, from the bytes
            // the client sent and from the broker's own encoding of it.
            let expected = from_broker_publish(p);
            let mut original = BytesMut::from(frame);
            assert_eq!(wire::decode(&mut original), Ok(Some(expected.clone())));
            assert!(original.is_empty());
            let mut ours = BytesMut::new();
            codec::encode(&mut ours, outgoing_publish(p));
            let mut copy = ours.clone();
            assert_eq!(wire::decode(&mut ours), Ok(Some(expected)));
            assert!(ours.is_empty());
            let again = codec::decode(&mut copy, LARGE_MAX);
            assert_eq!(again, Ok(Some(Packet::Publish(p.clone()))));
        }
        Packet::PubAck(id) | Packet::PubRec(id) | Packet::PubRel(id) | Packet::PubComp(id) => {
            assert_ne!(*id, 0);
            assert_eq!(remaining, 2);
            let mut out = Vec::new();
            wire::ack(&mut out, frame[0], *id);
            client_round_trip(&out, p);
        }
        Packet::Subscribe { pkid, filters } => {
            assert_ne!(*pkid, 0);
            assert!(!filters.is_empty());
            for (f, o) in filters {
                no_null(f);
                // 3.1.1 asks for a QoS and nothing else.
                assert_eq!(*o, SubOptions::qos(o.qos));
            }
            // The lab client subscribes to one filter at a time.
            if let [(f, o)] = &filters[..] {
                let mut out = Vec::new();
                wire::subscribe(&mut out, *pkid, f, o.qos);
                client_round_trip(&out, p);
            }
        }
        Packet::Unsubscribe { pkid, filters } => {
            assert_ne!(*pkid, 0);
            assert!(!filters.is_empty());
            for f in filters {
                no_null(f);
            }
            if let [f] = &filters[..] {
                let mut out = Vec::new();
                wire::unsubscribe(&mut out, *pkid, f);
                client_round_trip(&out, p);
            }
        }
        Packet::PingReq => assert_eq!(remaining, 0),
        Packet::Disconnect(d) => {
            assert_eq!(remaining, 0);
            // 3.1.1 gives no reason: always a normal disconnection.
            assert_eq!(*d, Disconnect::default());
        }
        Packet::PubRecRefused(..) | Packet::Auth(_) => {
            panic!("an MQTT 5 packet from the 3.1.1 decoder: {p:?}")
        }
    }
}

/// What a packet the broker accepted from an MQTT 5 client must be. `frame` is the bytes it
/// came from.
fn check_packet_v5(p: &Packet, frame: &[u8], max: usize) {
    let remaining = check_frame(frame, max);
    match p {
        Packet::Connect(c) => check_connect(c),
        Packet::Publish(p) => {
            check_publish_fields(p);
            if let Some(m) = &p.props {
                check_message_props(m, &p.payload);
            }
            publish_round_trip_v5(p);
        }
        Packet::PubAck(id) | Packet::PubRec(id) | Packet::PubRel(id) | Packet::PubComp(id) => {
            assert_ne!(*id, 0);
        }
        Packet::PubRecRefused(id, reason) => {
            assert_ne!(*id, 0);
            assert!(reason.is_error(), "{reason}");
        }
        Packet::Subscribe { pkid, filters } => {
            assert_ne!(*pkid, 0);
            assert!(!filters.is_empty());
            for (f, o) in filters {
                no_null(f);
                assert!(o.retain_handling <= 2, "{o:?}");
            }
        }
        Packet::Unsubscribe { pkid, filters } => {
            assert_ne!(*pkid, 0);
            assert!(!filters.is_empty());
            for f in filters {
                no_null(f);
            }
        }
        Packet::PingReq => assert_eq!(remaining, 0),
        Packet::Disconnect(_) | Packet::Auth(_) => {}
    }
}

/// A PUBLISH from an MQTT 5 client, forwarded by the broker to an MQTT 5 subscriber, reads
/// back the same: all of it but the Message Expiry, which is sent as the time left (at least
/// 1 second: one that runs out on the way is sent as the last second of its life).
fn publish_round_trip_v5(p: &Publish) {
    let mut buf = BytesMut::new();
    codec::encode_as(
        &mut buf,
        Outgoing::Publish {
            topic: &p.topic,
            payload: &p.payload,
            qos: p.qos,
            pkid: p.pkid,
            retain: p.retain,
            dup: p.dup,
            props: p.props.as_deref(),
            alias: p.alias,
            alias_only: false,
            sub_ids: &[],
        },
        V5,
    );
    let again = match codec::decode_as(&mut buf, usize::MAX, 5) {
        Ok(Some(Packet::Publish(again))) => again,
        other => panic!("{p:?} re-encoded for MQTT 5 reads back as {other:?}"),
    };
    assert!(buf.is_empty(), "{} bytes left after {again:?}", buf.len());
    assert_eq!(again.topic, p.topic);
    assert_eq!(again.payload, p.payload);
    assert_eq!(again.qos, p.qos);
    assert_eq!(again.pkid, p.pkid);
    assert_eq!(again.retain, p.retain);
    assert_eq!(again.dup, p.dup);
    assert_eq!(
        again.props.is_some(),
        p.props.is_some(),
        "{again:?} from {p:?}"
    );
    if let (Some(before), Some(after)) = (&p.props, &again.props) {
        match (before.expiry, after.expiry) {
            (None, None) => {}
            (Some(b), Some(a)) => assert!(
                1 <= a.secs && a.secs <= b.secs.max(1),
                "message expiry {} re-encoded as {}",
                b.secs,
                a.secs
            ),
            (b, a) => panic!("message expiry {b:?} re-encoded as {a:?}"),
        }
        let without_expiry = |m: &MessageProps| MessageProps {
            expiry: None,
            ..m.clone()
        };
        assert_eq!(without_expiry(after), without_expiry(before));
    }
}

/// What the lab client wrote is read by the broker as `expected`, to the last byte.
fn client_round_trip(out: &[u8], expected: &Packet) {
    let mut buf = BytesMut::from(out);
    assert_eq!(
        codec::decode(&mut buf, LARGE_MAX),
        Ok(Some(expected.clone()))
    );
    assert!(buf.is_empty());
}

/// A CONNECT written again by the lab client decodes to the same (when its password is text,
/// which is all the lab client sends).
fn connect_round_trip(c: &Connect) {
    let password = match &c.password {
        Some(p) => match std::str::from_utf8(p) {
            Ok(p) => Some(p),
            Err(_) => return,
        },
        None => None,
    };
    let mut out = Vec::new();
    wire::connect(
        &mut out,
        &ConnectFields {
            level: c.level,
            client_id: &c.client_id,
            clean_session: c.clean_session,
            keep_alive: c.keep_alive,
            username: c.username.as_deref(),
            password,
            will: c
                .will
                .as_ref()
                .map(|w| (w.topic.as_str(), &w.payload[..], w.qos, w.retain)),
        },
    );
    client_round_trip(&out, &Packet::Connect(c.clone()));
}

fn outgoing_publish(p: &Publish) -> Outgoing<'_> {
    Outgoing::Publish {
        topic: &p.topic,
        payload: &p.payload,
        qos: p.qos,
        pkid: p.pkid,
        retain: p.retain,
        dup: p.dup,
        props: p.props.as_deref(),
        alias: 0,
        alias_only: false,
        sub_ids: &[],
    }
}

fn from_broker_publish(p: &Publish) -> FromBroker {
    FromBroker::Publish {
        topic: p.topic.clone(),
        payload: p.payload.clone(),
        qos: p.qos,
        pkid: p.pkid,
        retain: p.retain,
        dup: p.dup,
    }
}

// ---- 2. bytes from a broker -------------------------------------------------------------------

/// Each packet the lab client reads, when it is one the broker may send, is read the same from
/// the broker's own encoding of it.
fn from_a_broker(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match wire::decode(&mut buf) {
            Ok(Some(p)) => {
                assert!(buf.len() < before);
                broker_round_trip(&p);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return;
            }
            Err(_) => return,
        }
    }
}

fn broker_round_trip(p: &FromBroker) {
    let codes: Vec<SubscribeCode>;
    let out = match p {
        FromBroker::ConnAck {
            session_present,
            code,
        } if *code <= 5 => Outgoing::ConnAck {
            session_present: *session_present,
            code: connect_code(*code),
            v5: None,
        },
        FromBroker::Publish {
            topic,
            payload,
            qos,
            pkid,
            retain,
            dup,
        } if topics::validate_name(topic).is_ok() && (*qos == QoS::AtMostOnce || *pkid != 0) => {
            Outgoing::Publish {
                topic,
                payload,
                qos: *qos,
                pkid: *pkid,
                retain: *retain,
                dup: *dup,
                props: None,
                alias: 0,
                alias_only: false,
                sub_ids: &[],
            }
        }
        FromBroker::PubAck(id) => Outgoing::PubAck(*id),
        FromBroker::PubRec(id) => Outgoing::PubRec(*id),
        FromBroker::PubRel(id) => Outgoing::PubRel(*id),
        FromBroker::PubComp(id) => Outgoing::PubComp(*id),
        FromBroker::SubAck { pkid, codes: bytes } if bytes.iter().all(|&b| b <= 2 || b == 0x80) => {
            codes = bytes
                .iter()
                .map(|&b| match QoS::from_bits(b) {
                    Some(q) => SubscribeCode::Granted(q),
                    None => SubscribeCode::Refused(Reason::UNSPECIFIED),
                })
                .collect();
            Outgoing::SubAck {
                pkid: *pkid,
                codes: &codes,
            }
        }
        FromBroker::UnsubAck(id) => Outgoing::UnsubAck {
            pkid: *id,
            codes: &[],
        },
        FromBroker::PingResp => Outgoing::PingResp,
        _ => return,
    };
    let mut buf = BytesMut::new();
    codec::encode(&mut buf, out);
    assert_eq!(wire::decode(&mut buf), Ok(Some(p.clone())));
    assert!(buf.is_empty());
}

// ---- 3. packets written by one side, read by the other ----------------------------------------

/// Strings and binary fields on the wire have a 16-bit length: what the encoders are given.
fn fits(field: &[u8]) -> bool {
    field.len() <= usize::from(u16::MAX)
}

fn qos(bits: u8) -> QoS {
    QoS::from_bits(bits % 3).unwrap()
}

/// A packet the broker sends.
#[derive(Debug, Arbitrary)]
enum ToClient {
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        pkid: u16,
        retain: bool,
        dup: bool,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck {
        pkid: u16,
        /// None is a refusal (0x80).
        codes: Vec<Option<u8>>,
    },
    UnsubAck(u16),
    PingResp,
}

fn connect_code(code: u8) -> ConnectCode {
    match code % 6 {
        0 => ConnectCode::Accepted,
        1 => ConnectCode::UnacceptableProtocol,
        2 => ConnectCode::IdentifierRejected,
        3 => ConnectCode::ServerUnavailable,
        4 => ConnectCode::BadCredentials,
        _ => ConnectCode::NotAuthorized,
    }
}

/// Encoded by the broker one after the other into one buffer, read back by the lab client.
fn broker_to_client(packets: &[ToClient]) {
    let mut wire_buf = BytesMut::new();
    let mut expected = Vec::new();
    for p in packets {
        let codes: Vec<SubscribeCode>;
        let (out, from) = match p {
            ToClient::ConnAck {
                session_present,
                code,
            } => {
                let code = connect_code(*code);
                (
                    Outgoing::ConnAck {
                        session_present: *session_present,
                        code,
                        v5: None,
                    },
                    FromBroker::ConnAck {
                        session_present: *session_present,
                        code: code as u8,
                    },
                )
            }
            ToClient::Publish {
                topic,
                payload,
                qos: q,
                pkid,
                retain,
                dup,
            } => {
                // What `encode` is promised: a valid topic name, and a packet id unless QoS 0.
                if topics::validate_name(topic).is_err() {
                    continue;
                }
                let qos = qos(*q);
                let pkid = match (qos, *pkid) {
                    (QoS::AtMostOnce, _) => 0,
                    (_, 0) => 1,
                    (_, id) => id,
                };
                (
                    Outgoing::Publish {
                        topic,
                        payload,
                        qos,
                        pkid,
                        retain: *retain,
                        dup: *dup,
                        props: None,
                        alias: 0,
                        alias_only: false,
                        sub_ids: &[],
                    },
                    FromBroker::Publish {
                        topic: topic.clone(),
                        payload: Bytes::copy_from_slice(payload),
                        qos,
                        pkid,
                        retain: *retain,
                        dup: *dup,
                    },
                )
            }
            ToClient::PubAck(id) => (Outgoing::PubAck(*id), FromBroker::PubAck(*id)),
            ToClient::PubRec(id) => (Outgoing::PubRec(*id), FromBroker::PubRec(*id)),
            ToClient::PubRel(id) => (Outgoing::PubRel(*id), FromBroker::PubRel(*id)),
            ToClient::PubComp(id) => (Outgoing::PubComp(*id), FromBroker::PubComp(*id)),
            ToClient::SubAck { pkid, codes: c } => {
                codes = c
                    .iter()
                    .map(|c| match c {
                        Some(q) => SubscribeCode::Granted(qos(*q)),
                        None => SubscribeCode::Refused(Reason::UNSPECIFIED),
                    })
                    .collect();
                let bytes = codes.iter().map(|c| c.byte(4)).collect();
                (
                    Outgoing::SubAck {
                        pkid: *pkid,
                        codes: &codes,
                    },
                    FromBroker::SubAck {
                        pkid: *pkid,
                        codes: bytes,
                    },
                )
            }
            ToClient::UnsubAck(id) => (
                Outgoing::UnsubAck {
                    pkid: *id,
                    codes: &[],
                },
                FromBroker::UnsubAck(*id),
            ),
            ToClient::PingResp => (Outgoing::PingResp, FromBroker::PingResp),
        };
        codec::encode(&mut wire_buf, out);
        // The packets both sides send: the broker reads back what it wrote.
        let mut own = BytesMut::new();
        codec::encode(&mut own, out);
        let own_packet = match out {
            Outgoing::Publish {
                topic,
                payload,
                qos,
                pkid,
                retain,
                dup,
                props: None,
                alias: 0,
                alias_only: false,
                sub_ids: &[],
            } if !(dup && qos == QoS::AtMostOnce) => Some(Packet::Publish(Publish {
                topic: topic.to_owned(),
                payload: Bytes::copy_from_slice(payload),
                qos,
                pkid,
                retain,
                dup,
                props: None,
                alias: 0,
            })),
            Outgoing::PubAck(id) if id != 0 => Some(Packet::PubAck(id)),
            Outgoing::PubRec(id) if id != 0 => Some(Packet::PubRec(id)),
            Outgoing::PubRel(id) if id != 0 => Some(Packet::PubRel(id)),
            Outgoing::PubComp(id) if id != 0 => Some(Packet::PubComp(id)),
            _ => None,
        };
        if let Some(packet) = own_packet {
            assert_eq!(codec::decode(&mut own, LARGE_MAX), Ok(Some(packet)));
            assert!(own.is_empty());
        }
        expected.push(from);
    }
    for from in expected {
        assert_eq!(wire::decode(&mut wire_buf), Ok(Some(from)));
    }
    assert_eq!(wire::decode(&mut wire_buf), Ok(None));
    assert!(wire_buf.is_empty());
}

/// A packet a client sends.
#[derive(Debug, Arbitrary)]
enum ToBroker {
    Connect {
        mqtt_3_1: bool,
        client_id: String,
        clean_session: bool,
        keep_alive: u16,
        username: Option<String>,
        password: Option<String>,
        will: Option<(String, Vec<u8>, u8, bool)>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        pkid: u16,
        retain: bool,
        dup: bool,
    },
    Subscribe {
        pkid: u16,
        filter: String,
        qos: u8,
    },
    Unsubscribe {
        pkid: u16,
        filter: String,
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP.
    Ack {
        kind: u8,
        pkid: u16,
    },
    PingReq,
    Disconnect,
}

/// Encoded by the lab client one after the other into one buffer, read by the broker up to the
/// first packet it must refuse (the connection would close there).
fn client_to_broker(packets: &[ToBroker]) {
    let mut out = Vec::new();
    // The packet the broker must read, or None where it must refuse it as malformed.
    let mut expected: Vec<Option<Packet>> = Vec::new();
    let text_ok = |s: &str| !s.contains('\0');
    for p in packets {
        let packet = match p {
            ToBroker::Connect {
                mqtt_3_1,
                client_id,
                clean_session,
                keep_alive,
                username,
                password,
                will,
            } => {
                let fields = [
                    client_id,
                    username.as_deref().unwrap_or(""),
                    password.as_deref().unwrap_or(""),
                ];
                if !fields.iter().all(|f| fits(f.as_bytes()))
                    || will
                        .as_ref()
                        .is_some_and(|(t, m, ..)| !fits(t.as_bytes()) || !fits(m))
                {
                    continue;
                }
                let level = if *mqtt_3_1 { 3 } else { 4 };
                let will = will
                    .as_ref()
                    .map(|(t, m, q, r)| (t.as_str(), &m[..], qos(*q), *r));
                wire::connect(
                    &mut out,
                    &ConnectFields {
                        level,
                        client_id,
                        clean_session: *clean_session,
                        keep_alive: *keep_alive,
                        username: username.as_deref(),
                        password: password.as_deref(),
                        will,
                    },
                );
                let valid = text_ok(client_id)
                    && username.as_deref().is_none_or(text_ok)
                    && will.is_none_or(|(t, ..)| topics::validate_name(t).is_ok());
                valid.then(|| {
                    Packet::Connect(Connect {
                        level,
                        keep_alive: *keep_alive,
                        client_id: client_id.clone(),
                        clean_session: *clean_session,
                        will: will.map(|(topic, payload, qos, retain)| Will {
                            topic: topic.to_owned(),
                            payload: Bytes::copy_from_slice(payload),
                            qos,
                            retain,
                            props: None,
                            delay: 0,
                        }),
                        username: username.clone(),
                        // The lab client sends a password only with a user name.
                        password: username
                            .as_ref()
                            .and(password.as_ref())
                            .map(|p| Bytes::copy_from_slice(p.as_bytes())),
                        v5: None,
                    })
                })
            }
            ToBroker::Publish {
                topic,
                payload,
                qos: q,
                pkid,
                retain,
                dup,
            } => {
                if !fits(topic.as_bytes()) {
                    continue;
                }
                let qos = qos(*q);
                wire::publish(&mut out, topic, payload, qos, *pkid, *retain, *dup);
                let valid = topics::validate_name(topic).is_ok()
                    && (qos == QoS::AtMostOnce && !dup || qos != QoS::AtMostOnce && *pkid != 0);
                valid.then(|| {
                    Packet::Publish(Publish {
                        topic: topic.clone(),
                        payload: Bytes::copy_from_slice(payload),
                        qos,
                        pkid: if qos == QoS::AtMostOnce { 0 } else { *pkid },
                        retain: *retain,
                        dup: *dup,
                        props: None,
                        alias: 0,
                    })
                })
            }
            ToBroker::Subscribe {
                pkid,
                filter,
                qos: q,
            } => {
                if !fits(filter.as_bytes()) {
                    continue;
                }
                wire::subscribe(&mut out, *pkid, filter, qos(*q));
                (*pkid != 0 && text_ok(filter)).then(|| Packet::Subscribe {
                    pkid: *pkid,
                    filters: vec![(filter.clone(), SubOptions::qos(qos(*q)))],
                })
            }
            ToBroker::Unsubscribe { pkid, filter } => {
                if !fits(filter.as_bytes()) {
                    continue;
                }
                wire::unsubscribe(&mut out, *pkid, filter);
                (*pkid != 0 && text_ok(filter)).then(|| Packet::Unsubscribe {
                    pkid: *pkid,
                    filters: vec![filter.clone()],
                })
            }
            ToBroker::Ack { kind, pkid } => {
                let (first, packet): (u8, fn(u16) -> Packet) = match kind % 4 {
                    0 => (0x40, Packet::PubAck),
                    1 => (0x50, Packet::PubRec),
                    2 => (0x62, Packet::PubRel),
                    _ => (0x70, Packet::PubComp),
                };
                wire::ack(&mut out, first, *pkid);
                (*pkid != 0).then(|| packet(*pkid))
            }
            ToBroker::PingReq => {
                wire::pingreq(&mut out);
                Some(Packet::PingReq)
            }
            ToBroker::Disconnect => {
                wire::disconnect(&mut out);
                Some(Packet::Disconnect(Disconnect::default()))
            }
        };
        expected.push(packet);
    }
    let mut buf = BytesMut::from(&out[..]);
    for packet in expected {
        let got = codec::decode(&mut buf, LARGE_MAX);
        match packet {
            Some(p) => assert_eq!(got, Ok(Some(p))),
            None => {
                assert!(matches!(got, Err(DecodeError::Malformed(_))), "{got:?}");
                return;
            }
        }
    }
    assert!(buf.is_empty());
}

/// Any bytes as one MQTT-SN datagram: no panic, and what decodes encodes to bytes that decode
/// to the same message (its length field the datagram's).
fn mqtt_sn_datagram(data: &[u8]) {
    if let Ok(msg) = sn::decode(data) {
        let again = sn::encode(&msg);
        let len = if again[0] == 0x01 {
            u16::from_be_bytes([again[1], again[2]]) as usize
        } else {
            again[0] as usize
        };
        assert_eq!(len, again.len(), "{msg:?}");
        assert_eq!(sn::decode(&again).as_ref(), Ok(&msg), "{again:02x?}");
    }
}
