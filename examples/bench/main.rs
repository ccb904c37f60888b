//! `bench`: drives an MQTT 3.1.1 (or, for the message loads, MQTT 5) broker on this machine with
//! real traffic and measures it.
//!
//! ```text
//! cargo run --release --no-default-features --example bench -- --port P [--label NAME] [--rounds N]
//!     [--transport tcp|tls|ws|wss] [--cafile CA.pem] [--server-name localhost] [--ws-path /mqtt] SCENARIO
//!   fanin   --qos Q --publishers 8 --count 10000 --size 64 --window 100   P pubs on bench/<i> -> 1 sub on bench/#
//!   fanout  --qos 0 --subscribers 32 --count 10000                        1 pub on bench/fanout -> N subs
//!   latency --qos Q --rate 1000 --count 5000                              p50/p99/max on bench/latency
//!     (these three take --v5: every client speaks MQTT 5; --aliases: publishers send topic
//!      aliases and subscribers take them)
//!   conns   --connections 5000 [--pid PID]                                idle CONNECT + SUBSCRIBE idle/<i>
//!   storm   --clients 200 --secs 30 [--pid PID]   wrong-password storm beside a QoS 1 pair (--username/--password: the right ones)
//!   devices --clients 10000 --publishers 8 --count 10000 --qos Q          P pubs -> a random one of N subs on devices/<id>/#
//!   retained --topics 100000 --qos Q [--loaded]    retain one message per topic, then time a new `#` subscriber getting them all
//!   startup -- BROKER ARGS...                      start a broker, time it to its first CONNACK (--port 0: read from its listening line)
//!   table   [--pid PID]                  all of the above at their defaults, QoS 0/1/2: a markdown table
//! ```
//!
//! Every run prints one human line on stderr and one JSON object on stdout. A run is `ok` only if
//! every message arrived exactly once, intact, with the right QoS, within `--timeout`: a fast run
//! that loses messages is a failed run. Exit status: 0 every round ok, 1 a round failed (loss,
//! duplicates, error), 2 a round timed out.
//!
//! Each payload starts with the publisher's index (4 bytes), the message's sequence number
//! (4 bytes) and its send time (8 bytes, nanoseconds since the run started), so subscribers count
//! each message once, spot duplicates and corruption, and measure latency. Brokers on loopback
//! only: this is a load generator, not a tool to point at someone else's server.
//!
//! MQTT 5 (`--v5`): the same loads and the same counting, every client at protocol level 5.
//! With `--aliases` each publisher sets a Topic Alias on its first PUBLISH to a topic and then
//! sends the alias with an empty topic (within the Topic Alias Maximum the broker's CONNACK
//! offers; none offered is an error), and each subscriber announces a Topic Alias Maximum of
//! 10 and resolves the aliases the broker sends it before checking the topic: a message whose
//! alias the subscriber cannot resolve is a protocol error, and is not counted as received.

mod conn;
mod json;
mod mqtt;
mod scale;
mod storm;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{sleep, sleep_until, timeout, timeout_at};

use conn::{Conn, Login, Transport, V5, Via, other};
use json::Object;

#[derive(Parser, Clone)]
#[command(
    name = "bench",
    about = "MQTT 3.1.1 / MQTT 5 benchmark: fan-in, fan-out, latency and idle connections against a broker on loopback"
)]
struct Cli {
    /// Broker host; loopback addresses only
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: String,
    /// Broker port (required)
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Subscribers connect to the broker on this port instead (fan-in and fan-out): a bridge
    /// carries the messages there from the publishers' broker
    #[arg(long, global = true)]
    sub_port: Option<u16>,
    /// Free-form tag copied into the output (e.g. the broker's name)
    #[arg(long, global = true, default_value = "")]
    label: String,
    /// Run the scenario this many times, one JSON line each
    #[arg(long, global = true, default_value_t = 1)]
    rounds: u32,
    /// Seconds a run may take, connecting included; a run cut short is reported as failed
    #[arg(long, global = true, default_value_t = 60.0)]
    timeout: f64,
    #[arg(long, global = true)]
    username: Option<String>,
    #[arg(long, global = true)]
    password: Option<String>,
    /// Keepalive sent in CONNECT, seconds (subscribers ping at half of it)
    #[arg(long, global = true, default_value_t = 60)]
    keepalive: u16,
    /// Once the publishers are done, give up on missing messages after this many quiet seconds
    #[arg(long, global = true, default_value_t = 2.0)]
    drain: f64,
    /// Tokio worker threads (0: one per core)
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// How the bytes travel: MQTT over TCP, TLS, WebSocket, or WebSocket over TLS
    #[arg(long, global = true, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// TLS: the CA certificate (PEM) the broker's certificate must chain to
    #[arg(long, global = true)]
    cafile: Option<std::path::PathBuf>,
    /// TLS: the name the broker's certificate must be valid for
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// WebSocket: the path of the upgrade request
    #[arg(long, global = true, default_value = "/mqtt")]
    ws_path: String,
    /// The transport with its TLS client, made once from the options above.
    #[arg(skip)]
    via: Option<Via>,
    #[command(subcommand)]
    scenario: Scenario,
}

impl Cli {
    fn via(&self) -> Via {
        self.via.clone().unwrap_or_else(Via::tcp)
    }
}

/// What every message scenario publishes.
#[derive(Args, Clone, Copy)]
struct Load {
    /// QoS of the publishes and of the subscriptions
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 16: publisher index, sequence number, send time)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    size: u64,
    /// Most unacknowledged QoS 1/2 publishes per publisher
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    window: u64,
    /// Subscribers connect with a persistent session (clean session 0): a broker that persists
    /// keeps each QoS 1/2 message for them on disk until it is acknowledged
    #[arg(long)]
    persistent: bool,
}

/// Which MQTT the message loads speak.
#[derive(Args, Clone, Copy, Default)]
struct Proto {
    /// Every client speaks MQTT 5 (protocol level 5) instead of MQTT 3.1.1
    #[arg(long)]
    v5: bool,
    /// MQTT 5 topic aliases: publishers set one on their first PUBLISH and then send it with an
    /// empty topic; subscribers take up to 10 from the broker (Topic Alias Maximum)
    #[arg(long, requires = "v5")]
    aliases: bool,
}

impl Proto {
    /// What the human line says after the scenario's name.
    fn tag(self) -> &'static str {
        match (self.v5, self.aliases) {
            (false, _) => "",
            (true, false) => " mqtt5",
            (true, true) => " mqtt5+aliases",
        }
    }
}

/// The Topic Alias Maximum subscribers announce with `--aliases`.
const SUB_ALIAS_MAX: u16 = 10;

