//! The MQTT 5 packets after CONNECT (OASIS MQTT 5.0, chapter 3), both ways. Framing, the
//! fixed header's checks and CONNECT (whose level says which codec follows) are `codec`'s;
//! properties are `properties`'.
//!
//! Written by hand like the 3.1.1 side rather than through mqttbytes' `v5` module, which keeps
//! the last of a repeated property, reads properties past their length, takes a Subscription
//! Identifier from a client and does not check the subscription options' reserved bits.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codec::{
    DecodeError, ack_byte1, check_flags, malformed, parse_connect, protocol, read_string,
};
use super::properties::{self, put_string, put_varint, varint_len};
use super::protocol::{
    AckKind, ConnectCode, Dialect, Disconnect, MessageProps, Outgoing, Packet, Publish, QoS,
    Reason, SubOptions,
};
use super::topics;

/// The largest Subscription Identifier, a Variable Byte Integer (MQTT 5 section 3.8.2.1.2).
const MAX_SUBSCRIPTION_ID: u32 = 268_435_455;

/// One whole MQTT 5 packet from a client (`frame` starts with its fixed header).
pub fn decode_frame(byte1: u8, header_len: usize, frame: Bytes) -> Result<Packet, DecodeError> {
    check_flags(byte1)?;
    let kind = byte1 >> 4;
    let mut b = frame.slice(header_len..);
    let packet = match kind {
        1 => return parse_connect(b).map(Packet::Connect),
        3 => Packet::Publish(publish(byte1, &mut b)?),
        4..=7 => ack(kind, &mut b)?,
        8 => subscribe(&mut b)?,
        10 => unsubscribe(&mut b)?,
        12 => Packet::PingReq,
        14 => disconnect(&mut b)?,
        15 => auth(&mut b)?,
        2 | 9 | 11 | 13 => {
            return Err(malformed(format!(
                "packet type {kind} is sent by servers, not clients"
            )));
        }
        _ => return Err(malformed(format!("packet type {kind} does not exist"))),
    };
    if !b.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the end of a packet of type {kind}",
            b.len()
        )));
    }
    Ok(packet)
}

fn pkid(b: &mut Bytes, what: &str) -> Result<u16, DecodeError> {
    if b.len() < 2 {
        return Err(malformed(format!("{what} without a packet id")));
    }
    match b.get_u16() {
        0 => Err(malformed("packet id 0")),
        id => Ok(id),
    }
}

