//! Crash safety: the broker (the real binary) is killed with SIGKILL at random moments while
//! QoS 1 and QoS 2 publishers send to a persistent subscriber that is offline, and restarted on
//! the same data folder each time. At the end every message the broker acknowledged is
//! delivered (QoS 2: exactly once), and every topic's last acknowledged retained value is there.
//!
//! The publishers are raw-bytes clients that behave as a correct client must across a broker
//! crash: they reconnect to their persistent session and send again, with DUP and the same
//! packet ids, what was not acknowledged (PUBREL for what had its PUBREC). `CRASH_SEED=N`
//! replays a run's kill times.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-lab");
const KILLS: usize = 5;
const RETAINED_TOPICS: u32 = 5;

/// The broker process, killed if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_broker(dir: &Path) -> (Running, u16) {
    let mut child = Command::new(BIN)
        .args([
            "--headless",
            "--port",
            "0",
            "--sys-interval",
            "0",
            "--no-mdns",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--topics")
        .arg(dir.join("topics.ron"))
        .arg("--users")
        .arg(dir.join("users.ron"))
        .env("HOME", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = listening_port(&mut child);
    (Running(child), port)
}

/// A raw client's connection: packets in, bytes out.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects with a persistent session; None if the broker is not there (killed).
    async fn open(port: u16, client_id: &str) -> Option<(Conn, bool)> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let mut c = Conn {
            stream,
            buf: Vec::new(),
        };
        let opts = ConnectOpts {
            client_id,
            persistent: true,
            keep_alive: 60,
            ..Default::default()
        };
        c.send(&connect_packet(&opts)).await?;
        let ack = c.read(Duration::from_secs(10)).await?;
        assert_eq!((ack.byte1, ack.body[1]), (0x20, 0), "CONNACK accepted");
        Some((c, ack.body[0] & 1 == 1))
    }

    async fn send(&mut self, bytes: &[u8]) -> Option<()> {
        self.stream.write_all(bytes).await.ok()
    }

    /// The next packet; None when the connection ends or nothing comes within `wait`.
    async fn read(&mut self, wait: Duration) -> Option<RawPacket> {
        loop {
            if let Some(p) = take_packet(&mut self.buf) {
                return Some(p);
            }
            let mut chunk = [0u8; 8192];
            match timeout(wait, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// A publisher that numbers its messages, and what it knows of their fate.
struct Publisher {
    client_id: String,
    qos: u8,
    retain: bool,
    next: u32,
    next_pkid: u16,
    /// Packet id -> (message number, PUBREC seen).
    unacked: BTreeMap<u16, (u32, bool)>,
    /// Message numbers the broker acknowledged (PUBACK, or PUBREC for QoS 2).
    acked: Vec<u32>,
    /// Whether the broker said, at some reconnect, that it had lost the session.
    lost_session: bool,
    connected_once: bool,
}

impl Publisher {
    fn new(client_id: &str, qos: u8, retain: bool) -> Self {
        Publisher {
            client_id: client_id.into(),
            qos,
            retain,
            next: 0,
            next_pkid: 0,
            unacked: BTreeMap::new(),
            acked: Vec::new(),
            lost_session: false,
            connected_once: false,
        }
    }

    fn topic(&self, n: u32) -> String {
        if self.retain {
            format!("crash/r/{}", n % RETAINED_TOPICS)
        } else {
            format!("crash/q{}", self.qos)
        }
    }

    fn publish(&self, n: u32, pkid: u16, dup: bool) -> Vec<u8> {
        let payload = n.to_string();
        publish_packet(
            &self.topic(n),
            self.qos,
            pkid,
            self.retain,
            dup,
            payload.as_bytes(),
        )
    }

    /// Publishes until the connection breaks (the broker is killed).
    async fn run(mut self, port: u16) -> Self {
        let Some((mut c, present)) = Conn::open(port, &self.client_id).await else {
            return self;
        };
        if self.connected_once && !present && !self.acked.is_empty() {
            self.lost_session = true;
        }
        self.connected_once = true;
        // What the broker has not acknowledged goes again, in order, as a client must.
        let again: Vec<(u16, (u32, bool))> = self.unacked.iter().map(|(k, v)| (*k, *v)).collect();
        for (pkid, (n, released)) in again {
            let bytes = if released {
                ack_packet(0x62, pkid)
            } else {
                self.publish(n, pkid, true)
            };
            if c.send(&bytes).await.is_none() {
                return self;
            }
        }
        loop {
            while self.unacked.len() < 10 {
                self.next_pkid = self.next_pkid % 65_535 + 1;
                let (n, pkid) = (self.next, self.next_pkid);
                self.next += 1;
                self.unacked.insert(pkid, (n, false));
                if c.send(&self.publish(n, pkid, false)).await.is_none() {
                    return self;
                }
            }
            let Some(p) = c.read(Duration::from_secs(10)).await else {
                return self;
            };
            let pkid = u16::from_be_bytes([p.body[0], p.body[1]]);
            match p.kind() {
                4 => {
                    if let Some((n, _)) = self.unacked.remove(&pkid) {
                        self.acked.push(n);
                    }
                }
                5 => {
                    if let Some((n, released)) = self.unacked.get_mut(&pkid)
                        && !*released
                    {
                        *released = true;
                        self.acked.push(*n);
                    }
                    if c.send(&ack_packet(0x62, pkid)).await.is_none() {
                        return self;
                    }
                }
                7 => {
                    self.unacked.remove(&pkid);
                }
                other => panic!("{}: unexpected packet type {other}", self.client_id),
            }
        }
    }
}

/// A little deterministic generator for the kill times.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut topics: Vec<String> = vec!["\"crash/q1\"".into(), "\"crash/q2\"".into()];
    topics.extend((0..RETAINED_TOPICS).map(|i| format!("\"crash/r/{i}\"")));
    std::fs::write(
        dir.path().join("topics.ron"),
        format!("(topics: [{}])", topics.join(", ")),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("users.ron"),
        "(allow_anonymous: true, users: [])",
    )
    .unwrap();

    // The subscriber makes its session, then stays away until the end.
    let (mut broker, mut port) = spawn_broker(dir.path());
    let (mut keeper, _) = Conn::open(port, "keeper").await.expect("broker up");
    keeper
        .send(&subscribe_packet(1, &[("crash/q1", 1), ("crash/q2", 2)]))
        .await
        .unwrap();
    assert_eq!(keeper.read(WAIT).await.unwrap().kind(), 9);
    // Killed the moment SUBACK is read: a granted subscription of a persistent session is on
    // disk before SUBACK leaves.
    broker.0.kill().unwrap();
    broker.0.wait().unwrap();
    drop(keeper);
    (broker, port) = spawn_broker(dir.path());
    let (keeper, present) = Conn::open(port, "keeper").await.expect("broker up");
    assert!(present, "the session made just before the kill is there");
    drop(keeper);

    let mut publishers = vec![
        Publisher::new("p-qos1", 1, false),
        Publisher::new("p-qos2", 2, false),
        Publisher::new("p-retained", 1, true),
    ];
    for kill in 0..KILLS {
        if kill > 0 {
            (broker, port) = spawn_broker(dir.path());
        }
        let running: Vec<_> = publishers
            .into_iter()
            .map(|p| tokio::spawn(p.run(port)))
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1200))).await;
        broker.0.kill().unwrap(); // SIGKILL
        broker.0.wait().unwrap();
        publishers = Vec::new();
        for r in running {
            publishers.push(r.await.unwrap());
        }
        let acked: Vec<usize> = publishers.iter().map(|p| p.acked.len()).collect();
        eprintln!("kill {kill}: acknowledged so far {acked:?}");
    }
    for p in &publishers {
        assert!(
            p.acked.len() > 100,
            "{} got going: {}",
            p.client_id,
            p.acked.len()
        );
        assert!(!p.lost_session, "{}'s session was lost", p.client_id);
    }

    // The last start: the subscriber comes back for everything.
    let (broker, port) = spawn_broker(dir.path());
    let (mut keeper, present) = Conn::open(port, "keeper").await.expect("broker up");
    assert!(present, "the subscriber's session survived");
    let mut q1: HashMap<u32, u32> = HashMap::new();
    let mut q2: HashMap<u32, u32> = HashMap::new();
    let mut q2_pending: HashMap<u16, u32> = HashMap::new();
    while let Some(p) = keeper.read(Duration::from_secs(2)).await {
        match p.kind() {
            3 => {
                let (topic, pkid, payload) = p.publish();
                let n: u32 = String::from_utf8(payload).unwrap().parse().unwrap();
                match p.qos() {
                    1 => {
                        assert_eq!(topic, "crash/q1");
                        *q1.entry(n).or_default() += 1;
                        keeper.send(&ack_packet(0x40, pkid)).await.unwrap();
                    }
                    2 => {
                        assert_eq!(topic, "crash/q2");
                        // Delivered at PUBREL, once per packet id, as a QoS 2 receiver does.
                        q2_pending.insert(pkid, n);
                        keeper.send(&ack_packet(0x50, pkid)).await.unwrap();
                    }
                    q => panic!("QoS {q} on {topic}"),
                }
            }
            6 => {
                let pkid = u16::from_be_bytes([p.body[0], p.body[1]]);
                if let Some(n) = q2_pending.remove(&pkid) {
                    *q2.entry(n).or_default() += 1;
                }
                keeper.send(&ack_packet(0x70, pkid)).await.unwrap();
            }
            k => panic!("unexpected packet type {k}"),
        }
    }
    let missing: Vec<u32> = publishers[0]
        .acked
        .iter()
        .filter(|n| !q1.contains_key(n))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged QoS 1 messages lost, among them {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let missing: Vec<u32> = publishers[1]
        .acked
        .iter()
        .filter(|n| !q2.contains_key(n))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged QoS 2 messages lost, among them {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<(&u32, &u32)> = q2.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "{} QoS 2 messages delivered more than once, among them {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );

    // Every retained topic holds its last acknowledged value, or a later one that was sent.
    let (mut reader, _) = Conn::open(port, "reader").await.unwrap();
    reader
        .send(&subscribe_packet(1, &[("crash/r/#", 1)]))
        .await
        .unwrap();
    // SUBACK waits until the reader's subscription is on disk, behind everything the keeper's
    // acknowledgements changed: on a slow disk that is longer than the gap that ends the read.
    let asked = std::time::Instant::now();
    let suback = reader.read(WAIT).await.expect("SUBACK");
    assert_eq!(suback.kind(), 9, "SUBACK first");
    eprintln!("the reader's SUBACK came after {:?}", asked.elapsed());
    let mut retained: HashMap<String, u32> = HashMap::new();
    while let Some(p) = reader.read(Duration::from_secs(1)).await {
        if p.kind() == 3 {
            let (topic, _, payload) = p.publish();
            retained.insert(topic, String::from_utf8(payload).unwrap().parse().unwrap());
        }
    }
    let r = &publishers[2];
    for t in 0..RETAINED_TOPICS {
        let topic = format!("crash/r/{t}");
        let Some(last_acked) = r.acked.iter().filter(|n| *n % RETAINED_TOPICS == t).max() else {
            continue;
        };
        let kept = retained.get(&topic).copied();
        assert!(
            kept.is_some_and(|v| v >= *last_acked && v < r.next),
            "{topic}: kept {kept:?}, last acknowledged {last_acked}; the reader got {retained:?}"
        );
    }
    eprintln!(
        "delivered after {KILLS} kills: {} QoS 1 ({} acknowledged), {} QoS 2 ({} acknowledged)",
        q1.len(),
        publishers[0].acked.len(),
        q2.len(),
        publishers[1].acked.len()
    );
    drop(broker);
}
