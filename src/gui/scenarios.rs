//! Guided scenarios: one click shows a mode of MQTT with lab clients, step by step at a pace a
//! class can follow, each step saying what happens and which rule makes it happen, the packets
//! drawn as they go.
//!
//! A scenario is data (its topics, its steps); [`Run`] plays one: each step makes a lab client
//! or gives one a command, then waits (a pause, or until a client reaches a state). Topics a
//! scenario needs that are not on the list are added for it and removed when it ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::broker::{BrokerHandle, Command, QoS};
use crate::lab::{LabClient, LabCommand, LabConfig, LabState, LabWill, Publish, Status};

use super::lab_panel::LabPanel;

pub struct Scenario {
    pub name: &'static str,
    /// One sentence on what it shows.
    pub about: &'static str,
    /// Topics it publishes or subscribes to (added to the list while it runs if missing).
    pub topics: &'static [&'static str],
    pub steps: fn() -> Vec<Step>,
}

pub struct Step {
    /// What the class is told when the step runs.
    pub say: &'static str,
    pub act: Act,
    pub wait: Wait,
}

pub enum Act {
    /// Make a lab client (known in the scenario by its label) and connect it.
    Make(&'static str, LabConfig),
    Do(&'static str, LabCommand),
    Nothing,
}

pub enum Wait {
    /// A pause (shortened by the pace).
    For(Duration),
    /// Until a client reaches a state; the scenario fails if it does not within the time.
    Until(&'static str, Until, Duration),
}

#[derive(Debug, Clone, Copy)]
pub enum Until {
    Connected,
    Closed,
    SubAcked,
    Received(usize),
}

impl Until {
    fn holds(self, s: &LabState) -> bool {
        match self {
            Until::Connected => matches!(s.status, Status::Connected { .. }),
            Until::Closed => matches!(s.status, Status::Closed(_) | Status::Refused(_)),
            Until::SubAcked => {
                !s.subscriptions.is_empty() && s.subscriptions.iter().all(|x| x.2.is_some())
            }
            Until::Received(n) => s.received.len() >= n,
        }
    }
}

const BEAT: Duration = Duration::from_millis(2500);
const SOON: Duration = Duration::from_secs(5);

fn make(label: &'static str, say: &'static str, config: LabConfig) -> Step {
    Step {
        say,
        act: Act::Make(label, config),
        wait: Wait::Until(label, Until::Connected, SOON),
    }
}

fn subscribe(label: &'static str, filter: &str, qos: QoS, say: &'static str) -> Step {
    Step {
        say,
        act: Act::Do(label, LabCommand::Subscribe(filter.into(), qos)),
        wait: Wait::Until(label, Until::SubAcked, SOON),
    }
}

fn publish(topic: &str, payload: &str, qos: QoS, retain: bool) -> LabCommand {
    LabCommand::Publish(Publish {
        topic: topic.into(),
        payload: payload.into(),
        qos,
        retain,
    })
}

fn step(say: &'static str, act: Act, wait: Wait) -> Step {
    Step { say, act, wait }
}

fn with_will(id: &str, topic: &str, payload: &str) -> LabConfig {
    let mut c = LabConfig::new(id);
    c.will = Some(LabWill {
        topic: topic.into(),
        payload: payload.into(),
        qos: QoS::AtLeastOnce,
        retain: false,
    });
    c
}

pub static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "QoS 0, 1 and 2",
        about: "The same message at each quality of service, and the packets each one costs.",
        topics: &["demo/qos"],
        steps: || {
            vec![
                make(
                    "subscriber",
                    "A subscriber connects.",
                    LabConfig::new("subscriber"),
                ),
                subscribe(
                    "subscriber",
                    "demo/qos",
                    QoS::ExactlyOnce,
                    "It subscribes at QoS 2: every message reaches it at the QoS it was published with (never above the one granted).",
                ),
                make(
                    "publisher",
                    "A publisher connects.",
                    LabConfig::new("publisher"),
                ),
                step(
                    "QoS 0, at most once: one PUBLISH each way and no answer. If it is lost, it is lost.",
                    Act::Do(
                        "publisher",
                        publish("demo/qos", "q0", QoS::AtMostOnce, false),
                    ),
                    Wait::For(BEAT),
                ),
                step(
                    "QoS 1, at least once: each PUBLISH is answered by a PUBACK with its packet id; without the PUBACK the sender sends it again (DUP), so it may arrive twice.",
                    Act::Do(
                        "publisher",
                        publish("demo/qos", "q1", QoS::AtLeastOnce, false),
                    ),
                    Wait::For(BEAT),
                ),
                step(
                    "QoS 2, exactly once: PUBLISH, PUBREC, PUBREL, PUBCOMP on each leg. The receiver keeps the packet id until PUBREL, so a repeated PUBLISH is not delivered twice.",
                    Act::Do(
                        "publisher",
                        publish("demo/qos", "q2", QoS::ExactlyOnce, false),
                    ),
                    Wait::Until("subscriber", Until::Received(3), SOON),
                ),
            ]
        },
    },
    Scenario {
        name: "A retained value for a late subscriber",
        about: "The broker keeps the last retained message of a topic for whoever subscribes later.",
        topics: &["demo/retained"],
        steps: || {
            vec![
                make("sensor", "A sensor connects.", LabConfig::new("sensor")),
                step(
                    "It publishes 21.5 with the retain flag: the broker delivers it to the subscribers there are (none) and keeps it.",
                    Act::Do(
                        "sensor",
                        publish("demo/retained", "21.5", QoS::AtLeastOnce, true),
                    ),
                    Wait::For(BEAT),
                ),
                make("late", "A client connects later.", LabConfig::new("late")),
                step(
                    "It subscribes, and gets 21.5 at once with the retain flag set: it need not wait for the next reading.",
                    Act::Do(
                        "late",
                        LabCommand::Subscribe("demo/retained".into(), QoS::AtLeastOnce),
                    ),
                    Wait::Until("late", Until::Received(1), SOON),
                ),
                step(
                    "The sensor publishes an empty retained message: that clears the topic's retained value (a subscriber there now gets the empty message).",
                    Act::Do(
                        "sensor",
                        publish("demo/retained", "", QoS::AtLeastOnce, true),
                    ),
                    Wait::For(BEAT),
                ),
                make("later", "Another client connects.", LabConfig::new("later")),
                step(
                    "It subscribes and gets nothing: there is no retained value any more.",
                    Act::Do(
                        "later",
                        LabCommand::Subscribe("demo/retained".into(), QoS::AtLeastOnce),
                    ),
                    Wait::For(BEAT),
                ),
            ]
        },
    },
    Scenario {
        name: "A will on an abrupt close",
        about: "The broker publishes a client's will when its connection ends without DISCONNECT, and only then.",
        topics: &["demo/status"],
        steps: || {
            vec![
                make("watcher", "A watcher connects.", LabConfig::new("watcher")),
                subscribe(
                    "watcher",
                    "demo/status",
                    QoS::AtLeastOnce,
                    "It subscribes to demo/status, where the wills go.",
                ),
                make(
                    "polite",
                    "A client connects with a will: \"polite went away\" on demo/status, which the broker holds.",
                    with_will("polite", "demo/status", "polite went away"),
                ),
                step(
                    "It sends DISCONNECT: a clean goodbye, so the broker discards its will. The watcher gets nothing.",
                    Act::Do("polite", LabCommand::Disconnect),
                    Wait::For(BEAT),
                ),
                make(
                    "abrupt",
                    "Another client connects with a will.",
                    with_will("abrupt", "demo/status", "abrupt went away"),
                ),
                step(
                    "Its connection ends without DISCONNECT (the plug is pulled): the broker publishes its will to the watcher.",
                    Act::Do("abrupt", LabCommand::PullPlug),
                    Wait::Until("watcher", Until::Received(1), SOON),
                ),
            ]
        },
    },
    Scenario {
        name: "Keepalive expiry",
        about: "A client that goes quiet is closed by the broker at 1.5 times its keepalive.",
        topics: &["demo/status"],
        steps: || {
            let mut sleepy = with_will("sleepy", "demo/status", "sleepy timed out");
            sleepy.keep_alive = 2;
            vec![
                make("watcher", "A watcher connects.", LabConfig::new("watcher")),
                subscribe(
                    "watcher",
                    "demo/status",
                    QoS::AtLeastOnce,
                    "It subscribes to demo/status.",
                ),
                make(
                    "sleepy",
                    "A client connects with a keepalive of 2 s and a will: it promises to send something at least every 2 s (a PINGREQ when it has nothing else).",
                    sleepy,
                ),
                step(
                    "It sends its PINGREQs and the broker answers PINGRESP.",
                    Act::Nothing,
                    Wait::For(Duration::from_millis(4500)),
                ),
                step(
                    "It stops answering: no more PINGREQ. The broker waits 1.5 × 2 s = 3 s after the last packet, then closes it and publishes its will.",
                    Act::Do("sleepy", LabCommand::Silent(true)),
                    Wait::Until("sleepy", Until::Closed, Duration::from_secs(8)),
                ),
                step(
                    "The will reaches the watcher.",
                    Act::Nothing,
                    Wait::Until("watcher", Until::Received(1), SOON),
                ),
            ]
        },
    },
    Scenario {
        name: "A persistent session",
        about: "A client without clean session gets, on reconnecting, what was published while it was away.",
        topics: &["demo/session"],
        steps: || {
            let mut phone = LabConfig::new("phone");
            phone.clean_session = false;
            vec![
                make(
                    "phone",
                    "A client connects with clean session off: the broker keeps its session when it leaves.",
                    phone,
                ),
                subscribe(
                    "phone",
                    "demo/session",
                    QoS::AtLeastOnce,
                    "It subscribes at QoS 1.",
                ),
                step(
                    "It disconnects. Its subscription stays, and QoS 1 and 2 messages for it are queued.",
                    Act::Do("phone", LabCommand::Disconnect),
                    Wait::For(BEAT),
                ),
                make("sensor", "A sensor connects.", LabConfig::new("sensor")),
                step(
                    "It publishes three readings at QoS 1 while the phone is away: the broker queues them in the phone's session.",
                    Act::Do(
                        "sensor",
                        publish("demo/session", "reading 1", QoS::AtLeastOnce, false),
                    ),
                    Wait::For(Duration::from_millis(700)),
                ),
                step(
                    "",
                    Act::Do(
                        "sensor",
                        publish("demo/session", "reading 2", QoS::AtLeastOnce, false),
                    ),
                    Wait::For(Duration::from_millis(700)),
                ),
                step(
                    "",
                    Act::Do(
                        "sensor",
                        publish("demo/session", "reading 3", QoS::AtLeastOnce, false),
                    ),
                    Wait::For(BEAT),
                ),
                step(
                    "The phone reconnects: CONNACK says session present, and the queued messages arrive.",
                    Act::Do("phone", LabCommand::Connect),
                    Wait::Until("phone", Until::Received(3), SOON),
                ),
            ]
        },
    },
    Scenario {
        name: "A topic not on the list",
        about: "The broker refuses a subscription that matches no topic on its list.",
        topics: &[],
        steps: || {
            vec![
                make("student", "A client connects.", LabConfig::new("student")),
                subscribe(
                    "student",
                    "demo/not-on-the-list",
                    QoS::AtLeastOnce,
                    "It subscribes to a topic that is not on the list: SUBACK answers 0x80, refused (MQTT 3.1.1 section 3.9.3). The Topics panel lists the refusal.",
                ),
                step("", Act::Nothing, Wait::For(BEAT)),
            ]
        },
    },
    Scenario {
        name: "Client id takeover",
        about: "Two connections with one client id: the broker keeps the newer one.",
        topics: &[],
        steps: || {
            vec![
                make(
                    "laptop",
                    "A client connects as \"laptop\".",
                    LabConfig::new("laptop"),
                ),
                step(
                    "A second connection uses the same client id: the broker closes the first one (MQTT 3.1.1 section 3.1.4) and the second takes its session.",
                    Act::Make("laptop again", LabConfig::new("laptop")),
                    Wait::Until("laptop", Until::Closed, SOON),
                ),
                step("", Act::Nothing, Wait::For(BEAT)),
            ]
        },
    },
    Scenario {
        name: "Wildcards + and #",
        about: "+ matches one level of a topic, # any number of levels at the end.",
        topics: &["demo/room/1/temp", "demo/room/2/temp", "demo/room/1/hum"],
        steps: || {
            vec![
                make("plus", "A client connects.", LabConfig::new("plus")),
                subscribe(
                    "plus",
                    "demo/room/+/temp",
                    QoS::AtMostOnce,
                    "It subscribes to demo/room/+/temp: every room's temperature.",
                ),
                make("hash", "Another client connects.", LabConfig::new("hash")),
                subscribe(
                    "hash",
                    "demo/room/#",
                    QoS::AtMostOnce,
                    "It subscribes to demo/room/#: everything under demo/room.",
                ),
                make("sensors", "A sensor connects.", LabConfig::new("sensors")),
                step(
                    "demo/room/1/temp: both get it.",
                    Act::Do(
                        "sensors",
                        publish("demo/room/1/temp", "21.5", QoS::AtMostOnce, false),
                    ),
                    Wait::For(BEAT),
                ),
                step(
                    "demo/room/2/temp: both get it.",
                    Act::Do(
                        "sensors",
                        publish("demo/room/2/temp", "19.0", QoS::AtMostOnce, false),
                    ),
                    Wait::For(BEAT),
                ),
                step(
                    "demo/room/1/hum: only the # subscriber, as + stands for one level and temp is not hum.",
                    Act::Do(
                        "sensors",
                        publish("demo/room/1/hum", "40", QoS::AtMostOnce, false),
                    ),
                    Wait::Until("hash", Until::Received(3), SOON),
                ),
            ]
        },
    },
    Scenario {
        name: "$SYS",
        about: "The broker publishes its own statistics under $SYS.",
        topics: &[],
        steps: || {
            vec![
                make("curious", "A client connects.", LabConfig::new("curious")),
                step(
                    "It subscribes to $SYS/broker/clients/connected: the broker's topics under $SYS are always there (and # does not match them, so a lab/# subscriber is not flooded). They are retained, so the value comes at once, then again at each update.",
                    Act::Do(
                        "curious",
                        LabCommand::Subscribe(
                            "$SYS/broker/clients/connected".into(),
                            QoS::AtMostOnce,
                        ),
                    ),
                    Wait::Until("curious", Until::Received(1), Duration::from_secs(15)),
                ),
                step("", Act::Nothing, Wait::For(BEAT)),
            ]
        },
    },
];

/// A scenario being played.
pub struct Run {
    pub scenario: &'static Scenario,
    steps: Vec<Step>,
    next: usize,
    waiting: Option<(usize, Instant)>,
    pub paused: bool,
    /// Pauses are multiplied by this (tests run at a fraction).
    pace: f32,
    clients: HashMap<&'static str, LabClient>,
    /// What has been said, in order.
    pub said: Vec<&'static str>,
    added_topics: Vec<String>,
    pub failed: Option<String>,
    pub done: bool,
    /// The trace's newest event when the scenario started: its diagram starts after it.
    pub first_seq: u64,
}

impl Run {
    /// `inherited`: topics the scenario before added and did not remove, because this one
    /// needs them too (removing and adding them again would race).
    pub fn start(
        scenario: &'static Scenario,
        broker: &BrokerHandle,
        topics_now: &[String],
        inherited: Vec<String>,
        pace: f32,
        first_seq: u64,
    ) -> Run {
        let mut added_topics = inherited;
        for t in scenario.topics {
            if !topics_now.iter().any(|x| x == t) && !added_topics.iter().any(|x| x == t) {
                broker.try_send(Command::AddTopic {
                    topic: (*t).to_owned(),
                    reply: None,
                });
                added_topics.push((*t).to_owned());
            }
        }
        Run {
            scenario,
            steps: (scenario.steps)(),
            next: 0,
            waiting: None,
            paused: false,
            pace,
            clients: HashMap::new(),
            said: Vec::new(),
            added_topics,
            failed: None,
            done: false,
            first_seq,
        }
    }

