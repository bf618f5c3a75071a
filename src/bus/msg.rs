//! Messages between shards (and from the admin thread) about the hub. They
//! travel in the shards' inboxes; a shard handles them in arrival order,
//! which is what keeps each channel's messages in its owner's order.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::history::{Entry, Recover, Recovery};
use super::inbox::Lane;

/// A client command waiting for an answer: which connection, which command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub shard: u16,
    pub key: u32,
    pub generation: u32,
    /// The command's `id`.
    pub id: u64,
}

/// An admin answer that starts with this says the outcome is not known (the
/// publish may or may not have happened: the API answers 504 with the rest
/// as the reason) instead of carrying a JSON result.
pub const OUTCOME_UNKNOWN: &str = "\u{1}outcome unknown: ";

/// Where the answer to a query goes.
#[derive(Debug, Clone)]
pub enum ReplyTo {
    Client(Origin),
    /// The admin API thread, waiting for a JSON document.
    Admin(Sender<String>),
}

/// The owner's answer to a subscribe: the channel's position when the
/// subscription took effect (later publications follow it; `after` says
/// which deliveries to the shard came before it), and the recovered
/// publications if asked.
#[derive(Debug)]
pub struct Confirmation {
    pub channel: Arc<str>,
    pub to: Origin,
    pub epoch: Arc<str>,
    pub offset: u64,
    pub recovery: Recovery,
    /// The user the owner counted, so a subscription that ends before this
    /// answer arrives can be undone exactly.
    pub user: Option<Arc<str>>,
    /// The subscribe made a new channel.
    pub created: bool,
    /// The owner's count of deliveries sent to the subscriber's shard when
    /// this answer was sent (`Deliver::seq`): deliveries up to it were
    /// published before the position, and may still be on their way.
    pub after: u64,
}

/// A subscribe the owner could not answer yet (cluster mode: waiting for
/// the channel's position or history from Redis).
#[derive(Debug, Clone)]
pub struct PendingSubscribe {
    pub from: Origin,
    pub user: Option<Arc<str>>,
    pub recover: Option<Recover>,
    /// False when the connection made its `--max-new-channels-per-minute`:
    /// an existing channel is served, a new one refused (110).
    pub may_create: bool,
}

/// A private message's place in its user's mailbox (`--mailbox-size`):
/// its offset and epoch, as the mailbox channel's owner (or Redis) gave them.
#[derive(Debug, Clone)]
pub struct MailPos {
    pub epoch: Arc<str>,
    pub offset: u64,
}

/// Questions for a channel's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    Presence,
    /// A page of history: after `since` (else the newest `limit`), at most
    /// `limit` publications and `--max-reply-bytes` (`hub::log::page_of`).
    History {
        limit: usize,
        since: Option<u64>,
    },
}