#[derive(Subcommand, Clone)]
enum Scenario {
    /// P publishers on bench/<i> -> 1 subscriber on bench/#: received msgs/s, lost
    Fanin {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        proto: Proto,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
        publishers: u32,
        /// Messages per publisher
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        count: u64,
    },
    /// 1 publisher on bench/fanout -> N subscribers: deliveries/s in total, lost
    Fanout {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        proto: Proto,
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        subscribers: u32,
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        count: u64,
    },
    /// 1 publisher at a fixed rate on bench/latency -> 1 subscriber: p50/p99/max microseconds
    Latency {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        proto: Proto,
        /// Messages per second
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        count: u64,
    },
    /// N idle connections, each CONNECT + SUBSCRIBE idle/<i>: time to connect all, broker RSS per connection
    Conns {
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        connections: u64,
        /// The broker's PID: its VmRSS is read before and after connecting
        #[arg(long)]
        pid: Option<u32>,
        /// Connection handshakes in flight at once
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        concurrency: u64,
        /// QoS of the subscriptions
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// Seconds the connections stay idle before the broker's memory is read: longer than
        /// mqtt-lab's --park-after (5 s), after which an idle connection gives up its task, and
        /// the second its allocator takes to give the freed pages back, with room to spare
        #[arg(long, default_value_t = 8.0)]
        idle: f64,
    },
    /// A login storm with a wrong password beside a healthy QoS 1 pair logged in with
    /// --username/--password: the pair's p99 against its own without the storm, the time a
    /// correct login takes, the broker's memory
    Storm(storm::StormArgs),
    /// N device clients, each subscribed to its own devices/<id>/#, and P publishers sending
    /// each message to a device picked at random (devices/<id>/temperature): delivered msgs/s
    Devices(scale::DevicesArgs),
    /// Retain one message on each of N topics (QoS 1, all acknowledged), then time a new
    /// subscriber to `#` from its SUBSCRIBE until it has every retained message
    Retained(scale::RetainedArgs),
    /// Start a broker (the command after --), time it until it answers a CONNECT with CONNACK,
    /// stop it with SIGTERM
    Startup(scale::StartupArgs),
    /// The whole suite at its defaults (fan-in QoS 0/1/2, fan-out, latency QoS 0/1, 5000 idle
    /// connections), `--rounds` times each, then a markdown table of medians. The connections
    /// run last, on a broker the other loads have warmed: for its memory per connection, run
    /// `conns` against a fresh broker (as scripts/bench.sh does)
    Table {
        /// The broker's PID, for its memory per connection
        #[arg(long)]
        pid: Option<u32>,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Fanin { .. } => "fanin",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Latency { .. } => "latency",
            Scenario::Conns { .. } => "conns",
            Scenario::Storm(_) => "storm",
            Scenario::Devices(_) => "devices",
            Scenario::Retained(_) => "retained",
            Scenario::Startup(_) => "startup",
            Scenario::Table { .. } => "table",
        }
    }
}

/// Read buffer space for busy clients.
const BUSY: usize = 64 * 1024;
/// Most bytes a publisher puts in one write.
const BATCH: usize = 64 * 1024;

/// Counters shared by the tasks of one run, so a run cut short still reports what it saw.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    acked: AtomicU64,
    /// Distinct messages received (summed over subscribers).
    received: AtomicU64,
    /// Messages received again after a first copy.
    duplicates: AtomicU64,
    /// Received PUBLISHes with the DUP flag set.
    dup_flags: AtomicU64,
    /// Payloads that do not decode as ours, or arrived on the wrong topic.
    corrupt: AtomicU64,
    /// Broker behaviour the spec does not allow here: acks for unknown packet ids, the wrong
    /// delivery QoS, unexpected packet types; MQTT 5: topic aliases never set or over the
    /// maximum, a PUBCOMP or PUBREL with an error reason.
    protocol_errors: AtomicU64,
    /// MQTT 5: publishes the broker refused (PUBACK or PUBREC with a reason code of 0x80 or more).
    refused: AtomicU64,
    /// MQTT 5: PUBLISHes sent with a topic alias and an empty topic.
    aliased_sent: AtomicU64,
    /// MQTT 5: PUBLISHes received with a topic alias and an empty topic.
    aliased_received: AtomicU64,
    /// MQTT 5: the broker's Receive Maximum, when it is below `--window` and caps it (0: it
    /// does not).
    receive_max: AtomicU64,
    last_rx_ns: AtomicU64,
    pubs_done_ns: AtomicU64,
    /// When the last subscriber had every message and every QoS 2 handshake done.
    subs_done_ns: AtomicU64,
    /// QoS 2 deliveries whose PUBREL had not come (PUBREC sent) when the subscriber stopped.
    open_handshakes: AtomicU64,
    latencies: Mutex<Vec<u64>>,
}

/// One run of a message scenario.
struct Ctx {
    login: Login,
    qos: u8,
    size: usize,
    window: usize,
    drain: Duration,
    keepalive: u16,
    t0: Instant,
    /// Client ids are `b<pid>r<round><role>`: unique per process and round, at most 23 bytes.
    id_prefix: String,
    /// Subscribers with persistent sessions (`Load::persistent`).
    persistent: bool,
    /// Publishers set the retain flag.
    retain: bool,
    /// MQTT 5 publishers send topic aliases (`Proto::aliases`).
    aliases: bool,
    /// Where the subscribers connect, when not to the publishers' broker (`--sub-port`).
    sub_addr: Option<SocketAddr>,
    st: Stats,
}

