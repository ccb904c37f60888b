//! Commands that answer: sending them, waiting for the answer without blocking a frame, and
//! showing it.

use tokio::sync::oneshot;

use crate::broker::{BrokerHandle, Command};

/// A one-line message for the user, good or bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
}

impl Notice {
    pub fn ok(text: impl Into<String>) -> Notice {
        Notice {
            text: text.into(),
            error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Notice {
        Notice {
            text: text.into(),
            error: true,
        }
    }

    pub fn show(&self, ui: &mut egui::Ui) {
        let color = if self.error {
            ui.visuals().error_fg_color
        } else {
            ui.visuals().text_color()
        };
        ui.colored_label(color, &self.text);
    }
}

/// Shows a notice if there is one.
pub fn show(ui: &mut egui::Ui, notice: &Option<Notice>) {
    if let Some(n) = notice {
        n.show(ui);
    }
}

type Reply = oneshot::Sender<Result<(), String>>;

/// An answer the broker still owes.
pub struct Pending {
    rx: oneshot::Receiver<Result<(), String>>,
    done: String,
}

impl Pending {
    /// Sends a command built around a reply channel; `done` is what to say when it succeeds.
    pub fn ask(
        broker: &BrokerHandle,
        make: impl FnOnce(Reply) -> Command,
        done: impl Into<String>,
    ) -> Result<Pending, Notice> {
        let (tx, rx) = oneshot::channel();
        if broker.try_send(make(tx)) {
            Ok(Pending {
                rx,
                done: done.into(),
            })
        } else {
            Err(Notice::error("the broker is busy or stopped; try again"))
        }
    }

    /// The answer, once it is there.
    pub fn poll(&mut self) -> Option<Notice> {
        match self.rx.try_recv() {
            Ok(Ok(())) => Some(Notice::ok(std::mem::take(&mut self.done))),
            Ok(Err(e)) => Some(Notice::error(e)),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Notice::error("the broker stopped")),
        }
    }
}

/// Polls an optional pending answer into a notice.
pub fn settle(pending: &mut Option<Pending>, notice: &mut Option<Notice>) {
    if let Some(p) = pending
        && let Some(n) = p.poll()
    {
        *notice = Some(n);
        *pending = None;
    }
}

/// A button whose accessible name says what it acts on ("Delete lab/a"), while it shows a
/// short text: screen readers and UI tests can tell the rows apart.
pub fn row_button(ui: &mut egui::Ui, text: &str, accessible: &str) -> egui::Response {
    let response = ui.button(text);
    let enabled = ui.is_enabled();
    let label = accessible.to_owned();
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, enabled, &label));
    response
}
