//! The Trace panel: every packet in and out of every connection, as a sequence diagram or a
//! table; filters by client, topic and packet type; pause; export as pcap for Wireshark.
//!
//! The broker traces only while this panel is shown (`Trace::watch`); the panel asks for what
//! is new at most ten times a second and keeps the newest [`KEEP`] events.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_extras::{Column, TableBuilder};
use tokio::sync::oneshot;

use crate::broker::reason::Reason;
use crate::broker::trace::{Direction, Event, Summary, Trace, What};

use super::file_dialog::{Answer, Ask, FileDialog, Purpose};
use super::sequence_diagram;

/// Events the panel keeps (as many as the broker's ring).
pub const KEEP: usize = crate::broker::trace::RING;
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Diagram,
    Table,
}

/// Which packet types are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub connect: bool,
    pub publish: bool,
    pub subscribe: bool,
    pub ping: bool,
    pub close: bool,
}

impl Default for Kinds {
    fn default() -> Self {
        Kinds {
            connect: true,
            publish: true,
            subscribe: true,
            ping: true,
            close: true,
        }
    }
}

impl Kinds {
    fn shows(&self, what: &What) -> bool {
        match what {
            What::Closed(_) => self.close,
            What::Packet(s) => match s {
                Summary::Connect { .. }
                | Summary::ConnAck { .. }
                | Summary::Disconnect(_)
                | Summary::Auth(_) => self.connect,
                Summary::Publish { .. }
                | Summary::AckWith { .. }
                | Summary::PubAck(_)
                | Summary::PubRec(_)
                | Summary::PubRel(_)
                | Summary::PubComp(_) => self.publish,
                Summary::Subscribe { .. }
                | Summary::SubAck { .. }
                | Summary::Unsubscribe { .. }
                | Summary::UnsubAck(..) => self.subscribe,
                Summary::PingReq | Summary::PingResp => self.ping,
            },
        }
    }
}

pub struct TracePanel {
    events: VecDeque<Arc<Event>>,
    last_seq: u64,
    /// Events the broker's ring let go of before the panel fetched them (while paused, say).
    missed: u64,
    pending: Option<oneshot::Receiver<Vec<Arc<Event>>>>,
    last_poll: Option<Instant>,
    watching: Option<Trace>,
    pub paused: bool,
    pub view: View,
    pub client_filter: String,
    pub topic_filter: String,
    pub kinds: Kinds,
    export_path: String,
    dialog: FileDialog,
    /// What the last export did.
    notice: Option<Result<String, String>>,
    exporting: Option<std::sync::mpsc::Receiver<Result<String, String>>>,
}

impl Default for TracePanel {
    fn default() -> Self {
        TracePanel {
            events: VecDeque::new(),
            last_seq: 0,
            missed: 0,
            pending: None,
            last_poll: None,
            watching: None,
            paused: false,
            view: View::Diagram,
            client_filter: String::new(),
            topic_filter: String::new(),
            kinds: Kinds::default(),
            export_path: String::new(),
            dialog: FileDialog::default(),
            notice: None,
            exporting: None,
        }
    }
}

impl TracePanel {
    /// Turns the broker's trace on while the panel is shown, and off when it is not.
    pub fn set_visible(&mut self, trace: Option<&Trace>, visible: bool) {
        match (&self.watching, visible.then_some(trace).flatten()) {
            (None, Some(t)) => {
                t.watch(true);
                self.watching = Some(t.clone());
            }
            (Some(_), None) => {
                if let Some(t) = self.watching.take() {
                    t.watch(false);
                }
            }
            _ => {}
        }
    }

