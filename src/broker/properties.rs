//! MQTT 5 properties (OASIS MQTT 5.0, section 2.2.2): read with every check the spec puts on a
//! receiver, and written.
//!
//! One reader for every packet, given the identifiers that packet may carry, rather than one
//! per packet (as mqttbytes 0.6 has them, which keeps the last of a repeated property, reads
//! past the property length into the payload, and takes properties only a server may send).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codec::{
    DecodeError, malformed, protocol, read_binary, read_string, read_u8, read_u16, read_u32,
};
use super::protocol::{Expiry, MessageProps, Reason};

pub const PAYLOAD_FORMAT: u8 = 0x01;
pub const MESSAGE_EXPIRY: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_ID: u8 = 0x0B;
pub const SESSION_EXPIRY: u8 = 0x11;
pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTH_METHOD: u8 = 0x15;
pub const AUTH_DATA: u8 = 0x16;
pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
pub const WILL_DELAY: u8 = 0x18;
pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
pub const SERVER_REFERENCE: u8 = 0x1C;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAXIMUM_QOS: u8 = 0x24;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub const WILDCARD_AVAILABLE: u8 = 0x28;
pub const SUBSCRIPTION_IDS_AVAILABLE: u8 = 0x29;
pub const SHARED_AVAILABLE: u8 = 0x2A;

/// The properties a client may put on each packet it sends.
pub const CONNECT: &[u8] = &[
    SESSION_EXPIRY,
    RECEIVE_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS_MAXIMUM,
    REQUEST_RESPONSE_INFO,
    REQUEST_PROBLEM_INFO,
    USER_PROPERTY,
    AUTH_METHOD,
    AUTH_DATA,
];
pub const WILL: &[u8] = &[
    WILL_DELAY,
    PAYLOAD_FORMAT,
    MESSAGE_EXPIRY,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
];
/// A client's PUBLISH: a Subscription Identifier is the server's to send.
pub const PUBLISH: &[u8] = &[
    PAYLOAD_FORMAT,
    MESSAGE_EXPIRY,
    TOPIC_ALIAS,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
    CONTENT_TYPE,
];
pub const ACK: &[u8] = &[REASON_STRING, USER_PROPERTY];
pub const SUBSCRIBE: &[u8] = &[SUBSCRIPTION_ID, USER_PROPERTY];
pub const UNSUBSCRIBE: &[u8] = &[USER_PROPERTY];
pub const DISCONNECT: &[u8] = &[
    SESSION_EXPIRY,
    REASON_STRING,
    USER_PROPERTY,
    SERVER_REFERENCE,
];
pub const AUTH: &[u8] = &[AUTH_METHOD, AUTH_DATA, REASON_STRING, USER_PROPERTY];

/// The properties of one packet as read; which of them may be there is the caller's to say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Props {
    pub payload_format: Option<u8>,
    pub message_expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Repeated only where a server sends them (and in the store); a SUBSCRIBE takes one.
    pub subscription_ids: Vec<u32>,
    pub session_expiry: Option<u32>,
    pub auth_method: Option<String>,
    pub auth_data: Option<Bytes>,
    pub request_problem_info: Option<u8>,
    pub will_delay: Option<u32>,
    pub request_response_info: Option<u8>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub max_packet_size: Option<u32>,
    pub user: Vec<(String, String)>,
}

impl Props {
    /// The properties that go on with a message; None if it has none.
    pub fn into_message(self) -> Option<Box<MessageProps>> {
        let m = MessageProps {
            payload_utf8: self.payload_format == Some(1),
            expiry: self.message_expiry.map(Expiry::starting_now),
            content_type: self.content_type,
            response_topic: self.response_topic,
            correlation_data: self.correlation_data,
            user: self.user,
            subscription_ids: self.subscription_ids,
        };
        (m != MessageProps::default()).then(|| Box::new(m))
    }
}

/// A Variable Byte Integer (at most four bytes).
pub fn read_varint(b: &mut Bytes, what: &str) -> Result<u32, DecodeError> {
    let mut value = 0u32;
    for i in 0..4 {
        let byte = read_u8(b, what)?;
        value |= ((byte & 0x7f) as u32) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed(format!("{what} is longer than 4 bytes")))
}