fn publish(byte1: u8, b: &mut Bytes) -> Result<Publish, DecodeError> {
    let dup = byte1 & 0x08 != 0;
    let retain = byte1 & 0x01 != 0;
    let qos = QoS::from_bits((byte1 >> 1) & 0x03).ok_or_else(|| malformed("PUBLISH QoS 3"))?;
    if dup && qos == QoS::AtMostOnce {
        return Err(malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = read_string(b, "the PUBLISH topic")?;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        pkid(b, "PUBLISH")?
    };
    let props = properties::read(b, properties::PUBLISH, "PUBLISH")?;
    let alias = props.topic_alias.unwrap_or(0);
    // An empty topic stands for the one its alias was set to (the connection knows it).
    if topic.is_empty() && alias == 0 {
        return Err(protocol("PUBLISH with neither a topic nor a Topic Alias"));
    }
    if !topic.is_empty() {
        topics::validate_name(&topic).map_err(|e| malformed(format!("PUBLISH topic {e}")))?;
    }
    let payload = b.split_off(0);
    if props.payload_format == Some(1) && std::str::from_utf8(&payload).is_err() {
        return Err(DecodeError::WithReason(
            Reason::PAYLOAD_FORMAT_INVALID,
            "the PUBLISH says its payload is UTF-8, and it is not".into(),
        ));
    }
    Ok(Publish {
        topic,
        payload,
        qos,
        pkid,
        retain,
        dup,
        props: props.into_message(),
        alias,
    })
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: the packet id, then (if the packet is longer) a reason
/// code, then (if longer still) properties.
fn ack(kind: u8, b: &mut Bytes) -> Result<Packet, DecodeError> {
    let name = ["PUBACK", "PUBREC", "PUBREL", "PUBCOMP"][(kind - 4) as usize];
    let id = pkid(b, name)?;
    let reason = if b.is_empty() {
        Reason::SUCCESS
    } else {
        Reason(b.get_u8())
    };
    if !b.is_empty() {
        properties::read(b, properties::ACK, name)?;
    }
    // The codes each may carry (MQTT 5 sections 3.4.2.1 to 3.7.2.1).
    let valid = match kind {
        4 | 5 => matches!(
            reason.0,
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ),
        _ => matches!(reason.0, 0x00 | 0x92),
    };
    if !valid {
        return Err(protocol(format!(
            "{name} with reason code {:#04x}",
            reason.0
        )));
    }
    Ok(match kind {
        4 => Packet::PubAck(id),
        5 if reason.is_error() => Packet::PubRecRefused(id, reason),
        5 => Packet::PubRec(id),
        6 => Packet::PubRel(id),
        _ => Packet::PubComp(id),
    })
}

fn subscribe(b: &mut Bytes) -> Result<Packet, DecodeError> {
    let pkid = pkid(b, "SUBSCRIBE")?;
    let props = properties::read(b, properties::SUBSCRIBE, "SUBSCRIBE")?;
    if props.subscription_ids.len() > 1 {
        return Err(protocol("SUBSCRIBE carries Subscription Identifier twice"));
    }
    let id = props.subscription_ids.first().copied().unwrap_or(0);
    if id > MAX_SUBSCRIPTION_ID {
        return Err(malformed(format!("Subscription Identifier {id}")));
    }
    let mut filters = Vec::new();
    while !b.is_empty() {
        let filter = read_string(b, "a SUBSCRIBE topic filter")?;
        if b.is_empty() {
            return Err(malformed("SUBSCRIBE topic filter without its options"));
        }
        let options = b.get_u8();
        if options & 0b1100_0000 != 0 {
            return Err(malformed(format!(
                "SUBSCRIBE options {options:#010b} use reserved bits"
            )));
        }
        let qos = QoS::from_bits(options & 0x03).ok_or_else(|| malformed("SUBSCRIBE QoS 3"))?;
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(protocol("SUBSCRIBE Retain Handling 3"));
        }
        let no_local = options & 0x04 != 0;
        if no_local && filter.starts_with("$share/") {
            return Err(protocol(format!(
                "No Local on the shared subscription {filter:?}"
            )));
        }
        filters.push((
            filter,
            SubOptions {
                qos,
                no_local,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
                id,
            },
        ));
    }
    if filters.is_empty() {
        return Err(protocol("SUBSCRIBE with no topic filter"));
    }
    Ok(Packet::Subscribe { pkid, filters })
}

fn unsubscribe(b: &mut Bytes) -> Result<Packet, DecodeError> {
    let pkid = pkid(b, "UNSUBSCRIBE")?;
    properties::read(b, properties::UNSUBSCRIBE, "UNSUBSCRIBE")?;
    let mut filters = Vec::new();
    while !b.is_empty() {
        filters.push(read_string(b, "an UNSUBSCRIBE topic filter")?);
    }
    if filters.is_empty() {
        return Err(protocol("UNSUBSCRIBE with no topic filter"));
    }
    Ok(Packet::Unsubscribe { pkid, filters })
}

fn disconnect(b: &mut Bytes) -> Result<Packet, DecodeError> {
    let reason = if b.is_empty() {
        Reason::SUCCESS
    } else {
        Reason(b.get_u8())
    };
    let mut d = Disconnect {
        reason,
        session_expiry: None,
    };
    if !b.is_empty() {
        let props = properties::read(b, properties::DISCONNECT, "DISCONNECT")?;
        if props.server_reference.is_some() {
            return Err(protocol("a Server Reference is the server's to send"));
        }
        d.session_expiry = props.session_expiry;
    }
    Ok(Packet::Disconnect(d))
}

fn auth(b: &mut Bytes) -> Result<Packet, DecodeError> {
    let reason = if b.is_empty() {
        Reason::SUCCESS
    } else {
        Reason(b.get_u8())
    };
    if !b.is_empty() {
        properties::read(b, properties::AUTH, "AUTH")?;
    }
    Ok(Packet::Auth(reason))
}

// ---- writing ------------------------------------------------------------------------------

/// The CONNACK reason for a 3.1.1 return code (table 3.1 to MQTT 5's 3.2.2.2).
pub fn connack_reason(code: ConnectCode) -> Reason {
    match code {
        ConnectCode::Accepted => Reason::SUCCESS,
        ConnectCode::UnacceptableProtocol => Reason::UNSUPPORTED_PROTOCOL_VERSION,
        ConnectCode::IdentifierRejected => Reason::CLIENT_ID_NOT_VALID,
        ConnectCode::ServerUnavailable => Reason::SERVER_BUSY,
        ConnectCode::BadCredentials => Reason::BAD_USER_NAME_OR_PASSWORD,
        ConnectCode::NotAuthorized => Reason::NOT_AUTHORIZED,
        ConnectCode::BadAuthMethod => Reason::BAD_AUTHENTICATION_METHOD,
    }
}

/// What a refusal means on this broker, in words for a student reading the packet: the
/// Reason String sent with it (unless the client asked for none).
pub fn explain(reason: Reason) -> Option<&'static str> {
    Some(match reason {
        Reason::TOPIC_NAME_INVALID => "the topic is not on this broker's topic list",
        Reason::TOPIC_FILTER_INVALID => {
            "not a valid topic filter, or no topic on this broker's topic list matches it"
        }
        Reason::NOT_AUTHORIZED => "this user's rules do not allow that topic",
        Reason::NO_MATCHING_SUBSCRIBERS => "delivered to no one: no subscriber matches",
        Reason::NO_SUBSCRIPTION_EXISTED => "there was no such subscription",
        Reason::SESSION_TAKEN_OVER => "another connection logged in with this client id",
        Reason::ADMINISTRATIVE_ACTION => "kicked from the broker's window",
        Reason::KEEP_ALIVE_TIMEOUT => "nothing heard from the client for 1.5 x its keep alive",
        Reason::SERVER_SHUTTING_DOWN => "the broker is stopping",
        Reason::QUOTA_EXCEEDED => "the client read too slowly and its queue overflowed",
        Reason::BAD_AUTHENTICATION_METHOD => {
            "this broker offers no enhanced authentication (user name and password only)"
        }
        _ => return None,
    })
}

