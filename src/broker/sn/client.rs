//! One MQTT-SN client: its task turns its datagrams into the router's packets and the router's
//! answers into datagrams, keeps its topic ids, re-sends what UDP may have lost, and holds its
//! messages while it sleeps.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::Shared;
use super::codec::{self, Flags, Message, TopicRef};
use crate::broker::inproc::{DurableAcks, LocalSide, Registration, Stopping};
use crate::broker::link::{CloseReason, OutPublish, Outbound, Refusal, ToRouter};
use crate::broker::protocol::{
    Packet, Peer, Publish, QoS, SubOptions, SubscribeCode, Transport, Will,
};
use crate::broker::topics;

/// A message the client must acknowledge is sent again after `SnConfig::retry` without an
/// answer, this many times, after which the client is taken as lost.
const RETRIES: u32 = 4;
/// How long the will's WILLTOPIC and WILLMSG may take to come.
const WILL_WAIT: Duration = Duration::from_secs(10);
/// Topic ids one client may have registered at once. Below 0x8000: some clients read ids as
/// signed.
const MAX_TOPIC_IDS: usize = 1000;
/// Messages held behind a REGISTER, at most; beyond, the router's channel waits.
const MAX_HELD: usize = 64;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// A node that asks for no keepalive (0) is still taken as gone after this long without a
/// word: over UDP nothing else would ever tell.
const MAX_SILENCE: Duration = Duration::from_secs(3600);

/// The keepalive a CONNECT's (or sleep's) duration gives.
fn keep_alive(duration: u16) -> Duration {
    match duration {
        0 => MAX_SILENCE,
        secs => Duration::from_secs(secs.into()),
    }
}

/// After a sleeping client's wake-up PINGREQ, the gateway answers PINGRESP once no message
/// came for it for this long (and none waits for an acknowledgement).
const WAKE_QUIET: Duration = Duration::from_millis(100);

/// An acknowledgement the client is owed, once the router (and the disk) have its message.
enum Owed {
    Ack {
        topic_id: u16,
        msg_id: u16,
    },
    Rec {
        msg_id: u16,
    },
    Comp {
        msg_id: u16,
    },
    /// PUBREL of a QoS 2 message to the client, after its PUBREC.
    Rel {
        msg_id: u16,
    },
    /// Not the client's: PUBCOMP to the router for a QoS 2 message the client will not get.
    RouterComp {
        pkid: u16,
    },
}

/// What a datagram sent to the client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Awaited {
    /// PUBACK, PUBREC or PUBCOMP for the router's packet id.
    Packet(u16),
    /// REGACK for the gateway's REGISTER.
    RegAck(u16),
}

/// Whether the client takes messages now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awake {
    Yes,
    /// DISCONNECT with a duration: messages wait here until it wakes.
    Asleep,
    /// Woken by a PINGREQ with its client id: sent what waited, then PINGRESP and asleep again.
    Waking,
}

pub(super) struct Client {
    shared: Arc<Shared>,
    addr: SocketAddr,
    socket: Arc<UdpSocket>,
    local: LocalSide,
    keep_alive: Duration,
    last_heard: Instant,
    awake: Awake,
    /// Topic ids of this client, both ways.
    ids: HashMap<u16, Arc<str>>,
    by_name: HashMap<Arc<str>, u16>,
    next_id: u16,
    /// Messages for the client held, in order, while a topic id one of them needs is being
    /// registered (the first); the router's other answers go on meanwhile.
    held: VecDeque<OutPublish>,
    registering: bool,
    /// QoS 1/2 messages sent and not yet acknowledged (the router's in-flight window bounds
    /// them), kept to send again under a new topic id if the node has forgotten the old one.
    in_flight: HashMap<u16, OutPublish>,
    /// Datagrams waiting for the client's answer, by what answers them: sent again after
    /// `RETRY`.
    unacked: HashMap<Awaited, (Bytes, Instant, u32)>,
    /// SUBSCRIBEs waiting for the router: the topic id each SUBACK carries.
    subscribing: HashMap<u16, u16>,
    /// With persistence, acknowledgements the router has yet to clear, in order; then those
    /// waiting for the disk.
    acks_owed: VecDeque<Owed>,
    acks_durable: DurableAcks<Owed>,
    quiet_since: Instant,
    next_register: u16,
}

