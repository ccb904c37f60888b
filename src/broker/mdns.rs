//! Advertising the listeners on the local network with mDNS/DNS-SD, so that a phone app or an
//! ESP32 (ESPmDNS) finds the broker by name instead of someone typing an address.
//!
//! One task owns what is advertised: the window renames it by message, and what the network
//! answers (a name already taken elsewhere) comes back to the task too. What is advertised now
//! is published on a watch channel for the window to show.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::protocol::Transport;

/// The port mDNS uses (RFC 6762).
pub const MDNS_PORT: u16 = 5353;

/// Longest instance name DNS-SD allows (one DNS label, RFC 6763 section 4.1.1).
pub const MAX_NAME_BYTES: usize = 63;

/// How long a clean stop waits for the goodbye packets that tell browsers the broker is gone.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// When the responder repeats a goodbye (it sends each twice), with a margin.
const GOODBYE_REPEAT: Duration = Duration::from_millis(300);

/// What to advertise under which name; `Config::mdns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// The instance name browsers list, e.g. "mqtt-lab on lab-pc".
    pub name: String,
    /// The UDP port mDNS runs on: [`MDNS_PORT`] but in tests.
    pub port: u16,
    /// Where to advertise; `None` follows the bind address ([`Scope::for_bind`]).
    pub scope: Option<Scope>,
}

impl MdnsConfig {
    /// The default name on this machine: "mqtt-lab on HOST".
    pub fn on_this_host() -> MdnsConfig {
        MdnsConfig {
            name: default_name(),
            port: MDNS_PORT,
            scope: None,
        }
    }
}

/// "mqtt-lab on HOST", or "mqtt-lab" where the host has no name.
pub fn default_name() -> String {
    match host_label() {
        Some(host) => format!("mqtt-lab on {host}"),
        None => "mqtt-lab".to_owned(),
    }
}

/// Where the records are sent and which addresses they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Bound to every address: every interface but loopback, with each interface's addresses.
    Everywhere,
    /// Bound to one address: only the interface that has it, with that address.
    Address(IpAddr),
    /// Loopback only (tests: nothing leaves the machine).
    Loopback,
}

impl Scope {
    /// The scope for a broker bound to `ip`: none for loopback, where nobody else could connect.
    pub fn for_bind(ip: IpAddr) -> Option<Scope> {
        if ip.is_loopback() {
            None
        } else if ip.is_unspecified() {
            Some(Scope::Everywhere)
        } else {
            Some(Scope::Address(ip))
        }
    }
}

/// What is advertised now, for the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    /// The instance name in use (it differs from the one asked for when the network already had
    /// it: "NAME (2)").
    pub name: String,
    /// The service types, e.g. `_mqtt._tcp`, with their ports.
    pub services: Vec<(String, u16)>,
    /// The last thing that went wrong (a refused name, a failed registration), if any.
    pub error: Option<String>,
}

/// The DNS-SD service type each listener is advertised as. `_mqtt._tcp` and `_secure-mqtt._tcp`
/// are IANA's; the WebSocket ones are the names clients that browse for them use.
pub fn service_type(door: Transport) -> &'static str {
    match door {
        Transport::Tcp => "_mqtt._tcp.local.",
        Transport::Tls => "_secure-mqtt._tcp.local.",
        Transport::WebSocket => "_mqtt-ws._tcp.local.",
        Transport::SecureWebSocket => "_mqtt-wss._tcp.local.",
        Transport::Bridge | Transport::MqttSn => unreachable!("not advertised (see `advertise`)"),
    }
}

/// Checks an instance name as the window or the command line gave it.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the name is {} bytes long; DNS-SD allows {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name has a control character in it".into());
    }
    Ok(())
}

