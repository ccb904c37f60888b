//! `storm`: a login storm beside a healthy authenticated QoS 1 pair.
//!
//! First the pair alone (its round-trip p50/p99), then `clients` tasks loop on CONNECT with a
//! wrong password (each waits for its CONNACK, as MQTT clients do, and reconnects at once); after
//! `warmup_secs` the pair logs in again and runs beside the storm, while a correct login is timed
//! every second and the broker's RSS is sampled. Then the RSS a while after the storm. The run passes when the pair lost nothing and
//! every correct login got in.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{Conn, Login, Via, other};
use super::json::Object;
use super::{Cli, Load, Plan, new_ctx, percentile_us, pubsub, rss_kb};
use crate::mqtt;

/// The storm's settings.
#[derive(clap::Args, Clone)]
pub struct StormArgs {
    /// Clients looping on a wrong password
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// Seconds the storm lasts
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    /// Seconds of the pair alone before the storm
    #[arg(long, default_value_t = 10)]
    pub baseline_secs: u64,
    /// Seconds from the storm's start before the pair and the correct logins are measured (the
    /// first burst, before any penalty, is the broker's worst moment; 0 measures it too)
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Seconds after the storm before the last memory reading
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
    /// The wrong password the storm uses (with --username)
    #[arg(long, default_value = "wrong")]
    pub bad_password: String,
    /// Every attempt tries another wrong password (a brute force), instead of the same one
    #[arg(long)]
    pub distinct: bool,
    /// QoS 1 messages per second of the healthy pair
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// The broker's PID, for its memory
    #[arg(long)]
    pub pid: Option<u32>,
}

/// The pair's QoS 1 round trips over `secs` seconds: (p50, p99) in µs, and whether all arrived.
async fn pair(
    cli: &Cli,
    addr: SocketAddr,
    round: u32,
    rate: f64,
    secs: u64,
) -> (Option<f64>, Option<f64>, bool, String) {
    let load = Load {
        qos: 1,
        size: 64,
        window: 100,
        persistent: false,
    };
    let ctx = new_ctx(cli, addr, load, round);
    let count = (rate * secs as f64).max(1.0) as u64;
    let plan = Plan {
        filter: "bench/latency".into(),
        subs: 1,
        topics: vec!["bench/latency".into()],
        count,
        rate: Some(rate),
        latency: true,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs * 3 + 30);
    let ran = pubsub(&ctx, deadline, plan).await;
    let received = ctx.st.received.load(Relaxed);
    let mut l = std::mem::take(&mut *ctx.st.latencies.lock().unwrap());
    l.sort_unstable();
    let ok = received == count && ran.error.is_none() && !ran.timed_out;
    let note = ran
        .error
        .unwrap_or_else(|| format!("{received}/{count} received"));
    (percentile_us(&l, 50.0), percentile_us(&l, 99.0), ok, note)
}

/// One wrong login: connect, CONNECT, the CONNACK's return code.
async fn wrong_login(addr: SocketAddr, id: &str, user: &str, pass: &str) -> io::Result<u8> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    mqtt::connect(&mut buf, id, 60, true, Some(user), Some(pass), None);
    s.write_all(&buf).await?;
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await?;
    if got[0] != 0x20 {
        return Err(other(format!("expected CONNACK, got {:#04x}", got[0])));
    }
    Ok(got[3])
}

