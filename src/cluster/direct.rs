//! A shard's own Redis connections, driven by its event loop through
//! `ShardRedis`, for each `--redis` server reached over plain TCP: one for
//! the publishes the shard orders (here), and on one shard per server the
//! node's subscriber connection (`listen`).
//!
//! Why: through the command thread a publish woke that thread, waited for
//! the whole pipeline before it to be answered, and woke the shard again
//! with the answer. Here a publish is written at the end of the loop turn
//! that made it, pipelined behind those still out, and its answer is read
//! when Redis sends it; no other thread is woken on the way.
//!
//! The bridge opens each connection (`ClusterCmd::Dial`: blocking connect,
//! `AUTH`, `SELECT`, the script loaded; through the sentinels when named)
//! and hands it over (`HubMsg::RedisLink`); the shard asks again when one
//! fails. The rules are the command thread's (`publish`):
//! - each shard and server is a writer of its own in the idempotency
//!   record; a publish written again after its connection failed is looked up
//!   first (`r`), so it is never published twice;
//! - a publish not answered `DEADLINE` after it was taken is answered with
//!   an error: not done (`108`, retry) if it was never written, "not known"
//!   if it was (`108` with the reason, `504` to the API);
//! - a connection whose oldest answer is `REDIS_TIMEOUT` late is closed
//!   (Redis hung) and its publishes wait for the next one, in order;
//! - what waits is bounded in count (`PENDING_CAPACITY` per connection) and
//!   in bytes (`ClusterState`, with the bridge's own buffers).
//!
//! Order: one connection per server carries every publish this shard
//! orders for that server, in the order they were made, and a retried
//! publish goes out again ahead of the ones after it.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Registry};

use super::backoff::Backoff;
use super::commands::{DEADLINE, PENDING_CAPACITY};
use super::listen::Listener;
use super::publish::{self, Failure, Writer, UNREACHABLE_WHY};
use super::reply::{encode, Value};
use super::socket::{self, Got};
use super::subscriber::Dispatch;
use super::{resp, REDIS_TIMEOUT};
use crate::bus::cluster::{
    redis_link_of, redis_token, server_of, ClusterLink, LinkKind, RedisCall, RedisLink, ShardRedis, SyncFor,
};
use crate::bus::msg::HubMsg;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

type Answers = Vec<(usize, HubMsg)>;

/// One shard's own connections to Redis.
pub(crate) struct Links {
    shard: usize,
    node: Arc<str>,
    link: ClusterLink,
    registry: Registry,
    /// Per server, `None` where the command thread publishes (TLS).
    lanes: Vec<Option<Lane>>,
    /// Per server, the node's subscriber connection where this shard holds
    /// it (server `s` is held by shard `s % shards`).
    listeners: Vec<Option<Listener>>,
}

/// Everything of one server: the connection and the publishes waiting.
struct Lane {
    server: usize,
    conn: Option<Conn>,
    writer: Writer,
    /// Not written on the current connection yet, oldest first.
    pending: VecDeque<Waiting>,
    /// Written, waiting for their answers, in the order Redis answers.
    inflight: VecDeque<Waiting>,
    /// The last failure was logged; quiet until a connection works.
    logged_down: bool,
    /// Delays between connections that fail before any answer (a server
    /// that refuses every publish, `READONLY` say, would otherwise be
    /// redialed as fast as connections open, thousands a second).
    redial: Backoff,
    /// When to ask the bridge for the next connection, if it waits.
    ask_at: Option<Instant>,
}

struct Conn {
    stream: mio::net::TcpStream,
    sha: String,
    /// Bytes of written commands the socket has not taken yet.
    out: Vec<u8>,
    written: usize,
    /// Bytes of answers not yet read whole.
    input: Vec<u8>,
    /// Redis answered a publish on it (it worked: the next failure is a
    /// new one, asked again at once and logged).
    answered: bool,
    /// When it came: one that lasted `REDIS_TIMEOUT` worked too (an idle
    /// one closed by Redis's `timeout` or a `CLIENT KILL` is replaced at
    /// once, not after a backoff grown by every such close, which its next
    /// publishes would wait for past their deadline).
    opened: Instant,
}

struct Waiting {
    call: RedisCall,
    bytes: u64,
    seq: u64,
    /// When the shard took it (its `DEADLINE` counts from here).
    since: Instant,
    /// When it was last written (its answer is due `REDIS_TIMEOUT` later).
    written_at: Option<Instant>,
    /// It was written on a connection that failed before answering it: it
    /// may have run. (One answered `NOSCRIPT`, `READONLY`... did not.)
    maybe_ran: bool,
    /// Answered "not run" on the connection being closed.
    refused: bool,
    /// Its share of trimming the idempotency window (a record hash to
    /// drop), kept for its retries.
    trim: Option<(u64, u64)>,
}

