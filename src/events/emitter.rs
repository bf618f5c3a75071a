//! The emitter the hub holds (one `Arc`, cloned per shard) and the sink
//! threads behind it: each gathers a batch from its queue, hands it to its
//! transport (`stream.rs`, `webhook.rs`) and, while that fails, retries
//! the same batch with exponential backoff and jitter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tracing::{info, warn};

use super::held::{Account, Held};
use super::queue::{Dropped, Queue};
use super::{ClientId, Event, EventsConfig, Kind};
use crate::buf::budget::MemoryBudget;
use crate::metrics::names;

/// How often a sink thread looks at the stop flag and copies its counters.
const TICK: Duration = Duration::from_millis(250);
/// First retry delay; it doubles per failure up to `BACKOFF_MAX`.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// At shutdown: how long a sink may go on delivering what is queued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a transport did with a batch.
pub(crate) enum Outcome {
    Sent,
    /// Try again later (the destination is down, slow or busy).
    Retry(String),
    /// It will never be taken: drop it, counted.
    Rejected(String),
}

/// A destination for batches of events.
pub(crate) trait Transport: Send {
    /// Delivers `batch` (oldest first) or says why not; `fresh` is false
    /// when it is the same batch again (a retry). `within`, at shutdown: the
    /// attempt gives up after that long, whatever the sink's own timeout.
    fn deliver(&mut self, batch: &[Held], fresh: bool, within: Option<Duration>) -> Outcome;
}

/// How a sink gathers batches.
pub(crate) struct Batching {
    pub max: usize,
    /// How long a batch waits for more events after its first.
    pub linger: Duration,
}

/// The hub's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Emitter {
    shared: Arc<Shared>,
}

struct Shared {
    queues: Vec<Arc<Queue>>,
    /// Every event's charge to the memory budget, once however many sinks
    /// hold it.
    account: Arc<Account>,
    produced: [AtomicU64; Kind::ALL.len()],
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sinks: Vec<&str> = self.shared.queues.iter().map(|q| q.sink).collect();
        f.debug_struct("Emitter").field("sinks", &sinks).finish()
    }
}

impl Emitter {
    /// Queues an event for every sink (dropped and counted by a full one).
    /// The sinks share it: it is charged to the memory budget once.
    pub fn emit(
        &self,
        kind: Kind,
        client: ClientId,
        user: Option<Arc<str>>,
        channel: Option<Arc<str>>,
        data: Option<Arc<str>>,
        reason: Option<&'static str>,
    ) {
        self.shared.produced[kind as usize].fetch_add(1, Ordering::Relaxed);
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let event = Event {
            kind,
            client,
            user,
            channel,
            data,
            reason,
            time_ms,
        };
        // Charged before any sink can see it: a sink may be done with it
        // before this thread goes on.
        let event = Held::new(event, &self.shared.account);
        let (last, others) = match self.shared.queues.split_last() {
            Some(split) => split,
            None => return,
        };
        for queue in others {
            queue.push(event.clone());
        }
        last.push(event);
    }

    fn publish_produced(&self) {
        for kind in Kind::ALL {
            let n = self.shared.produced[kind as usize].load(Ordering::Relaxed);
            metrics::counter!(names::EVENTS_PRODUCED, "kind" => kind.label()).absolute(n);
        }
    }
}

/// The sink threads; dropping this stops them (after a last try to
/// deliver what is queued, `SHUTDOWN_GRACE` at most).
pub struct Sinks {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    account: Arc<Account>,
}

