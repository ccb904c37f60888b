//! The topics that exist, each with its subscribers, retained message and history.
//!
//! Every subscription is kept by its filter's levels (`filter_trie`), and each topic keeps, worked
//! out from there, the sessions whose filters match it (once each, at the highest QoS their
//! filters grant) and the shared groups: routing a PUBLISH is one hash lookup and a walk over that
//! list. A topic's list is worked out again only when it is next needed after the subscriptions
//! changed (`generation`), so a SUBSCRIBE or UNSUBSCRIBE, even to `#` on 100,000 topics, costs
//! the filter's levels, not the topics it matches. A wildcard filter finds its topics (for their
//! retained messages) through the topics' levels (`topic_trie`).
//!
//! Which topics exist is the mode's and the list's to say (`TopicsMode`): the listed names, the
//! names the list's patterns match, and in open mode any name a client uses. A topic not on the
//! list lives while something uses it (a subscriber, a retained value, a connected client that
//! published to it) and goes when the last use does (`collect`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::protocol::{QoS, SubOptions};
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
    /// MQTT 5 properties it was published with.
    pub props: Option<Box<super::protocol::MessageProps>>,
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
    /// Each subscribed session once, at the highest QoS its matching filters grant, as of the
    /// table's generation `seen` (see `TopicTable::fresh`).
    pub subscribers: Vec<(SessionIdx, QoS)>,
    /// MQTT 5's options of those subscribers that have any (No Local, Retain As Published, a
    /// Subscription Identifier), sorted by session: empty for 3.1.1 clients, so that routing
    /// to them costs nothing more.
    pub extras: Box<[(SessionIdx, Extra)]>,
    /// Shared subscriptions that match it: each message goes to one member of each.
    pub shared: Vec<SharedGroup>,
    seen: u64,
    pub retained: Option<Retained>,
    /// Its place among retained messages (`retain_order`), from its first retained message on.
    pub retain_key: Option<Box<[u32]>>,
    pub history: History,
    pub messages: u64,
    pub last_publish: Option<SystemTime>,
    /// Of a topic not on the list: the connected clients that published to it, the first few
    /// (a topic with more may go when those few have left, while others still publish to it:
    /// it appears again with their next message, its history started afresh).
    publishers: Vec<SessionIdx>,
}

impl Topic {
    /// Not on the list, and nothing but (maybe) subscriptions keeps it.
    fn unkept(&self) -> bool {
        !self.listed && !self.system && self.retained.is_none() && self.publishers.is_empty()
    }

    /// Works its subscribers out again if the subscriptions changed since it last did.
    fn refresh(&mut self, subscriptions: &FilterTrie<Subscription>, generation: u64) {
        if self.seen != generation {
            self.fill(subscriptions, generation);
        }
    }

    /// Works out its subscribers and shared groups from the subscriptions, keeping each
    /// group's turn.
    fn fill(&mut self, subscriptions: &FilterTrie<Subscription>, generation: u64) {
        let old = std::mem::take(&mut self.shared);
        self.subscribers.clear();
        let mut extras = Vec::new();
        gather(
            subscriptions,
            &self.name,
            &mut self.subscribers,
            &mut extras,
            &mut self.shared,
        );
        // A boxed slice: 8 bytes less in every topic than a Vec, and no allocation when empty.
        self.extras = extras.into_boxed_slice();
        // Members come in the order they subscribed (a group is one filter, one node of the
        // trie). The turn stays with the member whose turn it was; if that one left, with the
        // member after it.
        for g in &mut self.shared {
            let Some(was) = old.iter().find(|o| o.filter == g.filter) else {
                continue;
            };
            let n = was.members.len();
            g.next = (0..n)
                .map(|k| was.members[(was.next + k) % n].0)
                .find_map(|s| g.members.iter().position(|(m, _)| *m == s))
                .unwrap_or(0);
        }
        self.seen = generation;
    }
}

