//! Picks up changes to the users file made beside the running broker (`mqtt-lab user add` in a
//! terminal, an edit by hand), so that new logins are checked against what the file says.
//!
//! A poll of the file's size and modification time every couple of seconds: cheap, and the same
//! on every platform. The broker's own writes come back through here too; they change nothing,
//! since the router compares what it reads with what it has.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::link::ToRouter;
use super::users::Users;

/// How often the file is looked at.
pub(crate) const POLL: Duration = Duration::from_secs(2);

/// What identifies a version of the file without reading it.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches `path` until the router is gone.
pub(crate) async fn run(path: PathBuf, router: mpsc::Sender<ToRouter>, every: Duration) {
    // The first look reads the file: it may have changed since the broker loaded it.
    let mut last = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let p = path.clone();
        let Ok((now, loaded)) = tokio::task::spawn_blocking(move || {
            let now = stamp(&p);
            (now, now.map(|_| Users::load(&p).map_err(|e| e.to_string())))
        })
        .await
        else {
            continue;
        };
        // Gone (being replaced, or deleted): keep what we have until it is back.
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        if let Some(loaded) = loaded
            && router.send(ToRouter::UsersFile(loaded)).await.is_err()
        {
            return;
        }
    }
}