impl Drop for Sinks {
    /// Waits `SHUTDOWN_GRACE` and a second at most: a POST in flight when the
    /// stop came has its own timeout (up to a minute), and a stop must not
    /// wait for it. A sink still busy then is left behind (the process is
    /// ending); what it held is lost, and said so, and no longer counted
    /// toward `--memory-limit`: every other sink has ended by then, so the
    /// events still alive are the left-behind ones, and nobody will deliver
    /// or count them.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(1);
        let mut left_behind = false;
        for thread in self.threads.drain(..) {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                let name = thread.thread().name().unwrap_or("hubbub-events").to_string();
                warn!(thread = %name, "an event sink was still delivering at the stop deadline; its queued events are lost");
                left_behind = true;
            }
        }
        if left_behind {
            self.account.abandon();
        }
    }
}

pub(super) fn start(config: &EventsConfig, budget: Arc<MemoryBudget>) -> std::io::Result<(Emitter, Sinks)> {
    let stop = Arc::new(AtomicBool::new(false));
    let account = Account::new(Some(budget));
    let mut sinks = Vec::new();
    if let Some(stream) = &config.stream {
        let transport = super::stream::RedisStream::new(stream, Arc::clone(&config.node));
        let batching = Batching {
            max: super::stream::PIPELINE,
            linger: Duration::ZERO,
        };
        sinks.push(Sink::new(
            "stream",
            config.max_bytes,
            Box::new(transport),
            batching,
            &stop,
        ));
    }
    if let Some(webhook) = &config.webhook {
        let transport = super::webhook::Webhook::new(webhook, Arc::clone(&config.node));
        let batching = Batching {
            max: webhook.batch,
            linger: webhook.linger,
        };
        sinks.push(Sink::new(
            "webhook",
            config.max_bytes,
            Box::new(transport),
            batching,
            &stop,
        ));
    }
    let emitter = Emitter {
        shared: Arc::new(Shared {
            queues: sinks.iter().map(|s| Arc::clone(&s.queue)).collect(),
            account: Arc::clone(&account),
            produced: Default::default(),
        }),
    };
    let mut threads = Vec::new();
    for mut sink in sinks {
        sink.emitter = Arc::downgrade(&emitter.shared);
        let thread = std::thread::Builder::new()
            .name(format!("hubbub-events-{}", sink.queue.sink))
            .spawn(move || sink.run())?;
        threads.push(thread);
    }
    Ok((emitter, Sinks { stop, threads, account }))
}

struct Sink {
    queue: Arc<Queue>,
    rx: Receiver<Held>,
    transport: Box<dyn Transport>,
    batching: Batching,
    stop: Arc<AtomicBool>,
    emitter: std::sync::Weak<Shared>,
    published: Instant,
    /// In a run of failures (logged once at its start and once at its end).
    failing: bool,
}

