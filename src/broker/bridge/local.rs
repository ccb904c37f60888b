//! The local side of a bridge: a client of this broker that talks to the router directly, with
//! no socket in between, but registers, subscribes and acknowledges as a connection does, and
//! reports its packets to the trace as one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Instant;

use tokio::sync::mpsc;

use super::Context;
use super::config::BridgeConfig;
use crate::broker::link::{CloseReason, ConnId, ConnectRequest, Inbound, Outbound, ToRouter};
use crate::broker::outbox;
use crate::broker::protocol::{
    Connect, ConnectCode, ConnectV5, Outgoing, Packet, Peer, QoS, SubOptions, Transport,
};
use crate::broker::trace::Tap;

pub(crate) struct LocalSide {
    conn: ConnId,
    router: mpsc::Sender<ToRouter>,
    rx: outbox::Receiver<Outbound>,
    room_wanted: Arc<AtomicBool>,
    capacity: usize,
    tap: Tap,
    next_pkid: u16,
    closed: bool,
}

/// The router is gone: the broker is stopping.
#[derive(Debug)]
pub(crate) struct Stopping;

impl LocalSide {
    /// Registers the bridge's session (never clean: what waits for the remote is kept while
    /// it is away) and waits for the router's CONNACK.
    /// `remote`: the other broker's address, shown as the client's address here.
    pub async fn connect(
        ctx: &Context,
        config: &BridgeConfig,
        conn: ConnId,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<LocalSide, Stopping> {
        let router = ctx.router.upgrade().ok_or(Stopping)?;
        let (tx, rx) = outbox::channel(ctx.limits.channel_capacity());
        let room_wanted = Arc::new(AtomicBool::new(false));
        let peer = Arc::new(Peer {
            addr: remote.unwrap_or(ctx.local_addr),
            local: ctx.local_addr,
            transport: Transport::Bridge,
            accepted: Instant::now(),
        });
        let client_id: Arc<str> = Arc::from(config.local_client_id());
        let mut tap = Tap::new(ctx.trace.clone(), conn, peer.clone());
        tap.packet_in(&Packet::Connect(Connect {
            level: 5,
            keep_alive: 0,
            client_id: client_id.to_string(),
            clean_session: false,
            will: None,
            username: None,
            password: None,
            v5: Some(Box::new(ConnectV5 {
                session_expiry: u32::MAX,
                ..ConnectV5::default()
            })),
        }));
        let request = ConnectRequest {
            conn,
            client_id,
            clean_session: false,
            keep_alive: 0,
            will: None,
            username: None,
            peer,
            level: 5,
            session_expiry: Some(u32::MAX),
            v5: None,
            tx,
            room_wanted: room_wanted.clone(),
            limits: ctx.limits,
        };
        router
            .send(ToRouter::Connect(Box::new(request)))
            .await
            .map_err(|_| Stopping)?;
        let mut local = LocalSide {
            conn,
            router,
            rx,
            room_wanted,
            capacity: ctx.limits.channel_capacity(),
            tap,
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
                    5,
                );
                Ok(local)
            }
            _ => Err(Stopping),
        }
    }

    /// A packet id for a message the bridge publishes here. Only QoS 1 is published (a QoS 2
    /// id would have to stay unique until PUBREL), so ids may simply go round.
    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// Sends the router one packet, as a connection sends what one read brought.
    pub async fn send(&mut self, packet: Packet) -> Result<(), Stopping> {
        self.tap.packet_in(&packet);
        let inbound = match packet {
            Packet::Publish(p) => Inbound::Publish(p),
            Packet::PubAck(id) => Inbound::PubAck(id),
            Packet::PubRec(id) => Inbound::PubRec(id),
            Packet::PubComp(id) => Inbound::PubComp(id),
            Packet::Subscribe { pkid, filters } => Inbound::Subscribe { pkid, filters },
            other => unreachable!("a bridge does not send {other:?}"),
        };
        let msg = ToRouter::Packets {
            conn: self.conn,
            packets: vec![inbound],
        };
        self.router.send(msg).await.map_err(|_| Stopping)
    }

    /// Subscribes to `filters`, not to be sent back what the bridge publishes here.
    pub async fn subscribe(&mut self, filters: Vec<(String, u8)>) -> Result<(), Stopping> {
        let filters = filters
            .into_iter()
            .map(|(f, qos)| {
                let options = SubOptions {
                    qos: QoS::from_bits(qos.min(2)).unwrap_or(QoS::AtLeastOnce),
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 0,
                    id: 0,
                };
                (f, options)
            })
            .collect();
        self.send(Packet::Subscribe { pkid: 1, filters }).await
    }

    /// The router's next word, with the trace told of what it is. None: the broker is stopping.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let out = std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await?;
        // As a connection does (`Link::notify_room`): the router found the channel full and
        // waits to hear it has room again.
        fence(Ordering::SeqCst);
        if self.room_wanted.load(Ordering::Relaxed)
            && self.rx.len() <= self.capacity / 2
            && self.room_wanted.swap(false, Ordering::SeqCst)
        {
            let _ = self
                .router
                .send(ToRouter::Writable { conn: self.conn })
                .await;
        }
        match &out {
            Outbound::PubRel(id) => self.tap.packet_out(&Outgoing::PubRel(*id), 5),
            Outbound::SubAck { pkid, codes } => self
                .tap
                .packet_out(&Outgoing::SubAck { pkid: *pkid, codes }, 5),
            Outbound::Publish(p) => self.tap.packet_out(
                &Outgoing::Publish {
                    topic: &p.msg.topic,
                    payload: &p.msg.payload,
                    qos: p.qos,
                    pkid: p.pkid,
                    retain: p.retain,
                    dup: p.dup,
                    props: p.msg.props.as_deref(),
                    alias: 0,
                    alias_only: false,
                    sub_ids: &p.msg.sub_ids,
                },
                5,
            ),
            _ => {}
        }
        Some(out)
    }

    /// Ends the local session's connection; the session stays, queueing for the remote.
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
    /// A bridge task that ends without `close` (aborted) must not leave its session online.
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
