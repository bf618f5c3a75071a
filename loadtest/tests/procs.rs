//! `--procs`, `--plot` and the plain progress output.

mod common;

#[test]
fn workers_split_the_load_and_histograms_merge_exactly() {
    let server = common::server(&[]);
    let url = server.url("/echo");
    let run = common::load(&[
        "echo", "--url", &url, "-c", "21", "--rate", "400", "-d", "1", "--procs", "3",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stdout());
    assert_eq!(run.report["procs"], 3);
    assert_eq!(run.count("opened"), 21);
    let received = run.count("received");
    assert_eq!(received, run.count("sent"));
    assert!((370..=410).contains(&received), "3 workers share 400/s: {received}");
    assert_eq!(
        run.report["latency"]["rtt"]["count"], received,
        "merged histogram holds every value"
    );
}

#[test]
fn plot_draws_the_distribution() {
    let server = common::fixture();
    let url = server.url("/echo");
    let svg = std::env::temp_dir().join(format!("hubbub-load-plot-{}.svg", std::process::id()));
    let svg_arg = svg.to_str().unwrap();
    let run = common::load(&[
        "echo", "--url", &url, "-c", "2", "--rate", "200", "-d", "0.5", "--plot", svg_arg,
    ]);
    assert_eq!(run.code(), 0);
    let doc = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(
        doc.starts_with("<svg") && doc.contains("<polyline") && doc.contains(">rtt<"),
        "{doc}"
    );
}

#[test]
fn without_a_terminal_progress_is_one_line_per_interval() {
    let server = common::fixture();
    let url = server.url("/echo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub-load"))
        .args([
            "echo",
            "--url",
            &url,
            "-c",
            "2",
            "--rate",
            "100",
            "-d",
            "1",
            "--progress-secs",
            "0.25",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr.lines().filter(|l| l.contains("recv")).count();
    assert!((3..=8).contains(&lines), "about 4 progress lines: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("p99.99") && stdout.contains("rtt"), "{stdout}");
}
