//! The History panel: the most recently published topics, newest first, and the last ten
//! values of the one selected.

use crate::broker::snapshot::TopicInfo;

use super::format;
use super::runner::Live;

/// State of the History panel.
#[derive(Default)]
pub struct HistoryPanel {
    selected: Option<String>,
}

impl HistoryPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live) {
        let mut recent: Vec<&TopicInfo> = live
            .snapshot
            .topics
            .iter()
            .filter(|t| t.last_publish.is_some())
            .collect();
        recent.sort_by_key(|t| std::cmp::Reverse(t.last_publish));
        if recent.is_empty() {
            ui.label("Nothing published yet.");
            return;
        }
        let selected = self
            .selected
            .clone()
            .filter(|s| recent.iter().any(|t| t.name == *s))
            .unwrap_or_else(|| recent[0].name.clone());
        egui::Panel::left("recent-topics")
            .resizable(true)
            .default_size(220.0)
            .show(ui, |ui| {
                ui.strong("Recently published");
                egui::ScrollArea::vertical()
                    .id_salt("recent")
                    .show(ui, |ui| {
                        for t in &recent {
                            let label = format!(
                                "{}  {}",
                                t.name,
                                t.last_publish.map(format::clock).unwrap_or_default()
                            );
                            if ui.selectable_label(t.name == selected, label).clicked() {
                                self.selected = Some(t.name.clone());
                            }
                        }
                    });
            });
        let Some(topic) = recent.iter().find(|t| t.name == selected) else {
            return;
        };
        ui.heading(&topic.name);
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        ui.label(format!(
            "{}; the last {}, newest first",
            plural(topic.messages as usize, "message"),
            plural(topic.history.len(), "value")
        ));
        egui::ScrollArea::vertical()
            .id_salt("values")
            .show(ui, |ui| {
                egui::Grid::new("history-grid")
                    .striped(true)
                    .num_columns(5)
                    .show(ui, |ui| {
                        for h in ["Time", "Payload", "QoS", "Retain", "From"] {
                            ui.strong(h);
                        }
                        ui.end_row();
                        for item in topic.history.iter().rev() {
                            ui.label(format::clock(item.time));
                            let mut text = format::payload(&item.payload, 80);
                            if item.size > item.payload.len() {
                                text.push_str(&format!(" ({} bytes)", item.size));
                            }
                            ui.monospace(text);
                            ui.label(format::qos(item.qos));
                            ui.label(if item.retain { "yes" } else { "no" });
                            ui.label(item.from.as_deref().unwrap_or("—"));
                            ui.end_row();
                        }
                    });
            });
    }
}
