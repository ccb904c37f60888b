//! The trace drawn as a sequence diagram: the broker's lane on the left, one lane per client,
//! one arrow per packet, time going down. A QoS 2 exchange reads as its four steps; a message
//! fanned out reads as one arrow in and one out per subscriber.

use std::collections::HashMap;
use std::sync::Arc;

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, Vec2, pos2, vec2};

use crate::broker::reason::Reason;
use crate::broker::trace::{Direction, Event, Summary, What};

use super::trace_panel::{client_name, describe, kind, time};

const ROW: f32 = 30.0;
const TIME_W: f32 = 96.0;
const LANE_W: f32 = 210.0;
const HEADER: f32 = 22.0;

/// The lanes: the broker's, then each client's in the order it first appears.
pub fn lanes<'a>(shown: &[&'a Arc<Event>]) -> Vec<&'a str> {
    let mut lanes: Vec<&str> = Vec::new();
    for e in shown {
        let name = client_name(e);
        if !lanes.contains(&name) {
            lanes.push(name);
        }
    }
    lanes
}

pub fn ui(ui: &mut egui::Ui, shown: &[&Arc<Event>]) {
    let lanes = lanes(shown);
    let index: HashMap<&str, usize> = lanes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let broker_x = TIME_W + LANE_W / 2.0;
    let lane_x = |i: usize| broker_x + LANE_W * (i as f32 + 1.0);
    // Room on the right for the last lane's close reason.
    let width = broker_x + LANE_W * (lanes.len() as f32 + 0.5) + 200.0;
    let text = ui.visuals().text_color();
    let faint = ui.visuals().weak_text_color();
    egui::ScrollArea::horizontal()
        .id_salt("diagram-h")
        .show(ui, |ui| {
            // The lanes' names stay on top while the packets scroll under them.
            let (head, _) = ui.allocate_exact_size(vec2(width, HEADER), Sense::hover());
            let p = ui.painter_at(head);
            let title = |x: f32, name: &str, strong: bool| {
                let font = FontId::proportional(if strong { 14.0 } else { 13.0 });
                p.text(
                    pos2(head.left() + x, head.center().y),
                    Align2::CENTER_CENTER,
                    name,
                    font,
                    text,
                );
            };
            title(broker_x, "broker", true);
            for (i, name) in lanes.iter().enumerate() {
                title(lane_x(i), &clip(name, 26), false);
            }
            egui::ScrollArea::vertical()
                .id_salt("diagram-v")
                .stick_to_bottom(true)
                .auto_shrink([false, false])
                .show_rows(ui, ROW, shown.len(), |ui, rows| {
                    let height = ROW * rows.len() as f32;
                    let (rect, _) = ui.allocate_exact_size(vec2(width, height), Sense::hover());
                    let p = ui.painter_at(rect);
                    let x = |lx: f32| rect.left() + lx;
                    let lane_stroke = Stroke::new(1.0, faint.gamma_multiply(0.5));
                    p.vline(x(broker_x), rect.y_range(), Stroke::new(2.0, faint));
                    for i in 0..lanes.len() {
                        p.vline(x(lane_x(i)), rect.y_range(), lane_stroke);
                    }
                    for (row, i) in rows.enumerate() {
                        let e = shown[i];
                        let top = rect.top() + ROW * row as f32;
                        let row_rect =
                            Rect::from_min_size(pos2(rect.left(), top), vec2(width, ROW));
                        let y = top + ROW * 0.72;
                        p.text(
                            pos2(rect.left() + 4.0, y),
                            Align2::LEFT_CENTER,
                            time(e),
                            FontId::monospace(11.0),
                            faint,
                        );
                        let client = x(lane_x(index[client_name(e)]));
                        let broker = x(broker_x);
                        let color = color_of(&e.what, ui.visuals().dark_mode);
                        match &e.what {
                            What::Closed(reason) => {
                                cross(&p, pos2(client, y), color);
                                p.text(
                                    pos2(client + 10.0, y),
                                    Align2::LEFT_CENTER,
                                    clip(&format!("closed: {reason}"), 40),
                                    FontId::proportional(12.0),
                                    color,
                                );
                            }
                            What::Packet(s) => {
                                let (from, to) = match e.direction {
                                    Direction::In => (client, broker),
                                    Direction::Out => (broker, client),
                                };
                                arrow(&p, pos2(from, y), pos2(to, y), color);
                                let label = format!("{} {}", s.kind(), short(s));
                                let max = ((to - from).abs() / 6.5) as usize;
                                p.text(
                                    pos2((from + to) / 2.0, y - 3.0),
                                    Align2::CENTER_BOTTOM,
                                    clip(&label, max.max(8)),
                                    FontId::proportional(12.0),
                                    color,
                                );
                            }
                        }
                        ui.interact(
                            row_rect,
                            ui.scope_id().with(("trace-row", e.seq)),
                            Sense::hover(),
                        )
                        .on_hover_text(format!(
                            "{} {} {}\n{}",
                            time(e),
                            client_name(e),
                            kind(&e.what),
                            describe(&e.what)
                        ));
                    }
                });
        });
}

