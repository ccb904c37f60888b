//! The parking lot: idle plain-TCP connections wait here without a task of their own.
//!
//! An idle connection used to cost its tokio task (about 900 B: the future of its read-or-write
//! loop, sized for its busiest moment) and its socket's registration with tokio's reactor
//! (256 B), most of what it cost in all. A connection quiet for `--park-after` hands its socket
//! and the state it keeps between packets to the lot, and its task ends. One task here watches
//! every parked socket through an epoll set of its own (mio, which tokio is built on: the kernel
//! keeps that set, not our heap), every parked connection's channel from the router through a
//! waker, and their keepalive deadlines; whatever comes first gives the connection a task again.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use mio::{Interest, Token};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::stats::Stats;

/// A connection's state while parked: what the lot needs of it.
pub(crate) trait Parked: Send + 'static {
    /// Ready once the router has something for the connection, or let it go.
    fn poll_outbox(&self, cx: &mut Context<'_>) -> Poll<()>;
    /// When its keepalive runs out, if it has one.
    fn deadline(&self) -> Option<Instant>;
    /// Gives it a task again, on its socket.
    fn resume(self: Box<Self>, stream: std::net::TcpStream);
}

/// The shortest quiet time before a connection parks.
pub(crate) const MIN_AFTER: Duration = Duration::from_millis(100);

/// Where connections park; shared by the connection tasks and the lot's own task.
pub(crate) struct Lot {
    inbox: Mutex<Inbox>,
    notify: Notify,
    /// How long a connection is quiet before it parks.
    pub after: Duration,
    /// Where the number parked is shown.
    stats: Arc<Stats>,
}

/// What the lot's task has not seen yet. Bounded: a connection is in `arriving` once, and a
/// parked connection's waker is in `woken` at most once for each time the lot polls its channel.
#[derive(Default)]
struct Inbox {
    arriving: Vec<(std::net::TcpStream, Box<dyn Parked>)>,
    woken: Vec<u64>,
    /// The lot's task has ended (the broker is stopping): nothing parks any more.
    closed: bool,
}

impl Lot {
    /// `after` is at least `MIN_AFTER`: shorter, a connection would park and wake again
    /// between every two packets.
    pub fn new(after: Duration, stats: Arc<Stats>) -> Arc<Lot> {
        Arc::new(Lot {
            inbox: Mutex::new(Inbox::default()),
            notify: Notify::new(),
            after: after.max(MIN_AFTER),
            stats,
        })
    }

    /// The lot has stopped (or never started): connections keep their tasks.
    pub fn is_closed(&self) -> bool {
        self.inbox().closed
    }

    /// Stops taking connections; those on their way in are given back.
    fn close(&self) -> Vec<(std::net::TcpStream, Box<dyn Parked>)> {
        let mut inbox = self.inbox();
        inbox.closed = true;
        std::mem::take(&mut inbox.arriving)
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding it; a poisoned inbox is still a sound one.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks a connection; handed back when the lot has stopped.
    pub fn park(
        &self,
        stream: std::net::TcpStream,
        parked: Box<dyn Parked>,
    ) -> Result<(), (std::net::TcpStream, Box<dyn Parked>)> {
        let mut inbox = self.inbox();
        if inbox.closed {
            return Err((stream, parked));
        }
        inbox.arriving.push((stream, parked));
        drop(inbox);
        self.notify.notify_one();
        Ok(())
    }
}

/// A parked connection's place: its slot and that slot's generation, so that a waker or an
/// event left over from the slot's last tenant wakes nobody.
fn key(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

/// Wakes the lot for one parked connection whose channel has something.
struct SlotWaker {
    key: u64,
    lot: Arc<Lot>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.lot.inbox().woken.push(self.key);
        self.lot.notify.notify_one();
    }
}

struct Slot {
    generation: u32,
    tenant: Option<Tenant>,
}

struct Tenant {
    stream: mio::net::TcpStream,
    parked: Box<dyn Parked>,
}

/// The parked connections, by slot.
struct Lots {
    slots: Vec<Slot>,
    free: Vec<usize>,
    registry: mio::Registry,
    lot: Arc<Lot>,
}

impl Lots {
    fn admit(&mut self, stream: std::net::TcpStream, parked: Box<dyn Parked>) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                tenant: None,
            });
            self.slots.len() - 1
        });
        let generation = self.slots[slot].generation;
        let key = key(slot, generation);
        let mut stream = mio::net::TcpStream::from_std(stream);
        // The slot alone: a token is a `usize`, too small for the generation on 32-bit
        // machines, and a socket's events go with it when it is deregistered.
        let registered = self
            .registry
            .register(&mut stream, Token(slot), Interest::READABLE);
        self.slots[slot].tenant = Some(Tenant { stream, parked });
        self.lot.stats.parked.fetch_add(1, Relaxed);
        if let Err(e) = registered {
            debug!(error = %e, "not parked: epoll refused the socket");
            return self.resume(key);
        }
        // A message that came while the connection was on its way here woke its old task, which
        // has ended: look now, with the waker that wakes the lot from here on.
        let waker = Waker::from(Arc::new(SlotWaker {
            key,
            lot: self.lot.clone(),
        }));
        let tenant = self.slots[slot].tenant.as_ref().expect("just parked");
        if tenant
            .parked
            .poll_outbox(&mut Context::from_waker(&waker))
            .is_ready()
        {
            self.resume(key);
        }
    }

    /// Gives the connection at `key` its task again, if it is still parked there.
    fn resume(&mut self, key: u64) {
        let (slot, generation) = ((key & u64::from(u32::MAX)) as usize, (key >> 32) as u32);
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.generation != generation {
            return;
        }
        let Some(mut tenant) = s.tenant.take() else {
            return;
        };
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.lot.stats.parked.fetch_sub(1, Relaxed);
        let _ = self.registry.deregister(&mut tenant.stream);
        tenant.parked.resume(tenant.stream.into());
    }

    /// Keys of the connections whose keepalive has run out.
    fn expired(&self, now: Instant) -> Vec<u64> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let t = s.tenant.as_ref()?;
                t.parked
                    .deadline()
                    .is_some_and(|d| d <= now)
                    .then(|| key(i, s.generation))
            })
            .collect()
    }

    /// The key of whoever is parked at `slot` now (an epoll event names the slot alone).
    fn tenant_of(&self, slot: usize) -> Option<u64> {
        let s = self.slots.get(slot)?;
        s.tenant.as_ref().map(|_| key(slot, s.generation))
    }

    fn resume_all(&mut self) {
        for i in 0..self.slots.len() {
            let k = key(i, self.slots[i].generation);
            self.resume(k);
        }
    }
}

