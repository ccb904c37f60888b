//! Persistence: retained messages and persistent sessions (their subscriptions, queued and
//! in-flight messages, and inbound QoS 2 packet ids) kept in an SQLite database, so that they
//! survive a restart and a crash.
//!
//! The router never touches the disk: what a batch of its work changed goes, as a list of
//! `Change`s numbered with an epoch, to the writer thread (`writer.rs`), which applies
//! everything that has arrived in one transaction (group commit: one fsync for many batches)
//! and then announces the last epoch that is durable on a watch channel. A connection holds the
//! acknowledgements of what it sent (PUBACK, PUBREC, PUBREL, PUBCOMP) until the epoch its
//! packets changed is durable, so nothing acknowledged can be lost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::link::Message;
use super::protocol::{MessageProps, QoS, SubOptions};

mod db;
mod writer;

pub use db::StoreError;
pub use writer::StoreStatus;

/// The database's file name in the data folder.
pub const FILE_NAME: &str = "state.sqlite3";

/// One change to what is persisted, in the order the router made it.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A topic's retained message is now this (`None`: cleared).
    Retained {
        topic: Arc<str>,
        value: Option<(QoS, Bytes, Option<Box<MessageProps>>)>,
    },
    /// A persistent session exists with these subscriptions, and outlives its connection by
    /// `expiry` seconds (`u32::MAX`: for ever).
    Session {
        client_id: Arc<str>,
        filters: Vec<(String, SubOptions)>,
        expiry: u32,
    },
    /// A persistent session is gone, with everything it held.
    SessionGone { client_id: Arc<str> },
    /// A QoS 1/2 message was queued for a persistent session, numbered `seq` in it.
    Queued {
        client_id: Arc<str>,
        seq: u64,
        msg: Arc<Message>,
        qos: QoS,
        retain: bool,
    },
    /// The message went out with this packet id.
    Sent {
        client_id: Arc<str>,
        seq: u64,
        pkid: u16,
    },
    /// PUBREC came for it (QoS 2): PUBREL, not the PUBLISH, is what a reconnect re-sends.
    Released { client_id: Arc<str>, seq: u64 },
    /// Acknowledged (or dropped): it is no longer the session's.
    Done { client_id: Arc<str>, seq: u64 },
    /// An inbound QoS 2 packet id is held until PUBREL (`true`), or released.
    Qos2In {
        client_id: Arc<str>,
        pkid: u16,
        held: bool,
    },
    /// Every retained message goes, of listed topics and others (the window's Clear).
    ClearRetained,
}

/// Where the router writes its changes as it makes them: one list, shared by the router and
/// the persistent sessions it owns (all on the router's task; the lock is never contended).
#[derive(Debug, Default)]
pub(crate) struct Journal(Mutex<Vec<Change>>);

impl Journal {
    pub fn push(&self, change: Change) {
        self.0.lock().expect("journal lock").push(change);
    }

    pub fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.0.lock().expect("journal lock"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().expect("journal lock").is_empty()
    }
}

/// A persisted message of a session, as loaded.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub seq: u64,
    /// Shared by every stored message on the topic.
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The packet id it went out with, if it did.
    pub pkid: Option<u16>,
    /// PUBREC came back (QoS 2).
    pub released: bool,
    /// MQTT 5 properties, the expiry counting from the load.
    pub props: Option<Box<MessageProps>>,
}

/// A persistent session, as loaded.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredSession {
    pub client_id: String,
    pub filters: Vec<(String, SubOptions)>,
    /// MQTT 5's Session Expiry Interval (`u32::MAX`: for ever).
    pub expiry: u32,
    /// In `seq` order.
    pub messages: Vec<StoredMessage>,
    pub qos2_in: Vec<u16>,
}

/// What the database held at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub retained: Vec<(String, QoS, Bytes, Option<Box<MessageProps>>)>,
    pub sessions: Vec<StoredSession>,
}

/// The router's end of the store: where batches of changes go.
pub(crate) struct Store {
    pub tx: mpsc::Sender<Batch>,
    /// The last epoch that is on disk.
    pub durable: watch::Receiver<u64>,
    pub status: Arc<Mutex<StoreStatus>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

/// What one router batch changed.
#[derive(Debug)]
pub(crate) struct Batch {
    pub epoch: u64,
    pub changes: Vec<Change>,
}

/// Batches the writer may have waiting: beyond this the router waits for the disk, and
/// connections for the router.
const BATCHES_WAITING: usize = 64;

/// Opens (or creates) the database in `dir` and loads it. A file that is not ours, or is
/// damaged, is refused and left as it is.
pub(crate) fn open(dir: &Path) -> Result<(Store, Loaded), StoreError> {
    let path = dir.join(FILE_NAME);
    let started = std::time::Instant::now();
    let mut db = db::Db::open(&path)?;
    let loaded = db.load()?;
    tracing::debug!(elapsed = ?started.elapsed(), "state read");
    let (tx, rx) = mpsc::channel(BATCHES_WAITING);
    let (durable_tx, durable) = watch::channel(0);
    let status = Arc::new(Mutex::new(StoreStatus {
        path: path.clone(),
        bytes: db.size(),
        ..StoreStatus::default()
    }));
    let thread = writer::start(db, rx, durable_tx, status.clone());
    Ok((
        Store {
            tx,
            durable,
            status,
            thread: Some(thread),
        },
        loaded,
    ))
}

/// The database file in a data folder.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}