/// The Reason String property of `text`, or nothing.
fn reason_string_len(text: Option<&str>) -> usize {
    text.map_or(0, |t| 1 + 2 + t.len())
}

fn put_reason_string(buf: &mut BytesMut, text: Option<&str>) {
    if let Some(t) = text {
        buf.put_u8(properties::REASON_STRING);
        put_string(buf, t);
    }
}

/// The whole size of a packet whose remaining length is `rest` plus a property block of
/// `props` bytes.
fn packet_len(rest: usize, props: usize) -> usize {
    let remaining = rest + varint_len(props) + props;
    1 + varint_len(remaining) + remaining
}

/// Appends a packet for an MQTT 5 client.
pub fn encode(buf: &mut BytesMut, packet: Outgoing<'_>, dialect: Dialect) {
    // Reason strings on CONNACK and DISCONNECT always; elsewhere only if the client wants them.
    let text = |r: Reason, always: bool| explain(r).filter(|_| always || dialect.problem_info);
    // ... and never one that would take the packet past what the client takes (`rest`: the
    // remaining length beside the properties; `other`: the other properties' bytes).
    let fits = |t: Option<&'static str>, rest: usize, other: usize| {
        t.filter(|t| {
            packet_len(rest, other + reason_string_len(Some(t))) <= dialect.max_packet as usize
        })
    };
    match packet {
        Outgoing::ConnAck {
            session_present,
            code,
            v5,
        } => {
            let reason = connack_reason(code);
            let mut props = BytesMut::new();
            if let Some(v5) = v5 {
                if let Some(id) = v5.assigned_id {
                    props.put_u8(properties::ASSIGNED_CLIENT_ID);
                    put_string(&mut props, id);
                }
                props.put_u8(properties::MAXIMUM_PACKET_SIZE);
                props.put_u32(v5.max_packet_size);
                props.put_u8(properties::TOPIC_ALIAS_MAXIMUM);
                props.put_u16(v5.topic_alias_maximum);
            }
            let why = fits(text(reason, true), 2, props.len());
            put_reason_string(&mut props, why);
            buf.put_u8(0x20);
            put_varint(buf, 2 + varint_len(props.len()) + props.len());
            buf.put_slice(&[session_present as u8, reason.0]);
            put_varint(buf, props.len());
            buf.put_slice(&props);
        }
        Outgoing::Publish {
            topic,
            payload,
            qos,
            pkid,
            retain,
            dup,
            props,
            alias,
            alias_only,
            sub_ids,
        } => {
            let topic = if alias_only { "" } else { topic };
            let extra = Extra { alias, sub_ids };
            publish_out(buf, topic, payload, qos, pkid, retain, dup, props, extra)
        }
        Outgoing::PubAck(id) => ack_out(buf, AckKind::PubAck, id, Reason::SUCCESS, None),
        Outgoing::PubRec(id) => ack_out(buf, AckKind::PubRec, id, Reason::SUCCESS, None),
        Outgoing::PubRel(id) => ack_out(buf, AckKind::PubRel, id, Reason::SUCCESS, None),
        Outgoing::PubComp(id) => ack_out(buf, AckKind::PubComp, id, Reason::SUCCESS, None),
        Outgoing::AckWith { kind, pkid, reason } => {
            ack_out(buf, kind, pkid, reason, fits(text(reason, false), 3, 0))
        }
        Outgoing::SubAck { pkid, codes } => {
            // One Reason String for the packet: the first refusal's.
            let why = codes.iter().find_map(|c| match c {
                super::protocol::SubscribeCode::Refused(r) => text(*r, false),
                _ => None,
            });
            let why = fits(why, 2 + codes.len(), 0);
            let props_len = reason_string_len(why);
            buf.put_u8(0x90);
            put_varint(buf, 2 + varint_len(props_len) + props_len + codes.len());
            buf.put_u16(pkid);
            put_varint(buf, props_len);
            put_reason_string(buf, why);
            buf.extend(codes.iter().map(|c| c.byte(dialect.level)));
        }
        Outgoing::UnsubAck { pkid, codes } => {
            buf.put_u8(0xb0);
            put_varint(buf, 3 + codes.len());
            buf.put_u16(pkid);
            buf.put_u8(0);
            buf.extend(codes.iter().map(|r| r.0));
        }
        Outgoing::PingResp => buf.put_slice(&[0xd0, 0]),
        Outgoing::Disconnect(reason) => {
            let why = fits(text(reason, true), 1, 0);
            let props_len = reason_string_len(why);
            buf.put_u8(0xe0);
            put_varint(buf, 1 + varint_len(props_len) + props_len);
            buf.put_u8(reason.0);
            put_varint(buf, props_len);
            put_reason_string(buf, why);
        }
    }
}

