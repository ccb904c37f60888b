//! The broker's own words for MQTT: what every part of the broker speaks, whatever codec or
//! transport is underneath. `codec` turns bytes into these and these into bytes; no codec
//! crate's type goes further than `codec`.

use std::net::SocketAddr;

use bytes::Bytes;

pub use super::reason::Reason;

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
    /// MQTT 5: a PUBREC whose reason code says the message was not accepted (0x80 and up):
    /// the exchange ends there, with no PUBREL.
    PubRecRefused(u16, Reason),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, SubOptions)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// The reason code is 0 (normal) before MQTT 5.
    Disconnect(Disconnect),
    /// MQTT 5 AUTH (enhanced authentication), which this broker does not offer.
    Auth(Reason),
}

/// A client's DISCONNECT. MQTT 5 gives it a reason, and may change the session's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason: Reason,
    pub session_expiry: Option<u32>,
}

/// What a SUBSCRIBE asks of one filter: the QoS, and MQTT 5's subscription options (all off
/// before MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    pub qos: QoS,
    /// Not sent the messages this client publishes itself.
    pub no_local: bool,
    /// Sent with the retain flag as it was published, not cleared.
    pub retain_as_published: bool,
    /// 0: send the retained messages; 1: only if the subscription is new; 2: never.
    pub retain_handling: u8,
    /// The SUBSCRIBE's Subscription Identifier, sent with every message the filter matches;
    /// 0 for none.
    pub id: u32,
}

impl SubOptions {
    /// A 3.1/3.1.1 subscription: the QoS alone.
    pub fn qos(qos: QoS) -> Self {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            id: 0,
        }
    }
}

/// A CONNECT packet (MQTT 3.1, 3.1.1 or 5).
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    /// 3 for MQTT 3.1 (`MQIsdp`), 4 for MQTT 3.1.1, 5 for MQTT 5.
    pub level: u8,
    pub keep_alive: u16,
    pub client_id: String,
    /// Clean Start in MQTT 5: whatever session the client id had is discarded first.
    pub clean_session: bool,
    pub will: Option<Will>,
    pub username: Option<String>,
    /// Passwords are binary data in MQTT 3.1.1, not necessarily UTF-8.
    pub password: Option<Bytes>,
    /// MQTT 5's CONNECT properties; None before MQTT 5.
    pub v5: Option<Box<ConnectV5>>,
}

/// The CONNECT properties of MQTT 5, with the spec's defaults where the client sent none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectV5 {
    /// Seconds the session outlives the connection: 0 ends it with the connection,
    /// `u32::MAX` never.
    pub session_expiry: u32,
    /// How many QoS 1/2 messages the client takes unacknowledged at once.
    pub receive_maximum: u16,
    /// The largest packet the client accepts, whole; None: no limit but the protocol's.
    pub max_packet_size: Option<u32>,
    pub topic_alias_maximum: u16,
    pub request_response_information: bool,
    /// false: reason strings and user properties only on CONNACK and DISCONNECT.
    pub request_problem_information: bool,
    pub user: Vec<(String, String)>,
    /// Enhanced authentication, which this broker does not offer (CONNACK 0x8C).
    pub auth_method: Option<String>,
}

impl Default for ConnectV5 {
    fn default() -> Self {
        ConnectV5 {
            session_expiry: 0,
            receive_maximum: u16::MAX,
            max_packet_size: None,
            topic_alias_maximum: 0,
            request_response_information: false,
            request_problem_information: true,
            user: Vec::new(),
            auth_method: None,
        }
    }
}

/// The last will carried in a CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5: the will's message properties.
    pub props: Option<Box<MessageProps>>,
    /// MQTT 5: seconds to wait after the connection ends before publishing the will.
    pub delay: u32,
}

/// The MQTT 5 properties that travel with a message from its publisher to its subscribers,
/// passed on untouched (but for the expiry, which counts down).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProps {
    /// Payload Format Indicator 1: the payload is UTF-8 (checked when it arrives).
    pub payload_utf8: bool,
    /// Message Expiry Interval: the message is dropped from queues once it runs out, and
    /// a subscriber is sent the time left.
    pub expiry: Option<Expiry>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user: Vec<(String, String)>,
    /// The Subscription Identifiers of the subscriptions a message is delivered for (the
    /// broker's to add, per subscriber).
    pub subscription_ids: Vec<u32>,
}

/// A message's lifetime: `secs` from `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub secs: u32,
    pub from: std::time::Instant,
}

