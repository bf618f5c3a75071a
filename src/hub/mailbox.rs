//! Private messages (`send`, `POST /api/send`) and, with `--mailbox-size`,
//! each user's mailbox: offline messages recovered after a reconnect.
//!
//! A mailbox is not a second store: it is the channel `#mailbox:USER`,
//! owned by `owner_of(name)` and kept by the owner's `ChannelLog` like any
//! channel (offsets, epoch, history under the mailbox's rule, the memory
//! budget, `--max-channels`; in cluster mode Redis's offset, epoch and
//! stream through the same publish script). `#` is outside channel names,
//! so no client can name a mailbox except as allowed here: its own user may
//! `subscribe` (with `recover`), `unsubscribe` and read its `history`;
//! nobody may `publish` to it (103), another user gets 103.
//!
//! A `send` is then a publication on the mailbox whose data is
//! `{"from","data"}`. The owner (of every node, in cluster mode) turns each
//! one into a single `message` push carrying the mailbox `offset` and
//! `epoch`, and sends it to every shard for the user's connections, whether
//! or not they subscribed to the mailbox (`UserMessage` with a `MailPos`).
//! Subscribing with `recover` is how a connection gets what it missed.
//!
//! Exactly once per connection: each session keeps a [`MailMark`], its
//! position and the runs of mailbox offsets it was given (live or
//! recovered; runs, not one run: what came before a gap is remembered, and
//! what a gap or a subscribe skipped is not taken as given). A live message
//! at or below the position is not pushed again; a recovery leaves out what
//! the connection was given already (a live message can come before the
//! `subscribe` answer: they travel in different lanes). A live message
//! more than one past the mark (one was dropped under overload, or missed
//! by this node's Redis subscriber) is preceded by a `gap` push for the
//! mailbox, as for a channel.
//!
//! Without `--mailbox-size` nothing here keeps anything: `send` delivers
//! live only, as it always did, and no mailbox channel is made.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::frame::text_frame;
use super::protocol::{self, code, json_string};
use super::session::Session;
use super::{Conns, Hub};
use crate::buf::MemoryBudget;
use crate::bus::cluster::ClusterCmd;
use crate::bus::history::{HistoryRule, Recovery};
use crate::bus::msg::{HubMsg, MailPos, ReplyTo};

/// What a mailbox channel's name starts with; the rest is the user's `sub`.
pub(crate) const PREFIX: &str = "#mailbox:";
/// Longest user id a mailbox is kept for (`send` answers 102 beyond).
pub(crate) const MAX_USER_BYTES: usize = 256;

/// The mailbox channel of `user`.
pub(crate) fn name(user: &str) -> Arc<str> {
    format!("{PREFIX}{user}").into()
}

/// The user whose mailbox `channel` is, if it is one.
pub(crate) fn user_of(channel: &str) -> Option<&str> {
    channel.strip_prefix(PREFIX).filter(|user| !user.is_empty())
}

/// What a mailbox keeps of one message: `{"from":F,"data":D}` (`from` is
/// null for `POST /api/send`), `data` copied verbatim.
pub(crate) fn envelope(from: Option<&str>, data: &str) -> String {
    let from = from.map_or_else(|| "null".to_string(), json_string);
    format!("{{\"from\":{from},\"data\":{data}}}")
}

/// The live push of a kept message:
/// `{"push":"message","offset":N,"epoch":E,"from":F,"data":D}`. `None` for
/// data that is not an envelope (not written by a hubbub node).
pub(crate) fn push_mail(envelope: &str, offset: u64, epoch: &str) -> Option<Vec<u8>> {
    let rest = envelope.strip_prefix("{\"from\":")?;
    Some(
        format!(
            "{{\"push\":\"message\",\"offset\":{offset},\"epoch\":{},\"from\":{rest}",
            json_string(epoch)
        )
        .into_bytes(),
    )
}

/// A kept message the owner framed once for all of its user's connections.
#[derive(Debug)]
pub(crate) struct Mail {
    pub user: Arc<str>,
    pub frame: Bytes,
    pub pos: MailPos,
}

