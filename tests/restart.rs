//! Zero-downtime restart: a new process binds the same port (SO_REUSEPORT)
//! while the old one drains; clients connecting all the while never fail.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// One attempt: connect, upgrade, echo. A Close 1001 from the draining
/// process instead of the echo is a success (the client is told to come
/// back); anything else is a failed attempt.
fn attempt(addr: SocketAddr) -> Result<(), String> {
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
        .write_all(upgrade_request("/echo", "").as_bytes())
        .map_err(|e| format!("send request: {e}"))?;
    let (status, head, rest) = read_response_checked(&mut stream)?;
    if status != 101 {
        return Err(format!("upgrade refused: {head}"));
    }
    let mut client = Client { stream, pending: rest };
    client.send_text("ping");
    match client.recv() {
        Some(frame) if frame.opcode == 0x1 && frame.payload == b"ping" => Ok(()),
        Some(frame) if frame.close_code() == Some(1001) => Ok(()),
        other => Err(format!("no echo: {other:?}")),
    }
}

fn read_response_checked(stream: &mut std::net::TcpStream) -> Result<(u16, String, Vec<u8>), String> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            return Ok((status, head, buf[end + 4..].to_vec()));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed before the response".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read response: {e}")),
        }
    }
}

#[test]
fn restart_on_the_same_port_fails_no_connection_attempt() {
    let mut old = Process::spawn(&["--listen", "127.0.0.1:0", "--admin-listen", "off", "--drain-secs", "6"]);
    let addr = old.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(40);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match attempt(addr) {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let new = Process::spawn(&["--listen", &addr.to_string(), "--admin-listen", "off"]);
    assert_eq!(new.addr, addr);
    std::thread::sleep(Duration::from_millis(500));
    old.signal(libc::SIGTERM);
    let status = old.wait_exit(Duration::from_secs(15)).expect("the old process exits");
    assert!(status.success(), "{status}");
    // The new process alone serves for a while.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for worker in workers {
        let (o, f) = worker.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} attempts failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    eprintln!("{ok} attempts, none failed");
    assert!(ok > 100, "only {ok} attempts");
    drop(new);
}
