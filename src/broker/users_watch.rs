//! Picks up changes to the users file made beside the running broker (`mqtt-lab user add` in a
//! terminal, an edit by hand), so that new logins are checked against what the file says.
//!
//! A poll of the file's stamp (time, size, inode) every couple of seconds: cheap, and the same
//! on every platform. The router drops what it reads while its own save of the file is on the
//! way, and any version not newer than the one it wrote: a read taken just before a change made
//! in the window must not undo it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::files;
use super::link::ToRouter;
use super::users::Users;

/// How often the file is looked at.
pub(crate) const POLL: Duration = Duration::from_secs(2);

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
            let now = files::stamp(&p);
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
        if let (Some(stamp), Some(loaded)) = (now, loaded)
            && router
                .send(ToRouter::UsersFile { stamp, loaded })
                .await
                .is_err()
        {
            return;
        }
    }
}