impl Expiry {
    pub fn starting_now(secs: u32) -> Self {
        Expiry {
            secs,
            from: std::time::Instant::now(),
        }
    }

    /// Whole seconds left at `now`, rounded up; None once it has run out.
    pub fn left(&self, now: std::time::Instant) -> Option<u32> {
        let passed = now.saturating_duration_since(self.from);
        let total = std::time::Duration::from_secs(self.secs as u64);
        let left = total.checked_sub(passed).filter(|d| !d.is_zero())?;
        Some(left.as_secs() as u32 + (left.subsec_nanos() > 0) as u32)
    }
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
    /// MQTT 5 properties; None when there are none (and always before MQTT 5).
    pub props: Option<Box<MessageProps>>,
    /// MQTT 5 Topic Alias, 0 for none: with a topic it sets the alias, with an empty topic
    /// it stands for the topic it was set to (the connection puts the topic back).
    pub alias: u16,
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
    /// MQTT 5 only (0x8C): the client asked for enhanced authentication.
    BadAuthMethod = 0x8C,
}

/// What a SUBACK says of one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeCode {
    Granted(QoS),
    /// 0x80 before MQTT 5; MQTT 5 says why (the reason is 0x80 or more).
    Refused(Reason),
}

impl SubscribeCode {
    /// The byte on the wire for a client of this protocol level.
    pub fn byte(self, level: u8) -> u8 {
        match self {
            SubscribeCode::Granted(q) => q as u8,
            SubscribeCode::Refused(_) if level < 5 => 0x80,
            SubscribeCode::Refused(r) => r.0,
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
        /// MQTT 5's CONNACK properties; None before MQTT 5 (and ignored there).
        v5: Option<ConnAckV5<'a>>,
    },
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: QoS,
        /// Ignored for QoS 0; never 0 otherwise.
        pkid: u16,
        retain: bool,
        dup: bool,
        /// MQTT 5 only.
        props: Option<&'a MessageProps>,
        /// MQTT 5 Topic Alias, 0 for none; with `alias_only` the topic is left out (the
        /// client has the alias already) and `topic` is there for the trace.
        alias: u16,
        alias_only: bool,
        /// MQTT 5: the Subscription Identifiers of the subscriptions it is sent for.
        sub_ids: &'a [u32],
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    /// MQTT 5: an acknowledgement with a reason code other than success.
    AckWith {
        kind: AckKind,
        pkid: u16,
        reason: Reason,
    },
    SubAck {
        pkid: u16,
        codes: &'a [SubscribeCode],
    },
    /// `codes`: one per filter, MQTT 5 only (0x00 or 0x11, no subscription existed).
    UnsubAck {
        pkid: u16,
        codes: &'a [Reason],
    },
    PingResp,
    /// MQTT 5 only: the server closes the connection, and says why.
    Disconnect(Reason),
}

/// The four acknowledgements of QoS 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

/// What an MQTT 5 CONNACK tells the client beyond the 3.1.1 fields. The capabilities it
/// announces are the broker's own (see `codec_v5`); these vary by connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnAckV5<'a> {
    /// The client id the broker gave a client that sent none.
    pub assigned_id: Option<&'a str>,
    /// The largest packet the broker accepts.
    pub max_packet_size: u32,
    /// How many topic aliases the client may set.
    pub topic_alias_maximum: u16,
}

/// How packets to one client are written: its protocol level, and whether it wants reason
/// strings (MQTT 5's Request Problem Information).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub level: u8,
    pub problem_info: bool,
    /// MQTT 5: the Topic Alias Maximum the broker offered the client.
    pub max_alias: u16,
    /// MQTT 5: the largest packet the client takes (`u32::MAX`: no limit of its own); a
    /// Reason String that would take a packet past it is left out.
    pub max_packet: u32,
}

impl Dialect {
    /// MQTT 3.1.1, and what a connection speaks until its CONNECT says otherwise.
    pub const V4: Dialect = Dialect {
        level: 4,
        problem_info: false,
        max_alias: 0,
        max_packet: u32::MAX,
    };

    pub fn is_v5(self) -> bool {
        self.level >= 5
    }
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
    /// Not a door: the local side of a bridge to another broker (`broker/bridge/`).
    Bridge,
    /// MQTT-SN 1.2 over UDP, through the gateway (`broker/sn/`).
    MqttSn,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "TCP",
            Transport::WebSocket => "WebSocket",
            Transport::Tls => "TLS",
            Transport::SecureWebSocket => "WebSocket/TLS",
            Transport::Bridge => "bridge",
            Transport::MqttSn => "MQTT-SN/UDP",
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
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}