/// The sessions a topic's messages go to, each once at the highest QoS its filters grant (with
/// their MQTT 5 options, where they have any), and its shared groups with their members in the
/// order they subscribed (their turns at 0).
fn gather(
    subscriptions: &FilterTrie<Subscription>,
    name: &str,
    subscribers: &mut Vec<(SessionIdx, QoS)>,
    extras: &mut Vec<(SessionIdx, Extra)>,
    shared: &mut Vec<SharedGroup>,
) {
    // Matches that carry MQTT 5 options: (session, no local, retain as published, id).
    let mut marked: Vec<(SessionIdx, bool, bool, u32)> = Vec::new();
    subscriptions.for_each_match(name, |s| {
        if let Some(filter) = &s.shared {
            let g = match shared.iter_mut().position(|g| g.filter == *filter) {
                Some(i) => &mut shared[i],
                None => {
                    shared.push(SharedGroup {
                        filter: filter.clone(),
                        members: Vec::new(),
                        extras: Vec::new(),
                        next: 0,
                    });
                    shared.last_mut().expect("just pushed")
                }
            };
            g.members.push((s.session, s.qos));
            if s.retain_as_published || s.id != 0 {
                let ids = if s.id != 0 { vec![s.id] } else { Vec::new() };
                g.extras.push((
                    s.session,
                    Extra {
                        no_local: false,
                        retain_as_published: s.retain_as_published,
                        ids: ids.into(),
                    },
                ));
            }
            return;
        }
        // Many topics have one subscriber: room for one, and doubling from there.
        if subscribers.capacity() == 0 {
            subscribers.reserve_exact(1);
        }
        subscribers.push((s.session, s.qos));
        if s.no_local || s.retain_as_published || s.id != 0 {
            marked.push((s.session, s.no_local, s.retain_as_published, s.id));
        }
    });
    // A session whose filters overlap gets each message once, at the highest QoS: sorted by
    // session, highest QoS first, the first of each run stays (not a search per match, which
    // a topic with 20,000 subscribers would pay 20,000 times).
    subscribers.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    if !marked.is_empty() {
        // Its one copy carries every matching Subscription Identifier, keeps the retain flag
        // if any of them asks, and is not sent to its own publisher only if all of them say
        // No Local (MQTT 5 section 3.3.4).
        marked.sort_unstable_by_key(|m| m.0);
        let mut i = 0;
        while i < marked.len() {
            let session = marked[i].0;
            let run = marked[i..].iter().take_while(|m| m.0 == session).count();
            // `subscribers` is sorted by session: its run for this one, by two searches.
            let matches = subscribers.partition_point(|m| m.0 <= session)
                - subscribers.partition_point(|m| m.0 < session);
            let group = &marked[i..i + run];
            let mut ids: Vec<u32> = group.iter().map(|m| m.3).filter(|&id| id != 0).collect();
            ids.sort_unstable();
            ids.dedup();
            extras.push((
                session,
                Extra {
                    no_local: group.iter().filter(|m| m.1).count() == matches,
                    retain_as_published: group.iter().any(|m| m.2),
                    ids: ids.into(),
                },
            ));
            i += run;
        }
    }
    subscribers.dedup_by_key(|(s, _)| *s);
}

/// MQTT 5's options of one session's subscriptions to one topic, taken together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Extra {
    /// Not sent what the session itself publishes.
    pub no_local: bool,
    /// Sent with the retain flag as published.
    pub retain_as_published: bool,
    /// The Subscription Identifiers of the matching subscriptions.
    pub ids: Box<[u32]>,
}

/// The options of `session` in a list sorted by session, if it has any.
pub(crate) fn extra_of(extras: &[(SessionIdx, Extra)], session: SessionIdx) -> Option<&Extra> {
    if extras.is_empty() {
        return None;
    }
    extras
        .binary_search_by_key(&session, |e| e.0)
        .ok()
        .map(|i| &extras[i].1)
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
    /// The members' MQTT 5 options, where they have any (in no order).
    pub extras: Vec<(SessionIdx, Extra)>,
    /// Whose turn it is.
    pub next: usize,
}

/// One subscription, as the subscriptions' trie keeps it under its filter (the target of a
/// shared one, whose whole `$share/GROUP/FILTER` it holds; an ordinary one's filter is the
/// trie's path to it): equal by session and group, whatever its QoS.
#[derive(Debug, Clone)]
struct Subscription {
    session: SessionIdx,
    shared: Option<Arc<str>>,
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
    /// The Subscription Identifier, 0 for none.
    id: u32,
}

impl Subscription {
    fn new(session: SessionIdx, filter: &str, opts: SubOptions) -> Subscription {
        Subscription {
            session,
            shared: topics::shared(filter).is_some().then(|| Arc::from(filter)),
            qos: opts.qos,
            no_local: opts.no_local,
            retain_as_published: opts.retain_as_published,
            id: opts.id,
        }
    }
}

