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
//! Bounded per loop turn: at most `TURN_BUDGET` messages are handed on,
//! fewer than the shard drains of its own inbox in a turn (it owns some of
//! the channels), and the rest waits in the socket for the next turn (the
//! shard does not wait for an event meanwhile: `busy`). Reading a backlog
//! of thousands in one go filled the owner's data lane before it could
//! drain any of it, and the rest was dropped.

use std::io;
use std::time::Instant;

use mio::{Interest, Registry};

use super::reply::{encode, Value};
use super::socket::{self, Got};
use super::subscriber::{Dispatch, PING_EVERY};
use super::{resp, REDIS_TIMEOUT};
use crate::bus::cluster::{redis_token, ClusterLink, LinkKind, RedisLink};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Messages handed on per loop turn (a shard drains 1,024 deliveries of
/// its inbox per turn).
const TURN_BUDGET: usize = 512;

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
}

struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes read, not yet a whole message.
    input: Vec<u8>,
    /// A `PING` the socket has not taken yet, `written` of it taken.
    out: Vec<u8>,
    written: usize,
    pinged: Instant,
    /// A `PING` waits for its pong since then.
    waiting: Option<Instant>,
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
        }
    }

    /// Whether messages wait to be read now (the loop must not sleep).
    pub fn busy(&self) -> bool {
        self.more && self.conn.is_some()
    }

    /// The connection the bridge opened: subscribed, with the first bytes
    /// read past the confirmations (handed on now).
    pub fn linked(&mut self, link: RedisLink, registry: &Registry, asker: &ClusterLink) {
        if self.conn.is_some() {
            return; // only one is asked for at a time
        }
        let mut stream = mio::net::TcpStream::from_std(link.stream);
        let token = redis_token(self.server, LinkKind::Subscribe);
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            return self.failed(e, asker);
        }
        self.conn = Some(Conn {
            stream,
            input: link.leftover,
            out: Vec::new(),
            written: 0,
            pinged: Instant::now(),
            waiting: None,
        });
        self.logged = false;
        self.dispatch.up();
        self.ready(registry, asker);
    }

    /// Reads what arrived and hands each message on, within this turn's
    /// budget; flushes a `PING`.
    pub fn ready(&mut self, registry: &Registry, asker: &ClusterLink) {
        self.more = true;
        self.pump(registry, asker);
    }

    /// End of the loop turn: goes on with what the budget left unread,
    /// then gives the next turn its budget.
    pub fn end_turn(&mut self, registry: &Registry, asker: &ClusterLink) {
        self.pump(registry, asker);
        self.budget = TURN_BUDGET;
    }

    fn pump(&mut self, registry: &Registry, asker: &ClusterLink) {
        if !self.more {
            return;
        }
        if let Err(e) = self.read().and_then(|()| self.flush()) {
            self.broken(e, registry, asker);
        }
    }

    /// Pings when due; closes a connection whose pong is late.
    pub fn tick(&mut self, registry: &Registry, asker: &ClusterLink) {
        // Behind on reading: the pong may be waiting unread.
        let behind = self.more;
        let Some(conn) = &mut self.conn else { return };
        let now = Instant::now();
        if !behind && conn.waiting.is_some_and(|at| now.duration_since(at) >= REDIS_TIMEOUT) {
            let late = io::Error::new(io::ErrorKind::TimedOut, "Redis stopped answering (no pong in time)");
            return self.broken(late, registry, asker);
        }
        if conn.waiting.is_none() && now.duration_since(conn.pinged) >= PING_EVERY {
            conn.pinged = now;
            conn.waiting = Some(now);
            encode(&mut conn.out, &["PING"]);
            if let Err(e) = self.flush() {
                self.broken(e, registry, asker);
            }
        }
    }

    /// Hands on what was read, then reads more, until the socket is
    /// drained (`more` cleared) or the turn's budget is spent.
    fn read(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            // Handed on as it comes: the buffer holds at most one message
            // in the making, or one chunk the budget left.
            self.handle_input()?;
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
    fn handle_input(&mut self) -> io::Result<()> {
        let Some(conn) = &mut self.conn else { return Ok(()) };
        let mut used = 0;
        let result = loop {
            if self.budget == 0 {
                break Ok(());
            }
            match resp::parse(&conn.input[used..]) {
                Ok(Some((value, n))) => {
                    used += n;
                    self.budget -= 1;
                    if let Err(e) = on_message(&mut self.dispatch, &mut conn.waiting, value) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(io::Error::other(e)),
            }
        };
        socket::consume(&mut conn.input, used);
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.conn {
            Some(conn) => socket::write_out(&mut conn.stream, &mut conn.out, &mut conn.written),
            None => Ok(()),
        }
    }

    /// The connection failed: as the thread does, then another is asked.
    fn broken(&mut self, error: io::Error, registry: &Registry, asker: &ClusterLink) {
        if let Some(mut conn) = self.conn.take() {
            let _ = registry.deregister(&mut conn.stream);
        }
        self.more = false;
        self.failed(error, asker);
    }

    fn failed(&mut self, error: io::Error, asker: &ClusterLink) {
        if self.dispatch.lost() {
            self.logged = false; // it was up: a new outage
        }
        let error = (!std::mem::replace(&mut self.logged, true)).then_some(&error);
        self.dispatch.down(error);
        asker.ask_link(self.server, self.shard, LinkKind::Subscribe);
    }
}

/// One reply on the subscribed connection: a message (handed on), a pong,
/// or a confirmation. An error reply breaks the connection.
fn on_message(dispatch: &mut Dispatch, waiting: &mut Option<Instant>, value: Value) -> io::Result<()> {
    let items = match value {
        Value::Array(items) => items,
        Value::Error(e) => return Err(io::Error::other(format!("Redis: {e}"))),
        _ => return Ok(()),
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
        (Some("pong"), _) => *waiting = None,
        _ => {} // (p)subscribe confirmations
    }
    Ok(())
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
        let config = ClusterConfig {
            redis: "redis://127.0.0.1:1".into(),
            more_redis: Vec::new(),
            sentinels: Vec::new(),
            master_name: None,
            ca_file: None,
            node: "me".into(),
            node_ttl: Duration::from_secs(10),
        };
        let peers = Peers::new(vec![handle].into());
        (Dispatch::new(config, 0, peers, Arc::clone(&state)), inbox, state)
    }

    fn bulk(items: &[&[u8]]) -> Value {
        Value::Array(items.iter().map(|b| Value::Bytes(b.to_vec())).collect())
    }

    #[test]
    fn publications_go_to_their_owner_and_a_pong_ends_the_wait() {
        let (mut dispatch, inbox, _state) = dispatch();
        let mut waiting = Some(Instant::now());
        let publication = bulk(&[b"pmessage", b"hubbub:pub:*", b"hubbub:pub:news", b"e1\n7\n{\"a\":1}"]);
        on_message(&mut dispatch, &mut waiting, publication).unwrap();
        let unwanted = bulk(&[b"pmessage", b"hubbub:pub:*", b"hubbub:pub:other", b"e1\n1\nx"]);
        on_message(&mut dispatch, &mut waiting, unwanted).unwrap();
        let confirmation = Value::Array(vec![
            Value::Bytes(b"psubscribe".to_vec()),
            Value::Bytes(b"hubbub:pub:*".to_vec()),
            Value::Int(2),
        ]);
        on_message(&mut dispatch, &mut waiting, confirmation).unwrap();
        assert!(waiting.is_some(), "a confirmation is not a pong");
        on_message(&mut dispatch, &mut waiting, bulk(&[b"pong", b""])).unwrap();
        assert!(waiting.is_none());
        match inbox.try_recv(Lane::Data) {
            Some(ShardMsg::Hub(HubMsg::ClusterPublication {
                channel, epoch, offset, ..
            })) => assert_eq!((&*channel, &*epoch, offset), ("news", "e1", 7)),
            other => panic!("expected the publication, got {other:?}"),
        }
        assert!(inbox.try_recv(Lane::Data).is_none(), "the unwanted one was skipped");
        let refused = on_message(&mut dispatch, &mut waiting, Value::Error("ERR wrong".into()));
        assert!(refused.is_err(), "an error reply breaks the connection");
    }
}
