//! The packet trace as a pcap file that Wireshark and tshark open and dissect as MQTT.
//!
//! Each MQTT packet becomes one TCP segment (more, for a packet larger than an IP packet) in a
//! raw IPv4 or IPv6 packet, between the client's address and the broker's on port 1883, with
//! sequence numbers kept per connection and direction, so that Wireshark's MQTT dissector picks
//! it up whatever the listener was: the trace is taken after TLS and WebSocket framing are
//! undone. Packets are written from their summaries: passwords are left out (the username
//! flag stays), and a will's message is empty.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::UNIX_EPOCH;

use super::trace::{Direction, Event, Summary, What};

/// LINKTYPE_RAW: each record is an IPv4 or IPv6 packet.
const LINKTYPE_RAW: u32 = 101;
const SNAPLEN: u32 = 262_144;
/// The port every connection is shown on, whatever it came in on: the one Wireshark's MQTT
/// dissector listens to.
pub const MQTT_PORT: u16 = 1883;
/// Connections whose sequence numbers are kept at once.
const MAX_CONNECTIONS: usize = 100_000;
/// TCP payload per segment: an IPv4 packet's length is 16 bits.
const SEGMENT: usize = 60_000;

/// Writes events as they come; `W` is a file for `--trace`, memory for an export.
pub struct PcapWriter<W: Write = BufWriter<File>> {
    out: W,
    /// Per connection: the next sequence numbers both ways, and whether it speaks MQTT 5.
    seqs: HashMap<u64, (u32, u32, bool)>,
}

impl PcapWriter {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: &Path) -> io::Result<PcapWriter> {
        let file = File::create(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        PcapWriter::new(BufWriter::new(file))
    }
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?; // GMT
        out.write_all(&0u32.to_le_bytes())?; // accuracy
        out.write_all(&SNAPLEN.to_le_bytes())?;
        out.write_all(&LINKTYPE_RAW.to_le_bytes())?;
        Ok(PcapWriter {
            out,
            seqs: HashMap::new(),
        })
    }

    pub fn write(&mut self, e: &Event) -> io::Result<()> {
        let client = e.peer;
        let broker = SocketAddr::new(e.local.ip(), MQTT_PORT);
        // Sequence numbers start where a connection was first seen; Wireshark needs no SYN.
        // Bounded: a close that was dropped must not leave its entry for ever (connections
        // seen again start afresh, which Wireshark shows and dissects all the same).
        if self.seqs.len() >= MAX_CONNECTIONS && !self.seqs.contains_key(&e.conn) {
            self.seqs.clear();
        }
        let seqs = self.seqs.entry(e.conn).or_insert((1, 1, false));
        match &e.what {
            What::Packet(s) => {
                // What follows an MQTT 5 CONNECT is written as MQTT 5, as Wireshark reads it.
                if let Summary::Connect { level, .. } = s {
                    seqs.2 = *level >= 5;
                }
                let bytes = mqtt_bytes(s, &e.client_id, seqs.2);
                let (from, to, seq, ack) = match e.direction {
                    Direction::In => (client, broker, &mut seqs.0, seqs.1),
                    Direction::Out => (broker, client, &mut seqs.1, seqs.0),
                };
                for chunk in bytes.chunks(SEGMENT) {
                    let packet = ip_packet(from, to, *seq, ack, TCP_PSH_ACK, chunk);
                    *seq = seq.wrapping_add(chunk.len() as u32);
                    record(&mut self.out, e, &packet)?;
                }
            }
            What::Closed(_) => {
                let (s, c, _) = *seqs;
                let packet = ip_packet(broker, client, c, s, TCP_FIN_ACK, &[]);
                record(&mut self.out, e, &packet)?;
                self.seqs.remove(&e.conn);
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The events as one pcap file's bytes (the window's export).
pub fn to_bytes<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).expect("writing to memory");
    for e in events {
        w.write(e).expect("writing to memory");
    }
    w.into_inner()
}

fn record(out: &mut impl Write, e: &Event, packet: &[u8]) -> io::Result<()> {
    let t = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let len = packet.len() as u32;
    out.write_all(&(t.as_secs() as u32).to_le_bytes())?;
    out.write_all(&t.subsec_micros().to_le_bytes())?;
    out.write_all(&len.min(SNAPLEN).to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&packet[..packet.len().min(SNAPLEN as usize)])
}

const TCP_PSH_ACK: u8 = 0x18;
const TCP_FIN_ACK: u8 = 0x11;

