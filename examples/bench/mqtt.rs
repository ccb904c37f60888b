//! The MQTT 3.1.1 and MQTT 5 packets the benchmark sends and reads, written by hand: a client
//! needs only a handful of them, and a codec that appends straight into the connection's
//! `BytesMut` costs nothing per packet beyond the bytes themselves.
//!
//! MQTT 5 (OASIS MQTT 5.0) differs here only by properties: CONNECT, CONNACK, PUBLISH and
//! SUBSCRIBE / SUBACK carry a property length (a Variable Byte Integer) and properties; PUBACK,
//! PUBREC, PUBREL and PUBCOMP may carry a reason code and properties after the packet id, or be
//! the 2-byte 3.1.1 form (success). PINGREQ and a DISCONNECT of `[0xE0, 0]` are the same.

use bytes::{BufMut, BytesMut};

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// MQTT 5 property identifiers the benchmark writes or reads (MQTT 5 section 2.2.2.2).
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;

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

/// CONNECT: protocol level 4 (3.1.1), or with `v5_props` level 5 (MQTT 5) with those
/// properties (already encoded, without their length) after the keep alive. Clean Session (MQTT
/// 5: Clean Start) is `clean`.
pub fn connect(
    buf: &mut BytesMut,
    client_id: &str,
    keepalive: u16,
    clean: bool,
    user: Option<&str>,
    pass: Option<&str>,
    v5_props: Option<&[u8]>,
) {
    let mut flags = if clean { 0x02 } else { 0 };
    let props_len = v5_props.map_or(0, |p| varint_len(p.len()) + p.len());
    let mut len = 10 + props_len + 2 + client_id.len();
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
    buf.put_u8(if v5_props.is_some() { 5 } else { 4 });
    buf.put_u8(flags);
    buf.put_u16(keepalive);
    if let Some(props) = v5_props {
        put_len(buf, props.len());
        buf.put_slice(props);
    }
    put_str(buf, client_id);
    if let Some(u) = user {
        put_str(buf, u);
    }
    if let Some(p) = pass {
        put_str(buf, p);
    }
}

/// Bytes a Variable Byte Integer takes (the remaining length and property lengths).
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
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

