//! The Lab clients panel: MQTT clients made in the window, each a real client over loopback
//! TCP, to show the protocol with: connect with a will and a keepalive, subscribe, publish
//! (once or every N ms), disconnect, pull the plug, stop answering, reconnect; and what each
//! received, with its QoS, retain and DUP flags.

use std::net::SocketAddr;
use std::time::Duration;

use egui_extras::{Column, TableBuilder};
use tokio::runtime::Handle;

use crate::broker::QoS;
use crate::lab::{LabClient, LabCommand, LabConfig, LabState, LabWill, Publish, Status};

use super::format;
use super::runner::Live;

/// At most this many lab clients at once: each is a connection and a task.
pub const MAX_CLIENTS: usize = 32;

/// The form that makes a new client.
struct Form {
    client_id: String,
    level: u8,
    clean_session: bool,
    keep_alive: String,
    username: String,
    password: String,
    will: bool,
    will_topic: String,
    will_payload: String,
    will_qos: QoS,
    will_retain: bool,
}

impl Default for Form {
    fn default() -> Self {
        Form {
            client_id: String::new(),
            level: 4,
            clean_session: true,
            keep_alive: "60".into(),
            username: String::new(),
            password: String::new(),
            will: false,
            will_topic: String::new(),
            will_payload: "offline".into(),
            will_qos: QoS::AtMostOnce,
            will_retain: false,
        }
    }
}

pub struct LabPanel {
    runtime: Option<(Handle, SocketAddr)>,
    clients: Vec<LabClient>,
    selected: usize,
    form: Form,
    next_name: usize,
    sub_filter: String,
    sub_qos: QoS,
    pub_topic: String,
    pub_payload: String,
    pub_qos: QoS,
    pub_retain: bool,
    repeat_ms: String,
    error: Option<String>,
}

impl Default for LabPanel {
    fn default() -> Self {
        LabPanel {
            runtime: None,
            clients: Vec::new(),
            selected: 0,
            form: Form::default(),
            next_name: 1,
            sub_filter: String::new(),
            sub_qos: QoS::AtMostOnce,
            pub_topic: String::new(),
            pub_payload: "hello".into(),
            pub_qos: QoS::AtMostOnce,
            pub_retain: false,
            repeat_ms: "1000".into(),
            error: None,
        }
    }
}