/// The owner's delivery of the mailbox publication `envelope` at `offset`
/// of `epoch` in `channel` (`None` when `channel` is not a mailbox or the
/// data not an envelope: then it is not a private message).
pub(crate) fn mail(
    channel: &str,
    envelope: &str,
    offset: u64,
    epoch: &Arc<str>,
    budget: &Arc<MemoryBudget>,
) -> Option<Mail> {
    let user = user_of(channel)?;
    let json = push_mail(envelope, offset, epoch)?;
    Some(Mail {
        user: user.into(),
        frame: text_frame(&json, budget),
        pos: MailPos {
            epoch: Arc::clone(epoch),
            offset,
        },
    })
}

/// Whether `session` may use the mailbox of `owner`: only its own, and
/// only to read (`subscribe`, `unsubscribe`, `history`: `reads`).
pub(crate) fn access(session: &Session, owner: &str, reads: bool) -> Result<(), (u16, &'static str)> {
    if session.user.as_deref() != Some(owner) {
        return Err((code::PERMISSION_DENIED, "a mailbox is open to its own user only"));
    }
    if !reads {
        return Err((
            code::PERMISSION_DENIED,
            "a mailbox is written by send only (subscribe, unsubscribe and history are allowed)",
        ));
    }
    Ok(())
}

/// One sender may hold at most 1/`SENDER_SHARE` of a mailbox: of its
/// `--mailbox-size` (at least one message) and of its `--mailbox-max-bytes`.
pub(crate) const SENDER_SHARE: usize = 4;

/// Why a `send` over the sender's share is refused (`code::MAILBOX_SHARE`).
pub(crate) const OVER_SHARE: &str = "the user's mailbox is full and holds your share already (a quarter of --mailbox-size messages and of --mailbox-max-bytes): not kept, not delivered; retry when some of yours expired";
/// Why a `send` larger than a share on its own is refused.
pub(crate) const LARGER_THAN_SHARE: &str =
    "too large for a full mailbox: it would push out others' messages (a sender's share is a quarter of --mailbox-max-bytes); not kept, not delivered";

/// The sender of a kept envelope, as its JSON string with the quotes
/// (escapes left as they are: one spelling per sender, as `envelope` writes
/// it); `None` for the API's (`from` null) and for data that is not one.
pub(crate) fn sender_of(envelope: &str) -> Option<&str> {
    let rest = envelope.strip_prefix("{\"from\":\"")?;
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return envelope.get(8..10 + i),
            _ => i += 1,
        }
    }
    None
}

/// What each sender holds of one mailbox (messages, bytes of kept data):
/// a sender's share is 1/`SENDER_SHARE` of each bound. It matters only at
/// the bound (`ChannelLog::admits`): while the mailbox has room anyone may
/// add; when an append would push out the oldest, a sender within its
/// share may, and one over it may push out only its own and those of
/// senders over theirs. So a hostile sender cannot push out what others
/// left, and a one-to-one chat (one sender holding it all) goes on as a
/// plain FIFO.
///
/// A message over the share that would take another's is refused, not
/// kept by pushing out an older one of the same sender: that one may sit
/// between other senders' messages, and taking it out would leave a hole in
/// the mailbox's offsets. Recovery relies on the kept messages being every
/// offset from the oldest to the last (a hole would be a message silently
/// skipped), so a mailbox only ever loses its oldest (count, bytes, age,
/// memory pressure), as any channel; a refused `send` takes no offset.
///
/// The API (`from` null) is the application: it has no share and counts
/// in none, and its messages push out the oldest like any within a share.
#[derive(Debug, Default)]
pub(crate) struct Shares {
    held: HashMap<Box<str>, (usize, usize)>,
}

