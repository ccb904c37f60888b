//! The topics that exist, each with its subscribers, retained message and history.
//!
//! Because only listed topics exist, matching is done once, when a client subscribes: each topic
//! keeps the sessions whose filters match it, at the highest QoS any of their filters grants.
//! Routing a PUBLISH is then one hash lookup and a walk over that topic's subscribers. A wildcard
//! filter finds its topics through the topics' levels (`topic_trie`), so a SUBSCRIBE costs what
//! it matches, not the length of the list.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::protocol::QoS;
use bytes::Bytes;

use super::history::History;
use super::topic_trie::TopicTrie;
use super::topics;

/// Index of a session in the router's session slab.
pub(crate) type SessionIdx = usize;

/// A retained message.
#[derive(Debug, Clone)]
pub struct Retained {
    pub payload: Bytes,
    pub qos: QoS,
}

/// One topic.
#[derive(Debug)]
pub(crate) struct Topic {
    pub name: Arc<str>,
    /// A `$SYS` topic the broker publishes; clients cannot publish to it or delete it.
    pub system: bool,
    /// Each subscribed session once, at the highest QoS its matching filters grant.
    pub subscribers: Vec<(SessionIdx, QoS)>,
    /// Shared subscriptions that match it: each message goes to one member of each.
    pub shared: Vec<SharedGroup>,
    pub retained: Option<Retained>,
    /// Its place among retained messages (`retain_order`), from its first retained message on.
    pub retain_key: Option<Box<[u32]>>,
    pub history: History,
    pub messages: u64,
    pub last_publish: Option<SystemTime>,
}

/// A shared subscription (`$share/GROUP/FILTER`) as one topic sees it: its members, taking
/// turns.
#[derive(Debug)]
pub(crate) struct SharedGroup {
    /// The whole filter, `$share/GROUP/FILTER`: a group is one group name with one filter.
    pub filter: Arc<str>,
    pub members: Vec<(SessionIdx, QoS)>,
    /// Whose turn it is.
    pub next: usize,
}

/// All topics, by name, and by level for wildcard filters.
#[derive(Debug, Default)]
pub(crate) struct TopicTable {
    topics: HashMap<Arc<str>, Topic>,
    trie: TopicTrie,
}

