//! The topics that exist, each with its subscribers, retained message and history.
//!
//! Matching is done when a topic or a subscription comes into being, not per message: each topic
//! keeps the sessions whose filters match it, at the highest QoS any of their filters grants, so
//! routing a PUBLISH is one hash lookup and a walk over that topic's subscribers. A wildcard
//! filter finds its topics through the topics' levels (`topic_trie`); a new topic finds its
//! subscribers through the subscriptions' levels (`filter_trie`). Either way the cost is what
//! matches, not the length of the list or the number of sessions.
//!
//! Which topics exist is the mode's and the list's to say (`TopicsMode`): the listed names, the
//! names the list's patterns match, and in open mode any name a client uses. A topic not on the
//! list lives while something uses it (a subscriber, a retained value, a connected client that
//! published to it) and goes when the last use does (`collect`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::protocol::QoS;
use bytes::Bytes;

use super::config::TopicsMode;
use super::filter_trie::FilterTrie;
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
    /// On the list by name. Otherwise a pattern on the list or open mode let it appear, and it
    /// goes when nothing uses it any more.
    pub listed: bool,
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
    /// Of a topic not on the list: the connected clients that published to it (a few; more
    /// change nothing, the topic is in use either way).
    publishers: Vec<SessionIdx>,
}

impl Topic {
    fn unused(&self) -> bool {
        !self.listed
            && !self.system
            && self.subscribers.is_empty()
            && self.shared.is_empty()
            && self.retained.is_none()
            && self.publishers.is_empty()
    }
}

/// Publishers a topic not on the list remembers.
const PUBLISHERS_KEPT: usize = 8;

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

/// One subscription, as the subscriptions' trie keeps it under its filter (the target of a
/// shared one): equal by session and whole filter, whatever its QoS.
#[derive(Debug, Clone)]
struct Subscription {
    session: SessionIdx,
    filter: Arc<str>,
    qos: QoS,
}

impl PartialEq for Subscription {
    fn eq(&self, other: &Self) -> bool {
        self.session == other.session && self.filter == other.filter
    }
}

/// Why a topic could not come into being.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// Neither on the list nor matched by a pattern on it (strict mode), or not a name a client
    /// may create (`$...`).
    NotListed,
    /// As many topics not on the list exist as the limit allows.
    Full,
}

/// All topics, by name, and by level for wildcard filters; every subscription by filter.
#[derive(Debug)]
pub(crate) struct TopicTable {
    topics: HashMap<Arc<str>, Topic>,
    trie: TopicTrie,
    subscriptions: FilterTrie<Subscription>,
    /// The list's patterns, in the order they were added, and by level.
    patterns: Vec<Arc<str>>,
    pattern_trie: FilterTrie<Arc<str>>,
    mode: TopicsMode,
    /// Topics that exist and are not on the list, and how many may.
    appeared: usize,
    max_appeared: usize,
    /// What each connected client published to among the topics not on the list.
    published: HashMap<SessionIdx, Vec<Arc<str>>>,
}

impl Default for TopicTable {
    fn default() -> Self {
        TopicTable::new(TopicsMode::Strict, 100_000)
    }
}

