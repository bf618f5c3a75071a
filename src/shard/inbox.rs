//! A shard's inbox: the only way other threads reach a shard. A bounded
//! crossbeam channel plus the shard's `mio::Waker`; the shard drains it in
//! bounded batches each loop turn.

use std::io;
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

/// The sending side, cloneable, held by the server and (later) other shards.
#[derive(Clone)]
pub struct ShardHandle {
    tx: Sender<ShardMsg>,
    waker: Arc<mio::Waker>,
}

impl ShardHandle {
    pub fn new(tx: Sender<ShardMsg>, waker: Arc<mio::Waker>) -> Self {
        ShardHandle { tx, waker }
    }

    /// Delivers `msg` without blocking; a full inbox returns it to the caller,
    /// who counts a drop instead of stalling its own loop.
    pub fn send(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                // Wake only on empty -> non-empty (checked after the push, so
                // a drain racing with us cannot lose the wake-up): a woken
                // shard drains until the inbox is empty.
                if self.tx.len() == 1 {
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

pub type Inbox = Receiver<ShardMsg>;
