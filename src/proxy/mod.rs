//! The application hooks' workers (`--proxy-connect-url`,
//! `--proxy-subscribe-url`, `--proxy-publish-url`, `--proxy-rpc-url`;
//! docs/PROXY.md): a fixed pool of threads, each blocking on one HTTP call
//! at a time through one shared keep-alive agent (`ureq`, synchronous, no
//! async runtime), so a slow application holds a worker, never a shard.
//!
//! A call arrives through the bounded queue behind `bus::proxy::ProxyLink`
//! (the link refuses calls over `--proxy-max-in-flight` before they get
//! here), is sent as Centrifugo's proxy JSON (`wire`), bounded by
//! `--proxy-timeout-ms` from connect to the last byte of the answer, and
//! its verdict goes back to the asking shard's inbox on the control lane.
//! Every call gets exactly one answer, whatever happened to the HTTP call.
//! The workers never touch hub state; they stop when the last link (the
//! shards') is dropped.

pub mod config;
pub mod wire;

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use metrics::{Counter, Gauge, Histogram};
use ureq::Agent;

use crate::buf::budget::MemoryBudget;
use crate::bus::msg::HubMsg;
use crate::bus::peers::Peers;
use crate::bus::proxy::{
    Failure, Hook, InFlight, Pending, ProxyAnswered, ProxyCall, ProxyLink, Verdict, MAX_IN_FLIGHT_BYTES,
};
use crate::metrics::names;
pub use config::ProxyConfig;

/// Starts the workers; the returned link is what the shards hand calls to.
/// The client data of calls in flight is charged to `budget`.
pub fn start(config: &ProxyConfig, peers: Peers, budget: Arc<MemoryBudget>) -> io::Result<ProxyLink> {
    let (tx, rx) = crossbeam_channel::bounded(config.max_in_flight);
    let in_flight = Arc::new(InFlight::new(config.max_in_flight, MAX_IN_FLIGHT_BYTES, Some(budget)));
    let agent = agent(config);
    let config = Arc::new(config.clone());
    for n in 0..config.workers {
        let worker = Worker {
            agent: agent.clone(),
            config: Arc::clone(&config),
            peers: peers.clone(),
            in_flight: Arc::clone(&in_flight),
            metrics: WorkerMetrics::register(),
        };
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("hubbub-proxy-{n}"))
            .spawn(move || worker.run(rx))?;
    }
    Ok(ProxyLink::new(tx, in_flight, config.hooks()))
}

/// One agent for all workers: its pool keeps up to one idle connection per
/// worker to each backend, so steady traffic reuses connections.
fn agent(config: &ProxyConfig) -> Agent {
    Agent::config_builder()
        .timeout_global(Some(config.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        // The backend is named by URL; an environment's HTTP proxy is not
        // meant for it.
        .proxy(None)
        .max_idle_connections(4 * config.workers)
        .max_idle_connections_per_host(config.workers)
        .user_agent(concat!("hubbub/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Metric handles, registered once per worker.
struct WorkerMetrics {
    /// By `Hook::index`, then outcome (ok, refused, error, timeout).
    calls: [[Counter; 4]; 4],
    latency: [Histogram; 4],
    in_flight: Gauge,
}

const OUTCOMES: [&str; 4] = ["ok", "refused", "error", "timeout"];

impl WorkerMetrics {
    fn register() -> WorkerMetrics {
        WorkerMetrics {
            calls: Hook::ALL.map(|hook| {
                OUTCOMES
                    .map(|outcome| metrics::counter!(names::PROXY_CALLS, "hook" => hook.label(), "outcome" => outcome))
            }),
            latency: Hook::ALL.map(|hook| metrics::histogram!(names::PROXY_LATENCY_SECONDS, "hook" => hook.label())),
            in_flight: metrics::gauge!(names::PROXY_IN_FLIGHT),
        }
    }

    fn count(&self, hook: Hook, verdict: &Verdict, started: Instant) {
        let outcome = match verdict {
            Verdict::Allow(_) => 0,
            Verdict::Refuse { .. } | Verdict::Disconnect { .. } => 1,
            Verdict::Failed {
                failure: Failure::Timeout,
                ..
            } => 3,
            Verdict::Failed { .. } => 2,
        };
        self.calls[hook.index()][outcome].increment(1);
        self.latency[hook.index()].record(started.elapsed().as_secs_f64());
    }
}

struct Worker {
    agent: Agent,
    config: Arc<ProxyConfig>,
    peers: Peers,
    in_flight: Arc<InFlight>,
    metrics: WorkerMetrics,
}

impl Worker {
    fn run(self, rx: Receiver<ProxyCall>) {
        while let Ok(call) = rx.recv() {
            let started = Instant::now();
            let (hook, bytes) = (call.pending.hook(), call.bytes());
            let verdict = match self.config.url(hook) {
                // Waited its whole time for a worker (the backend is slow
                // for everyone): the client hears at once, the backend is
                // spared a call nobody waits for any more.
                Some(_) if call.queued.elapsed() >= self.config.timeout => Verdict::Failed {
                    failure: Failure::Timeout,
                    why: "waited --proxy-timeout-ms for a free worker".to_string(),
                },
                Some(url) => self.call(url, &call),
                // The link only takes calls for hooks with a URL.
                None => Verdict::Failed {
                    failure: Failure::Unavailable,
                    why: format!("no URL for the {} hook", hook.label()),
                },
            };
            self.metrics.count(hook, &verdict, started);
            if let Verdict::Failed { why, .. } = &verdict {
                tracing::debug!(hook = hook.label(), why = %why, "hook call failed");
            }
            let ProxyCall { to, user, pending, .. } = call;
            let answer = ProxyAnswered {
                to,
                user,
                pending,
                verdict,
            };
            // Control lane: refused only when the shard is gone (stopping).
            let _ = self
                .peers
                .to(to.shard as usize, HubMsg::ProxyAnswered(Box::new(answer)));
            let left = self.in_flight.release(bytes);
            self.metrics.in_flight.set(left as f64);
        }
    }

    /// One HTTP call, judged.
    fn call(&self, url: &str, call: &ProxyCall) -> Verdict {
        let body = wire::request_body(call);
        let mut request = self.agent.post(url).header("content-type", "application/json");
        if let Pending::Connect { headers, .. } = &call.pending {
            for (name, value) in headers {
                request = request.header(&**name, &**value);
            }
        }
        let failed = |(failure, why)| Verdict::Failed { failure, why };
        let mut response = match request.send(&body[..]) {
            Ok(response) => response,
            Err(e) => return failed(classify(e)),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let why = format!("the application answered HTTP {status}");
            return failed((Failure::Unavailable, why));
        }
        let limit = self.config.max_answer_bytes as u64;
        match response.body_mut().with_config().limit(limit).read_to_vec() {
            Ok(bytes) => wire::parse_answer(call.pending.hook(), &bytes),
            Err(e) => failed(classify(e)),
        }
    }
}

/// A failed call: a timeout, or the application out of reach.
fn classify(error: ureq::Error) -> (Failure, String) {
    let timed_out = match &error {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(e) => matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock),
        _ => false,
    };
    if timed_out {
        (Failure::Timeout, "the application did not answer in time".into())
    } else {
        (Failure::Unavailable, format!("the application is unreachable: {error}"))
    }
}
