//! One client connection: the stream, one read buffer and one write buffer. Packets are appended
//! to the write buffer and go out in one `write` per batch; reads take whatever the stream holds
//! and every complete packet in it is handled before the next read.
//!
//! The stream is plain TCP, TLS (rustls, the certificate checked against `--cafile`), or
//! WebSocket (binary frames, subprotocol `mqtt`) over either; each batch of packets goes out as
//! one TLS write or one binary frame. Plain TCP takes the same path as it always has: the
//! transport is one `match` per read or write.
//!
//! WebSocket: tungstenite makes and checks the upgrade (the key, the answer's accept hash, the
//! subprotocol); the frames are then written and read here, straight from and into the
//! connection's buffers. A load generator shares the machine with the broker it measures, and
//! tungstenite's reads (a zeroed 128 KiB buffer per read, a message allocated per frame) would
//! cost the client more than the broker's WebSocket door costs the broker.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::mqtt::{self, Packet};

pub fn other(msg: impl ToString) -> io::Error {
    io::Error::other(msg.to_string())
}

/// How the bytes travel: `--transport`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Transport {
    /// MQTT over TCP
    Tcp,
    /// MQTT over TLS (mqtts://)
    Tls,
    /// MQTT over WebSocket (ws://HOST:PORT/PATH)
    Ws,
    /// MQTT over WebSocket over TLS (wss://HOST:PORT/PATH)
    Wss,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }
}

/// The transport with what it needs: the TLS client (trusting only the given CA) and the
/// WebSocket path.
#[derive(Clone)]
pub struct Via {
    pub transport: Transport,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    ws_path: String,
}

impl Via {
    pub fn tcp() -> Via {
        Via {
            transport: Transport::Tcp,
            tls: None,
            ws_path: String::new(),
        }
    }

