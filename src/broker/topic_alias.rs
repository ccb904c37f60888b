//! MQTT 5 topic aliases, both ways, for one connection (OASIS MQTT 5.0, section 3.3.2.3.4).
//!
//! A client may set up to the broker's Topic Alias Maximum aliases and then send a PUBLISH with
//! the alias and an empty topic; the broker sets aliases for the topics it sends a client, up
//! to the client's maximum, so that a subscriber of one long topic is sent its name once.

use std::sync::Arc;

use super::codec::DecodeError;
use super::protocol::{Publish, Reason};

/// The aliases a client set: alias `n` is `topics[n - 1]`.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    topics: Vec<Option<String>>,
}

impl Inbound {
    /// Puts the topic of an aliased PUBLISH back, or records the alias it sets. `max` is the
    /// Topic Alias Maximum the broker offered this client.
    pub fn resolve(&mut self, p: &mut Publish, max: u16) -> Result<(), DecodeError> {
        let alias = p.alias;
        if alias == 0 {
            return Ok(());
        }
        if alias > max {
            return Err(DecodeError::WithReason(
                Reason::TOPIC_ALIAS_INVALID,
                format!("Topic Alias {alias} is over the maximum of {max}"),
            ));
        }
        let slot = alias as usize - 1;
        if self.topics.len() <= slot {
            self.topics.resize(slot + 1, None);
        }
        if p.topic.is_empty() {
            match &self.topics[slot] {
                Some(topic) => p.topic = topic.clone(),
                None => {
                    return Err(DecodeError::Protocol(format!(
                        "Topic Alias {alias} was never set"
                    )));
                }
            }
        } else {
            self.topics[slot] = Some(p.topic.clone());
        }
        Ok(())
    }
}

/// The most aliases the broker sets for one client, whatever it takes: a few hot topics are
/// what aliases are for, and a short list is searched faster than a map is hashed.
const OUT_MAX: u16 = 16;

/// The aliases the broker set for a client: the first topics it was sent keep theirs for the
/// connection's life (no eviction, so a topic's alias never changes under a client). Alias `n`
/// is `topics[n - 1]`.
#[derive(Debug)]
pub(crate) struct Outbound {
    max: u16,
    topics: Vec<Arc<str>>,
}

impl Outbound {
    pub fn new(max: u16) -> Self {
        Outbound {
            max: max.min(OUT_MAX),
            topics: Vec::new(),
        }
    }

    /// The alias the client has for `topic`, if any. A topic's name is shared by all its
    /// messages, so the pointer nearly always settles it.
    pub fn find(&self, topic: &Arc<str>) -> Option<u16> {
        self.topics
            .iter()
            .position(|t| Arc::ptr_eq(t, topic))
            .or_else(|| self.topics.iter().position(|t| t == topic))
            .map(|i| i as u16 + 1)
    }

    /// A new alias for `topic`, while there are any left.
    pub fn assign(&mut self, topic: &Arc<str>) -> Option<u16> {
        if self.topics.len() >= self.max as usize {
            return None;
        }
        self.topics.push(topic.clone());
        Some(self.topics.len() as u16)
    }

    /// The alias to send `topic` with (0: none), and whether the client has it already (then
    /// the topic is left out): `fits(alias_only)` says whether the packet, 3 bytes larger for
    /// the alias and without the topic when the client has it, stays within what the client
    /// takes.
    pub fn alias_for(&mut self, topic: &Arc<str>, fits: impl Fn(bool) -> bool) -> (u16, bool) {
        match self.find(topic) {
            Some(alias) if fits(true) => (alias, true),
            Some(_) => (0, false),
            None if fits(false) => self.assign(topic).map_or((0, false), |a| (a, false)),
            None => (0, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::protocol::QoS;

    fn publish(topic: &str, alias: u16) -> Publish {
        Publish {
            topic: topic.into(),
            payload: Default::default(),
            qos: QoS::AtMostOnce,
            pkid: 0,
            retain: false,
            dup: false,
            props: None,
            alias,
        }
    }

    #[test]
    fn a_client_sets_and_uses_aliases() {
        let mut a = Inbound::default();
        let mut p = publish("lab/a", 2);
        a.resolve(&mut p, 10).unwrap();
        let mut p = publish("", 2);
        a.resolve(&mut p, 10).unwrap();
        assert_eq!(p.topic, "lab/a");
        // Set again to another topic.
        a.resolve(&mut publish("lab/b", 2), 10).unwrap();
        let mut p = publish("", 2);
        a.resolve(&mut p, 10).unwrap();
        assert_eq!(p.topic, "lab/b");
        assert!(matches!(
            a.resolve(&mut publish("", 3), 10),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            a.resolve(&mut publish("x", 11), 10),
            Err(DecodeError::WithReason(Reason::TOPIC_ALIAS_INVALID, _))
        ));
    }

    #[test]
    fn the_broker_aliases_the_first_topics_it_sends() {
        let mut a = Outbound::new(2);
        let (t1, t2, t3): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let yes = |_| true;
        assert_eq!(a.alias_for(&t1, yes), (1, false));
        assert_eq!(a.alias_for(&t1, yes), (1, true));
        // Too large with the alias: sent whole, and no alias taken up.
        assert_eq!(a.alias_for(&t2, |_| false), (0, false));
        assert_eq!(a.alias_for(&t2, yes), (2, false));
        assert_eq!(a.alias_for(&t3, yes), (0, false));
        assert_eq!(a.alias_for(&t2, yes), (2, true));
    }
}
