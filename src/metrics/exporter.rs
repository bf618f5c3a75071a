//! The process-wide Prometheus recorder: installed once, rendered and kept
//! up by the admin thread (never by a shard), plus process-level gauges
//! refreshed at each scrape.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::names::{self, LATENCY_BUCKETS_SECONDS};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (first call) and describes every metric.
/// Later calls (several servers in one test process) return the same handle;
/// their series then share names, which only tests do.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)
                // Static bucket list, non-empty: this cannot fail.
                .expect("non-empty bucket list")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (an embedding
            // program's): then ours renders nothing but the shards still run.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder is already installed; /metrics will be empty");
            }
            names::describe();
            metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            metrics::gauge!(names::DRAINING).set(0.0);
            refresh_process_gauges();
            handle
        })
        .clone()
}

/// Refreshes the process gauges (memory, open files) just before a render.
pub(crate) fn refresh_process_gauges() {
    if let Some(rss) = resident_bytes() {
        metrics::gauge!(names::PROCESS_RESIDENT_MEMORY).set(rss as f64);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(names::PROCESS_OPEN_FDS).set(dir.count().saturating_sub(1) as f64);
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        metrics::gauge!(names::PROCESS_MAX_FDS).set(limit.rlim_cur as f64);
    }
}

/// Resident set size from /proc/self/statm (pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_is_read() {
        assert!(super::resident_bytes().unwrap() > 0);
    }
}