    /// `cafile`: the CA the broker's certificate must chain to (TLS only); `server_name`: the
    /// name it must be valid for.
    pub fn new(
        transport: Transport,
        cafile: Option<&Path>,
        server_name: &str,
        ws_path: &str,
    ) -> io::Result<Via> {
        let tls = if transport.uses_tls() {
            let cafile = cafile.ok_or_else(|| {
                other(format!(
                    "--transport {} needs --cafile (the CA that signed the broker's certificate)",
                    transport.name()
                ))
            })?;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(cafile)
                .map_err(|e| other(format!("{}: {e}", cafile.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| other(format!("{}: {e}", cafile.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| other(format!("{}: {e}", cafile.display())))?;
            }
            if roots.is_empty() {
                return Err(other(format!("{}: no certificate", cafile.display())));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(other)?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(server_name.to_owned())
                .map_err(|e| other(format!("--server-name {server_name}: {e}")))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        if matches!(transport, Transport::Ws | Transport::Wss) && !ws_path.starts_with('/') {
            return Err(other(format!("--ws-path {ws_path}: must start with /")));
        }
        Ok(Via {
            transport,
            tls,
            ws_path: ws_path.to_owned(),
        })
    }
}

/// Who connects and how (the same for every connection of a run).
#[derive(Clone)]
pub struct Login {
    pub addr: SocketAddr,
    pub via: Via,
    pub keepalive: u16,
    pub user: Option<String>,
    pub pass: Option<String>,
    /// Clean session (true), or a persistent one that the broker keeps messages for.
    pub clean: bool,
    /// MQTT 5 (protocol level 5) and what its CONNECT says; None: MQTT 3.1.1 (level 4).
    pub v5: Option<V5>,
}

/// What an MQTT 5 client asks for in CONNECT.
#[derive(Clone, Copy, Debug, Default)]
pub struct V5 {
    /// Topic Alias Maximum (property 0x22): how many aliases the broker may set for the topics
    /// it sends this client; 0 (the property left out): none.
    pub topic_alias_max: u16,
}

/// What an MQTT 5 broker said in CONNACK (its defaults when the property is absent).
#[derive(Clone, Copy, Debug)]
pub struct Server {
    /// Topic Alias Maximum: how many aliases this client may set (0: none).
    pub topic_alias_max: u16,
    /// Receive Maximum: most unacknowledged QoS 1/2 PUBLISHes the broker takes from this client.
    pub receive_max: u16,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            topic_alias_max: 0,
            receive_max: u16::MAX,
        }
    }
}

/// Whatever carries a WebSocket: TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<Ws>),
}

/// A WebSocket client's side of the frames (RFC 6455), after the upgrade: what it sends is
/// masked binary frames, what it reads is the server's unmasked frames, whose data payloads are
/// copied into the connection's read buffer as they arrive (an MQTT packet may span frames, a
/// frame may hold many packets).
struct Ws {
    io: Box<dyn Io>,
    /// Bytes read from the stream, not yet taken apart.
    raw: BytesMut,
    /// Payload bytes of the current data frame still to come.
    left: u64,
    /// The frame being written.
    out: BytesMut,
    /// Pongs owed, sent before the next frame.
    pongs: BytesMut,
    /// Masking keys: a new one per frame.
    seed: u32,
}

impl Ws {
    fn new(io: Box<dyn Io>, chunk: usize) -> Ws {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Ws {
            io,
            raw: BytesMut::with_capacity(chunk),
            left: 0,
            out: BytesMut::new(),
            pongs: BytesMut::new(),
            seed: nanos | 1,
        }
    }

    /// Appends one masked frame to `out`.
    fn frame(&mut self, opcode: u8, payload: &[u8]) {
        // xorshift32: the key need not be secret here, only to change.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        let key = self.seed.to_ne_bytes();
        let out = &mut self.out;
        out.put_u8(0x80 | opcode); // FIN
        let n = payload.len();
        if n < 126 {
            out.put_u8(0x80 | n as u8);
        } else if let Ok(n) = u16::try_from(n) {
            out.put_u8(0x80 | 126);
            out.put_u16(n);
        } else {
            out.put_u8(0x80 | 127);
            out.put_u64(n as u64);
        }
        out.put_slice(&key);
        let start = out.len();
        out.put_slice(payload);
        mask(&mut out[start..], key);
    }

    /// Sends `payload` (if any) as one binary frame, after any pongs owed.
    async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        if !self.pongs.is_empty() {
            let pongs = std::mem::take(&mut self.pongs);
            self.out.put_slice(&pongs);
        }
        if !payload.is_empty() {
            self.frame(0x2, payload);
        }
        self.io.write_all(&self.out).await?;
        self.io.flush().await
    }

    /// A close frame (1000, normal closure), then the end of what this side sends.
    async fn close(&mut self) -> io::Result<()> {
        self.out.clear();
        self.frame(0x8, &1000u16.to_be_bytes());
        self.io.write_all(&self.out).await?;
        self.io.shutdown().await
    }

    /// Reads what the stream has and moves the data frames' payloads into `rbuf`; the number of
    /// payload bytes moved (0 is possible: a read may bring only a header), or an end of stream
    /// (a close frame or the connection's end) as `UnexpectedEof`.
    async fn read(&mut self, rbuf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        self.raw.reserve(chunk);
        if self.io.read_buf(&mut self.raw).await? == 0 {
            return Err(closed());
        }
        self.unframe(rbuf)
    }

    fn unframe(&mut self, rbuf: &mut BytesMut) -> io::Result<usize> {
        let mut moved = 0;
        loop {
            if self.left > 0 {
                let n = self
                    .raw
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                if n == 0 {
                    return Ok(moved);
                }
                rbuf.extend_from_slice(&self.raw[..n]);
                self.raw.advance(n);
                self.left -= n as u64;
                moved += n;
                continue;
            }
            let Some((opcode, header, len)) = frame_header(&self.raw)? else {
                return Ok(moved);
            };
            match opcode {
                // Binary, or the continuation of one: its payload is MQTT's bytes.
                0x0 | 0x2 => {
                    self.raw.advance(header);
                    self.left = len;
                }
                0x1 => return Err(other("a text frame: MQTT over WebSocket is binary")),
                0x8 => return Err(closed()),
                // Ping (answered with the same payload) and pong: whole, at most 125 bytes.
                0x9 | 0xA => {
                    let total = header + len as usize;
                    if self.raw.len() < total {
                        return Ok(moved);
                    }
                    if opcode == 0x9 {
                        let payload = self.raw[header..total].to_vec();
                        let out = std::mem::take(&mut self.out);
                        self.frame(0xA, &payload);
                        self.pongs.put_slice(&self.out);
                        self.out = out;
                    }
                    self.raw.advance(total);
                }
                op => return Err(other(format!("WebSocket frame with opcode {op:#x}"))),
            }
        }
    }
}

/// A server frame's header at the front of `raw`: opcode, header length, payload length; None
/// until all of it is there.
fn frame_header(raw: &[u8]) -> io::Result<Option<(u8, usize, u64)>> {
    let [b0, b1, ..] = *raw else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(other("a masked frame from the server"));
    }
    if b0 & 0x70 != 0 {
        return Err(other("a frame with reserved bits set"));
    }
    let (header, len) = match b1 & 0x7f {
        126 if raw.len() >= 4 => (4, u64::from(u16::from_be_bytes([raw[2], raw[3]]))),
        127 if raw.len() >= 10 => (10, u64::from_be_bytes(raw[2..10].try_into().unwrap())),
        126 | 127 => return Ok(None),
        n => (2, u64::from(n)),
    };
    let opcode = b0 & 0x0f;
    if opcode >= 0x8 && (len > 125 || b0 & 0x80 == 0) {
        return Err(other("a control frame longer than 125 bytes or fragmented"));
    }
    Ok(Some((opcode, header, len)))
}

