//! Who may publish and subscribe where: per-user rules from `users.ron`, in the spirit of
//! Mosquitto's ACL patterns. A rule is a topic filter in which `%u` stands for the user name
//! and `%c` for the client id, e.g. `students/%u/#`.
//!
//! A user (or anonymous clients) without rules may do anything the topic list allows. With
//! rules, a PUBLISH is allowed when a `publish` rule matches its topic, and a SUBSCRIBE filter
//! when a `subscribe` rule covers it: every topic the filter can match, the rule matches too (so
//! `students/#` allows `students/ada/+`, while `students/+/temperature` does not allow
//! `students/#`).

use serde::{Deserialize, Serialize};

use super::topics;

/// What a user (or anonymous clients) may do; `None` for either list: no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Filters of the topics it may publish to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Filters it may subscribe within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
}

impl Rules {
    pub fn is_open(&self) -> bool {
        self.publish.is_none() && self.subscribe.is_none()
    }

    /// Checks every rule: a valid filter once `%u` and `%c` are put in.
    pub fn check(&self) -> Result<(), String> {
        for (what, list) in [("publish", &self.publish), ("subscribe", &self.subscribe)] {
            for rule in list.iter().flatten() {
                let probe = rule.replace("%u", "u").replace("%c", "c");
                topics::validate_filter(&probe)
                    .map_err(|e| format!("{what} rule {rule:?} is not a topic filter: it {e}"))?;
            }
        }
        Ok(())
    }
}

/// One client's rules with its user name and client id put in: what the router checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

impl Grant {
    /// The rules for a client that logged in as `username` (`None`: anonymously) with
    /// `client_id`; `None` when it may do anything.
    pub fn of(rules: &Rules, username: Option<&str>, client_id: &str) -> Option<Grant> {
        if rules.is_open() {
            return None;
        }
        let resolve = |list: &Option<Vec<String>>| {
            list.as_ref().map(|rules| {
                rules
                    .iter()
                    .filter_map(|r| substitute(r, username, client_id))
                    .collect()
            })
        };
        Some(Grant {
            publish: resolve(&rules.publish),
            subscribe: resolve(&rules.subscribe),
        })
    }

    /// Allows nothing: for a user who is gone.
    pub fn nothing() -> Grant {
        Grant {
            publish: Some(Vec::new()),
            subscribe: Some(Vec::new()),
        }
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .as_ref()
            .is_none_or(|rules| rules.iter().any(|r| topics::matches(r, topic)))
    }

    /// Whether a SUBSCRIBE filter (`$share/GROUP/FILTER`: its FILTER) is within the rules.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let filter = topics::target(filter);
        self.subscribe
            .as_ref()
            .is_none_or(|rules| rules.iter().any(|r| covers(r, filter)))
    }
}

/// A rule with `%u` and `%c` put in; `None` (the rule grants nothing) when it names the user
/// of an anonymous client, or when the name or id would change the rule's levels (`/`, `+`,
/// `#` in it): a client id `a/#` must not widen `lab/%c` to `lab/a/#`.
fn substitute(rule: &str, username: Option<&str>, client_id: &str) -> Option<String> {
    let safe = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
    let mut out = rule.to_owned();
    if rule.contains("%u") {
        let u = username.filter(|u| safe(u))?;
        out = out.replace("%u", u);
    }
    if rule.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    topics::validate_filter(&out).is_ok().then_some(out)
}

/// True if every topic `filter` matches, `rule` matches too (both valid filters).
pub fn covers(rule: &str, filter: &str) -> bool {
    // A rule that starts with a wildcard does not match `$` topics; a filter that starts with
    // one matches none, so it is covered as far as `$` goes.
    if filter.starts_with('$') && rule.starts_with(['+', '#']) {
        return false;
    }
    // A name has at least one level, so a `#` at the very start has no parent level to match:
    // there it is the same as `+/#`.
    if filter == "#" {
        return rule == "#" || rule == "+/#";
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "+" => {}
            (None, None) => return true,
            // (A rule "a/#" covers the filter "a": the first arm.)
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::test_inputs::every_path;

    #[test]
    fn substitution() {
        let rules = Rules {
            publish: Some(vec!["students/%u/#".into(), "devices/%c".into()]),
            subscribe: None,
        };
        let g = Grant::of(&rules, Some("ada"), "esp-1").unwrap();
        assert!(g.may_publish("students/ada/temp"));
        assert!(g.may_publish("students/ada"));
        assert!(!g.may_publish("students/bob/temp"));
        assert!(g.may_publish("devices/esp-1"));
        assert!(!g.may_publish("devices/esp-2"));
        assert!(
            g.may_subscribe("anything/#"),
            "no subscribe rules: no limit"
        );
        // Anonymous: %u grants nothing.
        let g = Grant::of(&rules, None, "esp-1").unwrap();
        assert!(!g.may_publish("students//temp"));
        assert!(g.may_publish("devices/esp-1"));
        // A client id that would widen the rule grants nothing.
        let g = Grant::of(&rules, Some("ada"), "x/#").unwrap();
        assert!(!g.may_publish("devices/x/y"));
        let g = Grant::of(&rules, Some("a+"), "c").unwrap();
        assert!(!g.may_publish("students/a+/x"));
        assert_eq!(Grant::of(&Rules::default(), Some("ada"), "c"), None);
    }

    #[test]
    fn coverage() {
        assert!(covers("students/#", "students/ada/+"));
        assert!(covers("students/#", "students"));
        assert!(covers("students/+/temp", "students/ada/temp"));
        assert!(covers("students/+/temp", "students/+/temp"));
        assert!(!covers("students/+/temp", "students/#"));
        assert!(!covers("students/ada/temp", "students/+/temp"));
        assert!(!covers("students/+", "students/ada/temp"));
        assert!(covers("#", "a/b"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
        assert!(!covers("a/b", "a"));
        assert!(!covers("a", "a/b"));
    }

    /// `covers` against brute force: every name from a small alphabet that the filter matches,
    /// the rule matches.
    #[test]
    fn coverage_agrees_with_matching() {
        let filters: Vec<String> = every_path(&["a", "b", "$x", "+", "#"], 3)
            .into_iter()
            .filter(|f| topics::validate_filter(f).is_ok())
            .collect();
        // Names up to four levels, with a level no filter names, stand for every name.
        let names = every_path(&["a", "b", "$x", "z"], 4);
        for rule in &filters {
            for filter in &filters {
                let brute = names
                    .iter()
                    .filter(|n| topics::matches(filter, n))
                    .all(|n| topics::matches(rule, n));
                assert_eq!(
                    covers(rule, filter),
                    brute,
                    "rule {rule:?}, filter {filter:?}"
                );
            }
        }
    }

    #[test]
    fn bad_rules_are_named() {
        let rules = Rules {
            publish: None,
            subscribe: Some(vec!["a/#/b".into()]),
        };
        assert!(rules.check().unwrap_err().contains("\"a/#/b\""));
        let ok = Rules {
            publish: Some(vec!["students/%u/#".into()]),
            subscribe: Some(vec![]),
        };
        assert!(ok.check().is_ok());
    }
}
