//! The Scenarios panel: the guided scenarios, one click each; the running one's steps as they
//! are said, pause / next step / stop, and its packets as a sequence diagram.

use std::time::Duration;

use crate::broker::BrokerHandle;

use super::lab_panel::LabPanel;
use super::runner::Live;
use super::scenarios::{Run, SCENARIOS};
use super::sequence_diagram;
use super::trace_panel::TracePanel;

pub struct ScenariosPanel {
    pub run: Option<Run>,
    /// Pauses last this many times their length (1: a class's pace; tests run faster).
    pub pace: f32,
}

impl Default for ScenariosPanel {
    fn default() -> Self {
        ScenariosPanel {
            run: None,
            pace: 1.0,
        }
    }
}

impl ScenariosPanel {
    /// Whether a scenario is playing (the trace is kept on for it).
    pub fn is_running(&self) -> bool {
        self.run.as_ref().is_some_and(|r| !r.done)
    }

    /// Plays on, whichever panel is shown.
    pub fn tick(&mut self, ctx: &egui::Context, lab: &mut LabPanel, broker: &BrokerHandle) {
        if let Some(run) = &mut self.run
            && !run.done
        {
            run.tick(lab, broker, false);
            ctx.request_repaint_after(Duration::from_millis(100));
        }
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        live: &Live,
        broker: &BrokerHandle,
        lab: &mut LabPanel,
        trace: &TracePanel,
    ) {
        egui::Panel::left("scenario-list")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| {
                ui.strong("Guided scenarios");
                ui.label("Each makes its own lab clients and runs at a pace a class can follow.");
                egui::ScrollArea::vertical().show(ui, |ui| {
                    for s in SCENARIOS {
                        ui.separator();
                        ui.horizontal(|ui| {
                            ui.strong(s.name);
                        });
                        ui.label(s.about);
                        if super::reply::row_button(ui, "Run", &format!("Run {}", s.name)).clicked()
                        {
                            self.start(s, live, broker, lab, trace);
                        }
                    }
                });
            });
        let Some(run) = &mut self.run else {
            ui.label("Pick a scenario on the left. Its packets are drawn here as they go, and stay in the Trace.");
            return;
        };
        ui.heading(run.scenario.name);
        ui.horizontal_wrapped(|ui| {
            ui.label(format!(
                "step {} of {}",
                run.steps_done(),
                run.steps_total()
            ));
            if !run.done {
                let label = if run.paused { "Resume" } else { "Pause" };
                if ui.button(label).clicked() {
                    if run.paused {
                        run.resume();
                    } else {
                        run.paused = true;
                    }
                }
                if ui
                    .add_enabled(run.paused, egui::Button::new("Next step"))
                    .on_hover_text("Pause first, then go one step at a time")
                    .clicked()
                {
                    run.tick(lab, broker, true);
                }
                if ui.button("Stop").clicked() {
                    run.finish(broker);
                }
            }
            if !run.added_topics().is_empty() && !run.done {
                ui.label(format!(
                    "(added to the topic list while it runs: {})",
                    run.added_topics().join(", ")
                ));
            }
        });
        if let Some(why) = &run.failed {
            ui.colored_label(ui.visuals().error_fg_color, format!("Stopped: {why}"));
        } else if run.done {
            ui.colored_label(
                ui.visuals().hyperlink_color,
                "Done. Its lab clients stay in Lab clients, its packets in the Trace.",
            );
        }
        ui.separator();
        let last = run.said.len();
        for (i, said) in run.said.iter().enumerate() {
            if i + 1 == last {
                ui.strong(*said);
            } else {
                ui.label(*said);
            }
        }
        ui.separator();
        let ids = run.client_ids();
        let first = run.first_seq;
        let shown: Vec<_> = trace
            .events()
            .filter(|e| e.seq > first && ids.iter().any(|id| **id == *e.client_id))
            .collect();
        if shown.is_empty() {
            ui.label("No packets yet.");
        } else {
            sequence_diagram::ui(ui, &shown);
        }
    }

    fn start(
        &mut self,
        scenario: &'static super::scenarios::Scenario,
        live: &Live,
        broker: &BrokerHandle,
        lab: &mut LabPanel,
        trace: &TracePanel,
    ) {
        // The last scenario's clients go: the next one may reuse their client ids. Topics it
        // added that this one needs too stay on the list, now this one's to remove.
        let mut inherited = Vec::new();
        if let Some(old) = &mut self.run {
            inherited = old.finish_keeping(broker, scenario.topics);
            for c in old.clients() {
                lab.remove(c);
            }
        }
        let topics: Vec<String> = live
            .snapshot
            .topics
            .iter()
            .map(|t| t.name.clone())
            .collect();
        self.run = Some(Run::start(
            scenario,
            broker,
            &topics,
            inherited,
            self.pace,
            trace.last_seq(),
        ));
    }
}
