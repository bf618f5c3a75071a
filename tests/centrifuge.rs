//! `/connection/websocket`, the Centrifuge client protocol (JSON): protocol
//! details with a raw client here, and the real SDK (npm `centrifuge`,
//! pinned in tests/node/package-lock.json) through tests/node/centrifuge_*.js.
//! A missing `node` skips the SDK tests locally with a message; under CI
//! (`CI` set) it fails instead.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::*;
use hubbub::conn::Disconnect;
use serde_json::{json, Value};

const SECRET: &str = "centrifuge-test-secret-of-32-bytes!!";
const API_KEY: &str = "centrifuge-test-api-key";
/// How long one SDK script may run before it is killed.
const SCRIPT_LIMIT: Duration = Duration::from_secs(30);

fn start_hub(tune: impl FnOnce(&mut hubbub::config::Config)) -> TestServer {
    start(|c| {
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.api_key = Some(API_KEY.into());
        tune(c);
    })
}

/// A raw Centrifuge client: commands out, lines (replies and pushes) in.
struct Cf {
    ws: WsClient,
    lines: std::collections::VecDeque<Value>,
    next: u32,
}

impl Cf {
    fn open(addr: std::net::SocketAddr) -> Cf {
        Cf::open_with(addr, "")
    }

    /// Opens with `headers` (`Name: value\r\n` lines) on the upgrade.
    fn open_with(addr: std::net::SocketAddr, headers: &str) -> Cf {
        let ws = WsClient::try_open(addr, "/connection/websocket", headers).expect("upgrade accepted");
        Cf {
            ws,
            lines: Default::default(),
            next: 1,
        }
    }

    /// Opens and connects as `sub`; returns the connect reply.
    fn connected(addr: std::net::SocketAddr, sub: &str) -> (Cf, Value) {
        let mut cf = Cf::open(addr);
        let reply = cf.call("connect", json!({"token": token(SECRET, json!({"sub": sub}))}));
        assert!(reply.get("connect").is_some(), "{reply}");
        (cf, reply)
    }

    fn send(&mut self, frame: &str) {
        self.ws.raw.send_text(frame);
    }

    /// Sends `{"id":N,method:params}` and waits for reply N.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"id": id, method: params}).to_string());
        self.reply(id)
    }

    fn reply(&mut self, id: u32) -> Value {
        let mut seen = Vec::new();
        loop {
            let line = self
                .line()
                .unwrap_or_else(|| panic!("closed before reply {id}; saw {seen:?}"));
            if line["id"] == id {
                self.lines.extend(seen);
                return line;
            }
            seen.push(line);
        }
    }

    /// The next line; `{"closed":code}` at the close, `None` after it.
    fn line(&mut self) -> Option<Value> {
        if let Some(line) = self.lines.pop_front() {
            return Some(line);
        }
        let frame = self.ws.raw.recv()?;
        match frame.opcode {
            0x1 => {
                let text = String::from_utf8(frame.payload).expect("UTF-8");
                for line in text.split('\n') {
                    self.lines
                        .push_back(serde_json::from_str(line).expect("one JSON object a line"));
                }
                self.lines.pop_front()
            }
            0x8 => {
                let code = frame.close_code().unwrap_or(1005);
                let reason = String::from_utf8_lossy(frame.payload.get(2..).unwrap_or(&[])).into_owned();
                Some(json!({"closed": code, "reason": reason}))
            }
            _ => self.line(),
        }
    }

    /// The next push (replies are not expected meanwhile).
    fn push(&mut self) -> Value {
        let line = self.line().expect("connection open");
        assert!(line.get("push").is_some() || line.get("closed").is_some(), "{line}");
        line
    }

    fn closed(&mut self) -> (u64, String) {
        loop {
            let line = self.line().expect("a close frame");
            if let Some(code) = line["closed"].as_u64() {
                return (code, line["reason"].as_str().unwrap_or("").to_string());
            }
        }
    }
}

