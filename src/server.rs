//! Starting and stopping: bind the listeners, spawn one thread per shard,
//! turn SIGINT/SIGTERM into a shutdown, join.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};
use tracing::{error, info, warn};

use crate::buf::BufPool;
use crate::config::{Config, CLOSE_TIMEOUT};
use crate::conn::{Ctx, Limits};
use crate::limits;
use crate::metrics::stats::ShardStats;
use crate::net::listener;
use crate::shard::inbox::{ShardHandle, ShardMsg, INBOX_CAPACITY};
use crate::shard::timer::TICK;
use crate::shard::{token, Shard, ShardSetup};

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    shards: Vec<ShardHandle>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    stats: Vec<Arc<Mutex<ShardStats>>>,
    capacity: usize,
}

impl ServerHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

    /// Asks every shard to stop accepting and close its connections (1001).
    pub fn shutdown(&self) {
        for shard in &self.shards {
            if shard.send(ShardMsg::Shutdown).is_err() {
                warn!("a shard inbox is full or gone; it will not get the shutdown");
            }
        }
    }

    /// Waits for every shard to finish. An error names a shard that failed
    /// or panicked.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for (i, thread) in self.threads.into_iter().enumerate() {
            let outcome = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other(format!("shard {i} panicked"))));
            if let Err(e) = outcome {
                error!(shard = i, error = %e, "shard failed");
                result = Err(e);
            }
        }
        result
    }
}

/// Binds and starts every shard.
pub fn start(config: &Config) -> io::Result<ServerHandle> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let files = limits::raise_nofile()?;
    let (capacity, why) = config.connection_cap(files.soft);
    info!(
        capacity,
        limited_by = why,
        file_limit_soft = files.soft,
        file_limit_hard = files.hard,
        "connection capacity"
    );
    let listeners = listener::bind_all(config.listen, config.backlog, config.shards)?;
    let addr = listeners[0].local_addr()?;
    let per_shard = capacity.div_ceil(config.shards);
    let mut handle = ServerHandle {
        addr,
        shards: Vec::new(),
        threads: Vec::new(),
        stats: Vec::new(),
        capacity,
    };
    for (id, listener) in listeners.into_iter().enumerate() {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let (tx, inbox) = crossbeam_channel::bounded(INBOX_CAPACITY);
        let published = Arc::new(Mutex::new(ShardStats::default()));
        let limits = shard_limits(config, per_shard);
        let (buffers, drain, busy_poll) = (config.buffer_pool, config.drain, config.busy_poll);
        let shared = Arc::clone(&published);
        let thread = std::thread::Builder::new()
            .name(format!("hubbub-shard-{id}"))
            .spawn(move || {
                // The pool is single-threaded (Rc), so it is made on its thread.
                let ctx = Ctx::new(BufPool::new(buffers), limits);
                Shard::new(ShardSetup {
                    id,
                    poll,
                    listener,
                    inbox,
                    ctx,
                    drain,
                    busy_poll,
                    published: shared,
                })?
                .run()
            })?;
        handle.shards.push(ShardHandle::new(tx, waker));
        handle.threads.push(thread);
        handle.stats.push(published);
    }
    Ok(handle)
}

fn shard_limits(config: &Config, max_open: usize) -> Limits {
    Limits {
        max_message_bytes: config.max_message_bytes,
        max_backlog_bytes: config.max_backlog_bytes,
        handshake_ticks: ticks(config.handshake_timeout),
        ping_ticks: ticks(config.ping_interval),
        idle_ticks: ticks(config.idle_timeout),
        close_ticks: ticks(CLOSE_TIMEOUT),
        max_open,
        origins: config.allowed_origins.clone(),
        subprotocols: config.subprotocols.clone(),
    }
}

/// A duration in whole timer ticks, rounded up.
fn ticks(d: Duration) -> u32 {
    d.as_millis().div_ceil(TICK.as_millis()).max(1) as u32
}

/// Runs the server until SIGINT or SIGTERM: the first starts a shutdown, a
/// second exits at once.
pub fn run(config: &Config) -> io::Result<()> {
    let handle = start(config)?;
    println!("hubbub listening on ws://{}", handle.local_addr());
    info!(addr = %handle.local_addr(), shards = config.shards, "listening");
    let shards = handle.shards.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    std::thread::Builder::new()
        .name("hubbub-signals".into())
        .spawn(move || {
            let mut received = 0;
            for signal in signals.forever() {
                received += 1;
                if received > 1 {
                    warn!(signal, "second signal: exiting now");
                    std::process::exit(1);
                }
                info!(signal, "shutting down: closing connections with 1001");
                for shard in &shards {
                    let _ = shard.send(ShardMsg::Shutdown);
                }
            }
        })?;
    handle.join()
}