impl Ctx {
    /// Nanoseconds since the run started: the clock in the payloads.
    fn ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

/// Publish `count` messages, message `seq` on `topics[pick(seq)]`, as fast as the broker takes
/// them, or at `rate` msgs/s. QoS 1/2 keep at most `window` unacknowledged and do the whole
/// PUBACK or PUBREC/PUBREL/PUBCOMP handshake. Returns the open connection: it must stay open
/// until the subscribers are done (closing it early could reset bytes the broker has not read
/// yet).
async fn publisher(
    mut c: Conn,
    ctx: Arc<Ctx>,
    index: u32,
    topics: Arc<Vec<String>>,
    pick: impl Fn(u64) -> usize,
    count: u64,
    rate: Option<f64>,
) -> io::Result<Conn> {
    let qos = ctx.qos;
    // MQTT 5: the broker's Receive Maximum caps the window.
    let window = match c.v5 {
        Some(server) if qos > 0 && usize::from(server.receive_max) < ctx.window => {
            ctx.st
                .receive_max
                .store(u64::from(server.receive_max), Relaxed);
            usize::from(server.receive_max)
        }
        _ => ctx.window,
    };
    let v5 = c.v5.is_some();
    // MQTT 5 topic aliases: topic index -> alias (0: none yet), and the aliases left to set.
    let (mut alias_of, alias_max) = match c.v5 {
        Some(server) if ctx.aliases => (vec![0u16; topics.len()], server.topic_alias_max),
        _ => (Vec::new(), 0),
    };
    let mut last_alias = 0u16;
    let mut aliased = 0u64;
    // Per packet id: 0 free, 1 waiting for PUBACK (QoS 1) or PUBREC (QoS 2), 2 waiting for PUBCOMP.
    let mut state = vec![0u8; 65536];
    let mut payload = vec![0x5au8; ctx.size];
    payload[..4].copy_from_slice(&index.to_be_bytes());
    let start = Instant::now();
    let (mut sent, mut inflight, mut pid) = (0u64, 0usize, 0u16);
    loop {
        let due = match rate {
            None => count,
            Some(r) => count.min((start.elapsed().as_secs_f64() * r) as u64 + 1),
        };
        let before = sent;
        while sent < due && (qos == 0 || inflight < window) && c.wbuf.len() < BATCH {
            if qos > 0 {
                pid = loop {
                    pid = pid.wrapping_add(1);
                    if pid != 0 && state[pid as usize] == 0 {
                        break pid;
                    }
                };
                state[pid as usize] = 1;
                inflight += 1;
            }
            payload[4..8].copy_from_slice(&(sent as u32).to_be_bytes());
            payload[8..16].copy_from_slice(&ctx.ns().to_be_bytes());
            let t = pick(sent);
            let topic = &topics[t];
            if !v5 {
                mqtt::publish(&mut c.wbuf, topic, qos, pid, ctx.retain, &payload);
            } else if alias_of.is_empty() {
                mqtt::publish_v5(&mut c.wbuf, topic, qos, pid, ctx.retain, 0, &payload);
            } else {
                let alias = alias_of[t];
                let (topic, alias) = if alias != 0 {
                    aliased += 1;
                    ("", alias)
                } else if last_alias < alias_max {
                    // Set the next alias: the topic and the alias, this once.
                    last_alias += 1;
                    alias_of[t] = last_alias;
                    (topic.as_str(), last_alias)
                } else {
                    (topic.as_str(), 0)
                };
                mqtt::publish_v5(&mut c.wbuf, topic, qos, pid, ctx.retain, alias, &payload);
            }
            sent += 1;
        }
        c.flush().await?;
        ctx.st.sent.fetch_add(sent - before, Relaxed);
        if aliased > 0 {
            ctx.st.aliased_sent.fetch_add(aliased, Relaxed);
            aliased = 0;
        }
        if sent == count && inflight == 0 {
            break;
        }
        let window_full = qos > 0 && inflight >= window;
        if sent < due && !window_full {
            // More to send right now: take in the acks that are already there, without waiting.
            if qos > 0 && c.try_fill()? {
                take_acks(&mut c, &ctx, &mut state, &mut inflight)?;
            }
            continue;
        }
        let wake = match rate {
            Some(r) if sent < count && !window_full => {
                Some(start + Duration::from_secs_f64(sent as f64 / r))
            }
            _ => None,
        };
        if qos == 0 {
            if let Some(w) = wake {
                sleep_until(w.into()).await;
            }
            continue;
        }
        tokio::select! {
            r = c.fill() => {
                r?;
                take_acks(&mut c, &ctx, &mut state, &mut inflight)?;
            }
            _ = sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
        }
    }
    Ok(c)
}

/// Handle the acks in a publisher's read buffer: PUBACK and PUBCOMP free their packet id,
/// PUBREC is answered with PUBREL.
fn take_acks(c: &mut Conn, ctx: &Ctx, state: &mut [u8], inflight: &mut usize) -> io::Result<()> {
    let (mut done, mut bad, mut refused) = (0u64, 0u64, 0u64);
    c.drain(|p, w| {
        let pid = p.pid().unwrap_or(0) as usize;
        // MQTT 5's reason code; always 0 (success) for MQTT 3.1.1's 2-byte acks.
        let reason = p.reason();
        match (p.kind, ctx.qos, state[pid]) {
            (mqtt::PUBACK, 1, 1) => {
                state[pid] = 0;
                done += 1;
                // 0x10 (no matching subscribers) is a success; 0x80 and above a refusal.
                refused += u64::from(reason >= 0x80);
            }
            (mqtt::PUBCOMP, 2, 2) => {
                state[pid] = 0;
                done += 1;
                // 0x92: the broker had lost the packet id.
                bad += u64::from(reason != 0);
            }
            // MQTT 5: a refused QoS 2 PUBLISH ends at its PUBREC.
            (mqtt::PUBREC, 2, 1) if reason >= 0x80 => {
                state[pid] = 0;
                done += 1;
                refused += 1;
            }
            (mqtt::PUBREC, 2, 1) => {
                state[pid] = 2;
                mqtt::ack(w, mqtt::PUBREL, pid as u16);
            }
            // A PUBREC again (the broker re-sent it): PUBREL again.
            (mqtt::PUBREC, 2, 2) => mqtt::ack(w, mqtt::PUBREL, pid as u16),
            (mqtt::PINGRESP, _, _) => {}
            (mqtt::DISCONNECT, _, _) => return Err(disconnected(p)),
            _ => bad += 1,
        }
        Ok(())
    })?;
    *inflight -= done as usize;
    ctx.st.acked.fetch_add(done, Relaxed);
    if bad > 0 {
        ctx.st.protocol_errors.fetch_add(bad, Relaxed);
    }
    if refused > 0 {
        ctx.st.refused.fetch_add(refused, Relaxed);
    }
    Ok(())
}

/// The error for a DISCONNECT from the broker (MQTT 5 says why).
fn disconnected(p: &mqtt::Packet<'_>) -> io::Error {
    other(format!(
        "the broker sent DISCONNECT (reason code {:#04x})",
        p.reason()
    ))
}

/// Receive what the publishers of `topics` send (`count` each) until every message arrived, or
/// the publishers are done and nothing came for `ctx.drain`. Acks QoS 1 (PUBACK) and QoS 2
/// (PUBREC, then PUBCOMP for each PUBREL). Returns the open connection.
async fn subscriber(
    mut c: Conn,
    ctx: Arc<Ctx>,
    topics: Arc<Vec<String>>,
    count: u64,
    granted: u8,
    latency: bool,
) -> io::Result<Conn> {
    let npubs = topics.len();
    let expected = npubs as u64 * count;
    let mut seen = vec![0u64; expected.div_ceil(64) as usize];
    let mut unique = 0u64;
    let mut waiting_rel = vec![false; 65536];
    let mut pending_rel = 0usize;
    let deliver_qos = ctx.qos.min(granted);
    let v5 = c.v5.is_some();
    // MQTT 5: the topics of the aliases the broker set (alias n is slot n - 1), within the
    // Topic Alias Maximum this client announced.
    let alias_max = ctx.login.v5.map_or(0, |v| v.topic_alias_max);
    let mut alias_topics: Vec<Option<Vec<u8>>> = vec![None; usize::from(alias_max)];
    let mut aliased_total = 0u64;
    let ping_every = Duration::from_secs((u64::from(ctx.keepalive) / 2).max(1));
    let mut last_tx = Instant::now();
    let mut lat = Vec::new();
    // When this subscriber last got anything: acks still coming in keep it waiting too.
    let mut last_packet = 0u64;
    const TICK: Duration = Duration::from_millis(50);
    let tick = sleep(TICK);
    tokio::pin!(tick);
    while unique < expected || pending_rel > 0 {
        // Wake at least every 50 ms to check for the end; one timer for the whole run, not one
        // per read.
        let got = tokio::select! {
            r = c.fill() => {
                r?;
                true
            }
            _ = &mut tick => {
                tick.as_mut().reset(tokio::time::Instant::now() + TICK);
                false
            }
        };
        if got {
            let now = ctx.ns();
            last_packet = now;
            let (mut n, mut dups, mut dup_flags, mut corrupt, mut bad) = (0u64, 0, 0, 0, 0);
            let mut aliased = 0u64;
            c.drain(|p, w| {
                match p.kind {
                    mqtt::PUBLISH => {
                        let m = if v5 { p.publish_v5() } else { p.publish() }.map_err(other)?;
                        match m.qos {
                            1 => mqtt::ack(w, mqtt::PUBACK, m.pid),
                            2 => {
                                mqtt::ack(w, mqtt::PUBREC, m.pid);
                                if !waiting_rel[m.pid as usize] {
                                    waiting_rel[m.pid as usize] = true;
                                    pending_rel += 1;
                                }
                            }
                            _ => {}
                        }
                        bad += u64::from(m.qos != deliver_qos);
                        dup_flags += u64::from(m.dup);
                        let pl = m.payload;
                        if pl.len() != ctx.size {
                            corrupt += 1;
                            return Ok(());
                        }
                        let index = u32::from_be_bytes(pl[0..4].try_into().unwrap()) as usize;
                        let seq = u64::from(u32::from_be_bytes(pl[4..8].try_into().unwrap()));
                        // MQTT 5: an alias with a topic sets it, an alias alone stands for it.
                        let topic = if m.alias == 0 {
                            m.topic
                        } else {
                            let Some(slot) = alias_topics.get_mut(usize::from(m.alias) - 1) else {
                                // Over the maximum this client announced.
                                bad += 1;
                                return Ok(());
                            };
                            if m.topic.is_empty() {
                                aliased += 1;
                                match slot {
                                    Some(t) => t.as_slice(),
                                    None => {
                                        // An alias the broker never set.
                                        bad += 1;
                                        return Ok(());
                                    }
                                }
                            } else {
                                let t = slot.get_or_insert_with(Vec::new);
                                t.clear();
                                t.extend_from_slice(m.topic);
                                m.topic
                            }
                        };
                        if index >= npubs || seq >= count || topic != topics[index].as_bytes() {
                            corrupt += 1;
                            return Ok(());
                        }
                        let bit = index as u64 * count + seq;
                        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
                        if seen[word] & mask != 0 {
                            dups += 1;
                        } else {
                            seen[word] |= mask;
                            n += 1;
                            if latency {
                                let sent = u64::from_be_bytes(pl[8..16].try_into().unwrap());
                                lat.push(now.saturating_sub(sent));
                            }
                        }
                    }
                    mqtt::PUBREL => {
                        let pid = p.pid().ok_or_else(|| other("PUBREL without packet id"))?;
                        // MQTT 5: 0x92, the broker lost the packet id.
                        bad += u64::from(p.reason() != 0);
                        mqtt::ack(w, mqtt::PUBCOMP, pid);
                        if waiting_rel[pid as usize] {
                            waiting_rel[pid as usize] = false;
                            pending_rel -= 1;
                        }
                    }
                    mqtt::PINGRESP | mqtt::SUBACK => {}
                    mqtt::DISCONNECT => return Err(disconnected(p)),
                    _ => bad += 1,
                }
                Ok(())
            })?;
            aliased_total += aliased;
            let st = &ctx.st;
            if n > 0 {
                unique += n;
                st.received.fetch_add(n, Relaxed);
                st.last_rx_ns.fetch_max(now, Relaxed);
            }
            for (counter, v) in [
                (&st.duplicates, dups),
                (&st.dup_flags, dup_flags),
                (&st.corrupt, corrupt),
                (&st.protocol_errors, bad),
            ] {
                if v > 0 {
                    counter.fetch_add(v, Relaxed);
                }
            }
            if !lat.is_empty() {
                st.latencies.lock().unwrap().append(&mut lat);
            }
        }
        let done = ctx.st.pubs_done_ns.load(Relaxed);
        if done > 0 {
            // Messages still missing: wait while anything at all comes in. All in, only QoS 2
            // handshakes open: give them `drain` after the last message (a broker may deliver
            // every message long before it sends the last PUBREL; that is slow, not lost).
            let last_rx = ctx.st.last_rx_ns.load(Relaxed);
            let busy = if unique < expected {
                last_packet.max(last_rx)
            } else {
                last_rx
            };
            let last = done.max(busy);
            if ctx.ns().saturating_sub(last) >= ctx.drain.as_nanos() as u64 {
                break;
            }
        }
        if last_tx.elapsed() >= ping_every {
            mqtt::pingreq(&mut c.wbuf);
        }
        if !c.wbuf.is_empty() {
            c.flush().await?;
            last_tx = Instant::now();
        }
    }
    if aliased_total > 0 {
        ctx.st.aliased_received.fetch_add(aliased_total, Relaxed);
    }
    if pending_rel > 0 {
        ctx.st
            .open_handshakes
            .fetch_add(pending_rel as u64, Relaxed);
    } else if unique == expected {
        ctx.st.subs_done_ns.fetch_max(ctx.ns(), Relaxed);
    }
    Ok(c)
}

/// What a message scenario runs: `subs` subscribers on `filter`, one publisher per topic in
/// `topics` with `count` messages each, at `rate` msgs/s (None: as fast as the broker takes them).
struct Plan {
    filter: String,
    subs: u32,
    topics: Vec<String>,
    count: u64,
    rate: Option<f64>,
    latency: bool,
}

/// How a message run ended.
struct Ran {
    start_ns: u64,
    /// The TLS version and cipher suite the first connection negotiated.
    tls: Option<String>,
    granted: Option<u8>,
    timed_out: bool,
    error: Option<String>,
}

/// Waits for a run's tasks to finish (`finish`: the connections they leave open) until the
/// deadline, closes those connections, and aborts whatever task is left; a timeout or an error
/// goes into `ran`.
async fn finish_within(
    deadline: tokio::time::Instant,
    finish: impl Future<Output = io::Result<Vec<Conn>>>,
    aborts: Vec<AbortHandle>,
    ran: &mut Ran,
) {
    match timeout_at(deadline, finish).await {
        Ok(Ok(open)) => {
            let closing: Vec<_> = open.into_iter().map(|c| tokio::spawn(c.close())).collect();
            for c in closing {
                let _ = c.await;
            }
        }
        Ok(Err(e)) => ran.error = Some(e.to_string()),
        Err(_) => ran.timed_out = true,
    }
    for a in aborts {
        a.abort();
    }
}

fn joined<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.map_err(other)?
}

