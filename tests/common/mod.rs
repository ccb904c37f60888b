//! Helpers for the integration tests: a broker on an ephemeral port, rumqttc clients whose
//! events arrive on a channel, and a raw-bytes client for what a client library will not send.
#![allow(dead_code)] // each test file uses its own part of this

use std::net::SocketAddr;
use std::time::Duration;

use mqtt_lab::broker::users::Users;
use mqtt_lab::broker::{Broker, Config, Snapshot};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

pub const TOPICS: &[&str] = &["lab/a", "lab/b", "lab/c/d", "other"];

/// The config the tests start from: loopback, port 0, the test topics, no $SYS, and
/// persistence on (as it is for users), in a data folder of its own.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        topics: TOPICS.iter().map(|s| s.to_string()).collect(),
        users: Users::default(),
        sys_interval: None,
        data_dir: Some(data_dir()),
        ..Config::default()
    }
}

/// A new, empty data folder under cargo's scratch folder for tests, which this test binary
/// empties the first time it asks.
pub fn data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("state-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        root
    });
    let dir = root.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn start() -> Broker {
    start_with(config()).await
}

pub async fn start_with(config: Config) -> Broker {
    Broker::start(config).await.expect("broker starts")
}

/// Sends a command that answers, and returns its answer.
pub async fn ask(
    broker: &Broker,
    make: impl FnOnce(tokio::sync::oneshot::Sender<Result<(), String>>) -> mqtt_lab::broker::Command,
) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(broker.handle().send(make(tx)).await, "broker running");
    rx.await.expect("an answer")
}

pub async fn snapshot(broker: &Broker) -> Snapshot {
    broker.snapshot().await.expect("broker running")
}

/// The client (session) `id` in a snapshot.
pub fn client<'a>(snap: &'a Snapshot, id: &str) -> &'a mqtt_lab::broker::snapshot::ClientInfo {
    snap.clients
        .iter()
        .find(|c| c.client_id == id)
        .unwrap_or_else(|| panic!("{id} in the snapshot"))
}

// ---- rumqttc ------------------------------------------------------------------------------

pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A rumqttc client whose event loop runs in a task; incoming packets arrive on `events`.
pub struct Client {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

impl Client {
    pub async fn connect(opts: MqttOptions) -> Client {
        let mut c = Client::start(opts);
        match c.next().await {
            Ok(Packet::ConnAck(_)) => c,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Starts the event loop without waiting for CONNACK.
    pub fn start(opts: MqttOptions) -> Client {
        let (client, eventloop) = AsyncClient::new(opts, 100);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(drive(eventloop, tx));
        Client { client, events }
    }

    /// The next packet from the broker, or the error that ended the connection.
    pub async fn next(&mut self) -> Result<Packet, String> {
        timeout(WAIT, self.events.recv())
            .await
            .expect("an event within the wait")
            .unwrap_or(Err("event loop ended".into()))
    }

    /// The next PUBLISH, skipping acks and other packets.
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        loop {
            match self.next().await {
                Ok(Packet::Publish(p)) => return p,
                Ok(_) => continue,
                Err(e) => panic!("connection ended while waiting for a PUBLISH: {e}"),
            }
        }
    }

    /// Asserts no PUBLISH arrives for a little while.
    pub async fn no_publish(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let Ok(Packet::Publish(p)) = ev {
                panic!("unexpected PUBLISH on {}: {:?}", p.topic, p.payload);
            }
        }
    }

    /// Subscribes and returns the SUBACK return codes.
    pub async fn subscribe(
        &mut self,
        filters: &[(&str, QoS)],
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        let filters = filters
            .iter()
            .map(|(f, q)| rumqttc::SubscribeFilter::new(f.to_string(), *q));
        self.client.subscribe_many(filters).await.unwrap();
        loop {
            match self.next().await {
                Ok(Packet::SubAck(ack)) => return ack.return_codes,
                Ok(_) => continue,
                Err(e) => panic!("connection ended while waiting for SUBACK: {e}"),
            }
        }
    }

    pub async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
    }

