//! One client's session as the router keeps it: subscriptions, the QoS 1/2 messages in flight and
//! queued, and the connection it is attached to (if any).
//!
//! Sans I/O: the only way out is `try_send` on the connection's bounded channel, so the router
//! never waits on a client.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::outbox::{self, TrySendError};
use super::protocol::{MessageProps, QoS, SubOptions};
use super::topics;

use super::link::{ConnId, Message, OutPublish, Outbound};
use super::protocol::Peer;
use super::protocol::Will;
use super::store::{Change, Journal, StoredSession};

/// Control packets (SUBACK, CONNACK, ...) a connection's channel always has room for, beyond the
/// in-flight window and the QoS 0 buffer.
pub(crate) const CONTROL_RESERVE: usize = 32;

/// Per-client limits: the broker's config, as the connection that attached last brought them
/// (each connection carries its own, so a client can be given others: MQTT 5's Receive
/// Maximum will).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_inflight: usize,
    /// The queue's hard limits, in messages and in payload bytes: beyond them messages are
    /// dropped and counted.
    pub max_queued: usize,
    pub max_queued_bytes: usize,
    /// The queue's high-water mark, in messages and bytes: past it the publishers feeding the
    /// queue are held back (see `Flow`), and released when it is back under half.
    pub high_water: usize,
    pub high_water_bytes: usize,
    /// PUBLISHes handed to the connection task and not yet written.
    pub max_buffered: usize,
    /// MQTT 5: the largest packet the client takes (its Maximum Packet Size); a PUBLISH that
    /// would be larger is dropped, as the spec says, and counted. `usize::MAX`: no limit.
    pub max_packet_out: usize,
}

impl Limits {
    /// Capacity of a connection's outbound channel: the buffer, or the whole window when that
    /// is larger (re-sending it on reconnect must fit), plus the control reserve.
    pub fn channel_capacity(&self) -> usize {
        self.max_buffered.max(self.max_inflight) + CONTROL_RESERVE
    }
}

/// The connection a session is attached to while its client is online.
#[derive(Debug)]
pub(crate) struct Online {
    pub conn: ConnId,
    pub tx: outbox::Sender<Outbound>,
    /// Boxed: most clients have none, and every online session would carry room for one.
    pub will: Option<Box<Will>>,
    pub peer: Arc<Peer>,
    /// Boxed `str`, not `String`: a session's record is 8 bytes smaller.
    pub username: Option<Box<str>>,
    /// What it may publish and subscribe to, from its user's rules; `None`: no limit. Boxed:
    /// most clients have no rules, and every online session would carry room for them.
    pub grant: Option<Box<crate::broker::acl::Grant>>,
    pub level: u8,
    /// MQTT 5's settings, for the window (boxed: most clients are not MQTT 5).
    pub v5: Option<Box<super::snapshot::V5Settings>>,
    pub keep_alive: u16,
    /// Subscribers over their high-water mark that hold this connection's reading back; it
    /// reads again when none is left.
    pub held_by: u32,
    /// An MQTT-SN node asleep: its queue grows by design, so it holds no publisher back (and
    /// is never "stuck"); its queue's hard limit still holds.
    pub asleep: bool,
}

/// A subscriber over its high-water mark holds back the publishers that feed it: the router
/// stops reading from them (TCP then pushes back on them) until the queue is back under half.
#[derive(Debug)]
pub(crate) struct Holding {
    /// The connections held back, each once.
    pub publishers: Vec<ConnId>,
    /// `messages_out` when the queue was last seen to move, and when that was: a queue that
    /// has not moved for the stall deadline is stuck, and holds no one back any more.
    pub out_at: u64,
    pub moved_at: Instant,
}

#[derive(Debug, Clone)]
struct InFlight {
    /// Its number in a persisted session (0: not persisted).
    seq: u64,
    pkid: u16,
    msg: Arc<Message>,
    qos: QoS,
    /// PUBREC came back and PUBREL went out: waiting for PUBCOMP.
    released: bool,
}

#[derive(Debug, Clone)]
struct Queued {
    seq: u64,
    msg: Arc<Message>,
    qos: QoS,
    retain: bool,
}

/// What became of a message handed to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Sent to the connection, or queued for it.
    Accepted,
    /// Dropped: the client is slow or offline (QoS 0), or its queue is full.
    Dropped,
}

