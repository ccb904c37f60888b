//! The router: the one owner of broker state (sessions, subscriptions, topics, retained messages,
//! history, users). Connection tasks and the embedder talk to it only through `ToRouter`
//! messages; it answers through each connection's bounded channel with `try_send`, so it never
//! waits on a client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::broker::protocol::QoS;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

mod bridges;
mod commands;
mod flow;

use super::acl::Grant;
use super::config::Config;
use super::events::{EventKind, EventLog};
use super::link::{
    CloseReason, Command, ConnId, ConnectRequest, Inbound, Message, Outbound, ToRouter,
};
use super::protocol::Will;
use super::protocol::{AckKind, Expiry, MessageProps, Publish, Reason, SubOptions, SubscribeCode};
use super::retain_order::RetainedIndex;
use super::saver::SaveJob;
use super::session::{Delivery, Limits, Online, Session};
use super::stats::Stats;
use super::store::{Batch, Change, Journal, Loaded, Store};
use super::sys::{self, SysFigures};
use super::table::{Absent, Retained, SessionIdx, TopicTable, extra_of};
use super::topics;
use super::users::Users;

/// Messages the router takes off its queue in one go.
const BATCH: usize = 256;
/// A run of acknowledgements this short, alone in the router's batch, is a quiet broker's:
/// answered after the subscribers it delivered to have had their turn (see `run`).
const QUIET_PACKETS: usize = 4;

/// MQTT 5: the acknowledgements of a run that are not a plain success, and why.
type AckCodes = Vec<(AckKind, u16, Reason)>;

/// Broker-wide counts the router keeps.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    /// Messages not delivered: unlisted topic, slow or offline QoS 0 client, full queue.
    pub dropped: u64,
    /// PUBLISHes to a topic that is not on the list (or into `$SYS`).
    pub unlisted: u64,
    /// SUBSCRIBE filters answered with 0x80.
    pub refused_subscriptions: u64,
    /// Connections turned away before CONNACK 0 (bad login, bad CONNECT).
    pub refused_connections: u64,
    /// PUBLISHes dropped because no more topics not on the list may appear.
    pub topics_full: u64,
    /// PUBLISHes (and wills) dropped because the client's rules do not allow the topic.
    pub denied: u64,
    pub maximum_connected: usize,
}

pub(crate) struct Router {
    limits: Arc<Limits>,
    topics: TopicTable,
    sessions: Vec<Option<Session>>,
    free: Vec<SessionIdx>,
    by_client: HashMap<Arc<str>, SessionIdx>,
    by_conn: HashMap<ConnId, SessionIdx>,
    users: watch::Sender<Arc<Users>>,
    users_path: Option<PathBuf>,
    topics_path: Option<PathBuf>,
    saver: mpsc::Sender<SaveJob>,
    events: EventLog,
    stats: Arc<Stats>,
    counters: Counters,
    started: Instant,
    sys_interval: Option<Duration>,
    stall_timeout: Duration,
    on_stuck: super::config::OnStuck,
    next_assigned_id: u64,
    /// The router's own queue, for work it hands off and takes back (a password hashed off
    /// its thread). Weak, so that it does not keep the queue open by itself.
    me: mpsc::WeakSender<ToRouter>,
    /// Users file saves handed to the saver and not yet done, and the version last written:
    /// what the users watcher reads meanwhile, or reads of older versions, are not taken in.
    users_saves_pending: usize,
    users_saved: Option<super::files::FileStamp>,
    /// Persistence, when on: where changes are recorded as they are made, where they go at the
    /// end of each batch, numbered `epoch` (see `store`).
    journal: Option<Arc<Journal>>,
    store: Option<Store>,
    epoch: u64,
    /// A quiet batch's one message, when it ends with a run of acknowledgements: answered at
    /// the batch's end.
    acks_later: Option<(SessionIdx, AckCodes)>,
    /// The retained messages in the order a wildcard subscriber is sent them.
    retained: RetainedIndex,
    /// MQTT 5 sessions offline with a finite Session Expiry Interval, and when each ends.
    expiring: HashMap<SessionIdx, Instant>,
    /// MQTT 5 wills waiting for their Will Delay Interval, by session: when, what, whose.
    delayed_wills: HashMap<SessionIdx, (Instant, Box<Will>, Arc<str>)>,
    bridges: bridges::BridgeBook,
    sn_stats: Option<Arc<super::sn::SnStats>>,
}

/// Where the router hands work off: files to save, its own queue (for work done off its
/// thread), and the bridges' tasks.
pub(crate) struct Helpers {
    pub saver: mpsc::Sender<SaveJob>,
    pub me: mpsc::WeakSender<ToRouter>,
    pub bridges: super::bridge::Bridges,
    /// The MQTT-SN gateway's counters, when it runs (for the snapshot).
    pub sn_stats: Option<Arc<super::sn::SnStats>>,
}

