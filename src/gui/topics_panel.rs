//! The Topics panel: the mode, the topic list (names and patterns) and the topics that exist
//! with their subscribers and retained values; add, delete, open and save as; and the
//! subscriptions that were refused.

use std::path::PathBuf;

use crate::broker::config::TopicsMode;
use crate::broker::events::EventKind;
use crate::broker::{BrokerHandle, Command, topics};

use egui_extras::{Column, TableBuilder};

use super::file_dialog::{Ask, FileChooser, FileKind, Purpose};
use super::format;
use super::numbers;
use super::reply::{self, Notice, Pending};
use super::runner::Live;

/// State of the Topics panel.
#[derive(Default)]
pub struct TopicsPanel {
    new_topic: String,
    notice: Option<Notice>,
    pending: Option<Pending>,
    /// A deletion the broker has not answered yet.
    deleting: Option<Pending>,
    file: FileChooser,
    /// A file chosen for "Open" or "Save as" whose result is still owed by the broker; it is
    /// remembered once the broker has accepted it.
    chosen: Option<PathBuf>,
    /// Set when a topic list file was opened or saved, for the window to remember.
    pub remembered: Option<PathBuf>,
}

impl TopicsPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live, broker: &BrokerHandle) {
        if let Some(p) = &mut self.pending
            && let Some(n) = p.poll()
        {
            if !n.error {
                self.remembered = self.chosen.take();
            }
            self.chosen = None;
            self.notice = Some(n);
            self.pending = None;
        }
        reply::settle(&mut self.deleting, &mut self.notice);
        self.poll_dialog(live, broker);
        let snap = &live.snapshot;

