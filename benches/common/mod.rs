//! Shared settings for the criterion benches: short runs, so the whole set
//! finishes in a few minutes on a busy 2-core box. Override on the command
//! line (`cargo bench --bench codec -- --measurement-time 10`).

use std::time::Duration;

use criterion::Criterion;

/// One second of warm-up and three of measurement per benchmark.
pub fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}
