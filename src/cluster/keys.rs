//! Redis key names and the Lua scripts that keep a channel's epoch, offset
//! and history consistent (each script runs atomically, so every node sees
//! one order per channel).
//!
//! Per channel `C`: `hubbub:c:C:e` epoch, `hubbub:c:C:o` last offset,
//! `hubbub:c:C:s` stream of publications with id `OFFSET-0` and fields
//! `d` (data) and `t` (publish time, ms). Publications travel on the Pub/Sub channel
//! `hubbub:pub:C` as `EPOCH\nOFFSET\nDATA`. Per node `N`: `hubbub:n:N:p`
//! (presence) and `hubbub:n:N:u` (connections), see `mirror`. Nodes:
//! `hubbub:nodes`, a hash `NODE -> CONNECTIONS|HEARTBEAT_MS`. Control
//! messages between nodes: Pub/Sub `hubbub:ctl`. Idempotency:
//! `hubbub:i:n:NODE:INCARNATION:BUCKET` (one writer's recent publishes by
//! sequence, `publish::IDEM_BUCKET` sequences per hash) and
//! `hubbub:i:k:C:KEY` (a caller's key). Room messages travel on the Pub/Sub channel
//! `hubbub:room:ROOM` as the server frame itself (binary-safe, opcode kept),
//! with no history and no offset. A channel's joins and leaves travel on its
//! `hubbub:pub:C` too, as `~NODE\nJSON` (`PRESENCE_MARK`; an epoch is hex,
//! so a publication never starts with it), not stored anywhere.

/// How long a channel's epoch and offset outlive its last publication.
pub(crate) const CHANNEL_KEYS_TTL_SECS: u64 = 86_400;
pub(crate) const PUB_PREFIX: &str = "hubbub:pub:";
/// Every channel's publications: the subscriber thread of a `rediss://`
/// server listens to all of them (a shard's subscriber connection
/// subscribes to each channel with a log on the node by name instead).
pub(crate) const PUB_PATTERN: &str = "hubbub:pub:*";
/// Every mailbox's publications (`hubbub:pub:` + `mailbox::PREFIX`): a
/// user's connections get them on whatever node they are, with no log.
pub(crate) const MAILBOX_PATTERN: &str = "hubbub:pub:#mailbox:*";
pub(crate) const ROOM_PREFIX: &str = "hubbub:room:";
pub(crate) const ROOM_PATTERN: &str = "hubbub:room:*";
/// First byte of a presence message on a channel's Pub/Sub.
pub(crate) const PRESENCE_MARK: char = '~';
pub(crate) const CONTROL: &str = "hubbub:ctl";
pub(crate) const NODES: &str = "hubbub:nodes";

pub fn epoch(channel: &str) -> String {
    format!("hubbub:c:{channel}:e")
}

pub fn offset(channel: &str) -> String {
    format!("hubbub:c:{channel}:o")
}

pub fn stream(channel: &str) -> String {
    format!("hubbub:c:{channel}:s")
}

pub fn publications(channel: &str) -> String {
    format!("{PUB_PREFIX}{channel}")
}

/// A channel's joins and leaves on `node` as its Pub/Sub carries them.
pub fn presence_message(node: &str, json: &[u8]) -> String {
    format!("{PRESENCE_MARK}{node}\n{}", String::from_utf8_lossy(json))
}

/// The node and JSON of a presence message, if `payload` is one.
pub(crate) fn parse_presence(payload: &str) -> Option<(&str, &str)> {
    payload.strip_prefix(PRESENCE_MARK)?.split_once('\n')
}

/// The Pub/Sub channel of room `room`'s messages.
pub fn room(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// One writer's recent publishes by sequence (`SEQ -> EPOCH\nOFFSET`), for
/// retries after an ambiguous failure; a fresh incarnation per writer and
/// start, one hash per `bucket` of sequences (dropped whole once it left
/// the window).
pub fn idem_node(node: &str, incarnation: u64, bucket: u64) -> String {
    format!("hubbub:i:n:{node}:{incarnation:x}:{bucket:x}")
}

/// A caller's idempotency key (`Idempotency-Key` of `/api/publish`).
pub fn idem_caller(channel: &str, key: &str) -> String {
    format!("hubbub:i:k:{channel}:{key}")
}

/// This node's presence: CHANNEL -> JSON `{USER: COUNT}` (see `mirror`).
pub fn node_presence(node: &str) -> String {
    format!("hubbub:n:{node}:p")
}

/// This node's connections: USER -> JSON `[[MEMBER, CONNECT_MS]...]`.
pub fn node_users(node: &str) -> String {
    format!("hubbub:n:{node}:u")
}

/// KEYS: epoch, offset, stream, idempotency key, and in modes `n` and `r`
/// optionally a fifth: a record hash that left the window, dropped whole
/// (`UNLINK`; measured on Redis 7.0 at about 26 us for a hash of 1,024
/// records, in proportion to its size). ARGV: new epoch, data,
/// history size, pub/sub channel, keys TTL secs, now ms, stream TTL secs,
/// then the idempotency mode: `n` or `r` (KEYS[4] is the writer's record
/// hash of this sequence, field ARGV[9]) or `k` (KEYS[4] is the caller's
/// key); ARGV[10] `c` when this writer's turn to refresh the channel's key
/// TTLs came (`publish::Writer::refresh_due`: a writer refreshes them once
/// a period, not per publish); ARGV[11] the record's TTL; ARGV[12] `1` when
/// the publish may make the channel. Every mode looks the record up first,
/// a first try (`n`) as much as a retry (`r`, written to Redis before): a
/// first try may reach Redis after its retry did (sent on a connection the
/// node gave up on, delivered late by the network or a proxy), and must
/// then publish nothing. The drop runs first, whatever the outcome: a
/// refused or repeated publish carries its share too. A key this script
/// makes gets its TTL at once, whoever's turn it is: the epoch and offset
/// when the offset starts again at 1 (the channel made, or its offset
/// dropped by `SYNC`), the stream whenever `XADD` made it (`NOMKSTREAM`
/// first: a stream can be gone while the offset lives, expired, evicted
/// or deleted by hand). Needs Redis 6.2 or later.
/// Returns `{epoch, offset, 0, MADE}` (MADE 1: the channel was made), or
/// `{epoch, offset, 1, 0}` for a publish that already ran (nothing is
/// published again), or `{'', 0, 2, 0}`: refused, the channel does not exist
/// and the publish may not make it.
pub(crate) const PUBLISH: &str = r#"
if ARGV[8] ~= 'k' and KEYS[5] then
  redis.call('UNLINK', KEYS[5])
end
local seen
if ARGV[8] == 'k' then
  seen = redis.call('GET', KEYS[4])
else
  seen = redis.call('HGET', KEYS[4], ARGV[9])
end
if seen then
  local e, o = string.match(seen, '^(.*)\n(%d+)$')
  return {e, tonumber(o), 1, 0}
end
local made = 0
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  if ARGV[12] ~= '1' then
    return {'', 0, 2, 0}
  end
  made = 1
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local offset = redis.call('INCR', KEYS[2])
local refresh = ARGV[10] == 'c' or offset == 1
if refresh then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
if tonumber(ARGV[3]) > 0 then
  local id = offset .. '-0'
  local added = redis.call('XADD', KEYS[3], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[2], 't', ARGV[6])
  if not added then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[2], 't', ARGV[6])
  end
  if refresh or not added then
    redis.call('EXPIRE', KEYS[3], ARGV[7])
  end
