//! Runs the broker on a tokio runtime in a background thread, and hands the window coalesced
//! snapshots of its state: at most ten a second, and none while nothing changes, so the window
//! can sleep when the broker is idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::broker::mdns::Advertiser;
use crate::broker::trace::Trace;
use crate::broker::{Broker, BrokerHandle, Config, Snapshot, StartError, Transport};

/// How often the window may get a new snapshot.
const SNAPSHOT_PERIOD: Duration = Duration::from_millis(100);

/// A snapshot with the message rates measured between it and the one before.
#[derive(Debug, Clone)]
pub struct Live {
    pub snapshot: Snapshot,
    pub messages_in_per_s: f64,
    pub messages_out_per_s: f64,
    /// When the snapshot was taken.
    pub taken: Instant,
}

/// Why the broker did not start, and the listener at fault if it was one (a port in use).
#[derive(Debug, Clone)]
pub struct StartFailure {
    pub text: String,
    pub door: Option<Transport>,
}

impl StartFailure {
    fn other(text: impl Into<String>) -> Self {
        StartFailure {
            text: text.into(),
            door: None,
        }
    }
}

/// A broker running in its own thread.
pub struct Running {
    pub addr: SocketAddr,
    /// Every listener, as bound (`mqtt://0.0.0.0:1883`, `ws://.../mqtt`, ...).
    pub urls: Vec<String>,
    /// Every listener as a client on another machine is given it: a broker bound to every
    /// address is shown at each of this machine's (`mqtt://192.168.1.20:1883`).
    pub client_urls: Vec<String>,
    /// The local CA TLS clients trust, with its fingerprint, when the app made it.
    pub ca: Option<(std::path::PathBuf, String)>,
    pub handle: BrokerHandle,
    /// What advertises the broker on the local network, when it is bound beyond loopback.
    pub advertiser: Option<Advertiser>,
    /// The packet trace, for the Trace panel.
    pub trace: Trace,
    /// The broker's runtime, where lab clients run.
    pub runtime: tokio::runtime::Handle,
    live: watch::Receiver<Option<Arc<Live>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts the broker; `repaint` is called (from the broker's thread) when there is a new
    /// snapshot. Returns why it did not start (a port in use, say), and which listener.
    pub fn start(
        config: Config,
        repaint: impl Fn() + Send + Sync + 'static,
    ) -> Result<Running, StartFailure> {
        let ca = config.tls_ca.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (live_tx, live) = watch::channel(None);
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mqtt-lab-broker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("mqtt-lab-broker")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(StartFailure::other(format!(
                            "cannot start the async runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let broker = match Broker::start(config).await {
                        Ok(b) => b,
                        Err(e) => {
                            let door = match &e {
                                StartError::Bind { .. } => Some(Transport::Tcp),
                                StartError::BindDoor { door, .. } => Some(*door),
                                _ => None,
                            };
                            let _ = started_tx.send(Err(StartFailure {
                                text: e.to_string(),
                                door,
                            }));
                            return;
                        }
                    };
                    let advertiser = broker.advertiser();
                    let started = (
                        broker.local_addr(),
                        broker.urls(),
                        broker.handle(),
                        advertiser.clone(),
                        broker.trace(),
                        tokio::runtime::Handle::current(),
                    );
                    let _ = started_tx.send(Ok(started));
                    let repaint = Arc::new(repaint);
                    let feeder = tokio::spawn(feed(
                        broker.handle(),
                        broker.stats(),
                        live_tx,
                        repaint.clone(),
                    ));
                    // A name the network changed ("NAME (2)") is shown without waiting for
                    // traffic.
                    let renamed = advertiser.map(|a| {
                        let mut watch = a.watch();
                        tokio::spawn(async move {
                            while watch.changed().await.is_ok() {
                                repaint();
                            }
                        })
                    });
                    let _ = stopped.await;
                    feeder.abort();
                    if let Some(r) = renamed {
                        r.abort();
                    }
                    broker.shutdown().await;
                });
            })
            .map_err(|e| StartFailure::other(format!("cannot start the broker thread: {e}")))?;
        let (addr, urls, handle, advertiser, trace, runtime) = started_rx
            .recv()
            .map_err(|_| StartFailure::other("the broker thread ended before starting"))??;
        Ok(Running {
            addr,
            client_urls: client_urls(&urls, own_addresses()),
            urls,
            ca,
            handle,
            advertiser,
            trace,
            runtime,
            live,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The newest snapshot if it is newer than the last one taken.
    pub fn take_new(&mut self) -> Option<Arc<Live>> {
        if self.live.has_changed().unwrap_or(false) {
            self.live.borrow_and_update().clone()
        } else {
            None
        }
    }

    /// Closes every connection, lets the broker write its files, and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Takes a snapshot whenever the broker's state changed since the last one, at most every
/// `SNAPSHOT_PERIOD`, and one more when traffic stops so the rates fall to zero.
async fn feed(
    handle: BrokerHandle,
    stats: Arc<crate::broker::Stats>,
    tx: watch::Sender<Option<Arc<Live>>>,
    repaint: Arc<impl Fn() + Send + Sync + 'static>,
) {
    let mut last_change = u64::MAX;
    let mut last: Option<(Instant, u64, u64)> = None;
    let mut moving = false;
    let mut tick = tokio::time::interval(SNAPSHOT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let change = stats.changes.load(Relaxed);
        if change == last_change && !moving {
            continue;
        }
        last_change = change;
        let Some(snapshot) = handle.snapshot().await else {
            return;
        };
        let now = Instant::now();
        let (pin, pout) = (snapshot.stats.publish_received, snapshot.stats.publish_sent);
        let (rate_in, rate_out) = match last {
            Some((t, i, o)) => {
                let dt = now.duration_since(t).as_secs_f64().max(1e-3);
                ((pin - i) as f64 / dt, (pout - o) as f64 / dt)
            }
            None => (0.0, 0.0),
        };
        moving = rate_in > 0.0 || rate_out > 0.0;
        last = Some((now, pin, pout));
        tx.send_replace(Some(Arc::new(Live {
            snapshot,
            messages_in_per_s: rate_in,
            messages_out_per_s: rate_out,
            taken: now,
        })));
        repaint();
    }
}

/// This machine's addresses beyond loopback, IPv4 first.
fn own_addresses() -> Vec<std::net::IpAddr> {
    let mut ips: Vec<_> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && !i.is_link_local())
        .map(|i| i.ip())
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips
}

/// `urls` with the unspecified address (`0.0.0.0`, `[::]`) replaced by each of `own` that a
/// client could use instead (IPv4 for `0.0.0.0`); kept as it is when there is none.
fn client_urls(urls: &[String], own: Vec<std::net::IpAddr>) -> Vec<String> {
    let mut out = Vec::new();
    for url in urls {
        let (any, v6) = if url.contains("://0.0.0.0:") {
            ("://0.0.0.0:", false)
        } else if url.contains("://[::]:") {
            ("://[::]:", true)
        } else {
            out.push(url.clone());
            continue;
        };
        let before = out.len();
        for ip in own.iter().filter(|ip| v6 || ip.is_ipv4()) {
            let host = match ip {
                std::net::IpAddr::V4(a) => format!("://{a}:"),
                std::net::IpAddr::V6(a) => format!("://[{a}]:"),
            };
            out.push(url.replace(any, &host));
        }
        if out.len() == before {
            out.push(url.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_to_everything_shows_this_machines_addresses() {
        let urls = vec![
            "mqtt://0.0.0.0:1883".to_owned(),
            "ws://0.0.0.0:9001/mqtt".to_owned(),
            "mqtts://127.0.0.1:8883".to_owned(),
        ];
        let own = vec!["192.168.1.20".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(
            client_urls(&urls, own),
            [
                "mqtt://192.168.1.20:1883",
                "ws://192.168.1.20:9001/mqtt",
                "mqtts://127.0.0.1:8883"
            ]
        );
        let v6 = vec!["[::]".to_owned()];
        assert_eq!(client_urls(&v6, vec![]), v6, "nothing to show instead");
        let v6 = vec!["mqtt://[::]:1883".to_owned()];
        let own = vec!["10.0.0.2".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(
            client_urls(&v6, own),
            ["mqtt://10.0.0.2:1883", "mqtt://[fd00::5]:1883"]
        );
        assert_eq!(
            client_urls(&["mqtt://0.0.0.0:1883".to_owned()], vec![]),
            ["mqtt://0.0.0.0:1883"]
        );
    }
}
