//! The History panel: messages per second over the last minutes, the most recently published
//! topics, newest first, and the last ten values of the one selected (charted when they are
//! numbers).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use egui_plot::{Legend, Line, Plot};

use crate::broker::snapshot::TopicInfo;

use super::format;
use super::numbers;
use super::runner::Live;

/// How far back the rates chart goes.
pub const RATES_WINDOW: Duration = Duration::from_secs(300);

/// Messages per second in and out, as the window saw them: (when, in, out).
#[derive(Default)]
pub struct Rates {
    samples: VecDeque<(Instant, f64, f64)>,
}

impl Rates {
    pub fn push(&mut self, live: &Live) {
        self.samples
            .push_back((live.taken, live.messages_in_per_s, live.messages_out_per_s));
        while self
            .samples
            .front()
            .is_some_and(|(t, ..)| t.elapsed() > RATES_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The two lines: (seconds before now, rate).
    pub fn lines(&self) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
        let now = Instant::now();
        let ago = |t: &Instant| -now.duration_since(*t).as_secs_f64();
        (
            self.samples.iter().map(|(t, i, _)| [ago(t), *i]).collect(),
            self.samples.iter().map(|(t, _, o)| [ago(t), *o]).collect(),
        )
    }
}

/// State of the History panel.
#[derive(Default)]
pub struct HistoryPanel {
    selected: Option<String>,
}

impl HistoryPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live, rates: &Rates) {
        egui::CollapsingHeader::new("Messages per second, last 5 minutes")
            .default_open(true)
            .show(ui, |ui| {
                let (rin, rout) = rates.lines();
                Plot::new("rates")
                    .height(140.0)
                    .legend(Legend::default())
                    .x_axis_label("seconds ago")
                    .include_y(0.0)
                    .include_x(-RATES_WINDOW.as_secs_f64())
                    .include_x(0.0)
                    .allow_zoom(false)
                    .allow_drag(false)
                    .allow_scroll(false)
                    .show(ui, |p| {
                        p.line(Line::new("in", rin));
                        p.line(Line::new("out", rout));
                    });
            });
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
        let lines = numbers::series(&topic.history, SystemTime::now());
        if !lines.is_empty() {
            Plot::new(("values-plot", &topic.name))
                .height(180.0)
                .legend(Legend::default())
                .x_axis_label("seconds ago")
                .allow_zoom(false)
                .allow_drag(false)
                .allow_scroll(false)
                .show(ui, |p| {
                    for (name, points) in lines {
                        p.line(Line::new(name.clone(), points.clone()));
                        p.points(egui_plot::Points::new(name, points).radius(3.0));
                    }
                });
        }
        egui::ScrollArea::vertical()
            .id_salt("values")
            .show(ui, |ui| {
                egui::Grid::new("history-grid")
                    .striped(true)
                    .num_columns(6)
                    .show(ui, |ui| {
                        for h in ["Time", "Payload", "QoS", "Retain", "From", "Properties"] {
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
                            match &item.props {
                                Some(p) => ui.label(format::props(p)),
                                None => ui.weak("—"),
                            };
                            ui.end_row();
                        }
                    });
            });
    }
}
