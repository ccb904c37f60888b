//! One task per client connection: owns the socket, the codec buffers and the keepalive timer.
//!
//! It answers what needs no shared state itself (PUBACK, PUBREC, PUBCOMP, PUBREL, PINGRESP),
//! forwards everything else to the router in one message per read, and writes what the router
//! sends back in batches: many packets per `write`. Answers leave in the order the packets came
//! in: one made here waits behind the router's answer (CONNACK, SUBACK, UNSUBACK) to an earlier
//! packet.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::auth::LoginGate;
use super::codec::{self, DecodeError};
use super::codec_v5;
use super::link::{
    CloseReason, ConnId, ConnectRequest, Inbound, Outbound, Refusal, ToRouter, Violation,
};
use super::outbox;
use super::parking;
use super::protocol::{
    AckKind, ConnAckV5, Connect, ConnectCode, Dialect, Outgoing, Packet, Peer, QoS, Reason,
    Transport,
};
use super::session::Limits;
use super::snapshot::V5Settings;
use super::stats::{self, Stats};
use super::topic_alias;
use super::trace;
use super::users::{LoginCheck, Users};

/// Bytes waiting to be written before the connection stops reading from the client and from
/// the router: a client that does not read cannot make the broker buffer without limit.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Room made in the read buffer when it runs low: small for the many clients that say little
/// (an idle connection must cost a few kB), doubling up to the largest for a client whose reads
/// keep filling it.
const READ_CHUNK_MIN: usize = 256;
const READ_CHUNK_MAX: usize = 64 * 1024;
/// The timer's setting when keepalive is off (it is then never polled).
const NO_KEEPALIVE: Duration = Duration::from_secs(86_400 * 365);
/// How long a closing connection may take to flush what it still has to say.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(1);
/// Packets waiting for the router's answer before the connection stops reading from the client:
/// a client may pipeline as much as it likes, but what waits for an answer stays bounded.
const MAX_OWED: u64 = 1024;
/// Answers made here that wait behind one of the router's, before reading stops.
const MAX_DEFERRED: usize = 4096;

/// What every connection task shares.
pub(crate) struct Shared {
    pub router: mpsc::Sender<ToRouter>,
    pub users: watch::Receiver<Arc<Users>>,
    pub logins: Arc<LoginGate>,
    /// For the TLS doors (`mqtts://`, `wss://`), when there are any.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub stats: Arc<Stats>,
    pub limits: Limits,
    pub max_packet_size: usize,
    pub max_topic_alias: u16,
    pub send_topic_aliases: bool,
    pub connect_timeout: Duration,
    pub next_conn: AtomicU64,
    /// Where connections report their packets while someone watches the trace.
    pub trace: Arc<trace::Sink>,
    /// With persistence: the last epoch of changes on disk (see `store`). Acknowledgements
    /// wait for the epoch their packets changed.
    pub durable: Option<watch::Receiver<u64>>,
    /// Where quiet plain-TCP connections wait without a task (`None`: they keep theirs).
    pub parking: Option<Arc<parking::Lot>>,
}

/// How a connection's stream halves become the socket the parking lot holds, and back: plain
/// TCP only (a TLS or WebSocket stream keeps state of its own above the socket).
pub(crate) struct Parker<R, W> {
    pub unsplit: fn(R, W) -> std::io::Result<std::net::TcpStream>,
    pub split: fn(tokio::net::TcpStream) -> (R, W),
}

/// The bytes of one connection, both ways: every packet in passes through `decode` and every
/// packet out through `encode`, whatever the transport (the one place a packet trace taps).
struct Wire {
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The stream keeps a buffer of its own (TLS records, WebSocket frames) that a flush
    /// sends; a TCP socket's writes are on their way at once.
    flushes: bool,
    tap: trace::Tap,
    /// The client's protocol level (3.1.1 until its CONNECT says otherwise) and wishes.
    dialect: Dialect,
    /// MQTT 5: the topic aliases the client set (only once it sets one), resolved here so
    /// that the trace and the router see the topic.
    aliases_in: Option<Box<topic_alias::Inbound>>,
}

impl Wire {
    /// The next whole packet in the read buffer, if there is one.
    fn decode(&mut self, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
        let mut packet = codec::decode_as(&mut self.rbuf, max_packet_size, self.dialect.level)?;
        if let Some(Packet::Publish(p)) = &mut packet
            && p.alias != 0
        {
            let aliases = self.aliases_in.get_or_insert_default();
            aliases.resolve(p, self.dialect.max_alias)?;
        }
        if let Some(p) = &packet {
            self.tap.packet_in(p);
        }
        Ok(packet)
    }

    /// Appends a packet to the write buffer.
    fn encode(&mut self, packet: Outgoing<'_>) {
        self.tap.packet_out(&packet, self.dialect.level);
        codec::encode_as(&mut self.wbuf, packet, self.dialect);
    }
}

/// Serves one client from accept to close, over any byte stream: `rd` and `wr` are the two
/// halves of a TCP socket, or of a TLS or WebSocket stream whose handshake is done. `permit`
/// is its place among `--max-connections`, given back when it ends. With a `parker`, the
/// connection waits in the parking lot while it is quiet, and its task ends meanwhile.
///
/// An idle connection is mostly this future, and a future is as large as its largest state
/// plus its arguments, which it keeps for its whole life: so this is not an `async fn`, the
/// arguments go straight into the boxed handshake, and the closing is boxed too. What stays
/// for the connection's life is the link and its read-or-write loop alone.
pub(crate) fn serve<R, W>(
    rd: R,
    wr: W,
    peer: Peer,
    deadline: tokio::time::Instant,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    parker: Option<&'static Parker<R, W>>,
) -> impl Future<Output = ()> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let handshake = Box::pin(handshake(rd, wr, peer, deadline, shared, permit, parker));
    async move {
        let Some(link) = handshake.await else {
            return;
        };
        live(link, Instant::now()).await;
    }
}

