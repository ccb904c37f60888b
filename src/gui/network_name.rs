//! The name the broker is advertised under on the local network (mDNS/DNS-SD): shown in the
//! status bar, renamed in a small window. The advertiser checks and applies the name; this only
//! asks.

use crate::broker::mdns::Advertiser;

#[derive(Default)]
pub struct NetworkName {
    /// The name being typed, while the rename window is open.
    editing: Option<String>,
    /// Why the last rename was refused.
    error: Option<String>,
    /// The rename window has just opened: its field takes the keyboard, with the name selected.
    opened: bool,
}

impl NetworkName {
    /// Draws the name (and the rename window when open); the new name when one was accepted.
    pub fn ui(&mut self, ui: &mut egui::Ui, advertiser: &Advertiser) -> Option<String> {
        let now = advertiser.advertised();
        let services = now
            .services
            .iter()
            .map(|(ty, port)| format!("{ty} on port {port}"))
            .collect::<Vec<_>>()
            .join(", ");
        ui.label("On the network as");
        let link = ui.link(format!("“{}”", now.name)).on_hover_text(format!(
            "Phones and ESP32s (ESPmDNS) find the broker under this name, without an address \
             to type: {services}. Click to rename."
        ));
        if link.clicked() {
            self.editing = Some(now.name.clone());
            self.error = None;
            self.opened = true;
        }
        if let Some(e) = &now.error {
            ui.colored_label(ui.visuals().warn_fg_color, "(not advertised)")
                .on_hover_text(e);
        }
        let mut text = self.editing.take()?;
        let mut open = true;
        let mut done = false;
        let mut renamed = None;
        egui::Window::new("Name on the network")
            .collapsible(false)
            .resizable(false)
            .open(&mut open)
            .show(ui.ctx(), |ui| {
                ui.label("Phones and ESP32s on this network list the broker under this name.");
                let field = ui
                    .horizontal(|ui| {
                        let label = ui.label("Name");
                        let mut field = egui::TextEdit::singleline(&mut text)
                            .hint_text("mqtt-lab in room 2.14")
                            .desired_width(260.0)
                            .show(ui);
                        if std::mem::take(&mut self.opened) {
                            // Typing replaces the old name.
                            let all = egui::text::CCursorRange::two(
                                egui::text::CCursor::new(0),
                                egui::text::CCursor::new(text.chars().count()),
                            );
                            field.state.cursor.set_char_range(Some(all));
                            field.state.store(ui.ctx(), field.response.id);
                            field.response.request_focus();
                        }
                        field.response.response.labelled_by(label.id)
                    })
                    .inner;
                let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if let Some(e) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                ui.horizontal(|ui| {
                    if ui.button("Rename").clicked() || enter {
                        let name = text.trim().to_owned();
                        match advertiser.rename(&name) {
                            Ok(()) => {
                                renamed = Some(name);
                                done = true;
                            }
                            Err(e) => self.error = Some(e),
                        }
                    }
                    if ui.button("Cancel").clicked() {
                        done = true;
                    }
                });
            });
        if open && !done {
            self.editing = Some(text);
        }
        renamed
    }
}
