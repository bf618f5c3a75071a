//! `tuning/check.sh` and `tuning/apply.sh` run for real against a fake
//! `/proc/sys` (`HUBBUB_SYSCTL_ROOT`) and a fake limits directory, so the
//! machine running the tests is never changed: both read one table, count
//! the same knobs, and apply never lowers a value that meets the
//! recommendation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One knob of `tuning/sysctl.conf`: recommended fields and the rule line.
#[derive(Debug, Clone)]
struct Knob {
    key: String,
    want: Vec<u64>,
    rules: Vec<String>,
}

impl Knob {
    fn rule(&self, field: usize) -> &str {
        if self.rules.len() == 1 {
            &self.rules[0]
        } else {
            &self.rules[field]
        }
    }

    /// True when `have` meets the recommendation by the knob's rule.
    fn met_by(&self, have: &[u64]) -> bool {
        if self.rule(0) == "width" {
            return have[1] - have[0] >= self.want[1] - self.want[0];
        }
        (0..self.want.len()).all(|i| match self.rule(i) {
            ">=" => have[i] >= self.want[i],
            "<=" => have[i] <= self.want[i],
            _ => have[i] == self.want[i],
        })
    }
}

fn table() -> Vec<Knob> {
    let text = std::fs::read_to_string(format!("{ROOT}/tuning/sysctl.conf")).unwrap();
    let mut rules = None;
    let mut knobs = Vec::new();
    for line in text.lines() {
        if let Some(rule) = line.strip_prefix("#:") {
            rules = Some(rule.split_whitespace().map(String::from).collect());
            continue;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap();
        knobs.push(Knob {
            key: key.trim().to_string(),
            want: value.split_whitespace().map(|v| v.parse().unwrap()).collect(),
            rules: rules.take().unwrap_or_else(|| panic!("{key} has no rule line")),
        });
    }
    assert!(knobs.len() >= 15, "{knobs:?}");
    knobs
}

/// A value that meets the recommendation without equalling it (where the
/// rule allows), or one that misses it in every field.
fn value(knob: &Knob, meets: bool) -> Vec<u64> {
    let w = &knob.want;
    if knob.rule(0) == "width" {
        return if meets {
            vec![w[0] / 2, w[1]]
        } else {
            vec![w[0] + 1000, w[1] - 1000]
        };
    }
    (0..w.len())
        .map(|i| match (knob.rule(i), meets) {
            (">=", true) | ("<=", false) => w[i] * 2,
            (">=", false) | ("<=", true) => w[i] / 2,
            (_, true) => w[i],
            (_, false) => w[i] + 1,
        })
        .collect()
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hubbub-tuning-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn knob_file(root: &Path, key: &str) -> PathBuf {
    root.join(key.replace('.', "/"))
}

/// Writes the fake tree, tab-separated as /proc/sys does.
fn write_tree(root: &Path, values: &BTreeMap<String, Vec<u64>>) {
    for (key, fields) in values {
        let file = knob_file(root, key);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let text: Vec<String> = fields.iter().map(u64::to_string).collect();
        std::fs::write(file, text.join("\t") + "\n").unwrap();
    }
}

fn read_tree(root: &Path, keys: impl Iterator<Item = String>) -> BTreeMap<String, Vec<u64>> {
    keys.filter_map(|key| {
        let text = std::fs::read_to_string(knob_file(root, &key)).ok()?;
        Some((key, text.split_whitespace().map(|v| v.parse().unwrap()).collect()))
    })
    .collect()
}

struct Env<'a> {
    sysctl: &'a Path,
    limits: &'a Path,
    state: &'a Path,
}

fn script(dir: &str, name: &str, args: &[&str], env: &Env) -> (i32, String) {
    let out = Command::new(format!("{dir}/{name}"))
        .args(args)
        .env("HUBBUB_SYSCTL_ROOT", env.sysctl)
        .env("HUBBUB_LIMITS_DIR", env.limits)
        .env("HUBBUB_TUNING_STATE", env.state)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text += &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn tuning(name: &str, args: &[&str], env: &Env) -> (i32, String) {
    script(&format!("{ROOT}/tuning"), name, args, env)
}

/// The shared count line: (below, total, absent).
fn summary(out: &str) -> (usize, usize, usize) {
    let line = out
        .lines()
        .find(|l| l.starts_with("knobs: "))
        .unwrap_or_else(|| panic!("no count line: {out}"));
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1], n[2])
}