/// A connected client's life in a task: until it closes, or parks.
async fn live<R, W>(mut link: Link<R, W>, last_read: Instant)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    match link.run(last_read).await {
        RunEnd::Close(reason) => Box::pin(link.close(reason)).await,
        RunEnd::Park { last_read } => link.park(last_read),
    }
}

/// Reads and checks CONNECT, logs in, and registers with the router. Returns the connected
/// link, the keepalive and the client id, or None if the client was refused or left.
async fn handshake<R, W>(
    mut rd: R,
    mut wr: W,
    peer: Peer,
    deadline: tokio::time::Instant,
    shared_arc: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    parker: Option<&'static Parker<R, W>>,
) -> Option<Link<R, W>>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let shared = &*shared_arc;
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut wire = Wire {
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        flushes: peer.transport != Transport::Tcp,
        tap: trace::Tap::new(shared.trace.clone(), conn, Arc::new(peer)),
        dialect: Dialect::V4,
        aliases_in: None,
    };
    // One deadline from accept: a TLS handshake or WebSocket upgrade used some of it already.
    let first =
        tokio::time::timeout_at(deadline, read_first_packet(&mut rd, &mut wire, shared)).await;
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => {
            // From here on the client is spoken to in its own version, refusals included.
            wire.dialect = Dialect {
                level: c.level,
                problem_info: c.v5.as_ref().is_some_and(|v| v.request_problem_information),
                max_alias: shared.max_topic_alias,
                max_packet: c
                    .v5
                    .as_ref()
                    .and_then(|v| v.max_packet_size)
                    .unwrap_or(u32::MAX),
            };
            c
        }
        Ok(Err(FirstPacketError::Closed)) => return None, // a port check: nothing to report
        other => {
            let refusal = match other {
                Err(_) => Refusal::NoConnect(shared.connect_timeout),
                Ok(Err(FirstPacketError::Decode(DecodeError::UnsupportedLevel(level)))) => {
                    Refusal::UnsupportedLevel(level)
                }
                Ok(Err(FirstPacketError::Decode(e))) => Refusal::BadConnect(e),
                Ok(Err(FirstPacketError::Tls)) => Refusal::TlsOnPlainPort,
                _ => Refusal::NotConnect,
            };
            return refuse(&mut wr, &mut wire, shared, peer, None, refusal).await;
        }
    };
    let username = match check_connect(&connect, shared, peer).await {
        Ok(username) => username,
        Err(refusal) => {
            let id = Some(connect.client_id.as_str());
            return refuse(&mut wr, &mut wire, shared, peer, id, refusal).await;
        }
    };

    let (tx, rx) = outbox::channel(shared.limits.channel_capacity());
    let keep_alive = connect.keep_alive;
    let mut limits = shared.limits;
    // An MQTT 5 client says how many unacknowledged QoS 1/2 messages it takes at once.
    if let Some(v5) = &connect.v5 {
        limits.max_inflight = limits.max_inflight.min(v5.receive_maximum as usize);
        if let Some(max) = v5.max_packet_size {
            limits.max_packet_out = max as usize;
        }
    }
    let session_expiry = connect.v5.as_ref().map(|v| v.session_expiry);
    let alias_max = connect
        .v5
        .as_ref()
        .filter(|_| shared.send_topic_aliases)
        .map_or(0, |v| v.topic_alias_maximum);
    let request = ConnectRequest {
        conn,
        // The tap's copy, made when CONNECT was decoded: one allocation per client id.
        client_id: wire.tap.client_id().clone(),
        clean_session: connect.clean_session,
        keep_alive,
        will: connect.will,
        username,
        peer: wire.tap.peer().clone(),
        level: connect.level,
        session_expiry,
        v5: connect.v5.as_ref().map(|v| {
            Box::new(V5Settings {
                session_expiry: v.session_expiry,
                receive_maximum: v.receive_maximum,
                topic_alias_maximum: v.topic_alias_maximum,
                max_packet_size: v.max_packet_size,
            })
        }),
        tx,
        limits,
    };
    if shared
        .router
        .send(ToRouter::Connect(Box::new(request)))
        .await
        .is_err()
    {
        return None; // shutting down
    }
    let link = Link {
        conn,
        keep_alive,
        shared: shared_arc.clone(),
        _permit: permit,
        rd,
        wr,
        wire,
        rx,
        // The CONNACK is the router's to send.
        owed: 1,
        answered: 0,
        deferred: VecDeque::new(),
        held: false,
        durable: shared.durable.clone(),
        waiting: None,
        durable_wait: None,
        v5: session_expiry.map(|expiry| {
            Box::new(LinkV5 {
                expiry_was_zero: expiry == 0,
                aliases_out: (alias_max > 0).then(|| topic_alias::Outbound::new(alias_max)),
                ..LinkV5::default()
            })
        }),
        parker,
    };
    Some(link)
}

/// Turns a connection away: the CONNACK its refusal calls for (if any), then `report_refusal`.
async fn refuse<T, W: AsyncWrite + Unpin>(
    wr: &mut W,
    wire: &mut Wire,
    shared: &Shared,
    peer: Peer,
    client_id: Option<&str>,
    reason: Refusal,
) -> Option<T> {
    if let Some(code) = reason.code() {
        wire.encode(Outgoing::ConnAck {
            session_present: false,
            code,
            v5: None,
        });
        if wr.write_all(&wire.wbuf).await.is_ok() {
            let _ = wr.flush().await;
        }
    }
    wire.tap.closed(&reason);
    report_refusal(shared, peer, client_id, reason).await;
    None
}

