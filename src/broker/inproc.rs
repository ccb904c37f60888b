//! A client of this broker without a socket: it registers with the router, subscribes,
//! publishes and acknowledges as a connection does, and reports its packets to the trace as
//! one. A bridge's local side is one (`bridge/`); so is each MQTT-SN client (`sn/`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};

use super::link::{CloseReason, ConnId, ConnectRequest, Inbound, Outbound, ToRouter};
use super::outbox;
use super::protocol::{Connect, ConnectCode, ConnectV5, Outgoing, Packet, Peer, SubOptions, Will};
use super::session::Limits;
use super::trace::{Sink, Tap};

/// Connection ids of clients without a socket: far above any a listener hands out.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1 << 62);

pub(crate) fn next_conn() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// Client ids of the broker's own clients without a socket (bridges' local sides, the MQTT-SN
/// gateway's QoS -1 publisher): no client may take them, on any transport.
pub(crate) fn reserved_client_id(id: &str) -> bool {
    id.starts_with(super::bridge::config::LOCAL_ID_PREFIX) || id.starts_with("$sn/")
}

/// What the broker gives every client without a socket.
#[derive(Clone)]
pub(crate) struct Broker {
    pub router: mpsc::WeakSender<ToRouter>,
    pub trace: Arc<Sink>,
    pub limits: Limits,
    /// With persistence: the store's last durable epoch (see `DurableAcks`).
    pub durable: Option<watch::Receiver<u64>>,
}

/// Who the client is, as its CONNECT would say.
pub(crate) struct Registration {
    pub client_id: Arc<str>,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub will: Option<Will>,
    /// 4 (3.1.1 semantics) or 5 (MQTT 5: acknowledgements with reasons, No Local).
    pub level: u8,
    /// MQTT 5's Session Expiry Interval (level 5 only).
    pub session_expiry: Option<u32>,
    pub peer: Arc<Peer>,
}

pub(crate) struct LocalSide {
    conn: ConnId,
    router: mpsc::Sender<ToRouter>,
    rx: outbox::Receiver<Outbound>,
    capacity: usize,
    tap: Tap,
    level: u8,
    next_pkid: u16,
    closed: bool,
}

/// The router is gone: the broker is stopping.
#[derive(Debug)]
pub(crate) struct Stopping;

impl LocalSide {
    /// Registers the client and waits for the router's CONNACK; also says whether a session
    /// was there.
    pub async fn connect(
        broker: &Broker,
        conn: ConnId,
        reg: Registration,
    ) -> Result<(LocalSide, bool), Stopping> {
        let router = broker.router.upgrade().ok_or(Stopping)?;
        let (tx, rx) = outbox::channel(broker.limits.channel_capacity());
        let mut tap = Tap::new(broker.trace.clone(), conn, reg.peer.clone());
        tap.packet_in(&Packet::Connect(Connect {
            level: reg.level,
            keep_alive: reg.keep_alive,
            client_id: reg.client_id.to_string(),
            clean_session: reg.clean_session,
            will: reg.will.clone(),
            username: None,
            password: None,
            v5: reg.session_expiry.map(|session_expiry| {
                Box::new(ConnectV5 {
                    session_expiry,
                    ..ConnectV5::default()
                })
            }),
        }));
        let level = reg.level;
        let request = ConnectRequest {
            conn,
            client_id: reg.client_id,
            clean_session: reg.clean_session,
            keep_alive: reg.keep_alive,
            will: reg.will,
            username: None,
            peer: reg.peer,
            level,
            session_expiry: reg.session_expiry,
            v5: None,
            tx,
            limits: broker.limits,
        };
        router
            .send(ToRouter::Connect(Box::new(request)))
            .await
            .map_err(|_| Stopping)?;
        let mut local = LocalSide {
            conn,
            router,
            rx,
            capacity: broker.limits.channel_capacity(),
            tap,
            level,
            next_pkid: 0,
            closed: false,
        };
        match local.recv().await {
            Some(Outbound::ConnAck {
                session_present, ..
            }) => {
                local.tap.packet_out(
                    &Outgoing::ConnAck {
                        session_present,
                        code: ConnectCode::Accepted,
                        v5: None,
                    },
                    level,
                );
                Ok((local, session_present))
            }
            _ => Err(Stopping),
        }
    }

    /// A packet id for a message published here at QoS 1 (a QoS 2 id would have to stay
    /// unique until PUBREL; QoS 1 ids may simply go round).
    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// Sends the router one packet, as a connection sends what one read brought.
    pub async fn send(&mut self, packet: Packet) -> Result<(), Stopping> {
        self.send_all(vec![packet]).await
    }

