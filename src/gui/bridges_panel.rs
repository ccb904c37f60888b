//! The Bridges panel: the bridges to other brokers, what each is doing, and a form to add or
//! change one (its remote, its login and its topic rules); open and save the bridges file.

use std::path::PathBuf;
use std::time::SystemTime;

use egui_extras::{Column, TableBuilder};

use crate::broker::bridge::{BridgeConfig, BridgeState, Direction, TopicRule};
use crate::broker::snapshot::BridgeInfo;
use crate::broker::{BrokerHandle, Command};

use super::file_dialog::{Ask, FileChooser, FileKind, Purpose};
use super::format;
use super::reply::{self, Notice, Pending};
use super::runner::Live;

/// State of the Bridges panel.
#[derive(Default)]
pub struct BridgesPanel {
    /// The bridge being added or changed.
    form: Option<Form>,
    notice: Option<Notice>,
    pending: Option<Pending>,
    file: FileChooser,
    /// The form was sent: it closes when the broker takes it, and stays (with the broker's
    /// objection shown) when not.
    form_sent: bool,
}

/// A bridge in the making: text fields as typed, checked by the broker when saved.
struct Form {
    /// The name it had (None: a new bridge).
    was: Option<String>,
    name: String,
    address: String,
    ca_file: String,
    client_id: String,
    username: String,
    password: String,
    clean_session: bool,
    keepalive: u16,
    enabled: bool,
    rules: Vec<TopicRule>,
}

impl Form {
    fn new() -> Form {
        Form {
            was: None,
            name: String::new(),
            address: String::new(),
            ca_file: String::new(),
            client_id: String::new(),
            username: String::new(),
            password: String::new(),
            clean_session: false,
            keepalive: 60,
            enabled: true,
            rules: vec![TopicRule {
                pattern: "lab/#".into(),
                direction: Direction::Out,
                qos: 1,
                local_prefix: String::new(),
                remote_prefix: String::new(),
            }],
        }
    }

    fn of(b: &BridgeConfig) -> Form {
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        Form {
            was: Some(b.name.clone()),
            name: b.name.clone(),
            address: b.address.clone(),
            ca_file: b
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            client_id: text(&b.client_id),
            username: text(&b.username),
            password: text(&b.password),
            clean_session: b.clean_session,
            keepalive: b.keepalive,
            enabled: b.enabled,
            rules: b.topics.clone(),
        }
    }

    fn config(&self) -> BridgeConfig {
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        BridgeConfig {
            name: self.name.trim().to_owned(),
            address: self.address.trim().to_owned(),
            ca_file: opt(&self.ca_file).map(PathBuf::from),
            client_id: opt(&self.client_id),
            username: opt(&self.username),
            password: Some(self.password.clone()).filter(|p| !p.is_empty()),
            clean_session: self.clean_session,
            keepalive: self.keepalive,
            enabled: self.enabled,
            topics: self.rules.clone(),
        }
    }
}

