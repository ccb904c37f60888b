//! The writer thread: takes the router's batches of changes, writes everything that has
//! arrived in one transaction (group commit), and announces the last durable epoch.
//!
//! A thread of its own, not a task: an fsync blocks, and the runtime's threads serve sockets.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::Batch;
use super::db::Db;

/// What the window shows of the store.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    pub path: PathBuf,
    /// The database and its log, in bytes.
    pub bytes: u64,
    /// Transactions committed, and the changes they held.
    pub commits: u64,
    pub changes: u64,
    /// The last write that failed, and when; cleared by the next that succeeds.
    pub failing: Option<(SystemTime, String)>,
}

/// How long a failed write waits before it is tried again. Acknowledgements wait meanwhile:
/// the clients see no PUBACK, not a false one.
const RETRY: Duration = Duration::from_secs(1);
/// Changes a failing write gathers before the router has to wait for it.
const MAX_GROUP_WHILE_FAILING: usize = 100_000;
/// Failed attempts after the broker stopped before the writer gives up.
const GIVE_UP_AFTER: u32 = 5;

pub(super) fn start(
    mut db: Db,
    mut rx: mpsc::Receiver<Batch>,
    durable: watch::Sender<u64>,
    status: Arc<Mutex<StoreStatus>>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("mqtt-lab-store".into())
        .spawn(move || {
            let mut group = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                // Everything that arrived while the last commit was syncing goes in this one.
                let mut epoch = first.epoch;
                group.extend(first.changes);
                while let Ok(more) = rx.try_recv() {
                    epoch = more.epoch;
                    group.extend(more.changes);
                }
                let mut failures = 0;
                loop {
                    match db.apply(&group) {
                        Ok(()) => break,
                        Err(e) => {
                            error!(error = %e, "cannot write the broker's state: acknowledgements wait until it can");
                            status.lock().expect("status lock").failing =
                                Some((SystemTime::now(), e.to_string()));
                            failures += 1;
                            // The broker is stopping: it cannot wait for a disk that may never
                            // come back.
                            if rx.is_closed() && failures >= GIVE_UP_AFTER {
                                error!(changes = group.len(), "the broker stopped while its state could not be written: these changes are not on disk");
                                return;
                            }
                            std::thread::sleep(RETRY);
                            // What the router sends meanwhile joins the group, so that the
                            // router (and with it every client, QoS 0 and logins too) waits
                            // only once a failure has lasted long enough to fill it.
                            while group.len() < MAX_GROUP_WHILE_FAILING {
                                let Ok(more) = rx.try_recv() else { break };
                                epoch = more.epoch;
                                group.extend(more.changes);
                            }
                        }
                    }
                }
                let n = group.len() as u64;
                group.clear();
                durable.send_replace(epoch);
                let bytes = db.size();
                let mut s = status.lock().expect("status lock");
                if s.failing.take().is_some() {
                    info!("the broker's state is written again");
                }
                s.commits += 1;
                s.changes += n;
                s.bytes = bytes;
            }
            // The router is gone: a clean stop.
            db.checkpoint();
            if let Ok(mut s) = status.lock() {
                s.bytes = db.size();
                info!(
                    commits = s.commits,
                    changes = s.changes,
                    bytes = s.bytes,
                    "state written: {} durable writes (commits) holding {} changes since start",
                    s.commits,
                    s.changes
                );
            }
        })
        .expect("spawn the store thread")
}
