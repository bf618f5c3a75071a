//! A shard's inbox: the only way other threads reach a shard. Two crossbeam
//! channels ("lanes") plus the shard's `mio::Waker`; the shard drains them in
//! bounded batches each loop turn, control first.
//!
//! - The **control** lane (subscribe, unsubscribe and their answers, command
//!   replies, users online/offline, kicks, shutdown, cluster sync) never drops:
//!   it is unbounded in type and bounded by construction, since every control
//!   message is caused by a rate-limited client command, a connection event or
//!   an operator's call, never by message volume.
//! - The **data** lane (deliveries) is bounded; when it is full the sender
//!   gets the message back, counts a drop, and tells the receiver of the gap
//!   on the control lane (`hub::Hub::send`).
//!
//! Order between the lanes ([`Inbox::next`]): a data message is never
//! handled while a control message sent before it waits. A sender that puts
//! a subscribe's answer on the control lane and then the channel's next
//! publication on the data lane has it handled in that order, even when the
//! shard looked at the control lane between the two sends. The other way
//! round (data sent before a control message, handled after it) is the
//! hub's to order: the messages that need it carry the sender's count of
//! deliveries (`HubMsg::Deliver::seq`, `HubMsg::RoomDeliver::seq`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Messages a shard accepts from other threads.
#[derive(Debug)]
pub enum ShardMsg {
    /// Stop accepting, close every connection with 1001, exit when they are
    /// gone or the drain window ends.
    Shutdown,
    /// Rooms, channels and users (see `hub::msg`).
    Hub(super::msg::HubMsg),
}

/// Capacity of each inbox's data lane.
pub(crate) const INBOX_CAPACITY: usize = 4096;

/// Which lane a message travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Never dropped.
    Control,
    /// Dropped (counted, the receiver told) when full.
    Data,
}

impl ShardMsg {
    pub(crate) fn lane(&self) -> Lane {
        match self {
            ShardMsg::Shutdown => Lane::Control,
            ShardMsg::Hub(msg) => msg.lane(),
        }
    }
}

/// The sending side, cloneable, held by the server and the other shards.
#[derive(Clone)]
pub struct ShardHandle {
    control: Sender<ShardMsg>,
    data: Sender<ShardMsg>,
    waker: Arc<mio::Waker>,
    /// Set by the first sender after the shard last began draining; only
    /// that sender pays for the wake-up (an eventfd write).
    notified: Arc<AtomicBool>,
}

/// The receiving side, owned by the shard.
pub struct Inbox {
    control: Receiver<ShardMsg>,
    data: Receiver<ShardMsg>,
    notified: Arc<AtomicBool>,
    /// A data message taken while control messages (possibly sent before
    /// it) were waiting: handled once the control lane is empty.
    held: Option<ShardMsg>,
}

/// How many messages of each lane one drain may still hand out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub control: usize,
    pub data: usize,
}