fn ack_out(buf: &mut BytesMut, kind: AckKind, pkid: u16, reason: Reason, text: Option<&str>) {
    buf.put_u8(ack_byte1(kind));
    if reason == Reason::SUCCESS && text.is_none() {
        // The short form: success, no properties (MQTT 5 section 3.4.2.1).
        buf.put_u8(2);
        buf.put_u16(pkid);
        return;
    }
    let props_len = reason_string_len(text);
    put_varint(buf, 3 + varint_len(props_len) + props_len);
    buf.put_u16(pkid);
    buf.put_u8(reason.0);
    put_varint(buf, props_len);
    put_reason_string(buf, text);
}

#[allow(clippy::too_many_arguments)]
fn publish_out(
    buf: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    retain: bool,
    dup: bool,
    props: Option<&MessageProps>,
    extra: Extra<'_>,
) {
    debug_assert!(qos == QoS::AtMostOnce || pkid != 0);
    let Extra { alias, sub_ids } = extra;
    // The time left, never 0: a message that ran out is dropped before it gets here, and one
    // that runs out on the way is still sent as the last second of its life.
    let expiry_left = props
        .and_then(|p| p.expiry)
        .map(|e| e.left(std::time::Instant::now()).unwrap_or(1));
    let alias_len = if alias != 0 { 3 } else { 0 };
    let props_len = props.map_or(0, |p| properties::message_len(p, expiry_left))
        + alias_len
        + properties::ids_len(sub_ids);
    buf.put_u8(0x30 | (dup as u8) << 3 | (qos as u8) << 1 | retain as u8);
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + varint_len(props_len) + props_len + payload.len();
    buf.reserve(5 + remaining);
    put_varint(buf, remaining);
    put_string(buf, topic);
    if id_len != 0 {
        buf.put_u16(pkid);
    }
    put_varint(buf, props_len);
    if alias != 0 {
        buf.put_u8(properties::TOPIC_ALIAS);
        buf.put_u16(alias);
    }
    if let Some(p) = props {
        properties::put_message(buf, p, expiry_left);
    }
    properties::put_ids(buf, sub_ids);
    buf.put_slice(payload);
}

