//! Cluster mode: two or three hubbub processes joined by one Redis, all on
//! loopback. Each test starts its own `redis-server` on a free port (killed
//! by PID at the end) and skips, saying so, only when the binary is absent.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};

fn node(redis: &Redis, name: &str, extra: &[&str]) -> Process {
    node_on(&["--redis", &redis.url()], name, extra)
}

#[test]
fn a_publish_on_one_node_reaches_every_node_in_one_order() {
    let Some(redis) = Redis::start() else { return };
    let nodes: Vec<Process> = ["a", "b", "c"].iter().map(|n| node(&redis, n, &[])).collect();
    wait_cluster(&nodes[0], 3);
    let mut subs: Vec<WsClient> = nodes[1..].iter().map(|n| WsClient::open(n.addr, "")).collect();
    for sub in &mut subs {
        let reply = sub.call("subscribe", json!({"channel": "news"}));
        assert_eq!(reply["result"]["offset"], 0, "{reply}");
    }
    let mut publisher = WsClient::open(nodes[0].addr, "");
    let mut epoch = Value::Null;
    for i in 1..=50 {
        let result = publish(&mut publisher, "news", json!({"n": i}));
        assert_eq!(result["offset"], i);
        epoch = result["epoch"].clone();
    }
    for sub in &mut subs {
        for i in 1..=50 {
            let push = next_pub(sub);
            assert_eq!((push["offset"].as_u64(), &push["data"]), (Some(i), &json!({"n": i})));
        }
    }
    // The same epoch and offset from any node.
    let (_, history) = api(nodes[2].admin.unwrap(), "GET", "/api/history?channel=news&limit=2", "");
    assert_eq!(
        (&history["epoch"], &history["offset"]),
        (&epoch, &json!(50)),
        "{history}"
    );
    assert_eq!(history["publications"][1]["data"], json!({"n": 50}));
}