/// Logs a connection turned away (at CONNECT, or before it could speak MQTT: a failed TLS
/// handshake or WebSocket upgrade) and tells the router, for its counters and the window.
pub(crate) async fn report_refusal(
    shared: &Shared,
    peer: Peer,
    client_id: Option<&str>,
    reason: Refusal,
) {
    match &reason {
        Refusal::NoConnect(_)
        | Refusal::UnsupportedLevel(_)
        | Refusal::IdentifierRejected
        | Refusal::ReservedId(_) => {
            info!(%peer, %reason, "closing")
        }
        Refusal::BadCredentials { .. } | Refusal::NotAuthorized | Refusal::BadAuthMethod(_) => {
            info!(%peer, client_id, %reason, "refused")
        }
        Refusal::Busy { .. } => warn!(%peer, client_id, %reason, "refused"),
        Refusal::NotConnect
        | Refusal::TlsOnPlainPort
        | Refusal::BadConnect(_)
        | Refusal::Upgrade(_)
        | Refusal::Tls(_) => warn!(%peer, %reason, "closing"),
    }
    let msg = ToRouter::Refused {
        peer,
        client_id: client_id.filter(|c| !c.is_empty()).map(str::to_owned),
        reason,
    };
    let _ = shared.router.send(msg).await;
}

enum FirstPacketError {
    Closed,
    NotConnect,
    /// A TLS ClientHello record (0x16 0x03 ...): a TLS client at the plain port.
    Tls,
    Decode(DecodeError),
}

async fn read_first_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    wire: &mut Wire,
    shared: &Shared,
) -> Result<Packet, FirstPacketError> {
    loop {
        // Known from the first byte: no need to wait for the rest of something that is not
        // a CONNECT (an HTTP request, say).
        if wire.rbuf.first().is_some_and(|b| b >> 4 != 1) {
            return Err(FirstPacketError::NotConnect);
        }
        if wire.rbuf.starts_with(&[0x16, 0x03]) {
            return Err(FirstPacketError::Tls);
        }
        match wire.decode(shared.max_packet_size) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(FirstPacketError::Decode(e)),
        }
        wire.rbuf.reserve(READ_CHUNK_MIN);
        match rd.read_buf(&mut wire.rbuf).await {
            Ok(0) | Err(_) => return Err(FirstPacketError::Closed),
            Ok(n) => stats::add(&shared.stats.bytes_received, n as u64),
        }
    }
}

/// The checks on a parsed CONNECT that can refuse it: client id rules, then the login. Passed,
/// the user it logged in as: its user name, whether the client gave that or its e-mail (rules
/// and `%u` go by user name).
async fn check_connect(
    c: &Connect,
    shared: &Shared,
    peer: Peer,
) -> Result<Option<String>, Refusal> {
    // MQTT 5 lets a client with no id keep a session too: it is told the id it was given.
    if c.client_id.is_empty() && (c.level == 3 || (c.level == 4 && !c.clean_session)) {
        return Err(Refusal::IdentifierRejected);
    }
    if super::inproc::reserved_client_id(&c.client_id) {
        return Err(Refusal::ReservedId(c.client_id.clone()));
    }
    if let Some(method) = c.v5.as_ref().and_then(|v| v.auth_method.as_ref()) {
        return Err(Refusal::BadAuthMethod(method.clone()));
    }
    let users = shared.users.borrow().clone();
    let check = match &c.username {
        None => users.check_login(None, None, &mut Default::default()), // no hashing
        Some(user) => {
            let password = c.password.clone().unwrap_or_default();
            let checked = shared
                .logins
                .check(users, user.clone(), password, peer.addr.ip())
                .await;
            match checked {
                Ok(check) => check,
                Err(busy) => {
                    return Err(Refusal::Busy {
                        waiting: busy.waiting,
                    });
                }
            }
        }
    };
    match check {
        LoginCheck::Accepted(user) => Ok(user),
        LoginCheck::BadCredentials => Err(Refusal::BadCredentials {
            user: c.username.clone().unwrap_or_default(),
        }),
        LoginCheck::NotAuthorized => Err(Refusal::NotAuthorized),
    }
}

/// Writes what the buffer holds, or, once it is empty, flushes the stream: a stream with a
/// buffer of its own (a WebSocket's frames) sends what it holds; for TCP that is done at once.
/// `Some(n)` for a write, `None` for a flush. Cancel-safe: a poll writes and takes what it
/// wrote off the buffer at once, or waits having done nothing. A `poll_fn` rather than an
/// `async fn`: every branch of `run`'s `select!` is kept in the idle connection's task, and
/// this way it is two references.
fn write_or_flush<'a, W: AsyncWrite + Unpin>(
    wr: &'a mut W,
    wbuf: &'a mut BytesMut,
) -> impl Future<Output = std::io::Result<Option<usize>>> + 'a {
    std::future::poll_fn(move |cx| {
        let wr = std::pin::Pin::new(&mut *wr);
        if wbuf.is_empty() {
            wr.poll_flush(cx).map_ok(|()| None)
        } else {
            let n = std::task::ready!(wr.poll_write(cx, &wbuf[..]))?;
            bytes::Buf::advance(wbuf, n);
            std::task::Poll::Ready(Ok(Some(n)))
        }
    })
}

