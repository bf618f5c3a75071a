//! Starting and stopping: bind the listeners, start the admin port, spawn
//! one thread per shard, turn SIGTERM/SIGUSR2/SIGINT into a drain, join.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};
use tracing::{error, info, warn};

use crate::admin::{self, AdminHandle, Health};
use crate::buf::{BufPool, MemoryBudget, Meter, BUF_SIZE};
use crate::bus::peers::Peers;
use crate::config::Config;
use crate::conn::admission::Admission;
use crate::conn::{Ctx, Limits};
use crate::limits;
use crate::metrics::stats::ShardStats;
use crate::net::listener;
use crate::net::tls::{TlsAcceptor, TlsError};
use crate::shard::{token, Shard, ShardSetup};
use crate::tick::{ticks, CLOSE_TIMEOUT};

mod error;
pub use error::StartError;

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    shards: Peers,
    threads: Vec<JoinHandle<io::Result<()>>>,
    stats: Vec<Arc<Mutex<ShardStats>>>,
    capacity: usize,
    health: Arc<Health>,
    /// `None` when the admin port is turned off.
    admin: Option<AdminHandle>,
    /// Cluster mode: the Redis bridge threads, stopped after the shards.
    cluster: Option<crate::cluster::Bridge>,
    /// `wss://`: the shared certificate, key and ticket key.
    tls: Option<Arc<TlsAcceptor>>,
    /// The event sinks' threads, stopped after the shards (a last flush).
    events: Option<crate::events::Sinks>,
}

impl ServerHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin port's address (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminHandle::local_addr)
    }

    /// True when the listener speaks `wss://`.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the certificate and key again (what SIGHUP does): new
    /// handshakes use the new pair, open connections keep theirs. On an
    /// error the old pair stays. Without TLS there is nothing to reload.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(acceptor) => acceptor.reload(),
            None => Ok(()),
        }
    }

    /// What the probes report.
    pub(crate) fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Upgraded connections the server will hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// All shards' counters as last published (once per timer tick).
    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for shard in &self.stats {
            if let Ok(stats) = shard.lock() {
                total.add(&stats);
            }
        }
        total
    }

    /// Each shard's counters, by shard id.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.stats
            .iter()
            .map(|s| s.lock().map(|s| s.clone()).unwrap_or_default())
            .collect()
    }

    /// Starts a drain: readiness turns 503, every shard stops accepting and
    /// closes its connections (1001) spread over the drain window.
    pub fn shutdown(&self) {
        drain(&self.health, &self.shards);
    }

    /// Waits for every shard to finish. An error names a shard that failed
    /// or panicked.
    pub fn join(mut self) -> Result<(), StartError> {
        let mut result = Ok(());
        for (i, thread) in self.threads.into_iter().enumerate() {
            let outcome = match thread.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(StartError::Shard { shard: i, source }),
                Err(_) => Err(StartError::ShardPanicked(i)),
            };
            if let Err(e) = outcome {
                error!(shard = i, error = %e, "shard failed");
                result = Err(e);
            }
        }
        // The admin port answers until the shards are gone.
        self.admin.take();
        self.cluster.take();
        self.events.take();
        result
    }
}

/// The same verdict as `tuning/check.sh`: what this box holds by memory and
/// by limits, and which tuning step is missing.
fn log_capacity_verdict(config: &Config, by_limits: usize) {
    let by_memory = limits::connections_by_memory().unwrap_or(u64::MAX);
    let holds = by_memory.min(by_limits as u64);
    info!(
        by_memory,
        by_limits, holds, "this box holds {holds} connections (tuning/check.sh --target N explains)"
    );
    if let Some(somaxconn) = limits::sysctl("net/core/somaxconn") {
        if somaxconn < u64::from(config.backlog) {
            warn!(
                somaxconn,
                backlog = config.backlog,
                "net.core.somaxconn caps the accept backlog: apply tuning/sysctl.conf"
            );
        }
    }
    if let Some(nr_open) = limits::sysctl("fs/nr_open") {
        if nr_open < 1_048_576 {
            warn!(
                nr_open,
                "fs.nr_open is below a million connections: apply tuning/sysctl.conf"
            );
        }
    }
}

