//! The messaging hub of one shard: rooms, channels, users, and delivery
//! across shards through the inboxes.
//!
//! Order: every room and channel has one owner shard (a hash of its name).
//! Messages are published by the owner: a member's shard forwards them there;
//! the owner assigns the channel offset, keeps history, delivers to its own
//! members and sends the same encoded frame to the other shards. Each shard
//! receives a channel's frames from one sender, the owner, through a FIFO
//! inbox, so every subscriber on every shard sees one order. Subscribing also
//! goes through the owner. Its answer travels the control lane, its
//! publications the data lane, so the answer may overtake publications its
//! position already covers: deliveries are numbered per receiving shard
//! (`send`), the answer says how many were sent before it, and the
//! subscriber waits aside until the first delivery past that
//! (`groups::Waiting`); a gap report is put back in place the same way
//! (`inbound.rs`). The inbox never lets a delivery overtake a control message
//! sent before it (`bus::inbox::Inbox::next`). So a subscriber misses
//! nothing and gets nothing twice.
//!
//! One narrow interface: the shard calls the hub, the hub never calls the
//! shard back. Its inputs are explicit arguments (which connection upgraded,
//! sent a room message or a command, went away; a message from the inbox;
//! the end of a loop turn), and all it may do to connections goes through
//! [`Conns`]: queue a frame, close one, look up a generation. It sends to
//! other shards only through `bus::Peers`. The files, by concern:
//! `lifecycle.rs` (a connection arrives and leaves), `rooms.rs`,
//! `commands.rs` (the `/ws` commands and their answers), `inbound.rs`
//! (messages from the inbox), `proxy.rs` (the application's hooks: calls
//! handed to the proxy workers, their answers), `owner.rs` (what this shard owns: channel logs
//! and users, pure bookkeeping), `frame.rs` (frames, each written once).
//!
//! Fan-out: a frame is encoded once (`Bytes`), queued by reference for each
//! member, and the shard flushes every connection touched in a loop turn
//! once at the end of the turn. A full data lane counts a drop rather than
//! blocking the publishing shard, and the receiver is told of the gap. See
//! `docs/MESSAGE.md` and `docs/PROTOCOL.md`.

mod centrifuge;
mod commands;
pub mod config;
mod events;
pub mod frame;
pub(crate) mod groups;
mod inbound;
mod lifecycle;
pub mod log;
pub(crate) mod mailbox;
pub mod owner;
pub mod protocol;
mod proxy;
mod rooms;
pub mod session;
mod tokens;
mod users;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::buf::{MemoryBudget, Meter};
use crate::bus::cluster::{listener_shard, server_of, ClusterLink};
use crate::bus::msg::HubMsg;
use crate::bus::peers::Peers;
use crate::metrics::disconnect::Disconnect;
use crate::metrics::stats::ShardStats;
use crate::route::Route;
use crate::tick::TICKS_PER_SEC;
use config::HubConfig;
use frame::text_frame;
use groups::Groups;
use owner::Owned;
use session::Session;
use users::Users;

/// What the hub needs of its shard's connections, and all it may do to
/// them. The shard implements it over its slab; the hub's unit tests with a
/// fake. A key the shard no longer holds is ignored by every method.
pub(crate) trait Conns {
    /// Queues `frame` (shared, never copied) for the open connection at
    /// `key`; the shard writes it at the end of the loop turn. Ignored for a
    /// connection that is not open.
    fn queue(&mut self, key: usize, frame: Bytes);
    /// Closes the open connection at `key` with `code` and `reason`, counted
    /// under `why` (a `/ws` client first gets a `disconnect` push).
    fn close(&mut self, key: usize, code: u16, reason: &str, why: Disconnect);
    /// The generation of the connection at `key`, if there is one.
    fn generation(&self, key: usize) -> Option<u32>;
    /// Whether the connection at `key` is open (upgraded, not closing).
    fn is_open(&self, key: usize) -> bool;
    /// What an operator is shown of the connection at `key`.
    fn facts(&self, key: usize) -> Option<ConnFacts>;
    /// The shard's timer tick (`tick.rs`).
    fn tick(&self) -> u32;
    /// The wall clock in Unix seconds, as of the current tick (token `exp`).
    fn now_unix(&self) -> u64;
    /// The shard's counters.
    fn stats(&mut self) -> &mut ShardStats;
}

/// A connection as `/api/connections` shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnFacts {
    pub route: Option<Route>,
    /// Ticks: when the current phase began, the last byte read and written.
    pub phase_since: u32,
    pub last_read: u32,
    pub last_write: u32,
    pub queued_bytes: usize,
}

