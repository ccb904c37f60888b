//! Accepts connections on one door (plain MQTT over TCP, or MQTT over WebSocket) and spawns a
//! connection task for each, up to a limit shared by every door.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
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
        };
        // TLS, the WebSocket upgrade and CONNECT must all be done within one CONNECT timeout
        // of the accept.
        let deadline = Instant::now() + shared.connect_timeout;
        // Whatever handshake the door needs happens in the connection's own task: one slow
        // client never holds up the accept loop.
        tokio::spawn(serve(socket, peer, deadline, shared.clone(), permit));
    }
}

/// One for every plain TCP connection: each parked one holds a reference, not two functions.
static TCP_PARKER: connection::Parker<OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf> =
    connection::Parker {
        unsplit: |rd, wr| rd.reunite(wr).map_err(std::io::Error::other)?.into_std(),
        split: TcpStream::into_split,
    };

/// The connection's task. Not an `async fn`: a future keeps its arguments for its whole life,
/// and these would sit in every idle connection's task beside the connection's own.
fn serve(
    socket: TcpStream,
    peer: Peer,
    deadline: Instant,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    // The TLS and WebSocket paths are boxed: a task's memory is its largest state, and a TLS
    // handshake's is some kB that every plain TCP connection would otherwise carry too.
    match peer.transport {
        Transport::Tcp => {
            // Owned halves: TCP reads and writes at once without a lock between them.
            let (rd, wr) = socket.into_split();
            Either::Left(connection::serve(
                rd,
                wr,
                peer,
                deadline,
                shared,
                permit,
                Some(&TCP_PARKER),
            ))
        }
        Transport::WebSocket => {
            Either::Right(boxed(websocket(socket, peer, deadline, shared, permit)))
        }
        Transport::Tls => Either::Right(boxed(async move {
            if let Some(tls) = tls_handshake(socket, peer, deadline, &shared).await {
                let (rd, wr) = tokio::io::split(tls);
                connection::serve(rd, wr, peer, deadline, shared, permit, None).await;
            }
        })),
        Transport::SecureWebSocket => Either::Right(boxed(async move {
            if let Some(tls) = tls_handshake(socket, peer, deadline, &shared).await {
                websocket(tls, peer, deadline, shared, permit).await;
            }
        })),
        Transport::Bridge | Transport::MqttSn => {
            unreachable!("bridges and MQTT-SN are not accepted on a TCP door")
        }
    }
}

fn boxed(f: impl Future<Output = ()> + Send + 'static) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(f)
}

/// The WebSocket upgrade, then the connection.
async fn websocket<S>(
    stream: S,
    peer: Peer,
    deadline: Instant,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = websocket::accept(stream, shared.max_packet_size, deadline);
    match upgrade.await {
        Ok((rd, wr)) => connection::serve(rd, wr, peer, deadline, shared, permit, None).await,
        Err(e) => connection::report_refusal(&shared, peer, None, Refusal::Upgrade(e)).await,
    }
}

/// The TLS handshake, under the CONNECT timeout; None (logged, and told to the router) if it
/// failed: plain MQTT sent to a TLS port, a client that does not trust the certificate, silence.
async fn tls_handshake(
    socket: TcpStream,
    peer: Peer,
    deadline: Instant,
    shared: &Shared,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = shared.tls.clone()?;
    let reason = match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
        Ok(Ok(tls)) => return Some(tls),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("not done within {:?}", shared.connect_timeout),
    };
    connection::report_refusal(shared, peer, None, Refusal::Tls(reason)).await;
    None
}
