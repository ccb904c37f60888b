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
//! puts a level before those under it (a key sorts before the keys it prefixes).

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(crate) struct RetainOrder {
    /// For each level path made so far ("a", "a/b"): its index among its siblings and how many
    /// children it has had.
    nodes: HashMap<Box<str>, (u32, u32)>,
    /// Children the root has had.
    top: u32,
}

impl RetainOrder {
    /// The key of `topic`, making the nodes it needs.
    pub fn key(&mut self, topic: &str) -> Box<[u32]> {
        let mut key = Vec::new();
        let mut parent: Option<usize> = None; // the end of the parent's path in `topic`
        let mut start = 0;
        loop {
            let end = topic[start..].find('/').map_or(topic.len(), |i| start + i);
            let path = &topic[..end];
            let index = match self.nodes.get(path) {
                Some(&(index, _)) => index,
                None => {
                    let siblings = match parent {
                        None => &mut self.top,
                        Some(p) => {
                            &mut self
                                .nodes
                                .get_mut(&topic[..p])
                                .expect("a parent is made before its children")
                                .1
                        }
                    };
                    let index = *siblings;
                    *siblings += 1;
                    self.nodes.insert(path.into(), (index, 0));
                    index
                }
            };
            key.push(index);
            if end == topic.len() {
                return key.into();
            }
            parent = Some(end);
            start = end + 1;
        }
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
}
