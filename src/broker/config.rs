//! Settings of a running broker.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::auth::LoginLimits;
use super::users::Users;

/// Everything the broker needs to start. `Config::default()` is what `mqtt-lab --headless`
/// uses, with the topic list and users read from files by the caller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address and port to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where MQTT over WebSocket is served (`ws://ADDR/mqtt`), if anywhere.
    pub ws_listen: Option<SocketAddr>,
    /// Where MQTT over TLS is served (`mqtts://ADDR`), if anywhere; needs `tls`.
    pub tls_listen: Option<SocketAddr>,
    /// Where MQTT over WebSocket over TLS is served (`wss://ADDR/mqtt`); needs `tls`.
    pub wss_listen: Option<SocketAddr>,
    /// The TLS doors' certificate and settings (see `tls::server_config`).
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The local CA the certificate comes from, when the app made it: its file and SHA-256
    /// fingerprint, for the window to show a student what to trust.
    pub tls_ca: Option<(PathBuf, String)>,
    /// Advertise the listeners on the local network (mDNS/DNS-SD) under this name; only when
    /// bound beyond loopback.
    pub mdns: Option<super::mdns::MdnsConfig>,
    /// Keep retained messages and persistent sessions in this folder (`store::FILE_NAME`), so
    /// that they survive a restart or a crash; `None`: in memory only.
    pub data_dir: Option<PathBuf>,
    /// Write every packet to this pcap file (the trace is then on from the start).
    pub trace_file: Option<PathBuf>,
    /// The topic list: names, and patterns (filters) whose every match exists.
    pub topics: Vec<String>,
    /// Whether only what the list holds exists, or any topic a client uses.
    pub topics_mode: TopicsMode,
    /// Topics that may exist at once without being on the list (open mode, patterns).
    pub max_unlisted_topics: usize,
    /// Who may log in.
    pub users: Users,
    /// Where the users file lives, so that changes made while running can be saved there.
    pub users_path: Option<PathBuf>,
    /// Where the topic list lives, so that changes made while running can be saved there.
    pub topics_path: Option<PathBuf>,
    /// The bridges to other brokers, and the file they are saved to.
    pub bridges: Vec<super::bridge::BridgeConfig>,
    pub bridges_path: Option<PathBuf>,
    /// The MQTT-SN gateway (UDP), when on.
    pub sn: Option<super::sn::SnConfig>,
    /// How often `$SYS` topics are published; `None` turns them off.
    pub sys_interval: Option<Duration>,
    /// Largest packet a client may send, in bytes, fixed header included.
    pub max_packet_size: usize,
    /// MQTT 5: how many topic aliases a client may set (0: none).
    pub max_topic_alias: u16,
    /// MQTT 5: alias the topics sent to clients that say they take aliases. Off by default:
    /// mosquitto_sub 2.0.11 and paho-mqtt 2.x announce a Topic Alias Maximum and then cannot
    /// read an aliased PUBLISH.
    pub send_topic_aliases: bool,
    /// A socket that has not sent CONNECT after this long is closed.
    pub connect_timeout: Duration,
    /// Unacknowledged QoS 1/2 messages in flight to one client.
    pub max_inflight: usize,
    /// Messages queued for one client beyond the in-flight window (online or offline): the
    /// hard limit, in messages and in bytes (topic and payload); beyond it messages are dropped
    /// and counted.
    pub max_queued: usize,
    pub max_queued_bytes: usize,
    /// The queue's high-water mark, in messages and bytes: past it, the publishers whose
    /// messages go there are not read from until it drains under half (flow control). Kept at
    /// most half the hard limit.
    pub high_water: usize,
    pub high_water_bytes: usize,
    /// A subscriber whose queue has not moved for this long while over its high-water mark is
    /// stuck: it holds no publisher back any more, and `on_stuck` says what becomes of it.
    pub stall_timeout: Duration,
    pub on_stuck: OnStuck,
    /// PUBLISHes handed to one client's connection task and not yet written; more wait in its
    /// queue (`max_queued`).
    pub max_buffered: usize,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// A plain TCP connection quiet this long (nothing read, nothing to send, nothing owed)
    /// gives up its task and waits in the parking lot until it has something to do: an idle
    /// connection then costs well under half as much. `None`: connections keep their tasks.
    pub park_after: Option<Duration>,
    /// The threads that check passwords, and how many logins may wait for them.
    pub logins: LoginLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            ws_listen: None,
            tls_listen: None,
            wss_listen: None,
            tls: None,
            tls_ca: None,
            mdns: None,
            trace_file: None,
            data_dir: None,
            topics: Vec::new(),
            topics_mode: TopicsMode::Strict,
            max_unlisted_topics: 100_000,
            users: Users::default(),
            users_path: None,
            topics_path: None,
            bridges: Vec::new(),
            bridges_path: None,
            sn: None,
            sys_interval: Some(Duration::from_secs(10)),
            max_packet_size: 16 * 1024 * 1024,
            max_topic_alias: 10,
            send_topic_aliases: false,
            connect_timeout: Duration::from_secs(10),
            max_inflight: 20,
            max_queued: 100_000,
            max_queued_bytes: 64 * 1024 * 1024,
            high_water: 1000,
            high_water_bytes: 1024 * 1024,
            stall_timeout: Duration::from_secs(5),
            on_stuck: OnStuck::Drop,
            max_buffered: 1000,
            max_connections: 20_000,
            park_after: Some(Duration::from_secs(5)),
            logins: LoginLimits::default(),
        }
    }
}

/// What becomes of a subscriber whose queue stopped moving (see `Config::stall_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStuck {
    /// It stays connected; what overflows its queue is dropped and counted.
    #[default]
    Drop,
    /// It is disconnected (its session stays, if persistent, with its queue).
    Disconnect,
}

/// Which topics exist (see `table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicsMode {
    /// Only what the topic list holds: its names, and what its patterns match.
    #[default]
    Strict,
    /// Any valid topic, when a client uses it; those not on the list go when unused.
    Open,
}

impl TopicsMode {
    pub fn name(self) -> &'static str {
        match self {
            TopicsMode::Strict => "strict",
            TopicsMode::Open => "open",
        }
    }
}
