//! A channel's log at its owner shard: the epoch, the last offset, recent
//! history, and who is subscribed (presence). Only the owner touches it, so
//! offsets are assigned in one place and every subscriber sees one order.
//!
//! Recovery rule: a client that saw offset `O` in epoch `E` gets exactly the
//! messages after `O`, or a reason why that is impossible (the epoch changed
//! because the log was lost, or history no longer reaches back to `O + 1`).
//! It is never handed a silent gap.
//!
//! Retained publications are charged to the shard's memory meter
//! (`MemKind::History`) while kept; under memory pressure the owner trims
//! history oldest first (`trim_before`), which recovery then reports as
//! "history gone" rather than a gap.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::mailbox::Shares;
use crate::buf::{MemKind, Meter};
use crate::bus::history::{data_bytes, Entry, HistoryRule, Recover, Recovery, ENTRY_ENVELOPE_BYTES};

/// A page of history (see `ChannelLog::page`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub entries: Vec<Entry>,
    pub more: bool,
}

/// Why a recovery was refused for its size.
pub(crate) const TOO_MUCH_TO_RECOVER: &str =
    "too much to recover in one reply: page through history from your offset, then subscribe with recover";

/// A recovery whose publications would not fit in one reply of `max_bytes`
/// becomes a refusal that tells the client to page through `history`.
pub(crate) fn cap_recovery(recovery: Recovery, max_bytes: usize) -> Recovery {
    match recovery {
        Recovery::Recovered(entries) if data_bytes(&entries) > max_bytes => Recovery::Impossible(TOO_MUCH_TO_RECOVER),
        other => other,
    }
}

/// One page of `history` (oldest first): the publications after `since`
/// (without it, the newest `limit`), at most `limit` of them and at most
/// `max_bytes` (see `data_bytes`), but always at least one when there is one,
/// so paging never stalls. `more` when later publications were left out: ask
/// again with `since` = the last offset of this page.
pub(crate) fn page_of(history: &[Entry], since: Option<u64>, limit: usize, max_bytes: usize) -> Page {
    // A page of nothing would say `more` for ever.
    let limit = limit.max(1);
    let start = match since {
        Some(after) => history.partition_point(|e| e.offset <= after),
        None => history.len().saturating_sub(limit),
    };
    let mut entries = Vec::new();
    let mut bytes = 0;
    for entry in history.iter().skip(start).take(limit) {
        let cost = entry.data.len() + ENTRY_ENVELOPE_BYTES;
        if !entries.is_empty() && bytes + cost > max_bytes {
            break;
        }
        bytes += cost;
        entries.push(entry.clone());
    }
    let more = start + entries.len() < history.len();
    Page { entries, more }
}

pub(crate) struct ChannelLog {
    pub epoch: Arc<str>,
    /// The last offset assigned; 0 before the first publication.
    pub last: u64,
    history: VecDeque<Entry>,
    /// Bytes of `data` in `history` (bounded by `rule.max_bytes`).
    history_bytes: usize,
    rule: HistoryRule,
    /// Subscriptions per user id; anonymous ones are counted apart.
    users: HashMap<Arc<str>, u32>,
    anonymous: u32,
    /// Subscriptions per shard (shard, count): deliveries go only to these.
    shards: Vec<(u16, u32)>,
    /// Presence changes not yet pushed (batched per loop turn).
    pub joined: Vec<Arc<str>>,
    pub left: Vec<Arc<str>>,
    meter: Meter,
    /// A mailbox's: what each sender holds of it (`mailbox::Shares`).
    shares: Option<Box<Shares>>,
}

/// Bytes one retained publication is charged: its data, the entry and the
/// `Arc` header.
pub(crate) fn entry_cost(entry: &Entry) -> usize {
    entry.data.len() + std::mem::size_of::<Entry>() + 16
}

impl ChannelLog {
    pub fn new(epoch: Arc<str>, rule: HistoryRule, meter: Meter) -> ChannelLog {
        ChannelLog {
            epoch,
            last: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            rule,
            users: HashMap::new(),
            anonymous: 0,
            shards: Vec::new(),
            joined: Vec::new(),
            left: Vec::new(),
            meter,
            shares: None,
        }
    }

    /// A mailbox's log: keeps what each sender holds, for `admits`.
    pub fn with_shares(mut self) -> ChannelLog {
        let mut shares = Box::<Shares>::default();
        for entry in &self.history {
            shares.add(&entry.data);
        }
        self.shares = Some(shares);
        self
    }

