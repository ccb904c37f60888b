//! mqtt-lab: a desktop MQTT broker for lab demos and classrooms.
//!
//! [`broker`] is the MQTT broker itself and compiles without any window; [`gui`] is the window
//! on top of it; [`lab`] has the clients the window demonstrates with; [`paths`] finds the
//! app's files.

pub mod broker;
#[cfg(feature = "gui")]
pub mod gui;
pub mod lab;
pub mod paths;
