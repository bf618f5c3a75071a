//! The node's subscriber connection to one Redis server, held by one shard
//! and read in its event loop (`direct`), for a server reached over plain
//! TCP: what the subscriber thread does for a `rediss://` server
//! (`subscriber`), without a thread of its own to wake on the way.
//!
//! Every message goes where the thread would send it, through the same
//! inboxes (`subscriber::Dispatch`, this shard's own included), so the
//! order rules are unchanged: one producer per server, FIFO per shard. A
//! `PING` every `PING_EVERY` finds a Redis that stopped answering (its
//! pong must come within `REDIS_TIMEOUT`); a failure is handled as the
//! thread handles it (room members told, counted, logged once per outage)
//! and a new connection is asked of the bridge.
//!
//! Channels are subscribed by name, each while the node keeps a log of it
//! (mailboxes and rooms by pattern): a node reads and Redis writes only
//! the publications someone here wants, so a node's load does not grow
//! with the cluster's publish rate. An owner shard making a log asks for
//! its channel (`listen`); the channel's position is read from Redis
//! (`RedisCall::Sync`) only once Redis confirmed the `SUBSCRIBE`, so every
//! publication after that position arrives here. While the connection is
//! down the position is read at once (what is missed meanwhile is found
//! by its offsets, as for any outage), and a new connection subscribes to
//! every channel again, a few batches at a time (`SUBSCRIBES_IN_FLIGHT`),
//! then has every position read again (`ClusterLink::ask_resync`), so what
//! was missed is known without waiting for the next publication. A `PING`
//! follows the `SUBSCRIBE`s of each turn: a
//! Redis that does not confirm them within `REDIS_TIMEOUT` breaks the
//! connection, and the positions waiting are read then.
//!
//! Bounded per loop turn: at most `TURN_BUDGET` messages are handed on,
//! fewer than the shard drains of its own inbox in a turn (it owns some of
//! the channels), and the rest waits in the socket for the next turn (the
//! shard does not wait for an event meanwhile: `busy`). Reading a backlog
//! of thousands in one go filled the owner's data lane before it could
//! drain any of it, and the rest was dropped.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Registry};

use super::reply::{encode, Value};
use super::socket::{self, Got};
use super::subscriber::{Dispatch, PING_EVERY};
use super::{keys, resp, REDIS_TIMEOUT};
use crate::bus::cluster::{redis_token, ClusterCmd, ClusterLink, LinkKind, RedisCall, RedisLink, SyncFor};
use crate::bus::msg::HubMsg;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Messages handed on per loop turn (a shard drains 1,024 deliveries of
/// its inbox per turn).
const TURN_BUDGET: usize = 512;
/// Channels per `SUBSCRIBE` when a new connection subscribes to them all.
const SUBSCRIBE_BATCH: usize = 1_000;
/// A new connection subscribes to the channels held here a few batches at a
/// time: at most this many names wait for their confirmations. All at once
/// (a million channels: ~30 MB of commands, ~70 MB of confirmations) went
/// past Redis's output buffer limit for Pub/Sub clients (32 MB by default),
/// which closed the connection, and the next one did the same again.
const SUBSCRIBES_IN_FLIGHT: usize = 2 * SUBSCRIBE_BATCH;

/// Messages for shards (shard, message): owners told their position could
/// not be asked for.
type Answers = Vec<(usize, HubMsg)>;

pub(crate) struct Listener {
    server: usize,
    shard: usize,
    dispatch: Dispatch,
    conn: Option<Conn>,
    /// The failure of this outage was logged.
    logged: bool,
    /// Messages this turn may still hand on.
    budget: usize,
    /// The budget ran out before the socket was drained: read again next
    /// turn, without an event.
    more: bool,
    /// The channels of this server with a log on the node, subscribed by
    /// name (bounded by the node's channel limits: one entry per log).
    channels: HashMap<Arc<str>, Listening>,
}

/// One channel subscribed by name.
#[derive(Debug, Default)]
struct Listening {
    /// An owner keeps a log of it. False: an `UNSUBSCRIBE` was written and
    /// earlier `SUBSCRIBE`s wait for their confirmations (kept until then,
    /// so one of those is not taken for a later one's).
    wanted: bool,
    /// `SUBSCRIBE`s written on this connection and not confirmed yet (one
    /// of them may still wait in the resubscribe queue: `queued`).
    unconfirmed: u32,
    /// In this connection's resubscribe queue, not written yet.
    queued: bool,
    /// Owner shards whose position read waits for the confirmation.
    syncs: Vec<usize>,
}

struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes read, not yet a whole message.
    input: Vec<u8>,
    /// Commands the socket has not taken yet, `written` of them taken.
    out: Vec<u8>,
    written: usize,
    pinged: Instant,
    /// When each `PING` not answered yet was written, oldest first.
    pings: VecDeque<Instant>,
    /// `PING`s written on this connection (those answered: this less
    /// `pings.len()`).
    pings_written: u64,
    /// `SUBSCRIBE`s were written this turn: a `PING` follows them.
    subscribed: bool,
    /// Channels held here when this connection opened, not yet subscribed
    /// on it (`SUBSCRIBES_IN_FLIGHT` at a time).
    resubscribe: Vec<Arc<str>>,
    /// Channel names in `SUBSCRIBE`s written and not confirmed yet.
    in_flight: usize,
    /// Once the pong of this `PING` is read, every channel held when the
    /// connection opened is subscribed: the command thread reads their
    /// positions again (`ClusterLink::ask_resync`).
    resync_after: Option<u64>,
}