/// Starts the event sinks (docs/EVENTS.md), if any is configured.
fn start_events(
    config: &Config,
    budget: &Arc<MemoryBudget>,
) -> Result<(Option<crate::events::Emitter>, Option<crate::events::Sinks>), StartError> {
    let events = &config.events;
    let Some((emitter, sinks)) =
        crate::events::start(events, Arc::clone(budget)).map_err(StartError::setup("the event sinks"))?
    else {
        return Ok((None, None));
    };
    if let Some(stream) = &events.stream {
        let redis = crate::cluster::link::redacted(&stream.redis);
        info!(redis = %redis, stream = %stream.key, maxlen = stream.maxlen, "events to a Redis Stream");
    }
    if let Some(webhook) = &events.webhook {
        let url = crate::events::shown_url(&webhook.url);
        info!(url = %url, batch = webhook.batch, "events to a webhook");
    }
    Ok((Some(emitter), Some(sinks)))
}

/// Marks the server draining and tells every shard.
fn drain(health: &Health, shards: &Peers) {
    health.set_draining();
    let gone = shards.shutdown_all();
    if gone > 0 {
        warn!(shards = gone, "shards already gone did not get the shutdown");
    }
}

/// Binds and starts every shard.
pub fn start(config: &Config) -> Result<ServerHandle, StartError> {
    config.validate()?;
    let files = limits::raise_nofile().map_err(StartError::FileLimit)?;
    let (capacity, why) = config.connection_cap(files.soft);
    info!(
        capacity,
        limited_by = why,
        file_limit_soft = files.soft,
        file_limit_hard = files.hard,
        "connection capacity"
    );
    log_capacity_verdict(config, capacity);
    let pool_bytes = (config.shards * config.buffer_pool * BUF_SIZE) as u64;
    let (memory_limit, memory_source) = match config.memory_limit {
        Some(limit) => (limit, "--memory-limit"),
        None => limits::default_memory_limit(capacity, pool_bytes),
    };
    info!(
        memory_limit,
        source = memory_source,
        pool_bytes,
        "memory budget for what clients make the server hold"
    );
    let budget = MemoryBudget::new(memory_limit);
    // Sockets of every phase: the upgrade cap plus what limits.rs keeps per
    // shard for polite refusals, so the fd reserve holds.
    let max_sockets = capacity + crate::limits::REFUSAL_HEADROOM * config.shards;
    let admission = Arc::new(Admission::new(capacity, max_sockets, config.per_ip.clone()));
    let tls = match &config.tls {
        Some(files) => {
            let acceptor = TlsAcceptor::new(files.clone()).map_err(StartError::Tls)?;
            info!(cert = %files.cert.display(), key = %files.key.display(), "wss:// (TLS 1.2 and 1.3)");
            Some(acceptor)
        }
        None => None,
    };
    let prometheus = crate::metrics::exporter::install();
    let health = Arc::new(Health::default());
    let listen = |source| StartError::Listen {
        addr: config.listen,
        source,
    };
    let listeners = listener::bind_all(config.listen, config.backlog, config.shards).map_err(listen)?;
    let addr = listeners[0].local_addr().map_err(listen)?;
    // Every shard's poll, waker, inbox and counters exist before anything
    // runs, so each shard (and the server API) can reach all the others.
    let mut polls = Vec::with_capacity(config.shards);
    let mut inboxes = Vec::with_capacity(config.shards);
    let mut shards = Vec::with_capacity(config.shards);
    for _ in 0..config.shards {
        let poll = Poll::new().map_err(StartError::setup("a shard's event loop"))?;
        let waker = Waker::new(poll.registry(), token::WAKER).map_err(StartError::setup("a shard's waker"))?;
        let waker = Arc::new(waker);
        let (handle, inbox) = crate::bus::inbox::channel(waker);
        shards.push(handle);
        polls.push(poll);
        inboxes.push(inbox);
    }
    let shards = Peers::new(shards.into());
    let stats: Vec<Arc<Mutex<ShardStats>>> = (0..config.shards).map(|_| Arc::default()).collect();
    let (cluster_link, bridge, publishers) = match &config.hub.cluster {
        Some(cluster) => {
            let redis = crate::cluster::link::redacted(&cluster.redis);
            info!(redis = %redis, sentinels = ?cluster.sentinels, node = %cluster.node, "cluster mode");
            let per_user = config.hub.max_connections_per_user;
            let budget = Arc::clone(&budget);
            let registries = polls
                .iter()
                .map(|poll| poll.registry().try_clone())
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(StartError::setup("a shard's event loop"))?;
            let (link, bridge, publishers) = crate::cluster::start(
                cluster.clone(),
                shards.for_sender(),
                stats.clone(),
                per_user,
                budget,
                registries,
            )
            .map_err(StartError::Cluster)?;
            (Some(link), Some(bridge), publishers.into_iter().map(Some).collect())
        }
        None => (None, None, (0..polls.len()).map(|_| None).collect::<Vec<_>>()),
    };
    let proxy_link = match &config.proxy {
        Some(proxy) => {
            info!(
                workers = proxy.workers,
                timeout_ms = proxy.timeout.as_millis() as u64,
                max_in_flight = proxy.max_in_flight,
                "application hooks on"
            );
            Some(
                crate::proxy::start(proxy, shards.for_sender(), Arc::clone(&budget))
                    .map_err(StartError::setup("the proxy workers"))?,
            )
        }
        None => None,
    };
    let (emitter, sinks) = start_events(config, &budget)?;
    let admin = match config.admin_listen {
        Some(admin_addr) => {
            let router = admin::base_router(Arc::clone(&health), prometheus.clone(), config.hub.api_key.clone());
            let api = admin::api::Api {
                enabled: config.hub.api_key.is_some(),
                shards: shards.for_sender(),
                stats: stats.clone(),
                cluster: cluster_link.clone(),
            };
            let router = admin::api::routes(router, api);
            let admin = admin::start(admin_addr, router, prometheus).map_err(|source| StartError::AdminPort {
                addr: admin_addr,
                source,
            })?;
            Some(admin)
        }
        None => None,
    };
    let mut handle = ServerHandle {
        addr,
        shards,
        threads: Vec::new(),
        stats: stats.clone(),
        capacity,
        health,
        admin,
        cluster: bridge,
        tls: tls.clone(),
        events: sinks,
    };
    let mut hub_config = config.hub.clone();
    hub_config.events = emitter;
    let hub_config = Arc::new(hub_config);
    let shard_parts = listeners.into_iter().zip(polls).zip(inboxes).zip(publishers);
    for (id, (((listener, poll), inbox), direct)) in shard_parts.enumerate() {
        let published = Arc::clone(&stats[id]);
        let limits = shard_limits(config, capacity);
        let budget = Arc::clone(&budget);
        let admission = Arc::clone(&admission);
        let (buffers, drain, busy_poll) = (config.buffer_pool, config.drain, config.busy_poll);
        let shared = Arc::clone(&published);
        let peers = handle.shards.for_sender();
        let hub_config = Arc::clone(&hub_config);
        let cluster = cluster_link.clone();
        let proxy = proxy_link.clone();
        let tls = tls.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hubbub-shard-{id}"))
            .spawn(move || {
                // The pool is single-threaded (Rc), so it is made on its thread.
                let mut ctx = Ctx::new(BufPool::new(buffers), limits, Meter::new(budget), admission);
                ctx.tls_acceptor = tls;
                let setup = ShardSetup {
                    id,
                    poll,
                    listener,
                    inbox,
                    ctx,
                    drain,
                    busy_poll,
                    published: shared,
                    peers,
                    hub_config,
                    cluster,
                    direct,
                    proxy,
                };
                Shard::new(setup)?.run()
            })
            .map_err(StartError::setup("a shard thread"))?;
        handle.threads.push(thread);
    }
    handle.health.set_started();
    Ok(handle)
}