/// Reads what the stream has into `buf`; with `on_stack`, through a buffer on the stack,
/// copied into `buf` (allocated then, to the size read) only when something came. An idle
/// connection then holds no read buffer while it waits. Cancel-safe: a read either waits
/// having taken nothing or is copied in the same poll. A `poll_fn`, as `write_or_flush`.
fn read_some<'a, R: AsyncRead + Unpin>(
    rd: &'a mut R,
    buf: &'a mut BytesMut,
    on_stack: bool,
) -> impl Future<Output = std::io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        if !on_stack {
            // `read_buf` keeps nothing between polls: one made for each poll is the same.
            return std::pin::pin!(rd.read_buf(&mut *buf)).poll(cx);
        }
        let mut stack = [0u8; READ_CHUNK_MIN];
        let mut read = tokio::io::ReadBuf::new(&mut stack);
        std::task::ready!(std::pin::Pin::new(&mut *rd).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        std::task::Poll::Ready(Ok(read.filled().len()))
    })
}

/// How long a client may stay silent: 1.5 x keepalive (3.1.1 section 3.1.2.10); 0 turns the
/// timer off. Worked out when needed rather than kept: the loop's every byte is in each busy
/// connection's task.
fn keepalive_limit(keep_alive: u16) -> Option<Duration> {
    (keep_alive > 0).then(|| Duration::from_millis(keep_alive as u64 * 1500))
}

/// A wait for the store, boxed: persistence only, and rare enough that an idle connection
/// should not carry room for it.
type DurableWait = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Waits until the store has made `epoch` durable; false if the store is gone. The wait lives
/// in `slot` from its first poll until it is done, so that a `select!` that drops this future
/// for another branch loses nothing. A `poll_fn`, as `write_or_flush`.
fn durable_reached_in<'a>(
    slot: &'a mut Option<DurableWait>,
    durable: &'a Option<watch::Receiver<u64>>,
    epoch: Option<u64>,
) -> impl Future<Output = bool> + 'a {
    std::future::poll_fn(move |cx| {
        let wait = slot.get_or_insert_with(|| {
            let mut durable = durable.clone();
            Box::pin(async move { durable_reached(&mut durable, epoch).await })
        });
        let reached = std::task::ready!(wait.as_mut().poll(cx));
        *slot = None;
        std::task::Poll::Ready(reached)
    })
}

/// Waits until the store has made `epoch` durable; false if the store is gone.
async fn durable_reached(durable: &mut Option<watch::Receiver<u64>>, epoch: Option<u64>) -> bool {
    match (durable, epoch) {
        (Some(d), Some(epoch)) => d.wait_for(|&e| e >= epoch).await.is_ok(),
        _ => true,
    }
}

