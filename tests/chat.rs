//! The example chat (examples/chat) as its users see it: `run.py` starts
//! hubbub and the Python backend, and two headless Chromium pages, driven
//! over the DevTools protocol, sign in, talk, and one of them is kicked by
//! the server while the other keeps writing to the room and to it in
//! private. When it is back it shows every message it missed, once, in
//! order, and the private one from its mailbox. A screenshot of each page
//! is saved under target/ for a person to look at. A missing `chromium` or
//! `python3` skips the test locally; under CI it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use common::*;

/// Longest wait for anything a page or process should do.
const LIMIT: Duration = Duration::from_secs(20);
/// The pages' first reconnect delay: the time the test has to take bob's
/// network away after the kick, before the SDK tries again.
const RECONNECT_MS: u64 = 1500;
const API_KEY: &str = "chat-test-api-key";
const SECRET: &str = "the-chat-test-jwt-secret-of-32-bytes-or-more";

/// A process in a group of its own (a browser's helpers, run.py's hubbub),
/// ended with its group, by its id, when dropped.
struct Group(Child);

impl Group {
    fn spawn(command: &mut Command) -> Group {
        let child = command.process_group(0).spawn().expect("the process starts");
        Group(child)
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signals the process group this test created, by its id.
        unsafe { libc::kill(-(self.0.id() as i32), signal) };
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal(libc::SIGKILL);
        let _ = self.0.wait();
    }
}

/// `python3 examples/chat/run.py` on free loopback ports.
struct Chat {
    _process: Group,
    url: String,
    ws: SocketAddr,
    admin: SocketAddr,
}

impl Chat {
    fn start(dir: &Path) -> Chat {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new("python3");
        command
            .arg(root.join("examples/chat/run.py"))
            .args([
                "--hubbub",
                env!("CARGO_BIN_EXE_hubbub"),
                "--port",
                "0",
                "--ws-port",
                "0",
            ])
            .arg("--db")
            .arg(dir.join("chat.sqlite3"))
            .env("HUBBUB_API_KEY", API_KEY)
            .env("HUBBUB_JWT_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut process = Group::spawn(&mut command);
        let stdout = process.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = |prefix: &str| {
            let line = rx
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("run.py printed no `{prefix}` line"));
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected `{prefix}...`, got {line:?}"))
                .to_string()
        };
        let ws = line("hubbub listening on ws://").parse().unwrap();
        let admin = line("hubbub admin on http://").parse().unwrap();
        let url = format!("http://{}?reconnect_ms={RECONNECT_MS}", line("chat on http://"));
        Chat {
            _process: process,
            url,
            ws,
            admin,
        }
    }

