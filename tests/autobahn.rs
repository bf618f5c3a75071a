//! The Autobahn TestSuite (via kosoku) against /echo: every case must be OK,
//! NON-STRICT or INFORMATIONAL, and no case recorded as OK in
//! tests/autobahn/expected.json may get another verdict.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn autobahn_suite_passes_against_echo() {
    // The 9.* cases send messages of up to 16 MiB.
    let server = start(|c| c.max_message_bytes = 20 << 20);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("tests/autobahn/run.sh"))
        .arg(server.addr.to_string())
        .env("AUTOBAHN_TIMEOUT_SECS", "300")
        .output()
        .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "Autobahn suite failed:\n{report}");
    assert!(report.contains("PASS"), "{report}");
    assert!(
        server.stats().protocol_errors > 0,
        "the violation cases reached the server"
    );
}
