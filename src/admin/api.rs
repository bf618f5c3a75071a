//! The server API on the admin port (bearer API key required): publish,
//! broadcast, disconnect a user, and look at presence, history, channels,
//! connections and counters. Handlers run on the admin thread; they reach the
//! shards only through their inboxes and wait (bounded) for the answers.
//! Without `--api-key` the API is off: every route answers 403 saying so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::http::{Request, Response};
use super::router::{Access, Router};
use crate::auth::pattern::valid_channel_name;
use crate::bus::cluster::{ClusterCmd, ClusterLink, NodesQuery, RedisCall};
use crate::bus::msg::{HubMsg, Query, ReplyTo, OUTCOME_UNKNOWN};
use crate::bus::peers::Peers;
use crate::hub::config::{CLOSE_KICKED, DEFAULT_HISTORY_LIMIT};
use crate::hub::mailbox::MAX_USER_BYTES;
use crate::metrics::stats::{ShardStats, HANDSHAKE_FAILURE_LABELS};

/// Longest an API call waits for the shards.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// A publish in cluster mode is answered within the bridge's deadline (2 s
/// waiting, 1 s in flight; docs/CLUSTER.md): wait a little longer.
const PUBLISH_ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// The answer of every `/api/*` route while no `--api-key` is set.
const API_OFF: &str = "the server API is off: start hubbub with --api-key (or HUBBUB_API_KEY)";

/// What the API handlers share.
#[derive(Clone)]
pub(crate) struct Api {
    /// False without `--api-key`: the routes only say the API is off.
    pub enabled: bool,
    pub shards: Peers,
    pub stats: Vec<Arc<Mutex<ShardStats>>>,
    /// Cluster mode: disconnects reach the other nodes, stats show them.
    pub cluster: Option<ClusterLink>,
}

/// The API's routes: (method, path).
const ROUTES: [(&str, &str); 9] = [
    ("POST", "/api/publish"),
    ("POST", "/api/broadcast"),
    ("POST", "/api/disconnect"),
    ("GET", "/api/presence"),
    ("GET", "/api/history"),
    ("GET", "/api/channels"),
    ("GET", "/api/connections"),
    ("GET", "/api/stats"),
    ("POST", "/api/send"),
];

/// Adds the `/api/*` routes to `router`: the API, or, without a key, an
/// answer that says it is off (rather than a 401 that suggests a wrong key).
pub(crate) fn routes(router: Router, api: Api) -> Router {
    if !api.enabled {
        return ROUTES.iter().fold(router, |router, &(method, path)| {
            router.route(method, path, Access::Open, |_| {
                Response::json(403, json!({"error": API_OFF}).to_string())
            })
        });
    }
    let (a, b, c, d, e, f, g, h, i) = (
        api.clone(),
        api.clone(),
        api.clone(),
        api.clone(),
        api.clone(),
        api.clone(),
        api.clone(),
        api.clone(),
        api,
    );
    router
        .route("POST", "/api/publish", Access::Bearer, move |r| a.publish(r))
        .route("POST", "/api/broadcast", Access::Bearer, move |r| b.broadcast(r))
        .route("POST", "/api/disconnect", Access::Bearer, move |r| c.disconnect(r))
        .route("GET", "/api/presence", Access::Bearer, move |r| {
            d.channel_query(r, Query::Presence)
        })
        .route("GET", "/api/history", Access::Bearer, move |r| e.history(r))
        .route("GET", "/api/channels", Access::Bearer, move |_| f.channels())
        .route("GET", "/api/connections", Access::Bearer, move |r| g.connections(r))
        .route("GET", "/api/stats", Access::Bearer, move |_| h.stats())
        .route("POST", "/api/send", Access::Bearer, move |r| i.send(r))
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    Failure::bad(reason).into()
}

fn unavailable(reason: &str) -> Response {
    Failure::unavailable(reason).into()
}

/// Why one call (or one channel of a broadcast) was not carried out.
#[derive(Debug)]
struct Failure {
    status: u16,
    error: String,
}

impl Failure {
    fn bad(reason: impl std::fmt::Display) -> Failure {
        Failure {
            status: 400,
            error: reason.to_string(),
        }
    }

    /// 504: not known whether it happened (retry with the same
    /// `Idempotency-Key` to be sure it happens once).
    fn unknown(reason: &str) -> Failure {
        Failure {
            status: 504,
            error: format!("{reason}; retry with the same Idempotency-Key header to publish at most once"),
        }
    }

    fn unavailable(reason: &str) -> Failure {
        Failure {
            status: 503,
            error: reason.to_string(),
        }
    }
}