/// Starts a client from its CONNECT: the will exchange if it has one, the router's CONNACK,
/// then its task until it leaves or is lost.
/// `previous`: the task of the node this one replaces at the same address; it leaves first,
/// so that the router sees it go before the new one comes.
pub(super) async fn run(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    connect: Message,
    mut rx: mpsc::Receiver<Message>,
    previous: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(p) = previous {
        let _ = p.await;
    }
    let Message::Connect {
        flags,
        duration,
        client_id,
    } = connect
    else {
        return;
    };
    let send = |m: Message| {
        let socket = socket.clone();
        async move {
            let _ = socket.send_to(&codec::encode(&m), addr).await;
        }
    };
    // The broker's own clients' ids are not for nodes to take; and MQTT-SN has no login: a
    // node is an anonymous client, refused while those are. Either is a refusal the Log shows,
    // as for a TCP client.
    let refusal = if crate::broker::inproc::reserved_client_id(&client_id) {
        Some(Refusal::ReservedId(client_id.clone()))
    } else if !shared.anonymous_allowed() {
        Some(Refusal::NotAuthorized)
    } else {
        None
    };
    if let Some(reason) = refusal {
        shared
            .stats
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        send(Message::ConnAck {
            code: codec::NOT_SUPPORTED,
        })
        .await;
        if let Some(router) = shared.broker.router.upgrade() {
            let peer = Peer {
                addr,
                local: shared.local_addr,
                transport: Transport::MqttSn,
            };
            let client_id = Some(client_id);
            let _ = router
                .send(ToRouter::Refused {
                    peer,
                    client_id,
                    reason,
                })
                .await;
        }
        return;
    }
    let will = if flags.will {
        match will_exchange(&mut rx, &send).await {
            Some(w) => w,
            None => {
                debug!(%addr, client_id, "MQTT-SN will not given in time: not connected");
                return;
            }
        }
    } else {
        None
    };
    let peer = Arc::new(Peer {
        addr,
        local: shared.local_addr,
        transport: Transport::MqttSn,
    });
    let registration = Registration {
        client_id: Arc::from(client_id.as_str()),
        clean_session: flags.clean_session,
        keep_alive: duration,
        will,
        level: 4,
        session_expiry: None,
        peer,
    };
    let conn = crate::broker::inproc::next_conn();
    let Ok((local, _)) = LocalSide::connect(&shared.broker, conn, registration).await else {
        return;
    };
    send(Message::ConnAck {
        code: codec::ACCEPTED,
    })
    .await;
    info!(%addr, client_id, "MQTT-SN client connected");
    let mut client = Client {
        acks_durable: DurableAcks::new(shared.broker.durable.clone()),
        shared,
        addr,
        socket,
        local,
        keep_alive: keep_alive(duration),
        last_heard: Instant::now(),
        awake: Awake::Yes,
        ids: HashMap::new(),
        by_name: HashMap::new(),
        next_id: 1,
        held: VecDeque::new(),
        registering: false,
        unacked: HashMap::new(),
        in_flight: HashMap::new(),
        subscribing: HashMap::new(),
        acks_owed: VecDeque::new(),
        quiet_since: Instant::now(),
        next_register: 0,
    };
    let reason = client.serve(&mut rx).await;
    if let Some(reason) = reason {
        info!(addr = %client.addr, client_id, %reason, "MQTT-SN client gone");
        client.local.close(reason).await;
    }
}