pub fn put_varint(buf: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The name of a property, for errors.
fn name(id: u8) -> &'static str {
    match id {
        PAYLOAD_FORMAT => "Payload Format Indicator",
        MESSAGE_EXPIRY => "Message Expiry Interval",
        CONTENT_TYPE => "Content Type",
        RESPONSE_TOPIC => "Response Topic",
        CORRELATION_DATA => "Correlation Data",
        SUBSCRIPTION_ID => "Subscription Identifier",
        SESSION_EXPIRY => "Session Expiry Interval",
        ASSIGNED_CLIENT_ID => "Assigned Client Identifier",
        SERVER_KEEP_ALIVE => "Server Keep Alive",
        AUTH_METHOD => "Authentication Method",
        AUTH_DATA => "Authentication Data",
        REQUEST_PROBLEM_INFO => "Request Problem Information",
        WILL_DELAY => "Will Delay Interval",
        REQUEST_RESPONSE_INFO => "Request Response Information",
        SERVER_REFERENCE => "Server Reference",
        REASON_STRING => "Reason String",
        RECEIVE_MAXIMUM => "Receive Maximum",
        TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum",
        TOPIC_ALIAS => "Topic Alias",
        MAXIMUM_QOS => "Maximum QoS",
        RETAIN_AVAILABLE => "Retain Available",
        USER_PROPERTY => "User Property",
        MAXIMUM_PACKET_SIZE => "Maximum Packet Size",
        WILDCARD_AVAILABLE => "Wildcard Subscription Available",
        SUBSCRIPTION_IDS_AVAILABLE => "Subscription Identifier Available",
        SHARED_AVAILABLE => "Shared Subscription Available",
        _ => "unknown property",
    }
}

/// Reads the property length and the properties of a packet (`what`, for errors), which may
/// carry those in `allowed`. An identifier the packet may not carry, or a value cut short, is a
/// Malformed Packet; a property given twice where the spec allows one, or a value the spec
/// rules out, is a Protocol Error.
pub fn read(b: &mut Bytes, allowed: &[u8], what: &str) -> Result<Props, DecodeError> {
    // Named only when it fails: this runs for every MQTT 5 PUBLISH.
    let len = read_varint(b, "the property length").map_err(|e| match e {
        DecodeError::Malformed(m) => malformed(format!("{what}: {m}")),
        other => other,
    })? as usize;
    if b.len() < len {
        return Err(malformed(format!(
            "{what}'s properties ({len} bytes) run past the packet"
        )));
    }
    let mut p = b.split_to(len);
    let mut props = Props::default();
    let mut seen = 0u64;
    while !p.is_empty() {
        let id = p.get_u8();
        if !allowed.contains(&id) {
            return Err(malformed(format!(
                "{what} may not carry property {id:#04x} ({})",
                name(id)
            )));
        }
        if id != USER_PROPERTY && id != SUBSCRIPTION_ID {
            let bit = 1u64 << (id & 63);
            if seen & bit != 0 {
                return Err(protocol(format!("{what} carries {} twice", name(id))));
            }
            seen |= bit;
        }
        let field = name(id);
        let zero_or_one = |v: u8| {
            if v > 1 {
                Err(protocol(format!("{field} of {v} (0 or 1 only)")))
            } else {
                Ok(v)
            }
        };
        let not_zero = |v: u32| {
            if v == 0 {
                Err(protocol(format!("{field} of 0")))
            } else {
                Ok(v)
            }
        };
        match id {
            PAYLOAD_FORMAT => props.payload_format = Some(zero_or_one(read_u8(&mut p, field)?)?),
            MESSAGE_EXPIRY => props.message_expiry = Some(read_u32(&mut p, field)?),
            CONTENT_TYPE => props.content_type = Some(read_string(&mut p, field)?),
            RESPONSE_TOPIC => {
                let topic = read_string(&mut p, field)?;
                // A topic name: the request's answer is published to it.
                super::topics::validate_name(&topic)
                    .map_err(|e| protocol(format!("{field} {e}")))?;
                props.response_topic = Some(topic);
            }
            // Copied: a slice would keep the connection's whole read buffer alive for as long
            // as the message is retained, queued or in history.
            CORRELATION_DATA => {
                let data = read_binary(&mut p, field)?;
                props.correlation_data = Some(Bytes::copy_from_slice(&data));
            }
            SUBSCRIPTION_ID => {
                let id = read_varint(&mut p, field)?;
                props.subscription_ids.push(not_zero(id)?);
            }
            SESSION_EXPIRY => props.session_expiry = Some(read_u32(&mut p, field)?),
            AUTH_METHOD => props.auth_method = Some(read_string(&mut p, field)?),
            AUTH_DATA => {
                let data = read_binary(&mut p, field)?;
                props.auth_data = Some(Bytes::copy_from_slice(&data));
            }
            REQUEST_PROBLEM_INFO => {
                props.request_problem_info = Some(zero_or_one(read_u8(&mut p, field)?)?)
            }
            WILL_DELAY => props.will_delay = Some(read_u32(&mut p, field)?),
            REQUEST_RESPONSE_INFO => {
                props.request_response_info = Some(zero_or_one(read_u8(&mut p, field)?)?)
            }
            SERVER_REFERENCE => props.server_reference = Some(read_string(&mut p, field)?),
            REASON_STRING => props.reason_string = Some(read_string(&mut p, field)?),
            RECEIVE_MAXIMUM => {
                props.receive_maximum = Some(not_zero(read_u16(&mut p, field)? as u32)? as u16)
            }
            TOPIC_ALIAS_MAXIMUM => props.topic_alias_maximum = Some(read_u16(&mut p, field)?),
            TOPIC_ALIAS => match read_u16(&mut p, field)? {
                0 => {
                    return Err(DecodeError::WithReason(
                        Reason::TOPIC_ALIAS_INVALID,
                        "Topic Alias 0".into(),
                    ));
                }
                alias => props.topic_alias = Some(alias),
            },
            MAXIMUM_PACKET_SIZE => {
                props.max_packet_size = Some(not_zero(read_u32(&mut p, field)?)?)
            }
            USER_PROPERTY => {
                let key = read_string(&mut p, "a User Property's name")?;
                let value = read_string(&mut p, "a User Property's value")?;
                props.user.push((key, value));
            }
            _ => unreachable!("only allowed identifiers get here"),
        }
    }
    Ok(props)
}