impl From<Failure> for Response {
    fn from(failure: Failure) -> Response {
        Response::json(failure.status, json!({"error": failure.error}).to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    user: String,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    /// Exactly one of `user` and `token_id` (a token's `jti`).
    user: Option<String>,
    token_id: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

impl Api {
    fn publish(&self, request: &Request) -> Response {
        let body: PublishBody = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => return bad_request(format_args!("bad JSON: {e}")),
        };
        let idem = match request.header("idempotency-key").map(idempotency_key).transpose() {
            Ok(idem) => idem,
            Err(why) => return bad_request(why),
        };
        match self.publish_one(&body.channel, body.data.get(), idem) {
            Ok(result) => Response::json(200, result),
            Err(failure) => failure.into(),
        }
    }

    fn broadcast(&self, request: &Request) -> Response {
        let body: BroadcastBody = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => return bad_request(format_args!("bad JSON: {e}")),
        };
        if body.channels.is_empty() {
            return bad_request("channels is empty");
        }
        // Each channel stands alone: a bad or busy one gets its error in its
        // own result and the others are still published.
        let results: Vec<Value> = body
            .channels
            .iter()
            .map(|channel| match self.publish_one(channel, body.data.get(), None) {
                Ok(result) => json!({"channel": channel, "result": serde_json::from_str::<Value>(&result).ok()}),
                Err(failure) => json!({"channel": channel, "error": failure.error, "status": failure.status}),
            })
            .collect();
        Response::json(200, json!({"results": results}).to_string())
    }

    /// Publishes through the channel's owner and returns its answer.
    fn publish_one(&self, channel: &str, data: &str, idem: Option<Arc<str>>) -> Result<String, Failure> {
        valid_channel_name(channel).map_err(|why| Failure::bad(format_args!("bad channel name {channel:?}: {why}")))?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let msg = HubMsg::Publish {
            channel: channel.into(),
            data: data.into(),
            reply: Some(ReplyTo::Admin(tx)),
            // An operator's call: not limited per connection (the node's
            // --max-channels still holds: 503 "not done").
            may_create: true,
            idem,
        };
        self.to_owner(channel, msg)?;
        // Past this point a publish may happen although no answer came: say
        // so (504), apart from "not done" (503).
        let answer = rx.recv_timeout(PUBLISH_ANSWER_TIMEOUT).map_err(|e| match e {
            RecvTimeoutError::Timeout => Failure::unknown("no answer in time; it may still be published"),
            RecvTimeoutError::Disconnected => {
                Failure::unavailable("not done: the shard or the cluster link dropped it; retry")
            }
        })?;
        match answer.strip_prefix(OUTCOME_UNKNOWN) {
            Some(why) => Err(Failure::unknown(why)),
            None => Ok(answer),
        }
    }

    /// A private message to `user` (`from` null), as the `send` command:
    /// `{}`, or with `--mailbox-size` `{offset, epoch}` in the mailbox.
    fn send(&self, request: &Request) -> Response {
        let body: SendBody = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => return bad_request(format_args!("bad JSON: {e}")),
        };
        if body.user.is_empty() || body.user.len() > MAX_USER_BYTES {
            return bad_request(format_args!("user must be 1 to {MAX_USER_BYTES} bytes"));
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let msg = HubMsg::SendUser {
            user: body.user.as_str().into(),
            data: body.data.get().into(),
            reply: tx,
        };
        if let Err(failure) = self.to_owner(&body.user, msg) {
            return failure.into();
        }
        // Kept in a mailbox by its owner, or by Redis in cluster mode,
        // which answers within its deadline (as a publish).
        let unknown = |why: &str| -> Response {
            Failure {
                status: 504,
                error: format!("{why}; not known whether it was sent"),
            }
            .into()
        };
        match rx.recv_timeout(PUBLISH_ANSWER_TIMEOUT) {
            Ok(answer) => match answer.strip_prefix(OUTCOME_UNKNOWN) {
                Some(why) => unknown(why),
                None => Response::json(200, answer),
            },
            Err(RecvTimeoutError::Timeout) => unknown("no answer in time"),
            Err(RecvTimeoutError::Disconnected) => unavailable(
                "not done: the mailbox is refused (--max-channels) or the shard or cluster link dropped it; retry",
            ),
        }
    }

    fn disconnect(&self, request: &Request) -> Response {
        let body: DisconnectBody = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => return bad_request(format_args!("bad JSON: {e}")),
        };
        let code = body.code.unwrap_or(CLOSE_KICKED);
        if !(4000..=4999).contains(&code) && code != 1000 && code != 1008 {
            return bad_request("code must be 1000, 1008 or 4000-4999");
        }
        let reason: Arc<str> = body
            .reason
            .unwrap_or_else(|| "disconnected by the server".into())
            .into();
        let target = match (body.user, body.token_id) {
            (Some(user), None) if user.is_empty() => return bad_request("user is empty"),
            (None, Some(jti)) if jti.is_empty() => return bad_request("token_id is empty"),
            (Some(user), None) => Ok(Arc::<str>::from(user)),
            (None, Some(jti)) => Err(Arc::<str>::from(jti)),
            _ => return bad_request("give exactly one of user and token_id"),
        };
        let answers = self.ask_all(|reply| match &target {
            Ok(user) => HubMsg::DisconnectUser {
                user: Arc::clone(user),
                code,
                reason: Arc::clone(&reason),
                reply: Some(reply),
            },
            Err(token_id) => HubMsg::DisconnectToken {
                token_id: Arc::clone(token_id),
                code,
                reason: Arc::clone(&reason),
                reply: Some(reply),
            },
        });
        let closed: u64 = match answers {
            Ok(parts) => parts.iter().filter_map(|n| n.parse::<u64>().ok()).sum(),
            Err(response) => return response,
        };
        let mut answer = json!({"closed": closed});
        if let Some(cluster) = &self.cluster {
            let cmd = match target {
                Ok(user) => ClusterCmd::DisconnectUser { user, code, reason },
                Err(token_id) => ClusterCmd::DisconnectToken { token_id, code, reason },
            };
            if cluster.send(cmd).is_err() {
                return unavailable("the cluster link is busy; retry");
            }
            answer["other_nodes"] = json!("told; their connections are not counted in closed");
        }
        Response::json(200, answer.to_string())
    }

