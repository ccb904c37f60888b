//! `bridges.ron`: the brokers this one forwards topics to and from, and which topics.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::broker::files::{self, FileError};
use crate::broker::topics;

/// The bridges file shipped with the app: none, and an example in a comment.
pub const DEFAULT_BRIDGES: &str = include_str!("../../../bridges.ron");

/// One bridge: a connection to another broker, and the topics that cross it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Unique among the bridges; names the bridge in the window, the log and the trace.
    pub name: String,
    /// `mqtt://host:port`, `mqtts://host:port`, `ws://host:port/path` or `wss://...`.
    pub address: String,
    /// The certificate authority that signed the remote's certificate (PEM), for `mqtts://`
    /// and `wss://`; without it the system's trusted roots are used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The client id on the remote broker [default: `mqtt-lab-NAME`].
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A clean session on the remote (what it queued for the bridge while it was away is
    /// lost). Off by default, as Mosquitto's bridges do, so that nothing is.
    #[serde(default)]
    pub clean_session: bool,
    /// Seconds; 0 turns keepalive off.
    #[serde(default = "default_keepalive")]
    pub keepalive: u16,
    /// A bridge can be kept in the file without running.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub topics: Vec<TopicRule>,
}

/// Which topics cross a bridge, which way, and how they are renamed on the way.
///
/// As in Mosquitto: the local topic is `local_prefix` + X and the remote one `remote_prefix`
/// + X, for every X that `pattern` matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    pub pattern: String,
    pub direction: Direction,
    /// The highest QoS a message crosses at: 0 or 1.
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default)]
    pub local_prefix: String,
    #[serde(default)]
    pub remote_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// From this broker to the remote.
    Out,
    /// From the remote to this broker.
    In,
    Both,
}

impl Direction {
    pub fn goes_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    pub fn comes_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Both => "both",
        }
    }
}

fn default_keepalive() -> u16 {
    60
}

fn yes() -> bool {
    true
}

fn one() -> u8 {
    1
}

impl TopicRule {
    /// The filter the bridge subscribes to on this broker (for `out`).
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter the bridge subscribes to on the remote (for `in`).
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// The remote name of a local topic this rule sends out, if it does.
    pub fn to_remote(&self, local: &str) -> Option<String> {
        let rest = local.strip_prefix(&self.local_prefix)?;
        (self.direction.goes_out() && topics::matches(&self.pattern, rest))
            .then(|| format!("{}{rest}", self.remote_prefix))
    }

    /// The local name of a remote topic this rule brings in, if it does.
    pub fn to_local(&self, remote: &str) -> Option<String> {
        let rest = remote.strip_prefix(&self.remote_prefix)?;
        (self.direction.comes_in() && topics::matches(&self.pattern, rest))
            .then(|| format!("{}{rest}", self.local_prefix))
    }

