//! Request metrics: counters and histograms a trigger updates on every
//! request, read by whoever exposes them (`bantam serve`'s `/metrics`).
//!
//! They are plain atomics, a handful of uncontended adds per request, so
//! every trigger records them; `bantam up` simply never shows them. A
//! component's [`ComponentMetrics`] belongs to the app's [`AppMetrics`],
//! not to one trigger, so the counts carry on across a redeploy (a new
//! trigger picks up the same counters by component id).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds, in seconds, of the request latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds, in seconds, of the instantiation histogram's buckets.
pub const INSTANTIATION_BUCKETS: [f64; 10] =
    [0.000005, 0.00001, 0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025];

/// The lowest and highest status codes counted one by one.
const FIRST_STATUS: u16 = 100;
const LAST_STATUS: u16 = 599;

/// A histogram with fixed buckets: counts per bucket (not cumulative),
/// the sum of observations in nanoseconds, and the count.
pub struct Histogram {
    bounds: &'static [f64],
    /// One counter per bound, and a last one for `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index =
            self.bounds.iter().position(|&bound| seconds <= bound).unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reading.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.buckets.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram's values at one moment.
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in seconds (the last bucket, `+Inf`, has none).
    pub bounds: &'static [f64],
    /// Observations per bucket, not cumulative; one more than `bounds`.
    pub counts: Vec<u64>,
    /// The sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// How many observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What one component's requests did.
pub struct ComponentMetrics {
    /// Responses by status code (100..=599; others are counted as 599).
    statuses: Box<[AtomicU64]>,
    /// Time from the request's arrival to its response head.
    pub latency: Histogram,
    /// Time to instantiate the pre-instance for one request.
    pub instantiation: Histogram,
    /// Requests whose guest trapped, panicked or never answered.
    failures: AtomicU64,
    /// Instances alive now (a response body still streaming counts).
    in_flight: AtomicI64,
}

impl Default for ComponentMetrics {
    fn default() -> Self {
        Self {
            statuses: (FIRST_STATUS..=LAST_STATUS).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::new(&LATENCY_BUCKETS),
            instantiation: Histogram::new(&INSTANTIATION_BUCKETS),
            failures: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }
}

impl ComponentMetrics {
    /// Count a response with `status`, `elapsed` after its request came.
    pub fn record_response(&self, status: u16, elapsed: Duration) {
        let index = status.clamp(FIRST_STATUS, LAST_STATUS) - FIRST_STATUS;
        self.statuses[usize::from(index)].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }

    /// Count a guest failure (trap, panic, no answer).
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Count an instance alive until the guard is dropped.
    pub fn instance_alive(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Responses so far, by status code (only codes seen).
    pub fn statuses(&self) -> Vec<(u16, u64)> {
        self.statuses
            .iter()
            .enumerate()
            .filter_map(|(index, count)| {
                let count = count.load(Ordering::Relaxed);
                let status = FIRST_STATUS + u16::try_from(index).ok()?;
                (count > 0).then_some((status, count))
            })
            .collect()
    }

    /// Guest failures so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Instances alive now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts one live instance for as long as it is held.
pub struct InFlight(Arc<ComponentMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The metrics of one app: one [`ComponentMetrics`] per component id,
/// shared by every trigger (version) of the app.
#[derive(Default)]
pub struct AppMetrics {
    components: Mutex<BTreeMap<String, Arc<ComponentMetrics>>>,
}

impl AppMetrics {
    /// The metrics of component `id`, created on first use.
    pub fn component(&self, id: &str) -> Arc<ComponentMetrics> {
        let mut components = self.components.lock().unwrap_or_else(|e| e.into_inner());
        components.entry(id.to_string()).or_default().clone()
    }

    /// Every component's metrics, by id.
    pub fn components(&self) -> Vec<(String, Arc<ComponentMetrics>)> {
        let components = self.components.lock().unwrap_or_else(|e| e.into_inner());
        components.iter().map(|(id, metrics)| (id.clone(), metrics.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_puts_each_observation_in_the_first_bucket_that_holds_it() {
        let metrics = ComponentMetrics::default();
        metrics.record_response(200, Duration::from_micros(400));
        metrics.record_response(200, Duration::from_millis(1));
        metrics.record_response(503, Duration::from_secs(60));
        let latency = metrics.latency.snapshot();
        assert_eq!(latency.counts[0], 1, "0.4 ms is under the 0.5 ms bound");
        assert_eq!(latency.counts[1], 1, "1 ms is on the 1 ms bound");
        assert_eq!(*latency.counts.last().unwrap(), 1, "60 s is past every bound");
        assert_eq!(latency.count(), 3);
        assert!((latency.sum_seconds - 60.0014).abs() < 1e-9);
        assert_eq!(metrics.statuses(), vec![(200, 2), (503, 1)]);
    }

    #[test]
    fn in_flight_follows_the_guards() {
        let metrics = Arc::new(ComponentMetrics::default());
        let first = metrics.instance_alive();
        let second = metrics.instance_alive();
        assert_eq!(metrics.in_flight(), 2);
        drop(first);
        assert_eq!(metrics.in_flight(), 1);
        drop(second);
        assert_eq!(metrics.in_flight(), 0);
    }

    #[test]
    fn an_app_keeps_one_set_per_component() {
        let app = AppMetrics::default();
        app.component("a").record_failure();
        assert_eq!(app.component("a").failures(), 1);
        assert_eq!(app.component("b").failures(), 0);
        assert_eq!(app.components().len(), 2);
    }
}