end
redis.call('PUBLISH', ARGV[4], epoch .. '\n' .. offset .. '\n' .. ARGV[2])
local mark = epoch .. '\n' .. offset
if ARGV[8] ~= 'k' then
  redis.call('HSET', KEYS[4], ARGV[9], mark)
  redis.call('EXPIRE', KEYS[4], ARGV[11])
else
  redis.call('SET', KEYS[4], mark, 'EX', ARGV[11])
end
return {epoch, offset, 0, made}
"#;

/// KEYS: epoch, offset, stream. ARGV: new epoch, keys TTL secs, then
/// optionally an epoch and offset a node has seen. Returns `{epoch,
/// offset}`, creating the epoch if the channel has none, or if its offset
/// is behind what was seen under the same epoch (Redis went back to an
/// older snapshot: those offsets must never name two publications).
pub(crate) const SYNC: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if epoch and ARGV[3] and epoch == ARGV[3] and tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[4]) then
  epoch = false
end
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch, 'EX', ARGV[2])
  redis.call('DEL', KEYS[2], KEYS[3])
end
return {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
"#;

/// KEYS: epoch, offset, stream. ARGV: first stream id, count (0: all).
/// Returns `{epoch or false, offset, entries}`.
pub(crate) const READ: &str = r#"
local epoch = redis.call('GET', KEYS[1])
local offset = tonumber(redis.call('GET', KEYS[2]) or '0')
local entries
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XREVRANGE', KEYS[3], '+', ARGV[1], 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[3], ARGV[1], '+')
end
return {epoch, offset, entries}
"#;

/// KEYS: this node's users hash, then the other live nodes'. ARGV: user,
/// this node's value for the user, TTL secs. Writes this node's value and
/// returns every node's value for the user (`''` where it has none).
pub(crate) const USER_ONLINE: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, ARGV[1]) or ''
end
return out
"#;

/// KEYS: hashes. ARGV: field. Returns each hash's value of the field (`''`
/// where it has none): one channel's presence on every live node.
pub(crate) const READ_FIELD: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, ARGV[1]) or ''
end
return out
"#;

/// KEYS: hashes. ARGV: a field, or `''` for all. Returns `{key, value}`
/// per hash (value `''` where the field is missing), or `{key, {field,
/// value...}}` for all fields: the other nodes' entries.
pub(crate) const READ_NODES: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  if ARGV[1] == '' then
    out[i] = {key, redis.call('HGETALL', key)}
  else
    out[i] = {key, redis.call('HGET', key, ARGV[1]) or ''}
  end
end
return out
"#;

/// The node named in a key made by `node_presence` or `node_users`.
pub(crate) fn node_of_key(key: &str) -> &str {
    let name = key.strip_prefix("hubbub:n:").unwrap_or(key);
    name.rsplit_once(':').map_or(name, |(node, _)| node)
}

/// KEYS: a hash. ARGV: TTL secs, then field, value pairs. Replaces the
/// hash whole, atomically (a node's heal).
pub(crate) const REPLACE_HASH: &str = r#"
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if #ARGV > 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return #ARGV
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mailbox_pattern_is_the_publications_of_mailbox_channels() {
        let mailbox = publications(&crate::hub::mailbox::name("ann"));
        let prefix = MAILBOX_PATTERN.strip_suffix('*').unwrap();
        assert!(mailbox.starts_with(prefix), "{mailbox} under {MAILBOX_PATTERN}");
        assert!(!publications("news").starts_with(prefix));
    }

    #[test]
    fn presence_messages_are_told_apart_from_publications() {
        let message = presence_message("node-1", br#"{"push":"presence"}"#);
        assert_eq!(parse_presence(&message), Some(("node-1", r#"{"push":"presence"}"#)));
        assert_eq!(parse_presence("1a2b\n3\n\"data\""), None, "a publication");
    }
}
