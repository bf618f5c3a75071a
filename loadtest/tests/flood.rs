//! `flood` against hubbub: flooders that never read are cut off by the backlog cap; the probe
//! measures a well-behaved client meanwhile.

mod common;

fn no_read_flood(server: &common::Server) -> common::Run {
    let url = server.url("/echo");
    common::load(&[
        "flood",
        "--url",
        &url,
        "-c",
        "5",
        "-s",
        "1KiB",
        "-d",
        "1",
        "--no-read",
        "--recv-buffer",
        "4096",
        "--drain-secs",
        "5",
    ])
}

#[test]
fn flooders_that_never_read_are_cut_off() {
    let Some(server) = common::hubbub(&["--max-backlog-bytes", "65536"]) else {
        return;
    };
    let run = no_read_flood(&server);
    let out = run.stdout();
    run.assert_attack_accounted(5);
    assert_eq!(
        (
            run.attack_u64("began"),
            run.attack_u64("ended"),
            run.attack_u64("alive")
        ),
        (5, 5, 0),
        "the server gives up on every flooder that never reads: {out}"
    );
    for (label, _) in run.attack_counts("ended_by") {
        assert!(
            ["close_1008", "eof", "eof_mid_frame", "reset"].contains(&label.as_str()),
            "a slow-consumer close, or TCP closed behind an unread backlog: {label}: {out}"
        );
    }
    assert!(run.count("sent") > 0, "{out}");
    assert_eq!(run.code(), 0, "{out}");
}

/// What the server's docs promise: Close 1008 "slow consumer" reaches the flooder once it
/// reads, after whole frames (the rest of a partly written reply is kept as started, never
/// discarded, so the Close never lands mid-frame: `eof_mid_frame` was the symptom).
#[test]
fn flooders_that_never_read_get_close_1008() {
    let Some(server) = common::hubbub(&["--max-backlog-bytes", "65536"]) else {
        return;
    };
    let run = no_read_flood(&server);
    let out = run.stdout();
    run.assert_attack_accounted(5);
    assert_eq!(run.attack_counts("ended_by"), [("close_1008".to_string(), 5)], "{out}");
    assert_eq!(run.count("ended_late"), 5, "found when reading again: {out}");
}

#[test]
fn the_probe_measures_a_client_during_a_flood() {
    let Some(server) = common::hubbub(&[]) else {
        return;
    };
    let url = server.url("/echo");
    let run = common::load(&[
        "flood",
        "--url",
        &url,
        "-c",
        "4",
        "-d",
        "1",
        "--probe",
        "--probe-baseline-secs",
        "0.3",
        "--probe-interval-ms",
        "5",
        "--max-p99-ms",
        "10000",
    ]);
    let out = run.stdout();
    run.assert_attack_accounted(4);
    let probe = &run.attack()["probe"];
    let (before, during) = (&probe["before"], &probe["during"]);
    assert!(before["count"].as_u64().unwrap() >= 20, "0.3 s at 5 ms: {out}");
    assert!(during["count"].as_u64().unwrap() >= 20, "{out}");
    for s in [before, during] {
        let (p50, p99, max) = (
            s["p50_ms"].as_f64().unwrap(),
            s["p99_ms"].as_f64().unwrap(),
            s["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{s}");
    }
    let (due, answered, failed) = (
        run.count("probe_due"),
        run.count("probe_received"),
        run.count("probe_failed"),
    );
    assert_eq!(failed, due - answered, "{out}");
    assert_eq!(
        answered,
        before["count"].as_u64().unwrap() + during["count"].as_u64().unwrap()
    );
    assert_eq!(
        run.report["error_base"], due,
        "the probe's failures are the run's errors"
    );
    assert!(run.count("received") > 0, "the flooders read their echoes: {out}");
    assert!(out.contains("probe       during the attack:"), "{out}");
    assert_eq!(run.code(), 0, "{out}");
}

#[test]
fn a_room_flood_is_accounted_for() {
    let Some(server) = common::hubbub(&["--max-backlog-bytes", "65536"]) else {
        return;
    };
    let url = server.url("/room/flood-test");
    let run = common::load(&["flood", "--url", &url, "-c", "6", "-s", "512", "-d", "1"]);
    let out = run.stdout();
    run.assert_attack_accounted(6);
    assert_eq!(run.attack_u64("began"), 6, "{out}");
    assert!(run.count("received") > 0, "members get each other's messages: {out}");
    assert_eq!(run.code(), 0, "{out}");
}
