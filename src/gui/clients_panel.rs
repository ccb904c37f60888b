//! The Clients panel: connected clients and offline persistent sessions, with their
//! subscriptions; Kick and Discard.

use crate::broker::snapshot::{ClientInfo, Flow};
use crate::broker::{BrokerHandle, Command};

use egui_extras::{Column, TableBuilder, TableRow};

use super::format;
use super::reply::{self, Notice, Pending};
use super::runner::Live;

/// State of the Clients panel.
#[derive(Default)]
pub struct ClientsPanel {
    notice: Option<Notice>,
    /// A Kick or Discard the broker has not answered yet.
    pending: Option<Pending>,
}

const COLUMNS: [&str; 14] = [
    "Client id",
    "Address",
    "User",
    "MQTT",
    "Keepalive",
    "MQTT 5 limits",
    "Session",
    "Since",
    "In",
    "Out",
    "Queued",
    "In flight",
    "Subscriptions (QoS)",
    "",
];

impl ClientsPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live, broker: &BrokerHandle) {
        reply::settle(&mut self.pending, &mut self.notice);
        let snap = &live.snapshot;
        let mut clients: Vec<&ClientInfo> = snap.clients.iter().collect();
        // Connected first, then offline sessions; each by client id.
        clients.sort_by(|a, b| {
            (a.connection.is_none(), &a.client_id).cmp(&(b.connection.is_none(), &b.client_id))
        });
        let online = clients.iter().filter(|c| c.connection.is_some()).count();
        ui.label(format!(
            "{online} connected, {} offline persistent sessions",
            clients.len() - online
        ));
        reply::show(ui, &self.notice);
        ui.separator();
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 8.0;
        egui::ScrollArea::horizontal()
            .id_salt("clients-h")
            .show(ui, |ui| {
                // Cells never wrap (a count broken over lines reads as other numbers): the
                // table grows sideways, inside its scroll area.
                ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                let mut table = TableBuilder::new(ui).id_salt("clients").striped(true);
                for (i, _) in COLUMNS.iter().enumerate() {
                    table = table.column(if i == COLUMNS.len() - 2 {
                        Column::auto().at_least(160.0).clip(true)
                    } else {
                        Column::auto()
                    });
                }
                table
                    .header(row_height, |mut header| {
                        for h in COLUMNS {
                            header.col(|ui| {
                                ui.strong(h);
                            });
                        }
                    })
                    .body(|body| {
                        body.rows(row_height, clients.len(), |mut row| {
                            let c = clients[row.index()];
                            self.row(&mut row, c, broker);
                        });
                    });
            });
    }

    fn row(&mut self, row: &mut TableRow<'_, '_>, c: &ClientInfo, broker: &BrokerHandle) {
        let text = |row: &mut TableRow<'_, '_>, s: &str| {
            row.col(|ui| {
                ui.label(s);
            });
        };
        row.col(|ui| {
            ui.monospace(&c.client_id);
        });
        match &c.connection {
            Some(conn) => {
                text(row, &conn.peer.to_string());
                text(row, conn.username.as_deref().unwrap_or("—"));
                let version = match conn.protocol_level {
                    3 => "3.1",
                    5 => "5",
                    _ => "3.1.1",
                };
                // Which door it came in by, beside the protocol version: "3.1.1/TCP"; an
                // MQTT-SN node is "MQTT-SN/UDP" (1.2, the one version there is).
                if conn.transport == crate::broker::Transport::MqttSn {
                    text(row, &conn.transport.to_string());
                } else {
                    text(row, &format!("{version}/{}", conn.transport));
                }
                text(row, &format!("{} s", conn.keep_alive));
                let limits = conn.v5.map(|v| {
                    let mut s = format!(
                        "receive {} · aliases {}",
                        v.receive_maximum, v.topic_alias_maximum
                    );
                    if let Some(max) = v.max_packet_size {
                        s += &format!(" · packets ≤ {max} B");
                    }
                    s
                });
                text(row, limits.as_deref().unwrap_or("—"));
            }
            None => {
                row.col(|ui| {
                    ui.weak("offline");
                });
                for _ in 0..4 {
                    text(row, "—");
                }
            }
        }
        let session = match (
            c.connection.as_ref().and_then(|conn| conn.v5),
            c.session_expiry,
        ) {
            (Some(v), _) => format::session_expiry(v.session_expiry),
            // Offline, an MQTT 5 session says how long it is kept.
            (None, Some(expiry)) => format::session_expiry(expiry),
            (None, None) if c.clean_session => "clean".into(),
            (None, None) => "persistent".into(),
        };
        text(row, &session);
        let since = match &c.connection {
            Some(conn) => format::clock(conn.since),
            None => format!("seen {}", format::clock(c.last_seen)),
        };
        text(row, &since);
        for n in [c.messages_in, c.messages_out] {
            text(row, &n.to_string());
        }
        row.col(|ui| queue_cell(ui, c));
        text(row, &c.inflight.to_string());
        let subs: Vec<String> = c
            .subscriptions
            .iter()
            .map(|(f, q)| format!("{f} ({})", format::qos(*q)))
            .collect();
        text(
            row,
            &if subs.is_empty() {
                "—".into()
            } else {
                subs.join(", ")
            },
        );
        let id = c.client_id.clone();
        row.col(|ui| {
            // Said done only once the broker has done it.
            let asked = if c.connection.is_some() {
                reply::row_button(ui, "Kick", &format!("Kick {id}"))
                    .clicked()
                    .then(|| {
                        Pending::ask(
                            broker,
                            |reply| Command::Kick {
                                client_id: id.clone(),
                                reply: Some(reply),
                            },
                            format!("Kicked {id}: its will, if any, is published"),
                        )
                    })
            } else {
                reply::row_button(ui, "Discard", &format!("Discard {id}"))
                    .clicked()
                    .then(|| {
                        Pending::ask(
                            broker,
                            |reply| Command::DiscardSession {
                                client_id: id.clone(),
                                reply: Some(reply),
                            },
                            format!("Discarded the session of {id}"),
                        )
                    })
            };
            match asked {
                Some(Ok(p)) => self.pending = Some(p),
                Some(Err(n)) => self.notice = Some(n),
                None => {}
            }
        });
    }
}

/// The queue's length, and what flow control is doing about it: a subscriber slower than its
/// publishers holds them back; one whose queue stopped moving is stuck.
fn queue_cell(ui: &mut egui::Ui, c: &ClientInfo) {
    let queued = if c.queued == 0 {
        "0".to_owned()
    } else {
        format!("{} ({})", c.queued, format::bytes(c.queued_bytes as u64))
    };
    match c.flow {
        Flow::Flowing => {
            ui.label(queued);
        }
        Flow::Holding(n) => {
            let who = if n == 1 { "publisher" } else { "publishers" };
            ui.label(format!("{queued}, slow: {n} {who} wait"))
                .on_hover_text("Its queue is over the high-water mark: the broker stops reading from the clients that publish to it until the queue drains.");
        }
        Flow::Stuck => {
            ui.colored_label(ui.visuals().warn_fg_color, format!("{queued}, stuck"))
                .on_hover_text("Its queue has not moved for the stall deadline: nobody waits for it any more, and what overflows its queue is dropped.");
        }
        Flow::HeldBack => {
            ui.label(format!("{queued}, held back"))
                .on_hover_text("It publishes to a subscriber that is behind: the broker reads from it again once that subscriber catches up.");
        }
    }
}
