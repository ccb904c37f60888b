//! Loads at scale (scripts/bench-scale.sh): many clients, many topics, many retained messages.
//!
//! - `devices`: N clients each subscribed to its own `devices/<id>/#`, P publishers sending each
//!   message to a device picked at random (`devices/<id>/temperature`): every message must reach
//!   its one device, once.
//! - `retained`: loaders retain one message on each of N topics (QoS 1, every PUBACK awaited),
//!   then a new client subscribes to `#`: the time until it has all N retained messages.
//! - `startup`: starts a broker, times it until a client's CONNECT is answered, stops it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{Semaphore, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{sleep, timeout_at};

use super::conn::{Conn, other};
use super::json::Object;
use super::{
    BUSY, Cli, Ctx, Load, Ran, finish_within, joined, make_ctx, message_outcome, publisher,
    round_to, thousands, within,
};
use crate::mqtt;

#[derive(clap::Args, Clone)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub load: Load,
    /// Device clients, each subscribed to its own devices/<id>/#
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub clients: u32,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub publishers: u32,
    /// Messages per publisher, each to a device picked at random
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub count: u64,
    /// Connection handshakes in flight at once while the devices connect
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
}

#[derive(clap::Args, Clone)]
pub struct RetainedArgs {
    /// Retained topics, retained/<i / 1000>/<i % 1000> (the broker's topic list must hold them)
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub topics: u64,
    /// Connections that retain the messages, topic i from loader i % loaders
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub loaders: u32,
    /// QoS of the `#` subscription (the messages are retained at QoS 1)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Payload bytes (at least 16)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub size: u64,
    /// Most unacknowledged publishes per loader
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub window: u64,
    /// The broker holds them already (an earlier `retained` run with the same --topics and
    /// --loaders): only subscribe
    #[arg(long)]
    pub loaded: bool,
}

#[derive(clap::Args, Clone)]
pub struct StartupArgs {
    /// The broker's command line. With --port 0 the port is read from its listening line
    /// ("listening on mqtt://HOST:PORT", as mqtt-lab prints it); otherwise --port is tried
    /// every millisecond until it answers
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The device that publisher `index`'s message `seq` goes to: random-looking (splitmix64), yet
/// the subscriber can tell from the payload alone which device should have had it.
fn device_of(index: u32, seq: u64, clients: u32) -> u32 {
    let mut z = ((u64::from(index) << 40) | seq).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(clients)) as u32
}

pub fn retained_topic(i: u64) -> String {
    format!("retained/{}/{}", i / 1000, i % 1000)
}

/// One bit per message, set by whichever subscriber gets it: a second setting is a duplicate,
/// wherever it arrives.
struct Seen(Vec<AtomicU64>);

