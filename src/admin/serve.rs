//! The admin thread's event loop: one `mio::Poll` with the listener, the
//! stop waker and up to [`MAX_CONNECTIONS`] sessions, none of which can
//! make another wait. Each turn drives the sessions that are ready, then
//! accepts (bounded), then enforces the deadlines, then runs the exporter's
//! upkeep when due.
//!
//! At the cap a new connection is always taken and the session that least
//! deserves its slot is closed (`Session::eviction_rank`), so clients that
//! hold connections open cannot keep a probe out. On stop every session is
//! closed at once (dropped), whatever it was doing.

use std::io;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, warn};

use super::refusal::{Refusal, Refusals};
use super::router::Router;
use super::session::{Next, Session};
use super::{LISTENER, MAX_CONNECTIONS, STOP};
use crate::net::io::accept_error_is_transient;

/// How often the exporter's upkeep runs (histogram windows, idle series).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Connections accepted per turn; the rest wait for the next turn, after
/// the sessions already open had theirs.
const ACCEPT_BUDGET: usize = 32;
/// Pause before accepting again after a transient accept error (EMFILE).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Session tokens start after the listener's and the waker's.
const FIRST_SESSION: usize = 2;

pub(crate) struct Serve {
    poll: Poll,
    listener: TcpListener,
    sessions: Slab<Session>,
    router: Router,
    prometheus: PrometheusHandle,
    refusals: Refusals,
    /// Sessions accepted so far (each one's serial).
    accepted: u64,
    last_upkeep: Instant,
    /// Accept again at this time without waiting for the listener's edge
    /// (the accept budget ran out, or accept failed for lack of fds).
    accept_again: Option<Instant>,
}

impl Serve {
    pub fn new(poll: Poll, listener: TcpListener, router: Router, prometheus: PrometheusHandle) -> Serve {
        Serve {
            poll,
            listener,
            sessions: Slab::with_capacity(MAX_CONNECTIONS),
            router,
            prometheus,
            refusals: Refusals::register(),
            accepted: 0,
            last_upkeep: Instant::now(),
            accept_again: None,
        }
    }

    /// Serves until the stop waker fires (or polling fails for good).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(128);
        loop {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(error = %e, "admin poll failed; admin port stops");
                    return;
                }
            }
            if events.iter().any(|e| e.token() == STOP) {
                return; // dropping `self` closes every session now
            }
            let now = Instant::now();
            let mut accept = self.accept_again.is_some_and(|at| at <= now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => accept = true,
                    Token(t) => self.drive(t - FIRST_SESSION, now),
                }
            }
            if accept {
                self.accept(now);
            }
            self.expire(Instant::now());
            self.upkeep(now);
        }
    }

    /// Until the next deadline, upkeep or accept retry.
    fn timeout(&self, now: Instant) -> Duration {
        let mut next = self.last_upkeep + UPKEEP_INTERVAL;
        if let Some(at) = self.accept_again {
            next = next.min(at);
        }
        for (_, session) in &self.sessions {
            next = next.min(session.deadline());
        }
        next.saturating_duration_since(now)
    }

    fn drive(&mut self, key: usize, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return; // an event for a session closed earlier in this turn
        };
        if session.on_ready(&self.router, &self.refusals, now) == Next::Close {
            self.sessions.remove(key);
        }
    }

    fn accept(&mut self, now: Instant) {
        self.accept_again = None;
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if accept_error_is_transient(&e) => {
                    debug!(error = %e, "admin accept failed; retrying");
                    self.accept_again = Some(now + ACCEPT_RETRY);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    self.accept_again = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.accept_again = Some(now);
    }

    /// Takes a new connection (making room at the cap) and reads its
    /// request right away: it has usually arrived with the connection.
    fn admit(&mut self, mut stream: TcpStream, now: Instant) {
        if self.sessions.len() >= MAX_CONNECTIONS {
            self.evict();
        }
        let entry = self.sessions.vacant_entry();
        let token = Token(entry.key() + FIRST_SESSION);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            warn!(error = %e, "admin connection not registered; closed");
            return;
        }
        let key = entry.key();
        self.accepted += 1;
        entry.insert(Session::new(stream, self.accepted, now));
        self.drive(key, now);
    }

    /// Closes the session that least deserves its slot.
    fn evict(&mut self) {
        let victim = self
            .sessions
            .iter()
            .min_by_key(|(_, s)| s.eviction_rank())
            .map(|(key, _)| key);
        if let Some(session) = victim.map(|key| self.sessions.remove(key)) {
            if session.unanswered() {
                self.refusals.count(Refusal::Evicted);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let refusals = &self.refusals;
        self.sessions
            .retain(|_, session| session.deadline() > now || session.expire(refusals, now) == Next::Keep);
    }

    fn upkeep(&mut self, now: Instant) {
        if now.duration_since(self.last_upkeep) >= UPKEEP_INTERVAL {
            self.prometheus.run_upkeep();
            self.last_upkeep = now;
        }
    }
}