impl TopicTable {
    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Topic> {
        self.topics.get_mut(name)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Topic> {
        self.topics.values_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    /// Adds a topic (no-op if it exists). Returns the new topic's name, shared.
    pub fn insert(&mut self, name: &str, system: bool) -> Option<Arc<str>> {
        if self.topics.contains_key(name) {
            return None;
        }
        let name: Arc<str> = Arc::from(name);
        self.trie.insert(&name);
        self.topics.insert(
            name.clone(),
            Topic {
                name: name.clone(),
                system,
                subscribers: Vec::new(),
                shared: Vec::new(),
                retained: None,
                retain_key: None,
                history: History::default(),
                messages: 0,
                last_publish: None,
            },
        );
        Some(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<Topic> {
        let topic = self.topics.remove(name)?;
        self.trie.remove(name);
        Some(topic)
    }

    /// Whether a filter matches at least one topic.
    pub fn any_match(&self, filter: &str) -> bool {
        if topics::has_wildcards(filter) {
            self.trie.any_match(filter)
        } else {
            self.topics.contains_key(filter)
        }
    }

    /// Names of the topics a filter matches: those under the branches it can match, not a
    /// look at every topic.
    pub fn matching(&self, filter: &str) -> Vec<Arc<str>> {
        if topics::has_wildcards(filter) {
            self.trie.matching(filter)
        } else {
            self.topics
                .get_key_value(filter)
                .map(|(k, _)| k.clone())
                .into_iter()
                .collect()
        }
    }

    /// Whether a subscription's filter has something to match: a listed topic, or `$SYS`.
    pub fn serves(&self, filter: &str) -> bool {
        let target = topics::target(filter);
        target.starts_with("$SYS") || self.any_match(target)
    }

    /// Puts session `session`'s subscription `filter` into every topic it matches, or takes it
    /// out (`qos` None). An ordinary filter leaves each topic at the QoS `filters` (the session's
    /// subscriptions as they now are) grant it; a shared one (`$share/GROUP/FILTER`) is a
    /// membership of its group at `qos`. Returns the topics it matches.
    pub fn index_filter(
        &mut self,
        session: SessionIdx,
        filter: &str,
        qos: Option<QoS>,
        filters: &[(String, QoS)],
    ) -> Vec<Arc<str>> {
        let shared = topics::shared(filter).is_some();
        let names = self.matching(topics::target(filter));
        for name in &names {
            if shared {
                self.set_shared(name, filter, session, qos);
            } else {
                self.set_subscriber(name, session, effective_qos(filters, name));
            }
        }
        names
    }

    /// Adds a session to a shared subscription on a topic at `qos` (or with `None` takes it out).
    pub fn set_shared(&mut self, name: &str, filter: &str, session: SessionIdx, qos: Option<QoS>) {
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        let g = match topic.shared.iter().position(|g| &*g.filter == filter) {
            Some(g) => g,
            None if qos.is_some() => {
                topic.shared.push(SharedGroup {
                    filter: Arc::from(filter),
                    members: Vec::new(),
                    next: 0,
                });
                topic.shared.len() - 1
            }
            None => return,
        };
        let group = &mut topic.shared[g];
        let at = group.members.iter().position(|(s, _)| *s == session);
        match (at, qos) {
            (Some(i), Some(q)) => group.members[i].1 = q,
            (None, Some(q)) => group.members.push((session, q)),
            (Some(i), None) => {
                // In order, so that the turns stay fair.
                group.members.remove(i);
                if group.members.is_empty() {
                    topic.shared.swap_remove(g);
                }
            }
            (None, None) => {}
        }
    }

    /// Sets (or with `None` removes) a session's QoS on a topic.
    pub fn set_subscriber(&mut self, name: &str, session: SessionIdx, qos: Option<QoS>) {
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        let at = topic.subscribers.iter().position(|(s, _)| *s == session);
        match (at, qos) {
            (Some(i), Some(q)) => topic.subscribers[i].1 = q,
            (None, Some(q)) => topic.subscribers.push((session, q)),
            (Some(i), None) => {
                topic.subscribers.swap_remove(i);
            }
            (None, None) => {}
        }
    }
}

/// The QoS a session gets on a topic: the highest of its (not shared) filters that match it.
pub(crate) fn effective_qos(filters: &[(String, QoS)], topic: &str) -> Option<QoS> {
    filters
        .iter()
        .filter(|(f, _)| !f.starts_with("$share/") && topics::matches(f, topic))
        .map(|(_, q)| *q)
        .max_by_key(|q| *q as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_matching() {
        let mut t = TopicTable::default();
        t.insert("lab/a", false);
        t.insert("lab/b", false);
        t.insert("$SYS/broker/uptime", true);
        assert!(t.any_match("lab/a"));
        assert!(!t.any_match("lab/c"));
        assert!(t.any_match("lab/+"));
        let mut all = t.matching("#");
        all.sort();
        assert_eq!(all, vec![Arc::from("lab/a"), Arc::from("lab/b")]);
        assert_eq!(t.matching("$SYS/#").len(), 1);
    }

    #[test]
    fn one_entry_per_session_at_the_highest_qos() {
        let filters = vec![
            ("lab/+".to_string(), QoS::AtMostOnce),
            ("lab/a".to_string(), QoS::ExactlyOnce),
            ("#".to_string(), QoS::AtLeastOnce),
        ];
        assert_eq!(effective_qos(&filters, "lab/a"), Some(QoS::ExactlyOnce));
        assert_eq!(effective_qos(&filters, "lab/b"), Some(QoS::AtLeastOnce));
        assert_eq!(effective_qos(&filters, "$SYS/x"), None);
        let mut t = TopicTable::default();
        t.insert("lab/a", false);
        t.set_subscriber("lab/a", 3, Some(QoS::AtMostOnce));
        t.set_subscriber("lab/a", 3, Some(QoS::ExactlyOnce));
        assert_eq!(
            t.get("lab/a").unwrap().subscribers,
            vec![(3, QoS::ExactlyOnce)]
        );
        t.set_subscriber("lab/a", 3, None);
        assert!(t.get("lab/a").unwrap().subscribers.is_empty());
    }
}