/// What a session holds on its way to the client. Boxed, and there only while something is:
/// an idle session (most of a lab's, most of the time) carries 8 bytes for it, not some 110.
#[derive(Debug, Default)]
struct Queues {
    inflight: VecDeque<InFlight>,
    /// In-flight messages at the back of `inflight` not yet sent again on this connection: a
    /// client back with a smaller Receive Maximum gets its in-flight messages a window at a
    /// time.
    unsent: u32,
    queue: VecDeque<Queued>,
    /// Payload and topic bytes of the messages in `queue`.
    queued_bytes: usize,
    /// Answers to the client's packets (SUBACK, UNSUBACK) that found the connection's channel
    /// full: they go out first, in order, before any further PUBLISH. Bounded by the connection,
    /// which stops reading while too many of its packets wait for an answer.
    answers: VecDeque<Outbound>,
}

impl Queues {
    /// Nothing in flight, queued or waiting to answer (`unsent` and `queued_bytes` are then 0).
    fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.queue.is_empty() && self.answers.is_empty()
    }
}

/// A client's session.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: Arc<str>,
    /// Ends with its connection (3.1.1's clean session; MQTT 5's Session Expiry Interval 0).
    pub clean: bool,
    /// MQTT 5: seconds a session that is not clean outlives its connection (`u32::MAX`, and
    /// before MQTT 5: for ever).
    pub expiry: u32,
    /// The limits in force: the last connection's (the broker's while it never had one).
    /// Shared: nearly every client has the broker's.
    limits: Arc<Limits>,
    pub online: Option<Online>,
    /// Subscriptions in the order they were made, one per filter.
    pub filters: Vec<(String, SubOptions)>,
    /// What is on its way to the client; `None` while nothing is.
    queues: Option<Box<Queues>>,
    /// Publishers this session holds back while its queue is over the high-water mark.
    pub holding: Option<Box<Holding>>,
    /// Its queue did not move for the stall deadline: it holds no one back, and what overflows
    /// its queue is dropped, until the queue drains under half of the high-water mark.
    pub stuck: bool,
    next_pkid: u16,
    /// QoS 2 packet ids received and not yet released: a re-sent PUBLISH is not routed again.
    /// Boxed, and only while there are any: most sessions never see a QoS 2 PUBLISH.
    #[expect(
        clippy::box_collection,
        reason = "the box is for the inline size: 8 B in every session, not the set's 48"
    )]
    incoming_qos2: Option<Box<HashSet<u16>>>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub dropped: u64,
    /// When the client connected, while it is online; when it left, while it is not. One
    /// time for the two: every session carries it.
    pub seen: SystemTime,
    /// Where a persistent session records what changes in it, when the broker persists.
    journal: Option<Arc<Journal>>,
    /// The number of the last QoS 1/2 message queued, when persisted.
    last_seq: u64,
}

impl Session {
    pub fn new(client_id: Arc<str>, clean: bool, limits: Arc<Limits>) -> Self {
        Session {
            client_id,
            clean,
            expiry: u32::MAX,
            limits,
            online: None,
            filters: Vec::new(),
            queues: None,
            holding: None,
            stuck: false,
            next_pkid: 0,
            incoming_qos2: None,
            messages_in: 0,
            messages_out: 0,
            dropped: 0,
            seen: SystemTime::now(),
            journal: None,
            last_seq: 0,
        }
    }

    /// From here on, what changes in this session is recorded for the disk, starting with the
    /// session itself.
    pub fn persist(&mut self, journal: Arc<Journal>) {
        self.journal = Some(journal);
        self.record_filters();
    }

    /// How long the session outlives its connection: `clean`, not at all; else `expiry`
    /// seconds (MQTT 5; `u32::MAX`, for ever). A change is recorded, and a session that is now
    /// kept goes on disk from here on (when the broker persists).
    pub fn set_lifetime(&mut self, clean: bool, expiry: u32, journal: Option<Arc<Journal>>) {
        self.clean = clean;
        if self.expiry != expiry {
            self.expiry = expiry;
            self.record_filters();
        }
        if !self.clean
            && !self.persisted()
            && let Some(j) = journal
        {
            self.persist(j);
        }
    }

    /// Whether the session is persisted.
    pub fn persisted(&self) -> bool {
        self.journal.is_some()
    }

