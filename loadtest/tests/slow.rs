//! `slow`: stopped readers are cut off, the others keep their echoes.

mod common;

#[test]
fn stopped_readers_are_cut_off_and_the_others_are_served() {
    let server = common::server(&["--max-backlog-bytes", "65536"]);
    let url = server.url("/echo");
    let run = common::load(&[
        "slow",
        "--url",
        &url,
        "-c",
        "20",
        "--slow-share",
        "0.25",
        "--rate",
        "200",
        "-d",
        "2",
        "--slow-send-bytes",
        "8000000",
        "--drain-secs",
        "5",
    ]);
    assert_eq!(run.count("slow_clients"), 5);
    let cut = run.count("slow_closed_code") + run.count("slow_closed_tcp");
    assert_eq!(
        cut,
        5,
        "{} must cut off every stopped reader: {}",
        server.kind,
        run.stdout()
    );
    assert_eq!(run.count("slow_not_closed"), 0);
    assert_eq!(run.count("dropped"), 0, "the well-behaved clients stay connected");
    assert_eq!(run.count("verify_errors"), 0);
    assert_eq!(run.count("received"), run.count("sent"));
    assert_eq!(run.code(), 0, "{}", run.stdout());
}
