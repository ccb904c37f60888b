//! The `$SYS` topics, with Mosquitto's names, and their values.

use super::stats::StatsSnapshot;

/// What the router knows that `$SYS` reports, beside the traffic counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SysFigures {
    pub uptime_secs: u64,
    pub connected: usize,
    pub disconnected: usize,
    pub maximum: usize,
    pub dropped: u64,
    pub retained: usize,
    pub subscriptions: usize,
}

/// Both sources of a `$SYS` value.
type Value = fn(&SysFigures, &StatsSnapshot) -> String;

/// Every `$SYS` topic the broker publishes, each beside the value it carries: one table, so a
/// name and its value cannot drift apart.
const TOPICS: &[(&str, Value)] = &[
    ("$SYS/broker/version", |_, _| {
        format!("mqtt-lab version {}", env!("CARGO_PKG_VERSION"))
    }),
    ("$SYS/broker/uptime", |f, _| {
        format!("{} seconds", f.uptime_secs)
    }),
    ("$SYS/broker/clients/connected", |f, _| {
        f.connected.to_string()
    }),
    ("$SYS/broker/clients/disconnected", |f, _| {
        f.disconnected.to_string()
    }),
    ("$SYS/broker/clients/total", |f, _| {
        (f.connected + f.disconnected).to_string()
    }),
    ("$SYS/broker/clients/maximum", |f, _| f.maximum.to_string()),
    ("$SYS/broker/messages/received", |_, s| {
        s.packets_received.to_string()
    }),
    ("$SYS/broker/messages/sent", |_, s| {
        s.packets_sent.to_string()
    }),
    ("$SYS/broker/publish/messages/received", |_, s| {
        s.publish_received.to_string()
    }),
    ("$SYS/broker/publish/messages/sent", |_, s| {
        s.publish_sent.to_string()
    }),
    ("$SYS/broker/publish/messages/dropped", |f, _| {
        f.dropped.to_string()
    }),
    ("$SYS/broker/retained messages/count", |f, _| {
        f.retained.to_string()
    }),
    ("$SYS/broker/subscriptions/count", |f, _| {
        f.subscriptions.to_string()
    }),
    ("$SYS/broker/bytes/received", |_, s| {
        s.bytes_received.to_string()
    }),
    ("$SYS/broker/bytes/sent", |_, s| s.bytes_sent.to_string()),
];

/// Every `$SYS` topic the broker publishes.
pub fn topics() -> impl Iterator<Item = &'static str> {
    TOPICS.iter().map(|(name, _)| *name)
}

/// The `(topic, payload)` pairs to publish now.
pub(crate) fn values(f: &SysFigures, s: &StatsSnapshot) -> Vec<(&'static str, String)> {
    TOPICS
        .iter()
        .map(|(name, value)| (*name, value(f, s)))
        .collect()
}
