//! The messages between connection tasks and the router, and the public commands.
//!
//! Connection tasks own their socket; the router owns every session. They meet only here.

use std::sync::Arc;

use super::protocol::QoS;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::codec::DecodeError;
use super::protocol::{
    AckKind, ConnectCode, MessageProps, Peer, Publish, Reason, SubOptions, SubscribeCode, Will,
};
use super::users::{User, Users};
use std::path::PathBuf;

/// Identifies one connection (not one client: a client id can have many connections in turn).
pub type ConnId = u64;

/// What the router receives.
#[derive(Debug)]
pub(crate) enum ToRouter {
    /// A client passed CONNECT checks and login; the router answers with CONNACK on `tx`.
    Connect(Box<ConnectRequest>),
    /// Packets from one connection, in order, as many as one read brought.
    Packets {
        conn: ConnId,
        packets: Vec<Inbound>,
    },
    /// The connection is gone; wills fire unless the client sent DISCONNECT.
    Closed {
        conn: ConnId,
        reason: CloseReason,
        /// MQTT 5: the session expiry the client's DISCONNECT set.
        session_expiry: Option<u32>,
    },
    /// A connection's outbound channel has room again (it was full; see `Online::room_wanted`).
    Writable {
        conn: ConnId,
    },
    /// A connection was turned away before it reached the router (login refused, bad CONNECT).
    Refused {
        peer: Peer,
        /// The client id if the CONNECT got that far.
        client_id: Option<String>,
        reason: Refusal,
    },
    Command(Command),
    /// An MQTT-SN node went to sleep (`true`) or woke: see `Online::asleep`.
    Asleep {
        conn: ConnId,
        asleep: bool,
    },
    /// A bridge's state and counters changed (`conn`: which run of it, so that a stopped
    /// run's last word does not overwrite its successor's).
    BridgeStatus {
        name: String,
        conn: ConnId,
        status: super::bridge::BridgeStatus,
    },
    /// The users file changed on disk: what it now holds, or why it could not be read.
    UsersFile {
        stamp: super::files::FileStamp,
        loaded: Result<Users, String>,
    },
    /// The saver wrote the users file (`Some`, with the version it wrote) or failed to.
    UsersSaved(Option<super::files::FileStamp>),
    /// The file of an `OpenBridgesFile`, read and parsed off the router.
    BridgesFileRead {
        path: PathBuf,
        list: Result<Vec<super::bridge::BridgeConfig>, String>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// The file of an `OpenTopicsFile`, read and parsed off the router.
    TopicsFileRead {
        path: PathBuf,
        list: Result<Vec<String>, String>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// The passwords of an `UpsertUser` or `AddUsers` are hashed: the users can be saved, all
    /// or none. `new`: they must all be new (a batch); otherwise one user, whose rules stay.
    UsersHashed {
        users: Vec<User>,
        new: bool,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
}

/// A client that has connected, as the router needs to know it.
#[derive(Debug)]
pub(crate) struct ConnectRequest {
    pub conn: ConnId,
    pub client_id: Arc<str>,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub peer: Arc<Peer>,
    pub level: u8,
    /// MQTT 5's Session Expiry Interval; None before MQTT 5 (where `clean_session` says it).
    pub session_expiry: Option<u32>,
    /// MQTT 5's other settings, for the window (the expiry there is the session's).
    pub v5: Option<Box<super::snapshot::V5Settings>>,
    pub tx: super::outbox::Sender<Outbound>,
    /// This connection's limits (in-flight window, queue, buffer).
    pub limits: super::session::Limits,
}

/// A packet from a client that the router must see.
#[derive(Debug)]
pub(crate) enum Inbound {
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, SubOptions)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
}

/// A published message as the broker passes it on: one allocation per message, shared by every
/// subscriber's queue and connection.
#[derive(Debug)]
pub(crate) struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// MQTT 5 properties, passed on to MQTT 5 subscribers: shared by every copy of the
    /// message, the copies made for subscribers with identifiers included.
    pub props: Option<Arc<MessageProps>>,
    /// MQTT 5: the Subscription Identifiers of the one subscriber this copy is for.
    pub sub_ids: Box<[u32]>,
}

impl Message {
    /// Its MQTT 5 Message Expiry Interval has run out: not to be sent to anyone it has not
    /// been sent to yet.
    pub fn expired(&self) -> bool {
        self.props
            .as_ref()
            .and_then(|p| p.expiry)
            .is_some_and(|e| e.left(std::time::Instant::now()).is_none())
    }

