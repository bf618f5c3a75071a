//! A publish as Redis runs it, shared by the two places that write one: a
//! shard's own connection (`direct`, plain TCP) and the command thread
//! (`commands`, for `rediss://`). The script's arguments, the idempotency
//! window, and the answers to the publisher.
//!
//! Idempotency: each writer has an incarnation (random per process and
//! writer) and numbers its publishes; the script keeps `sequence -> epoch
//! and offset` for `IDEM_WINDOW` sequences, in hashes of `IDEM_BUCKET`
//! sequences each, and looks the sequence up before it publishes, so a
//! publish written again after a link failed (`retry`) is answered from the
//! record instead of published twice, and so is the first copy when it
//! reaches Redis after the retry (late on the connection the node gave up
//! on). A hash that left the window is dropped whole by one publish: one
//! `UNLINK` of 1,024 fields holds Redis about 26 us, where the `HDEL` of 256
//! fields it replaces held it 0.2 ms, four times as often.
//!
//! TTLs: a channel's keys (epoch, offset, stream) are refreshed by a writer
//! once per `KEYS_REFRESH` (or a quarter of the history's TTL), not by
//! every publish: at 10,000 publishes/s three `EXPIRE`s were a fifth of the
//! script's time in Redis.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::random_u64;
use super::commands::DEADLINE;
use super::keys::{self, CHANNEL_KEYS_TTL_SECS};
use super::reply::{epoch_offset, ttl_secs, unix_ms, Value};
use crate::bus::cluster::{ClusterState, RedisCall};
use crate::bus::msg::{HubMsg, ReplyTo, OUTCOME_UNKNOWN};
use crate::hub::protocol::{self, code, json_string};
use crate::metrics::names;