enum Request {
    Rename(String),
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// A handle on the advertising task; cheap to clone.
#[derive(Clone)]
pub struct Advertiser {
    tx: mpsc::Sender<Request>,
    advertised: watch::Receiver<Advertised>,
}

impl Advertiser {
    /// Starts the mDNS responder and advertises `doors` under `config.name`.
    pub fn start(
        config: &MdnsConfig,
        scope: Scope,
        doors: &[(Transport, SocketAddr)],
    ) -> Result<(Advertiser, JoinHandle<()>), String> {
        check_name(&config.name)?;
        let daemon = ServiceDaemon::new_with_port(config.port)
            .map_err(|e| format!("cannot start mDNS: {e}"))?;
        let restrict = match scope {
            Scope::Everywhere => {
                daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
            }
            Scope::Address(ip) => daemon
                .disable_interface(IfKind::All)
                .and_then(|_| daemon.enable_interface(IfKind::Addr(ip))),
            Scope::Loopback => daemon
                .disable_interface(IfKind::All)
                .and_then(|_| daemon.enable_interface(IfKind::LoopbackV4)),
        };
        restrict.map_err(|e| format!("cannot choose the mDNS interfaces: {e}"))?;
        let monitor = daemon
            .monitor()
            .map_err(|e| format!("cannot watch mDNS: {e}"))?;
        let mut state = State {
            daemon,
            scope,
            host: format!(
                "{}.local.",
                host_label().unwrap_or_else(|| "mqtt-lab".into())
            ),
            doors: doors.to_vec(),
            registered: Vec::new(),
            advertised: watch::channel(Advertised::default()).0,
        };
        state.register(&config.name);
        let (tx, rx) = mpsc::channel(8);
        let advertised = state.advertised.subscribe();
        let task = tokio::spawn(state.run(rx, monitor));
        Ok((Advertiser { tx, advertised }, task))
    }

    /// Advertises under another name (checked first: a bad one is refused with the reason).
    pub fn rename(&self, name: &str) -> Result<(), String> {
        check_name(name)?;
        self.tx
            .try_send(Request::Rename(name.to_owned()))
            .map_err(|_| "the broker is not advertising any more, or is busy: try again".into())
    }

    /// What is advertised now.
    pub fn advertised(&self) -> Advertised {
        self.advertised.borrow().clone()
    }

    /// A channel that changes with what is advertised.
    pub fn watch(&self) -> watch::Receiver<Advertised> {
        self.advertised.clone()
    }

    /// Withdraws every record (browsers drop the broker at once) and stops the responder.
    pub async fn stop(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Request::Stop(done)).await.is_ok() {
            let _ = tokio::time::timeout(GOODBYE_WAIT * 2, wait).await;
        }
    }
}

struct State {
    daemon: ServiceDaemon,
    scope: Scope,
    host: String,
    doors: Vec<(Transport, SocketAddr)>,
    /// Full names of the records registered now, to withdraw them on a rename or a stop.
    registered: Vec<String>,
    advertised: watch::Sender<Advertised>,
}