impl PartialEq for Subscription {
    fn eq(&self, other: &Self) -> bool {
        self.session == other.session && self.shared == other.shared
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
    /// Counts changes to the subscriptions: a topic whose `seen` is older works its
    /// subscribers out again before they are used.
    generation: u64,
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
            generation: 0,
            appeared: 0,
            max_appeared,
            published: HashMap::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
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
        let TopicTable {
            topics,
            subscriptions,
            generation,
            published,
            ..
        } = self;
        let t = topics.get_mut(name).expect("there or just made");
        t.refresh(subscriptions, *generation);
        if let Some(p) = publisher
            && !t.listed
            && !t.system
            && t.publishers.len() < PUBLISHERS_KEPT
            && !t.publishers.contains(&p)
        {
            t.publishers.push(p);
            published.entry(p).or_default().push(t.name.clone());
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
        if self.topics.get(name).is_some_and(Topic::unkept) && !self.subscriptions.any_match(name) {
            self.remove(name);
        }
    }

    /// A topic with its subscribers as the subscriptions now are.
    #[cfg(test)]
    fn fresh(&mut self, name: &str) -> Option<&mut Topic> {
        let TopicTable {
            topics,
            subscriptions,
            generation,
            ..
        } = self;
        let t = topics.get_mut(name)?;
        t.refresh(subscriptions, *generation);
        Some(t)
    }

    /// How many sessions a topic's messages go to, and its shared groups with their members,
    /// as the subscriptions now are (for the window: nothing is changed).
    pub fn audience(&self, t: &Topic) -> (usize, Vec<(Arc<str>, usize)>) {
        let counts = |subscribers: &[(SessionIdx, QoS)], shared: &[SharedGroup]| {
            let groups = shared.iter().map(|g| (g.filter.clone(), g.members.len()));
            (subscribers.len(), groups.collect())
        };
        if t.seen == self.generation {
            return counts(&t.subscribers, &t.shared);
        }
        let (mut subscribers, mut shared) = (Vec::new(), Vec::new());
        let mut extras = Vec::new();
        gather(
            &self.subscriptions,
            &t.name,
            &mut subscribers,
            &mut extras,
            &mut shared,
        );
        counts(&subscribers, &shared)
    }

    fn create(&mut self, name: &str, listed: bool, system: bool) {
        let name: Arc<str> = Arc::from(name);
        self.trie.insert(&name);
        let mut topic = Topic {
            name: name.clone(),
            system,
            listed,
            subscribers: Vec::new(),
            extras: Box::new([]),
            shared: Vec::new(),
            seen: 0,
            retained: None,
            retain_key: None,
            history: History::default(),
            messages: 0,
            last_publish: None,
            publishers: Vec::new(),
        };
        // The subscriptions that already match it.
        topic.fill(&self.subscriptions, self.generation);
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

    /// Adds (or changes the QoS of) session `session`'s subscription `filter`. A filter without
    /// wildcards brings its topic into being where the mode or a pattern allows. The topics it
    /// matches take it in when next used.
    #[cfg(test)]
    pub fn subscribe(&mut self, session: SessionIdx, filter: &str, qos: QoS) {
        self.subscribe_with(session, filter, SubOptions::qos(qos));
    }

    /// `subscribe` with MQTT 5's options.
    pub fn subscribe_with(&mut self, session: SessionIdx, filter: &str, opts: SubOptions) {
        let target = topics::target(filter);
        let sub = Subscription::new(session, filter, opts);
        self.subscriptions.insert(target, sub);
        self.generation += 1;
        if !topics::has_wildcards(target)
            && !self.topics.contains_key(target)
            && self.may_appear(target).is_ok()
        {
            self.create(target, false, false);
        }
    }

    /// Takes session `session`'s subscription `filter` away; topics not on the list that it
    /// alone kept go.
    pub fn unsubscribe(&mut self, session: SessionIdx, filter: &str) {
        let target = topics::target(filter);
        let sub = Subscription::new(session, filter, SubOptions::qos(QoS::AtMostOnce));
        self.subscriptions.remove(target, &sub);
        self.generation += 1;
        // Only topics not on the list can go: with none, there is nothing to look at.
        if self.appeared > 0 {
            for name in self.matching(target) {
                self.collect(&name);
            }
        }
    }
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
        let mut t = TopicTable::default();
        t.list("lab/a");
        t.list("lab/b");
        t.subscribe(3, "lab/+", QoS::AtMostOnce);
        t.subscribe(3, "lab/a", QoS::ExactlyOnce);
        t.subscribe(3, "#", QoS::AtLeastOnce);
        t.subscribe(3, "$SYS/#", QoS::ExactlyOnce);
        assert_eq!(
            t.fresh("lab/a").unwrap().subscribers,
            vec![(3, QoS::ExactlyOnce)]
        );
        assert_eq!(
            t.fresh("lab/b").unwrap().subscribers,
            vec![(3, QoS::AtLeastOnce)]
        );
        // A new QoS for a filter replaces the old one.
        t.subscribe(3, "lab/a", QoS::AtMostOnce);
        assert_eq!(
            t.fresh("lab/a").unwrap().subscribers,
            vec![(3, QoS::AtLeastOnce)]
        );
        for f in ["lab/+", "lab/a", "#"] {
            t.unsubscribe(3, f);
        }
        assert!(t.fresh("lab/a").unwrap().subscribers.is_empty());
    }

    #[test]
    fn a_new_topic_finds_its_subscribers_and_groups_keep_their_turn() {
        let mut t = TopicTable::default();
        t.list("lab/x");
        t.subscribe(1, "lab/+", QoS::AtMostOnce);
        t.subscribe(1, "#", QoS::ExactlyOnce);
        t.subscribe(2, "$share/g/lab/#", QoS::AtLeastOnce);
        t.subscribe(4, "$share/g/lab/#", QoS::AtMostOnce);
        t.list("lab/y");
        let y = t.fresh("lab/y").unwrap();
        assert_eq!(y.subscribers, vec![(1, QoS::ExactlyOnce)]);
        assert!(y.listed);
        assert_eq!(y.shared.len(), 1);
        assert_eq!(
            y.shared[0].members,
            vec![(2, QoS::AtLeastOnce), (4, QoS::AtMostOnce)]
        );
        y.shared[0].next = 1;
        // Another subscription elsewhere: the group's turn stays where it was.
        t.subscribe(5, "other", QoS::AtMostOnce);
        assert_eq!(t.fresh("lab/y").unwrap().shared[0].next, 1);
        // Counted for the window without being worked out again.
        t.subscribe(6, "lab/y", QoS::AtMostOnce);
        let y = t.get("lab/y").unwrap();
        let (n, groups) = t.audience(y);
        assert_eq!(n, 2);
        assert_eq!(groups, vec![(Arc::from("$share/g/lab/#"), 2)]);
    }

    #[test]
    fn a_groups_turn_stays_with_its_member_when_others_come_and_go() {
        let mut t = TopicTable::default();
        t.list("lab/x");
        for s in [1, 2, 3] {
            t.subscribe(s, "$share/g/lab/x", QoS::AtMostOnce);
        }
        let turn = |t: &mut TopicTable| {
            let g = &t.fresh("lab/x").unwrap().shared[0];
            g.members[g.next].0
        };
        t.fresh("lab/x").unwrap().shared[0].next = 1;
        assert_eq!(turn(&mut t), 2);
        // A member before it leaves: still 2's turn.
        t.unsubscribe(1, "$share/g/lab/x");
        assert_eq!(turn(&mut t), 2);
        // A new QoS keeps its place; a newcomer goes last.
        t.subscribe(2, "$share/g/lab/x", QoS::AtLeastOnce);
        t.subscribe(4, "$share/g/lab/x", QoS::AtMostOnce);
        let members: Vec<SessionIdx> = t.fresh("lab/x").unwrap().shared[0]
            .members
            .iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(members, [2, 3, 4]);
        assert_eq!(turn(&mut t), 2);
        // The member whose turn it is leaves: the one after it.
        t.unsubscribe(2, "$share/g/lab/x");
        assert_eq!(turn(&mut t), 3);
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
        t.subscribe(2, "devices/8/temperature", QoS::AtLeastOnce);
        assert_eq!(
            t.fresh("devices/8/temperature").unwrap().subscribers,
            vec![(2, QoS::AtLeastOnce)]
        );
        t.unsubscribe(2, "devices/8/temperature");
        assert!(t.get("devices/8/temperature").is_none());
        // A wildcard subscriber keeps what appeared; when it goes, so do they.
        t.subscribe(3, "devices/#", QoS::AtMostOnce);
        t.for_publish("devices/9/temperature", Some(4)).unwrap();
        t.forget_publisher(4);
        assert!(t.get("devices/9/temperature").is_some());
        t.unsubscribe(3, "devices/#");
        assert!(t.get("devices/9/temperature").is_none());
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
        t.for_publish("a", Some(1)).unwrap().retained = Some(Retained {
            payload: Bytes::from_static(b"1"),
            qos: QoS::AtMostOnce,
            props: None,
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
