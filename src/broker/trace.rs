//! The packet trace: every packet in and out of every connection, as a summary, for the window's
//! trace panel and for `--trace FILE.pcap`.
//!
//! Connections tap their one decode and one encode (`connection::Wire`) and `try_send` each
//! summary to one task that owns the trace: it numbers the events, keeps the newest in a ring,
//! and writes the pcap file when there is one. The tap costs one relaxed load while nobody
//! looks; an event that finds the channel full is dropped and counted, never waited for.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use super::pcap::PcapWriter;
use super::protocol::{AckKind, Outgoing, Packet, Peer, QoS, Reason, SubscribeCode, Transport};

/// Events on their way to the trace task; beyond this they are dropped and counted.
const CHANNEL: usize = 16 * 1024;
/// Packets one connection may report per second to a watching window; the rest are counted as
/// dropped. A window shows a few thousand packets, not millions, and this keeps the trace's cost
/// to a busy broker small (the pcap file, which wants everything, has no such limit).
pub const PER_CONNECTION_PER_SECOND: u32 = 1_000;
/// How often the trace task takes what connections reported.
const DRAIN: Duration = Duration::from_millis(50);
/// Events the ring keeps for the window.
pub const RING: usize = 20_000;
/// The first bytes of a payload a summary keeps (the pcap file keeps them all).
pub const PAYLOAD_HEAD: usize = 32;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the broker.
    In,
    /// From the broker to the client.
    Out,
}

/// One packet, or a connection's end, seen at the broker.
#[derive(Debug, Clone)]
pub struct Event {
    /// Numbered in the order the trace task took them, from 1.
    pub seq: u64,
    pub at: SystemTime,
    /// The connection's number (unique for the broker's life).
    pub conn: u64,
    /// Empty until the CONNECT that names it.
    pub client_id: Arc<str>,
    pub peer: SocketAddr,
    /// The address the client reached (the listener's).
    pub local: SocketAddr,
    pub transport: Transport,
    pub direction: Direction,
    pub what: What,
}

#[derive(Debug, Clone)]
pub enum What {
    Packet(Summary),
    /// The connection ended, with the reason (keepalive, kick, malformed packet, takeover...).
    Closed(String),
}

/// The fields of a packet that a student looks at. Never a password; a payload's first
/// [`PAYLOAD_HEAD`] bytes only, except on the way to a pcap file.
#[derive(Debug, Clone, PartialEq)]
pub enum Summary {
    Connect {
        level: u8,
        clean_session: bool,
        keep_alive: u16,
        /// Topic, QoS, retain.
        will: Option<(String, QoS, bool)>,
        username: Option<String>,
        password: bool,
    },
    ConnAck {
        session_present: bool,
        /// The 3.1.1 return code, or MQTT 5's reason code.
        code: u8,
        v5: bool,
    },
    Publish {
        topic: String,
        qos: QoS,
        pkid: u16,
        dup: bool,
        retain: bool,
        /// The whole payload's size.
        size: usize,
        payload: Bytes,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS)>,
    },
    SubAck {
        pkid: u16,
        /// 0, 1, 2 granted; 0x80 refused.
        codes: Vec<u8>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    /// With MQTT 5's reason per filter (none before).
    UnsubAck(u16, Vec<Reason>),
    PingReq,
    PingResp,
    /// MQTT 5 gives it a reason (0 before).
    Disconnect(Reason),
    /// MQTT 5: an acknowledgement with a reason other than success.
    AckWith {
        kind: AckKind,
        pkid: u16,
        reason: Reason,
    },
    /// MQTT 5 AUTH.
    Auth(Reason),
}