/// A connected client's stream halves, buffers and the router's channel to it.
struct Link<R: 'static, W: 'static> {
    conn: ConnId,
    keep_alive: u16,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    rd: R,
    wr: W,
    wire: Wire,
    rx: outbox::Receiver<Outbound>,
    /// Packets passed to the router that it answers (CONNECT, SUBSCRIBE, UNSUBSCRIBE), and how
    /// many of those answers have been written.
    owed: u64,
    answered: u64,
    /// Answers made here while the router still owed an earlier one, each with the number of
    /// the router's answers that must go out before it.
    deferred: VecDeque<(u64, Outgoing<'static>)>,
    /// A subscriber this client publishes to is over its high-water mark: nothing is read
    /// from the client (its messages wait in the socket) until the router lets go.
    held: bool,
    /// With persistence: the store's last durable epoch, and the epoch what comes next from
    /// the router waits for (nothing more from it is taken meanwhile, so that what follows
    /// stays behind), with whether that wait is one of the router's answers (`Acks`) or only a
    /// barrier (`After`).
    durable: Option<watch::Receiver<u64>>,
    waiting: Option<(u64, bool)>,
    /// The wait for `waiting`'s epoch, while `run` waits for it.
    durable_wait: Option<DurableWait>,
    /// What an MQTT 5 connection keeps beyond a 3.1.1 one: boxed, so that 3.1.1 connections
    /// (most idle ones) pay one pointer for it.
    v5: Option<Box<LinkV5>>,
    /// Plain TCP, when the broker parks quiet connections.
    parker: Option<&'static Parker<R, W>>,
}

/// What a parked connection keeps: its `Link` without the socket, and without what is empty
/// or starts afresh whenever it parks (buffers, answers owed and waiting, a wait for the
/// store, its share of the trace). Some 120 bytes: one of the allocator's size classes.
struct ParkedLink<R: 'static, W: 'static> {
    keep_alive: u16,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    tap: trace::TapId,
    dialect: Dialect,
    aliases_in: Option<Box<topic_alias::Inbound>>,
    rx: outbox::Receiver<Outbound>,
    v5: Option<Box<LinkV5>>,
    parker: &'static Parker<R, W>,
    last_read: Instant,
}

// Kept within the allocator's 128-byte class: every parked connection has one.
const _: () = assert!(
    std::mem::size_of::<ParkedLink<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf>>(
    ) <= 128
);

/// How `run` ended.
enum RunEnd {
    Close(CloseReason),
    /// Quiet for the parking lot's while, with nothing in flight: the connection goes there.
    Park {
        last_read: Instant,
    },
}

/// An MQTT 5 connection's own state.
#[derive(Debug, Default)]
struct LinkV5 {
    /// The reasons of the acknowledgements `waiting` releases, where not a success.
    codes: Option<Box<[(AckKind, u16, Reason)]>>,
    /// The CONNECT's Session Expiry Interval was 0, which DISCONNECT may not change.
    expiry_was_zero: bool,
    /// The Session Expiry Interval the client's DISCONNECT set.
    disconnect_expiry: Option<u32>,
    /// The topic aliases the broker sets for the client.
    aliases_out: Option<topic_alias::Outbound>,
}

/// What reading a batch of packets led to.
enum ReadOutcome {
    Continue,
    Close(CloseReason),
}

impl<R, W> Link<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Serves the connection until it closes, or, with a parker, until it has been quiet for the
    /// parking lot's while with nothing in flight. `last_read`: when the client last said
    /// something (before the lot, for a connection back from it).
    async fn run(&mut self, mut last_read: Instant) -> RunEnd {
        // One timer for the keepalive and for parking: whichever is due first.
        let park_after = self
            .parker
            .and(self.shared.parking.as_ref())
            .filter(|lot| !lot.is_closed())
            .map(|lot| lot.after);
        let mut last_busy = Instant::now();
        let due = |last_read: Instant, last_busy: Instant, limit: Option<Duration>| {
            let keepalive = limit.map_or(last_busy + NO_KEEPALIVE, |l| last_read + l);
            park_after.map_or(keepalive, |p| keepalive.min(last_busy + p))
        };
        let timer =
            tokio::time::sleep_until(due(last_read, last_busy, keepalive_limit(self.keep_alive)));
        tokio::pin!(timer);
        let mut chunk = READ_CHUNK_MIN;
        let mut unflushed = false;
        // What came in the same read as CONNECT is handled now, not at the next read.
        if !self.wire.rbuf.is_empty()
            && let ReadOutcome::Close(reason) = Box::pin(self.on_read()).await
        {
            return RunEnd::Close(reason);
        }
        loop {
            let room = self.wire.wbuf.len() < WRITE_HIGH_WATER;
            let take_more = room
                && !self.held
                && self.owed - self.answered < MAX_OWED
                && self.deferred.len() < MAX_DEFERRED;
            // A client that says little holds no read buffer between its packets: it is
            // waited on with one on the stack (see `read_some`).
            if self.wire.rbuf.is_empty() && chunk == READ_CHUNK_MIN {
                self.wire.rbuf = BytesMut::new();
            }
            let on_stack = self.wire.rbuf.capacity() == 0 && chunk == READ_CHUNK_MIN;
            if !on_stack && self.wire.rbuf.capacity() - self.wire.rbuf.len() < chunk / 2 {
                self.wire.rbuf.reserve(chunk);
            }
            let spare = if on_stack {
                READ_CHUNK_MIN
            } else {
                self.wire.rbuf.capacity() - self.wire.rbuf.len()
            };
            tokio::select! {
                res = read_some(&mut self.rd, &mut self.wire.rbuf, on_stack), if take_more => {
                    match res {
                        Ok(0) => return RunEnd::Close(CloseReason::SocketClosed),
                        Err(e) => return RunEnd::Close(CloseReason::SocketError(e.kind())),
                        Ok(n) => {
                            stats::add(&self.shared.stats.bytes_received, n as u64);
                            last_read = Instant::now();
                            last_busy = last_read;
                            chunk = if n == spare {
                                (chunk * 2).min(READ_CHUNK_MAX)
                            } else if n < chunk / 8 {
                                (chunk / 2).max(READ_CHUNK_MIN)
                            } else {
                                chunk
                            };
                            // Boxed: the send to the router is the largest state of this loop, and keeping it
                            // out of line keeps every idle connection's task small.
                            if let ReadOutcome::Close(reason) = Box::pin(self.on_read()).await {
                                return RunEnd::Close(reason);
                            }
                        }
                    }
                }
                reached = durable_reached_in(&mut self.durable_wait, &self.durable, self.waiting.map(|w| w.0)), if self.waiting.is_some() => {
                    if !reached {
                        return RunEnd::Close(CloseReason::ServerShutdown);
                    }
                    if let Some((_, true)) = self.waiting.take() {
                        self.router_answered();
                    }
                }
                out = std::future::poll_fn(|cx| self.rx.poll_recv(cx)), if room && self.waiting.is_none() => {
                    let Some(out) = out else {
                        return RunEnd::Close(CloseReason::ServerShutdown);
                    };
                    last_busy = Instant::now();
                    if let Some(reason) = self.on_outbound(out) {
                        return RunEnd::Close(reason);
                    }
                    // Boxed for the same reason as the read path: rare, and large.
                    let capacity = self.shared.limits.channel_capacity();
                    if self.rx.room_regained(capacity)
                        && Box::pin(self.notify_room()).await.is_err()
                    {
                        return RunEnd::Close(CloseReason::ServerShutdown);
                    }
                }
                res = write_or_flush(&mut self.wr, &mut self.wire.wbuf), if !self.wire.wbuf.is_empty() || unflushed => {
                    match res {
                        Ok(Some(n)) => {
                            stats::add(&self.shared.stats.bytes_sent, n as u64);
                            unflushed = self.wire.flushes;
                            if self.wire.wbuf.is_empty() && self.wire.wbuf.capacity() > 4 * WRITE_HIGH_WATER {
                                self.wire.wbuf = BytesMut::new(); // give a burst's memory back
                            }
                        }
                        Ok(None) => unflushed = false,
                        Err(e) => return RunEnd::Close(CloseReason::SocketError(e.kind())),
                    }
                }
                () = &mut timer, if self.keep_alive > 0 || park_after.is_some() => {
                    let now = Instant::now();
                    let limit = keepalive_limit(self.keep_alive);
                    // Held back, the client's packets wait unread: it is not silent.
                    if self.held {
                        last_read = now;
                    }
                    if limit.is_some_and(|l| now - last_read >= l) {
                        return RunEnd::Close(CloseReason::KeepaliveTimeout);
                    }
                    if park_after.is_some_and(|p| now - last_busy >= p) {
                        if self.quiet(unflushed) {
                            return RunEnd::Park { last_read };
                        }
                        last_busy = now;
                    }
                    timer.as_mut().reset(due(last_read, last_busy, limit));
                }
            }
        }
    }

