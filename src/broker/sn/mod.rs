//! An MQTT-SN 1.2 gateway over UDP: sensor nodes too small for TCP publish and subscribe
//! beside the TCP clients.

pub mod codec;