impl Seen {
    fn new(n: u64) -> Seen {
        Seen((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    /// True the first time.
    fn set(&self, bit: u64) -> bool {
        let mask = 1u64 << (bit % 64);
        self.0[(bit / 64) as usize].fetch_or(mask, Relaxed) & mask == 0
    }
}

struct Fleet {
    topics: Arc<Vec<String>>,
    publishers: u32,
    count: u64,
    clients: u32,
    seen: Seen,
}

/// Device `id`'s subscriber: checks that each message is one of the publishers', meant for this
/// device, and new; PUBACKs QoS 1. Runs until `stop`.
async fn device(
    mut c: Conn,
    ctx: Arc<Ctx>,
    fleet: Arc<Fleet>,
    id: u32,
    granted: u8,
    mut stop: watch::Receiver<bool>,
) -> io::Result<Conn> {
    let own = fleet.topics[id as usize].as_bytes();
    let deliver_qos = ctx.qos.min(granted);
    let ping_every = Duration::from_secs((u64::from(ctx.keepalive) / 2).max(1));
    // One timer per device for its pings: it never fires in a run shorter than the keepalive.
    let ping = sleep(ping_every);
    tokio::pin!(ping);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = c.fill() => r?,
            _ = &mut ping => {
                mqtt::pingreq(&mut c.wbuf);
                ping.as_mut().reset(tokio::time::Instant::now() + ping_every);
            }
        }
        let now = ctx.ns();
        let (mut n, mut dups, mut corrupt, mut bad) = (0u64, 0u64, 0u64, 0u64);
        c.drain(|p, w| {
            match p.kind {
                mqtt::PUBLISH => {
                    let m = p.publish().map_err(other)?;
                    if m.qos == 1 {
                        mqtt::ack(w, mqtt::PUBACK, m.pid);
                    }
                    bad += u64::from(m.qos != deliver_qos);
                    let pl = m.payload;
                    if pl.len() != ctx.size || m.topic != own {
                        corrupt += 1;
                        return Ok(());
                    }
                    let index = u32::from_be_bytes(pl[0..4].try_into().unwrap());
                    let seq = u64::from(u32::from_be_bytes(pl[4..8].try_into().unwrap()));
                    if index >= fleet.publishers
                        || seq >= fleet.count
                        || device_of(index, seq, fleet.clients) != id
                    {
                        corrupt += 1;
                        return Ok(());
                    }
                    if fleet.seen.set(u64::from(index) * fleet.count + seq) {
                        n += 1;
                    } else {
                        dups += 1;
                    }
                }
                mqtt::PINGRESP => {}
                _ => bad += 1,
            }
            Ok(())
        })?;
        let st = &ctx.st;
        if n > 0 {
            st.received.fetch_add(n, Relaxed);
            st.last_rx_ns.fetch_max(now, Relaxed);
        }
        for (counter, v) in [
            (&st.duplicates, dups),
            (&st.corrupt, corrupt),
            (&st.protocol_errors, bad),
        ] {
            if v > 0 {
                counter.fetch_add(v, Relaxed);
            }
        }
        c.flush().await?;
    }
    Ok(c)
}

/// `devices`: connect the devices (not timed), then the publishers; the figure is messages
/// delivered per second from the first publish to the last delivery.
pub async fn devices(
    cli: &Cli,
    addr: SocketAddr,
    round: u32,
    a: &DevicesArgs,
    deadline: tokio::time::Instant,
    out: &mut Object,
) -> (bool, String, Option<f64>, bool) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if limit < u64::from(a.clients) + 64 {
        eprintln!(
            "warning: open-file limit {limit} is below {} connections; raise it (ulimit -n)",
            a.clients
        );
    }
    let ctx = Arc::new(make_ctx(cli, addr, a.load, round));
    let expected = u64::from(a.publishers) * a.count;
    let fleet = Arc::new(Fleet {
        topics: Arc::new(
            (0..a.clients)
                .map(|i| format!("devices/{i}/temperature"))
                .collect(),
        ),
        publishers: a.publishers,
        count: a.count,
        clients: a.clients,
        seen: Seen::new(expected),
    });
    let mut ran = Ran {
        start_ns: 0,
        tls: None,
        granted: None,
        timed_out: false,
        error: None,
    };
    let t_setup = Instant::now();
    let sem = Arc::new(Semaphore::new(a.concurrency as usize));
    let connecting: Vec<JoinHandle<io::Result<(Conn, u8)>>> = (0..a.clients)
        .map(|i| {
            let (login, sem) = (ctx.login.clone(), sem.clone());
            let id = format!("{}d{i}", ctx.id_prefix);
            let qos = a.load.qos;
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(other)?;
                let mut c = Conn::open(&login, &id, 2048).await?;
                let g = c.subscribe(&format!("devices/{i}/#"), qos).await?;
                Ok((c, g))
            })
        })
        .collect();
    let connect_aborts: Vec<AbortHandle> = connecting.iter().map(|t| t.abort_handle()).collect();
    let mut subs = Vec::with_capacity(a.clients as usize);
    let mut pubs = Vec::new();
    let setup = async {
        for t in connecting {
            let (c, g) = within(deadline, "connecting the devices", async {
                joined(t.await)
            })
            .await?;
            ran.granted = Some(ran.granted.map_or(g, |m: u8| m.min(g)));
            subs.push((c, g));
        }
        for i in 0..a.publishers {
            let id = format!("{}p{i}", ctx.id_prefix);
            pubs.push(within(deadline, "connecting", Conn::open(&ctx.login, &id, BUSY)).await?);
        }
        Ok::<_, io::Error>(())
    };
    let setup = setup.await;
    let setup_s = t_setup.elapsed().as_secs_f64();
    out.set("setup_s", round_to(setup_s, 3));
    if let Err(e) = setup {
        for h in connect_aborts {
            h.abort();
        }
        ran.timed_out = e.kind() == io::ErrorKind::TimedOut;
        ran.error = Some(e.to_string());
    } else {
        run_devices(&ctx, &fleet, a, deadline, subs, pubs, &mut ran).await;
    }
    let (ok, summary) = message_outcome(&ctx, out, &ran, expected);
    out.set("qos", a.load.qos);
    out.set("size", a.load.size);
    out.set("window", a.load.window);
    out.set("clients", a.clients);
    out.set("publishers", a.publishers);
    out.set("count", a.count);
    let human = format!(
        "devices qos{}: {} pubs x {} x {} B -> {} devices on devices/<id>/# (set up in {setup_s:.1} s): delivered {summary}",
        a.load.qos,
        a.publishers,
        thousands(a.count),
        a.load.size,
        thousands(u64::from(a.clients)),
    );
    let rate = out.get_num("msgs_per_s");
    (ok, human, rate, ran.timed_out)
}

