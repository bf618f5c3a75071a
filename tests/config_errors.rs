//! What an operator sees when a setting is wrong, run through the real
//! binary: an unknown log level is refused, a refused value names the file
//! and key or the variable it came from, a key spelled both ways is refused,
//! a misspelled `HUBBUB_*` variable is warned about, sizes take units (and a
//! real server enforces them), and text logs carry no colour codes off a
//! terminal.

mod common;

use std::process::Command;

use common::{open, Process};

/// Runs `hubbub ARGS` with `env` added: (exit code, stdout, stderr).
fn hubbub(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// A config file removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("hubbub-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn an_unknown_log_level_is_refused_and_filters_still_work() {
    for level in ["verbose", "warning", "hubbub=loud"] {
        let (code, _, err) = hubbub(&["--log-level", level, "--check-config"], &[]);
        assert_eq!(code, 2, "{level}: {err}");
        assert!(err.contains(level.split('=').next_back().unwrap()), "{err}");
        assert!(err.contains("not a level"), "{err}");
    }
    for level in ["debug", "hubbub=debug,info", "warn"] {
        let (code, _, err) = hubbub(&["--log-level", level, "--check-config"], &[]);
        assert_eq!(code, 0, "{level}: {err}");
    }
    let (code, _, err) = hubbub(&["--check-config"], &[("HUBBUB_LOG_LEVEL", "verbose")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in HUBBUB_LOG_LEVEL"), "{err}");
}

#[test]
fn refused_values_name_the_file_and_key_or_the_variable() {
    let file = TempFile::new("lots", "max_backlog_bytes = \"lots\"\n");
    let (code, _, err) = hubbub(&["--config", file.path(), "--check-config"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("in {}, key max_backlog_bytes", file.path())) && err.contains("lots"),
        "{err}"
    );
    let (code, _, err) = hubbub(&["--check-config"], &[("HUBBUB_MAX_BACKLOG_BYTES", "lots")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("in HUBBUB_MAX_BACKLOG_BYTES") && err.contains("lots"),
        "{err}"
    );
    // A value of the right type that fails validation names its source too.
    let (code, _, err) = hubbub(&["--check-config"], &[("HUBBUB_SHARDS", "0")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in HUBBUB_SHARDS") && err.contains("--shards"), "{err}");
    let file = TempFile::new("ping", "ping_interval_secs = 100\n");
    let (code, _, err) = hubbub(&["--config", file.path(), "--check-config"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "--ping-interval-secs in {}, key ping_interval_secs",
            file.path()
        )),
        "{err}"
    );
}

#[test]
fn a_key_written_both_ways_is_refused() {
    let file = TempFile::new("twice", "max_backlog_bytes = 4096\nmax-backlog-bytes = 8192\n");
    let (code, _, err) = hubbub(&["--config", file.path(), "--check-config"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("max_backlog_bytes") && err.contains("max-backlog-bytes") && err.contains(file.path()),
        "{err}"
    );
}

#[test]
fn unknown_hubbub_variables_are_warned_about_in_plain_text() {
    let env = [("HUBBUB_MAX_BACKLOG_BYTE", "4096"), ("HUBBUB_IDLE_TIMEOUT", "9")];
    let (code, _, err) = hubbub(&["--check-config", "--log-format", "text"], &env);
    assert_eq!(code, 0, "{err}");
    for var in ["HUBBUB_MAX_BACKLOG_BYTE", "HUBBUB_IDLE_TIMEOUT"] {
        assert!(err.contains(&format!("{var} is not a hubbub setting")), "{err}");
    }
    assert!(err.contains("WARN"), "{err}");
    assert!(!err.contains('\x1b'), "colour codes written to a pipe: {err:?}");
    let (_, _, err) = hubbub(&["--check-config"], &[("HUBBUB_BACKLOG", "100")]);
    assert!(!err.contains("not a hubbub setting"), "{err}");
}

#[test]
fn sizes_take_units_everywhere_and_the_server_enforces_them() {
    let file = TempFile::new("sizes", "max_backlog_bytes = \"64KiB\"\n");
    let (code, out, err) = hubbub(
        &["--config", file.path(), "--check-config", "--max-message-size", "2MiB"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_backlog_bytes = \"64KiB\"  # file"), "{out}");
    assert!(out.contains("max_message_size = \"2MiB\"  # flag"), "{out}");
    let (code, _, err) = hubbub(&["--check-config"], &[("HUBBUB_MAX_MESSAGE_SIZE", "1MB")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("in HUBBUB_MAX_MESSAGE_SIZE") && err.contains("MiB"),
        "{err}"
    );
    // The server takes 1KiB as 1024 bytes: 1024 echo, 1025 close with 1009.
    let server = Process::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "off",
        "--shards",
        "1",
        "--max-message-size",
        "1KiB",
    ]);
    let mut client = open(server.addr, "/echo");
    client.send(0x2, true, &[7; 1024]);
    assert_eq!(client.recv().unwrap().payload.len(), 1024);
    client.send(0x2, true, &[7; 1025]);
    assert_eq!(client.recv_close(), Some(1009));
}

#[test]
fn a_taken_port_is_named_and_has_its_own_exit_code() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = hubbub(&["--listen", &addr, "--admin-listen", "127.0.0.1:0"], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}: ")), "{err}");
    let (code, _, err) = hubbub(&["--listen", "127.0.0.1:0", "--admin-listen", &addr], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("cannot open the admin port {addr}: ")), "{err}");
}
