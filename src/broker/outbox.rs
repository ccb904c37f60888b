//! The router's channel to one connection: bounded, one sender (the router), one receiver (the
//! connection task), and no memory for messages while none wait.
//!
//! Why not `tokio::sync::mpsc`: its channel allocates, at creation, a shared part padded to
//! cache lines (about 500 B) and a first block of 32 slots (about 800 B for `Outbound`), and
//! keeps the block for the channel's life. Every connection has one, and most connections are
//! idle: that was a kB each. Here the shared part is one small allocation and the messages
//! live in a `VecDeque` that is allocated when a message comes and freed when the receiver has
//! taken the last one. The router only ever uses `try_send`, so the sender never waits; a
//! mutex held for a push or a pop is all the two sides share.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

pub(crate) use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

/// Room made on the first message after the queue was empty: a burst grows it from there.
const FIRST_ROOM: usize = 16;

struct State<T> {
    items: VecDeque<T>,
    /// At most this many messages wait.
    bound: usize,
    sender_alive: bool,
    receiver_alive: bool,
    /// The receiver, waiting in `recv`.
    waker: Option<Waker>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    /// The sender found the channel full and waits to hear that it has room again (see
    /// `Receiver::room_regained`). Here rather than in an allocation of its own: one per
    /// connection, and most connections are idle.
    room_wanted: AtomicBool,
}

type Shared<T> = Arc<Inner<T>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    // Neither side panics while holding it; a poisoned lock still holds a sound queue.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A channel for at most `bound` messages.
pub(crate) fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bound,
            sender_alive: true,
            receiver_alive: true,
            waker: None,
        }),
        room_wanted: AtomicBool::new(false),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The router's end.
pub(crate) struct Sender<T> {
    shared: Shared<T>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outbox::Sender")
    }
}

impl<T> Sender<T> {
    /// Queues a message if there is room and the receiver is still there; never waits.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = lock(&self.shared);
        if !state.receiver_alive {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= state.bound {
            return Err(TrySendError::Full(item));
        }
        if state.items.capacity() == 0 {
            let room = FIRST_ROOM.min(state.bound);
            state.items.reserve(room);
        }
        state.items.push_back(item);
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Asks to be told when the channel has room again (the receiver's `room_regained`), then
    /// the free slots now. Paired with `room_regained`: the flag is set before the channel is
    /// looked at, so one of the two sides always sees the other.
    pub fn want_room(&self) -> usize {
        self.shared.room_wanted.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.capacity()
    }

    /// Whether the sender asked to be told of room (tests).
    #[cfg(test)]
    pub fn room_wanted(&self) -> bool {
        self.shared.room_wanted.load(Ordering::SeqCst)
    }

    /// Free slots now. With one sender, room seen here is still there for the next `try_send`.
    pub fn capacity(&self) -> usize {
        let state = lock(&self.shared);
        state.bound.saturating_sub(state.items.len())
    }

    /// One slot, checked now and filled by `Permit::send` (with one sender nobody else can take
    /// it meanwhile).
    pub fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let state = lock(&self.shared);
        if !state.receiver_alive {
            Err(TrySendError::Closed(()))
        } else if state.items.len() >= state.bound {
            Err(TrySendError::Full(()))
        } else {
            Ok(Permit { sender: self })
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.sender_alive = false;
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A slot `Sender::try_reserve` found free.
pub(crate) struct Permit<'a, T> {
    sender: &'a Sender<T>,
}

impl<T> Permit<'_, T> {
    pub fn send(self, item: T) {
        // Only a receiver that left since can refuse it, and then nobody wants it.
        let _ = self.sender.try_send(item);
    }
}

/// The connection's end.
pub(crate) struct Receiver<T> {
    shared: Shared<T>,
}

impl<T> Receiver<T> {
    /// The next message; None once the sender is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// `recv` as a poll: the next message, None once the sender is gone and nothing is left,
    /// or Pending (and this task is woken when that changes).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(&self.shared);
        if let Some(item) = take(&mut state) {
            return Poll::Ready(Some(item));
        }
        if !state.sender_alive {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Ready once a message waits or the sender is gone, taking nothing: how the parking lot
    /// watches an idle connection's channel for it (see `parking`).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.shared);
        if !state.items.is_empty() || !state.sender_alive {
            return Poll::Ready(());
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = lock(&self.shared);
        match take(&mut state) {
            Some(item) => Ok(item),
            None if state.sender_alive => Err(TryRecvError::Empty),
            None => Err(TryRecvError::Disconnected),
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        lock(&self.shared).items.len()
    }

    /// Whether to tell the router this channel has room again: it found the channel full and
    /// asked (`Sender::want_room`), and the channel has drained to half since; the wish is
    /// cleared when so. The router sets the flag and then looks at the channel again; the
    /// receiver drains, fences (here) and then looks at the flag, so one of the two always sees
    /// the other, on weakly ordered CPUs too.
    #[inline]
    pub fn room_regained(&self, capacity: usize) -> bool {
        let wanted = &self.shared.room_wanted;
        fence(Ordering::SeqCst);
        wanted.load(Ordering::Relaxed)
            && self.len() <= capacity / 2
            && wanted.swap(false, Ordering::SeqCst)
    }

    /// The sender is gone: what is queued is all there will be.
    pub fn is_closed(&self) -> bool {
        !lock(&self.shared).sender_alive
    }
}

/// The front message; the queue's memory goes back once it is empty.
fn take<T>(state: &mut State<T>) -> Option<T> {
    let item = state.items.pop_front()?;
    if state.items.is_empty() {
        state.items = VecDeque::new();
    }
    Some(item)
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.receiver_alive = false;
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_in_order() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.capacity(), 2);
        tx.try_send(1).unwrap();
        tx.try_reserve().unwrap().send(2);
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(tx.capacity(), 1);
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn empty_queue_holds_no_memory() {
        let (tx, mut rx) = channel(100);
        for i in 0..50 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert_eq!(lock(&rx.shared).items.capacity(), 0);
    }

    #[test]
    fn either_side_leaving_is_seen() {
        let (tx, mut rx) = channel(4);
        tx.try_send(1).unwrap();
        drop(tx);
        assert!(rx.is_closed());
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

        let (tx, rx) = channel(4);
        drop(rx);
        assert!(matches!(tx.try_send(1), Err(TrySendError::Closed(1))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
    }

    #[tokio::test]
    async fn recv_wakes_for_a_message_and_for_the_end() {
        let (tx, mut rx) = channel(4);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.try_send(7).unwrap();
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), (Some(7), None));
    }
}