/// What the store keeps of a message's properties: those a PUBLISH carries, without the
/// expiry (kept apart, as a time of day) and the alias (the connection's).
pub const STORED: &[u8] = &[
    PAYLOAD_FORMAT,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
    CONTENT_TYPE,
    SUBSCRIPTION_ID,
];

/// A message's properties as the store keeps them: as a PUBLISH carries them, length first.
pub fn to_blob(m: &MessageProps) -> Vec<u8> {
    let mut buf = BytesMut::new();
    put_varint(&mut buf, message_len(m, None));
    put_message(&mut buf, m, None);
    buf.to_vec()
}

/// A message's properties from the store, with the expiry it had left.
pub fn from_blob(blob: &[u8], expiry_left: Option<u32>) -> Result<Box<MessageProps>, DecodeError> {
    let mut b = Bytes::copy_from_slice(blob);
    let mut m = read(&mut b, STORED, "stored properties")?
        .into_message()
        .unwrap_or_default();
    m.expiry = expiry_left.map(Expiry::starting_now);
    Ok(m)
}

// ---- writing ------------------------------------------------------------------------------

fn string_len(s: &str) -> usize {
    2 + s.len()
}

/// The bytes a message's properties take, without the property length in front.
pub fn message_len(m: &MessageProps, expiry_left: Option<u32>) -> usize {
    let mut n = 0;
    if m.payload_utf8 {
        n += 2;
    }
    if expiry_left.is_some() {
        n += 5;
    }
    n += m.content_type.as_deref().map_or(0, |s| 1 + string_len(s));
    n += m.response_topic.as_deref().map_or(0, |s| 1 + string_len(s));
    n += m.correlation_data.as_ref().map_or(0, |d| 3 + d.len());
    n += m
        .user
        .iter()
        .map(|(k, v)| 1 + string_len(k) + string_len(v))
        .sum::<usize>();
    n += m
        .subscription_ids
        .iter()
        .map(|&id| 1 + varint_len(id as usize))
        .sum::<usize>();
    n
}

/// The bytes Subscription Identifiers take as properties.
pub fn ids_len(ids: &[u32]) -> usize {
    ids.iter().map(|&id| 1 + varint_len(id as usize)).sum()
}

pub fn put_ids(buf: &mut BytesMut, ids: &[u32]) {
    for &id in ids {
        buf.put_u8(SUBSCRIPTION_ID);
        put_varint(buf, id as usize);
    }
}

