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
}

impl BridgeBook {
    pub fn new(list: Vec<BridgeConfig>, path: Option<PathBuf>, running: Bridges) -> Self {
        BridgeBook {
            list,
            path,
            status: HashMap::new(),
            running,
            loops: 0,
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

impl Router {
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
        if let Some(p) = path {
            self.events.push(
                EventKind::Bridges,
                "",
                format!("bridges file is now {}", p.display()),
            );
            self.bridges.path = Some(p);
        }
        self.bridges.list = list;
        self.bridges.apply();
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
                self.events.push(
                    EventKind::Bridges,
                    "",
                    format!("bridges file is now {}", path.display()),
                );
                self.bridges.path = Some(path);
                self.bridges.list = list;
                self.bridges.apply();
                reply_to(reply, Ok(()));
            }
            Err(e) => reply_to(
                reply,
                Err(format!("Not opened, the bridges are unchanged: {e}")),
            ),
        }
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