impl Sink {
    fn new(
        name: &'static str,
        max_bytes: usize,
        transport: Box<dyn Transport>,
        batching: Batching,
        stop: &Arc<AtomicBool>,
    ) -> Sink {
        let (queue, rx) = Queue::new(name, max_bytes);
        Sink {
            queue,
            rx,
            transport,
            batching,
            stop: Arc::clone(stop),
            emitter: std::sync::Weak::new(),
            published: Instant::now(),
            failing: false,
        }
    }

    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batching.max);
        loop {
            self.publish(false);
            let stopping = self.stop.load(Ordering::Relaxed);
            if !self.gather(&mut batch, stopping) {
                if stopping {
                    break;
                }
                continue;
            }
            if self.stop.load(Ordering::Relaxed) {
                // The stop came while the batch was gathered (the shards'
                // last disconnect events, often): its try is a last one,
                // bounded by the grace, not one under the sink's timeout.
                self.finish(&mut batch, true);
                break;
            }
            self.deliver(&mut batch);
            if self.stop.load(Ordering::Relaxed) {
                // A batch left here was being retried.
                let fresh = batch.is_empty();
                self.finish(&mut batch, fresh);
                break;
            }
        }
        self.publish(true);
    }

    /// Fills `batch`: waits up to a tick for its first event (not at all
    /// when `stopping`), then up to the linger for more. False when empty.
    fn gather(&mut self, batch: &mut Vec<Held>, stopping: bool) -> bool {
        let first = if stopping {
            self.rx.try_recv().ok()
        } else {
            match self.rx.recv_timeout(TICK) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // Every emitter is gone: the server is stopping.
                    self.stop.store(true, Ordering::Relaxed);
                    None
                }
            }
        };
        let Some(first) = first else { return false };
        batch.push(first);
        let until = Instant::now() + self.batching.linger;
        while batch.len() < self.batching.max {
            if let Ok(event) = self.rx.try_recv() {
                batch.push(event);
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        true
    }

    /// Delivers `batch`, retrying with backoff until it is taken, refused,
    /// or the server stops (then `finish` decides).
    fn deliver(&mut self, batch: &mut Vec<Held>) {
        let mut failures = 0u32;
        loop {
            match self.transport.deliver(batch, failures == 0, None) {
                Outcome::Sent => {
                    if self.failing {
                        self.failing = false;
                        info!(sink = self.queue.sink, retries = failures, "events delivered again");
                    }
                    self.queue.done(batch, None);
                    batch.clear();
                    return;
                }
                Outcome::Rejected(why) => {
                    if !self.failing {
                        // Once per run of failures: a receiver that refuses
                        // everything must not flood the log.
                        self.failing = true;
                        warn!(sink = self.queue.sink, events = batch.len(), reason = %why, "events refused; dropped (counted, reason=rejected)");
                    }
                    self.queue.done(batch, Some(Dropped::Rejected));
                    batch.clear();
                    return;
                }
                Outcome::Retry(why) => {
                    if !self.failing {
                        self.failing = true;
                        warn!(sink = self.queue.sink, reason = %why, "cannot deliver events; retrying with backoff");
                    }
                    failures += 1;
                    self.queue.retried();
                    if !self.sleep(backoff(failures)) {
                        return; // stopping: `finish` makes the last try
                    }
                }
            }
        }
    }

    /// At shutdown: one more try for `batch` (`fresh` when never tried) and
    /// whatever is queued, within `SHUTDOWN_GRACE`; what is left is dropped,
    /// counted.
    fn finish(&mut self, batch: &mut Vec<Held>, mut fresh: bool) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            if batch.is_empty() && !self.gather(batch, true) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = !left.is_zero() && matches!(self.transport.deliver(batch, fresh, Some(left)), Outcome::Sent);
            fresh = true;
            self.queue
                .done(batch, if sent { None } else { Some(Dropped::Shutdown) });
            batch.clear();
        }
    }

    /// Sleeps `total` in ticks (publishing counters); false when stopped.
    fn sleep(&mut self, total: Duration) -> bool {
        let until = Instant::now() + total;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            self.publish(false);
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(TICK));
        }
    }

    /// Copies the counters into the metrics, at most about once a tick.
    fn publish(&mut self, now: bool) {
        if !now && self.published.elapsed() < TICK {
            return;
        }
        self.published = Instant::now();
        self.queue.publish();
        if let Some(shared) = self.emitter.upgrade() {
            Emitter { shared }.publish_produced();
        }
    }
}

/// The delay before retry number `failures` (from 1): doubling from
/// `BACKOFF_BASE` up to `BACKOFF_MAX`, then a random half of it taken off
/// (so nodes that failed together do not retry together).
pub(crate) fn backoff(failures: u32) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let jitter = full.mul_f64(random_unit() / 2.0);
    full - jitter
}

