//! What the embedder (the window, tests) asks of the router: kick, topics, users, the files
//! they live in, and snapshots of the state.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::Router;
use crate::broker::acl::Rules;
use crate::broker::events::EventKind;
use crate::broker::files::{FileError, FileStamp};
use crate::broker::link::{CloseReason, Command, ToRouter};
use crate::broker::saver::{FileKind, SaveJob};
use crate::broker::snapshot::{
    ClientInfo, ConnectionInfo, Flow, PatternInfo, Snapshot, TopicInfo, V5Settings,
};
use crate::broker::store::Change;
use crate::broker::table::{SessionIdx, Topic};
use crate::broker::topic_list;
use crate::broker::topics;
use crate::broker::users::{User, Users, hash_password};

impl Router {
    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Kick { client_id, reply } => {
                let online = self.by_client.get(client_id.as_str()).copied();
                match online.filter(|&idx| self.session(idx).online.is_some()) {
                    Some(idx) => {
                        info!(client_id, "kicking client");
                        self.detach(idx, CloseReason::Kicked);
                        reply_to(reply, Ok(()));
                    }
                    None => reply_to(reply, Err(format!("{client_id:?} is not connected"))),
                }
            }
            Command::DiscardSession { client_id, reply } => {
                let session = self.by_client.get(client_id.as_str()).copied();
                match session.filter(|&idx| self.session(idx).online.is_none()) {
                    Some(idx) => {
                        self.remove_session(idx);
                        self.events.push(
                            EventKind::Disconnected,
                            &*client_id,
                            "offline session discarded",
                        );
                        reply_to(reply, Ok(()));
                    }
                    None => reply_to(reply, Err(format!("{client_id:?} has no offline session"))),
                }
            }
            Command::ClearState { reply } => {
                self.clear_state();
                reply_to(reply, Ok(()));
            }
            Command::AddTopic { topic, reply } => match self.add_topic(&topic) {
                Ok(()) => self.save_topics(reply),
                Err(e) => reply_to(reply, Err(e)),
            },
            Command::RemoveTopic { topic, reply } => {
                if self.remove_topics(std::slice::from_ref(&topic)) {
                    self.save_topics(reply);
                } else {
                    reply_to(reply, Err(format!("{topic:?} is not on the topic list")));
                }
            }
            Command::ReplaceTopics {
                topics,
                path,
                reply,
            } => self.replace_topics(topics, path, reply),
            Command::SetTopicsMode { mode } => {
                if mode != self.topics.mode() {
                    let gone = self.topics.set_mode(mode);
                    let n = gone.len();
                    self.topics_gone(gone);
                    self.drop_unserved_filters();
                    info!(mode = mode.name(), removed = n, "topics mode changed");
                    self.events.push(
                        EventKind::Topics,
                        "",
                        format!(
                            "topics mode is now {}{}",
                            mode.name(),
                            if n > 0 {
                                format!("; {n} topics not on the list went")
                            } else {
                                String::new()
                            }
                        ),
                    );
                }
            }
            Command::OpenTopicsFile { path, reply } => self.off_router(move || {
                let list = topic_list::load(&path).map_err(|e| e.to_string());
                ToRouter::TopicsFileRead { path, list, reply }
            }),
            Command::SetUsers { users, reply } => self.set_users(users, reply),
            Command::UpsertUser {
                username,
                email,
                password,
                reply,
            } => {
                let checked = self
                    .users
                    .borrow()
                    .check_new(&username, email.as_deref(), &password);
                if let Err(e) = checked {
                    return reply_to(reply, Err(e.to_string()));
                }
                // Hashing takes tens of milliseconds.
                self.off_router(move || {
                    let user = User {
                        username,
                        email,
                        password_hash: hash_password(password.as_bytes()),
                        rules: Rules::default(),
                    };
                    ToRouter::UsersHashed {
                        users: vec![user],
                        new: false,
                        reply,
                    }
                });
            }
            Command::AddUsers {
                users,
                rules,
                reply,
            } => {
                let checked = rules.check().and_then(|()| {
                    let mut batch = (**self.users.borrow()).clone();
                    check_batch(&mut batch, &users)
                });
                if let Err(e) = checked {
                    return reply_to(reply, Err(e));
                }
                self.off_router(move || {
                    let users = users
                        .into_iter()
                        .map(|(username, password)| User {
                            username,
                            email: None,
                            password_hash: hash_password(password.as_bytes()),
                            rules: rules.clone(),
                        })
                        .collect();
                    ToRouter::UsersHashed {
                        users,
                        new: true,
                        reply,
                    }
                });
            }
            Command::SetRules {
                username,
                rules,
                reply,
            } => {
                if let Err(e) = rules.check() {
                    return reply_to(reply, Err(e));
                }
                let mut users = (**self.users.borrow()).clone();
                let who = match &username {
                    None => {
                        users.anonymous = rules;
                        "clients without a user name".to_string()
                    }
                    Some(name) => match users.users.iter_mut().find(|u| u.username == *name) {
                        Some(u) => {
                            u.rules = rules;
                            format!("user {name:?}")
                        }
                        None => return reply_to(reply, Err(format!("there is no user {name:?}"))),
                    },
                };
                self.events
                    .push(EventKind::Users, "", format!("rules of {who} changed"));
                self.set_users(users, reply);
            }
            Command::RemoveUser { username, reply } => {
                let mut users = (**self.users.borrow()).clone();
                match users.remove(&username) {
                    Ok(()) => {
                        self.events.push(
                            EventKind::Users,
                            "",
                            format!("user {username:?} removed"),
                        );
                        self.set_users(users, reply)
                    }
                    Err(e) => reply_to(reply, Err(e.to_string())),
                }
            }
            Command::SetAllowAnonymous { allow, reply } => {
                let mut users = (**self.users.borrow()).clone();
                users.allow_anonymous = allow;
                let what = if allow { "allowed" } else { "refused" };
                self.events
                    .push(EventKind::Users, "", format!("anonymous logins {what}"));
                self.set_users(users, reply)
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::SetBridges {
                bridges,
                path,
                reply,
            } => self.set_bridges(bridges, path, reply),
            Command::OpenBridgesFile { path, reply } => self.open_bridges_file(path, reply),
            Command::Shutdown => unreachable!("handled in `handle`"),
        }
    }

    pub(super) fn add_topic(&mut self, name: &str) -> Result<(), String> {
        check_topic_name(name)?;
        // A new topic comes with the subscriptions that already match it; a pattern grants
        // subscriptions from now on.
        if !self.topics.list(name) {
            return Ok(());
        }
        let what = entry_kind(name);
        info!(entry = name, "{what} added");
        self.events
            .push(EventKind::Topics, "", format!("{what} {name:?} added"));
        Ok(())
    }

    /// Runs slow work (a file read, a password hash) off the router's thread and hands its
    /// result back to the router as a message; a broker stopping meanwhile drops it.
    pub(super) fn off_router(&self, work: impl FnOnce() -> ToRouter + Send + 'static) {
        let me = self.me.clone();
        tokio::task::spawn_blocking(move || {
            let done = work();
            if let Some(me) = me.upgrade() {
                let _ = me.blocking_send(done);
            }
        });
    }

    /// Makes `topics` the topic list (and `path`, if given, its file), all or nothing: a list
    /// with a bad name changes nothing.
    pub(super) fn replace_topics(
        &mut self,
        topics: Vec<String>,
        path: Option<PathBuf>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        if let Some(e) = topics.iter().find_map(|t| check_topic_name(t).err()) {
            return reply_to(reply, Err(e));
        }
        let gone: Vec<String> = self
            .list()
            .into_iter()
            .filter(|e| !topics.contains(e))
            .collect();
        self.remove_topics(&gone);
        for t in &topics {
            let _ = self.add_topic(t);
        }
        if let Some(p) = path {
            self.events.push(
                EventKind::Topics,
                "",
                format!("topic list is now {}", p.display()),
            );
            self.topics_path = Some(p);
        }
        self.save_topics(reply);
    }

    /// A topic list file read for `OpenTopicsFile`: used, or refused with where it is wrong.
    pub(super) fn on_topics_file_read(
        &mut self,
        path: PathBuf,
        list: Result<Vec<String>, String>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        match list {
            Ok(topics) => self.replace_topics(topics, Some(path), reply),
            Err(e) => reply_to(
                reply,
                Err(format!("Not opened, the list is unchanged: {e}")),
            ),
        }
    }

    /// Forgets retained messages and offline sessions (see `Command::ClearState`).
    fn clear_state(&mut self) {
        let mut retained = 0;
        let mut emptied = Vec::new();
        for t in self.topics.iter_mut().filter(|t| !t.system) {
            if t.retained.take().is_some() {
                self.retained.set(&t.name, &mut t.retain_key, None);
                retained += 1;
                emptied.push(t.name.clone());
            }
        }
        // Topics not on the list that their value alone kept go with it.
        for name in emptied {
            self.topics.collect(&name);
        }
        let offline: Vec<SessionIdx> = self
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.online.is_none()))
            .map(|(i, _)| i)
            .collect();
        for &idx in &offline {
            self.remove_session(idx);
        }
        if let Some(j) = &self.journal {
            j.push(Change::ClearRetained);
        }
        info!(retained, sessions = offline.len(), "saved state cleared");
        self.events.push(
            EventKind::Persistence,
            "",
            format!(
                "cleared {retained} retained messages and {} offline sessions",
                offline.len()
            ),
        );
    }

    /// Deletes entries from the list; false if none of them was on it.
    pub(super) fn remove_topics(&mut self, entries: &[String]) -> bool {
        let mut removed = false;
        for entry in entries {
            let (found, gone) = self.topics.unlist(entry);
            if !found {
                continue;
            }
            removed = true;
            let what = entry_kind(entry);
            info!(entry = %entry, "{what} deleted");
            self.events
                .push(EventKind::Topics, "", format!("{what} {entry:?} deleted"));
            self.topics_gone(gone);
        }
        if removed {
            self.drop_unserved_filters();
        }
        removed
    }

    /// Topics that no longer exist: their retained messages go, from the disk too.
    fn topics_gone(&mut self, gone: Vec<Topic>) {
        for mut t in gone.into_iter().filter(|t| t.retained.is_some()) {
            self.retained.set(&t.name, &mut t.retain_key, None);
            if let Some(j) = &self.journal {
                j.push(Change::Retained {
                    topic: t.name,
                    value: None,
                });
            }
        }
    }

    /// Subscriptions that no longer match any topic (nor could) go; a client sees them as
    /// refused if it subscribes again.
    fn drop_unserved_filters(&mut self) {
        let Router {
            topics, sessions, ..
        } = self;
        for (idx, s) in sessions.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            let before = s.filters.len();
            s.filters.retain(|(f, _)| {
                let keep = topics.serves(f);
                if !keep {
                    topics.unsubscribe(idx, f);
                }
                keep
            });
            if s.filters.len() != before {
                s.record_filters();
            }
        }
    }

    /// The list as it is saved: names and patterns, sorted.
    fn list(&self) -> Vec<String> {
        let mut entries: Vec<String> = self
            .topics
            .iter()
            .filter(|t| t.listed)
            .map(|t| t.name.to_string())
            .chain(self.topics.patterns().iter().map(|p| p.to_string()))
            .collect();
        entries.sort();
        entries
    }

    /// The users file changed on disk. Taken as it is (not written back); a file that does not
    /// parse changes nothing and is reported.
    pub(super) fn on_users_file(&mut self, stamp: FileStamp, loaded: Result<Users, String>) {
        // Our own save is on the way (this read may be from before it), or this is our own
        // write or an older version: nothing from outside to take in.
        let ours_or_older = self
            .users_saved
            .is_some_and(|saved| saved == stamp || stamp.modified < saved.modified);
        if self.users_saves_pending > 0 || ours_or_older {
            return;
        }
        let path = self
            .users_path
            .as_deref()
            .map_or(String::new(), |p| p.display().to_string());
        match loaded {
            Ok(users) if users == **self.users.borrow() => {} // our own write, or no change
            Ok(users) => {
                info!(users = users.users.len(), file = %path, "users file changed on disk: reloaded");
                self.events.push(
                    EventKind::Users,
                    "",
                    format!("{path} changed on disk: {} users loaded", users.users.len()),
                );
                self.users.send_replace(Arc::new(users));
                self.regrant();
            }
            Err(e) => {
                warn!(error = %e, "users file changed on disk but cannot be read: keeping the users in use");
                self.events.push(
                    EventKind::Fault,
                    "",
                    format!("users file not reloaded, the users in use are kept: {e}"),
                );
            }
        }
    }

    /// Users whose passwords have been hashed: checked again (another change may have come
    /// first), then saved, all or none. A user whose password changed keeps its rules.
    pub(super) fn on_users_hashed(
        &mut self,
        hashed: Vec<User>,
        new: bool,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        let mut users = (**self.users.borrow()).clone();
        let names: Vec<String> = hashed.iter().map(|u| u.username.clone()).collect();
        for mut user in hashed {
            if new && users.users.iter().any(|u| u.username == user.username) {
                return reply_to(
                    reply,
                    Err(format!("{:?} is already a user: none added", user.username)),
                );
            }
            if let Some(old) = users.users.iter().find(|u| u.username == user.username) {
                user.rules = old.rules.clone();
            }
            if let Err(e) = users.upsert_user(user) {
                return reply_to(reply, Err(e.to_string()));
            }
        }
        let text = match names.as_slice() {
            [one] => format!("user {one:?} saved"),
            many => format!("{} users added", many.len()),
        };
        self.events.push(EventKind::Users, "", text);
        self.set_users(users, reply)
    }

    pub(super) fn set_users(
        &mut self,
        users: Users,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        info!(
            users = users.users.len(),
            allow_anonymous = users.allow_anonymous,
            "users changed"
        );
        let contents = users.to_ron();
        self.users.send_replace(Arc::new(users));
        self.regrant();
        match self.users_path.clone() {
            Some(path) => {
                if self.save(path, contents, FileKind::Users, reply) {
                    self.users_saves_pending += 1;
                }
            }
            None => reply_to(reply, Ok(())),
        }
    }

    /// Writes the topic list in use to its file, if it has one.
    pub(super) fn save_topics(&mut self, reply: Option<oneshot::Sender<Result<(), String>>>) {
        let Some(path) = self.topics_path.clone() else {
            return reply_to(reply, Ok(()));
        };
        let names = self.list();
        let contents = topic_list::to_ron(&path, &names);
        self.save(path, contents, FileKind::Topics, reply);
    }

    /// Hands a file to the saver: writing and fsyncing is no work for the router's thread.
    pub(super) fn save(
        &mut self,
        path: PathBuf,
        contents: Result<String, FileError>,
        kind: FileKind,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) -> bool {
        if let Err(e) = self.saver.try_send(SaveJob {
            path,
            contents,
            kind,
            reply,
        }) {
            let job = match e {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            warn!(path = %job.path.display(), "too many saves pending: file not saved");
            reply_to(job.reply, Err("too many saves pending; try again".into()));
            return false;
        }
        true
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let clients = self
            .sessions
            .iter()
            .flatten()
            .map(|s| ClientInfo {
                client_id: s.client_id.to_string(),
                clean_session: s.clean,
                session_expiry: (s.expiry != u32::MAX).then_some(s.expiry),
                connection: s.online.as_ref().map(|o| ConnectionInfo {
                    peer: o.peer.addr,
                    transport: o.peer.transport,
                    username: o.username.as_deref().map(str::to_owned),
                    protocol_level: o.level,
                    keep_alive: o.keep_alive,
                    since: s.seen,
                    v5: o.v5.as_deref().map(|v| V5Settings {
                        session_expiry: s.expiry,
                        ..*v
                    }),
                }),
                subscriptions: s.filters.iter().map(|(f, o)| (f.clone(), o.qos)).collect(),
                messages_in: s.messages_in,
                messages_out: s.messages_out,
                dropped: s.dropped,
                inflight: s.inflight_len(),
                queued: s.queued_len(),
                queued_bytes: s.queued_bytes(),
                flow: if s.stuck {
                    Flow::Stuck
                } else if let Some(h) = &s.holding {
                    Flow::Holding(h.publishers.len())
                } else if s.online.as_ref().is_some_and(|o| o.held_by > 0) {
                    Flow::HeldBack
                } else {
                    Flow::Flowing
                },
                last_seen: s.seen,
            })
            .collect();
        let mut topics: Vec<TopicInfo> = self
            .topics
            .iter()
            .filter(|t| !t.system)
            .map(|t| {
                let (subscribers, shared) = self.topics.audience(t);
                (t, subscribers, shared)
            })
            .map(|(t, subscribers, shared)| TopicInfo {
                name: t.name.to_string(),
                listed: t.listed,
                subscribers,
                shared: shared.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
                retained: t.retained.as_ref().map(|r| r.payload.clone()),
                messages: t.messages,
                last_publish: t.last_publish,
                history: t.history.items().cloned().collect(),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let patterns = self
            .topics
            .patterns()
            .iter()
            .map(|p| PatternInfo {
                pattern: p.to_string(),
                topics: self.topics.matching(p).len(),
            })
            .collect();
        let (persistent_sessions, stored_messages) = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.persisted())
            .fold((0, 0), |(n, m), s| {
                (n + 1, m + s.queued_len() + s.inflight_len())
            });
        Snapshot {
            uptime: self.started.elapsed(),
            clients,
            topics,
            patterns,
            topics_mode: self.topics.mode(),
            topics_full: self.counters.topics_full,
            stats: self.stats.snapshot(),
            dropped: self.counters.dropped,
            unlisted: self.counters.unlisted,
            refused_subscriptions: self.counters.refused_subscriptions,
            refused_connections: self.counters.refused_connections,
            denied: self.counters.denied,
            users: self.users.borrow().clone(),
            topics_path: self.topics_path.clone(),
            users_path: self.users_path.clone(),
            events: self.events.iter().cloned().collect(),
            persistence: self
                .store
                .as_ref()
                .map(|s| s.status.lock().expect("status lock").clone()),
            persistent_sessions,
            stored_messages,
            bridges: self.bridge_infos(),
            bridges_path: self.bridges.path.clone(),
            bridge_loops: self.bridges.loops,
            sn: self.sn_stats.as_ref().map(|s| {
                (
                    s.datagrams.load(std::sync::atomic::Ordering::Relaxed),
                    s.dropped(),
                )
            }),
            retained: self
                .topics
                .iter()
                .filter(|t| !t.system && t.retained.is_some())
                .count(),
        }
    }
}

/// Checks a batch of new users against the users there are and each other.
fn check_batch(users: &mut Users, batch: &[(String, String)]) -> Result<(), String> {
    if batch.is_empty() {
        return Err("no users to add".into());
    }
    for (name, password) in batch {
        if users.users.iter().any(|u| u.username == *name) {
            return Err(format!("{name:?} is already a user: none added"));
        }
        users
            .check_new(name, None, password)
            .map_err(|e| e.to_string())?;
        // A placeholder, so that the next names are checked against this one too.
        users.users.push(User {
            username: name.clone(),
            email: None,
            password_hash: String::new(),
            rules: Rules::default(),
        });
    }
    Ok(())
}

pub(super) fn reply_to(
    reply: Option<oneshot::Sender<Result<(), String>>>,
    result: Result<(), String>,
) {
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// What an entry of the topic list is, for the log.
fn entry_kind(entry: &str) -> &'static str {
    if topics::has_wildcards(entry) {
        "pattern"
    } else {
        "topic"
    }
}

/// A topic the list may hold (see `topics::check_listable`).
fn check_topic_name(name: &str) -> Result<(), String> {
    topics::check_listable(name).map_err(|e| format!("topic {name:?} {e}"))
}