    /// Whether `data` may be appended: always, but for a mailbox at its
    /// bound whose sender is over its share and whose append would push out
    /// a message of a sender within theirs (the reason why not). While the
    /// mailbox has room anyone may add; at the bound a sender within its
    /// share pushes out the oldest, and one over it may push out only its
    /// own (a one-to-one chat goes on as a plain FIFO) and those of senders
    /// over theirs, so a flood never takes what others left.
    pub fn admits(&self, data: &str) -> Result<(), &'static str> {
        let Some(shares) = self.shares.as_ref() else {
            return Ok(());
        };
        let Err(why) = shares.admits(data, &self.rule) else {
            return Ok(());
        };
        // What the append would push out, oldest first (see `append`).
        let (mut count, mut bytes) = (self.history.len() + 1, self.history_bytes + data.len());
        // What it would have pushed out so far, per sender.
        let mut taken = Vec::new();
        for entry in &self.history {
            if count <= self.rule.size && bytes <= self.rule.max_bytes {
                return Ok(());
            }
            if !shares.yields_to(&entry.data, data, &self.rule, &mut taken) {
                return Err(why);
            }
            count -= 1;
            bytes -= entry.data.len();
        }
        // All of it would go (or nothing was kept): nobody else's is taken,
        // but a message over the byte bound on its own is not kept anyway.
        match bytes <= self.rule.max_bytes {
            true => Ok(()),
            false => Err(why),
        }
    }

    fn pop_oldest(&mut self) -> Option<Entry> {
        let entry = self.history.pop_front()?;
        self.history_bytes -= entry.data.len();
        if let Some(shares) = self.shares.as_mut() {
            shares.remove(&entry.data);
        }
        self.meter.release(MemKind::History, entry_cost(&entry));
        Some(entry)
    }

    fn clear_history(&mut self) {
        while self.pop_oldest().is_some() {}
    }

    /// Memory pressure: drops publications published before `tick`; returns
    /// how many.
    pub(crate) fn trim_before(&mut self, tick: u32) -> usize {
        let mut dropped = 0;
        while self.history.front().is_some_and(|e| e.at < tick) {
            self.pop_oldest();
            dropped += 1;
        }
        dropped
    }

    /// Ticks and costs of the retained publications (for a global trim).
    pub(crate) fn ages(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.history.iter().map(|e| (e.at, entry_cost(e)))
    }

    /// Assigns the next offset to `data` and keeps it as history.
    pub fn append(&mut self, data: Arc<str>, now: u32) -> u64 {
        self.last += 1;
        if self.rule.size > 0 {
            let entry = Entry {
                offset: self.last,
                at: now,
                data,
            };
            self.meter.charge(MemKind::History, entry_cost(&entry));
            self.history_bytes += entry.data.len();
            if let Some(shares) = self.shares.as_mut() {
                shares.add(&entry.data);
            }
            self.history.push_back(entry);
            // By count, then by bytes; a publication larger than the byte
            // bound on its own is not kept (recovery reports it gone).
            while self.history.len() > self.rule.size || self.history_bytes > self.rule.max_bytes {
                self.pop_oldest();
            }
        }
        self.last
    }

    /// Cluster mode: keeps a publication Redis sequenced. Returns false for
    /// one already seen (nothing to deliver). A new epoch (the channel was
    /// lost in Redis) or a gap (the link dropped publications) clears the
    /// history, so recovery goes to Redis rather than hand out a gap.
    pub(crate) fn append_at(&mut self, epoch: &Arc<str>, offset: u64, data: Arc<str>, now: u32) -> bool {
        if **epoch != *self.epoch {
            self.epoch = Arc::clone(epoch);
            self.clear_history();
            self.last = offset.saturating_sub(1);
        }
        if offset <= self.last {
            return false;
        }
        if offset != self.last + 1 {
            self.clear_history();
        }
        self.last = offset - 1;
        self.append(data, now);
        true
    }

    /// Cluster mode: Redis's position of the channel, which may be ahead of
    /// what this node has seen (publications before it took an interest).
    pub fn sync(&mut self, epoch: &Arc<str>, offset: u64) {
        if **epoch != *self.epoch {
            self.epoch = Arc::clone(epoch);
            self.clear_history();
            self.last = offset;
        } else if offset > self.last {
            self.clear_history();
            self.last = offset;
        }
    }

    /// True when `from` is in this epoch and behind, but older than what
    /// the local history holds: only Redis's history can answer.
    pub(crate) fn needs_older(&self, from: &Recover) -> bool {
        *from.epoch == *self.epoch
            && from.offset < self.last
            && self
                .history
                .front()
                .is_none_or(|oldest| oldest.offset > from.offset + 1)
    }

    /// Drops history older than the rule's time limit.
    pub fn expire(&mut self, now: u32) {
        while let Some(front) = self.history.front() {
            if now.saturating_sub(front.at) < self.rule.ttl_ticks {
                break;
            }
            self.pop_oldest();
        }
    }

    pub fn recover(&self, from: &Recover) -> Recovery {
        if *from.epoch != *self.epoch {
            return Recovery::Impossible("epoch changed: the channel's history was lost");
        }
        if from.offset > self.last {
            return Recovery::Impossible("offset is ahead of the channel");
        }
        if from.offset == self.last {
            return Recovery::Recovered(Vec::new());
        }
        match self.history.front() {
            Some(oldest) if oldest.offset <= from.offset + 1 => Recovery::Recovered(
                self.history
                    .iter()
                    .filter(|e| e.offset > from.offset)
                    .cloned()
                    .collect(),
            ),
            _ => Recovery::Impossible("history gone: missed publications expired"),
        }
    }

    /// Cluster mode: recovery with `older` publications from Redis's
    /// history joined to the local ones; a gap anywhere refuses.
    pub(crate) fn recover_with(&self, from: &Recover, older: Vec<Entry>) -> Recovery {
        if *from.epoch != *self.epoch {
            return Recovery::Impossible("epoch changed: the channel's history was lost");
        }
        if from.offset > self.last {
            return Recovery::Impossible("offset is ahead of the channel");
        }
        let mut all: std::collections::BTreeMap<u64, Entry> = older.into_iter().map(|e| (e.offset, e)).collect();
        for entry in &self.history {
            all.entry(entry.offset).or_insert_with(|| entry.clone());
        }
        let wanted: Vec<Entry> = all
            .into_values()
            .filter(|e| e.offset > from.offset && e.offset <= self.last)
            .collect();
        if wanted.len() as u64 == self.last - from.offset {
            Recovery::Recovered(wanted)
        } else {
            Recovery::Impossible("history gone: missed publications expired")
        }
    }

    /// The newest `limit` publications, oldest first.
    #[cfg(test)]
    pub(crate) fn recent(&self, limit: usize) -> Vec<Entry> {
        let skip = self.history.len().saturating_sub(limit);
        self.history.iter().skip(skip).cloned().collect()
    }

    /// One page of history (see [`page_of`]).
    pub(crate) fn page(&mut self, since: Option<u64>, limit: usize, max_bytes: usize) -> Page {
        page_of(self.history.make_contiguous(), since, limit, max_bytes)
    }

    pub(crate) fn add_subscriber(&mut self, user: Option<&Arc<str>>, shard: u16) {
        match self.shards.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, n)) => *n += 1,
            None => self.shards.push((shard, 1)),
        }
        match user {
            None => self.anonymous += 1,
            Some(user) => {
                let count = self.users.entry(Arc::clone(user)).or_insert(0);
                *count += 1;
                if *count == 1 {
                    self.joined.push(Arc::clone(user));
                }
            }
        }
    }

    pub(crate) fn remove_subscriber(&mut self, user: Option<&Arc<str>>, shard: u16) {
        if let Some(i) = self.shards.iter().position(|(s, _)| *s == shard) {
            self.shards[i].1 -= 1;
            if self.shards[i].1 == 0 {
                self.shards.swap_remove(i);
            }
        }
        match user {
            None => self.anonymous = self.anonymous.saturating_sub(1),
            Some(user) => {
                let Some(count) = self.users.get_mut(user) else { return };
                *count -= 1;
                if *count == 0 {
                    self.users.remove(user);
                    self.left.push(Arc::clone(user));
                }
            }
        }
    }

    /// Users with their connection counts, and the anonymous count.
    pub fn presence(&self) -> (Vec<(&str, u32)>, u32) {
        let mut users: Vec<(&str, u32)> = self.users.iter().map(|(u, &c)| (&**u, c)).collect();
        users.sort_unstable();
        (users, self.anonymous)
    }

    /// Shards with at least one subscriber of this channel.
    pub fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.shards.iter().map(|&(s, _)| s as usize)
    }

    pub fn subscribers(&self) -> u32 {
        self.anonymous + self.users.values().sum::<u32>()
    }

    /// Nothing left to keep: no subscriber, no history, no pending events.
    pub(crate) fn is_idle(&self) -> bool {
        self.subscribers() == 0 && self.history.is_empty() && self.joined.is_empty() && self.left.is_empty()
    }
}