impl Listener {
    /// Asks the bridge for the connection at once.
    pub fn new(server: usize, shard: usize, dispatch: Dispatch, link: &ClusterLink) -> Listener {
        link.ask_link(server, shard, LinkKind::Subscribe);
        Listener {
            server,
            shard,
            dispatch,
            conn: None,
            logged: false,
            budget: TURN_BUDGET,
            more: false,
            channels: HashMap::new(),
        }
    }

    /// From `channel`'s owner shard, which made its log: subscribes to it
    /// (unless it is already), and has its position read from Redis for
    /// `owner` once Redis confirmed that (at once while the connection is
    /// down: a new one subscribes to it).
    pub fn listen(&mut self, channel: Arc<str>, owner: usize, link: &ClusterLink, answers: &mut Answers) {
        let listening = self.channels.entry(Arc::clone(&channel)).or_default();
        let Some(conn) = &mut self.conn else {
            listening.wanted = true;
            return sync(channel, owner, link, answers);
        };
        // A channel still in the resubscribe queue is written now (that
        // SUBSCRIBE is counted already): its position is not to wait for
        // the whole queue.
        let queued = std::mem::take(&mut listening.queued);
        if !listening.wanted || queued {
            if !queued {
                listening.unconfirmed += 1;
            }
            listening.wanted = true;
            encode(&mut conn.out, &["SUBSCRIBE", &keys::publications(&channel)]);
            conn.subscribed = true;
            conn.in_flight += 1;
        }
        if listening.unconfirmed > 0 {
            listening.syncs.push(owner);
        } else {
            sync(channel, owner, link, answers);
        }
    }

    /// From `channel`'s owner shard, which dropped its log: unsubscribes,
    /// unless a log of it was made again since (its `listen` is on the way
    /// or was handled: the subscription stays).
    pub fn unlisten(&mut self, channel: &str, link: &ClusterLink, answers: &mut Answers) {
        if self.dispatch.wants(channel) {
            return;
        }
        let Some(listening) = self.channels.get_mut(channel) else {
            return;
        };
        if std::mem::take(&mut listening.wanted) {
            if let Some(conn) = &mut self.conn {
                encode(&mut conn.out, &["UNSUBSCRIBE", &keys::publications(channel)]);
            }
        }
        let (syncs, done) = (std::mem::take(&mut listening.syncs), listening.unconfirmed == 0);
        if done {
            self.channels.remove(channel);
        }
        for owner in syncs {
            sync(channel.into(), owner, link, answers);
        }
    }

    /// Channels subscribed by name (or to be, on the next connection).
    #[cfg(test)]
    pub fn listening(&self) -> usize {
        self.channels.values().filter(|l| l.wanted).count()
    }

    /// Redis confirmed a `SUBSCRIBE` of `channel`: the positions waiting
    /// for it are asked for once the last one written is confirmed.
    fn confirmed(&mut self, channel: &str, link: &ClusterLink, answers: &mut Answers) {
        let Some(listening) = self.channels.get_mut(channel) else {
            return;
        };
        listening.unconfirmed = listening.unconfirmed.saturating_sub(1);
        if listening.unconfirmed > 0 {
            return;
        }
        if !listening.wanted {
            self.channels.remove(channel);
            return;
        }
        let channel: Arc<str> = channel.into();
        for owner in std::mem::take(&mut listening.syncs) {
            sync(Arc::clone(&channel), owner, link, answers);
        }
    }

    /// A new connection: every wanted channel is to be subscribed on it
    /// (its `SUBSCRIBE` counts as written from now: a position asked for
    /// meanwhile waits for its confirmation).
    fn subscribe_all(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        self.channels.retain(|_, listening| listening.wanted);
        conn.resubscribe = self
            .channels
            .iter_mut()
            .map(|(channel, listening)| {
                listening.unconfirmed = 1;
                listening.queued = true;
                Arc::clone(channel)
            })
            .collect();
    }

