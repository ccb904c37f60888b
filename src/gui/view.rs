//! The main view: tabs for the panels, the status bar, and the broker's life (start, a port in
//! use, stop). Knows nothing of eframe, so UI tests drive it directly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::broker::mdns::Advertiser;
use crate::broker::{Config, Transport};

use super::bridges_panel::BridgesPanel;
use super::clients_panel::ClientsPanel;
use super::format;
use super::history_panel::{HistoryPanel, Rates};
use super::lab_panel::LabPanel;
use super::log_panel;
use super::network_name::NetworkName;
use super::runner::{Live, Running, StartFailure};
use super::saved_state::SavedState;
use super::scenarios_panel::ScenariosPanel;
use super::settings::{Change, Settings};
use super::topics_panel::TopicsPanel;
use super::trace_panel::TracePanel;
use super::users_panel::UsersPanel;
use crate::broker::config::TopicsMode;

/// Builds the broker's config each time the broker (re)starts: files are read again, so a
/// fixed file is picked up by Retry.
pub type ConfigLoader = Box<dyn FnMut() -> Result<Config, String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Lab,
    Scenarios,
    Topics,
    Clients,
    History,
    Trace,
    Users,
    Bridges,
    Log,
}

enum State {
    NotStarted,
    Running(Box<Running>),
    Failed(StartFailure),
    Stopped,
}

/// Everything the window shows.
pub struct MainView {
    load_config: ConfigLoader,
    /// Where the window's settings go, written one after the other off the window's thread.
    settings: Option<std::sync::mpsc::Sender<Change>>,
    /// Ports chosen in the window after a start failed, per listener.
    port_overrides: Vec<(Transport, u16)>,
    port_field: String,
    bind: Option<IpAddr>,
    state: State,
    live: Option<Arc<Live>>,
    pub tab: Tab,
    topics: TopicsPanel,
    clients: ClientsPanel,
    history: HistoryPanel,
    users: UsersPanel,
    bridges: BridgesPanel,
    network_name: NetworkName,
    saved_state: SavedState,
    pub trace: TracePanel,
    pub lab: LabPanel,
    pub scenarios: ScenariosPanel,
    rates: Rates,
}

impl MainView {
    /// `settings_path` is where the window remembers the last topic list (None: nowhere).
    pub fn new(load_config: ConfigLoader, settings_path: Option<PathBuf>) -> MainView {
        MainView {
            load_config,
            settings: settings_path.map(settings_writer),
            port_overrides: Vec::new(),
            port_field: String::new(),
            bind: None,
            state: State::NotStarted,
            live: None,
            tab: Tab::Topics,
            topics: TopicsPanel::default(),
            clients: ClientsPanel::default(),
            history: HistoryPanel::default(),
            users: UsersPanel::default(),
            bridges: BridgesPanel::default(),
            network_name: NetworkName::default(),
            saved_state: SavedState::default(),
            trace: TracePanel::default(),
            lab: LabPanel::default(),
            scenarios: ScenariosPanel::default(),
            rates: Rates::default(),
        }
    }

    /// The latest state of the broker, once it has sent one.
    pub fn live(&self) -> Option<&Live> {
        self.live.as_deref()
    }