fn ip_packet(
    from: SocketAddr,
    to: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + data.len());
    tcp.extend_from_slice(&from.port().to_be_bytes());
    tcp.extend_from_slice(&to.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4); // 20-byte header
    tcp.push(flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum (filled below), urgent pointer
    tcp.extend_from_slice(data);
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    match (v4(from.ip()), v4(to.ip())) {
        (Some(src), Some(dst)) => {
            let sum = tcp_checksum(&pseudo_v4(src.octets(), dst.octets(), tcp.len()), &tcp);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());
            let mut ip = Vec::with_capacity(20 + tcp.len());
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]); // id, DF, TTL, TCP, checksum
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            let sum = checksum(&ip, 0);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            ip.extend_from_slice(&tcp);
            ip
        }
        _ => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let (src, dst): (Ipv6Addr, Ipv6Addr) = (v6(from.ip()), v6(to.ip()));
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
            let sum = tcp_checksum(&pseudo, &tcp);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());
            let mut ip = Vec::with_capacity(40 + tcp.len());
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]); // TCP, hop limit
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            ip.extend_from_slice(&tcp);
            ip
        }
    }
}

fn pseudo_v4(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, 6]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn tcp_checksum(pseudo: &[u8], tcp: &[u8]) -> u16 {
    checksum(tcp, sum16(pseudo, 0))
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u32) << 8;
    }
    acc
}