    /// Fetches what the broker traced since the last call (unless paused).
    pub fn poll(&mut self, ctx: &egui::Context) {
        if self.watching.is_none() {
            return;
        }
        if let Some(rx) = &mut self.pending {
            match rx.try_recv() {
                Ok(new) => {
                    self.pending = None;
                    self.take(new);
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => self.pending = None,
            }
        }
        let due = self.last_poll.is_none_or(|t| t.elapsed() >= POLL);
        if let Some(trace) = &self.watching
            && !self.paused
            && self.pending.is_none()
            && due
        {
            self.pending = trace.try_since(self.last_seq);
            self.last_poll = Some(Instant::now());
        }
        ctx.request_repaint_after(POLL);
    }

    fn take(&mut self, new: Vec<Arc<Event>>) {
        if let Some(first) = new.first()
            && first.seq > self.last_seq + 1
        {
            self.missed += first.seq - self.last_seq - 1;
        }
        for e in new {
            self.last_seq = e.seq;
            if self.events.len() == KEEP {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
    }

    /// The number of the newest event fetched.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// All the events the panel holds, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.events.iter()
    }

    /// The events the filters let through, oldest first. A topic filter keeps the PUBLISHes
    /// on matching topics and the acknowledgements of those same packets.
    pub fn shown(&self) -> Vec<&Arc<Event>> {
        let client = self.client_filter.trim();
        let topic = self.topic_filter.trim();
        let mut acked: HashSet<(u64, u16)> = HashSet::new();
        self.events
            .iter()
            .filter(|e| self.kinds.shows(&e.what))
            .filter(|e| client.is_empty() || e.client_id.contains(client))
            .filter(|e| {
                if topic.is_empty() {
                    return true;
                }
                match &e.what {
                    What::Packet(Summary::Publish {
                        topic: t,
                        qos,
                        pkid,
                        ..
                    }) => {
                        let hit = t.contains(topic);
                        if hit && *qos as u8 > 0 {
                            acked.insert((e.conn, *pkid));
                        }
                        hit
                    }
                    What::Packet(Summary::Subscribe { filters, .. }) => {
                        filters.iter().any(|(f, _)| f.contains(topic))
                    }
                    What::Packet(Summary::Unsubscribe { filters, .. }) => {
                        filters.iter().any(|f| f.contains(topic))
                    }
                    What::Packet(
                        Summary::PubAck(id)
                        | Summary::PubRec(id)
                        | Summary::PubRel(id)
                        | Summary::PubComp(id)
                        | Summary::AckWith { pkid: id, .. },
                    ) => acked.contains(&(e.conn, *id)),
                    _ => false,
                }
            })
            .collect()
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, trace: &Trace) {
        self.settle_export();
        let shown = self.shown();
        let shown_count = shown.len();
        ui.horizontal_wrapped(|ui| {
            ui.selectable_value(&mut self.view, View::Diagram, "Sequence diagram");
            ui.selectable_value(&mut self.view, View::Table, "Table");
            ui.separator();
            let label = if self.paused { "Resume" } else { "Pause" };
            if ui.button(label).clicked() {
                self.paused = !self.paused;
            }
            if ui.button("Clear").clicked() {
                self.events.clear();
                self.missed = 0;
            }
            ui.separator();
            let l = ui.label("Client");
            ui.add(
                egui::TextEdit::singleline(&mut self.client_filter)
                    .hint_text("any")
                    .desired_width(110.0),
            )
            .labelled_by(l.id);
            let l = ui.label("Topic");
            ui.add(
                egui::TextEdit::singleline(&mut self.topic_filter)
                    .hint_text("any")
                    .desired_width(110.0),
            )
            .labelled_by(l.id);
            ui.checkbox(&mut self.kinds.connect, "Connect");
            ui.checkbox(&mut self.kinds.publish, "Publish");
            ui.checkbox(&mut self.kinds.subscribe, "Subscribe");
            ui.checkbox(&mut self.kinds.ping, "Ping");
            ui.checkbox(&mut self.kinds.close, "Closes");
        });
        ui.horizontal_wrapped(|ui| {
            ui.label(format!(
                "{shown_count} of {} packets shown{}",
                self.events.len(),
                if self.paused { " (paused)" } else { "" }
            ));
            let dropped = trace.dropped() + self.missed;
            if dropped > 0 {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("{dropped} not kept (the trace fell behind, or was paused too long)"),
                );
            }
            ui.separator();
            let l = ui.label("Export as pcap");
            ui.add(
                egui::TextEdit::singleline(&mut self.export_path)
                    .hint_text("trace.pcap")
                    .desired_width(180.0),
            )
            .labelled_by(l.id);
            let busy = self.exporting.is_some() || self.dialog.is_open();
            if ui
                .add_enabled(
                    !busy && !self.export_path.trim().is_empty(),
                    egui::Button::new("Export"),
                )
                .on_hover_text(
                    "What is shown, as a file Wireshark opens (payloads cut to 32 bytes)",
                )
                .clicked()
            {
                let path = PathBuf::from(self.export_path.trim());
                self.export(path);
            }
            if ui
                .add_enabled(!busy, egui::Button::new("Export as…"))
                .clicked()
            {
                let ctx = ui.ctx().clone();
                let ask = Ask {
                    title: "Export the trace",
                    filter: ("Packet capture (pcap)", &["pcap"]),
                    file_name: Some("trace.pcap"),
                };
                self.dialog
                    .ask(Purpose::SaveAs, ask, None, move || ctx.request_repaint());
            }
            match &self.notice {
                Some(Ok(m)) => {
                    ui.label(m);
                }
                Some(Err(m)) => {
                    ui.colored_label(ui.visuals().error_fg_color, m);
                }
                None => {}
            }
        });
        match self.dialog.poll() {
            Some(Answer::Chosen(_, path)) => {
                self.export_path = path.display().to_string();
                self.export(path);
            }
            Some(Answer::Unavailable) => {
                self.notice = Some(Err(
                    "No file dialog on this system: type a path and press Export.".into(),
                ))
            }
            Some(Answer::Cancelled) | None => {}
        }
        ui.separator();
        let shown = self.shown();
        if shown.is_empty() {
            ui.label(if self.events.is_empty() {
                "No packets yet: connect a client, or publish something."
            } else {
                "No packet matches the filters."
            });
            return;
        }
        match self.view {
            View::Diagram => sequence_diagram::ui(ui, &shown),
            View::Table => table(ui, &shown),
        }
    }

    /// Writes what is shown as a pcap file, off the window's thread.
    fn export(&mut self, path: PathBuf) {
        let bytes = crate::broker::pcap::to_bytes(self.shown().into_iter().map(|e| &**e));
        let count = self.shown().len();
        let (tx, rx) = std::sync::mpsc::channel();
        self.exporting = Some(rx);
        self.notice = None;
        std::thread::spawn(move || {
            let result = crate::broker::files::write_atomic(&path, &bytes)
                .map(|()| format!("{count} packets written to {}", path.display()))
                .map_err(|e| e.to_string());
            let _ = tx.send(result);
        });
    }

    fn settle_export(&mut self) {
        if let Some(rx) = &self.exporting
            && let Ok(r) = rx.try_recv()
        {
            self.notice = Some(r);
            self.exporting = None;
        }
    }
}

/// The details of a packet, one line.
pub fn describe(what: &What) -> String {
    let s = match what {
        What::Closed(reason) => return format!("connection closed: {reason}"),
        What::Packet(s) => s,
    };
    let qos = |q: crate::broker::QoS| q as u8;
    match s {
        Summary::Connect {
            level,
            clean_session,
            keep_alive,
            will,
            username,
            password,
        } => {
            let mut d = format!(
                "{} clean session={} keepalive={keep_alive}s",
                if *level == 3 { "3.1" } else { "3.1.1" },
                *clean_session as u8
            );
            if let Some((topic, q, retain)) = will {
                d += &format!(
                    " will={topic} q{}{}",
                    qos(*q),
                    if *retain { " retain" } else { "" }
                );
            }
            if let Some(u) = username {
                d += &format!(" user={u}{}", if *password { " +password" } else { "" });
            }
            d
        }
        Summary::ConnAck {
            session_present,
            code,
            v5: true,
        } => format!(
            "session present={} {}",
            *session_present as u8,
            match code {
                0 => "accepted".to_owned(),
                c => Reason(*c).to_string(),
            }
        ),
        Summary::ConnAck {
            session_present,
            code,
            v5: false,
        } => format!(
            "session present={} {}",
            *session_present as u8,
            match code {
                0 => "accepted".to_owned(),
                1 => "0x01 unacceptable protocol version".to_owned(),
                2 => "0x02 identifier rejected".to_owned(),
                3 => "0x03 server unavailable".to_owned(),
                4 => "0x04 bad user name or password".to_owned(),
                5 => "0x05 not authorized".to_owned(),
                c => format!("0x{c:02x}"),
            }
        ),
        Summary::Publish {
            topic,
            qos: q,
            pkid,
            dup,
            retain,
            size,
            payload,
        } => {
            let mut d = format!("{topic} q{}", qos(*q));
            if *q as u8 > 0 {
                d += &format!(" id={pkid}");
            }
            if *dup {
                d += " DUP";
            }
            if *retain {
                d += " retain";
            }
            d += &format!(" {size} B");
            if !payload.is_empty() {
                let mut p = super::format::payload(payload, 24);
                if *size > payload.len() && !p.ends_with('…') {
                    p.push('…');
                }
                d += &format!(" \"{p}\"");
            }
            d
        }
        Summary::PubAck(id) | Summary::PubRec(id) | Summary::PubRel(id) | Summary::PubComp(id) => {
            format!("id={id}")
        }
        Summary::UnsubAck(id, codes) => {
            let mut d = format!("id={id}");
            for c in codes {
                d += &format!(" {c}");
            }
            d
        }
        Summary::Subscribe { pkid, filters } => {
            let f: Vec<String> = filters
                .iter()
                .map(|(f, q)| format!("{f} q{}", qos(*q)))
                .collect();
            format!("id={pkid} {}", f.join(", "))
        }
        Summary::SubAck { pkid, codes } => {
            let c: Vec<String> = codes
                .iter()
                .map(|c| match c {
                    0x80 => "0x80 refused".to_owned(),
                    r @ 0x81.. => Reason(*r).to_string(),
                    q => format!("granted q{q}"),
                })
                .collect();
            format!("id={pkid} {}", c.join(", "))
        }
        Summary::Unsubscribe { pkid, filters } => format!("id={pkid} {}", filters.join(", ")),
        Summary::AckWith { pkid, reason, .. } => format!("id={pkid} {reason}"),
        Summary::Disconnect(r) | Summary::Auth(r) if r.0 != 0 => r.to_string(),
        Summary::PingReq | Summary::PingResp | Summary::Disconnect(_) | Summary::Auth(_) => {
            String::new()
        }
    }
}

/// The event's packet type, or "CLOSE".
pub fn kind(what: &What) -> &'static str {
    match what {
        What::Packet(s) => s.kind(),
        What::Closed(_) => "CLOSE",
    }
}

