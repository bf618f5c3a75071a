//! Cluster mode (`--redis`): several hubbub nodes behind a load balancer,
//! joined through one Redis (plain, TLS, or found through Sentinel: `link`)
//! or several, with the channels spread over them (`server_of`).
//! See `docs/CLUSTER.md`.
//!
//! What it owns: the Redis connections. Per server, a command thread, and
//! either connections held by the shards themselves (plain TCP: `direct`,
//! `listen`) or a subscriber thread (`rediss://`). Threads reach the shards
//! only through their inboxes, and are reached by them only through a
//! bounded channel ([`ClusterLink`]). A shard never blocks on Redis: its own
//! connections are non-blocking, and a full queue is a counted drop and a
//! `108` answer.
//!
//! - Publishes: the channel's owner shard runs one Lua script each (epoch,
//!   `INCR` offset, `XADD` history, `PUBLISH`) on its own connection
//!   ([`direct`]; rules shared with the command thread in [`publish`]).
//! - The command thread ([`commands`]) answers history/presence/recovery
//!   from Redis, keeps this node's presence and user connections in Redis,
//!   heartbeats the node, opens the shards' connections, and runs the
//!   publishes of a `rediss://` server.
//! - The subscriber connection receives, in Redis's order, every
//!   publication of the channels this node keeps a log of (`SUBSCRIBE` by
//!   name; mailboxes and rooms by pattern; every publication by pattern for
//!   `rediss://`) and hands each to the channel's owner shard, which
//!   delivers it exactly as a local one; it also carries user messages,
//!   disconnects and kicks between nodes. One shard holds it ([`listen`]),
//!   or a thread for `rediss://` ([`subscriber`]).
//!
//! Without `--redis` none of this runs and the hub takes none of these paths.

pub(crate) mod backoff;
pub mod commands;
pub(crate) mod direct;
pub mod keys;
pub(crate) mod link;
pub(crate) mod listen;
pub(crate) mod mirror;
pub(crate) mod publish;
pub mod reply;
pub mod resp;
pub(crate) mod socket;
pub mod subscriber;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::buf::budget::MemoryBudget;
use crate::bus::cluster::{listener_shard, ClusterConfig, ClusterLink, ClusterState, ShardRedis};
use crate::bus::peers::Peers;
use crate::metrics::names;
use crate::metrics::stats::ShardStats;

/// Commands waiting for the command thread, from all shards together.
pub(crate) const QUEUE_CAPACITY: usize = 16_384;
/// Longest a single Redis call may take before the link counts as down.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of commands the bridge holds at most (queue and waiting buffer).
pub(crate) const MAX_HELD_BYTES: u64 = 64 << 20;
pub(crate) const DEFAULT_NODE_TTL_SECS: u64 = 10;

/// The running bridge: stops its threads when dropped.
pub struct Bridge {
    state: Arc<ClusterState>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Starts both bridge threads; returns the link for shards and the API.
/// One `ShardRedis` per shard, in shard order.
pub type Publishers = Vec<Box<dyn ShardRedis>>;

pub fn start(
    config: ClusterConfig,
    shards: Peers,
    stats: Vec<Arc<Mutex<ShardStats>>>,
    max_connections_per_user: usize,
    budget: Arc<MemoryBudget>,
    registries: Vec<mio::Registry>,
) -> std::io::Result<(ClusterLink, Bridge, Publishers)> {
    // One TLS provider for the process (the crate's `rediss://` uses the
    // default); an error means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let servers = config.servers();
    let targets = (0..servers)
        .map(|i| link::Target::new(&config.for_server(i)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::from)?;
    let state = Arc::new(ClusterState::new(servers, MAX_HELD_BYTES, budget));
    metrics::gauge!(names::CLUSTER_LINK_UP).set(0.0);
    let (mut txs, mut state_txs, mut threads) = (Vec::new(), Vec::new(), Vec::new());
    let mut lanes = Vec::new();
    for _ in 0..servers {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let (state_tx, state_rx) = crossbeam_channel::unbounded();
        txs.push(tx);
        state_txs.push(state_tx);
        lanes.push((rx, state_rx));
    }
    let link = ClusterLink::new(txs, state_txs, Arc::clone(&config.node), Arc::clone(&state));
    // Where a server is reached over plain TCP, each shard publishes on a
    // connection of its own, and shard `server % shards` holds the node's
    // subscriber connection (`direct`, `listen`); for a `rediss://` server
    // the command and subscriber threads do.
    let direct: Vec<bool> = targets.iter().map(link::Target::direct).collect();
    let shard_count = registries.len();
    let publishers = registries
        .into_iter()
        .enumerate()
        .map(|(shard, registry)| {
            let listen = (0..servers)
                .map(|server| {
                    (direct[server] && listener_shard(server, shard_count) == shard).then(|| {
                        subscriber::Dispatch::new(config.clone(), server, shards.for_sender(), Arc::clone(&state))
                    })
                })
                .collect();
            let links = direct::Links::new(shard, link.clone(), registry, &direct, listen);
            Box::new(links) as Box<dyn ShardRedis>
        })
        .collect();
    // One command thread per server, and a subscriber thread per TLS
    // server: a server's slowness or outage holds up only its own channels.
    for (server, (target, lanes)) in targets.into_iter().zip(lanes).enumerate() {
        let setup = commands::Setup {
            config: config.clone(),
            shards: shards.for_sender(),
            stats: stats.clone(),
            max_connections_per_user,
            server,
        };
        let commander = commands::Commander::new(setup, target.clone(), lanes, Arc::clone(&state));
        threads.push(
            std::thread::Builder::new()
                .name(format!("hubbub-cluster-cmd-{server}"))
                .spawn(move || commander.run())?,
        );
        if direct[server] {
            continue;
        }
        let dispatch = subscriber::Dispatch::new(config.clone(), server, shards.for_sender(), Arc::clone(&state));
        let sub = subscriber::Subscriber::new(target, dispatch, link.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("hubbub-cluster-sub-{server}"))
                .spawn(move || sub.run())?,
        );
    }
    Ok((link, Bridge { state, threads }, publishers))
}

/// A node id unique per process: `HOSTNAME-PID-RANDOM`.
pub(crate) fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    format!("{host}-{}-{:04x}", std::process::id(), backoff::random_u64() & 0xffff)
}