/// WILLTOPICREQ, WILLTOPIC, WILLMSGREQ, WILLMSG. `Some(None)`: an empty WILLTOPIC, no will.
async fn will_exchange<F, Fut>(rx: &mut mpsc::Receiver<Message>, send: &F) -> Option<Option<Will>>
where
    F: Fn(Message) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    send(Message::WillTopicReq).await;
    let deadline = tokio::time::Instant::now() + WILL_WAIT;
    let (flags, topic) = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await.ok()?? {
            Message::WillTopic { flags, topic } => break (flags, topic),
            _ => continue,
        }
    };
    let Some(topic) = topic.filter(|t| topics::validate_name(t).is_ok()) else {
        return Some(None);
    };
    send(Message::WillMsgReq).await;
    let payload = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await.ok()?? {
            Message::WillMsg { payload } => break payload,
            _ => continue,
        }
    };
    Some(Some(Will {
        topic,
        payload,
        qos: QoS::from_bits(flags.qos.clamp(0, 2) as u8).unwrap_or(QoS::AtMostOnce),
        retain: flags.retain,
        props: None,
        delay: 0,
    }))
}

impl Client {
    /// Until the client leaves (None: it said DISCONNECT, already answered) or is lost.
    async fn serve(&mut self, rx: &mut mpsc::Receiver<Message>) -> Option<CloseReason> {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let takes =
                matches!(self.awake, Awake::Yes | Awake::Waking) && self.held.len() < MAX_HELD;
            tokio::select! {
                msg = rx.recv() => {
                    // The gateway let go of this node: a new CONNECT from its address (a new
                    // start), or the broker is stopping. Not lost: no will.
                    let Some(msg) = msg else {
                        return Some(CloseReason::Superseded);
                    };
                    self.last_heard = Instant::now();
                    match self.on_client(msg).await {
                        Ok(None) => {}
                        Ok(Some(reason)) => return Some(reason),
                        Err(Stopping) => return None,
                    }
                }
                out = self.local.recv(), if takes => {
                    let Some(out) = out else {
                        return Some(CloseReason::ServerShutdown);
                    };
                    self.quiet_since = Instant::now();
                    match self.on_router(out).await {
                        Ok(Some(reason)) => return Some(reason),
                        Ok(None) => {}
                        Err(Stopping) => return None,
                    }
                }
                _ = self.acks_durable.moved(), if !self.acks_durable.is_empty() => {
                    self.release_acks().await;
                }
                _ = tick.tick() => {
                    if let Some(reason) = self.on_tick().await {
                        return Some(reason);
                    }
                }
            }
        }
    }

    async fn send(&self, m: &Message) {
        let _ = self.socket.send_to(&codec::encode(m), self.addr).await;
    }

    /// Sends a message the client must answer, and keeps it to send again.
    async fn send_reliably(&mut self, awaited: Awaited, m: Message) {
        let bytes = codec::encode(&m);
        let _ = self.socket.send_to(&bytes, self.addr).await;
        self.unacked.insert(awaited, (bytes, Instant::now(), 0));
    }

    /// Keepalive (1.5 × the CONNECT's duration, or the sleep's), re-sending, and a woken
    /// client's PINGRESP.
    async fn on_tick(&mut self) -> Option<CloseReason> {
        if self.last_heard.elapsed() > self.keep_alive * 3 / 2 {
            return Some(CloseReason::KeepaliveTimeout);
        }
        let now = Instant::now();
        let mut lost = false;
        // A sleeping client hears nothing: what it owes waits for it to wake.
        let retrying = self.awake != Awake::Asleep;
        for (bytes, sent, tries) in self.unacked.values_mut().filter(|_| retrying) {
            if now.duration_since(*sent) >= self.shared.retry {
                if *tries >= RETRIES {
                    lost = true;
                    break;
                }
                *tries += 1;
                *sent = now;
                // DUP on a PUBLISH sent again (its flags byte follows the header).
                let mut again = bytes.to_vec();
                let at = if again[0] == 0x01 { 3 } else { 1 };
                if again.get(at) == Some(&0x0C) {
                    again[at + 1] |= 0x80;
                }
                let _ = self.socket.send_to(&again, self.addr).await;
            }
        }
        if lost {
            return Some(CloseReason::KeepaliveTimeout);
        }
        if self.awake == Awake::Waking
            && self.held.is_empty()
            && self.unacked.is_empty()
            && self.quiet_since.elapsed() >= WAKE_QUIET
        {
            self.awake = Awake::Asleep;
            self.send(&Message::PingResp).await;
        }
        None
    }

    /// The topic name a PUBLISH or SUBSCRIBE names, if the gateway knows it.
    fn topic_name(&self, topic: &TopicRef) -> Option<Arc<str>> {
        match topic {
            TopicRef::Id(id) => self.ids.get(id).cloned(),
            TopicRef::Predefined(id) => self.shared.predefined.get(id).cloned(),
            TopicRef::Short(s) => std::str::from_utf8(s).ok().map(Arc::from),
            TopicRef::Name(n) => Some(Arc::from(n.as_str())),
        }
    }

    /// The id of a topic name for this client, registered now if it had none. None when it
    /// has as many as it may.
    fn id_for(&mut self, name: &Arc<str>) -> Option<(u16, bool)> {
        if let Some(&id) = self.by_name.get(name) {
            return Some((id, false));
        }
        if self.ids.len() >= MAX_TOPIC_IDS {
            return None;
        }
        while self.ids.contains_key(&self.next_id) || self.next_id == 0 {
            self.next_id = (self.next_id % 0x7FFF) + 1;
        }
        let id = self.next_id;
        self.next_id = (self.next_id % 0x7FFF) + 1;
        self.ids.insert(id, name.clone());
        self.by_name.insert(name.clone(), id);
        Some((id, true))
    }

    /// A datagram from the client. Ok(Some): it is gone, for that reason.
    async fn on_client(&mut self, msg: Message) -> Result<Option<CloseReason>, Stopping> {
        match msg {
            Message::Register { msg_id, topic, .. } => {
                let name: Arc<str> = Arc::from(topic.as_str());
                let (topic_id, code) = match topics::validate_name(&topic) {
                    Err(_) => (0, codec::INVALID_TOPIC_ID),
                    Ok(()) => match self.id_for(&name) {
                        Some((id, _)) => (id, codec::ACCEPTED),
                        None => (0, codec::CONGESTION),
                    },
                };
                self.send(&Message::RegAck {
                    topic_id,
                    msg_id,
                    code,
                })
                .await;
            }
            Message::Publish {
                flags,
                topic,
                msg_id,
                payload,
            } => self.publish(flags, topic, msg_id, payload).await?,
            // "Invalid topic id": the node forgot it (it rebooted, say). The gateway forgets
            // it too, and sends the message again under a topic registered anew.
            Message::PubAck {
                msg_id,
                code: codec::INVALID_TOPIC_ID,
                ..
            } => {
                self.unacked.remove(&Awaited::Packet(msg_id));
                if let Some(mut p) = self.in_flight.remove(&msg_id) {
                    if let Some(id) = self.by_name.remove(&p.msg.topic) {
                        self.ids.remove(&id);
                    }
                    p.dup = true;
                    self.deliver(p).await;
                }
            }
            Message::PubAck { msg_id, .. } => {
                self.in_flight.remove(&msg_id);
                if self.unacked.remove(&Awaited::Packet(msg_id)).is_some() {
                    self.local.send(Packet::PubAck(msg_id)).await?;
                }
            }
            Message::PubRec { msg_id } => {
                self.in_flight.remove(&msg_id);
                if self.unacked.remove(&Awaited::Packet(msg_id)).is_some() {
                    // The router takes PUBREC; PUBREL is ours to send (as a connection does),
                    // once the router has it.
                    self.local.send(Packet::PubRec(msg_id)).await?;
                    self.owe(Owed::Rel { msg_id }).await;
                }
            }
            Message::PubComp { msg_id } => {
                if self.unacked.remove(&Awaited::Packet(msg_id)).is_some() {
                    self.local.send(Packet::PubComp(msg_id)).await?;
                }
            }
            Message::PubRel { msg_id } => {
                self.local.send(Packet::PubRel(msg_id)).await?;
                self.owe(Owed::Comp { msg_id }).await;
            }
            Message::RegAck { msg_id, code, .. } => {
                if self.unacked.remove(&Awaited::RegAck(msg_id)).is_some()
                    && let Some(p) = self.held.pop_front()
                {
                    self.registering = false;
                    if code == codec::ACCEPTED {
                        self.deliver(p).await;
                    } else {
                        // It will not take the topic: the id is not its, and the message is
                        // done with, as far as the router goes.
                        if let Some(id) = self.by_name.remove(&p.msg.topic) {
                            self.ids.remove(&id);
                        }
                        self.shared.stats.undeliverable();
                        self.done_with(p.qos, p.pkid).await?;
                    }
                    // Those held behind it, until one needs a REGISTER of its own.
                    while !self.registering
                        && let Some(next) = self.held.pop_front()
                    {
                        self.deliver(next).await;
                    }
                }
            }
            // CONNECT again, from a node already here under the same id without a will (its
            // CONNACK was lost, or it wakes from sleep to active): connected it is.
            Message::Connect { duration, .. } => {
                if self.awake != Awake::Yes {
                    self.local.set_asleep(false).await?;
                }
                self.awake = Awake::Yes;
                self.keep_alive = keep_alive(duration);
                self.send(&Message::ConnAck {
                    code: codec::ACCEPTED,
                })
                .await;
            }
            Message::Subscribe {
                flags,
                msg_id,
                topic,
            } => {
                let Some(filter) = self.topic_name(&topic) else {
                    self.send(&Message::SubAck {
                        flags: Flags::default(),
                        topic_id: 0,
                        msg_id,
                        code: codec::INVALID_TOPIC_ID,
                    })
                    .await;
                    return Ok(None);
                };
                // A topic name gets its id now, which SUBACK carries; a filter and a short
                // name carry none, a predefined id its own.
                let topic_id = match &topic {
                    TopicRef::Name(n) if !topics::has_wildcards(n) => {
                        self.id_for(&filter).map_or(0, |(id, _)| id)
                    }
                    TopicRef::Predefined(id) => *id,
                    _ => 0,
                };
                self.subscribing.insert(msg_id, topic_id);
                let options = SubOptions {
                    qos: QoS::from_bits(flags.qos.clamp(0, 2) as u8).unwrap_or(QoS::AtMostOnce),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    id: 0,
                };
                self.local
                    .subscribe(msg_id, vec![(filter.to_string(), options)])
                    .await?;
            }
            Message::Unsubscribe { msg_id, topic } => match self.topic_name(&topic) {
                Some(filter) => {
                    let packet = Packet::Unsubscribe {
                        pkid: msg_id,
                        filters: vec![filter.to_string()],
                    };
                    self.local.send(packet).await?;
                }
                None => self.send(&Message::UnsubAck { msg_id }).await,
            },
            Message::PingReq { client_id } => {
                if client_id.is_some() && self.awake == Awake::Asleep {
                    self.awake = Awake::Waking;
                    self.quiet_since = Instant::now();
                } else {
                    self.send(&Message::PingResp).await;
                }
            }
            Message::Disconnect { duration: None } => {
                self.send(&Message::Disconnect { duration: None }).await;
                return Ok(Some(CloseReason::ClientDisconnected));
            }
            Message::Disconnect {
                duration: Some(secs),
            } => {
                self.send(&Message::Disconnect { duration: None }).await;
                self.awake = Awake::Asleep;
                self.keep_alive = keep_alive(secs);
                self.local.set_asleep(true).await?;
            }
            Message::WillTopicUpd { .. } => {
                self.send(&Message::WillTopicResp {
                    code: codec::NOT_SUPPORTED,
                })
                .await;
            }
            Message::WillMsgUpd { .. } => {
                self.send(&Message::WillMsgResp {
                    code: codec::NOT_SUPPORTED,
                })
                .await;
            }
            // Only the gateway sends these, or they belong to the CONNECT exchange.
            other => {
                debug!(addr = %self.addr, message = other.name(), "MQTT-SN message out of place: ignored");
                self.shared.stats.out_of_place();
            }
        }
        Ok(None)
    }

    async fn publish(
        &mut self,
        flags: Flags,
        topic: TopicRef,
        msg_id: u16,
        payload: Bytes,
    ) -> Result<(), Stopping> {
        let topic_id = match &topic {
            TopicRef::Id(id) | TopicRef::Predefined(id) => *id,
            TopicRef::Short(s) => u16::from_be_bytes(*s),
            TopicRef::Name(_) => 0,
        };
        let Some(name) = self.topic_name(&topic) else {
            self.send(&Message::PubAck {
                topic_id,
                msg_id,
                code: codec::INVALID_TOPIC_ID,
            })
            .await;
            return Ok(());
        };
        let qos = QoS::from_bits(flags.qos.clamp(0, 2) as u8).unwrap_or(QoS::AtMostOnce);
        let publish = Publish {
            topic: name.to_string(),
            payload,
            qos,
            pkid: if qos == QoS::AtMostOnce { 0 } else { msg_id },
            retain: flags.retain,
            dup: flags.dup,
            props: None,
            alias: 0,
        };
        self.local.send(Packet::Publish(publish)).await?;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.owe(Owed::Ack { topic_id, msg_id }).await,
            QoS::ExactlyOnce => self.owe(Owed::Rec { msg_id }).await,
        }
        Ok(())
    }

    /// An acknowledgement for the client: at once without persistence, else once the router
    /// has answered for it and the disk has it.
    async fn owe(&mut self, owed: Owed) {
        // With persistence the router answers each QoS 1/2 PUBLISH and PUBREL (`Acks`).
        if self.acks_durable.persistent() {
            self.acks_owed.push_back(owed);
        } else {
            self.give(owed).await;
        }
    }

    async fn release_acks(&mut self) {
        for owed in self.acks_durable.ready() {
            self.give(owed).await;
        }
    }

    /// Tells the router a message it sent is done with, though the node will not get it. QoS
    /// 2 goes as a connection's client would: PUBREC, the router's answer, PUBCOMP.
    async fn done_with(&mut self, qos: QoS, pkid: u16) -> Result<(), Stopping> {
        match qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => self.local.send(Packet::PubAck(pkid)).await,
            QoS::ExactlyOnce => {
                self.local.send(Packet::PubRec(pkid)).await?;
                self.owe(Owed::RouterComp { pkid }).await;
                Ok(())
            }
        }
    }

    async fn give(&mut self, owed: Owed) {
        match owed {
            Owed::RouterComp { pkid } => {
                let _ = self.local.send(Packet::PubComp(pkid)).await;
            }
            // PUBREL waits for PUBCOMP, and is sent again without it.
            Owed::Rel { msg_id } => {
                self.send_reliably(Awaited::Packet(msg_id), Message::PubRel { msg_id })
                    .await
            }
            other => self.send(&other.message()).await,
        }
    }

    /// What the router sends this client.
    async fn on_router(&mut self, out: Outbound) -> Result<Option<CloseReason>, Stopping> {
        match out {
            // Behind a REGISTER, in order.
            Outbound::Publish(p) if self.registering => self.held.push_back(p),
            Outbound::Publish(p) => self.deliver(p).await,
            Outbound::PubRel(id) => {
                self.send_reliably(Awaited::Packet(id), Message::PubRel { msg_id: id })
                    .await;
            }
            Outbound::SubAck { pkid, codes } => {
                let topic_id = self.subscribing.remove(&pkid).unwrap_or(0);
                let (qos, code) = match codes.first() {
                    Some(SubscribeCode::Granted(q)) => (*q as i8, codec::ACCEPTED),
                    _ => (0, codec::INVALID_TOPIC_ID),
                };
                self.send(&Message::SubAck {
                    flags: Flags {
                        qos,
                        ..Flags::default()
                    },
                    topic_id,
                    msg_id: pkid,
                    code,
                })
                .await;
            }
            Outbound::UnsubAck { pkid, .. } => {
                self.send(&Message::UnsubAck { msg_id: pkid }).await;
            }
            Outbound::Acks(epoch) | Outbound::AcksWith(epoch, _) => {
                if let Some(owed) = self.acks_owed.pop_front() {
                    self.acks_durable.push(epoch, owed);
                    self.release_acks().await;
                }
            }
            Outbound::Close(reason) => {
                // Kicked, taken over, the broker stopping: the router has dealt with the
                // session and the will already.
                self.send(&Message::Disconnect { duration: None }).await;
                return Ok(Some(*reason));
            }
            Outbound::ConnAck { .. } | Outbound::After(_) | Outbound::Hold(_) => {}
        }
        Ok(None)
    }

    /// A message for the client, under a topic id it knows: registered first if it has none.
    async fn deliver(&mut self, p: OutPublish) {
        // More than a datagram holds (with PUBLISH's 7 bytes of header): not deliverable.
        if p.msg.payload.len() + 7 > MAX_DATAGRAM {
            self.shared.stats.undeliverable();
            let _ = self.done_with(p.qos, p.pkid).await;
            return;
        }
        let name = p.msg.topic.clone();
        // The id the client was given for it (by SUBACK or REGISTER) first.
        let topic = if let Some(&id) = self.by_name.get(&name) {
            TopicRef::Id(id)
        } else if let Some(id) = self.shared.predefined_ids.get(&name) {
            TopicRef::Predefined(*id)
        } else if name.len() == 2 {
            TopicRef::Short([name.as_bytes()[0], name.as_bytes()[1]])
        } else {
            match self.id_for(&name) {
                Some((id, false)) => TopicRef::Id(id),
                Some((id, true)) => {
                    // REGISTER's message ids are the gateway's own, apart from the router's.
                    self.next_register = self.next_register.wrapping_add(1).max(1);
                    let msg_id = self.next_register;
                    let reg = Message::Register {
                        topic_id: id,
                        msg_id,
                        topic: name.to_string(),
                    };
                    self.send_reliably(Awaited::RegAck(msg_id), reg).await;
                    self.held.push_front(p);
                    self.registering = true;
                    return;
                }
                None => {
                    // No room for another id: not deliverable to this client.
                    self.shared.stats.undeliverable();
                    let _ = self.done_with(p.qos, p.pkid).await;
                    return;
                }
            }
        };
        let m = Message::Publish {
            flags: Flags {
                dup: p.dup,
                qos: p.qos as i8,
                retain: p.retain,
                ..Flags::default()
            },
            topic,
            msg_id: p.pkid,
            payload: p.msg.payload.clone(),
        };
        if p.qos == QoS::AtMostOnce {
            self.send(&m).await;
        } else {
            self.send_reliably(Awaited::Packet(p.pkid), m).await;
            self.in_flight.insert(p.pkid, p);
        }
    }
}

impl Owed {
    fn message(&self) -> Message {
        match *self {
            Owed::Ack { topic_id, msg_id } => Message::PubAck {
                topic_id,
                msg_id,
                code: codec::ACCEPTED,
            },
            Owed::Rec { msg_id } => Message::PubRec { msg_id },
            Owed::Comp { msg_id } => Message::PubComp { msg_id },
            Owed::Rel { msg_id } => Message::PubRel { msg_id },
            Owed::RouterComp { .. } => unreachable!("given to the router, not the client"),
        }
    }
}
