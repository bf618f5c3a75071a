//! Every shard's inbox handle, and the one place that sends to them: by
//! index, to a name's owner, or to all but the sender. Whatever a full data
//! lane refuses comes back to the caller (who tells the receiver of the gap or
//! answers its client) and is counted here, so no caller can forget to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::inbox::{ShardHandle, ShardMsg};
use super::msg::HubMsg;
use super::owner_of;

/// The shards as seen by one sender (a shard, the admin API or a bridge
/// thread). Clones share the drop count.
#[derive(Clone)]
pub struct Peers {
    shards: Arc<[ShardHandle]>,
    dropped: Arc<AtomicU64>,
}

impl Peers {
    pub fn new(shards: Arc<[ShardHandle]>) -> Peers {
        Peers {
            shards,
            dropped: Arc::default(),
        }
    }

    /// The same shards with a drop count of its own (one per sender).
    pub(crate) fn for_sender(&self) -> Peers {
        Peers::new(Arc::clone(&self.shards))
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard that owns `name` (channel, room or user).
    pub fn owner_of(&self, name: &str) -> usize {
        owner_of(name, self.shards.len())
    }

    /// Sends `msg` to `shard` in its lane. A full data lane (or a shard that
    /// is gone) gives it back, counted.
    pub fn to(&self, shard: usize, msg: HubMsg) -> Result<(), HubMsg> {
        match self.shards[shard].send(ShardMsg::Hub(msg)) {
            Ok(()) => Ok(()),
            Err(returned) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                match returned {
                    ShardMsg::Hub(msg) => Err(msg),
                    ShardMsg::Shutdown => unreachable!("a hub message comes back as itself"),
                }
            }
        }
    }

    /// Sends `msg` to the owner of `name`.
    pub(crate) fn to_owner(&self, name: &str, msg: HubMsg) -> Result<(), HubMsg> {
        self.to(self.owner_of(name), msg)
    }

    /// Sends one message made by `make` to every shard but `me` (`None`:
    /// to every shard); returns the shards that refused theirs, with it.
    pub(crate) fn to_others(&self, me: Option<usize>, mut make: impl FnMut() -> HubMsg) -> Vec<(usize, HubMsg)> {
        let mut refused = Vec::new();
        for shard in (0..self.shards.len()).filter(|&s| Some(s) != me) {
            if let Err(msg) = self.to(shard, make()) {
                refused.push((shard, msg));
            }
        }
        refused
    }

    /// Tells every shard to drain (control lane: only a shard that is gone
    /// refuses). Returns how many could not be told.
    pub(crate) fn shutdown_all(&self) -> usize {
        self.shards
            .iter()
            .filter(|s| s.send(ShardMsg::Shutdown).is_err())
            .count()
    }

    /// Messages this sender (and its clones) could not deliver so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::inbox::{channel, Lane, INBOX_CAPACITY};
    use std::time::Instant;

    fn deliver() -> HubMsg {
        HubMsg::RoomDeliver {
            room: "r".into(),
            frame: bytes::Bytes::new(),
            at: Instant::now(),
            from: 0,
            seq: 0,
        }
    }

    #[test]
    fn a_full_lane_gives_the_message_back_and_counts_it() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (a, inbox_a) = channel(Arc::clone(&waker));
        let (b, _inbox_b) = channel(waker);
        let peers = Peers::new(vec![a, b].into());
        for _ in 0..INBOX_CAPACITY {
            assert!(peers.to(1, deliver()).is_ok());
        }
        assert!(matches!(peers.to(1, deliver()), Err(HubMsg::RoomDeliver { .. })));
        assert_eq!(peers.dropped(), 1);
        let refused = peers.to_others(Some(0), deliver);
        assert_eq!(refused.len(), 1, "shard 1 is full, shard 0 is the sender");
        assert_eq!(refused[0].0, 1);
        assert!(inbox_a.try_recv(Lane::Data).is_none(), "the sender is skipped");
        assert_eq!(peers.dropped(), 2);
        let own = peers.for_sender();
        assert!(own.to(1, deliver()).is_err());
        assert_eq!((peers.dropped(), own.dropped()), (2, 1), "each sender counts its own");
        assert_eq!(peers.shutdown_all(), 0, "control is never refused");
    }
}
