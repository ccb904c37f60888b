//! One bridge's task: connect to the remote, then the local side, pass messages both ways,
//! and start again after a back-off when the remote goes away.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rumqttc::Outgoing as ROut;
use rumqttc::v5::mqttbytes::v5::{
    Packet as RPacket, Publish as RPublish, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ClientError, Event, EventLoop};
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::BridgeConfig;
use super::{BridgeCounters, BridgeState, BridgeStatus, Context, MAX_HOPS, PATH_KEY, remote};
use crate::broker::inproc::{DurableAcks, LocalSide, Registration, Stopping};
use crate::broker::link::{CloseReason, ConnId, OutPublish, Outbound, ToRouter};
use crate::broker::protocol::{
    AckKind, Expiry, MessageProps, Packet, Peer, Publish, QoS, Reason, SubOptions, SubscribeCode,
    Transport,
};

/// Requests the remote's event loop has not taken yet, at most; past that the remote sends
/// faster than it takes our acknowledgements, and the bridge starts again.
const MAX_PENDING: usize = 1024;

/// How often a bridge's counters reach the window, at most.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// How a connection of the bridge ended.
enum Ended {
    /// Told to stop (the bridge was removed, changed or disabled), or the broker stops.
    Stopped,
    Failed {
        error: String,
        was_up: bool,
    },
}

pub(crate) async fn run(
    config: BridgeConfig,
    ctx: Arc<Context>,
    conn: ConnId,
    mut stop: watch::Receiver<bool>,
) {
    let mut reporter = Reporter {
        ctx: ctx.clone(),
        name: config.name.clone(),
        conn,
        status: BridgeStatus::default(),
        reported: None,
        at: Instant::now(),
    };
    let mut failures = 0;
    loop {
        reporter.status.state = BridgeState::Connecting;
        reporter.flush().await;
        match connection(&config, &ctx, conn, &mut stop, &mut reporter).await {
            Ended::Stopped => break,
            Ended::Failed { error, was_up } => {
                if was_up {
                    failures = 0;
                }
                let wait = super::backoff(failures);
                failures += 1;
                warn!(bridge = %config.name, %error, retry_in = ?wait, "bridge down");
                reporter.status.last_error = Some(error);
                reporter.status.state = BridgeState::Waiting {
                    retry_at: SystemTime::now() + wait,
                };
                reporter.flush().await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(&mut stop) => break,
                }
            }
        }
    }
    info!(bridge = %config.name, "bridge stopped");
}

/// Resolves once the bridge is told to stop (or its owner is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sends the bridge's status to the router when it changed, at most every `REPORT_EVERY` for
/// counters alone.
struct Reporter {
    ctx: Arc<Context>,
    name: String,
    conn: ConnId,
    status: BridgeStatus,
    reported: Option<BridgeStatus>,
    at: Instant,
}

impl Reporter {
    async fn flush(&mut self) {
        if self.reported.as_ref() == Some(&self.status) {
            return;
        }
        let Some(router) = self.ctx.broker.router.upgrade() else {
            return;
        };
        self.reported = Some(self.status.clone());
        self.at = Instant::now();
        let _ = router
            .send(ToRouter::BridgeStatus {
                name: self.name.clone(),
                conn: self.conn,
                status: self.status.clone(),
            })
            .await;
    }

    async fn tick(&mut self) {
        if self.at.elapsed() >= REPORT_EVERY {
            self.flush().await;
        }
    }

    fn counters(&mut self) -> &mut BridgeCounters {
        &mut self.status.counters
    }
}

