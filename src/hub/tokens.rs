//! Token lifetime on open connections (docs/PROTOCOL.md, "Token lifetime"):
//! a connection whose token has `exp` is sent a `refresh` push before it
//! (10 s before, or at half the remaining life for shorter tokens), may
//! answer with a `refresh` command carrying a new token for the same `sub`,
//! and is closed with 4003 "token expired" at `exp` plus a grace if it does
//! not. `/room` and `/echo` connections have no command channel: they are
//! closed at the same moment without a push. `POST /api/disconnect
//! {"token_id"}` closes the connections whose token has that `jti`.
//!
//! Deadlines live in one min-heap per shard keyed by tick, popped only
//! while due: the work per tick is what expires, never a scan of the
//! connections. A refresh or a disconnect leaves its old entries stale
//! (recognised by the connection's generation and `exp`); they are swept
//! once they outnumber the live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use super::protocol::{self, code, json_string};
use super::users::Users;
use super::{Conns, Hub};
use crate::auth::{self, pattern::ChannelPattern, Claims};
use crate::bus::msg::Origin;
use crate::events::Kind as EventKind;
use crate::metrics::disconnect::Disconnect;
use crate::tick::secs_to_ticks;
use crate::ws::close::TOKEN_EXPIRED;

/// The `refresh` push comes this long before `exp` (or at half the
/// remaining life when that is shorter).
pub(crate) const REFRESH_LEAD_SECS: u64 = 10;
/// A connection is closed this long after its token's `exp`.
pub(crate) const EXPIRY_GRACE_SECS: u64 = 1;
/// Stale heap entries tolerated beyond the live ones before a sweep.
const SLACK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Refresh,
    Expire,
}

/// A deadline: at `tick`, for the connection at `key` of `generation`
/// whose token expires at `exp` (Unix seconds).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    tick: u32,
    key: usize,
    generation: u32,
    exp: u64,
    kind: Kind,
}

/// What the hub knows of a connection's token.
struct Lifetime {
    generation: u32,
    exp: Option<u64>,
    jti: Option<Arc<str>>,
    /// A `/ws` connection (it can be asked to refresh).
    ws: bool,
}

/// What came due.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Ask the `/ws` connection at `key` for a new token.
    Refresh { key: usize, expires_in: u64 },
    /// Close the connection at `key`: its token expired.
    Expire { key: usize },
}

/// The tokens of one shard's connections that have `exp` or `jti`.
#[derive(Default)]
pub(crate) struct Lifetimes {
    due: BinaryHeap<Reverse<Due>>,
    live: HashMap<usize, Lifetime>,
    by_jti: Users<usize>,
}

impl Lifetimes {
    /// A connection upgraded with `claims`; `ws` when it can refresh.
    pub fn begin(&mut self, key: usize, generation: u32, claims: &Claims, ws: bool, tick: u32, now_unix: u64) {
        if claims.exp.is_none() && claims.jti.is_none() {
            return;
        }
        let lifetime = Lifetime {
            generation,
            exp: None,
            jti: None,
            ws,
        };
        self.live.insert(key, lifetime);
        self.renew(key, claims.exp, claims.jti.as_deref(), tick, now_unix);
    }

    /// The connection at `key` now holds a token with `exp` and `jti`.
    /// Its earlier deadlines turn stale; an unchanged `exp` keeps them.
    pub fn renew(&mut self, key: usize, exp: Option<u64>, jti: Option<&str>, tick: u32, now_unix: u64) {
        let Some(lifetime) = self.live.get_mut(&key) else {
            return;
        };
        if lifetime.jti.as_deref() != jti {
            if let Some(old) = lifetime.jti.take() {
                self.by_jti.remove(&old, &key);
            }
            let jti: Option<Arc<str>> = jti.map(Arc::from);
            if let Some(new) = &jti {
                self.by_jti.add(new, key);
            }
            lifetime.jti = jti;
        }
        if lifetime.exp == exp {
            return;
        }
        lifetime.exp = exp;
        let Some(exp) = exp else { return };
        let (generation, ws) = (lifetime.generation, lifetime.ws);
        let left = secs_to_ticks(exp.saturating_sub(now_unix));
        let at = |ticks: u32, kind| {
            Reverse(Due {
                tick: tick.saturating_add(ticks),
                key,
                generation,
                exp,
                kind,
            })
        };
        if ws {
            let lead = secs_to_ticks(REFRESH_LEAD_SECS).min(left / 2);
            self.due.push(at(left - lead, Kind::Refresh));
        }
        self.due
            .push(at(left.saturating_add(secs_to_ticks(EXPIRY_GRACE_SECS)), Kind::Expire));
        self.sweep();
    }

