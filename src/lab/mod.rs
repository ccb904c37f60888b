//! Lab clients: real MQTT clients the window creates to demonstrate the protocol (and the
//! guided scenarios drive), speaking to the broker over loopback like any student's client.
//! Knows nothing of the window.

pub mod client;
pub mod wire;

pub use client::{LabClient, LabCommand, LabConfig, LabState, LabWill, Publish, Received, Status};
