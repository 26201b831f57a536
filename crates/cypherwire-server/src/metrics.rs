//! Per-route request counters and latency histograms ([`ServerHandle::route_stats`]), for an
//! exporter of the application's choosing (`cypherwire serve --metrics` serves them as
//! Prometheus text). Recording is a few relaxed atomic additions per request.
//!
//! [`ServerHandle::route_stats`]: crate::ServerHandle::route_stats

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cypherwire_wire::StatusCode;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is unbounded).
const BOUNDS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Status codes counted one by one: the protocol's 0..=8; the rest (application codes) share
/// the last slot.
const STATUS_SLOTS: usize = 10;

/// The counters of one route (or of the requests no route took).
#[derive(Debug, Default)]
pub(crate) struct RouteMetrics {
    statuses: [AtomicU64; STATUS_SLOTS],
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl RouteMetrics {
    /// Counts one answered request.
    pub(crate) fn record(&self, status: StatusCode, took: Duration) {
        let slot = usize::from(status.0).min(STATUS_SLOTS - 1);
        self.statuses[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS.partition_point(|b| *b < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self, path: &str, operation: &str) -> RouteStats {
        let by_status = self
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(slot, n)| {
                let n = n.load(Ordering::Relaxed);
                let code = if slot == STATUS_SLOTS - 1 {
                    StatusCode::APPLICATION_MIN
                } else {
                    StatusCode(u16::try_from(slot).unwrap_or(u16::MAX))
                };
                (n > 0).then_some((code, n))
            })
            .collect();
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        RouteStats {
            path: path.to_owned(),
            operation: operation.to_owned(),
            by_status,
            latency: LatencyHistogram {
                count: counts.iter().sum(),
                counts,
                sum: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
            },
        }
    }
}

/// The requests one route answered, by status, and how long they took.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStats {
    /// The route's path; empty for the requests no route took (answered `NOT_FOUND`).
    pub path: String,
    /// The route's operation; empty as the path is.
    pub operation: String,
    /// Answers by status code (only codes seen). Application codes (1000 and above) are
    /// counted together under [`StatusCode::APPLICATION_MIN`].
    pub by_status: Vec<(StatusCode, u64)>,
    /// From the request read to its answer recorded.
    pub latency: LatencyHistogram,
}

impl RouteStats {
    /// Requests answered, all statuses.
    pub fn total(&self) -> u64 {
        self.by_status.iter().map(|(_, n)| n).sum()
    }
}

/// A latency histogram with fixed buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencyHistogram {
    /// Requests in each bucket (not cumulative): bucket `i` holds latencies up to
    /// [`bounds`](Self::bounds)`()[i]` above the previous bound; the last one everything above
    /// the largest bound.
    pub counts: Vec<u64>,
    /// All latencies added up.
    pub sum: Duration,
    /// Requests counted.
    pub count: u64,
}

impl LatencyHistogram {
    /// The buckets' upper bounds (one fewer than [`counts`](Self::counts): the last bucket is
    /// unbounded).
    pub fn bounds() -> Vec<Duration> {
        BOUNDS_MICROS
            .iter()
            .map(|m| Duration::from_micros(*m))
            .collect()
    }
}

/// Every route's counters, fixed when the server is built.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) routes: Vec<(String, String, std::sync::Arc<RouteMetrics>)>,
}

impl Routes {
    pub(crate) fn snapshot(&self) -> Vec<RouteStats> {
        let mut all: Vec<RouteStats> = self
            .routes
            .iter()
            .map(|(p, o, m)| m.snapshot(p, o))
            .collect();
        all.sort_by(|a, b| (&a.path, &a.operation).cmp(&(&b.path, &b.operation)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_status_and_latency_bucket() {
        let m = RouteMetrics::default();
        m.record(StatusCode::OK, Duration::from_micros(40));
        m.record(StatusCode::OK, Duration::from_micros(50));
        m.record(StatusCode::OK, Duration::from_micros(51));
        m.record(StatusCode::NOT_FOUND, Duration::from_secs(60));
        m.record(StatusCode(1234), Duration::from_millis(3));
        let s = m.snapshot("/P", "GET");
        assert_eq!(
            s.by_status,
            [
                (StatusCode::OK, 3),
                (StatusCode::NOT_FOUND, 1),
                (StatusCode::APPLICATION_MIN, 1)
            ]
        );
        assert_eq!(s.total(), 5);
        assert_eq!(s.latency.count, 5);
        assert_eq!(s.latency.counts.len(), LatencyHistogram::bounds().len() + 1);
        assert_eq!(s.latency.counts[0], 2, "40 and 50 µs are at most 50 µs");
        assert_eq!(s.latency.counts[1], 1, "51 µs is in the 100 µs bucket");
        assert_eq!(s.latency.counts[6], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(
            *s.latency.counts.last().unwrap(),
            1,
            "60 s is beyond the largest bound"
        );
        assert_eq!(
            s.latency.sum,
            Duration::from_micros(40 + 50 + 51 + 60_000_000 + 3_000)
        );
    }
}