fn shard_limits(config: &Config, max_open: usize) -> Limits {
    Limits {
        max_message_bytes: config.max_message_bytes,
        max_backlog_bytes: config.max_backlog_bytes,
        handshake_ticks: ticks(config.handshake_timeout),
        message_ticks: ticks(config.message_timeout),
        ping_ticks: ticks(config.ping_interval),
        idle_ticks: ticks(config.idle_timeout),
        close_ticks: ticks(CLOSE_TIMEOUT),
        max_open,
        origins: config.allowed_origins.clone(),
        subprotocols: config.subprotocols.clone(),
        jwt_secret: config.hub.jwt_secret.clone(),
        jwt_require_exp: config.hub.jwt_require_exp,
        allow_anonymous: config.hub.allow_anonymous,
        connect_proxy: config.proxy.as_ref().is_some_and(|p| p.connect_url.is_some()),
        proxy_headers: config
            .proxy
            .as_ref()
            .map(|p| p.http_headers.clone())
            .unwrap_or_default(),
    }
}

/// Runs the server until it has drained: SIGTERM, SIGUSR2 (the restart
/// signal: start the new process first, it binds the same port) and SIGINT
/// start a drain; a second signal exits at once. SIGHUP reloads the TLS
/// certificate and key.
pub fn run(config: &Config) -> Result<(), StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
    // Handlers first: a supervisor may signal as soon as it reads the banner.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR2, SIGHUP])
        .map_err(StartError::setup("signal handlers"))?;
    let handle = start(config)?;
    // One write, errors ignored: a supervisor that reads only the first
    // line and closes the pipe must not kill the server.
    let addr = handle.local_addr();
    let scheme = if handle.is_tls() { "wss" } else { "ws" };
    let endpoints = format!("{scheme}://{addr}/echo {scheme}://{addr}/room/{{name}} {scheme}://{addr}/ws");
    let mut banner = format!("hubbub listening on {scheme}://{addr}\n");
    let admin = handle.admin_addr().map_or_else(|| "off".to_string(), |a| a.to_string());
    if let Some(admin) = handle.admin_addr() {
        banner += &format!("hubbub admin on http://{admin}\n");
    }
    banner += &format!("hubbub endpoints: {endpoints}\n");
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    info!(%addr, %endpoints, %admin, shards = config.shards, "listening");
    let shards = handle.shards.clone();
    let health = handle.health();
    let drain_secs = config.drain.as_secs();
    // When the drain began and how many connections were open, for the
    // summary after the shards are joined.
    let began: Arc<Mutex<Option<(Instant, ShardStats)>>> = Arc::default();
    let drain_began = Arc::clone(&began);
    let published = handle.stats.clone();
    let tls = handle.tls.clone();
    std::thread::Builder::new()
        .name("hubbub-signals".into())
        .spawn(move || {
            let mut received = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload(tls.as_deref());
                    continue;
                }
                received += 1;
                if received > 1 {
                    warn!(signal, "second signal: exiting now");
                    std::process::exit(1);
                }
                info!(
                    signal,
                    drain_secs, "draining: not ready, listeners closed, Close 1001 spread over the window"
                );
                if let Ok(mut began) = drain_began.lock() {
                    *began = Some((Instant::now(), total(&published)));
                }
                drain(&health, &shards);
            }
        })
        .map_err(StartError::setup("the signal thread"))?;
    let stats = handle.stats.clone();
    let result = handle.join();
    match began.lock().ok().and_then(|mut b| b.take()) {
        Some((at, before)) => log_drain(at.elapsed(), &before, &total(&stats)),
        None => info!("stopped; exiting"),
    }
    result
}

