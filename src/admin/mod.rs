//! The admin thread: its own loopback port (`--admin-listen`) serving
//! `/metrics`, `/healthz` and `/readyz` (and later `/api/*`) through a small
//! router. It renders the Prometheus text and runs the exporter's upkeep;
//! it never touches a shard's state except through `Health` and the recorder.
//!
//! Requests are served one at a time, each on a short read timeout: the
//! callers are probes and scrapers, a few per second at most.

pub mod api;
pub mod http;
pub mod router;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use crate::metrics::{exporter, names};
use http::Response;
pub use router::{Access, Router};

/// How often the exporter's upkeep runs (histogram windows, idle series).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

/// What the probes report, shared by the server, the signal thread and the
/// admin thread.
#[derive(Debug, Default)]
pub struct Health {
    started: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// The shards are up and accepting.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// A drain began: readiness turns 503 for good.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
        metrics::gauge!(names::DRAINING).set(1.0);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Accepting connections: started and not draining.
    pub fn is_ready(&self) -> bool {
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
pub fn base_router(health: Arc<Health>, prometheus: PrometheusHandle, api_key: Option<String>) -> Router {
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
    let thread = std::thread::Builder::new()
        .name("hubbub-admin".into())
        .spawn(move || serve(poll, listener, router, prometheus))?;
    Ok(AdminHandle {
        addr,
        waker,
        thread: Some(thread),
    })
}

fn serve(mut poll: Poll, listener: TcpListener, router: Router, prometheus: PrometheusHandle) {
    let mut events = Events::with_capacity(8);
    let mut last_upkeep = Instant::now();
    loop {
        if let Err(e) = poll.poll(&mut events, Some(UPKEEP_INTERVAL)) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!(error = %e, "admin poll failed; admin port stops");
                return;
            }
        }
        if events.iter().any(|e| e.token() == STOP) {
            return;
        }
        if last_upkeep.elapsed() >= UPKEEP_INTERVAL {
            prometheus.run_upkeep();
            last_upkeep = Instant::now();
        }
        // Bounded: at most 64 requests per wake-up, then upkeep gets a turn.
        for _ in 0..64 {
            match listener.accept() {
                Ok((stream, _)) => answer(stream, &router),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    break;
                }
            }
        }
    }
}

fn answer(stream: mio::net::TcpStream, router: &Router) {
    // Blocking with a timeout: one request, one response, close.
    let fd = std::os::fd::OwnedFd::from(stream);
    let mut stream = std::net::TcpStream::from(fd);
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let outcome = match http::read_request(&mut stream) {
        Ok(Some(request)) => {
            let response = router.dispatch(&request);
            http::write_response(&mut stream, &response, request.method == "HEAD")
        }
        Ok(None) => http::write_response(&mut stream, &Response::text(400, "bad request\n"), false),
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        debug!(error = %e, "admin request failed");
    }
}
