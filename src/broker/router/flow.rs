//! Flow control: a subscriber slower than a burst holds its publishers back instead of losing
//! messages, and a subscriber that is stuck stops holding anyone back.
//!
//! When a PUBLISH takes a subscriber's queue past its high-water mark, the publisher's
//! connection is told to stop reading (`Outbound::Hold`): the messages wait in its socket, and
//! TCP pushes back on the client. When the queue is back under half of the mark, every publisher
//! it held reads again. A queue that has not moved for the stall deadline belongs to a client
//! that is not reading at all (a dead ESP32, a paused debugger): it lets its publishers go, so
//! that one client cannot freeze a room, and from then on what overflows its queue is dropped
//! and counted (or, with `OnStuck::Disconnect`, it is disconnected).
//!
//! A publisher is never held by its own queue (a client subscribed to what it publishes would
//! wait for acknowledgements it cannot send while it is not read from). Two clients that feed
//! each other's queues in a burst can hold each other; the stall deadline ends that too. A
//! subscriber found stuck while it is itself held back (its acknowledgements wait unread in its
//! socket) is let go of like any stuck one, but never disconnected for it: its queue stood still
//! because of us.

use std::time::Instant;

use tracing::{debug, warn};

use super::Router;
use crate::broker::config::OnStuck;
use crate::broker::events::EventKind;
use crate::broker::link::{CloseReason, Outbound};
use crate::broker::session::Holding;
use crate::broker::table::SessionIdx;

impl Router {
    /// `sub`'s queue is over its high-water mark after a message from `publisher`: hold that
    /// publisher's connection back until the queue drains.
    pub(super) fn hold(&mut self, sub: SessionIdx, publisher: SessionIdx) {
        let Some(conn) = self.sessions[publisher]
            .as_ref()
            .and_then(|p| p.online.as_ref())
            .map(|o| o.conn)
        else {
            return;
        };
        let s = self.session(sub);
        let out = s.messages_out;
        let holding = s.holding.get_or_insert_with(|| {
            Box::new(Holding {
                publishers: Vec::new(),
                out_at: out,
                moved_at: Instant::now(),
            })
        });
        if holding.publishers.contains(&conn) {
            return;
        }
        holding.publishers.push(conn);
        debug!(subscriber = %s.client_id, publisher = conn, queued = s.queued_len(), "holding a publisher back");
        let p = self.session(publisher);
        if let Some(online) = p.online.as_mut() {
            online.held_by += 1;
            if online.held_by == 1 {
                p.answer(Outbound::Hold(true));
            }
        }
    }

    /// Lets go of every publisher `sub` holds back.
    pub(super) fn release(&mut self, sub: SessionIdx) {
        let Some(holding) = self.sessions[sub].as_mut().and_then(|s| s.holding.take()) else {
            return;
        };
        for conn in holding.publishers {
            // Gone since: nothing to release.
            let Some(&p) = self.by_conn.get(&conn) else {
                continue;
            };
            let p = self.session(p);
            if let Some(online) = p.online.as_mut() {
                online.held_by = online.held_by.saturating_sub(1);
                if online.held_by == 0 {
                    p.answer(Outbound::Hold(false));
                }
            }
        }
    }

    /// `sub`'s queue may have moved (an acknowledgement, room in its connection): once it is
    /// under half its high-water mark, its publishers read again and it is no longer stuck.
    pub(super) fn progressed(&mut self, sub: SessionIdx) {
        let Some(s) = self.sessions[sub].as_mut() else {
            return;
        };
        if (s.holding.is_none() && !s.stuck) || !s.under_low_water() {
            return;
        }
        if s.stuck {
            s.stuck = false;
            let who = s.client_id.clone();
            self.events.push(
                EventKind::Stuck,
                &*who,
                "reads again: its queue has drained".to_owned(),
            );
        }
        self.release(sub);
    }

    /// Looks for subscribers whose queue has not moved for the stall deadline while holding
    /// publishers back. Called a few times per deadline.
    pub(super) fn check_stalls(&mut self) {
        let now = Instant::now();
        let mut stuck = Vec::new();
        for (idx, s) in self.sessions.iter_mut().enumerate() {
            let Some(s) = s.as_mut() else { continue };
            let out = s.messages_out;
            let Some(h) = s.holding.as_mut() else {
                continue;
            };
            if h.out_at != out {
                h.out_at = out;
                h.moved_at = now;
            } else if now.duration_since(h.moved_at) >= self.stall_timeout {
                stuck.push(idx);
            }
        }
        for idx in stuck {
            let s = self.session(idx);
            s.stuck = true;
            let held = s.online.as_ref().is_some_and(|o| o.held_by > 0);
            let who = s.client_id.clone();
            let queued = s.queued_len();
            let secs = self.stall_timeout.as_secs_f32();
            self.release(idx);
            match (self.on_stuck, held) {
                (OnStuck::Drop, _) | (OnStuck::Disconnect, true) => {
                    warn!(client_id = %who, queued, "subscriber stuck: its queue has not moved for {secs} s; it holds no publisher back now, and what overflows its queue is dropped");
                    self.events.push(
                        EventKind::Stuck,
                        &*who,
                        format!("stuck: its queue ({queued} messages) has not moved for {secs} s; publishers go on without it, and what overflows its queue is dropped"),
                    );
                }
                (OnStuck::Disconnect, false) => {
                    warn!(client_id = %who, queued, "subscriber stuck: its queue has not moved for {secs} s; disconnecting it");
                    self.detach(idx, CloseReason::Stuck(self.stall_timeout));
                }
            }
        }
    }
}
