//! The SQLite database: opening it (refusing what is not ours), the schema, loading it, and
//! applying a group of changes in one transaction.
//!
//! SQLite because it is the most tested embedded database there is, a crash in the middle of a
//! write leaves the last commit whole, and a user can open the file with the `sqlite3` tool to
//! look at what the broker kept (see the README).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Change, Loaded, StoredMessage, StoredSession};
use crate::broker::properties;
use crate::broker::protocol::{MessageProps, QoS, SubOptions};

/// `PRAGMA application_id` of our files ("MQLB"): an SQLite database without it is someone
/// else's, and is left alone.
const APPLICATION_ID: i32 = 0x4D51_4C42;
/// `PRAGMA user_version`: the schema below. 2 added what MQTT 5 keeps (`MIGRATE_TO_2`).
const SCHEMA_VERSION: i32 = 2;

const SCHEMA: &str = "
CREATE TABLE retained (
    topic   TEXT PRIMARY KEY,
    qos     INTEGER NOT NULL,
    payload BLOB NOT NULL,
    props      BLOB,
    expires_at INTEGER
);
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    expiry    INTEGER
);
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL,
    position  INTEGER NOT NULL,
    filter    TEXT NOT NULL,
    qos       INTEGER NOT NULL,
    sub_id    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, position)
);
CREATE TABLE messages (
    client_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    topic     TEXT NOT NULL,
    payload   BLOB NOT NULL,
    qos       INTEGER NOT NULL,
    retain    INTEGER NOT NULL,
    pkid      INTEGER,
    released  INTEGER NOT NULL DEFAULT 0,
    props      BLOB,
    expires_at INTEGER,
    PRIMARY KEY (client_id, seq)
);
CREATE TABLE qos2_in (
    client_id TEXT NOT NULL,
    pkid      INTEGER NOT NULL,
    PRIMARY KEY (client_id, pkid)
);
";

/// From schema 1 (MQTT 3.1.1 only) to 2: MQTT 5's message properties (as a PUBLISH carries
/// them) and expiry (a time of day, in ms since the epoch), a session's expiry in seconds
/// (NULL: for ever), and a subscription's identifier. `subscriptions.qos` holds the options
/// byte from 2 on, which a schema 1 QoS already is.
const MIGRATE_TO_2: &str = "
ALTER TABLE retained ADD COLUMN props BLOB;
ALTER TABLE retained ADD COLUMN expires_at INTEGER;
ALTER TABLE sessions ADD COLUMN expiry INTEGER;
ALTER TABLE subscriptions ADD COLUMN sub_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN props BLOB;
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
PRAGMA user_version = 2;
";

/// Why the data folder could not be used. Each names the file, and none changed it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: not an mqtt-lab state file (not an SQLite database); left as it is: move it away, or start with another --data-dir or --no-persistence", .0.display())]
    NotSqlite(PathBuf),
    #[error("{}: an SQLite database that is not mqtt-lab's (application id {id:#x}); left as it is: move it away, or start with another --data-dir or --no-persistence", .0.display(), id = .1)]
    Foreign(PathBuf, i32),
    #[error("{}: written by a newer mqtt-lab (schema {v}, this one reads {SCHEMA_VERSION})", .0.display(), v = .1)]
    NewerSchema(PathBuf, i32),
    #[error("{}: in use by another mqtt-lab", .0.display())]
    InUse(PathBuf),
    #[error("{}: damaged, not loaded and left as it is ({why}); move it away to start afresh", .0.display(), why = .1)]
    Damaged(PathBuf, String),
    #[error("{}: {why}", .0.display(), why = .1)]
    Io(PathBuf, String),
}

pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let p = || path.to_path_buf();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.into(), e.to_string()))?;
        }
        // Looked at before SQLite opens it: SQLite would take an empty or foreign file as a
        // database to write to.
        match std::fs::File::open(path) {
            Ok(mut f) => {
                use std::io::Read;
                let mut head = Vec::with_capacity(16);
                f.by_ref()
                    .take(16)
                    .read_to_end(&mut head)
                    .map_err(|e| StoreError::Io(p(), e.to_string()))?;
                if !head.is_empty() && head != b"SQLite format 3\0" {
                    return Err(StoreError::NotSqlite(p()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io(p(), e.to_string())),
        }
        let damaged = |e: rusqlite::Error| classify(path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(damaged)?;
        // Read only, until we know the file is ours.
        let app: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(damaged)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(damaged)?;
        let fresh = tables == 0 && app == 0;
        if !fresh && app != APPLICATION_ID {
            return Err(StoreError::Foreign(p(), app));
        }
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(damaged)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(p(), version));
        }
        // One broker per file: the lock is taken by the first write and kept.
        conn.busy_timeout(std::time::Duration::ZERO)
            .map_err(damaged)?;
        conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;")
            .map_err(damaged)?;
        // WAL: a commit is one append and one fsync (synchronous FULL syncs the log at each
        // commit), and a crash never leaves half of one.
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(damaged)?;
        // Reads through the page cache's mapping rather than a copy per page: loading a large
        // state at start is most of the start.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA mmap_size = 1073741824;")
            .map_err(damaged)?;
        if fresh {
            let tx = conn.unchecked_transaction().map_err(damaged)?;
            tx.execute_batch(SCHEMA).map_err(damaged)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            ))
            .map_err(damaged)?;
            tx.commit().map_err(damaged)?;
        } else if version < 2 {
            let tx = conn.unchecked_transaction().map_err(damaged)?;
            tx.execute_batch(MIGRATE_TO_2).map_err(damaged)?;
            tx.commit().map_err(damaged)?;
        }
        Ok(Db { conn, path: p() })
    }

    /// Everything the database holds.
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        self.load_inner().map_err(|e| classify(&self.path, e))
    }

    fn load_inner(&mut self) -> rusqlite::Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut q = self.conn.prepare(
            "SELECT topic, qos, payload, props, expires_at FROM retained ORDER BY topic",
        )?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                qos(r.get(1)?),
                Bytes::from(r.get::<_, Vec<u8>>(2)?),
                props_of(r.get_ref(3)?.as_blob_or_null()?, r.get(4)?)?,
            ))
        })?;
        for row in rows {
            loaded.retained.push(row?);
        }
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut q = self
            .conn
            .prepare("SELECT client_id, expiry FROM sessions ORDER BY client_id")?;
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })?;
        for row in rows {
            let (id, expiry) = row?;
            index.insert(id.clone(), loaded.sessions.len());
            loaded.sessions.push(StoredSession {
                client_id: id,
                expiry: expiry.map_or(u32::MAX, |e| e.clamp(0, u32::MAX as i64) as u32),
                ..StoredSession::default()
            });
        }
        let mut q = self.conn.prepare(
            "SELECT client_id, filter, qos, sub_id FROM subscriptions ORDER BY client_id, position",
        )?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if let Some(&i) = index.get(&id) {
                let mut options = unpack_options(r.get(2)?);
                options.id = r.get::<_, i64>(3)? as u32;
                loaded.sessions[i].filters.push((r.get(1)?, options));
            }
        }
        // In the table's own order (a sequential read, where the key's order would be a lookup
        // per row), then sorted per session: rows were mostly written in order anyway.
        let mut q = self.conn.prepare(
            "SELECT client_id, seq, topic, payload, qos, retain, pkid, released, props, expires_at
             FROM messages",
        )?;
        let mut rows = q.query([])?;
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        // Rows come mostly grouped by client: look the session up once per run.
        let mut current: Option<(String, usize)> = None;
        while let Some(r) = rows.next()? {
            let id = r.get_ref(0)?.as_str()?;
            let i = match &current {
                Some((c, i)) if c == id => *i,
                _ => {
                    let Some(&i) = index.get(id) else { continue };
                    current = Some((id.to_owned(), i));
                    i
                }
            };
            let name = r.get_ref(2)?.as_str()?;
            let topic = match topics.get(name) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(name);
                    topics.insert(name.to_owned(), t.clone());
                    t
                }
            };
            loaded.sessions[i].messages.push(StoredMessage {
                seq: r.get::<_, i64>(1)? as u64,
                topic,
                payload: Bytes::copy_from_slice(r.get_ref(3)?.as_blob()?),
                qos: qos(r.get(4)?),
                retain: r.get(5)?,
                pkid: r.get::<_, Option<i64>>(6)?.map(|p| p as u16),
                released: r.get(7)?,
                props: props_of(r.get_ref(8)?.as_blob_or_null()?, r.get(9)?)?,
            });
        }
        for s in &mut loaded.sessions {
            s.messages.sort_by_key(|m| m.seq);
        }
        let mut q = self
            .conn
            .prepare("SELECT client_id, pkid FROM qos2_in ORDER BY client_id, pkid")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if let Some(&i) = index.get(&id) {
                loaded.sessions[i].qos2_in.push(r.get::<_, i64>(1)? as u16);
            }
        }
        Ok(loaded)
    }

    /// Applies `changes` in order, in one transaction, and makes it durable. A message queued
    /// and acknowledged within the same group is never written.
    pub fn apply(&mut self, changes: &[Change]) -> rusqlite::Result<()> {
        let skip = settled_within(changes);
        let tx = self.conn.transaction()?;
        for (c, skip) in changes.iter().zip(skip) {
            if skip {
                continue;
            }
            match c {
                Change::Retained { topic, value } => match value {
                    Some((q, payload, props)) => {
                        let (blob, expires_at) = props_to_row(props.as_deref(), &[]);
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO retained (topic, qos, payload, props, expires_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![&**topic, *q as u8, &payload[..], blob, expires_at])?;
                    }
                    None => {
                        tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
                            .execute([&**topic])?;
                    }
                },
                Change::Session {
                    client_id,
                    filters,
                    expiry,
                } => {
                    let expiry = (*expiry != u32::MAX).then_some(*expiry as i64);
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO sessions (client_id, expiry) VALUES (?1, ?2)",
                    )?
                    .execute(params![&**client_id, expiry])?;
                    tx.prepare_cached("DELETE FROM subscriptions WHERE client_id = ?1")?
                        .execute([&**client_id])?;
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO subscriptions (client_id, position, filter, qos, sub_id)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    for (i, (f, o)) in filters.iter().enumerate() {
                        let (options, id) = (pack_options(o), o.id as i64);
                        ins.execute(params![&**client_id, i as i64, f, options, id])?;
                    }
                }
                Change::SessionGone { client_id } => {
                    for table in ["sessions", "subscriptions", "messages", "qos2_in"] {
                        tx.prepare_cached(&format!("DELETE FROM {table} WHERE client_id = ?1"))?
                            .execute([&**client_id])?;
                    }
                }
                Change::Queued {
                    client_id,
                    seq,
                    msg,
                    qos,
                    retain,
                } => {
                    let (blob, expires_at) = props_to_row(msg.props.as_deref(), &msg.sub_ids);
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO messages
                         (client_id, seq, topic, payload, qos, retain, props, expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        &**client_id,
                        *seq as i64,
                        &*msg.topic,
                        &msg.payload[..],
                        *qos as u8,
                        retain,
                        blob,
                        expires_at
                    ])?;
                }
                Change::Sent {
                    client_id,
                    seq,
                    pkid,
                } => {
                    tx.prepare_cached(
                        "UPDATE messages SET pkid = ?3 WHERE client_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![&**client_id, *seq as i64, *pkid])?;
                }
                Change::Released { client_id, seq } => {
                    tx.prepare_cached(
                        "UPDATE messages SET released = 1 WHERE client_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![&**client_id, *seq as i64])?;
                }
                Change::Done { client_id, seq } => {
                    tx.prepare_cached("DELETE FROM messages WHERE client_id = ?1 AND seq = ?2")?
                        .execute(params![&**client_id, *seq as i64])?;
                }
                Change::Qos2In {
                    client_id,
                    pkid,
                    held,
                } => {
                    let sql = if *held {
                        "INSERT OR IGNORE INTO qos2_in (client_id, pkid) VALUES (?1, ?2)"
                    } else {
                        "DELETE FROM qos2_in WHERE client_id = ?1 AND pkid = ?2"
                    };
                    tx.prepare_cached(sql)?
                        .execute(params![&**client_id, *pkid])?;
                }
                Change::ClearRetained => {
                    tx.execute("DELETE FROM retained", [])?;
                }
            }
        }
        tx.commit()
    }

    /// The database's size on disk, its write-ahead log included.
    pub fn size(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        [self.path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Folds the write-ahead log back into the database file (on a clean stop, so that the
    /// file alone is the whole state).
    pub fn checkpoint(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .optional();
    }
}

/// Which of `changes` need not be written: everything about a message both queued and done
/// within them (acknowledged before the group reached the disk). A session gone and made again
/// in the group numbers its messages afresh: each life of a session is told apart.
fn settled_within(changes: &[Change]) -> Vec<bool> {
    let mut skip = vec![false; changes.len()];
    let mut life: HashMap<&str, u32> = HashMap::new();
    // The changes of each message queued in this group so far, by (session, life, number).
    let mut open: HashMap<(&str, u32, u64), Vec<usize>> = HashMap::new();
    fn key<'a>(id: &'a Arc<str>, seq: u64, life: &HashMap<&str, u32>) -> (&'a str, u32, u64) {
        let id: &str = id;
        (id, life.get(id).copied().unwrap_or(0), seq)
    }
    for (i, c) in changes.iter().enumerate() {
        match c {
            Change::Queued { client_id, seq, .. } => {
                open.insert(key(client_id, *seq, &life), vec![i]);
            }
            Change::Sent { client_id, seq, .. } | Change::Released { client_id, seq } => {
                if let Some(v) = open.get_mut(&key(client_id, *seq, &life)) {
                    v.push(i);
                }
            }
            Change::Done { client_id, seq } => {
                if let Some(v) = open.remove(&key(client_id, *seq, &life)) {
                    for j in v {
                        skip[j] = true;
                    }
                    skip[i] = true;
                }
            }
            Change::SessionGone { client_id } => {
                *life.entry(&**client_id).or_default() += 1;
            }
            _ => {}
        }
    }
    skip
}

/// Milliseconds since the epoch, for an expiry that must survive a restart.
fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A message's MQTT 5 properties as columns: the rest as a PUBLISH carries them, and when it
/// expires as a time of day.
fn props_to_row(props: Option<&MessageProps>, sub_ids: &[u32]) -> (Option<Vec<u8>>, Option<i64>) {
    // A queued copy's Subscription Identifiers are kept with its properties.
    let merged;
    let p = match props {
        Some(p) if sub_ids.is_empty() => p,
        None if sub_ids.is_empty() => return (None, None),
        p => {
            merged = MessageProps {
                subscription_ids: sub_ids.to_vec(),
                ..p.cloned().unwrap_or_default()
            };
            &merged
        }
    };
    let expires_at = p.expiry.map(|e| {
        let left = e.left(std::time::Instant::now()).unwrap_or(0);
        unix_ms_now() + left as i64 * 1000
    });
    (Some(properties::to_blob(p)), expires_at)
}

/// The properties of a stored message, with the time it has left (a message that ran out
/// while the broker was stopped has 0 left, and is dropped instead of sent).
fn props_of(
    blob: Option<&[u8]>,
    expires_at: Option<i64>,
) -> rusqlite::Result<Option<Box<MessageProps>>> {
    let Some(blob) = blob else {
        return Ok(None);
    };
    let left = expires_at.map(|at| ((at - unix_ms_now()).max(0) / 1000) as u32);
    properties::from_blob(blob, left).map(Some).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// A subscription's QoS and MQTT 5 options in the `qos` column, packed as SUBSCRIBE's options
/// byte packs them (a 3.1.1 subscription's is its QoS, as schema 1 wrote it).
fn pack_options(o: &SubOptions) -> u8 {
    o.qos as u8
        | (o.no_local as u8) << 2
        | (o.retain_as_published as u8) << 3
        | (o.retain_handling & 3) << 4
}

fn unpack_options(n: u8) -> SubOptions {
    SubOptions {
        qos: qos(n & 3),
        no_local: n & 0x04 != 0,
        retain_as_published: n & 0x08 != 0,
        retain_handling: (n >> 4) & 3,
        id: 0,
    }
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Busy means another process holds the file; anything else while opening or loading means
/// the file cannot be trusted.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let p = path.to_path_buf();
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::InUse(p)
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied
            ) =>
        {
            StoreError::Io(p, e.to_string())
        }
        _ => StoreError::Damaged(p, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::link::Message;

    fn msg(text: &'static str) -> Arc<Message> {
        Arc::new(Message {
            topic: Arc::from("lab/a"),
            payload: Bytes::from(text),
            props: None,
            sub_ids: Box::new([]),
        })
    }

    #[test]
    fn mqtt_5_state_survives_and_a_schema_1_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        // A schema 1 file, as the broker before MQTT 5 wrote it.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE retained (topic TEXT PRIMARY KEY, qos INTEGER NOT NULL, payload BLOB NOT NULL);
                 CREATE TABLE sessions (client_id TEXT PRIMARY KEY);
                 CREATE TABLE subscriptions (client_id TEXT NOT NULL, position INTEGER NOT NULL,
                     filter TEXT NOT NULL, qos INTEGER NOT NULL, PRIMARY KEY (client_id, position));
                 CREATE TABLE messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL, topic TEXT NOT NULL,
                     payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, pkid INTEGER,
                     released INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (client_id, seq));
                 CREATE TABLE qos2_in (client_id TEXT NOT NULL, pkid INTEGER NOT NULL, PRIMARY KEY (client_id, pkid));
                 INSERT INTO sessions VALUES ('old');
                 INSERT INTO subscriptions VALUES ('old', 0, 'lab/#', 1);
                 PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        let mut db = Db::open(&path).unwrap();
        let loaded = db.load().unwrap();
        assert_eq!(loaded.sessions[0].expiry, u32::MAX);
        assert_eq!(
            loaded.sessions[0].filters,
            vec![("lab/#".to_string(), SubOptions::qos(QoS::AtLeastOnce))]
        );
        // MQTT 5 state, written and read back.
        let props = MessageProps {
            content_type: Some("text/plain".into()),
            user: vec![("k".into(), "v".into())],
            expiry: Some(crate::broker::protocol::Expiry::starting_now(600)),
            subscription_ids: vec![4, 9],
            ..Default::default()
        };
        let options = SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: 2,
            id: 9,
        };
        let c: Arc<str> = Arc::from("v5");
        let msg = Arc::new(Message {
            topic: Arc::from("lab/a"),
            payload: Bytes::from("x"),
            props: Some(Arc::new(MessageProps {
                subscription_ids: Vec::new(),
                ..props.clone()
            })),
            sub_ids: Box::new([4, 9]),
        });
        db.apply(&[
            Change::Session {
                client_id: c.clone(),
                filters: vec![("lab/+".into(), options)],
                expiry: 300,
            },
            Change::Queued {
                client_id: c.clone(),
                seq: 1,
                msg,
                qos: QoS::AtLeastOnce,
                retain: false,
            },
            Change::Retained {
                topic: Arc::from("lab/r"),
                value: Some((
                    QoS::AtMostOnce,
                    Bytes::from("r"),
                    Some(Box::new(props.clone())),
                )),
            },
        ])
        .unwrap();
        drop(db);
        let loaded = Db::open(&path).unwrap().load().unwrap();
        let s = loaded
            .sessions
            .iter()
            .find(|s| s.client_id == "v5")
            .unwrap();
        assert_eq!((s.expiry, &s.filters[0].1), (300, &options));
        let got = s.messages[0].props.as_deref().unwrap();
        assert_eq!(got.content_type, props.content_type);
        assert_eq!(got.user, props.user);
        assert_eq!(got.subscription_ids, props.subscription_ids);
        let left = got.expiry.unwrap().secs;
        assert!((598..=600).contains(&left), "{left}");
        let (_, _, _, r) = &loaded.retained[0];
        assert_eq!(r.as_deref().unwrap().content_type, props.content_type);
    }

    #[test]
    fn a_message_queued_and_done_in_one_group_is_not_written_but_a_new_life_of_its_session_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        let c: Arc<str> = Arc::from("c");
        let session = || Change::Session {
            client_id: c.clone(),
            filters: vec![("lab/#".into(), SubOptions::qos(QoS::AtLeastOnce))],
            expiry: u32::MAX,
        };
        let queued = |seq, text| Change::Queued {
            client_id: c.clone(),
            seq,
            msg: msg(text),
            qos: QoS::AtLeastOnce,
            retain: false,
        };
        let group = vec![
            session(),
            queued(1, "acked at once"),
            Change::Sent {
                client_id: c.clone(),
                seq: 1,
                pkid: 1,
            },
            Change::Done {
                client_id: c.clone(),
                seq: 1,
            },
            queued(2, "still queued"),
            // The client comes back with a clean session, then with a persistent one again: its
            // new session numbers from 1.
            Change::SessionGone {
                client_id: c.clone(),
            },
            session(),
            queued(1, "first of the new life"),
        ];
        assert_eq!(
            settled_within(&group),
            [false, true, true, true, false, false, false, false]
        );
        db.apply(&group).unwrap();
        let loaded = db.load().unwrap();
        assert_eq!(loaded.sessions.len(), 1);
        let texts: Vec<&[u8]> = loaded.sessions[0]
            .messages
            .iter()
            .map(|m| &m.payload[..])
            .collect();
        assert_eq!(texts, [&b"first of the new life"[..]]);
    }
}
