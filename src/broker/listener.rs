//! Accepts TCP connections and spawns a connection task for each, up to a limit.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::connection::{self, Shared};
use super::protocol::{Peer, Transport};

/// Accepts until the task is aborted.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>, max_connections: usize) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be freed, keep serving.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, max_connections, "too many connections: closing the new one");
            continue;
        };
        // Small packets (acks, pings) must not wait for Nagle's algorithm.
        if let Err(e) = socket.set_nodelay(true) {
            debug!(%peer, error = %e, "TCP_NODELAY not set");
        }
        let shared = shared.clone();
        let peer = Peer {
            addr: peer,
            transport: Transport::Tcp,
        };
        tokio::spawn(async move {
            // Owned halves: TCP reads and writes at once without a lock between them.
            let (rd, wr) = socket.into_split();
            connection::serve(rd, wr, peer, shared).await;
            drop(permit);
        });
    }
}
