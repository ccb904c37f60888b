//! The MQTT 3.1/3.1.1 broker. Knows nothing of any window: an embedder starts it with a
//! [`Config`], sends it [`Command`]s and reads its counters.
//!
//! Layout: `listener` accepts, `connection` runs one task per client (socket, codec, keepalive),
//! `router` owns all state (sessions, topics, retained messages, history, users) and is the only
//! one to change it. They talk over bounded channels (`link`).

pub mod acl;
pub mod auth;
pub mod bridge;
pub mod codec;
pub mod codec_v5;
pub mod config;
pub mod events;
pub mod files;
pub mod history;
pub mod link;
pub mod mdns;
pub mod pcap;
pub mod properties;
pub mod protocol;
pub mod reason;
pub mod sn;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod sys;
pub mod topic_list;
pub mod topics;
pub mod trace;
pub mod users;

mod connection;
mod filter_trie;
mod inproc;
mod listener;
mod outbox;
mod parking;
mod retain_order;
mod router;
mod saver;
mod session;
mod table;
#[cfg(test)]
mod test_inputs;
pub mod tls;
mod topic_alias;
mod topic_trie;
mod users_watch;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::warn;

pub use config::Config;
pub use link::{CloseReason, Command};
pub use protocol::QoS;
pub use snapshot::Snapshot;
pub use stats::{Stats, StatsSnapshot};

use connection::Shared;
use link::ToRouter;
pub use protocol::Transport;
use router::Router;
use session::Limits;

/// Messages waiting for the router before connections have to wait. Each is at most one read's
/// worth of packets (64 KiB), so this bounds what the router has not yet looked at.
const ROUTER_QUEUE: usize = 512;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}{hint}", hint = if source.kind() == std::io::ErrorKind::AddrInUse { " (is another MQTT broker running? pick another port with --port)" } else { "" })]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for {door} clients on {addr}: {source}{hint}", hint = if source.kind() == std::io::ErrorKind::AddrInUse { " (pick another port)" } else { "" })]
    BindDoor {
        door: Transport,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{door} asked for, but no TLS certificate was given")]
    NoCertificate { door: Transport },
    #[error("cannot write the packet trace: {0}")]
    Trace(std::io::Error),
    #[error("{0}")]
    Store(#[from] store::StoreError),
}

/// A running broker. Dropping it does not stop it: call [`Broker::shutdown`].
pub struct Broker {
    local_addr: SocketAddr,
    doors: Vec<(Transport, SocketAddr)>,
    handle: BrokerHandle,
    stats: Arc<Stats>,
    listeners: Vec<JoinHandle<()>>,
    parking: Option<JoinHandle<()>>,
    router: JoinHandle<()>,
    saver: JoinHandle<()>,
    watcher: Option<JoinHandle<()>>,
    advertiser: Option<(mdns::Advertiser, JoinHandle<()>)>,
    trace: (trace::Trace, JoinHandle<()>),
    /// The store's writer, which ends once the router is gone, after its last commit.
    store_thread: Option<std::thread::JoinHandle<()>>,
}

/// Sends commands to a running broker; cheap to clone.
#[derive(Clone)]
pub struct BrokerHandle {
    tx: mpsc::Sender<ToRouter>,
}

impl BrokerHandle {
    /// Sends a command; false if the broker has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(ToRouter::Command(cmd)).await.is_ok()
    }

    /// A copy of the broker's state, or None if it has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if !self.send(Command::Snapshot { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// Sends a command without waiting (from a thread outside the runtime, e.g. a window);
    /// false if the broker has stopped or its queue is full.
    pub fn try_send(&self, cmd: Command) -> bool {
        self.tx.try_send(ToRouter::Command(cmd)).is_ok()
    }
}