/// One shard's share of the hub.
pub(crate) struct Hub {
    shard: usize,
    peers: Peers,
    config: Arc<HubConfig>,
    /// Frames of 4 KiB or more are charged here while held.
    budget: Arc<MemoryBudget>,
    rooms: Groups,
    /// The room and sending rate of each room connection (kept here so
    /// `Conn` stays small).
    room_of: HashMap<usize, rooms::RoomMember>,
    /// Local subscribers of each channel.
    channels: Groups,
    /// Local subscribers that asked for join/leave events.
    watchers: Groups,
    /// Per-connection state of `/ws` and authenticated connections.
    sessions: HashMap<usize, Session>,
    /// Local connections of each user (O(1) per connect and disconnect).
    users: Users<usize>,
    /// Token deadlines (`exp`) and ids (`jti`) of local connections.
    lifetimes: tokens::Lifetimes,
    /// What this shard owns: channel logs and per-user connection lists.
    owned: Owned,
    /// Cluster mode: the Redis bridge (`None`: this node runs alone).
    cluster: Option<ClusterLink>,
    /// The application hooks' workers (`None`: no `--proxy-*-url`).
    proxy: Option<crate::bus::proxy::ProxyLink>,
    /// Cluster mode: this shard's own connections to Redis for the
    /// publishes it orders (where the server is reached over plain TCP).
    direct: Option<Box<dyn crate::bus::cluster::ShardRedis>>,
    /// (shard, channel) whose deliveries were dropped and reported as a
    /// gap, until a delivery of it gets through again or a subscriber joins
    /// there: one gap message per run of drops, so the control lane stays
    /// bounded.
    gaps: HashSet<(usize, Arc<str>)>,
    /// The same for rooms (a room and a channel may share a name), with one
    /// more end to a run: each tick. A room member joins on its own shard
    /// without the owner knowing, so one that joined after the report was
    /// handled there would miss the rest of the run untold. So each run
    /// keeps the point of its last drop (`RoomRun`): when that is past the
    /// reported one (deliveries of other rooms or channels got through in
    /// between, members may have joined), it is reported again, as a
    /// `RoomGap` after that point, at the tick or before the delivery that
    /// ends the run, whichever comes first (the control lane stays bounded:
    /// at most two reports per run and tick).
    room_gaps: HashMap<(usize, Arc<str>), RoomRun>,
    /// `/connection/websocket` connections waiting for their `connect`.
    connecting: centrifuge::Connecting,
    /// Channel and room deliveries this shard (as owner) got into each
    /// shard's data lane so far: the last `Deliver::seq` sent there.
    delivered_to: Vec<u64>,
    /// The last `Deliver::seq` (or `RoomDeliver::seq`) handled here from
    /// each owner shard; past the shards, cluster mode: the last
    /// `ClusterRoomMessage::seq` from each Redis server's subscriber
    /// (grown on first use, `inbound::Hub::sender`).
    delivered_from: Vec<u64>,
    /// Gap pushes that arrived (control lane) ahead of deliveries sent
    /// before them, until those are handled (`inbound.rs`).
    early_gaps: Vec<inbound::EarlyGap>,
    /// Subscribe answers and gap reports that had to wait for deliveries,
    /// counted as they arrived (their order on the control lane).
    arrivals: u64,
}

/// Which of the shard's groups a delivery goes to.
#[derive(Clone, Copy)]
enum Target {
    Room,
    Channel,
    Watchers,
}

impl Hub {
    pub fn new(shard: usize, peers: Peers, config: Arc<HubConfig>, cluster: Option<ClusterLink>, meter: Meter) -> Hub {
        let shards = peers.len();
        let wanted = cluster.as_ref().map(ClusterLink::wanted);
        Hub {
            cluster,
            proxy: None,
            direct: None,
            budget: Arc::clone(meter.budget()),
            owned: Owned::new(shard, Arc::clone(&config), meter).wanting(wanted),
            shard,
            peers,
            config,
            rooms: Groups::default(),
            room_of: HashMap::new(),
            channels: Groups::default(),
            watchers: Groups::default(),
            sessions: HashMap::new(),
            users: Users::default(),
            lifetimes: tokens::Lifetimes::default(),
            gaps: HashSet::new(),
            room_gaps: HashMap::new(),
            connecting: centrifuge::Connecting::default(),
            delivered_to: vec![0; shards],
            delivered_from: vec![0; shards],
            early_gaps: Vec::new(),
            arrivals: 0,
        }
    }

    /// The shard that orders a room's or channel's messages (or tracks a user).
    pub fn owner_of(&self, name: &str) -> usize {
        self.peers.owner_of(name)
    }

