//! Writes the broker's files one after the other, off the router's thread, so that two quick
//! changes can never land on disk in the wrong order.

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::files::{self, FileError};
use super::link::ToRouter;

/// Saves waiting at most; a full queue refuses the save rather than growing.
const QUEUE: usize = 64;

/// One file to write atomically, and who wants to know how it went.
pub(crate) struct SaveJob {
    pub path: PathBuf,
    pub contents: Result<String, FileError>,
    pub kind: FileKind,
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// Which of the broker's files a job writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Topics,
    /// Only its owner may read it (password hashes), and the router hears when it is written.
    Users,
    /// Only its owner may read it: it holds the passwords of remote brokers.
    Bridges,
}

impl FileKind {
    fn private(self) -> bool {
        matches!(self, FileKind::Users | FileKind::Bridges)
    }
}

/// Starts the saver task; it ends when every sender is gone, after the last job.
/// The router hears of every users file written, to tell its own writes from
/// others' (see `users_watch`).
pub(crate) fn start(
    router: mpsc::WeakSender<ToRouter>,
) -> (mpsc::Sender<SaveJob>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<SaveJob>(QUEUE);
    let task = tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let SaveJob {
                path,
                contents,
                kind,
                reply,
            } = job;
            let private = kind.private();
            let result = tokio::task::spawn_blocking(move || {
                let text = contents?;
                // Taken like `mqtt-lab user add` takes it: neither writes over the other.
                let _lock = files::lock(&path)?;
                if private {
                    files::write_atomic_private(&path, text.as_bytes())?;
                } else {
                    files::write_atomic(&path, text.as_bytes())?;
                }
                Ok::<_, files::FileError>(files::stamp(&path))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            if kind == FileKind::Users
                && let Some(router) = router.upgrade()
            {
                let written = result.as_ref().ok().copied().flatten();
                let _ = router.send(ToRouter::UsersSaved(written)).await;
            }
            let result = result.map(|_| ());
            if let Err(e) = &result {
                warn!(error = %e, "file not saved");
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    });
    (tx, task)
}
