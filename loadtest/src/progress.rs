//! Owns the live view of a run: an `indicatif` spinner line with the current rates on a terminal,
//! one plain line per interval on stderr otherwise (CI logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::stats::Counters;

/// Rate display state.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    interval_ns: u64,
    start_ns: u64,
    last_ns: u64,
    last: Counters,
}

impl Progress {
    /// A progress display; `quiet` shows nothing.
    pub fn new(quiet: bool, interval_secs: f64, now: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let bar = ProgressBar::new_spinner();
            // The template is a constant and valid.
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            plain: !quiet && !tty,
            interval_ns: crate::clock::secs_to_ns(interval_secs.max(0.05)),
            start_ns: now,
            last_ns: now,
            last: Counters::default(),
        }
    }

    /// Shows the rates since the last update, if an interval has passed.
    pub fn update(&mut self, now: u64, stage: &str, c: &Counters) {
        if now < self.last_ns + self.interval_ns || (self.bar.is_none() && !self.plain) {
            return;
        }
        let line = self.line(now, stage, c);
        self.last_ns = now;
        self.last = c.clone();
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => eprintln!("{line}"),
        }
    }

    /// Formats one status line.
    pub fn line(&self, now: u64, stage: &str, c: &Counters) -> String {
        let dt = ((now - self.last_ns) as f64 / 1e9).max(1e-9);
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
        let open = c.opened.saturating_sub(c.dropped + c.closed);
        format!(
            "[{:>6.1}s] {stage:<8} open {open} (+{:.0}/s) | sent {:.0}/s | recv {:.0}/s | failed {} dropped {} bad {}",
            (now - self.start_ns) as f64 / 1e9,
            rate(c.opened, self.last.opened),
            rate(c.sent + c.published, self.last.sent + self.last.published),
            rate(c.received, self.last.received),
            c.failed,
            c.dropped,
            c.verify_errors,
        )
    }

    /// Removes the live line before the final table.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_rates_over_the_interval() {
        let mut p = Progress::new(true, 1.0, 0);
        p.last = Counters {
            received: 100,
            ..Default::default()
        };
        let c = Counters {
            opened: 10,
            received: 600,
            ..Default::default()
        };
        let line = p.line(2_000_000_000, "run", &c);
        assert!(line.contains("recv 250/s"), "{line}");
        assert!(line.contains("open 10"), "{line}");
        p.update(5_000_000_000, "run", &c); // quiet: no output, no panic
    }
}
