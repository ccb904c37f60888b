//! One lab client: a real MQTT client over loopback TCP, run by a task that owns its state.
//! The window sends it commands and reads what it publishes on a watch channel.
//!
//! It does what a demonstration needs and a library will not: stop answering (no PINGREQ, so
//! the broker closes it at 1.5 × keepalive), pull the plug (close the socket without
//! DISCONNECT, so the will fires), and on reconnecting with a session, send its unacknowledged
//! messages again with DUP set.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, interval_at};

use super::wire::{self, ConnectFields, FromBroker};
use crate::broker::QoS;

/// Messages a lab client keeps to show; older ones go.
pub const KEPT: usize = 200;
/// Its own QoS 1/2 messages waiting for their acknowledgement; more are refused.
pub const MAX_OUTBOUND: usize = 1000;

/// How a lab client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    pub client_id: String,
    /// 3 (MQTT 3.1) or 4 (3.1.1).
    pub level: u8,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<LabWill>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabWill {
    pub topic: String,
    pub payload: String,
    pub qos: QoS,
    pub retain: bool,
}

impl LabConfig {
    pub fn new(client_id: &str) -> LabConfig {
        LabConfig {
            client_id: client_id.to_owned(),
            level: 4,
            clean_session: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Disconnected,
    Connecting,
    Connected {
        session_present: bool,
    },
    /// CONNACK with this return code.
    Refused(u8),
    /// The connection ended, and why.
    Closed(String),
}

/// A message the lab client received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub at: SystemTime,
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
}

/// What the window shows of a lab client.
#[derive(Debug, Clone)]
pub struct LabState {
    pub config: LabConfig,
    pub status: Status,
    /// Newest last, at most [`KEPT`].
    pub received: VecDeque<Received>,
    /// Filters and what the broker granted (0x80: refused); `None` while waiting for SUBACK.
    pub subscriptions: Vec<(String, QoS, Option<u8>)>,
    /// Not sending PINGREQs.
    pub silent: bool,
    /// Publishing this every so often.
    pub repeating: Option<(Publish, Duration)>,
    pub sent: u64,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub unacked: usize,
    /// The last thing that went wrong (refused command, socket error).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: String,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Clone)]
pub enum LabCommand {
    Connect,
    /// DISCONNECT, then close: no will.
    Disconnect,
    /// Close the socket without DISCONNECT: the broker publishes the will.
    PullPlug,
    /// Stop (or start again) sending PINGREQs.
    Silent(bool),
    Subscribe(String, QoS),
    Unsubscribe(String),
    Publish(Publish),
    Repeat(Publish, Duration),
    StopRepeat,
    /// Replace how it connects (the next Connect uses it).
    Configure(LabConfig),
    ClearReceived,
}

/// A handle on a lab client's task; dropping every handle ends the task.
#[derive(Clone)]
pub struct LabClient {
    tx: mpsc::Sender<LabCommand>,
    state: watch::Receiver<LabState>,
}

impl LabClient {
    /// Starts the client's task on `runtime`; it connects when told to.
    pub fn spawn(runtime: &Handle, broker: SocketAddr, config: LabConfig) -> LabClient {
        let (tx, rx) = mpsc::channel(64);
        let state = LabState {
            config,
            status: Status::Disconnected,
            received: VecDeque::new(),
            subscriptions: Vec::new(),
            silent: false,
            repeating: None,
            sent: 0,
            unacked: 0,
            error: None,
        };
        let (state_tx, state_rx) = watch::channel(state.clone());
        let task = Task {
            broker,
            state,
            watch: state_tx,
            conn: None,
            ping: None,
            next_id: 1,
            outbound: BTreeMap::new(),
            inbound_qos2: HashSet::new(),
            pending_subs: BTreeMap::new(),
        };
        runtime.spawn(task.run(rx));
        LabClient {
            tx,
            state: state_rx,
        }
    }

    /// Sends a command without waiting; false if the client's queue is full or it has ended.
    pub fn send(&self, cmd: LabCommand) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    /// Sends a command, waiting for room.
    pub async fn send_async(&self, cmd: LabCommand) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    pub fn state(&self) -> watch::Ref<'_, LabState> {
        self.state.borrow()
    }

    /// Whether two handles are on the same client.
    pub fn same(&self, other: &LabClient) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// A channel that changes with the client's state (tests and scenarios wait on it).
    pub fn watch(&self) -> watch::Receiver<LabState> {
        self.state.clone()
    }
}

/// A QoS 1/2 message of ours on its way: sent, or released (QoS 2 after PUBREC).
#[derive(Debug, Clone)]
struct Outbound {
    message: Publish,
    released: bool,
}

struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    rbuf: BytesMut,
}

