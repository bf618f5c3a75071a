//! The shards' side of the application hooks (`--proxy-*-url`): what the
//! hub asks of the proxy workers (`ProxyCall`), what comes back
//! (`ProxyAnswered`, through the asking shard's inbox, control lane), and the
//! link the hub asks through. The workers themselves (`crate::proxy`) sit
//! above the hub and speak this vocabulary; the hub never makes an HTTP call.
//!
//! Bound: the link counts calls in flight (handed over, not yet answered)
//! and refuses one over `--proxy-max-in-flight` at once, so the hand-over
//! queue can never hold more than that and the control lane gets at most
//! that many answers in flight. A refused call is answered by the hub itself
//! (error 114), never queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};

use super::history::Recover;
use super::msg::Origin;
use crate::buf::budget::{MemKind, MemoryBudget};
use crate::metrics::names;

/// Which hook a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Connect,
    Subscribe,
    Publish,
    Rpc,
}

impl Hook {
    pub const ALL: [Hook; 4] = [Hook::Connect, Hook::Subscribe, Hook::Publish, Hook::Rpc];

    /// The `hook` label of the proxy metrics.
    pub fn label(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Subscribe => "subscribe",
            Hook::Publish => "publish",
            Hook::Rpc => "rpc",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The `client` field of hook calls and of the `connect` push: the
/// connection as this node names it, `SHARD-KEY-GENERATION`.
pub fn client_id(to: &Origin) -> String {
    format!("{}-{}-{}", to.shard, to.key, to.generation)
}

/// What the call is about, and what the hub goes on with when the answer
/// comes back (the call carries its own continuation, so the hub keeps no
/// table of calls in flight).
#[derive(Debug, Clone)]
pub enum Pending {
    /// A `/ws` connection without a token, right after its upgrade, or a
    /// Centrifuge `connect` without one (`data`: its raw JSON `data`). The
    /// listed headers of its upgrade request go with this call only.
    Connect {
        headers: Vec<(Box<str>, Box<str>)>,
        data: Option<Box<str>>,
    },
    Subscribe {
        channel: Arc<str>,
        recover: Option<Recover>,
    },
    /// `data` is the client's raw JSON.
    Publish { channel: Arc<str>, data: Arc<str> },
    /// `data` is the client's raw JSON (`null` when it sent none).
    Rpc { method: Box<str>, data: Box<str> },
}

impl Pending {
    pub fn hook(&self) -> Hook {
        match self {
            Pending::Connect { .. } => Hook::Connect,
            Pending::Subscribe { .. } => Hook::Subscribe,
            Pending::Publish { .. } => Hook::Publish,
            Pending::Rpc { .. } => Hook::Rpc,
        }
    }
}

/// One call for the application's backend.
#[derive(Debug)]
pub struct ProxyCall {
    /// The connection and the command (`id` 0 for connect).
    pub to: Origin,
    /// The connection's user (`None`: anonymous, or not known yet).
    pub user: Option<Arc<str>>,
    pub pending: Pending,
    /// When the shard handed it over: a call that waited a whole
    /// `--proxy-timeout-ms` for a worker is answered as a timeout unmade.
    pub queued: Instant,
}

/// What the backend's `result` said (fields the hook does not use are
/// `None` or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Connect: the user the connection is (empty: anonymous).
    pub user: Option<String>,
    /// Connect: Unix seconds after which the connection is closed (4003).
    pub expire_at: Option<u64>,
    /// Connect: channels to subscribe the connection to (server-side).
    pub channels: Vec<String>,
    /// Connect: sent to the client in the `connect` push; publish: replaces
    /// the client's data; rpc: the reply. Raw JSON.
    pub data: Option<String>,
}

/// Why no backend verdict came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Over `--proxy-max-in-flight`: not called at all (error 114).
    Overloaded,
    /// No answer within `--proxy-timeout-ms` (error 113).
    Timeout,
    /// Connection refused or broken, a status other than 200, or a body
    /// that is not one of the three documented shapes (error 113).
    Unavailable,
}

/// The backend's verdict on a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Allowed),
    /// `{"error": {"code", "message"}}`: passed to the client as is.
    Refuse {
        code: u16,
        message: String,
    },
    /// `{"disconnect": {"code", "reason"}}`: the connection is closed with
    /// them (the code was checked to be 3000-4999).
    Disconnect {
        code: u16,
        reason: String,
    },
    /// No verdict; `why` is for the client (and the log).
    Failed {
        failure: Failure,
        why: String,
    },
}

/// A call's answer, back at the shard that asked.
#[derive(Debug)]
pub struct ProxyAnswered {
    pub to: Origin,
    pub user: Option<Arc<str>>,
    pub pending: Pending,
    pub verdict: Verdict,
}

/// Bytes of client data (and connect headers) the calls in flight may
/// hold together; a call over it is refused like one over the count (114).
/// What they hold is also charged to `--memory-limit` (`kind="proxy"`).
pub const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

impl ProxyCall {
    /// What the call holds while in flight, for `InFlight`.
    pub fn bytes(&self) -> usize {
        const FIXED: usize = 128;
        FIXED
            + match &self.pending {
                Pending::Connect { headers, data } => {
                    headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() + data.as_ref().map_or(0, |d| d.len())
                }
                Pending::Subscribe { channel, .. } => channel.len(),
                Pending::Publish { channel, data } => channel.len() + data.len(),
                Pending::Rpc { method, data } => method.len() + data.len(),
            }
    }
}

