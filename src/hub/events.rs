//! Events for the application (`crate::events`, docs/EVENTS.md), made
//! where each fact is true: connect after the session exists, subscribe
//! when the owner's confirmation is applied, unsubscribe when a joined
//! subscription ends while the connection stays, publish when a client's
//! command passed its shard's checks, disconnect with the counted reason.
//! Only connections with a session (every `/ws` one, and authenticated
//! `/room` and `/echo` ones) have events: an anonymous room or echo
//! connection names no one. Without a sink this is one `None` check.

use std::sync::Arc;

use super::Hub;
use crate::events::{ClientId, Kind};
use crate::metrics::disconnect::Disconnect;

impl Hub {
    /// Hands an event about the connection at `key` to the sinks.
    pub(super) fn event(
        &self,
        key: usize,
        kind: Kind,
        channel: Option<&Arc<str>>,
        data: Option<&str>,
        reason: Option<&'static str>,
    ) {
        let Some(events) = &self.config.events else {
            return;
        };
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let client = ClientId {
            shard: self.shard as u16,
            key: key as u32,
            generation: session.generation,
        };
        events.emit(
            kind,
            client,
            session.user.clone(),
            channel.cloned(),
            data.map(Arc::from),
            reason,
        );
    }

    /// The connection at `key` is in (its user known: after the token, the
    /// connect hook, or a Centrifuge `connect`): the connect event.
    pub(super) fn announce(&mut self, key: usize) {
        if let Some(session) = self.sessions.get_mut(&key) {
            session.announced = true;
        }
        self.event(key, Kind::Connect, None, None, None);
    }

    /// The upgraded connection at `key` ended for `why` (the shard calls
    /// this just before `leave`, while its session is still known). A
    /// connection never announced (refused by the connect hook, or a
    /// Centrifuge one that never connected) was never in: no event.
    pub(crate) fn disconnected(&self, key: usize, why: Disconnect) {
        if self.sessions.get(&key).is_some_and(|s| s.announced) {
            self.event(key, Kind::Disconnect, None, None, Some(why.label()));
        }
    }
}