/// A number in [0, 1) from a per-thread xorshift seeded by the clock.
fn random_unit() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0x9E37_79B9, |d| d.as_nanos() as u64) | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_below_it() {
        for failures in 1..40 {
            let d = backoff(failures);
            let full = BACKOFF_BASE
                .saturating_mul(1 << (failures - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(d <= full && d >= full / 2, "{failures}: {d:?} of {full:?}");
        }
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }

    fn disconnect() -> Event {
        Event {
            kind: Kind::Disconnect,
            client: ClientId {
                shard: 0,
                key: 1,
                generation: 1,
            },
            user: None,
            channel: None,
            data: None,
            reason: Some("shutdown"),
            time_ms: 0,
        }
    }

    /// Records the bound of every try, and fails each (the receiver is down).
    struct Recorder(Arc<std::sync::Mutex<Vec<Option<Duration>>>>);

    impl Transport for Recorder {
        fn deliver(&mut self, _batch: &[Held], _fresh: bool, within: Option<Duration>) -> Outcome {
            self.0.lock().unwrap().push(within);
            Outcome::Retry("down".into())
        }
    }

    #[test]
    fn a_batch_gathered_while_the_stop_came_is_tried_within_the_grace_only() {
        let budget = MemoryBudget::new(u64::MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let tries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let batching = Batching {
            max: 10,
            linger: Duration::from_millis(800),
        };
        let transport = Box::new(Recorder(Arc::clone(&tries)));
        let sink = Sink::new("webhook", 1 << 20, transport, batching, &stop);
        let queue = Arc::clone(&sink.queue);
        let account = Account::new(Some(Arc::clone(&budget)));
        queue.push(Held::new(disconnect(), &account));
        let thread = std::thread::spawn(move || sink.run());
        // The sink took the event and lingers for more when the stop comes.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        let tries = tries.lock().unwrap().clone();
        assert!(!tries.is_empty(), "never tried");
        assert!(
            tries.iter().all(|t| t.is_some_and(|t| t <= SHUTDOWN_GRACE)),
            "a try after the stop not cut to the grace: {tries:?}"
        );
        assert_eq!(queue.held(), 0, "dropped at the stop, counted");
        assert_eq!(budget.bytes(crate::buf::budget::MemKind::Events), 0);
    }

    /// A receiver that takes the request and never answers until `answer`
    /// is sent (or dropped).
    struct Hung(crossbeam_channel::Receiver<()>);

    impl Transport for Hung {
        fn deliver(&mut self, _batch: &[Held], _fresh: bool, _within: Option<Duration>) -> Outcome {
            let _ = self.0.recv();
            Outcome::Sent
        }
    }

    #[test]
    fn a_sink_left_behind_at_the_stop_no_longer_counts_toward_the_memory_limit() {
        let budget = MemoryBudget::new(u64::MAX);
        // Another holder's bytes: a release taken twice would show below them.
        budget.add(crate::buf::budget::MemKind::Events, 1000);
        let stop = Arc::new(AtomicBool::new(false));
        let (answer, hung) = crossbeam_channel::bounded(0);
        let batching = Batching {
            max: 1,
            linger: Duration::ZERO,
        };
        let sink = Sink::new("webhook", 1 << 20, Box::new(Hung(hung)), batching, &stop);
        let account = Account::new(Some(Arc::clone(&budget)));
        let queue = Arc::clone(&sink.queue);
        // One in the hung request, one queued behind it.
        queue.push(Held::new(disconnect(), &account));
        queue.push(Held::new(disconnect(), &account));
        let held = 2 * disconnect().weight() as u64;
        assert_eq!(budget.bytes(crate::buf::budget::MemKind::Events), 1000 + held);
        let thread = std::thread::spawn(move || sink.run());
        let threads = vec![thread];
        let began = Instant::now();
        drop(Sinks {
            stop,
            threads,
            account: Arc::clone(&account),
        });
        assert!(began.elapsed() >= SHUTDOWN_GRACE, "the sink was waited for");
        assert_eq!(
            budget.bytes(crate::buf::budget::MemKind::Events),
            1000,
            "left behind: its events are released"
        );
        // The request ends after all: the thread lets go of its events
        // without releasing them a second time.
        drop(answer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while account.held() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(account.held(), 0, "the thread ended");
        assert_eq!(budget.bytes(crate::buf::budget::MemKind::Events), 1000);
    }
}
