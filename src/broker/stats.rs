//! Counters that connection tasks bump as they go, read by `$SYS` and the window.
//!
//! Atomics rather than messages: a connection adds to them once per read or write batch, which
//! costs less than telling the router.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Broker-wide traffic counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    /// Passwords hashed to check a login (argon2 runs, the expensive part of a login).
    pub password_checks: AtomicU64,
    /// Bumped by the router whenever its state may have changed: a reader that sees the same
    /// value twice knows there is nothing new to show.
    pub changes: AtomicU64,
    /// Connections waiting in the parking lot now (quiet, without a task of their own).
    pub parked: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub password_checks: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            packets_received: self.packets_received.load(Relaxed),
            packets_sent: self.packets_sent.load(Relaxed),
            publish_received: self.publish_received.load(Relaxed),
            publish_sent: self.publish_sent.load(Relaxed),
            password_checks: self.password_checks.load(Relaxed),
        }
    }
}

/// Adds to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Relaxed);
    }
}
