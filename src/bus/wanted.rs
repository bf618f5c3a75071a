//! Which channels this node keeps a log of (cluster mode). A node's
//! subscriber connection is subscribed by name to the channels it holds
//! (over plain TCP) or to every publication by pattern (`rediss://`, and
//! briefly a channel whose log was just dropped); it asks this set before
//! it passes a publication to the channel's owner shard, so a node's
//! shards wake only for the channels they hold (a node with no subscriber
//! of a busy channel, e.g. the one its publishers use, skips it). The
//! shard that holds the connection also asks it before it unsubscribes a
//! dropped channel: one made again meanwhile stays subscribed.
//!
//! Each owner shard adds a channel when it makes the channel's log, before
//! it asks Redis for the channel's position, and removes it when it drops
//! the log. A publication Redis ran after that position was read reaches
//! the subscriber connection after the channel was added, so none that the log
//! needs is skipped; one from before the position is not needed (it is in
//! Redis's history for recovery).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The channels with a log on this node; shared by the owner shards
/// (writers, when a log is made or dropped) and the subscriber
/// connections (a lookup per publication).
#[derive(Debug, Default)]
pub struct Wanted {
    channels: Mutex<HashSet<Arc<str>>>,
}

impl Wanted {
    pub fn add(&self, channel: &Arc<str>) {
        self.lock().insert(Arc::clone(channel));
    }

    pub fn remove(&self, channel: &str) {
        self.lock().remove(channel);
    }

    pub fn contains(&self, channel: &str) -> bool {
        self.lock().contains(channel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<str>>> {
        // A panic while holding it left a whole set: still usable.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_wanted_from_add_to_remove() {
        let wanted = Wanted::default();
        let chat: Arc<str> = "chat".into();
        assert!(!wanted.contains("chat"));
        wanted.add(&chat);
        assert!(wanted.contains("chat"));
        assert!(!wanted.contains("chat2"));
        wanted.remove("chat");
        assert!(!wanted.contains("chat"));
    }
}