    /// The same message with the Subscription Identifiers of one subscriber's matching
    /// subscriptions (a copy of the properties only: the payload stays shared).
    pub fn with_ids(&self, ids: &[u32]) -> Arc<Message> {
        Arc::new(Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            props: self.props.clone(),
            sub_ids: ids.into(),
        })
    }

    /// What the message weighs in a queue's byte limit: its properties too, which may be
    /// larger than the payload.
    pub fn size(&self) -> usize {
        let props = self
            .props
            .as_deref()
            .map_or(0, |p| super::properties::message_len(p, None));
        self.topic.len() + self.payload.len() + props + 5 * self.sub_ids.len()
    }
}

/// A PUBLISH for one subscriber. Small on purpose: every connection's channel holds blocks of
/// these, and an idle connection must cost little.
#[derive(Debug, Clone)]
pub(crate) struct OutPublish {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub pkid: u16,
    pub retain: bool,
    pub dup: bool,
}

impl OutPublish {
    /// The PUBLISH to write for it, with an MQTT 5 topic alias (0: none; `alias_only`: the
    /// topic left out, the client has the alias).
    pub fn outgoing(&self, alias: u16, alias_only: bool) -> super::protocol::Outgoing<'_> {
        super::protocol::Outgoing::Publish {
            topic: &self.msg.topic,
            payload: &self.msg.payload,
            qos: self.qos,
            pkid: self.pkid,
            retain: self.retain,
            dup: self.dup,
            props: self.msg.props.as_deref(),
            alias,
            alias_only,
            sub_ids: &self.msg.sub_ids,
        }
    }
}

/// What the router sends to a connection task, which encodes and writes it.
#[derive(Debug)]
pub(crate) enum Outbound {
    ConnAck {
        session_present: bool,
        /// MQTT 5: the client id the broker gave a client that sent none.
        assigned_id: Option<Arc<str>>,
    },
    Publish(OutPublish),
    PubRel(u16),
    SubAck {
        pkid: u16,
        codes: Box<[SubscribeCode]>,
    },
    /// `codes`: MQTT 5's, one per filter.
    UnsubAck {
        pkid: u16,
        codes: Box<[Reason]>,
    },
    /// The acknowledgements the connection holds for the packets before this point may go
    /// once this epoch is on disk (0: at once). With persistence, and for MQTT 5 clients.
    Acks(u64),
    /// `Acks`, and the MQTT 5 reason codes of those acknowledgements that are not a plain
    /// success (by packet id: a PUBLISH to a topic not on the list, say).
    AcksWith(u64, Box<[(AckKind, u16, Reason)]>),
    /// What follows waits until this epoch is on disk (a SUBACK after a persistent session's
    /// subscriptions changed). Only with persistence; not an answer of its own.
    After(u64),
    /// Stop reading from the client (`true`: a subscriber its messages go to is over its
    /// high-water mark), or read again (`false`).
    Hold(bool),
    /// Close the connection (kicked, taken over, shutting down). The router has already dealt
    /// with the will.
    Close(Box<CloseReason>),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT: the one clean ending, its will is discarded.
    ClientDisconnected,
    /// An MQTT 5 client sent DISCONNECT with reason 0x04: it wants its will published.
    ClientDisconnectedWithWill,
    /// The client closed the socket without DISCONNECT.
    SocketClosed,
    SocketError(std::io::ErrorKind),
    KeepaliveTimeout,
    ProtocolError(Violation),
    /// Another connection with the same client id took the session.
    TakenOver,
    Kicked,
    /// Its queue did not move for the stall deadline (`OnStuck::Disconnect`).
    Stuck(std::time::Duration),
    ServerShutdown,
    /// A bridge's local side, closed because its connection to the other broker ended.
    BridgeRemoteLost(String),
    /// An MQTT-SN node the gateway let go: a new CONNECT from its address, or the gateway
    /// stopping. Not lost, so no will.
    Superseded,
}

