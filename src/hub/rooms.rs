//! `/room/{name}`: every message a member sends goes, as is, to every
//! member on every shard, in the order of the room's owner. The member's
//! shard framed it once (conn/drive.rs); the hub forwards it to the owner,
//! and the owner delivers it here and sends the same `Bytes` to the others.
//!
//! In cluster mode the member's shard hands the frame to the Redis bridge
//! instead (`hubbub:room:NAME`, no history): every node's subscriber brings
//! it back to the room's owner shard there (`ClusterRoomMessage`), this
//! node's included, so the sender's own node delivers it once, from Redis,
//! and every member on every node sees Redis's one order.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::session::Rate;
use super::{Conns, Hub, Target};
use crate::bus::cluster::{server_of, ClusterCmd};
use crate::bus::msg::HubMsg;
use crate::metrics::disconnect::Disconnect;
use crate::ws::close::{POLICY_VIOLATION, TRY_AGAIN_LATER};

/// Close reason for a room member whose message its room's owner could not take.
pub(super) const ROOM_OVERLOADED: &str = "room overloaded: your message was dropped; reconnect";
/// Close reason for a room member that missed messages under overload.
pub(super) const ROOM_GAP: &str = "room messages to you were dropped under overload; reconnect";

/// Close reason for a room member over its rate: a room has no reply
/// channel to say "slow down" on, and dropping the member's messages would
/// lose them silently, so the close is how it is told.
pub(super) const ROOM_RATE: &str = "rate limit exceeded";

/// Close reason for a room member whose message could not go to the other
/// nodes (Redis unreachable, or the bridge's queue full): it was dropped.
pub(super) const ROOM_CLUSTER_DOWN: &str = "cluster link down: your message was dropped; reconnect";

/// Close reason for a room member when its node lost the link to Redis.
pub(super) const ROOM_CLUSTER_LOST: &str = "cluster link down: room messages were lost; reconnect";

/// A room connection: its room and its sending rate.
pub(crate) struct RoomMember {
    pub room: u32,
    pub rate: Rate,
}

impl Hub {
    /// The room member at `key` sent `frame` (the server frame, encoded
    /// once for every receiver).
    pub(crate) fn room_message(&mut self, key: usize, frame: Bytes, conns: &mut dyn Conns) {
        let tick = conns.tick();
        let (messages, bytes) = (self.config.max_messages_per_sec, self.config.max_bytes_per_sec);
        let Some(member) = self.room_of.get_mut(&key) else {
            return;
        };
        // The payload, as for /ws commands: the frame's header is ours.
        let header = match frame.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        if !member
            .rate
            .spend(tick, frame.len().saturating_sub(header), messages, bytes)
        {
            // Before the owner sees it: a flood never reaches the inboxes.
            conns.stats().rate_limited += 1;
            conns.close(key, POLICY_VIOLATION, ROOM_RATE, Disconnect::RateLimited);
            return;
        }
        let Some(name) = self.rooms.name(member.room) else {
            return;
        };
        conns.stats().messages_in_rooms += 1;
        if let Some(link) = &self.cluster {
            // Redis orders it and every node's owner delivers it, this
            // one's included (from the echo): never delivered here first.
            let sent = link.state.link_up() && link.send(ClusterCmd::RoomMessage { room: name, frame }).is_ok();
            if !sent {
                conns.close(key, TRY_AGAIN_LATER, ROOM_CLUSTER_DOWN, Disconnect::MissedMessages);
            }
            return;
        }
        let owner = self.owner_of(&name);
        let at = Instant::now();
        if owner == self.shard {
            self.publish_room(name, frame, at, conns);
        } else if !self.send(owner, HubMsg::RoomPublish { room: name, frame, at }) {
            // The owner's inbox is full: the sender learns its message was
            // lost rather than believe it was delivered.
            conns.close(key, TRY_AGAIN_LATER, ROOM_OVERLOADED, Disconnect::MissedMessages);
        }
    }

