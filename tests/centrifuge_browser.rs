//! The Centrifuge SDK's browser build (npm `centrifuge`, pinned in
//! tests/node/package-lock.json) in headless Chromium against a real hubbub
//! on `/connection/websocket`: tests/browser/centrifuge_sdk.html connects
//! with a token and with a getToken callback, subscribes, publishes,
//! queries presence, presence stats and history, is disconnected by the
//! server API and recovers what it missed, and refreshes 4 s tokens; it
//! reports what it saw as JSON, asserted here in detail. The test's page
//! server (tests/common/browser.rs) is the page's application backend: it
//! issues the JWTs and passes `/api/*` calls to the server API with the key.
//! A missing `chromium` skips the test locally with a message; under CI
//! (`CI` set) it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::browser::{run_page, PageCall};
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "centrifuge-browser-secret-of-32-bytes!";
const API_KEY: &str = "centrifuge-browser-api-key";
/// How long the browser may run: the page's longest step waits 9 s for
/// token refreshes, and bounds itself at 40 s.
const PAGE_LIMIT: Duration = Duration::from_secs(60);

fn centrifuge_js() -> PathBuf {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/node_modules/centrifuge/dist/centrifuge.js");
    assert!(
        file.exists(),
        "{} is missing: run `npm ci` in tests/node (.ci/run does)",
        file.display()
    );
    file
}

/// The page's backend: `/token?sub=U&ttl=S` and `/api/*` (to the server API).
fn backend(admin: std::net::SocketAddr) -> impl Fn(&PageCall) -> (u16, String) + Send + Sync + 'static {
    move |call: &PageCall| match (call.method.as_str(), call.path.as_str()) {
        ("GET", "/token") => {
            let Some(sub) = call.query.get("sub") else {
                return (400, "sub is required".into());
            };
            let ttl: u64 = call.query.get("ttl").and_then(|t| t.parse().ok()).unwrap_or(3600);
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
            (200, token(SECRET, json!({"sub": sub, "exp": now + ttl})))
        }
        ("POST", path) if path.starts_with("/api/") => {
            let (status, answer) = api_call(admin, "POST", path, Some(API_KEY), &call.body);
            (status, answer.to_string())
        }
        _ => (404, format!("no {} {}", call.method, call.path)),
    }
}

fn offsets(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|p| p["offset"].as_u64().unwrap_or_else(|| panic!("no offset: {p}")))
        .collect()
}