    /// Waits for the acknowledgement of the last QoS 1/2 publish (PUBACK or PUBCOMP).
    pub async fn acked(&mut self) {
        loop {
            match self.next().await {
                Ok(Packet::PubAck(_)) | Ok(Packet::PubComp(_)) => return,
                Ok(_) => continue,
                Err(e) => panic!("connection ended while waiting for an ack: {e}"),
            }
        }
    }

    /// Waits until the connection ends, returning why.
    pub async fn closed(&mut self) -> String {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Packet, String>>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(Ok(p)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return; // no reconnecting: tests want to see the end
            }
        }
    }
}

// ---- raw bytes ----------------------------------------------------------------------------

/// A client that speaks bytes, for the packets and faults a library will not produce.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A packet as read off the wire: the first byte and the rest after the remaining length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub byte1: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    pub fn kind(&self) -> u8 {
        self.byte1 >> 4
    }

    /// Topic, packet id (0 for QoS 0) and payload of a PUBLISH.
    pub fn publish(&self) -> (String, u16, Vec<u8>) {
        assert_eq!(self.kind(), 3, "not a PUBLISH: {self:?}");
        let len = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let topic = String::from_utf8(self.body[2..2 + len].to_vec()).unwrap();
        let qos = (self.byte1 >> 1) & 3;
        let (pkid, rest) = if qos > 0 {
            (
                u16::from_be_bytes([self.body[2 + len], self.body[3 + len]]),
                4 + len,
            )
        } else {
            (0, 2 + len)
        };
        (topic, pkid, self.body[rest..].to_vec())
    }

    pub fn qos(&self) -> u8 {
        (self.byte1 >> 1) & 3
    }
    pub fn dup(&self) -> bool {
        self.byte1 & 0x08 != 0
    }
    pub fn retain(&self) -> bool {
        self.byte1 & 0x01 != 0
    }
}

pub fn encode_len(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return;
        }
    }
}

/// A packet from its first byte and body.
pub fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    encode_len(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Options of a raw CONNECT.
#[derive(Clone, Default)]
pub struct ConnectOpts<'a> {
    pub client_id: &'a str,
    pub persistent: bool,
    pub keep_alive: u16,
    pub will: Option<(&'a str, &'a [u8], u8, bool)>,
    pub user: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

pub fn connect_packet(o: &ConnectOpts) -> Vec<u8> {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(4);
    let mut flags = if o.persistent { 0 } else { 0x02 };
    if let Some((_, _, qos, retain)) = o.will {
        flags |= 0x04 | qos << 3 | if retain { 0x20 } else { 0 };
    }
    if o.user.is_some() {
        flags |= 0x80;
    }
    if o.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&o.keep_alive.to_be_bytes());
    string(o.client_id.as_bytes(), &mut body);
    if let Some((topic, payload, _, _)) = o.will {
        string(topic.as_bytes(), &mut body);
        string(payload, &mut body);
    }
    if let Some(u) = o.user {
        string(u.as_bytes(), &mut body);
    }
    if let Some(p) = o.password {
        string(p, &mut body);
    }
    packet(0x10, &body)
}

pub fn publish_packet(
    topic: &str,
    qos: u8,
    pkid: u16,
    retain: bool,
    dup: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (dup as u8) << 3 | qos << 1 | retain as u8, &body)
}

pub fn subscribe_packet(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, q) in filters {
        string(f.as_bytes(), &mut body);
        body.push(*q);
    }
    packet(0x82, &body)
}

pub fn ack_packet(byte1: u8, pkid: u16) -> Vec<u8> {
    packet(byte1, &pkid.to_be_bytes())
}

