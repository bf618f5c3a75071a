//! Operations files: the sample config, tuning scripts, Prometheus rules,
//! Kubernetes manifests and the Grafana dashboard, each checked for real.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn hubbub(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (.ci/run installs it)"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text += &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn sample_config_loads_and_check_config_prints_it() {
    let sample = format!("{ROOT}/deploy/hubbub.toml");
    let (code, out, err) = hubbub(&["--config", &sample, "--check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = \"0.0.0.0:8080\"  # file"), "{out}");
    assert!(out.contains("drain_secs = 30  # file"), "{out}");
}

#[test]
fn every_setting_the_sample_shows_commented_out_is_valid() {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/hubbub.toml")).unwrap();
    let mut uncommented = 0;
    let whole: String = text
        .lines()
        .map(|line| {
            let setting = line.strip_prefix("# ").filter(|rest| {
                rest.split_once(" = ")
                    .is_some_and(|(key, _)| !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            });
            match setting {
                Some(rest) => {
                    uncommented += 1;
                    format!("{rest}\n")
                }
                None => format!("{line}\n"),
            }
        })
        .collect();
    assert!(uncommented >= 12, "{uncommented} commented settings");
    let path = std::env::temp_dir().join(format!("hubbub-sample-{}.toml", std::process::id()));
    std::fs::write(&path, whole).unwrap();
    let (code, out, err) = hubbub(&["--config", path.to_str().unwrap(), "--check-config"], &[]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0, "{err}");
    for key in [
        "jwt_secret",
        "api_key",
        "redis",
        "history_rule",
        "max_connections_per_user",
        "jwt_require_exp",
    ] {
        assert!(
            out.contains(&format!("{key} = ")) && out.contains("# file"),
            "{key}: {out}"
        );
    }
    assert!(out.contains("jwt_secret = \"(set, not shown)\"  # file"), "{out}");
}

#[test]
fn env_beats_the_file_and_flags_beat_env() {
    let sample = format!("{ROOT}/deploy/hubbub.toml");
    let env = [("HUBBUB_DRAIN_SECS", "12"), ("HUBBUB_BACKLOG", "77")];
    let (code, out, err) = hubbub(&["--config", &sample, "--check-config", "--backlog", "99"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("drain_secs = 12  # env"), "{out}");
    assert!(out.contains("backlog = 99  # flag"), "{out}");
}

#[test]
fn invalid_config_file_fails_with_the_field_and_reason() {
    let path = std::env::temp_dir().join(format!("hubbub-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "ping_interval_secs = 100\n").unwrap();
    let (code, _, err) = hubbub(&["--config", path.to_str().unwrap(), "--check-config"], &[]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 2);
    assert!(
        err.contains("idle-timeout-secs") && err.contains("longer than"),
        "{err}"
    );
}

#[test]
fn tuning_check_prints_the_verdict_and_fails_below_target() {
    let (code, out) = run("tuning/check.sh", &["--target", "100"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("by memory:") && out.contains("by limits:") && out.contains("verdict: ok"),
        "{out}"
    );
    assert!(out.contains("fs.nr_open"), "{out}");
    let (code, out) = run("tuning/check.sh", &["--target", "1000000000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BELOW TARGET"), "{out}");
}

#[test]
fn tuning_apply_dry_run_lists_changes_and_writes_nothing() {
    let state = std::env::temp_dir().join(format!("hubbub-tuning-{}", std::process::id()));
    let out = Command::new("tuning/apply.sh")
        .arg("--dry-run")
        .env("HUBBUB_TUNING_STATE", &state)
        .current_dir(ROOT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("dry run:") && text.contains("net.core.somaxconn"),
        "{text}"
    );
    assert!(!state.exists(), "a dry run saved state");
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    let (code, out) = run("promtool", &["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run("promtool", &["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let validate = format!("{ROOT}/.venv/bin/kubernetes-validate");
    let files = [
        "deployment.yaml",
        "service.yaml",
        "ingress.yaml",
        "hpa.yaml",
        "pdb.yaml",
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("deploy/kubernetes/{f}")).collect();
    let mut args = vec!["--strict"];
    args.extend(paths.iter().map(String::as_str));
    let (code, out) = run(&validate, &args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("passed").count(), 6, "{out}");
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let names: Vec<&str> = hubbub::metrics::names::ALL.iter().map(|d| d.name).collect();
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/hubbub.json"] {
        let text = std::fs::read_to_string(format!("{ROOT}/{file}")).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("hubbub_") {
                continue;
            }
            let base = word.trim_end_matches("_bucket");
            assert!(names.contains(&base), "{file} uses unknown metric {word}");
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/deploy/grafana/hubbub.json")).unwrap()).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 6);
}