async fn run_devices(
    ctx: &Arc<Ctx>,
    fleet: &Arc<Fleet>,
    a: &DevicesArgs,
    deadline: tokio::time::Instant,
    subs: Vec<(Conn, u8)>,
    pubs: Vec<Conn>,
    ran: &mut Ran,
) {
    let expected = u64::from(a.publishers) * a.count;
    let (stop_tx, stop_rx) = watch::channel(false);
    ran.start_ns = ctx.ns();
    let sub_tasks: Vec<JoinHandle<io::Result<Conn>>> = subs
        .into_iter()
        .enumerate()
        .map(|(i, (c, g))| {
            let (ctx, fleet, stop) = (ctx.clone(), fleet.clone(), stop_rx.clone());
            tokio::spawn(device(c, ctx, fleet, i as u32, g, stop))
        })
        .collect();
    let clients = a.clients;
    let pub_tasks: Vec<JoinHandle<io::Result<Conn>>> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (ctx, topics) = (ctx.clone(), fleet.topics.clone());
            let index = i as u32;
            let pick = move |seq| device_of(index, seq, clients) as usize;
            tokio::spawn(publisher(c, ctx, index, topics, pick, a.count, None))
        })
        .collect();
    let aborts: Vec<AbortHandle> = sub_tasks
        .iter()
        .chain(&pub_tasks)
        .map(|t| t.abort_handle())
        .collect();
    let st = &ctx.st;
    let finish = async {
        let mut open = Vec::new();
        for t in pub_tasks {
            open.push(joined(t.await)?);
        }
        st.pubs_done_ns.store(ctx.ns().max(1), Relaxed);
        // Everything in, or nothing new for `drain` since the publishers finished.
        loop {
            if st.received.load(Relaxed) >= expected {
                st.subs_done_ns.store(ctx.ns(), Relaxed);
                // A little longer, so that a copy sent twice is seen.
                sleep(Duration::from_millis(200)).await;
                break;
            }
            let last = st
                .pubs_done_ns
                .load(Relaxed)
                .max(st.last_rx_ns.load(Relaxed));
            if ctx.ns().saturating_sub(last) >= ctx.drain.as_nanos() as u64 {
                break;
            }
            sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        for t in sub_tasks {
            open.push(joined(t.await)?);
        }
        Ok::<_, io::Error>(open)
    };
    finish_within(deadline, finish, aborts, ran).await;
}

