//! A publish as Redis runs it, shared by the two places that write one: a
//! shard's own connection (`direct`, plain TCP) and the command thread
//! (`commands`, for `rediss://`). The script's arguments, the idempotency
//! window, and the answers to the publisher.
//!
//! Idempotency: each writer has an incarnation (random per process and
//! writer) and numbers its publishes; the script keeps `sequence -> epoch
//! and offset` in a hash per incarnation for `IDEM_WINDOW` sequences, and
//! looks the sequence up before it publishes, so a publish written again
//! after a link failed (`retry`) is answered from the record instead of
//! published twice, and so is the first copy when it reaches Redis after
//! the retry (late on the connection the node gave up on).

use std::sync::atomic::Ordering;

use super::backoff::random_u64;
use super::keys::{self, CHANNEL_KEYS_TTL_SECS};
use super::reply::{epoch_offset, ttl_secs, unix_ms, Value};
use crate::bus::cluster::{ClusterState, RedisCall};
use crate::bus::msg::{HubMsg, ReplyTo, OUTCOME_UNKNOWN};
use crate::hub::protocol::{self, code, json_string};
use crate::metrics::names;

/// Publishes of one writer remembered in Redis for retries (by count: at
/// 10,000/s about 6.5 s, more than `DEADLINE` + `REDIS_TIMEOUT`).
pub(crate) const IDEM_WINDOW: u64 = 65_536;
/// Sequences that left the window are deleted from Redis once this many
/// have gathered (one `HDEL` for all), and at most this many per publish.
pub(crate) const IDEM_TRIM: u64 = 256;
/// TTL of the idempotency entries: a writer's hash, and a caller's key.
const IDEM_NODE_TTL_SECS: u64 = 60;
pub(crate) const IDEM_CALLER_TTL_SECS: u64 = 300;

/// How a command that could not be done is answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Failure {
    /// Not done: retrying is safe.
    NotDone(&'static str),
    /// A publish that may have run: retry with the same idempotency key.
    Unknown,
}

pub(crate) const UNKNOWN_WHY: &str =
    "the link to the cluster failed after the publish was sent; not known whether it was published";
pub(crate) const UNREACHABLE_WHY: &str = "the cluster is unreachable (no answer within 2 s); not done, retry";
pub(crate) const BUSY_WHY: &str = "the cluster link is busy or down; retry";

/// One writer's place in its idempotency hash.
pub(crate) struct Writer {
    /// Fresh per writer: its sequence numbers never meet another's (a
    /// predecessor with the same node id, or another shard).
    incarnation: u64,
    seq: u64,
    /// What of the hash is deleted, and what is still to be.
    pub trim: Trim,
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            incarnation: random_u64(),
            seq: 0,
            trim: Trim::default(),
        }
    }

    /// The next sequence number.
    pub fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// `EVALSHA` of the publish script for `call` (a `Publish`), written
    /// for the first time or again (`retry`; the script looks the sequence
    /// up first either way), deleting `trim` of the hash.
    pub fn args(
        &self,
        sha: &str,
        node: &str,
        call: &RedisCall,
        seq: u64,
        retry: bool,
        trim: Option<(u64, u64)>,
    ) -> Vec<String> {
        let RedisCall::Publish {
            channel,
            data,
            rule,
            idem,
            may_create,
            ..
        } = call
        else {
            return Vec::new();
        };
        let mut args = vec![
            "EVALSHA".to_string(),
            sha.to_string(),
            "4".into(),
            keys::epoch(channel),
            keys::offset(channel),
            keys::stream(channel),
            match idem {
                Some(key) => keys::idem_caller(channel, key),
                None => keys::idem_node(node, self.incarnation),
            },
        ];
        args.extend([
            new_epoch(),
            data.to_string(),
            rule.size.to_string(),
            keys::publications(channel),
            CHANNEL_KEYS_TTL_SECS.to_string(),
            unix_ms().to_string(),
            ttl_secs(rule).to_string(),
        ]);
        match idem {
            Some(_) => args.extend([
                "k".into(),
                String::new(),
                String::new(),
                IDEM_CALLER_TTL_SECS.to_string(),
            ]),
            None => args.extend([
                if retry { "r" } else { "n" }.into(),
                seq.to_string(),
                trim.map_or(String::new(), |(from, to)| format!("{from}-{to}")),
                IDEM_NODE_TTL_SECS.to_string(),
            ]),
        }
        args.push(if *may_create { "1" } else { "0" }.into());
        args
    }
}

/// What the publish script answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Published (or found published before: `duplicate`) at `result`
    /// (`{"offset":..,"epoch":..}`); `created`: it made the channel.
    Done {
        result: String,
        created: bool,
        duplicate: bool,
    },
    /// The channel did not exist and the caller may not make one.
    Refused,
}

pub(crate) fn outcome(reply: &Value) -> Outcome {
    let item = |i: usize| match reply {
        Value::Array(items) => items.get(i).and_then(Value::as_int),
        _ => None,
    };
    if item(2) == Some(2) {
        return Outcome::Refused;
    }
    let (epoch, offset) = epoch_offset(reply);
    let duplicate = item(2) == Some(1);
    let also = if duplicate { ",\"duplicate\":true" } else { "" };
    Outcome::Done {
        result: format!("{{\"offset\":{offset},\"epoch\":{}{also}}}", json_string(&epoch)),
        created: item(3) == Some(1),
        duplicate,
    }
}

/// Counts a publish the script answered `reply` to, and answers its
/// publisher (as `answer`).
pub(crate) fn completed(state: &ClusterState, to: Option<ReplyTo>, reply: &Value) -> Option<(usize, HubMsg)> {
    match outcome(reply) {
        Outcome::Refused => to.and_then(refusal),
        Outcome::Done {
            result,
            created,
            duplicate,
        } => {
            if !duplicate {
                state.published.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::CLUSTER_PUBLISHED).increment(1);
            }
            to.and_then(|to| answer(to, Ok(&result), created))
        }
    }
}