/// XOR with the 4-byte key, eight bytes at a time.
fn mask(buf: &mut [u8], key: [u8; 4]) {
    let k = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (words, rest) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ k).to_ne_bytes();
    }
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

impl Stream {
    async fn open(login: &Login, chunk: usize) -> io::Result<(Stream, Option<String>)> {
        let tcp = TcpStream::connect(login.addr).await?;
        tcp.set_nodelay(true)?;
        let via = &login.via;
        let (io, tls_info): (Box<dyn Io>, _) = match (&via.tls, via.transport) {
            (None, Transport::Tcp) => return Ok((Stream::Tcp(tcp), None)),
            (Some((connector, name)), t) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                let (_, session) = tls.get_ref();
                let info = format!(
                    "{} {}",
                    session
                        .protocol_version()
                        .map_or("?".into(), |v| format!("{v:?}")),
                    session
                        .negotiated_cipher_suite()
                        .map_or("?".into(), |s| format!("{:?}", s.suite())),
                );
                if t == Transport::Tls {
                    return Ok((Stream::Tls(Box::new(tls)), Some(info)));
                }
                (Box::new(tls), Some(info))
            }
            (None, _) => (Box::new(tcp), None),
        };
        let scheme = if via.transport == Transport::Wss {
            "wss"
        } else {
            "ws"
        };
        let host = match &via.tls {
            Some((_, ServerName::DnsName(n))) => n.as_ref().to_owned(),
            _ => login.addr.ip().to_string(),
        };
        let url = format!("{scheme}://{host}:{}{}", login.addr.port(), via.ws_path);
        let mut request = url.into_client_request().map_err(other)?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        let (ws, _) = tokio_tungstenite::client_async(request, io)
            .await
            .map_err(|e| other(format!("WebSocket upgrade: {e}")))?;
        // Nothing can be buffered past the server's answer: it says nothing more until CONNECT.
        Ok((
            Stream::Ws(Box::new(Ws::new(ws.into_inner(), chunk))),
            tls_info,
        ))
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the broker closed the connection",
    )
}

pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Free space reserved before each read: large for busy clients, small for idle ones.
    chunk: usize,
    /// The TLS version and cipher suite, when there is TLS.
    pub tls_info: Option<String>,
    /// MQTT 5: what the broker's CONNACK said; None: MQTT 3.1.1.
    pub v5: Option<Server>,
}

impl Conn {
    /// Connect (TCP, then TLS and the WebSocket upgrade if asked), CONNECT, and wait for a
    /// CONNACK that accepts.
    pub async fn open(login: &Login, client_id: &str, chunk: usize) -> io::Result<Conn> {
        let (stream, tls_info) = Stream::open(login, chunk).await?;
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(chunk),
            wbuf: BytesMut::with_capacity(chunk.min(1024)),
            chunk,
            tls_info,
            v5: None,
        };
        let (user, pass) = (login.user.as_deref(), login.pass.as_deref());
        let props = login.v5.map(|v5| {
            let mut props = Vec::new();
            if !login.clean {
                // MQTT 5 ends a session when its connection does unless the client asks
                // otherwise: a persistent session (3.1.1's clean session 0) never expires.
                props.push(mqtt::SESSION_EXPIRY_INTERVAL);
                props.extend_from_slice(&u32::MAX.to_be_bytes());
            }
            if v5.topic_alias_max > 0 {
                props.push(mqtt::TOPIC_ALIAS_MAXIMUM);
                props.extend_from_slice(&v5.topic_alias_max.to_be_bytes());
            }
            props
        });
        mqtt::connect(
            &mut c.wbuf,
            client_id,
            login.keepalive,
            login.clean,
            user,
            pass,
            props.as_deref(),
        );
        c.flush().await?;
        let (kind, body) = c.next_packet().await?;
        let (level, word) = match login.v5 {
            None => ("MQTT 3.1.1", "return code"),
            Some(_) => ("MQTT 5", "reason code"),
        };
        match (kind, body.get(1)) {
            (mqtt::CONNACK, Some(0)) => {}
            (mqtt::CONNACK, Some(code)) => {
                return Err(other(format!(
                    "{level} CONNECT refused with CONNACK {word} {code:#04x}"
                )));
            }
            (mqtt::CONNACK, None) => return Err(other("a CONNACK shorter than 2 bytes")),
            _ => {
                return Err(other(format!(
                    "{level} CONNECT answered with packet type {kind}, not CONNACK"
                )));
            }
        }
        if login.v5.is_some() {
            if body.len() == 2 {
                return Err(other(
                    "the broker answered an MQTT 5 CONNECT with a CONNACK without properties \
                     (an MQTT 3.1.1 CONNACK?)",
                ));
            }
            let mut server = Server::default();
            let bad = |e| other(format!("CONNACK properties: {e}"));
            let (props, used) = mqtt::properties(&body[2..]).map_err(bad)?;
            if 2 + used != body.len() {
                return Err(other("CONNACK longer than its properties"));
            }
            for prop in mqtt::Properties(props) {
                match prop.map_err(bad)? {
                    (mqtt::TOPIC_ALIAS_MAXIMUM, v) => server.topic_alias_max = v as u16,
                    (mqtt::RECEIVE_MAXIMUM, 0) => {
                        return Err(other("CONNACK with a Receive Maximum of 0"));
                    }
                    (mqtt::RECEIVE_MAXIMUM, v) => server.receive_max = v as u16,
                    _ => {}
                }
            }
            c.v5 = Some(server);
        }
        Ok(c)
    }

    /// SUBSCRIBE to one filter; the granted QoS, or an error if the broker refused it.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> io::Result<u8> {
        if self.v5.is_some() {
            mqtt::subscribe_v5(&mut self.wbuf, 1, filter, qos);
        } else {
            mqtt::subscribe(&mut self.wbuf, 1, filter, qos);
        }
        self.flush().await?;
        loop {
            let (kind, body) = self.next_packet().await?;
            if kind == mqtt::SUBACK {
                // MQTT 5: the packet id, then properties, then the reason codes.
                let at = match self.v5 {
                    None => 2,
                    Some(_) => {
                        let rest = body.get(2..).unwrap_or_default();
                        let (_, used) = mqtt::properties(rest)
                            .map_err(|e| other(format!("SUBACK properties: {e}")))?;
                        2 + used
                    }
                };
                return match body.get(at) {
                    Some(&g) if g <= 2 => Ok(g),
                    g => Err(other(format!(
                        "SUBSCRIBE to {filter} refused (SUBACK {} {g:?})",
                        if self.v5.is_some() {
                            "reason code"
                        } else {
                            "return code"
                        }
                    ))),
                };
            }
            if kind == mqtt::DISCONNECT {
                return Err(other(format!(
                    "the broker sent DISCONNECT (reason code {:#04x}) instead of SUBACK",
                    body.first().copied().unwrap_or(0)
                )));
            }
        }
    }

    /// Write out everything in the write buffer: one write, one TLS flush, or one binary frame.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.write_all(&self.wbuf).await?,
            Stream::Tls(s) => {
                s.write_all(&self.wbuf).await?;
                s.flush().await?;
            }
            Stream::Ws(ws) => ws.send(&self.wbuf).await?,
        }
        self.wbuf.clear();
        Ok(())
    }

    /// Wait for bytes and read what is there; the broker closing the connection is an error.
    /// Cancel-safe (the subscriber races it against a timer).
    pub async fn fill(&mut self) -> io::Result<()> {
        self.rbuf.reserve(self.chunk);
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.read_buf(&mut self.rbuf).await?,
            Stream::Tls(s) => s.read_buf(&mut self.rbuf).await?,
            Stream::Ws(ws) => loop {
                if ws.read(&mut self.rbuf, self.chunk).await? > 0 {
                    break 1;
                }
            },
        };
        if n == 0 { Err(closed()) } else { Ok(()) }
    }

    /// Read what is there without waiting; false if nothing was.
    pub fn try_fill(&mut self) -> io::Result<bool> {
        if let Stream::Tcp(s) = &self.stream {
            self.rbuf.reserve(self.chunk);
            return match s.try_read_buf(&mut self.rbuf) {
                Ok(0) => Err(closed()),
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e),
            };
        }
        // TLS and WebSocket have no non-blocking read of their own: poll a read once. `fill`
        // is cancel-safe, so dropping it unfinished loses nothing; the next real wait
        // registers its own waker.
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(self.fill()).as_mut().poll(&mut cx) {
            Poll::Ready(r) => r.map(|()| true),
            Poll::Pending => Ok(false),
        }
    }

    /// The next packet's type and body, copied out (handshakes only, not the hot path).
    async fn next_packet(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((p, used)) = mqtt::decode(&self.rbuf).map_err(other)? {
                let r = (p.kind, p.body.to_vec());
                self.rbuf.advance(used);
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    /// Hand every complete packet in the read buffer to `f`, which may append replies to the
    /// write buffer (sent with the next `flush`).
    pub fn drain(
        &mut self,
        mut f: impl FnMut(&Packet<'_>, &mut BytesMut) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut off = 0;
        while let Some((p, used)) = mqtt::decode(&self.rbuf[off..]).map_err(other)? {
            f(&p, &mut self.wbuf)?;
            off += used;
        }
        self.rbuf.advance(off);
        Ok(())
    }

    /// DISCONNECT, then wait (briefly) for the broker to close its side, so that neither side
    /// resets a connection with bytes still unread.
    pub async fn close(mut self) {
        mqtt::disconnect(&mut self.wbuf);
        if self.flush().await.is_err() {
            return;
        }
        let shut = match &mut self.stream {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Ws(ws) => ws.close().await,
        };
        if shut.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                self.rbuf.clear();
                if self.fill().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
}