/// `retained`: the load (unless --loaded), then the `#` subscriber.
pub async fn retained(
    cli: &Cli,
    addr: SocketAddr,
    round: u32,
    a: &RetainedArgs,
    deadline: tokio::time::Instant,
    out: &mut Object,
) -> (bool, String, Option<f64>, bool) {
    let n = a.topics;
    let names: Arc<Vec<String>> = Arc::new((0..n).map(retained_topic).collect());
    out.set("topics", n);
    out.set("loaders", a.loaders);
    out.set("qos", a.qos);
    out.set("size", a.size);
    out.set("loaded", a.loaded);
    let mut load_human = String::new();
    if !a.loaded {
        match load_retained(cli, addr, round, a, &names, deadline).await {
            Ok(secs) => {
                out.set("load_s", round_to(secs, 3));
                out.set("load_msgs_per_s", (n as f64 / secs).round());
                load_human = format!(
                    "retained {} in {secs:.2} s ({} msg/s), then ",
                    thousands(n),
                    thousands((n as f64 / secs) as u64)
                );
            }
            Err(e) => {
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                out.set("error", format!("loading: {e}"));
                out.set("lost", n);
                out.set("expected", n);
                return (
                    false,
                    format!("retained: loading FAILED: {e}"),
                    None,
                    timed_out,
                );
            }
        }
    }
    let load = Load {
        qos: a.qos,
        size: a.size,
        window: 100,
        persistent: false,
    };
    let ctx = Arc::new(make_ctx(cli, addr, load, round));
    let mut ran = Ran {
        start_ns: 0,
        tls: None,
        granted: None,
        timed_out: false,
        error: None,
    };
    let mut first_ns = 0;
    if let Err(e) = hash_subscriber(&ctx, a, &names, deadline, &mut ran, &mut first_ns).await {
        ran.timed_out = e.kind() == io::ErrorKind::TimedOut;
        ran.error = Some(e.to_string());
    }
    let (ok, summary) = message_outcome(&ctx, out, &ran, n);
    // The headline: SUBSCRIBE sent to the last retained message in.
    let secs = out.get_num("duration_s").filter(|_| ok);
    out.set("retained_s", secs);
    // How long the broker took before the first message: the part of the figure that is
    // matching and queueing rather than sending.
    let first_s = (first_ns > 0).then(|| (first_ns - ran.start_ns) as f64 / 1e9);
    out.set("first_s", first_s.map(|s| round_to(s, 4)));
    let human = format!(
        "retained: {load_human}a new subscriber on # (QoS {}, first message after {}) received {summary}",
        a.qos,
        first_s.map_or("-".into(), |s| format!("{:.1} ms", s * 1e3)),
    );
    (ok, human, secs, ran.timed_out)
}

/// Retain one message on each topic (QoS 1), wait for every PUBACK, and then for a SUBACK on
/// each loader's connection: a broker that acknowledges before it has stored may still be
/// storing at PUBACK, but it answers a later SUBSCRIBE on the same connection in order.
async fn load_retained(
    cli: &Cli,
    addr: SocketAddr,
    round: u32,
    a: &RetainedArgs,
    names: &Arc<Vec<String>>,
    deadline: tokio::time::Instant,
) -> io::Result<f64> {
    let load = Load {
        qos: 1,
        size: a.size,
        window: a.window,
        persistent: false,
    };
    let ctx = Arc::new(Ctx {
        retain: true,
        ..make_ctx(cli, addr, load, round)
    });
    let n = a.topics;
    let loaders = u64::from(a.loaders).min(n);
    let mut conns = Vec::new();
    for i in 0..loaders {
        let id = format!("{}l{i}", ctx.id_prefix);
        conns.push(within(deadline, "connecting", Conn::open(&ctx.login, &id, BUSY)).await?);
    }
    let t = Instant::now();
    let tasks: Vec<JoinHandle<io::Result<Conn>>> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let i = i as u64;
            let count = (n - i).div_ceil(loaders);
            let pick = move |seq: u64| (seq * loaders + i) as usize;
            tokio::spawn(publisher(
                c,
                ctx.clone(),
                i as u32,
                names.clone(),
                pick,
                count,
                None,
            ))
        })
        .collect();
    let aborts: Vec<AbortHandle> = tasks.iter().map(|t| t.abort_handle()).collect();
    let done = within(deadline, "retaining", async {
        let mut open = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let mut c = joined(t.await)?;
            c.subscribe(&names[i], 0).await?;
            open.push(c);
        }
        Ok(open)
    })
    .await;
    for h in aborts {
        h.abort();
    }
    let secs = t.elapsed().as_secs_f64();
    for c in done? {
        c.close().await;
    }
    let acked = ctx.st.acked.load(Relaxed);
    if acked != n {
        return Err(other(format!(
            "{acked} of {n} retained messages acknowledged"
        )));
    }
    Ok(secs)
}

