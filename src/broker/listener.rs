//! Accepts connections on one door (plain MQTT over TCP, or MQTT over WebSocket) and spawns a
//! connection task for each, up to a limit shared by every door.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::connection::{self, Shared};
use super::link::Refusal;
use super::protocol::{Peer, Transport};
use super::websocket;

/// Accepts until the task is aborted. `permits` caps the connections of every listener.
pub(crate) async fn run(
    listener: TcpListener,
    transport: Transport,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
) {
    let bound = listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be freed, keep serving.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(peer = %addr, "too many connections: closing the new one");
            continue;
        };
        // Small packets (acks, pings) must not wait for Nagle's algorithm.
        if let Err(e) = socket.set_nodelay(true) {
            debug!(peer = %addr, error = %e, "TCP_NODELAY not set");
        }
        // getsockname: for a listener on 0.0.0.0, the address this client reached.
        let local = socket.local_addr().unwrap_or(bound);
        let peer = Peer {
            addr,
            local,
            transport,
            accepted: std::time::Instant::now(),
        };
        let shared = shared.clone();
        // Whatever handshake the door needs happens in the connection's own task: one slow
        // client never holds up the accept loop.
        tokio::spawn(async move {
            serve(socket, peer, shared).await;
            drop(permit);
        });
    }
}

async fn serve(socket: TcpStream, peer: Peer, shared: Arc<Shared>) {
    // The TLS and WebSocket paths are boxed: a task's memory is its largest state, and a TLS
    // handshake's is some kB that every plain TCP connection would otherwise carry too.
    match peer.transport {
        Transport::Tcp => {
            // Owned halves: TCP reads and writes at once without a lock between them.
            let (rd, wr) = socket.into_split();
            connection::serve(rd, wr, peer, shared).await;
        }
        Transport::WebSocket => Box::pin(websocket(socket, peer, shared)).await,
        Transport::Tls => {
            Box::pin(async move {
                if let Some(tls) = tls_handshake(socket, peer, &shared).await {
                    let (rd, wr) = tokio::io::split(tls);
                    connection::serve(rd, wr, peer, shared).await;
                }
            })
            .await
        }
        Transport::SecureWebSocket => {
            Box::pin(async move {
                if let Some(tls) = tls_handshake(socket, peer, &shared).await {
                    websocket(tls, peer, shared).await;
                }
            })
            .await
        }
    }
}

/// The WebSocket upgrade, then the connection.
/// When the handshakes and CONNECT must be done by.
pub(crate) fn deadline(peer: Peer, shared: &Shared) -> tokio::time::Instant {
    tokio::time::Instant::from_std(peer.accepted) + shared.connect_timeout
}

async fn websocket<S>(stream: S, peer: Peer, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let upgrade = websocket::accept(stream, shared.max_packet_size, deadline(peer, &shared));
    match upgrade.await {
        Ok((rd, wr)) => connection::serve(rd, wr, peer, shared).await,
        Err(e) => connection::report_refusal(&shared, peer, None, Refusal::Upgrade(e)).await,
    }
}

/// The TLS handshake, under the CONNECT timeout; None (logged, and told to the router) if it
/// failed: plain MQTT sent to a TLS port, a client that does not trust the certificate, silence.
async fn tls_handshake(
    socket: TcpStream,
    peer: Peer,
    shared: &Shared,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = shared.tls.clone()?;
    let reason =
        match tokio::time::timeout_at(deadline(peer, shared), acceptor.accept(socket)).await {
            Ok(Ok(tls)) => return Some(tls),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not done within {:?}", shared.connect_timeout),
        };
    connection::report_refusal(shared, peer, None, Refusal::Tls(reason)).await;
    None
}