/// `HH:MM:SS.mmm`, local time.
pub fn time(e: &Event) -> String {
    let local: chrono::DateTime<chrono::Local> = e.at.into();
    local.format("%H:%M:%S%.3f").to_string()
}

pub fn client_name(e: &Event) -> &str {
    if e.client_id.is_empty() {
        "(before CONNECT)"
    } else {
        &e.client_id
    }
}

fn table(ui: &mut egui::Ui, shown: &[&Arc<Event>]) {
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    TableBuilder::new(ui)
        .id_salt("trace-table")
        .striped(true)
        .stick_to_bottom(true)
        .column(Column::auto().at_least(90.0))
        .column(Column::auto().at_least(120.0).clip(true))
        .column(Column::auto().at_least(70.0))
        .column(Column::auto().at_least(100.0))
        .column(Column::remainder().clip(true))
        .header(row_height, |mut h| {
            for t in ["Time", "Client", "Direction", "Packet", "Details"] {
                h.col(|ui| {
                    ui.strong(t);
                });
            }
        })
        .body(|body| {
            body.rows(row_height, shown.len(), |mut row| {
                let e = shown[row.index()];
                row.col(|ui| {
                    ui.monospace(time(e));
                });
                row.col(|ui| {
                    ui.label(client_name(e));
                });
                row.col(|ui| {
                    ui.label(match (e.direction, &e.what) {
                        (_, What::Closed(_)) => "",
                        (Direction::In, _) => "to broker",
                        (Direction::Out, _) => "to client",
                    });
                });
                row.col(|ui| {
                    ui.strong(kind(&e.what));
                });
                row.col(|ui| {
                    ui.label(describe(&e.what));
                });
            });
        });
}
