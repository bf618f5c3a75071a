//! This node's own state as Redis should hold it: subscriptions per channel
//! and user, and connections per user. The shards' changes arrive here
//! (never dropped) whether Redis is up or not; Redis gets them as
//! incremental writes, and in full after every reconnect and every
//! `HEAL_EVERY_HEARTBEATS` heartbeats.
//!
//! In Redis each node owns two hashes, replaced whole by a heal (one
//! script, atomic): `hubbub:n:NODE:p` (field CHANNEL -> JSON `{USER:
//! COUNT}`, `""` for anonymous) and `hubbub:n:NODE:u` (field USER -> JSON
//! `[[MEMBER, CONNECT_MS]...]`). Both expire ten node TTLs after the last
//! heartbeat, so a node that died leaves nothing behind for long, and a
//! node that restarts with the same id replaces what its predecessor left
//! at its first connect. Any write lost with a failed pipeline is repaired
//! by the heal after the reconnect; any other drift within one heal period.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::keys;
use super::reply::Value;
use crate::bus::cluster::NodesQuery;

/// A full heal every this many heartbeats (heartbeats are every TTL/3,
/// at most 1 s apart: with the default TTL of 10 s, every 5 s).
pub(crate) const HEAL_EVERY_HEARTBEATS: u32 = 5;

#[derive(Default)]
pub(crate) struct Mirror {
    /// Channel -> user ("" anonymous) -> subscriptions on this node.
    presence: HashMap<Arc<str>, BTreeMap<Arc<str>, i64>>,
    /// User -> (member `NODE|SHARD|KEY|GENERATION`, connect time ms).
    users: HashMap<Arc<str>, Vec<(String, u64)>>,
    dirty_channels: HashSet<Arc<str>>,
    dirty_users: HashSet<Arc<str>>,
}

impl Mirror {
    pub fn presence(&mut self, channel: Arc<str>, user: Arc<str>, delta: i32) {
        let users = self.presence.entry(Arc::clone(&channel)).or_default();
        let count = users.entry(user.clone()).or_insert(0);
        *count += i64::from(delta);
        if *count <= 0 {
            users.remove(&user);
        }
        if users.is_empty() {
            self.presence.remove(&channel);
        }
        self.dirty_channels.insert(channel);
    }

    pub fn user_online(&mut self, user: Arc<str>, member: String, at_ms: u64) {
        self.users.entry(Arc::clone(&user)).or_default().push((member, at_ms));
        self.dirty_users.insert(user);
    }

    pub fn user_offline(&mut self, user: Arc<str>, member: &str) {
        if let Some(list) = self.users.get_mut(&user) {
            list.retain(|(m, _)| m != member);
            if list.is_empty() {
                self.users.remove(&user);
            }
        }
        self.dirty_users.insert(user);
    }

    /// Channels with subscribers on this node.
    pub fn channels(&self) -> impl Iterator<Item = &Arc<str>> {
        self.presence.keys()
    }

    /// JSON of `user`'s connections here (`[]` when none).
    pub fn user_value(&self, user: &str) -> String {
        let list = self.users.get(user).map(Vec::as_slice).unwrap_or_default();
        serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
    }

    fn presence_value(&self, channel: &str) -> Option<String> {
        let users = self.presence.get(channel)?;
        let map: BTreeMap<&str, i64> = users.iter().map(|(u, n)| (&**u, *n)).collect();
        serde_json::to_string(&map).ok()
    }

    /// HSET/HDEL of what changed since the last call.
    pub fn changes(&mut self, node: &str, out: &mut Vec<Vec<String>>) {
        let presence_key = keys::node_presence(node);
        for channel in std::mem::take(&mut self.dirty_channels) {
            match self.presence_value(&channel) {
                Some(value) => out.push(vec!["HSET".into(), presence_key.clone(), channel.to_string(), value]),
                None => out.push(vec!["HDEL".into(), presence_key.clone(), channel.to_string()]),
            }
        }
        let users_key = keys::node_users(node);
        for user in std::mem::take(&mut self.dirty_users) {
            match self.users.contains_key(&user) {
                true => out.push(vec![
                    "HSET".into(),
                    users_key.clone(),
                    user.to_string(),
                    self.user_value(&user),
                ]),
                false => out.push(vec!["HDEL".into(), users_key.clone(), user.to_string()]),
            }
        }
    }

    /// Both hashes replaced whole (`keys::REPLACE_HASH`), with their TTL.
    pub fn snapshot(&mut self, node: &str, replace_sha: &str, ttl_secs: u64, out: &mut Vec<Vec<String>>) {
        self.dirty_channels.clear();
        self.dirty_users.clear();
        let replace = |key: String, pairs: Vec<(String, String)>| {
            let mut args = vec![
                "EVALSHA".to_string(),
                replace_sha.to_string(),
                "1".into(),
                key,
                ttl_secs.to_string(),
            ];
            for (field, value) in pairs {
                args.extend([field, value]);
            }
            args
        };
        let presence = self
            .presence
            .keys()
            .filter_map(|c| Some((c.to_string(), self.presence_value(c)?)))
            .collect();
        out.push(replace(keys::node_presence(node), presence));
        let users = self.users.keys().map(|u| (u.to_string(), self.user_value(u))).collect();
        out.push(replace(keys::node_users(node), users));
    }
}

