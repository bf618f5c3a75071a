//! A tiny thread-per-connection WebSocket server on tungstenite's blocking API, for tests only:
//! it is independent of the load tester's own codec, and it offers what the real server cannot
//! (a known delay). Endpoints:
//! - `/echo` echoes every message; `/echo?delay_ms=N` echoes each one N ms after it arrived.
//! - `/room/NAME` sends every message to every member of NAME, sender included.
//! - anything else: 404.
//!
//! A client whose outgoing backlog exceeds `MAX_BACKLOG_BYTES` is cut off (TCP shutdown).

// tungstenite's handshake callback fixes the (large) error type.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::StatusCode;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

const MAX_BACKLOG_BYTES: usize = 256 * 1024;

type Outbox = (Sender<(Instant, Message)>, Arc<AtomicUsize>);
type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, Outbox)>>>>;

/// Starts the fixture on an ephemeral loopback port; it lives as long as the test process.
pub fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let rooms: Rooms = Arc::default();
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let rooms = rooms.clone();
            thread::spawn(move || serve(stream, n as u64, rooms));
        }
    });
    addr
}

fn serve(stream: TcpStream, id: u64, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().to_string();
        if path.starts_with("/echo") || path.starts_with("/room/") {
            Ok(resp)
        } else {
            let mut not_found = ErrorResponse::new(None);
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            Err(not_found)
        }
    };
    let Ok(mut reader) = tungstenite::accept_hdr(stream, callback) else {
        return;
    };
    let Ok(raw) = reader.get_ref().try_clone() else {
        return;
    };
    let delay = path
        .split("delay_ms=")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let outbox = spawn_writer(raw, delay.unwrap_or_default());
    let room = path.strip_prefix("/room/").map(str::to_string);
    if let Some(room) = &room {
        let mut rooms = rooms.lock().unwrap();
        rooms.entry(room.clone()).or_default().push((id, outbox.clone()));
    }
    while let Ok(msg) = reader.read() {
        if !(msg.is_text() || msg.is_binary()) {
            continue;
        }
        let now = Instant::now();
        let targets: Vec<Outbox> = match &room {
            Some(room) => rooms.lock().unwrap()[room].iter().map(|(_, o)| o.clone()).collect(),
            None => vec![outbox.clone()],
        };
        for (tx, queued) in targets {
            queued.fetch_add(msg.len(), Ordering::AcqRel);
            let _ = tx.send((now, msg.clone()));
        }
        if outbox.1.load(Ordering::Acquire) > MAX_BACKLOG_BYTES {
            let _ = reader.get_ref().shutdown(Shutdown::Both);
            break;
        }
    }
    if let Some(room) = &room {
        if let Some(members) = rooms.lock().unwrap().get_mut(room) {
            members.retain(|(m, _)| *m != id);
        }
    }
}

fn spawn_writer(raw: TcpStream, delay: Duration) -> Outbox {
    let (tx, rx) = channel::<(Instant, Message)>();
    let queued = Arc::new(AtomicUsize::new(0));
    let counter = queued.clone();
    thread::spawn(move || {
        let _ = raw.set_write_timeout(Some(Duration::from_secs(2)));
        let mut ws = WebSocket::from_raw_socket(raw, Role::Server, None);
        for (arrived, msg) in rx {
            let due = arrived + delay;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let len = msg.len();
            if ws.send(msg).is_err() {
                let _ = ws.get_ref().shutdown(Shutdown::Both);
                return;
            }
            counter.fetch_sub(len, Ordering::AcqRel);
        }
    });
    (tx, queued)
}