    fn history(&self, request: &Request) -> Response {
        let limit = match param(request, "limit").map(|l| l.parse::<usize>()) {
            None => DEFAULT_HISTORY_LIMIT,
            Some(Ok(limit)) => limit,
            Some(Err(_)) => return bad_request("limit must be a number"),
        };
        let since = match param(request, "since").map(|s| s.parse::<u64>()) {
            None => None,
            Some(Ok(since)) => Some(since),
            Some(Err(_)) => return bad_request("since must be a number"),
        };
        self.channel_query(request, Query::History { limit, since })
    }

    fn channel_query(&self, request: &Request, query: Query) -> Response {
        let Some(channel) = param(request, "channel") else {
            return bad_request("missing ?channel=");
        };
        if let Err(why) = valid_channel_name(&channel) {
            return bad_request(why);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let msg = HubMsg::Query {
            channel: channel.as_str().into(),
            query,
            reply: ReplyTo::Admin(tx),
        };
        if let Err(failure) = self.to_owner(&channel, msg) {
            return failure.into();
        }
        match wait_one(&rx) {
            Ok(body) => Response::json(200, body),
            Err(failure) => failure.into(),
        }
    }

    fn channels(&self) -> Response {
        match self.ask_all(|reply| HubMsg::ListChannels { reply }) {
            Ok(parts) => {
                let mut channels: Vec<Value> = parts.iter().flat_map(|p| parse_array(p)).collect();
                channels.sort_by(|a, b| a["channel"].as_str().cmp(&b["channel"].as_str()));
                let mut body = json!({"channels": channels});
                self.add_other_nodes(&mut body, NodesQuery::Channels);
                Response::json(200, body.to_string())
            }
            Err(response) => response,
        }
    }

    fn connections(&self, request: &Request) -> Response {
        let Some(user) = param(request, "user") else {
            return bad_request("missing ?user=");
        };
        let user: Arc<str> = user.into();
        match self.ask_all(|reply| HubMsg::ListConnections {
            user: Arc::clone(&user),
            reply,
        }) {
            Ok(parts) => {
                let connections: Vec<Value> = parts.iter().flat_map(|p| parse_array(p)).collect();
                let mut body = json!({"user": &*user, "connections": connections});
                self.add_other_nodes(&mut body, NodesQuery::User(Arc::clone(&user)));
                Response::json(200, body.to_string())
            }
            Err(response) => response,
        }
    }

    /// Cluster mode: what the other live nodes hold, as `other_nodes` (an
    /// array), or `other_nodes_error` when Redis did not answer in time.
    fn add_other_nodes(&self, body: &mut Value, query: NodesQuery) {
        let Some(link) = &self.cluster else { return };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let asked = link.send(ClusterCmd::Call(RedisCall::Nodes { query, reply: tx }));
        let answer = asked.ok().and_then(|()| rx.recv_timeout(PUBLISH_ANSWER_TIMEOUT).ok());
        match answer.and_then(|a| serde_json::from_str::<Value>(&a).ok()) {
            Some(nodes) => body["other_nodes"] = nodes,
            None => body["other_nodes_error"] = json!("the cluster did not answer; this node's part only"),
        }
    }

    fn stats(&self) -> Response {
        let shards: Vec<ShardStats> = self
            .stats
            .iter()
            .map(|s| s.lock().map(|s| s.clone()).unwrap_or_default())
            .collect();
        let mut total = ShardStats::default();
        shards.iter().for_each(|s| total.add(s));
        let per_shard: Vec<Value> = shards.iter().enumerate().map(|(i, s)| stats_json(Some(i), s)).collect();
        let mut body = json!({"total": stats_json(None, &total), "shards": per_shard});
        if let Some(cluster) = &self.cluster {
            body["cluster"] = cluster_json(cluster);
        }
        Response::json(200, body.to_string())
    }

    fn to_owner(&self, name: &str, msg: HubMsg) -> Result<(), Failure> {
        self.shards
            .to_owner(name, msg)
            .map(drop)
            .map_err(|_| Failure::unavailable("the channel's shard is overloaded; retry"))
    }

    /// Sends one question to every shard and collects every answer.
    fn ask_all(&self, make: impl Fn(Sender<String>) -> HubMsg) -> Result<Vec<String>, Response> {
        let (tx, rx) = crossbeam_channel::bounded(self.shards.len());
        if !self.shards.to_others(None, || make(tx.clone())).is_empty() {
            return Err(unavailable("a shard inbox is full; retry"));
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        (0..self.shards.len())
            .map(|_| {
                rx.recv_deadline(deadline)
                    .map_err(|_| unavailable("a shard did not answer in time"))
            })
            .collect()
    }
}

/// An `Idempotency-Key` header: 1 to 128 printable ASCII characters.
fn idempotency_key(key: &str) -> Result<Arc<str>, String> {
    let key = key.trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters without spaces"
        ));
    }
    Ok(key.into())
}