pub async fn run(
    cli: &Cli,
    addr: SocketAddr,
    round: u32,
    a: &StormArgs,
    out: &mut Object,
) -> (bool, String, Option<f64>, bool) {
    let Some(user) = cli.username.clone() else {
        return (
            false,
            "storm needs --username and --password (the correct ones)".into(),
            None,
            false,
        );
    };
    let rss = |pid: Option<u32>| pid.and_then(|p| rss_kb(p).ok());
    let rss_before = rss(a.pid);
    let (base50, base99, base_ok, base_note) =
        pair(cli, addr, round, a.rate, a.baseline_secs).await;

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let codes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let (stop, attempts, codes) = (stop.clone(), attempts.clone(), codes.clone());
        let (user, pass, distinct) = (user.clone(), a.bad_password.clone(), a.distinct);
        let id = format!("storm{}r{round}c{i}", std::process::id());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                n += 1;
                let pass = if distinct {
                    format!("{pass}-{i}-{n}")
                } else {
                    pass.clone()
                };
                let key = match wrong_login(addr, &id, &user, &pass).await {
                    Ok(code) => format!("connack_{code:#04x}"),
                    Err(e) => format!("error: {}", e.kind()),
                };
                attempts.fetch_add(1, Relaxed);
                *codes.lock().unwrap().entry(key).or_default() += 1;
            }
        }));
    }
    // Memory, sampled while the storm lasts.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, pid) = (stop.clone(), peak.clone(), a.pid);
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                if let Some(kb) = rss(pid) {
                    peak.fetch_max(kb, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(a.warmup_secs)).await;
    // A correct login every second.
    let prober = {
        let stop = stop.clone();
        let login = Login {
            addr,
            via: Via::tcp(),
            keepalive: 60,
            user: cli.username.clone(),
            pass: cli.password.clone(),
            clean: true,
            v5: None,
        };
        let id = format!("good{}r{round}", std::process::id());
        tokio::spawn(async move {
            let (mut times, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Relaxed) {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(30), Conn::open(&login, &id, 1024))
                    .await
                {
                    Ok(Ok(c)) => {
                        times.push(t.elapsed().as_nanos() as u64);
                        c.close().await;
                    }
                    Ok(Err(e)) => failures.push(e.to_string()),
                    Err(_) => failures.push("no CONNACK within 30 s".into()),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (times, failures)
        })
    };
    let (storm50, storm99, storm_ok, storm_note) = pair(cli, addr, round, a.rate, a.secs).await;
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = sampler.await;
    let (mut login_ns, login_failures) = prober.await.unwrap_or_default();
    login_ns.sort_unstable();
    let rss_storm = (peak.load(Relaxed) > 0).then(|| peak.load(Relaxed));
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    let rss_after = rss(a.pid);

    let ms = |us: Option<f64>| us.map(|v| v / 1000.0);
    let login_max_ms = login_ns.last().map(|&n| n as f64 / 1e6);
    let login_p50_ms = percentile_us(&login_ns, 50.0).map(|v| v / 1000.0);
    out.set("clients", a.clients);
    out.set("distinct", a.distinct);
    out.set("storm_s", a.secs);
    out.set("attempts", attempts.load(Relaxed));
    for (k, v) in codes.lock().unwrap().iter() {
        out.set(Box::leak(k.clone().into_boxed_str()), *v);
    }
    out.set("p50_us", storm50);
    out.set("p99_us", storm99);
    out.set("baseline_p50_us", base50);
    out.set("baseline_p99_us", base99);
    let ratio = match (storm99, base99) {
        (Some(s), Some(b)) if b > 0.0 => Some((s / b * 100.0).round() / 100.0),
        _ => None,
    };
    out.set("p99_ratio", ratio);
    out.set("good_logins", login_ns.len() as u64);
    out.set("good_login_failures", login_failures.len() as u64);
    out.set("good_login_p50_ms", login_p50_ms);
    out.set("good_login_max_ms", login_max_ms);
    out.set("rss_before_kb", rss_before);
    out.set("rss_storm_peak_kb", rss_storm);
    out.set("rss_after_kb", rss_after);
    let ok = base_ok && storm_ok && login_failures.is_empty() && !login_ns.is_empty();
    out.set(
        "error",
        (!ok).then(|| {
            format!("baseline: {base_note}; storm: {storm_note}; logins: {login_failures:?}")
        }),
    );
    let mb = |kb: Option<u64>| kb.map_or("-".into(), |k| format!("{:.0} MB", k as f64 / 1024.0));
    let human = format!(
        "storm{}: {} clients x {} s, {} wrong logins ({:?}); pair p50/p99 {:.2}/{:.2} ms (alone {:.2}/{:.2} ms, p99 ratio {}); correct login p50 {} ms, max {} ms, {} failed; RSS {} -> peak {} -> {} after {} s{}",
        if a.distinct {
            " (distinct passwords)"
        } else {
            ""
        },
        a.clients,
        a.secs,
        attempts.load(Relaxed),
        codes.lock().unwrap(),
        ms(storm50).unwrap_or(f64::NAN),
        ms(storm99).unwrap_or(f64::NAN),
        ms(base50).unwrap_or(f64::NAN),
        ms(base99).unwrap_or(f64::NAN),
        ratio.map_or("-".into(), |r| format!("{r:.2}")),
        login_p50_ms.map_or("-".into(), |v| format!("{v:.1}")),
        login_max_ms.map_or("-".into(), |v| format!("{v:.1}")),
        login_failures.len(),
        mb(rss_before),
        mb(rss_storm),
        mb(rss_after),
        a.settle_secs,
        if ok {
            String::new()
        } else {
            format!("; FAILED: baseline {base_note}, storm {storm_note}")
        },
    );
    (ok, human, ratio, false)
}
