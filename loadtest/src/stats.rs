//! Owns what a run counts: the counters, the failure reasons, and HDR latency histograms that
//! merge exactly across worker processes (serialized as V2 + base64 inside the worker's JSON).

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::net::Reason;

/// Highest latency recorded: one hour in nanoseconds (larger values are clamped).
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency distribution in nanoseconds, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

/// The percentiles reports print, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        // Constant, valid bounds (1 <= low, high >= 2 * low, sigfig <= 5).
        Latency(Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant bounds are valid"))
    }

    /// Records one latency (clamped to the histogram's range).
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    /// Adds every value of `other`: merging is exact, never an average of percentiles.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so addition cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1e6
    }

    /// The report's percentiles.
    pub fn summary(&self) -> Summary {
        let h = &self.0;
        let ms = |ns: u64| ns as f64 / 1e6;
        Summary {
            count: h.len(),
            min_ms: if h.is_empty() { 0.0 } else { ms(h.min()) },
            mean_ms: h.mean() / 1e6,
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p99_9_ms: self.quantile_ms(0.999),
            p99_99_ms: self.quantile_ms(0.9999),
            max_ms: ms(h.max()),
        }
    }

    /// V2 serialization in base64.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        // Writing to a Vec does not fail, and the histogram is a valid u64 histogram.
        let _ = V2Serializer::new().serialize(&self.0, &mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The inverse of [`Latency::encode`].
    pub fn decode(text: &str) -> Result<Latency, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| e.to_string())?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| format!("{e:?}"))?;
        let mut out = Latency::new();
        out.0.add(&h).map_err(|e| format!("{e:?}"))?;
        Ok(out)
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Latency::decode(&text).map_err(serde::de::Error::custom)
    }
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Every count a scenario keeps. All merge by addition.
        #[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
        pub struct Counters {
            $($(#[doc = $doc])* #[serde(default)] pub $name: u64,)*
        }

        impl Counters {
            /// Adds `other` field by field.
            pub fn merge(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }

            /// `(name, value)` pairs in declaration order, for tables.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Connection attempts started.
    attempts,
    /// Attempts that upgraded.
    opened,
    /// Attempts that never upgraded (see failures for why).
    failed,
    /// Open connections lost without the client asking (see failures for why).
    dropped,
    /// Clean closes the client asked for and the server answered.
    closed,
    /// Data messages sent.
    sent,
    /// Data messages received.
    received,
    /// Payload bytes sent.
    bytes_sent,
    /// Payload bytes received.
    bytes_received,
    /// Echoes that did not match what was sent, byte for byte.
    verify_errors,
    /// Echoes still outstanding when the run ended.
    unanswered,
    /// Broadcast: messages published.
    published,
    /// Broadcast: connections that were in the room for the whole publishing window.
    receivers,
    /// Broadcast: messages missing in the middle of a publisher's sequence, summed over subscribers.
    gaps,
    /// Broadcast: messages that arrived with a sequence number below the one expected.
    reordered,
    /// Pings sent while holding connections.
    pings,
    /// Pongs received.
    pongs,
    /// Slow: clients that stopped reading.
    slow_clients,
    /// Slow: stopped clients closed with the expected close code.
    slow_closed_code,
    /// Slow: stopped clients whose TCP connection was closed without the close frame reaching them.
    slow_closed_tcp,
    /// Slow: stopped clients closed with another close code.
    slow_closed_other,
    /// Slow: stopped clients still connected at the end (the server never cut them off).
    slow_not_closed,
    /// Churn: connection starts skipped because the concurrency cap was reached.
    skipped,
    /// Trickle/flood: attackers the server ended (see the `ended_*` failures for how).
    ended,
    /// Trickle/flood: of those, the ones found ended only after the attack window (a --no-read
    /// flooder reads again then): their lifetime is an upper bound.
    ended_late,
    /// Trickle/flood: attackers still connected when the run ended.
    alive,
    /// Trickle/flood: attackers never started because the attack window ended first (raise
    /// --connect-rate or --duration).
    unstarted,
    /// Probe: messages due on its schedule.
    probe_due,
    /// Probe: messages sent.
    probe_sent,
    /// Probe: correct echoes received.
    probe_received,
    /// Probe: messages due that got no correct echo (never sent for want of a connection,
    /// unanswered, or wrong).
    probe_failed,
    /// Probe: connection attempts (the first, and reconnects after a loss).
    probe_connects,
}

/// Failures by reason label (`refused`, `http_404`, `close_1008`, ...).
pub type Failures = BTreeMap<String, u64>;

/// Counts one failure under its reason's label.
pub fn count_failure(failures: &mut Failures, reason: Reason) {
    *failures.entry(reason.label()).or_default() += 1;
}

/// Adds `other` to `into`.
pub fn merge_failures(into: &mut Failures, other: &Failures) {
    for (k, v) in other {
        *into.entry(k.clone()).or_default() += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_exact_not_an_average() {
        let mut fast = Latency::new();
        (0..990).for_each(|_| fast.record(1_000_000));
        let mut slow = Latency::new();
        (0..10).for_each(|_| slow.record(100_000_000));
        fast.merge(&slow);
        let s = fast.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 1.0).abs() < 0.01, "{s:?}");
        // The top 1% are the slow process's values: p99.9 must be ~100 ms, not an average.
        assert!((s.p99_9_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn base64_round_trip_keeps_every_value() {
        let mut h = Latency::new();
        [1_000u64, 50_000, 7_000_000, 2_000_000_000]
            .iter()
            .for_each(|&v| h.record(v));
        let back = Latency::decode(&h.encode()).unwrap();
        assert_eq!(back.summary(), h.summary());
        let json = serde_json::to_string(&h).unwrap();
        let back: Latency = serde_json::from_str(&json).unwrap();
        assert_eq!(back.count(), 4);
    }

    #[test]
    fn counters_merge_by_addition() {
        let mut a = Counters {
            sent: 2,
            gaps: 1,
            ..Default::default()
        };
        a.merge(&Counters {
            sent: 3,
            opened: 7,
            ..Default::default()
        });
        assert_eq!((a.sent, a.gaps, a.opened), (5, 1, 7));
        assert_eq!(a.fields()[0], ("attempts", 0));
    }

    #[test]
    fn failures_count_by_label() {
        let mut f = Failures::new();
        count_failure(&mut f, Reason::Http(404));
        count_failure(&mut f, Reason::Http(404));
        let mut g = Failures::new();
        count_failure(&mut g, Reason::Refused);
        merge_failures(&mut g, &f);
        assert_eq!(g.get("http_404"), Some(&2));
        assert_eq!(g.get("refused"), Some(&1));
    }
}