fn wait_one(rx: &Receiver<String>) -> Result<String, Failure> {
    rx.recv_timeout(ANSWER_TIMEOUT).map_err(|e| match e {
        RecvTimeoutError::Timeout => Failure::unavailable("the shard did not answer in time"),
        RecvTimeoutError::Disconnected => {
            Failure::unavailable("not done: the shard or the cluster link dropped it; retry")
        }
    })
}

fn parse_array(text: &str) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(text).unwrap_or_default()
}

/// A query parameter's value (no percent-decoding: names and user ids are
/// plain tokens).
fn param(request: &Request, name: &str) -> Option<String> {
    request
        .query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// This node, the link, and every live node as last seen in Redis.
fn cluster_json(cluster: &ClusterLink) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let state = &cluster.state;
    let nodes: Vec<Value> = state
        .nodes
        .lock()
        .map(|nodes| nodes.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|n| json!({"node": n.node, "connections": n.connections, "heartbeat_ms_ago": n.heartbeat_ms_ago}))
        .collect();
    json!({
        "node": &*cluster.node,
        "link_up": state.link_up(),
        "published": state.published.load(Relaxed),
        "drops": state.drops.load(Relaxed),
        "reconnects": state.reconnects.load(Relaxed),
        "nodes": nodes,
    })
}

fn stats_json(shard: Option<usize>, s: &ShardStats) -> Value {
    let failures: serde_json::Map<String, Value> = HANDSHAKE_FAILURE_LABELS
        .iter()
        .zip(s.handshake_failures)
        .map(|(l, n)| (l.to_string(), json!(n)))
        .collect();
    let disconnects: serde_json::Map<String, Value> = crate::conn::Disconnect::ALL
        .iter()
        .map(|d| (d.label().to_string(), json!(s.disconnects_for(*d))))
        .collect();
    json!({
        "shard": shard,
        "connections": s.open,
        "accepted": s.accepted,
        "handshake_failures": failures,
        "disconnects": disconnects,
        "messages_in": s.messages_in,
        "messages_out": s.messages_out,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "slow_consumers": s.slow_consumers,
        "inbox_drops": s.inbox_drops,
        "channels": s.channels,
        "subscriptions": s.subscriptions,
        "users": s.users,
        "buffers_leased": s.buffers_leased,
    })
}