impl TopicTable {
    pub fn new(mode: TopicsMode, max_appeared: usize) -> Self {
        TopicTable {
            topics: HashMap::new(),
            trie: TopicTrie::default(),
            subscriptions: FilterTrie::default(),
            patterns: Vec::new(),
            pattern_trie: FilterTrie::default(),
            mode,
            appeared: 0,
            max_appeared,
            published: HashMap::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    #[cfg(test)]
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Topic> {
        self.topics.get_mut(name)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Topic> {
        self.topics.values_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    pub fn mode(&self) -> TopicsMode {
        self.mode
    }

    /// The list's patterns, in the order they were added.
    pub fn patterns(&self) -> &[Arc<str>] {
        &self.patterns
    }

    /// Topics that exist without being on the list.
    #[cfg(test)]
    pub fn appeared(&self) -> usize {
        self.appeared
    }

    /// Puts an entry on the list: a name (a topic that may have appeared already, or a new one,
    /// with the subscriptions that match it) or a pattern. False if it was on it.
    pub fn list(&mut self, entry: &str) -> bool {
        if topics::has_wildcards(entry) {
            if self.patterns.iter().any(|p| &**p == entry) {
                return false;
            }
            let p: Arc<str> = Arc::from(entry);
            self.pattern_trie.insert(entry, p.clone());
            self.patterns.push(p);
            return true;
        }
        if let Some(t) = self.topics.get_mut(entry) {
            if t.listed || t.system {
                return false;
            }
            t.listed = true;
            self.appeared -= 1;
            return true;
        }
        self.create(entry, true, false);
        true
    }

    /// Adds a `$SYS` topic the broker publishes to.
    pub fn insert_system(&mut self, name: &str) {
        if !self.topics.contains_key(name) {
            self.create(name, false, true);
        }
    }

    /// Takes an entry off the list. A name's topic goes with its retained message (returned);
    /// a pattern goes with the topics only it let appear. False if it was not on it.
    pub fn unlist(&mut self, entry: &str) -> (bool, Vec<Topic>) {
        if topics::has_wildcards(entry) {
            let Some(at) = self.patterns.iter().position(|p| &**p == entry) else {
                return (false, Vec::new());
            };
            let p = self.patterns.remove(at);
            self.pattern_trie.remove(entry, &p);
            return (true, self.drop_not_allowed());
        }
        match self.topics.get(entry) {
            Some(t) if t.listed => {
                let t = self.remove(entry).expect("just seen");
                (true, vec![t])
            }
            _ => (false, Vec::new()),
        }
    }

    /// Sets the mode; leaving open mode takes away the topics it alone let appear, which are
    /// returned.
    pub fn set_mode(&mut self, mode: TopicsMode) -> Vec<Topic> {
        self.mode = mode;
        self.drop_not_allowed()
    }

    /// Removes the topics not on the list that the mode and patterns no longer allow.
    fn drop_not_allowed(&mut self) -> Vec<Topic> {
        if self.mode == TopicsMode::Open {
            return Vec::new();
        }
        let gone: Vec<Arc<str>> = self
            .topics
            .values()
            .filter(|t| !t.listed && !t.system && !self.pattern_trie.any_match(&t.name))
            .map(|t| t.name.clone())
            .collect();
        gone.iter().filter_map(|n| self.remove(n)).collect()
    }

    /// Whether a client may bring topic `name` into being: open mode or a pattern allows it.
    fn may_appear(&self, name: &str) -> Result<(), Absent> {
        if !topics::check_creatable(name)
            || (self.mode == TopicsMode::Strict && !self.pattern_trie.any_match(name))
        {
            return Err(Absent::NotListed);
        }
        if self.appeared >= self.max_appeared {
            return Err(Absent::Full);
        }
        Ok(())
    }

    /// The topic a client publishes to, brought into being if the mode or a pattern allows.
    /// A topic not on the list remembers `publisher` (until `forget_publisher`) as a use.
    pub fn for_publish(
        &mut self,
        name: &str,
        publisher: Option<SessionIdx>,
    ) -> Result<&mut Topic, Absent> {
        if !self.topics.contains_key(name) {
            self.may_appear(name)?;
            self.create(name, false, false);
        }
        let t = self.topics.get_mut(name).expect("there or just made");
        if let Some(p) = publisher
            && !t.listed
            && !t.system
            && t.publishers.len() < PUBLISHERS_KEPT
            && !t.publishers.contains(&p)
        {
            t.publishers.push(p);
            self.published.entry(p).or_default().push(t.name.clone());
        }
        Ok(t)
    }

    /// A retained message found at start, for topic `name` if it may exist.
    pub fn for_restore(&mut self, name: &str) -> Option<&mut Topic> {
        if !self.topics.contains_key(name) {
            self.may_appear(name).ok()?;
            self.create(name, false, false);
        }
        self.topics.get_mut(name).filter(|t| !t.system)
    }

    /// A client that published to topics not on the list has gone: they lose that use, and go
    /// if it was their last.
    pub fn forget_publisher(&mut self, session: SessionIdx) {
        let Some(names) = self.published.remove(&session) else {
            return;
        };
        for name in names {
            if let Some(t) = self.topics.get_mut(&name) {
                t.publishers.retain(|&p| p != session);
            }
            self.collect(&name);
        }
    }

    /// Removes a topic not on the list if nothing uses it any more.
    pub fn collect(&mut self, name: &str) {
        if self.topics.get(name).is_some_and(Topic::unused) {
            self.remove(name);
        }
    }

    fn create(&mut self, name: &str, listed: bool, system: bool) {
        let name: Arc<str> = Arc::from(name);
        self.trie.insert(&name);
        let mut topic = Topic {
            name: name.clone(),
            system,
            listed,
            subscribers: Vec::new(),
            shared: Vec::new(),
            retained: None,
            retain_key: None,
            history: History::default(),
            messages: 0,
            last_publish: None,
            publishers: Vec::new(),
        };
        // The subscriptions that already match it: each session once at its highest QoS, and
        // one membership per shared group.
        self.subscriptions.for_each_match(&name, |s| {
            if topics::shared(&s.filter).is_some() {
                match topic.shared.iter_mut().find(|g| g.filter == s.filter) {
                    Some(g) => g.members.push((s.session, s.qos)),
                    None => topic.shared.push(SharedGroup {
                        filter: s.filter.clone(),
                        members: vec![(s.session, s.qos)],
                        next: 0,
                    }),
                }
                return;
            }
            match topic.subscribers.iter_mut().find(|(i, _)| *i == s.session) {
                Some((_, q)) => *q = (*q).max(s.qos),
                None => topic.subscribers.push((s.session, s.qos)),
            }
        });
        if !listed && !system {
            self.appeared += 1;
        }
        self.topics.insert(name, topic);
    }

    fn remove(&mut self, name: &str) -> Option<Topic> {
        let topic = self.topics.remove(name)?;
        self.trie.remove(name);
        if !topic.listed && !topic.system {
            self.appeared -= 1;
        }
        for p in &topic.publishers {
            if let Some(names) = self.published.get_mut(p) {
                names.retain(|n| **n != *name);
            }
        }
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

    /// Whether a subscription's filter has something to match: in open mode anything; else a
    /// topic that exists, a pattern on the list it overlaps, or `$SYS`.
    pub fn serves(&self, filter: &str) -> bool {
        let target = topics::target(filter);
        self.mode == TopicsMode::Open
            || target.starts_with("$SYS")
            || self.any_match(target)
            || self.patterns.iter().any(|p| topics::overlaps(p, target))
    }

    /// Puts session `session`'s subscription `filter` into every topic it matches, or takes it
    /// out (`qos` None). An ordinary filter leaves each topic at the QoS `filters` (the session's
    /// subscriptions as they now are) grant it; a shared one (`$share/GROUP/FILTER`) is a
    /// membership of its group at `qos`. A filter without wildcards brings its topic into being
    /// where the mode or a pattern allows; taken out, it lets the topics it kept go. Returns the
    /// topics it matches.
    pub fn index_filter(
        &mut self,
        session: SessionIdx,
        filter: &str,
        qos: Option<QoS>,
        filters: &[(String, QoS)],
    ) -> Vec<Arc<str>> {
        let target = topics::target(filter);
        let sub = Subscription {
            session,
            filter: Arc::from(filter),
            qos: qos.unwrap_or(QoS::AtMostOnce),
        };
        self.subscriptions.remove(target, &sub);
        if qos.is_some() {
            self.subscriptions.insert(target, sub);
            if !topics::has_wildcards(target)
                && !self.topics.contains_key(target)
                && self.may_appear(target).is_ok()
            {
                // Made with this subscription in it (it is in the trie already).
                self.create(target, false, false);
                return vec![self.topics.get_key_value(target).expect("made").0.clone()];
            }
        }
        let shared = topics::shared(filter).is_some();
        let names = self.matching(target);
        for name in &names {
            if shared {
                self.set_shared(name, filter, session, qos);
            } else {
                self.set_subscriber(name, session, effective_qos(filters, name));
            }
            if qos.is_none() {
                self.collect(name);
            }
        }
        names
    }

    /// Takes a subscription out of the subscriptions' index only: for a filter dropped because
    /// nothing it could match exists any more.
    pub fn forget_filter(&mut self, session: SessionIdx, filter: &str) {
        let sub = Subscription {
            session,
            filter: Arc::from(filter),
            qos: QoS::AtMostOnce,
        };
        self.subscriptions.remove(topics::target(filter), &sub);
    }

    /// Adds a session to a shared subscription on a topic at `qos` (or with `None` takes it out).
    fn set_shared(&mut self, name: &str, filter: &str, session: SessionIdx, qos: Option<QoS>) {
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
    fn set_subscriber(&mut self, name: &str, session: SessionIdx, qos: Option<QoS>) {
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
        t.list("lab/a");
        t.list("lab/b");
        t.insert_system("$SYS/broker/uptime");
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
        t.list("lab/a");
        t.set_subscriber("lab/a", 3, Some(QoS::AtMostOnce));
        t.set_subscriber("lab/a", 3, Some(QoS::ExactlyOnce));
        assert_eq!(
            t.get("lab/a").unwrap().subscribers,
            vec![(3, QoS::ExactlyOnce)]
        );
        t.set_subscriber("lab/a", 3, None);
        assert!(t.get("lab/a").unwrap().subscribers.is_empty());
    }

    fn subscribe(
        t: &mut TopicTable,
        session: SessionIdx,
        filters: &mut Vec<(String, QoS)>,
        f: &str,
        q: QoS,
    ) {
        filters.push((f.to_string(), q));
        t.index_filter(session, f, Some(q), filters);
    }

    #[test]
    fn a_new_topic_finds_its_subscribers() {
        let mut t = TopicTable::default();
        let mut a = Vec::new();
        let mut b = Vec::new();
        t.list("lab/x");
        subscribe(&mut t, 1, &mut a, "lab/+", QoS::AtMostOnce);
        subscribe(&mut t, 1, &mut a, "#", QoS::ExactlyOnce);
        subscribe(&mut t, 2, &mut b, "$share/g/lab/#", QoS::AtLeastOnce);
        t.list("lab/y");
        let y = t.get("lab/y").unwrap();
        assert_eq!(y.subscribers, vec![(1, QoS::ExactlyOnce)]);
        assert_eq!(y.shared.len(), 1);
        assert_eq!(y.shared[0].members, vec![(2, QoS::AtLeastOnce)]);
        assert!(t.get("lab/y").unwrap().listed);
    }

    #[test]
    fn patterns_let_topics_appear_and_go() {
        let mut t = TopicTable::default();
        t.list("devices/+/temperature");
        assert!(t.serves("devices/7/temperature"));
        assert!(t.serves("devices/#"));
        assert!(!t.serves("devices/7/humidity"));
        assert_eq!(
            t.for_publish("devices/7/humidity", Some(1)).err(),
            Some(Absent::NotListed)
        );
        // A publisher makes it appear and keeps it while connected.
        assert!(t.for_publish("devices/7/temperature", Some(1)).is_ok());
        assert_eq!(t.appeared(), 1);
        assert!(!t.get("devices/7/temperature").unwrap().listed);
        t.forget_publisher(1);
        assert!(t.get("devices/7/temperature").is_none());
        assert_eq!(t.appeared(), 0);
        // A subscriber to its name makes it appear; unsubscribing lets it go.
        let mut f = Vec::new();
        subscribe(&mut t, 2, &mut f, "devices/8/temperature", QoS::AtLeastOnce);
        assert_eq!(
            t.get("devices/8/temperature").unwrap().subscribers,
            vec![(2, QoS::AtLeastOnce)]
        );
        f.clear();
        t.index_filter(2, "devices/8/temperature", None, &f);
        assert!(t.get("devices/8/temperature").is_none());
        // Listing it keeps it; taking the pattern away takes the others.
        t.for_publish("devices/9/temperature", Some(3)).unwrap();
        t.for_publish("devices/10/temperature", Some(3)).unwrap();
        assert!(t.list("devices/9/temperature"));
        let (found, gone) = t.unlist("devices/+/temperature");
        assert!(found);
        assert_eq!(gone.len(), 1);
        assert!(t.get("devices/9/temperature").unwrap().listed);
        assert_eq!(t.appeared(), 0);
    }

    #[test]
    fn open_mode_and_its_limit() {
        let mut t = TopicTable::new(TopicsMode::Open, 2);
        assert!(t.serves("any/thing/#"));
        t.for_publish("a", None).unwrap();
        // No publisher and no other use: it goes once collected.
        t.collect("a");
        assert!(t.get("a").is_none());
        t.for_publish("a", Some(1)).unwrap();
        t.for_publish("b", Some(1)).unwrap();
        assert_eq!(t.for_publish("c", Some(1)).err(), Some(Absent::Full));
        assert_eq!(t.for_publish("$x", Some(1)).err(), Some(Absent::NotListed));
        t.get_mut("a").unwrap().retained = Some(Retained {
            payload: Bytes::from_static(b"1"),
            qos: QoS::AtMostOnce,
        });
        t.forget_publisher(1);
        assert!(t.get("a").is_some(), "a retained value keeps it");
        assert!(t.get("b").is_none());
        let gone = t.set_mode(TopicsMode::Strict);
        assert_eq!(gone.len(), 1);
        assert_eq!(t.appeared(), 0);
        assert!(!t.serves("any/thing/#"));
    }
}