impl Shares {
    /// Whether `envelope` may be kept in a mailbox kept by `rule`.
    pub(crate) fn admits(&self, envelope: &str, rule: &HistoryRule) -> Result<(), &'static str> {
        let Some(sender) = sender_of(envelope) else {
            return Ok(());
        };
        let max_bytes = rule.max_bytes / SENDER_SHARE;
        if envelope.len() > max_bytes {
            return Err(LARGER_THAN_SHARE);
        }
        let max_count = (rule.size / SENDER_SHARE).max(1);
        let (count, bytes) = self.held.get(sender).copied().unwrap_or_default();
        if count + 1 > max_count || bytes + envelope.len() > max_bytes {
            return Err(OVER_SHARE);
        }
        Ok(())
    }

    /// Whether the kept `envelope` may be pushed out by `newcomer`, whose
    /// sender is over its share: when it is the same sender's, or its
    /// sender holds more than its share (the API's never does) once the
    /// ones `newcomer` pushes out before it are gone. `taken` holds those
    /// (per sender: messages, bytes); a yielding `envelope` is added to it.
    /// Without it one append pushing out several (by bytes) would take a
    /// sender from over its share to below it.
    pub(crate) fn yields_to<'a>(
        &self,
        envelope: &'a str,
        newcomer: &str,
        rule: &HistoryRule,
        taken: &mut Vec<(&'a str, usize, usize)>,
    ) -> bool {
        let Some(sender) = sender_of(envelope) else {
            return false;
        };
        if sender_of(newcomer) != Some(sender) {
            let (count, bytes) = self.held.get(sender).copied().unwrap_or_default();
            let (gone, gone_bytes) = taken
                .iter()
                .find(|(s, ..)| *s == sender)
                .map_or((0, 0), |&(_, c, b)| (c, b));
            let (count, bytes) = (count.saturating_sub(gone), bytes.saturating_sub(gone_bytes));
            if count <= (rule.size / SENDER_SHARE).max(1) && bytes <= rule.max_bytes / SENDER_SHARE {
                return false;
            }
        }
        match taken.iter_mut().find(|(s, ..)| *s == sender) {
            Some((_, count, bytes)) => {
                *count += 1;
                *bytes += envelope.len();
            }
            None => taken.push((sender, 1, envelope.len())),
        }
        true
    }

    /// `envelope` was kept.
    pub(crate) fn add(&mut self, envelope: &str) {
        let Some(sender) = sender_of(envelope) else { return };
        if let Some((count, bytes)) = self.held.get_mut(sender) {
            *count += 1;
            *bytes += envelope.len();
            return;
        }
        self.held.insert(sender.into(), (1, envelope.len()));
    }

    /// `envelope` left (the oldest: pushed out, expired or trimmed).
    pub(crate) fn remove(&mut self, envelope: &str) {
        let Some(sender) = sender_of(envelope) else { return };
        let Some((count, bytes)) = self.held.get_mut(sender) else {
            return;
        };
        *count = count.saturating_sub(1);
        *bytes = bytes.saturating_sub(envelope.len());
        if *count == 0 {
            self.held.remove(sender);
        }
    }
}

/// Runs of offsets a [`MailMark`] remembers; beyond, the lowest run is
/// forgotten (a recovery from before it may give those again: a duplicate,
/// never a loss). Each run past the first needs a gap (a dropped delivery)
/// or a subscribe that skipped offsets, so a connection rarely has two.
pub(crate) const MAX_MAIL_RUNS: usize = 16;

/// Where one connection is in its user's mailbox of `epoch`: `last`, the
/// offset live pushes continue after, and `runs`, the offsets it was given
/// (live or recovered), as sorted, disjoint, non-touching inclusive runs.
///
/// The two differ after a gap (a live message more than one past `last`)
/// and after a `subscribe` whose answer is past what the connection got:
/// the offsets in between were never given. Keeping them out of `runs`
/// (one run would cover them) lets a later recovery give them, and
/// keeping the runs before the gap keeps a recovery from before it from
/// giving those a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MailMark {
    epoch: Arc<str>,
    last: u64,
    runs: Vec<(u64, u64)>,
}

/// What to do with one live mailbox message for one connection.
#[derive(Debug, PartialEq, Eq)]
enum Live {
    Deliver,
    /// Deliver after a `gap` push: the connection has the mailbox up to
    /// this offset only.
    AfterGap(u64),
    /// The connection has it already (or it is before its position).
    Skip,
}