impl Broker {
    /// Binds the listener and starts the router and the accept loop on the current runtime.
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        // The other doors, each bound now so that a port in use stops the start with its name.
        let mut doors = Vec::new();
        for (door, addr) in [
            (Transport::WebSocket, config.ws_listen),
            (Transport::Tls, config.tls_listen),
            (Transport::SecureWebSocket, config.wss_listen),
        ] {
            let Some(addr) = addr else { continue };
            if matches!(door, Transport::Tls | Transport::SecureWebSocket) && config.tls.is_none() {
                return Err(StartError::NoCertificate { door });
            }
            let bind = |source| StartError::BindDoor { door, addr, source };
            let l = TcpListener::bind(addr).await.map_err(bind)?;
            let a = l.local_addr().map_err(bind)?;
            doors.push((door, l, a));
        }
        // MQTT-SN's UDP port, bound with the others so that one in use stops the start by name.
        let sn_socket = match &config.sn {
            Some(sn) => {
                let bind = |source| StartError::BindDoor {
                    door: Transport::MqttSn,
                    addr: sn.listen,
                    source,
                };
                let socket = tokio::net::UdpSocket::bind(sn.listen).await.map_err(bind)?;
                let addr = socket.local_addr().map_err(bind)?;
                Some((socket, addr))
            }
            None => None,
        };
        // After the ports (a port in use fails first, and the data folder is not opened for
        // nothing) and before anything is served: a data folder that cannot be used stops the
        // start before anyone is accepted.
        let (store, loaded) = match &config.data_dir {
            Some(dir) => {
                let (store, loaded) = store::open(dir)?;
                tracing::info!(file = %store::file_in(dir).display(), "retained messages and persistent sessions are kept on disk");
                (Some(store), loaded)
            }
            None => (None, store::Loaded::default()),
        };
        let mut door_addrs: Vec<(Transport, SocketAddr)> =
            doors.iter().map(|(d, _, a)| (*d, *a)).collect();
        if let Some((_, addr)) = &sn_socket {
            door_addrs.push((Transport::MqttSn, *addr));
        }
        if !config.listen.ip().is_loopback() && config.users.allow_anonymous {
            warn!(%local_addr, "listening beyond loopback with anonymous logins allowed: anyone on the network can connect");
        }
        let limits = Limits {
            max_inflight: config.max_inflight.max(1),
            max_queued: config.max_queued,
            max_queued_bytes: config.max_queued_bytes,
            // Under the hard limit, with room for what publishers already sent before they are
            // held back.
            high_water: config.high_water.min(config.max_queued / 2).max(1),
            high_water_bytes: config
                .high_water_bytes
                .min(config.max_queued_bytes / 2)
                .max(1),
            max_buffered: config.max_buffered,
            max_packet_out: usize::MAX,
        };
        let (sink, trace, trace_task) =
            trace::start(config.trace_file.clone()).map_err(StartError::Trace)?;
        let stats = Arc::new(Stats::default());
        let (users_tx, users_rx) = watch::channel(Arc::new(config.users.clone()));
        let users_watch = users_rx.clone();
        let (tx, rx) = mpsc::channel(ROUTER_QUEUE);
        let logins = auth::LoginGate::start(config.logins, stats.clone());
        let (saver_tx, saver) = saver::start(tx.downgrade());
        let durable = store.as_ref().map(|s| s.durable.clone());
        let (store_link, store_thread) = match store {
            Some(mut s) => {
                let thread = s.thread.take();
                (Some(s), thread)
            }
            None => (None, None),
        };
        let inproc = inproc::Broker {
            router: tx.downgrade(),
            trace: sink.clone(),
            limits,
            durable: durable.clone(),
        };
        let bridges = bridge::Bridges::new(bridge::Context {
            broker: inproc.clone(),
            broker_id: match &config.data_dir {
                Some(dir) => bridge::broker_id_in(dir),
                None => bridge::new_broker_id(),
            },
            local_addr,
        });
        let sn_stats = sn_socket.as_ref().map(|_| Arc::new(sn::SnStats::default()));
        let helpers = router::Helpers {
            saver: saver_tx,
            me: tx.downgrade(),
            bridges,
            sn_stats: sn_stats.clone(),
        };
        let router = Router::new(
            &config,
            limits,
            users_tx,
            stats.clone(),
            helpers,
            store_link.map(|s| (s, loaded)),
        );
        let router = tokio::spawn(router.run(rx));
        let watcher = config
            .users_path
            .clone()
            .map(|path| tokio::spawn(users_watch::run(path, tx.clone(), users_watch::POLL)));
        let shared = Arc::new(Shared {
            router: tx.clone(),
            users: users_rx,
            logins,
            tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            stats: stats.clone(),
            limits,
            max_packet_size: config.max_packet_size,
            max_topic_alias: config.max_topic_alias,
            send_topic_aliases: config.send_topic_aliases,
            connect_timeout: config.connect_timeout,
            next_conn: AtomicU64::new(1),
            trace: sink,
            durable,
            parking: config
                .park_after
                .map(|after| parking::Lot::new(after, stats.clone())),
        });
        // It stops with the router, when every parked connection's channel has ended, and gives
        // each its task back to say goodbye.
        let parking = shared.parking.clone().map(|lot| {
            let router = tx.clone();
            tokio::spawn(parking::run(lot, async move { router.closed().await }))
        });
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let mut listeners = vec![tokio::spawn(listener::run(
            listener,
            Transport::Tcp,
            shared.clone(),
            permits.clone(),
        ))];
        for (door, l, _) in doors {
            listeners.push(tokio::spawn(listener::run(
                l,
                door,
                shared.clone(),
                permits.clone(),
            )));
        }
        if let (Some((socket, addr)), Some(sn), Some(stats)) = (sn_socket, &config.sn, sn_stats) {
            let shared = sn::Shared::new(sn, inproc.clone(), addr, stats, users_watch.clone());
            listeners.push(tokio::spawn(sn::gateway::run(socket, Arc::new(shared))));
            tracing::info!(%addr, "MQTT-SN gateway listening (UDP)");
        }
        let advertiser = advertise(&config, local_addr, &door_addrs);
        Ok(Broker {
            local_addr,
            doors: door_addrs,
            handle: BrokerHandle { tx },
            stats,
            listeners,
            parking,
            router,
            saver,
            watcher,
            advertiser,
            trace: (trace, trace_task),
            store_thread,
        })
    }

    /// The address the broker listens on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the listener for one transport beside plain TCP, if one was asked for.
    pub fn door_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.doors
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// The WebSocket listener's address (`ws://ADDR/mqtt`), if one was asked for.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.door_addr(Transport::WebSocket)
    }

    /// Every listener: its URL, as a client would be given it (`mqtt://127.0.0.1:1883`, ...).
    pub fn urls(&self) -> Vec<String> {
        let mut urls = vec![format!("mqtt://{}", self.local_addr)];
        for (door, addr) in &self.doors {
            urls.push(match door {
                Transport::Tcp => format!("mqtt://{addr}"),
                Transport::WebSocket => format!("ws://{addr}/mqtt"),
                Transport::Tls => format!("mqtts://{addr}"),
                Transport::SecureWebSocket => format!("wss://{addr}/mqtt"),
                Transport::MqttSn => format!("mqtt-sn://{addr} (UDP)"),
                Transport::Bridge => continue,
            });
        }
        urls
    }

    /// What advertises the listeners on the local network, when the broker does (`Config::mdns`
    /// and bound beyond loopback).
    pub fn advertiser(&self) -> Option<mdns::Advertiser> {
        self.advertiser.as_ref().map(|(a, _)| a.clone())
    }

    /// The packet trace: off until someone watches it (or `Config::trace_file`).
    pub fn trace(&self) -> trace::Trace {
        self.trace.0.clone()
    }

    /// A handle to send commands with.
    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
    }

    /// A copy of the broker's state, or None if it has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        self.handle.snapshot().await
    }

    /// Traffic counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops accepting, closes every connection, and waits for the router to finish and for
    /// the files it changed to be written.
    pub async fn shutdown(self) {
        for l in &self.listeners {
            l.abort();
        }
        if let Some(w) = &self.watcher {
            w.abort();
        }
        // Goodbyes first, so that browsers drop the broker while it closes its connections.
        if let Some((advertiser, task)) = self.advertiser {
            advertiser.stop().await;
            // A responder that does not answer must not hold up the stop.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
        let _ = self.handle.send(Command::Shutdown).await;
        let _ = self.router.await;
        if let Some(parking) = self.parking {
            let _ = parking.await;
        }
        // The router held the saver's only sender: the saver ends after its last job.
        let _ = self.saver.await;
        // Likewise the store's writer, after its last commit.
        if let Some(t) = self.store_thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // Last, so that the trace file holds every connection's end.
        let (trace, task) = self.trace;
        trace.stop().await;
        let _ = task.await;
        if trace.dropped() > 0 {
            warn!(
                dropped = trace.dropped(),
                "packet trace: some packets were not kept (the trace fell behind the traffic)"
            );
        }
    }
}

/// Starts advertising the listeners when asked to and bound beyond loopback. mDNS failing
/// (no multicast on this network, say) is logged and the broker runs on: it is a convenience.
fn advertise(
    config: &Config,
    local_addr: SocketAddr,
    doors: &[(Transport, SocketAddr)],
) -> Option<(mdns::Advertiser, JoinHandle<()>)> {
    let mdns = config.mdns.as_ref()?;
    let Some(scope) = mdns
        .scope
        .or_else(|| mdns::Scope::for_bind(local_addr.ip()))
    else {
        tracing::debug!("bound to loopback: not advertised on the network (mDNS)");
        return None;
    };
    let mut all = vec![(Transport::Tcp, local_addr)];
    // DNS-SD has no service type for MQTT-SN: its clients find the gateway with SEARCHGW.
    all.extend(doors.iter().filter(|(d, _)| *d != Transport::MqttSn));
    match mdns::Advertiser::start(mdns, scope, &all) {
        Ok(a) => Some(a),
        Err(e) => {
            warn!(error = %e, "not advertised on the network (mDNS)");
            None
        }
    }
}
