//! The admin thread: its own port (`--admin-listen`, loopback by default)
//! serving `/metrics`, `/healthz`, `/readyz` and the server API (`/api/*`,
//! api.rs) through a small router. It renders the Prometheus text and runs
//! the exporter's upkeep; it never touches a shard's state except through
//! `Health`, the recorder and the shards' inboxes (api.rs).
//!
//! No client can make another wait: the thread runs a small mio loop of its
//! own (serve.rs) over non-blocking sessions (session.rs), one request per
//! connection (`Connection: close`). Every byte held for a client is bounded
//! in size and in time, and each refusal is counted under
//! `hubbub_admin_refused_total{reason}`:
//!
//! - a request must be complete within [`REQUEST_DEADLINE`] of the accept
//!   (else 408); its head within 8 KiB (else 431); its body within 1 MiB on
//!   the bearer routes, 8 KiB on the open ones (else 413), and an unknown or
//!   unauthorized request is answered from its head, before any body;
//! - the response must be taken within [`WRITE_DEADLINE`] (else closed);
//! - at most [`MAX_CONNECTIONS`] connections are open; a new one is always
//!   taken, and the oldest connection still sending its request (or one
//!   already answered) is closed to make room, so that connections held
//!   open by anyone cannot keep the probes out: a flood of silent connects
//!   must open more than the cap between a probe's connect and its request
//!   to close it (hence a cap larger than the probes need: at 6,000 connects
//!   a second, 256 slots give a probe 40 ms);
//! - on stop every connection is closed at once: the thread never holds up
//!   the process's exit.
//!
//! Handlers run synchronously on this thread: they are quick (a render, an
//! atomic, a `try_send` to a shard); an `/api/*` call that waits for the
//! shards' answer waits at most 2 s (api.rs).

pub mod api;
pub mod http;
mod refusal;
pub(crate) mod router;
mod serve;
mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use mio::net::TcpListener;
use mio::{Interest, Poll, Token, Waker};

use crate::metrics::{exporter, names};
use http::Response;
pub use refusal::Refusal;
pub use router::{Access, Router};

/// Most admin connections open at once; at the cap the oldest unanswered
/// one is closed for a new one (counted as `evicted`). Bytes held then: at
/// most 16 KiB of request per caller without the API key (1 MiB with it),
/// or the part of a response its socket has not taken.
pub const MAX_CONNECTIONS: usize = 256;
/// From accept to a complete request (head and body); then 408 and close.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// For the client to take the whole response; then the connection closes.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// After the response, how long the client has to close its side (what it
/// still sends is read and dropped, so the close does not reset the answer).
const LINGER: Duration = Duration::from_secs(1);
/// Bytes dropped while lingering before the connection is closed anyway.
const LINGER_MAX_BYTES: usize = 64 * 1024;
const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

/// What the probes report, shared by the server, the signal thread and the
/// admin thread.
#[derive(Debug, Default)]
pub(crate) struct Health {
    started: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// The shards are up and accepting.
    pub(crate) fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// A drain began: readiness turns 503 for good.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
        metrics::gauge!(names::DRAINING).set(1.0);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Accepting connections: started and not draining.
    pub(crate) fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && !self.is_draining()
    }
}

/// The running admin thread; stopped (and joined) on drop.
pub struct AdminHandle {
    addr: SocketAddr,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl AdminHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The routes every server has: metrics and the two probes.
pub(crate) fn base_router(health: Arc<Health>, prometheus: PrometheusHandle, api_key: Option<String>) -> Router {
    let live = Arc::clone(&health);
    Router::new(api_key)
        .route("GET", "/metrics", Access::Open, move |_| {
            exporter::refresh_process_gauges();
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: prometheus.render().into_bytes(),
            }
        })
        .route("GET", "/healthz", Access::Open, move |_| {
            let _ = &live; // alive as long as this thread answers
            Response::text(200, "ok\n")
        })
        .route("GET", "/readyz", Access::Open, move |_| {
            if health.is_ready() {
                Response::text(200, "ready\n")
            } else if health.is_draining() {
                Response::text(503, "draining\n")
            } else {
                Response::text(503, "starting\n")
            }
        })
}

/// Binds `addr` and serves `router` on a thread named `hubbub-admin`.
pub fn start(addr: SocketAddr, router: Router, prometheus: PrometheusHandle) -> io::Result<AdminHandle> {
    let mut listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
    let serve = serve::Serve::new(poll, listener, router, prometheus);
    let thread = std::thread::Builder::new()
        .name("hubbub-admin".into())
        .spawn(move || serve.run())?;
    Ok(AdminHandle {
        addr,
        waker,
        thread: Some(thread),
    })
}