#[test]
fn a_node_is_sent_only_the_publications_of_channels_it_holds() {
    let Some(redis) = Redis::start() else { return };
    // No history for it: a log here lives exactly as long as its subscribers.
    let no_history = ["--history-rule", "busy=0:1"];
    let (a, b) = (node(&redis, "a", &no_history), node(&redis, "b", &no_history));
    wait_cluster(&a, 2);
    let nodes_subscribed = || redis.subscribers("hubbub:pub:busy");
    let skipped = |node: &Process| metric_at(node.admin.unwrap(), "hubbub_cluster_publications_skipped_total");
    let mut on_b = WsClient::open(b.addr, "");
    on_b.call("subscribe", json!({"channel": "busy"}));
    // Only B holds it: Redis sends its publications to B alone.
    assert_eq!(nodes_subscribed(), 1);
    let mut publisher = WsClient::open(a.addr, "");
    for i in 1..=20 {
        publish(&mut publisher, "busy", json!({"n": i}));
    }
    for i in 1..=20 {
        assert_eq!(next_pub(&mut on_b)["offset"], i);
    }
    // Not sent to A, so not read and skipped there either.
    assert_eq!((skipped(&a), skipped(&b)), (0.0, 0.0));
    // A subscriber on A: A is subscribed before it reads the position.
    let mut on_a = WsClient::open(a.addr, "");
    let reply = on_a.call("subscribe", json!({"channel": "busy"}));
    assert_eq!(reply["result"]["offset"], 20, "{reply}");
    assert_eq!(nodes_subscribed(), 2);
    let mut publisher_b = WsClient::open(b.addr, "");
    for i in 21..=30 {
        publish(&mut publisher_b, "busy", json!({"n": i}));
    }
    for i in 21..=30 {
        assert_eq!(next_pub(&mut on_a)["offset"], i);
        assert_eq!(next_pub(&mut on_b)["offset"], i);
    }
    // It leaves: its log goes, and A unsubscribes.
    on_a.call("unsubscribe", json!({"channel": "busy"}));
    let left = try_until(|| (nodes_subscribed() == 1).then_some(()));
    assert!(left.is_some(), "{} nodes still subscribed", nodes_subscribed());
    // And comes back: subscribed again, from the position Redis gives.
    let reply = on_a.call("subscribe", json!({"channel": "busy"}));
    assert_eq!(reply["result"]["offset"], 30, "{reply}");
    assert_eq!(nodes_subscribed(), 2);
    // Redis drops every subscriber connection: each node subscribes again
    // to what it holds.
    redis.run(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let back = try_until(|| (nodes_subscribed() == 2).then_some(()));
    assert!(back.is_some(), "{} nodes subscribed again", nodes_subscribed());
    let offset = publish(&mut publisher, "busy", json!({"after": "kill"}))["offset"].clone();
    for sub in [&mut on_a, &mut on_b] {
        let push = next_pub(sub);
        assert_eq!((&push["offset"], &push["data"]), (&offset, &json!({"after": "kill"})));
    }
    assert_eq!((skipped(&a), skipped(&b)), (0.0, 0.0));
}

#[test]
fn a_node_whose_subscriber_connection_was_down_learns_the_position_without_a_new_publication() {
    let Some(redis) = Redis::start() else { return };
    // Node b connects as a user of its own, so that its subscriber
    // connection alone can be kept out (its commands still run).
    redis.run(&["ACL", "SETUSER", "b", "on", ">pw", "~*", "&*", "+@all"]);
    let as_b = format!("redis://b:pw@127.0.0.1:{}", redis.port);
    let (a, b) = (node(&redis, "a", &[]), node_on(&["--redis", &as_b], "b", &[]));
    wait_cluster(&a, 2);
    let mut on_b = WsClient::open(b.addr, "");
    on_b.call("subscribe", json!({"channel": "quiet"}));
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "quiet", json!(1));
    assert_eq!(next_pub(&mut on_b)["offset"], 1);
    // b's subscriber connection is cut and cannot come back for now.
    redis.run(&["ACL", "SETUSER", "b", "-subscribe", "-psubscribe"]);
    redis.run(&["CLIENT", "KILL", "USER", "b", "TYPE", "pubsub"]);
    wait_until("b unsubscribed", || {
        (redis.subscribers("hubbub:pub:quiet") == 0).then_some(())
    });
    for i in 2..=4 {
        publish(&mut publisher, "quiet", json!(i));
    }
    redis.run(&["ACL", "SETUSER", "b", "+subscribe", "+psubscribe"]);
    wait_until("b subscribed again", || {
        (redis.subscribers("hubbub:pub:quiet") == 1).then_some(())
    });
    // No publication since: b read the position again once subscribed, so a
    // new subscriber there is told 4 (not 1, which would have it recover
    // publications it then gets twice).
    let told = try_until(|| {
        let mut late = WsClient::open(b.addr, "");
        let reply = late.call("subscribe", json!({"channel": "quiet"}));
        (reply["result"]["offset"] == 4).then_some(())
    });
    assert!(
        told.is_some(),
        "b's position was not read again after its subscriber connection came back"
    );
}

