//! A connection arrives in the hub and leaves it: its room, its session
//! (a `/ws` or authenticated connection), its user, its channels. The owner
//! of the user and of each channel is told, so presence and subscriber
//! counts follow the connection.

use std::sync::Arc;

use super::rooms::RoomMember;
use super::session::{Rate, Session, Subscription};
use super::{Conns, Hub};
use crate::auth::Claims;
use crate::bus::msg::{HubMsg, Origin};
use crate::route::Endpoint;

impl Hub {
    /// The connection at `key` upgraded on `endpoint` (with `claims` when
    /// it showed a token).
    pub(crate) fn upgraded(
        &mut self,
        key: usize,
        endpoint: Endpoint,
        claims: Option<Box<Claims>>,
        conns: &mut dyn Conns,
    ) {
        let Some(generation) = conns.generation(key) else {
            return;
        };
        let ws = match endpoint {
            Endpoint::Room(name) => {
                let room = self.rooms.join(&name, key);
                let rate = Rate::new(self.config.max_messages_per_sec, self.config.max_bytes_per_sec);
                self.room_of.insert(key, RoomMember { room, rate });
                false
            }
            Endpoint::Ws => true,
            Endpoint::Echo => false,
            Endpoint::Centrifuge => return self.centrifuge_upgraded(key, generation, conns),
        };
        if !ws && claims.is_none() {
            return; // anonymous echo and room connections need no session
        }
        let (user, allowed) = match &claims {
            Some(claims) => {
                let (tick, now) = (conns.tick(), conns.now_unix());
                self.lifetimes.begin(key, generation, claims, ws, tick, now);
                (Some(Arc::<str>::from(claims.sub.as_str())), claims.channels.clone())
            }
            None => (None, None),
        };
        let rate = Rate::new(self.config.max_messages_per_sec, self.config.max_bytes_per_sec);
        self.sessions
            .insert(key, Session::new(generation, user.clone(), allowed, rate));
        // A /ws connection the connect hook will name (`proxy::connecting`)
        // is told about when the hook lets it in, with its user.
        let hook_decides = ws && user.is_none() && self.proxy_has(crate::bus::proxy::Hook::Connect);
        if !hook_decides {
            self.announce(key);
        }
        if let Some(user) = user {
            self.online(key, generation, user, conns);
        }
    }

    /// The connection at `key` is `user`'s: counted, and its owner told.
    pub(super) fn online(&mut self, key: usize, generation: u32, user: Arc<str>, conns: &mut dyn Conns) {
        self.users.add(&user, key);
        let conn = self.origin(key, generation, 0);
        let msg = HubMsg::UserOnline {
            user: Arc::clone(&user),
            conn,
            since: std::time::Instant::now(),
        };
        self.route_to_owner(&user, msg, conns);
    }

    /// The connection at `key` is going away (the shard removed it): leave
    /// its room, channels and user.
    pub(crate) fn leave(&mut self, key: usize, conns: &mut dyn Conns) {
        if let Some(member) = self.room_of.remove(&key) {
            self.rooms.leave(member.room, key);
        }
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        self.lifetimes.end(key);
        let member = super::centrifuge::member(&session, key);
        for sub in session.subs.iter().filter(|s| s.joined) {
            self.leave_channel(member, sub, session.user.clone(), conns);
        }
        if let Some(user) = session.user {
            self.users.remove(&user, &key);
            let conn = self.origin(key, session.generation, 0);
            self.route_to_owner(&Arc::clone(&user), HubMsg::UserOffline { user, conn }, conns);
        }
    }

    /// A joined subscription ends: leave the local groups (as `member`, the
    /// connection's key in them: `centrifuge::member`) and tell the owner.
    pub(super) fn leave_channel(
        &mut self,
        member: usize,
        sub: &Subscription,
        user: Option<Arc<str>>,
        conns: &mut dyn Conns,
    ) {
        self.channels.leave_name(&sub.channel, member);
        if sub.join_leave {
            self.watchers.leave_name(&sub.channel, member);
        }
        let stats = conns.stats();
        stats.subscriptions = stats.subscriptions.saturating_sub(1);
        let msg = HubMsg::Unsubscribe {
            channel: Arc::clone(&sub.channel),
            user,
            shard: self.shard as u16,
        };
        self.route_to_owner(&Arc::clone(&sub.channel), msg, conns);
    }

    /// Where an answer for the connection at `key` (command `id`) goes.
    pub(super) fn origin(&self, key: usize, generation: u32, id: u64) -> Origin {
        Origin {
            shard: self.shard as u16,
            key: key as u32,
            generation,
            id,
        }
    }
}
