//! Owns what `passed` means beyond the threshold flags. A run in which nothing worked did not pass,
//! whatever thresholds were (or were not) given, and exits 1 like a run that could not be carried
//! out:
//! - no connection was attempted or none was established (hostile scenarios: no attacker began
//!   its attack);
//! - the scenario sends messages and none completed: no correct echo (`echo`, and the well-behaved
//!   clients of `slow`), no delivery (`broadcast`), no pong to the pings of `connect --ping-secs`,
//!   no echo at all for the `--probe` of `trickle` and `flood`;
//! - every connection that was established was lost (dropped by the server or the network rather
//!   than closed when the run asked). Attackers the server ends are not lost: that is what the
//!   hostile scenarios look for.

use crate::cli::Scenario;
use crate::scenario::attack::ENDED_PREFIX;
use crate::scenario::probe::PROBE_PREFIX;
use crate::stats::{Counters, Failures};

/// Exit status of a run that could not be carried out or in which nothing worked.
pub const EXIT_NOTHING_WORKED: u8 = 1;
/// Exit status when a threshold was missed.
pub const EXIT_THRESHOLD: u8 = 2;

/// The reasons the run did not work; empty when it did.
pub fn nothing_worked(scenario: &Scenario, c: &Counters, failures: &Failures) -> Vec<String> {
    let mut why = Vec::new();
    if c.attempts == 0 {
        why.push("no connection was attempted".to_string());
        return why;
    }
    let hostile = scenario.is_hostile();
    if c.opened == 0 {
        let who = if hostile {
            "no attacker began its attack"
        } else {
            "no connection was established"
        };
        why.push(format!("{who} ({})", top(failures, |k| !is_after_open(k))));
        return why;
    }
    if let Some(reason) = no_message(scenario, c, failures) {
        why.push(reason);
    }
    if !hostile {
        let lost_from = match scenario {
            Scenario::Slow(_) => c.opened.saturating_sub(c.slow_clients),
            _ => c.opened,
        };
        if lost_from > 0 && c.dropped >= lost_from {
            why.push(format!(
                "every connection was lost ({})",
                top(failures, |k| k.starts_with("dropped_"))
            ));
        }
    }
    why
}

/// The scenario sends messages and none completed.
fn no_message(scenario: &Scenario, c: &Counters, failures: &Failures) -> Option<String> {
    let correct = c.received.saturating_sub(c.verify_errors);
    match scenario {
        Scenario::Echo(_) if correct == 0 => Some(format!("no correct echo came back ({} sent)", c.sent)),
        Scenario::Slow(_) if c.opened > c.slow_clients && correct == 0 => Some(format!(
            "no correct echo came back to the well-behaved clients ({} sent)",
            c.sent
        )),
        Scenario::Broadcast(_) if c.received == 0 => {
            Some(format!("no message was delivered ({} published)", c.published))
        }
        Scenario::Connect(_) if c.pings > 0 && c.pongs == 0 => Some(format!("no ping was answered ({} sent)", c.pings)),
        Scenario::Trickle(_) | Scenario::Flood(_) => {
            let probing = scenario.probe().is_some_and(|p| p.probe);
            (probing && c.probe_received == 0).then(|| {
                let probe_failures = top(failures, |k| k.starts_with(PROBE_PREFIX));
                format!("the probe got no echo at all ({} due; {probe_failures})", c.probe_due)
            })
        }
        _ => None,
    }
}

/// Failure labels that describe a connection after it was established.
fn is_after_open(label: &str) -> bool {
    label.starts_with("dropped_") || label.starts_with(ENDED_PREFIX) || label.starts_with(PROBE_PREFIX)
}

/// The three most frequent failures whose label passes `pick`, as `label count, ...`.
fn top(failures: &Failures, pick: impl Fn(&str) -> bool) -> String {
    let mut picked: Vec<(&String, &u64)> = failures.iter().filter(|(k, _)| pick(k)).collect();
    if picked.is_empty() {
        return "no failure recorded".into();
    }
    picked.sort_by_key(|(_, v)| std::cmp::Reverse(**v));
    let shown: Vec<String> = picked.iter().take(3).map(|(k, v)| format!("{k} {v}")).collect();
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn scenario(args: &[&str]) -> Scenario {
        Cli::try_parse_from(args).unwrap().scenario
    }

    fn failures(pairs: &[(&str, u64)]) -> Failures {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn nothing_listening_is_named() {
        let c = Counters {
            attempts: 10,
            failed: 10,
            ..Default::default()
        };
        let why = nothing_worked(&scenario(&["x", "echo"]), &c, &failures(&[("refused", 10)]));
        assert_eq!(why, ["no connection was established (refused 10)"]);
        let why = nothing_worked(
            &scenario(&["x", "trickle", "--mode", "head"]),
            &c,
            &failures(&[("refused", 10)]),
        );
        assert_eq!(why, ["no attacker began its attack (refused 10)"]);
    }

    #[test]
    fn all_dropped_is_a_failure_some_dropped_is_not() {
        let mut c = Counters {
            attempts: 300,
            opened: 300,
            sent: 900,
            received: 600,
            dropped: 300,
            ..Default::default()
        };
        let f = failures(&[("dropped_close_1001", 300)]);
        let why = nothing_worked(&scenario(&["x", "echo"]), &c, &f);
        assert_eq!(why, ["every connection was lost (dropped_close_1001 300)"]);
        c.dropped = 299;
        assert!(nothing_worked(&scenario(&["x", "echo"]), &c, &f).is_empty());
    }

    #[test]
    fn messages_that_never_complete_fail_the_run() {
        let c = Counters {
            attempts: 5,
            opened: 5,
            closed: 5,
            sent: 5,
            received: 5,
            verify_errors: 5,
            ..Default::default()
        };
        assert!(nothing_worked(&scenario(&["x", "echo"]), &c, &Failures::new())[0].contains("no correct echo"));
        let pings = Counters {
            attempts: 5,
            opened: 5,
            closed: 5,
            pings: 10,
            ..Default::default()
        };
        assert!(nothing_worked(&scenario(&["x", "connect"]), &pings, &Failures::new())[0].contains("no ping"));
        let silent = Counters { pings: 0, ..pings };
        assert!(nothing_worked(&scenario(&["x", "connect"]), &silent, &Failures::new()).is_empty());
    }

    #[test]
    fn ended_attackers_are_the_point_but_a_dead_probe_is_not() {
        let c = Counters {
            attempts: 10,
            opened: 10,
            ended: 10,
            probe_due: 100,
            ..Default::default()
        };
        let f = failures(&[("ended_close_1008", 10), ("probe_timeout", 1)]);
        assert!(nothing_worked(&scenario(&["x", "flood"]), &c, &f).is_empty());
        let why = nothing_worked(&scenario(&["x", "flood", "--probe"]), &c, &f);
        assert_eq!(why, ["the probe got no echo at all (100 due; probe_timeout 1)"]);
    }
}
