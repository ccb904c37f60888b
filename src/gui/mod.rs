//! The window: an egui view of the broker that talks to it only through commands and
//! snapshots (see [`runner`]). The broker module knows nothing of this one.

mod app;
mod bridges_panel;
mod class_accounts;
mod clients_panel;
mod file_dialog;
mod format;
mod history_panel;
pub mod lab_panel;
mod log_panel;
mod network_name;
mod numbers;
mod reply;
mod rules_editor;
pub mod runner;
mod saved_state;
pub mod scenarios;
pub mod scenarios_panel;
mod sequence_diagram;
pub mod settings;
mod topics_panel;
pub mod trace_panel;
mod users_panel;
pub mod view;

pub use app::{icon, run};
pub use view::{ConfigLoader, MainView, Tab};
