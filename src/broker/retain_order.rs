//! The order retained messages are sent in for a wildcard subscription: Mosquitto's, so that a
//! student comparing the two brokers sees the same list.
//!
//! Mosquitto keeps retained messages in a tree of topic levels and sends them depth first, a
//! level before the levels under it, and siblings in the order their node was made: when the
//! first retained message under it arrived (checked against Mosquitto 2.0.11: after b/2, a/1,
//! b/1, a/2, c, a, b/1/x, a/0 it sends b/2, b/1, b/1/x, a, a/1, a/2, a/0, c). Nodes stay when their
//! message is cleared, so a topic keeps its place.
//!
//! A topic's place is its key: the index of each of its levels among its siblings. Sorting keys
//! puts a level before those under it (a key sorts before the keys it prefixes), and the topics
//! under a level are the keys that start with its key: `RetainedIndex` keeps every retained
//! message by key, so a subscriber's retained messages come out of one range of it, already in
//! order, without a lookup, a sort or an allocation each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::link::Message;
use super::protocol::{MessageProps, QoS};
use super::topics;

#[derive(Debug)]
pub(crate) struct RetainOrder {
    /// Each node's children by level name: the child's node and its index among its siblings.
    /// Node 0 is the root. A level is kept once, under its parent, not as a whole prefix path:
    /// a deep topic costs its levels, not the square of its length.
    children: Vec<HashMap<Box<str>, (u32, u32)>>,
}

impl Default for RetainOrder {
    fn default() -> Self {
        RetainOrder {
            children: vec![HashMap::new()],
        }
    }
}

impl RetainOrder {
    /// The key of `topic`, making the nodes it needs.
    pub fn key(&mut self, topic: &str) -> Box<[u32]> {
        let mut key = Vec::new();
        let mut node = 0usize;
        for level in topic.split('/') {
            let made = self.children.len() as u32;
            let kids = &mut self.children[node];
            let (id, index) = match kids.get(level) {
                Some(&found) => found,
                None => {
                    let child = (made, kids.len() as u32);
                    kids.insert(level.into(), child);
                    self.children.push(HashMap::new());
                    child
                }
            };
            key.push(index);
            node = id as usize;
        }
        key.into()
    }

    /// The key of a level path ("a/b") that has been seen, without making any.
    fn find(&self, path: &str) -> Option<Vec<u32>> {
        let mut key = Vec::new();
        let mut node = 0usize;
        for level in path.split('/') {
            let &(id, index) = self.children[node].get(level)?;
            key.push(index);
            node = id as usize;
        }
        Some(key)
    }
}

/// The retained messages, in the order they are sent, ready to be sent: the router's copy of
/// each topic's retained value, kept beside the topic table.
#[derive(Debug, Default)]
pub(crate) struct RetainedIndex {
    order: RetainOrder,
    by_key: BTreeMap<Box<[u32]>, (Arc<Message>, QoS)>,
}

impl RetainedIndex {
    /// Sets (or with `None` clears) the retained message of `topic`, whose key (its place,
    /// kept by the topic once given) is `key`.
    pub fn set(
        &mut self,
        topic: &Arc<str>,
        key: &mut Option<Box<[u32]>>,
        value: Option<(bytes::Bytes, QoS, Option<Box<MessageProps>>)>,
    ) {
        match value {
            Some((payload, qos, props)) => {
                let key = key.get_or_insert_with(|| self.order.key(topic));
                let msg = Arc::new(Message {
                    topic: topic.clone(),
                    payload,
                    props: props.map(Arc::from),
                    sub_ids: Box::new([]),
                });
                self.by_key.insert(key.clone(), (msg, qos));
            }
            None => {
                if let Some(key) = key {
                    self.by_key.remove(key);
                }
            }
        }
    }

    /// The retained messages a valid filter matches, in the order they are sent: those under
    /// the filter's levels before its first wildcard, one range of the index.
    pub fn matching(&self, filter: &str) -> Vec<(Arc<Message>, QoS)> {
        let literal = filter
            .split('/')
            .take_while(|l| *l != "+" && *l != "#")
            .count();
        let prefix = if literal == 0 {
            Vec::new()
        } else {
            let path: Vec<&str> = filter.split('/').take(literal).collect();
            match self.order.find(&path.join("/")) {
                Some(key) => key,
                None => return Vec::new(),
            }
        };
        let from: Box<[u32]> = prefix.clone().into();
        self.by_key
            .range(from..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, (msg, _))| topics::matches(filter, &msg.topic))
            .map(|(_, (msg, qos))| (msg.clone(), *qos))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_first_with_siblings_in_the_order_they_came_as_mosquitto_sends_them() {
        let mut order = RetainOrder::default();
        let published = ["b/2", "a/1", "b/1", "a/2", "c", "a", "b/1/x", "a/0"];
        let mut keyed: Vec<(Box<[u32]>, &str)> =
            published.iter().map(|t| (order.key(t), *t)).collect();
        keyed.sort();
        let sent: Vec<&str> = keyed.into_iter().map(|(_, t)| t).collect();
        assert_eq!(sent, ["b/2", "b/1", "b/1/x", "a", "a/1", "a/2", "a/0", "c"]);
        // A topic keeps its place; empty levels ("a//b") are levels too.
        assert_eq!(order.key("b/1"), [0, 1].into());
        assert_eq!(order.key("a//b"), [1, 3, 0].into());
    }

    #[test]
    fn a_filter_gets_its_retained_messages_in_order_from_one_range() {
        let mut index = RetainedIndex::default();
        let published = [
            "b/2", "a/1", "b/1", "a/2", "c", "a", "b/1/x", "a/0", "$SYS/x",
        ];
        let mut keys: HashMap<&str, Option<Box<[u32]>>> = HashMap::new();
        for t in published {
            let key = keys.entry(t).or_default();
            let payload = bytes::Bytes::from(t.as_bytes().to_vec());
            index.set(&Arc::from(t), key, Some((payload, QoS::AtLeastOnce, None)));
        }
        let names = |index: &RetainedIndex, filter: &str| -> Vec<String> {
            index
                .matching(filter)
                .iter()
                .map(|(m, _)| m.topic.to_string())
                .collect()
        };
        assert_eq!(
            names(&index, "#"),
            ["b/2", "b/1", "b/1/x", "a", "a/1", "a/2", "a/0", "c"]
        );
        assert_eq!(names(&index, "b/#"), ["b/2", "b/1", "b/1/x"]);
        assert_eq!(names(&index, "b/+"), ["b/2", "b/1"]);
        assert_eq!(names(&index, "+/1"), ["b/1", "a/1"]);
        assert_eq!(names(&index, "a"), ["a"]);
        assert_eq!(names(&index, "$SYS/#"), ["$SYS/x"]);
        assert!(names(&index, "d/#").is_empty());
        // Cleared: gone from the index, its place kept.
        let key = keys.get_mut("b/1").unwrap();
        index.set(&Arc::from("b/1"), key, None);
        assert_eq!(names(&index, "b/#"), ["b/2", "b/1/x"]);
        assert_eq!(keys["b/1"].as_deref(), Some(&[0, 1][..]));
    }
}