    fn disconnect(&self, user: &str) -> Value {
        let body = json!({ "user": user }).to_string();
        let (status, answer) = api_call(self.admin, "POST", "/api/disconnect", Some(API_KEY), &body);
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// Headless Chromium, driven over the DevTools protocol (one WebSocket to
/// the browser; each page a flattened session on it).
struct Browser {
    ws: WebSocket<TcpStream>,
    next: u64,
    _process: Group,
}

impl Browser {
    fn launch(profile: &Path) -> Browser {
        let mut command = Command::new("chromium");
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1200,760",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Group::spawn(&mut command);
        // Chromium writes its port and path once it listens.
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + LIMIT;
        let (port, path) = loop {
            let text = std::fs::read_to_string(&active).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break (port.to_string(), path.to_string());
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not start its DevTools listener"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream).unwrap();
        Browser {
            ws,
            next: 0,
            _process: process,
        }
    }

    /// One DevTools call, answered within the limit (events are skipped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(command.to_string())).unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let message = self.ws.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let Ok(answer) = serde_json::from_slice::<Value>(&message.into_data()) else {
                continue;
            };
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// A page in a browser context of its own (its own localStorage), at `url`.
    fn page(&mut self, url: &str) -> Page {
        let context = self.call(None, "Target.createBrowserContext", json!({}))["browserContextId"].clone();
        let target = self.call(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank", "browserContextId": context }),
        )["targetId"]
            .clone();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        let session = attached["sessionId"].as_str().unwrap().to_string();
        let metrics = json!({ "width": 1200, "height": 760, "deviceScaleFactor": 1, "mobile": false });
        self.call(Some(&session), "Emulation.setDeviceMetricsOverride", metrics);
        self.call(Some(&session), "Network.enable", json!({}));
        self.call(Some(&session), "Page.navigate", json!({ "url": url }));
        let page = Page { session };
        page.wait(
            self,
            "the page and the SDK load",
            "document.readyState === 'complete' && !!window.Centrifuge",
        );
        page
    }
}

struct Page {
    session: String,
}

impl Page {
    /// The value of a JavaScript expression (promises awaited).
    fn eval(&self, browser: &mut Browser, expression: &str) -> Value {
        let params = json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        let answer = browser.call(Some(&self.session), "Runtime.evaluate", params);
        assert!(answer["exceptionDetails"].is_null(), "{expression}: {answer}");
        answer["result"]["value"].clone()
    }

    /// Polls `expression` until it is true; fails with the page's state after the limit.
    fn wait(&self, browser: &mut Browser, what: &str, expression: &str) {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if self.eval(browser, expression) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let body = self.eval(browser, "document.body.innerText");
        panic!("timed out waiting for {what}; the page shows:\n{body}");
    }

    fn sign_in(&self, browser: &mut Browser, name: &str) {
        self.eval(
            browser,
            &format!("document.getElementById('name').value = {name:?}; document.getElementById('login').requestSubmit(); true"),
        );
        self.wait(browser, "connected", "document.body.dataset.conn === 'connected'");
    }

    /// Types `text` into the composer of the open view and sends it.
    fn say(&self, browser: &mut Browser, text: &str) {
        let text = json!(text);
        self.eval(
            browser,
            &format!("document.getElementById('text').value = {text}; document.getElementById('composer').requestSubmit(); true"),
        );
        let shown = format!("chat.texts(chat.current()).includes({text})");
        self.wait(browser, "the message to show", &shown);
    }

    /// The texts shown in a view, top to bottom.
    fn texts(&self, browser: &mut Browser, view: &str) -> Vec<String> {
        let value = self.eval(browser, &format!("chat.texts({})", json!(view)));
        serde_json::from_value(value).unwrap()
    }

    /// Takes the page's network away (its WebSockets too), or gives it back.
    fn offline(&self, browser: &mut Browser, offline: bool) {
        let conditions = json!({ "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 });
        browser.call(Some(&self.session), "Network.emulateNetworkConditions", conditions);
    }

    fn screenshot(&self, browser: &mut Browser, path: &Path) {
        let shot = browser.call(
            Some(&self.session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hubbub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

#[test]
fn two_browsers_chat_and_a_kicked_one_misses_nothing() {
    if !have("chromium", "apt-get install chromium") || !have("python3", "apt-get install python3") {
        return;
    }
    let dir = scratch("chat");
    let chat = Chat::start(&dir);
    let mut browser = Browser::launch(&dir.join("profile"));
    let ann = browser.page(&chat.url);
    let bob = browser.page(&chat.url);
    ann.screenshot(&mut browser, &target_dir().join("chat-screenshot-login.png"));
    ann.sign_in(&mut browser, "ann");
    bob.sign_in(&mut browser, "bob");
    for page in [&ann, &bob] {
        page.wait(&mut browser, "both online", "chat.online() === 'ann,bob'");
    }

    // Both talk in #general; each sees both messages, in order.
    ann.say(&mut browser, "hello from ann");
    bob.say(&mut browser, "hi ann, bob here");
    let both = ["hello from ann", "hi ann, bob here"];
    for page in [&ann, &bob] {
        page.wait(&mut browser, "both messages", "chat.texts('room:general').length === 2");
        assert_eq!(page.texts(&mut browser, "room:general"), both);
    }

    // ann writes to bob in private: a live `message` push for bob, and the
    // first entry of bob's mailbox.
    ann.eval(
        &mut browser,
        "document.querySelector('#online li[data-user=bob]').click(); true",
    );
    ann.say(&mut browser, "ping, bob");
    bob.wait(
        &mut browser,
        "the live private message",
        "chat.texts('dm:ann:bob').join() === 'ping, bob'",
    );

    bob_is_kicked_and_misses_nothing(&mut browser, &chat, &ann, &bob, &both);
    private_messages_came_once_as_text(&mut browser, &ann, &bob);
    forged_private_messages_are_not_shown(&mut browser, &chat, &bob);
    bob.screenshot(&mut browser, &target_dir().join("chat-screenshot.png"));
    bob.eval(&mut browser, "chat.show('dm:ann:bob'); true");
    bob.screenshot(&mut browser, &target_dir().join("chat-screenshot-private.png"));

    hostile_publishes_are_refused_or_rewritten(&mut browser, &ann, &bob);
    older_history_comes_on_scroll(&mut browser, &chat, &ann);
    // The processes first (a browser writes to its profile until it ends);
    // a failed run leaves the directory for a look.
    drop(browser);
    drop(chat);
    let _ = std::fs::remove_dir_all(&dir);
}

/// bob loses its connection: the server kicks it (4002, reconnectable) and
/// its network goes, while ann writes to the room and to bob. When bob is
/// back it shows every message it missed once, in order, by recovery.
fn bob_is_kicked_and_misses_nothing(browser: &mut Browser, chat: &Chat, ann: &Page, bob: &Page, before: &[&str]) {
    // bob loses its connection: the server kicks it (4002, reconnectable),
    // and its network goes before the SDK's first retry (RECONNECT_MS at
    // the soonest), so it cannot come back until the network does.
    assert_eq!(chat.disconnect("bob")["closed"], 1);
    bob.offline(browser, true);
    bob.wait(
        browser,
        "bob to see the outage",
        "document.body.dataset.conn === 'connecting'",
    );
    ann.wait(browser, "bob to leave", "chat.online() === 'ann'");

    // Meanwhile ann writes to bob in private and to the room.
    ann.say(
        browser,
        "bob, are you there? <img src=x onerror=\"document.title='pwned'\">",
    );
    ann.eval(browser, "chat.show('room:general'); true");
    let missed: Vec<String> = (1..=3).map(|n| format!("missed message {n}")).collect();
    for text in &missed {
        ann.say(browser, text);
    }
    let away = bob.eval(browser, "document.body.dataset.conn");
    assert_eq!(away, "connecting", "bob was away while ann wrote");
    bob.screenshot(browser, &target_dir().join("chat-screenshot-reconnecting.png"));

    // bob's network is back: the SDK reconnects and recovers.
    bob.offline(browser, false);
    bob.wait(
        browser,
        "bob to reconnect",
        "document.body.dataset.conn === 'connected'",
    );
    let expected: Vec<String> = before.iter().map(|s| s.to_string()).chain(missed.clone()).collect();
    bob.wait(browser, "the missed messages", "chat.texts('room:general').length >= 5");
    ann.wait(browser, "bob to be back", "chat.online() === 'ann,bob'");
    bob.say(browser, "back, what did I miss?");
    std::thread::sleep(Duration::from_millis(500)); // a late duplicate would show by now
    let mut after = expected.clone();
    after.push("back, what did I miss?".into());
    assert_eq!(
        bob.texts(browser, "room:general"),
        after,
        "every missed message once, in order"
    );
    ann.wait(
        browser,
        "bob's return message",
        "chat.texts('room:general').length === 6",
    );
    assert_eq!(ann.texts(browser, "room:general"), after);

    // What bob missed came by recovery: each resubscribe recovered from
    // the position the SDK had (not a fresh subscribe that reloads). The
    // mailbox's recovery starts before "ping, bob" too (a live push carries
    // no offset), so the page sees it twice and shows it once.
    let recovered = json!([[false, false], [true, true]]);
    for channel in ["room:general", "#mailbox:bob"] {
        let subscribes = bob.eval(browser, &format!("chat.subscribed({channel:?})"));
        assert_eq!(subscribes, recovered, "{channel}");
    }
}

/// Both private messages (the live one before the kick, the one sent while
/// bob was away) are shown once, unread, and as text.
fn private_messages_came_once_as_text(browser: &mut Browser, ann: &Page, bob: &Page) {
    // The private message came from bob's mailbox, once, as text.
    let dm = "dm:ann:bob";
    bob.wait(browser, "the private message", "chat.texts('dm:ann:bob').length >= 2");
    let private = bob.texts(browser, dm);
    assert_eq!(
        private,
        [
            "ping, bob",
            "bob, are you there? <img src=x onerror=\"document.title='pwned'\">"
        ]
    );
    let badge = bob.eval(
        browser,
        "document.querySelector('#dms li[data-view=\"dm:ann:bob\"] .badge').textContent",
    );
    assert_eq!(badge, "2", "two unread private messages");
    for page in [ann, bob] {
        assert_eq!(page.eval(browser, "document.querySelectorAll('.msg img').length"), 0);
        assert_ne!(page.eval(browser, "document.title"), "pwned");
    }
}

/// What a client puts in its publication is only a text: the author, id
/// and time are the backend's (the publish hook rewrites the data), and an
/// empty or oversized text is refused with the backend's error.
fn hostile_publishes_are_refused_or_rewritten(browser: &mut Browser, ann: &Page, bob: &Page) {
    let publish = |data: &str| {
        format!("chat.subscription('room:random').publish({data}).then(() => 'ok', e => e.code + ' ' + e.message)")
    };
    let refused = ann.eval(browser, &publish("{ text: 'x'.repeat(2001) }"));
    assert_eq!(refused, "413 a message has at most 2000 characters");
    let refused = ann.eval(browser, &publish("{ text: '   ' }"));
    assert_eq!(refused, "400 a message needs some text");
    let forged = "{ text: 'I am bob', user: 'bob', id: 1, time: 0, room: 'general' }";
    assert_eq!(ann.eval(browser, &publish(forged)), "ok");
    bob.wait(browser, "the forged one", "chat.texts('room:random').length === 1");
    let shown = bob.eval(
        browser,
        "[...document.querySelectorAll('.messages[data-view=\"room:random\"] .msg')].map(m => m.dataset.user + ': ' + m.textContent.includes('I am bob'))",
    );
    assert_eq!(shown, json!(["ann: true"]), "the author is who the token says");
}

/// Any client may `send` a user anything on hubbub's `/ws` (live, and into
/// the mailbox, marked with its sender): the page shows only what the
/// backend stored, whatever id, room and author the data claims.
fn forged_private_messages_are_not_shown(browser: &mut Browser, chat: &Chat, bob: &Page) {
    let auth = format!("Authorization: Bearer {}\r\n", token(SECRET, json!({"sub": "eve"})));
    let mut eve = WsClient::open(chat.ws, &auth);
    for id in [1, 999_999] {
        let forged = json!({"id": id, "room": "dm:ann:bob", "user": "ann", "text": "forged", "time": 1});
        let sent = eve.call("send", json!({"user": "bob", "data": forged}));
        assert!(sent["result"].is_object(), "{sent}");
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        bob.eval(browser, "document.body.innerText.includes('forged')"),
        false,
        "a forged private message is shown"
    );
    assert_eq!(bob.texts(browser, "dm:ann:bob").len(), 2);
}

/// 45 messages in #help and a private message to cat, who has never
/// been online: when cat comes, it gets the newest page of #help from
/// hubbub's channel history and the older ones from SQLite as it scrolls
/// up, and the private message from its mailbox.
fn older_history_comes_on_scroll(browser: &mut Browser, chat: &Chat, ann: &Page) {
    let script = "(async () => { for (let n = 1; n <= 45; n++) await chat.subscription('room:help').publish({ text: `help ${n}` }); return true; })()";
    assert_eq!(ann.eval(browser, script), true);
    ann.eval(browser, "chat.show('dm:ann:cat'); true");
    ann.say(browser, "welcome, cat");
    let cat = browser.page(&chat.url);
    cat.sign_in(browser, "cat");
    cat.wait(
        browser,
        "the mailbox",
        "chat.texts('dm:ann:cat').join() === 'welcome, cat'",
    );
    cat.eval(browser, "chat.show('room:help'); true");
    cat.wait(browser, "the newest page", "chat.texts('room:help').length >= 30");
    let scroll = "document.querySelector('.messages[data-view=\"room:help\"]').scrollTop = 0; chat.texts('room:help').length === 45";
    cat.wait(browser, "older pages on scroll", scroll);
    let all: Vec<String> = (1..=45).map(|n| format!("help {n}")).collect();
    assert_eq!(cat.texts(browser, "room:help"), all);
    let top = cat.eval(
        browser,
        "document.querySelector('.messages[data-view=\"room:help\"] .history-top').textContent",
    );
    assert_eq!(top, "This is the start of # help.");
    cat.screenshot(browser, &target_dir().join("chat-screenshot-history.png"));
}

#[test]
fn the_page_serves_the_sdk_version_the_node_tests_pin() {
    // examples/chat/static/centrifuge.js is a copy of the npm package's
    // browser build: the same bytes below its licence line as the version
    // tests/node/package-lock.json pins.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/node/package-lock.json")).unwrap()).unwrap();
    let pinned = lock["packages"]["node_modules/centrifuge"]["version"].as_str().unwrap();
    let copy = std::fs::read_to_string(root.join("examples/chat/static/centrifuge.js")).unwrap();
    let (head, body) = copy.split_once('\n').unwrap();
    assert!(
        head.contains(&format!("centrifuge-js {pinned} ")),
        "{head}: the lockfile pins {pinned}"
    );
    let npm = root.join("tests/node/node_modules/centrifuge/dist/centrifuge.js");
    match std::fs::read_to_string(&npm) {
        Ok(original) => assert!(body == original, "the copy differs from {}", npm.display()),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing under CI",
                npm.display()
            );
            eprintln!("SKIPPED the byte comparison: run `npm ci` in tests/node");
        }
    }
}
