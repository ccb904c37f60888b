//! MQTT-SN 1.2 messages: the bytes of one UDP datagram to a message and back.
//!
//! A datagram holds one message: a length (one byte, or 0x01 and two bytes for 256 and more)
//! that counts the whole message, its type, and the type's fields. Anything else (a length
//! that is not the datagram's, a field cut short, an unknown type) is an error, and the
//! gateway drops the datagram.

use bytes::{BufMut, Bytes, BytesMut};

/// How a PUBLISH, SUBSCRIBE or UNSUBSCRIBE names its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRef {
    /// A topic id the gateway or the client registered (REGISTER).
    Id(u16),
    /// A predefined topic id (the gateway's `--sn-predefined` file).
    Predefined(u16),
    /// A topic name of exactly two characters, carried in place of an id.
    Short([u8; 2]),
    /// A topic name or filter (SUBSCRIBE and UNSUBSCRIBE only).
    Name(String),
}

impl TopicRef {
    fn id_type(&self) -> u8 {
        match self {
            TopicRef::Id(_) | TopicRef::Name(_) => 0,
            TopicRef::Predefined(_) => 1,
            TopicRef::Short(_) => 2,
        }
    }

    fn id_bytes(&self) -> [u8; 2] {
        match self {
            TopicRef::Id(id) | TopicRef::Predefined(id) => id.to_be_bytes(),
            TopicRef::Short(s) => *s,
            TopicRef::Name(_) => [0, 0],
        }
    }
}

/// The flags byte's fields (DUP, QoS with -1 as `None`, retain, will, clean session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub dup: bool,
    /// 0, 1, 2, or -1 (a PUBLISH without a connection).
    pub qos: i8,
    pub retain: bool,
    pub will: bool,
    pub clean_session: bool,
}

impl Flags {
    fn read(b: u8) -> (Flags, u8) {
        let qos = match (b >> 5) & 0x03 {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => -1,
        };
        (
            Flags {
                dup: b & 0x80 != 0,
                qos,
                retain: b & 0x10 != 0,
                will: b & 0x08 != 0,
                clean_session: b & 0x04 != 0,
            },
            b & 0x03,
        )
    }

    fn byte(self, id_type: u8) -> u8 {
        let qos = match self.qos {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => 3,
        };
        (self.dup as u8) << 7
            | qos << 5
            | (self.retain as u8) << 4
            | (self.will as u8) << 3
            | (self.clean_session as u8) << 2
            | id_type
    }
}

/// MQTT-SN return codes.
pub const ACCEPTED: u8 = 0x00;
pub const CONGESTION: u8 = 0x01;
pub const INVALID_TOPIC_ID: u8 = 0x02;
pub const NOT_SUPPORTED: u8 = 0x03;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Advertise {
        gw_id: u8,
        duration: u16,
    },
    SearchGw {
        radius: u8,
    },
    GwInfo {
        gw_id: u8,
        address: Bytes,
    },
    Connect {
        flags: Flags,
        duration: u16,
        client_id: String,
    },
    ConnAck {
        code: u8,
    },
    WillTopicReq,
    /// An empty WILLTOPIC (no flags, no topic) removes the will.
    WillTopic {
        flags: Flags,
        topic: Option<String>,
    },
    WillMsgReq,
    WillMsg {
        payload: Bytes,
    },
    Register {
        topic_id: u16,
        msg_id: u16,
        topic: String,
    },
    RegAck {
        topic_id: u16,
        msg_id: u16,
        code: u8,
    },
    Publish {
        flags: Flags,
        topic: TopicRef,
        msg_id: u16,
        payload: Bytes,
    },
    PubAck {
        topic_id: u16,
        msg_id: u16,
        code: u8,
    },
    PubComp {
        msg_id: u16,
    },
    PubRec {
        msg_id: u16,
    },
    PubRel {
        msg_id: u16,
    },
    Subscribe {
        flags: Flags,
        msg_id: u16,
        topic: TopicRef,
    },
    SubAck {
        flags: Flags,
        topic_id: u16,
        msg_id: u16,
        code: u8,
    },
    Unsubscribe {
        msg_id: u16,
        topic: TopicRef,
    },
    UnsubAck {
        msg_id: u16,
    },
    /// With a client id: a sleeping client awake to collect its messages.
    PingReq {
        client_id: Option<String>,
    },
    PingResp,
    /// With a duration: the client sleeps that many seconds.
    Disconnect {
        duration: Option<u16>,
    },
    WillTopicUpd {
        flags: Flags,
        topic: Option<String>,
    },
    WillTopicResp {
        code: u8,
    },
    WillMsgUpd {
        payload: Bytes,
    },
    WillMsgResp {
        code: u8,
    },
}