/// Keys check.sh marks NO, and keys apply.sh would set.
fn check_below(out: &str) -> Vec<String> {
    let rows = out.lines().filter(|l| l.trim_end().ends_with(" NO"));
    let mut keys: Vec<String> = rows.map(|l| l.split_whitespace().next().unwrap().to_string()).collect();
    keys.sort();
    keys
}

fn apply_sets(out: &str) -> Vec<String> {
    let rows = out.lines().filter_map(|l| l.strip_prefix("set  "));
    let mut keys: Vec<String> = rows.map(|l| l.split(':').next().unwrap().to_string()).collect();
    keys.sort();
    keys
}

#[test]
fn apply_never_lowers_and_counts_the_knobs_check_counts() {
    let knobs = table();
    let scratch = Scratch::new("apply");
    let (sysctl, limits, state) = (scratch.0.join("sys"), scratch.0.join("limits"), scratch.0.join("state"));
    std::fs::create_dir_all(&limits).unwrap();
    let env = Env {
        sysctl: &sysctl,
        limits: &limits,
        state: &state,
    };
    // Alternate knobs that meet the recommendation (with other values) and
    // knobs below it; leave the last one absent, as a module not loaded.
    let mut before: BTreeMap<String, Vec<u64>> = knobs[..knobs.len() - 1]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.key.clone(), value(k, i % 2 == 0)))
        .collect();
    // The values the issue found lowered: above the recommendation, kept.
    before.insert("fs.file-max".into(), vec![2_466_170]);
    before.insert("net.ipv4.tcp_rmem".into(), vec![4096, 4096, 33_554_432]);
    write_tree(&sysctl, &before);
    let by_key: BTreeMap<&str, &Knob> = knobs.iter().map(|k| (k.key.as_str(), k)).collect();
    let expected_below: Vec<String> = before
        .iter()
        .filter(|(key, have)| !by_key[key.as_str()].met_by(have))
        .map(|(key, _)| key.clone())
        .collect();
    assert!(expected_below.len() >= 5, "{before:?}");

    let (code, check) = tuning("check.sh", &["--target", "1", "--limit-nofile", "100000"], &env);
    assert_eq!(code, 0, "{check}");
    let (code, dry) = tuning("apply.sh", &["--dry-run"], &env);
    assert_eq!(code, 0, "{dry}");
    assert!(!state.exists(), "a dry run saved state");
    let counts = (expected_below.len(), knobs.len(), 1);
    assert_eq!(summary(&check), counts, "{check}");
    assert_eq!(summary(&dry), counts, "{dry}");
    assert_eq!(check_below(&check), expected_below, "{check}");
    assert_eq!(apply_sets(&dry), expected_below, "{dry}");
    assert_eq!(read_tree(&sysctl, before.keys().cloned()), before, "a dry run wrote");

    let (code, applied) = tuning("apply.sh", &[], &env);
    assert_eq!(code, 0, "{applied}");
    assert_eq!(summary(&applied), counts, "{applied}");
    let after = read_tree(&sysctl, before.keys().cloned());
    for (key, have) in &before {
        let knob = by_key[key.as_str()];
        let now = &after[key];
        assert!(knob.met_by(now), "{key}: {have:?} -> {now:?} still misses {knob:?}");
        if knob.met_by(have) {
            assert_eq!(now, have, "{key} met the recommendation and was changed");
        }
        if knob.rule(0) != "width" {
            for (i, (old, new)) in have.iter().zip(now).enumerate() {
                match knob.rule(i) {
                    ">=" => assert!(new >= old, "{key} field {i} lowered: {old} -> {new}"),
                    "<=" => assert!(new <= old, "{key} field {i} raised: {old} -> {new}"),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(after["fs.file-max"], [2_466_170]);
    assert_eq!(after["net.ipv4.tcp_rmem"], [4096, 4096, 33_554_432]);
    assert!(limits.join("hubbub.conf").exists(), "{applied}");

    // Applied: nothing left below, nothing left to change.
    let (_, check) = tuning("check.sh", &["--target", "1", "--limit-nofile", "100000"], &env);
    assert_eq!(summary(&check), (0, knobs.len(), 1), "{check}");
    let (_, dry) = tuning("apply.sh", &["--dry-run"], &env);
    assert_eq!(summary(&dry), (0, knobs.len(), 1), "{dry}");

    // A second apply keeps the first originals; revert restores them all.
    let (code, again) = tuning("apply.sh", &[], &env);
    assert_eq!(code, 0, "{again}");
    let (code, reverted) = tuning("apply.sh", &["--revert"], &env);
    assert_eq!(code, 0, "{reverted}");
    assert_eq!(read_tree(&sysctl, before.keys().cloned()), before, "{reverted}");
    assert!(!limits.join("hubbub.conf").exists(), "{reverted}");
}

#[test]
fn unwritable_knobs_fail_the_apply() {
    let knobs = table();
    let scratch = Scratch::new("ro");
    let (sysctl, state) = (scratch.0.join("sys"), scratch.0.join("state"));
    let env = Env {
        sysctl: &sysctl,
        limits: &scratch.0.join("no-limits-dir"),
        state: &state,
    };
    let before: BTreeMap<String, Vec<u64>> = knobs.iter().map(|k| (k.key.clone(), value(k, false))).collect();
    write_tree(&sysctl, &before);
    // A directory where the knob's file should be: unwritable even for root.
    let blocked = knob_file(&sysctl, &knobs[0].key);
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir(&blocked).unwrap();
    let (code, out) = tuning("apply.sh", &[], &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("FAILED {}", knobs[0].key)), "{out}");
}

#[test]
fn a_knob_without_a_rule_is_refused_by_both_scripts() {
    let scratch = Scratch::new("norule");
    let dir = scratch.0.join("tuning");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["check.sh", "apply.sh", "knobs.sh", "limits.conf"] {
        std::fs::copy(format!("{ROOT}/tuning/{file}"), dir.join(file)).unwrap();
    }
    let table = std::fs::read_to_string(format!("{ROOT}/tuning/sysctl.conf")).unwrap();
    std::fs::write(dir.join("sysctl.conf"), table + "net.core.optmem_max = 81920\n").unwrap();
    let sysctl = scratch.0.join("sys");
    let env = Env {
        sysctl: &sysctl,
        limits: &scratch.0,
        state: &scratch.0.join("state"),
    };
    let dir = dir.display().to_string();
    for (name, args) in [("check.sh", &["--target", "1"][..]), ("apply.sh", &["--dry-run"][..])] {
        let (code, out) = script(&dir, name, args, &env);
        assert_ne!(code, 0, "{name}: {out}");
        assert!(out.contains("net.core.optmem_max has no '#: RULE'"), "{name}: {out}");
    }
}

#[test]
fn help_is_a_usage_text() {
    let scratch = Scratch::new("help");
    let env = Env {
        sysctl: &scratch.0,
        limits: &scratch.0,
        state: &scratch.0.join("state"),
    };
    for name in ["apply.sh", "check.sh"] {
        let (code, out) = tuning(name, &["--help"], &env);
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("Usage: "), "{name}: {out}");
        assert!(
            out.contains("--help") && !out.contains("set -e") && !out.contains("$("),
            "{name}: {out}"
        );
        let (code, out) = tuning(name, &["--nonsense"], &env);
        assert_eq!(code, 2, "{name}: {out}");
    }
    let (_, out) = tuning("apply.sh", &["--help"], &env);
    assert!(out.contains("--dry-run") && out.contains("--revert"), "{out}");
}