    /// Records the subscriptions as they now are.
    pub fn record_filters(&self) {
        if let Some(j) = &self.journal {
            j.push(Change::Session {
                client_id: self.client_id.clone(),
                filters: self.filters.clone(),
                expiry: self.expiry,
            });
        }
    }

    fn record(&self, change: impl FnOnce(Arc<str>) -> Change) {
        if let Some(j) = &self.journal {
            j.push(change(self.client_id.clone()));
        }
    }

    /// A persisted session as it was loaded, offline: messages that went out are in flight
    /// again (re-sent with DUP, or PUBREL, on reconnect), the others queued. `topic` gives the
    /// name the broker shares for a stored topic name (asked once per run of messages on it).
    pub fn restore(
        stored: StoredSession,
        limits: Arc<Limits>,
        journal: Arc<Journal>,
        mut topic: impl FnMut(&Arc<str>) -> Arc<str>,
    ) -> Self {
        let mut last: Option<(Arc<str>, Arc<str>)> = None;
        let mut s = Session::new(Arc::from(stored.client_id.as_str()), false, limits);
        let mut q = Queues::default();
        s.filters = stored.filters;
        s.expiry = stored.expiry;
        if !stored.qos2_in.is_empty() {
            s.incoming_qos2 = Some(Box::new(stored.qos2_in.into_iter().collect()));
        }
        for m in stored.messages {
            s.last_seq = s.last_seq.max(m.seq);
            let name = match &last {
                Some((stored, shared)) if Arc::ptr_eq(stored, &m.topic) => shared.clone(),
                _ => {
                    let shared = topic(&m.topic);
                    last = Some((m.topic.clone(), shared.clone()));
                    shared
                }
            };
            // The identifiers a stored copy was for travel apart from the shared properties.
            let (props, sub_ids) = match m.props {
                Some(mut p) => {
                    let ids = std::mem::take(&mut p.subscription_ids);
                    let rest = (*p != MessageProps::default()).then(|| Arc::from(p));
                    (rest, ids.into_boxed_slice())
                }
                None => (None, Box::new([]) as Box<[u32]>),
            };
            let msg = Arc::new(Message {
                topic: name,
                payload: m.payload,
                props,
                sub_ids,
            });
            match m.pkid {
                Some(pkid) => q.inflight.push_back(InFlight {
                    seq: m.seq,
                    pkid,
                    msg,
                    qos: m.qos,
                    released: m.released,
                }),
                None => {
                    q.queued_bytes += msg.size();
                    q.queue.push_back(Queued {
                        seq: m.seq,
                        msg,
                        qos: m.qos,
                        retain: m.retain,
                    });
                }
            }
        }
        s.journal = Some(journal);
        s.keep(Box::new(q));
        s
    }

    /// Keeps `q` as the session's queues, or none when it holds nothing.
    fn keep(&mut self, q: Box<Queues>) {
        self.queues = (!q.is_empty()).then_some(q);
    }

    /// An inbound QoS 2 PUBLISH: false if its packet id is already held (a re-send, not routed
    /// again).
    pub fn receive_qos2(&mut self, pkid: u16) -> bool {
        if !self.incoming_qos2.get_or_insert_default().insert(pkid) {
            return false;
        }
        self.record(|client_id| Change::Qos2In {
            client_id,
            pkid,
            held: true,
        });
        true
    }

    /// PUBREL for an inbound QoS 2 message: its packet id is free again. Returns false if it
    /// was not held.
    pub fn release_qos2(&mut self, pkid: u16) -> bool {
        let held = self
            .incoming_qos2
            .as_mut()
            .is_some_and(|ids| ids.remove(&pkid));
        if self
            .incoming_qos2
            .as_ref()
            .is_some_and(|ids| ids.is_empty())
        {
            self.incoming_qos2 = None;
        }
        if held {
            self.record(|client_id| Change::Qos2In {
                client_id,
                pkid,
                held: false,
            });
        }
        held
    }