impl MailMark {
    fn new(epoch: &Arc<str>) -> MailMark {
        MailMark {
            epoch: Arc::clone(epoch),
            last: 0,
            runs: Vec::new(),
        }
    }

    /// Whether the connection was given `offset`.
    fn given(&self, offset: u64) -> bool {
        let after = self.runs.partition_point(|&(first, _)| first <= offset);
        after > 0 && self.runs[after - 1].1 >= offset
    }

    /// Notes `first..=last` as given, merging runs that touch or overlap.
    fn give(&mut self, first: u64, last: u64) {
        let start = self.runs.partition_point(|&(_, end)| end.saturating_add(1) < first);
        let end = self.runs.partition_point(|&(begin, _)| begin <= last.saturating_add(1));
        let merged = self.runs[start..end]
            .iter()
            .fold((first, last), |(lo, hi), &(a, b)| (lo.min(a), hi.max(b)));
        self.runs.splice(start..end, [merged]);
        if self.runs.len() > MAX_MAIL_RUNS {
            self.runs.remove(0);
        }
    }

    /// The connection's mark in `epoch` (a new one for a new epoch: the
    /// offsets of another epoch name other messages).
    fn of<'a>(mark: &'a mut Option<Box<MailMark>>, epoch: &Arc<str>) -> &'a mut MailMark {
        if mark.as_ref().is_none_or(|m| m.epoch != *epoch) {
            *mark = Some(Box::new(MailMark::new(epoch)));
        }
        // Set just above when missing or of another epoch.
        mark.as_mut().expect("a mark")
    }

    /// A live message at `pos` for the connection whose mark is `mark`.
    fn live(mark: &mut Option<Box<MailMark>>, pos: &MailPos) -> Live {
        let fresh = mark.as_ref().is_none_or(|m| m.epoch != pos.epoch);
        let m = Self::of(mark, &pos.epoch);
        if !fresh && pos.offset <= m.last {
            return Live::Skip;
        }
        let had = m.last;
        m.last = pos.offset;
        m.give(pos.offset, pos.offset);
        if fresh || pos.offset == had + 1 {
            return Live::Deliver;
        }
        Live::AfterGap(had)
    }

    /// The connection's mailbox subscription took effect at `offset` of
    /// `epoch`: leaves out of `recovery` what it was given already, and
    /// notes what it has from then on. Without a recovery nothing is
    /// given: the offsets up to `offset` stay ungiven, for a later one.
    fn joined(mark: &mut Option<Box<MailMark>>, epoch: &Arc<str>, offset: u64, recovery: Recovery) -> Recovery {
        let m = Self::of(mark, epoch);
        m.last = m.last.max(offset);
        let Recovery::Recovered(entries) = recovery else {
            return recovery;
        };
        let fresh: Vec<_> = entries.into_iter().filter(|e| !m.given(e.offset)).collect();
        // Each on its own: a recovery is one run, but nothing here needs it.
        for entry in &fresh {
            m.give(entry.offset, entry.offset);
        }
        Recovery::Recovered(fresh)
    }
}

/// `subscribe` of a mailbox confirmed for `session` (see [`MailMark::joined`]).
pub(super) fn joined(session: &mut Session, epoch: &Arc<str>, offset: u64, recovery: Recovery) -> Recovery {
    MailMark::joined(&mut session.mail, epoch, offset, recovery)
}

impl Hub {
    fn mailbox_on(&self) -> bool {
        self.config.mailbox.is_some()
    }

