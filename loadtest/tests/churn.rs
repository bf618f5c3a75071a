//! `churn`: connect, upgrade, close at a fixed rate.

mod common;

#[test]
fn every_started_connection_completes_its_cycle() {
    let server = common::server(&[]);
    let url = server.url("/echo");
    let run = common::load(&["churn", "--url", &url, "--rate", "300", "-d", "1", "--hold-ms", "20"]);
    assert_eq!(run.code(), 0, "{}", run.stdout());
    let attempts = run.count("attempts");
    assert!((280..=310).contains(&attempts), "300/s for 1 s: {attempts}");
    assert_eq!(run.count("opened"), attempts);
    assert_eq!(run.count("closed"), attempts, "{}", run.report["failures"]);
    assert_eq!(run.report["latency"]["cycle"]["count"], attempts);
    let cycle_p50 = run.latency("cycle", "p50_ms");
    assert!(cycle_p50 >= 20.0, "a cycle includes the 20 ms hold: {cycle_p50}");
}