    /// Where the broker listens, while it runs.
    pub fn address(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Running(r) => Some(r.addr),
            _ => None,
        }
    }

    /// Why the broker is not running, if it failed to start.
    pub fn failure(&self) -> Option<&str> {
        match &self.state {
            State::Failed(e) => Some(&e.text),
            _ => None,
        }
    }

    /// Stops the broker: connections are closed and files written before this returns.
    pub fn shutdown(&mut self) {
        // A scenario's topics leave the list (and its file) before the broker stops.
        if let (Some(run), State::Running(r)) = (&mut self.scenarios.run, &self.state) {
            run.finish(&r.handle);
        }
        if let State::Running(r) = std::mem::replace(&mut self.state, State::Stopped) {
            r.stop();
        }
    }

    fn start(&mut self, ctx: &egui::Context) {
        // A new broker has a new trace: the panel starts afresh.
        self.trace.set_visible(None, false);
        self.trace = TracePanel::default();
        self.lab = LabPanel::default();
        let pace = self.scenarios.pace;
        self.scenarios = ScenariosPanel {
            pace,
            ..ScenariosPanel::default()
        };
        let overrides = self.port_overrides.clone();
        let config = (self.load_config)()
            .map_err(|text| StartFailure { text, door: None })
            .and_then(|mut config| {
                for (door, port) in overrides {
                    let addr = match door {
                        Transport::Tcp => Some(&mut config.listen),
                        Transport::WebSocket => config.ws_listen.as_mut(),
                        Transport::Tls => config.tls_listen.as_mut(),
                        Transport::SecureWebSocket => config.wss_listen.as_mut(),
                        Transport::MqttSn => config.sn.as_mut().map(|sn| &mut sn.listen),
                        Transport::Bridge => None,
                    };
                    if let Some(addr) = addr {
                        addr.set_port(port);
                    }
                }
                self.bind = Some(config.listen.ip());
                let ctx = ctx.clone();
                Running::start(config, move || ctx.request_repaint())
            });
        self.live = None;
        self.state = match config {
            Ok(r) => {
                self.lab.attach(r.runtime.clone(), r.addr);
                // The same lines as the headless broker's, for scripts that start the window.
                for url in &r.urls {
                    println!("mqtt-lab: listening on {url}");
                }
                State::Running(Box::new(r))
            }
            Err(e) => {
                tracing::error!(error = %e.text, "the broker did not start");
                self.port_field.clear();
                State::Failed(e)
            }
        };
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        if matches!(self.state, State::NotStarted) {
            self.start(ui.ctx());
        }
        if let State::Running(r) = &mut self.state
            && let Some(live) = r.take_new()
        {
            self.rates.push(&live);
            self.live = Some(live);
        }
        self.remember_topics_file();

        if let State::Failed(error) = &self.state {
            let error = error.clone();
            egui::CentralPanel::default().show(ui, |ui| self.failed_ui(ui, &error));
            return;
        }
        let (State::Running(running), Some(live)) = (&self.state, self.live.clone()) else {
            egui::CentralPanel::default().show(ui, |ui| {
                ui.label("Starting the broker…");
            });
            return;
        };
        let handle = running.handle.clone();
        let urls = running.client_urls.clone();
        let ca = running.ca.clone();
        let advertiser = running.advertiser.clone();
        let trace = running.trace.clone();
        // The broker traces packets only while someone looks at them (a scenario draws them).
        let looking =
            matches!(self.tab, Tab::Trace | Tab::Scenarios) || self.scenarios.is_running();
        self.trace.set_visible(Some(&trace), looking);
        self.trace.poll(ui.ctx());
        self.scenarios.tick(ui.ctx(), &mut self.lab, &handle);

        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("mqtt-lab");
                ui.separator();
                for (tab, name) in [
                    (Tab::Lab, "Lab clients"),
                    (Tab::Scenarios, "Scenarios"),
                    (Tab::Topics, "Topics"),
                    (Tab::Clients, "Clients"),
                    (Tab::History, "History"),
                    (Tab::Trace, "Trace"),
                    (Tab::Users, "Users"),
                    (Tab::Bridges, "Bridges"),
                    (Tab::Log, "Log"),
                ] {
                    ui.selectable_value(&mut self.tab, tab, name);
                }
                let exposed = self.bind.is_some_and(|ip| !ip.is_loopback());
                if exposed && live.snapshot.users.allow_anonymous {
                    ui.separator();
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        "Open to the network with anonymous logins",
                    )
                    .on_hover_text("Anyone who can reach this machine can connect. Refuse anonymous logins in Users.");
                }
            });
        });
        let network = advertiser.as_ref().map(|a| (&mut self.network_name, a));
        let saved = &mut self.saved_state;
        let renamed = egui::Panel::bottom("status")
            .show(ui, |ui| {
                status_bar(ui, &urls, ca.as_ref(), network, saved, &live)
            })
            .inner;
        self.saved_state.window(ui.ctx(), &live, &handle);
        if let (Some(name), Some(settings)) = (renamed, &self.settings) {
            let _ = settings.send(Change::MdnsName(name));
        }
        egui::CentralPanel::default().show(ui, |ui| match self.tab {
            Tab::Topics => self.topics.ui(ui, &live, &handle),
            Tab::Clients => self.clients.ui(ui, &live, &handle),
            Tab::History => self.history.ui(ui, &live, &self.rates),
            Tab::Lab => self.lab.ui(ui, &live),
            Tab::Scenarios => self
                .scenarios
                .ui(ui, &live, &handle, &mut self.lab, &self.trace),
            Tab::Trace => self.trace.ui(ui, &trace),
            Tab::Users => self.users.ui(ui, &live, &handle),
            Tab::Bridges => self.bridges.ui(ui, &live, &handle),
            Tab::Log => log_panel::ui(ui, &live),
        });
    }

    fn failed_ui(&mut self, ui: &mut egui::Ui, error: &StartFailure) {
        ui.heading("The broker did not start");
        ui.colored_label(ui.visuals().error_fg_color, &error.text);
        ui.add_space(8.0);
        // A port in use: try another for that listener. Anything else (a file): Retry reads
        // the files again.
        let door = error.door;
        ui.horizontal(|ui| {
            if let Some(door) = door {
                let label = ui.label(match door {
                    Transport::Tcp => "MQTT port",
                    Transport::WebSocket => "WebSocket port",
                    Transport::Tls => "TLS port",
                    Transport::SecureWebSocket => "Secure WebSocket port",
                    Transport::MqttSn => "MQTT-SN port (UDP)",
                    Transport::Bridge => "bridge",
                });
                ui.add(
                    egui::TextEdit::singleline(&mut self.port_field)
                        .hint_text("1883")
                        .desired_width(80.0),
                )
                .labelled_by(label.id);
            }
            if ui.button("Retry").clicked() {
                match (door, self.port_field.trim().parse::<u16>()) {
                    (Some(door), Ok(p)) => self.set_port(door, p),
                    (Some(_), Err(_)) if !self.port_field.trim().is_empty() => {
                        self.port_field.clear();
                        return;
                    }
                    _ => {}
                }
                self.start(ui.ctx());
            }
            if let Some(door) = door
                && ui.button("Use any free port").clicked()
            {
                self.set_port(door, 0);
                self.start(ui.ctx());
            }
        });
    }

    fn set_port(&mut self, door: Transport, port: u16) {
        self.port_overrides.retain(|(d, _)| *d != door);
        self.port_overrides.push((door, port));
    }

    /// Has the topic list file the user opened or saved last written to the window's settings.
    fn remember_topics_file(&mut self) {
        let Some(path) = self.topics.remembered.take() else {
            return;
        };
        if let Some(settings) = &self.settings {
            let _ = settings.send(Change::TopicsFile(path));
        }
    }
}