impl Links {
    /// `direct[server]`: whether that server is reached over plain TCP;
    /// `listen[server]`: what its subscriber connection hands on, where
    /// this shard holds it. Asks the bridge for every connection at once.
    pub fn new(
        shard: usize,
        link: ClusterLink,
        registry: Registry,
        direct: &[bool],
        listen: Vec<Option<Dispatch>>,
    ) -> Links {
        let lanes = direct
            .iter()
            .enumerate()
            .map(|(server, &direct)| direct.then(|| Lane::new(server)))
            .collect();
        for (server, _) in direct.iter().enumerate().filter(|(_, &d)| d) {
            link.ask_link(server, shard, LinkKind::Publish);
        }
        let listeners = listen
            .into_iter()
            .enumerate()
            .map(|(server, dispatch)| dispatch.map(|d| Listener::new(server, shard, d, &link)))
            .collect();
        Links {
            shard,
            node: Arc::clone(&link.node),
            link,
            registry,
            lanes,
            listeners,
        }
    }
}

impl ShardRedis for Links {
    fn serves(&self, server: usize) -> bool {
        matches!(self.lanes.get(server), Some(Some(_)))
    }

    fn busy(&self) -> bool {
        self.listeners.iter().flatten().any(Listener::busy)
    }

    fn publish(&mut self, server: usize, call: RedisCall) -> Result<(), RedisCall> {
        let bytes = call.bytes();
        let state = &self.link.state;
        let Some(lane) = self.lanes.get_mut(server).and_then(Option::as_mut) else {
            return Err(call);
        };
        if lane.pending.len() + lane.inflight.len() >= PENDING_CAPACITY || !state.hold(bytes) {
            state.drop_one();
            return Err(call);
        }
        let seq = lane.writer.next();
        lane.pending.push_back(Waiting {
            call,
            bytes,
            seq,
            since: Instant::now(),
            written_at: None,
            maybe_ran: false,
            refused: false,
            trim: None,
        });
        Ok(())
    }

    fn linked(&mut self, link: RedisLink, answers: &mut Answers) {
        if link.kind == LinkKind::Subscribe {
            if let Some(listener) = self.listeners.get_mut(link.server).and_then(Option::as_mut) {
                listener.linked(link, &self.registry, &self.link, answers);
            }
            return;
        }
        let (shard, registry) = (self.shard, &self.registry);
        let Some(lane) = self.lanes.get_mut(link.server).and_then(Option::as_mut) else {
            return; // not published to from here: the stream closes
        };
        if lane.conn.is_some() {
            return; // only one is asked for at a time; this one is not needed
        }
        let mut stream = mio::net::TcpStream::from_std(link.stream);
        let token = redis_token(link.server, LinkKind::Publish);
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            tracing::warn!(shard, server = link.server, error = %e, "a publishing connection to Redis could not be registered");
            self.link.ask_link(link.server, shard, LinkKind::Publish);
            return;
        }
        lane.conn = Some(Conn {
            stream,
            sha: link.sha,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            answered: false,
            opened: Instant::now(),
        });
    }

    fn listen(&mut self, channel: Arc<str>, owner: usize, answers: &mut Answers) {
        let server = server_of(&channel, self.listeners.len());
        match self.listeners.get_mut(server).and_then(Option::as_mut) {
            Some(listener) => listener.listen(channel, owner, &self.link, answers),
            None => {
                // Not to be. Subscribed to nowhere, the channel would get
                // no publication: its subscribes fail (108) instead of
                // waiting forever, and it is logged as the bug it is.
                tracing::error!(
                    shard = self.shard,
                    server,
                    channel = %channel,
                    "a channel to listen to was sent to a shard without that server's subscriber connection"
                );
                answers.push((owner, HubMsg::unsynced(channel, SyncFor::Subscribe)));
            }
        }
    }

    fn unlisten(&mut self, channel: &str, answers: &mut Answers) {
        let server = server_of(channel, self.listeners.len());
        if let Some(listener) = self.listeners.get_mut(server).and_then(Option::as_mut) {
            listener.unlisten(channel, &self.link, answers);
        }
    }

    fn ready(&mut self, token: mio::Token, answers: &mut Answers) {
        let Some((server, kind)) = redis_link_of(token) else {
            return;
        };
        if kind == LinkKind::Subscribe {
            if let Some(listener) = self.listeners.get_mut(server).and_then(Option::as_mut) {
                listener.ready(&self.registry, &self.link, answers);
            }
            return;
        }
        let io = Io {
            shard: self.shard,
            node: &self.node,
            link: &self.link,
            registry: &self.registry,
        };
        let Some(lane) = self.lanes.get_mut(server).and_then(Option::as_mut) else {
            return;
        };
        if let Err(e) = lane.read(&io, answers).and_then(|()| lane.flush()) {
            lane.broken(&io, e);
        }
    }

    fn end_turn(&mut self, ticked: bool, answers: &mut Answers) {
        let io = Io {
            shard: self.shard,
            node: &self.node,
            link: &self.link,
            registry: &self.registry,
        };
        for listener in self.listeners.iter_mut().flatten() {
            listener.end_turn(io.registry, io.link, answers);
            if ticked {
                listener.tick(io.registry, io.link, answers);
            }
        }
        for lane in self.lanes.iter_mut().flatten() {
            if ticked {
                lane.expire(&io, answers);
            }
            if lane.ask_at.is_some_and(|at| Instant::now() >= at) {
                lane.ask_at = None;
                io.link.ask_link(lane.server, io.shard, LinkKind::Publish);
            }
            if let Err(e) = lane.write_pending(&io) {
                lane.broken(&io, e);
            }
        }
    }
}