#[test]
fn connect_comes_first_and_a_bad_token_is_final() {
    let server = start_hub(|c| c.hub.allow_anonymous = false);
    let mut early = Cf::open(server.addr);
    early.send(r#"{"id":1,"subscribe":{"channel":"a"}}"#);
    assert_eq!(early.closed().0, 3501, "nothing before connect");
    let mut forged = Cf::open(server.addr);
    forged.send(r#"{"id":1,"connect":{"token":"a.b.c"}}"#);
    let (code, reason) = forged.closed();
    assert_eq!(code, 3500, "{reason}");
    assert!(reason.starts_with("invalid token"), "{reason}");
    let mut garbage = Cf::open(server.addr);
    garbage.send("{not json");
    assert_eq!(garbage.closed().0, 3501);
    let mut none = Cf::open(server.addr);
    let reply = none.call("connect", json!({}));
    assert_eq!(reply["error"]["code"], 101, "no token, no anonymous access: {reply}");
}

#[test]
fn an_expired_token_is_answered_109_so_the_sdk_asks_for_a_new_one() {
    let server = start_hub(|_| {});
    let mut cf = Cf::open(server.addr);
    let old = token(SECRET, json!({"sub": "u", "exp": 1_000_000}));
    let reply = cf.call("connect", json!({"token": old}));
    assert_eq!(reply["error"]["code"], 109, "{reply}");
    let reply = cf.call("connect", json!({"token": token(SECRET, json!({"sub": "u"}))}));
    let connect = &reply["connect"];
    assert_eq!(connect["expires"], true, "{reply}");
    let ttl = connect["ttl"].as_u64().unwrap();
    assert!((3580..=3590).contains(&ttl), "refresh 10 s before the hour: {ttl}");
    assert!(connect["client"].as_str().is_some_and(|c| !c.is_empty()));
}

#[test]
fn several_commands_in_one_frame_are_each_answered() {
    let server = start_hub(|_| {});
    let (mut cf, _) = Cf::connected(server.addr, "u");
    cf.send(concat!(
        r#"{"id":10,"subscribe":{"channel":"a"}}"#,
        "\n",
        r#"{"id":11,"publish":{"channel":"a","data":{"n":1}}}"#,
        "\n{}\n",
        r#"{"id":12,"presence_stats":{"channel":"a"}}"#,
        "\n",
        r#"{"id":13,"rpc":{"method":"m","data":{}}}"#,
        "\n",
        r#"{"id":14,"unsubscribe":{"channel":"never"}}"#
    ));
    let sub = cf.reply(10);
    assert_eq!(sub["subscribe"]["recoverable"], true, "{sub}");
    assert!(cf.reply(11).get("publish").is_some());
    let stats = cf.reply(12);
    assert_eq!(stats["presence_stats"], json!({"num_clients": 1, "num_users": 1}));
    assert_eq!(cf.reply(13)["error"]["code"], 104, "rpc without --proxy-rpc-url");
    assert_eq!(cf.reply(14), json!({"id": 14, "unsubscribe": {}}));
    let push = cf.push();
    assert_eq!(
        push,
        json!({"push": {"channel": "a", "pub": {"data": {"n": 1}, "offset": 1}}})
    );
    let again = cf.call("subscribe", json!({"channel": "a"}));
    assert_eq!(again["error"]["code"], 105, "{again}");
}

#[test]
fn a_publication_reaches_ws_and_centrifuge_subscribers_on_every_shard() {
    let server = start_hub(|c| c.shards = 3);
    let mut cfs: Vec<Cf> = (0..6)
        .map(|i| Cf::connected(server.addr, &format!("cf{i}")).0)
        .collect();
    for cf in &mut cfs {
        assert!(cf
            .call("subscribe", json!({"channel": "news"}))
            .get("subscribe")
            .is_some());
    }
    let auth = format!("Authorization: Bearer {}\r\n", token(SECRET, json!({"sub": "w"})));
    let mut ws = WsClient::open(server.addr, &auth);
    assert!(ws.call("subscribe", json!({"channel": "news"}))["result"].is_object());
    for n in 0..3 {
        let reply = ws.call("publish", json!({"channel": "news", "data": {"from": "ws", "n": n}}));
        assert!(reply["result"].is_object(), "{reply}");
    }
    assert!(cfs[0]
        .call("publish", json!({"channel": "news", "data": {"from": "cf"}}))
        .get("publish")
        .is_some());
    for cf in &mut cfs {
        let offsets: Vec<u64> = (0..4)
            .map(|_| cf.push()["push"]["pub"]["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, [1, 2, 3, 4]);
    }
    let froms: Vec<Value> = (0..4).map(|_| ws.push().unwrap()["data"]["from"].clone()).collect();
    assert_eq!(froms, [json!("ws"), json!("ws"), json!("ws"), json!("cf")]);
}

#[test]
fn recovery_after_a_kick_gives_what_was_missed_and_says_when_it_cannot() {
    let server = start_hub(|c| c.hub.history.size = 3);
    let (mut cf, _) = Cf::connected(server.addr, "reader");
    let sub = cf.call("subscribe", json!({"channel": "log"}));
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_string();
    let publish = |n: u64| {
        let body = json!({"channel": "log", "data": n}).to_string();
        let (status, _) = api_call(server.admin_addr(), "POST", "/api/publish", Some(API_KEY), &body);
        assert_eq!(status, 200);
    };
    publish(1);
    assert_eq!(cf.push()["push"]["pub"]["offset"], 1);
    let body = json!({"user": "reader"}).to_string();
    let (status, answer) = api_call(server.admin_addr(), "POST", "/api/disconnect", Some(API_KEY), &body);
    assert_eq!((status, answer["closed"].as_u64()), (200, Some(1)));
    let (code, _) = cf.closed();
    assert!((4000..4500).contains(&code), "the SDK reconnects after {code}");
    publish(2);
    publish(3);
    let (mut back, _) = Cf::connected(server.addr, "reader");
    let sub = back.call(
        "subscribe",
        json!({"channel": "log", "recover": true, "offset": 1, "epoch": epoch}),
    );
    let s = &sub["subscribe"];
    assert_eq!(
        (s["was_recovering"].clone(), s["recovered"].clone()),
        (json!(true), json!(true)),
        "{sub}"
    );
    let offsets: Vec<u64> = s["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);
    for n in 4..=8 {
        publish(n);
    }
    let (mut late, _) = Cf::connected(server.addr, "reader2");
    let sub = late.call(
        "subscribe",
        json!({"channel": "log", "recover": true, "offset": 3, "epoch": epoch}),
    );
    let s = &sub["subscribe"];
    assert_eq!(
        (s["was_recovering"].clone(), s["recovered"].clone()),
        (json!(true), json!(false)),
        "history of 3 lost 4 and 5: {sub}"
    );
    assert_eq!(s["offset"], 8);
    assert!(s.get("publications").is_none());
}

#[test]
fn a_silent_upgrade_is_closed_as_stale() {
    let server = start_hub(|_| {});
    let mut cf = Cf::open(server.addr);
    let patience = common::PATIENCE + Duration::from_secs(5);
    cf.ws.raw.stream.set_read_timeout(Some(patience)).unwrap();
    let began = Instant::now();
    let (code, _) = cf.closed();
    assert_eq!(code, 3502);
    let waited = began.elapsed();
    assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");
}

// ---- The real SDK ---------------------------------------------------------

/// Whether `node` runs (skipped with a message locally, a failure under CI).
fn have_node() -> bool {
    have("node", "apt-get install nodejs npm")
}

fn node_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/centrifuge/package.json").exists(),
        "tests/node/node_modules/centrifuge is missing: run `npm ci` in tests/node (.ci/run does)"
    );
    dir
}

/// Starts `script` against `server`; it runs in a process group of its own.
fn spawn_script(script: &str, server: &TestServer) -> std::process::Child {
    let dir = node_dir();
    Command::new("node")
        .arg(dir.join(script))
        .env("HUBBUB_URL", format!("ws://{}", server.addr))
        .env("HUBBUB_ADMIN", format!("http://{}", server.admin_addr()))
        .env("HUBBUB_SECRET", SECRET)
        .env("HUBBUB_API_KEY", API_KEY)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("node starts")
}

/// Waits for `child` up to the limit (then kills its group by id); asserts
/// it printed `ok`.
fn finish(mut child: std::process::Child, script: &str) {
    let deadline = Instant::now() + SCRIPT_LIMIT;
    while child.try_wait().expect("wait for node").is_none() {
        if Instant::now() >= deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok"),
        "{script} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `script` against a server tuned by `tune` (skipped without node).
fn run_script(script: &str, tune: impl FnOnce(&mut hubbub::config::Config)) {
    if !have_node() {
        return;
    }
    let server = start_hub(tune);
    finish(spawn_script(script, &server), script);
}

/// The application's RPC endpoint: `sum` adds the numbers it is given,
/// `refuse` answers with an application error, anything else echoes.
fn rpc_backend() -> Backend {
    Backend::start(|call| {
        let answer = match call.body["method"].as_str() {
            Some("sum") => {
                let sum: i64 = call.body["data"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter_map(Value::as_i64).sum());
                json!({"result": {"data": {"sum": sum, "user": call.body["user"]}}})
            }
            Some("refuse") => json!({"error": {"code": 1001, "message": "not today"}}),
            _ => json!({"result": {"data": call.body["data"]}}),
        };
        (Duration::ZERO, answer)
    })
}

fn with_rpc(backend: &Backend) -> impl FnOnce(&mut hubbub::config::Config) + '_ {
    move |c| {
        c.proxy = Some(hubbub::proxy::ProxyConfig {
            connect_url: None,
            subscribe_url: None,
            publish_url: None,
            rpc_url: Some(backend.url("/rpc")),
            workers: 2,
            timeout: Duration::from_millis(1000),
            max_in_flight: 64,
            http_headers: Vec::new(),
            max_answer_bytes: 1 << 20,
        })
    }
}

#[test]
fn rpc_is_answered_by_the_application_and_its_errors_pass_through() {
    let backend = rpc_backend();
    let server = start_hub(with_rpc(&backend));
    let (mut cf, _) = Cf::connected(server.addr, "carol");
    cf.send(concat!(
        r#"{"id":20,"rpc":{"method":"sum","data":[1,2,39]}}"#,
        "\n",
        r#"{"id":21,"rpc":{"method":"refuse"}}"#
    ));
    let sum = cf.reply(20);
    assert_eq!(sum, json!({"id": 20, "rpc": {"data": {"sum": 42, "user": "carol"}}}));
    let refused = cf.reply(21);
    assert_eq!(refused["error"]["code"], 1001, "{refused}");
    assert_eq!(refused["error"]["message"], "not today", "{refused}");
    let calls = backend.seen();
    assert!(calls.iter().all(|c| c.path == "/rpc"), "{calls:?}");
}

#[test]
fn sdk_connects_subscribes_publishes_and_queries() {
    let backend = rpc_backend();
    run_script("centrifuge_basic.js", with_rpc(&backend));
}

#[test]
fn sdk_recovers_every_missed_publication_exactly_once_after_a_kick() {
    run_script("centrifuge_recover.js", |c| c.hub.history.size = 3);
}

#[test]
fn sdk_reports_a_recovery_the_history_could_not_serve() {
    run_script("centrifuge_lost.js", |c| c.hub.history.size = 3);
}

#[test]
fn sdk_refreshes_its_token_before_expiry_and_stays_connected() {
    run_script("centrifuge_refresh.js", |_| {});
}

#[test]
fn sdk_reconnects_after_a_drain_to_the_server_that_took_the_port() {
    if !have_node() {
        return;
    }
    let old = start_hub(|c| c.drain = Duration::from_secs(1));
    let node = spawn_script("centrifuge_drain.js", &old);
    old.wait_for("the SDK's subscription", |s| s.subscriptions == 1);
    // SO_REUSEPORT: the new server binds the port the old one still holds.
    let new = start_hub(|c| c.listen = old.addr);
    old.stop().expect("the old server drains");
    finish(node, "centrifuge_drain.js");
    new.wait_for("the SDK back on the new server", |s| s.upgraded == 1);
}

#[test]
fn a_frame_over_the_rate_gets_one_refusal_and_no_more() {
    let server = start_hub(|c| c.hub.max_messages_per_sec = 4);
    let (mut cf, _) = Cf::connected(server.addr, "flood");
    let frame: Vec<String> = (10..40)
        .map(|id| json!({"id": id, "presence_stats": {"channel": "a"}}).to_string())
        .collect();
    cf.send(&frame.join("\n"));
    // The connect spent one of the 4: three answered (by the channel's
    // owner, maybe after the refusal), the fourth refused at once.
    let mut answered: Vec<(u64, bool)> = (0..4)
        .map(|_| {
            let line = cf.line().expect("open");
            if line.get("error").is_some() {
                assert_eq!(line["error"]["code"], 111, "{line}");
                assert_eq!(line["error"]["temporary"], true);
            }
            (line["id"].as_u64().unwrap(), line.get("error").is_some())
        })
        .collect();
    answered.sort();
    assert_eq!(answered, [(10, false), (11, false), (12, false), (13, true)]);
    std::thread::sleep(Duration::from_millis(1500));
    let next = cf.call("presence_stats", json!({"channel": "a"}));
    assert!(next.get("presence_stats").is_some(), "{next}");
    assert!(cf.lines.is_empty(), "the dropped rest was not answered: {:?}", cf.lines);
}

#[test]
fn a_ws_private_message_and_a_narrowed_token_reach_the_centrifuge_client() {
    let server = start_hub(|_| {});
    let (mut cf, _) = Cf::connected(server.addr, "ann");
    assert!(cf
        .call("subscribe", json!({"channel": "team:a"}))
        .get("subscribe")
        .is_some());
    let auth = format!("Authorization: Bearer {}\r\n", token(SECRET, json!({"sub": "bob"})));
    let mut ws = WsClient::open(server.addr, &auth);
    let sent = ws.call("send", json!({"user": "ann", "data": {"hi": 1}}));
    assert!(sent["result"].is_object(), "{sent}");
    // Another user's message names its sender (it cannot pass for the
    // application's, which comes as given).
    assert_eq!(
        cf.push(),
        json!({"push": {"message": {"data": {"from": "bob", "data": {"hi": 1}}}}})
    );
    let narrower = token(SECRET, json!({"sub": "ann", "channels": ["team:b"]}));
    let refreshed = cf.call("refresh", json!({"token": narrower}));
    assert_eq!(refreshed["refresh"]["expires"], true, "{refreshed}");
    let push = cf.push();
    assert_eq!(push["push"]["channel"], "team:a");
    assert_eq!(push["push"]["unsubscribe"]["code"], 2000, "for good: {push}");
    let other = cf.call("refresh", json!({"token": token(SECRET, json!({"sub": "eve"}))}));
    assert_eq!(other["error"]["code"], 109, "{other}");
}

#[test]
fn mailbox_messages_reach_a_centrifuge_client_in_its_protocol() {
    // With offline messages on, a `send` is delivered from the user's
    // mailbox: a Centrifuge connection of that user gets a `message` push
    // it can parse, not the `/ws` JSON.
    let server = start_hub(|c| {
        c.hub.mailbox = Some(hubbub::bus::history::HistoryRule {
            size: 12, // bob sends 3: a sender's share is a quarter
            ttl_ticks: 60 * hubbub::tick::TICKS_PER_SEC,
            max_bytes: 1 << 20,
        });
    });
    let (mut cf, _) = Cf::connected(server.addr, "ann");
    let auth = format!("Authorization: Bearer {}\r\n", token(SECRET, json!({"sub": "bob"})));
    let mut ws = WsClient::open(server.addr, &auth);
    for n in 1..=3 {
        let sent = ws.call("send", json!({"user": "ann", "data": {"n": n}}));
        assert!(sent["result"].is_object(), "{sent}");
    }
    for n in 1..=3 {
        let push = cf.push();
        assert!(push["push"]["message"].is_object(), "a Centrifuge message push: {push}");
        assert_eq!(push["push"]["message"]["data"]["data"]["n"], n, "{push}");
        assert_eq!(push["push"]["message"]["data"]["from"], "bob", "{push}");
    }
}

#[test]
fn a_second_connect_while_the_hook_decides_the_first_is_refused() {
    // One frame: a tokenless connect (the hook is asked) and at once one
    // with a valid token. The second must not connect the session while
    // the hook's answer is on its way (it would then be two clients).
    let backend = Backend::start(|_| (Duration::from_millis(300), json!({"result": {"user": "hooked"}})));
    let server = start_hub(|c| {
        c.proxy = Some(hubbub::proxy::ProxyConfig {
            connect_url: Some(backend.url("/connect")),
            subscribe_url: None,
            publish_url: None,
            rpc_url: None,
            workers: 2,
            timeout: Duration::from_millis(2000),
            max_in_flight: 64,
            http_headers: Vec::new(),
            max_answer_bytes: 1 << 20,
        })
    });
    let mut cf = Cf::open(server.addr);
    let valid = token(SECRET, json!({"sub": "carol"}));
    let second = json!({"id": 2, "connect": {"token": valid}});
    cf.send(&format!("{}\n{second}", json!({"id": 1, "connect": {}})));
    let first = cf.line().expect("a line");
    assert_eq!(first["closed"], 3501, "a second connect got in: {first}");
    server.wait_for("the protocol error", |s| {
        s.disconnects_for(Disconnect::ProtocolError) == 1
    });
}

#[test]
fn a_centrifuge_connect_without_a_token_is_decided_by_the_connect_hook() {
    // The connect hook is the application's only gate (no --jwt-secret): a
    // Centrifuge client is asked about at its `connect`, with the listed
    // headers of its upgrade and the connect's `data`, as Centrifugo's connect
    // proxy does. It never gets in around the hook, with or without a token
    // nobody here can verify.
    let backend = Backend::start(|call| {
        let cookie = call
            .headers
            .iter()
            .find(|(n, _)| n == "cookie")
            .map(|(_, v)| v.as_str());
        match cookie {
            Some("sid=ann") => (
                Duration::ZERO,
                json!({"result": {"user": "ann", "data": {"hello": call.body["data"]["name"]}}}),
            ),
            Some("sid=slow") => (Duration::from_millis(1500), json!({"result": {"user": "late"}})),
            _ => (
                Duration::ZERO,
                json!({"error": {"code": 1401, "message": "who are you"}}),
            ),
        }
    });
    let server = start(|c| {
        c.proxy = Some(hubbub::proxy::ProxyConfig {
            connect_url: Some(backend.url("/connect")),
            subscribe_url: None,
            publish_url: None,
            rpc_url: None,
            workers: 2,
            timeout: Duration::from_millis(500),
            max_in_flight: 64,
            http_headers: vec!["cookie".into()],
            max_answer_bytes: 1 << 20,
        })
    });
    let mut ann = Cf::open_with(server.addr, "Cookie: sid=ann\r\n");
    let reply = ann.call("connect", json!({"data": {"name": "Ann"}}));
    assert_eq!(reply["connect"]["data"]["hello"], "Ann", "{reply}");
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    assert!(
        reply["connect"].get("expires").is_none(),
        "no refresh without a refresh hook: {reply}"
    );
    let subscribed = ann.call("subscribe", json!({"channel": "news"}));
    assert!(subscribed.get("subscribe").is_some(), "{subscribed}");
    let presence = ann.call("presence", json!({"channel": "news"}));
    assert!(
        presence.to_string().contains(r#""user":"ann""#),
        "connected as the hook's user: {presence}"
    );
    let asked = backend.seen();
    assert_eq!(asked.len(), 1, "asked once, at the connect");
    assert_eq!(asked[0].body["data"]["name"], "Ann");
    // A waiting connection's headers count toward --memory-limit until its
    // connect takes them.
    let series = r#"hubbub_memory_bytes{kind="proxy"}"#;
    let mut waiting = Cf::open_with(server.addr, "Cookie: sid=waiting\r\n");
    server.wait_metric(series, |v| v >= "cookiesid=waiting".len() as f64);
    assert_eq!(waiting.call("connect", json!({}))["error"]["code"], 1401);
    server.wait_metric(series, |v| v == 0.0);
    // Refused: the application's error, then a close the SDK does not retry.
    for params in [json!({}), json!({"token": "anything"})] {
        let mut cf = Cf::open(server.addr);
        let reply = cf.call("connect", params);
        assert_eq!(reply["error"]["code"], 1401, "let in around the connect hook: {reply}");
        assert_eq!(cf.line().expect("the close")["closed"], 3503);
    }
    // Not answered in time: a temporary error the SDK retries after.
    let mut slow = Cf::open_with(server.addr, "Cookie: sid=slow\r\n");
    let reply = slow.call("connect", json!({}));
    assert_eq!(reply["error"]["code"], 100, "{reply}");
    assert_eq!(reply["error"]["temporary"], true, "{reply}");
    assert_eq!(slow.line().expect("the close")["closed"], 3011);
    server.wait_for("three refusals and one hook outage", |s| {
        s.disconnects_for(Disconnect::ConnectRefused) == 3 && s.disconnects_for(Disconnect::HookUnavailable) == 1
    });
}