/// A thread that writes the window's settings file (read, change, fsync, rename) in the order
/// the changes come, so that a frame never waits on the disk. It ends with the window.
fn settings_writer(settings_path: PathBuf) -> std::sync::mpsc::Sender<Change> {
    let (tx, rx) = std::sync::mpsc::channel::<Change>();
    let spawned = std::thread::Builder::new()
        .name("mqtt-lab-settings".into())
        .spawn(move || {
            for change in rx {
                let mut settings = Settings::load(&settings_path);
                settings.apply(change);
                if let Err(e) = settings.save(&settings_path) {
                    tracing::warn!(error = %e, "window settings not saved");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "window settings will not be saved");
    }
    tx
}

/// The listeners, the CA, the name on the network, the counters; the new network name when the
/// user renamed the broker.
fn status_bar(
    ui: &mut egui::Ui,
    urls: &[String],
    ca: Option<&(PathBuf, String)>,
    network: Option<(&mut NetworkName, &Advertiser)>,
    saved: &mut SavedState,
    live: &Live,
) -> Option<String> {
    let snap = &live.snapshot;
    let connected = snap
        .clients
        .iter()
        .filter(|c| c.connection.is_some())
        .count();
    // Wrapped: with four listeners and the CA the bar is wider than a small window, and the
    // counters must not be pushed off its edge.
    ui.horizontal_wrapped(|ui| {
        let mut renamed = None;
        // Whole items move to the next line; none is split inside ("up 0:00").
        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
        ui.label("Listening on");
        // Each address a click away from the clipboard, for a student's client.
        for url in urls {
            if ui.link(url).on_hover_text("Click to copy").clicked() {
                ui.ctx().copy_text(url.clone());
            }
        }
        if let Some((path, fingerprint)) = ca {
            ui.label("CA");
            let path = path.display().to_string();
            if ui
                .link(&path)
                .on_hover_text(format!(
                    "TLS clients trust this file (mosquitto_pub --cafile, paho tls_set). \
                     SHA-256: {fingerprint}. Click to copy its path."
                ))
                .clicked()
            {
                ui.ctx().copy_text(path);
            }
        }
        if let Some((name, advertiser)) = network {
            ui.separator();
            renamed = name.ui(ui, advertiser);
        }
        ui.separator();
        // Uptime to the minute: an idle window repaints once a minute for it, not every second.
        let up = snap.uptime + live.taken.elapsed();
        let since = std::time::SystemTime::now()
            .checked_sub(up)
            .map(format::clock)
            .unwrap_or_default();
        ui.label(format!("up {}", format::uptime(up)))
            .on_hover_text(format!("running since {since}"));
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_secs(60 - up.as_secs() % 60));
        ui.separator();
        ui.label(format!("{connected} clients connected"));
        ui.separator();
        ui.label(format!("in {}", format::rate(live.messages_in_per_s)));
        ui.label(format!("out {}", format::rate(live.messages_out_per_s)));
        ui.separator();
        let dropped = format!("{} dropped", snap.dropped);
        if snap.dropped > 0 {
            ui.colored_label(ui.visuals().warn_fg_color, dropped).on_hover_text(format!(
                "{} to topics that do not exist, {} not allowed by their client's rules; the rest to slow or offline clients and full queues",
                snap.unlisted, snap.denied
            ));
        } else {
            ui.label(dropped);
        }
        if let Some((datagrams, bad)) = snap.sn.filter(|(_, bad)| *bad > 0) {
            ui.separator();
            ui.colored_label(ui.visuals().warn_fg_color, format!("MQTT-SN: {bad} dropped"))
                .on_hover_text(format!(
                    "Of {datagrams} datagrams: not MQTT-SN (cut short, a wrong length, an unknown type), from no connected node, out of place, or over a node's queue"
                ));
        }
        ui.separator();
        let mode = snap.topics_mode;
        let appeared = snap.topics.iter().filter(|t| !t.listed).count();
        let text = match mode {
            TopicsMode::Strict => "Topics: strict".to_string(),
            TopicsMode::Open => format!("Topics: open ({appeared} not on the list)"),
        };
        ui.label(text).on_hover_text(match mode {
            TopicsMode::Strict => {
                "Only the topics on the list (and those its patterns match) exist; change it in Topics"
            }
            TopicsMode::Open => {
                "Any topic a client uses exists; those not on the list go when nobody uses them"
            }
        });
        ui.separator();
        saved.status_item(ui, live);
        renamed
    })
    .inner
}
