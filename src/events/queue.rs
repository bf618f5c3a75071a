//! One sink's queue: a channel whose bound is in bytes (the events' weight,
//! queued and in flight), and the sink's counters. Shards push without ever
//! waiting: an event that does not fit is dropped and counted. Its charge
//! to the memory budget is the event's own (`held.rs`), shared by the sinks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::held::Held;
use super::Kind;
use crate::metrics::names;

/// Why events were dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Dropped {
    /// The sink held `--events-max-bytes` already (the application was
    /// down or slow for too long).
    QueueFull = 0,
    /// The webhook answered 4xx (other than 408 and 429): the batch would
    /// never be taken, so it is not retried.
    Rejected,
    /// Still queued when the server stopped, after a last try.
    Shutdown,
}

impl Dropped {
    const ALL: [Dropped; 3] = [Dropped::QueueFull, Dropped::Rejected, Dropped::Shutdown];

    fn label(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::Rejected => "rejected",
            Dropped::Shutdown => "shutdown",
        }
    }
}

/// A sink's queue, shared by every shard's emitter and the sink's thread.
pub(crate) struct Queue {
    /// `stream` or `webhook` (the `sink` label).
    pub sink: &'static str,
    tx: Sender<Held>,
    /// Bytes of events pushed and not yet sent or dropped (each in full,
    /// though the sinks share it: this is the sink's own bound).
    held: AtomicUsize,
    max: usize,
    sent: AtomicU64,
    dropped: [AtomicU64; 3],
    retries: AtomicU64,
}

impl Queue {
    pub fn new(sink: &'static str, max: usize) -> (Arc<Queue>, Receiver<Held>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let queue = Queue {
            sink,
            tx,
            held: AtomicUsize::new(0),
            max,
            sent: AtomicU64::new(0),
            dropped: Default::default(),
            retries: AtomicU64::new(0),
        };
        (Arc::new(queue), rx)
    }

    /// Queues `event` if its weight fits under the bound; else drops it,
    /// counted. Never blocks. Publications may fill `PUBLISH_SHARE` of the
    /// bound only, so a publishing flood cannot crowd out the connects,
    /// disconnects and subscriptions the application keeps its state by.
    pub fn push(&self, event: Held) {
        let weight = event.weight();
        let max = match event.kind {
            Kind::Publish => self.max / 4 * 3,
            _ => self.max,
        };
        let before = self.held.fetch_add(weight, Ordering::Relaxed);
        if before + weight > max {
            self.held.fetch_sub(weight, Ordering::Relaxed);
            self.drop_events(Dropped::QueueFull, 1);
            return;
        }
        if self.tx.send(event).is_err() {
            // The sink thread is gone (the server is stopping).
            self.held.fetch_sub(weight, Ordering::Relaxed);
            self.drop_events(Dropped::Shutdown, 1);
        }
    }

    /// `events` left the sink: sent, or dropped for `why`. Their memory is
    /// released when the caller drops them (and no other sink holds them).
    pub fn done(&self, events: &[Held], why: Option<Dropped>) {
        let weight: usize = events.iter().map(Held::weight).sum();
        self.held.fetch_sub(weight, Ordering::Relaxed);
        match why {
            None => {
                self.sent.fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            Some(why) => self.drop_events(why, events.len() as u64),
        }
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn drop_events(&self, why: Dropped, n: u64) {
        self.dropped[why as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Copies the counters into the metrics (from the sink's thread, about
    /// once a second).
    pub fn publish(&self) {
        let sink = self.sink;
        metrics::counter!(names::EVENTS_SENT, "sink" => sink).absolute(self.sent.load(Ordering::Relaxed));
        for why in Dropped::ALL {
            let n = self.dropped[why as usize].load(Ordering::Relaxed);
            metrics::counter!(names::EVENTS_DROPPED, "sink" => sink, "reason" => why.label()).absolute(n);
        }
        if sink == "webhook" {
            metrics::counter!(names::EVENTS_WEBHOOK_RETRIES).absolute(self.retries.load(Ordering::Relaxed));
        }
        metrics::gauge!(names::EVENTS_QUEUE_BYTES, "sink" => sink).set(self.held() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::held::Account;
    use crate::events::{ClientId, Event};

    fn event(data: &str) -> Held {
        let event = Event {
            kind: Kind::Publish,
            client: ClientId {
                shard: 0,
                key: 1,
                generation: 1,
            },
            user: None,
            channel: Some("c".into()),
            data: Some(data.into()),
            reason: None,
            time_ms: 0,
        };
        Held::new(event, &Account::new(None))
    }

    #[test]
    fn the_bound_is_in_bytes_and_drops_are_counted() {
        let one = event("x").weight();
        let (queue, rx) = Queue::new("webhook", one * 4);
        for _ in 0..5 {
            queue.push(event("x"));
        }
        assert_eq!(rx.len(), 3, "publications fill three quarters");
        assert_eq!(queue.dropped[Dropped::QueueFull as usize].load(Ordering::Relaxed), 2);
        let mut gone = (*event("x")).clone();
        gone.kind = Kind::Disconnect;
        let gone = Held::new(gone, &Account::new(None));
        queue.push(gone.clone());
        assert_eq!(rx.len(), 4, "the last quarter is kept for the others");
        queue.push(gone);
        assert_eq!(rx.len(), 4, "and the bound holds for them too");
        let batch: Vec<Held> = rx.try_iter().collect();
        assert_eq!(queue.held(), one * 4, "taken but not sent is still held");
        queue.done(&batch, None);
        assert_eq!(queue.held(), 0);
        assert_eq!(queue.sent.load(Ordering::Relaxed), 4);
        queue.push(event(&"y".repeat(one * 4)));
        assert_eq!(rx.len(), 0, "one event over the bound alone is dropped");
    }
}
