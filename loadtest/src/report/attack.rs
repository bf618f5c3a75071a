//! Owns the part of a report that says what the server did to the attackers of `trickle` and
//! `flood` (ended how, after how long, how many still alive) and what the `--probe` saw, for the
//! JSON report and the human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{Cli, Scenario};
use crate::scenario::attack::ENDED_PREFIX;
use crate::scenario::probe::PROBE_PREFIX;
use crate::scenario::trickle::mode_name;
use crate::scenario::Outcome;
use crate::stats::Summary;

/// Lifetimes in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lifetimes {
    pub count: u64,
    pub min_secs: f64,
    pub p50_secs: f64,
    pub p99_secs: f64,
    pub max_secs: f64,
}

/// What the probe saw.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSummary {
    pub url: String,
    pub due: u64,
    pub sent: u64,
    pub answered: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// Round trips (ms) of the probe alone, before the attack.
    pub before: Summary,
    /// Round trips (ms) during the attack.
    pub during: Summary,
}

/// What happened to the attackers.
#[derive(Debug, Clone, Serialize)]
pub struct AttackSummary {
    /// What they did, as flags would say it (`trickle --mode frame, 1 B/s`).
    pub attack: String,
    pub attackers: u64,
    /// Attackers never started: the window ended before their turn (see `--connect-rate`).
    pub unstarted: u64,
    /// Attackers that began their attack (head: TCP connected; others: upgraded).
    pub began: u64,
    /// Attackers that never began (failures by reason in `failed_by`).
    pub failed: u64,
    /// Attackers the server ended (by how in `ended_by`).
    pub ended: u64,
    /// Of those, the ones a `--no-read` flooder found only after the flood.
    pub ended_late: u64,
    /// Attackers still connected at the end of the run.
    pub alive: u64,
    /// `attackers == unstarted + began + failed` and `began == ended + alive`.
    pub accounted: bool,
    pub failed_by: BTreeMap<String, u64>,
    /// `close_1008`, `http_408`, `eof`, `reset`, ...
    pub ended_by: BTreeMap<String, u64>,
    /// How long the ended ones lived, from the start of their attack.
    pub lifetime: Option<Lifetimes>,
    /// Age of the oldest attacker still alive at the end.
    pub oldest_alive_secs: Option<f64>,
    pub probe: Option<ProbeSummary>,
}

