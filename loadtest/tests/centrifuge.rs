//! `--centrifuge`: `connect` and `broadcast` speaking the Centrifuge client protocol to hubbub's
//! `/connection/websocket` (the tungstenite fixture does not speak it: these tests need hubbub).

mod common;

const SECRET: &str = "hubbub-load-centrifuge-test-secret-32b!";

#[test]
fn broadcast_over_the_centrifuge_protocol_delivers_every_publication_in_order() {
    let Some(server) = common::hubbub(&["--shards", "2"]) else {
        return;
    };
    let url = server.url("/connection/websocket");
    let run = common::load(&[
        "broadcast",
        "--url",
        &url,
        "--centrifuge",
        "--channel",
        "cf-test",
        "-n",
        "40",
        "-p",
        "2",
        "--rate",
        "200",
        "-d",
        "1",
    ]);
    let out = run.stdout();
    assert_eq!(run.code(), 0, "{out}");
    let members = 42;
    assert_eq!(run.count("opened"), members, "{out}");
    assert_eq!(run.count("receivers"), members, "{out}");
    let published = run.count("published");
    assert!((180..=210).contains(&published), "200/s for 1 s: {published}");
    assert_eq!(run.count("received"), published * members, "no loss on loopback: {out}");
    assert_eq!(
        (run.count("gaps"), run.count("reordered"), run.count("verify_errors")),
        (0, 0, 0),
        "{out}"
    );
    assert_eq!(run.report["latency"]["delivery"]["count"], published * members);
    assert_eq!(run.report["latency"]["join"]["count"], members, "one join per member");
    assert!(run.report["failures"].as_object().is_none_or(|f| f.is_empty()), "{out}");
}

#[test]
fn connect_counts_a_connection_open_once_it_is_subscribed() {
    let Some(server) = common::hubbub(&[]) else {
        return;
    };
    let url = server.url("/connection/websocket");
    let run = common::load(&[
        "connect",
        "--url",
        &url,
        "--centrifuge",
        "-n",
        "30",
        "--hold-secs",
        "0.2",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stdout());
    assert_eq!(run.count("opened"), 30);
    assert_eq!(run.count("failed"), 0);
    assert_eq!(run.report["latency"]["join"]["count"], 30);
}

#[test]
fn a_refused_connect_is_a_failure_named_by_its_code() {
    // With a secret and no anonymous access, a connect without a token is answered error 101;
    // a forged token is closed with 3500: both are failed attempts, never open connections.
    let Some(server) = common::hubbub(&["--jwt-secret", SECRET]) else {
        return;
    };
    let url = server.url("/connection/websocket");
    let run = common::load(&["connect", "--url", &url, "--centrifuge", "-n", "3", "--hold-secs", "0"]);
    assert_eq!(run.code(), 1, "nothing worked: {}", run.stdout());
    assert_eq!(run.count("failed"), 3);
    assert_eq!(run.report["failures"]["centrifuge_101"], 3, "{}", run.stdout());
    let forged = common::load(&[
        "connect",
        "--url",
        &url,
        "--centrifuge",
        "--token",
        "a.b.c",
        "-n",
        "3",
        "--hold-secs",
        "0",
    ]);
    assert_eq!(forged.count("failed"), 3, "{}", forged.stdout());
    assert_eq!(forged.report["failures"]["close_3500"], 3, "{}", forged.stdout());
}

#[test]
fn an_endpoint_that_does_not_answer_the_protocol_times_out_the_join() {
    // /echo sends the connect command back: that is no connect reply (it names no client).
    let Some(server) = common::hubbub(&[]) else {
        return;
    };
    let run = common::load(&[
        "connect",
        "--url",
        &server.url("/echo"),
        "--centrifuge",
        "-n",
        "4",
        "--hold-secs",
        "0",
        "--handshake-timeout-secs",
        "1",
    ]);
    assert_eq!(run.code(), 1, "{}", run.stdout());
    assert_eq!(run.report["failures"]["timeout"], 4, "{}", run.stdout());
    assert_eq!(run.count("opened"), 0);
}

#[test]
fn centrifuge_flags_are_checked() {
    let err = common::refused(&["broadcast", "--centrifuge", "--binary"]);
    assert!(err.contains("--binary does not apply"), "{err}");
    let err = common::refused(&["connect", "--channel", "x"]);
    assert!(err.contains("--centrifuge"), "--channel needs --centrifuge: {err}");
}