/// A shard's inbox and the handle others send through.
pub fn channel(waker: Arc<mio::Waker>) -> (ShardHandle, Inbox) {
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let (data_tx, data_rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
    let notified = Arc::new(AtomicBool::new(false));
    (
        ShardHandle {
            control: control_tx,
            data: data_tx,
            waker,
            notified: Arc::clone(&notified),
        },
        Inbox {
            control: control_rx,
            data: data_rx,
            notified,
            held: None,
        },
    )
}

impl ShardHandle {
    /// Delivers `msg` without blocking, in its lane. A full data lane returns
    /// it to the caller, who counts a drop instead of stalling its own loop; a
    /// control message comes back only when the shard is gone.
    pub fn send(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        let lane = match msg.lane() {
            Lane::Control => &self.control,
            Lane::Data => &self.data,
        };
        match lane.try_send(msg) {
            Ok(()) => {
                // The shard clears `notified` before it drains, so a message
                // pushed after that clear always finds it false and wakes
                // the shard; one pushed before it is drained anyway.
                if !self.notified.swap(true, Ordering::SeqCst) {
                    let _ = self.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => Err(m),
        }
    }

    fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }
}

impl Inbox {
    /// Call before draining: later senders will wake the shard again.
    pub(crate) fn begin_drain(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }

    /// The next message of `lane`, if any, ignoring the other lane (tests
    /// that choose the order of every message).
    #[cfg(test)]
    pub(crate) fn try_recv(&self, lane: Lane) -> Option<ShardMsg> {
        match lane {
            Lane::Control => self.control.try_recv().ok(),
            Lane::Data => self.data.try_recv().ok(),
        }
    }

    /// The next message to handle within `budget`: control first, and a data
    /// message only when no control message waits. The control lane is
    /// looked at again after a data message is taken: a control message sent
    /// before that data message is visible then (the sender's two sends are
    /// ordered, and taking the data message synchronises with the second),
    /// so it goes first and the data message is held until the lane is
    /// empty. `None`: nothing more this turn (both empty, or a budget spent
    /// while control messages wait, which then also hold back data).
    pub(crate) fn next(&mut self, budget: &mut Budget) -> Option<(Lane, ShardMsg)> {
        loop {
            if budget.control > 0 {
                if let Ok(msg) = self.control.try_recv() {
                    budget.control -= 1;
                    return Some((Lane::Control, msg));
                }
            } else if !self.control.is_empty() {
                return None;
            }
            if let Some(msg) = self.held.take() {
                return Some((Lane::Data, msg));
            }
            if budget.data == 0 {
                return None;
            }
            let msg = self.data.try_recv().ok()?;
            budget.data -= 1;
            if self.control.is_empty() {
                return Some((Lane::Data, msg));
            }
            self.held = Some(msg);
        }
    }

    /// Messages waiting in both lanes.
    pub fn len(&self) -> usize {
        self.control.len() + self.data.len() + usize::from(self.held.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty() && self.held.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::msg::HubMsg;

    fn deliver() -> ShardMsg {
        ShardMsg::Hub(HubMsg::RoomDeliver {
            room: "r".into(),
            frame: bytes::Bytes::new(),
            at: std::time::Instant::now(),
            from: 0,
            seq: 0,
        })
    }

    #[test]
    fn a_full_data_lane_never_stops_control_messages() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (handle, inbox) = channel(waker);
        for _ in 0..INBOX_CAPACITY {
            assert!(handle.send(deliver()).is_ok());
        }
        assert!(handle.send(deliver()).is_err(), "data is dropped when full");
        assert!(handle.send(ShardMsg::Shutdown).is_ok(), "control is not");
        assert!(matches!(inbox.try_recv(Lane::Control), Some(ShardMsg::Shutdown)));
        assert_eq!(inbox.len(), INBOX_CAPACITY);
    }

    fn is_deliver(next: Option<(Lane, ShardMsg)>) -> bool {
        matches!(next, Some((Lane::Data, ShardMsg::Hub(HubMsg::RoomDeliver { .. }))))
    }

    #[test]
    fn no_data_message_is_handed_out_while_a_control_message_waits() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (handle, mut inbox) = channel(waker);
        handle.send(deliver()).unwrap();
        handle.send(ShardMsg::Shutdown).unwrap();
        handle.send(ShardMsg::Shutdown).unwrap();
        let mut budget = Budget { control: 1, data: 8 };
        assert!(matches!(inbox.next(&mut budget), Some((Lane::Control, _))));
        assert!(
            inbox.next(&mut budget).is_none(),
            "control budget spent with control waiting: data waits too"
        );
        let mut budget = Budget { control: 8, data: 8 };
        assert!(matches!(inbox.next(&mut budget), Some((Lane::Control, _))));
        assert!(is_deliver(inbox.next(&mut budget)));
        assert!(inbox.next(&mut budget).is_none() && inbox.is_empty());
        // A data message taken while control arrived is held, not lost,
        // and counted as waiting.
        handle.send(deliver()).unwrap();
        let mut budget = Budget { control: 0, data: 8 };
        assert!(is_deliver(inbox.next(&mut budget)), "control empty: data goes");
        handle.send(deliver()).unwrap();
        inbox.held = inbox.data.try_recv().ok();
        handle.send(ShardMsg::Shutdown).unwrap();
        assert_eq!(inbox.len(), 2);
        assert!(
            inbox.next(&mut budget).is_none(),
            "held behind the waiting control message"
        );
        let mut budget = Budget { control: 1, data: 0 };
        assert!(matches!(inbox.next(&mut budget), Some((Lane::Control, _))));
        assert!(
            is_deliver(inbox.next(&mut budget)),
            "then the held one, outside the data budget"
        );
        assert!(inbox.is_empty());
    }
}
