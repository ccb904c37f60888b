//! The broker's own words for MQTT: what every part of the broker speaks, whatever codec or
//! transport is underneath. `codec` turns bytes into these and these into bytes; no codec
//! crate's type goes further than `codec`.

use std::net::SocketAddr;

use bytes::Bytes;

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS of two bits on the wire; 3 is not one.
    pub fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet a client may send to the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect(Connect),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect,
}

/// A CONNECT packet (MQTT 3.1 or 3.1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    /// 3 for MQTT 3.1 (`MQIsdp`), 4 for MQTT 3.1.1.
    pub level: u8,
    pub keep_alive: u16,
    pub client_id: String,
    pub clean_session: bool,
    pub will: Option<Will>,
    pub username: Option<String>,
    /// Passwords are binary data in MQTT 3.1.1, not necessarily UTF-8.
    pub password: Option<Bytes>,
}

/// The last will carried in a CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// A PUBLISH from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    /// 0 for QoS 0.
    pub pkid: u16,
    pub retain: bool,
    pub dup: bool,
}

/// CONNACK return codes (MQTT 3.1.1 table 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectCode {
    Accepted = 0,
    UnacceptableProtocol = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadCredentials = 4,
    NotAuthorized = 5,
}

/// What a SUBACK says of one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeCode {
    Granted(QoS),
    /// 0x80: not a valid filter, or one that matches no topic on the list.
    Refused,
}

impl SubscribeCode {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            SubscribeCode::Granted(q) => q as u8,
            SubscribeCode::Refused => 0x80,
        }
    }
}

/// A packet the broker sends. Borrowed, so that a message shared by many subscribers is
/// written straight from its one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing<'a> {
    ConnAck {
        session_present: bool,
        code: ConnectCode,
    },
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: QoS,
        /// Ignored for QoS 0; never 0 otherwise.
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
        codes: &'a [SubscribeCode],
    },
    UnsubAck(u16),
    PingResp,
}

/// How a client reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT in binary WebSocket frames (browsers).
    WebSocket,
    /// MQTT over TLS (`mqtts://`).
    Tls,
    /// MQTT in WebSocket frames over TLS (`wss://`).
    SecureWebSocket,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "TCP",
            Transport::WebSocket => "WebSocket",
            Transport::Tls => "TLS",
            Transport::SecureWebSocket => "WebSocket/TLS",
        })
    }
}

/// The other end of a connection: its address, the listener it came in on, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The address it reached: the listener's, with the machine's real address when the
    /// listener is bound to every address.
    pub local: SocketAddr,
    pub transport: Transport,
    /// When the socket was accepted: TLS, the WebSocket upgrade and CONNECT must all be done
    /// within one CONNECT timeout of it.
    pub accepted: std::time::Instant,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}
