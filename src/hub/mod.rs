//! The messaging hub of one shard: rooms (and, later, channels and users),
//! their local members, and delivery across shards through the inboxes.
//!
//! Order: every room has one owner shard (a hash of its name). A message is
//! published by its owner: the member's shard forwards it there if needed;
//! the owner delivers it to its own members and sends the same bytes to every
//! other shard. Each shard receives a room's messages from one sender, the
//! owner, through a FIFO inbox, so every member on every shard sees the
//! room's messages in the same order.
//!
//! Fan-out: a frame is encoded once (`Bytes`), pushed by reference onto each
//! member's queue, and every member touched in a loop turn is flushed once at
//! the end of the turn (one `writev` for all it got). A full inbox counts a
//! drop rather than blocking the publishing shard.

pub mod auth;
pub mod pattern;
pub mod room;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;
use tracing::debug;

use crate::conn::{Conn, Ctx, Outgoing};
use crate::route::Route;
use crate::shard::inbox::{ShardHandle, ShardMsg};
use room::Rooms;

/// One shard's share of the hub.
pub struct Hub {
    shard: usize,
    peers: Arc<[ShardHandle]>,
    rooms: Rooms,
    /// Connections with queued broadcast bytes, flushed at the end of the turn.
    pub dirty: Vec<usize>,
}

impl Hub {
    pub fn new(shard: usize, peers: Arc<[ShardHandle]>) -> Hub {
        Hub {
            shard,
            peers,
            rooms: Rooms::default(),
            dirty: Vec::new(),
        }
    }

    /// The shard that orders a room's (or channel's) messages.
    pub fn owner_of(&self, name: &str) -> usize {
        owner_of(name, self.peers.len())
    }

    /// Acts on what the connection just driven asked for.
    pub fn handle_outbox(&mut self, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let mut outbox = std::mem::take(&mut ctx.outbox);
        for item in outbox.drain(..) {
            match item {
                Outgoing::Join { key, name } => {
                    let index = self.rooms.join(&name, key);
                    if let Some(conn) = conns.get_mut(key) {
                        conn.route = Some(Route::Room(index));
                    }
                }
                Outgoing::RoomMessage { key, frame } => self.room_message(key, frame, conns, ctx),
            }
        }
        ctx.outbox = outbox;
    }

    fn room_message(&mut self, key: usize, frame: Bytes, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Some(Route::Room(index)) = conns.get(key).and_then(|c| c.route()) else {
            return;
        };
        let Some(name) = self.rooms.name(index) else { return };
        ctx.stats.messages_in_rooms += 1;
        let owner = self.owner_of(&name);
        if owner == self.shard {
            self.publish_room(name, frame, conns, ctx);
        } else {
            self.send(owner, ShardMsg::RoomPublish { room: name, frame }, ctx);
        }
    }

    /// At the owner: deliver here, then to every other shard.
    fn publish_room(&mut self, name: Arc<str>, frame: Bytes, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        self.deliver_room(&name, &frame, conns, ctx);
        for shard in 0..self.peers.len() {
            if shard != self.shard {
                self.send(
                    shard,
                    ShardMsg::RoomDeliver {
                        room: Arc::clone(&name),
                        frame: frame.clone(),
                    },
                    ctx,
                );
            }
        }
    }

    fn deliver_room(&mut self, name: &str, frame: &Bytes, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Some(members) = self.rooms.members(name) else {
            return;
        };
        for &key in members {
            if let Some(conn) = conns.get_mut(key as usize) {
                if conn.queue_shared(frame.clone(), ctx) {
                    self.dirty.push(key as usize);
                }
            }
        }
    }

    /// Handles a hub message from another shard.
    pub fn on_message(&mut self, msg: ShardMsg, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        match msg {
            ShardMsg::RoomPublish { room, frame } => self.publish_room(room, frame, conns, ctx),
            ShardMsg::RoomDeliver { room, frame } => self.deliver_room(&room, &frame, conns, ctx),
            ShardMsg::Shutdown => debug!(shard = self.shard, "shutdown is the shard's business"),
        }
    }

    /// A connection is going away: take it out of its room.
    pub fn leave(&mut self, key: usize, conn: &Conn) {
        if let Some(Route::Room(index)) = conn.route() {
            self.rooms.leave(index, key);
        }
    }

    fn send(&self, shard: usize, msg: ShardMsg, ctx: &mut Ctx) {
        if self.peers[shard].send(msg).is_err() {
            ctx.stats.inbox_drops += 1;
        }
    }
}

/// A stable hash of `name` onto `shards` (same answer on every shard).
pub fn owner_of(name: &str, shards: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_of("lobby", 4), owner_of("lobby", 4));
        let owners: std::collections::HashSet<usize> = (0..64).map(|i| owner_of(&format!("room{i}"), 4)).collect();
        assert_eq!(owners.len(), 4);
        assert_eq!(owner_of("anything", 1), 0);
    }
}
