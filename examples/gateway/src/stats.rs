//! What the sinks record about deliveries: per-reading latency and time spent in the handler.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::sensors::Reading;

/// Shared by the sink (which records) and the report (which reads at the end).
#[derive(Debug)]
pub(crate) struct DeliveryStats {
    /// Microseconds from `add` to the end of the successful attempt, per reading.
    latency: Mutex<Histogram<u64>>,
    /// Time spent in handler attempts (successful or not), summed over attempts.
    busy_micros: AtomicU64,
    /// Handler attempts.
    attempts: AtomicU64,
    /// Readings a per-item answer asked to send again (alone, without their batch).
    retried_alone: AtomicU64,
}

/// A snapshot of [`DeliveryStats`].
#[derive(Debug, Clone)]
pub(crate) struct StatsSnapshot {
    /// Readings whose latency was recorded (delivered by the sink).
    pub(crate) recorded: u64,
    /// Latency percentiles: p50, p99, max.
    pub(crate) p50: Duration,
    /// 99th percentile latency.
    pub(crate) p99: Duration,
    /// Largest latency.
    pub(crate) max: Duration,
    /// Handler time summed over all attempts.
    pub(crate) busy: Duration,
    /// Handler attempts.
    pub(crate) attempts: u64,
    /// Readings a per-item answer asked to send again (HTTP mode).
    pub(crate) retried_alone: u64,
}

impl DeliveryStats {
    /// Empty statistics; latencies from 1 µs to 1 h at 3 significant digits.
    pub(crate) fn new() -> Self {
        Self {
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            busy_micros: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            retried_alone: AtomicU64::new(0),
        }
    }

    /// Records one handler attempt that took `took`.
    pub(crate) fn attempt(&self, took: Duration) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.busy_micros.fetch_add(micros(took), Ordering::Relaxed);
    }

    /// Records the latency of every reading of a batch delivered at `at`.
    pub(crate) fn delivered(&self, readings: &[Reading], at: Instant) {
        self.delivered_some(readings.iter(), at);
    }

    /// Records the latency of the readings of a batch that the sink took at `at`, when it
    /// answered per reading.
    pub(crate) fn delivered_some<'a>(&self, readings: impl Iterator<Item = &'a Reading>, at: Instant) {
        let mut hist = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in readings {
            hist.saturating_record(micros(at.saturating_duration_since(r.accepted)).max(1));
        }
    }

    /// Counts readings a per-item answer asked to send again.
    pub(crate) fn retried_alone(&self, n: u64) {
        self.retried_alone.fetch_add(n, Ordering::Relaxed);
    }

    /// The numbers so far.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let hist = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        StatsSnapshot {
            recorded: hist.len(),
            p50: Duration::from_micros(hist.value_at_quantile(0.50)),
            p99: Duration::from_micros(hist.value_at_quantile(0.99)),
            max: Duration::from_micros(hist.max()),
            busy: Duration::from_micros(self.busy_micros.load(Ordering::Relaxed)),
            attempts: self.attempts.load(Ordering::Relaxed),
            retried_alone: self.retried_alone.load(Ordering::Relaxed),
        }
    }
}

/// Whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