    /// A private message `data` from `from` to `user`, answered to `reply`:
    /// live to every connection of the user (`{}`), or, with a mailbox,
    /// kept there first by its owner (`{offset, epoch}`; the sender's
    /// `may_create` and the node's `--max-channels` apply to a new mailbox).
    pub(super) fn send_private(
        &mut self,
        user: Arc<str>,
        from: Option<Arc<str>>,
        data: &str,
        reply: ReplyTo,
        may_create: bool,
        conns: &mut dyn Conns,
    ) {
        if !self.mailbox_on() {
            self.send_live(user, from.as_deref(), data, conns);
            return match reply {
                ReplyTo::Client(to) => self.send_to(to.key as usize, &protocol::reply_ok(to.id, "{}"), conns),
                ReplyTo::Admin(tx) => drop(tx.send("{}".into())),
            };
        }
        if user.len() > MAX_USER_BYTES {
            // The API refuses such a user itself; dropping its sender says 503.
            if let ReplyTo::Client(to) = reply {
                let why = "user is longer than 256 bytes: no mailbox for it";
                self.fail(to.key as usize, Some(to.id), code::BAD_PARAMS, why, conns);
            }
            return;
        }
        let channel = name(&user);
        let msg = HubMsg::Publish {
            channel: Arc::clone(&channel),
            data: envelope(from.as_deref(), data).into(),
            reply: Some(reply),
            may_create,
            idem: None,
        };
        self.route_to_owner(&channel, msg, conns);
    }

    /// Without a mailbox: to every connection of `user` on every shard (and
    /// node), as it comes, with no offset.
    fn send_live(&mut self, user: Arc<str>, from: Option<&str>, data: &str, conns: &mut dyn Conns) {
        let json = protocol::push_message(from, data);
        let frame = text_frame(&json, &self.budget);
        if self.cluster.is_some() {
            let user = Arc::clone(&user);
            self.cluster_send(ClusterCmd::UserMessage { user, json }, conns);
        }
        self.deliver_user(&user, &frame, conns);
        self.send_to_others(|_| HubMsg::UserMessage {
            user: Arc::clone(&user),
            frame: frame.clone(),
            mail: None,
        });
    }

    /// The owner kept a message in a mailbox: to the user's connections
    /// here and on every other shard.
    pub(super) fn spread_mail(&mut self, mail: Mail, conns: &mut dyn Conns) {
        let Mail { user, frame, pos } = mail;
        self.deliver_mail(&user, &frame, &pos, conns);
        self.send_to_others(|_| HubMsg::UserMessage {
            user: Arc::clone(&user),
            frame: frame.clone(),
            mail: Some(pos.clone()),
        });
    }