async fn within<T>(
    deadline: tokio::time::Instant,
    what: &str,
    f: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    timeout_at(deadline, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("timed out while {what}")))?
}

/// Connect the subscribers, then the publishers; start them all at once; wait for the
/// publishers, mark them done, wait for the subscribers; close every connection.
async fn pubsub(ctx: &Arc<Ctx>, deadline: tokio::time::Instant, plan: Plan) -> Ran {
    let mut ran = Ran {
        start_ns: 0,
        tls: None,
        granted: None,
        timed_out: false,
        error: None,
    };
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    let setup = async {
        for i in 0..plan.subs {
            let id = format!("{}s{i}", ctx.id_prefix);
            let login = Login {
                clean: !ctx.persistent,
                addr: ctx.sub_addr.unwrap_or(ctx.login.addr),
                ..ctx.login.clone()
            };
            let mut c = within(deadline, "connecting", Conn::open(&login, &id, BUSY)).await?;
            ran.tls = ran.tls.take().or_else(|| c.tls_info.clone());
            let g = within(deadline, "subscribing", c.subscribe(&plan.filter, ctx.qos)).await?;
            ran.granted = Some(ran.granted.map_or(g, |m: u8| m.min(g)));
            subs.push((c, g));
        }
        for i in 0..plan.topics.len() {
            let id = format!("{}p{i}", ctx.id_prefix);
            let c = within(deadline, "connecting", Conn::open(&ctx.login, &id, BUSY)).await?;
            if ctx.aliases && c.v5.is_none_or(|s| s.topic_alias_max == 0) {
                return Err(other(
                    "--aliases: the broker's CONNACK offers no topic aliases (Topic Alias \
                     Maximum absent or 0)",
                ));
            }
            pubs.push(c);
        }
        Ok::<_, io::Error>(())
    };
    if let Err(e) = setup.await {
        ran.timed_out = e.kind() == io::ErrorKind::TimedOut;
        ran.error = Some(e.to_string());
        return ran;
    }
    let topics = Arc::new(plan.topics);
    ran.start_ns = ctx.ns();
    let sub_tasks: Vec<JoinHandle<io::Result<Conn>>> = subs
        .into_iter()
        .map(|(c, g)| {
            let (ctx, topics) = (ctx.clone(), topics.clone());
            tokio::spawn(subscriber(c, ctx, topics, plan.count, g, plan.latency))
        })
        .collect();
    let pub_tasks: Vec<JoinHandle<io::Result<Conn>>> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (ctx, topics) = (ctx.clone(), topics.clone());
            let one = move |_| i;
            tokio::spawn(publisher(
                c, ctx, i as u32, topics, one, plan.count, plan.rate,
            ))
        })
        .collect();
    let aborts: Vec<AbortHandle> = sub_tasks
        .iter()
        .chain(&pub_tasks)
        .map(|t| t.abort_handle())
        .collect();
    let finish = async {
        let mut open = Vec::new();
        for t in pub_tasks {
            open.push(joined(t.await)?);
        }
        ctx.st.pubs_done_ns.store(ctx.ns().max(1), Relaxed);
        for t in sub_tasks {
            open.push(joined(t.await)?);
        }
        Ok::<_, io::Error>(open)
    };
    finish_within(deadline, finish, aborts, &mut ran).await;
    // A persistent subscriber's session outlives the run, and the broker would go on queueing
    // (and writing) every later run's messages for it: a clean session under the same id
    // discards it.
    if ctx.persistent {
        for i in 0..plan.subs {
            let id = format!("{}s{i}", ctx.id_prefix);
            if let Ok(Ok(c)) =
                timeout(Duration::from_secs(5), Conn::open(&ctx.login, &id, 256)).await
            {
                let _ = c.close().await;
            }
        }
    }
    ran
}