/// One connection to the remote, from connecting to its end.
async fn connection(
    config: &BridgeConfig,
    ctx: &Context,
    conn: ConnId,
    stop: &mut watch::Receiver<bool>,
    reporter: &mut Reporter,
) -> Ended {
    let failed = |error: String| Ended::Failed {
        error,
        was_up: false,
    };
    let (client, mut events, remote) = match remote::client(config) {
        Ok(made) => made,
        Err(e) => return failed(e),
    };
    // The remote's CONNACK first (rumqttc's connection timeout bounds the wait).
    loop {
        tokio::select! {
            _ = stopped(stop) => return Ended::Stopped,
            ev = events.poll() => match ev {
                Ok(Event::Incoming(RPacket::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return failed(format!("connecting to {}: {e}", config.address)),
            },
        }
    }
    let incoming: Vec<_> = config
        .topics
        .iter()
        .filter(|r| r.direction.comes_in())
        .map(|r| remote::filter(r.remote_filter(), r.qos, config.clean_session))
        .collect();
    if !incoming.is_empty() && client.try_subscribe_many(incoming).is_err() {
        return failed("the remote's client did not take the subscription".into());
    }
    // Where the remote is, for the Clients panel (rumqttc does not say which address it used).
    let remote_addr = tokio::net::lookup_host((remote.host.as_str(), remote.port))
        .await
        .ok()
        .and_then(|mut a| a.next());
    // Never clean, and never expiring: what waits for the remote is kept while it is away.
    let registration = Registration {
        client_id: Arc::from(config.local_client_id()),
        clean_session: false,
        keep_alive: 0,
        will: None,
        level: 5,
        session_expiry: Some(u32::MAX),
        peer: Arc::new(Peer {
            addr: remote_addr.unwrap_or(ctx.local_addr),
            local: ctx.local_addr,
            transport: Transport::Bridge,
        }),
    };
    let Ok((mut local, _)) = LocalSide::connect(&ctx.broker, conn, registration).await else {
        return Ended::Stopped;
    };
    // Not sent back what the bridge publishes here; retained messages stay retained.
    let outgoing: Vec<(String, SubOptions)> = config
        .topics
        .iter()
        .filter(|r| r.direction.goes_out())
        .map(|r| {
            let options = SubOptions {
                qos: QoS::from_bits(r.qos.min(1)).unwrap_or(QoS::AtLeastOnce),
                no_local: true,
                retain_as_published: true,
                // The session is kept: retained messages only for a subscription that is
                // new, not again at every reconnect.
                retain_handling: 1,
                id: 0,
            };
            (r.local_filter(), options)
        })
        .collect();
    if !outgoing.is_empty() && local.subscribe(1, outgoing).await.is_err() {
        return Ended::Stopped;
    }
    info!(bridge = %config.name, remote = %config.address, "bridge up");
    reporter.status.state = BridgeState::Up {
        since: SystemTime::now(),
    };
    reporter.status.last_error = None;
    reporter.flush().await;
    let mut pump = Pump {
        config,
        broker_id: &ctx.broker_id,
        client,
        local,
        sent: VecDeque::new(),
        in_flight: HashMap::new(),
        acks_owed: VecDeque::new(),
        acks_durable: DurableAcks::new(ctx.broker.durable.clone()),
        acks_out: Vec::new(),
        pending: VecDeque::new(),
        reporter,
    };
    let ended = pump.run(&mut events, stop).await;
    let _ = pump.flush_acks().await;
    let Pump { local, client, .. } = pump;
    match ended {
        Ok(()) => {
            // Told to stop: a clean goodbye to the remote, which keeps its session.
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while events.poll().await.is_ok() {}
            })
            .await;
            local.close(CloseReason::ClientDisconnected).await;
            Ended::Stopped
        }
        Err(Some(error)) => {
            local
                .close(CloseReason::BridgeRemoteLost(error.clone()))
                .await;
            Ended::Failed {
                error,
                was_up: true,
            }
        }
        Err(None) => Ended::Stopped,
    }
}

/// What one of the router's `Acks` answers, in the order the bridge sent them.
enum Answered {
    /// A message from the remote, published here: acknowledge it to the remote.
    FromRemote(Box<RPublish>),
    /// The PUBREC of a QoS 2 message from here: PUBCOMP follows (`ack_local`).
    Released(u16),
}

/// A request for the remote's event loop that did not fit in its channel yet.
enum Pending {
    Publish {
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        props: PublishProperties,
        /// The local packet id it acknowledges, and at which QoS it was delivered here.
        local: (u16, QoS),
    },
    Ack(RPublish),
}

/// The bridge while both sides are connected.
struct Pump<'a> {
    config: &'a BridgeConfig,
    broker_id: &'a str,
    client: AsyncClient,
    local: LocalSide,
    /// Messages handed to the remote's client, in order, until it gives them a packet id.
    sent: VecDeque<(u16, QoS)>,
    /// Remote packet id -> the local packet id and QoS it acknowledges when the remote does.
    in_flight: HashMap<u16, (u16, QoS)>,
    /// Messages from the remote published here at QoS 1, in order, each acknowledged to the
    /// remote when the router has taken it (its `Acks`)...
    acks_owed: VecDeque<Answered>,
    /// ... and, with persistence, once the epoch it names is on disk.
    acks_durable: DurableAcks<RPublish>,
    /// PUBACKs for the router, gathered (`ack_local`).
    acks_out: Vec<Packet>,
    pending: VecDeque<Pending>,
    reporter: &'a mut Reporter,
}