/// The answer to `to`: a message for the asking client's shard, or `None`
/// when the admin API was answered here (a dropped sender tells it the
/// call was not done: 503).
pub(crate) fn answer(to: ReplyTo, result: Result<&str, Failure>, created: bool) -> Option<(usize, HubMsg)> {
    match to {
        ReplyTo::Client(origin) => {
            let body = match result {
                Ok(result) => protocol::reply_ok(origin.id, result),
                Err(Failure::NotDone(why)) => protocol::reply_error(Some(origin.id), code::UNAVAILABLE, why),
                Err(Failure::Unknown) => protocol::reply_error(Some(origin.id), code::UNAVAILABLE, UNKNOWN_WHY),
            };
            let msg = HubMsg::Answer {
                to: origin,
                body,
                created,
            };
            Some((origin.shard as usize, msg))
        }
        ReplyTo::Admin(tx) => {
            match result {
                Ok(result) => drop(tx.send(result.to_string())),
                Err(Failure::Unknown) => drop(tx.send(format!("{OUTCOME_UNKNOWN}{UNKNOWN_WHY}"))),
                Err(Failure::NotDone(_)) => {}
            }
            None
        }
    }
}

/// The answer to a publish Redis refused because it would make a channel
/// the caller may not make (the API has no such limit: nothing to say).
pub(crate) fn refusal(to: ReplyTo) -> Option<(usize, HubMsg)> {
    let ReplyTo::Client(origin) = to else { return None };
    let why = "too many new channels from this connection this minute (--max-new-channels-per-minute)";
    let body = protocol::reply_error(Some(origin.id), code::CHANNEL_LIMIT, why);
    let msg = HubMsg::Answer {
        to: origin,
        body,
        created: false,
    };
    Some((origin.shard as usize, msg))
}

/// The sequences of the idempotency hash that are deleted, and those still
/// to be.
#[derive(Default)]
pub(crate) struct Trim {
    trimmed: u64,
    /// Shares of publishes that failed (their `HDEL` may not have run).
    pub untrimmed: Vec<(u64, u64)>,
}

impl Trim {
    /// Whether a publish with a sequence up to `seq` may have a share.
    pub fn due(&self, seq: u64) -> bool {
        !self.untrimmed.is_empty() || seq.saturating_sub(IDEM_WINDOW) >= self.trimmed + IDEM_TRIM
    }

    /// The sequences a publish with `seq` deletes: a failed publish's share
    /// first, else those that left the window since the last trim, once
    /// `IDEM_TRIM` of them have gathered, and none from `floor` on (the
    /// oldest publish still waiting). Sequences of other commands are among
    /// them, never written: deleting them costs little.
    pub fn share(&mut self, seq: u64, floor: u64) -> Option<(u64, u64)> {
        if let Some(range) = self.untrimmed.pop() {
            return Some(range);
        }
        let gone = seq.saturating_sub(IDEM_WINDOW).min(floor.saturating_sub(1));
        if gone < self.trimmed + IDEM_TRIM {
            return None;
        }
        let range = (self.trimmed + 1, gone.min(self.trimmed + IDEM_TRIM));
        self.trimmed = range.1;
        Some(range)
    }
}

/// A fresh epoch, used only if the channel has none in Redis yet.
pub(crate) fn new_epoch() -> String {
    format!("{:x}{:04x}", unix_ms(), random_u64() & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trim_never_reaches_a_waiting_publish_and_a_failed_share_comes_back() {
        let mut trim = Trim::default();
        assert_eq!(trim.share(IDEM_WINDOW + 10, u64::MAX), None, "fewer than a batch gone");
        let seq = IDEM_WINDOW + 1_000;
        assert_eq!(trim.share(seq, u64::MAX), Some((1, IDEM_TRIM)));
        assert_eq!(trim.share(seq, u64::MAX), Some((IDEM_TRIM + 1, 2 * IDEM_TRIM)));
        // A publish with sequence 600 still waits (to be retried): the
        // sequence moved far on meanwhile, its record stays.
        assert_eq!(trim.share(seq + 100_000, 600), None);
        assert!(trim.due(seq + 100_000));
        // Its share failed: the next publish deletes it again.
        trim.untrimmed.push((IDEM_TRIM + 1, 2 * IDEM_TRIM));
        assert_eq!(trim.share(seq, 600), Some((IDEM_TRIM + 1, 2 * IDEM_TRIM)));
        // Done with it: the trim goes on from where it was.
        assert_eq!(
            trim.share(seq + 100_000, u64::MAX),
            Some((2 * IDEM_TRIM + 1, 3 * IDEM_TRIM))
        );
    }

    #[test]
    fn the_scripts_answers_read_as_done_duplicate_or_refused() {
        let reply = |dup: i64, made: i64| {
            Value::Array(vec![
                Value::Bytes(b"e1".to_vec()),
                Value::Int(7),
                Value::Int(dup),
                Value::Int(made),
            ])
        };
        assert_eq!(
            outcome(&reply(0, 1)),
            Outcome::Done {
                result: r#"{"offset":7,"epoch":"e1"}"#.into(),
                created: true,
                duplicate: false
            }
        );
        assert_eq!(
            outcome(&reply(1, 0)),
            Outcome::Done {
                result: r#"{"offset":7,"epoch":"e1","duplicate":true}"#.into(),
                created: false,
                duplicate: true
            }
        );
        assert_eq!(outcome(&reply(2, 0)), Outcome::Refused);
    }
}
