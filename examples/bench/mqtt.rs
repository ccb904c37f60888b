//! The MQTT 3.1.1 packets the benchmark sends and reads, written by hand: a client needs only a
//! handful of them, and a codec that appends straight into the connection's `BytesMut` costs
//! nothing per packet beyond the bytes themselves.

use bytes::{BufMut, BytesMut};

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;

/// Remaining length: 1 to 4 bytes, 7 bits each, least significant first.
fn put_len(buf: &mut BytesMut, mut n: usize) {
    assert!(n < 268_435_456, "MQTT packets are at most 256 MiB");
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).expect("MQTT strings are at most 65,535 bytes");
    buf.put_u16(len);
    buf.put_slice(s.as_bytes());
}

/// CONNECT, protocol level 4 (3.1.1), clean session.
pub fn connect(
    buf: &mut BytesMut,
    client_id: &str,
    keepalive: u16,
    clean: bool,
    user: Option<&str>,
    pass: Option<&str>,
) {
    let mut flags = if clean { 0x02 } else { 0 };
    let mut len = 10 + 2 + client_id.len();
    if let Some(u) = user {
        flags |= 0x80;
        len += 2 + u.len();
    }
    if let Some(p) = pass {
        flags |= 0x40;
        len += 2 + p.len();
    }
    buf.put_u8(0x10);
    put_len(buf, len);
    put_str(buf, "MQTT");
    buf.put_u8(4);
    buf.put_u8(flags);
    buf.put_u16(keepalive);
    put_str(buf, client_id);
    if let Some(u) = user {
        put_str(buf, u);
    }
    if let Some(p) = pass {
        put_str(buf, p);
    }
}

/// SUBSCRIBE to one filter (fixed-header flags 0b0010, as the spec requires).
pub fn subscribe(buf: &mut BytesMut, pid: u16, filter: &str, qos: u8) {
    buf.put_u8(0x82);
    put_len(buf, 2 + 2 + filter.len() + 1);
    buf.put_u16(pid);
    put_str(buf, filter);
    buf.put_u8(qos);
}

/// PUBLISH; `pid` is written for QoS 1 and 2 only (and must not be 0 there).
pub fn publish(buf: &mut BytesMut, topic: &str, qos: u8, pid: u16, retain: bool, payload: &[u8]) {
    debug_assert!(qos == 0 || pid != 0);
    let pid_len = if qos > 0 { 2 } else { 0 };
    buf.put_u8(0x30 | (qos << 1) | u8::from(retain));
    put_len(buf, 2 + topic.len() + pid_len + payload.len());
    put_str(buf, topic);
    if qos > 0 {
        buf.put_u16(pid);
    }
    buf.put_slice(payload);
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP; PUBREL carries its mandatory flags 0b0010.
pub fn ack(buf: &mut BytesMut, kind: u8, pid: u16) {
    let flags = if kind == PUBREL { 0x02 } else { 0 };
    buf.put_u8((kind << 4) | flags);
    buf.put_u8(2);
    buf.put_u16(pid);
}

pub fn pingreq(buf: &mut BytesMut) {
    buf.put_slice(&[0xC0, 0]);
}

pub fn disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xE0, 0]);
}

/// One packet read from the broker: type, fixed-header flags and body (variable header and
/// payload), borrowed from the read buffer.
pub struct Packet<'a> {
    pub kind: u8,
    pub flags: u8,
    pub body: &'a [u8],
}

impl Packet<'_> {
    /// The packet identifier that starts the variable header of acks and SUBACK.
    pub fn pid(&self) -> Option<u16> {
        match self.body {
            [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }
}

/// A PUBLISH the broker sent.
pub struct Publish<'a> {
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
    pub pid: u16,
    pub topic: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    pub fn publish(&self) -> Result<Publish<'a>, &'static str> {
        let qos = (self.flags >> 1) & 3;
        if qos == 3 {
            return Err("PUBLISH with QoS 3");
        }
        let b = self.body;
        let short = "PUBLISH shorter than its header";
        let tlen = u16::from_be_bytes([*b.first().ok_or(short)?, *b.get(1).ok_or(short)?]) as usize;
        let topic = b.get(2..2 + tlen).ok_or(short)?;
        let mut off = 2 + tlen;
        let mut pid = 0;
        if qos > 0 {
            pid = u16::from_be_bytes([*b.get(off).ok_or(short)?, *b.get(off + 1).ok_or(short)?]);
            off += 2;
        }
        Ok(Publish {
            qos,
            dup: self.flags & 0x08 != 0,
            retain: self.flags & 0x01 != 0,
            pid,
            topic,
            payload: &b[off..],
        })
    }
}

/// Decode the packet at the front of `buf`: `Ok(None)` while its bytes have not all arrived,
/// otherwise the packet and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, &'static str> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return Err("remaining length longer than 4 bytes");
        }
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let total = i + len;
    if buf.len() < total {
        return Ok(None);
    }
    let packet = Packet {
        kind: buf[0] >> 4,
        flags: buf[0] & 0x0f,
        body: &buf[i..total],
    };
    Ok(Some((packet, total)))
}
