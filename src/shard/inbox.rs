//! A shard's inbox: the only way other threads reach a shard. A bounded
//! crossbeam channel plus the shard's `mio::Waker`; the shard drains it in
//! bounded batches each loop turn.

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
    Hub(crate::hub::msg::HubMsg),
}

/// Capacity of each inbox.
pub const INBOX_CAPACITY: usize = 4096;

/// The sending side, cloneable, held by the server and the other shards.
#[derive(Clone)]
pub struct ShardHandle {
    tx: Sender<ShardMsg>,
    waker: Arc<mio::Waker>,
    /// Set by the first sender after the shard last began draining; only
    /// that sender pays for the wake-up (an eventfd write).
    notified: Arc<AtomicBool>,
}

/// The receiving side, owned by the shard.
pub struct Inbox {
    rx: Receiver<ShardMsg>,
    notified: Arc<AtomicBool>,
}

/// A shard's inbox and the handle others send through.
pub fn channel(waker: Arc<mio::Waker>) -> (ShardHandle, Inbox) {
    let (tx, rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
    let notified = Arc::new(AtomicBool::new(false));
    (
        ShardHandle {
            tx,
            waker,
            notified: Arc::clone(&notified),
        },
        Inbox { rx, notified },
    )
}

impl ShardHandle {
    /// Delivers `msg` without blocking; a full inbox returns it to the caller,
    /// who counts a drop instead of stalling its own loop.
    pub fn send(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        match self.tx.try_send(msg) {
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
    pub fn begin_drain(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }

    pub fn try_recv(&self) -> Result<ShardMsg, crossbeam_channel::TryRecvError> {
        self.rx.try_recv()
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}