/// Calls handed to the workers and not answered yet, in count and bytes,
/// shared by every shard's link and the workers.
#[derive(Debug)]
pub struct InFlight {
    calls: AtomicUsize,
    bytes: AtomicUsize,
    max_calls: usize,
    max_bytes: usize,
    /// The calls' client data counts toward `--memory-limit` (`kind="proxy"`).
    budget: Option<Arc<MemoryBudget>>,
}

impl InFlight {
    pub fn new(max_calls: usize, max_bytes: usize, budget: Option<Arc<MemoryBudget>>) -> InFlight {
        InFlight {
            calls: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_calls,
            max_bytes,
            budget,
        }
    }

    /// Takes a place for a call of `bytes`; false (nothing taken) over
    /// either bound.
    fn take(&self, bytes: usize) -> bool {
        if self.calls.fetch_add(1, Ordering::AcqRel) >= self.max_calls {
            self.calls.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes > self.max_bytes {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.calls.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if let Some(budget) = &self.budget {
            budget.add(MemKind::Proxy, bytes as i64);
        }
        true
    }

    /// Gives back a call's place; returns the calls still in flight.
    pub fn release(&self, bytes: usize) -> usize {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(budget) = &self.budget {
            budget.add(MemKind::Proxy, -(bytes as i64));
        }
        self.calls.fetch_sub(1, Ordering::AcqRel) - 1
    }
}

/// A shard's handle on the proxy workers.
#[derive(Clone)]
pub struct ProxyLink {
    tx: Sender<ProxyCall>,
    in_flight: Arc<InFlight>,
    /// Which hooks have a URL, by `Hook::index`.
    hooks: [bool; 4],
}

impl ProxyLink {
    /// `tx` must hold at least as many calls as `in_flight` allows (then
    /// it is never full).
    pub fn new(tx: Sender<ProxyCall>, in_flight: Arc<InFlight>, hooks: [bool; 4]) -> Self {
        ProxyLink { tx, in_flight, hooks }
    }

    /// Whether `hook` has a URL.
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks[hook.index()]
    }

    /// Hands `call` to a worker without blocking; over the in-flight caps
    /// (or with the workers gone) it comes back, counted as overloaded.
    #[allow(clippy::result_large_err)] // given back only over the cap
    pub fn send(&self, call: ProxyCall) -> Result<(), ProxyCall> {
        let (hook, bytes) = (call.pending.hook(), call.bytes());
        if !self.in_flight.take(bytes) {
            count_overloaded(hook);
            return Err(call);
        }
        // The gauge moves when a call starts too, not only when one ends.
        metrics::gauge!(names::PROXY_IN_FLIGHT).set(self.in_flight.calls.load(Ordering::Relaxed) as f64);
        match self.tx.try_send(call) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(call) | TrySendError::Disconnected(call)) => {
                self.in_flight.release(bytes);
                count_overloaded(hook);
                Err(call)
            }
        }
    }
}

pub(crate) fn count_overloaded(hook: Hook) {
    metrics::counter!(names::PROXY_CALLS, "hook" => hook.label(), "outcome" => "overloaded").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> ProxyCall {
        ProxyCall {
            to: Origin {
                shard: 0,
                key: 1,
                generation: 1,
                id: 7,
            },
            user: None,
            queued: Instant::now(),
            pending: Pending::Rpc {
                method: "m".into(),
                data: "null".into(),
            },
        }
    }

    #[test]
    fn calls_over_the_cap_come_back_at_once() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let in_flight = Arc::new(InFlight::new(2, MAX_IN_FLIGHT_BYTES, None));
        let link = ProxyLink::new(tx, Arc::clone(&in_flight), [false, false, false, true]);
        assert!(link.has(Hook::Rpc) && !link.has(Hook::Publish));
        assert!(link.send(call()).is_ok());
        assert!(link.send(call()).is_ok());
        assert!(link.send(call()).is_err(), "the third is over the cap");
        assert_eq!(in_flight.calls.load(Ordering::Relaxed), 2, "a refusal takes no place");
        // A worker answered one: a place is free again.
        let answered = rx.recv().unwrap();
        assert_eq!(in_flight.release(answered.bytes()), 1);
        assert!(link.send(call()).is_ok());
    }

    #[test]
    fn calls_over_the_bytes_come_back_too() {
        let (tx, _rx) = crossbeam_channel::bounded(8);
        let in_flight = Arc::new(InFlight::new(8, 1000, None));
        let link = ProxyLink::new(tx, Arc::clone(&in_flight), [true; 4]);
        let big = |n| ProxyCall {
            queued: Instant::now(),
            pending: Pending::Publish {
                channel: "c".into(),
                data: "x".repeat(n).into(),
            },
            ..call()
        };
        assert!(link.send(big(500)).is_ok());
        assert!(link.send(big(500)).is_err(), "over the bytes");
        assert!(link.send(big(100)).is_ok(), "a refusal takes no bytes");
        assert_eq!(in_flight.bytes.load(Ordering::Relaxed), 500 + 100 + 2 * (128 + 1));
    }
}
