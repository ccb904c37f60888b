//! One task per client connection: owns the socket, the codec buffers and the keepalive timer.
//!
//! It answers what needs no shared state itself (PUBACK, PUBREC, PUBCOMP, PUBREL, PINGRESP),
//! forwards everything else to the router in one message per read, and writes what the router
//! sends back in batches: many packets per `write`. Answers leave in the order the packets came
//! in: one made here waits behind the router's answer (CONNACK, SUBACK, UNSUBACK) to an earlier
//! packet.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::time::Duration;

use bytes::BytesMut;
use mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::auth::LoginGate;
use super::codec::{self, AckKind, Connect, DecodeError, Packet};
use super::link::{CloseReason, ConnId, ConnectRequest, Inbound, Outbound, ToRouter};
use super::session::Limits;
use super::stats::{self, Stats};
use super::users::{LoginCheck, Users};

/// Bytes waiting to be written before the connection stops reading from the client and from
/// the router: a client that does not read cannot make the broker buffer without limit.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Room made in the read buffer when it runs low: small for the many clients that say little
/// (an idle connection must cost a few kB), doubling up to the largest for a client whose reads
/// keep filling it.
const READ_CHUNK_MIN: usize = 256;
const READ_CHUNK_MAX: usize = 64 * 1024;
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
    pub stats: Arc<Stats>,
    pub limits: Limits,
    pub max_packet_size: usize,
    pub connect_timeout: Duration,
    pub next_conn: AtomicU64,
}

/// CONNACK return codes (MQTT 3.1.1 table 3.1).
mod connack_code {
    pub const UNACCEPTABLE_PROTOCOL: u8 = 0x01;
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    pub const BAD_CREDENTIALS: u8 = 0x04;
    pub const NOT_AUTHORIZED: u8 = 0x05;
}

/// Serves one client from accept to close.
pub(crate) async fn serve(socket: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    // The handshake's state is boxed and freed once it is done: what stays with the task for
    // the connection's life is only what the connected phase needs (an idle connection is
    // mostly this task).
    let Some((mut link, keep_alive, client_id)) =
        Box::pin(handshake(socket, peer, &shared, conn)).await
    else {
        return;
    };
    let reason = link.run(keep_alive).await;
    match &reason {
        CloseReason::ProtocolError(_) | CloseReason::SocketError(_) => {
            warn!(client_id, %peer, %reason, "closing connection")
        }
        _ => debug!(client_id, %peer, %reason, "connection ended"),
    }
    // A client that said goodbye, or sent a bad packet, after packets the router is still
    // answering gets those answers first; one whose socket is gone has no use for them.
    let answer = matches!(
        reason,
        CloseReason::ClientDisconnected | CloseReason::ProtocolError(_)
    );
    let _ = shared.router.send(ToRouter::Closed { conn, reason }).await;
    link.flush_and_close(answer).await;
}

/// Reads and checks CONNECT, logs in, and registers with the router. Returns the connected
/// link, the keepalive and the client id, or None if the client was refused or left.
async fn handshake(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    conn: ConnId,
) -> Option<(Link<'_>, u16, String)> {
    let (mut rd, mut wr) = socket.into_split();
    let mut rbuf = BytesMut::new();
    let first = tokio::time::timeout(
        shared.connect_timeout,
        read_first_packet(&mut rd, &mut rbuf, shared),
    )
    .await;
    let mut wbuf = BytesMut::new();
    let connect = match first {
        Err(_) => {
            let reason = format!("no CONNECT within {:?}", shared.connect_timeout);
            info!(%peer, %reason, "closing");
            return refused(shared, peer, None, reason, false).await;
        }
        // Closed before saying anything: a port check, nothing to report.
        Ok(Err(FirstPacketError::Closed)) => return None,
        Ok(Err(FirstPacketError::Decode(DecodeError::UnsupportedLevel(level)))) => {
            let reason = format!("unsupported protocol level {level}: CONNACK 0x01");
            info!(%peer, %reason, "closing");
            codec::connack(&mut wbuf, false, connack_code::UNACCEPTABLE_PROTOCOL);
            let _ = wr.write_all(&wbuf).await;
            return refused(shared, peer, None, reason, false).await;
        }
        Ok(Err(FirstPacketError::Decode(e))) => {
            let reason = format!("bad CONNECT: {e}");
            warn!(%peer, %reason, "closing");
            return refused(shared, peer, None, reason, false).await;
        }
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(_)) | Ok(Err(FirstPacketError::NotConnect)) => {
            let reason = "protocol error: first packet is not CONNECT";
            warn!(%peer, reason, "closing");
            return refused(shared, peer, None, reason, false).await;
        }
    };

    if let Some((code, reason)) = check_connect(&connect, shared, peer).await {
        codec::connack(&mut wbuf, false, code);
        let _ = wr.write_all(&wbuf).await;
        let login = code == connack_code::BAD_CREDENTIALS || code == connack_code::NOT_AUTHORIZED;
        return refused(shared, peer, Some(&connect.client_id), reason, login).await;
    }

    let (tx, rx) = mpsc::channel(shared.limits.channel_capacity());
    let room_wanted = Arc::new(AtomicBool::new(false));
    let keep_alive = connect.keep_alive;
    let client_id = connect.client_id.clone();
    let request = ConnectRequest {
        conn,
        client_id: connect.client_id,
        clean_session: connect.clean_session,
        keep_alive,
        will: connect.will,
        username: connect.username,
        peer,
        level: connect.level,
        tx,
        room_wanted: room_wanted.clone(),
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
        shared,
        rd,
        wr,
        rbuf,
        wbuf,
        rx,
        room_wanted,
        // The CONNACK is the router's to send.
        owed: 1,
        answered: 0,
        deferred: VecDeque::new(),
    };
    Some((link, keep_alive, client_id))
}

