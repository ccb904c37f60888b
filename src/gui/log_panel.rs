//! The Log panel: what the broker did, newest first.

use crate::broker::events::EventKind;

use super::format;
use super::runner::Live;

/// Shows the event log.
pub fn ui(ui: &mut egui::Ui, live: &Live) {
    egui::ScrollArea::vertical().id_salt("log").show(ui, |ui| {
        egui::Grid::new("log-grid")
            .striped(true)
            .num_columns(4)
            .show(ui, |ui| {
                for h in ["Time", "What", "Client", "Details"] {
                    ui.strong(h);
                }
                ui.end_row();
                for e in live.snapshot.events.iter().rev() {
                    ui.label(format::clock(e.time));
                    let (text, bad) = match e.kind {
                        EventKind::Connected => ("connected", false),
                        EventKind::Disconnected => ("disconnected", false),
                        EventKind::Fault => ("closed: fault", true),
                        EventKind::LoginRefused => ("login refused", true),
                        EventKind::SubscriptionRefused => ("subscription refused", true),
                        EventKind::Kicked => ("kicked", false),
                        EventKind::Topics => ("topics", false),
                        EventKind::Users => ("users", false),
                    };
                    if bad {
                        ui.colored_label(ui.visuals().warn_fg_color, text);
                    } else {
                        ui.label(text);
                    }
                    ui.monospace(&e.who);
                    ui.label(&e.text);
                    ui.end_row();
                }
            });
    });
}
