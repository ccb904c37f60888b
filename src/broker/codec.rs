//! The MQTT 3.1/3.1.1 wire format, as a server sees it.
//!
//! Decoding of PUBLISH, SUBSCRIBE, UNSUBSCRIBE and the acknowledgements is done by `mqttbytes`
//! (v4); this module frames packets itself and adds the checks a server must make that mqttbytes
//! leaves out: reserved fixed-header flags, empty SUBSCRIBE/UNSUBSCRIBE, reserved option bits,
//! wildcards or U+0000 in a PUBLISH topic, packet id 0, packets only a server may send. CONNECT is
//! parsed here in full, because mqttbytes refuses MQTT 3.1 (`MQIsdp`), accepts level 5 without
//! reading its properties, ignores the reserved flag and cannot carry a binary password.
//!
//! Outbound packets are encoded here by hand (`encode`): they are few and simple, and a PUBLISH
//! is written from a shared topic and payload straight into the connection's write buffer.
//!
//! In and out, packets are the broker's own types (`protocol`): no mqttbytes type leaves this
//! module.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqttbytes::FixedHeader;
use mqttbytes::v4;

use super::codec_v5;
use super::properties::{self, put_varint};
use super::protocol::{
    Connect, ConnectV5, Dialect, Disconnect, Outgoing, Packet, Publish, QoS, Reason, SubOptions,
    Will,
};
use super::topics;

/// Why the bytes from a client cannot be accepted. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// CONNECT names a protocol level this broker does not speak; answered with CONNACK 0x01.
    #[error("unsupported protocol level {0} (this broker speaks MQTT 3.1, 3.1.1 and 5)")]
    UnsupportedLevel(u8),
    #[error("packet of {size} bytes is over the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// Well formed, but against a rule of the protocol (MQTT 5 tells the two apart).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An MQTT 5 fault with a reason code of its own (a topic alias this broker did not offer,
    /// a payload that is not the UTF-8 it says it is).
    #[error("{reason}: {what}", reason = .0.name(), what = .1)]
    WithReason(Reason, String),
}

impl DecodeError {
    /// The MQTT 5 reason code a DISCONNECT gives for this fault.
    pub fn reason(&self) -> Reason {
        match self {
            DecodeError::UnsupportedLevel(_) => Reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TooLarge { .. } => Reason::PACKET_TOO_LARGE,
            DecodeError::Malformed(_) => Reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) => Reason::PROTOCOL_ERROR,
            DecodeError::WithReason(r, _) => *r,
        }
    }
}

pub(crate) fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(what.into())
}

pub(crate) fn protocol(what: impl Into<String>) -> DecodeError {
    DecodeError::Protocol(what.into())
}

/// mqttbytes errors do not implement `std::error::Error`; this turns them into ours.
fn from_mqttbytes(e: mqttbytes::Error) -> DecodeError {
    match e {
        mqttbytes::Error::TopicNotUtf8 => malformed("string is not valid UTF-8"),
        mqttbytes::Error::InvalidQoS(q) => malformed(format!("QoS {q}")),
        mqttbytes::Error::PacketIdZero => malformed("packet id 0"),
        other => malformed(format!("{other:?}")),
    }
}

/// Takes one whole packet off the front of `buf`, or returns `Ok(None)` if more bytes are needed.
///
/// Only the fixed header is looked at until the whole packet has arrived, so a declared length is
/// never allocated up front; `max_size` bounds the whole packet, fixed header included (as MQTT
/// 5's Maximum Packet Size does).
pub fn decode(buf: &mut BytesMut, max_size: usize) -> Result<Option<Packet>, DecodeError> {
    decode_as(buf, max_size, 4)
}