    /// End of a loop turn: push batched presence events; expire history
    /// (once a second, when `ticked`); report the hub's gauges.
    pub(crate) fn end_turn(&mut self, ticked: bool, conns: &mut dyn Conns) {
        let mut cluster = Vec::new();
        for (channel, frame, shards) in self.owned.presence_events(&mut cluster) {
            self.deliver(Target::Watchers, &channel, &frame, conns);
            let here = self.shard;
            for shard in shards.into_iter().filter(|&s| s != here) {
                let msg = HubMsg::PresenceEvents {
                    channel: Arc::clone(&channel),
                    frame: frame.clone(),
                };
                self.send(shard, msg);
            }
        }
        for cmd in cluster {
            // At most once: a full queue is a counted drop.
            self.cluster_send(cmd, conns);
        }
        if let Some(direct) = &mut self.direct {
            let mut answers = Vec::new();
            direct.end_turn(ticked, &mut answers);
            self.route_all(answers, conns);
        }
        if ticked {
            self.token_deadlines(conns);
            self.connect_deadlines(conns);
            // A room's run of drops is reported again from the next tick on
            // (see `room_gaps`), the drops since its report first.
            for ((shard, room), run) in std::mem::take(&mut self.room_gaps) {
                if run.dropped > run.reported {
                    let _ = self.peers.to(
                        shard,
                        HubMsg::RoomGap {
                            room,
                            after: run.dropped,
                        },
                    );
                }
            }
        }
        let tick = conns.tick();
        if ticked && tick.is_multiple_of(TICKS_PER_SEC) {
            self.owned.expire(tick);
        }
        self.unlisten_dropped(conns);
        let stats = conns.stats();
        stats.channels = self.owned.channels() as u64;
        stats.users = self.users.len() as u64;
        stats.inbox_drops = self.peers.dropped();
    }

    /// Whether `channel`'s publications reach this node by name, subscribed
    /// through `ShardRedis::listen` while it keeps a log: on a server the
    /// shards reach over plain TCP (`direct`), and not a mailbox (those
    /// come by pattern, to their user's connections, with no log).
    fn listened_by_name(&self, channel: &str, server: usize) -> bool {
        let direct = self.direct.as_ref().is_some_and(|direct| direct.serves(server));
        direct && mailbox::user_of(channel).is_none()
    }

    /// Cluster mode: the channels whose log this shard dropped are no
    /// longer subscribed to by name (the listener keeps a channel whose log
    /// was made again meanwhile, so the order of this and a later `listen`
    /// does not matter).
    fn unlisten_dropped(&mut self, conns: &mut dyn Conns) {
        let Some(link) = &self.cluster else { return };
        let servers = link.servers();
        for channel in self.owned.take_dropped() {
            let server = server_of(&channel, servers);
            if self.listened_by_name(&channel, server) {
                let listener = listener_shard(server, self.peers.len());
                self.route_to(listener, HubMsg::ClusterUnlisten { channel }, conns);
            }
        }
    }

    /// Memory pressure: trims the history this shard owns, oldest first,
    /// by about `bytes`; returns how many publications were dropped.
    pub(crate) fn trim_history(&mut self, bytes: u64) -> usize {
        self.owned.trim_history(bytes)
    }

    /// Queues `frame` for every local member of `name` in the chosen groups.
    fn deliver(&self, target: Target, name: &str, frame: &Bytes, conns: &mut dyn Conns) {
        let groups = match target {
            Target::Room => &self.rooms,
            Target::Channel => &self.channels,
            Target::Watchers => &self.watchers,
        };
        let Some(members) = groups.members(name) else { return };
        // Framed for Centrifuge members at most once, when the first is met.
        let mut centrifuge = None;
        for &member in members {
            self.queue_member(member as usize, frame, &mut centrifuge, conns);
        }
    }

    /// Queues a reply or push for one connection, in its session's protocol.
    fn send_to(&self, key: usize, json: &[u8], conns: &mut dyn Conns) {
        if let Some(session) = self.sessions.get(&key).filter(|s| s.proto.is_centrifuge()) {
            return self.centrifuge_send(key, session.generation, json, conns);
        }
        conns.queue(key, text_frame(json, &self.budget));
    }

    /// Closes a connection from the hub, counted by its code: 4001 as
    /// replaced, 1008 as a protocol error, anything else as a kick.
    fn close(&self, key: usize, code: u16, reason: &str, conns: &mut dyn Conns) {
        let why = match code {
            config::CLOSE_REPLACED => Disconnect::Replaced,
            crate::ws::close::POLICY_VIOLATION => Disconnect::ProtocolError,
            _ => Disconnect::Kicked,
        };
        conns.close(key, code, reason, why);
    }

    /// Sends to the owner of `name`, or handles it here if that is us.
    fn route_to_owner(&mut self, name: &Arc<str>, msg: HubMsg, conns: &mut dyn Conns) {
        let owner = self.owner_of(name);
        self.route_to(owner, msg, conns);
    }

