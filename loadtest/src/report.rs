//! Owns what a finished run tells people: the merged figures as a [`Report`] (written whole with
//! `--json`), the human table, and the threshold checks that set the exit status.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{Cli, Scenario};
use crate::scenario::{GapRecord, Outcome};
use crate::stats::{Counters, Failures, Latency, Summary};
use crate::sysmem::MemReport;

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
    pub limit: f64,
    pub actual: f64,
    pub passed: bool,
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
    pub checks: Vec<Check>,
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
        let errors = c.failed
            + c.dropped
            + c.verify_errors
            + c.unanswered
            + lost
            + c.reordered
            + c.slow_not_closed
            + c.slow_closed_other;
        let error_base = (c.attempts + expected.unwrap_or(c.sent) + c.slow_clients).max(1);
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
            checks: Vec::new(),
            passed: true,
        };
        report.check(cli);
        report
    }

    fn check(&mut self, cli: &Cli) {
        if let Some(limit) = cli.common.max_error_rate {
            self.checks.push(Check {
                name: "error_rate".into(),
                limit,
                actual: self.error_rate,
                passed: self.error_rate <= limit,
            });
        }
        if let Some(limit) = cli.common.max_p99_ms {
            let name = cli.scenario.main_latency();
            let actual =
                self.latency
                    .get(name)
                    .map_or(f64::INFINITY, |s| if s.count == 0 { f64::INFINITY } else { s.p99_ms });
            self.checks.push(Check {
                name: format!("{name}_p99_ms"),
                limit,
                actual,
                passed: actual <= limit,
            });
        }
        self.passed = self.checks.iter().all(|c| c.passed);
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
        if !self.failures.is_empty() {
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
                "  threshold   {} {:.4} <= {:.4}: {verdict}",
                c.name, c.actual, c.limit
            );
        }
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
        if let Some(per) = m.tcp_mem_per_conn_bytes {
            let _ = writeln!(
                s,
                "  kernel TCP  {per:.0} bytes per connection (box-wide, client sockets included on loopback)"
            );
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