impl BridgesPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live, broker: &BrokerHandle) {
        reply::settle(&mut self.pending, &mut self.notice);
        if self.form_sent && self.pending.is_none() {
            self.form_sent = false;
            if self.notice.as_ref().is_some_and(|n| !n.error) {
                self.form = None;
            }
        }
        self.poll_dialog(live, broker);
        let snap = &live.snapshot;
        ui.horizontal(|ui| {
            ui.label("Bridges file:");
            ui.monospace(
                snap.bridges_path
                    .as_deref()
                    .map_or("(none: changes are not saved)".into(), |p| {
                        p.display().to_string()
                    }),
            );
        });
        ui.horizontal(|ui| {
            if ui.button("Add bridge").clicked() {
                self.form = Some(Form::new());
            }
            ui.separator();
            self.file
                .dialog_buttons(ui, snap.bridges_path.as_deref(), bridges_file());
            let hint = "or type the path of a bridges file";
            if let Some(chosen) = self.file.path_row(ui, hint, 260.0) {
                self.act_on(chosen, live, broker);
            }
        });
        self.file.unavailable_notice(
            ui,
            "No file dialog is available on this system: type a file path instead.",
        );
        if snap.bridge_loops > 0 {
            ui.label(format!(
                "{} messages came back after being bridged out of this broker, and were dropped",
                snap.bridge_loops
            ));
        }
        reply::show(ui, &self.notice);
        ui.separator();
        if snap.bridges.is_empty() && self.form.is_none() {
            ui.label(
                "No bridges. A bridge forwards topics between this broker and another one \
                 (a department's Mosquitto, EMQX, a cloud service): Add bridge.",
            );
        } else {
            self.table(ui, &snap.bridges, broker);
        }
        if let Some(form) = &mut self.form {
            ui.separator();
            match form_ui(ui, form) {
                FormAction::Save => {
                    let new = form.config();
                    let was = form.was.clone();
                    let mut list: Vec<BridgeConfig> =
                        snap.bridges.iter().map(|b| b.config.clone()).collect();
                    match list.iter_mut().find(|b| Some(&b.name) == was.as_ref()) {
                        Some(b) => *b = new.clone(),
                        None => list.push(new.clone()),
                    }
                    let done = format!("Bridge {:?} saved", new.name);
                    self.form_sent = self.send(list, None, done, broker);
                }
                FormAction::Cancel => self.form = None,
                FormAction::None => {}
            }
        }
    }

    fn table(&mut self, ui: &mut egui::Ui, bridges: &[BridgeInfo], broker: &BrokerHandle) {
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 8.0;
        let mut action = None;
        let height = ui.available_height() * 0.4;
        TableBuilder::new(ui)
            .id_salt("bridges")
            .striped(true)
            .max_scroll_height(height)
            .column(Column::auto().at_least(90.0))
            .column(Column::auto().at_least(160.0))
            .column(Column::initial(150.0).clip(true))
            .column(Column::auto().at_least(150.0))
            .columns(Column::auto(), 4)
            .column(Column::initial(150.0).clip(true))
            .column(Column::remainder())
            .header(row_height, |mut header| {
                for (h, hover) in [
                    ("Bridge", ""),
                    ("Remote", ""),
                    ("Topics", "Each rule's pattern and direction; hover for how names are renamed"),
                    ("State", ""),
                    ("Out", "Messages sent to the remote (and acknowledged, at QoS 1 and 2)"),
                    ("In", "Messages from the remote published here"),
                    ("Waiting", "Messages for the remote held here while it is away or slow"),
                    ("Dropped", "Messages for the remote dropped (its queue was full), and messages from it this broker refused (not on the topic list)"),
                    ("Last error", ""),
                    ("", ""),
                ] {
                    header.col(|ui| {
                        let r = ui.strong(h);
                        if !hover.is_empty() {
                            r.on_hover_text(hover);
                        }
                    });
                }
            })
            .body(|body| {
                body.rows(row_height, bridges.len(), |mut row| {
                    let b = &bridges[row.index()];
                    let c = &b.status.counters;
                    row.col(|ui| {
                        ui.strong(&b.config.name);
                    });
                    row.col(|ui| {
                        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                        ui.monospace(&b.config.address);
                    });
                    row.col(|ui| {
                        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
                        let short: Vec<String> = b
                            .config
                            .topics
                            .iter()
                            .map(|r| format!("{} {}", r.pattern, r.direction.name()))
                            .collect();
                        ui.label(short.join(", ")).on_hover_text(rules_text(&b.config.topics));
                    });
                    row.col(|ui| state_ui(ui, &b.status.state));
                    row.col(|ui| {
                        ui.label(c.sent.to_string());
                    });
                    row.col(|ui| {
                        ui.label(c.received.to_string());
                    });
                    row.col(|ui| {
                        ui.label(b.queued.to_string());
                    });
                    row.col(|ui| {
                        ui.label(format!("{} / {}", b.dropped, c.refused));
                    });
                    row.col(|ui| {
                        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
                        if let Some(e) = &b.status.last_error {
                            ui.colored_label(ui.visuals().warn_fg_color, e)
                                .on_hover_text(e);
                        }
                    });
                    row.col(|ui| {
                        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                        ui.horizontal(|ui| {
                        let name = &b.config.name;
                        if reply::row_button(ui, "Edit", &format!("Edit {name}")).clicked() {
                            action = Some(RowAction::Edit(b.config.clone()));
                        }
                        let toggle = if b.config.enabled { "Disable" } else { "Enable" };
                        if reply::row_button(ui, toggle, &format!("{toggle} {name}")).clicked() {
                            action = Some(RowAction::Toggle(name.clone()));
                        }
                        if reply::row_button(ui, "Delete", &format!("Delete {name}")).clicked() {
                            action = Some(RowAction::Delete(name.clone()));
                        }
                        });
                    });
                });
            });
        let list = || bridges.iter().map(|b| b.config.clone());
        match action {
            Some(RowAction::Edit(config)) => self.form = Some(Form::of(&config)),
            Some(RowAction::Toggle(name)) => {
                let list: Vec<BridgeConfig> = list()
                    .map(|mut b| {
                        if b.name == name {
                            b.enabled = !b.enabled;
                        }
                        b
                    })
                    .collect();
                let on = list.iter().any(|b| b.name == name && b.enabled);
                let done = format!(
                    "Bridge {name:?} {}",
                    if on { "enabled" } else { "disabled" }
                );
                self.send(list, None, done, broker);
            }
            Some(RowAction::Delete(name)) => {
                let list = list().filter(|b| b.name != name).collect();
                self.send(list, None, format!("Bridge {name:?} deleted"), broker);
            }
            None => {}
        }
    }

    /// Asks the broker to use `list`; false if it could not be asked.
    fn send(
        &mut self,
        bridges: Vec<BridgeConfig>,
        path: Option<PathBuf>,
        done: String,
        broker: &BrokerHandle,
    ) -> bool {
        match Pending::ask(
            broker,
            |reply| Command::SetBridges {
                bridges,
                path,
                reply: Some(reply),
            },
            done,
        ) {
            Ok(p) => {
                self.pending = Some(p);
                true
            }
            Err(n) => {
                self.notice = Some(n);
                false
            }
        }
    }

    fn open(&mut self, path: PathBuf, broker: &BrokerHandle) {
        let done = format!("Opened {}", path.display());
        match Pending::ask(
            broker,
            |reply| Command::OpenBridgesFile {
                path,
                reply: Some(reply),
            },
            done,
        ) {
            Ok(p) => self.pending = Some(p),
            Err(n) => self.notice = Some(n),
        }
    }

    fn save_as(&mut self, path: PathBuf, live: &Live, broker: &BrokerHandle) {
        let list = live
            .snapshot
            .bridges
            .iter()
            .map(|b| b.config.clone())
            .collect();
        let done = format!("Saved to {}", path.display());
        self.send(list, Some(path), done, broker);
    }

    fn poll_dialog(&mut self, live: &Live, broker: &BrokerHandle) {
        if let Some(chosen) = self.file.poll() {
            self.act_on(chosen, live, broker);
        }
    }

    /// A file chosen, in the dialog or by its path.
    fn act_on(&mut self, (purpose, path): (Purpose, PathBuf), live: &Live, broker: &BrokerHandle) {
        match purpose {
            Purpose::Open => self.open(path, broker),
            Purpose::SaveAs => self.save_as(path, live, broker),
        }
    }
}