impl LabPanel {
    /// Where new clients run and connect to (the running broker).
    pub fn attach(&mut self, runtime: Handle, mut broker: SocketAddr) {
        // Bound to every address: lab clients use loopback.
        if broker.ip().is_unspecified() {
            broker.set_ip(match broker {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        self.runtime = Some((runtime, broker));
    }

    pub fn clients(&self) -> &[LabClient] {
        &self.clients
    }

    /// Makes a client (connected at once); the scenarios make theirs here too, so that they
    /// show in this panel.
    pub fn add(&mut self, config: LabConfig) -> Result<LabClient, String> {
        if self
            .clients
            .iter()
            .any(|c| c.state().config.client_id == config.client_id)
        {
            return Err(format!(
                "there is already a lab client {}",
                config.client_id
            ));
        }
        self.add_unchecked(config)
    }

    /// Like [`LabPanel::add`], also for a client id a lab client already has (a takeover).
    pub fn add_unchecked(&mut self, config: LabConfig) -> Result<LabClient, String> {
        let Some((rt, addr)) = &self.runtime else {
            return Err("the broker is not running".into());
        };
        if self.clients.len() >= MAX_CLIENTS {
            return Err(format!(
                "at most {MAX_CLIENTS} lab clients: remove one first"
            ));
        }
        let c = LabClient::spawn(rt, *addr, config);
        c.send(LabCommand::Connect);
        self.clients.push(c.clone());
        self.selected = self.clients.len() - 1;
        Ok(c)
    }

    /// Forgets a client, disconnecting it first (a scenario may still hold a handle on it).
    pub fn remove(&mut self, client: &LabClient) {
        client.send(LabCommand::Disconnect);
        self.clients.retain(|c| !c.same(client));
        self.selected = self.selected.min(self.clients.len().saturating_sub(1));
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live) {
        // Lab clients change without the broker's snapshot knowing (a message received).
        ui.ctx().request_repaint_after(Duration::from_millis(200));
        let topics: Vec<String> = live
            .snapshot
            .topics
            .iter()
            .map(|t| t.name.clone())
            .collect();
        egui::Panel::left("lab-clients")
            .resizable(true)
            .default_size(250.0)
            .show(ui, |ui| self.list_ui(ui));
        let Some(client) = self.clients.get(self.selected).cloned() else {
            ui.label("Make a lab client on the left: it connects to this broker like a student's would, and its packets show in the Trace.");
            return;
        };
        self.client_ui(ui, &client, &topics);
    }

    fn list_ui(&mut self, ui: &mut egui::Ui) {
        ui.strong("Lab clients");
        let mut remove = None;
        for (i, c) in self.clients.iter().enumerate() {
            let s = c.state();
            ui.horizontal(|ui| {
                dot(ui, status_color(&s.status, ui.visuals()));
                if ui
                    .selectable_label(i == self.selected, &s.config.client_id)
                    .clicked()
                {
                    self.selected = i;
                }
                if super::reply::row_button(ui, "Remove", &format!("Remove {}", s.config.client_id))
                    .clicked()
                {
                    remove = Some(c.clone());
                }
            });
        }
        if let Some(c) = remove {
            self.remove(&c);
        }
        ui.separator();
        egui::CollapsingHeader::new("New client")
            .default_open(self.clients.is_empty())
            .show(ui, |ui| self.form_ui(ui));
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
    }

    fn form_ui(&mut self, ui: &mut egui::Ui) {
        let f = &mut self.form;
        egui::Grid::new("new-lab-client")
            .num_columns(2)
            .show(ui, |ui| {
                field(ui, "Client id", &mut f.client_id, "student-1");
                let l = ui.label("Protocol");
                egui::ComboBox::from_id_salt("lab-level")
                    .selected_text(if f.level == 3 {
                        "MQTT 3.1"
                    } else {
                        "MQTT 3.1.1"
                    })
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut f.level, 4, "MQTT 3.1.1");
                        ui.selectable_value(&mut f.level, 3, "MQTT 3.1");
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                ui.label("");
                ui.checkbox(&mut f.clean_session, "Clean session");
                ui.end_row();
                field(ui, "Keepalive (s)", &mut f.keep_alive, "60");
                field(ui, "User name", &mut f.username, "optional");
                let l = ui.label("Password");
                ui.add(egui::TextEdit::singleline(&mut f.password).password(true))
                    .labelled_by(l.id);
                ui.end_row();
                ui.label("");
                ui.checkbox(&mut f.will, "Will");
                ui.end_row();
                if f.will {
                    field(ui, "Will topic", &mut f.will_topic, "lab/status");
                    field(ui, "Will payload", &mut f.will_payload, "offline");
                    ui.label("Will QoS");
                    qos_picker(ui, "will-qos", &mut f.will_qos);
                    ui.end_row();
                    ui.label("");
                    ui.checkbox(&mut f.will_retain, "Will retained");
                    ui.end_row();
                }
            });
        if ui.button("Create and connect").clicked() {
            match self.config_from_form() {
                Ok(c) => match self.add(c) {
                    Ok(_) => {
                        self.error = None;
                        self.form.client_id.clear();
                    }
                    Err(e) => self.error = Some(e),
                },
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn config_from_form(&mut self) -> Result<LabConfig, String> {
        let f = &self.form;
        let id = match f.client_id.trim() {
            "" => {
                let id = format!("lab-{}", self.next_name);
                self.next_name += 1;
                id
            }
            id => id.to_owned(),
        };
        let keep_alive: u16 = f
            .keep_alive
            .trim()
            .parse()
            .map_err(|_| "keepalive: a number of seconds, 0 to 65535".to_owned())?;
        let will = if f.will {
            let topic = f.will_topic.trim();
            if topic.is_empty() {
                return Err("the will needs a topic".into());
            }
            Some(LabWill {
                topic: topic.to_owned(),
                payload: f.will_payload.clone(),
                qos: f.will_qos,
                retain: f.will_retain,
            })
        } else {
            None
        };
        // MQTT strings carry a 16-bit length.
        let long = [
            &f.username,
            &f.password,
            &f.will_topic,
            &f.will_payload,
            &id,
        ]
        .iter()
        .any(|s| s.len() > u16::MAX as usize);
        if long {
            return Err("a client id, user name, password or will is at most 65,535 bytes".into());
        }
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Ok(LabConfig {
            client_id: id,
            level: f.level,
            clean_session: f.clean_session,
            keep_alive,
            username: text(f.username.trim()),
            password: text(&f.password),
            will,
        })
    }

    fn client_ui(&mut self, ui: &mut egui::Ui, client: &LabClient, topics: &[String]) {
        let s: LabState = client.state().clone();
        let connected = matches!(s.status, Status::Connected { .. });
        ui.horizontal(|ui| {
            ui.heading(&s.config.client_id);
            let color = status_color(&s.status, ui.visuals());
            ui.colored_label(color, status_text(&s.status));
        });
        ui.label(format!(
            "{} · clean session {} · keepalive {} s{}{}",
            if s.config.level == 3 {
                "MQTT 3.1"
            } else {
                "MQTT 3.1.1"
            },
            if s.config.clean_session { "on" } else { "off" },
            s.config.keep_alive,
            s.config
                .will
                .as_ref()
                .map(|w| format!(" · will on {} (QoS {})", w.topic, w.qos as u8))
                .unwrap_or_default(),
            s.config
                .username
                .as_ref()
                .map(|u| format!(" · user {u}"))
                .unwrap_or_default(),
        ));
        ui.horizontal_wrapped(|ui| {
            let label = if connected { "Reconnect" } else { "Connect" };
            if ui
                .button(label)
                .on_hover_text("A new connection with the same client id and settings")
                .clicked()
            {
                client.send(LabCommand::Connect);
            }
            if ui
                .add_enabled(connected, egui::Button::new("Disconnect"))
                .on_hover_text("DISCONNECT, then close: the will is discarded")
                .clicked()
            {
                client.send(LabCommand::Disconnect);
            }
            if ui
                .add_enabled(connected, egui::Button::new("Pull the plug"))
                .on_hover_text("Close the socket without DISCONNECT: the broker publishes the will")
                .clicked()
            {
                client.send(LabCommand::PullPlug);
            }
            let silent_label = if s.silent {
                "Answer again"
            } else {
                "Stop answering"
            };
            if ui
                .add_enabled(
                    connected && s.config.keep_alive > 0,
                    egui::Button::new(silent_label),
                )
                .on_hover_text(
                    "No more PINGREQs: the broker closes the connection at 1.5 × keepalive",
                )
                .clicked()
            {
                client.send(LabCommand::Silent(!s.silent));
            }
        });
        if let Some(e) = &s.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        ui.separator();

        ui.add_enabled_ui(connected, |ui| {
            ui.horizontal_wrapped(|ui| {
                let l = ui.label("Subscribe to");
                topic_field(ui, "sub-topic", &mut self.sub_filter, topics, true).labelled_by(l.id);
                qos_picker(ui, "sub-qos", &mut self.sub_qos);
                if ui.button("Subscribe").clicked() && !self.sub_filter.trim().is_empty() {
                    client.send(LabCommand::Subscribe(
                        self.sub_filter.trim().to_owned(),
                        self.sub_qos,
                    ));
                }
            });
            for (filter, qos, code) in &s.subscriptions {
                ui.horizontal(|ui| {
                    ui.monospace(filter);
                    ui.label(match code {
                        None => format!("QoS {} asked, waiting for SUBACK", *qos as u8),
                        Some(0x80) => "refused (0x80)".to_owned(),
                        Some(g) => format!("granted QoS {g}"),
                    });
                    if super::reply::row_button(ui, "Unsubscribe", &format!("Unsubscribe {filter}"))
                        .clicked()
                    {
                        client.send(LabCommand::Unsubscribe(filter.clone()));
                    }
                });
            }
            ui.horizontal_wrapped(|ui| {
                let l = ui.label("Publish to");
                topic_field(ui, "pub-topic", &mut self.pub_topic, topics, false).labelled_by(l.id);
                let l = ui.label("Payload");
                ui.add(egui::TextEdit::singleline(&mut self.pub_payload).desired_width(140.0))
                    .labelled_by(l.id);
                qos_picker(ui, "pub-qos", &mut self.pub_qos);
                ui.checkbox(&mut self.pub_retain, "Retain");
                let message = Publish {
                    topic: self.pub_topic.trim().to_owned(),
                    payload: self.pub_payload.clone(),
                    qos: self.pub_qos,
                    retain: self.pub_retain,
                };
                let ready = !message.topic.is_empty();
                if ui
                    .add_enabled(ready, egui::Button::new("Publish"))
                    .clicked()
                {
                    client.send(LabCommand::Publish(message.clone()));
                }
                ui.separator();
                match &s.repeating {
                    Some((p, every)) => {
                        ui.label(format!(
                            "publishing to {} every {} ms",
                            p.topic,
                            every.as_millis()
                        ));
                        if ui.button("Stop repeating").clicked() {
                            client.send(LabCommand::StopRepeat);
                        }
                    }
                    None => {
                        let l = ui.label("every (ms)");
                        ui.add(egui::TextEdit::singleline(&mut self.repeat_ms).desired_width(60.0))
                            .labelled_by(l.id);
                        let every = self
                            .repeat_ms
                            .trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|ms| *ms >= 50);
                        if ui
                            .add_enabled(ready && every.is_some(), egui::Button::new("Repeat"))
                            .on_hover_text("Publish this again and again (50 ms at the fastest)")
                            .clicked()
                        {
                            let every = Duration::from_millis(every.unwrap_or(1000));
                            client.send(LabCommand::Repeat(message, every));
                        }
                    }
                }
            });
        });
        ui.label(format!(
            "Sent {} · waiting for acknowledgement {}",
            s.sent, s.unacked
        ));
        ui.separator();
        ui.horizontal(|ui| {
            ui.strong(format!("Received ({})", s.received.len()));
            if ui.button("Clear").clicked() {
                client.send(LabCommand::ClearReceived);
            }
        });
        let row = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
        TableBuilder::new(ui)
            .id_salt("lab-received")
            .striped(true)
            .stick_to_bottom(true)
            .column(Column::auto().at_least(70.0))
            .column(Column::auto().at_least(120.0).clip(true))
            .column(Column::remainder().at_least(120.0).clip(true))
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .header(row, |mut h| {
                for t in ["Time", "Topic", "Payload", "QoS", "Retain", "DUP"] {
                    h.col(|ui| {
                        ui.strong(t);
                    });
                }
            })
            .body(|body| {
                body.rows(row, s.received.len(), |mut r| {
                    let m = &s.received[r.index()];
                    r.col(|ui| {
                        ui.label(format::clock(m.at));
                    });
                    r.col(|ui| {
                        ui.monospace(&m.topic);
                    });
                    r.col(|ui| {
                        ui.monospace(format::payload(&m.payload, 80));
                    });
                    r.col(|ui| {
                        ui.label(format::qos(m.qos));
                    });
                    r.col(|ui| {
                        ui.label(if m.retain { "retained" } else { "" });
                    });
                    r.col(|ui| {
                        ui.label(if m.dup { "DUP" } else { "" });
                    });
                });
            });
    }
}

fn field(ui: &mut egui::Ui, label: &str, value: &mut String, hint: &str) {
    let l = ui.label(label);
    ui.add(
        egui::TextEdit::singleline(value)
            .hint_text(hint)
            .desired_width(140.0),
    )
    .labelled_by(l.id);
    ui.end_row();
}

/// A text field with the topic list a click away (filters may be typed too).
fn topic_field(
    ui: &mut egui::Ui,
    id: &str,
    value: &mut String,
    topics: &[String],
    filter: bool,
) -> egui::Response {
    let r = ui.add(
        egui::TextEdit::singleline(value)
            .hint_text(if filter {
                "lab/# or a topic"
            } else {
                "a topic"
            })
            .desired_width(150.0),
    );
    let list = egui::ComboBox::from_id_salt(id)
        .selected_text("list")
        .width(50.0)
        .show_ui(ui, |ui| {
            for t in topics {
                if ui.selectable_label(value == t, t).clicked() {
                    value.clone_from(t);
                }
            }
        })
        .response;
    named(&list, "Pick from the topic list");
    r
}

/// Gives a widget without a visible label its accessible name.
fn named(r: &egui::Response, name: &str) {
    let name = name.to_owned();
    let enabled = r.enabled();
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::ComboBox, enabled, &name));
}

fn qos_picker(ui: &mut egui::Ui, id: &str, qos: &mut QoS) {
    let r = egui::ComboBox::from_id_salt(id)
        .selected_text(format!("QoS {}", *qos as u8))
        .width(60.0)
        .show_ui(ui, |ui| {
            for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                ui.selectable_value(qos, q, format!("QoS {}", q as u8));
            }
        })
        .response;
    named(&r, &format!("{id}: QoS {}", *qos as u8));
}

fn status_text(s: &Status) -> String {
    match s {
        Status::Disconnected => "not connected".into(),
        Status::Connecting => "connecting…".into(),
        Status::Connected { session_present } => format!(
            "connected (session present: {})",
            if *session_present { "yes" } else { "no" }
        ),
        Status::Refused(code) => format!("refused: CONNACK 0x{code:02x}"),
        Status::Closed(why) => format!("closed: {why}"),
    }
}

fn status_color(s: &Status, v: &egui::Visuals) -> egui::Color32 {
    match s {
        Status::Connected { .. } => egui::Color32::from_rgb(80, 200, 120),
        Status::Connecting => v.warn_fg_color,
        Status::Refused(_) => v.error_fg_color,
        Status::Disconnected | Status::Closed(_) => v.weak_text_color(),
    }
}

/// A status light.
fn dot(ui: &mut egui::Ui, color: egui::Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 4.5, color);
}