impl Raw {
    pub async fn open(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens, sends CONNECT and returns the CONNACK `(session present, return code)`.
    pub async fn connect(addr: SocketAddr, opts: &ConnectOpts<'_>) -> (Raw, bool, u8) {
        let mut raw = Raw::open(addr).await;
        raw.send(&connect_packet(opts)).await;
        let ack = raw.read().await.expect("CONNACK");
        assert_eq!(ack.byte1, 0x20, "expected CONNACK, got {ack:?}");
        let (sp, rc) = (ack.body[0] == 1, ack.body[1]);
        (raw, sp, rc)
    }

    /// Connects with a clean session and asserts it is accepted.
    pub async fn connected(addr: SocketAddr, client_id: &str) -> Raw {
        let (raw, _, rc) = Raw::connect(
            addr,
            &ConnectOpts {
                client_id,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(rc, 0);
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or None if the broker closed the connection. Panics after `WAIT`.
    pub async fn read(&mut self) -> Option<RawPacket> {
        timeout(WAIT, self.read_inner())
            .await
            .expect("a packet or a close within the wait")
    }

    /// The next packet, or None if the broker closed the connection. Panics after `wait`.
    pub async fn read_within(&mut self, wait: Duration) -> Option<RawPacket> {
        timeout(wait, self.read_inner())
            .await
            .expect("a packet or a close within the wait")
    }

    /// The next packet if one comes within `QUIET`.
    pub async fn read_quiet(&mut self) -> Option<RawPacket> {
        timeout(QUIET, self.read_inner()).await.ok().flatten()
    }

    async fn read_inner(&mut self) -> Option<RawPacket> {
        loop {
            if let Some(p) = self.take_packet() {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn take_packet(&mut self) -> Option<RawPacket> {
        take_packet(&mut self.buf)
    }

    /// Asserts the broker closes the connection (skipping packets it sends first).
    pub async fn expect_closed(&mut self) {
        while let Some(p) = self.read().await {
            let _ = p;
        }
    }

    /// Sends PINGREQ and expects PINGRESP: the connection is alive.
    pub async fn ping(&mut self) {
        self.send(&[0xc0, 0]).await;
        loop {
            let p = self.read().await.expect("connection alive");
            if p.byte1 == 0xd0 {
                return;
            }
        }
    }

    /// Subscribes and returns the SUBACK codes.
    pub async fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&subscribe_packet(pkid, filters)).await;
        let p = self.read().await.expect("SUBACK");
        assert_eq!(p.byte1, 0x90, "expected SUBACK, got {p:?}");
        assert_eq!(&p.body[..2], &pkid.to_be_bytes());
        p.body[2..].to_vec()
    }
}

/// Takes one whole packet off the front of `buf`, if it holds one.
pub fn take_packet(buf: &mut Vec<u8>) -> Option<RawPacket> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        len |= ((b & 0x7f) as usize) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return None;
    }
    let p = RawPacket {
        byte1: buf[0],
        body: buf[i..i + len].to_vec(),
    };
    buf.drain(..i + len);
    Some(p)
}

/// Reads packets from the read half of a split stream, while another task writes.
pub struct Reader<R> {
    rd: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> Reader<R> {
    pub fn new(rd: R) -> Self {
        Reader {
            rd,
            buf: Vec::new(),
        }
    }

    /// The next packet, or None if the broker closed the connection. Panics after `WAIT`.
    pub async fn read(&mut self) -> Option<RawPacket> {
        timeout(WAIT, async {
            loop {
                if let Some(p) = take_packet(&mut self.buf) {
                    return Some(p);
                }
                let mut chunk = [0u8; 4096];
                match self.rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("a packet or a close within the wait")
    }
}

/// Polls the broker's state until `done` holds: the router learns of a closed socket a moment
/// after the client has closed it.
pub async fn wait_for(broker: &Broker, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = snapshot(broker).await;
        if done(&snap) {
            return snap;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True if the snapshot has no session with this client id.
pub fn gone(snap: &Snapshot, client_id: &str) -> bool {
    snap.clients.iter().all(|c| c.client_id != client_id)
}

/// True if the snapshot has this client id as an offline session.
pub fn offline(snap: &Snapshot, client_id: &str) -> bool {
    snap.clients
        .iter()
        .any(|c| c.client_id == client_id && c.connection.is_none())
}

// ---- the binary -----------------------------------------------------------------------------

/// The port of a headless broker the test started with `--port 0` (stdout piped), from its
/// first line, `mqtt-lab: listening on mqtt://127.0.0.1:PORT`.
pub fn listening_port(child: &mut std::process::Child) -> u16 {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("mqtt-lab: listening on mqtt://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap()
}