impl CloseReason {
    /// The DISCONNECT reason an MQTT 5 client is sent before the broker closes, if it is
    /// told anything (a socket that is gone, or a client that left, is not).
    pub fn disconnect_reason(&self) -> Option<Reason> {
        Some(match self {
            CloseReason::KeepaliveTimeout => Reason::KEEP_ALIVE_TIMEOUT,
            CloseReason::ProtocolError(Violation::Decode(e)) => e.reason(),
            CloseReason::ProtocolError(_) => Reason::PROTOCOL_ERROR,
            CloseReason::TakenOver => Reason::SESSION_TAKEN_OVER,
            CloseReason::Kicked => Reason::ADMINISTRATIVE_ACTION,
            CloseReason::Stuck(_) => Reason::QUOTA_EXCEEDED,
            CloseReason::ServerShutdown => Reason::SERVER_SHUTTING_DOWN,
            CloseReason::ClientDisconnected
            | CloseReason::ClientDisconnectedWithWill
            | CloseReason::SocketClosed
            | CloseReason::SocketError(_)
            | CloseReason::BridgeRemoteLost(_)
            | CloseReason::Superseded => return None,
        })
    }

    /// Whether the client's will is published for this ending.
    pub fn fires_will(&self) -> bool {
        !matches!(
            self,
            CloseReason::ClientDisconnected | CloseReason::ServerShutdown | CloseReason::Superseded
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ClientDisconnected => f.write_str("client sent DISCONNECT"),
            CloseReason::ClientDisconnectedWithWill => {
                f.write_str("client sent DISCONNECT 0x04, with its will")
            }
            CloseReason::SocketClosed => f.write_str("client closed the connection"),
            CloseReason::SocketError(e) => write!(f, "socket error: {e}"),
            CloseReason::KeepaliveTimeout => f.write_str("keepalive expired"),
            CloseReason::ProtocolError(e) => write!(f, "protocol error: {e}"),
            CloseReason::TakenOver => f.write_str("another connection took over the client id"),
            CloseReason::Kicked => f.write_str("kicked"),
            CloseReason::Stuck(d) => {
                write!(f, "stuck: its queue did not move for {} s", d.as_secs_f32())
            }
            CloseReason::ServerShutdown => f.write_str("broker shutting down"),
            CloseReason::BridgeRemoteLost(e) => write!(f, "bridge: {e}"),
            CloseReason::Superseded => {
                f.write_str("MQTT-SN: a new CONNECT from its address, or the gateway stopping")
            }
        }
    }
}

/// A client that broke the protocol after CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{0}")]
    Decode(DecodeError),
    #[error("second CONNECT on one connection")]
    SecondConnect,
}

/// Why a connection was turned away before the router took it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no CONNECT within {0:?}")]
    NoConnect(std::time::Duration),
    #[error("protocol error: first packet is not CONNECT")]
    NotConnect,
    #[error("a TLS handshake on the plain MQTT port (TLS clients use the mqtts:// port)")]
    TlsOnPlainPort,
    #[error("{0}")]
    Upgrade(super::websocket::UpgradeError),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("enhanced authentication ({0:?}) is not offered: user name and password only")]
    BadAuthMethod(String),
    #[error("bad CONNECT: {0}")]
    BadConnect(DecodeError),
    #[error("unsupported protocol level {0}: CONNACK 0x01")]
    UnsupportedLevel(u8),
    #[error("empty client id without clean session: CONNACK 0x02")]
    IdentifierRejected,
    #[error("client id {0:?} is reserved for the broker's own clients: CONNACK 0x02")]
    ReservedId(String),
    #[error(
        "{waiting} logins already waiting to be checked: CONNACK 0x03 (server unavailable), try again"
    )]
    Busy { waiting: usize },
    #[error("bad user name or password for {user:?}: CONNACK 0x04")]
    BadCredentials { user: String },
    #[error("anonymous login while anonymous logins are off: CONNACK 0x05")]
    NotAuthorized,
}

impl Refusal {
    /// The CONNACK code the client is told, if it gets a CONNACK at all.
    pub fn code(&self) -> Option<ConnectCode> {
        match self {
            Refusal::NoConnect(_)
            | Refusal::NotConnect
            | Refusal::TlsOnPlainPort
            | Refusal::BadConnect(_)
            | Refusal::Upgrade(_)
            | Refusal::Tls(_) => None,
            Refusal::UnsupportedLevel(_) => Some(ConnectCode::UnacceptableProtocol),
            Refusal::IdentifierRejected | Refusal::ReservedId(_) => {
                Some(ConnectCode::IdentifierRejected)
            }
            Refusal::Busy { .. } => Some(ConnectCode::ServerUnavailable),
            Refusal::BadCredentials { .. } => Some(ConnectCode::BadCredentials),
            Refusal::NotAuthorized => Some(ConnectCode::NotAuthorized),
            Refusal::BadAuthMethod(_) => Some(ConnectCode::BadAuthMethod),
        }
    }

