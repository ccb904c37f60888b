//! The platform's file dialog (rfd), run on its own thread so the window never freezes.
//!
//! rfd talks to xdg-desktop-portal; where there is none it returns "nothing chosen" at once.
//! An answer that fast is taken to mean no dialog could be shown, and the window says so (the
//! path field next to the buttons always works).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Faster than any person can cancel a dialog.
const NO_DIALOG: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Open,
    SaveAs,
}

/// What came back from a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Chosen(Purpose, PathBuf),
    Cancelled,
    /// No dialog could be shown on this system.
    Unavailable,
}

/// What a dialog asks for: its title, the files it lists, the name it suggests.
pub struct Ask {
    pub title: &'static str,
    pub filter: (&'static str, &'static [&'static str]),
    pub file_name: Option<&'static str>,
}

/// At most one dialog open at a time.
#[derive(Default)]
pub struct FileDialog {
    pending: Option<mpsc::Receiver<Answer>>,
}

impl FileDialog {
    pub fn is_open(&self) -> bool {
        self.pending.is_some()
    }

    /// Opens a dialog for any kind of file.
    pub fn ask(
        &mut self,
        purpose: Purpose,
        what: Ask,
        start_dir: Option<PathBuf>,
        wake: impl Fn() + Send + 'static,
    ) {
        if self.pending.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        self.pending = Some(rx);
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut dialog = rfd::FileDialog::new()
                .add_filter(what.filter.0, what.filter.1)
                .set_title(what.title);
            if let Some(dir) = start_dir {
                dialog = dialog.set_directory(dir);
            }
            if let Some(name) = what.file_name {
                dialog = dialog.set_file_name(name);
            }
            let chosen = match purpose {
                Purpose::Open => dialog.pick_file(),
                Purpose::SaveAs => dialog.save_file(),
            };
            let answer = match chosen {
                Some(path) => Answer::Chosen(purpose, path),
                None if t0.elapsed() < NO_DIALOG => Answer::Unavailable,
                None => Answer::Cancelled,
            };
            let _ = tx.send(answer);
            wake();
        });
    }

    /// The dialog's answer, once it has one.
    pub fn poll(&mut self) -> Option<Answer> {
        let answer = match self.pending.as_ref()?.try_recv() {
            Ok(a) => a,
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => Answer::Unavailable,
        };
        self.pending = None;
        Some(answer)
    }
}

/// Where a dialog for a file opens: the folder of the file in use.
fn start_dir(current: Option<&Path>) -> Option<PathBuf> {
    current.and_then(Path::parent).map(Path::to_owned)
}

/// Wakes the window when a dialog closes.
fn wake(ui: &egui::Ui) -> impl Fn() + Send + 'static {
    let ctx = ui.ctx().clone();
    move || ctx.request_repaint()
}

/// The controls of a panel's file (the topic list, the bridges): Open… and Save as… through
/// the platform's dialog, and a path field with Open path and Save to path for where there is
/// none. The panel acts on the file chosen either way.
#[derive(Default)]
pub struct FileChooser {
    dialog: FileDialog,
    /// The last dialog could not be shown: the path field is the way.
    unavailable: bool,
    path_field: String,
}

/// What the dialogs of one kind of file ask.
pub struct FileKind {
    pub open: Ask,
    pub save: Ask,
}

impl FileChooser {
    /// Open… and Save as…, starting in the folder of the file in use.
    pub fn dialog_buttons(&mut self, ui: &mut egui::Ui, current: Option<&Path>, kind: FileKind) {
        let busy = self.dialog.is_open();
        let dir = start_dir(current);
        if ui.add_enabled(!busy, egui::Button::new("Open…")).clicked() {
            self.dialog
                .ask(Purpose::Open, kind.open, dir.clone(), wake(ui));
        }
        if ui
            .add_enabled(!busy, egui::Button::new("Save as…"))
            .clicked()
        {
            self.dialog.ask(Purpose::SaveAs, kind.save, dir, wake(ui));
        }
    }

    /// The path field and its buttons; what was asked for with them.
    pub fn path_row(
        &mut self,
        ui: &mut egui::Ui,
        hint: &str,
        width: f32,
    ) -> Option<(Purpose, PathBuf)> {
        let label = ui.label("File path");
        ui.add(
            egui::TextEdit::singleline(&mut self.path_field)
                .hint_text(hint)
                .desired_width(width),
        )
        .labelled_by(label.id);
        let has_path = !self.path_field.trim().is_empty();
        let path = PathBuf::from(self.path_field.trim());
        let mut chosen = None;
        if ui
            .add_enabled(has_path, egui::Button::new("Open path"))
            .clicked()
        {
            chosen = Some((Purpose::Open, path.clone()));
        }
        if ui
            .add_enabled(has_path, egui::Button::new("Save to path"))
            .clicked()
        {
            chosen = Some((Purpose::SaveAs, path));
        }
        chosen
    }

    /// Says so when no dialog could be shown (`text`: where to type a path instead).
    pub fn unavailable_notice(&self, ui: &mut egui::Ui, text: &str) {
        if self.unavailable {
            ui.colored_label(ui.visuals().warn_fg_color, text);
        }
    }

    /// The file chosen in the dialog, once it has answered.
    pub fn poll(&mut self) -> Option<(Purpose, PathBuf)> {
        match self.dialog.poll()? {
            Answer::Chosen(purpose, path) => {
                self.unavailable = false;
                Some((purpose, path))
            }
            Answer::Unavailable => {
                self.unavailable = true;
                None
            }
            Answer::Cancelled => None,
        }
    }
}
