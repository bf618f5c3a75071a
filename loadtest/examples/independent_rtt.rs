//! An independent echo round-trip client, to check `hubbub-load`'s latency figures: blocking
//! tungstenite (its own codec, no mio, no shared code with the tool), one connection, a fixed rate,
//! `Instant` timing, the same percentiles.
//!
//! ```text
//! cargo run --release -p hubbub-load --example independent_rtt -- ws://127.0.0.1:PORT/echo 50 500
//! ```

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/echo".into());
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50.0);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let (mut ws, _) = tungstenite::connect(url.as_str()).expect("connect");
    set_nodelay(&mut ws);
    let body = "x".repeat(64);
    let start = Instant::now();
    let mut rtts = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t0 = Instant::now();
        ws.send(Message::text(body.clone())).expect("send");
        let echo = ws.read().expect("read");
        rtts.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(echo.into_text().expect("text").as_str(), body);
    }
    let _ = ws.close(None);
    rtts.sort_by(f64::total_cmp);
    let pct = |q: f64| rtts[((q * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len()) - 1];
    println!(
        "independent: count {}  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3} ms",
        rtts.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        rtts[rtts.len() - 1]
    );
}

fn set_nodelay(ws: &mut WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>) {
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        let _ = s.set_nodelay(true);
    }
}