    /// QoS 1/2 messages sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.queues.as_ref().map_or(0, |q| q.inflight.len())
    }

    /// Messages waiting for room in the connection or the in-flight window.
    pub fn queued_len(&self) -> usize {
        self.queues.as_ref().map_or(0, |q| q.queue.len())
    }

    /// Bytes (topic and payload) of the messages waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queues.as_ref().map_or(0, |q| q.queued_bytes)
    }

    /// The queue is past its high-water mark.
    pub fn over_high_water(&self) -> bool {
        self.queued_len() >= self.limits.high_water
            || self.queued_bytes() >= self.limits.high_water_bytes
    }

    /// The queue has drained under half of its high-water mark.
    pub fn under_low_water(&self) -> bool {
        self.queued_len() <= self.limits.high_water / 2
            && self.queued_bytes() <= self.limits.high_water_bytes / 2
    }

    /// Hands a message to the session at the QoS it is to be delivered with.
    ///
    /// Messages go out in order through one queue: straight to the connection while its channel
    /// has room (and, for QoS 1/2, the in-flight window too), else they wait in the queue, up to
    /// `max_queued`; beyond that they are dropped and counted. QoS 0 is not kept for an offline
    /// client.
    pub fn deliver(&mut self, msg: &Arc<Message>, qos: QoS, retain: bool) -> Delivery {
        let size = msg.size();
        let queued = self.queued_len();
        if too_large(msg, qos, &self.limits)
            || msg.expired()
            || (qos == QoS::AtMostOnce && self.online.is_none())
            || queued >= self.limits.max_queued
            || (self.queued_bytes() + size > self.limits.max_queued_bytes && queued != 0)
        {
            self.dropped += 1;
            return Delivery::Dropped;
        }
        // With nothing ahead of it, a QoS 0 message goes straight into the channel: the
        // session allocates no queues for it.
        if qos == QoS::AtMostOnce
            && self.queues.is_none()
            && let Some(online) = &self.online
        {
            match reserve(online) {
                Ok(permit) => {
                    permit.send(Outbound::Publish(OutPublish {
                        msg: msg.clone(),
                        qos,
                        pkid: 0,
                        retain,
                        dup: false,
                    }));
                    self.messages_out += 1;
                    return Delivery::Accepted;
                }
                // Gone, with its Closed message on the way: as `pump` does, a QoS 0 message
                // for it goes.
                Err(TrySendError::Closed(())) => {
                    self.dropped += 1;
                    return Delivery::Accepted;
                }
                Err(TrySendError::Full(())) => {}
            }
        }
        let seq = if qos != QoS::AtMostOnce && self.journal.is_some() {
            self.last_seq += 1;
            self.record(|client_id| Change::Queued {
                client_id,
                seq: self.last_seq,
                msg: msg.clone(),
                qos,
                retain,
            });
            self.last_seq
        } else {
            0
        };
        let q = self.queues.get_or_insert_default();
        q.queued_bytes += size;
        q.queue.push_back(Queued {
            seq,
            msg: msg.clone(),
            qos,
            retain,
        });
        self.pump();
        Delivery::Accepted
    }

    /// Sends what waits, in order: first the answers that found the channel full, then queued
    /// messages while the connection's channel has room and, for QoS 1/2, the in-flight window
    /// too. When the channel is what blocks, the connection is asked to say when it has drained
    /// (`room_wanted`), and the router calls `pump` again then.
    pub fn pump(&mut self) {
        let Some(mut queues) = self.queues.take() else {
            return;
        };
        self.pump_from(&mut queues);
        self.keep(queues);
    }

    fn pump_from(&mut self, queues: &mut Queues) {
        let limits = &*self.limits;
        let Some(online) = &self.online else { return };
        while let Some(answer) = queues.answers.pop_front() {
            match online.tx.try_send(answer) {
                Ok(()) => {}
                Err(TrySendError::Full(answer)) => {
                    queues.answers.push_front(answer);
                    if !has_room(online, 0) {
                        return;
                    }
                }
                Err(TrySendError::Closed(_)) => {
                    // Gone; its Closed message is on the way and nobody is left to answer.
                    queues.answers.clear();
                    return;
                }
            }
        }
        if queues.unsent > 0 && !self.resend(queues) {
            return;
        }
        while let Some(front) = queues.queue.front() {
            if front.qos != QoS::AtMostOnce && queues.inflight.len() >= limits.max_inflight {
                return; // an acknowledgement will call pump again
            }
            let permit = match reserve(online) {
                Ok(permit) => permit,
                Err(TrySendError::Full(())) => return,
                Err(TrySendError::Closed(())) => {
                    // The connection is gone and its Closed message is on the way: QoS 1/2
                    // messages move into flight to be re-sent on reconnect, QoS 0 go.
                    if front.qos == QoS::AtMostOnce {
                        if let Some(q) = queues.queue.pop_front() {
                            queues.queued_bytes -= q.msg.size();
                        }
                        self.dropped += 1;
                        continue;
                    }
                    return;
                }
            };
            let Some(q) = queues.queue.pop_front() else {
                return;
            };
            queues.queued_bytes -= q.msg.size();
            // MQTT 5: a message whose expiry ran out while it waited goes, as done, and so
            // does one larger than the client now connected takes.
            if q.msg.expired() || too_large(&q.msg, q.qos, limits) {
                self.dropped += 1;
                if q.seq != 0 {
                    let seq = q.seq;
                    self.record(|client_id| Change::Done { client_id, seq });
                }
                continue;
            }
            let pkid = if q.qos == QoS::AtMostOnce {
                0
            } else {
                next_free_pkid(&mut self.next_pkid, &queues.inflight)
            };
            permit.send(Outbound::Publish(OutPublish {
                msg: q.msg.clone(),
                qos: q.qos,
                pkid,
                retain: q.retain,
                dup: false,
            }));
            self.messages_out += 1;
            if q.qos != QoS::AtMostOnce {
                if q.seq != 0 {
                    let seq = q.seq;
                    self.record(|client_id| Change::Sent {
                        client_id,
                        seq,
                        pkid,
                    });
                }
                queues.inflight.push_back(InFlight {
                    seq: q.seq,
                    pkid,
                    msg: q.msg,
                    qos: q.qos,
                    released: false,
                });
            }
        }
    }

    /// PUBACK for a QoS 1 message. Returns false if no such message was in flight.
    pub fn on_puback(&mut self, pkid: u16) -> bool {
        self.complete(pkid, QoS::AtLeastOnce)
    }

    /// PUBCOMP for a QoS 2 message.
    pub fn on_pubcomp(&mut self, pkid: u16) -> bool {
        self.complete(pkid, QoS::ExactlyOnce)
    }

    fn complete(&mut self, pkid: u16, qos: QoS) -> bool {
        let Some(queues) = self.queues.as_mut() else {
            return false;
        };
        // Acknowledgements nearly always come in order: look from the front.
        let Some(at) = queues
            .inflight
            .iter()
            .position(|m| m.pkid == pkid && m.qos == qos)
        else {
            return false;
        };
        // A client that acknowledges what it was not sent again yet (it had it before).
        if at >= queues.inflight.len() - queues.unsent as usize {
            queues.unsent -= 1;
        }
        if let Some(m) = queues.inflight.remove(at)
            && m.seq != 0
        {
            self.record(|client_id| Change::Done {
                client_id,
                seq: m.seq,
            });
        }
        self.pump();
        true
    }

    /// PUBREC for a QoS 2 message: the connection has answered PUBREL already.
    pub fn on_pubrec(&mut self, pkid: u16) -> bool {
        match self.queues.as_mut().and_then(|q| {
            q.inflight
                .iter_mut()
                .find(|m| m.pkid == pkid && m.qos == QoS::ExactlyOnce)
        }) {
            Some(m) => {
                m.released = true;
                let seq = m.seq;
                if seq != 0 {
                    self.record(|client_id| Change::Released { client_id, seq });
                }
                true
            }
            None => false,
        }
    }

    /// Attaches a new connection and re-sends what is in flight: PUBLISH with DUP for messages
    /// not yet acknowledged, PUBREL for those released, in their original order. Then fills the
    /// window from the queue.
    /// Drops the queued messages (not those in flight, which the client has already been
    /// sent) that none of its subscriptions matches any more, as done: after its rules took
    /// some away. Returns how many went.
    pub fn drop_unsubscribed(&mut self) -> usize {
        let Some(mut queues) = self.queues.take() else {
            return 0;
        };
        let filters = &self.filters;
        let (kept, gone): (VecDeque<Queued>, VecDeque<Queued>) = std::mem::take(&mut queues.queue)
            .into_iter()
            .partition(|q| {
                filters
                    .iter()
                    .any(|(f, _)| topics::matches(topics::target(f), &q.msg.topic))
            });
        queues.queue = kept;
        queues.queued_bytes -= gone.iter().map(|q| q.msg.size()).sum::<usize>();
        self.keep(queues);
        for q in &gone {
            if q.seq != 0 {
                self.record(|client_id| Change::Done {
                    client_id,
                    seq: q.seq,
                });
            }
        }
        self.dropped += gone.len() as u64;
        gone.len()
    }

    pub fn attach(&mut self, online: Online, limits: Arc<Limits>) {
        self.limits = limits.clone();
        self.seen = SystemTime::now();
        let mut gone = Vec::new();
        let mut released = Vec::new();
        let Some(queues) = self.queues.as_mut() else {
            self.online = Some(online);
            return;
        };
        // MQTT 5: what the new connection does not take (its Maximum Packet Size) is dropped
        // as done, as a message too large for it would have been.
        // A QoS 1 one goes as done; a QoS 2 one is released instead (PUBREL): the client may
        // hold its packet id from the last connection, and PUBREL frees it on both sides.
        if limits.max_packet_out != usize::MAX {
            // One pass: each message is sized once.
            queues.inflight.retain_mut(|m| {
                if m.released || !too_large(&m.msg, m.qos, &limits) {
                    return true;
                }
                if m.qos == QoS::ExactlyOnce {
                    m.released = true;
                    released.push(m.seq);
                    true
                } else {
                    gone.push(m.seq);
                    false
                }
            });
        }
        // Sent again a window at a time, the window this connection's client takes.
        queues.unsent = queues.inflight.len() as u32;
        self.dropped += (gone.len() + released.len()) as u64;
        for seq in gone.into_iter().filter(|&s| s != 0) {
            self.record(|client_id| Change::Done { client_id, seq });
        }
        for seq in released.into_iter().filter(|&s| s != 0) {
            self.record(|client_id| Change::Released { client_id, seq });
        }
        self.online = Some(online);
        self.pump();
    }

    /// Sends again, with their packet ids, the in-flight messages this connection has not been
    /// sent yet, while its window has room. False when the channel is full.
    fn resend(&self, queues: &mut Queues) -> bool {
        let Some(online) = &self.online else {
            return true;
        };
        while queues.unsent > 0 {
            let at = queues.inflight.len() - queues.unsent as usize;
            if at >= self.limits.max_inflight {
                return true;
            }
            let m = &queues.inflight[at];
            let out = if m.released {
                Outbound::PubRel(m.pkid)
            } else {
                Outbound::Publish(OutPublish {
                    msg: m.msg.clone(),
                    qos: m.qos,
                    pkid: m.pkid,
                    retain: false,
                    dup: true,
                })
            };
            // Answers keep a reserve of their own in the channel, as in `pump`.
            if online.tx.capacity() <= CONTROL_RESERVE && !has_room(online, CONTROL_RESERVE) {
                return false;
            }
            match online.tx.try_send(out) {
                Ok(()) => queues.unsent -= 1,
                Err(TrySendError::Full(_)) => {
                    if !has_room(online, 0) {
                        return false;
                    }
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// Detaches the connection, returning it.
    pub fn detach(&mut self) -> Option<Online> {
        self.seen = SystemTime::now();
        // Answers belong to the connection that asked; a new one asks afresh.
        if let Some(mut queues) = self.queues.take() {
            queues.answers.clear();
            self.keep(queues);
        }
        self.online.take()
    }

    /// Sends the answer to a client's packet (SUBACK, UNSUBACK), after any answer still waiting
    /// and before any message queued after it. Never refused: a client that pipelines packets
    /// faster than the router's answers drain is busy, not stalled.
    pub fn answer(&mut self, out: Outbound) {
        let Some(online) = &self.online else { return };
        // Straight into the channel when nothing waits ahead of it: the queue (and its
        // allocation, kept by every idle session) is for the rare full channel.
        let out = if self.queues.as_ref().is_none_or(|q| q.answers.is_empty()) {
            match online.tx.try_send(out) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(out)) => out,
            }
        } else {
            out
        };
        self.queues.get_or_insert_default().answers.push_back(out);
        self.pump();
    }
}

/// Whether the channel has more than `reserve` free slots, after asking the connection to say
/// when it has drained if it has not. The connection may drain between the first look and the
/// flag, so look again after setting it: one of the two sides always sees the other.
/// MQTT 5: a PUBLISH of `msg` at `qos` would be larger than the client takes.
fn too_large(msg: &Message, qos: QoS, limits: &Limits) -> bool {
    limits.max_packet_out != usize::MAX
        && super::codec_v5::publish_len(
            &msg.topic,
            msg.payload.len(),
            qos,
            msg.props.as_deref(),
            &msg.sub_ids,
        ) > limits.max_packet_out
}

/// A place in the connection's channel for a PUBLISH: never one of the last `CONTROL_RESERVE`,
/// which are the answers'.
fn reserve(online: &Online) -> Result<outbox::Permit<'_, Outbound>, TrySendError<()>> {
    if online.tx.capacity() <= CONTROL_RESERVE && !has_room(online, CONTROL_RESERVE) {
        return Err(TrySendError::Full(()));
    }
    online.tx.try_reserve()
}