fn round_to(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// 1234567 -> "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Value at percentile `p` of sorted nanoseconds, in microseconds.
fn percentile_us(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(round_to(sorted[i] as f64 / 1000.0, 1))
}

/// The outcome of one run: its JSON line, its human line, and whether it passed.
struct Outcome {
    json: Object,
    human: String,
    ok: bool,
    timed_out: bool,
    /// The figure the `--rounds` summary takes the median of.
    headline: Option<f64>,
}

/// Fill in what message scenarios report, and judge the run.
fn message_outcome(ctx: &Ctx, out: &mut Object, ran: &Ran, expected: u64) -> (bool, String) {
    let st = &ctx.st;
    let rx = st.received.load(Relaxed);
    let lost = expected.saturating_sub(rx);
    let dups = st.duplicates.load(Relaxed);
    let corrupt = st.corrupt.load(Relaxed);
    let bad = st.protocol_errors.load(Relaxed);
    let refused = st.refused.load(Relaxed);
    let last = st.last_rx_ns.load(Relaxed);
    let done = st.pubs_done_ns.load(Relaxed);
    let dur = last.saturating_sub(ran.start_ns) as f64 / 1e9;
    let rate = (rx > 0 && dur > 0.0).then(|| (rx as f64 / dur).round());
    out.set("msgs_per_s", rate);
    out.set("error", ran.error.clone());
    out.set("tls", ran.tls.clone());
    out.set("lost", lost);
    out.set("duplicates", dups);
    out.set("expected", expected);
    out.set("received", rx);
    out.set("sent", st.sent.load(Relaxed));
    out.set("acked", st.acked.load(Relaxed));
    out.set("dup_flags", st.dup_flags.load(Relaxed));
    out.set("corrupt", corrupt);
    out.set("protocol_errors", bad);
    out.set("granted_qos", ran.granted);
    let v5 = ctx.login.v5.is_some();
    out.set("mqtt", if v5 { "5" } else { "3.1.1" });
    if v5 {
        out.set("aliases", ctx.aliases);
        out.set("refused", refused);
        out.set("aliased_sent", st.aliased_sent.load(Relaxed));
        out.set("aliased_received", st.aliased_received.load(Relaxed));
        let rm = st.receive_max.load(Relaxed);
        out.set("receive_max_window", (rm != 0).then_some(rm));
    }
    out.set("duration_s", round_to(dur, 4));
    let since_start =
        |ns: u64| (ns > 0).then(|| round_to(ns.saturating_sub(ran.start_ns) as f64 / 1e9, 4));
    out.set("publish_s", since_start(done));
    let open = st.open_handshakes.load(Relaxed);
    let complete = (open == 0 && lost == 0).then(|| st.subs_done_ns.load(Relaxed));
    out.set("complete_s", complete.and_then(since_start));
    out.set("open_handshakes", open);
    let mut problems = Vec::new();
    if lost > 0 {
        problems.push(format!("lost {}", thousands(lost)));
    }
    if dups > 0 {
        problems.push(format!("{} duplicates", thousands(dups)));
    }
    if corrupt > 0 {
        problems.push(format!("{corrupt} corrupt"));
    }
    if bad > 0 {
        problems.push(format!("{bad} protocol errors"));
    }
    if refused > 0 {
        problems.push(format!("{} refused", thousands(refused)));
    }
    if ran.timed_out {
        problems.push("TIMED OUT".into());
    }
    if let Some(e) = &ran.error {
        problems.push(format!("error: {e}"));
    }
    let ok = problems.is_empty();
    let mut verdict = if ok {
        "lost 0".to_string()
    } else {
        format!("FAILED: {}", problems.join(", "))
    };
    if open > 0 {
        // Not a loss: every message arrived; the broker had not sent these PUBRELs yet.
        verdict += &format!(
            " ({} QoS 2 PUBRELs still unsent {:.0} s after the last message)",
            thousands(open),
            ctx.drain.as_secs_f64()
        );
    }
    if v5 {
        let rm = st.receive_max.load(Relaxed);
        if rm != 0 {
            verdict += &format!("; window capped at the broker's Receive Maximum {rm}");
        }
        if ctx.aliases {
            verdict += &format!(
                "; alias-only PUBLISHes sent {}, received {}",
                thousands(st.aliased_sent.load(Relaxed)),
                thousands(st.aliased_received.load(Relaxed))
            );
        }
    }
    let summary = format!(
        "{}/{} in {dur:.3} s = {} msg/s, {verdict}",
        thousands(rx),
        thousands(expected),
        rate.map_or("-".into(), |r| thousands(r as u64)),
    );
    (ok, summary)
}

fn new_ctx(cli: &Cli, addr: SocketAddr, load: Load, round: u32) -> Arc<Ctx> {
    new_ctx_in(cli, addr, load, Proto::default(), round)
}

/// A message run's context, in the MQTT `proto` says.
fn new_ctx_in(cli: &Cli, addr: SocketAddr, load: Load, proto: Proto, round: u32) -> Arc<Ctx> {
    let mut ctx = make_ctx(cli, addr, load, round);
    if proto.v5 {
        ctx.login.v5 = Some(V5 {
            topic_alias_max: if proto.aliases { SUB_ALIAS_MAX } else { 0 },
        });
        ctx.aliases = proto.aliases;
    }
    Arc::new(ctx)
}

fn make_ctx(cli: &Cli, addr: SocketAddr, load: Load, round: u32) -> Ctx {
    Ctx {
        login: Login {
            addr,
            via: cli.via(),
            keepalive: cli.keepalive,
            user: cli.username.clone(),
            pass: cli.password.clone(),
            clean: true,
            v5: None,
        },
        persistent: load.persistent,
        retain: false,
        aliases: false,
        sub_addr: cli.sub_port.map(|p| SocketAddr::new(addr.ip(), p)),
        qos: load.qos,
        size: load.size as usize,
        window: load.window as usize,
        drain: Duration::from_secs_f64(cli.drain),
        keepalive: cli.keepalive,
        t0: Instant::now(),
        id_prefix: format!("b{}r{round}", std::process::id()),
        st: Stats::default(),
    }
}

async fn run_once(cli: &Cli, addr: SocketAddr, round: u32) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(cli.timeout);
    let mut out = Object::default();
    out.set("scenario", cli.scenario.name());
    out.set("label", cli.label.as_str());
    out.set("round", round);
    out.set("host", cli.host.as_str());
    out.set("port", cli.port.map(u32::from));
    out.set("transport", cli.transport.name());
    for k in [
        "qos",
        "ok",
        "timed_out",
        "error",
        "msgs_per_s",
        "lost",
        "duplicates",
        "p50_us",
        "p99_us",
        "max_us",
        "connect_s",
        "rss_per_conn_kb",
    ] {
        out.set(k, json::Value::Null);
    }
    let (ok, human, headline, timed_out) = match cli.scenario.clone() {
        Scenario::Table { .. } => unreachable!("main runs the table's scenarios one by one"),
        Scenario::Storm(args) => storm::run(cli, addr, round, &args, &mut out).await,
        Scenario::Devices(args) => {
            scale::devices(cli, addr, round, &args, deadline, &mut out).await
        }
        Scenario::Retained(args) => {
            scale::retained(cli, addr, round, &args, deadline, &mut out).await
        }
        Scenario::Startup(args) => scale::startup(cli, addr, &args, &mut out),
        Scenario::Fanin {
            load,
            proto,
            publishers,
            count,
        } => {
            let ctx = new_ctx_in(cli, addr, load, proto, round);
            let plan = Plan {
                filter: "bench/#".into(),
                subs: 1,
                topics: (0..publishers).map(|i| format!("bench/{i}")).collect(),
                count,
                rate: None,
                latency: false,
            };
            let ran = pubsub(&ctx, deadline, plan).await;
            let expected = u64::from(publishers) * count;
            let (ok, summary) = message_outcome(&ctx, &mut out, &ran, expected);
            set_load(&mut out, load);
            out.set("publishers", publishers);
            out.set("count", count);
            let human = format!(
                "fanin{} qos{}: {publishers} pubs x {} x {} B -> 1 sub on bench/#: received {summary}",
                proto.tag(),
                load.qos,
                thousands(count),
                load.size
            );
            (ok, human, json_num(&out, "msgs_per_s"), ran.timed_out)
        }
        Scenario::Fanout {
            load,
            proto,
            subscribers,
            count,
        } => {
            let ctx = new_ctx_in(cli, addr, load, proto, round);
            let plan = Plan {
                filter: "bench/fanout".into(),
                subs: subscribers,
                topics: vec!["bench/fanout".into()],
                count,
                rate: None,
                latency: false,
            };
            let ran = pubsub(&ctx, deadline, plan).await;
            let expected = u64::from(subscribers) * count;
            let (ok, summary) = message_outcome(&ctx, &mut out, &ran, expected);
            set_load(&mut out, load);
            out.set("subscribers", subscribers);
            out.set("count", count);
            let human = format!(
                "fanout{} qos{}: 1 pub x {} x {} B -> {subscribers} subs: delivered {summary}",
                proto.tag(),
                load.qos,
                thousands(count),
                load.size
            );
            (ok, human, json_num(&out, "msgs_per_s"), ran.timed_out)
        }
        Scenario::Latency {
            load,
            proto,
            rate,
            count,
        } => {
            let ctx = new_ctx_in(cli, addr, load, proto, round);
            let plan = Plan {
                filter: "bench/latency".into(),
                subs: 1,
                topics: vec!["bench/latency".into()],
                count,
                rate: Some(rate.max(0.001)),
                latency: true,
            };
            let ran = pubsub(&ctx, deadline, plan).await;
            let (ok, summary) = message_outcome(&ctx, &mut out, &ran, count);
            let mut l = std::mem::take(&mut *ctx.st.latencies.lock().unwrap());
            l.sort_unstable();
            set_load(&mut out, load);
            out.set("rate", rate);
            out.set("count", count);
            out.set("samples", l.len());
            for (k, p) in [
                ("p50_us", 50.0),
                ("p90_us", 90.0),
                ("p99_us", 99.0),
                ("p999_us", 99.9),
                ("max_us", 100.0),
            ] {
                out.set(k, percentile_us(&l, p));
            }
            let mean = (!l.is_empty())
                .then(|| round_to(l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0, 1));
            out.set("mean_us", mean);
            let us = |p| percentile_us(&l, p).map_or("-".into(), |v| format!("{v:.0}"));
            let human = format!(
                "latency{} qos{}: {} msgs at {rate}/s x {} B: p50 {} us, p99 {} us, max {} us; received {summary}",
                proto.tag(),
                load.qos,
                thousands(count),
                load.size,
                us(50.0),
                us(99.0),
                us(100.0),
            );
            (ok, human, percentile_us(&l, 50.0), ran.timed_out)
        }
        Scenario::Conns {
            connections,
            pid,
            concurrency,
            qos,
            idle,
        } => {
            out.set("qos", qos);
            let login = Login {
                addr,
                via: cli.via(),
                keepalive: cli.keepalive,
                user: cli.username.clone(),
                pass: cli.password.clone(),
                clean: true,
                v5: None,
            };
            let prefix = format!("b{}r{round}i", std::process::id());
            let (ok, human, timed_out) = conns(
                &login,
                &prefix,
                deadline,
                connections,
                pid,
                concurrency,
                qos,
                Duration::try_from_secs_f64(idle).unwrap_or(Duration::from_secs(6)),
                &mut out,
            )
            .await;
            (ok, human, json_num(&out, "connect_s"), timed_out)
        }
    };
    out.set("ok", ok);
    out.set("timed_out", timed_out);
    Outcome {
        json: out,
        human,
        ok,
        timed_out,
        headline,
    }
}