    /// Nothing is on its way in either direction, nor owed: the connection may park.
    fn quiet(&self, unflushed: bool) -> bool {
        self.wire.rbuf.is_empty()
            && self.wire.wbuf.is_empty()
            && !unflushed
            && self.owed == self.answered
            && self.deferred.is_empty()
            && self.waiting.is_none()
            && !self.held
            && self.rx.len() == 0
            && !self.rx.is_closed()
    }

    /// Hands the socket and the connection's state to the parking lot; its task ends here.
    fn park(self, last_read: Instant) {
        let (Some(parker), Some(lot)) = (self.parker, self.shared.parking.clone()) else {
            unreachable!("`run` parks only with a parker and a lot");
        };
        let parked = ParkedLink {
            keep_alive: self.keep_alive,
            shared: self.shared,
            permit: self._permit,
            tap: self.wire.tap.park(),
            dialect: self.wire.dialect,
            aliases_in: self.wire.aliases_in,
            rx: self.rx,
            v5: self.v5,
            parker,
            last_read,
        };
        match (parker.unsplit)(self.rd, self.wr) {
            Ok(stream) => {
                if let Err((stream, parked)) = lot.park(stream, Box::new(parked)) {
                    parked.resume(stream);
                }
            }
            Err(e) => {
                tokio::spawn(parked.lost(e));
            }
        }
    }