impl Summary {
    /// The packet type's name, as the specification writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Summary::Connect { .. } => "CONNECT",
            Summary::ConnAck { .. } => "CONNACK",
            Summary::Publish { .. } => "PUBLISH",
            Summary::PubAck(_) => "PUBACK",
            Summary::PubRec(_) => "PUBREC",
            Summary::PubRel(_) => "PUBREL",
            Summary::PubComp(_) => "PUBCOMP",
            Summary::Subscribe { .. } => "SUBSCRIBE",
            Summary::SubAck { .. } => "SUBACK",
            Summary::Unsubscribe { .. } => "UNSUBSCRIBE",
            Summary::UnsubAck(..) => "UNSUBACK",
            Summary::PingReq => "PINGREQ",
            Summary::PingResp => "PINGRESP",
            Summary::Disconnect(_) => "DISCONNECT",
            Summary::AckWith { kind, .. } => match kind {
                AckKind::PubAck => "PUBACK",
                AckKind::PubRec => "PUBREC",
                AckKind::PubRel => "PUBREL",
                AckKind::PubComp => "PUBCOMP",
            },
            Summary::Auth(_) => "AUTH",
        }
    }

    /// The packet id, for the packets that have one.
    pub fn packet_id(&self) -> Option<u16> {
        match *self {
            Summary::Publish { pkid, qos, .. } if qos != QoS::AtMostOnce => Some(pkid),
            Summary::PubAck(id)
            | Summary::PubRec(id)
            | Summary::PubRel(id)
            | Summary::PubComp(id)
            | Summary::AckWith { pkid: id, .. } => Some(id),
            Summary::UnsubAck(id, _) => Some(id),
            Summary::Subscribe { pkid, .. }
            | Summary::SubAck { pkid, .. }
            | Summary::Unsubscribe { pkid, .. } => Some(pkid),
            _ => None,
        }
    }

    fn of_packet(p: &Packet, full_payload: bool) -> Summary {
        match p {
            Packet::Connect(c) => Summary::Connect {
                level: c.level,
                clean_session: c.clean_session,
                keep_alive: c.keep_alive,
                will: c.will.as_ref().map(|w| (w.topic.clone(), w.qos, w.retain)),
                username: c.username.clone(),
                password: c.password.is_some(),
            },
            Packet::Publish(p) => Summary::Publish {
                topic: p.topic.clone(),
                qos: p.qos,
                pkid: p.pkid,
                dup: p.dup,
                retain: p.retain,
                size: p.payload.len(),
                payload: if full_payload {
                    p.payload.clone()
                } else {
                    head(&p.payload)
                },
            },
            Packet::PubAck(id) => Summary::PubAck(*id),
            Packet::PubRec(id) => Summary::PubRec(*id),
            Packet::PubRel(id) => Summary::PubRel(*id),
            Packet::PubComp(id) => Summary::PubComp(*id),
            Packet::PubRecRefused(id, reason) => Summary::AckWith {
                kind: AckKind::PubRec,
                pkid: *id,
                reason: *reason,
            },
            Packet::Subscribe { pkid, filters } => Summary::Subscribe {
                pkid: *pkid,
                filters: filters.iter().map(|(f, o)| (f.clone(), o.qos)).collect(),
            },
            Packet::Unsubscribe { pkid, filters } => Summary::Unsubscribe {
                pkid: *pkid,
                filters: filters.clone(),
            },
            Packet::PingReq => Summary::PingReq,
            Packet::Disconnect(d) => Summary::Disconnect(d.reason),
            Packet::Auth(r) => Summary::Auth(*r),
        }
    }

    fn of_outgoing(p: &Outgoing<'_>, full_payload: bool, level: u8) -> Summary {
        match *p {
            Outgoing::ConnAck {
                session_present,
                code,
                ..
            } => Summary::ConnAck {
                session_present,
                code: if level >= 5 {
                    super::codec_v5::connack_reason(code).0
                } else {
                    code as u8
                },
                v5: level >= 5,
            },
            Outgoing::Publish {
                topic,
                payload,
                qos,
                pkid,
                retain,
                dup,
                ..
            } => Summary::Publish {
                topic: topic.to_owned(),
                qos,
                pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
                dup: dup && qos != QoS::AtMostOnce,
                retain,
                size: payload.len(),
                payload: if full_payload {
                    Bytes::copy_from_slice(payload)
                } else {
                    head(payload)
                },
            },
            Outgoing::PubAck(id) => Summary::PubAck(id),
            Outgoing::PubRec(id) => Summary::PubRec(id),
            Outgoing::PubRel(id) => Summary::PubRel(id),
            Outgoing::PubComp(id) => Summary::PubComp(id),
            Outgoing::SubAck { pkid, codes } => Summary::SubAck {
                pkid,
                codes: codes
                    .iter()
                    .map(|c: &SubscribeCode| c.byte(level))
                    .collect(),
            },
            Outgoing::AckWith { kind, pkid, reason } if level >= 5 => {
                Summary::AckWith { kind, pkid, reason }
            }
            Outgoing::AckWith { kind, pkid, .. } => match kind {
                AckKind::PubAck => Summary::PubAck(pkid),
                AckKind::PubRec => Summary::PubRec(pkid),
                AckKind::PubRel => Summary::PubRel(pkid),
                AckKind::PubComp => Summary::PubComp(pkid),
            },
            Outgoing::UnsubAck { pkid, codes } => {
                let codes = if level >= 5 {
                    codes.to_vec()
                } else {
                    Vec::new()
                };
                Summary::UnsubAck(pkid, codes)
            }
            Outgoing::PingResp => Summary::PingResp,
            Outgoing::Disconnect(reason) => Summary::Disconnect(reason),
        }
    }

    /// The same summary with at most [`PAYLOAD_HEAD`] bytes of payload, in an allocation of
    /// its own (so the ring never holds a message's buffer).
    fn shortened(self) -> Summary {
        match self {
            Summary::Publish {
                topic,
                qos,
                pkid,
                dup,
                retain,
                size,
                payload,
            } if payload.len() > PAYLOAD_HEAD || payload.len() < size => Summary::Publish {
                topic,
                qos,
                pkid,
                dup,
                retain,
                size,
                payload: head(&payload),
            },
            other => other,
        }
    }
}