/// `decode` for a client of protocol `level` (from its CONNECT): MQTT 5 packets carry
/// properties and reason codes.
pub fn decode_as(
    buf: &mut BytesMut,
    max_size: usize,
    level: u8,
) -> Result<Option<Packet>, DecodeError> {
    let Some((header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    if header_len + remaining > max_size {
        return Err(DecodeError::TooLarge {
            size: header_len + remaining,
            max: max_size,
        });
    }
    if buf.len() < header_len + remaining {
        return Ok(None);
    }
    let byte1 = buf[0];
    let frame = buf.split_to(header_len + remaining).freeze();
    if level >= 5 {
        codec_v5::decode_frame(byte1, header_len, frame).map(Some)
    } else {
        decode_frame(byte1, header_len, remaining, frame).map(Some)
    }
}

/// Parses the fixed header: `(header length, remaining length)`, or None if it is incomplete.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(malformed("remaining length longer than 4 bytes"))
}

/// The reserved flags of a packet type's fixed header (MQTT 3.1.1 table 2.2, the same in 5):
/// a fault if they are wrong. PUBLISH carries DUP/QoS/RETAIN there.
pub(crate) fn check_flags(byte1: u8) -> Result<(), DecodeError> {
    let kind = byte1 >> 4;
    let flags = byte1 & 0x0f;
    let expected_flags = match kind {
        3 => flags,
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags != expected_flags {
        return Err(malformed(format!(
            "reserved flags {flags:#06b} on packet type {kind}"
        )));
    }
    Ok(())
}

fn decode_frame(
    byte1: u8,
    header_len: usize,
    remaining: usize,
    frame: Bytes,
) -> Result<Packet, DecodeError> {
    let kind = byte1 >> 4;
    check_flags(byte1)?;
    let header = FixedHeader::new(byte1, header_len - 1, remaining);
    let fixed_len = |n: usize| {
        if remaining == n {
            Ok(())
        } else {
            Err(malformed(format!(
                "packet type {kind} with remaining length {remaining}, expected {n}"
            )))
        }
    };
    let pkid = |frame: &Bytes| -> Result<u16, DecodeError> {
        let id = u16::from_be_bytes([frame[header_len], frame[header_len + 1]]);
        if id == 0 {
            Err(malformed("packet id 0"))
        } else {
            Ok(id)
        }
    };
    match kind {
        1 => parse_connect(frame.slice(header_len..)).map(Packet::Connect),
        3 => parse_publish(header, frame).map(Packet::Publish),
        4 => fixed_len(2).and_then(|_| pkid(&frame)).map(Packet::PubAck),
        5 => fixed_len(2).and_then(|_| pkid(&frame)).map(Packet::PubRec),
        6 => fixed_len(2).and_then(|_| pkid(&frame)).map(Packet::PubRel),
        7 => fixed_len(2).and_then(|_| pkid(&frame)).map(Packet::PubComp),
        8 => parse_subscribe(header, header_len, frame),
        10 => parse_unsubscribe(header, frame),
        12 => fixed_len(0).map(|_| Packet::PingReq),
        14 => fixed_len(0).map(|_| Packet::Disconnect(Disconnect::default())),
        15 => Err(malformed("AUTH exists from MQTT 5 on")),
        2 | 9 | 11 | 13 => Err(malformed(format!(
            "packet type {kind} is sent by servers, not clients"
        ))),
        _ => Err(malformed(format!("packet type {kind} does not exist"))),
    }
}

fn parse_publish(header: FixedHeader, frame: Bytes) -> Result<Publish, DecodeError> {
    let p = v4::Publish::read(header, frame).map_err(from_mqttbytes)?;
    let qos = qos(p.qos);
    if p.dup && qos == QoS::AtMostOnce {
        return Err(malformed("DUP set on a QoS 0 PUBLISH"));
    }
    topics::validate_name(&p.topic).map_err(|e| malformed(format!("PUBLISH topic {e}")))?;
    Ok(Publish {
        topic: p.topic,
        payload: p.payload,
        qos,
        pkid: if qos == QoS::AtMostOnce { 0 } else { p.pkid },
        retain: p.retain,
        dup: p.dup,
        props: None,
        alias: 0,
    })
}

fn qos(q: mqttbytes::QoS) -> QoS {
    match q {
        mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn parse_subscribe(
    header: FixedHeader,
    header_len: usize,
    frame: Bytes,
) -> Result<Packet, DecodeError> {
    // mqttbytes drops the upper option bits, which 3.1.1 reserves: check them on the raw bytes.
    let mut raw = frame.slice(header_len..);
    if raw.len() < 2 {
        return Err(malformed("SUBSCRIBE without a packet id"));
    }
    raw.advance(2);
    while raw.len() >= 2 {
        let len = raw.get_u16() as usize;
        if raw.len() < len + 1 {
            break; // mqttbytes reports the exact fault below
        }
        raw.advance(len);
        let options = raw.get_u8();
        if options & 0b1111_1100 != 0 {
            return Err(malformed(format!(
                "SUBSCRIBE options {options:#010b} use reserved bits"
            )));
        }
    }
    let sub = v4::Subscribe::read(header, frame).map_err(from_mqttbytes)?;
    if sub.pkid == 0 {
        return Err(malformed("packet id 0"));
    }
    if sub.filters.is_empty() {
        return Err(malformed("SUBSCRIBE with no topic filter"));
    }
    let mut filters = Vec::with_capacity(sub.filters.len());
    for f in sub.filters {
        if f.path.contains('\0') {
            return Err(malformed("topic filter contains U+0000"));
        }
        filters.push((f.path, SubOptions::qos(qos(f.qos))));
    }
    Ok(Packet::Subscribe {
        pkid: sub.pkid,
        filters,
    })
}

fn parse_unsubscribe(header: FixedHeader, frame: Bytes) -> Result<Packet, DecodeError> {
    let unsub = v4::Unsubscribe::read(header, frame).map_err(from_mqttbytes)?;
    if unsub.pkid == 0 {
        return Err(malformed("packet id 0"));
    }
    if unsub.topics.is_empty() {
        return Err(malformed("UNSUBSCRIBE with no topic filter"));
    }
    if unsub.topics.iter().any(|t| t.contains('\0')) {
        return Err(malformed("topic filter contains U+0000"));
    }
    Ok(Packet::Unsubscribe {
        pkid: unsub.pkid,
        filters: unsub.topics,
    })
}

// The fields of a packet's body, for CONNECT and for MQTT 5 (its packets and properties):
// `what` names the field in the error.

pub(crate) fn read_u8(b: &mut Bytes, what: &str) -> Result<u8, DecodeError> {
    if b.is_empty() {
        return Err(malformed(format!("the packet ends before {what}")));
    }
    Ok(b.get_u8())
}

pub(crate) fn read_u16(b: &mut Bytes, what: &str) -> Result<u16, DecodeError> {
    if b.len() < 2 {
        return Err(malformed(format!("the packet ends before {what}")));
    }
    Ok(b.get_u16())
}

pub(crate) fn read_u32(b: &mut Bytes, what: &str) -> Result<u32, DecodeError> {
    if b.len() < 4 {
        return Err(malformed(format!("the packet ends before {what}")));
    }
    Ok(b.get_u32())
}

pub(crate) fn read_binary(b: &mut Bytes, what: &str) -> Result<Bytes, DecodeError> {
    let len = read_u16(b, what)? as usize;
    if b.len() < len {
        return Err(malformed(format!("the packet ends inside {what}")));
    }
    Ok(b.split_to(len))
}

/// A UTF-8 string as MQTT defines one: valid, and without U+0000 (MQTT 5 section 1.5.4).
pub(crate) fn read_string(b: &mut Bytes, what: &str) -> Result<String, DecodeError> {
    let raw = read_binary(b, what)?;
    let s = String::from_utf8(raw.to_vec())
        .map_err(|_| malformed(format!("{what} is not valid UTF-8")))?;
    if s.contains('\0') {
        return Err(malformed(format!("{what} contains U+0000")));
    }
    Ok(s)
}

/// Parses the variable header and payload of a CONNECT.
pub fn parse_connect(mut b: Bytes) -> Result<Connect, DecodeError> {
    let name = read_binary(&mut b, "the protocol name")?;
    let level = read_u8(&mut b, "the protocol level")?;
    match (&name[..], level) {
        (b"MQTT", 4 | 5) | (b"MQIsdp", 3) => {}
        (b"MQTT", _) | (b"MQIsdp", _) => return Err(DecodeError::UnsupportedLevel(level)),
        _ => {
            return Err(malformed(format!(
                "unknown protocol name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
    }
    let flags = read_u8(&mut b, "the connect flags")?;
    if flags & 0x01 != 0 {
        return Err(malformed("CONNECT reserved flag is set"));
    }
    let clean_session = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(malformed("will QoS or retain set without a will"));
    }
    // MQTT 5 allows a password without a user name (for a token, say).
    if password_flag && !username_flag && level < 5 {
        return Err(malformed("password without a user name"));
    }
    let keep_alive = read_u16(&mut b, "the keepalive")?;
    let v5 = if level >= 5 {
        let p = properties::read(&mut b, properties::CONNECT, "CONNECT")?;
        if p.auth_data.is_some() && p.auth_method.is_none() {
            return Err(DecodeError::Protocol(
                "Authentication Data without an Authentication Method".into(),
            ));
        }
        let d = ConnectV5::default();
        Some(Box::new(ConnectV5 {
            session_expiry: p.session_expiry.unwrap_or(d.session_expiry),
            receive_maximum: p.receive_maximum.unwrap_or(d.receive_maximum),
            max_packet_size: p.max_packet_size,
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(d.topic_alias_maximum),
            request_response_information: p.request_response_info == Some(1),
            request_problem_information: p.request_problem_info != Some(0),
            user: p.user,
            auth_method: p.auth_method,
        }))
    } else {
        None
    };
    let client_id = read_string(&mut b, "the client id")?;
    let will = if will_flag {
        let props = if level >= 5 {
            Some(properties::read(&mut b, properties::WILL, "the will")?)
        } else {
            None
        };
        let topic = read_string(&mut b, "the will topic")?;
        topics::validate_name(&topic).map_err(|e| malformed(format!("will topic {e}")))?;
        let payload = read_binary(&mut b, "the will message")?;
        let qos = QoS::from_bits(will_qos).ok_or_else(|| malformed("will QoS 3"))?;
        let delay = props.as_ref().and_then(|p| p.will_delay).unwrap_or(0);
        let props = props.and_then(properties::Props::into_message);
        if props.as_ref().is_some_and(|p| p.payload_utf8) && std::str::from_utf8(&payload).is_err()
        {
            return Err(DecodeError::Protocol(
                "the will says its payload is UTF-8, and it is not".into(),
            ));
        }
        Some(Will {
            topic,
            payload,
            qos,
            retain: will_retain,
            props,
            delay,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(read_string(&mut b, "the user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(read_binary(&mut b, "the password")?)
    } else {
        None
    };
    if !b.is_empty() {
        return Err(malformed(format!(
            "{} unexpected bytes after the CONNECT payload",
            b.len()
        )));
    }
    Ok(Connect {
        level,
        keep_alive,
        client_id,
        clean_session,
        will,
        username,
        password,
        v5,
    })
}

// ---- encoding ---------------------------------------------------------------------------------

/// Appends a packet the broker sends to a 3.1.1 client to `buf`.
pub fn encode(buf: &mut BytesMut, packet: Outgoing<'_>) {
    encode_as(buf, packet, Dialect::V4)
}

/// Appends a packet the broker sends to `buf`, in the client's dialect: the one place outbound
/// packets are encoded. What MQTT 3.1.1 has no words for (an MQTT 5 reason, DISCONNECT from
/// the server) is left out for its clients.
pub fn encode_as(buf: &mut BytesMut, packet: Outgoing<'_>, dialect: Dialect) {
    if dialect.is_v5() {
        return codec_v5::encode(buf, packet, dialect);
    }
    let ack = |buf: &mut BytesMut, byte1: u8, pkid: u16| {
        buf.put_slice(&[byte1, 2]);
        buf.put_u16(pkid);
    };
    match packet {
        Outgoing::ConnAck {
            session_present,
            code,
            ..
        } => {
            // Enhanced authentication is an MQTT 5 request: "not authorized" says it in 3.1.1.
            let code = match code {
                super::protocol::ConnectCode::BadAuthMethod => 5,
                c => c as u8,
            };
            buf.put_slice(&[0x20, 2, session_present as u8, code])
        }
        Outgoing::Publish {
            topic,
            payload,
            qos,
            pkid,
            retain,
            dup,
            ..
        } => publish(buf, topic, payload, qos, pkid, retain, dup),
        Outgoing::PubAck(id) => ack(buf, 0x40, id),
        Outgoing::PubRec(id) => ack(buf, 0x50, id),
        Outgoing::PubRel(id) => ack(buf, 0x62, id),
        Outgoing::PubComp(id) => ack(buf, 0x70, id),
        // 3.1.1 acknowledges without a reason.
        Outgoing::AckWith { kind, pkid, .. } => ack(buf, ack_byte1(kind), pkid),
        Outgoing::SubAck { pkid, codes } => {
            buf.put_u8(0x90);
            put_varint(buf, 2 + codes.len());
            buf.put_u16(pkid);
            buf.extend(codes.iter().map(|c| c.byte(dialect.level)));
        }
        Outgoing::UnsubAck { pkid, .. } => ack(buf, 0xb0, pkid),
        Outgoing::PingResp => buf.put_slice(&[0xd0, 0]),
        // 3.1.1 has no DISCONNECT from the server: the connection just closes.
        Outgoing::Disconnect(_) => {}
    }
}

/// The first byte of an acknowledgement.
pub(crate) fn ack_byte1(kind: super::protocol::AckKind) -> u8 {
    use super::protocol::AckKind;
    match kind {
        AckKind::PubAck => 0x40,
        AckKind::PubRec => 0x50,
        AckKind::PubRel => 0x62,
        AckKind::PubComp => 0x70,
    }
}

/// PUBLISH. `pkid` is ignored for QoS 0 and must not be 0 otherwise; `topic` is a valid name
/// (at most 65,535 bytes), which the broker guarantees for every topic it routes.
fn publish(
    buf: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    retain: bool,
    dup: bool,
) {
    debug_assert!(topic.len() <= topics::MAX_TOPIC_LEN);
    debug_assert!(qos == QoS::AtMostOnce || pkid != 0);
    let qos_bits = qos as u8;
    buf.put_u8(0x30 | (dup as u8) << 3 | qos_bits << 1 | retain as u8);
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + payload.len();
    buf.reserve(4 + remaining);
    put_varint(buf, remaining);
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    if id_len != 0 {
        buf.put_u16(pkid);
    }
    buf.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        decode(&mut buf, 1024)
    }

    fn is_malformed(bytes: &[u8]) -> bool {
        matches!(decode_all(bytes), Err(DecodeError::Malformed(_)))
    }

    /// CONNECT bytes for MQTT 3.1.1 with the given flags and payload after the client id.
    fn connect_bytes(flags: u8, client_id: &str, rest: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        body.extend_from_slice(rest);
        let mut out = vec![0x10, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn partial_input_waits_for_more() {
        assert_eq!(decode_all(&[]), Ok(None));
        assert_eq!(decode_all(&[0x30]), Ok(None));
        assert_eq!(decode_all(&[0x30, 0x80]), Ok(None));
        assert_eq!(decode_all(&[0x30, 5, 0, 1]), Ok(None));
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        assert!(is_malformed(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
    }

    #[test]
    fn oversized_packet_is_refused_before_it_arrives() {
        // Declares 2 MB but sends 3 bytes: refused on the header alone.
        let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x01][..]);
        assert_eq!(
            decode(&mut buf, 1024),
            Err(DecodeError::TooLarge {
                size: 2_097_157,
                max: 1024
            })
        );
    }

    #[test]
    fn the_maximum_size_counts_the_whole_packet() {
        // PINGREQ is 2 bytes, all of them header: a 1-byte limit refuses it, 2 takes it.
        let mut buf = BytesMut::from(&[0xc0u8, 0][..]);
        assert!(matches!(
            decode(&mut buf, 1),
            Err(DecodeError::TooLarge { size: 2, max: 1 })
        ));
        assert_eq!(decode(&mut buf, 2), Ok(Some(Packet::PingReq)));
        // A PUBLISH of 10 bytes in all (2 of header, 8 remaining).
        let p = [0x30u8, 8, 0, 3, b'a', b'/', b'b', b'x', b'y', b'z'];
        let mut buf = BytesMut::from(&p[..]);
        assert!(matches!(
            decode(&mut buf, 9),
            Err(DecodeError::TooLarge { size: 10, max: 9 })
        ));
        assert!(matches!(decode(&mut buf, 10), Ok(Some(Packet::Publish(_)))));
    }

    #[test]
    fn reserved_fixed_header_flags_are_malformed() {
        assert!(is_malformed(&[0x80, 5, 0, 1, 0, 1, b'a'])); // SUBSCRIBE 0x80
        assert!(is_malformed(&[0x60, 2, 0, 1])); // PUBREL 0x60
        assert!(!is_malformed(&connect_bytes(0x02, "c", &[])));
        let mut c = connect_bytes(0x02, "c", &[]);
        c[0] = 0x1f; // CONNECT 0x1F
        assert!(is_malformed(&c));
        assert!(is_malformed(&[0x41, 2, 0, 1])); // PUBACK with a flag
        assert!(is_malformed(&[0xc1, 0])); // PINGREQ with a flag
    }

    #[test]
    fn server_only_and_unknown_packet_types_are_malformed() {
        assert!(is_malformed(&[0x20, 2, 0, 0])); // CONNACK
        assert!(is_malformed(&[0xd0, 0])); // PINGRESP
        assert!(is_malformed(&[0x00, 0])); // type 0
        assert!(is_malformed(&[0xf0, 0])); // type 15
    }

    #[test]
    fn connect_is_parsed() {
        let mut rest = vec![];
        rest.extend_from_slice(&[0, 3, b'a', b'/', b'w', 0, 2, b'h', b'i']);
        rest.extend_from_slice(&[0, 1, b'u', 0, 2, 0xff, 0x00]); // binary password
        let bytes = connect_bytes(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02, "id", &rest);
        let Ok(Some(Packet::Connect(c))) = decode_all(&bytes) else {
            panic!("not a connect: {:?}", decode_all(&bytes));
        };
        assert_eq!(c.level, 4);
        assert_eq!(c.client_id, "id");
        assert!(c.clean_session);
        let will = c.will.unwrap();
        assert_eq!(
            (
                will.topic.as_str(),
                &will.payload[..],
                will.qos,
                will.retain
            ),
            ("a/w", &b"hi"[..], QoS::AtLeastOnce, true)
        );
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some(&[0xff, 0x00][..]));
    }

    #[test]
    fn mqtt_3_1_connect_is_accepted() {
        let body = [
            0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 10, 0, 1, b'x',
        ];
        let mut bytes = vec![0x10, body.len() as u8];
        bytes.extend_from_slice(&body);
        let Ok(Some(Packet::Connect(c))) = decode_all(&bytes) else {
            panic!("MQIsdp refused");
        };
        assert_eq!((c.level, c.client_id.as_str()), (3, "x"));
    }

    #[test]
    fn other_protocol_levels_are_unsupported() {
        let mut bytes = connect_bytes(0x02, "c", &[]);
        bytes[8] = 6;
        assert_eq!(decode_all(&bytes), Err(DecodeError::UnsupportedLevel(6)));
        bytes[8] = 3; // "MQTT" with level 3
        assert_eq!(decode_all(&bytes), Err(DecodeError::UnsupportedLevel(3)));
        bytes[4] = b'X'; // not MQTT at all: no CONNACK, just close
        assert!(is_malformed(&bytes));
    }

    #[test]
    fn connect_flag_faults_are_malformed() {
        assert!(is_malformed(&connect_bytes(0x03, "c", &[]))); // reserved bit 0
        assert!(is_malformed(&connect_bytes(0x42, "c", &[0, 1, b'p']))); // password, no user
        assert!(is_malformed(&connect_bytes(0x0a, "c", &[]))); // will QoS without will
        assert!(is_malformed(&connect_bytes(0x22, "c", &[]))); // will retain without will
        assert!(is_malformed(&connect_bytes(0x1e, "c", &[0, 1, b'a', 0, 0]))); // will QoS 3
        assert!(is_malformed(&connect_bytes(0x06, "c", &[0, 1, b'#', 0, 0]))); // wildcard will
        assert!(is_malformed(&connect_bytes(0x02, "c", &[9]))); // trailing byte
        assert!(is_malformed(&connect_bytes(0x82, "c", &[0, 2, 0xc3, 0x28]))); // bad UTF-8 user
    }

    #[test]
    fn publish_topic_faults_are_malformed() {
        assert!(is_malformed(&[0x30, 4, 0, 2, b'a', b'+']));
        assert!(is_malformed(&[0x30, 4, 0, 2, b'#', b'a']));
        assert!(is_malformed(&[0x30, 3, 0, 0, b'x'])); // empty topic
        assert!(is_malformed(&[0x30, 4, 0, 2, b'a', 0])); // U+0000
        assert!(is_malformed(&[0x30, 4, 0, 2, 0xc3, 0x28])); // invalid UTF-8
        assert!(is_malformed(&[0x36, 5, 0, 1, b'a', 0, 1])); // QoS 3
        assert!(is_malformed(&[0x32, 5, 0, 1, b'a', 0, 0])); // QoS 1, packet id 0
        assert!(is_malformed(&[0x38, 3, 0, 1, b'a'])); // DUP on QoS 0
    }

    #[test]
    fn publish_is_parsed_without_copying_the_payload() {
        let Ok(Some(Packet::Publish(p))) =
            decode_all(&[0x3d, 8, 0, 1, b'a', 0, 7, b'x', b'y', b'z'])
        else {
            panic!()
        };
        assert_eq!(
            (p.topic.as_str(), p.qos, p.pkid, p.dup, p.retain),
            ("a", QoS::ExactlyOnce, 7, true, true)
        );
        assert_eq!(&p.payload[..], b"xyz");
    }

    #[test]
    fn subscribe_faults_are_malformed() {
        assert!(is_malformed(&[0x82, 2, 0, 1])); // no filters
        assert!(is_malformed(&[0x82, 6, 0, 1, 0, 1, b'a', 0x04])); // reserved option bit
        assert!(is_malformed(&[0x82, 6, 0, 1, 0, 1, b'a', 0x03])); // QoS 3
        assert!(is_malformed(&[0x82, 6, 0, 0, 0, 1, b'a', 0x00])); // packet id 0
        assert!(is_malformed(&[0x82, 6, 0, 1, 0, 1, 0, 0x00])); // U+0000
        assert!(is_malformed(&[0xa2, 2, 0, 1])); // UNSUBSCRIBE with no filters
        assert!(is_malformed(&[0xa0, 5, 0, 1, 0, 1, b'a'])); // UNSUBSCRIBE 0xA0
    }

    #[test]
    fn subscribe_and_unsubscribe_are_parsed() {
        let Ok(Some(Packet::Subscribe { pkid, filters })) =
            decode_all(&[0x82, 10, 0, 9, 0, 1, b'a', 1, 0, 1, b'#', 2])
        else {
            panic!()
        };
        assert_eq!(pkid, 9);
        assert_eq!(
            filters,
            vec![
                ("a".into(), SubOptions::qos(QoS::AtLeastOnce)),
                ("#".into(), SubOptions::qos(QoS::ExactlyOnce))
            ]
        );
        let Ok(Some(Packet::Unsubscribe { pkid, filters })) =
            decode_all(&[0xa2, 5, 0, 3, 0, 1, b'a'])
        else {
            panic!()
        };
        assert_eq!((pkid, filters), (3, vec!["a".to_string()]));
    }

    #[test]
    fn acks_must_have_the_right_length() {
        assert_eq!(decode_all(&[0x40, 2, 0, 5]), Ok(Some(Packet::PubAck(5))));
        assert_eq!(decode_all(&[0x62, 2, 0, 5]), Ok(Some(Packet::PubRel(5))));
        assert!(is_malformed(&[0x40, 3, 0, 5, 0]));
        assert!(is_malformed(&[0x40, 2, 0, 0]));
        assert!(is_malformed(&[0xc0, 1, 0]));
        assert_eq!(
            decode_all(&[0xe0, 0]),
            Ok(Some(Packet::Disconnect(Disconnect::default())))
        );
    }

    #[test]
    fn several_packets_in_one_buffer() {
        let mut buf = BytesMut::from(&[0xc0u8, 0, 0x40, 2, 0, 1, 0xe0][..]);
        assert_eq!(decode(&mut buf, 100), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, 100), Ok(Some(Packet::PubAck(1))));
        assert_eq!(decode(&mut buf, 100), Ok(None));
        assert_eq!(buf.len(), 1);
    }

    #[test]
    fn publish_encodes_like_mqttbytes() {
        for (qos, pkid) in [
            (QoS::AtMostOnce, 0),
            (QoS::AtLeastOnce, 3),
            (QoS::ExactlyOnce, 9),
        ] {
            let payload = vec![7u8; 300];
            let mut ours = BytesMut::new();
            publish(
                &mut ours,
                "a/b",
                &payload,
                qos,
                pkid,
                true,
                qos != QoS::AtMostOnce,
            );
            let mut theirs = BytesMut::new();
            let their_qos = mqttbytes::qos(qos as u8).unwrap();
            let mut p = v4::Publish::new("a/b", their_qos, payload);
            p.pkid = pkid;
            p.retain = true;
            p.dup = qos != QoS::AtMostOnce;
            p.write(&mut theirs).unwrap();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn control_packets_encode() {
        use super::super::protocol::{ConnectCode, SubscribeCode};
        let mut b = BytesMut::new();
        for p in [
            Outgoing::ConnAck {
                session_present: true,
                code: ConnectCode::Accepted,
                v5: None,
            },
            Outgoing::ConnAck {
                session_present: false,
                code: ConnectCode::NotAuthorized,
                v5: None,
            },
            Outgoing::SubAck {
                pkid: 7,
                codes: &[
                    SubscribeCode::Granted(QoS::AtMostOnce),
                    SubscribeCode::Refused(Reason::TOPIC_FILTER_INVALID),
                ],
            },
            Outgoing::UnsubAck {
                pkid: 7,
                codes: &[],
            },
            Outgoing::PubAck(1),
            Outgoing::PubRec(1),
            Outgoing::PubRel(0x0102),
            Outgoing::PubComp(1),
            Outgoing::PingResp,
        ] {
            encode(&mut b, p);
        }
        assert_eq!(
            &b[..],
            &[
                0x20, 2, 1, 0, 0x20, 2, 0, 5, 0x90, 4, 0, 7, 0, 0x80, 0xb0, 2, 0, 7, 0x40, 2, 0, 1,
                0x50, 2, 0, 1, 0x62, 2, 1, 2, 0x70, 2, 0, 1, 0xd0, 0
            ]
        );
    }
}
