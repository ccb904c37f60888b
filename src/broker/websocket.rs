//! MQTT over WebSocket, for browser pages (Paho JavaScript, MQTT.js): the HTTP upgrade on
//! `/mqtt` or `/` with subprotocol `mqtt` (or `mqttv3.1`), then MQTT's bytes in binary frames.
//!
//! The upgrade runs in the connection's own task, under the CONNECT timeout, so a slow or silent
//! handshake holds up no one else. After it, `WsRead` and `WsWrite` make the frames look like a
//! byte stream, so the connection task serves a WebSocket client exactly as a TCP one: MQTT
//! packets may span frames and frames may hold many packets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// The paths a client may ask for.
const PATHS: [&str; 2] = ["/mqtt", "/"];
/// The subprotocols of MQTT 3.1.1 (and 5) and of MQTT 3.1, in the order we prefer them.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// Read in small steps: an idle browser client must cost little.
const READ_BUFFER: usize = 4 * 1024;

/// Why an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("WebSocket handshake not done within the CONNECT timeout")]
    Timeout,
    #[error("WebSocket request for {0:?}: answered 404 (the path is /mqtt)")]
    WrongPath(String),
    #[error("WebSocket subprotocols {0:?} do not include mqtt: answered 400")]
    WrongSubprotocol(String),
    #[error("an HTTP request that is not a WebSocket upgrade: answered 426")]
    NotUpgrade,
    #[error("not a WebSocket upgrade: {0}")]
    Handshake(String),
}

/// The longest request head read before the upgrade (browsers send well under 2 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// Answers the HTTP upgrade and returns the stream's two halves.
// The callback's error type is the one tungstenite's `Callback` asks for.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept<S>(
    stream: S,
    max_packet_size: usize,
    deadline: tokio::time::Instant,
) -> Result<(WsRead<Replay<S>>, WsWrite<Replay<S>>), UpgradeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stream = stream;
    let head = match tokio::time::timeout_at(deadline, read_head(&mut stream)).await {
        Err(_) => return Err(UpgradeError::Timeout),
        Ok(Err(e)) => return Err(UpgradeError::Handshake(e.to_string())),
        Ok(Ok(head)) => head,
    };
    // tungstenite closes on a request that asks for no upgrade without a word: say what is
    // wanted, as an HTTP server should.
    if !asks_for_websocket(&head) {
        let body = "MQTT over WebSocket: upgrade to websocket, subprotocol mqtt\n";
        let answer = format!(
            "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout_at(deadline, stream.write_all(answer.as_bytes())).await;
        return Err(UpgradeError::NotUpgrade);
    }
    let stream = Replay { head, stream };
    let mut refused = None;
    let callback = |request: &Request, response: Response| check(request, response, &mut refused);
    // A frame or a message over the maximum packet size closes the connection: an MQTT packet
    // that large would be refused anyway. (A little over, for the frame's own header.)
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_packet_size.saturating_add(16)))
        .max_frame_size(Some(max_packet_size.saturating_add(16)));
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = match tokio::time::timeout_at(deadline, upgrade).await {
        Err(_) => return Err(UpgradeError::Timeout),
        Ok(Err(e)) => {
            return Err(refused.unwrap_or_else(|| UpgradeError::Handshake(e.to_string())));
        }
        Ok(Ok(ws)) => ws,
    };
    let (sink, stream) = ws.split();
    Ok((
        WsRead {
            stream,
            pending: Bytes::new(),
        },
        WsWrite { sink },
    ))
}

/// Reads until a whole HTTP request head is in: the head and whatever came after it (all of it
/// given back to the handshake by `Replay`).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> io::Result<Bytes> {
    let mut read = bytes::BytesMut::with_capacity(1024);
    while !read.windows(4).any(|w| w == b"\r\n\r\n") {
        if read.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head over 16 KiB",
            ));
        }
        read.reserve(1024);
        if stream.read_buf(&mut read).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(read.freeze())
}

/// Whether a request head has `Upgrade: websocket`.
fn asks_for_websocket(read: &[u8]) -> bool {
    let end = read
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(read.len());
    String::from_utf8_lossy(&read[..end]).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

/// A stream that gives back the request head read from it before going on with the rest.
pub(crate) struct Replay<S> {
    head: Bytes,
    stream: S,
}

impl<S: tokio::io::AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let n = buf.remaining().min(self.head.len());
            let chunk = self.head.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Checks the path and the subprotocol of an upgrade request, and names the subprotocol in the
/// answer (a browser drops a connection whose answer does not).
#[allow(clippy::result_large_err)] // the type tungstenite's `Callback` asks for
fn check(
    request: &Request,
    mut response: Response,
    refused: &mut Option<UpgradeError>,
) -> Result<Response, ErrorResponse> {
    let path = request.uri().path();
    if !PATHS.contains(&path) {
        *refused = Some(UpgradeError::WrongPath(path.to_owned()));
        return Err(error_response(
            StatusCode::NOT_FOUND,
            "MQTT over WebSocket is on /mqtt\n",
        ));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // A client that offers none gets none (some libraries leave it out); one that offers
    // others must be told no.
    if !offered.is_empty() {
        let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
            *refused = Some(UpgradeError::WrongSubprotocol(offered.join(", ")));
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "MQTT over WebSocket needs the subprotocol mqtt\n",
            ));
        };
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    }
    Ok(response)
}

fn error_response(status: StatusCode, body: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body.to_owned()));
    *response.status_mut() = status;
    response
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// The reading half: the payloads of binary frames, one after the other, as bytes.
pub(crate) struct WsRead<S> {
    stream: SplitStream<WebSocketStream<S>>,
    /// What is left of the last frame.
    pending: Bytes,
}

impl<S> AsyncRead for WsRead<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.remaining().min(self.pending.len());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            // Pings are answered by tungstenite as it reads; a close frame is the end.
            match ready!(Pin::new(&mut self.stream).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text frame: MQTT over WebSocket is sent in binary frames",
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

/// The writing half: each write goes out as one binary frame.
pub(crate) struct WsWrite<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
}

impl<S> AsyncWrite for WsWrite<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.sink).poll_ready(cx)).map_err(io_error)?;
        let frame = Message::Binary(Bytes::copy_from_slice(buf));
        Pin::new(&mut self.sink)
            .start_send(frame)
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sink).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sink).poll_close(cx).map_err(io_error)
    }
}