    /// The connection at `key` went away.
    pub fn end(&mut self, key: usize) {
        let Some(lifetime) = self.live.remove(&key) else { return };
        if let Some(jti) = lifetime.jti {
            self.by_jti.remove(&jti, &key);
        }
        self.sweep();
    }

    /// Pops every deadline due at `tick`; stale ones are dropped.
    pub fn due(&mut self, tick: u32, now_unix: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while self.due.peek().is_some_and(|Reverse(d)| d.tick <= tick) {
            let Some(Reverse(due)) = self.due.pop() else { break };
            if !self.is_current(&due) {
                continue;
            }
            events.push(match due.kind {
                Kind::Refresh => Event::Refresh {
                    key: due.key,
                    expires_in: due.exp.saturating_sub(now_unix),
                },
                Kind::Expire => Event::Expire { key: due.key },
            });
        }
        events
    }

    /// The connections whose token has id `jti`.
    pub fn with_jti(&self, jti: &str) -> Vec<usize> {
        self.by_jti
            .get(jti)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default()
    }

    fn is_current(&self, due: &Due) -> bool {
        self.live
            .get(&due.key)
            .is_some_and(|l| l.generation == due.generation && l.exp == Some(due.exp))
    }

    /// Drops stale entries once they outnumber the live deadlines (two per
    /// connection) plus slack: O(1) amortized per refresh or disconnect.
    fn sweep(&mut self) {
        if self.due.len() <= 4 * self.live.len() + SLACK {
            return;
        }
        let due = std::mem::take(&mut self.due);
        self.due = due.into_iter().filter(|Reverse(d)| self.is_current(d)).collect();
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.due.len()
    }
}

impl Hub {
    /// Once a tick: pushes `refresh` to connections whose token is about to
    /// expire and closes those whose token expired.
    pub(super) fn token_deadlines(&mut self, conns: &mut dyn Conns) {
        for event in self.lifetimes.due(conns.tick(), conns.now_unix()) {
            match event {
                Event::Refresh { key, expires_in } => {
                    let push = format!("{{\"push\":\"refresh\",\"expires_in\":{expires_in}}}");
                    self.send_to(key, push.as_bytes(), conns);
                }
                Event::Expire { key } => conns.close(key, TOKEN_EXPIRED, "token expired", Disconnect::TokenExpired),
            }
        }
    }

    /// The `refresh` command: a new token, verified as at the handshake,
    /// for the same `sub`. Its `channels` claim replaces the old one:
    /// subscriptions it no longer allows end with an `unsubscribe` push.
    pub(super) fn refresh(&mut self, origin: Origin, token: &str, conns: &mut dyn Conns) {
        let (key, id) = (origin.key as usize, Some(origin.id));
        let user = self.sessions.get(&key).and_then(|s| s.user.clone());
        let (Some(user), Some(secret)) = (user, self.config.jwt_secret.as_deref()) else {
            let why = "anonymous connections have no token to refresh";
            return self.fail(key, id, code::UNAUTHENTICATED, why, conns);
        };
        let now = conns.now_unix();
        let claims = match auth::verify(token, secret, now) {
            Ok(claims) if self.config.jwt_require_exp && claims.exp.is_none() => {
                return self.fail(key, id, code::TOKEN_REFUSED, "missing_exp", conns);
            }
            Ok(claims) => claims,
            Err(e) => return self.fail(key, id, code::TOKEN_REFUSED, e.reason(), conns),
        };
        if *claims.sub != *user {
            let why = "the token is for another user (sub differs)";
            return self.fail(key, id, code::TOKEN_REFUSED, why, conns);
        }
        self.narrow_channels(key, claims.channels, conns);
        let tick = conns.tick();
        self.lifetimes.renew(key, claims.exp, claims.jti.as_deref(), tick, now);
        let expires_in = claims
            .exp
            .map_or_else(|| "null".to_string(), |exp| exp.saturating_sub(now).to_string());
        let result = format!("{{\"expires_in\":{expires_in}}}");
        self.send_to(key, &protocol::reply_ok(origin.id, &result), conns);
    }

