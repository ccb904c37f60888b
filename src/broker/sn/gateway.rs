//! The gateway's socket task: every datagram in, to the client it belongs to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::codec::{self, Message, TopicRef};
use super::{GATEWAY_ID, Shared, client};
use crate::broker::inproc::{LocalSide, Registration};
use crate::broker::link::Outbound;
use crate::broker::protocol::{Packet, Peer, Publish, QoS, Transport};

/// Datagrams waiting for one client's task; beyond it they are dropped and counted.
const CLIENT_QUEUE: usize = 64;

/// Serves MQTT-SN on `socket` until the broker stops (the task is aborted; the clients'
/// tasks then see their queues close and leave the router).
pub(crate) async fn run(socket: UdpSocket, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let mut clients: HashMap<SocketAddr, Node> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut prune = tokio::time::interval(Duration::from_secs(5));
    let (advertise_to, every) = match shared.advertise {
        Some((to, every)) => (Some(to), every),
        None => (None, Duration::from_secs(3600)),
    };
    let mut advertise = tokio::time::interval(every);
    // Publishes at QoS -1 come from no connection: this client of the router carries them.
    let mut connectionless: Option<LocalSide> = None;
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                shared.stats.datagrams.fetch_add(1, Relaxed);
                let msg = match codec::decode(&buf[..n]) {
                    Ok(m) => m,
                    Err(e) => {
                        shared.stats.malformed.fetch_add(1, Relaxed);
                        debug!(%from, error = %e, "MQTT-SN datagram dropped");
                        continue;
                    }
                };
                match msg {
                    Message::SearchGw { .. } => {
                        let info = Message::GwInfo { gw_id: GATEWAY_ID, address: Default::default() };
                        let _ = socket.send_to(&codec::encode(&info), from).await;
                    }
                    Message::Publish { flags, topic, payload, .. } if flags.qos == -1 => {
                        publish_connectionless(&shared, &mut connectionless, topic, flags.retain, payload).await;
                    }
                    Message::Connect { flags, ref client_id, .. } => {
                        // The same node again, keeping its session and without a will to ask
                        // for: its CONNACK was lost, or it wakes from sleep to active. Its task
                        // answers. (A clean session is a new start: a node that rebooted.)
                        if let Some(node) = clients.get(&from)
                            && !node.tx.is_closed()
                            && node.client_id == *client_id
                            && !flags.will
                            && !flags.clean_session
                        {
                            if node.tx.try_send(msg).is_err() {
                                shared.stats.overrun.fetch_add(1, Relaxed);
                            }
                            continue;
                        }
                        // Otherwise a new start: the node there before leaves first (no will).
                        let previous = clients.remove(&from).map(|n| n.task);
                        clients.retain(|_, n| !n.tx.is_closed());
                        if clients.len() >= shared.max_clients {
                            shared.stats.refused.fetch_add(1, Relaxed);
                            warn!(%from, max = shared.max_clients, "MQTT-SN client refused: gateway full");
                            let nack = Message::ConnAck { code: codec::CONGESTION };
                            let _ = socket.send_to(&codec::encode(&nack), from).await;
                            continue;
                        }
                        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
                        let client_id = client_id.clone();
                        let run = client::run(shared.clone(), socket.clone(), from, msg, rx, previous);
                        clients.insert(from, Node { tx, task: tokio::spawn(run), client_id });
                    }
                    other => match clients.get(&from).map(|n| &n.tx) {
                        Some(tx) => match tx.try_send(other) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                shared.stats.overrun.fetch_add(1, Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                clients.remove(&from);
                                shared.stats.unknown_sender.fetch_add(1, Relaxed);
                            }
                        },
                        None => {
                            shared.stats.unknown_sender.fetch_add(1, Relaxed);
                            debug!(%from, message = other.name(), "MQTT-SN message from no connected client: dropped");
                        }
                    },
                }
            }
            out = async { connectionless.as_mut().expect("checked").recv().await }, if connectionless.is_some() => {
                // Kicked from the window, or the broker stopping: made again when next needed.
                if matches!(out, None | Some(Outbound::Close(_))) {
                    connectionless = None;
                }
            }
            _ = advertise.tick(), if advertise_to.is_some() => {
                let duration = every.as_secs().min(u16::MAX as u64) as u16;
                let adv = Message::Advertise { gw_id: GATEWAY_ID, duration };
                let _ = socket.send_to(&codec::encode(&adv), advertise_to.expect("checked")).await;
            }
            _ = prune.tick() => clients.retain(|_, n| !n.tx.is_closed()),
        }
    }
}

/// A node's task, as the gateway knows it.
struct Node {
    tx: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
    client_id: String,
}

/// A QoS -1 PUBLISH: to a predefined id or a short name (nothing else can be known without a
/// connection), published at QoS 0.
async fn publish_connectionless(
    shared: &Shared,
    client: &mut Option<LocalSide>,
    topic: TopicRef,
    retain: bool,
    payload: bytes::Bytes,
) {
    let name: Option<String> = match &topic {
        TopicRef::Predefined(id) => shared.predefined.get(id).map(|n| n.to_string()),
        TopicRef::Short(s) => std::str::from_utf8(s).ok().map(str::to_owned),
        _ => None,
    };
    // Not a predefined or short topic, or anonymous clients refused (QoS -1 is anonymous).
    let Some(name) = name.filter(|_| shared.anonymous_allowed()) else {
        shared.stats.out_of_place.fetch_add(1, Relaxed);
        return;
    };
    if client.is_none() {
        let registration = Registration {
            client_id: Arc::from("$sn/qos-1"),
            clean_session: true,
            keep_alive: 0,
            will: None,
            level: 4,
            session_expiry: None,
            peer: Arc::new(Peer {
                addr: shared.local_addr,
                local: shared.local_addr,
                transport: Transport::MqttSn,
            }),
        };
        let conn = crate::broker::inproc::next_conn();
        match LocalSide::connect(&shared.broker, conn, registration).await {
            Ok((local, _)) => *client = Some(local),
            Err(_) => return,
        }
    }
    let publish = Publish {
        topic: name,
        payload,
        qos: QoS::AtMostOnce,
        pkid: 0,
        retain,
        dup: false,
        props: None,
        alias: 0,
    };
    if let Some(c) = client
        && c.send(Packet::Publish(publish)).await.is_err()
    {
        *client = None;
    }
}