    fn check(&self) -> Result<(), String> {
        topics::validate_filter(&self.pattern)
            .map_err(|e| format!("pattern {:?}: {e}", self.pattern))?;
        if topics::shared(&self.pattern).is_some() {
            return Err(format!(
                "pattern {:?}: a shared subscription cannot be bridged",
                self.pattern
            ));
        }
        // rumqttc keeps no QoS 2 state from one connection to the next, and a bridge's remote
        // session outlives its connections: QoS 2 could not be exactly once across a reconnect.
        if self.qos > 1 {
            return Err(format!(
                "qos {}: a bridge carries QoS 0 or 1 (QoS 2 messages cross at 1, at least once)",
                self.qos
            ));
        }
        for (which, prefix) in [
            ("local_prefix", &self.local_prefix),
            ("remote_prefix", &self.remote_prefix),
        ] {
            if prefix.contains(['+', '#', '\0']) {
                return Err(format!("{which} {prefix:?} holds a wildcard"));
            }
            if !prefix.is_empty() && !self.pattern.is_empty() {
                topics::validate_filter(&format!("{prefix}{}", self.pattern))
                    .map_err(|e| format!("{which} {prefix:?}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Where a bridge connects, read from its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// WebSocket only: the path (`/mqtt` by default).
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

impl Scheme {
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }
}

impl Remote {
    pub fn parse(address: &str) -> Result<Remote, String> {
        let (scheme, rest) = address
            .split_once("://")
            .ok_or_else(|| format!("address {address:?}: not SCHEME://HOST:PORT"))?;
        let (scheme, default_port) = match scheme {
            "mqtt" | "tcp" => (Scheme::Mqtt, 1883),
            "mqtts" | "ssl" => (Scheme::Mqtts, 8883),
            "ws" => (Scheme::Ws, 80),
            "wss" => (Scheme::Wss, 443),
            other => {
                return Err(format!(
                    "address {address:?}: scheme {other:?} is not mqtt, mqtts, ws or wss"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !path.is_empty() && !matches!(scheme, Scheme::Ws | Scheme::Wss) {
            return Err(format!(
                "address {address:?}: only ws:// and wss:// have a path"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // A bracketed IPv6 address without a port has colons but ends in `]`.
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("address {address:?}: port {p:?} is not 1 to 65535"))?,
            ),
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("address {address:?}: no host"));
        }
        Ok(Remote {
            scheme,
            host: host.to_owned(),
            port,
            path: if path.is_empty() { "/mqtt" } else { path }.to_owned(),
        })
    }

    /// The URL as the WebSocket client wants it.
    pub fn ws_url(&self) -> String {
        let scheme = if self.scheme == Scheme::Wss {
            "wss"
        } else {
            "ws"
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

impl BridgeConfig {
    /// The client id the bridge uses on the remote broker.
    pub fn remote_client_id(&self) -> String {
        self.client_id
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| format!("mqtt-lab-{}", self.name))
    }

    /// The client id the bridge has on this broker (reserved: no network client may take it).
    pub fn local_client_id(&self) -> String {
        Self::local_id_of(&self.name)
    }

    pub fn local_id_of(name: &str) -> String {
        format!("{LOCAL_ID_PREFIX}{name}")
    }

    /// Everything that can be checked without connecting.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 64 || self.name.contains(['/', '\0']) {
            return Err(format!("name {:?}: 1 to 64 characters, no `/`", self.name));
        }
        let remote = Remote::parse(&self.address)?;
        if self.ca_file.is_some() && !remote.scheme.is_tls() {
            return Err(format!(
                "ca_file is for mqtts:// and wss:// addresses, not {:?}",
                self.address
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("a password needs a username".into());
        }
        if self.keepalive != 0 && self.keepalive < 5 {
            return Err(format!(
                "keepalive {} s: 0 (off) or at least 5",
                self.keepalive
            ));
        }
        if self.topics.is_empty() {
            return Err("no topics: a bridge needs at least one topic rule".into());
        }
        for rule in &self.topics {
            rule.check()?;
        }
        Ok(())
    }
}

/// Local client ids of bridges start with this; the broker refuses it to network clients.
pub const LOCAL_ID_PREFIX: &str = "$bridge/";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgesFile {
    bridges: Vec<BridgeConfig>,
}

/// Checks a whole list: each bridge, and that no two share a name.
pub fn check_all(list: &[BridgeConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for b in list {
        b.check().map_err(|e| format!("bridge {:?}: {e}", b.name))?;
        if !names.insert(&b.name) {
            return Err(format!("two bridges are named {:?}", b.name));
        }
    }
    Ok(())
}

/// Parses the text of a bridges file; an error names the file, and the line and column of the
/// bridge at fault.
pub fn parse(path: &Path, text: &str) -> Result<Vec<BridgeConfig>, FileError> {
    let file: BridgesFile = files::parse_ron(path, text)?;
    let mut names = std::collections::HashSet::new();
    for b in &file.bridges {
        let problem = match b.check() {
            Err(e) => Some(format!("bridge {:?}: {e}", b.name)),
            Ok(()) if !names.insert(&b.name) => Some(format!("two bridges are named {:?}", b.name)),
            Ok(()) => None,
        };
        if let Some(message) = problem {
            return Err(locate(path, text, &b.name, message));
        }
    }
    Ok(file.bridges)
}

/// An error about one bridge, placed at its `name:` in the text.
fn locate(path: &Path, text: &str, name: &str, message: String) -> FileError {
    let quoted = format!("{name:?}");
    let at = text
        .match_indices(&quoted)
        .map(|(i, _)| i)
        .find(|&i| text[..i].trim_end().ends_with(':'));
    match at {
        Some(at) => {
            let before = &text[..at];
            FileError::Parse {
                path: path.to_owned(),
                line: before.matches('\n').count() + 1,
                col: before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                message,
            }
        }
        None => FileError::invalid(path, message),
    }
}

pub fn load(path: &Path) -> Result<Vec<BridgeConfig>, FileError> {
    parse(path, &files::read_text(path)?)
}

/// The text of a bridges file.
pub fn to_ron(path: &Path, list: &[BridgeConfig]) -> Result<String, FileError> {
    files::to_ron(
        path,
        &BridgesFile {
            bridges: list.to_vec(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, direction: Direction, local: &str, remote: &str) -> TopicRule {
        TopicRule {
            pattern: pattern.into(),
            direction,
            qos: 1,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    #[test]
    fn prefixes_rename_both_ways_and_direction_decides() {
        let r = rule("sensors/#", Direction::Out, "", "labs/lab1/");
        assert_eq!(r.local_filter(), "sensors/#");
        assert_eq!(r.remote_filter(), "labs/lab1/sensors/#");
        assert_eq!(
            r.to_remote("sensors/t").as_deref(),
            Some("labs/lab1/sensors/t")
        );
        assert_eq!(r.to_local("labs/lab1/sensors/t"), None, "out only");
        let r = rule("cmd/+", Direction::Both, "here/", "there/");
        assert_eq!(r.to_local("there/cmd/a").as_deref(), Some("here/cmd/a"));
        assert_eq!(r.to_remote("here/cmd/a").as_deref(), Some("there/cmd/a"));
        assert_eq!(r.to_remote("here/cmd/a/b"), None);
        assert_eq!(r.to_remote("cmd/a"), None, "without the local prefix");
    }

    #[test]
    fn addresses_of_every_scheme() {
        let r = Remote::parse("mqtt://broker.example").unwrap();
        assert_eq!(
            (r.scheme, r.host.as_str(), r.port),
            (Scheme::Mqtt, "broker.example", 1883)
        );
        let r = Remote::parse("mqtts://10.0.0.1:8884").unwrap();
        assert_eq!((r.scheme, r.port), (Scheme::Mqtts, 8884));
        let r = Remote::parse("ws://h:8080").unwrap();
        assert_eq!(r.ws_url(), "ws://h:8080/mqtt");
        let r = Remote::parse("wss://[::1]:9001/x").unwrap();
        assert_eq!(r.ws_url(), "wss://[::1]:9001/x");
        for bad in [
            "broker:1883",
            "http://h",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://h/p",
            "mqtt://:1",
        ] {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_bridge_is_named_with_its_line_and_column() {
        let text = "(bridges: [\n  (name: \"a\", address: \"mqtt://h\", topics: [(pattern: \"x/#\", direction: Out)]),\n  (name: \"b\", address: \"gopher://h\", topics: [(pattern: \"x/#\", direction: In)]),\n])\n";
        let e = parse(Path::new("bridges.ron"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bridges.ron:3:10"), "{e}");
        assert!(e.contains("gopher"), "{e}");
        let list = parse(Path::new("b.ron"), &text.replace("gopher", "ws")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].keepalive, 60);
        assert!(!list[0].clean_session && list[0].enabled);
        assert_eq!(list[0].topics[0].qos, 1);
    }

    #[test]
    fn what_check_refuses() {
        let ok = BridgeConfig {
            name: "dept".into(),
            address: "mqtt://h".into(),
            ca_file: None,
            client_id: None,
            username: None,
            password: None,
            clean_session: false,
            keepalive: 60,
            enabled: true,
            topics: vec![rule("a/#", Direction::Both, "", "")],
        };
        assert!(ok.check().is_ok());
        assert_eq!(ok.remote_client_id(), "mqtt-lab-dept");
        assert_eq!(ok.local_client_id(), "$bridge/dept");
        let bad = |f: &dyn Fn(&mut BridgeConfig)| {
            let mut b = ok.clone();
            f(&mut b);
            b.check().unwrap_err()
        };
        bad(&|b| b.name = "a/b".into());
        bad(&|b| b.ca_file = Some("ca.pem".into()));
        bad(&|b| b.password = Some("p".into()));
        bad(&|b| b.keepalive = 2);
        bad(&|b| b.topics.clear());
        bad(&|b| b.topics[0].pattern = "a/#/b".into());
        bad(&|b| b.topics[0].pattern = "$share/g/a".into());
        bad(&|b| b.topics[0].qos = 2);
        bad(&|b| b.topics[0].local_prefix = "x/+/".into());
        assert!(check_all(&[ok.clone(), ok]).is_err());
    }

    #[test]
    fn the_shipped_file_parses() {
        assert!(
            parse(Path::new("bridges.ron"), DEFAULT_BRIDGES)
                .unwrap()
                .is_empty()
        );
    }
}