/// A new client subscribes to `#` and takes every retained message: each must carry the retain
/// flag, and every topic must come once.
async fn hash_subscriber(
    ctx: &Arc<Ctx>,
    a: &RetainedArgs,
    names: &Arc<Vec<String>>,
    deadline: tokio::time::Instant,
    ran: &mut Ran,
    first_ns: &mut u64,
) -> io::Result<()> {
    let n = a.topics;
    let loaders = u64::from(a.loaders).min(n);
    let id = format!("{}h", ctx.id_prefix);
    let mut c = within(deadline, "connecting", Conn::open(&ctx.login, &id, BUSY)).await?;
    let seen = Seen::new(n);
    let mut unique = 0u64;
    let st = &ctx.st;
    ran.start_ns = ctx.ns();
    mqtt::subscribe(&mut c.wbuf, 1, "#", a.qos);
    c.flush().await?;
    let drain = ctx.drain;
    while unique < n {
        match timeout_at(deadline, tokio::time::timeout(drain, c.fill())).await {
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out while receiving",
                ));
            }
            // Nothing for `drain`: what is missing is not coming.
            Ok(Err(_)) => break,
            Ok(Ok(r)) => r?,
        }
        let now = ctx.ns();
        let (mut new, mut dups, mut corrupt, mut bad) = (0u64, 0u64, 0u64, 0u64);
        let mut refused = None;
        c.drain(|p, w| {
            match p.kind {
                mqtt::PUBLISH => {
                    let m = p.publish().map_err(other)?;
                    if m.qos == 1 {
                        mqtt::ack(w, mqtt::PUBACK, m.pid);
                    }
                    bad += u64::from(m.qos != a.qos || !m.retain);
                    let pl = m.payload;
                    if pl.len() != ctx.size {
                        corrupt += 1;
                        return Ok(());
                    }
                    let index = u64::from(u32::from_be_bytes(pl[0..4].try_into().unwrap()));
                    let seq = u64::from(u32::from_be_bytes(pl[4..8].try_into().unwrap()));
                    let t = seq * loaders + index;
                    if index >= loaders || t >= n || m.topic != names[t as usize].as_bytes() {
                        corrupt += 1;
                        return Ok(());
                    }
                    if seen.set(t) {
                        new += 1;
                    } else {
                        dups += 1;
                    }
                }
                mqtt::SUBACK => match p.body.get(2) {
                    Some(&g) if g <= 2 => ran.granted = Some(g),
                    g => refused = Some(format!("SUBSCRIBE to # refused (SUBACK {g:?})")),
                },
                mqtt::PINGRESP => {}
                _ => bad += 1,
            }
            Ok(())
        })?;
        if let Some(e) = refused {
            return Err(other(e));
        }
        if new > 0 {
            if unique == 0 {
                *first_ns = now;
            }
            unique += new;
            st.received.fetch_add(new, Relaxed);
            st.last_rx_ns.fetch_max(now, Relaxed);
        }
        st.duplicates.fetch_add(dups, Relaxed);
        st.corrupt.fetch_add(corrupt, Relaxed);
        st.protocol_errors.fetch_add(bad, Relaxed);
        c.flush().await?;
    }
    st.subs_done_ns.store(ctx.ns(), Relaxed);
    c.close().await;
    Ok(())
}