fn has_room(online: &Online, reserve: usize) -> bool {
    online.tx.want_room() > reserve
}

/// The next packet id after `counter` that is not in flight (1..=65535; 0 is not a packet id).
fn next_free_pkid(counter: &mut u16, inflight: &VecDeque<InFlight>) -> u16 {
    loop {
        *counter = counter.wrapping_add(1);
        if *counter == 0 {
            *counter = 1;
        }
        if !inflight.iter().any(|m| m.pkid == *counter) {
            return *counter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const LIMITS: Limits = Limits {
        max_inflight: 2,
        max_queued: 3,
        max_queued_bytes: 1 << 20,
        high_water: 1,
        high_water_bytes: 1 << 20,
        max_buffered: 2,
        max_packet_out: usize::MAX,
    };

    fn online(cap: usize) -> (Online, outbox::Receiver<Outbound>) {
        let (tx, rx) = outbox::channel(cap);
        let o = Online {
            conn: 1,
            tx,
            will: None,
            peer: Arc::new(Peer {
                addr: "127.0.0.1:1".parse().unwrap(),
                local: "127.0.0.1:1883".parse().unwrap(),
                transport: crate::broker::protocol::Transport::Tcp,
            }),
            username: None,
            grant: None,
            level: 4,
            v5: None,
            keep_alive: 60,
            held_by: 0,
            asleep: false,
        };
        (o, rx)
    }

    fn publishes(rx: &mut outbox::Receiver<Outbound>) -> Vec<(u16, bool, String)> {
        let mut out = vec![];
        while let Ok(m) = rx.try_recv() {
            match m {
                Outbound::Publish(p) => out.push((
                    p.pkid,
                    p.dup,
                    String::from_utf8_lossy(&p.msg.payload).into(),
                )),
                Outbound::PubRel(id) => out.push((id, false, "PUBREL".into())),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    fn unsuback(pkid: u16) -> Outbound {
        Outbound::UnsubAck {
            pkid,
            codes: Box::new([]),
        }
    }

    fn msg(s: &mut Session, text: &'static str, qos: QoS) -> Delivery {
        let msg = Arc::new(Message {
            topic: Arc::from("t"),
            payload: Bytes::from(text),
            props: None,
            sub_ids: Box::new([]),
        });
        s.deliver(&msg, qos, false)
    }

    #[test]
    fn window_then_queue_then_drop() {
        let mut s = Session::new("c".into(), false, Arc::new(LIMITS));
        let (o, mut rx) = online(LIMITS.channel_capacity());
        s.attach(o, Arc::new(LIMITS));
        for text in ["a", "b", "c", "d", "e"] {
            assert_eq!(msg(&mut s, text, QoS::AtLeastOnce), Delivery::Accepted);
        }
        assert_eq!(msg(&mut s, "f", QoS::AtLeastOnce), Delivery::Dropped);
        assert_eq!(s.dropped, 1);
        let sent = publishes(&mut rx);
        assert_eq!(sent, vec![(1, false, "a".into()), (2, false, "b".into())]);
        assert!(s.on_puback(1));
        assert!(!s.on_puback(1), "a second PUBACK is not a second ack");
        assert_eq!(publishes(&mut rx), vec![(3, false, "c".into())]);
    }

    #[test]
    fn reconnect_resends_with_dup_in_order() {
        let mut s = Session::new("c".into(), false, Arc::new(LIMITS));
        let (o, mut rx) = online(LIMITS.channel_capacity());
        s.attach(o, Arc::new(LIMITS));
        msg(&mut s, "a", QoS::ExactlyOnce);
        msg(&mut s, "b", QoS::AtLeastOnce);
        msg(&mut s, "c", QoS::AtLeastOnce);
        publishes(&mut rx);
        assert!(s.on_pubrec(1));
        s.detach();
        assert_eq!(msg(&mut s, "d", QoS::AtLeastOnce), Delivery::Accepted);
        assert_eq!(
            msg(&mut s, "x", QoS::AtMostOnce),
            Delivery::Dropped,
            "QoS 0 is not kept offline"
        );
        let (o, mut rx) = online(LIMITS.channel_capacity());
        s.attach(o, Arc::new(LIMITS));
        assert_eq!(
            publishes(&mut rx),
            vec![(1, false, "PUBREL".into()), (2, true, "b".into())]
        );
        assert!(s.on_pubcomp(1));
        assert_eq!(publishes(&mut rx), vec![(3, false, "c".into())]);
        assert!(s.on_puback(2));
        assert_eq!(publishes(&mut rx), vec![(4, false, "d".into())]);
    }

    #[test]
    fn a_full_channel_queues_in_order_and_asks_for_room() {
        let mut s = Session::new("c".into(), true, Arc::new(LIMITS));
        let (o, mut rx) = online(LIMITS.channel_capacity());
        s.attach(o, Arc::new(LIMITS));
        for text in ["a", "b", "c"] {
            assert_eq!(msg(&mut s, text, QoS::AtMostOnce), Delivery::Accepted);
        }
        assert_eq!(msg(&mut s, "d", QoS::AtLeastOnce), Delivery::Accepted);
        assert_eq!(s.queued_len(), 2, "the channel holds the buffer's worth");
        assert!(
            s.online.as_ref().unwrap().tx.room_wanted(),
            "asks to be told when there is room"
        );
        assert_eq!(msg(&mut s, "e", QoS::AtMostOnce), Delivery::Accepted);
        assert_eq!(
            msg(&mut s, "f", QoS::AtMostOnce),
            Delivery::Dropped,
            "queue full"
        );
        assert_eq!(publishes(&mut rx).len(), 2);
        s.pump();
        assert_eq!(publishes(&mut rx).len(), 2);
        s.pump();
        let rest: Vec<String> = publishes(&mut rx).into_iter().map(|p| p.2).collect();
        assert_eq!(rest, vec!["e"], "in order, QoS 1 and 0 alike");
        assert_eq!(s.inflight_len(), 1);
    }

    #[test]
    fn answers_wait_for_room_in_order_and_go_before_later_messages() {
        let mut s = Session::new("c".into(), true, Arc::new(LIMITS));
        let (o, mut rx) = online(CONTROL_RESERVE + 1);
        s.attach(o, Arc::new(LIMITS));
        // More answers than the channel holds, a message, then one more answer.
        let n = CONTROL_RESERVE as u16 + 2;
        for id in 1..=n {
            s.answer(unsuback(id));
        }
        assert_eq!(msg(&mut s, "a", QoS::AtMostOnce), Delivery::Accepted);
        s.answer(unsuback(n + 1));
        let mut seen = Vec::new();
        while let Ok(out) = rx.try_recv() {
            match out {
                Outbound::UnsubAck { pkid, .. } => seen.push(pkid.to_string()),
                Outbound::Publish(p) => {
                    seen.push(String::from_utf8_lossy(&p.msg.payload).into_owned())
                }
                other => panic!("unexpected {other:?}"),
            }
            s.pump(); // what the router does when the connection says it has room
        }
        let mut expected: Vec<String> = (1..=n + 1).map(|id| id.to_string()).collect();
        expected.push("a".into());
        assert_eq!(
            seen, expected,
            "every answer, in order, before the later message"
        );
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_flight() {
        let mut s = Session::new("c".into(), false, Arc::new(LIMITS));
        let (o, mut rx) = online(LIMITS.channel_capacity());
        s.attach(o, Arc::new(LIMITS));
        s.next_pkid = 65_534;
        msg(&mut s, "a", QoS::AtLeastOnce); // 65535, stays in flight
        msg(&mut s, "b", QoS::AtLeastOnce); // 1
        let mut ids: Vec<u16> = publishes(&mut rx).into_iter().map(|p| p.0).collect();
        s.on_puback(1);
        s.next_pkid = 65_534;
        msg(&mut s, "c", QoS::AtLeastOnce); // 65535 is taken, so 1
        ids.extend(publishes(&mut rx).into_iter().map(|p| p.0));
        assert_eq!(ids, vec![65_535, 1, 1]);
    }
}
