//! Bridges: this broker forwarding topics to and from other brokers.
//!
//! Each bridge is one task with two sides. The remote side is an MQTT 5 client (rumqttc) of
//! the other broker. The local side is a client of this broker without a socket: it registers
//! with the router as any connection does (its session, its queue, its place in the Clients
//! panel and the packet trace), so what comes in over a bridge meets the topic list and the
//! limits like any client's messages, and what waits to go out waits in its session, bounded
//! and counted, while the remote is away.
//!
//! Loops: the bridge subscribes with No Local on both sides, so a `both` rule never gets back
//! what it sent. Every message a bridge carries in or out gets this broker's id in a user
//! property ([`PATH_KEY`]), which MQTT 5 brokers (Mosquitto's MQTT 5 bridges too) pass on; a
//! bridge does not bring in, and the router does not take from a client, a message that
//! already has this broker's id: a message that goes round comes back at most once.

pub mod config;
mod remote;
mod run;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{BridgeConfig, Direction, TopicRule};

/// The user property a bridged message carries, once per broker it was bridged out of.
pub const PATH_KEY: &str = "mqtt-lab/bridged-by";

/// A message bridged through this many brokers is not forwarded again.
pub const MAX_HOPS: usize = 8;

/// Whether a message's user properties say it has been in the broker of this id.
pub fn has_been_in(user: &[(String, String)], broker_id: &str) -> bool {
    user.iter().any(|(k, v)| k == PATH_KEY && v == broker_id)
}

/// A new id for this broker in bridged messages' path: random, so that two brokers started
/// from the same files still differ.
pub fn new_broker_id() -> Arc<str> {
    use std::hash::BuildHasher;
    let seed = (std::process::id(), SystemTime::now());
    let n = std::collections::hash_map::RandomState::new().hash_one(seed);
    Arc::from(format!("{n:016x}"))
}

/// This broker's id, kept in its data folder (`broker-id`) so that a message bridged out
/// before a restart is known when it comes back after; made on first use. A folder that
/// cannot keep it gives a new id each start (logged).
pub fn broker_id_in(dir: &std::path::Path) -> Arc<str> {
    let path = dir.join("broker-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Arc::from(id);
        }
    }
    let id = new_broker_id();
    if let Err(e) = crate::broker::files::write_atomic(&path, format!("{id}\n").as_bytes()) {
        tracing::warn!(error = %e, "the broker's id for bridges is not kept across restarts");
    }
    id
}

/// What a bridge is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeState {
    /// In the file, `enabled: false`.
    Disabled,
    /// Connecting to the remote (the first try, or again after it went away).
    Connecting,
    Up {
        since: SystemTime,
    },
    /// The remote could not be reached or went away; trying again in a while.
    Waiting {
        retry_at: SystemTime,
    },
}

/// Messages through a bridge since it started (this configuration of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeCounters {
    /// Sent to the remote (and, at QoS 1 and 2, acknowledged by it).
    pub sent: u64,
    /// Taken from the remote and published here.
    pub received: u64,
    /// From the remote, but refused here (a topic not on the list, say).
    pub refused: u64,
    /// Not forwarded because they had been through this broker already.
    pub loops: u64,
}

/// A bridge as the window shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStatus {
    pub state: BridgeState,
    pub last_error: Option<String>,
    pub counters: BridgeCounters,
}

impl Default for BridgeStatus {
    fn default() -> Self {
        BridgeStatus {
            state: BridgeState::Connecting,
            last_error: None,
            counters: BridgeCounters::default(),
        }
    }
}

/// What every bridge task needs of the broker.
pub(crate) struct Context {
    pub broker: crate::broker::inproc::Broker,
    /// This broker's id in bridged messages' path.
    pub broker_id: Arc<str>,
    /// The broker's own address, shown as the bridge's when the remote's cannot be resolved.
    pub local_addr: SocketAddr,
}

struct Running {
    config: BridgeConfig,
    conn: u64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running bridges, owned by the router, which owns their configuration.
pub(crate) struct Bridges {
    ctx: Arc<Context>,
    running: HashMap<String, Running>,
}

impl Bridges {
    pub fn new(ctx: Context) -> Bridges {
        Bridges {
            ctx: Arc::new(ctx),
            running: HashMap::new(),
        }
    }

    pub fn broker_id(&self) -> &Arc<str> {
        &self.ctx.broker_id
    }

    /// Runs exactly the enabled bridges of `list`: those whose configuration changed start
    /// again, the others go on untouched.
    pub fn apply(&mut self, list: &[BridgeConfig]) {
        let wanted: HashMap<&str, &BridgeConfig> = list
            .iter()
            .filter(|b| b.enabled)
            .map(|b| (b.name.as_str(), b))
            .collect();
        self.running.retain(|name, r| {
            let keep = wanted.get(name.as_str()) == Some(&&r.config) && !r.task.is_finished();
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for (name, config) in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let conn = crate::broker::inproc::next_conn();
            let task = tokio::spawn(run::run(config.clone(), self.ctx.clone(), conn, stopped));
            self.running.insert(
                name.to_owned(),
                Running {
                    config: config.clone(),
                    conn,
                    stop,
                    task,
                },
            );
        }
    }

    /// Whether `conn` is the current run of the bridge `name` (a report from a run that was
    /// stopped is not).
    pub fn is_current(&self, name: &str, conn: u64) -> bool {
        self.running.get(name).is_some_and(|r| r.conn == conn)
    }

    /// Tells every bridge to stop (each says goodbye to its remote on its own).
    pub fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            let _ = r.stop.send(true);
        }
    }
}

/// How long a bridge waits before trying again, after `failures` tries in a row failed:
/// 1 s, doubling, at most a minute.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_id_is_kept_in_the_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let a = broker_id_in(dir.path());
        assert_eq!(a.len(), 16);
        assert_eq!(broker_id_in(dir.path()), a);
        assert_ne!(broker_id_in(tempfile::tempdir().unwrap().path()), a);
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn the_path_is_read_from_user_properties() {
        let user = vec![
            ("x".to_owned(), "a".to_owned()),
            (PATH_KEY.to_owned(), "b1".to_owned()),
        ];
        assert!(has_been_in(&user, "b1"));
        assert!(!has_been_in(&user, "a"));
    }
}
