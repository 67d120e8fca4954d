//! What the in-process probes share: the percentiles and units they
//! report in.

use std::time::Duration;

/// The `p`th percentile of `times`.
pub fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// `d` in microseconds, to two decimals.
pub fn micros(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 10.0).round() / 100.0
}