impl State {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        monitor: mdns_sd::Receiver<DaemonEvent>,
    ) {
        loop {
            tokio::select! {
                req = rx.recv() => match req {
                    Some(Request::Rename(name)) => {
                        self.withdraw().await;
                        // The goodbyes withdraw the host's address too, and go out twice (the
                        // second 120 ms later): announcing before that one would have browsers
                        // drop the new records' address.
                        tokio::time::sleep(GOODBYE_REPEAT).await;
                        self.register(&name);
                    }
                    Some(Request::Stop(done)) => {
                        self.withdraw().await;
                        let _ = self.daemon.shutdown();
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.withdraw().await;
                        let _ = self.daemon.shutdown();
                        return;
                    }
                },
                event = monitor.recv_async() => match event {
                    Ok(DaemonEvent::NameChange(change)) => self.renamed_by_network(&change),
                    Ok(DaemonEvent::Error(e)) => warn!(error = %e, "mDNS"),
                    Ok(_) => {}
                    // The responder stopped on its own: nothing more will be advertised.
                    Err(_) => {
                        self.advertised.send_modify(|a| {
                            a.services.clear();
                            a.error = Some("the mDNS responder stopped".into());
                        });
                        return;
                    }
                },
            }
        }
    }

    /// Registers one record per listener under `name`.
    fn register(&mut self, name: &str) {
        let mut services = Vec::new();
        let mut errors = Vec::new();
        for &(door, addr) in &self.doors {
            match self.service(door, addr, name) {
                Ok(info) => {
                    let fullname = info.get_fullname().to_owned();
                    match self.daemon.register(info) {
                        Ok(()) => {
                            let ty = service_type(door).trim_end_matches(".local.").to_owned();
                            services.push((ty, addr.port()));
                            self.registered.push(fullname);
                        }
                        Err(e) => errors.push(format!("{door}: {e}")),
                    }
                }
                Err(e) => errors.push(format!("{door}: {e}")),
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        match &error {
            None => info!(name, services = ?services, "advertised on the local network (mDNS)"),
            Some(e) => warn!(name, error = %e, "mDNS advertising failed"),
        }
        self.advertised.send_replace(Advertised {
            name: name.to_owned(),
            services,
            error,
        });
    }

    fn service(
        &self,
        door: Transport,
        addr: SocketAddr,
        name: &str,
    ) -> Result<ServiceInfo, mdns_sd::Error> {
        let path: &[(&str, &str)] = match door {
            Transport::WebSocket | Transport::SecureWebSocket => &[("path", "/mqtt")],
            Transport::Tcp | Transport::Tls | Transport::Bridge | Transport::MqttSn => &[],
        };
        let addrs: Vec<IpAddr> = match self.scope {
            Scope::Everywhere => Vec::new(),
            Scope::Address(ip) => vec![ip],
            Scope::Loopback => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        };
        let info = ServiceInfo::new(
            service_type(door),
            name,
            &self.host,
            &addrs[..],
            addr.port(),
            path,
        )?;
        Ok(match self.scope {
            Scope::Everywhere => info.enable_addr_auto(),
            _ => info,
        })
    }

    /// Unregisters every record and waits (at most `GOODBYE_WAIT` in all) for the goodbyes to
    /// go out.
    async fn withdraw(&mut self) {
        let pending: Vec<_> = std::mem::take(&mut self.registered)
            .iter()
            .filter_map(|fullname| self.daemon.unregister(fullname).ok())
            .collect();
        let _ = tokio::time::timeout(GOODBYE_WAIT, async {
            for status in pending {
                let _ = status.recv_async().await;
            }
        })
        .await;
    }

    /// Another host had the name: the responder picked "NAME (2)"; say so.
    fn renamed_by_network(&mut self, change: &mdns_sd::DnsNameChange) {
        // Only instance names matter to the window (host names change too, silently).
        let Some((old, new)) = instance(&change.original).zip(instance(&change.new_name)) else {
            return;
        };
        if let Some(r) = self.registered.iter_mut().find(|r| **r == change.original) {
            r.clone_from(&change.new_name);
        }
        // The responder escapes dots inside an instance name, and reports the change once per
        // interface and record: say it once.
        let (old, new) = (old.replace("\\.", "."), new.replace("\\.", "."));
        if self.advertised.borrow().name != new {
            warn!(
                old,
                new, "mDNS name already in use on the network: advertising under another"
            );
            self.advertised.send_modify(|a| a.name = new);
        }
    }
}

/// The instance part of a full service name ("NAME._mqtt._tcp.local." gives "NAME").
fn instance(fullname: &str) -> Option<&str> {
    let ours = [
        Transport::Tcp,
        Transport::Tls,
        Transport::WebSocket,
        Transport::SecureWebSocket,
    ];
    ours.iter().find_map(|&d| {
        fullname
            .strip_suffix(service_type(d))
            .and_then(|s| s.strip_suffix('.'))
    })
}

/// This machine's host name as one DNS label (letters, digits and dashes), if it has one.
fn host_label() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())?;
    let first = raw.trim().split('.').next().unwrap_or("");
    let label: String = first
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_NAME_BYTES)
        .collect();
    let label = label.trim_matches('-').to_owned();
    (!label.is_empty() && label != "localhost").then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("mqtt-lab on lab-pc").is_ok());
        assert!(check_name("Salle 2.14 (étage)").is_ok());
        assert!(check_name("  ").is_err());
        assert!(check_name(&"x".repeat(64)).unwrap_err().contains("63"));
        assert!(check_name("a\nb").is_err());
    }

    #[test]
    fn scope_follows_the_bind_address() {
        assert_eq!(Scope::for_bind("127.0.0.1".parse().unwrap()), None);
        assert_eq!(Scope::for_bind("::1".parse().unwrap()), None);
        assert_eq!(
            Scope::for_bind("0.0.0.0".parse().unwrap()),
            Some(Scope::Everywhere)
        );
        let ip: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(Scope::for_bind(ip), Some(Scope::Address(ip)));
    }

    #[test]
    fn instance_names_come_back_out_of_full_names() {
        assert_eq!(instance("lab (2)._mqtt._tcp.local."), Some("lab (2)"));
        assert_eq!(instance("lab._mqtt-ws._tcp.local."), Some("lab"));
        assert_eq!(instance("host.local."), None);
    }
}