    /// Topics added for the scenario, so that they can be listed.
    pub fn added_topics(&self) -> &[String] {
        &self.added_topics
    }

    /// The client ids the scenario's clients use (for its diagram).
    pub fn client_ids(&self) -> Vec<String> {
        self.clients
            .values()
            .map(|c| c.state().config.client_id.clone())
            .collect()
    }

    pub fn steps_total(&self) -> usize {
        self.steps.len()
    }

    pub fn steps_done(&self) -> usize {
        self.next
    }

    /// Moves on when the current step's wait is over (or at once with `force`: the Step
    /// button).
    pub fn tick(&mut self, lab: &mut LabPanel, broker: &BrokerHandle, force: bool) {
        if self.done || self.failed.is_some() || (self.paused && !force) {
            return;
        }
        if let Some((i, since)) = self.waiting {
            let over = match &self.steps[i].wait {
                Wait::For(d) => since.elapsed() >= d.mul_f32(self.pace),
                Wait::Until(label, until, within) => {
                    let holds = self
                        .clients
                        .get(label)
                        .is_some_and(|c| until.holds(&c.state()));
                    if !holds && since.elapsed() > *within {
                        self.failed = Some(format!(
                            "{label} did not reach {until:?} within {} s",
                            within.as_secs()
                        ));
                        self.finish(broker);
                        return;
                    }
                    holds
                }
            };
            if !over && !force {
                return;
            }
            self.waiting = None;
        }
        let Some(step) = self.steps.get_mut(self.next) else {
            self.finish(broker);
            return;
        };
        match std::mem::replace(&mut step.act, Act::Nothing) {
            Act::Make(label, config) => match lab.add_unchecked(config) {
                Ok(c) => {
                    self.clients.insert(label, c);
                }
                Err(e) => {
                    self.failed = Some(e);
                    self.finish(broker);
                    return;
                }
            },
            Act::Do(label, cmd) => {
                if let Some(c) = self.clients.get(label) {
                    c.send(cmd);
                }
            }
            Act::Nothing => {}
        }
        if !step.say.is_empty() {
            self.said.push(step.say);
        }
        self.waiting = Some((self.next, Instant::now()));
        self.next += 1;
    }