    /// Decodes every whole packet in the read buffer, answers what it can, and forwards the
    /// rest to the router in one message.
    async fn on_read(&mut self) -> ReadOutcome {
        // The router let go of this connection (kicked, taken over, shutting down) and its
        // Close may not have fit in the channel: acknowledge nothing more that it would drop.
        if self.rx.is_closed() {
            let mut reason = CloseReason::ServerShutdown;
            while let Ok(out) = self.rx.try_recv() {
                if let Outbound::Close(r) = out {
                    reason = *r;
                }
            }
            return ReadOutcome::Close(reason);
        }
        let mut packets = Vec::new();
        let mut received = 0u64;
        let mut publishes = 0u64;
        let mut outcome = ReadOutcome::Continue;
        // With persistence, acknowledgements wait for the router's word on when what their
        // packets changed is on disk: one `Acks` per run of such packets, counted as one of its
        // answers (the router counts them the same way).
        // MQTT 5 acknowledgements carry the router's verdict (a topic not on the list, say):
        // they wait for its word in the same way.
        let durable = self.durable.is_some() || self.wire.dialect.is_v5();
        let mut acks_open = false;
        let hold_acks = |link: &mut Self, open: &mut bool| {
            if durable && !*open {
                link.owed += 1;
                *open = true;
            }
        };
        loop {
            let packet = match self.wire.decode(self.shared.max_packet_size) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    let violation = Violation::Decode(e);
                    outcome = ReadOutcome::Close(CloseReason::ProtocolError(violation));
                    break;
                }
            };
            received += 1;
            match packet {
                Packet::Publish(p) => {
                    publishes += 1;
                    if p.qos != QoS::AtMostOnce {
                        hold_acks(self, &mut acks_open);
                    }
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => self.answer(Outgoing::PubAck(p.pkid)),
                        QoS::ExactlyOnce => self.answer(Outgoing::PubRec(p.pkid)),
                    }
                    packets.push(Inbound::Publish(p));
                }
                Packet::PubAck(id) => packets.push(Inbound::PubAck(id)),
                Packet::PubRec(id) => {
                    hold_acks(self, &mut acks_open);
                    self.answer(Outgoing::PubRel(id));
                    packets.push(Inbound::PubRec(id));
                }
                Packet::PubRel(id) => {
                    hold_acks(self, &mut acks_open);
                    self.answer(Outgoing::PubComp(id));
                    packets.push(Inbound::PubRel(id));
                }
                Packet::PubComp(id) => packets.push(Inbound::PubComp(id)),
                // The client did not take the message: the exchange ends without PUBREL.
                Packet::PubRecRefused(id, _) => packets.push(Inbound::PubComp(id)),
                Packet::Subscribe { pkid, filters } => {
                    acks_open = false;
                    self.owed += 1;
                    packets.push(Inbound::Subscribe { pkid, filters })
                }
                Packet::Unsubscribe { pkid, filters } => {
                    acks_open = false;
                    self.owed += 1;
                    packets.push(Inbound::Unsubscribe { pkid, filters })
                }
                Packet::PingReq => self.answer(Outgoing::PingResp),
                Packet::Disconnect(d) => {
                    let reason = if d.session_expiry.is_some_and(|e| e > 0)
                        && self.v5.as_ref().is_some_and(|v| v.expiry_was_zero)
                    {
                        let e = DecodeError::Protocol(
                            "DISCONNECT sets a Session Expiry Interval after CONNECT's 0".into(),
                        );
                        CloseReason::ProtocolError(Violation::Decode(e))
                    } else {
                        // Refused above, a change of expiry is not taken.
                        if let Some(v5) = self.v5.as_mut() {
                            v5.disconnect_expiry = d.session_expiry;
                        }
                        if d.reason == Reason::DISCONNECT_WITH_WILL {
                            CloseReason::ClientDisconnectedWithWill
                        } else {
                            CloseReason::ClientDisconnected
                        }
                    };
                    outcome = ReadOutcome::Close(reason);
                    break;
                }
                Packet::Auth(_) => {
                    let e = DecodeError::Protocol(
                        "AUTH without an Authentication Method in CONNECT".into(),
                    );
                    outcome = ReadOutcome::Close(CloseReason::ProtocolError(Violation::Decode(e)));
                    break;
                }
                Packet::Connect(_) => {
                    let violation = Violation::SecondConnect;
                    outcome = ReadOutcome::Close(CloseReason::ProtocolError(violation));
                    break;
                }
            }
        }
        let s = &self.shared.stats;
        stats::add(&s.packets_received, received);
        stats::add(&s.publish_received, publishes);
        // What came before a fault or DISCONNECT still counts: route it first.
        if !packets.is_empty() {
            let msg = ToRouter::Packets {
                conn: self.conn,
                packets,
            };
            if self.shared.router.send(msg).await.is_err() {
                return ReadOutcome::Close(CloseReason::ServerShutdown);
            }
            // Let the router (just woken, likely on this thread) deliver the messages before
            // this task spends a write on their acknowledgements: subscribers first, as a
            // single-threaded broker would.
            if publishes > 0 {
                tokio::task::yield_now().await;
            }
        }
        outcome
    }

    /// Writes an answer made here, or holds it until the router's earlier answers are out.
    fn answer(&mut self, packet: Outgoing<'static>) {
        if self.answered == self.owed {
            self.wire.encode(packet);
        } else {
            self.deferred.push_back((self.owed, packet));
        }
    }

    /// One more of the router's answers is written: the answers made here that waited for it
    /// follow.
    fn router_answered(&mut self) {
        self.answered += 1;
        // MQTT 5: the acknowledgements this answer releases get the router's reasons.
        if let Some(codes) = self.v5.as_mut().and_then(|v| v.codes.take()) {
            for (after, packet) in self.deferred.iter_mut() {
                if *after != self.answered {
                    continue;
                }
                let (kind, id) = match *packet {
                    Outgoing::PubAck(id) => (AckKind::PubAck, id),
                    Outgoing::PubRec(id) => (AckKind::PubRec, id),
                    Outgoing::PubRel(id) => (AckKind::PubRel, id),
                    Outgoing::PubComp(id) => (AckKind::PubComp, id),
                    _ => continue,
                };
                if let Some(&(_, _, reason)) = codes.iter().find(|&&(k, i, _)| k == kind && i == id)
                {
                    *packet = Outgoing::AckWith {
                        kind,
                        pkid: id,
                        reason,
                    };
                }
            }
        }
        while let Some(&(after, packet)) = self.deferred.front() {
            if after > self.answered {
                break;
            }
            self.deferred.pop_front();
            self.wire.encode(packet);
        }
    }

    /// Encodes what the router sent, and whatever else is already waiting, into the write
    /// buffer. Returns a reason if the router asked to close.
    fn on_outbound(&mut self, first: Outbound) -> Option<CloseReason> {
        let mut sent = 0u64;
        let mut publishes = 0u64;
        let mut next = Some(first);
        let mut close = None;
        while let Some(out) = next {
            sent += 1;
            match out {
                Outbound::Publish(p) => {
                    publishes += 1;
                    let aliases = self.v5.as_mut().and_then(|v| v.aliases_out.as_mut());
                    let (alias, alias_only) = match aliases {
                        Some(a) => {
                            let max = self.wire.dialect.max_packet as usize;
                            let (topic, payload) = (&p.msg.topic, p.msg.payload.len());
                            let props = p.msg.props.as_deref();
                            let ids = &p.msg.sub_ids;
                            a.alias_for(topic, |alias_only| {
                                let sent = if alias_only { "" } else { &**topic };
                                let len = codec_v5::publish_len_aliased(
                                    sent, payload, p.qos, props, ids, true,
                                );
                                len <= max
                            })
                        }
                        None => (0, false),
                    };
                    self.wire.encode(p.outgoing(alias, alias_only));
                }
                Outbound::ConnAck {
                    session_present,
                    assigned_id,
                } => {
                    let v5 = self.wire.dialect.is_v5().then(|| ConnAckV5 {
                        assigned_id: assigned_id.as_deref(),
                        max_packet_size: self.shared.max_packet_size.min(u32::MAX as usize) as u32,
                        topic_alias_maximum: self.shared.max_topic_alias,
                    });
                    self.wire.encode(Outgoing::ConnAck {
                        session_present,
                        code: ConnectCode::Accepted,
                        v5,
                    });
                    self.router_answered();
                }
                Outbound::PubRel(id) => self.wire.encode(Outgoing::PubRel(id)),
                Outbound::SubAck { pkid, codes } => {
                    self.wire.encode(Outgoing::SubAck {
                        pkid,
                        codes: &codes,
                    });
                    self.router_answered();
                }
                Outbound::UnsubAck { pkid, codes } => {
                    self.wire.encode(Outgoing::UnsubAck {
                        pkid,
                        codes: &codes,
                    });
                    self.router_answered();
                }
                Outbound::Hold(held) => {
                    sent -= 1; // not a packet
                    self.held = held;
                }
                Outbound::Acks(epoch) | Outbound::After(epoch) | Outbound::AcksWith(epoch, _) => {
                    sent -= 1;
                    let answers = !matches!(out, Outbound::After(_));
                    if let Outbound::AcksWith(_, codes) = out {
                        self.v5.get_or_insert_default().codes = Some(codes);
                    }
                    if epoch == 0 || self.durable.as_ref().is_none_or(|d| *d.borrow() >= epoch) {
                        if answers {
                            self.router_answered();
                        }
                    } else {
                        // Nothing after it may overtake it.
                        self.waiting = Some((epoch, answers));
                        break;
                    }
                }
                Outbound::Close(reason) => {
                    close = Some(*reason);
                    break;
                }
            }
            next = if self.wire.wbuf.len() < WRITE_HIGH_WATER {
                self.rx.try_recv().ok()
            } else {
                None
            };
        }
        let s = &self.shared.stats;
        stats::add(&s.packets_sent, sent);
        stats::add(&s.publish_sent, publishes);
        close
    }

    /// Tells the router that the channel it found full has drained to half
    /// (`outbox::Receiver::room_regained`), so it sends the messages it queued meanwhile.
    async fn notify_room(&mut self) -> Result<(), ()> {
        let msg = ToRouter::Writable { conn: self.conn };
        self.shared.router.send(msg).await.map_err(|_| ())
    }

    /// Writes the whole write buffer and empties it.
    async fn write_out(&mut self) -> std::io::Result<()> {
        if !self.wire.wbuf.is_empty() {
            self.wr.write_all(&self.wire.wbuf).await?;
            stats::add(&self.shared.stats.bytes_sent, self.wire.wbuf.len() as u64);
            self.wire.wbuf.clear();
        }
        Ok(())
    }

    /// After `run`: logs the ending, tells the router, says what is left to say and closes.
    async fn close(&mut self, reason: CloseReason) {
        let (client_id, peer) = (self.wire.tap.client_id().clone(), **self.wire.tap.peer());
        match &reason {
            CloseReason::ProtocolError(_) | CloseReason::SocketError(_) => {
                warn!(client_id = &*client_id, %peer, %reason, "closing connection")
            }
            _ => debug!(client_id = &*client_id, %peer, %reason, "connection ended"),
        }
        // A client that said goodbye, or sent a bad packet, after packets the router is still
        // answering gets those answers first; one whose socket is gone has no use for them.
        let answer = matches!(
            reason,
            CloseReason::ClientDisconnected
                | CloseReason::ClientDisconnectedWithWill
                | CloseReason::ProtocolError(_)
        );
        // The trace's close mark goes after the last answers the client is still sent.
        let mark = reason.to_string();
        let conn = self.conn;
        let goodbye = reason
            .disconnect_reason()
            .filter(|_| self.wire.dialect.is_v5());
        let session_expiry = self.v5.as_ref().and_then(|v| v.disconnect_expiry);
        let _ = self
            .shared
            .router
            .send(ToRouter::Closed {
                conn,
                reason,
                session_expiry,
            })
            .await;
        self.durable_wait = None;
        self.flush_and_close(answer, goodbye).await;
        self.wire.tap.closed(&mark);
    }

    /// Writes out what is buffered (briefly: the client may not be reading) and closes. With
    /// `answer`, first waits for the router's answers to packets it was sent (the router has been
    /// told of the close, so the channel ends once they are in it).
    async fn flush_and_close(&mut self, answer: bool, goodbye: Option<Reason>) {
        let flush = async {
            while answer && self.answered < self.owed {
                if let Some((epoch, answers)) = self.waiting.take() {
                    if !durable_reached(&mut self.durable, Some(epoch)).await {
                        break;
                    }
                    if answers {
                        self.router_answered();
                    }
                    continue;
                }
                let Some(out) = self.rx.recv().await else {
                    break;
                };
                if self.on_outbound(out).is_some() {
                    break;
                }
                // Written as it goes: what waits ahead of an answer may be a channel of
                // large messages.
                if self.wire.wbuf.len() >= WRITE_HIGH_WATER {
                    self.write_out().await?;
                }
            }
            // MQTT 5: the server says why it closes, last.
            if let Some(reason) = goodbye {
                self.wire.encode(Outgoing::Disconnect(reason));
            }
            self.write_out().await?;
            self.wr.shutdown().await
        };
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, flush).await;
    }
}