/// Why a datagram is not an MQTT-SN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnError {
    #[error("empty datagram")]
    Empty,
    #[error("length field says {said} bytes, the datagram has {got}")]
    Length { said: usize, got: usize },
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{0} cut short")]
    Short(&'static str),
    #[error("{0}: bytes after its last field")]
    Trailing(&'static str),
    #[error("{0}: not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0}: reserved topic id type 3")]
    TopicIdType(&'static str),
    #[error("CONNECT: protocol id {0}, not 1")]
    ProtocolId(u8),
    #[error("CONNECT: client id of {0} bytes (1 to 23)")]
    ClientIdLength(usize),
}

impl Message {
    /// The message's name, for the log and the trace.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Advertise { .. } => "ADVERTISE",
            Message::SearchGw { .. } => "SEARCHGW",
            Message::GwInfo { .. } => "GWINFO",
            Message::Connect { .. } => "CONNECT",
            Message::ConnAck { .. } => "CONNACK",
            Message::WillTopicReq => "WILLTOPICREQ",
            Message::WillTopic { .. } => "WILLTOPIC",
            Message::WillMsgReq => "WILLMSGREQ",
            Message::WillMsg { .. } => "WILLMSG",
            Message::Register { .. } => "REGISTER",
            Message::RegAck { .. } => "REGACK",
            Message::Publish { .. } => "PUBLISH",
            Message::PubAck { .. } => "PUBACK",
            Message::PubComp { .. } => "PUBCOMP",
            Message::PubRec { .. } => "PUBREC",
            Message::PubRel { .. } => "PUBREL",
            Message::Subscribe { .. } => "SUBSCRIBE",
            Message::SubAck { .. } => "SUBACK",
            Message::Unsubscribe { .. } => "UNSUBSCRIBE",
            Message::UnsubAck { .. } => "UNSUBACK",
            Message::PingReq { .. } => "PINGREQ",
            Message::PingResp => "PINGRESP",
            Message::Disconnect { .. } => "DISCONNECT",
            Message::WillTopicUpd { .. } => "WILLTOPICUPD",
            Message::WillTopicResp { .. } => "WILLTOPICRESP",
            Message::WillMsgUpd { .. } => "WILLMSGUPD",
            Message::WillMsgResp { .. } => "WILLMSGRESP",
        }
    }
}

/// Reads the fields of one message, in order, failing on the first that is cut short.
struct Fields<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn u8(&mut self) -> Result<u8, SnError> {
        let (&b, rest) = self.rest.split_first().ok_or(SnError::Short(self.what))?;
        self.rest = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, SnError> {
        if self.rest.len() < 2 {
            return Err(SnError::Short(self.what));
        }
        let v = u16::from_be_bytes([self.rest[0], self.rest[1]]);
        self.rest = &self.rest[2..];
        Ok(v)
    }

    fn pair(&mut self) -> Result<[u8; 2], SnError> {
        Ok(self.u16()?.to_be_bytes())
    }

    /// The rest of the message.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn string(&mut self) -> Result<String, SnError> {
        let what = self.what;
        String::from_utf8(self.rest().to_vec()).map_err(|_| SnError::NotUtf8(what))
    }

    /// Nothing may follow the last field.
    fn end(&self) -> Result<(), SnError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(SnError::Trailing(self.what))
        }
    }
}