    /// Writes the next batches of a new connection's `SUBSCRIBE`s, as far
    /// as `SUBSCRIBES_IN_FLIGHT` allows (a channel whose log was dropped
    /// meanwhile is left out). After the last one, a `PING` whose pong says
    /// they are all confirmed.
    fn resubscribe_more(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        if conn.resubscribe.is_empty() {
            return;
        }
        while conn.in_flight < SUBSCRIBES_IN_FLIGHT && !conn.resubscribe.is_empty() {
            let room = SUBSCRIBE_BATCH.min(SUBSCRIBES_IN_FLIGHT - conn.in_flight);
            let from = conn.resubscribe.len().saturating_sub(room);
            let mut names = Vec::new();
            for channel in conn.resubscribe.drain(from..) {
                let Some(listening) = self.channels.get_mut(&channel) else {
                    continue;
                };
                if !std::mem::take(&mut listening.queued) {
                    continue; // written already, when its position was asked for
                }
                if listening.wanted {
                    names.push(keys::publications(&channel));
                    continue;
                }
                // Its UNSUBSCRIBE is written; this SUBSCRIBE will not be.
                listening.unconfirmed = listening.unconfirmed.saturating_sub(1);
                if listening.unconfirmed == 0 {
                    self.channels.remove(&channel);
                }
            }
            if !names.is_empty() {
                let mut command = vec!["SUBSCRIBE"];
                command.extend(names.iter().map(String::as_str));
                encode(&mut conn.out, &command);
                conn.in_flight += names.len();
                conn.subscribed = true;
            }
        }
        if conn.resubscribe.is_empty() {
            conn.subscribed = true; // its PING is written at the end of this turn
            conn.resync_after = Some(conn.pings_written + 1);
        }
    }

    /// The connection is gone: the positions waiting are asked for now
    /// (what is missed until a new one subscribes is found by its offsets).
    fn unsubscribed_all(&mut self, link: &ClusterLink, answers: &mut Answers) {
        self.channels.retain(|_, listening| listening.wanted);
        for (channel, listening) in &mut self.channels {
            listening.unconfirmed = 0;
            listening.queued = false;
            for owner in std::mem::take(&mut listening.syncs) {
                sync(Arc::clone(channel), owner, link, answers);
            }
        }
    }

    /// Whether messages wait to be read now (the loop must not sleep).
    pub fn busy(&self) -> bool {
        self.more && self.conn.is_some()
    }