/// Tells the router (for its counters and log) that a connection was turned away.
async fn refused<T>(
    shared: &Shared,
    peer: SocketAddr,
    client_id: Option<&str>,
    reason: impl Into<String>,
    login: bool,
) -> Option<T> {
    let msg = ToRouter::Refused {
        peer,
        client_id: client_id.filter(|c| !c.is_empty()).map(str::to_owned),
        reason: reason.into(),
        login,
    };
    let _ = shared.router.send(msg).await;
    None
}

enum FirstPacketError {
    Closed,
    NotConnect,
    Decode(DecodeError),
}

async fn read_first_packet(
    rd: &mut OwnedReadHalf,
    rbuf: &mut BytesMut,
    shared: &Shared,
) -> Result<Packet, FirstPacketError> {
    loop {
        // Known from the first byte: no need to wait for the rest of something that is not
        // a CONNECT (an HTTP request, say).
        if rbuf.first().is_some_and(|b| b >> 4 != 1) {
            return Err(FirstPacketError::NotConnect);
        }
        match codec::decode(rbuf, shared.max_packet_size) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(FirstPacketError::Decode(e)),
        }
        rbuf.reserve(READ_CHUNK_MIN);
        match rd.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(FirstPacketError::Closed),
            Ok(n) => stats::add(&shared.stats.bytes_received, n as u64),
        }
    }
}

/// The checks on a parsed CONNECT that can refuse it: client id rules, then the login. Returns
/// the CONNACK code to refuse with, or None to accept.
async fn check_connect(c: &Connect, shared: &Shared, peer: SocketAddr) -> Option<(u8, String)> {
    if c.client_id.is_empty() && (c.level == 3 || !c.clean_session) {
        let reason = "empty client id without clean session: CONNACK 0x02";
        info!(%peer, reason, "refused");
        return Some((connack_code::IDENTIFIER_REJECTED, reason.into()));
    }
    let users = shared.users.borrow().clone();
    let check = match &c.username {
        None => users.check_login(None, None, &mut Default::default()), // no hashing
        Some(user) => {
            let password = c.password.clone().unwrap_or_default();
            let checked = shared
                .logins
                .check(users, user.clone(), password, peer.ip())
                .await;
            match checked {
                Ok(check) => check,
                Err(busy) => {
                    let reason = format!(
                        "{} logins already waiting to be checked: CONNACK 0x03 (server unavailable), try again",
                        busy.waiting
                    );
                    warn!(%peer, client_id = c.client_id, %reason, "refused");
                    return Some((connack_code::SERVER_UNAVAILABLE, reason));
                }
            }
        }
    };
    match check {
        LoginCheck::Accepted(_) => None,
        LoginCheck::BadCredentials => {
            let user = c.username.as_deref().unwrap_or("-");
            let reason = format!("bad user name or password for {user:?}: CONNACK 0x04");
            info!(%peer, client_id = c.client_id, %reason, "refused");
            Some((connack_code::BAD_CREDENTIALS, reason))
        }
        LoginCheck::NotAuthorized => {
            let reason = "anonymous login while anonymous logins are off: CONNACK 0x05";
            info!(%peer, client_id = c.client_id, reason, "refused");
            Some((connack_code::NOT_AUTHORIZED, reason.into()))
        }
    }
}