pub fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// Writes a message's properties (not their length), with the expiry time left.
pub fn put_message(buf: &mut BytesMut, m: &MessageProps, expiry_left: Option<u32>) {
    if m.payload_utf8 {
        buf.put_slice(&[PAYLOAD_FORMAT, 1]);
    }
    if let Some(left) = expiry_left {
        buf.put_u8(MESSAGE_EXPIRY);
        buf.put_u32(left);
    }
    if let Some(s) = &m.content_type {
        buf.put_u8(CONTENT_TYPE);
        put_string(buf, s);
    }
    if let Some(s) = &m.response_topic {
        buf.put_u8(RESPONSE_TOPIC);
        put_string(buf, s);
    }
    if let Some(d) = &m.correlation_data {
        buf.put_u8(CORRELATION_DATA);
        buf.put_u16(d.len() as u16);
        buf.put_slice(d);
    }
    for (k, v) in &m.user {
        buf.put_u8(USER_PROPERTY);
        put_string(buf, k);
        put_string(buf, v);
    }
    for &id in &m.subscription_ids {
        buf.put_u8(SUBSCRIPTION_ID);
        put_varint(buf, id as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(bytes: &[u8], allowed: &[u8]) -> Result<Props, DecodeError> {
        let mut b = Bytes::copy_from_slice(bytes);
        read(&mut b, allowed, "PUBLISH")
    }

    #[test]
    fn properties_are_read() {
        let p = props(
            &[14, 0x01, 1, 0x02, 0, 0, 0, 60, 0x26, 0, 1, b'k', 0, 1, b'v'],
            PUBLISH,
        )
        .unwrap();
        assert_eq!(p.payload_format, Some(1));
        assert_eq!(p.message_expiry, Some(60));
        assert_eq!(p.user, vec![("k".into(), "v".into())]);
    }

    #[test]
    fn faults_are_told_apart() {
        let is = |r: Result<Props, DecodeError>, malformed: bool| match r {
            Err(DecodeError::Malformed(_)) => assert!(malformed),
            Err(DecodeError::Protocol(_)) => assert!(!malformed),
            other => panic!("{other:?}"),
        };
        // Twice the same property: a Protocol Error; user properties may repeat.
        is(props(&[4, 0x01, 1, 0x01, 0], PUBLISH), false);
        assert!(props(&[10, 0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0], PUBLISH).is_ok());
        // A property this packet may not carry (a Subscription Identifier from a client).
        is(props(&[2, 0x0B, 1], PUBLISH), true);
        // An identifier that does not exist.
        is(props(&[2, 0x7F, 1], PUBLISH), true);
        // The property length runs past the packet, or a value past the properties.
        is(props(&[9, 0x01, 1], PUBLISH), true);
        is(props(&[3, 0x02, 0, 0], PUBLISH), true);
        // Values the spec rules out.
        is(props(&[2, 0x01, 2], PUBLISH), false);
        is(props(&[3, 0x21, 0, 0], CONNECT), false);
        is(props(&[5, 0x27, 0, 0, 0, 0], CONNECT), false);
        // Strings must be UTF-8 without U+0000.
        is(props(&[4, 0x03, 0, 1, 0xff], PUBLISH), true);
        is(props(&[4, 0x03, 0, 1, 0], PUBLISH), true);
    }

    #[test]
    fn message_properties_write_what_they_read() {
        let m = MessageProps {
            payload_utf8: true,
            expiry: None,
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            user: vec![("a".into(), "b".into()), ("a".into(), "c".into())],
            subscription_ids: Vec::new(),
        };
        let mut buf = BytesMut::new();
        put_varint(&mut buf, message_len(&m, Some(30)));
        put_message(&mut buf, &m, Some(30));
        let mut b = buf.freeze();
        let p = read(&mut b, PUBLISH, "PUBLISH").unwrap();
        assert!(b.is_empty());
        assert_eq!(p.message_expiry, Some(30));
        let back = p.into_message().unwrap();
        assert_eq!(back.content_type, m.content_type);
        assert_eq!(back.response_topic, m.response_topic);
        assert_eq!(back.correlation_data, m.correlation_data);
        assert_eq!(back.user, m.user);
        assert!(back.payload_utf8);
    }
}