/// The Internet checksum (RFC 1071) of `data`, continuing from `acc`.
fn checksum(data: &[u8], acc: u32) -> u16 {
    let mut acc = sum16(data, acc);
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The MQTT 3.1.1 bytes of a summary, or with `v5` MQTT 5's (without properties: see the
/// module's note on what is left out).
pub fn mqtt_bytes(s: &Summary, client_id: &str, v5: bool) -> Vec<u8> {
    let mut body = Vec::new();
    // MQTT 5's property length, for packets written without properties.
    let no_props = |body: &mut Vec<u8>| {
        if v5 {
            body.push(0);
        }
    };
    let first = match s {
        Summary::Connect {
            level,
            clean_session,
            keep_alive,
            will,
            username,
            password: _,
        } => {
            let name = if *level == 3 { "MQIsdp" } else { "MQTT" };
            string(&mut body, name);
            body.push(*level);
            let mut flags = 0u8;
            if username.is_some() {
                flags |= 0x80;
            }
            if let Some((_, qos, retain)) = will {
                flags |= 0x04 | (*qos as u8) << 3 | if *retain { 0x20 } else { 0 };
            }
            if *clean_session {
                flags |= 0x02;
            }
            body.push(flags);
            body.extend_from_slice(&keep_alive.to_be_bytes());
            no_props(&mut body);
            string(&mut body, client_id);
            if let Some((topic, _, _)) = will {
                no_props(&mut body);
                string(&mut body, topic);
                body.extend_from_slice(&0u16.to_be_bytes());
            }
            if let Some(user) = username {
                string(&mut body, user);
            }
            0x10
        }
        Summary::ConnAck {
            session_present,
            code,
            ..
        } => {
            body.extend_from_slice(&[*session_present as u8, *code]);
            no_props(&mut body);
            0x20
        }
        Summary::Publish {
            topic,
            qos,
            pkid,
            dup,
            retain,
            payload,
            ..
        } => {
            string(&mut body, topic);
            if *qos as u8 > 0 {
                body.extend_from_slice(&pkid.to_be_bytes());
            }
            no_props(&mut body);
            body.extend_from_slice(payload);
            0x30 | (*dup as u8) << 3 | (*qos as u8) << 1 | *retain as u8
        }
        Summary::PubAck(id) => id_only(&mut body, *id, 0x40),
        Summary::PubRec(id) => id_only(&mut body, *id, 0x50),
        Summary::PubRel(id) => id_only(&mut body, *id, 0x62),
        Summary::PubComp(id) => id_only(&mut body, *id, 0x70),
        Summary::Subscribe { pkid, filters } => {
            body.extend_from_slice(&pkid.to_be_bytes());
            no_props(&mut body);
            for (f, q) in filters {
                string(&mut body, f);
                body.push(*q as u8);
            }
            0x82
        }
        Summary::SubAck { pkid, codes } => {
            body.extend_from_slice(&pkid.to_be_bytes());
            no_props(&mut body);
            body.extend_from_slice(codes);
            0x90
        }
        Summary::Unsubscribe { pkid, filters } => {
            body.extend_from_slice(&pkid.to_be_bytes());
            no_props(&mut body);
            for f in filters {
                string(&mut body, f);
            }
            0xA2
        }
        Summary::UnsubAck(id, codes) => {
            body.extend_from_slice(&id.to_be_bytes());
            no_props(&mut body);
            if v5 {
                body.extend(codes.iter().map(|r| r.0));
            }
            0xB0
        }
        Summary::PingReq => 0xC0,
        Summary::PingResp => 0xD0,
        Summary::Disconnect(reason) => {
            if v5 && reason.0 != 0 {
                body.push(reason.0);
            }
            0xE0
        }
        Summary::AckWith { kind, pkid, reason } => {
            body.extend_from_slice(&pkid.to_be_bytes());
            body.push(reason.0);
            super::codec::ack_byte1(*kind)
        }
        Summary::Auth(reason) => {
            body.push(reason.0);
            0xF0
        }
    };
    let mut out = Vec::with_capacity(body.len() + 5);
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
    out.extend_from_slice(&body);
    out
}

fn id_only(body: &mut Vec<u8>, id: u16, first: u8) -> u8 {
    body.extend_from_slice(&id.to_be_bytes());
    first
}

fn string(body: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    body.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    body.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::codec;
    use crate::broker::protocol::{Packet, QoS};
    use bytes::{Bytes, BytesMut};

    /// What the trace writes for a client's packet decodes back to the same packet.
    #[test]
    fn client_packets_survive_the_round_trip() {
        let cases = [
            Summary::Subscribe {
                pkid: 7,
                filters: vec![
                    ("lab/#".into(), QoS::ExactlyOnce),
                    ("a/+".into(), QoS::AtMostOnce),
                ],
            },
            Summary::Publish {
                topic: "lab/t".into(),
                qos: QoS::AtLeastOnce,
                pkid: 9,
                dup: true,
                retain: true,
                size: 3,
                payload: Bytes::from_static(b"21."),
            },
            Summary::PubRel(4),
            Summary::Unsubscribe {
                pkid: 2,
                filters: vec!["x".into()],
            },
            Summary::PingReq,
            Summary::Disconnect(Default::default()),
        ];
        for s in cases {
            let mut buf = BytesMut::from(&mqtt_bytes(&s, "c", false)[..]);
            let p = codec::decode(&mut buf, 1 << 20).unwrap().unwrap();
            let back = match p {
                Packet::Publish(p) => Summary::Publish {
                    size: p.payload.len(),
                    topic: p.topic,
                    qos: p.qos,
                    pkid: p.pkid,
                    dup: p.dup,
                    retain: p.retain,
                    payload: p.payload,
                },
                Packet::Subscribe { pkid, filters } => Summary::Subscribe {
                    pkid,
                    filters: filters.into_iter().map(|(f, o)| (f, o.qos)).collect(),
                },
                Packet::Unsubscribe { pkid, filters } => Summary::Unsubscribe { pkid, filters },
                Packet::PubRel(id) => Summary::PubRel(id),
                Packet::PingReq => Summary::PingReq,
                Packet::Disconnect(d) => Summary::Disconnect(d.reason),
                other => panic!("{other:?}"),
            };
            assert_eq!(back, s);
            assert!(buf.is_empty());
        }
        let connect = Summary::Connect {
            level: 4,
            clean_session: false,
            keep_alive: 30,
            will: Some(("lab/will".into(), QoS::AtLeastOnce, true)),
            username: Some("alice".into()),
            password: true,
        };
        let mut buf = BytesMut::from(&mqtt_bytes(&connect, "student-1", false)[..]);
        let Packet::Connect(c) = codec::decode(&mut buf, 1 << 20).unwrap().unwrap() else {
            panic!("not a CONNECT");
        };
        assert_eq!(
            (
                c.client_id.as_str(),
                c.keep_alive,
                c.clean_session,
                c.username.as_deref()
            ),
            ("student-1", 30, false, Some("alice"))
        );
        assert_eq!(c.password, None, "passwords never reach the trace");
        let w = c.will.unwrap();
        assert_eq!(
            (w.topic.as_str(), w.qos, w.retain),
            ("lab/will", QoS::AtLeastOnce, true)
        );
    }

    #[test]
    fn checksums_verify() {
        let p = ip_packet(
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:1883".parse().unwrap(),
            1,
            1,
            TCP_PSH_ACK,
            b"\xc0\x00x",
        );
        assert_eq!(checksum(&p[..20], 0), 0, "IPv4 header");
        let pseudo = pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], p.len() - 20);
        assert_eq!(checksum(&p[20..], sum16(&pseudo, 0)), 0, "TCP");
    }
}
