//! The Log panel: what the broker did, newest first.

use crate::broker::events::EventKind;

use egui_extras::{Column, TableBuilder};

use super::format;
use super::runner::Live;

/// Shows the event log.
pub fn ui(ui: &mut egui::Ui, live: &Live) {
    let events = &live.snapshot.events;
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
    TableBuilder::new(ui)
        .id_salt("log")
        .striped(true)
        .column(Column::auto())
        .column(Column::auto())
        .column(Column::auto().clip(true).at_most(220.0))
        .column(Column::remainder())
        .header(row_height, |mut header| {
            for h in ["Time", "What", "Client", "Details"] {
                header.col(|ui| {
                    ui.strong(h);
                });
            }
        })
        .body(|body| {
            body.rows(row_height, events.len(), |mut row| {
                // Newest first.
                let e = &events[events.len() - 1 - row.index()];
                row.col(|ui| {
                    ui.label(format::clock(e.time));
                });
                let (text, bad) = match e.kind {
                    EventKind::Connected => ("connected", false),
                    EventKind::Disconnected => ("disconnected", false),
                    EventKind::Fault => ("closed: fault", true),
                    EventKind::LoginRefused => ("login refused", true),
                    EventKind::SubscriptionRefused => ("subscription refused", true),
                    EventKind::PublishRefused => ("publish refused", true),
                    EventKind::Kicked => ("kicked", false),
                    EventKind::Stuck => ("stuck subscriber", true),
                    EventKind::Persistence => ("saved state", false),
                    EventKind::Topics => ("topics", false),
                    EventKind::Users => ("users", false),
                    EventKind::Bridges => ("bridges", false),
                };
                row.col(|ui| {
                    if bad {
                        ui.colored_label(ui.visuals().warn_fg_color, text);
                    } else {
                        ui.label(text);
                    }
                });
                row.col(|ui| {
                    ui.monospace(&e.who);
                });
                row.col(|ui| {
                    ui.label(&e.text);
                });
            });
        });
}