#[derive(Debug)]
pub enum HubMsg {
    /// To a room's owner: order this frame and deliver it everywhere.
    RoomPublish {
        room: Arc<str>,
        frame: Bytes,
        /// When the member's shard read the message (publish-to-deliver latency).
        at: Instant,
    },
    /// From a room's owner: deliver this frame to the local members.
    RoomDeliver {
        room: Arc<str>,
        frame: Bytes,
        at: Instant,
        /// The owner (sending shard).
        from: u16,
        /// Numbered with the owner's channel deliveries (`Deliver::seq`):
        /// a `RoomGap` takes effect after the ones sent before it.
        seq: u64,
    },
    /// To a channel's owner: count the subscriber, answer with the position
    /// (and the recovered publications).
    Subscribe {
        channel: Arc<str>,
        from: Origin,
        user: Option<Arc<str>>,
        recover: Option<Recover>,
        /// See `PendingSubscribe::may_create`.
        may_create: bool,
    },
    /// From the owner: the subscription is in place.
    Subscribed(Confirmation),
    /// To a channel's owner: one subscription fewer, on `shard`.
    Unsubscribe {
        channel: Arc<str>,
        user: Option<Arc<str>>,
        shard: u16,
    },
    /// To a channel's owner: assign an offset, keep, deliver; `data` is raw JSON.
    Publish {
        channel: Arc<str>,
        data: Arc<str>,
        reply: Option<ReplyTo>,
        /// See `PendingSubscribe::may_create`.
        may_create: bool,
        /// Cluster mode: the caller's idempotency key (`Idempotency-Key` of
        /// `/api/publish`): a second publish with it is not delivered again.
        idem: Option<Arc<str>>,
    },
    /// From the owner: a publication frame for the local subscribers.
    Deliver {
        channel: Arc<str>,
        frame: Bytes,
        /// The publication's position, for the gap push if this is dropped.
        offset: u64,
        epoch: Arc<str>,
        /// The owner (sending shard).
        from: u16,
        /// The owner's count of deliveries to this shard, this one included
        /// (any channel; set when sent). Deliveries arrive in this order on
        /// the data lane; the control messages they must be ordered with
        /// (`Subscribed`, `ChannelGap`) carry the count they follow.
        seq: u64,
    },
    /// From a channel's owner (control lane): deliveries of `channel` to this
    /// shard were dropped; its subscribers here have everything up to
    /// `offset` of `epoch` and must recover the rest. It belongs after the
    /// owner's delivery number `after` (`Deliver::seq`), which may still be
    /// on its way: the push waits for it.
    ChannelGap {
        channel: Arc<str>,
        epoch: Arc<str>,
        offset: u64,
        after: u64,
    },
    /// From a room's owner (control lane): deliveries to this shard's
    /// members of `room` were dropped; they are closed so they reconnect,
    /// once the owner's delivery number `after` (`RoomDeliver::seq`, the
    /// last sent before the drop) was handled here: members get every
    /// message sent before the drop, then the close.
    RoomGap {
        room: Arc<str>,
        after: u64,
    },
    /// Cluster mode, from the subscriber of Redis server `server` to a
    /// room's owner (control lane): a `ClusterRoomMessage` of `room` did not
    /// fit in the owner's data lane. After the subscriber's message number
    /// `after` to this shard is handled, the owner closes its members and
    /// tells the other shards (`RoomGap`, in order with its deliveries).
    ClusterRoomGap {
        room: Arc<str>,
        server: u16,
        after: u64,
    },
    /// From the owner: a batch of joins and leaves for local watchers.
    PresenceEvents {
        channel: Arc<str>,
        frame: Bytes,
    },
    /// To a channel's owner: presence or history.
    Query {
        channel: Arc<str>,
        query: Query,
        reply: ReplyTo,
    },
    /// An answer for a client command (a whole reply document).
    Answer {
        to: Origin,
        body: Vec<u8>,
        /// The command made a new channel (counted against the
        /// connection's `--max-new-channels-per-minute`).
        created: bool,
    },
    /// To every shard: deliver to the local connections of `user`.
    UserMessage {
        user: Arc<str>,
        frame: Bytes,
        /// From the owner of `user`'s mailbox: the message's place in it
        /// (each connection gets a mailbox offset once; `hub/mailbox.rs`).
        mail: Option<MailPos>,
    },
    /// From the admin API (`POST /api/send`), to any shard: a private
    /// message to `user`; the JSON answer goes to `reply` (dropped: not done).
    SendUser {
        user: Arc<str>,
        data: Arc<str>,
        reply: Sender<String>,
    },
    /// To a user's owner shard: a connection of theirs opened or closed.
    UserOnline {
        user: Arc<str>,
        conn: Origin,
        /// When the connection upgraded: the owner's "oldest" for
        /// `--max-connections-per-user` is by this, not by arrival order.
        since: Instant,
    },
    UserOffline {
        user: Arc<str>,
        conn: Origin,
    },
    /// Close one connection (single sign-on kick).
    Kick {
        conn: Origin,
        code: u16,
        reason: Arc<str>,
    },
    /// To every shard: close every connection of `user`; `reply` (the
    /// admin API) gets how many connections this shard closed.
    DisconnectUser {
        user: Arc<str>,
        code: u16,
        reason: Arc<str>,
        reply: Option<Sender<String>>,
    },
    /// To every shard: close every connection whose token's `jti` is
    /// `token_id`; `reply` (the admin API) gets how many this shard closed.
    DisconnectToken {
        token_id: Arc<str>,
        code: u16,
        reason: Arc<str>,
        reply: Option<Sender<String>>,
    },
    /// To every shard (admin API): the channels it owns, as a JSON array.
    ListChannels {
        reply: Sender<String>,
    },
    /// To every shard (admin API): `user`'s local connections, as a JSON array.
    ListConnections {
        user: Arc<str>,
        reply: Sender<String>,
    },
    /// Cluster mode, to a room's owner: a room message in Redis's order
    /// (from any node, this one's included); the owner delivers it as
    /// `RoomPublish` does, and never sends it to Redis again.
    ClusterRoomMessage {
        room: Arc<str>,
        frame: Bytes,
        /// The subscriber (Redis server) that sent it.
        server: u16,
        /// That subscriber's count of room messages to this shard, this
        /// one included (see `ClusterRoomGap`).
        seq: u64,
    },
    /// Cluster mode, from the subscriber of Redis server `server` to every
    /// shard (control lane): its connection failed, so room messages from
    /// then on (until it is back) are lost to this node's room members.
    /// Once the subscriber's message number `after` to this shard is
    /// handled, the shard closes (1013) its members of the rooms it owns
    /// that `server` holds (`server_of`: only their messages come from this
    /// subscriber) and tells the other shards (`RoomsLost`, in order with
    /// its deliveries): every member gets what came before the loss, then
    /// the close.
    ClusterRoomsLost {
        server: u16,
        after: u64,
    },
    /// Cluster mode, from a room owner (control lane): once its delivery
    /// number `after` to this shard is handled, close (1013) the members
    /// here of the rooms `owner` owns that Redis server `server` holds (see
    /// `ClusterRoomsLost`).
    RoomsLost {
        owner: u16,
        server: u16,
        after: u64,
    },
    /// Cluster mode, to a channel's owner: a publication sequenced by
    /// Redis (every node gets every channel's in one order).
    ClusterPublication {
        channel: Arc<str>,
        epoch: Arc<str>,
        offset: u64,
        data: Arc<str>,
    },
    /// Cluster mode, to a channel's owner: its epoch and last offset in
    /// Redis (`None`: Redis could not say; the waiting subscribes fail).
    ClusterSynced {
        channel: Arc<str>,
        epoch: Option<(Arc<str>, u64)>,
        why: super::cluster::SyncFor,
    },
    /// Cluster mode, to a channel's owner: Redis's history after the
    /// subscriber's offset (`None`: unreachable).
    ClusterRecovered {
        channel: Arc<str>,
        epoch: Option<Arc<str>>,
        entries: Option<Vec<Entry>>,
        sub: Box<PendingSubscribe>,
    },
    /// From a channel's owner: the subscribe could not be done (cluster
    /// link down); undo it and answer `108`.
    SubscribeFailed {
        channel: Arc<str>,
        to: Origin,
        code: u16,
        message: &'static str,
    },
    /// From a proxy worker (control lane): the application's answer to a
    /// hook call of a connection of this shard.
    ProxyAnswered(Box<super::proxy::ProxyAnswered>),
    /// Cluster mode, from a channel's owner to the shard holding the
    /// node's subscriber connection of its Redis server: the owner made
    /// the channel's log; subscribe to it, then ask Redis for its position
    /// for the owner (`ShardRedis::listen`).
    ClusterListen {
        channel: Arc<str>,
        owner: u16,
    },
    /// Cluster mode, likewise: the owner dropped the channel's log.
    ClusterUnlisten {
        channel: Arc<str>,
    },
    /// From the cluster bridge (control lane): a connection to Redis for
    /// this shard's own publishes, which it asked for (`ClusterCmd::Dial`).
    RedisLink(super::cluster::RedisLink),
}

impl HubMsg {
    /// To `channel`'s owner: its position could not be read from Redis (the
    /// subscribes waiting for it fail with 108).
    pub fn unsynced(channel: Arc<str>, why: super::cluster::SyncFor) -> HubMsg {
        HubMsg::ClusterSynced {
            channel,
            epoch: None,
            why,
        }
    }

    /// The inbox lane this message travels in (see `shard::inbox`): message
    /// volume (deliveries, room publishes, cluster publications) may be
    /// dropped under overload; everything a command or an event waits on is
    /// control and never dropped.
    pub(crate) fn lane(&self) -> Lane {
        match self {
            HubMsg::RoomPublish { .. }
            | HubMsg::RoomDeliver { .. }
            | HubMsg::Deliver { .. }
            | HubMsg::PresenceEvents { .. }
            | HubMsg::UserMessage { .. }
            | HubMsg::ClusterPublication { .. }
            | HubMsg::ClusterRoomMessage { .. } => Lane::Data,
            _ => Lane::Control,
        }
    }
}