    /// A kept message for this shard's connections of `user`: each gets it
    /// once (see [`MailMark`]).
    pub(super) fn deliver_mail(&mut self, user: &str, frame: &Bytes, pos: &MailPos, conns: &mut dyn Conns) {
        let Some(keys) = self.users.get(user) else { return };
        // Each connection in its own protocol (a Centrifuge one gets a
        // `message` push, framed once for all of them; a gap closes it).
        let mut centrifuge = None;
        for &key in keys.iter() {
            let Some(session) = self.sessions.get_mut(&key) else {
                conns.queue(key, frame.clone());
                continue;
            };
            let member = super::centrifuge::member(session, key);
            match MailMark::live(&mut session.mail, pos) {
                Live::Skip => continue,
                Live::Deliver => {}
                Live::AfterGap(had) => {
                    let gap = protocol::push_gap(&name(user), &pos.epoch, had);
                    self.send_to(key, &gap, conns);
                }
            }
            self.queue_member(member, frame, &mut centrifuge, conns);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::bus::history::Entry;

    fn pos(epoch: &str, offset: u64) -> MailPos {
        MailPos {
            epoch: epoch.into(),
            offset,
        }
    }

    fn entries(offsets: impl IntoIterator<Item = u64>) -> Recovery {
        Recovery::Recovered(
            offsets
                .into_iter()
                .map(|offset| Entry {
                    offset,
                    at: 0,
                    data: "1".into(),
                })
                .collect(),
        )
    }

    fn offsets(recovery: &Recovery) -> Vec<u64> {
        match recovery {
            Recovery::Recovered(entries) => entries.iter().map(|e| e.offset).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_round_trip_and_only_the_prefix_makes_a_mailbox() {
        assert_eq!(user_of(&name("ann@x")), Some("ann@x"));
        assert_eq!(user_of("#mailbox:"), None);
        assert_eq!(user_of("mailbox:ann"), None);
        assert!(crate::auth::pattern::valid_channel_name(&name("ann")).is_err());
    }

    #[test]
    fn a_sender_is_read_from_the_envelope_and_the_api_is_nobody() {
        assert_eq!(sender_of(&envelope(Some("ann"), "1")), Some("\"ann\""));
        let odd = envelope(Some("a\"n,\\"), "{\"from\":\"x\"}");
        assert_eq!(sender_of(&odd), Some(json_string("a\"n,\\").as_str()));
        assert_eq!(sender_of(&envelope(None, "1")), None);
        assert_eq!(sender_of("{\"from\":\"unterminated"), None);
    }

    #[test]
    fn a_sender_holds_at_most_its_share_and_gets_it_back_as_its_own_leave() {
        let rule = HistoryRule {
            size: 9,
            ttl_ticks: 1,
            max_bytes: 400,
        };
        let (ann, bob) = (envelope(Some("ann"), "1"), envelope(Some("bob"), "1"));
        let mut shares = Shares::default();
        for _ in 0..2 {
            assert_eq!(shares.admits(&ann, &rule), Ok(()));
            shares.add(&ann);
        }
        assert_eq!(shares.admits(&ann, &rule), Err(OVER_SHARE), "9 / 4 = 2");
        assert_eq!(shares.admits(&bob, &rule), Ok(()), "a share is per sender");
        assert_eq!(shares.admits(&envelope(None, "1"), &rule), Ok(()), "the API has none");
        shares.remove(&ann);
        assert_eq!(shares.admits(&ann, &rule), Ok(()));
        // Bytes: 100 of 400; one larger than that alone is never kept.
        let big = envelope(Some("bob"), &"1".repeat(90));
        assert_eq!(shares.admits(&big, &rule), Err(LARGER_THAN_SHARE));
        let tiny = HistoryRule { size: 1, ..rule };
        assert_eq!(Shares::default().admits(&ann, &tiny), Ok(()), "at least one message");
    }

    #[test]
    fn the_live_push_carries_the_position_and_the_sender() {
        let push = push_mail(&envelope(Some("ann"), r#"{"t":"hi"}"#), 7, "e1").unwrap();
        let push: serde_json::Value = serde_json::from_slice(&push).unwrap();
        assert_eq!(push["push"], "message");
        assert_eq!((push["offset"].as_u64(), push["epoch"].as_str()), (Some(7), Some("e1")));
        assert_eq!(
            (push["from"].as_str(), push["data"]["t"].as_str()),
            (Some("ann"), Some("hi"))
        );
        let api = push_mail(&envelope(None, "1"), 1, "e").unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&api).unwrap()["from"],
            serde_json::Value::Null
        );
        assert!(push_mail("\"not an envelope\"", 1, "e").is_none());
    }

    #[test]
    fn a_live_message_goes_once_and_a_jump_is_a_gap() {
        let mut mark = None;
        assert_eq!(MailMark::live(&mut mark, &pos("e", 4)), Live::Deliver);
        assert_eq!(MailMark::live(&mut mark, &pos("e", 5)), Live::Deliver);
        assert_eq!(MailMark::live(&mut mark, &pos("e", 5)), Live::Skip);
        assert_eq!(MailMark::live(&mut mark, &pos("e", 8)), Live::AfterGap(5));
        assert_eq!(
            MailMark::live(&mut mark, &pos("f", 1)),
            Live::Deliver,
            "a new epoch starts over"
        );
    }

    #[test]
    fn a_recovery_leaves_out_what_came_live_before_the_answer() {
        // Offline from 2; live 5 and 6 arrive before the answer (up to 6).
        let mut mark = None;
        MailMark::live(&mut mark, &pos("e", 5));
        MailMark::live(&mut mark, &pos("e", 6));
        let recovered = MailMark::joined(&mut mark, &"e".into(), 6, entries(3..=6));
        assert_eq!(offsets(&recovered), vec![3, 4]);
        // A late live one of the recovered range is not pushed again; the
        // next new one is.
        assert_eq!(MailMark::live(&mut mark, &pos("e", 4)), Live::Skip);
        assert_eq!(MailMark::live(&mut mark, &pos("e", 7)), Live::Deliver);
        // A live one past the answer's offset, before the answer: kept out
        // of nothing, and not pushed twice.
        let mut early = None;
        MailMark::live(&mut early, &pos("e", 9));
        let recovered = MailMark::joined(&mut early, &"e".into(), 8, entries(7..=8));
        assert_eq!(offsets(&recovered), vec![7, 8]);
        assert_eq!(MailMark::live(&mut early, &pos("e", 9)), Live::Skip);
        assert_eq!(MailMark::live(&mut early, &pos("e", 10)), Live::Deliver);
    }

    #[test]
    fn what_came_before_a_gap_is_not_given_again() {
        let mut mark = None;
        for offset in 1..=3 {
            MailMark::live(&mut mark, &pos("e", offset));
        }
        assert_eq!(MailMark::live(&mut mark, &pos("e", 6)), Live::AfterGap(3));
        // Recovering from before it all gives the gap only.
        let recovered = MailMark::joined(&mut mark, &"e".into(), 6, entries(1..=6));
        assert_eq!(offsets(&recovered), vec![4, 5]);
        let again = MailMark::joined(&mut mark, &"e".into(), 6, entries(1..=6));
        assert_eq!(offsets(&again), Vec::<u64>::new());
    }

    #[test]
    fn a_subscribe_past_what_was_given_leaves_the_rest_to_recover() {
        // Given 1..2; 3 never came; a subscribe without recover answers 3.
        let mut mark = None;
        MailMark::live(&mut mark, &pos("e", 1));
        MailMark::live(&mut mark, &pos("e", 2));
        MailMark::joined(&mut mark, &"e".into(), 3, Recovery::NotAsked);
        assert_eq!(
            MailMark::live(&mut mark, &pos("e", 3)),
            Live::Skip,
            "before its position"
        );
        assert_eq!(MailMark::live(&mut mark, &pos("e", 4)), Live::Deliver);
        let recovered = MailMark::joined(&mut mark, &"e".into(), 4, entries(2..=4));
        assert_eq!(offsets(&recovered), vec![3]);
        // The same after a recovery that was refused.
        let mut refused = None;
        MailMark::live(&mut refused, &pos("e", 1));
        MailMark::joined(&mut refused, &"e".into(), 5, Recovery::Impossible("history gone"));
        assert_eq!(
            offsets(&MailMark::joined(&mut refused, &"e".into(), 5, entries(1..=5))),
            vec![2, 3, 4, 5]
        );
    }

    #[test]
    fn a_mark_keeps_a_bounded_number_of_runs_and_forgets_the_oldest() {
        let mut mark = None;
        let gaps = MAX_MAIL_RUNS as u64 + 2;
        for i in 0..gaps {
            MailMark::live(&mut mark, &pos("e", 1 + 2 * i));
        }
        let m = mark.as_deref().unwrap();
        assert_eq!(m.runs.len(), MAX_MAIL_RUNS);
        assert!(!m.given(1) && !m.given(3) && m.given(5) && !m.given(6));
        // Forgotten ones may come again; nothing else does.
        let all = MailMark::joined(&mut mark, &"e".into(), 2 * gaps - 1, entries(1..2 * gaps));
        let odd_forgotten = [1, 3];
        let evens = (1..gaps).map(|i| 2 * i);
        let want: BTreeSet<u64> = odd_forgotten.into_iter().chain(evens).collect();
        assert_eq!(offsets(&all).into_iter().collect::<BTreeSet<u64>>(), want);
    }

    #[test]
    fn without_recovery_the_connection_starts_after_the_answer() {
        let mut mark = None;
        let answer = MailMark::joined(&mut mark, &"e".into(), 3, Recovery::NotAsked);
        assert_eq!(answer, Recovery::NotAsked);
        assert_eq!(MailMark::live(&mut mark, &pos("e", 3)), Live::Skip);
        assert_eq!(MailMark::live(&mut mark, &pos("e", 4)), Live::Deliver);
    }
}
