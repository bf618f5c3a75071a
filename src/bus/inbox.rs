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

    /// The next message of `lane`, if any.
    pub(crate) fn try_recv(&self, lane: Lane) -> Option<ShardMsg> {
        match lane {
            Lane::Control => self.control.try_recv().ok(),
            Lane::Data => self.data.try_recv().ok(),
        }
    }

    /// Messages waiting in both lanes.
    pub fn len(&self) -> usize {
        self.control.len() + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty()
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
}