/// Decodes one datagram.
pub fn decode(datagram: &[u8]) -> Result<Message, SnError> {
    let (len, header) = match datagram {
        [] => return Err(SnError::Empty),
        [0x01, hi, lo, ..] => (u16::from_be_bytes([*hi, *lo]) as usize, 3),
        [0x01, ..] => return Err(SnError::Short("length")),
        [n, ..] => (*n as usize, 1),
    };
    if len != datagram.len() || len <= header {
        return Err(SnError::Length {
            said: len,
            got: datagram.len(),
        });
    }
    let kind = datagram[header];
    let body = &datagram[header + 1..];
    let mut f = Fields {
        rest: body,
        what: "message",
    };
    let topic = |f: &mut Fields, id_type: u8, what: &'static str| -> Result<TopicRef, SnError> {
        Ok(match id_type {
            0 => TopicRef::Id(f.u16()?),
            1 => TopicRef::Predefined(f.u16()?),
            2 => TopicRef::Short(f.pair()?),
            _ => return Err(SnError::TopicIdType(what)),
        })
    };
    let msg = match kind {
        0x00 => {
            f.what = "ADVERTISE";
            Message::Advertise {
                gw_id: f.u8()?,
                duration: f.u16()?,
            }
        }
        0x01 => {
            f.what = "SEARCHGW";
            Message::SearchGw { radius: f.u8()? }
        }
        0x02 => {
            f.what = "GWINFO";
            Message::GwInfo {
                gw_id: f.u8()?,
                address: Bytes::copy_from_slice(f.rest()),
            }
        }
        0x04 => {
            f.what = "CONNECT";
            let (flags, _) = Flags::read(f.u8()?);
            let protocol = f.u8()?;
            if protocol != 0x01 {
                return Err(SnError::ProtocolId(protocol));
            }
            let duration = f.u16()?;
            let client_id = f.string()?;
            if client_id.is_empty() || client_id.len() > 23 {
                return Err(SnError::ClientIdLength(client_id.len()));
            }
            Message::Connect {
                flags,
                duration,
                client_id,
            }
        }
        0x05 => {
            f.what = "CONNACK";
            Message::ConnAck { code: f.u8()? }
        }
        0x06 => Message::WillTopicReq,
        0x07 | 0x1A => {
            f.what = if kind == 0x07 {
                "WILLTOPIC"
            } else {
                "WILLTOPICUPD"
            };
            let (flags, topic) = if f.rest.is_empty() {
                (Flags::default(), None)
            } else {
                let (flags, _) = Flags::read(f.u8()?);
                (flags, Some(f.string()?))
            };
            if kind == 0x07 {
                Message::WillTopic { flags, topic }
            } else {
                Message::WillTopicUpd { flags, topic }
            }
        }
        0x08 => Message::WillMsgReq,
        0x09 => Message::WillMsg {
            payload: Bytes::copy_from_slice(f.rest()),
        },
        0x0A => {
            f.what = "REGISTER";
            Message::Register {
                topic_id: f.u16()?,
                msg_id: f.u16()?,
                topic: f.string()?,
            }
        }
        0x0B => {
            f.what = "REGACK";
            Message::RegAck {
                topic_id: f.u16()?,
                msg_id: f.u16()?,
                code: f.u8()?,
            }
        }
        0x0C => {
            f.what = "PUBLISH";
            let (flags, id_type) = Flags::read(f.u8()?);
            let topic = topic(&mut f, id_type, "PUBLISH")?;
            Message::Publish {
                flags,
                topic,
                msg_id: f.u16()?,
                payload: Bytes::copy_from_slice(f.rest()),
            }
        }
        0x0D => {
            f.what = "PUBACK";
            Message::PubAck {
                topic_id: f.u16()?,
                msg_id: f.u16()?,
                code: f.u8()?,
            }
        }
        0x0E | 0x0F | 0x10 | 0x15 => {
            f.what = "acknowledgement";
            let msg_id = f.u16()?;
            match kind {
                0x0E => Message::PubComp { msg_id },
                0x0F => Message::PubRec { msg_id },
                0x10 => Message::PubRel { msg_id },
                _ => Message::UnsubAck { msg_id },
            }
        }
        0x12 | 0x14 => {
            f.what = if kind == 0x12 {
                "SUBSCRIBE"
            } else {
                "UNSUBSCRIBE"
            };
            let (flags, id_type) = Flags::read(f.u8()?);
            let msg_id = f.u16()?;
            let topic = match id_type {
                0 => TopicRef::Name(f.string()?),
                t => {
                    let what = f.what;
                    topic(&mut f, t, what)?
                }
            };
            if kind == 0x12 {
                Message::Subscribe {
                    flags,
                    msg_id,
                    topic,
                }
            } else {
                Message::Unsubscribe { msg_id, topic }
            }
        }
        0x13 => {
            f.what = "SUBACK";
            let (flags, _) = Flags::read(f.u8()?);
            Message::SubAck {
                flags,
                topic_id: f.u16()?,
                msg_id: f.u16()?,
                code: f.u8()?,
            }
        }
        0x16 => {
            f.what = "PINGREQ";
            let id = f.string()?;
            Message::PingReq {
                client_id: (!id.is_empty()).then_some(id),
            }
        }
        0x17 => Message::PingResp,
        0x18 => {
            f.what = "DISCONNECT";
            Message::Disconnect {
                duration: if f.rest.is_empty() {
                    None
                } else {
                    Some(f.u16()?)
                },
            }
        }
        0x1B => {
            f.what = "WILLTOPICRESP";
            Message::WillTopicResp { code: f.u8()? }
        }
        0x1C => Message::WillMsgUpd {
            payload: Bytes::copy_from_slice(f.rest()),
        },
        0x1D => {
            f.what = "WILLMSGRESP";
            Message::WillMsgResp { code: f.u8()? }
        }
        other => return Err(SnError::UnknownType(other)),
    };
    f.end()?;
    Ok(msg)
}