    /// Sends to `shard`, or handles it here if that is us.
    fn route_to(&mut self, shard: usize, msg: HubMsg, conns: &mut dyn Conns) {
        if shard == self.shard {
            self.on_message(msg, conns);
        } else {
            self.send(shard, msg);
        }
    }

    /// Sends one message made by `make` to every other shard; `make` gets
    /// the number of the last delivery sent to that shard (for a control
    /// message that must follow them: `RoomGap`, `RoomsLost`).
    fn send_to_others(&mut self, mut make: impl FnMut(u64) -> HubMsg) {
        for shard in 0..self.peers.len() {
            if shard != self.shard {
                let msg = make(self.delivered_to[shard]);
                self.send(shard, msg);
            }
        }
    }

    /// Sends `msg` to `shard` in its lane; false when the data lane was full
    /// and the message dropped (counted). A dropped delivery is reported to
    /// the receiver as a gap on the control lane, once per run of drops.
    ///
    /// Channel and room deliveries are numbered per receiving shard here, and the
    /// control messages that must fall between two of them (a subscribe's
    /// answer, a gap) carry the number of the last one sent before them, so
    /// the receiver can put them back in order (`Inbox::next` covers the
    /// other direction).
    fn send(&mut self, shard: usize, mut msg: HubMsg) -> bool {
        let numbered = match &mut msg {
            HubMsg::Deliver { seq, .. } | HubMsg::RoomDeliver { seq, .. } => {
                *seq = self.delivered_to[shard] + 1;
                Some(*seq)
            }
            HubMsg::Subscribed(confirmation) => {
                confirmation.after = self.delivered_to[shard];
                // In a run of dropped deliveries the receiver was told once,
                // before this subscriber was there: the next drop is
                // reported again, for it.
                if !self.gaps.is_empty() {
                    self.gaps.remove(&(shard, Arc::clone(&confirmation.channel)));
                }
                None
            }
            _ => None,
        };
        let sent = self.send_counted(shard, msg);
        if let Some(seq) = numbered.filter(|_| sent) {
            self.delivered_to[shard] = seq;
        }
        sent
    }

    fn send_counted(&mut self, shard: usize, msg: HubMsg) -> bool {
        let reported = match &msg {
            HubMsg::Deliver { channel: name, .. } if !self.gaps.is_empty() => Some((false, Arc::clone(name))),
            HubMsg::RoomDeliver { room: name, .. } if !self.room_gaps.is_empty() => Some((true, Arc::clone(name))),
            _ => None,
        };
        if let Some((true, room)) = &reported {
            // Drops of the run after its report: told before this delivery
            // (which may end the run) can be handled there.
            if let Some(run) = self.room_gaps.get_mut(&(shard, Arc::clone(room))) {
                if run.dropped > run.reported {
                    run.reported = run.dropped;
                    let gap = HubMsg::RoomGap {
                        room: Arc::clone(room),
                        after: run.dropped,
                    };
                    let _ = self.peers.to(shard, gap);
                }
            }
        }
        let Err(msg) = self.peers.to(shard, msg) else {
            match reported {
                // A delivery got through again: the next drop is a new gap.
                Some((false, name)) => drop(self.gaps.remove(&(shard, name))),
                Some((true, name)) => drop(self.room_gaps.remove(&(shard, name))),
                None => {}
            }
            return true;
        };
        let after = self.delivered_to[shard];
        let gap = match msg {
            HubMsg::Deliver {
                channel, epoch, offset, ..
            } => {
                if !self.gaps.insert((shard, Arc::clone(&channel))) {
                    return false;
                }
                HubMsg::ChannelGap {
                    channel,
                    epoch,
                    offset: offset.saturating_sub(1),
                    after,
                }
            }
            HubMsg::RoomDeliver { room, .. } => match self.room_gaps.entry((shard, Arc::clone(&room))) {
                Entry::Occupied(mut run) => {
                    run.get_mut().dropped = after;
                    return false;
                }
                Entry::Vacant(run) => {
                    run.insert(RoomRun {
                        reported: after,
                        dropped: after,
                    });
                    HubMsg::RoomGap { room, after }
                }
            },
            _ => return false,
        };
        // Control lane: fails only if the shard is gone.
        let _ = self.peers.to(shard, gap);
        false
    }
}

/// A run of dropped deliveries of one room to one shard (`Hub::room_gaps`):
/// the owner's delivery number there (`RoomDeliver::seq`) its last report
/// took effect after, and the one its last drop came after.
#[derive(Debug)]
struct RoomRun {
    reported: u64,
    dropped: u64,
}

#[cfg(test)]
mod tests;