    /// A login was refused, rather than a malformed or missing CONNECT.
    pub fn is_login(&self) -> bool {
        matches!(
            self,
            Refusal::Busy { .. } | Refusal::BadCredentials { .. } | Refusal::NotAuthorized
        )
    }
}

/// Requests to the broker from its embedder (the window, tests).
#[derive(Debug)]
pub enum Command {
    /// Close a client's connection from the broker side; its will is published. Answers an
    /// error if no client of that id is connected.
    Kick {
        client_id: String,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Forget an offline persistent session. Answers an error if there is none of that id.
    /// Forget every retained message and every offline session (with its queued messages), in
    /// memory and in the data folder. Connected clients keep their sessions.
    ClearState {
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    DiscardSession {
        client_id: String,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Add an entry to the list: a topic name, or a pattern (a filter whose every match
    /// exists); not under `$`. A topic that appeared without being on the list is put on it.
    AddTopic {
        topic: String,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Delete an entry of the list: a topic goes with its retained message and history, a
    /// pattern with the topics only it let appear; subscriptions that match no topic any more
    /// are removed.
    RemoveTopic {
        topic: String,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Replace the whole topic list (e.g. loaded from a file), with the same rules as one by one.
    /// With a path, that file becomes the topic list in use (and is written).
    ReplaceTopics {
        topics: Vec<String>,
        path: Option<PathBuf>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Which topics exist: the list's (strict) or any a client uses (open). Leaving open mode
    /// takes away the topics only it let appear.
    SetTopicsMode { mode: super::config::TopicsMode },
    /// Read a topic list file and make it the list in use (and its file), all or nothing; a
    /// file that does not parse changes nothing and the answer says where it is wrong.
    OpenTopicsFile {
        path: PathBuf,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Add a user, or set the password and e-mail of the user of that name. The broker checks
    /// them and hashes the password (off its router); the plain password goes no further.
    UpsertUser {
        username: String,
        email: Option<String>,
        password: String,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    RemoveUser {
        username: String,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Add many new users at once (a class's accounts), all with the same rules; all or none.
    AddUsers {
        /// User names and their passwords.
        users: Vec<(String, String)>,
        rules: super::acl::Rules,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Set what a user (`None`: clients without a user name) may publish and subscribe to.
    /// Connected clients get the new rules at once; their subscriptions the rules no longer
    /// allow are removed.
    SetRules {
        username: Option<String>,
        rules: super::acl::Rules,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    SetAllowAnonymous {
        allow: bool,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// New users for new logins; saved to the users file in use, if any.
    SetUsers {
        users: Users,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Replace the bridges (all or none: a list that does not check out changes nothing).
    /// With a path, that file becomes the bridges file in use; the file in use is written.
    SetBridges {
        bridges: Vec<super::bridge::BridgeConfig>,
        path: Option<PathBuf>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Read a bridges file and make it the bridges (and the file) in use, all or nothing.
    OpenBridgesFile {
        path: PathBuf,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// A copy of the broker's state.
    Snapshot {
        reply: oneshot::Sender<super::snapshot::Snapshot>,
    },
    /// Close every connection and stop.
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_weighs_its_properties_and_copies_share_them() {
        let props = MessageProps {
            user: vec![("k".into(), "v".repeat(10_000))],
            ..Default::default()
        };
        let m = Message {
            topic: Arc::from("lab/a"),
            payload: Bytes::from_static(b"x"),
            props: Some(Arc::new(props)),
            sub_ids: Box::new([]),
        };
        assert!(m.size() > 10_000, "{}", m.size());
        let copy = m.with_ids(&[7]);
        assert!(Arc::ptr_eq(
            m.props.as_ref().unwrap(),
            copy.props.as_ref().unwrap()
        ));
        assert_eq!(&*copy.sub_ids, &[7]);
    }
}