/// What a lane needs of its publisher.
struct Io<'a> {
    shard: usize,
    node: &'a str,
    link: &'a ClusterLink,
    registry: &'a Registry,
}

impl Lane {
    fn new(server: usize) -> Lane {
        Lane {
            server,
            conn: None,
            writer: Writer::new(),
            pending: VecDeque::new(),
            inflight: VecDeque::new(),
            logged_down: false,
            redial: Backoff::default(),
            ask_at: None,
        }
    }

    /// Writes every pending publish on the connection, if there is one.
    fn write_pending(&mut self, io: &Io) -> io::Result<()> {
        let Some(conn) = &mut self.conn else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let floor = match self.writer.trim.due(self.writer.seq()) {
            true => oldest_publish(&self.inflight, &self.pending),
            false => u64::MAX,
        };
        let now = Instant::now();
        while let Some(mut waiting) = self.pending.pop_front() {
            let retry = waiting.written_at.is_some();
            if waiting.trim.is_none() && !has_caller_key(&waiting.call) {
                waiting.trim = self.writer.trim.share(waiting.seq, floor);
            }
            let args = self
                .writer
                .args(&conn.sha, io.node, &waiting.call, waiting.seq, retry, waiting.trim);
            encode(&mut conn.out, &args);
            waiting.written_at = Some(now);
            self.inflight.push_back(waiting);
        }
        self.flush()
    }