impl Pump<'_> {
    /// Ok: told to stop. Err(Some): the remote connection failed. Err(None): the broker is
    /// stopping or closed the local side.
    async fn run(
        &mut self,
        events: &mut EventLoop,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Option<String>> {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tokio::select! {
                biased;
                _ = stopped(stop) => return Ok(()),
                ev = events.poll() => {
                    let ev = ev.map_err(|e| Some(format!("connection to {} lost: {e}", self.config.address)))?;
                    self.on_remote(ev).await.map_err(|Stopping| None)?;
                    self.flush_pending()?;
                }
                out = self.local.recv(), if self.pending.is_empty() => {
                    // The router dropped this side: a Kick, or a stuck queue, whose Close did
                    // not fit in the channel; or the broker is stopping.
                    let Some(out) = out else {
                        return Err(Some("this broker closed the bridge's connection".into())
                            .filter(|_| !self.local.broker_stopping()));
                    };
                    self.on_local(out).await?;
                }
                _ = self.acks_durable.moved(), if !self.acks_durable.is_empty() => {
                    self.release_durable();
                    self.flush_pending()?;
                }
                _ = tick.tick() => self.reporter.tick().await,
                // Last, so only when nothing else is ready: the acknowledgements gathered.
                _ = std::future::ready(()), if !self.acks_out.is_empty() => {
                    self.flush_acks().await.map_err(|Stopping| None)?;
                }
            }
        }
    }

    /// What the remote's event loop reports.
    async fn on_remote(&mut self, ev: Event) -> Result<(), Stopping> {
        match ev {
            Event::Outgoing(ROut::Publish(remote_pkid)) => match self.sent.pop_front() {
                Some((_, QoS::AtMostOnce)) => self.reporter.counters().sent += 1,
                Some(local) => {
                    self.in_flight.insert(remote_pkid, local);
                }
                None => {}
            },
            // The remote has it (a refusing PUBACK too: it will not take it, ever).
            Event::Incoming(RPacket::PubAck(ack)) => {
                if let Some(local) = self.in_flight.remove(&ack.pkid) {
                    self.reporter.counters().sent += 1;
                    self.ack_local(local).await?;
                }
            }
            Event::Incoming(RPacket::Publish(p)) => self.bring_in(p).await?,
            Event::Incoming(RPacket::SubAck(ack)) => {
                let refused: Vec<String> = ack
                    .return_codes
                    .iter()
                    .zip(self.config.topics.iter().filter(|r| r.direction.comes_in()))
                    .filter(|(code, _)| !matches!(code, SubscribeReasonCode::Success(_)))
                    .map(|(code, rule)| format!("{:?} ({code:?})", rule.remote_filter()))
                    .collect();
                if !refused.is_empty() {
                    let error = format!("the remote refused {}", refused.join(", "));
                    warn!(bridge = %self.config.name, %error);
                    self.reporter.status.last_error = Some(error);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A message from the remote: published here under its local name, or dropped (and
    /// acknowledged) if it has been here before or no rule brings it in.
    async fn bring_in(&mut self, p: RPublish) -> Result<(), Stopping> {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        let user = p
            .properties
            .as_ref()
            .map_or(&[][..], |pr| &pr.user_properties);
        let looped = super::has_been_in(user, self.broker_id);
        let local_topic = self.config.topics.iter().find_map(|r| r.to_local(&topic));
        let Some(local_topic) = local_topic.filter(|_| !looped) else {
            if looped {
                self.reporter.counters().loops += 1;
            }
            if p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce {
                self.pending.push_back(Pending::Ack(p));
            }
            return Ok(());
        };
        // QoS 2 crosses at QoS 1 here: the local hop is in-process.
        let qos = remote::from_remote_qos(p.qos).min(QoS::AtLeastOnce);
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            self.local.pkid()
        };
        let publish = Publish {
            topic: local_topic,
            payload: p.payload.clone(),
            qos,
            pkid,
            retain: p.retain,
            dup: false,
            props: Some(Box::new(props_in(p.properties.as_ref(), self.broker_id))),
            alias: 0,
        };
        self.local.send(Packet::Publish(publish)).await?;
        self.reporter.counters().received += 1;
        if qos != QoS::AtMostOnce {
            self.acks_owed.push_back(Answered::FromRemote(Box::new(p)));
        }
        Ok(())
    }

    /// What the router sends the bridge's local side.
    async fn on_local(&mut self, out: Outbound) -> Result<(), Option<String>> {
        match out {
            Outbound::Publish(p) => self.send_out(p).await.map_err(|Stopping| None)?,
            Outbound::PubRel(id) => self
                .local
                .send(Packet::PubComp(id))
                .await
                .map_err(|Stopping| None)?,
            Outbound::Acks(epoch) => self.answered(epoch, &[]).await.map_err(|Stopping| None)?,
            Outbound::AcksWith(epoch, codes) => self
                .answered(epoch, &codes)
                .await
                .map_err(|Stopping| None)?,
            Outbound::SubAck { codes, .. } => {
                if let Some(refused) = codes
                    .iter()
                    .position(|c| matches!(c, SubscribeCode::Refused(_)))
                {
                    let filter = self
                        .config
                        .topics
                        .iter()
                        .filter(|r| r.direction.goes_out())
                        .nth(refused)
                        .map(|r| r.local_filter())
                        .unwrap_or_default();
                    let error = format!("subscribing to {filter:?} here was refused");
                    warn!(bridge = %self.config.name, %error);
                    self.reporter.status.last_error = Some(error);
                }
            }
            Outbound::Close(reason) => {
                return Err(Some(format!("closed on this broker: {reason}")));
            }
            Outbound::ConnAck { .. }
            | Outbound::UnsubAck { .. }
            | Outbound::After(_)
            | Outbound::Hold(_) => {}
        }
        self.flush_pending()
    }

    /// The router answered the next packet that waited for it: a message the bridge
    /// published here (the remote may be told once `epoch` is on disk, 0: at once), or a
    /// PUBREC (the exchange ends with PUBCOMP).
    async fn answered(
        &mut self,
        epoch: u64,
        codes: &[(AckKind, u16, Reason)],
    ) -> Result<(), Stopping> {
        let p = match self.acks_owed.pop_front() {
            Some(Answered::FromRemote(p)) => *p,
            Some(Answered::Released(id)) => return self.local.send(Packet::PubComp(id)).await,
            None => return Ok(()),
        };
        if codes.iter().any(|(_, _, r)| r.is_error()) {
            let c = self.reporter.counters();
            c.refused += 1;
            c.received = c.received.saturating_sub(1);
        }
        self.acks_durable.push(epoch, p);
        self.release_durable();
        Ok(())
    }

    /// Acknowledges to the remote, in order, what is on disk here.
    fn release_durable(&mut self) {
        for p in self.acks_durable.ready() {
            self.pending.push_back(Pending::Ack(p));
        }
    }

    /// A message for the remote, from the local session.
    async fn send_out(&mut self, p: OutPublish) -> Result<(), Stopping> {
        let local = (p.pkid, p.qos);
        let remote_topic = self
            .config
            .topics
            .iter()
            .find_map(|r| r.to_remote(&p.msg.topic));
        let hops = p.msg.props.as_ref().map_or(0, |pr| {
            pr.user.iter().filter(|(k, _)| k == PATH_KEY).count()
        });
        let expired = p.msg.expired();
        let Some(topic) = remote_topic.filter(|_| hops < MAX_HOPS && !expired) else {
            // A subscription of an older configuration of the bridge, a message gone round
            // too many brokers, or one that expired on the way: acknowledged, not sent.
            if hops >= MAX_HOPS {
                self.reporter.counters().loops += 1;
            }
            return self.ack_local(local).await;
        };
        let props = props_out(p.msg.props.as_deref(), self.broker_id);
        // At most QoS 1 to the remote (see `config::TopicRule::check`).
        self.pending.push_back(Pending::Publish {
            topic,
            qos: p.qos.min(QoS::AtLeastOnce),
            retain: p.retain,
            payload: p.msg.payload.clone(),
            props,
            local,
        });
        Ok(())
    }

    /// Tells the router a message it sent the bridge is done with. A QoS 2 one (from a
    /// subscription an older configuration made) takes PUBREC, the router's `Acks` for it,
    /// then PUBCOMP, as a connection's client would go.
    async fn ack_local(&mut self, (pkid, qos): (u16, QoS)) -> Result<(), Stopping> {
        match qos {
            QoS::AtMostOnce => Ok(()),
            // Gathered, and sent to the router together when the bridge has nothing else to
            // do: one message for a run of acknowledgements, not one each.
            QoS::AtLeastOnce => {
                self.acks_out.push(Packet::PubAck(pkid));
                Ok(())
            }
            QoS::ExactlyOnce => {
                self.flush_acks().await?;
                self.local.send(Packet::PubRec(pkid)).await?;
                self.acks_owed.push_back(Answered::Released(pkid));
                Ok(())
            }
        }
    }

    async fn flush_acks(&mut self) -> Result<(), Stopping> {
        if self.acks_out.is_empty() {
            return Ok(());
        }
        let acks = std::mem::take(&mut self.acks_out);
        self.local.send_all(acks).await
    }

    /// Hands the remote's client what waits, in order, until its channel is full.
    fn flush_pending(&mut self) -> Result<(), Option<String>> {
        while let Some(next) = self.pending.pop_front() {
            let result = match &next {
                Pending::Publish {
                    topic,
                    qos,
                    retain,
                    payload,
                    props,
                    ..
                } => self.client.try_publish_with_properties(
                    topic.clone(),
                    remote::to_remote_qos(*qos as u8),
                    *retain,
                    payload.clone(),
                    props.clone(),
                ),
                Pending::Ack(p) => self.client.try_ack(p),
            };
            match result {
                Ok(()) => {
                    if let Pending::Publish { local, .. } = next {
                        self.sent.push_back(local);
                    }
                }
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => {
                    self.pending.push_front(next);
                    break;
                }
            }
        }
        if self.pending.len() > MAX_PENDING {
            return Err(Some(
                "the remote sends faster than the bridge can acknowledge".into(),
            ));
        }
        Ok(())
    }
}

/// A remote message's properties as this broker keeps them, with this broker added to its
/// path: whichever way it leaves again (this bridge, another, or another broker's bridge
/// taking it from here), it is known here when it comes back. The remote's subscription
/// identifiers are the bridge's own business and stay behind.
fn props_in(p: Option<&PublishProperties>, broker_id: &str) -> MessageProps {
    let mut props = MessageProps::default();
    if let Some(p) = p {
        props = MessageProps {
            payload_utf8: p.payload_format_indicator == Some(1),
            expiry: p.message_expiry_interval.map(Expiry::starting_now),
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user: p.user_properties.clone(),
            subscription_ids: Vec::new(),
        };
    }
    if !super::has_been_in(&props.user, broker_id) {
        props.user.push((PATH_KEY.to_owned(), broker_id.to_owned()));
    }
    props
}

/// A local message's properties for the remote, with this broker on its path.
fn props_out(p: Option<&MessageProps>, broker_id: &str) -> PublishProperties {
    let mut out = PublishProperties::default();
    if let Some(p) = p {
        out.payload_format_indicator = p.payload_utf8.then_some(1);
        out.message_expiry_interval = p.expiry.and_then(|e| e.left(Instant::now()));
        out.content_type = p.content_type.clone();
        out.response_topic = p.response_topic.clone();
        out.correlation_data = p.correlation_data.clone();
        out.user_properties = p.user.clone();
    }
    if !super::has_been_in(&out.user_properties, broker_id) {
        out.user_properties
            .push((PATH_KEY.to_owned(), broker_id.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_cross_both_ways_and_the_path_grows() {
        let local = MessageProps {
            payload_utf8: true,
            expiry: Some(Expiry::starting_now(60)),
            content_type: Some("text/plain".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user: vec![("k".into(), "v".into()), (PATH_KEY.into(), "other".into())],
            subscription_ids: vec![3],
        };
        let out = props_out(Some(&local), "me");
        assert_eq!(out.payload_format_indicator, Some(1));
        assert!(matches!(out.message_expiry_interval, Some(59 | 60)));
        assert!(out.subscription_identifiers.is_empty());
        assert!(super::super::has_been_in(&out.user_properties, "other"));
        assert!(super::super::has_been_in(&out.user_properties, "me"));
        assert_eq!(
            props_out(Some(&props_in(Some(&out), "me")), "me")
                .user_properties
                .len(),
            3,
            "once on the path"
        );
        let back = props_in(Some(&out), "you");
        assert_eq!(back.content_type.as_deref(), Some("text/plain"));
        assert_eq!(back.user.len(), 4);
        assert!(super::super::has_been_in(&back.user, "you"));
        assert!(back.subscription_ids.is_empty());
        let bare = props_out(None, "me");
        assert_eq!(
            bare.user_properties,
            [(PATH_KEY.to_owned(), "me".to_owned())]
        );
        assert_eq!(
            props_in(None, "me").user,
            [(PATH_KEY.to_owned(), "me".to_owned())]
        );
    }
}