        ui.horizontal(|ui| {
            ui.label("Topic list file:");
            let path = snap
                .topics_path
                .as_deref()
                .map_or("(none: changes are not saved)".into(), |p| {
                    p.display().to_string()
                });
            ui.monospace(path);
        });
        ui.horizontal(|ui| {
            ui.label("Topics that exist:");
            let mode = snap.topics_mode;
            for (m, text, hover) in [
                (
                    TopicsMode::Strict,
                    "Strict: only the list",
                    "Only the topics on the list, and those its patterns (devices/+/temperature) \
                     match, exist: other subscriptions are refused",
                ),
                (
                    TopicsMode::Open,
                    "Open: any topic clients use",
                    "A topic exists when a client subscribes to it, retains a value on it or \
                     publishes to it, and goes when nobody uses it; the saved list is unchanged",
                ),
            ] {
                if ui.radio(mode == m, text).on_hover_text(hover).clicked()
                    && mode != m
                    && !broker.try_send(Command::SetTopicsMode { mode: m })
                {
                    self.notice = Some(Notice::error("The broker is busy; try again"));
                }
            }
        });
        ui.horizontal(|ui| {
            let label = ui.label("New topic or pattern");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut self.new_topic)
                        .hint_text("e.g. lab/door or devices/+/temperature")
                        .desired_width(260.0),
                )
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Add topic").clicked() || enter {
                self.add(broker);
            }
            ui.separator();
            self.file
                .dialog_buttons(ui, snap.topics_path.as_deref(), topic_list_file());
        });
        ui.horizontal(|ui| {
            let hint = "or type the path of a topic list";
            if let Some(chosen) = self.file.path_row(ui, hint, 360.0) {
                self.act_on(chosen, live, broker);
            }
        });
        self.file.unavailable_notice(
            ui,
            "No file dialog is available on this system: type a file path above instead.",
        );
        reply::show(ui, &self.notice);
        ui.separator();

        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 8.0;
        let table_height = ui.available_height() * 0.6;
        TableBuilder::new(ui)
            .id_salt("topics")
            .striped(true)
            .max_scroll_height(table_height)
            .column(Column::auto().at_least(160.0))
            .column(Column::auto())
            .column(Column::auto().at_least(120.0).clip(true))
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::exact(90.0))
            .column(Column::remainder())
            .header(row_height, |mut header| {
                for h in [
                    "Topic",
                    "Subscribers",
                    "Retained value",
                    "Messages",
                    "Last message",
                    "Recent values",
                    "",
                ] {
                    header.col(|ui| {
                        ui.strong(h);
                    });
                }
            })
            .body(|body| {
                let patterns = snap.patterns.len();
                body.rows(row_height, patterns + snap.topics.len(), |mut row| {
                    if row.index() < patterns {
                        let p = &snap.patterns[row.index()];
                        row.col(|ui| {
                            // One line: the table's rows do not grow with wrapped text.
                            ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                            ui.horizontal(|ui| {
                                ui.monospace(&p.pattern);
                                ui.weak("pattern");
                            });
                        });
                        row.col(|ui| {
                            ui.label(format!("matches {}", p.topics))
                                .on_hover_text("Topics that exist now and match it");
                        });
                        for _ in 0..4 {
                            row.col(|_| {});
                        }
                        row.col(|ui| {
                            self.delete_button(
                                ui,
                                &p.pattern,
                                broker,
                                "the topics only it let appear go",
                            );
                        });
                        return;
                    }
                    let t = &snap.topics[row.index() - patterns];
                    row.col(|ui| {
                        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                        ui.horizontal(|ui| {
                            ui.monospace(&t.name);
                            if !t.listed {
                                ui.weak("not on the list").on_hover_text(
                                    "A pattern or open mode let it appear; it goes when nobody uses it",
                                );
                            }
                        });
                    });
                    row.col(|ui| {
                        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                        // Shared subscriptions as groups: each message goes to one member.
                        let groups: Vec<String> = t
                            .shared
                            .iter()
                            .map(|(filter, members)| {
                                let group = filter.split('/').nth(1).unwrap_or_default();
                                format!("group {group} ×{members}")
                            })
                            .collect();
                        if groups.is_empty() {
                            ui.label(t.subscribers.to_string());
                        } else {
                            ui.label(format!("{} + {}", t.subscribers, groups.join(", ")))
                                .on_hover_text(
                                    t.shared
                                        .iter()
                                        .map(|(f, n)| {
                                            format!("{f}: {n} members, one gets each message")
                                        })
                                        .collect::<Vec<_>>()
                                        .join("\n"),
                                );
                        }
                    });
                    row.col(|ui| {
                        ui.label(
                            t.retained
                                .as_ref()
                                .map_or("—".into(), |r| format::payload(r, 40)),
                        );
                    });
                    row.col(|ui| {
                        ui.label(t.messages.to_string());
                    });
                    row.col(|ui| {
                        ui.label(t.last_publish.map_or("—".into(), format::clock));
                    });
                    row.col(|ui| {
                        sparkline(ui, &t.history);
                    });
                    row.col(|ui| {
                        if t.listed {
                            self.delete_button(
                                ui,
                                &t.name,
                                broker,
                                "its retained message and history are gone",
                            );
                        } else if reply::row_button(
                            ui,
                            "Add to list",
                            &format!("Add {} to the list", t.name),
                        )
                        .clicked()
                        {
                            self.new_topic = t.name.clone();
                            self.add(broker);
                        }
                    });
                });
            });
        if snap.topics.is_empty() && snap.patterns.is_empty() {
            ui.label(match snap.topics_mode {
                TopicsMode::Strict => {
                    "No topics: every subscription will be refused. Add one above."
                }
                TopicsMode::Open => "No topics yet: they appear as clients use them.",
            });
        }

        ui.separator();
        ui.strong("Refused subscriptions and publishes");
        egui::ScrollArea::vertical()
            .id_salt("refused")
            .show(ui, |ui| {
                let refused: Vec<_> = snap
                    .events
                    .iter()
                    .rev()
                    .filter(|e| {
                        matches!(
                            e.kind,
                            EventKind::SubscriptionRefused | EventKind::PublishRefused
                        )
                    })
                    .take(100)
                    .collect();
                if refused.is_empty() {
                    ui.label("None yet.");
                }
                egui::Grid::new("refused-grid")
                    .striped(true)
                    .show(ui, |ui| {
                        for e in refused {
                            ui.label(format::clock(e.time));
                            ui.monospace(&e.who);
                            ui.label(&e.text);
                            ui.end_row();
                        }
                    });
            });
    }

    fn delete_button(
        &mut self,
        ui: &mut egui::Ui,
        entry: &str,
        broker: &BrokerHandle,
        what_goes: &str,
    ) {
        if reply::row_button(ui, "Delete", &format!("Delete {entry}")).clicked() {
            let topic = entry.to_owned();
            match Pending::ask(
                broker,
                |reply| Command::RemoveTopic {
                    topic: topic.clone(),
                    reply: Some(reply),
                },
                format!("Deleted {topic}: {what_goes}"),
            ) {
                Ok(p) => self.deleting = Some(p),
                Err(n) => self.notice = Some(n),
            }
        }
    }

    fn add(&mut self, broker: &BrokerHandle) {
        let topic = self.new_topic.trim().to_owned();
        if let Err(e) = topics::check_listable(&topic) {
            self.notice = Some(Notice::error(format!("{topic:?} {e}")));
            return;
        }
        let t = topic.clone();
        match Pending::ask(
            broker,
            move |reply| Command::AddTopic {
                topic: t,
                reply: Some(reply),
            },
            format!("Added {topic}"),
        ) {
            Ok(p) => {
                self.pending = Some(p);
                self.new_topic.clear();
            }
            Err(n) => self.notice = Some(n),
        }
    }

    /// Has the broker load a topic list file (the reading is not done in a frame); a file that
    /// does not parse changes nothing and the answer says where.
    fn open_file(&mut self, path: PathBuf, broker: &BrokerHandle) {
        let p = path.clone();
        let ask = move |reply| Command::OpenTopicsFile {
            path: p,
            reply: Some(reply),
        };
        match Pending::ask(broker, ask, format!("Opened {}", path.display())) {
            Ok(pending) => {
                self.pending = Some(pending);
                self.chosen = Some(path);
            }
            Err(n) => self.notice = Some(n),
        }
    }

    /// Writes the current list to `path`, which becomes the file in use.
    fn save_as(&mut self, path: PathBuf, live: &Live, broker: &BrokerHandle) {
        // The list: its names and patterns, not the topics that appeared.
        let snap = &live.snapshot;
        let list = snap
            .topics
            .iter()
            .filter(|t| t.listed)
            .map(|t| t.name.clone())
            .chain(snap.patterns.iter().map(|p| p.pattern.clone()))
            .collect();
        let done = format!("Saved to {}", path.display());
        self.use_file(list, path, done, broker);
    }

    /// Makes `list` the topic list and `path` its file (the broker writes it); the file is
    /// remembered once the broker has accepted both.
    fn use_file(&mut self, list: Vec<String>, path: PathBuf, done: String, broker: &BrokerHandle) {
        let p = path.clone();
        let ask = move |reply| Command::ReplaceTopics {
            topics: list,
            path: Some(p),
            reply: Some(reply),
        };
        match Pending::ask(broker, ask, done) {
            Ok(pending) => {
                self.pending = Some(pending);
                self.chosen = Some(path);
            }
            Err(n) => self.notice = Some(n),
        }
    }

    fn poll_dialog(&mut self, live: &Live, broker: &BrokerHandle) {
        if let Some(chosen) = self.file.poll() {
            self.act_on(chosen, live, broker);
        }
    }

    /// A file chosen, in the dialog or by its path.
    fn act_on(&mut self, (purpose, path): (Purpose, PathBuf), live: &Live, broker: &BrokerHandle) {
        match purpose {
            Purpose::Open => self.open_file(path, broker),
            Purpose::SaveAs => self.save_as(path, live, broker),
        }
    }
}

