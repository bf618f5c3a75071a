//! Metrics: every name once (`names`), and shard-local counters (`stats`)
//! that the hot path bumps as plain integers and that are flushed into
//! `metrics` handles once per tick, so no metric name is looked up per message.

pub mod disconnect;
pub(crate) mod exporter;
pub mod histogram;
pub mod names;
pub mod shard;
pub mod stats;
