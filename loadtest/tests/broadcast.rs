//! `broadcast`: delivered == expected, in order, no gaps, on loopback.

mod common;

fn check_full_delivery(run: &common::Run, members: u64) {
    assert_eq!(run.code(), 0, "{}", run.stdout());
    assert_eq!(run.count("opened"), members);
    assert_eq!(run.count("receivers"), members);
    let published = run.count("published");
    assert!(published > 0);
    assert_eq!(run.report["expected_deliveries"], published * members);
    assert_eq!(run.count("received"), published * members, "no loss on loopback");
    assert_eq!(
        (run.count("gaps"), run.count("reordered"), run.count("verify_errors")),
        (0, 0, 0)
    );
    assert_eq!(run.report["latency"]["delivery"]["count"], published * members);
}

#[test]
fn every_member_gets_every_message_in_order() {
    let server = common::server(&[]);
    let probe = common::load(&[
        "connect",
        "--url",
        &server.url("/room/probe"),
        "-n",
        "1",
        "--hold-secs",
        "0",
    ]);
    if probe.report["failures"]["http_404"] == 1 {
        eprintln!(
            "SKIPPED: {} answers 404 for /room/ (rooms not implemented yet)",
            server.kind
        );
        return;
    }
    let url = server.url("/room/broadcast-test");
    let run = common::load(&[
        "broadcast",
        "--url",
        &url,
        "-n",
        "60",
        "-p",
        "3",
        "--rate",
        "300",
        "-d",
        "1",
    ]);
    check_full_delivery(&run, 63);
    let published = run.count("published");
    assert!((280..=310).contains(&published), "300/s for 1 s: {published}");
}

#[test]
fn fixture_room_delivers_to_everyone_across_processes() {
    let server = common::fixture();
    let url = server.url("/room/procs");
    let run = common::load(&[
        "broadcast",
        "--url",
        &url,
        "-n",
        "20",
        "-p",
        "2",
        "--rate",
        "100",
        "-d",
        "0.5",
        "--procs",
        "2",
    ]);
    check_full_delivery(&run, 22);
}
