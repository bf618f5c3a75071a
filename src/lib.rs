//! hubbub: an epoll-driven, sharded WebSocket server built to hold a million
//! connections on one box.
//!
//! A fixed pool of shard threads each owns a `mio::Poll`, a listener bound with
//! SO_REUSEPORT, a slab of small connections, a pool of 64 KiB buffers that
//! connections lease only while they hold partial data, and a timer wheel.
//! Nothing on the hot path is shared between shards. See `DESIGN.md` in the
//! team's shared folder and `docs/CONNECTION.md` for a connection's lifecycle.
//!
//! Modules, from the wire up:
//! - [`ws`]: RFC 6455 sans I/O (handshake, frame codec, close rules, UTF-8).
//! - [`buf`]: the per-shard buffer pool.
//! - [`conn`]: one connection: phase, input buffer, outgoing queue.
//! - [`net`]: listeners and the one place I/O errors are classified.
//! - [`shard`]: the event loop, timers, inbox.
//! - [`server`]: start shards, handle signals, stop.
//! - [`hub`]: channels, users, presence, history; [`cluster`]: the same
//!   across nodes through Redis (`--redis`).
//! - [`proxy`]: the application hooks over HTTP (docs/PROXY.md).
//! - [`events`]: connects, disconnects, subscriptions and publications
//!   told to the application (Redis Stream, webhooks).
//! - [`config`], [`limits`], [`metrics`], [`route`].

pub mod admin;
pub mod auth;
pub mod buf;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod events;
pub mod hub;
mod layering;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod route;
pub mod server;
pub mod shard;
pub mod tick;
pub mod ws;