impl<R, W> ParkedLink<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// The connection's `Link` again, on `rd` and `wr`.
    fn into_link(self, rd: R, wr: W) -> Link<R, W> {
        Link {
            conn: self.tap.conn(),
            keep_alive: self.keep_alive,
            durable: self.shared.durable.clone(),
            shared: self.shared,
            _permit: self.permit,
            rd,
            wr,
            wire: Wire {
                rbuf: BytesMut::new(),
                wbuf: BytesMut::new(),
                flushes: false, // only plain TCP parks
                tap: trace::Tap::resume(self.tap),
                dialect: self.dialect,
                aliases_in: self.aliases_in,
            },
            rx: self.rx,
            owed: 0,
            answered: 0,
            deferred: VecDeque::new(),
            held: false,
            waiting: None,
            durable_wait: None,
            v5: self.v5,
            parker: Some(self.parker),
        }
    }

    /// The socket could not be handed to the lot or taken back from it: the connection is
    /// gone, and the router hears so as from any connection that ends.
    async fn lost(self, e: std::io::Error) {
        let conn = self.tap.conn();
        let mut tap = trace::Tap::resume(self.tap);
        let reason = CloseReason::SocketError(e.kind());
        let peer = **tap.peer();
        warn!(client_id = &**tap.client_id(), %peer, %reason, "closing connection");
        let mark = reason.to_string();
        let session_expiry = self.v5.as_ref().and_then(|v| v.disconnect_expiry);
        let msg = ToRouter::Closed {
            conn,
            reason,
            session_expiry,
        };
        let _ = self.shared.router.send(msg).await;
        tap.closed(&mark);
    }
}

impl<R, W> parking::Parked for ParkedLink<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn poll_outbox(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.rx.poll_ready(cx)
    }

    fn deadline(&self) -> Option<Instant> {
        keepalive_limit(self.keep_alive).map(|limit| self.last_read + limit)
    }

    fn resume(self: Box<Self>, stream: std::net::TcpStream) {
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => {
                let (rd, wr) = (self.parker.split)(stream);
                let last_read = self.last_read;
                tokio::spawn(live(self.into_link(rd, wr), last_read));
            }
            Err(e) => {
                tokio::spawn(self.lost(e));
            }
        }
    }
}