#[test]
fn the_sdk_in_headless_chromium_connects_publishes_queries_recovers_and_refreshes() {
    if !have("chromium", "apt-get install chromium") {
        return;
    }
    let script = centrifuge_js();
    let server = start(|c| {
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.api_key = Some(API_KEY.into());
        c.hub.history.size = 3;
    });
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/centrifuge_sdk.html");
    let profile = std::env::temp_dir().join(format!("hubbub-cf-chromium-{}", std::process::id()));
    let query = format!("ws=ws://{}/connection/websocket", server.addr);
    let run = run_page(
        &[("/centrifuge_sdk.html", page), ("/centrifuge.js", script)],
        "/centrifuge_sdk.html",
        &query,
        backend(server.admin_addr()),
        &profile,
        PAGE_LIMIT,
    );
    let Some(r) = run.result else {
        panic!(
            "the page never reported ({:?}); stderr tail:\n{}",
            run.status,
            run.stderr_tail(20)
        );
    };
    assert_eq!(r["errors"], json!([]), "the page's errors: {r:#}");
    assert!(r["user_agent"].as_str().is_some_and(|ua| ua.contains("Chrome")), "{r}");

    let b = &r["basic"];
    // Connected with a token, and with a getToken callback asked once.
    assert!(b["alice"]["client"].as_str().is_some_and(|c| !c.is_empty()), "{b:#}");
    assert_eq!(b["alice"]["transport"], "websocket", "{b:#}");
    assert_eq!(b["bob_token_asked"], 1, "{b:#}");
    assert_ne!(b["alice"]["client"], b["bob"]["client"], "{b:#}");
    assert_eq!(b["bob_subscribed"]["recoverable"], true, "{b:#}");
    // Publications from the SDK (two ways) and the server API, in order.
    assert_eq!(b["api_publish"][0], 200, "{b:#}");
    let texts: Vec<&str> = b["bob_got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["text"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(texts, ["hi", "again", "from the api"], "{b:#}");
    assert_eq!(offsets(&b["bob_got"]), [1, 2, 3], "{b:#}");
    assert!(b["joins"].as_array().unwrap().contains(&json!("bob")), "{b:#}");
    // Presence: both clients, one each, keyed `user#n` as docs/PROTOCOL.md
    // says (the hub counts each user's subscriptions, it keeps no client ids).
    assert_eq!(b["presence_users"], json!(["alice", "bob"]), "{b:#}");
    assert_eq!(b["presence_clients"], json!(["alice#1", "bob#1"]), "{b:#}");
    assert_eq!(b["presence_stats"], json!({"numClients": 2, "numUsers": 2}), "{b:#}");
    // History: all three, newest first, after an offset.
    assert_eq!(offsets(&b["history"]["publications"]), [1, 2, 3], "{b:#}");
    assert_eq!(b["history"]["offset"], 3, "{b:#}");
    let epoch = b["history"]["epoch"].as_str().unwrap_or("");
    assert!(!epoch.is_empty(), "{b:#}");
    assert_eq!(b["bob_subscribed"]["epoch"], epoch, "one stream: {b:#}");
    assert_eq!(b["history_reverse"], json!([3, 2]), "{b:#}");
    assert_eq!(b["history_after_1"], json!([2, 3]), "{b:#}");
    assert_eq!(b["left"], "bob", "{b:#}");

    let rc = &r["recover"];
    assert_eq!(rc["publish_status"], json!(vec![200; 7]), "{rc:#}");
    assert_eq!(rc["before"], json!([1, 2, 3]), "{rc:#}");
    assert_eq!(rc["disconnect"][0], 200, "{rc:#}");
    assert_eq!(rc["disconnect"][1]["closed"], 1, "{rc:#}");
    let code = rc["connecting"]["code"].as_u64().unwrap_or(0);
    assert!(
        (3000..5000).contains(&code),
        "a reconnectable close, not {code}: {rc:#}"
    );
    assert_eq!(rc["state_while_away"], "connecting", "{rc:#}");
    // Every publication once, in order: 4-6 recovered (history of 3), 7 live.
    assert_eq!(offsets(&rc["got"]), [1, 2, 3, 4, 5, 6, 7], "{rc:#}");
    let ns: Vec<u64> = rc["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(ns, [1, 2, 3, 4, 5, 6, 7], "{rc:#}");
    assert_eq!(
        rc["subscribed"],
        json!([
            {"wasRecovering": false, "recovered": false},
            {"wasRecovering": true, "recovered": true}
        ]),
        "{rc:#}"
    );

    let rf = &r["refresh"];
    // One `connecting` (the connect() call itself), no disconnect, while
    // 4 s tokens were refreshed for 9 s: at least twice after the first.
    let events = rf["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "the connection never ended: {rf:#}");
    assert_eq!(events[0]["event"], "connecting", "{rf:#}");
    assert!(rf["held_ms"].as_u64().unwrap_or(0) >= 9000, "{rf:#}");
    let asked = rf["asked"].as_u64().unwrap_or(0);
    assert!(asked >= 3, "getToken asked {asked} times in 9 s of 4 s tokens: {rf:#}");
    assert_eq!(rf["publish_status"], 200, "{rf:#}");
    assert_eq!(rf["got"], json!(["still here"]), "{rf:#}");
    assert_eq!(rf["state"], "connected", "{rf:#}");

    let stats = server.wait_for("every page connection gone", |s| s.open == 0);
    assert!(stats.upgraded >= 5, "alice, bob, reader twice, short: {stats:?}");
}