#[test]
fn a_client_recovers_on_another_node_what_it_missed() {
    let Some(redis) = Redis::start() else { return };
    let (a, b, c) = (node(&redis, "a", &[]), node(&redis, "b", &[]), node(&redis, "c", &[]));
    wait_cluster(&a, 3);
    let mut sub = WsClient::open(b.addr, "");
    sub.call("subscribe", json!({"channel": "chat:1"}));
    let mut publisher = WsClient::open(a.addr, "");
    let mut epoch = Value::Null;
    for i in 1..=3 {
        epoch = publish(&mut publisher, "chat:1", json!(i))["epoch"].clone();
    }
    for _ in 1..=3 {
        next_pub(&mut sub);
    }
    drop(sub);
    for i in 4..=6 {
        publish(&mut publisher, "chat:1", json!(i));
    }
    // Node c never had a subscriber: its answer comes from Redis's history.
    let mut back = WsClient::open(c.addr, "");
    let reply = back.call(
        "subscribe",
        json!({"channel": "chat:1", "recover": {"offset": 3, "epoch": epoch}}),
    );
    let result = &reply["result"];
    assert_eq!(result["recovered"], true, "{reply}");
    let offsets: Vec<u64> = result["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [4, 5, 6]);
    assert_eq!(result["offset"], 6);
    // Live ones follow, none twice.
    publish(&mut publisher, "chat:1", json!(7));
    assert_eq!(next_pub(&mut back)["offset"], 7);
    // A stale epoch is refused with the reason, never a silent gap.
    let mut stale = WsClient::open(b.addr, "");
    let reply = stale.call(
        "subscribe",
        json!({"channel": "chat:1", "recover": {"offset": 1, "epoch": "nope"}}),
    );
    assert_eq!(reply["result"]["recovered"], false, "{reply}");
}

#[test]
fn private_messages_and_kicks_cross_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (
        node(&redis, "a", &["--max-connections-per-user", "1"]),
        node(&redis, "b", &["--max-connections-per-user", "1"]),
    );
    wait_cluster(&a, 2);
    wait_cluster(&b, 2);
    let mut alice = user(b.addr, "alice");
    alice.call("ping", json!({}));
    let mut bob = user(a.addr, "bob");
    let reply = bob.call("send", json!({"user": "alice", "data": {"hi": 1}}));
    assert!(reply.get("result").is_some(), "{reply}");
    let push = alice.push().unwrap();
    assert_eq!(push, json!({"push": "message", "from": "bob", "data": {"hi": 1}}));
    // A second connection of bob's on the other node replaces the first.
    let mut bob_again = user(b.addr, "bob");
    bob_again.call("ping", json!({}));
    let push = bob.push().unwrap();
    assert_eq!(
        (&push["push"], &push["code"]),
        (&json!("disconnect"), &json!(4001)),
        "{push}"
    );
    // /api/disconnect on node a closes alice on node b.
    let (status, _) = api(a.admin.unwrap(), "POST", "/api/disconnect", r#"{"user":"alice"}"#);
    assert_eq!(status, 200);
    let push = alice.push().unwrap();
    assert_eq!(
        (&push["push"], &push["code"]),
        (&json!("disconnect"), &json!(4002)),
        "{push}"
    );
    assert_eq!(alice.raw.recv_close(), Some(4002));
}

fn presence(admin: SocketAddr, channel: &str) -> Value {
    api(admin, "GET", &format!("/api/presence?channel={channel}"), "").1
}

#[test]
fn presence_counts_every_node_and_a_killed_node_drops_out_after_its_ttl() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a", &[]), node(&redis, "b", &[]));
    let mut c = node(&redis, "c", &[]);
    wait_cluster(&a, 3);
    let mut clients = vec![
        user(a.addr, "ann"),
        user(b.addr, "ben"),
        user(c.addr, "cat"),
        WsClient::open(b.addr, ""),
    ];
    for client in &mut clients {
        let reply = client.call("subscribe", json!({"channel": "room"}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let want = json!({"users": {"ann": 1, "ben": 1, "cat": 1}, "anonymous": 1, "total": 4});
    wait_until("presence of all nodes", || {
        (presence(a.admin.unwrap(), "room") == want).then_some(())
    });
    // The `presence` command gives the same from any node (once that node's
    // view of the live nodes, refreshed with the heartbeats, has all three).
    wait_until("presence through node b", || {
        (clients[1].call("presence", json!({"channel": "room"}))["result"] == want).then_some(())
    });
    c.signal(libc::SIGKILL);
    c.wait_exit(PATIENCE).expect("killed");
    let killed = Instant::now();
    let want = json!({"users": {"ann": 1, "ben": 1}, "anonymous": 1, "total": 3});
    wait_until("node c to drop out", || {
        (presence(a.admin.unwrap(), "room") == want).then_some(())
    });
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(NODE_TTL_SECS) - Duration::from_millis(1500),
        "dropped before its TTL: {took:?}"
    );
    wait_cluster(&a, 2);
}

#[test]
fn redis_restart_keeps_local_service_and_the_link_comes_back() {
    let Some(mut redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a", &[]), node(&redis, "b", &[]));
    wait_cluster(&a, 2);
    wait_cluster(&b, 2);
    let mut sub = user(b.addr, "ben");
    sub.call("subscribe", json!({"channel": "feed"}));
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "feed", json!("before"));
    assert_eq!(next_pub(&mut sub)["data"], "before");

    redis.kill();
    let admin = a.admin.unwrap();
    wait_until("the link to go down", || {
        let (_, metrics) = http_get(admin, "/metrics");
        metrics.contains("hubbub_cluster_link_up 0").then_some(())
    });
    assert_eq!(http_get(admin, "/readyz").0, 200, "local service is fine");
    // Local service goes on: an echo and a room on node a.
    let mut echo = open(a.addr, "/echo");
    echo.send_text("still here");
    assert_eq!(echo.recv().unwrap().payload, b"still here");
    // A publish waits for Redis up to its deadline (2 s), then is answered:
    // 503 (not done), or 504 when it had been written to the dead link
    // before the bridge saw it down (not known whether it ran).
    let started = std::time::Instant::now();
    let (status, body) = api(admin, "POST", "/api/publish", r#"{"channel":"feed","data":"during"}"#);
    assert!(status == 503 || status == 504, "{status} {body}");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );

    let _redis = Redis::start_on(redis.port).expect("redis restarts");
    wait_cluster(&a, 2);
    wait_cluster(&b, 2);
    // Whatever ran before, this one is delivered.
    publish(&mut publisher, "feed", json!("after"));
    let mut seen = Vec::new();
    while seen.last() != Some(&json!("after")) {
        seen.push(next_pub(&mut sub)["data"].clone());
    }
    assert!(seen.contains(&json!("after")), "{seen:?}");
    // Presence was written again into the empty Redis.
    let want = json!({"users": {"ben": 1}, "anonymous": 0, "total": 1});
    wait_until("presence rewritten", || (presence(admin, "feed") == want).then_some(()));
}

#[test]
fn channels_and_connections_of_the_other_nodes_are_listed() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a", &[]), node(&redis, "b", &[]));
    wait_cluster(&a, 2);
    let mut ann = user(b.addr, "ann");
    assert!(ann
        .call("subscribe", json!({"channel": "lobby"}))
        .get("result")
        .is_some());
    let admin = a.admin.unwrap();
    let (_, channels) = wait_until("b's channel seen from a", || {
        let (status, body) = api(admin, "GET", "/api/channels", "");
        body["other_nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
            .then_some((status, body))
    });
    assert_eq!(
        channels["other_nodes"],
        json!([{"channel": "lobby", "node": "b", "subscribers": 1}])
    );
    let (status, body) = api(admin, "GET", "/api/connections?user=ann", "");
    assert_eq!(
        (status, body["connections"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    let others = body["other_nodes"].as_array().expect("other_nodes");
    assert_eq!((others.len(), &others[0]["node"]), (1, &json!("b")), "{body}");
}

/// Members of `/room/{room}` on `addr`, each read bounded in time.
fn room_members(addr: SocketAddr, room: &str, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| {
            let member = open(addr, &format!("/room/{room}"));
            member.stream.set_read_timeout(Some(PATIENCE)).unwrap();
            member
        })
        .collect()
}

#[test]
fn a_room_spans_nodes_in_one_order_binary_intact() {
    let Some(redis) = Redis::start() else { return };
    let rate = ["--max-messages-per-sec", "1000"];
    let (a, b) = (node(&redis, "a", &rate), node(&redis, "b", &rate));
    wait_cluster(&a, 2);
    wait_cluster(&b, 2);
    let mut members = room_members(a.addr, "x", 4);
    members.extend(room_members(b.addr, "x", 4));
    let mut elsewhere = room_members(b.addr, "y", 1).remove(0);
    // 200 from one sender on a: one of them binary, bytes that are not UTF-8.
    let sent: Vec<(u8, Vec<u8>)> = (0..200u8)
        .map(|i| match i {
            100 => (0x2, vec![0xff, 0x00, 0xfe, i]),
            _ => (0x1, format!("m{i}").into_bytes()),
        })
        .collect();
    for (opcode, payload) in &sent {
        members[0].send(*opcode, true, payload);
    }
    for (n, member) in members.iter_mut().enumerate() {
        let got: Vec<(u8, Vec<u8>)> = (0..sent.len())
            .map(|i| {
                let frame = member
                    .recv()
                    .unwrap_or_else(|| panic!("member {n}: message {i} missing"));
                (frame.opcode, frame.payload)
            })
            .collect();
        assert_eq!(
            got, sent,
            "member {n} (0-3 on a, 4-7 on b): all 200, in order, exactly once"
        );
    }
    // Nothing more for anyone (the sender's node delivered its own once),
    // and nothing leaked into another room.
    for member in members.iter_mut().chain([&mut elsewhere]) {
        member
            .stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(member.recv(), None, "no duplicate, no other room's message");
    }
}

/// The code and reason of the Close `member` gets next.
fn close_of(member: &mut Client) -> (u16, String) {
    while let Some(frame) = member.recv() {
        if frame.opcode == 0x8 {
            let code = frame.close_code().unwrap_or(1005);
            return (code, String::from_utf8_lossy(&frame.payload[2..]).into_owned());
        }
    }
    panic!("no Close frame")
}

#[test]
fn rooms_without_redis_close_their_members_1013() {
    let Some(mut redis) = Redis::start() else { return };
    let a = node(&redis, "a", &[]);
    wait_cluster(&a, 1);
    let mut before = room_members(a.addr, "x", 1).remove(0);
    redis.kill();
    wait_until("link down", || {
        let (_, stats) = api(a.admin.unwrap(), "GET", "/api/stats", "");
        (stats["cluster"]["link_up"] == false).then_some(())
    });
    // A member when the link went: it misses what is sent meanwhile.
    let (code, reason) = close_of(&mut before);
    assert_eq!(code, 1013);
    assert!(reason.contains("room messages were lost"), "{reason}");
    // A member that joins meanwhile may join, but what it sends is dropped
    // (or, when the subscriber's loss is noticed after it joined, it is
    // closed with the members: either way 1013 and told why).
    let mut after = room_members(a.addr, "x", 1).remove(0);
    after.send(0x2, true, &[1, 2, 3]);
    let (code, reason) = close_of(&mut after);
    assert_eq!(code, 1013);
    assert!(
        reason.contains("your message was dropped") || reason.contains("room messages were lost"),
        "{reason}"
    );
}

/// The next `presence` push on `watcher`: `(joined, left)`.
fn next_presence(watcher: &mut WsClient) -> (Value, Value) {
    loop {
        let push = watcher.push().expect("connection open");
        if push["push"] == "presence" {
            return (push["joined"].clone(), push["left"].clone());
        }
    }
}

/// Every `presence` push on `watcher` until the publication `marker`.
fn presence_until(watcher: &mut WsClient, marker: &Value) -> Vec<(Value, Value)> {
    let mut seen = Vec::new();
    loop {
        let push = watcher.push().expect("connection open");
        if push["push"] == "presence" {
            seen.push((push["joined"].clone(), push["left"].clone()));
        } else if push["push"] == "pub" && &push["data"] == marker {
            return seen;
        }
    }
}

#[test]
fn joins_and_leaves_reach_the_watchers_of_every_node_once() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a", &[]), node(&redis, "b", &[]));
    wait_cluster(&a, 2);
    wait_cluster(&b, 2);
    let watch = json!({"channel": "lobby", "join_leave": true});
    let joined = |u: &str| (json!([u]), json!([]));
    let left = |u: &str| (json!([]), json!([u]));
    let mut on_b = user(b.addr, "wb");
    assert!(on_b.call("subscribe", watch.clone()).get("result").is_some());
    assert_eq!(next_presence(&mut on_b), joined("wb"));
    let mut on_a = user(a.addr, "wa");
    assert!(on_a.call("subscribe", watch).get("result").is_some());
    assert_eq!(next_presence(&mut on_b), joined("wa"), "a's join crossed to b");
    // wb's join crosses to a through Redis; it may arrive after wa's own
    // subscribe (wa then sees it too, once). Everything before a marker
    // published after both joins:
    let mut setup = WsClient::open(b.addr, "");
    publish(&mut setup, "lobby", json!("setup"));
    let seen = presence_until(&mut on_a, &json!("setup"));
    let once = [
        vec![joined("wa")],
        vec![joined("wa"), joined("wb")],
        vec![joined("wb"), joined("wa")],
    ];
    assert!(once.contains(&seen), "{seen:?}");
    assert_eq!(presence_until(&mut on_b, &json!("setup")), Vec::new());
    // A subscriber on each node comes and goes; both watchers see it.
    for (node, name) in [(&a, "guest-a"), (&b, "guest-b")] {
        let mut guest = user(node.addr, name);
        assert!(guest
            .call("subscribe", json!({"channel": "lobby"}))
            .get("result")
            .is_some());
        assert_eq!(next_presence(&mut on_a), joined(name));
        assert_eq!(next_presence(&mut on_b), joined(name));
        drop(guest);
        assert_eq!(next_presence(&mut on_a), left(name));
        assert_eq!(next_presence(&mut on_b), left(name));
    }
    // Nothing more (no echo of a node's own events): publications from
    // each node arrive after any late duplicate would have.
    std::thread::sleep(Duration::from_millis(300));
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "lobby", json!("end"));
    assert_eq!(presence_until(&mut on_a, &json!("end")), Vec::new());
    assert_eq!(presence_until(&mut on_b, &json!("end")), Vec::new());
}

#[test]
fn cluster_subscribes_and_publishes_count_against_the_new_channel_window() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, "a", &["--max-new-channels-per-minute", "2"]);
    wait_cluster(&a, 1);
    let mut client = WsClient::open(a.addr, "");
    for channel in ["s1", "s2"] {
        let reply = client.call("subscribe", json!({"channel": channel}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let reply = client.call("subscribe", json!({"channel": "s3"}));
    assert_eq!(reply["error"]["code"], 110, "third new channel: {reply}");
    let reply = client.call("publish", json!({"channel": "p1", "data": 1}));
    assert_eq!(reply["error"]["code"], 110, "a publish makes channels too: {reply}");
    // Channels with a log here make nothing: still served.
    let reply = client.call("publish", json!({"channel": "s1", "data": 1}));
    assert!(reply.get("result").is_some(), "{reply}");
    // A publish counts when it made the channel in Redis: one that exists
    // in the cluster (made on node b) is served without the window, and so
    // is a channel this client made, published to again.
    let b = node(&redis, "b", &[]);
    wait_cluster(&b, 2);
    publish(&mut WsClient::open(b.addr, ""), "elsewhere", json!(0));
    let reply = client.call("publish", json!({"channel": "elsewhere", "data": 1}));
    assert!(reply.get("result").is_some(), "{reply}");
    let mut other = WsClient::open(a.addr, "");
    for channel in ["p1", "p2", "p1", "p2", "elsewhere"] {
        let reply = other.call("publish", json!({"channel": channel, "data": 1}));
        assert!(reply.get("result").is_some(), "{channel}: {reply}");
    }
    let reply = other.call("publish", json!({"channel": "p3", "data": 1}));
    assert_eq!(reply["error"]["code"], 110, "{reply}");
    let reply = other.call("subscribe", json!({"channel": "s4"}));
    assert_eq!(
        reply["error"]["code"], 110,
        "publishes and subscribes share it: {reply}"
    );
}

#[test]
fn channels_spread_over_two_redis_servers_and_cross_nodes_on_each() {
    let (Some(first), Some(second)) = (Redis::start(), Redis::start()) else {
        return;
    };
    let link = ["--redis", &first.url(), "--redis", &second.url()];
    let (a, b) = (node_on(&link, "a", &[]), node_on(&link, "b", &[]));
    wait_cluster(&a, 2);
    wait_cluster(&b, 2);
    let channels: Vec<String> = (0..16).map(|i| format!("spread:{i}")).collect();
    // Subscribers on each node, publishers on the other.
    for (from, to) in [(&a, &b), (&b, &a)] {
        let mut sub = WsClient::open(to.addr, "");
        for channel in &channels {
            let reply = sub.call("subscribe", json!({"channel": channel}));
            assert!(reply.get("result").is_some(), "{reply}");
        }
        let mut publisher = WsClient::open(from.addr, "");
        for channel in &channels {
            publish(&mut publisher, channel, json!(channel));
        }
        let mut got: Vec<String> = (0..channels.len())
            .map(|_| {
                let push = next_pub(&mut sub);
                assert_eq!(push["data"], push["channel"], "{push}");
                push["channel"].as_str().unwrap().to_string()
            })
            .collect();
        got.sort();
        let mut want = channels.clone();
        want.sort();
        assert_eq!(got, want);
    }
    // Each channel's keys live on exactly one server, and each server has some.
    let on = |redis: &Redis| redis.keys("hubbub:c:spread:*:o");
    let (on_first, on_second) = (on(&first), on(&second));
    assert!(
        !on_first.is_empty() && !on_second.is_empty(),
        "{on_first:?} {on_second:?}"
    );
    assert!(on_first.iter().all(|k| !on_second.contains(k)), "a channel on both");
    assert_eq!(on_first.len() + on_second.len(), channels.len());
    // The nodes' entries are on the first only; presence still spans nodes.
    assert!(second.keys("hubbub:n*").is_empty(), "{:?}", second.keys("hubbub:n*"));
    assert_eq!(first.keys("hubbub:nodes"), ["hubbub:nodes"]);
    let mut watcher = user(a.addr, "ann");
    let mut other = user(b.addr, "ben");
    for client in [&mut watcher, &mut other] {
        assert!(client
            .call("subscribe", json!({"channel": "spread:1"}))
            .get("result")
            .is_some());
    }
    let admin = a.admin.unwrap();
    let want = json!({"users": {"ann": 1, "ben": 1}, "anonymous": 0, "total": 2});
    let mut last = Value::Null;
    let seen = try_until(|| {
        last = presence(admin, "spread:1");
        (last == want).then_some(())
    });
    assert!(seen.is_some(), "presence: {last}");
    // An idle node's bridge threads sleep: none of them spins (the second
    // server's command thread once waited for a heartbeat it never makes).
    for node in [&a, &b] {
        let busy = |pid: u32| -> u64 {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                .filter(|stat| stat.contains("(hubbub-cluster"))
                .map(|stat| {
                    // utime and stime, after the `(comm)` field.
                    let rest = &stat[stat.rfind(')').unwrap() + 2..];
                    let fields: Vec<&str> = rest.split(' ').collect();
                    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
                })
                .sum()
        };
        let pid = node.child.id();
        let before = busy(pid);
        std::thread::sleep(Duration::from_secs(2));
        let ticks = busy(pid) - before;
        // 2 s of a spinning thread is 200 ticks; idle threads take a few.
        assert!(ticks < 50, "the bridge threads took {ticks} CPU ticks in 2 s of idling");
    }
}