    /// Sends several packets in one message, as one read would bring them. Only packets that
    /// need no answer of the router's, or one run of them, may share a message: the router
    /// answers each run with one `Acks`.
    pub async fn send_all(&mut self, packets: Vec<Packet>) -> Result<(), Stopping> {
        let packets = packets
            .into_iter()
            .map(|packet| {
                self.tap.packet_in(&packet);
                match packet {
                    Packet::Publish(p) => Inbound::Publish(p),
                    Packet::PubAck(id) => Inbound::PubAck(id),
                    Packet::PubRec(id) => Inbound::PubRec(id),
                    Packet::PubComp(id) => Inbound::PubComp(id),
                    Packet::PubRel(id) => Inbound::PubRel(id),
                    Packet::Subscribe { pkid, filters } => Inbound::Subscribe { pkid, filters },
                    Packet::Unsubscribe { pkid, filters } => Inbound::Unsubscribe { pkid, filters },
                    other => unreachable!("a client without a socket does not send {other:?}"),
                }
            })
            .collect();
        let msg = ToRouter::Packets {
            conn: self.conn,
            packets,
        };
        self.router.send(msg).await.map_err(|_| Stopping)
    }

    /// Subscribes to `filters` (one SUBSCRIBE; its SUBACK comes through `recv`).
    pub async fn subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<(String, SubOptions)>,
    ) -> Result<(), Stopping> {
        self.send(Packet::Subscribe { pkid, filters }).await
    }

    /// The router's next word, with the trace told of what it is. None: the broker is stopping.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let out = std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await?;
        // As a connection does: the router found the channel full and waits to hear it has
        // room again.
        if self.rx.room_regained(self.capacity) {
            let _ = self
                .router
                .send(ToRouter::Writable { conn: self.conn })
                .await;
        }
        match &out {
            Outbound::PubRel(id) => self.tap.packet_out(&Outgoing::PubRel(*id), self.level),
            Outbound::SubAck { pkid, codes } => self
                .tap
                .packet_out(&Outgoing::SubAck { pkid: *pkid, codes }, 5),
            Outbound::Publish(p) => self.tap.packet_out(&p.outgoing(0, false), self.level),
            _ => {}
        }
        Some(out)
    }

    /// Tells the router this client sleeps (an MQTT-SN node), or is awake again.
    pub async fn set_asleep(&mut self, asleep: bool) -> Result<(), Stopping> {
        let msg = ToRouter::Asleep {
            conn: self.conn,
            asleep,
        };
        self.router.send(msg).await.map_err(|_| Stopping)
    }

    /// The router is gone (the broker is stopping).
    pub fn broker_stopping(&self) -> bool {
        self.router.is_closed()
    }

    /// Ends the connection; a persistent session stays, queueing.
    pub async fn close(mut self, reason: CloseReason) {
        self.closed = true;
        self.tap.closed(&reason);
        let _ = self
            .router
            .send(ToRouter::Closed {
                conn: self.conn,
                reason,
                session_expiry: None,
            })
            .await;
    }
}

impl Drop for LocalSide {
    /// A task that ends without `close` (aborted) must not leave its session online.
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.router.try_send(ToRouter::Closed {
                conn: self.conn,
                reason: CloseReason::SocketClosed,
                session_expiry: None,
            });
        }
    }
}

/// Acknowledgements a client without a socket owes its own client (a bridge's remote, an
/// MQTT-SN node) for messages it published here: each may go once the router has taken its
/// message (`Acks(epoch)`) and, with persistence, that epoch is on disk. In order.
pub(crate) struct DurableAcks<T> {
    waiting: VecDeque<(u64, T)>,
    durable: Option<watch::Receiver<u64>>,
}

impl<T> DurableAcks<T> {
    pub fn new(durable: Option<watch::Receiver<u64>>) -> Self {
        DurableAcks {
            waiting: VecDeque::new(),
            durable,
        }
    }

    pub fn push(&mut self, epoch: u64, item: T) {
        self.waiting.push_back((epoch, item));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Persistence is on: acknowledgements wait for the disk (and the router answers with
    /// `Acks` what a level-4 client sends, which it does not without persistence).
    pub fn persistent(&self) -> bool {
        self.durable.is_some()
    }

    /// Those that may go now, in order.
    pub fn ready(&mut self) -> Vec<T> {
        let on_disk = self.durable.as_ref().map_or(u64::MAX, |d| *d.borrow());
        let mut out = Vec::new();
        while let Some((epoch, _)) = self.waiting.front()
            && (*epoch == 0 || *epoch <= on_disk)
        {
            out.push(self.waiting.pop_front().expect("a front").1);
        }
        out
    }

    /// Resolves when the durable epoch moves (never without persistence, or once the store is
    /// gone).
    pub async fn moved(&mut self) {
        let moved = match &mut self.durable {
            Some(d) => d.changed().await.is_ok(),
            None => false,
        };
        if !moved {
            std::future::pending::<()>().await;
        }
    }
}
