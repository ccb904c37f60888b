//! A bounded log of what happened, for the window: refused subscriptions and logins, protocol
//! errors, connects and disconnects, kicks, topic changes.

use std::collections::VecDeque;
use std::time::SystemTime;

/// Entries kept; older ones are dropped (and counted).
pub const EVENT_LOG_LEN: usize = 500;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Connected,
    Disconnected,
    /// A connection closed for a fault: protocol error, keepalive, socket error, slow reader.
    Fault,
    LoginRefused,
    SubscriptionRefused,
    /// A PUBLISH (or will) its client's rules do not allow.
    PublishRefused,
    Kicked,
    /// A subscriber's queue stopped moving (or moves again after it had).
    Stuck,
    /// The persisted state: restored, cleared, or failing to be written.
    Persistence,
    Topics,
    Users,
    /// A bridge's configuration changed, or it went up or down.
    Bridges,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: SystemTime,
    pub kind: EventKind,
    /// Client id, or the peer address where there is no client id yet.
    pub who: String,
    pub text: String,
}

/// The last `EVENT_LOG_LEN` events, oldest first.
#[derive(Debug, Default, Clone)]
pub struct EventLog {
    entries: VecDeque<Event>,
    /// Events pushed since the start (so a reader can tell what is new).
    pub total: u64,
}

impl EventLog {
    pub fn push(&mut self, kind: EventKind, who: impl Into<String>, text: impl Into<String>) {
        if self.entries.len() == EVENT_LOG_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(Event {
            time: SystemTime::now(),
            kind,
            who: who.into(),
            text: text.into(),
        });
        self.total += 1;
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> + ExactSizeIterator {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_entries() {
        let mut log = EventLog::default();
        for i in 0..EVENT_LOG_LEN + 5 {
            log.push(EventKind::Topics, "x", i.to_string());
        }
        assert_eq!(log.iter().len(), EVENT_LOG_LEN);
        assert_eq!(log.iter().next().unwrap().text, "5");
        assert_eq!(log.total, EVENT_LOG_LEN as u64 + 5);
    }
}