    /// Sets the connection's allowed channels; ends the subscriptions they
    /// no longer allow (a pending one is answered 103 instead).
    fn narrow_channels(&mut self, key: usize, allowed: Option<Vec<ChannelPattern>>, conns: &mut dyn Conns) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.allowed = allowed;
        let subs = std::mem::take(&mut session.subs);
        let (kept, ended): (Vec<_>, Vec<_>) = subs.into_iter().partition(|s| session.may_access(&s.channel));
        session.subs = kept;
        let user = session.user.clone();
        let member = super::centrifuge::member(session, key);
        const WHY: &str = "the refreshed token does not allow this channel";
        for sub in ended {
            if sub.joined {
                self.event(key, EventKind::Unsubscribe, Some(&sub.channel), None, Some("token"));
                self.leave_channel(member, &sub, user.clone(), conns);
                let push = format!(
                    "{{\"push\":\"unsubscribe\",\"channel\":{},\"reason\":{}}}",
                    json_string(&sub.channel),
                    json_string(WHY)
                );
                self.send_to(key, push.as_bytes(), conns);
            } else {
                // Its answer is still on the way; it will be undone.
                let reply = protocol::reply_error(Some(sub.command), code::PERMISSION_DENIED, WHY);
                self.send_to(key, &reply, conns);
            }
        }
    }

    /// `POST /api/disconnect {"token_id"}`: closes this shard's connections
    /// whose token has id `jti`; returns how many were open.
    pub(super) fn disconnect_token(&mut self, jti: &str, code: u16, reason: &str, conns: &mut dyn Conns) -> u64 {
        let mut closed = 0;
        for key in self.lifetimes.with_jti(jti) {
            if conns.is_open(key) {
                closed += 1;
            }
            self.close(key, code, reason, conns);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::TICKS_PER_SEC;

    const NOW: u64 = 1_000_000;

    fn claims(exp: Option<u64>, jti: Option<&str>) -> Claims {
        Claims {
            sub: "u".into(),
            exp,
            nbf: None,
            iat: None,
            channels: None,
            jti: jti.map(str::to_string),
        }
    }

    /// Every event due up to and including `tick`, with its tick.
    fn run(lifetimes: &mut Lifetimes, ticks: std::ops::RangeInclusive<u32>) -> Vec<(u32, Event)> {
        let mut events = Vec::new();
        for tick in ticks {
            let now = NOW + (tick / TICKS_PER_SEC) as u64;
            events.extend(lifetimes.due(tick, now).into_iter().map(|e| (tick, e)));
        }
        events
    }

    #[test]
    fn a_short_token_is_asked_at_half_life_and_closed_after_the_grace() {
        let mut lifetimes = Lifetimes::default();
        lifetimes.begin(1, 7, &claims(Some(NOW + 3), None), true, 0, NOW);
        let events = run(&mut lifetimes, 0..=100);
        assert_eq!(
            events,
            vec![
                (6, Event::Refresh { key: 1, expires_in: 2 }),
                (16, Event::Expire { key: 1 })
            ]
        );
    }

    #[test]
    fn a_long_token_is_asked_ten_seconds_before_and_a_room_is_never_asked() {
        let mut lifetimes = Lifetimes::default();
        lifetimes.begin(1, 7, &claims(Some(NOW + 60), None), true, 0, NOW);
        lifetimes.begin(2, 7, &claims(Some(NOW + 60), None), false, 0, NOW);
        let events = run(&mut lifetimes, 0..=1000);
        assert_eq!(
            events,
            vec![
                (200, Event::Refresh { key: 1, expires_in: 10 }),
                (244, Event::Expire { key: 1 }),
                (244, Event::Expire { key: 2 }),
            ]
        );
    }

    #[test]
    fn a_refresh_moves_the_deadlines_and_a_disconnect_cancels_them() {
        let mut lifetimes = Lifetimes::default();
        lifetimes.begin(1, 7, &claims(Some(NOW + 3), Some("a")), true, 0, NOW);
        lifetimes.begin(2, 7, &claims(Some(NOW + 3), Some("a")), true, 0, NOW);
        lifetimes.begin(3, 7, &claims(None, None), true, 0, NOW);
        assert_eq!(lifetimes.with_jti("a").len(), 2);
        lifetimes.renew(1, Some(NOW + 100), Some("b"), 4, NOW + 1);
        lifetimes.end(2);
        assert_eq!((lifetimes.with_jti("a"), lifetimes.with_jti("b")), (vec![], vec![1]));
        let events = run(&mut lifetimes, 0..=1000);
        assert_eq!(
            events,
            vec![
                (360, Event::Refresh { key: 1, expires_in: 10 }),
                (404, Event::Expire { key: 1 })
            ]
        );
    }

    /// A client refreshing as fast as it may leaves stale deadlines behind;
    /// they are swept, so the heap stays proportional to the connections.
    #[test]
    fn stale_deadlines_are_bounded() {
        let mut lifetimes = Lifetimes::default();
        lifetimes.begin(1, 7, &claims(Some(NOW + 3600), None), true, 0, NOW);
        for i in 0..10_000 {
            lifetimes.renew(1, Some(NOW + 3601 + i), None, 0, NOW);
            assert!(lifetimes.pending() <= 4 + SLACK + 2, "{}", lifetimes.pending());
        }
    }
}