impl Router {
    pub fn new(
        config: &Config,
        limits: Limits,
        users: watch::Sender<Arc<Users>>,
        stats: Arc<Stats>,
        helpers: Helpers,
        store: Option<(Store, Loaded)>,
    ) -> Self {
        let Helpers {
            saver,
            me,
            bridges,
            sn_stats,
        } = helpers;
        let sys_interval = config.sys_interval.filter(|d| !d.is_zero());
        let mut table = TopicTable::new(config.topics_mode, config.max_unlisted_topics);
        for t in &config.topics {
            table.list(t);
        }
        if sys_interval.is_some() {
            for t in sys::topics() {
                table.insert_system(t);
            }
        }
        let (store, loaded) = match store {
            Some((s, l)) => (Some(s), Some(l)),
            None => (None, None),
        };
        let mut router = Router {
            limits: Arc::new(limits),
            topics: table,
            sessions: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            by_conn: HashMap::new(),
            users,
            users_path: config.users_path.clone(),
            topics_path: config.topics_path.clone(),
            saver,
            events: EventLog::default(),
            stats,
            counters: Counters::default(),
            started: Instant::now(),
            sys_interval,
            stall_timeout: config.stall_timeout.max(Duration::from_millis(100)),
            on_stuck: config.on_stuck,
            next_assigned_id: 0,
            me,
            users_saves_pending: 0,
            users_saved: None,
            journal: store.as_ref().map(|_| Arc::new(Journal::default())),
            store,
            epoch: 1,
            acks_later: None,
            retained: RetainedIndex::default(),
            expiring: HashMap::new(),
            delayed_wills: HashMap::new(),
            bridges: bridges::BridgeBook::new(
                config.bridges.clone(),
                config.bridges_path.clone(),
                bridges,
            ),
            sn_stats,
        };
        if let Some(loaded) = loaded {
            router.restore(loaded);
        }
        router
    }

    /// Takes in what the store held: retained messages of topics that may exist (the others stay
    /// on disk until cleared), and persistent sessions, offline, subscribed as they were.
    fn restore(&mut self, loaded: Loaded) {
        let mut retained = 0;
        for (topic, qos, payload, props) in loaded.retained {
            if let Some(t) = self.topics.for_restore(&topic) {
                self.retained.set(
                    &t.name,
                    &mut t.retain_key,
                    Some((payload.clone(), qos, props.clone())),
                );
                t.retained = Some(Retained {
                    payload,
                    qos,
                    props,
                });
                retained += 1;
            }
        }
        let journal = self.journal.clone().expect("restoring means persisting");
        let mut queued = 0;
        let sessions = loaded.sessions.len();
        for stored in loaded.sessions {
            let topics = &self.topics;
            let mut session =
                Session::restore(stored, self.limits.clone(), journal.clone(), |name| {
                    topics
                        .get(name)
                        .map_or_else(|| name.clone(), |t| t.name.clone())
                });
            queued += session.queued_len() + session.inflight_len();
            // The topic list may have changed since: a subscription that matches nothing on it
            // goes, as when a topic is deleted while the broker runs.
            let before = session.filters.len();
            let table = &self.topics;
            session.filters.retain(|(f, _)| table.serves(f));
            if session.filters.len() != before {
                session.record_filters();
            }
            let idx = self.sessions.len();
            for (filter, options) in &session.filters {
                self.topics.subscribe_with(idx, filter, *options);
            }
            // An MQTT 5 session's expiry counts again from the start: the broker does not know
            // when, before it stopped, the client left.
            if session.expiry != u32::MAX {
                let at = Instant::now() + Duration::from_secs(session.expiry as u64);
                self.expiring.insert(idx, at);
            }
            self.by_client.insert(session.client_id.clone(), idx);
            self.sessions.push(Some(session));
        }
        info!(
            retained,
            sessions,
            messages = queued,
            "state restored from the data folder"
        );
        if retained + sessions > 0 {
            self.events.push(
                EventKind::Persistence,
                "",
                format!("restored {retained} retained messages and {sessions} persistent sessions holding {queued} messages"),
            );
        }
    }

    /// Hands what this batch changed to the store's writer, numbered with this batch's epoch;
    /// waits only when the writer has fallen far behind (the disk is the limit then).
    async fn flush_journal(&mut self) {
        let (Some(journal), Some(store)) = (&self.journal, &self.store) else {
            return;
        };
        let changes = journal.take();
        if changes.is_empty() {
            return;
        }
        let batch = Batch {
            epoch: self.epoch,
            changes,
        };
        self.epoch += 1;
        if store.tx.send(batch).await.is_err() {
            tracing::error!("the store's writer is gone: changes are no longer persisted");
        }
    }

    /// The epoch a connection's acknowledgements must wait for: this batch's if anything is
    /// waiting to be written, else the last one handed to the writer. Not 0 even when this run
    /// of packets changed nothing: a re-sent QoS 2 PUBLISH or PUBREL changes nothing because
    /// its first sending did, and that change may still be on its way to the disk.
    fn durable_epoch(&self) -> u64 {
        match &self.journal {
            Some(j) if !j.is_empty() => self.epoch,
            Some(_) => self.epoch - 1,
            None => 0,
        }
    }