/// SIGHUP: reloads the TLS pair, or says why the old one stays.
fn reload(tls: Option<&TlsAcceptor>) {
    let Some(acceptor) = tls else {
        info!("SIGHUP: no --tls-cert, nothing to reload");
        return;
    };
    let files = acceptor.files();
    match acceptor.reload() {
        Ok(()) => {
            info!(cert = %files.cert.display(), "SIGHUP: TLS certificate and key reloaded; new handshakes use them")
        }
        Err(e) => error!(error = %e, "SIGHUP: TLS reload failed; keeping the certificate and key in use"),
    }
}

/// Every shard's counters as last published.
fn total(stats: &[Arc<Mutex<ShardStats>>]) -> ShardStats {
    let mut sum = ShardStats::default();
    for shard in stats {
        if let Ok(s) = shard.lock() {
            sum.add(&s);
        }
    }
    sum
}

/// What a drain did, from the counters the shards published when they
/// finished: how many connections it closed, how many left by themselves,
/// how many were still open when the window ended, and how long it took.
fn log_drain(took: Duration, before: &ShardStats, after: &ShardStats) {
    use crate::conn::Disconnect;
    let ended = |s: &ShardStats| Disconnect::ALL.iter().map(|d| s.disconnects_for(*d)).sum::<u64>();
    let shutdown = |s: &ShardStats| s.disconnects_for(Disconnect::Shutdown);
    let closed = shutdown(after).saturating_sub(shutdown(before));
    let left = ended(after).saturating_sub(ended(before)).saturating_sub(closed);
    info!(
        open_at_start = before.open,
        closed,
        left_by_themselves = left,
        still_open_at_the_end = after.open,
        took_ms = took.as_millis() as u64,
        "drained: closed {closed} connections in {:.1} s; exiting",
        took.as_secs_f64()
    );
}
