//! What the broker keeps on disk (retained messages, persistent sessions): shown in the status
//! bar, with a small window that says where and how much, and clears it.

use crate::broker::{BrokerHandle, Command};

use super::format;
use super::reply::{self, Notice, Pending};
use super::runner::Live;

#[derive(Default)]
pub struct SavedState {
    open: bool,
    /// Clear was clicked once: the second click (on "Yes, clear") does it.
    confirming: bool,
    pending: Option<Pending>,
    notice: Option<Notice>,
}

impl SavedState {
    /// The status bar's item: "Saved 1.2 MiB" (or "Not saved"), a click opens the window.
    pub fn status_item(&mut self, ui: &mut egui::Ui, live: &Live) {
        let snap = &live.snapshot;
        match &snap.persistence {
            Some(status) => {
                let text = format!("Saved {}", format::bytes(status.bytes));
                let link = if status.failing.is_some() {
                    ui.add(egui::Link::new(
                        egui::RichText::new(format!("{text}, failing"))
                            .color(ui.visuals().error_fg_color),
                    ))
                } else {
                    ui.link(text)
                };
                if link
                    .on_hover_text(format!(
                        "Retained messages and persistent sessions are kept in {}: they survive a restart or a crash. Click for more.",
                        status.path.display()
                    ))
                    .clicked()
                {
                    self.open = true;
                    self.confirming = false;
                    self.notice = None;
                }
            }
            None => {
                ui.label("Not saved").on_hover_text(
                    "Started with --no-persistence: retained messages and persistent sessions are lost when the broker stops.",
                );
            }
        }
    }

    /// The window, when open.
    pub fn window(&mut self, ctx: &egui::Context, live: &Live, broker: &BrokerHandle) {
        reply::settle(&mut self.pending, &mut self.notice);
        if !self.open {
            return;
        }
        let snap = &live.snapshot;
        let Some(status) = &snap.persistence else {
            self.open = false;
            return;
        };
        let mut open = true;
        egui::Window::new("Saved state")
            .collapsible(false)
            .resizable(false)
            .open(&mut open)
            .show(ctx, |ui| {
                ui.label("Kept on disk, so that a restart or a crash loses nothing acknowledged:");
                egui::Grid::new("saved-state").num_columns(2).show(ui, |ui| {
                    ui.label("File");
                    let path = status.path.display().to_string();
                    if ui.link(&path).on_hover_text("Click to copy its path (open it with sqlite3)").clicked() {
                        ui.ctx().copy_text(path);
                    }
                    ui.end_row();
                    ui.label("Size");
                    ui.label(format::bytes(status.bytes));
                    ui.end_row();
                    ui.label("Retained messages");
                    ui.label(snap.retained.to_string());
                    ui.end_row();
                    ui.label("Persistent sessions");
                    ui.label(format!(
                        "{} ({} offline), holding {} messages",
                        snap.persistent_sessions,
                        snap.clients
                            .iter()
                            .filter(|c| c.connection.is_none())
                            .count(),
                        snap.stored_messages
                    ));
                    ui.end_row();
                    ui.label("Writes");
                    ui.label(format!(
                        "{} commits, {} changes",
                        status.commits, status.changes
                    ));
                    ui.end_row();
                });
                if let Some((when, error)) = &status.failing {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!(
                            "Writing fails since {}: {error}. Acknowledgements wait until it works again.",
                            format::clock(*when)
                        ),
                    );
                }
                ui.separator();
                if self.confirming {
                    ui.label("Forget every retained message and every offline session with its queued messages? Connected clients keep their sessions.");
                    ui.horizontal(|ui| {
                        if ui.button("Yes, clear").clicked() {
                            self.confirming = false;
                            match Pending::ask(
                                broker,
                                |reply| Command::ClearState { reply: Some(reply) },
                                "Cleared retained messages and offline sessions",
                            ) {
                                Ok(p) => self.pending = Some(p),
                                Err(n) => self.notice = Some(n),
                            }
                        }
                        if ui.button("Cancel").clicked() {
                            self.confirming = false;
                        }
                    });
                } else if ui
                    .add_enabled(self.pending.is_none(), egui::Button::new("Clear saved state…"))
                    .on_hover_text("Forget retained messages and offline sessions, on disk and in the broker")
                    .clicked()
                {
                    self.confirming = true;
                    self.notice = None;
                }
                reply::show(ui, &self.notice);
            });
        if !open {
            self.open = false;
        }
    }
}