/// SUBSCRIBE for an MQTT 5 client: no properties; the options byte is the QoS alone (No Local,
/// Retain As Published and Retain Handling 0, as a 3.1.1 subscription behaves).
pub fn subscribe_v5(buf: &mut BytesMut, pid: u16, filter: &str, qos: u8) {
    buf.put_u8(0x82);
    put_len(buf, 2 + 1 + 2 + filter.len() + 1);
    buf.put_u16(pid);
    buf.put_u8(0);
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

/// PUBLISH for an MQTT 5 client: with a Topic Alias property when `alias` is not 0 (`topic`
/// empty: the alias stands for the topic it was set to), else no properties.
pub fn publish_v5(
    buf: &mut BytesMut,
    topic: &str,
    qos: u8,
    pid: u16,
    retain: bool,
    alias: u16,
    payload: &[u8],
) {
    debug_assert!(qos == 0 || pid != 0);
    let pid_len = if qos > 0 { 2 } else { 0 };
    let props_len = if alias != 0 { 3 } else { 0 };
    buf.put_u8(0x30 | (qos << 1) | u8::from(retain));
    put_len(
        buf,
        2 + topic.len() + pid_len + 1 + props_len + payload.len(),
    );
    put_str(buf, topic);
    if qos > 0 {
        buf.put_u16(pid);
    }
    buf.put_u8(props_len as u8);
    if alias != 0 {
        buf.put_u8(TOPIC_ALIAS);
        buf.put_u16(alias);
    }
    buf.put_slice(payload);
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP; PUBREL carries its mandatory flags 0b0010. The 2-byte
/// form is also MQTT 5's for success without properties.
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

    /// An acknowledgement's reason code: 0 (success) for the 2-byte form, which is all MQTT
    /// 3.1.1 has; MQTT 5's byte after the packet id otherwise. The same for DISCONNECT's first
    /// byte (none: normal disconnection).
    pub fn reason(&self) -> u8 {
        let at = if self.kind == DISCONNECT { 0 } else { 2 };
        self.body.get(at).copied().unwrap_or(0)
    }
}

/// A PUBLISH the broker sent.
pub struct Publish<'a> {
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
    pub pid: u16,
    /// Empty in an MQTT 5 PUBLISH that uses a topic alias set before.
    pub topic: &'a [u8],
    /// MQTT 5 Topic Alias (0: none; always 0 in 3.1.1).
    pub alias: u16,
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    pub fn publish(&self) -> Result<Publish<'a>, &'static str> {
        let (p, off) = self.publish_header()?;
        Ok(Publish {
            payload: &self.body[off..],
            ..p
        })
    }

    /// An MQTT 5 PUBLISH: as `publish`, with the properties after the packet id, of which the
    /// Topic Alias is kept.
    pub fn publish_v5(&self) -> Result<Publish<'a>, &'static str> {
        let (mut p, mut off) = self.publish_header()?;
        let short = "PUBLISH shorter than its header";
        let b = self.body;
        // The common case first: no properties.
        if *b.get(off).ok_or(short)? == 0 {
            off += 1;
        } else {
            let (props, used) = properties(&b[off..])?;
            for prop in Properties(props) {
                if let (TOPIC_ALIAS, value) = prop? {
                    if value == 0 {
                        return Err("Topic Alias 0");
                    }
                    p.alias = value as u16;
                }
            }
            off += used;
        }
        p.payload = &b[off..];
        Ok(p)
    }

    /// The part of a PUBLISH both versions share (flags, topic, packet id), with no payload
    /// yet, and where the rest starts: the payload in 3.1.1, the properties in MQTT 5.
    fn publish_header(&self) -> Result<(Publish<'a>, usize), &'static str> {
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
        let p = Publish {
            qos,
            dup: self.flags & 0x08 != 0,
            retain: self.flags & 0x01 != 0,
            pid,
            topic,
            alias: 0,
            payload: &[],
        };
        Ok((p, off))
    }
}

/// The MQTT 5 properties at the front of `b` (after their length) and how many bytes the
/// length and the properties took.
pub fn properties(b: &[u8]) -> Result<(&[u8], usize), &'static str> {
    let (len, n) = varint(b)?;
    let props = b
        .get(n..n + len)
        .ok_or("properties longer than their packet")?;
    Ok((props, n + len))
}

/// A Variable Byte Integer at the front of `b`: its value and its length.
fn varint(b: &[u8]) -> Result<(usize, usize), &'static str> {
    let mut value = 0usize;
    for (i, &byte) in b.iter().enumerate().take(4) {
        value |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err("a bad Variable Byte Integer")
}

/// The properties of one packet, one by one: identifier and value, the value read for the
/// integer ones (byte, two-byte, four-byte, variable byte) and 0 for the others (strings,
/// binary data, user properties), which are skipped.
pub struct Properties<'a>(pub &'a [u8]);

impl Iterator for Properties<'_> {
    type Item = Result<(u8, u32), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&id, rest) = self.0.split_first()?;
        match property_value(id, rest) {
            Ok((value, used)) => {
                self.0 = &rest[used..];
                Some(Ok((id, value)))
            }
            Err(e) => {
                self.0 = &[];
                Some(Err(e))
            }
        }
    }
}