fn encode_local(buf: &mut BytesMut, local: Local) {
    match local {
        Local::Ack(kind, pkid) => codec::ack(buf, kind, pkid),
        Local::PingResp => codec::pingresp(buf),
    }
}

/// A connected client's socket halves, buffers and the router's channel to it.
struct Link<'a> {
    conn: ConnId,
    shared: &'a Shared,
    rd: OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
    rbuf: BytesMut,
    wbuf: BytesMut,
    rx: mpsc::Receiver<Outbound>,
    /// The router found `rx` full and waits to hear that it has room (see `notify_room`).
    room_wanted: Arc<AtomicBool>,
    /// Packets passed to the router that it answers (CONNECT, SUBSCRIBE, UNSUBSCRIBE), and how
    /// many of those answers have been written.
    owed: u64,
    answered: u64,
    /// Answers made here while the router still owed an earlier one, each with the number of
    /// the router's answers that must go out before it.
    deferred: VecDeque<(u64, Local)>,
}

/// An answer the connection makes itself.
#[derive(Debug, Clone, Copy)]
enum Local {
    Ack(AckKind, u16),
    PingResp,
}

/// What reading a batch of packets led to.
enum ReadOutcome {
    Continue,
    Close(CloseReason),
}

impl Link<'_> {
    async fn run(&mut self, keep_alive: u16) -> CloseReason {
        // 1.5 x keepalive (3.1.1 section 3.1.2.10); 0 turns the timer off.
        let limit = (keep_alive > 0).then(|| Duration::from_millis(keep_alive as u64 * 1500));
        let mut last_read = Instant::now();
        let far = Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep(limit.unwrap_or(far));
        tokio::pin!(timer);
        let mut chunk = READ_CHUNK_MIN;
        // What came in the same read as CONNECT is handled now, not at the next read.
        if !self.rbuf.is_empty()
            && let ReadOutcome::Close(reason) = Box::pin(self.on_read()).await
        {
            return reason;
        }
        loop {
            let room = self.wbuf.len() < WRITE_HIGH_WATER;
            let take_more =
                room && self.owed - self.answered < MAX_OWED && self.deferred.len() < MAX_DEFERRED;
            if self.rbuf.capacity() - self.rbuf.len() < chunk / 2 {
                self.rbuf.reserve(chunk);
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            tokio::select! {
                res = self.rd.read_buf(&mut self.rbuf), if take_more => {
                    match res {
                        Ok(0) => return CloseReason::SocketClosed,
                        Err(e) => return CloseReason::SocketError(e.to_string()),
                        Ok(n) => {
                            stats::add(&self.shared.stats.bytes_received, n as u64);
                            last_read = Instant::now();
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
                                return reason;
                            }
                        }
                    }
                }
                out = self.rx.recv(), if room => {
                    let Some(out) = out else {
                        return CloseReason::ServerShutdown;
                    };
                    if let Some(reason) = self.on_outbound(out) {
                        return reason;
                    }
                    // Boxed for the same reason as the read path: rare, and large.
                    if self.room_wanted.load(Ordering::Relaxed)
                        && Box::pin(self.notify_room()).await.is_err()
                    {
                        return CloseReason::ServerShutdown;
                    }
                }
                res = self.wr.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => {
                    match res {
                        Ok(n) => {
                            stats::add(&self.shared.stats.bytes_sent, n as u64);
                            if self.wbuf.is_empty() && self.wbuf.capacity() > 4 * WRITE_HIGH_WATER {
                                self.wbuf = BytesMut::new(); // give a burst's memory back
                            }
                        }
                        Err(e) => return CloseReason::SocketError(e.to_string()),
                    }
                }
                () = &mut timer, if limit.is_some() => {
                    let limit = limit.unwrap_or(far);
                    if last_read.elapsed() >= limit {
                        return CloseReason::KeepaliveTimeout;
                    }
                    timer.as_mut().reset(last_read + limit);
                }
            }
        }
    }

    /// Decodes every whole packet in the read buffer, answers what it can, and forwards the
    /// rest to the router in one message.
    async fn on_read(&mut self) -> ReadOutcome {
        let mut packets = Vec::new();
        let mut received = 0u64;
        let mut publishes = 0u64;
        let mut outcome = ReadOutcome::Continue;
        loop {
            let packet = match codec::decode(&mut self.rbuf, self.shared.max_packet_size) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    outcome = ReadOutcome::Close(CloseReason::ProtocolError(e.to_string()));
                    break;
                }
            };
            received += 1;
            match packet {
                Packet::Publish(p) => {
                    publishes += 1;
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => self.answer(Local::Ack(AckKind::PubAck, p.pkid)),
                        QoS::ExactlyOnce => self.answer(Local::Ack(AckKind::PubRec, p.pkid)),
                    }
                    packets.push(Inbound::Publish(p));
                }
                Packet::PubAck(id) => packets.push(Inbound::PubAck(id)),
                Packet::PubRec(id) => {
                    self.answer(Local::Ack(AckKind::PubRel, id));
                    packets.push(Inbound::PubRec(id));
                }
                Packet::PubRel(id) => {
                    self.answer(Local::Ack(AckKind::PubComp, id));
                    packets.push(Inbound::PubRel(id));
                }
                Packet::PubComp(id) => packets.push(Inbound::PubComp(id)),
                Packet::Subscribe { pkid, filters } => {
                    self.owed += 1;
                    packets.push(Inbound::Subscribe { pkid, filters })
                }
                Packet::Unsubscribe { pkid, filters } => {
                    self.owed += 1;
                    packets.push(Inbound::Unsubscribe { pkid, filters })
                }
                Packet::PingReq => self.answer(Local::PingResp),
                Packet::Disconnect => {
                    outcome = ReadOutcome::Close(CloseReason::ClientDisconnected);
                    break;
                }
                Packet::Connect(_) => {
                    outcome = ReadOutcome::Close(CloseReason::ProtocolError(
                        "second CONNECT on one connection".into(),
                    ));
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
    fn answer(&mut self, local: Local) {
        if self.answered == self.owed {
            encode_local(&mut self.wbuf, local);
        } else {
            self.deferred.push_back((self.owed, local));
        }
    }

    /// One more of the router's answers is written: the answers made here that waited for it
    /// follow.
    fn router_answered(&mut self) {
        self.answered += 1;
        while let Some(&(after, local)) = self.deferred.front() {
            if after > self.answered {
                break;
            }
            self.deferred.pop_front();
            encode_local(&mut self.wbuf, local);
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
                    codec::publish(
                        &mut self.wbuf,
                        &p.msg.topic,
                        &p.msg.payload,
                        p.qos,
                        p.pkid,
                        p.retain,
                        p.dup,
                    );
                }
                Outbound::ConnAck { session_present } => {
                    codec::connack(&mut self.wbuf, session_present, 0);
                    self.router_answered();
                }
                Outbound::PubRel(id) => codec::ack(&mut self.wbuf, AckKind::PubRel, id),
                Outbound::SubAck { pkid, codes } => {
                    codec::suback(&mut self.wbuf, pkid, &codes);
                    self.router_answered();
                }
                Outbound::UnsubAck(pkid) => {
                    codec::unsuback(&mut self.wbuf, pkid);
                    self.router_answered();
                }
                Outbound::Close(reason) => {
                    close = Some(*reason);
                    break;
                }
            }
            next = if self.wbuf.len() < WRITE_HIGH_WATER {
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

    /// Tells the router that the channel it found full has drained to half, so it sends the
    /// messages it queued meanwhile. Paired with `Session::pump`: the router sets the flag and
    /// then looks at the channel again; this task drains and then looks at the flag, so one of
    /// the two always sees the other.
    async fn notify_room(&mut self) -> Result<(), ()> {
        fence(Ordering::SeqCst);
        if !self.room_wanted.load(Ordering::SeqCst)
            || self.rx.len() > self.shared.limits.channel_capacity() / 2
            || !self.room_wanted.swap(false, Ordering::SeqCst)
        {
            return Ok(());
        }
        let msg = ToRouter::Writable { conn: self.conn };
        self.shared.router.send(msg).await.map_err(|_| ())
    }

    /// Writes out what is buffered (briefly: the client may not be reading) and closes. With
    /// `answer`, first waits for the router's answers to packets it was sent (the router has been
    /// told of the close, so the channel ends once they are in it).
    async fn flush_and_close(&mut self, answer: bool) {
        let flush = async {
            while answer && self.answered < self.owed {
                let Some(out) = self.rx.recv().await else {
                    break;
                };
                if self.on_outbound(out).is_some() {
                    break;
                }
            }
            if !self.wbuf.is_empty() {
                self.wr.write_all(&self.wbuf).await?;
                stats::add(&self.shared.stats.bytes_sent, self.wbuf.len() as u64);
            }
            self.wr.shutdown().await
        };
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, flush).await;
    }
}
