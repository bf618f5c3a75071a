//! A second, independent client implementation: Python's `websockets`
//! (installed into .venv by .ci/run) exchanges messages with /echo.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn python_websockets_client_round_trips_text_and_binary() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "run .ci/run first: it creates .venv with the Python test clients"
    );
    let server = start(|_| {});
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/echo_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("ws://{}/echo", server.addr))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok 200 messages"), "{stdout}");
}