fn set_load(out: &mut Object, load: Load) {
    out.set("qos", load.qos);
    out.set("size", load.size);
    out.set("window", load.window);
}

fn json_num(out: &Object, key: &str) -> Option<f64> {
    out.get_num(key)
}

/// The broker's resident set size, from /proc/PID/status.
fn rss_kb(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| other(format!("cannot read /proc/{pid}/status: {e}")))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| other(format!("no VmRSS in /proc/{pid}/status")))
}

/// Open `n` idle connections (CONNECT + SUBSCRIBE idle/<i>), at most `concurrency` handshakes at
/// a time; time until all have their CONNACK and SUBACK; the broker's RSS before and after.
#[allow(clippy::too_many_arguments)]
async fn conns(
    login: &Login,
    prefix: &str,
    deadline: tokio::time::Instant,
    n: u64,
    pid: Option<u32>,
    concurrency: u64,
    qos: u8,
    idle: Duration,
    out: &mut Object,
) -> (bool, String, bool) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if limit < n + 64 {
        eprintln!(
            "warning: open-file limit {limit} is below {n} connections; raise it (ulimit -n {})",
            n + 1024
        );
    }
    out.set("connections", n);
    out.set("pid", pid);
    let rss0 = match pid.map(rss_kb).transpose() {
        Ok(v) => v,
        Err(e) => {
            out.set("error", e.to_string());
            return (false, format!("conns: error: {e}"), false);
        }
    };
    let login = Arc::new(login.clone());
    let sem = Arc::new(Semaphore::new(concurrency as usize));
    let t = Instant::now();
    let tasks: Vec<JoinHandle<io::Result<Conn>>> = (0..n)
        .map(|i| {
            let (login, sem, id) = (login.clone(), sem.clone(), format!("{prefix}{i}"));
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(other)?;
                let mut c = Conn::open(&login, &id, 256).await?;
                c.subscribe(&format!("idle/{i}"), qos).await?;
                Ok(c)
            })
        })
        .collect();
    let aborts: Vec<AbortHandle> = tasks.iter().map(|t| t.abort_handle()).collect();
    let (mut open, mut failed, mut first_err, mut timed_out) = (Vec::new(), 0u64, None, false);
    for task in tasks {
        match timeout_at(deadline, task).await {
            Ok(r) => match joined(r) {
                Ok(c) => open.push(c),
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert(e.to_string());
                }
            },
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    let connect_s = t.elapsed().as_secs_f64();
    for a in aborts {
        a.abort();
    }
    // Idle for a while before the broker's memory is read: what an idle connection costs, once
    // the broker has settled (mqtt-lab parks quiet connections after 5 s).
    out.set("idle_s", idle.as_secs_f64());
    sleep(idle).await;
    let rss1 = pid.and_then(|p| rss_kb(p).ok());
    let per_conn = match (rss0, rss1) {
        (Some(a), Some(b)) if !open.is_empty() => {
            Some(round_to((b as f64 - a as f64) / open.len() as f64, 2))
        }
        _ => None,
    };
    let connected = open.len() as u64;
    let closing: Vec<_> = open.into_iter().map(|c| tokio::spawn(c.close())).collect();
    for c in closing {
        let _ = c.await;
    }
    sleep(Duration::from_millis(500)).await;
    let rss2 = pid.and_then(|p| rss_kb(p).ok());
    let ok = !timed_out && failed == 0 && connected == n;
    out.set("connected", connected);
    out.set("failed", failed);
    out.set("lost", n - connected);
    out.set("first_error", first_err.clone());
    out.set("connect_s", round_to(connect_s, 4));
    out.set(
        "conns_per_s",
        (connect_s > 0.0).then(|| (connected as f64 / connect_s).round()),
    );
    out.set("rss_before_kb", rss0);
    out.set("rss_after_kb", rss1);
    out.set("rss_per_conn_kb", per_conn);
    out.set("rss_after_close_kb", rss2);
    if timed_out {
        out.set("error", "timed out while connecting");
    } else if let Some(e) = &first_err {
        out.set("error", format!("{failed} connections failed, first: {e}"));
    }
    let kb = |x: Option<u64>| x.map_or("?".to_string(), thousands);
    let verdict = if ok {
        String::new()
    } else if timed_out {
        " FAILED: TIMED OUT".into()
    } else {
        format!(
            " FAILED: {failed} failed ({})",
            first_err.unwrap_or_default()
        )
    };
    let human = format!(
        "conns: {}/{} connected + subscribed in {connect_s:.3} s ({}/s); broker RSS {} -> {} kB = {} kB/conn (after close {} kB){verdict}",
        thousands(connected),
        thousands(n),
        thousands((connected as f64 / connect_s.max(1e-9)) as u64),
        kb(rss0),
        kb(rss1),
        per_conn.map_or("?".into(), |v| format!("{v:.2}")),
        kb(rss2),
    );
    (ok, human, timed_out)
}

