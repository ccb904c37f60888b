//! The router's part in bridges: it owns their configuration (and its file) and their last
//! reported status, and starts and stops their tasks (`broker::bridge`).

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::sync::oneshot;
use tracing::info;

use super::Router;
use super::commands::reply_to;
use crate::broker::bridge::{self, BridgeConfig, BridgeState, BridgeStatus, Bridges};
use crate::broker::events::EventKind;
use crate::broker::link::{ConnId, ToRouter};
use crate::broker::saver::FileKind;
use crate::broker::snapshot::BridgeInfo;

/// The bridges' configuration and state, as the router keeps them.
pub(crate) struct BridgeBook {
    pub list: Vec<BridgeConfig>,
    pub path: Option<PathBuf>,
    pub status: HashMap<String, BridgeStatus>,
    pub running: Bridges,
    /// Messages that arrived carrying this broker's own id in their bridge path.
    pub loops: u64,
    /// Local client ids of bridges taken out of the list while connected: their sessions go
    /// when they close.
    pub discard: std::collections::HashSet<String>,
}

impl BridgeBook {
    pub fn new(list: Vec<BridgeConfig>, path: Option<PathBuf>, running: Bridges) -> Self {
        BridgeBook {
            list,
            path,
            status: HashMap::new(),
            running,
            loops: 0,
            discard: Default::default(),
        }
    }

    /// Starts what the list says, and forgets the status of bridges that are gone.
    pub fn apply(&mut self) {
        self.running.apply(&self.list);
        let names: Vec<&str> = self.list.iter().map(|b| b.name.as_str()).collect();
        self.status.retain(|n, _| names.contains(&n.as_str()));
        for b in &self.list {
            if !b.enabled {
                self.status.insert(
                    b.name.clone(),
                    BridgeStatus {
                        state: BridgeState::Disabled,
                        ..BridgeStatus::default()
                    },
                );
            } else if !self.status.contains_key(&b.name)
                || self.status[&b.name].state == BridgeState::Disabled
            {
                self.status.insert(b.name.clone(), BridgeStatus::default());
            }
        }
    }
}

impl BridgeBook {
    /// What the bridge of this local client id may subscribe to here: the filters its rules
    /// send out (None: not a bridge of the list).
    pub fn grant_of(&self, local_client_id: &str) -> Option<crate::broker::acl::Grant> {
        let b = self
            .list
            .iter()
            .find(|b| b.local_client_id() == local_client_id)?;
        let filters = b
            .topics
            .iter()
            .filter(|r| r.direction.goes_out())
            .map(|r| r.local_filter())
            .collect();
        let rules = crate::broker::acl::Rules {
            publish: None,
            subscribe: Some(filters),
        };
        crate::broker::acl::Grant::of(&rules, None, local_client_id)
    }
}

impl Router {
    /// The sessions of bridges no longer in the list go: at once if offline, else when their
    /// task closes them.
    fn forget_removed_bridges(&mut self, before: Vec<String>) {
        for name in before {
            if self.bridges.list.iter().any(|b| b.name == name) {
                continue;
            }
            let id = crate::broker::bridge::config::BridgeConfig::local_id_of(&name);
            let Some(&idx) = self.by_client.get(id.as_str()) else {
                continue;
            };
            if self.session(idx).online.is_some() {
                self.bridges.discard.insert(id);
            } else {
                self.remove_session(idx);
            }
        }
    }

    pub(super) fn on_bridge_status(&mut self, name: String, conn: ConnId, status: BridgeStatus) {
        if self.bridges.running.is_current(&name, conn) {
            self.bridges.status.insert(name, status);
        }
    }

    /// Makes `list` the bridges (and `path`, if given, their file), all or nothing; the file
    /// is written, and bridges whose configuration changed start again.
    pub(super) fn set_bridges(
        &mut self,
        list: Vec<BridgeConfig>,
        path: Option<PathBuf>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        if let Err(e) = bridge::config::check_all(&list) {
            return reply_to(reply, Err(e));
        }
        self.use_bridges(list, path);
        info!(count = self.bridges.list.len(), "bridges changed");
        self.events
            .push(EventKind::Bridges, "", "bridges changed".to_string());
        match self.bridges.path.clone() {
            Some(path) => {
                let contents = bridge::config::to_ron(&path, &self.bridges.list);
                // Passwords of remote brokers are in it: only its owner may read it.
                self.save(path, contents, FileKind::Bridges, reply);
            }
            None => reply_to(reply, Ok(())),
        }
    }

    /// Reads a bridges file off the router; `on_bridges_file_read` takes it from there.
    pub(super) fn open_bridges_file(
        &mut self,
        path: PathBuf,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        self.off_router(move || {
            let list = bridge::config::load(&path).map_err(|e| e.to_string());
            ToRouter::BridgesFileRead { path, list, reply }
        });
    }

    pub(super) fn on_bridges_file_read(
        &mut self,
        path: PathBuf,
        list: Result<Vec<BridgeConfig>, String>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        match list {
            Ok(list) => {
                self.use_bridges(list, Some(path));
                reply_to(reply, Ok(()));
            }
            Err(e) => reply_to(
                reply,
                Err(format!("Not opened, the bridges are unchanged: {e}")),
            ),
        }
    }

    /// Makes `list` the bridges (and `path`, if given, their file): those whose configuration
    /// changed start again, and the sessions of those gone go too.
    fn use_bridges(&mut self, list: Vec<BridgeConfig>, path: Option<PathBuf>) {
        if let Some(p) = path {
            self.events.push(
                EventKind::Bridges,
                "",
                format!("bridges file is now {}", p.display()),
            );
            self.bridges.path = Some(p);
        }
        let before: Vec<String> = self.bridges.list.iter().map(|b| b.name.clone()).collect();
        self.bridges.list = list;
        self.bridges.apply();
        self.forget_removed_bridges(before);
    }

    /// The bridges for a snapshot, in the file's order, with their local sessions' queues.
    pub(super) fn bridge_infos(&self) -> Vec<BridgeInfo> {
        self.bridges
            .list
            .iter()
            .map(|config| {
                let session = self
                    .by_client
                    .get(config.local_client_id().as_str())
                    .and_then(|&i| self.sessions[i].as_ref());
                BridgeInfo {
                    config: config.clone(),
                    status: self
                        .bridges
                        .status
                        .get(&config.name)
                        .cloned()
                        .unwrap_or_default(),
                    queued: session.map_or(0, |s| s.queued_len() + s.inflight_len()),
                    dropped: session.map_or(0, |s| s.dropped),
                }
            })
            .collect()
    }
}