/// What a PUBLISH carries for one connection beside the message's own properties.
struct Extra<'a> {
    alias: u16,
    sub_ids: &'a [u32],
}

/// The bytes a PUBLISH of this message takes for an MQTT 5 client, whole, without a topic
/// alias: what a client's Maximum Packet Size is held against.
pub fn publish_len(
    topic: &str,
    payload: usize,
    qos: QoS,
    props: Option<&MessageProps>,
    sub_ids: &[u32],
) -> usize {
    publish_len_aliased(topic, payload, qos, props, sub_ids, false)
}

/// `publish_len` as sent: `topic` is what goes on the wire (empty when the client has the
/// alias), with a Topic Alias property when `alias`.
pub fn publish_len_aliased(
    topic: &str,
    payload: usize,
    qos: QoS,
    props: Option<&MessageProps>,
    sub_ids: &[u32],
    alias: bool,
) -> usize {
    let expiry = props.and_then(|p| p.expiry).map(|_| 0);
    let props_len = props.map_or(0, |p| properties::message_len(p, expiry))
        + properties::ids_len(sub_ids)
        + if alias { 3 } else { 0 };
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + varint_len(props_len) + props_len + payload;
    1 + varint_len(remaining) + remaining
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::codec::decode_as;

    fn decode5(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        decode_as(&mut buf, 1 << 20, 5)
    }

    #[test]
    fn acks_come_short_and_long() {
        assert_eq!(decode5(&[0x40, 2, 0, 7]).unwrap(), Some(Packet::PubAck(7)));
        assert_eq!(
            decode5(&[0x40, 3, 0, 7, 0x10]).unwrap(),
            Some(Packet::PubAck(7))
        );
        assert_eq!(
            decode5(&[0x40, 4, 0, 7, 0, 0]).unwrap(),
            Some(Packet::PubAck(7))
        );
        assert_eq!(
            decode5(&[0x50, 3, 0, 7, 0x80]).unwrap(),
            Some(Packet::PubRecRefused(7, Reason::UNSPECIFIED))
        );
        // A code PUBREL may not carry.
        assert!(matches!(
            decode5(&[0x62, 3, 0, 7, 0x10]),
            Err(DecodeError::Protocol(_))
        ));
        // Bytes after the properties.
        assert!(matches!(
            decode5(&[0x40, 5, 0, 7, 0, 0, 9]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn subscribe_options_are_read_and_checked() {
        let packet = |filter: &[u8], options: u8| {
            let mut v = vec![0x82, (2 + 1 + 2 + filter.len() + 1) as u8, 0, 1, 0, 0];
            v.push(filter.len() as u8);
            v.extend_from_slice(filter);
            v.push(options);
            decode5(&v)
        };
        let Some(Packet::Subscribe { filters, .. }) = packet(b"a/b", 0b0010_1101).unwrap() else {
            panic!()
        };
        assert_eq!(
            filters[0].1,
            SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
                id: 0
            }
        );
        assert!(matches!(packet(b"a", 0x40), Err(DecodeError::Malformed(_))));
        assert!(matches!(packet(b"a", 0x30), Err(DecodeError::Protocol(_))));
        assert!(matches!(packet(b"a", 0x03), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            packet(b"$share/g/a", 0x04),
            Err(DecodeError::Protocol(_))
        ));
        // A Subscription Identifier goes with each filter; 0 is a Protocol Error.
        let Some(Packet::Subscribe { filters, .. }) =
            decode5(&[0x82, 9, 0, 1, 2, 0x0B, 7, 0, 1, b'a', 0]).unwrap()
        else {
            panic!()
        };
        assert_eq!(filters[0].1.id, 7);
        assert!(matches!(
            decode5(&[0x82, 9, 0, 1, 2, 0x0B, 0, 0, 1, b'a', 0]),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn publish_with_properties_round_trips() {
        let props = MessageProps {
            content_type: Some("application/json".into()),
            user: vec![("unit".into(), "C".into())],
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        encode(
            &mut buf,
            Outgoing::Publish {
                topic: "lab/t",
                payload: b"21.5",
                qos: QoS::AtLeastOnce,
                pkid: 3,
                retain: false,
                dup: false,
                props: Some(&props),
                alias: 0,
                alias_only: false,
                sub_ids: &[],
            },
            Dialect {
                level: 5,
                problem_info: true,
                max_alias: 10,
                max_packet: u32::MAX,
            },
        );
        let Some(Packet::Publish(p)) = decode_as(&mut buf, 1 << 20, 5).unwrap() else {
            panic!()
        };
        assert_eq!(p.topic, "lab/t");
        assert_eq!(&p.payload[..], b"21.5");
        assert_eq!(p.pkid, 3);
        assert_eq!(p.props.as_deref(), Some(&props));
    }

    #[test]
    fn publish_faults_name_their_reason() {
        // Topic Alias 0.
        let r = decode5(&[0x30, 7, 0, 1, b'a', 3, 0x23, 0, 0]);
        assert!(matches!(
            r,
            Err(DecodeError::WithReason(Reason::TOPIC_ALIAS_INVALID, _))
        ));
        // An empty topic with an alias is the connection's to resolve; without, malformed.
        let Some(Packet::Publish(p)) = decode5(&[0x30, 6, 0, 0, 3, 0x23, 0, 2]).unwrap() else {
            panic!()
        };
        assert_eq!((p.topic.as_str(), p.alias), ("", 2));
        assert!(matches!(
            decode5(&[0x30, 3, 0, 0, 0]),
            Err(DecodeError::Protocol(_))
        ));
        // Says UTF-8, is not.
        let r = decode5(&[0x30, 7, 0, 1, b'a', 2, 0x01, 1, 0xff]);
        assert!(matches!(
            r,
            Err(DecodeError::WithReason(Reason::PAYLOAD_FORMAT_INVALID, _))
        ));
        // A property length past the packet.
        assert!(matches!(
            decode5(&[0x30, 4, 0, 1, b'a', 9]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn disconnect_carries_reason_and_expiry() {
        assert_eq!(
            decode5(&[0xe0, 0]).unwrap(),
            Some(Packet::Disconnect(Disconnect::default()))
        );
        assert_eq!(
            decode5(&[0xe0, 7, 0x04, 5, 0x11, 0, 0, 0, 9]).unwrap(),
            Some(Packet::Disconnect(Disconnect {
                reason: Reason::DISCONNECT_WITH_WILL,
                session_expiry: Some(9)
            }))
        );
    }

    #[test]
    fn the_size_of_a_publish_is_known_exactly_before_it_is_written() {
        // Around the lengths where a length field grows by a byte.
        for topic_len in [1usize, 3, 100, 120, 125] {
            for payload in [0usize, 1, 100, 16_240, 16_260, 2_097_000] {
                for (alias, alias_only) in [(0u16, false), (7, false), (7, true)] {
                    let topic = "t".repeat(topic_len);
                    let props = MessageProps {
                        user: vec![("k".into(), "v".repeat(120))],
                        ..Default::default()
                    };
                    let body = vec![0u8; payload];
                    let mut buf = BytesMut::new();
                    let d = Dialect {
                        level: 5,
                        problem_info: true,
                        max_alias: 10,
                        max_packet: u32::MAX,
                    };
                    encode(
                        &mut buf,
                        Outgoing::Publish {
                            topic: &topic,
                            payload: &body,
                            qos: QoS::AtLeastOnce,
                            pkid: 1,
                            retain: false,
                            dup: false,
                            props: Some(&props),
                            alias,
                            alias_only,
                            sub_ids: &[3],
                        },
                        d,
                    );
                    let sent = if alias_only { "" } else { topic.as_str() };
                    let expected = publish_len_aliased(
                        sent,
                        payload,
                        QoS::AtLeastOnce,
                        Some(&props),
                        &[3],
                        alias != 0,
                    );
                    assert_eq!(buf.len(), expected, "{topic_len} {payload} {alias}");
                }
            }
        }
    }

    #[test]
    fn server_packets_encode() {
        let d = Dialect {
            level: 5,
            problem_info: true,
            max_alias: 10,
            max_packet: u32::MAX,
        };
        let mut b = BytesMut::new();
        encode(&mut b, Outgoing::PubAck(5), d);
        assert_eq!(&b[..], &[0x40, 2, 0, 5]);
        b.clear();
        encode(
            &mut b,
            Outgoing::UnsubAck {
                pkid: 5,
                codes: &[Reason::SUCCESS, Reason::NO_SUBSCRIPTION_EXISTED],
            },
            d,
        );
        assert_eq!(&b[..], &[0xb0, 5, 0, 5, 0, 0x00, 0x11]);
        b.clear();
        let d_quiet = Dialect {
            level: 5,
            problem_info: false,
            max_alias: 10,
            max_packet: u32::MAX,
        };
        encode(
            &mut b,
            Outgoing::AckWith {
                kind: AckKind::PubAck,
                pkid: 5,
                reason: Reason::NOT_AUTHORIZED,
            },
            d_quiet,
        );
        assert_eq!(&b[..], &[0x40, 4, 0, 5, 0x87, 0]);
        b.clear();
        encode(
            &mut b,
            Outgoing::Disconnect(Reason::SESSION_TAKEN_OVER),
            d_quiet,
        );
        assert_eq!(b[0], 0xe0);
        assert_eq!(b[2], 0x8e);
        assert_eq!(b[4], properties::REASON_STRING);
    }
}