/// The value of property `id` at the front of `rest` (0 for those that are not integers) and
/// the bytes it takes.
fn property_value(id: u8, rest: &[u8]) -> Result<(u32, usize), &'static str> {
    let short = "a property longer than its packet";
    let two = |at: usize| -> Result<usize, &'static str> {
        let s = rest.get(at..at + 2).ok_or(short)?;
        Ok(u16::from_be_bytes([s[0], s[1]]) as usize)
    };
    let (value, used) = match id {
        // Byte.
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
            (u32::from(*rest.first().ok_or(short)?), 1)
        }
        // Two Byte Integer.
        0x13 | 0x21 | 0x22 | 0x23 => (two(0)? as u32, 2),
        // Four Byte Integer.
        0x02 | 0x11 | 0x18 | 0x27 => {
            let s = rest.get(..4).ok_or(short)?;
            (u32::from_be_bytes([s[0], s[1], s[2], s[3]]), 4)
        }
        // Variable Byte Integer (Subscription Identifier).
        0x0b => {
            let (v, n) = varint(rest)?;
            (v as u32, n)
        }
        // UTF-8 string or binary data.
        0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => (0, 2 + two(0)?),
        // User Property: a string pair.
        0x26 => {
            let k = two(0)?;
            (0, 2 + k + 2 + two(2 + k)?)
        }
        _ => return Err("an unknown property"),
    };
    if rest.len() < used {
        return Err(short);
    }
    Ok((value, used))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Packet<'_> {
        let (p, used) = decode(buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        p
    }

    #[test]
    fn connect_v5_says_its_length_and_properties() {
        let mut b = BytesMut::new();
        connect(
            &mut b,
            "c1",
            60,
            true,
            None,
            None,
            Some(&[TOPIC_ALIAS_MAXIMUM, 0, 10]),
        );
        let p = one(&b);
        assert_eq!(p.kind, 1);
        // "MQTT", level 5, Clean Start, keep alive 60, 3 bytes of properties, the client id.
        assert_eq!(
            p.body,
            [
                &[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x22, 0, 10][..],
                &[0, 2, b'c', b'1'][..]
            ]
            .concat()
        );
    }

    #[test]
    fn publish_v5_reads_back_with_and_without_an_alias() {
        for (topic, alias, qos) in [("bench/0", 0, 1), ("bench/0", 3, 1), ("", 3, 0)] {
            let mut b = BytesMut::new();
            publish_v5(&mut b, topic, qos, 7, false, alias, b"payload");
            let m = one(&b).publish_v5().unwrap();
            assert_eq!(m.topic, topic.as_bytes());
            assert_eq!(m.alias, alias);
            assert_eq!(m.qos, qos);
            assert_eq!(m.pid, if qos > 0 { 7 } else { 0 });
            assert_eq!(m.payload, b"payload");
        }
    }

    #[test]
    fn publish_v5_skips_other_properties() {
        // Topic "t", QoS 0; properties: Payload Format 1, Content Type "x", User Property
        // ("k", "v"), Subscription Identifier 200 (two bytes), Topic Alias 2.
        let props = [
            &[0x01, 1][..],
            &[0x03, 0, 1, b'x'],
            &[0x26, 0, 1, b'k', 0, 1, b'v'],
            &[0x0b, 0xc8, 0x01],
            &[0x23, 0, 2],
        ]
        .concat();
        let mut body = vec![0, 1, b't', props.len() as u8];
        body.extend_from_slice(&props);
        body.extend_from_slice(b"data");
        let m = Packet {
            kind: PUBLISH,
            flags: 0,
            body: &body,
        }
        .publish_v5()
        .unwrap();
        assert_eq!((m.topic, m.alias, m.payload), (&b"t"[..], 2, &b"data"[..]));
        let values: Vec<_> = Properties(&props).map(Result::unwrap).collect();
        assert_eq!(
            values,
            [(0x01, 1), (0x03, 0), (0x26, 0), (0x0b, 200), (0x23, 2)]
        );
    }

    #[test]
    fn bad_properties_are_errors() {
        // Cut short, unknown, Topic Alias 0, longer than the packet.
        assert!(Properties(&[0x23, 0]).next().unwrap().is_err());
        assert!(Properties(&[0x7f, 0]).next().unwrap().is_err());
        let publish = |body: &[u8]| {
            Packet {
                kind: PUBLISH,
                flags: 0,
                body,
            }
            .publish_v5()
            .map(|_| ())
        };
        assert!(publish(&[0, 1, b't', 3, 0x23, 0, 0]).is_err());
        assert!(publish(&[0, 1, b't', 9, 0x23, 0, 1]).is_err());
        assert!(publish(&[0, 1, b't']).is_err());
    }

    #[test]
    fn ack_reasons_short_and_long() {
        assert_eq!(one(&[0x40, 2, 0, 1]).reason(), 0);
        assert_eq!(one(&[0x40, 3, 0, 1, 0x10]).reason(), 0x10);
        assert_eq!(one(&[0x50, 4, 0, 1, 0x87, 0]).reason(), 0x87);
        assert_eq!(one(&[0xe0, 0]).reason(), 0);
        assert_eq!(one(&[0xe0, 1, 0x94]).reason(), 0x94);
    }
}