/// Encodes one message as a datagram.
pub fn encode(msg: &Message) -> Bytes {
    let mut b = BytesMut::new();
    let (kind, flags_id) = match msg {
        Message::Advertise { gw_id, duration } => {
            b.put_u8(*gw_id);
            b.put_u16(*duration);
            (0x00, None)
        }
        Message::SearchGw { radius } => {
            b.put_u8(*radius);
            (0x01, None)
        }
        Message::GwInfo { gw_id, address } => {
            b.put_u8(*gw_id);
            b.put_slice(address);
            (0x02, None)
        }
        Message::Connect {
            flags,
            duration,
            client_id,
        } => {
            b.put_u8(flags.byte(0));
            b.put_u8(0x01);
            b.put_u16(*duration);
            b.put_slice(client_id.as_bytes());
            (0x04, None)
        }
        Message::ConnAck { code } => {
            b.put_u8(*code);
            (0x05, None)
        }
        Message::WillTopicReq => (0x06, None),
        Message::WillTopic { flags, topic } | Message::WillTopicUpd { flags, topic } => {
            if let Some(t) = topic {
                b.put_u8(flags.byte(0));
                b.put_slice(t.as_bytes());
            }
            let kind = if matches!(msg, Message::WillTopic { .. }) {
                0x07
            } else {
                0x1A
            };
            (kind, None)
        }
        Message::WillMsgReq => (0x08, None),
        Message::WillMsg { payload } => {
            b.put_slice(payload);
            (0x09, None)
        }
        Message::Register {
            topic_id,
            msg_id,
            topic,
        } => {
            b.put_u16(*topic_id);
            b.put_u16(*msg_id);
            b.put_slice(topic.as_bytes());
            (0x0A, None)
        }
        Message::RegAck {
            topic_id,
            msg_id,
            code,
        } => {
            b.put_u16(*topic_id);
            b.put_u16(*msg_id);
            b.put_u8(*code);
            (0x0B, None)
        }
        Message::Publish {
            flags,
            topic,
            msg_id,
            payload,
        } => {
            b.put_u8(flags.byte(topic.id_type()));
            b.put_slice(&topic.id_bytes());
            b.put_u16(*msg_id);
            b.put_slice(payload);
            (0x0C, None)
        }
        Message::PubAck {
            topic_id,
            msg_id,
            code,
        } => {
            b.put_u16(*topic_id);
            b.put_u16(*msg_id);
            b.put_u8(*code);
            (0x0D, None)
        }
        Message::PubComp { msg_id } => (0x0E, Some(*msg_id)),
        Message::PubRec { msg_id } => (0x0F, Some(*msg_id)),
        Message::PubRel { msg_id } => (0x10, Some(*msg_id)),
        Message::UnsubAck { msg_id } => (0x15, Some(*msg_id)),
        Message::Subscribe {
            flags,
            msg_id,
            topic,
        } => {
            b.put_u8(flags.byte(topic.id_type()));
            b.put_u16(*msg_id);
            put_topic(&mut b, topic);
            (0x12, None)
        }
        Message::Unsubscribe { msg_id, topic } => {
            b.put_u8(Flags::default().byte(topic.id_type()));
            b.put_u16(*msg_id);
            put_topic(&mut b, topic);
            (0x14, None)
        }
        Message::SubAck {
            flags,
            topic_id,
            msg_id,
            code,
        } => {
            b.put_u8(flags.byte(0));
            b.put_u16(*topic_id);
            b.put_u16(*msg_id);
            b.put_u8(*code);
            (0x13, None)
        }
        Message::PingReq { client_id } => {
            if let Some(id) = client_id {
                b.put_slice(id.as_bytes());
            }
            (0x16, None)
        }
        Message::PingResp => (0x17, None),
        Message::Disconnect { duration } => {
            if let Some(d) = duration {
                b.put_u16(*d);
            }
            (0x18, None)
        }
        Message::WillTopicResp { code } => {
            b.put_u8(*code);
            (0x1B, None)
        }
        Message::WillMsgUpd { payload } => {
            b.put_slice(payload);
            (0x1C, None)
        }
        Message::WillMsgResp { code } => {
            b.put_u8(*code);
            (0x1D, None)
        }
    };
    if let Some(id) = flags_id {
        b.put_u16(id);
    }
    let len = b.len() + 2;
    let mut out = BytesMut::with_capacity(len + 2);
    if len < 256 {
        out.put_u8(len as u8);
    } else {
        out.put_u8(0x01);
        out.put_u16((len + 2) as u16);
    }
    out.put_u8(kind);
    out.put_slice(&b);
    out.freeze()
}

