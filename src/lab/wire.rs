//! A client's side of MQTT 3.1/3.1.1 on the wire: it encodes what a client sends and decodes
//! what a broker sends (the broker's codec does the opposite). Small on purpose: the lab client
//! needs the control a library will not give (not pinging, dropping the socket).

use bytes::{Buf, Bytes, BytesMut};

use crate::broker::QoS;

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum FromBroker {
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
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
        codes: Vec<u8>,
    },
    UnsubAck(u16),
    PingResp,
}

/// What a CONNECT carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFields<'a> {
    pub level: u8,
    pub client_id: &'a str,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Topic, payload, QoS, retain.
    pub will: Option<(&'a str, &'a [u8], QoS, bool)>,
}

pub fn connect(out: &mut Vec<u8>, c: &ConnectFields) {
    let mut body = Vec::new();
    let (name, level) = if c.level == 3 {
        ("MQIsdp", 3)
    } else {
        ("MQTT", 4)
    };
    string(&mut body, name.as_bytes());
    body.push(level);
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    if let Some((_, _, qos, retain)) = c.will {
        flags |= 0x04 | (qos as u8) << 3 | if retain { 0x20 } else { 0 };
    }
    if c.username.is_some() {
        flags |= 0x80;
        if c.password.is_some() {
            flags |= 0x40;
        }
    }
    body.push(flags);
    body.extend_from_slice(&c.keep_alive.to_be_bytes());
    string(&mut body, c.client_id.as_bytes());
    if let Some((topic, payload, _, _)) = c.will {
        string(&mut body, topic.as_bytes());
        string(&mut body, payload);
    }
    if let Some(u) = c.username {
        string(&mut body, u.as_bytes());
        if let Some(p) = c.password {
            string(&mut body, p.as_bytes());
        }
    }
    packet(out, 0x10, &body);
}

pub fn publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    retain: bool,
    dup: bool,
) {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    string(&mut body, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let first = 0x30 | (dup as u8) << 3 | (qos as u8) << 1 | retain as u8;
    packet(out, first, &body);
}

pub fn subscribe(out: &mut Vec<u8>, pkid: u16, filter: &str, qos: QoS) {
    let mut body = pkid.to_be_bytes().to_vec();
    string(&mut body, filter.as_bytes());
    body.push(qos as u8);
    packet(out, 0x82, &body);
}

pub fn unsubscribe(out: &mut Vec<u8>, pkid: u16, filter: &str) {
    let mut body = pkid.to_be_bytes().to_vec();
    string(&mut body, filter.as_bytes());
    packet(out, 0xA2, &body);
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70).
pub fn ack(out: &mut Vec<u8>, first: u8, pkid: u16) {
    packet(out, first, &pkid.to_be_bytes());
}

pub fn pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xC0, 0]);
}

pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xE0, 0]);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

/// The next whole packet in `buf`, if there is one; an error for what no broker sends.
pub fn decode(buf: &mut BytesMut) -> Result<Option<FromBroker>, String> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err("remaining length longer than 4 bytes".into());
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(i);
    let mut body = buf.split_to(len).freeze();
    let id = |body: &Bytes| -> Result<u16, String> {
        (body.len() >= 2)
            .then(|| u16::from_be_bytes([body[0], body[1]]))
            .ok_or_else(|| "packet id missing".to_owned())
    };
    Ok(Some(match first >> 4 {
        2 if body.len() == 2 => FromBroker::ConnAck {
            session_present: body[0] & 1 == 1,
            code: body[1],
        },
        3 => {
            let qos = QoS::from_bits((first >> 1) & 3).ok_or("PUBLISH with QoS 3")?;
            if body.len() < 2 {
                return Err("PUBLISH without a topic".into());
            }
            let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
            if body.len() < 2 + tlen {
                return Err("PUBLISH topic past the packet".into());
            }
            let topic = String::from_utf8(body[2..2 + tlen].to_vec())
                .map_err(|_| "topic not UTF-8".to_owned())?;
            body.advance(2 + tlen);
            let pkid = if qos == QoS::AtMostOnce {
                0
            } else {
                let p = id(&body)?;
                body.advance(2);
                p
            };
            FromBroker::Publish {
                topic,
                payload: body,
                qos,
                pkid,
                retain: first & 1 == 1,
                dup: first & 8 == 8,
            }
        }
        4 => FromBroker::PubAck(id(&body)?),
        5 => FromBroker::PubRec(id(&body)?),
        6 => FromBroker::PubRel(id(&body)?),
        7 => FromBroker::PubComp(id(&body)?),
        9 => FromBroker::SubAck {
            pkid: id(&body)?,
            codes: body[2..].to_vec(),
        },
        11 => FromBroker::UnsubAck(id(&body)?),
        13 => FromBroker::PingResp,
        t => return Err(format!("unexpected packet type {t} from the broker")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::codec;
    use crate::broker::protocol::{Outgoing, Packet, SubscribeCode};

    /// What this side encodes the broker's codec decodes, and the other way round.
    #[test]
    fn agrees_with_the_broker_codec() {
        let mut out = Vec::new();
        connect(
            &mut out,
            &ConnectFields {
                level: 4,
                client_id: "lab-1",
                clean_session: false,
                keep_alive: 10,
                username: Some("alice"),
                password: Some("pw"),
                will: Some(("lab/will", b"gone", QoS::AtLeastOnce, true)),
            },
        );
        publish(&mut out, "lab/a", b"21.5", QoS::ExactlyOnce, 7, true, true);
        let mut buf = BytesMut::from(&out[..]);
        let Packet::Connect(c) = codec::decode(&mut buf, 1 << 20).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(c.client_id, "lab-1");
        assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        assert_eq!(c.will.unwrap().payload, &b"gone"[..]);
        let Packet::Publish(p) = codec::decode(&mut buf, 1 << 20).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.pkid, p.dup, p.retain, &p.payload[..]),
            (7, true, true, &b"21.5"[..])
        );

        let mut wire = BytesMut::new();
        codec::encode(
            &mut wire,
            Outgoing::Publish {
                topic: "lab/a",
                payload: b"x",
                qos: QoS::AtLeastOnce,
                pkid: 3,
                retain: false,
                dup: true,
                props: None,
                alias: 0,
                alias_only: false,
                sub_ids: &[],
            },
        );
        let codes = [
            SubscribeCode::Granted(QoS::AtMostOnce),
            SubscribeCode::Refused(crate::broker::reason::Reason::UNSPECIFIED),
        ];
        codec::encode(
            &mut wire,
            Outgoing::SubAck {
                pkid: 2,
                codes: &codes,
            },
        );
        codec::encode(&mut wire, Outgoing::PingResp);
        assert_eq!(
            decode(&mut wire).unwrap().unwrap(),
            FromBroker::Publish {
                topic: "lab/a".into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtLeastOnce,
                pkid: 3,
                retain: false,
                dup: true
            }
        );
        assert_eq!(
            decode(&mut wire).unwrap().unwrap(),
            FromBroker::SubAck {
                pkid: 2,
                codes: vec![0, 0x80]
            }
        );
        assert_eq!(decode(&mut wire).unwrap().unwrap(), FromBroker::PingResp);
        assert_eq!(decode(&mut wire).unwrap(), None);
    }
}
