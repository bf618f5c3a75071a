//! What a channel's history is made of, as it travels between shards and the
//! cluster bridge: retained entries, a client's resume position, the answer
//! to a recovery, and the retention rule.

use std::sync::Arc;

use serde::Deserialize;

/// History kept for a channel: at most `size` publications, of at most
/// `max_bytes` of `data` together, for `ttl_ticks`; the oldest go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRule {
    pub size: usize,
    pub ttl_ticks: u32,
    pub max_bytes: usize,
}

/// The position a client saw last, to resume from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Recover {
    pub offset: u64,
    pub epoch: String,
}

/// One retained publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    /// Tick it was published at.
    pub at: u32,
    /// The publication's `data`, raw JSON text.
    pub data: Arc<str>,
}

/// Bytes of `data` in `entries`: what a reply carrying them costs, less its
/// fixed envelope.
pub fn data_bytes(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.data.len() + ENTRY_ENVELOPE_BYTES).sum()
}

/// JSON around one publication in a reply (`{"offset":N,"data":}` and a comma).
pub const ENTRY_ENVELOPE_BYTES: usize = 32;

/// The answer to a recovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The client did not ask to recover.
    NotAsked,
    /// Exactly the publications the client missed (possibly none).
    Recovered(Vec<Entry>),
    /// Why the missed publications cannot be given.
    Impossible(&'static str),
}