fn put_topic(b: &mut BytesMut, topic: &TopicRef) {
    match topic {
        TopicRef::Name(n) => b.put_slice(n.as_bytes()),
        other => b.put_slice(&other.id_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(qos: i8) -> Flags {
        Flags {
            qos,
            ..Flags::default()
        }
    }

    #[test]
    fn every_message_round_trips() {
        let all = vec![
            Message::Advertise {
                gw_id: 1,
                duration: 900,
            },
            Message::SearchGw { radius: 0 },
            Message::GwInfo {
                gw_id: 1,
                address: Bytes::new(),
            },
            Message::GwInfo {
                gw_id: 1,
                address: Bytes::from_static(&[127, 0, 0, 1]),
            },
            Message::Connect {
                flags: Flags {
                    will: true,
                    clean_session: true,
                    ..Flags::default()
                },
                duration: 30,
                client_id: "node-1".into(),
            },
            Message::ConnAck { code: ACCEPTED },
            Message::WillTopicReq,
            Message::WillTopic {
                flags: Flags {
                    qos: 1,
                    retain: true,
                    ..Flags::default()
                },
                topic: Some("lab/door".into()),
            },
            Message::WillTopic {
                flags: Flags::default(),
                topic: None,
            },
            Message::WillMsgReq,
            Message::WillMsg {
                payload: Bytes::from_static(b"gone"),
            },
            Message::Register {
                topic_id: 0,
                msg_id: 7,
                topic: "lab/temperature".into(),
            },
            Message::RegAck {
                topic_id: 1,
                msg_id: 7,
                code: ACCEPTED,
            },
            Message::Publish {
                flags: flags(1),
                topic: TopicRef::Id(1),
                msg_id: 8,
                payload: Bytes::from_static(b"21.5"),
            },
            Message::Publish {
                flags: flags(-1),
                topic: TopicRef::Predefined(3),
                msg_id: 0,
                payload: Bytes::from_static(b"x"),
            },
            Message::Publish {
                flags: Flags {
                    qos: 2,
                    dup: true,
                    retain: true,
                    ..Flags::default()
                },
                topic: TopicRef::Short(*b"ab"),
                msg_id: 9,
                payload: Bytes::new(),
            },
            Message::PubAck {
                topic_id: 1,
                msg_id: 8,
                code: INVALID_TOPIC_ID,
            },
            Message::PubRec { msg_id: 9 },
            Message::PubRel { msg_id: 9 },
            Message::PubComp { msg_id: 9 },
            Message::Subscribe {
                flags: flags(1),
                msg_id: 10,
                topic: TopicRef::Name("lab/#".into()),
            },
            Message::Subscribe {
                flags: flags(0),
                msg_id: 11,
                topic: TopicRef::Predefined(3),
            },
            Message::Subscribe {
                flags: flags(2),
                msg_id: 12,
                topic: TopicRef::Short(*b"ab"),
            },
            Message::SubAck {
                flags: flags(1),
                topic_id: 0,
                msg_id: 10,
                code: ACCEPTED,
            },
            Message::Unsubscribe {
                msg_id: 13,
                topic: TopicRef::Name("lab/#".into()),
            },
            Message::UnsubAck { msg_id: 13 },
            Message::PingReq { client_id: None },
            Message::PingReq {
                client_id: Some("node-1".into()),
            },
            Message::PingResp,
            Message::Disconnect { duration: None },
            Message::Disconnect { duration: Some(60) },
            Message::WillTopicUpd {
                flags: flags(0),
                topic: Some("lab/x".into()),
            },
            Message::WillTopicResp { code: ACCEPTED },
            Message::WillMsgUpd {
                payload: Bytes::from_static(b"y"),
            },
            Message::WillMsgResp { code: ACCEPTED },
        ];
        for m in all {
            let bytes = encode(&m);
            assert_eq!(bytes[0] as usize, bytes.len(), "{m:?}");
            assert_eq!(decode(&bytes), Ok(m.clone()), "{bytes:02x?}");
        }
    }

    #[test]
    fn the_spec_bytes() {
        // CONNECT, clean session, keepalive 10, client id "ab".
        assert_eq!(
            decode(&[0x08, 0x04, 0x04, 0x01, 0x00, 0x0a, b'a', b'b']),
            Ok(Message::Connect {
                flags: Flags {
                    clean_session: true,
                    ..Flags::default()
                },
                duration: 10,
                client_id: "ab".into()
            })
        );
        // PUBLISH QoS 1 to topic id 1, msg id 2.
        let p = encode(&Message::Publish {
            flags: flags(1),
            topic: TopicRef::Id(1),
            msg_id: 2,
            payload: Bytes::from_static(b"x"),
        });
        assert_eq!(&p[..], &[0x08, 0x0c, 0x20, 0x00, 0x01, 0x00, 0x02, b'x']);
        // QoS -1 to a predefined id.
        let p = encode(&Message::Publish {
            flags: flags(-1),
            topic: TopicRef::Predefined(5),
            msg_id: 0,
            payload: Bytes::new(),
        });
        assert_eq!(p[2], 0x61);
    }

    #[test]
    fn a_long_message_has_a_three_byte_length() {
        let m = Message::Publish {
            flags: flags(0),
            topic: TopicRef::Id(1),
            msg_id: 0,
            payload: Bytes::from(vec![7u8; 300]),
        };
        let b = encode(&m);
        assert_eq!(b[0], 0x01);
        assert_eq!(u16::from_be_bytes([b[1], b[2]]) as usize, b.len());
        assert_eq!(decode(&b), Ok(m));
    }

    #[test]
    fn bad_datagrams_are_errors() {
        assert_eq!(decode(&[]), Err(SnError::Empty));
        assert!(matches!(decode(&[0x05, 0x17]), Err(SnError::Length { .. })));
        assert!(matches!(
            decode(&[0x02, 0x17, 0x00]),
            Err(SnError::Length { .. })
        ));
        assert!(matches!(decode(&[0x01, 0x00]), Err(SnError::Short(_))));
        assert!(matches!(
            decode(&[0x01]),
            Err(SnError::Length { .. } | SnError::Short(_))
        ));
        assert_eq!(decode(&[0x02, 0x03]), Err(SnError::UnknownType(0x03)));
        assert_eq!(
            decode(&[0x03, 0x0e, 0x00]),
            Err(SnError::Short("acknowledgement"))
        );
        assert_eq!(
            decode(&[0x03, 0x17, 0x00]),
            Err(SnError::Trailing("message"))
        );
        assert_eq!(
            decode(&[0x04, 0x04, 0x00, 0x01]),
            Err(SnError::Short("CONNECT"))
        );
        assert_eq!(
            decode(&[0x05, 0x04, 0x00, 0x02, 0x00]),
            Err(SnError::ProtocolId(2))
        );
        assert_eq!(
            decode(&[0x06, 0x04, 0x00, 0x01, 0x00, 0x0a]),
            Err(SnError::ClientIdLength(0))
        );
        assert_eq!(
            decode(&[0x07, 0x0c, 0x03, 0, 1, 0, 1]),
            Err(SnError::TopicIdType("PUBLISH"))
        );
        assert_eq!(
            decode(&[0x07, 0x0a, 0, 0, 0, 1, 0xff]),
            Err(SnError::NotUtf8("REGISTER"))
        );
    }
}