/// The topic list in the platform's file dialogs.
fn topic_list_file() -> FileKind {
    FileKind {
        open: Ask {
            title: "Open a topic list",
            filter: ("Topic list (RON)", &["ron"]),
            file_name: None,
        },
        save: Ask {
            title: "Save the topic list as",
            filter: ("Topic list (RON)", &["ron"]),
            file_name: Some("topics.ron"),
        },
    }
}

/// The topic's last numeric values as a small line (the first series when a JSON payload has
/// several), with the newest value on hover.
fn sparkline(ui: &mut egui::Ui, history: &[crate::broker::history::HistoryItem]) {
    let lines = numbers::series(history, std::time::SystemTime::now());
    let Some((name, points)) = lines.first() else {
        return;
    };
    let size = egui::vec2(84.0, ui.available_height() - 6.0);
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::hover());
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p[1]), hi.max(p[1]))
    });
    let span = (hi - lo).max(f64::EPSILON);
    let n = points.len().max(2) - 1;
    let line: Vec<egui::Pos2> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = rect.left() + rect.width() * i as f32 / n as f32;
            let y = rect.bottom() - rect.height() * ((p[1] - lo) / span) as f32;
            egui::pos2(x, y)
        })
        .collect();
    let color = ui.visuals().hyperlink_color;
    ui.painter()
        .add(egui::Shape::line(line, egui::Stroke::new(1.5, color)));
    if let Some(last) = points.last() {
        response.on_hover_text(format!("{name}: {} (range {lo} to {hi})", last[1]));
    }
}