fn head(payload: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&payload[..payload.len().min(PAYLOAD_HEAD)])
}

/// What connections hold to report packets: cheap to check while nobody looks.
pub struct Sink {
    /// The pcap file wants whole payloads.
    full_payloads: AtomicBool,
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
    /// How many want the trace on (windows, `--trace`): it is on while this is above 0.
    watchers: AtomicUsize,
    /// Payload bytes in events on their way to the task (whole payloads, for the file).
    queued_bytes: AtomicUsize,
}

/// Payload bytes the events on their way may hold: one large message to many subscribers must
/// not pile up copies of itself in memory while the file is written.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

fn weight(e: &Event) -> usize {
    match &e.what {
        What::Packet(Summary::Publish { payload, .. }) => payload.len(),
        _ => 0,
    }
}

impl Sink {
    /// Whether packets are being traced now.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.watchers.load(Relaxed) > 0
    }

    /// Events dropped because the trace task was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    fn send(&self, event: Event) {
        let w = weight(&event);
        if w > 0 && self.queued_bytes.fetch_add(w, Relaxed) + w > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(w, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        if self.tx.try_send(event).is_err() {
            self.queued_bytes.fetch_sub(w, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    fn watch(&self, on: bool) {
        if on {
            self.watchers.fetch_add(1, Relaxed);
        } else {
            let _ = self
                .watchers
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// Who a connection's tap reports for. A parked connection keeps this and not its share of
/// the trace, which a connection quiet for seconds has no use for.
pub(crate) struct TapId {
    sink: Arc<Sink>,
    conn: u64,
    client_id: Arc<str>,
    /// Shared with the router's record of the connection (`Online`): one copy per client.
    peer: Arc<Peer>,
}

impl TapId {
    pub fn conn(&self) -> u64 {
        self.conn
    }
}

/// One connection's tap: who it is, for the events it reports, and its share of the trace.
pub(crate) struct Tap {
    id: TapId,
    /// Packets reported in the current second, when it started, and those left out since the
    /// last time they were added to the shared count.
    used: u32,
    since: Option<Instant>,
    skipped: u64,
}

impl Tap {
    pub fn new(sink: Arc<Sink>, conn: u64, peer: Arc<Peer>) -> Tap {
        Tap::resume(TapId {
            sink,
            conn,
            client_id: Arc::from(""),
            peer,
        })
    }

    /// A parked connection's tap back, with a fresh share of the trace.
    pub fn resume(id: TapId) -> Tap {
        Tap {
            id,
            used: 0,
            since: None,
            skipped: 0,
        }
    }

    /// What a parked connection keeps: what it left out is counted first.
    pub fn park(mut self) -> TapId {
        self.settle();
        self.id
    }

    /// The client id its CONNECT gave ("" before that, or for none).
    pub fn client_id(&self) -> &Arc<str> {
        &self.id.client_id
    }

    pub fn peer(&self) -> &Arc<Peer> {
        &self.id.peer
    }

    #[inline]
    pub fn packet_in(&mut self, p: &Packet) {
        if let Packet::Connect(c) = p {
            self.id.client_id = Arc::from(c.client_id.as_str());
        }
        if self.id.sink.is_on() && self.allowed() {
            let full = self.id.sink.full_payloads.load(Relaxed);
            self.send(Direction::In, What::Packet(Summary::of_packet(p, full)));
        }
    }

    #[inline]
    pub fn packet_out(&mut self, p: &Outgoing<'_>, level: u8) {
        if self.id.sink.is_on() && self.allowed() {
            let full = self.id.sink.full_payloads.load(Relaxed);
            let summary = Summary::of_outgoing(p, full, level);
            self.send(Direction::Out, What::Packet(summary));
        }
    }

    pub fn closed(&mut self, reason: &impl std::fmt::Display) {
        self.settle();
        if self.id.sink.is_on() {
            self.send(Direction::Out, What::Closed(reason.to_string()));
        }
    }

    /// Within this connection's share of the trace? (Always, for a pcap file.) The clock is
    /// read once per second's worth of packets, and then every 256: a busy connection pays a
    /// counter, not a clock, per packet.
    #[inline]
    fn allowed(&mut self) -> bool {
        if self.id.sink.full_payloads.load(Relaxed) {
            return true;
        }
        self.used += 1;
        if self.used <= PER_CONNECTION_PER_SECOND {
            if self.used == 1 {
                self.since = Some(Instant::now());
            }
            return true;
        }
        // Over: look at the clock now, then every 256 packets.
        if (self.used == PER_CONNECTION_PER_SECOND + 1 || self.used.is_multiple_of(256))
            && self
                .since
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.settle();
            self.used = 1;
            self.since = Some(Instant::now());
            return true;
        }
        self.skipped += 1;
        false
    }

    /// Adds what this connection left out to the trace's count of dropped events.
    fn settle(&mut self) {
        if self.skipped > 0 {
            self.id.sink.dropped.fetch_add(self.skipped, Relaxed);
            self.skipped = 0;
        }
    }

    fn send(&self, direction: Direction, what: What) {
        self.id.sink.send(Event {
            seq: 0,
            at: SystemTime::now(),
            conn: self.id.conn,
            client_id: self.id.client_id.clone(),
            peer: self.id.peer.addr,
            local: self.id.peer.local,
            transport: self.id.peer.transport,
            direction,
            what,
        });
    }
}

enum Request {
    Since {
        after: u64,
        reply: oneshot::Sender<Vec<Arc<Event>>>,
    },
    /// Take what is queued, flush the file, and end.
    Stop(oneshot::Sender<()>),
}

/// Asks the trace task for events; cheap to clone.
#[derive(Clone)]
pub struct Trace {
    sink: Arc<Sink>,
    requests: mpsc::Sender<Request>,
}

impl Trace {
    /// Turns tracing on for one more watcher (a window's trace panel), or off for one less.
    pub fn watch(&self, on: bool) {
        self.sink.watch(on);
    }

    pub fn is_on(&self) -> bool {
        self.sink.is_on()
    }

    /// Events dropped because the trace could not keep up.
    pub fn dropped(&self) -> u64 {
        self.sink.dropped()
    }

    /// The events numbered above `after` still in the ring, oldest first; None if the broker
    /// has stopped.
    pub async fn since(&self, after: u64) -> Option<Vec<Arc<Event>>> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Since { after, reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Writes out what is queued and ends the trace task (the broker is stopping).
    pub(crate) async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.requests.send(Request::Stop(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Like [`Trace::since`], from a thread outside the runtime (a window): None if the broker
    /// is busy or stopped.
    pub fn try_since(&self, after: u64) -> Option<oneshot::Receiver<Vec<Arc<Event>>>> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .try_send(Request::Since { after, reply })
            .ok()?;
        Some(rx)
    }
}

/// Starts the trace task. With `file`, the trace is on from the start and every packet is
/// written there, whole (passwords left out).
pub(crate) fn start(file: Option<PathBuf>) -> std::io::Result<(Arc<Sink>, Trace, JoinHandle<()>)> {
    let writer = file.map(|path| PcapWriter::create(&path)).transpose()?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let sink = Arc::new(Sink {
        full_payloads: AtomicBool::new(writer.is_some()),
        tx,
        dropped: AtomicU64::new(0),
        watchers: AtomicUsize::new(0),
        queued_bytes: AtomicUsize::new(0),
    });
    if writer.is_some() {
        sink.watch(true);
    }
    let (req_tx, req_rx) = mpsc::channel(16);
    let task = tokio::spawn(run(sink.clone(), rx, req_rx, writer));
    let trace = Trace {
        sink: sink.clone(),
        requests: req_tx,
    };
    Ok((sink, trace, task))
}

/// What the trace task owns.
struct Kept {
    sink: Arc<Sink>,
    ring: VecDeque<Arc<Event>>,
    seq: u64,
    writer: Option<PcapWriter>,
}

impl Kept {
    fn take(&mut self, batch: &mut Vec<Event>) {
        for mut e in batch.drain(..) {
            let w = weight(&e);
            if w > 0 {
                self.sink.queued_bytes.fetch_sub(w, Relaxed);
            }
            self.seq += 1;
            e.seq = self.seq;
            if let Some(w) = &mut self.writer
                && let Err(err) = w.write(&e)
            {
                warn!(error = %err, "packet trace file: stopped writing");
                self.writer = None;
            }
            if let What::Packet(s) = e.what {
                e.what = What::Packet(s.shortened());
            }
            if self.ring.len() == RING {
                self.ring.pop_front();
            }
            self.ring.push_back(Arc::new(e));
        }
    }

    fn flush(&mut self) {
        if let Some(w) = &mut self.writer
            && let Err(err) = w.flush()
        {
            warn!(error = %err, "packet trace file: stopped writing");
            self.writer = None;
        }
    }

    fn since(&self, after: u64) -> Vec<Arc<Event>> {
        let start = self.ring.partition_point(|e| e.seq <= after);
        self.ring.range(start..).cloned().collect()
    }
}

async fn run(
    sink: Arc<Sink>,
    mut events: mpsc::Receiver<Event>,
    mut requests: mpsc::Receiver<Request>,
    writer: Option<PcapWriter>,
) {
    let mut kept = Kept {
        sink,
        ring: VecDeque::new(),
        seq: 0,
        writer,
    };
    let mut batch = Vec::with_capacity(256);
    // Polled, not awaited: a receiver waiting on the channel would be woken (a thread woken)
    // by every event a connection sends; drained twenty times a second, it costs a
    // connection one push.
    let mut tick = tokio::time::interval(DRAIN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // At most a channel's worth per tick, so that requests from the window are
                // answered between ticks even under a flood.
                for _ in 0..CHANNEL / 1024 {
                    while batch.len() < 1024 {
                        match events.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        break;
                    }
                    kept.take(&mut batch);
                }
                kept.flush();
            }
            Some(req) = requests.recv() => match req {
                Request::Since { after, reply } => {
                    let _ = reply.send(kept.since(after));
                }
                Request::Stop(done) => {
                    while let Ok(e) = events.try_recv() {
                        batch.push(e);
                    }
                    kept.take(&mut batch);
                    kept.flush();
                    let _ = done.send(());
                    return;
                }
            },
        }
    }
}