    /// Hands the socket what it takes of the written commands.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.conn {
            Some(conn) => socket::write_out(&mut conn.stream, &mut conn.out, &mut conn.written),
            None => Ok(()),
        }
    }

    /// Reads what Redis answered and hands each answer to its publish.
    fn read(&mut self, io: &Io, answers: &mut Answers) -> io::Result<()> {
        let Some(conn) = &mut self.conn else {
            return Ok(());
        };
        let mut chunk = [0u8; READ_CHUNK];
        // A close (or a reset) right behind answers does not make them
        // unread: they are handed on first, and only the publishes still
        // unanswered wait for the next connection.
        let closed = loop {
            match socket::read_once(&mut conn.stream, &mut chunk, &mut conn.input) {
                Got::Bytes => {}
                Got::Drained => break None,
                Got::Closed(e) => break Some(e),
            }
        };
        let mut used = 0;
        let result = loop {
            let reply = match resp::parse(&conn.input[used..]) {
                Ok(Some((reply, n))) => {
                    used += n;
                    reply
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(io::Error::other(e)),
            };
            let Some(waiting) = self.inflight.pop_front() else {
                break Err(io::Error::other("Redis answered a command that was not sent"));
            };
            if let Value::Error(e) = &reply {
                if not_run(e) {
                    // Not run: it goes out again, first, on the next
                    // connection (this one is closed below).
                    let mut waiting = waiting;
                    waiting.refused = true;
                    self.inflight.push_front(waiting);
                    break Err(io::Error::other(format!("Redis: {e}")));
                }
            }
            if !matches!(reply, Value::Error(_)) && !conn.answered {
                conn.answered = true;
                self.logged_down = false;
                self.redial.reset();
            }
            complete(io, &mut self.writer, waiting, &reply, answers);
        };
        socket::consume(&mut conn.input, used);
        match closed {
            Some(e) => result.and(Err(e)),
            None => result,
        }
    }

    /// The connection failed: its publishes wait for the next one (in
    /// order, those written first), which is asked for now if this one
    /// worked, else after a backoff.
    fn broken(&mut self, io: &Io, error: io::Error) {
        let mut worked = false;
        if let Some(mut conn) = self.conn.take() {
            let _ = io.registry.deregister(&mut conn.stream);
            worked = conn.answered || conn.opened.elapsed() >= REDIS_TIMEOUT;
        }
        while let Some(mut waiting) = self.inflight.pop_back() {
            waiting.maybe_ran |= !std::mem::take(&mut waiting.refused);
            self.pending.push_front(waiting);
        }
        if !self.logged_down && !io.link.state.stop.load(std::sync::atomic::Ordering::Relaxed) {
            self.logged_down = true;
            tracing::warn!(shard = io.shard, server = self.server, error = %error, "a shard's publishing connection to Redis failed; asking for another");
        }
        match worked {
            true => io.link.ask_link(self.server, io.shard, LinkKind::Publish),
            false => self.ask_at = Some(Instant::now() + self.redial.next_delay()),
        }
    }

    /// Fails what waited past its deadline, and closes a connection whose
    /// oldest answer is overdue (Redis hung: its publishes wait for the
    /// next connection, within their deadline).
    fn expire(&mut self, io: &Io, answers: &mut Answers) {
        let now = Instant::now();
        let overdue = |w: &Waiting| w.written_at.is_some_and(|at| now.duration_since(at) >= REDIS_TIMEOUT);
        if self.conn.is_some() && self.inflight.front().is_some_and(overdue) {
            self.broken(
                io,
                io::Error::new(io::ErrorKind::TimedOut, "no answer from Redis in time"),
            );
        }
        while self
            .pending
            .front()
            .is_some_and(|w| now.duration_since(w.since) >= DEADLINE)
        {
            let Some(waiting) = self.pending.pop_front() else { break };
            let failure = match waiting.maybe_ran {
                true => Failure::Unknown,
                false => Failure::NotDone(UNREACHABLE_WHY),
            };
            fail(io, &mut self.writer, waiting, failure, answers);
        }
    }
}

/// Acts on the script's answer to `waiting`.
fn complete(io: &Io, writer: &mut Writer, waiting: Waiting, reply: &Value, answers: &mut Answers) {
    if let Value::Error(e) = reply {
        tracing::warn!(error = %e, "cluster publish refused by Redis");
        // This copy did not run, but an earlier one may have.
        let failure = match waiting.maybe_ran {
            true => Failure::Unknown,
            false => Failure::NotDone("the cluster refused the command"),
        };
        return fail(io, writer, waiting, failure, answers);
    }
    io.link.state.release(waiting.bytes);
    let RedisCall::Publish { reply: to, .. } = waiting.call else {
        return;
    };
    answers.extend(publish::completed(&io.link.state, to, reply));
}

/// Answers a publish that could not be done, and counts it.
fn fail(io: &Io, writer: &mut Writer, waiting: Waiting, failure: Failure, answers: &mut Answers) {
    io.link.state.drop_one();
    io.link.state.release(waiting.bytes);
    // Its share of the trim may not have run: another publish takes it.
    writer.trim.untrimmed.extend(waiting.trim);
    if let RedisCall::Publish { reply: Some(to), .. } = waiting.call {
        answers.extend(publish::answer(to, Err(failure), false));
    }
}

/// Error answers that say the command did not run and the connection (or
/// the server behind it) is not the one to run it: the script is not
/// loaded there (`SCRIPT FLUSH`, a restart), the server is a replica now (a
/// failover), or it is still loading its data.
fn not_run(error: &str) -> bool {
    ["NOSCRIPT", "READONLY", "LOADING", "MASTERDOWN"]
        .iter()
        .any(|code| error.starts_with(code))
}

fn has_caller_key(call: &RedisCall) -> bool {
    matches!(call, RedisCall::Publish { idem: Some(_), .. })
}

/// The lowest sequence of a publish still waiting (its record in the
/// idempotency hash must stay).
fn oldest_publish(inflight: &VecDeque<Waiting>, pending: &VecDeque<Waiting>) -> u64 {
    inflight
        .iter()
        .chain(pending)
        .filter(|w| !has_caller_key(&w.call))
        .map(|w| w.seq)
        .min()
        .unwrap_or(u64::MAX)
}