/// Publishes of one writer remembered in Redis for retries (by count: at
/// 10,000/s about 6.5 s, more than `DEADLINE` + `REDIS_TIMEOUT`).
pub(crate) const IDEM_WINDOW: u64 = 65_536;
/// Sequences per record hash: a hash is dropped (one `UNLINK`) once all of
/// its sequences left the window, so about this many more than
/// `IDEM_WINDOW` are kept (more while a publish older than the window
/// still waits, or a failed drop waits for the next publish; each hash
/// also expires 60 s after its last record).
pub(crate) const IDEM_BUCKET: u64 = 1_024;
/// How often a writer refreshes the TTLs of a channel's keys at most (and
/// of its stream: a quarter of the history's TTL, if shorter). The keys
/// live a day after the last refresh, so a day less one period after the
/// channel's last publish; a stream lives its TTL plus `STREAM_SLACK`
/// periods and `DEADLINE` after a refresh (its entries older than the TTL
/// are never read: `reply::entries`), so three refreshes missed in a row,
/// or one late by up to a deadline, leave every entry its full TTL.
const KEYS_REFRESH: Duration = Duration::from_secs(60);
/// Periods a stream outlives its history's TTL after a refresh.
const STREAM_SLACK: u32 = 4;
/// Channels a writer remembers refreshing. It forgets them all once a
/// `KEYS_REFRESH` (one refresh more per channel and period, at most; no
/// entry outlives it), and past this many it refreshes with every publish,
/// as before this was kept: a hostile flood of channel names costs each
/// writer at most this many entries (about 50 bytes each; the names are
/// the channels' own, shared) and no scan per publish.
const KEYS_REMEMBERED: usize = 8_192;
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
    /// What of the window is dropped, and what is still to be.
    pub trim: Trim,
    /// When this writer last refreshed each channel's key TTLs, since
    /// `forgot_at`.
    refreshed: HashMap<Arc<str>, Instant>,
    forgot_at: Instant,
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            incarnation: random_u64(),
            seq: 0,
            trim: Trim::default(),
            refreshed: HashMap::new(),
            forgot_at: Instant::now(),
        }
    }

    /// Whether a publish to `channel` now refreshes its key TTLs (every
    /// `every`, at most `KEYS_REFRESH`): noted as done when it says so,
    /// whether or not the script then runs (a retry refreshes again). A
    /// refresh missed that way comes one period later, which the TTLs
    /// allow for (`KEYS_REFRESH`).
    pub fn refresh_due(&mut self, channel: &Arc<str>, every: Duration, now: Instant) -> bool {
        if now.saturating_duration_since(self.forgot_at) >= KEYS_REFRESH {
            self.refreshed = HashMap::new();
            self.forgot_at = now;
        }
        if let Some(at) = self.refreshed.get_mut(channel) {
            if now.saturating_duration_since(*at) < every {
                return false;
            }
            *at = now;
            return true;
        }
        if self.refreshed.len() < KEYS_REMEMBERED {
            self.refreshed.insert(Arc::clone(channel), now);
        }
        true
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
    /// up first either way), dropping the record hash of `trim`.
    pub fn args(
        &mut self,
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
        // The stream's TTL is refreshed with the channel's keys: as often
        // as a quarter of it, and kept `STREAM_SLACK` periods and a
        // deadline longer.
        let history_ttl = Duration::from_secs(ttl_secs(rule));
        let every = match rule.size {
            0 => KEYS_REFRESH,
            _ => KEYS_REFRESH.min(history_ttl / 4),
        };
        let refresh = self.refresh_due(channel, every, Instant::now()) || retry;
        let stream_ttl = (history_ttl + every * STREAM_SLACK + DEADLINE).as_secs_f64().ceil() as u64;
        let drop = trim.filter(|_| idem.is_none());
        let mut args = vec![
            "EVALSHA".to_string(),
            sha.to_string(),
            if drop.is_some() { "5" } else { "4" }.into(),
            keys::epoch(channel),
            keys::offset(channel),
            keys::stream(channel),
            match idem {
                Some(key) => keys::idem_caller(channel, key),
                None => keys::idem_node(node, self.incarnation, bucket_of(seq)),
            },
        ];
        if let Some((from, _)) = drop {
            args.push(keys::idem_node(node, self.incarnation, bucket_of(from)));
        }
        args.extend([
            new_epoch(),
            data.to_string(),
            rule.size.to_string(),
            keys::publications(channel),
            CHANNEL_KEYS_TTL_SECS.to_string(),
            unix_ms().to_string(),
            stream_ttl.to_string(),
        ]);
        let refresh = if refresh { "c" } else { "" };
        match idem {
            Some(_) => args.extend([
                "k".into(),
                String::new(),
                refresh.into(),
                IDEM_CALLER_TTL_SECS.to_string(),
            ]),
            None => args.extend([
                if retry { "r" } else { "n" }.into(),
                seq.to_string(),
                refresh.into(),
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

/// The record hash (`IDEM_BUCKET` sequences, from 1) holding `seq`.
pub(crate) fn bucket_of(seq: u64) -> u64 {
    seq.saturating_sub(1) / IDEM_BUCKET
}

/// The sequences of the idempotency window that are dropped, and those
/// still to be: whole record hashes (`bucket_of`), so every share is one
/// bucket's sequences.
#[derive(Default)]
pub(crate) struct Trim {
    trimmed: u64,
    /// Shares of publishes that failed (their `UNLINK` may not have run).
    pub untrimmed: Vec<(u64, u64)>,
}

impl Trim {
    /// Whether a publish with a sequence up to `seq` may have a share.
    pub fn due(&self, seq: u64) -> bool {
        !self.untrimmed.is_empty() || seq.saturating_sub(IDEM_WINDOW) >= self.trimmed + IDEM_BUCKET
    }

    /// The sequences a publish with `seq` drops: a failed publish's share
    /// first, else the next bucket once all of it left the window, and
    /// none from `floor` on (the oldest publish still waiting). Sequences
    /// of other commands are among them, never written.
    pub fn share(&mut self, seq: u64, floor: u64) -> Option<(u64, u64)> {
        if let Some(range) = self.untrimmed.pop() {
            return Some(range);
        }
        let gone = seq.saturating_sub(IDEM_WINDOW).min(floor.saturating_sub(1));
        if gone < self.trimmed + IDEM_BUCKET {
            return None;
        }
        let range = (self.trimmed + 1, self.trimmed + IDEM_BUCKET);
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
        let not_whole = IDEM_WINDOW + IDEM_BUCKET - 1;
        assert_eq!(trim.share(not_whole, u64::MAX), None, "no bucket wholly gone");
        let seq = IDEM_WINDOW + 3 * IDEM_BUCKET;
        assert_eq!(trim.share(seq, u64::MAX), Some((1, IDEM_BUCKET)));
        assert_eq!(trim.share(seq, u64::MAX), Some((IDEM_BUCKET + 1, 2 * IDEM_BUCKET)));
        // A publish with sequence 600 still waits (to be retried): the
        // sequence moved far on meanwhile, its record stays.
        assert_eq!(trim.share(seq + 100_000, 600), None);
        assert!(trim.due(seq + 100_000));
        // Its share failed: the next publish deletes it again.
        trim.untrimmed.push((IDEM_BUCKET + 1, 2 * IDEM_BUCKET));
        assert_eq!(trim.share(seq, 600), Some((IDEM_BUCKET + 1, 2 * IDEM_BUCKET)));
        // Done with it: the trim goes on from where it was.
        assert_eq!(
            trim.share(seq + 100_000, u64::MAX),
            Some((2 * IDEM_BUCKET + 1, 3 * IDEM_BUCKET))
        );
    }

    #[test]
    fn a_share_of_the_trim_is_exactly_one_record_hash() {
        assert_eq!((bucket_of(1), bucket_of(IDEM_BUCKET)), (0, 0));
        assert_eq!(bucket_of(IDEM_BUCKET + 1), 1);
        let mut trim = Trim::default();
        let mut seq = IDEM_WINDOW;
        for bucket in 0..5 {
            seq += IDEM_BUCKET;
            let (from, to) = trim.share(seq, u64::MAX).expect("a bucket left the window");
            assert_eq!((bucket_of(from), bucket_of(to)), (bucket, bucket));
            assert_eq!(bucket_of(from - 1).max(bucket_of(to + 1)), bucket + 1, "all of it");
        }
    }

    fn publish_call(channel: &str, size: usize, ttl_secs: u32) -> RedisCall {
        RedisCall::Publish {
            channel: channel.into(),
            data: "\"d\"".into(),
            reply: None,
            rule: crate::bus::history::HistoryRule {
                size,
                ttl_ticks: ttl_secs * crate::tick::TICKS_PER_SEC,
                max_bytes: 1 << 20,
            },
            idem: None,
            may_create: true,
        }
    }

    #[test]
    fn key_ttls_are_refreshed_once_a_period_per_channel() {
        let mut writer = Writer::new();
        let (news, chat): (Arc<str>, Arc<str>) = ("news".into(), "chat".into());
        let t0 = Instant::now();
        assert!(writer.refresh_due(&news, KEYS_REFRESH, t0), "first publish");
        assert!(!writer.refresh_due(&news, KEYS_REFRESH, t0 + Duration::from_secs(59)));
        assert!(
            writer.refresh_due(&chat, KEYS_REFRESH, t0 + Duration::from_secs(59)),
            "its own"
        );
        assert!(writer.refresh_due(&news, KEYS_REFRESH, t0 + Duration::from_secs(60)));
        assert!(!writer.refresh_due(&news, KEYS_REFRESH, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn past_the_channels_remembered_every_publish_refreshes_and_all_are_forgotten_each_period() {
        let mut writer = Writer::new();
        let t0 = writer.forgot_at;
        for i in 0..KEYS_REMEMBERED {
            writer.refresh_due(&Arc::from(format!("c{i}")), KEYS_REFRESH, t0);
        }
        let extra: Arc<str> = "extra".into();
        let soon = t0 + Duration::from_secs(1);
        assert!(writer.refresh_due(&extra, KEYS_REFRESH, soon));
        assert!(writer.refresh_due(&extra, KEYS_REFRESH, soon), "not remembered: full");
        assert_eq!(writer.refreshed.len(), KEYS_REMEMBERED);
        // A period on, all are forgotten: each refreshes once more.
        let later = t0 + KEYS_REFRESH;
        assert!(writer.refresh_due(&extra, KEYS_REFRESH, later));
        assert_eq!(writer.refreshed.len(), 1);
        assert!(!writer.refresh_due(&extra, KEYS_REFRESH, later), "remembered now");
        assert!(writer.refresh_due(&Arc::from("c0"), KEYS_REFRESH, later));
    }

    #[test]
    fn the_script_call_names_the_sequences_hash_the_dropped_one_and_the_refresh() {
        let mut writer = Writer::new();
        let call = publish_call("news", 10, 8);
        let args = writer.args("sha", "n1", &call, IDEM_BUCKET + 5, false, None);
        let inc = writer.incarnation;
        assert_eq!(args[2], "4");
        assert_eq!(args[6], keys::idem_node("n1", inc, 1));
        // ARGV: 7 stream TTL (8 s, four periods of 2 s, a deadline of 2 s),
        // 10 the refresh.
        let argv = &args[7..];
        assert_eq!(
            (argv[6].as_str(), argv[7].as_str(), argv[8].as_str()),
            ("18", "n", &*(IDEM_BUCKET + 5).to_string())
        );
        assert_eq!(argv[9], "c", "first publish of the channel refreshes");
        let trim = Some((1, IDEM_BUCKET));
        let seq = IDEM_WINDOW + 2 * IDEM_BUCKET;
        let args = writer.args("sha", "n1", &call, seq, false, trim);
        assert_eq!(args[2], "5");
        assert_eq!(args[7], keys::idem_node("n1", inc, 0), "the dropped hash");
        let argv = &args[8..];
        assert_eq!(
            (argv[7].as_str(), argv[9].as_str()),
            ("n", ""),
            "refreshed a moment ago"
        );
        // Its retry refreshes again: the first copy may not have run.
        let args = writer.args("sha", "n1", &call, seq, true, trim);
        assert_eq!((args[15].as_str(), args[17].as_str()), ("r", "c"));
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
