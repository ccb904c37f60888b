//! The Clients panel: connected clients and offline persistent sessions, with their
//! subscriptions; Kick and Discard.

use crate::broker::snapshot::ClientInfo;
use crate::broker::{BrokerHandle, Command};

use super::format;
use super::reply::{self, Notice};
use super::runner::Live;

/// State of the Clients panel.
#[derive(Default)]
pub struct ClientsPanel {
    notice: Option<Notice>,
}

const COLUMNS: [&str; 13] = [
    "Client id",
    "Address",
    "User",
    "MQTT",
    "Keepalive",
    "Clean",
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
        egui::ScrollArea::both().id_salt("clients").show(ui, |ui| {
            egui::Grid::new("clients-grid")
                .striped(true)
                .num_columns(COLUMNS.len())
                .show(ui, |ui| {
                    for h in COLUMNS {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for c in clients {
                        self.row(ui, c, broker);
                        ui.end_row();
                    }
                });
        });
    }

    fn row(&mut self, ui: &mut egui::Ui, c: &ClientInfo, broker: &BrokerHandle) {
        ui.monospace(&c.client_id);
        match &c.connection {
            Some(conn) => {
                ui.label(conn.peer.to_string());
                ui.label(conn.username.as_deref().unwrap_or("—"));
                ui.label(if conn.protocol_level == 3 {
                    "3.1"
                } else {
                    "3.1.1"
                });
                ui.label(format!("{} s", conn.keep_alive));
            }
            None => {
                ui.weak("offline");
                ui.label("—");
                ui.label("—");
                ui.label("—");
            }
        }
        ui.label(if c.clean_session { "yes" } else { "no" });
        ui.label(match &c.connection {
            Some(conn) => format::clock(conn.since),
            None => format!("seen {}", format::clock(c.last_seen)),
        });
        ui.label(c.messages_in.to_string());
        ui.label(c.messages_out.to_string());
        ui.label(c.queued.to_string());
        ui.label(c.inflight.to_string());
        let subs: Vec<String> = c
            .subscriptions
            .iter()
            .map(|(f, q)| format!("{f} ({})", format::qos(*q)))
            .collect();
        ui.label(if subs.is_empty() {
            "—".into()
        } else {
            subs.join(", ")
        });
        let id = c.client_id.clone();
        if c.connection.is_some() {
            if reply::row_button(ui, "Kick", &format!("Kick {id}")).clicked()
                && broker.try_send(Command::Kick {
                    client_id: id.clone(),
                })
            {
                self.notice = Some(Notice::ok(format!(
                    "Kicked {id}: its will, if any, is published"
                )));
            }
        } else if reply::row_button(ui, "Discard", &format!("Discard {id}")).clicked()
            && broker.try_send(Command::DiscardSession {
                client_id: id.clone(),
            })
        {
            self.notice = Some(Notice::ok(format!("Discarded the session of {id}")));
        }
    }
}
