//! The `$SYS` topics, with Mosquitto's names, and their values.

use super::stats::StatsSnapshot;

/// Every `$SYS` topic the broker publishes.
pub const SYS_TOPICS: &[&str] = &[
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/disconnected",
    "$SYS/broker/clients/total",
    "$SYS/broker/clients/maximum",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/publish/messages/received",
    "$SYS/broker/publish/messages/sent",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
];

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

/// The `(topic, payload)` pairs to publish now, in `SYS_TOPICS` order.
pub(crate) fn values(f: &SysFigures, s: &StatsSnapshot) -> Vec<(&'static str, String)> {
    let values = [
        format!("mqtt-lab version {}", env!("CARGO_PKG_VERSION")),
        format!("{} seconds", f.uptime_secs),
        f.connected.to_string(),
        f.disconnected.to_string(),
        (f.connected + f.disconnected).to_string(),
        f.maximum.to_string(),
        s.packets_received.to_string(),
        s.packets_sent.to_string(),
        s.publish_received.to_string(),
        s.publish_sent.to_string(),
        f.dropped.to_string(),
        f.retained.to_string(),
        f.subscriptions.to_string(),
        s.bytes_received.to_string(),
        s.bytes_sent.to_string(),
    ];
    SYS_TOPICS.iter().copied().zip(values).collect()
}