/// The broker's address: loopback only.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => Err(format!(
            "{host} ({}) is not a loopback address: bench only loads brokers on this machine",
            a.ip()
        )),
        None => addrs
            .first()
            .copied()
            .ok_or_else(|| format!("{host} resolved to no address")),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The suite `table` runs: a title and the scenario, at the defaults.
fn suite(pid: Option<u32>) -> Vec<(String, Scenario)> {
    let load = |qos| Load {
        qos,
        size: 64,
        window: 100,
        persistent: false,
    };
    let mut v = Vec::new();
    for qos in 0..=2 {
        let title = format!("fan-in QoS {qos}: 8 pubs x 10,000 x 64 B -> 1 sub (msg/s)");
        let s = Scenario::Fanin {
            load: load(qos),
            proto: Proto::default(),
            publishers: 8,
            count: 10_000,
        };
        v.push((title, s));
    }
    v.push((
        "fan-out QoS 0: 1 pub x 10,000 -> 32 subs (deliveries/s)".into(),
        Scenario::Fanout {
            load: load(0),
            proto: Proto::default(),
            subscribers: 32,
            count: 10_000,
        },
    ));
    for qos in 0..=1 {
        v.push((
            format!("latency QoS {qos}: 5,000 at 1,000 msg/s (p50 us)"),
            Scenario::Latency {
                load: load(qos),
                proto: Proto::default(),
                rate: 1000.0,
                count: 5000,
            },
        ));
    }
    v.push((
        "5,000 idle connections (s to connect)".into(),
        Scenario::Conns {
            connections: 5000,
            pid,
            concurrency: 100,
            qos: 0,
            idle: 8.0,
        },
    ));
    v
}

