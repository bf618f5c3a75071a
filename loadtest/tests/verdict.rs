//! Exit status and `passed`: a run in which nothing worked fails (exit 1) with a reason, whatever
//! the thresholds; bad flags are refused.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn nothing_listening_fails_every_scenario() {
    let echo = common::nothing_listening("/echo");
    let room = common::nothing_listening("/room/verdict");
    let runs: [&[&str]; 8] = [
        &["echo", "--url", &echo, "-c", "10", "-d", "1"],
        &["echo", "--url", &echo, "-c", "10", "-d", "1", "--max-error-rate", "1"],
        &["connect", "--url", &echo, "-n", "5", "--hold-secs", "0"],
        &["churn", "--url", &echo, "--rate", "20", "-d", "0.3"],
        &["broadcast", "--url", &room, "-n", "2", "-d", "0.3"],
        &["slow", "--url", &echo, "-c", "4", "-d", "0.3"],
        &["trickle", "--url", &echo, "--mode", "head", "-c", "3", "-d", "0.5"],
        &["flood", "--url", &echo, "-c", "3", "-d", "0.5"],
    ];
    for args in runs {
        let run = common::load(args);
        let out = run.stdout();
        assert_eq!(run.code(), 1, "{args:?}: {out}");
        assert_eq!(run.report["passed"], false, "{args:?}");
        assert_eq!(run.report["exit_code"], 1, "{args:?}");
        let reason = run.report["reasons"][0].as_str().unwrap_or_default().to_string();
        assert!(
            reason.starts_with("no connection was established (refused")
                || reason.starts_with("no attacker began its attack (refused"),
            "{args:?}: {reason}"
        );
        assert!(
            out.contains("FAILED      no ") && out.contains("verdict     nothing worked (exit 1)"),
            "{out}"
        );
    }
}

#[test]
fn a_drain_that_drops_every_connection_fails_the_run() {
    let Some(server) = common::hubbub(&["--drain-secs", "1"]) else {
        return;
    };
    let url = server.url("/echo");
    let load =
        std::thread::spawn(move || common::load(&["echo", "--url", &url, "-c", "30", "--rate", "300", "-d", "4"]));
    std::thread::sleep(Duration::from_millis(1200));
    let pid = server.pid.expect("hubbub has a pid").to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success(), "SIGTERM to the server we started");
    let run = load.join().unwrap();
    let out = run.stdout();
    assert_eq!(run.count("opened"), 30, "{out}");
    assert_eq!(run.count("dropped"), 30, "the drain closes every connection: {out}");
    assert!(run.count("received") > 0, "echoes came back before the drain: {out}");
    assert_eq!(run.code(), 1, "{out}");
    assert_eq!(run.report["passed"], false);
    let reason = run.report["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("every connection was lost (dropped_close_1001 30"),
        "{reason}"
    );
}

#[test]
fn bad_hostile_flags_are_refused_with_the_reason() {
    let url = common::nothing_listening("/echo");
    let stderr = common::refused(&["trickle", "--url", &url, "--mode", "head", "--frame-payload", "10"]);
    assert!(
        stderr.contains("--frame-payload applies to --mode frame only"),
        "{stderr}"
    );
    let stderr = common::refused(&["trickle", "--url", &url, "--mode", "frame", "--keepalive", "ping"]);
    assert!(stderr.contains("--mode message only"), "{stderr}");
    let stderr = common::refused(&["flood", "--url", &url, "--max-p99-ms", "5"]);
    assert!(stderr.contains("add --probe"), "{stderr}");
    let stderr = common::refused(&["flood", "--url", &url, "-d", "2", "--expect-closed-within", "3"]);
    assert!(stderr.contains("must be less than --duration"), "{stderr}");
    let stderr = common::refused(&["flood", "--url", &url, "-s", "0"]);
    assert!(stderr.contains("-s must be between 1"), "{stderr}");
    let stderr = common::refused(&[
        "trickle",
        "--url",
        &url,
        "--mode",
        "message",
        "--fragment-bytes",
        "9 parsecs",
    ]);
    assert!(stderr.contains("unknown size unit"), "{stderr}");
}