/// Sums the presence values of the live nodes (JSON `{USER: COUNT}` each;
/// empty or unreadable ones count nothing) into the `presence` answer.
pub(crate) fn presence_json(values: impl Iterator<Item = String>) -> String {
    let (mut users, mut anonymous, mut total) = (BTreeMap::<String, i64>::new(), 0, 0);
    for value in values {
        let Ok(map) = serde_json::from_str::<BTreeMap<String, i64>>(&value) else {
            continue;
        };
        for (user, count) in map {
            total += count;
            match user.as_str() {
                "" => anonymous += count,
                _ => *users.entry(user).or_default() += count,
            }
        }
    }
    serde_json::json!({"users": users, "anonymous": anonymous, "total": total}).to_string()
}

/// Every live connection of a user from the nodes' values (JSON
/// `[[MEMBER, CONNECT_MS]...]` each), oldest first.
pub(crate) fn user_members(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut all: Vec<(String, u64)> = values
        .filter_map(|v| serde_json::from_str::<Vec<(String, u64)>>(&v).ok())
        .flatten()
        .collect();
    all.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    all.into_iter().map(|(member, _)| member).collect()
}

/// The other nodes' entries (`keys::READ_NODES`) as the API shows them.
pub(crate) fn nodes_json(query: &NodesQuery, reply: Value) -> serde_json::Value {
    let mut out = Vec::new();
    for pair in reply.into_array() {
        let mut pair = pair.into_array().into_iter();
        let (Some(key), Some(value)) = (pair.next(), pair.next()) else {
            continue;
        };
        let node = keys::node_of_key(key.as_str().unwrap_or_default()).to_string();
        match query {
            NodesQuery::Channels => {
                for field in value.into_array().chunks(2) {
                    let (Some(channel), Some(users)) = (field[0].as_str(), field.get(1).and_then(Value::as_str)) else {
                        continue;
                    };
                    let counts: BTreeMap<String, i64> = serde_json::from_str(users).unwrap_or_default();
                    let subscribers: i64 = counts.values().sum();
                    out.push(serde_json::json!({"channel": channel, "node": node, "subscribers": subscribers}));
                }
            }
            NodesQuery::User(_) => {
                let list: Vec<(String, u64)> =
                    serde_json::from_str(value.as_str().unwrap_or_default()).unwrap_or_default();
                for (member, connected_ms) in list {
                    let parts: Vec<&str> = member.rsplitn(4, '|').collect();
                    let [_generation, id, shard, _node] = parts[..] else {
                        continue;
                    };
                    out.push(serde_json::json!({"node": node, "shard": shard.parse::<u64>().ok(), "id": id.parse::<u64>().ok(), "connected_ms": connected_ms}));
                }
            }
        }
    }
    serde_json::Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_then_a_snapshot_say_what_this_node_holds() {
        let mut mirror = Mirror::default();
        mirror.presence("c".into(), "ann".into(), 1);
        mirror.presence("c".into(), "".into(), 2);
        mirror.presence("gone".into(), "ben".into(), 1);
        mirror.presence("gone".into(), "ben".into(), -1);
        mirror.user_online("ann".into(), "n|0|1|1".into(), 5);
        let mut out = Vec::new();
        mirror.changes("n", &mut out);
        out.sort();
        assert_eq!(
            out,
            [
                vec!["HDEL", "hubbub:n:n:p", "gone"],
                vec!["HSET", "hubbub:n:n:p", "c", r#"{"":2,"ann":1}"#],
                vec!["HSET", "hubbub:n:n:u", "ann", r#"[["n|0|1|1",5]]"#],
            ]
        );
        let mut out = Vec::new();
        mirror.changes("n", &mut out);
        assert!(out.is_empty(), "drained");
        mirror.snapshot("n", "sha", 30, &mut out);
        assert_eq!(
            out[0],
            ["EVALSHA", "sha", "1", "hubbub:n:n:p", "30", "c", r#"{"":2,"ann":1}"#]
        );
        assert_eq!(
            out[1],
            ["EVALSHA", "sha", "1", "hubbub:n:n:u", "30", "ann", r#"[["n|0|1|1",5]]"#]
        );
    }

    #[test]
    fn other_nodes_entries_become_api_rows() {
        assert_eq!(keys::node_of_key(&keys::node_users("host-1:x")), "host-1:x");
        let bytes = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bytes("hubbub:n:b:u"),
            bytes(r#"[["b|1|7|2",99],["garbage",1]]"#),
        ])]);
        let rows = nodes_json(&NodesQuery::User("ann".into()), reply);
        assert_eq!(
            rows,
            serde_json::json!([{"node": "b", "shard": 1, "id": 7, "connected_ms": 99}])
        );
    }

    #[test]
    fn nodes_values_add_up() {
        let values = [r#"{"":2,"ann":1}"#, "", r#"{"ann":2,"ben":1}"#, "garbage"].map(String::from);
        let sum: serde_json::Value = serde_json::from_str(&presence_json(values.into_iter())).unwrap();
        assert_eq!(
            sum,
            serde_json::json!({"users": {"ann": 3, "ben": 1}, "anonymous": 2, "total": 6})
        );
        let members = [r#"[["b|0|1|1",7]]"#, r#"[["a|0|1|1",3],["a|1|2|1",9]]"#].map(String::from);
        assert_eq!(user_members(members.into_iter()), ["a|0|1|1", "b|0|1|1", "a|1|2|1"]);
    }
}