struct Task {
    broker: SocketAddr,
    state: LabState,
    watch: watch::Sender<LabState>,
    conn: Option<Conn>,
    /// When to send the next PINGREQ, while connected with a keepalive.
    ping: Option<Interval>,
    next_id: u16,
    outbound: BTreeMap<u16, Outbound>,
    inbound_qos2: HashSet<u16>,
    pending_subs: BTreeMap<u16, String>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<LabCommand>) {
        let mut repeat: Option<Interval> = None;
        loop {
            let reading = self.conn.is_some();
            let pinging = self.conn.is_some() && self.ping.is_some() && !self.state.silent;
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else {
                        // The window let go of this client: leave politely.
                        self.disconnect(true).await;
                        return;
                    };
                    self.state.error = None;
                    match cmd {
                        LabCommand::Repeat(p, every) => {
                            let every = every.max(Duration::from_millis(50));
                            self.state.repeating = Some((p, every));
                            let mut i = interval_at(Instant::now(), every);
                            // After a stall, one publish, not the ones held back.
                            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            repeat = Some(i);
                        }
                        LabCommand::StopRepeat => {
                            self.state.repeating = None;
                            repeat = None;
                        }
                        other => self.command(other).await,
                    }
                }
                n = read(&mut self.conn), if reading => match n {
                    Ok(()) => self.on_read().await,
                    Err(why) => self.lost(why),
                },
                _ = async { self.ping.as_mut().expect("guarded").tick().await }, if pinging => {
                    let mut out = Vec::new();
                    wire::pingreq(&mut out);
                    self.write(&out).await;
                }
                _ = async { repeat.as_mut().expect("guarded").tick().await }, if repeat.is_some() => {
                    if let Some((p, _)) = self.state.repeating.clone()
                        && matches!(self.state.status, Status::Connected { .. })
                    {
                        self.publish(p).await;
                    }
                }
            }
            self.watch.send_replace(self.state.clone());
        }
    }

    async fn command(&mut self, cmd: LabCommand) {
        let connected = matches!(self.state.status, Status::Connected { .. });
        match cmd {
            LabCommand::Connect => self.connect().await,
            LabCommand::Disconnect => self.disconnect(true).await,
            LabCommand::PullPlug => self.disconnect(false).await,
            LabCommand::Silent(on) => self.state.silent = on,
            LabCommand::Configure(c) => self.state.config = c,
            LabCommand::ClearReceived => self.state.received.clear(),
            _ if !connected => self.state.error = Some("not connected".into()),
            LabCommand::Subscribe(filter, _) | LabCommand::Unsubscribe(filter)
                if filter.len() > u16::MAX as usize =>
            {
                self.state.error = Some("a filter is at most 65,535 bytes".into());
            }
            LabCommand::Subscribe(filter, qos) => {
                let id = self.next_id();
                let mut out = Vec::new();
                wire::subscribe(&mut out, id, &filter, qos);
                self.pending_subs.insert(id, filter.clone());
                self.state.subscriptions.retain(|(f, ..)| *f != filter);
                self.state.subscriptions.push((filter, qos, None));
                self.write(&out).await;
            }
            LabCommand::Unsubscribe(filter) => {
                let id = self.next_id();
                let mut out = Vec::new();
                wire::unsubscribe(&mut out, id, &filter);
                self.state.subscriptions.retain(|(f, ..)| *f != filter);
                self.write(&out).await;
            }
            LabCommand::Publish(p) => self.publish(p).await,
            LabCommand::Repeat(..) | LabCommand::StopRepeat => unreachable!("handled in run"),
        }
    }

    async fn connect(&mut self) {
        if self.conn.is_some() {
            self.disconnect(true).await;
        }
        self.state.status = Status::Connecting;
        self.watch.send_replace(self.state.clone());
        let stream = match TcpStream::connect(self.broker).await {
            Ok(s) => s,
            Err(e) => {
                self.state.status = Status::Closed(format!("cannot connect: {e}"));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let c = &self.state.config;
        let mut out = Vec::new();
        wire::connect(
            &mut out,
            &ConnectFields {
                level: c.level,
                client_id: &c.client_id,
                clean_session: c.clean_session,
                keep_alive: c.keep_alive,
                username: c.username.as_deref(),
                password: c.password.as_deref(),
                will: c
                    .will
                    .as_ref()
                    .map(|w| (w.topic.as_str(), w.payload.as_bytes(), w.qos, w.retain)),
            },
        );
        let ping = (c.keep_alive > 0).then(|| {
            let every = Duration::from_secs(c.keep_alive as u64);
            let mut i = interval_at(Instant::now() + every, every);
            // Silent for a while, then answering again: one ping, not the ones held back.
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        if c.clean_session {
            self.outbound.clear();
            self.inbound_qos2.clear();
        }
        self.ping = ping;
        self.conn = Some(Conn {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(4096),
        });
        self.write(&out).await;
    }

    /// Ends the connection, with DISCONNECT first if `clean`.
    async fn disconnect(&mut self, clean: bool) {
        if let Some(mut c) = self.conn.take() {
            if clean {
                let mut out = Vec::new();
                wire::disconnect(&mut out);
                let _ = c.wr.write_all(&out).await;
            }
            let _ = c.wr.shutdown().await;
            self.state.status = Status::Closed(if clean {
                "sent DISCONNECT".into()
            } else {
                "pulled the plug (no DISCONNECT)".into()
            });
        }
        self.pending_subs.clear();
    }

    async fn publish(&mut self, p: Publish) {
        if p.topic.len() > u16::MAX as usize {
            self.state.error = Some("a topic is at most 65,535 bytes".into());
            return;
        }
        let id = if p.qos == QoS::AtMostOnce {
            0
        } else if self.outbound.len() >= MAX_OUTBOUND {
            self.state.error = Some(format!(
                "{MAX_OUTBOUND} messages wait for an acknowledgement: not sending more"
            ));
            return;
        } else {
            self.next_id()
        };
        let mut out = Vec::new();
        wire::publish(
            &mut out,
            &p.topic,
            p.payload.as_bytes(),
            p.qos,
            id,
            p.retain,
            false,
        );
        if p.qos != QoS::AtMostOnce {
            self.outbound.insert(
                id,
                Outbound {
                    message: p,
                    released: false,
                },
            );
        }
        self.state.sent += 1;
        self.state.unacked = self.outbound.len();
        self.write(&out).await;
    }

    fn next_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.outbound.contains_key(&id) && !self.pending_subs.contains_key(&id) {
                return id;
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        let Some(c) = &mut self.conn else {
            return;
        };
        if let Err(e) = c.wr.write_all(bytes).await {
            self.lost(format!("write failed: {e}"));
        }
    }

    fn lost(&mut self, why: String) {
        self.conn = None;
        self.pending_subs.clear();
        if !matches!(self.state.status, Status::Refused(_)) {
            self.state.status = Status::Closed(why);
        }
    }

    async fn on_read(&mut self) {
        loop {
            let Some(c) = &mut self.conn else {
                return;
            };
            let packet = match wire::decode(&mut c.rbuf) {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    self.lost(format!("bad packet from the broker: {e}"));
                    return;
                }
            };
            self.on_packet(packet).await;
        }
    }

    async fn on_packet(&mut self, p: FromBroker) {
        let mut out = Vec::new();
        match p {
            FromBroker::ConnAck {
                session_present,
                code,
            } => {
                if code != 0 {
                    self.state.status = Status::Refused(code);
                    self.conn = None;
                    return;
                }
                self.state.status = Status::Connected { session_present };
                if !session_present {
                    // A new session: nothing of the old one is owed either way.
                    self.state.subscriptions.clear();
                    self.inbound_qos2.clear();
                }
                // MQTT 3.1.1 section 4.4: what was not acknowledged goes again, with DUP.
                for (id, o) in &self.outbound {
                    if o.released {
                        wire::ack(&mut out, 0x62, *id);
                    } else {
                        let m = &o.message;
                        let (t, p) = (&m.topic, m.payload.as_bytes());
                        wire::publish(&mut out, t, p, m.qos, *id, m.retain, true);
                    }
                }
            }
            FromBroker::Publish {
                topic,
                payload,
                qos,
                pkid,
                retain,
                dup,
            } => {
                // A QoS 2 message already received (its PUBREL not yet seen) is not new.
                let fresh = qos != QoS::ExactlyOnce || self.inbound_qos2.insert(pkid);
                match qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => wire::ack(&mut out, 0x40, pkid),
                    QoS::ExactlyOnce => wire::ack(&mut out, 0x50, pkid),
                }
                if fresh {
                    if self.state.received.len() == KEPT {
                        self.state.received.pop_front();
                    }
                    self.state.received.push_back(Received {
                        at: SystemTime::now(),
                        topic,
                        payload,
                        qos,
                        retain,
                        dup,
                    });
                }
            }
            FromBroker::PubAck(id) | FromBroker::PubComp(id) => {
                self.outbound.remove(&id);
            }
            FromBroker::PubRec(id) => {
                if let Some(o) = self.outbound.get_mut(&id) {
                    o.released = true;
                }
                wire::ack(&mut out, 0x62, id);
            }
            FromBroker::PubRel(id) => {
                self.inbound_qos2.remove(&id);
                wire::ack(&mut out, 0x70, id);
            }
            FromBroker::SubAck { pkid, codes } => {
                if let Some(filter) = self.pending_subs.remove(&pkid)
                    && let Some(s) = self.state.subscriptions.iter_mut().find(|s| s.0 == filter)
                {
                    s.2 = codes.first().copied();
                }
            }
            FromBroker::UnsubAck(_) | FromBroker::PingResp => {}
        }
        self.state.unacked = self.outbound.len();
        if !out.is_empty() {
            self.write(&out).await;
        }
    }
}

/// Reads more of the connection's bytes; why it ended if it did.
async fn read(conn: &mut Option<Conn>) -> Result<(), String> {
    let c = conn.as_mut().expect("guarded by `reading`");
    c.rbuf.reserve(4096);
    match c.rd.read_buf(&mut c.rbuf).await {
        Ok(0) => Err("the broker closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("connection lost: {e}")),
    }
}
