//! The last values published on a topic, kept for the window to show.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use super::protocol::{MessageProps, QoS};
use bytes::Bytes;

/// How many values each topic keeps.
pub const HISTORY_DEPTH: usize = 10;

/// Payload bytes kept per value: enough to show, bounded however large the message.
pub const HISTORY_PAYLOAD_LIMIT: usize = 1024;

/// One published value.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    pub time: SystemTime,
    /// The payload, cut to `HISTORY_PAYLOAD_LIMIT` bytes (copied, so it does not keep a
    /// connection's read buffer alive).
    pub payload: Bytes,
    /// The payload's real size.
    pub size: usize,
    pub qos: QoS,
    pub retain: bool,
    /// Client id of the publisher (`None` for the broker's own messages).
    pub from: Option<Arc<str>>,
    /// The MQTT 5 properties it was published with.
    pub props: Option<Box<MessageProps>>,
}

/// The most recent values of one topic, oldest first, at most `HISTORY_DEPTH`.
#[derive(Debug, Clone, Default)]
pub struct History {
    items: VecDeque<HistoryItem>,
}

impl History {
    pub fn push(
        &mut self,
        time: SystemTime,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        from: Option<Arc<str>>,
        props: Option<&MessageProps>,
    ) {
        if self.items.len() == HISTORY_DEPTH {
            self.items.pop_front();
        }
        let kept = &payload[..payload.len().min(HISTORY_PAYLOAD_LIMIT)];
        self.items.push_back(HistoryItem {
            time,
            payload: Bytes::copy_from_slice(kept),
            size: payload.len(),
            qos,
            retain,
            from,
            props: props.map(|p| Box::new(cut(p))),
        });
    }

    pub fn items(&self) -> impl DoubleEndedIterator<Item = &HistoryItem> + ExactSizeIterator {
        self.items.iter()
    }
}

/// What history keeps of a message's properties: enough to show, bounded however large they
/// are (as the payload is cut to `HISTORY_PAYLOAD_LIMIT`).
fn cut(p: &MessageProps) -> MessageProps {
    const TEXT: usize = 64;
    const USER: usize = 8;
    let text = |s: &String| s.chars().take(TEXT).collect::<String>();
    MessageProps {
        payload_utf8: p.payload_utf8,
        expiry: p.expiry,
        content_type: p.content_type.as_ref().map(text),
        response_topic: p.response_topic.as_ref().map(text),
        correlation_data: p
            .correlation_data
            .as_ref()
            .map(|d| Bytes::copy_from_slice(&d[..d.len().min(TEXT)])),
        user: p
            .user
            .iter()
            .take(USER)
            .map(|(k, v)| (text(k), text(v)))
            .collect(),
        subscription_ids: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_ten_and_cuts_large_payloads() {
        let mut h = History::default();
        for i in 0..15u8 {
            h.push(SystemTime::now(), &[i], QoS::AtMostOnce, false, None, None);
        }
        let values: Vec<u8> = h.items().map(|i| i.payload[0]).collect();
        assert_eq!(values, (5..15).collect::<Vec<_>>());
        h.push(
            SystemTime::now(),
            &vec![1; 5000],
            QoS::AtLeastOnce,
            true,
            Some("c".into()),
            None,
        );
        let last = h.items().last().unwrap();
        assert_eq!(
            (last.payload.len(), last.size),
            (HISTORY_PAYLOAD_LIMIT, 5000)
        );
    }
}