    /// At the owner: deliver here, then to every other shard. Unlike a
    /// channel's, a room's members join on their own shard without a round
    /// trip to the owner, so the owner cannot know of a member before its
    /// 101 went out; sending to every shard is what keeps "every message
    /// sent after a member's 101 reaches it" (a shard without members drops
    /// the delivery at once).
    pub(super) fn publish_room(&mut self, name: Arc<str>, frame: Bytes, at: Instant, conns: &mut dyn Conns) {
        self.deliver_room(&name, &frame, at, conns);
        let from = self.shard as u16;
        self.send_to_others(|_| HubMsg::RoomDeliver {
            room: Arc::clone(&name),
            frame: frame.clone(),
            at,
            from,
            seq: 0, // numbered as sent
        });
    }

    /// A room message to this shard's members, timed from when it was read
    /// (the publish-to-deliver histogram: read on the sender's shard, queued
    /// for every member here).
    pub(super) fn deliver_room(&self, name: &str, frame: &Bytes, at: Instant, conns: &mut dyn Conns) {
        self.deliver(Target::Room, name, frame, conns);
        conns.stats().delivery_latency.record(at.elapsed());
    }

    /// Cluster mode: this node stopped hearing from Redis server `server`,
    /// so every member here of the rooms shard `owner` owns that `server`
    /// holds misses messages: each is closed (1013) to reconnect. Rooms on
    /// another server lost nothing (their messages come from its own
    /// subscriber): their members stay. Called once the owner's deliveries
    /// sent before the loss were handled (`inbound.rs`): the close is
    /// queued behind them.
    pub(super) fn rooms_lost(&self, owner: usize, server: u16, conns: &mut dyn Conns) {
        let servers = self.cluster.as_ref().map_or(1, |link| link.state.subscriber_up.len());
        let of_owner = |member: &RoomMember| {
            self.rooms
                .name(member.room)
                .is_some_and(|name| self.owner_of(&name) == owner && server_of(&name, servers) == usize::from(server))
        };
        for (&key, _) in self.room_of.iter().filter(|(_, member)| of_owner(member)) {
            conns.close(key, TRY_AGAIN_LATER, ROOM_CLUSTER_LOST, Disconnect::MissedMessages);
        }
    }

    /// Cluster mode, at every shard as a room owner: the subscriber of
    /// Redis server `server` lost it after the messages it sent here so far
    /// were delivered. The members here of the rooms this shard owns on
    /// that server are closed, and every other shard is told to close its
    /// own after this shard's deliveries sent there so far (control lane,
    /// never refused).
    pub(super) fn cluster_rooms_lost(&mut self, server: u16, conns: &mut dyn Conns) {
        self.rooms_lost(self.shard, server, conns);
        let owner = self.shard as u16;
        self.send_to_others(|after| HubMsg::RoomsLost { owner, server, after });
    }

    /// The room's owner could not deliver to this shard: every local member
    /// missed messages, so each is closed (1013) to reconnect. Called once
    /// the deliveries sent before the drop were handled (`inbound.rs`), so
    /// a member gets all of them first: the close is queued behind them.
    pub(super) fn room_gap(&self, room: &str, conns: &mut dyn Conns) {
        let Some(members) = self.rooms.members(room) else {
            return;
        };
        for &key in members {
            conns.close(key as usize, TRY_AGAIN_LATER, ROOM_GAP, Disconnect::MissedMessages);
        }
    }

    /// Cluster mode, at the room's owner: a message from Redis did not fit
    /// in this shard's inbox, after the ones before it were delivered. The
    /// members here are closed, and every other shard is told as if this
    /// shard had dropped its delivery there: after the deliveries sent
    /// there so far (control lane, never refused).
    pub(super) fn cluster_room_gap(&mut self, room: Arc<str>, conns: &mut dyn Conns) {
        self.room_gap(&room, conns);
        self.send_to_others(|after| HubMsg::RoomGap {
            room: Arc::clone(&room),
            after,
        });
    }
}
