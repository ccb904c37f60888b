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

    /// Opens a dialog for a `.ron` file; `wake` is called when it closes.
    pub fn open(
        &mut self,
        purpose: Purpose,
        start_dir: Option<PathBuf>,
        wake: impl Fn() + Send + 'static,
    ) {
        let what = match purpose {
            Purpose::Open => Ask {
                title: "Open a topic list",
                filter: ("Topic list (RON)", &["ron"]),
                file_name: None,
            },
            Purpose::SaveAs => Ask {
                title: "Save the topic list as",
                filter: ("Topic list (RON)", &["ron"]),
                file_name: Some("topics.ron"),
            },
        };
        self.ask(purpose, what, start_dir, wake);
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
pub fn start_dir(current: Option<&Path>) -> Option<PathBuf> {
    current.and_then(Path::parent).map(Path::to_owned)
}

/// Wakes the window when a dialog closes.
pub fn wake(ui: &egui::Ui) -> impl Fn() + Send + 'static {
    let ctx = ui.ctx().clone();
    move || ctx.request_repaint()
}