/// Runs the suite and prints a markdown table: the median headline figure of the rounds that
/// passed, how many failed, and the last passing round's full line (p99, max, lost, memory...).
fn table(cli: &Cli, addr: SocketAddr, rt: &tokio::runtime::Runtime, pid: Option<u32>) -> i32 {
    let mut code = 0;
    let mut rows = Vec::new();
    for (title, scenario) in suite(pid) {
        let mut one = cli.clone();
        one.scenario = scenario;
        let (mut heads, mut failed, mut last) = (Vec::new(), 0, String::new());
        for round in 1..=cli.rounds.max(1) {
            std::thread::sleep(Duration::from_millis(300));
            let o = rt.block_on(run_once(&one, addr, round));
            eprintln!("{}", o.human);
            println!("{}", o.json);
            match (o.ok, o.headline) {
                (true, Some(h)) => {
                    heads.push(h);
                    last = o.human;
                }
                _ => {
                    failed += 1;
                    code = code.max(if o.timed_out { 2 } else { 1 });
                }
            }
        }
        let med = median(heads).map_or("-".into(), |m| {
            if matches!(one.scenario, Scenario::Conns { .. }) {
                format!("{m:.3}")
            } else {
                thousands(m.round() as u64)
            }
        });
        rows.push(format!("| {title} | {med} | {failed} | {last} |"));
    }
    println!("\n| scenario | median | failed runs | last passing run |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    code
}

fn main() {
    let cli = Cli::parse();
    let fail = |msg: String| -> ! {
        eprintln!("bench: {msg}");
        std::process::exit(1);
    };
    let Some(port) = cli.port else {
        fail("--port is required".into());
    };
    if cli.password.is_some() && cli.username.is_none() {
        fail("MQTT 3.1.1 needs --username when --password is given".into());
    }
    if !(cli.timeout > 0.0 && cli.drain >= 0.0) {
        fail("--timeout must be > 0 and --drain >= 0".into());
    }
    if let Scenario::Latency { rate, .. } = cli.scenario
        && !(rate > 0.0 && rate.is_finite())
    {
        fail("--rate must be a positive number of messages per second".into());
    }
    let addr = resolve(&cli.host, port).unwrap_or_else(|e| fail(e));
    if matches!(cli.scenario, Scenario::Storm(_) | Scenario::Startup(_))
        && cli.transport != Transport::Tcp
    {
        fail(format!("{} runs over plain TCP only", cli.scenario.name()));
    }
    let via = Via::new(
        cli.transport,
        cli.cafile.as_deref(),
        &cli.server_name,
        &cli.ws_path,
    )
    .unwrap_or_else(|e| fail(e.to_string()));
    let mut cli = cli;
    cli.via = Some(via);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        rt.worker_threads(cli.threads);
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    let tag = if cli.label.is_empty() {
        String::new()
    } else {
        format!("[{}] ", cli.label)
    };
    if let Scenario::Table { pid } = cli.scenario {
        let code = table(&cli, addr, &rt, pid);
        rt.shutdown_background();
        std::process::exit(code);
    }
    let (mut code, mut headlines) = (0, Vec::new());
    for round in 1..=cli.rounds.max(1) {
        if round > 1 {
            // Let the broker finish closing the last round's connections.
            std::thread::sleep(Duration::from_millis(300));
        }
        let o = rt.block_on(run_once(&cli, addr, round));
        let round_tag = if cli.rounds > 1 {
            format!("(round {round}/{}) ", cli.rounds)
        } else {
            String::new()
        };
        eprintln!("{tag}{round_tag}{}", o.human);
        println!("{}", o.json);
        if o.timed_out {
            code = 2;
        } else if !o.ok && code == 0 {
            code = 1;
        }
        if o.ok {
            headlines.extend(o.headline);
        }
    }
    if cli.rounds > 1 {
        let what = match cli.scenario {
            Scenario::Fanin { .. } | Scenario::Fanout { .. } | Scenario::Devices(_) => "msg/s",
            Scenario::Retained(_) => "s to receive",
            Scenario::Startup(_) => "s to CONNACK",
            Scenario::Latency { .. } => "p50 us",
            Scenario::Conns { .. } => "s to connect",
            Scenario::Storm(_) => "p99 ratio",
            Scenario::Table { .. } => unreachable!("handled above"),
        };
        let failed = cli.rounds as usize - headlines.len();
        eprintln!(
            "{tag}{}: median of {} ok rounds: {} {what}; {failed} failed",
            cli.scenario.name(),
            headlines.len(),
            median(headlines).map_or("-".into(), |m| match cli.scenario {
                Scenario::Conns { .. } | Scenario::Retained(_) => format!("{m:.3}"),
                Scenario::Startup(_) => format!("{m:.4}"),
                _ => thousands(m.round() as u64),
            }),
        );
    }
    rt.shutdown_background();
    std::process::exit(code);
}
