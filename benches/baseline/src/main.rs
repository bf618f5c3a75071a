//! # hubbub-baseline: the BASELINE comparison server, not hubbub
//!
//! This is what a Rust developer would write instead of hubbub: tokio plus
//! tokio-tungstenite, one task per connection, rooms as `tokio::sync::broadcast`
//! channels in a map behind one `Mutex`. It is deliberately idiomatic and not
//! tuned, so benchmark numbers against it say what hubbub's design buys.
//!
//! Endpoints:
//! - `GET /echo`: every text or binary message is sent back to its sender.
//! - `GET /room/NAME`: every message a member sends goes to every member of
//!   room NAME, the sender included.
//!
//! Any other path is refused with `404 Not Found` during the handshake.
//!
//! On start it prints exactly one line to stdout, `baseline listening on
//! ws://ADDR`, with the port the kernel really bound (so `--listen
//! 127.0.0.1:0` works for scripts).
//!
//! The one deliberate deviation from the tokio-tungstenite examples: accepted
//! sockets get `TCP_NODELAY`, so latency comparisons measure WebSocket handling
//! rather than Nagle's algorithm.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Default broadcast capacity per room, in messages: large enough that a
/// 10,000-subscriber fan-out test does not make receivers lag.
const DEFAULT_ROOM_CAPACITY_MESSAGES: usize = 65_536;

/// BASELINE comparison server for hubbub benchmarks (tokio + tokio-tungstenite).
#[derive(Debug, Parser)]
#[command(name = "hubbub-baseline", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Tokio worker threads (benchmarks pin the server to one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Per-connection read and write buffer size in bytes
    /// (WebSocketConfig read_buffer_size and write_buffer_size). Default:
    /// tungstenite's (128 KiB each); the "tuned" run uses 4096.
    #[arg(long, value_name = "BYTES")]
    read_buffer_size: Option<usize>,

    /// Largest accepted message and frame in bytes. Default: tungstenite's
    /// (64 MiB message, 16 MiB frame), enough for Autobahn's 9.* cases.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,

    /// Messages a room's broadcast channel holds before slow members lag.
    #[arg(long, value_name = "MESSAGES", default_value_t = DEFAULT_ROOM_CAPACITY_MESSAGES)]
    room_capacity: usize,
}

/// Rooms by name. Idiomatic, not tuned: one map behind one lock.
type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

/// What the handshake's request path asked for.
enum Route {
    Echo,
    Room(String),
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_io()
        .build()?;
    // The accept loop is spawned so that it, too, runs on the worker threads
    // rather than on the main thread that blocks here.
    runtime.block_on(async move {
        tokio::spawn(serve(args))
            .await
            .expect("accept loop panicked")
    })
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    announce(listener.local_addr()?)?;

    let config = ws_config(&args);
    let rooms: Rooms = Arc::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // EMFILE and friends: report and keep serving the others.
            Err(err) => {
                eprintln!("baseline: accept failed: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(stream, config, rooms.clone(), args.room_capacity));
    }
}

/// The one line scripts wait for; flushed at once because stdout may be a pipe.
fn announce(addr: SocketAddr) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "baseline listening on ws://{addr}")?;
    stdout.flush()
}

fn ws_config(args: &Args) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    if let Some(size) = args.read_buffer_size {
        config = config.read_buffer_size(size).write_buffer_size(size);
    }
    if let Some(max) = args.max_message_size {
        config = config.max_message_size(Some(max)).max_frame_size(Some(max));
    }
    config
}

// The callback's error type is tungstenite's `ErrorResponse`, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn handle(stream: TcpStream, config: WebSocketConfig, rooms: Rooms, capacity: usize) {
    let mut route = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        route = parse_route(req.uri().path());
        match route {
            Some(_) => Ok(resp),
            None => {
                let mut refusal = ErrorResponse::new(Some("not found\n".into()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                Err(refusal)
            }
        }
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return; // a failed handshake concerns only that client
    };
    match route {
        Some(Route::Echo) => echo(ws).await,
        Some(Route::Room(name)) => room(ws, &rooms, name, capacity).await,
        None => {}
    }
}

fn parse_route(path: &str) -> Option<Route> {
    if path == "/echo" {
        return Some(Route::Echo);
    }
    let name = path.strip_prefix("/room/")?;
    (!name.is_empty()).then(|| Route::Room(name.to_owned()))
}

/// The tokio-tungstenite Autobahn example server, verbatim in spirit: read
/// until the stream ends (tungstenite answers pings and closes by itself).
async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// One reader task and one writer task per member, as in the usual
/// axum/tokio chat examples; whichever ends first stops the other.
async fn room(ws: WebSocketStream<TcpStream>, rooms: &Rooms, name: String, capacity: usize) {
    let (tx, mut rx) = join(rooms, &name, capacity);
    let (mut sink, mut stream) = ws.split();

    let mut writer = tokio::spawn(async move {
        let mut warned = false;
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    if sink.send(msg).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    if !warned {
                        eprintln!("baseline: a room member lagged and skipped {skipped} messages");
                        warned = true;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let room_tx = tx.clone();
    let mut reader = tokio::spawn(async move {
        // Keep reading after a Close so tungstenite can flush its reply.
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_text() || msg.is_binary() {
                let _ = room_tx.send(msg);
            }
        }
    });
    tokio::select! {
        _ = &mut writer => reader.abort(),
        _ = &mut reader => writer.abort(),
    }
    let _ = writer.await;
    let _ = reader.await;
    leave(rooms, &name, tx);
}

fn join(
    rooms: &Rooms,
    name: &str,
    capacity: usize,
) -> (broadcast::Sender<Message>, broadcast::Receiver<Message>) {
    let mut rooms = rooms.lock().expect("room map lock poisoned");
    let tx = rooms
        .entry(name.to_owned())
        .or_insert_with(|| broadcast::channel(capacity.max(1)).0)
        .clone();
    let rx = tx.subscribe();
    (tx, rx)
}

/// Drops the room when its last member leaves, so the map does not grow
/// without bound over a long benchmark.
fn leave(rooms: &Rooms, name: &str, tx: broadcast::Sender<Message>) {
    let mut rooms = rooms.lock().expect("room map lock poisoned");
    if tx.receiver_count() == 0 {
        rooms.remove(name);
    }
}
