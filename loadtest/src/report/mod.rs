//! Owns what a finished run tells people: the merged figures as a [`Report`] (written whole with
//! `--json`), the human table, and the verdict that sets the exit status: 1 when nothing worked
//! (see `verdict`), 2 when a threshold was missed, else 0. `passed` is true only for 0.

pub mod attack;
pub mod verdict;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{Cli, Scenario};
use crate::scenario::{GapRecord, Outcome};
use crate::stats::{Counters, Failures, Latency, Summary};
use crate::sysmem::MemReport;
use attack::AttackSummary;
use verdict::{EXIT_NOTHING_WORKED, EXIT_THRESHOLD};

/// Rates over the measured phase (over the connect phase for handshakes).
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub handshakes_per_sec: f64,
    pub sent_per_sec: f64,
    pub received_per_sec: f64,
    pub received_bytes_per_sec: f64,
}

/// One threshold given on the command line and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// `<=`: `actual` may not exceed `limit`; `>=`: it may not fall below it.
    pub op: &'static str,
    pub limit: f64,
    pub actual: f64,
    pub passed: bool,
}

impl Check {
    fn at_most(name: impl Into<String>, limit: f64, actual: f64) -> Check {
        Check {
            name: name.into(),
            op: "<=",
            limit,
            actual,
            passed: actual <= limit,
        }
    }

    fn at_least(name: impl Into<String>, limit: f64, actual: f64) -> Check {
        Check {
            name: name.into(),
            op: ">=",
            limit,
            actual,
            passed: actual >= limit,
        }
    }
}

