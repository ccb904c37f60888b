//! A copy of the broker's state at one moment, for the window (and tests) to read.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::protocol::QoS;

use std::path::PathBuf;
use std::sync::Arc;

use super::events::Event;
use super::history::HistoryItem;
use super::stats::StatsSnapshot;
use super::users::Users;

/// Everything the window shows, taken in one go by the router.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub uptime: Duration,
    pub clients: Vec<ClientInfo>,
    /// The topics that exist (not `$SYS`), listed or not, by name.
    pub topics: Vec<TopicInfo>,
    /// The list's patterns.
    pub patterns: Vec<PatternInfo>,
    pub topics_mode: super::config::TopicsMode,
    /// PUBLISHes dropped because no more topics not on the list may appear.
    pub topics_full: u64,
    pub stats: StatsSnapshot,
    /// Messages not delivered (unlisted topic, slow or offline QoS 0 client, full queue).
    pub dropped: u64,
    /// PUBLISHes to topics that do not exist (not on the list, or no more may appear).
    pub unlisted: u64,
    pub refused_subscriptions: u64,
    pub refused_connections: u64,
    /// PUBLISHes (and wills) their client's rules did not allow.
    pub denied: u64,
    /// The users who may log in now (hashes only).
    pub users: Arc<Users>,
    /// The files changes are saved to.
    pub topics_path: Option<PathBuf>,
    pub users_path: Option<PathBuf>,
    /// The most recent events, oldest first.
    pub events: Vec<Event>,
    /// Where the state is persisted and how it goes, when it is.
    pub persistence: Option<super::store::StoreStatus>,
    /// Persistent sessions (online or not) and the QoS 1/2 messages they hold.
    pub persistent_sessions: usize,
    pub stored_messages: usize,
    /// Topics with a retained message.
    pub retained: usize,
    /// The bridges, in their file's order.
    pub bridges: Vec<BridgeInfo>,
    pub bridges_path: Option<PathBuf>,
    /// Messages dropped on arrival because they had been bridged out of this broker before.
    pub bridge_loops: u64,
    /// The MQTT-SN gateway's datagrams, when it runs: taken, and dropped (malformed, from no
    /// client, out of place, over a client's queue).
    pub sn: Option<(u64, u64)>,
}

/// A bridge: its configuration, what it is doing, and what waits for its remote.
#[derive(Debug, Clone)]
pub struct BridgeInfo {
    pub config: super::bridge::BridgeConfig,
    pub status: super::bridge::BridgeStatus,
    /// Messages for the remote held by the bridge's session here (queued or in flight).
    pub queued: usize,
    /// Messages for the remote dropped because its queue was full.
    pub dropped: u64,
}

/// A session, online or offline.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub clean_session: bool,
    /// MQTT 5: seconds the session outlives its connection, when that is finite.
    pub session_expiry: Option<u32>,
    /// Present while connected.
    pub connection: Option<ConnectionInfo>,
    pub subscriptions: Vec<(String, QoS)>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub dropped: u64,
    pub inflight: usize,
    pub queued: usize,
    /// Bytes (topics and payloads) of the queued messages.
    pub queued_bytes: usize,
    /// Whether flow control is holding anyone back because of it, or it back.
    pub flow: Flow,
    /// When it was last connected (for offline sessions).
    pub last_seen: SystemTime,
}

/// A client's part in flow control (see the router's `flow` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flow {
    #[default]
    Flowing,
    /// Its queue is over the high-water mark: this many publishers wait for it.
    Holding(usize),
    /// Its queue has not moved for the stall deadline: nobody waits for it, and what overflows
    /// its queue is dropped.
    Stuck,
    /// It publishes to a subscriber over its high-water mark: it is not read from for now.
    HeldBack,
}

/// The connection of an online client.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// How it reached the broker (TCP, ...).
    pub transport: super::protocol::Transport,
    pub username: Option<String>,
    /// 3 (MQTT 3.1), 4 (3.1.1) or 5.
    pub protocol_level: u8,
    pub keep_alive: u16,
    pub since: SystemTime,
    /// What an MQTT 5 client asked for; None before MQTT 5.
    pub v5: Option<V5Settings>,
}

/// An MQTT 5 client's settings, as its CONNECT (and DISCONNECT) gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V5Settings {
    /// Seconds the session outlives the connection (`u32::MAX`: for ever).
    pub session_expiry: u32,
    /// Unacknowledged QoS 1/2 messages it takes at once.
    pub receive_maximum: u16,
    /// Topic aliases the broker may set for it.
    pub topic_alias_maximum: u16,
    /// The largest packet it takes; None: no limit of its own.
    pub max_packet_size: Option<u32>,
}

/// A pattern on the topic list: a filter whose every match exists.
#[derive(Debug, Clone)]
pub struct PatternInfo {
    pub pattern: String,
    /// Topics that exist now and match it.
    pub topics: usize,
}

/// A topic that exists.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    /// On the list by name; otherwise it appeared (open mode, a pattern) and goes when unused.
    pub listed: bool,
    pub subscribers: usize,
    /// Shared subscriptions matching it (`$share/GROUP/FILTER`), with their member counts.
    pub shared: Vec<(String, usize)>,
    pub retained: Option<bytes::Bytes>,
    pub messages: u64,
    pub last_publish: Option<SystemTime>,
    /// Oldest first, at most ten.
    pub history: Vec<HistoryItem>,
}
