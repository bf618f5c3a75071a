//! Stopping: a shutdown closes every connection with 1001 and the server
//! exits; the binary does the same on SIGTERM and documents its flags.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn shutdown_sends_1001_to_every_connection_and_returns() {
    let server = start(|_| {});
    let mut clients: Vec<Client> = (0..20).map(|_| open(server.addr, "/echo")).collect();
    server.wait_for("all open", |s| s.open == 20);
    let stopper = std::thread::spawn(move || server.stop());
    for client in &mut clients {
        assert_eq!(client.recv_close(), Some(1001));
        client.send(0x8, true, b"\x03\xe9");
    }
    stopper.join().unwrap().expect("shards exit cleanly");
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hubbub"))
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let out = binary().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--shards",
        "--backlog",
        "--max-connections",
        "--max-message-size",
        "--max-backlog-bytes",
        "--ping-interval-secs",
        "--idle-timeout-secs",
        "--handshake-timeout-secs",
        "--allowed-origin",
        "--subprotocol",
        "--buffer-pool",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    for default in [
        "127.0.0.1:8080",
        "4096",
        "[default: 1MiB]",
        "[default: 30]",
        "[default: 75]",
        "[default: 10]",
        "number of cores",
    ] {
        assert!(help.contains(default), "--help lacks default {default}");
    }
}

#[test]
fn invalid_flag_value_fails_with_the_field_and_reason() {
    let out = binary().args(["--ping-interval-secs", "80"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--idle-timeout-secs"), "{err}");
}

#[test]
fn sigterm_closes_connections_with_1001_and_exits_zero() {
    let mut child = binary()
        .args(["--listen", "127.0.0.1:0", "--shards", "2", "--admin-listen", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("hubbub listening on ws://")
        .expect("listening line")
        .parse()
        .unwrap();
    let mut client = open(addr, "/echo");
    client.send_text("before");
    assert_eq!(client.recv().unwrap().payload, b"before");
    // SAFETY: signalling the child this test spawned, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(client.recv_close(), Some(1001));
    client.send(0x8, true, b"\x03\xe9");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}