/// Every figure of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub procs: u32,
    pub settings: serde_json::Value,
    pub elapsed_secs: f64,
    /// Time from the first connect until every connection was up or had failed.
    pub connect_secs: f64,
    pub measure_secs: f64,
    pub rates: Rates,
    pub counters: Counters,
    /// Broadcast: deliveries expected (published x receivers) and made.
    pub expected_deliveries: Option<u64>,
    pub delivered: Option<u64>,
    pub failures: Failures,
    /// Percentiles in milliseconds, by histogram name.
    pub latency: BTreeMap<String, Summary>,
    /// The full histograms (HDR V2, base64) for reprocessing.
    pub histograms: BTreeMap<String, Latency>,
    pub memory: Option<MemReport>,
    /// CPU seconds the tool itself used (all its processes).
    pub tool_cpu_secs: f64,
    /// Messages (sent plus received) the tool handled per CPU second it used: its cost, to
    /// compare with its measured ceiling.
    pub messages_per_tool_cpu_sec: f64,
    pub errors: u64,
    pub error_base: u64,
    pub error_rate: f64,
    pub worst_gaps: Vec<GapRecord>,
    /// Trickle and flood: what the server did to the attackers, and what the probe saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackSummary>,
    pub checks: Vec<Check>,
    /// Why nothing worked (then the exit status is 1 and `passed` is false).
    pub reasons: Vec<String>,
    /// 0: passed; 1: nothing worked; 2: a threshold was missed.
    pub exit_code: u8,
    pub passed: bool,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(cli: &Cli, out: Outcome, memory: Option<MemReport>, elapsed_secs: f64, tool_cpu_secs: f64) -> Report {
        let c = &out.counters;
        let secs = |ns: u64| ns as f64 / 1e9;
        let measure = secs(out.measure_ns).max(1e-9);
        let per = |n: u64| n as f64 / measure;
        let broadcast = matches!(cli.scenario, Scenario::Broadcast(_));
        let expected = broadcast.then(|| c.published * c.receivers);
        let lost = expected.map_or(0, |e| e.saturating_sub(c.received));
        let (errors, error_base) = if cli.scenario.is_hostile() {
            // The attackers' fate is the finding, not an error: errors are the probe's.
            (c.probe_failed, c.probe_due.max(1))
        } else {
            let errors = c.failed
                + c.dropped
                + c.verify_errors
                + c.unanswered
                + lost
                + c.reordered
                + c.slow_not_closed
                + c.slow_closed_other;
            (
                errors,
                (c.attempts + expected.unwrap_or(c.sent) + c.slow_clients).max(1),
            )
        };
        let error_rate = errors as f64 / error_base as f64;
        let mut report = Report {
            scenario: cli.scenario.name().into(),
            target: cli.scenario.url().into(),
            procs: cli.common.procs,
            settings: serde_json::to_value(cli).unwrap_or_default(),
            elapsed_secs,
            connect_secs: secs(out.connect_ns),
            measure_secs: secs(out.measure_ns),
            rates: Rates {
                handshakes_per_sec: c.opened as f64 / secs(out.connect_ns).max(1e-9),
                sent_per_sec: per(c.sent + c.published),
                received_per_sec: per(c.received),
                received_bytes_per_sec: per(c.bytes_received),
            },
            counters: c.clone(),
            expected_deliveries: expected,
            delivered: broadcast.then_some(c.received),
            failures: out.failures.clone(),
            latency: out.latency.iter().map(|(k, h)| (k.clone(), h.summary())).collect(),
            histograms: out.latency.clone(),
            memory,
            tool_cpu_secs,
            messages_per_tool_cpu_sec: (c.sent + c.published + c.received) as f64 / tool_cpu_secs.max(1e-9),
            errors,
            error_base,
            error_rate,
            worst_gaps: out.worst_gaps.clone(),
            attack: AttackSummary::new(cli, &out),
            checks: Vec::new(),
            reasons: verdict::nothing_worked(&cli.scenario, c, &out.failures),
            exit_code: 0,
            passed: true,
        };
        report.check(cli);
        report
    }

    fn check(&mut self, cli: &Cli) {
        if let Some(limit) = cli.common.max_error_rate {
            self.checks.push(Check::at_most("error_rate", limit, self.error_rate));
        }
        if let Some(limit) = cli.common.max_p99_ms {
            let name = cli.scenario.main_latency();
            let actual =
                self.latency
                    .get(name)
                    .map_or(f64::INFINITY, |s| if s.count == 0 { f64::INFINITY } else { s.p99_ms });
            self.checks
                .push(Check::at_most(format!("{name}_p99_ms"), limit, actual));
        }
        self.check_attack(cli);
        self.exit_code = if !self.reasons.is_empty() {
            EXIT_NOTHING_WORKED
        } else if self.checks.iter().any(|c| !c.passed) {
            EXIT_THRESHOLD
        } else {
            0
        };
        self.passed = self.exit_code == 0;
    }

    /// Trickle and flood: the probe must get echoes during the attack when it got them before,
    /// and `--expect-closed-within` bounds every attacker's life.
    fn check_attack(&mut self, cli: &Cli) {
        let Some(attack) = &self.attack else { return };
        if let Some(p) = attack.probe.as_ref().filter(|p| p.before.count > 0) {
            let during = p.during.count as f64;
            self.checks
                .push(Check::at_least("probe_echoes_during_attack", 1.0, during));
        }
        let within = match &cli.scenario {
            Scenario::Trickle(a) => a.expect_closed_within,
            Scenario::Flood(a) => a.expect_closed_within,
            _ => None,
        };
        if let Some(limit) = within {
            let longest = attack.longest_life_secs();
            self.checks.push(Check::at_most("attacker_life_secs", limit, longest));
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "hubbub-load {}  {}  ({} process{})",
            self.scenario,
            self.target,
            self.procs,
            if self.procs == 1 { "" } else { "es" }
        );
        let _ = write!(s, "  time        elapsed {:.2} s", self.elapsed_secs);
        if self.connect_secs > 0.0 {
            let (secs, rate) = (self.connect_secs, self.rates.handshakes_per_sec);
            let _ = write!(s, ", connect {secs:.3} s ({rate:.0} handshakes/s)");
        }
        let _ = writeln!(s, ", measured {:.2} s", self.measure_secs);
        let counts: Vec<String> = self
            .counters
            .fields()
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        for line in counts.chunks(6) {
            let _ = writeln!(s, "  counts      {}", line.join(", "));
        }
        let r = &self.rates;
        if r.sent_per_sec + r.received_per_sec > 0.0 {
            let (sent, recv, mb) = (r.sent_per_sec, r.received_per_sec, r.received_bytes_per_sec / 1e6);
            let _ = writeln!(
                s,
                "  rates       sent {sent:.0}/s, received {recv:.0}/s, {mb:.2} MB/s received"
            );
        }
        if let (Some(e), Some(d)) = (self.expected_deliveries, self.delivered) {
            let _ = writeln!(
                s,
                "  delivered   {d} of {e} expected ({:.4}%)",
                100.0 * d as f64 / e.max(1) as f64
            );
        }
        self.latency_rows(&mut s);
        if let Some(attack) = &self.attack {
            attack.rows(&mut s);
        } else if !self.failures.is_empty() {
            let f: Vec<String> = self.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "  failures    {}", f.join(", "));
        }
        for g in self.worst_gaps.iter().take(5) {
            let _ = writeln!(
                s,
                "  gaps        subscriber {}: {} missing, {} out of order",
                g.subscriber, g.gaps, g.reordered
            );
        }
        self.memory_rows(&mut s);
        let _ = writeln!(
            s,
            "  tool CPU    {:.2} s = {:.2} cores over the run; {:.0} messages per CPU second",
            self.tool_cpu_secs,
            self.tool_cpu_secs / self.elapsed_secs.max(1e-9),
            self.messages_per_tool_cpu_sec
        );
        let _ = writeln!(
            s,
            "  errors      {} of {} ({:.4}%)",
            self.errors,
            self.error_base,
            100.0 * self.error_rate
        );
        for c in &self.checks {
            let verdict = if c.passed { "ok" } else { "MISSED" };
            let _ = writeln!(
                s,
                "  threshold   {} {:.4} {} {:.4}: {verdict}",
                c.name, c.actual, c.op, c.limit
            );
        }
        for reason in &self.reasons {
            let _ = writeln!(s, "  FAILED      {reason}");
        }
        let verdict = match self.exit_code {
            0 => "passed",
            EXIT_THRESHOLD => "a threshold was missed",
            _ => "nothing worked",
        };
        let _ = writeln!(s, "  verdict     {verdict} (exit {})", self.exit_code);
        s
    }

    fn latency_rows(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency ms", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, l) in self.latency.iter().filter(|(_, l)| l.count > 0) {
            let _ = writeln!(
                s,
                "  {:<11} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name, l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p99_9_ms, l.p99_99_ms, l.max_ms
            );
        }
    }

    fn memory_rows(&self, s: &mut String) {
        let Some(m) = &self.memory else { return };
        if let (Some(a), Some(b), Some(per)) = (
            m.before.server_rss_bytes,
            m.after.server_rss_bytes,
            m.server_rss_per_conn_bytes,
        ) {
            let _ = writeln!(
                s,
                "  server RSS  {:.1} MB -> {:.1} MB: {per:.0} bytes per connection",
                a as f64 / 1e6,
                b as f64 / 1e6
            );
        }
        match (m.kernel_per_conn_bytes, m.kernel_structs_per_conn_bytes) {
            (Some(total), Some(structs)) => {
                let buffers = m.socket_buffers_per_conn_bytes.unwrap_or(0.0);
                let _ = writeln!(
                    s,
                    "  kernel      {total:.0} bytes per connection: {structs:.0} socket, file and epoll structures \
                     + {buffers:.0} socket buffers\n              (box-wide: on loopback both ends count; \
                     tuning/check.sh budgets {} per server-side connection)",
                    crate::sysmem::CHECK_SH_BUDGET_BYTES
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "  kernel      not measured: /proc/slabinfo is not readable (it needs root)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let mut out = Outcome {
            counters: Counters {
                attempts: 10,
                opened: 10,
                sent: 990,
                received: 989,
                unanswered: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        out.measure_ns = 1_000_000_000;
        let mut rtt = Latency::new();
        (0..100).for_each(|i| rtt.record(1_000_000 * (i % 10 + 1)));
        out.latency.insert("rtt".into(), rtt);
        let r = Report::new(
            &cli(&["x", "echo", "--max-error-rate", "0.01", "--max-p99-ms", "20"]),
            out.clone(),
            None,
            1.0,
            0.5,
        );
        assert!((r.error_rate - 0.001).abs() < 1e-9, "1 unanswered of 10 + 990");
        assert!(r.passed, "{:?}", r.checks);
        let r = Report::new(&cli(&["x", "echo", "--max-p99-ms", "5"]), out, None, 1.0, 0.5);
        assert!(!r.passed);
        assert!(r.table().contains("MISSED"));
        assert!((r.rates.received_per_sec - 989.0).abs() < 1e-6);
    }

    #[test]
    fn broadcast_counts_lost_deliveries() {
        let out = Outcome {
            counters: Counters {
                attempts: 3,
                opened: 3,
                published: 10,
                receivers: 3,
                received: 28,
                ..Default::default()
            },
            ..Default::default()
        };
        let r = Report::new(&cli(&["x", "broadcast"]), out, None, 1.0, 0.5);
        assert_eq!((r.expected_deliveries, r.delivered, r.errors), (Some(30), Some(28), 2));
        assert!(r.table().contains("28 of 30"));
    }

    #[test]
    fn nothing_worked_exits_1_before_any_threshold() {
        let mut out = Outcome {
            counters: Counters {
                attempts: 10,
                failed: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        out.failures.insert("refused".into(), 10);
        for args in [&["x", "echo"][..], &["x", "echo", "--max-error-rate", "0.5"]] {
            let r = Report::new(&cli(args), out.clone(), None, 1.0, 0.1);
            assert_eq!((r.exit_code, r.passed), (1, false), "{args:?}");
            assert_eq!(r.reasons, ["no connection was established (refused 10)"]);
            let table = r.table();
            assert!(
                table.contains("FAILED      no connection was established (refused 10)"),
                "{table}"
            );
            assert!(table.contains("verdict     nothing worked (exit 1)"), "{table}");
        }
        let json = serde_json::to_value(Report::new(&cli(&["x", "echo"]), out, None, 1.0, 0.1)).unwrap();
        assert_eq!(
            (json["passed"].as_bool(), json["exit_code"].as_u64()),
            (Some(false), Some(1))
        );
    }

    #[test]
    fn attackers_are_accounted_for_and_bounded_in_life() {
        let mut out = Outcome {
            counters: Counters {
                attempts: 10,
                opened: 9,
                failed: 1,
                ended: 7,
                alive: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        out.failures.insert("refused".into(), 1);
        out.failures.insert("ended_close_1008".into(), 4);
        out.failures.insert("ended_eof".into(), 3);
        let mut life = Latency::new();
        (0..7).for_each(|i| life.record(1_000_000_000 + i * 100_000_000));
        out.latency.insert("lifetime".into(), life);
        let mut age = Latency::new();
        (0..2).for_each(|_| age.record(4_000_000_000));
        out.latency.insert("alive_age".into(), age);
        let args = ["x", "flood", "-d", "5", "--expect-closed-within", "3"];
        let r = Report::new(&cli(&args), out, None, 5.0, 0.1);
        let a = r.attack.as_ref().unwrap();
        assert!(a.accounted);
        assert_eq!(a.ended_by.get("close_1008"), Some(&4));
        assert_eq!(a.failed_by.get("refused"), Some(&1));
        assert!((a.lifetime.as_ref().unwrap().max_secs - 1.6).abs() < 0.01);
        assert_eq!(r.exit_code, 2, "two attackers outlived 3 s: {:?}", r.checks);
        let table = r.table();
        assert!(table.contains("ended by    close_1008 4, eof 3"), "{table}");
        assert!(
            table.contains(
                "9 of 10 began, 1 failed to begin; the server ended 7, 2 still alive at the end (oldest 4.00 s)"
            ),
            "{table}"
        );
    }

    #[test]
    fn missing_latency_fails_a_p99_threshold() {
        let r = Report::new(
            &cli(&["x", "connect", "--max-p99-ms", "5"]),
            Outcome::default(),
            None,
            0.0,
            0.0,
        );
        assert!(!r.passed, "no handshake at all must not pass a latency gate");
    }
}