/// Closes the lot however its task ends. Dropped with the runtime, the task would otherwise
/// leave connections on their way in (`arriving`), which hold the lot through `Shared`.
struct Closing(Arc<Lot>);

impl Drop for Closing {
    fn drop(&mut self) {
        drop(self.0.close());
    }
}

/// Where there is no `AsyncFd` (not Unix), idle connections keep their tasks.
#[cfg(not(unix))]
pub(crate) async fn run(lot: Arc<Lot>, _stop: impl Future<Output = ()>) {
    let _closing = Closing(lot);
}

/// The lot's task: runs until `stop` resolves (the router is gone, so every parked connection's
/// channel has ended), then gives every connection its task back, to close.
#[cfg(unix)]
pub(crate) async fn run(lot: Arc<Lot>, stop: impl Future<Output = ()>) {
    use mio::Events;
    use tokio::io::unix::AsyncFd;

    let _closing = Closing(lot.clone());
    let poll = mio::Poll::new().and_then(|p| {
        let registry = p.registry().try_clone()?;
        // SAFETY: the `Poll` owns its epoll descriptor for its whole life and never replaces
        // it, and the `AsyncFd` owns the `Poll`: the descriptor outlives its registration.
        let fd = unsafe { AsyncFd::register_with_interest(p, tokio::io::Interest::READABLE) };
        Ok((fd.map_err(std::io::Error::from)?, registry))
    });
    let (mut poll, registry) = match poll {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "idle connections keep their tasks: no epoll set for them");
            return;
        }
    };
    let mut lots = Lots {
        slots: Vec::new(),
        free: Vec::new(),
        registry,
        lot: lot.clone(),
    };
    let mut events = Events::with_capacity(1024);
    // Keepalive deadlines are looked at once a second: a parked client is 1.5 keepalives silent
    // before it is closed, and a second more is within what the standard allows.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            ready = poll.readable_mut() => {
                let Ok(mut ready) = ready else {
                    break;
                };
                let mut keys = Vec::new();
                loop {
                    events.clear();
                    if let Err(e) = ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        warn!(error = %e, "parking lot: epoll failed");
                        ready.clear_ready();
                        break;
                    }
                    if events.is_empty() {
                        ready.clear_ready();
                        break;
                    }
                    keys.extend(events.iter().filter_map(|e| lots.tenant_of(e.token().0)));
                }
                for k in keys {
                    lots.resume(k);
                }
            }
            () = lot.notify.notified() => {
                let (arriving, woken) = {
                    let mut inbox = lot.inbox();
                    (std::mem::take(&mut inbox.arriving), std::mem::take(&mut inbox.woken))
                };
                for k in woken {
                    lots.resume(k);
                }
                for (stream, parked) in arriving {
                    lots.admit(stream, parked);
                }
            }
            _ = tick.tick() => {
                for k in lots.expired(Instant::now()) {
                    lots.resume(k);
                }
            }
            () = &mut stop => break,
        }
    }
    for (stream, parked) in lot.close() {
        parked.resume(stream);
    }
    lots.resume_all();
}
