//! An MQTT-SN 1.2 gateway over UDP: sensor nodes too small for TCP publish and subscribe
//! beside the TCP clients.
//!
//! One task owns the socket (`gateway.rs`): it reads each datagram, answers SEARCHGW, publishes
//! QoS -1 messages, and hands everything else to the task of the client at that address
//! (`client.rs`), made by its CONNECT. Each client is a client of the router without a socket
//! (`inproc`), so the topic list, the Clients panel, History and the trace take it as any
//! other. What the gateway cannot read is dropped and counted, never answered.

mod client;
pub mod codec;
pub(crate) mod gateway;
pub mod predefined;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnConfig {
    pub listen: SocketAddr,
    /// Predefined topic ids, shared with the clients out of band.
    pub predefined: HashMap<u16, String>,
    /// Where ADVERTISE goes (a broadcast or multicast address), and how often; None: not sent.
    pub advertise: Option<(SocketAddr, Duration)>,
    /// Clients at once, at most; a CONNECT beyond it gets CONNACK "congestion".
    pub max_clients: usize,
    /// How long a message waits for the client's acknowledgement before it is sent again
    /// (MQTT-SN's T_retry; UDP may lose it).
    pub retry: Duration,
}

/// The gateway's own id in ADVERTISE and GWINFO.
pub const GATEWAY_ID: u8 = 1;

/// Datagrams the gateway took, and those it could not use.
#[derive(Debug, Default)]
pub struct SnStats {
    pub datagrams: AtomicU64,
    /// Not an MQTT-SN message: truncated, a length that is not the datagram's, an unknown type.
    pub malformed: AtomicU64,
    /// From an address with no connected client, and not a CONNECT, SEARCHGW or QoS -1 PUBLISH.
    pub unknown_sender: AtomicU64,
    /// Well formed but out of place (a gateway's message from a client, say).
    pub out_of_place: AtomicU64,
    /// A client's queue of datagrams was full: it sends faster than its task keeps up.
    pub overrun: AtomicU64,
    /// CONNECTs refused because `max_clients` were connected.
    pub refused: AtomicU64,
    /// Messages for a client with no room for another topic id.
    pub undeliverable: AtomicU64,
}

impl SnStats {
    fn out_of_place(&self) {
        self.out_of_place.fetch_add(1, Relaxed);
    }

    fn undeliverable(&self) {
        self.undeliverable.fetch_add(1, Relaxed);
    }

    /// Everything dropped, for the status bar.
    pub fn dropped(&self) -> u64 {
        [
            &self.malformed,
            &self.unknown_sender,
            &self.out_of_place,
            &self.overrun,
            &self.undeliverable,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }
}

/// What the gateway's tasks share.
pub(crate) struct Shared {
    pub broker: crate::broker::inproc::Broker,
    pub predefined: HashMap<u16, Arc<str>>,
    /// The same, by name.
    pub predefined_ids: HashMap<Arc<str>, u16>,
    pub local_addr: SocketAddr,
    pub stats: Arc<SnStats>,
    pub max_clients: usize,
    pub advertise: Option<(SocketAddr, Duration)>,
    pub retry: Duration,
    /// MQTT-SN has no login: nodes are anonymous clients, served only while those are.
    pub users: tokio::sync::watch::Receiver<Arc<crate::broker::users::Users>>,
}

impl Shared {
    pub fn anonymous_allowed(&self) -> bool {
        self.users.borrow().allow_anonymous
    }

    pub fn new(
        config: &SnConfig,
        broker: crate::broker::inproc::Broker,
        local_addr: SocketAddr,
        stats: Arc<SnStats>,
        users: tokio::sync::watch::Receiver<Arc<crate::broker::users::Users>>,
    ) -> Shared {
        let predefined: HashMap<u16, Arc<str>> = config
            .predefined
            .iter()
            .map(|(id, name)| (*id, Arc::from(name.as_str())))
            .collect();
        let predefined_ids = predefined
            .iter()
            .map(|(id, name)| (name.clone(), *id))
            .collect();
        Shared {
            broker,
            predefined,
            predefined_ids,
            local_addr,
            stats,
            max_clients: config.max_clients,
            advertise: config.advertise,
            retry: config.retry,
            users,
        }
    }
}