/// What fits on an arrow: the topic and QoS of a PUBLISH, the packet id of an ack, the codes of
/// a SUBACK, the return code of a CONNACK.
fn short(s: &Summary) -> String {
    match s {
        Summary::Publish {
            topic,
            qos,
            pkid,
            dup,
            retain,
            ..
        } => {
            let mut t = format!("{topic} q{}", *qos as u8);
            if *qos as u8 > 0 {
                t += &format!(" id={pkid}");
            }
            if *dup {
                t += " DUP";
            }
            if *retain {
                t += " R";
            }
            t
        }
        Summary::ConnAck {
            session_present,
            code,
            v5,
        } => match code {
            0 => format!("ok sp={}", *session_present as u8),
            c if *v5 => format!("refused {}", Reason(*c)),
            c => format!("refused 0x{c:02x}"),
        },
        Summary::AckWith { pkid, reason, .. } => format!("id={pkid} {reason}"),
        Summary::Disconnect(r) if r.0 != 0 => r.to_string(),
        Summary::Connect {
            clean_session,
            will,
            ..
        } => format!(
            "clean={}{}",
            *clean_session as u8,
            if will.is_some() { " +will" } else { "" }
        ),
        Summary::Subscribe { filters, .. } => filters
            .iter()
            .map(|(f, q)| format!("{f} q{}", *q as u8))
            .collect::<Vec<_>>()
            .join(", "),
        Summary::SubAck { codes, .. } => codes
            .iter()
            .map(|c| {
                if *c == 0x80 {
                    "0x80 refused".to_owned()
                } else if *c > 0x80 {
                    Reason(*c).to_string()
                } else {
                    format!("q{c}")
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        Summary::Unsubscribe { filters, .. } => filters.join(", "),
        other => other
            .packet_id()
            .map(|id| format!("id={id}"))
            .unwrap_or_default(),
    }
}

fn color_of(what: &What, dark: bool) -> Color32 {
    let (d, l) = match what {
        What::Closed(_) => (
            Color32::from_rgb(255, 110, 110),
            Color32::from_rgb(190, 30, 30),
        ),
        What::Packet(s) => match s {
            Summary::Publish { .. } => (
                Color32::from_rgb(110, 170, 255),
                Color32::from_rgb(20, 80, 190),
            ),
            Summary::AckWith { .. } => (
                Color32::from_rgb(255, 140, 90),
                Color32::from_rgb(190, 70, 0),
            ),
            Summary::PubAck(_) | Summary::PubRec(_) | Summary::PubRel(_) | Summary::PubComp(_) => (
                Color32::from_rgb(120, 210, 140),
                Color32::from_rgb(20, 120, 50),
            ),
            Summary::Connect { .. }
            | Summary::ConnAck { .. }
            | Summary::Disconnect(_)
            | Summary::Auth(_) => (
                Color32::from_rgb(240, 200, 90),
                Color32::from_rgb(150, 100, 0),
            ),
            Summary::SubAck { codes, .. } if codes.iter().any(|c| *c >= 0x80) => (
                Color32::from_rgb(255, 140, 90),
                Color32::from_rgb(190, 70, 0),
            ),
            Summary::Subscribe { .. }
            | Summary::SubAck { .. }
            | Summary::Unsubscribe { .. }
            | Summary::UnsubAck(..) => (
                Color32::from_rgb(200, 150, 255),
                Color32::from_rgb(110, 40, 170),
            ),
            Summary::PingReq | Summary::PingResp => (Color32::GRAY, Color32::DARK_GRAY),
        },
    };
    if dark { d } else { l }
}

/// A horizontal arrow with a head of a fixed size (egui's grows with the arrow's length).
fn arrow(p: &egui::Painter, from: Pos2, to: Pos2, color: Color32) {
    let s = Stroke::new(1.6, color);
    p.line_segment([from, to], s);
    let back = if to.x > from.x { -9.0 } else { 9.0 };
    p.line_segment([to, to + vec2(back, -4.5)], s);
    p.line_segment([to, to + vec2(back, 4.5)], s);
}

fn cross(p: &egui::Painter, at: Pos2, color: Color32) {
    let s = Stroke::new(2.0, color);
    let r = Vec2::splat(5.0);
    p.line_segment([at - r, at + r], s);
    p.line_segment([at + vec2(-r.x, r.y), at + vec2(r.x, -r.y)], s);
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