    /// Runs until `Command::Shutdown` or until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<ToRouter>) {
        let mut batch = Vec::with_capacity(BATCH);
        let period = self.sys_interval.unwrap_or(Duration::from_secs(3600));
        // $SYS is there (retained) before the first client arrives.
        if self.sys_interval.is_some() {
            self.publish_sys();
        }
        let mut sys_tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        sys_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stall_tick = tokio::time::interval(self.stall_timeout / 4);
        stall_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.bridges.apply();
        let mut expiry_tick = tokio::time::interval(EXPIRY_TICK);
        expiry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    // Alone in its batch, nothing can come between a message's packets and
                    // the answer held back for them.
                    let alone = n == 1;
                    for msg in batch.drain(..) {
                        if !self.handle(msg, alone) {
                            self.shutdown();
                            self.flush_journal().await;
                            return;
                        }
                    }
                }
                _ = sys_tick.tick(), if self.sys_interval.is_some() => self.publish_sys(),
                _ = stall_tick.tick() => self.check_stalls(),
                _ = expiry_tick.tick(), if !self.expiring.is_empty() || !self.delayed_wills.is_empty() => {
                    self.expire_sessions()
                }
            }
            self.flush_journal().await;
            if let Some((idx, codes)) = self.acks_later.take() {
                // Every connection this batch woke is queued behind the one woken last, which
                // tokio runs first (its LIFO slot): answered in the batch, a publisher's
                // PUBACK would be written, and another worker woken for the subscribers,
                // before the message it acknowledges is. A quiet broker serves subscribers
                // first, and wakes nobody it need not. A busy one answers at once: a yield
                // puts the router behind every task that is ready.
                if rx.is_empty() {
                    tokio::task::yield_now().await;
                }
                self.answer_acks(idx, codes);
            }
        }
    }

    /// Handles one message, `alone` in its batch or not; false means stop.
    fn handle(&mut self, msg: ToRouter, alone: bool) -> bool {
        // A snapshot changes nothing: counting it would make a reader that polls for changes
        // see one every time it looks.
        if !matches!(msg, ToRouter::Command(Command::Snapshot { .. })) {
            self.stats
                .changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match msg {
            ToRouter::Packets { conn, packets } => self.on_packets(conn, packets, alone),
            ToRouter::Connect(req) => self.on_connect(*req),
            ToRouter::Closed {
                conn,
                reason,
                session_expiry,
            } => self.on_closed(conn, reason, session_expiry),
            ToRouter::Writable { conn } => {
                if let Some(&idx) = self.by_conn.get(&conn) {
                    self.session(idx).pump();
                    self.progressed(idx);
                }
            }
            ToRouter::Refused {
                peer,
                client_id,
                reason,
            } => {
                self.counters.refused_connections += 1;
                let who = client_id.unwrap_or_else(|| peer.to_string());
                let kind = if reason.is_login() {
                    EventKind::LoginRefused
                } else {
                    EventKind::Fault
                };
                self.events
                    .push(kind, who, format!("{reason} (from {peer})"));
            }
            ToRouter::UsersFile { stamp, loaded } => self.on_users_file(stamp, loaded),
            ToRouter::UsersSaved(stamp) => {
                self.users_saves_pending = self.users_saves_pending.saturating_sub(1);
                if stamp.is_some() {
                    self.users_saved = stamp;
                }
            }
            ToRouter::UsersHashed { users, new, reply } => self.on_users_hashed(users, new, reply),
            ToRouter::Asleep { conn, asleep } => {
                if let Some(&idx) = self.by_conn.get(&conn) {
                    if let Some(o) = self.session(idx).online.as_mut() {
                        o.asleep = asleep;
                    }
                    // Its queue no longer holds anyone back.
                    if asleep {
                        self.release(idx);
                        self.session(idx).stuck = false;
                    }
                }
            }
            ToRouter::BridgeStatus { name, conn, status } => {
                self.on_bridge_status(name, conn, status)
            }
            ToRouter::BridgesFileRead { path, list, reply } => {
                self.on_bridges_file_read(path, list, reply)
            }
            ToRouter::TopicsFileRead { path, list, reply } => {
                self.on_topics_file_read(path, list, reply)
            }
            ToRouter::Command(Command::Shutdown) => return false,
            ToRouter::Command(cmd) => self.on_command(cmd),
        }
        true
    }

    fn session(&mut self, idx: SessionIdx) -> &mut Session {
        self.sessions[idx]
            .as_mut()
            .expect("indices in by_conn, by_client and topic tables point at live sessions")
    }

    fn connected(&self) -> usize {
        self.by_conn.len()
    }

    // ---- connections ------------------------------------------------------------------------

    fn on_connect(&mut self, req: ConnectRequest) {
        let client_id: Arc<str> = if req.client_id.is_empty() {
            // 3.1.1 lets the server pick an id for a clean session with none.
            self.next_assigned_id += 1;
            Arc::from(format!(
                "auto-{:x}-{}",
                std::process::id(),
                self.next_assigned_id
            ))
        } else {
            req.client_id.clone()
        };
        let mut session_present = false;
        let mut idx = self.by_client.get(&client_id).copied();
        if let Some(old) = idx {
            if self.session(old).online.is_some() {
                info!(client_id = %client_id, "client id connected again: closing the old connection");
                self.detach(old, CloseReason::TakenOver);
            }
            // A clean session (MQTT 5: Clean Start) on either side means the old state does
            // not carry over.
            if req.clean_session || self.sessions[old].as_ref().is_none_or(|s| s.clean) {
                if self.sessions[old].is_some() {
                    self.remove_session(old);
                }
                idx = None;
            } else {
                session_present = true;
            }
        }
        // MQTT 5: the session lasts as long as the Session Expiry Interval says, whatever Clean
        // Start said of the old one.
        let clean = match req.session_expiry {
            Some(expiry) => expiry == 0,
            None => req.clean_session,
        };
        let idx = match idx {
            Some(i) => i,
            None => {
                let s = Session::new(client_id.clone(), clean, self.limits.clone());
                let i = match self.free.pop() {
                    Some(i) => {
                        self.sessions[i] = Some(s);
                        i
                    }
                    None => {
                        self.sessions.push(Some(s));
                        self.sessions.len() - 1
                    }
                };
                self.by_client.insert(client_id.clone(), i);
                i
            }
        };
        self.events.push(
            EventKind::Connected,
            &*client_id,
            format!(
                "connected from {}{}{}",
                req.peer,
                req.username
                    .as_deref()
                    .map(|u| format!(" as {u}"))
                    .unwrap_or_default(),
                if session_present {
                    ", session resumed"
                } else {
                    ""
                }
            ),
        );
        info!(
            client_id = %client_id,
            peer = %req.peer,
            user = req.username.as_deref().unwrap_or("-"),
            clean_session = req.clean_session,
            session_present,
            "client connected"
        );
        // Session Present exists from 3.1.1 on; in 3.1 (level 3) that bit is reserved and 0.
        let assigned_id = (req.level >= 5 && req.client_id.is_empty()).then(|| client_id.clone());
        let _ = req.tx.try_send(Outbound::ConnAck {
            session_present: session_present && req.level >= 4,
            assigned_id,
        });
        let grant = grant_for(
            &self.users.borrow(),
            &req.peer,
            req.username.as_deref(),
            &client_id,
        );
        // A resumed session keeps only what its client's rules allow, before anything queued
        // is sent.
        if session_present && let Some(grant) = &grant {
            self.keep_to_rules(idx, grant, "its rules");
        }
        // A bridge back after its rules changed: its session keeps only the subscriptions its
        // rules now make.
        if session_present
            && req.peer.transport == super::protocol::Transport::Bridge
            && let Some(grant) = self.bridges.grant_of(&client_id)
        {
            self.keep_to_rules(idx, &grant, "the bridge's rules");
        }
        let online = Online {
            conn: req.conn,
            tx: req.tx,
            will: req.will.map(Box::new),
            peer: req.peer,
            grant,
            username: req.username.map(String::into_boxed_str),
            level: req.level,
            v5: req.v5,
            keep_alive: req.keep_alive,
            held_by: 0,
            asleep: false,
        };
        let journal = self.journal.clone();
        self.expiring.remove(&idx);
        // Back before its will's delay ran out: the will is not published.
        if self.delayed_wills.remove(&idx).is_some() {
            info!(client_id = %client_id, "client back before its will's delay: will cancelled");
        }
        // The broker's limits are shared by every client that has them.
        let limits = if req.limits == *self.limits {
            self.limits.clone()
        } else {
            Arc::new(req.limits)
        };
        let session = self.session(idx);
        session.set_lifetime(clean, req.session_expiry.unwrap_or(u32::MAX), journal);
        session.attach(online, limits);
        self.by_conn.insert(req.conn, idx);
        self.counters.maximum_connected = self.counters.maximum_connected.max(self.connected());
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, session_expiry: Option<u32>) {
        // Unknown: already detached by a kick or takeover, which dealt with the will.
        if let Some(&idx) = self.by_conn.get(&conn) {
            // MQTT 5: DISCONNECT may change how long the session outlives the connection (the
            // connection refused a change from 0).
            if let Some(expiry) = session_expiry {
                let journal = self.journal.clone();
                self.session(idx).set_lifetime(expiry == 0, expiry, journal);
            }
            self.detach(idx, reason);
            // A bridge taken out of the list: its session goes with its last connection.
            // (A clean session is gone already.)
            let discard = self.sessions[idx].as_ref().is_some_and(|s| {
                s.online.is_none() && self.bridges.discard.contains(&*s.client_id)
            });
            if discard {
                let client_id = self.session(idx).client_id.to_string();
                self.bridges.discard.remove(&client_id);
                self.remove_session(idx);
            }
        }
    }

    /// Removes the MQTT 5 sessions whose Session Expiry Interval has run out while offline,
    /// and publishes the wills whose delay has.
    fn expire_sessions(&mut self) {
        let now = Instant::now();
        let due: Vec<SessionIdx> = self
            .delayed_wills
            .iter()
            .filter(|(_, (at, _, _))| *at <= now)
            .map(|(idx, _)| *idx)
            .collect();
        for idx in due {
            self.publish_delayed_will(idx);
        }
        let gone: Vec<SessionIdx> = self
            .expiring
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(idx, _)| *idx)
            .collect();
        for idx in gone {
            self.expiring.remove(&idx);
            let Some(s) = self.sessions[idx].as_ref() else {
                continue;
            };
            if s.online.is_some() {
                continue;
            }
            let client_id = s.client_id.clone();
            info!(client_id = %client_id, "session expired");
            self.events.push(
                EventKind::Disconnected,
                &*client_id,
                "session expired (its Session Expiry Interval ran out)".to_owned(),
            );
            self.remove_session(idx);
        }
    }

    /// Takes a session's connection away: closes it (unless it closed itself), publishes the
    /// will if the ending calls for it, and drops the session if it was clean.
    fn detach(&mut self, idx: SessionIdx, reason: CloseReason) {
        // An offline session's queue waits for its client: it holds no one back.
        self.release(idx);
        // A client that leaves no longer keeps the topics it published to.
        self.topics.forget_publisher(idx);
        let session = self.session(idx);
        session.stuck = false;
        let Some(online) = session.detach() else {
            return;
        };
        let client_id = session.client_id.clone();
        let clean = session.clean;
        self.by_conn.remove(&online.conn);
        if matches!(
            reason,
            CloseReason::TakenOver
                | CloseReason::Kicked
                | CloseReason::Stuck(_)
                | CloseReason::ServerShutdown
        ) {
            let _ = online
                .tx
                .try_send(Outbound::Close(Box::new(reason.clone())));
        }
        info!(client_id = %client_id, peer = %online.peer, %reason, "client disconnected");
        let kind = match reason {
            CloseReason::ClientDisconnected
            | CloseReason::ClientDisconnectedWithWill
            | CloseReason::SocketClosed
            | CloseReason::TakenOver
            | CloseReason::ServerShutdown => EventKind::Disconnected,
            CloseReason::Kicked => EventKind::Kicked,
            CloseReason::Stuck(_) => EventKind::Stuck,
            _ => EventKind::Fault,
        };
        // A will goes where its client may publish, like its PUBLISHes.
        let will = online.will.filter(|_| reason.fires_will());
        let allowed = will.as_ref().is_some_and(|w| {
            online
                .grant
                .as_ref()
                .is_none_or(|g| g.may_publish(&w.topic))
        });
        // MQTT 5's Will Delay Interval: a session that outlives its connection publishes the
        // will after the delay (or when the session ends first), unless its client is back.
        let delay = will
            .as_ref()
            .filter(|w| allowed && w.delay > 0 && !clean)
            .map(|w| w.delay);
        let said = match (&will, allowed, delay) {
            (Some(_), true, Some(d)) => format!(", will published in {d} s unless it is back"),
            (Some(_), true, None) => ", will published".to_owned(),
            (Some(_), false, _) => ", will not allowed by its rules".to_owned(),
            (None, _, _) => String::new(),
        };
        // An MQTT 5 client was told why, by name.
        let told = match reason.disconnect_reason() {
            Some(r) if online.level >= 5 => format!(" (DISCONNECT {r})"),
            _ => String::new(),
        };
        self.events
            .push(kind, &*client_id, format!("{reason}{told}{said}"));
        if clean {
            self.remove_session(idx);
        } else {
            let expiry = self.session(idx).expiry;
            if expiry != u32::MAX {
                let at = Instant::now() + Duration::from_secs(expiry as u64);
                self.expiring.insert(idx, at);
            }
        }
        match will {
            Some(will) if allowed => match delay {
                Some(d) => {
                    let at = Instant::now() + Duration::from_secs(d as u64);
                    self.delayed_wills.insert(idx, (at, will, client_id));
                }
                None => {
                    debug!(client_id = %client_id, topic = %will.topic, "publishing will");
                    self.publish_will(*will, client_id);
                }
            },
            Some(will) => self.denied(&client_id, &will.topic, "will"),
            None => {}
        }
    }

    /// Publishes the delayed will of session `idx`, if it has one waiting.
    fn publish_delayed_will(&mut self, idx: SessionIdx) {
        if let Some((_, will, client_id)) = self.delayed_wills.remove(&idx) {
            debug!(client_id = %client_id, topic = %will.topic, "publishing delayed will");
            self.publish_will(*will, client_id);
        }
    }

    fn remove_session(&mut self, idx: SessionIdx) {
        self.release(idx);
        self.expiring.remove(&idx);
        // The session ends before its will's delay did: the will goes now.
        self.publish_delayed_will(idx);
        let Some(session) = self.sessions[idx].take() else {
            return;
        };
        for (filter, _) in &session.filters {
            self.topics.unsubscribe(idx, filter);
        }
        self.by_client.remove(&session.client_id);
        self.free.push(idx);
        if session.persisted()
            && let Some(j) = &self.journal
        {
            j.push(Change::SessionGone {
                client_id: session.client_id.clone(),
            });
        }
    }

    // ---- packets ----------------------------------------------------------------------------

    fn on_packets(&mut self, conn: ConnId, packets: Vec<Inbound>, alone: bool) {
        // Packets from a connection that was kicked or taken over after it sent them: ignored.
        let Some(&idx) = self.by_conn.get(&conn) else {
            return;
        };
        let packets_in = packets.len();
        let mut acked = false;
        // With persistence, and for MQTT 5 clients (whose acknowledgements carry a reason),
        // the connection holds its acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) until
        // told what they wait for: one `Acks` per run of such packets, before the next answer
        // of ours, exactly as the connection counts them.
        let v5 = self
            .session(idx)
            .online
            .as_ref()
            .is_some_and(|o| o.level >= 5);
        let holds = self.journal.is_some() || v5;
        let mut acks_owed = false;
        // MQTT 5: the reasons of this run's acknowledgements that are not a plain success.
        let mut codes: AckCodes = Vec::new();
        for packet in packets {
            if holds {
                let needs_ack = matches!(
                    &packet,
                    Inbound::Publish(p) if p.qos != QoS::AtMostOnce
                ) || matches!(packet, Inbound::PubRec(_) | Inbound::PubRel(_));
                let answers = matches!(
                    packet,
                    Inbound::Subscribe { .. } | Inbound::Unsubscribe { .. }
                );
                if needs_ack {
                    acks_owed = true;
                } else if answers && acks_owed {
                    acks_owed = false;
                    self.answer_acks(idx, std::mem::take(&mut codes));
                }
            }
            match packet {
                Inbound::Publish(p) => {
                    let (pkid, qos) = (p.pkid, p.qos);
                    let reason = self.on_publish(idx, p);
                    if v5 && reason != Reason::SUCCESS && qos != QoS::AtMostOnce {
                        let kind = if qos == QoS::AtLeastOnce {
                            AckKind::PubAck
                        } else {
                            AckKind::PubRec
                        };
                        codes.push((kind, pkid, reason));
                    }
                }
                Inbound::PubAck(id) => {
                    acked |= self.session(idx).on_puback(id);
                }
                Inbound::PubRec(id) => {
                    if !self.session(idx).on_pubrec(id) && v5 {
                        codes.push((AckKind::PubRel, id, Reason::PACKET_ID_NOT_FOUND));
                    }
                }
                Inbound::PubComp(id) => {
                    acked |= self.session(idx).on_pubcomp(id);
                }
                Inbound::PubRel(id) => {
                    if !self.session(idx).release_qos2(id) && v5 {
                        codes.push((AckKind::PubComp, id, Reason::PACKET_ID_NOT_FOUND));
                    }
                }
                Inbound::Subscribe { pkid, filters } => self.on_subscribe(idx, pkid, filters),
                Inbound::Unsubscribe { pkid, filters } => self.on_unsubscribe(idx, pkid, filters),
            }
        }
        if acks_owed {
            // A few packets alone in a batch: a client sending now and then, not a stream.
            if alone && packets_in <= QUIET_PACKETS {
                self.acks_later = Some((idx, codes));
            } else {
                self.answer_acks(idx, codes);
            }
        }
        if acked {
            self.progressed(idx);
        }
    }

    /// The router's word on a run of acknowledgements the connection holds: when they may go,
    /// and (MQTT 5) the reasons of those that are not a plain success.
    fn answer_acks(&mut self, idx: SessionIdx, codes: AckCodes) {
        let epoch = self.durable_epoch();
        let out = if codes.is_empty() {
            Outbound::Acks(epoch)
        } else {
            Outbound::AcksWith(epoch, codes.into())
        };
        self.session(idx).answer(out);
    }

    /// Routes a client's PUBLISH. Returns what an MQTT 5 acknowledgement says of it.
    fn on_publish(&mut self, idx: SessionIdx, p: Publish) -> Reason {
        let session = self.session(idx);
        session.messages_in += 1;
        // QoS 2: a PUBLISH re-sent before PUBREL is acknowledged again but not routed again.
        if p.qos == QoS::ExactlyOnce && !session.receive_qos2(p.pkid) {
            return Reason::SUCCESS;
        }
        let from = session.client_id.clone();
        // Bridged out of this broker before and back again: it was delivered here already.
        // (A bridge's own local side brings messages in marked as having been here.)
        let from_bridge = session
            .online
            .as_ref()
            .is_some_and(|o| o.peer.transport == super::protocol::Transport::Bridge);
        if !from_bridge
            && let Some(props) = &p.props
            && super::bridge::has_been_in(&props.user, self.bridges.running.broker_id())
        {
            self.bridges.loops += 1;
            debug!(client_id = %from, topic = %p.topic, "bridged message back at its origin: dropped");
            return Reason::SUCCESS;
        }
        let session = self.session(idx);
        // Acknowledged (the connection does that) but not delivered, as for an unlisted topic.
        let grant = session.online.as_ref().and_then(|o| o.grant.as_ref());
        let reason = if grant.is_some_and(|g| !g.may_publish(&p.topic)) {
            self.denied(&from, &p.topic, "PUBLISH");
            Reason::NOT_AUTHORIZED
        } else {
            self.route(
                Some((from, Some(idx))),
                &p.topic,
                p.payload,
                p.qos,
                p.retain,
                p.props,
            )
        };
        // MQTT 5: a QoS 2 PUBLISH refused with PUBREC 0x80 or more ends there, with no PUBREL
        // to free its packet id.
        if reason.is_error() && p.qos == QoS::ExactlyOnce {
            self.session(idx).release_qos2(p.pkid);
        }
        reason
    }

    /// A PUBLISH its client's rules do not allow: counted, and logged now and then (a device
    /// that keeps trying must not fill the log).
    fn denied(&mut self, client_id: &Arc<str>, topic: &str, what: &str) {
        self.counters.denied += 1;
        self.counters.dropped += 1;
        let n = self.counters.denied;
        debug!(client_id = %client_id, topic, "{what} not allowed by the client's rules: dropped");
        if n.is_power_of_two() {
            info!(client_id = %client_id, topic, denied = n, "publish not allowed by the client's rules");
            self.events.push(
                EventKind::PublishRefused,
                &**client_id,
                format!("{what} to {topic:?} not allowed by its rules: not delivered ({n} so far)"),
            );
        }
    }

    /// A connected client's user or rules changed: it gets its new rules, and its
    /// subscriptions they no longer allow go.
    fn regrant(&mut self) {
        let users = self.users.borrow().clone();
        for idx in 0..self.sessions.len() {
            let Some(session) = self.sessions[idx].as_mut() else {
                continue;
            };
            let Some(online) = session.online.as_mut() else {
                continue;
            };
            online.grant = grant_for(
                &users,
                &online.peer,
                online.username.as_deref(),
                &session.client_id,
            );
            if let Some(grant) = online.grant.clone() {
                self.keep_to_rules(idx, &grant, "its new rules");
            }
        }
    }

    /// Removes the subscriptions of a session that `grant` does not allow, and the messages
    /// queued for it that only they matched: after the rules changed, or when a client resumes
    /// a session made under other rules (another user with the same client id, or rules
    /// tightened while it was away).
    fn keep_to_rules(&mut self, idx: SessionIdx, grant: &Grant, whose: &str) {
        let Some(session) = self.sessions[idx].as_mut() else {
            return;
        };
        let gone: Vec<String> = session
            .filters
            .iter()
            .filter(|(f, _)| !grant.may_subscribe(f))
            .map(|(f, _)| f.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        session.filters.retain(|(f, _)| !gone.contains(f));
        session.record_filters();
        let dropped = session.drop_unsubscribed();
        self.counters.dropped += dropped as u64;
        let client_id = session.client_id.clone();
        for f in &gone {
            self.topics.unsubscribe(idx, f);
        }
        let queued = if dropped > 0 {
            format!(", and {dropped} messages queued for them")
        } else {
            String::new()
        };
        self.events.push(
            EventKind::SubscriptionRefused,
            &*client_id,
            format!("subscriptions {whose} do not allow were removed: {gone:?}{queued}"),
        );
    }

    fn publish_will(&mut self, will: Will, from: Arc<str>) {
        let msg = (from, None);
        let mut props = will.props;
        // A will's expiry counts from its publication.
        if let Some(e) = props.as_mut().and_then(|p| p.expiry.as_mut()) {
            *e = Expiry::starting_now(e.secs);
        }
        self.route(
            Some(msg),
            &will.topic,
            will.payload,
            will.qos,
            will.retain,
            props,
        );
    }

    /// Delivers a message to every subscriber of its topic, and keeps it as retained and in
    /// history. `from` is the client id and, for a PUBLISH, the session whose connection it
    /// came on (which subscribers over their high-water mark hold back); `None` for the broker's
    /// own `$SYS` messages.
    fn route(
        &mut self,
        from: Option<(Arc<str>, Option<SessionIdx>)>,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        props: Option<Box<MessageProps>>,
    ) -> Reason {
        let (from, publisher) = match from {
            Some((id, publisher)) => (Some(id), publisher),
            None => (None, None),
        };
        let Router {
            topics,
            sessions,
            counters,
            journal,
            retained: retained_index,
            ..
        } = self;
        let t = match topics.for_publish(topic, publisher) {
            Ok(t) if !(t.system && from.is_some()) => t,
            found => {
                counters.unlisted += 1;
                counters.dropped += 1;
                let why = match found {
                    Err(Absent::Full) => {
                        counters.topics_full += 1;
                        "the limit of topics not on the list is reached"
                    }
                    _ => "not on the list",
                };
                debug!(
                    client_id = from.as_deref().unwrap_or("-"),
                    topic,
                    reason = why,
                    "publish to a topic that does not exist: dropped"
                );
                return Reason::TOPIC_NAME_INVALID;
            }
        };
        let now = SystemTime::now();
        if retain {
            t.retained = (!payload.is_empty()).then(|| Retained {
                // A copy, so a retained message does not pin a connection's read buffer.
                payload: Bytes::copy_from_slice(&payload),
                qos,
                props: props.clone(),
            });
            let value = t
                .retained
                .as_ref()
                .map(|r| (r.payload.clone(), r.qos, r.props.clone()));
            retained_index.set(&t.name, &mut t.retain_key, value);
            if !t.system
                && let Some(j) = journal
            {
                j.push(Change::Retained {
                    topic: t.name.clone(),
                    value: t
                        .retained
                        .as_ref()
                        .map(|r| (r.qos, r.payload.clone(), r.props.clone())),
                });
            }
        }
        if from.is_some() {
            t.history
                .push(now, &payload, qos, retain, from, props.as_deref());
        }
        t.messages += 1;
        t.last_publish = Some(now);
        if t.subscribers.is_empty() && t.shared.is_empty() {
            // A will or a retained value's removal may have been its only use.
            if !t.listed {
                let name = t.name.clone();
                topics.collect(&name);
            }
            return Reason::NO_MATCHING_SUBSCRIBERS;
        }
        let msg = Arc::new(Message {
            topic: t.name.clone(),
            payload,
            props: props.map(Arc::from),
            sub_ids: Box::new([]),
        });
        // Each shared subscription: the next member whose client is online takes it (an
        // offline one only when none is, for its queue). No allocation without groups.
        let mut picked = Vec::new();
        for group in &mut t.shared {
            let n = group.members.len();
            if n == 0 {
                continue;
            }
            let online = (0..n).map(|k| (group.next + k) % n).find(|&i| {
                sessions[group.members[i].0]
                    .as_ref()
                    .is_some_and(|s| s.online.is_some())
            });
            let i = online.unwrap_or(group.next % n);
            group.next = (i + 1) % n;
            let (sidx, granted) = group.members[i];
            let extra = group
                .extras
                .iter()
                .find(|e| e.0 == sidx)
                .map(|e| e.1.clone());
            picked.push((sidx, granted, extra));
        }
        // Subscribers this message took past their high-water mark: rare, so no allocation
        // unless there are some.
        let mut full = Vec::new();
        let ordinary = t
            .subscribers
            .iter()
            .map(|&(sidx, granted)| (sidx, granted, extra_of(&t.extras, sidx)));
        let members = picked.iter().map(|(s, q, e)| (*s, *q, e.as_ref()));
        for (sidx, granted, extra) in ordinary.chain(members) {
            // MQTT 5's subscription options (none for 3.1.1 clients).
            if extra.is_some_and(|e| e.no_local) && publisher == Some(sidx) {
                continue;
            }
            let keep_retain = retain && extra.is_some_and(|e| e.retain_as_published);
            let with_ids = extra
                .filter(|e| !e.ids.is_empty())
                .map(|e| msg.with_ids(&e.ids));
            let Some(s) = sessions[sidx].as_mut() else {
                continue;
            };
            let m = with_ids.as_ref().unwrap_or(&msg);
            if s.deliver(m, min_qos(qos, granted), keep_retain) == Delivery::Dropped {
                counters.dropped += 1;
            }
            // A publisher is never held by its own queue.
            if publisher.is_some_and(|p| p != sidx)
                && !s.stuck
                && s.online.as_ref().is_some_and(|o| !o.asleep)
                && s.over_high_water()
            {
                full.push(sidx);
            }
        }
        if let Some(p) = publisher {
            for sidx in full {
                self.hold(sidx, p);
            }
        }
        Reason::SUCCESS
    }

    fn on_subscribe(&mut self, idx: SessionIdx, pkid: u16, filters: Vec<(String, SubOptions)>) {
        let level = self.session(idx).online.as_ref().map_or(4, |o| o.level);
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for (filter, options) in filters {
            let qos = options.qos;
            let shared = topics::shared(&filter);
            let valid = match &shared {
                Some(group) => group.is_ok(),
                None => topics::validate_filter(&filter).is_ok(),
            };
            let allowed = valid
                && self
                    .session(idx)
                    .online
                    .as_ref()
                    .and_then(|o| o.grant.as_ref())
                    .is_none_or(|g| g.may_subscribe(&filter));
            if !allowed || !self.topics.serves(&filter) {
                let reason = if valid && !allowed {
                    Reason::NOT_AUTHORIZED
                } else {
                    Reason::TOPIC_FILTER_INVALID
                };
                codes.push(SubscribeCode::Refused(reason));
                self.counters.refused_subscriptions += 1;
                let client_id = self.session(idx).client_id.clone();
                let why = match (valid, allowed, &shared) {
                    (true, true, _) => "matches no topic or pattern on the list",
                    (true, false, _) => "is outside what its rules allow it to subscribe to",
                    (false, _, Some(_)) => {
                        "is not a valid shared subscription ($share/GROUP/FILTER)"
                    }
                    (false, _, None) => "is not a valid filter",
                };
                self.events.push(
                    EventKind::SubscriptionRefused,
                    &*client_id,
                    format!(
                        "SUBSCRIBE {filter:?} refused ({}): {why}",
                        code_text(reason, level)
                    ),
                );
                info!(
                    client_id = %client_id,
                    filter,
                    reason = why,
                    "subscription refused"
                );
                continue;
            }
            codes.push(SubscribeCode::Granted(qos));
            let session = self.session(idx);
            let existed = session.filters.iter().any(|(f, _)| *f == filter);
            match session.filters.iter_mut().find(|(f, _)| *f == filter) {
                Some(existing) => existing.1 = options,
                None => {
                    // Most clients subscribe once: room for one, and doubling from there.
                    if session.filters.capacity() == 0 {
                        session.filters.reserve_exact(1);
                    }
                    session.filters.push((filter.clone(), options))
                }
            }
            self.topics.subscribe_with(idx, &filter, options);
            if shared.is_some() {
                continue; // no retained messages for a shared subscription (as in MQTT 5)
            }
            // MQTT 5's Retain Handling: 1 sends them only for a new subscription, 2 never.
            if options.retain_handling == 2 || (options.retain_handling == 1 && existed) {
                continue;
            }
            // This filter's retained messages, in Mosquitto's order (`retain_order`).
            let found = self.retained.matching(&filter);
            let ids = [options.id];
            retained.extend(found.into_iter().map(|(msg, q)| {
                let msg = if options.id != 0 {
                    msg.with_ids(&ids)
                } else {
                    msg
                };
                (msg, min_qos(q, qos))
            }));
        }
        let suback = Outbound::SubAck {
            pkid,
            codes: codes.into(),
        };
        self.record_filters_before_answer(idx);
        self.session(idx).answer(suback);
        for (msg, q) in retained {
            if self.session(idx).deliver(&msg, q, true) == Delivery::Dropped {
                self.counters.dropped += 1;
            }
        }
    }

    fn on_unsubscribe(&mut self, idx: SessionIdx, pkid: u16, filters: Vec<String>) {
        let mut codes = Vec::with_capacity(filters.len());
        for filter in filters {
            let session = self.session(idx);
            let before = session.filters.len();
            session.filters.retain(|(f, _)| *f != filter);
            if session.filters.len() == before {
                codes.push(Reason::NO_SUBSCRIPTION_EXISTED);
                continue;
            }
            codes.push(Reason::SUCCESS);
            self.topics.unsubscribe(idx, &filter);
        }
        self.record_filters_before_answer(idx);
        let codes = codes.into();
        self.session(idx).answer(Outbound::UnsubAck { pkid, codes });
    }

    /// Records a persistent session's subscriptions and holds what the connection is sent next
    /// (SUBACK, UNSUBACK) until they are on disk: a client told its subscription was granted
    /// finds it after a crash.
    fn record_filters_before_answer(&mut self, idx: SessionIdx) {
        let session = self.session(idx);
        if !session.persisted() {
            return;
        }
        session.record_filters();
        let epoch = self.durable_epoch();
        self.session(idx).answer(Outbound::After(epoch));
    }

    fn shutdown(&mut self) {
        // First, so that no bridge takes its local side's closing for its remote's.
        self.bridges.running.stop_all();
        info!(clients = self.connected(), "closing every connection");
        let conns: Vec<SessionIdx> = self.by_conn.values().copied().collect();
        for idx in conns {
            self.detach(idx, CloseReason::ServerShutdown);
        }
    }

    // ---- $SYS ---------------------------------------------------------------------------------

    fn publish_sys(&mut self) {
        let connected = self.connected();
        let total = self.by_client.len();
        let figures = SysFigures {
            uptime_secs: self.started.elapsed().as_secs(),
            connected,
            disconnected: total.saturating_sub(connected),
            maximum: self.counters.maximum_connected,
            dropped: self.counters.dropped,
            retained: self.topics.iter().filter(|t| t.retained.is_some()).count(),
            subscriptions: self
                .sessions
                .iter()
                .flatten()
                .map(|s| s.filters.len())
                .sum(),
        };
        let snapshot = self.stats.snapshot();
        for (topic, value) in sys::values(&figures, &snapshot) {
            self.route(None, topic, Bytes::from(value), QoS::AtMostOnce, true, None);
        }
    }
}

/// A refusal's code as the client was sent it, for the log: 0x80 before MQTT 5, the reason by
/// name in it.
/// What a client may publish and subscribe to (None: anything). A bridge's local side is the
/// broker's own and answers to no user's rules; what it brings in still meets the topic list.
fn grant_for(
    users: &Users,
    peer: &super::protocol::Peer,
    username: Option<&str>,
    client_id: &str,
) -> Option<Box<Grant>> {
    if peer.transport == super::protocol::Transport::Bridge {
        return None;
    }
    users.grant(username, client_id).map(Box::new)
}

fn code_text(reason: Reason, level: u8) -> String {
    if level >= 5 {
        reason.to_string()
    } else {
        "0x80".into()
    }
}

/// How often offline MQTT 5 sessions are checked for having expired.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

fn min_qos(a: QoS, b: QoS) -> QoS {
    a.min(b)
}