    /// Ends the scenario: its topics leave the list again (its clients stay, to look at).
    pub fn finish(&mut self, broker: &BrokerHandle) {
        self.finish_keeping(broker, &[]);
    }

    /// Ends the scenario, keeping on the list the topics it added that `keep` names; returns
    /// those (the next scenario takes them over).
    pub fn finish_keeping(&mut self, broker: &BrokerHandle, keep: &[&str]) -> Vec<String> {
        if !self.done {
            self.done = true;
            for c in self.clients.values() {
                c.send(LabCommand::StopRepeat);
            }
        }
        let (kept, gone): (Vec<String>, Vec<String>) = self
            .added_topics
            .drain(..)
            .partition(|t| keep.contains(&t.as_str()));
        for t in gone {
            broker.try_send(Command::RemoveTopic {
                topic: t,
                reply: None,
            });
        }
        kept
    }

    /// Goes on after a pause; a step waiting for a client gets its full time again.
    pub fn resume(&mut self) {
        self.paused = false;
        if let Some((_, since)) = &mut self.waiting {
            *since = Instant::now();
        }
    }

    /// The scenario's lab clients.
    pub fn clients(&self) -> impl Iterator<Item = &LabClient> {
        self.clients.values()
    }

    /// The scenario's client named `label`.
    pub fn client(&self, label: &str) -> Option<&LabClient> {
        self.clients.get(label)
    }
}