    /// The connection the bridge opened: subscribed to what is not by
    /// name, with the first bytes read past the confirmations (handed on
    /// now); every channel wanted here is subscribed on it.
    pub fn linked(&mut self, link: RedisLink, registry: &Registry, asker: &ClusterLink, answers: &mut Answers) {
        if self.conn.is_some() {
            return; // only one is asked for at a time
        }
        let mut stream = mio::net::TcpStream::from_std(link.stream);
        let token = redis_token(self.server, LinkKind::Subscribe);
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            return self.failed(e, asker, answers);
        }
        self.conn = Some(Conn {
            stream,
            input: link.leftover,
            out: Vec::new(),
            written: 0,
            pinged: Instant::now(),
            pings: VecDeque::new(),
            pings_written: 0,
            subscribed: false,
            resubscribe: Vec::new(),
            in_flight: 0,
            resync_after: None,
        });
        self.logged = false;
        self.dispatch.up();
        self.subscribe_all();
        self.ready(registry, asker, answers);
    }

    /// Reads what arrived and hands each message on, within this turn's
    /// budget; flushes what was written.
    pub fn ready(&mut self, registry: &Registry, asker: &ClusterLink, answers: &mut Answers) {
        self.more = true;
        self.pump(registry, asker, answers);
    }

    /// End of the loop turn: goes on with what the budget left unread,
    /// writes this turn's `SUBSCRIBE`s with a `PING` behind them, then
    /// gives the next turn its budget.
    pub fn end_turn(&mut self, registry: &Registry, asker: &ClusterLink, answers: &mut Answers) {
        self.pump(registry, asker, answers);
        self.resubscribe_more();
        if let Some(conn) = &mut self.conn {
            if std::mem::take(&mut conn.subscribed) {
                encode(&mut conn.out, &["PING"]);
                conn.pings.push_back(Instant::now());
                conn.pings_written += 1;
            }
            if let Err(e) = self.flush() {
                self.broken(e, registry, asker, answers);
            }
        }
        self.budget = TURN_BUDGET;
    }

    fn pump(&mut self, registry: &Registry, asker: &ClusterLink, answers: &mut Answers) {
        if !self.more {
            return;
        }
        if let Err(e) = self.read(asker, answers).and_then(|()| self.flush()) {
            self.broken(e, registry, asker, answers);
        }
    }

    /// Pings when due; closes a connection whose pong is late.
    pub fn tick(&mut self, registry: &Registry, asker: &ClusterLink, answers: &mut Answers) {
        // Behind on reading: the pong may be waiting unread.
        let behind = self.more;
        let Some(conn) = &mut self.conn else { return };
        let now = Instant::now();
        let oldest = conn.pings.front().copied();
        if !behind && oldest.is_some_and(|at| now.duration_since(at) >= REDIS_TIMEOUT) {
            let late = io::Error::new(io::ErrorKind::TimedOut, "Redis stopped answering (no pong in time)");
            return self.broken(late, registry, asker, answers);
        }
        if conn.pings.is_empty() && now.duration_since(conn.pinged) >= PING_EVERY {
            conn.pinged = now;
            conn.pings.push_back(now);
            conn.pings_written += 1;
            encode(&mut conn.out, &["PING"]);
            if let Err(e) = self.flush() {
                self.broken(e, registry, asker, answers);
            }
        }
    }

    /// Hands on what was read, then reads more, until the socket is
    /// drained (`more` cleared) or the turn's budget is spent.
    fn read(&mut self, asker: &ClusterLink, answers: &mut Answers) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            // Handed on as it comes: the buffer holds at most one message
            // in the making, or one chunk the budget left.
            self.handle_input(asker, answers)?;
            if self.budget == 0 {
                return Ok(());
            }
            let Some(conn) = &mut self.conn else { return Ok(()) };
            match socket::read_once(&mut conn.stream, &mut chunk, &mut conn.input) {
                Got::Bytes => {}
                Got::Drained => {
                    self.more = false;
                    return Ok(());
                }
                Got::Closed(e) => return Err(e),
            }
        }
    }

    /// Hands on the whole messages in the input, as many as the budget
    /// allows.
    fn handle_input(&mut self, asker: &ClusterLink, answers: &mut Answers) -> io::Result<()> {
        let Some(conn) = &mut self.conn else { return Ok(()) };
        let mut used = 0;
        let mut confirmed = Vec::new();
        let result = loop {
            if self.budget == 0 {
                break Ok(());
            }
            match resp::parse(&conn.input[used..]) {
                Ok(Some((value, n))) => {
                    used += n;
                    self.budget -= 1;
                    match on_message(&mut self.dispatch, value) {
                        Ok(Reply::Subscribed(channel)) => {
                            conn.in_flight = conn.in_flight.saturating_sub(1);
                            confirmed.push(channel);
                        }
                        Ok(Reply::Pong) => {
                            conn.pings.pop_front();
                        }
                        Ok(Reply::Other) => {}
                        Err(e) => break Err(e),
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(io::Error::other(e)),
            }
        };
        socket::consume(&mut conn.input, used);
        let answered = conn.pings_written - conn.pings.len() as u64;
        if conn.resync_after.is_some_and(|ping| answered >= ping) {
            conn.resync_after = None;
            asker.ask_resync(self.server);
        }
        for channel in confirmed {
            self.confirmed(&channel, asker, answers);
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.conn {
            Some(conn) => socket::write_out(&mut conn.stream, &mut conn.out, &mut conn.written),
            None => Ok(()),
        }
    }

    /// The connection failed: as the thread does, then another is asked.
    fn broken(&mut self, error: io::Error, registry: &Registry, asker: &ClusterLink, answers: &mut Answers) {
        if let Some(mut conn) = self.conn.take() {
            let _ = registry.deregister(&mut conn.stream);
        }
        self.more = false;
        self.failed(error, asker, answers);
    }

    fn failed(&mut self, error: io::Error, asker: &ClusterLink, answers: &mut Answers) {
        if self.dispatch.lost() {
            self.logged = false; // it was up: a new outage
        }
        let error = (!std::mem::replace(&mut self.logged, true)).then_some(&error);
        self.dispatch.down(error);
        self.unsubscribed_all(asker, answers);
        asker.ask_link(self.server, self.shard, LinkKind::Subscribe);
    }
}

/// Asks Redis for `channel`'s position for its owner shard (a subscribe
/// there waits for it); the owner is told at once when the bridge's queue
/// is full (the subscribe fails with 108).
fn sync(channel: Arc<str>, owner: usize, link: &ClusterLink, answers: &mut Answers) {
    let call = RedisCall::Sync {
        channel,
        shard: owner,
        why: SyncFor::Subscribe,
    };
    if let Err(ClusterCmd::Call(RedisCall::Sync { channel, why, .. })) = link.send(ClusterCmd::Call(call)) {
        answers.push((owner, HubMsg::unsynced(channel, why)));
    }
}

/// What a reply on the subscribed connection was, besides a message
/// (handed on by `on_message`).
#[derive(Debug, PartialEq)]
enum Reply {
    /// The confirmation of a `SUBSCRIBE` of this channel by name.
    Subscribed(String),
    Pong,
    Other,
}

/// One reply on the subscribed connection: a message (handed on), a pong,
/// or a confirmation. An error reply breaks the connection.
fn on_message(dispatch: &mut Dispatch, value: Value) -> io::Result<Reply> {
    let items = match value {
        Value::Array(items) => items,
        Value::Error(e) => return Err(io::Error::other(format!("Redis: {e}"))),
        _ => return Ok(Reply::Other),
    };
    let text = |i: usize| items.get(i).and_then(Value::as_str);
    let bytes = |i: usize| items.get(i).and_then(Value::as_bytes);
    match (text(0), items.len()) {
        (Some("message"), 3) => {
            if let (Some(channel), Some(payload)) = (text(1), bytes(2)) {
                dispatch.message(channel, false, payload);
            }
        }
        (Some("pmessage"), 4) => {
            if let (Some(channel), Some(payload)) = (text(2), bytes(3)) {
                dispatch.message(channel, true, payload);
            }
        }
        (Some("pong"), _) => return Ok(Reply::Pong),
        (Some("subscribe"), 3) => {
            if let Some(channel) = text(1).and_then(|name| name.strip_prefix(keys::PUB_PREFIX)) {
                return Ok(Reply::Subscribed(channel.to_string()));
            }
        }
        _ => {} // other confirmations
    }
    Ok(Reply::Other)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::buf::budget::MemoryBudget;
    use crate::bus::cluster::{ClusterConfig, ClusterState};
    use crate::bus::inbox::ShardMsg;
    use crate::bus::inbox::{channel, Inbox, Lane};
    use crate::bus::msg::HubMsg;
    use crate::bus::peers::Peers;

    fn dispatch() -> (Dispatch, Inbox, Arc<ClusterState>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (handle, inbox) = channel(waker);
        let state = Arc::new(ClusterState::new(1, 1 << 20, MemoryBudget::new(1 << 30)));
        state.wanted.add(&Arc::from("news"));
        let config = ClusterConfig::for_tests("redis://127.0.0.1:1");
        let peers = Peers::new(vec![handle].into());
        (Dispatch::new(config, 0, peers, Arc::clone(&state)), inbox, state)
    }

    fn bulk(items: &[&[u8]]) -> Value {
        Value::Array(items.iter().map(|b| Value::Bytes(b.to_vec())).collect())
    }

    #[test]
    fn publications_go_to_their_owner_and_a_pong_ends_the_wait() {
        let (mut dispatch, inbox, _state) = dispatch();
        let publication = bulk(&[b"pmessage", b"hubbub:pub:*", b"hubbub:pub:news", b"e1\n7\n{\"a\":1}"]);
        assert_eq!(on_message(&mut dispatch, publication).unwrap(), Reply::Other);
        let unwanted = bulk(&[b"pmessage", b"hubbub:pub:*", b"hubbub:pub:other", b"e1\n1\nx"]);
        on_message(&mut dispatch, unwanted).unwrap();
        let confirmation = |kind: &[u8], name: &[u8]| {
            Value::Array(vec![
                Value::Bytes(kind.to_vec()),
                Value::Bytes(name.to_vec()),
                Value::Int(2),
            ])
        };
        let pattern = confirmation(b"psubscribe", b"hubbub:pub:*");
        assert_eq!(on_message(&mut dispatch, pattern).unwrap(), Reply::Other, "not a pong");
        let by_name = confirmation(b"subscribe", b"hubbub:pub:news");
        assert_eq!(
            on_message(&mut dispatch, by_name).unwrap(),
            Reply::Subscribed("news".into())
        );
        let control = confirmation(b"subscribe", b"hubbub:ctl");
        assert_eq!(on_message(&mut dispatch, control).unwrap(), Reply::Other);
        assert_eq!(on_message(&mut dispatch, bulk(&[b"pong", b""])).unwrap(), Reply::Pong);
        match inbox.try_recv(Lane::Data) {
            Some(ShardMsg::Hub(HubMsg::ClusterPublication {
                channel, epoch, offset, ..
            })) => assert_eq!((&*channel, &*epoch, offset), ("news", "e1", 7)),
            other => panic!("expected the publication, got {other:?}"),
        }
        assert!(inbox.try_recv(Lane::Data).is_none(), "the unwanted one was skipped");
        let refused = on_message(&mut dispatch, Value::Error("ERR wrong".into()));
        assert!(refused.is_err(), "an error reply breaks the connection");
    }

    /// A listener on one end of a loopback connection; the test plays
    /// Redis on the other.
    struct Rig {
        listener: Listener,
        poll: mio::Poll,
        link: ClusterLink,
        /// What the listener hands the command thread (position reads).
        commands: crossbeam_channel::Receiver<ClusterCmd>,
        /// The never-dropped lane: connections and re-syncs asked for.
        asked: crossbeam_channel::Receiver<ClusterCmd>,
        _inbox: Inbox,
        state: Arc<ClusterState>,
        answers: Answers,
    }

    impl Rig {
        fn new(queue: usize) -> Rig {
            let (dispatch, inbox, state) = dispatch();
            let (tx, commands) = crossbeam_channel::bounded(queue);
            let (state_tx, asked) = crossbeam_channel::unbounded();
            let link = ClusterLink::new(vec![tx], vec![state_tx], "me".into(), Arc::clone(&state));
            Rig {
                listener: Listener::new(0, 0, dispatch, &link),
                poll: mio::Poll::new().unwrap(),
                link,
                commands,
                asked,
                _inbox: inbox,
                state,
                answers: Vec::new(),
            }
        }

        /// A new connection; returns Redis's end of it.
        fn connect(&mut self) -> std::net::TcpStream {
            let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let ours = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
            let (redis, _) = server.accept().unwrap();
            redis.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            ours.set_nonblocking(true).unwrap();
            let link = RedisLink {
                server: 0,
                kind: LinkKind::Subscribe,
                stream: ours,
                sha: String::new(),
                leftover: Vec::new(),
            };
            self.listener
                .linked(link, self.poll.registry(), &self.link, &mut self.answers);
            redis
        }

        fn listen(&mut self, channel: &str, owner: usize) {
            self.listener
                .listen(channel.into(), owner, &self.link, &mut self.answers);
        }

        fn unlisten(&mut self, channel: &str) {
            self.listener.unlisten(channel, &self.link, &mut self.answers);
        }

        /// Ends the loop turn; returns what Redis then reads.
        fn written(&mut self, redis: &mut std::net::TcpStream) -> String {
            use std::io::Read;
            self.listener
                .end_turn(self.poll.registry(), &self.link, &mut self.answers);
            // What the listener wrote is in the socket's buffer already
            // (loopback): the first read waits for it, the rest drain it.
            let (mut got, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
            while let Ok(n @ 1..) = redis.read(&mut chunk) {
                got.extend_from_slice(&chunk[..n]);
                redis.set_nonblocking(true).unwrap();
            }
            redis.set_nonblocking(false).unwrap();
            String::from_utf8_lossy(&got).into_owned()
        }

        /// How many re-syncs of every channel were asked for so far.
        fn resyncs(&self) -> usize {
            self.asked
                .try_iter()
                .filter(|cmd| matches!(cmd, ClusterCmd::Resync))
                .count()
        }

        /// Redis sends `reply`; the listener reads it.
        fn reply(&mut self, redis: &mut std::net::TcpStream, reply: &[u8]) {
            use std::io::Write;
            redis.write_all(reply).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            self.listener.ready(self.poll.registry(), &self.link, &mut self.answers);
            // More than a turn's budget: read on in the next turns.
            while self.listener.busy() {
                self.listener
                    .end_turn(self.poll.registry(), &self.link, &mut self.answers);
            }
        }

        /// The owners whose position the listener asked for so far.
        fn syncs(&self) -> Vec<(String, usize)> {
            self.commands
                .try_iter()
                .map(|cmd| match cmd {
                    ClusterCmd::Call(RedisCall::Sync {
                        channel,
                        shard,
                        why: SyncFor::Subscribe,
                    }) => (channel.to_string(), shard),
                    other => panic!("not a position read: {other:?}"),
                })
                .collect()
        }
    }

    fn confirmation(kind: &str, channel: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, &[kind, &format!("hubbub:pub:{channel}")]);
        // Redis's confirmations are pushes of three: kind, channel, count.
        let text = String::from_utf8(out).unwrap().replacen("*2", "*3", 1);
        format!("{text}:1\r\n").into_bytes()
    }

    #[test]
    fn a_position_is_read_only_once_the_subscribe_is_confirmed() {
        let mut rig = Rig::new(16);
        let mut redis = rig.connect();
        rig.listen("news", 3);
        let written = rig.written(&mut redis);
        assert!(
            written.contains("SUBSCRIBE") && written.contains("hubbub:pub:news"),
            "{written:?}"
        );
        assert!(written.ends_with("*1\r\n$4\r\nPING\r\n"), "a ping follows: {written:?}");
        assert!(rig.syncs().is_empty(), "read before the confirmation");
        rig.reply(&mut redis, &confirmation("subscribe", "news"));
        assert_eq!(rig.syncs(), [("news".to_string(), 3)]);
        // Subscribed: another read is asked for at once, nothing written.
        rig.listen("news", 3);
        assert_eq!(rig.syncs(), [("news".to_string(), 3)]);
        assert_eq!(rig.written(&mut redis), "");
        assert_eq!(rig.listener.listening(), 1);
    }

    #[test]
    fn a_dropped_log_unsubscribes_unless_it_was_made_again() {
        let mut rig = Rig::new(16);
        let mut redis = rig.connect();
        rig.listen("news", 0);
        rig.written(&mut redis);
        rig.reply(&mut redis, &confirmation("subscribe", "news"));
        rig.syncs();
        // Made again before the listener heard it was dropped: kept.
        rig.unlisten("news");
        assert_eq!(rig.written(&mut redis), "");
        rig.state.wanted.remove("news");
        rig.unlisten("news");
        assert!(rig.written(&mut redis).contains("UNSUBSCRIBE"));
        assert_eq!(rig.listener.listening(), 0);
    }

    #[test]
    fn a_confirmation_of_an_earlier_subscribe_does_not_count_for_a_later_one() {
        let mut rig = Rig::new(16);
        let mut redis = rig.connect();
        rig.listen("news", 1);
        rig.state.wanted.remove("news");
        rig.unlisten("news");
        // (Not left waiting: an owner does not drop a log it waits for.)
        assert_eq!(rig.syncs(), [("news".to_string(), 1)]);
        rig.state.wanted.add(&Arc::from("news"));
        rig.listen("news", 1);
        let written = rig.written(&mut redis);
        assert_eq!(written.matches("SUBSCRIBE").count(), 3, "{written:?}");
        rig.reply(&mut redis, &confirmation("subscribe", "news"));
        assert!(
            rig.syncs().is_empty(),
            "the first SUBSCRIBE's confirmation is not the last one's"
        );
        rig.reply(&mut redis, &confirmation("unsubscribe", "news"));
        rig.reply(&mut redis, &confirmation("subscribe", "news"));
        assert_eq!(rig.syncs(), [("news".to_string(), 1)]);
    }

    #[test]
    fn a_lost_connection_reads_the_waiting_positions_and_the_next_one_subscribes_again() {
        let mut rig = Rig::new(16);
        let mut redis = rig.connect();
        rig.listen("news", 2);
        rig.listen("sport", 2);
        rig.written(&mut redis);
        rig.reply(&mut redis, &confirmation("subscribe", "sport"));
        assert_eq!(rig.syncs(), [("sport".to_string(), 2)]);
        drop(redis);
        std::thread::sleep(Duration::from_millis(20));
        rig.listener.ready(rig.poll.registry(), &rig.link, &mut rig.answers);
        assert_eq!(
            rig.syncs(),
            [("news".to_string(), 2)],
            "not kept waiting for a connection"
        );
        // Down: read at once, subscribed on the next connection.
        rig.listen("weather", 2);
        assert_eq!(rig.syncs(), [("weather".to_string(), 2)]);
        let mut redis = rig.connect();
        let written = rig.written(&mut redis);
        for channel in ["news", "sport", "weather"] {
            assert!(
                written.contains(&format!("hubbub:pub:{channel}")),
                "{channel}: {written:?}"
            );
        }
        assert_eq!(rig.listener.listening(), 3);
    }

    #[test]
    fn a_full_bridge_queue_fails_the_owners_subscribes_at_once() {
        let mut rig = Rig::new(1);
        let mut redis = rig.connect();
        rig.listen("news", 0);
        rig.listen("sport", 0);
        rig.written(&mut redis);
        rig.reply(
            &mut redis,
            &[confirmation("subscribe", "news"), confirmation("subscribe", "sport")].concat(),
        );
        assert_eq!(rig.syncs().len(), 1, "the queue holds one");
        match &rig.answers[..] {
            [(
                0,
                HubMsg::ClusterSynced {
                    channel, epoch: None, ..
                },
            )] => assert_eq!(&**channel, "sport"),
            other => panic!("the owner is told: {other:?}"),
        }
    }

    /// What Redis answers to the commands in `written`: a confirmation of
    /// each channel (un)subscribed, a pong for each `PING`.
    fn answer(written: &str) -> Vec<u8> {
        let (mut command, mut out) = ("", Vec::new());
        for line in written.split("\r\n") {
            match line {
                "SUBSCRIBE" | "UNSUBSCRIBE" => command = line,
                "PING" => out.extend_from_slice(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
                _ => {
                    if let Some(name) = line.strip_prefix("hubbub:pub:") {
                        out.extend(confirmation(&command.to_lowercase(), name));
                    }
                }
            }
        }
        out
    }

    /// The channels named in the SUBSCRIBEs written (not in UNSUBSCRIBEs).
    fn subscribed_in(written: &str) -> Vec<String> {
        let mut command = "";
        let mut names = Vec::new();
        for line in written.split("\r\n") {
            match line {
                "SUBSCRIBE" | "UNSUBSCRIBE" | "PING" => command = line,
                _ => match line.strip_prefix("hubbub:pub:") {
                    Some(name) if command == "SUBSCRIBE" => names.push(name.to_string()),
                    _ => {}
                },
            }
        }
        names
    }

    impl Rig {
        /// A listener whose node holds `count` channels, made while it had
        /// no connection (their positions were read at once).
        fn holding(count: usize) -> (Rig, Vec<String>) {
            let mut rig = Rig::new(16_384);
            let channels: Vec<String> = (0..count).map(|i| format!("c{i}")).collect();
            for channel in &channels {
                rig.state.wanted.add(&Arc::from(channel.as_str()));
                rig.listen(channel, 0);
            }
            assert_eq!(rig.syncs().len(), count, "down: read at once");
            (rig, channels)
        }

        /// Plays Redis, answering all the listener writes, until it asks
        /// for a re-sync (returned: the channels it subscribed meanwhile,
        /// in order), checking that it never has more names waiting for
        /// their confirmations than `SUBSCRIBES_IN_FLIGHT`.
        fn serve_until_resync(&mut self, redis: &mut std::net::TcpStream) -> Vec<String> {
            let mut subscribed = Vec::new();
            for _ in 0..500 {
                let written = self.written(redis);
                let conn = self.listener.conn.as_ref().expect("connected");
                assert!(conn.in_flight <= SUBSCRIBES_IN_FLIGHT, "{} in flight", conn.in_flight);
                subscribed.extend(subscribed_in(&written));
                match self.resyncs() {
                    0 => self.reply(redis, &answer(&written)),
                    1 => return subscribed,
                    n => panic!("{n} re-syncs asked for"),
                }
            }
            panic!("no re-sync asked for; subscribed {}", subscribed.len());
        }
    }

    #[test]
    fn a_new_connection_subscribes_a_few_batches_at_a_time_then_asks_for_a_resync() {
        let (mut rig, channels) = Rig::holding(5_000);
        let mut redis = rig.connect();
        rig.state.wanted.remove("c4999");
        rig.unlisten("c4999"); // dropped before its turn came
        let mut subscribed = rig.serve_until_resync(&mut redis);
        subscribed.sort();
        let mut expected: Vec<String> = channels[..4_999].to_vec();
        expected.sort();
        assert_eq!(subscribed, expected, "each held channel once, the dropped one left out");
        assert!(rig.syncs().is_empty(), "no subscribe waited on them");
        assert_eq!(rig.listener.listening(), 4_999);
        assert!(rig.listener.channels.values().all(|l| l.unconfirmed == 0));
    }

    #[test]
    fn a_position_asked_for_during_the_resubscribe_does_not_wait_for_the_queue() {
        let (mut rig, channels) = Rig::holding(3_000);
        let mut redis = rig.connect();
        let written = rig.written(&mut redis);
        let first = subscribed_in(&written);
        assert_eq!(first.len(), SUBSCRIBES_IN_FLIGHT);
        let mut queued = channels.iter().filter(|c| !first.contains(c)).cloned();
        let (later, back) = (queued.next().unwrap(), queued.next().unwrap());
        // One still queued is asked for; another is dropped and made again.
        rig.listen(&later, 5);
        rig.state.wanted.remove(&back);
        rig.unlisten(&back);
        rig.state.wanted.add(&Arc::from(back.as_str()));
        rig.listen(&back, 7);
        let asked = rig.written(&mut redis);
        assert_eq!(subscribed_in(&asked), [later.clone(), back.clone()], "{asked:?}");
        assert!(rig.syncs().is_empty(), "read before the confirmation");
        rig.reply(&mut redis, &answer(&(written + &asked)));
        let (mut syncs, mut expected) = (rig.syncs(), vec![(back.clone(), 7), (later.clone(), 5)]);
        syncs.sort();
        expected.sort();
        assert_eq!(syncs, expected);
        let rest = rig.serve_until_resync(&mut redis);
        assert!(!rest.contains(&later) && !rest.contains(&back), "subscribed once");
        assert_eq!(rest.len(), 998);
        assert_eq!(rig.listener.listening(), 3_000);
        assert!(rig.listener.channels.values().all(|l| l.unconfirmed == 0));
    }
}
