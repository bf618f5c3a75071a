//! `trickle` against hubbub: every attacker accounted for, what ended it named and timed.

mod common;

#[test]
fn head_holders_are_closed_by_the_handshake_timeout() {
    let Some(server) = common::hubbub(&["--handshake-timeout-secs", "1"]) else {
        return;
    };
    let url = server.url("/echo");
    let run = common::load(&[
        "trickle",
        "--url",
        &url,
        "--mode",
        "head",
        "-c",
        "20",
        "--rate",
        "2",
        "-d",
        "3",
        "--expect-closed-within",
        "2.5",
        "--probe",
        "--probe-baseline-secs",
        "0.3",
    ]);
    let out = run.stdout();
    run.assert_attack_accounted(20);
    assert_eq!((run.attack_u64("began"), run.attack_u64("ended")), (20, 20), "{out}");
    for (label, _) in run.attack_counts("ended_by") {
        assert!(
            ["eof", "reset", "http_408"].contains(&label.as_str()),
            "the server drops an incomplete head: {label}: {out}"
        );
    }
    let life = &run.attack()["lifetime"];
    let (min, max) = (life["min_secs"].as_f64().unwrap(), life["max_secs"].as_f64().unwrap());
    // The server's timer ticks every 250 ms; the slack is for a busy CI box.
    assert!(min >= 0.9, "not closed before the 1 s timeout: {min}: {out}");
    assert!(max <= 2.5, "closed within the timeout plus slack: {max}: {out}");
    let probe = &run.attack()["probe"];
    assert!(probe["during"]["count"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(run.code(), 0, "{out}");
    assert!(out.contains("ended by") && out.contains("lifetime    min"), "{out}");
}

#[test]
fn frame_holders_are_accounted_for() {
    let Some(server) = common::hubbub(&[]) else {
        return;
    };
    let url = server.url("/echo");
    let run = common::load(&[
        "trickle",
        "--url",
        &url,
        "--mode",
        "frame",
        "-c",
        "20",
        "--rate",
        "10",
        "-d",
        "1.5",
        "--source-ips",
        "127.0.0.2-127.0.0.5",
    ]);
    let out = run.stdout();
    run.assert_attack_accounted(20);
    assert_eq!(run.attack_u64("began"), 20, "every attacker upgraded: {out}");
    // Each sent 8 bytes at once and then ~10 B/s: one 16-byte frame completed and echoed, the
    // next one held partially.
    let (alive, received) = (run.attack_u64("alive"), run.count("received"));
    assert!(received <= 20 && received >= alive, "{out}");
    assert!(run.count("bytes_sent") >= 20 * 16, "{out}");
    if alive > 0 {
        let oldest = run.attack()["oldest_alive_secs"].as_f64().unwrap();
        assert!((1.0..=1.6).contains(&oldest), "alive since the start: {oldest}: {out}");
    }
    assert_eq!(run.code(), 0, "{out}");
}

#[test]
fn message_holders_report_the_close_code() {
    let Some(server) = common::hubbub(&["--max-message-size", "65536"]) else {
        return;
    };
    let url = server.url("/echo");
    // A fragment over the server's limit: closed at once with 1009.
    let run = common::load(&[
        "trickle",
        "--url",
        &url,
        "--mode",
        "message",
        "--fragment-bytes",
        "100KiB",
        "-c",
        "10",
        "-d",
        "1",
    ]);
    let out = run.stdout();
    run.assert_attack_accounted(10);
    assert_eq!(run.attack_counts("ended_by"), [("close_1009".to_string(), 10)], "{out}");
    let max = run.attack()["lifetime"]["max_secs"].as_f64().unwrap();
    assert!(max < 0.9, "closed as soon as the limit was passed: {max}: {out}");
    // Within the limit and held open by pings: the server answers each one.
    let run = common::load(&[
        "trickle",
        "--url",
        &url,
        "--mode",
        "message",
        "--fragment-bytes",
        "60KiB",
        "--rate",
        "24",
        "-c",
        "10",
        "-d",
        "1.2",
    ]);
    let out = run.stdout();
    run.assert_attack_accounted(10);
    assert!(run.count("bytes_sent") >= 10 * 60 * 1024, "{out}");
    if run.attack_u64("alive") > 0 {
        assert!(
            run.count("pongs") > 0,
            "pings of the attackers still alive are answered: {out}"
        );
    }
    assert_eq!(run.code(), 0, "{out}");
}