/// `startup`: start the broker, connect as soon as it can be known to listen, and time the
/// CONNACK; then SIGTERM it and wait for it to exit (SIGKILL after 5 s).
pub fn startup(
    cli: &Cli,
    addr: SocketAddr,
    a: &StartupArgs,
    out: &mut Object,
) -> (bool, String, Option<f64>, bool) {
    let deadline = Instant::now() + Duration::from_secs_f64(cli.timeout);
    let read_line = addr.port() == 0;
    let t0 = Instant::now();
    let child = Command::new(&a.command[0])
        .args(&a.command[1..])
        .stdin(Stdio::null())
        .stdout(if read_line {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let e = format!("cannot start {}: {e}", a.command[0]);
            out.set("error", e.clone());
            return (false, format!("startup: FAILED: {e}"), None, false);
        }
    };
    out.set("pid", child.id());
    let r = (|| -> io::Result<(f64, Option<f64>)> {
        let mut port = addr.port();
        let mut listening_s = None;
        if read_line {
            let stdout = child.stdout.take().expect("piped");
            let (tx, rx) = std::sync::mpsc::channel();
            // Reads to the end, so that the broker never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(p) = line
                        .split_once("listening on mqtt://")
                        .and_then(|(_, a)| a.rsplit_once(':'))
                        .and_then(|(_, p)| p.trim().parse::<u16>().ok())
                    {
                        let _ = tx.send(p);
                    }
                }
            });
            let wait = deadline.saturating_duration_since(Instant::now());
            port = rx
                .recv_timeout(wait)
                .map_err(|_| other("no \"listening on mqtt://HOST:PORT\" line from the broker"))?;
            listening_s = Some(t0.elapsed().as_secs_f64());
        }
        let to = SocketAddr::new(addr.ip(), port);
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(other(format!("the broker exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no CONNACK before the timeout",
                ));
            }
            match connack(to) {
                Ok(()) => return Ok((t0.elapsed().as_secs_f64(), listening_s)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    })();
    let t_stop = Instant::now();
    // SAFETY: kill(2) on the PID of a child this process started and has not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut stopped = None;
    while t_stop.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(s)) = child.try_wait() {
            stopped = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let stop_s = t_stop.elapsed().as_secs_f64();
    if stopped.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        out.set(
            "error",
            "the broker did not stop within 5 s of SIGTERM: killed",
        );
    }
    out.set("stop_s", round_to(stop_s, 3));
    match r {
        Ok((start_s, listening_s)) => {
            out.set("start_s", round_to(start_s, 4));
            out.set("listening_s", listening_s.map(|s| round_to(s, 4)));
            let ok = stopped.is_some();
            let human = format!(
                "startup: CONNACK {:.1} ms after the start{}; stopped in {:.0} ms{}",
                start_s * 1e3,
                listening_s.map_or(String::new(), |s| format!(
                    " (listening line at {:.1} ms)",
                    s * 1e3
                )),
                stop_s * 1e3,
                if ok { "" } else { " FAILED: killed" },
            );
            (ok, human, Some(start_s), false)
        }
        Err(e) => {
            out.set("error", e.to_string());
            let timed_out = e.kind() == io::ErrorKind::TimedOut;
            (false, format!("startup: FAILED: {e}"), None, timed_out)
        }
    }
}

/// One CONNECT, answered by a CONNACK that accepts it, then DISCONNECT.
fn connack(to: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect(to)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = BytesMut::new();
    mqtt::connect(
        &mut buf,
        &format!("b{}start", std::process::id()),
        60,
        true,
        None,
        None,
        None,
    );
    s.write_all(&buf)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)
        .map_err(|e| other(format!("no CONNACK: {e}")))?;
    if ack[0] >> 4 != mqtt::CONNACK || ack[3] != 0 {
        return Err(other(format!("expected an accepting CONNACK, got {ack:?}")));
    }
    buf.clear();
    mqtt::disconnect(&mut buf);
    s.write_all(&buf)?;
    Ok(())
}