impl Drop for ChannelLog {
    fn drop(&mut self) {
        self.clear_history();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(size: usize, ttl_ticks: u32) -> ChannelLog {
        let max_bytes = usize::MAX;
        ChannelLog::new(
            "e1".into(),
            HistoryRule {
                size,
                ttl_ticks,
                max_bytes,
            },
            Meter::unlimited(),
        )
    }

    fn recover(offset: u64, epoch: &str) -> Recover {
        Recover {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn recovery_gives_exactly_the_missed_publications() {
        let mut log = log(10, 100);
        for i in 1..=5 {
            log.append(format!("{i}").into(), 0);
        }
        match log.recover(&recover(2, "e1")) {
            Recovery::Recovered(entries) => assert_eq!(entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [3, 4, 5]),
            other => panic!("{other:?}"),
        }
        assert_eq!(log.recover(&recover(5, "e1")), Recovery::Recovered(Vec::new()));
    }

    #[test]
    fn recovery_refuses_rather_than_leave_a_gap() {
        let mut log = log(3, 100);
        for i in 1..=6 {
            log.append(format!("{i}").into(), 0);
        }
        // History holds 4..=6: a client at 2 missed 3, which is gone.
        assert!(matches!(log.recover(&recover(2, "e1")), Recovery::Impossible(r) if r.starts_with("history gone")));
        assert!(matches!(log.recover(&recover(3, "e1")), Recovery::Recovered(v) if v.len() == 3));
        assert!(matches!(log.recover(&recover(3, "other")), Recovery::Impossible(r) if r.starts_with("epoch")));
        assert!(matches!(log.recover(&recover(9, "e1")), Recovery::Impossible(_)));
    }

    #[test]
    fn cluster_appends_keep_redis_offsets_and_clear_history_on_a_gap() {
        let mut log = log(10, 100);
        let epoch: Arc<str> = "r1".into();
        log.sync(&epoch, 4);
        assert_eq!((log.last, &*log.epoch), (4, "r1"));
        assert!(!log.append_at(&epoch, 4, "old".into(), 0), "seen already");
        assert!(log.append_at(&epoch, 5, "e".into(), 0));
        assert!(log.append_at(&epoch, 6, "f".into(), 0));
        assert!(log.needs_older(&recover(3, "r1")));
        assert!(!log.needs_older(&recover(4, "r1")));
        assert!(log.append_at(&epoch, 9, "i".into(), 0), "a gap still delivers");
        assert_eq!(log.recent(10).iter().map(|e| e.offset).collect::<Vec<_>>(), [9]);
        assert!(log.append_at(&"r2".into(), 1, "new epoch".into(), 0));
        assert_eq!((log.last, &*log.epoch), (1, "r2"));
    }

    #[test]
    fn history_is_charged_while_kept_and_trimmed_oldest_first() {
        let meter = Meter::unlimited();
        let mut log = ChannelLog::new(
            "e1".into(),
            HistoryRule {
                size: 3,
                ttl_ticks: 100,
                max_bytes: usize::MAX,
            },
            meter.clone(),
        );
        for i in 0..5u32 {
            log.append("x".repeat(100).into(), i);
        }
        let one = 100 + std::mem::size_of::<Entry>() + 16;
        assert_eq!(
            meter.held(MemKind::History),
            3 * one as u64,
            "what the size rule dropped is released"
        );
        assert_eq!(log.trim_before(4), 2);
        assert_eq!(log.recent(10).iter().map(|e| e.offset).collect::<Vec<_>>(), [5]);
        let gone = Recover {
            offset: 2,
            epoch: "e1".into(),
        };
        assert!(
            matches!(log.recover(&gone), Recovery::Impossible(_)),
            "a trim is never a silent gap"
        );
        drop(log);
        assert_eq!(meter.held(MemKind::History), 0);
    }

    #[test]
    fn history_expires_by_time() {
        let mut log = log(10, 4);
        log.append("a".into(), 0);
        log.append("b".into(), 3);
        log.expire(5);
        assert_eq!(log.recent(10).len(), 1);
        assert!(matches!(log.recover(&recover(0, "e1")), Recovery::Impossible(_)));
    }

    #[test]
    fn presence_counts_connections_per_user_and_reports_changes() {
        let mut log = log(0, 1);
        let alice: Arc<str> = "alice".into();
        log.add_subscriber(Some(&alice), 0);
        log.add_subscriber(Some(&alice), 1);
        log.add_subscriber(None, 1);
        let mut shards: Vec<usize> = log.shards().collect();
        shards.sort_unstable();
        assert_eq!(shards, [0, 1], "deliveries go to both shards");
        assert_eq!(log.presence(), (vec![("alice", 2)], 1));
        assert_eq!(log.joined.len(), 1, "one join for the first connection only");
        log.remove_subscriber(Some(&alice), 0);
        assert_eq!(log.shards().collect::<Vec<_>>(), [1], "shard 0 has none left");
        log.remove_subscriber(Some(&alice), 1);
        assert_eq!(log.left.len(), 1);
        log.remove_subscriber(None, 1);
        assert_eq!(log.shards().count(), 0);
        log.joined.clear();
        log.left.clear();
        assert!(log.is_idle());
    }

    fn offsets(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn history_is_bounded_in_bytes_as_well_as_in_count() {
        let rule = HistoryRule {
            size: 100,
            ttl_ticks: 100,
            max_bytes: 250,
        };
        let meter = Meter::unlimited();
        let mut log = ChannelLog::new("e1".into(), rule, meter.clone());
        for _ in 0..10 {
            log.append("x".repeat(100).into(), 0);
        }
        assert_eq!(offsets(&log.recent(100)), [9, 10], "two of 100 bytes fit in 250");
        log.append("y".repeat(300).into(), 0);
        assert!(log.recent(100).is_empty(), "one larger than the bound is not kept");
        assert!(matches!(log.recover(&recover(9, "e1")), Recovery::Impossible(_)));
        drop(log);
        assert_eq!(meter.held(MemKind::History), 0, "every byte released");
    }

    #[test]
    fn pages_are_bounded_and_say_where_to_go_on() {
        let mut log = log(100, 100);
        for _ in 0..10 {
            log.append("z".repeat(100).into(), 0);
        }
        let page_bytes = 3 * (100 + ENTRY_ENVELOPE_BYTES);
        let first = log.page(Some(0), 100, page_bytes);
        assert_eq!((offsets(&first.entries), first.more), (vec![1, 2, 3], true));
        let mut seen = offsets(&first.entries);
        let mut page = first;
        while page.more {
            let since = page.entries.last().unwrap().offset;
            page = log.page(Some(since), 100, page_bytes);
            assert!(page.entries.len() <= 3);
            seen.extend(offsets(&page.entries));
        }
        assert_eq!(
            seen,
            (1..=10).collect::<Vec<_>>(),
            "paging visits every publication once"
        );
        let newest = log.page(None, 4, usize::MAX);
        assert_eq!((offsets(&newest.entries), newest.more), (vec![7, 8, 9, 10], false));
        let tiny = log.page(None, 4, 1);
        assert_eq!(
            (offsets(&tiny.entries), tiny.more),
            (vec![7], true),
            "at least one, so paging moves"
        );
        let limited = log.page(Some(2), 2, usize::MAX);
        assert_eq!((offsets(&limited.entries), limited.more), (vec![3, 4], true));
        assert!(log.page(Some(10), 5, usize::MAX).entries.is_empty());
    }

    #[test]
    fn a_sender_over_its_share_pushes_out_no_more_of_anothers_than_that_one_holds_over_its_share() {
        use crate::hub::mailbox::{envelope, OVER_SHARE};
        // Shares: 25 messages and 100 bytes. Each message is 50 bytes.
        let rule = HistoryRule {
            size: 100,
            ttl_ticks: 100,
            max_bytes: 400,
        };
        let fifty = |from: &str| envelope(Some(from), &format!("\"{}\"", "x".repeat(26)));
        assert_eq!(fifty("bob").len(), 50);
        let mut log = ChannelLog::new("e1".into(), rule, Meter::unlimited()).with_shares();
        // While there is room anyone adds: bob holds 150 (50 over his
        // share), eve fills the rest.
        for from in ["bob", "bob", "bob", "eve", "eve", "eve", "eve", "eve"] {
            assert_eq!(log.admits(&fifty(from)), Ok(()));
            log.append(fifty(from).into(), 0);
        }
        // Eve, over hers, sends 100 bytes: that would push out two of
        // bob's, but only the first is over his share; the second would
        // leave him below it.
        let hundred = envelope(Some("eve"), &format!("\"{}\"", "x".repeat(76)));
        assert_eq!(hundred.len(), 100);
        assert_eq!(log.admits(&hundred), Err(OVER_SHARE));
        // One of 50 takes only bob's excess.
        assert_eq!(log.admits(&fifty("eve")), Ok(()));
    }

    #[test]
    fn a_recovery_too_large_for_one_reply_says_to_page() {
        let mut log = log(100, 100);
        for _ in 0..10 {
            log.append("w".repeat(1000).into(), 0);
        }
        let whole = log.recover(&recover(0, "e1"));
        assert!(matches!(cap_recovery(whole.clone(), 20_000), Recovery::Recovered(ref e) if e.len() == 10));
        assert_eq!(cap_recovery(whole, 5_000), Recovery::Impossible(TOO_MUCH_TO_RECOVER));
    }
}