impl AttackSummary {
    /// The summary of a hostile run; `None` for the other scenarios.
    pub fn new(cli: &Cli, out: &Outcome) -> Option<AttackSummary> {
        let attack = describe(&cli.scenario)?;
        let c = &out.counters;
        let strip = |prefix: &str| -> BTreeMap<String, u64> {
            out.failures
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), *v)))
                .collect()
        };
        let failed_by = out
            .failures
            .iter()
            .filter(|(k, _)| !k.starts_with(ENDED_PREFIX) && !k.starts_with(PROBE_PREFIX))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let lifetime = out.latency.get("lifetime").filter(|h| h.count() > 0).map(|h| {
            let s = h.summary();
            Lifetimes {
                count: s.count,
                min_secs: s.min_ms / 1e3,
                p50_secs: s.p50_ms / 1e3,
                p99_secs: s.p99_ms / 1e3,
                max_secs: s.max_ms / 1e3,
            }
        });
        let oldest = out.latency.get("alive_age").filter(|h| h.count() > 0);
        let probe = cli.scenario.probe().filter(|p| p.probe).map(|p| ProbeSummary {
            url: crate::scenario::probe::probe_url(p, cli.scenario.url()).unwrap_or_default(),
            due: c.probe_due,
            sent: c.probe_sent,
            answered: c.probe_received,
            failed: c.probe_failed,
            failures: strip(PROBE_PREFIX),
            before: out.latency.get("probe_before").map(|h| h.summary()).unwrap_or_default(),
            during: out.latency.get("probe").map(|h| h.summary()).unwrap_or_default(),
        });
        Some(AttackSummary {
            attack,
            attackers: c.attempts + c.unstarted,
            unstarted: c.unstarted,
            began: c.opened,
            failed: c.failed,
            ended: c.ended,
            ended_late: c.ended_late,
            alive: c.alive,
            accounted: c.attempts == c.opened + c.failed && c.opened == c.ended + c.alive,
            failed_by,
            ended_by: strip(ENDED_PREFIX),
            lifetime,
            oldest_alive_secs: oldest.map(|h| h.summary().max_ms / 1e3),
            probe,
        })
    }

    /// The longest any attacker lived (ended or still alive), in seconds.
    pub fn longest_life_secs(&self) -> f64 {
        let ended = self.lifetime.as_ref().map_or(0.0, |l| l.max_secs);
        ended.max(self.oldest_alive_secs.unwrap_or(0.0))
    }

    /// The table rows.
    pub fn rows(&self, s: &mut String) {
        let _ = writeln!(s, "  attack      {}", self.attack);
        let _ = write!(
            s,
            "  attackers   {} of {} began, {} failed to begin; the server ended {}, {} still alive at the end",
            self.began, self.attackers, self.failed, self.ended, self.alive
        );
        match self.oldest_alive_secs {
            Some(age) => {
                let _ = writeln!(s, " (oldest {age:.2} s)");
            }
            None => s.push('\n'),
        }
        if self.unstarted > 0 {
            let _ = writeln!(
                s,
                "  unstarted   {} attackers never started: the attack window ended first (raise --connect-rate or --duration)",
                self.unstarted
            );
        }
        if !self.accounted {
            let _ = writeln!(
                s,
                "  attackers   NOT ACCOUNTED FOR: the counts above do not add up (a bug)"
            );
        }
        row(s, "failed by", &self.failed_by);
        row(s, "ended by", &self.ended_by);
        if self.ended_late > 0 {
            let _ = writeln!(
                s,
                "  ended late  {} found only when reading again after the flood (lifetime is an upper bound)",
                self.ended_late
            );
        }
        if let Some(l) = &self.lifetime {
            let _ = writeln!(
                s,
                "  lifetime    min {:.3} s, p50 {:.3} s, p99 {:.3} s, max {:.3} s (of the {} the server ended)",
                l.min_secs, l.p50_secs, l.p99_secs, l.max_secs, l.count
            );
        }
        if let Some(p) = &self.probe {
            probe_rows(s, p);
        }
    }
}

fn row(s: &mut String, name: &str, counts: &BTreeMap<String, u64>) {
    if counts.is_empty() {
        return;
    }
    let mut sorted: Vec<(&String, &u64)> = counts.iter().collect();
    sorted.sort_by_key(|(_, v)| std::cmp::Reverse(**v));
    let shown: Vec<String> = sorted.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "  {name:<11} {}", shown.join(", "));
}

fn probe_rows(s: &mut String, p: &ProbeSummary) {
    for (when, l) in [("before", &p.before), ("during", &p.during)] {
        if l.count == 0 {
            let _ = writeln!(s, "  probe       {when} the attack: no echo");
            continue;
        }
        let _ = writeln!(
            s,
            "  probe       {when} the attack: {} echoes, round trip p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            l.count, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    let _ = writeln!(
        s,
        "  probe       {} of {} due failed ({} sent, {} answered) on {}",
        p.failed, p.due, p.sent, p.answered, p.url
    );
    row(s, "probe fails", &p.failures);
}

/// What the attackers did, or `None` for a scenario that does not attack.
fn describe(scenario: &Scenario) -> Option<String> {
    Some(match scenario {
        Scenario::Trickle(a) => format!(
            "trickle --mode {}: {} attackers, {} B/s each after the opening bytes, {} s",
            mode_name(a.mode),
            a.connections,
            a.rate,
            a.duration_secs
        ),
        Scenario::Flood(a) => format!(
            "flood: {} attackers, {}-byte {} messages as fast as the socket allows{}, {} s",
            a.connections,
            a.size,
            if a.binary { "binary" } else { "text" },
            if a.no_read { ", never reading" } else { "" },
            a.duration_secs
        ),
        _ => return None,
    })
}