/// The bridges file in the platform's file dialogs.
fn bridges_file() -> FileKind {
    FileKind {
        open: Ask {
            title: "Open a bridges file",
            filter: ("Bridges (RON)", &["ron"]),
            file_name: None,
        },
        save: Ask {
            title: "Save the bridges as",
            filter: ("Bridges (RON)", &["ron"]),
            file_name: Some("bridges.ron"),
        },
    }
}

/// A bridge's rules as a person reads them: which local names go where.
fn rules_text(rules: &[TopicRule]) -> String {
    rules
        .iter()
        .map(|r| {
            let (here, there) = (r.local_filter(), r.remote_filter());
            let arrow = match r.direction {
                Direction::Out => "→",
                Direction::In => "←",
                Direction::Both => "↔",
            };
            format!("{here} {arrow} {there} (QoS {})", r.qos)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

enum RowAction {
    Edit(BridgeConfig),
    Toggle(String),
    Delete(String),
}

enum FormAction {
    None,
    Save,
    Cancel,
}

fn state_ui(ui: &mut egui::Ui, state: &BridgeState) {
    match state {
        BridgeState::Up { since } => {
            ui.label(format!("up since {}", format::clock(*since)));
        }
        BridgeState::Connecting => {
            ui.colored_label(ui.visuals().warn_fg_color, "connecting");
        }
        BridgeState::Waiting { retry_at } => {
            let secs = retry_at
                .duration_since(SystemTime::now())
                .map_or(0, |d| d.as_secs() + 1);
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("down, retrying in {secs} s"),
            );
        }
        BridgeState::Disabled => {
            ui.weak("disabled");
        }
    }
}

/// A labelled single-line field.
fn field(ui: &mut egui::Ui, label: &str, value: &mut String, hint: &str, password: bool) {
    let l = ui.label(label);
    ui.add(
        egui::TextEdit::singleline(value)
            .hint_text(hint)
            .password(password)
            .desired_width(260.0),
    )
    .labelled_by(l.id);
    ui.end_row();
}

fn form_ui(ui: &mut egui::Ui, f: &mut Form) -> FormAction {
    let mut action = FormAction::None;
    ui.heading(match &f.was {
        Some(name) => format!("Bridge {name}"),
        None => "New bridge".into(),
    });
    egui::Grid::new("bridge form")
        .num_columns(2)
        .spacing([12.0, 4.0])
        .show(ui, |ui| {
            field(ui, "Name", &mut f.name, "e.g. department", false);
            field(
                ui,
                "Remote address",
                &mut f.address,
                "mqtt://host:1883, mqtts://, ws://host/mqtt",
                false,
            );
            field(
                ui,
                "CA file",
                &mut f.ca_file,
                "mqtts:// with a private CA (PEM)",
                false,
            );
            field(
                ui,
                "Client id",
                &mut f.client_id,
                "default: mqtt-lab-NAME",
                false,
            );
            field(
                ui,
                "Remote user",
                &mut f.username,
                "if the remote wants one",
                false,
            );
            field(ui, "Remote password", &mut f.password, "", true);
            ui.label("Session");
            ui.horizontal(|ui| {
                ui.checkbox(&mut f.clean_session, "Clean session")
                    .on_hover_text(
                        "Off: the remote keeps what it has for the bridge while the bridge is away",
                    );
                let l = ui.label("Keepalive (s)");
                ui.add(egui::DragValue::new(&mut f.keepalive).range(0..=3600))
                    .labelled_by(l.id);
                ui.checkbox(&mut f.enabled, "Enabled");
            });
            ui.end_row();
        });
    ui.label("Topics: the local topic is local prefix + X, the remote one remote prefix + X, for every X the pattern matches.");
    let mut remove = None;
    egui::Grid::new("bridge rules")
        .num_columns(6)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            let heads: Vec<egui::Id> = [
                "Pattern",
                "Direction",
                "QoS",
                "Local prefix",
                "Remote prefix",
            ]
            .map(|h| ui.strong(h).id)
            .into();
            ui.end_row();
            for (i, r) in f.rules.iter_mut().enumerate() {
                // Sized: a grid's cell is as wide as its column was last frame.
                let h = ui.spacing().interact_size.y;
                ui.add_sized(
                    [160.0, h],
                    egui::TextEdit::singleline(&mut r.pattern).hint_text("lab/#"),
                )
                .labelled_by(heads[0]);
                egui::ComboBox::from_id_salt(("direction", i))
                    .selected_text(r.direction.name())
                    .show_ui(ui, |ui| {
                        for d in [Direction::Out, Direction::In, Direction::Both] {
                            ui.selectable_value(&mut r.direction, d, d.name());
                        }
                    })
                    .response
                    .labelled_by(heads[1]);
                egui::ComboBox::from_id_salt(("qos", i))
                    .selected_text(r.qos.to_string())
                    .width(40.0)
                    .show_ui(ui, |ui| {
                        for q in 0..=1u8 {
                            ui.selectable_value(&mut r.qos, q, q.to_string());
                        }
                    })
                    .response
                    .labelled_by(heads[2]);
                ui.add_sized([130.0, h], egui::TextEdit::singleline(&mut r.local_prefix))
                    .labelled_by(heads[3]);
                ui.add_sized([130.0, h], egui::TextEdit::singleline(&mut r.remote_prefix))
                    .labelled_by(heads[4]);
                if reply::row_button(ui, "Remove", &format!("Remove rule {}", i + 1)).clicked() {
                    remove = Some(i);
                }
                ui.end_row();
            }
        });
    if let Some(i) = remove {
        f.rules.remove(i);
    }
    ui.horizontal(|ui| {
        if ui.button("Add rule").clicked() {
            f.rules.push(TopicRule {
                pattern: String::new(),
                direction: Direction::Out,
                qos: 1,
                local_prefix: String::new(),
                remote_prefix: String::new(),
            });
        }
        if ui.button("Save bridge").clicked() {
            action = FormAction::Save;
        }
        if ui.button("Cancel").clicked() {
            action = FormAction::Cancel;
        }
    });
    action
}
