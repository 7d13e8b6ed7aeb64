//! The clock of one run: when the first item was added, when the last was handled, and the
//! add→handled latency of a sample of the items.
//!
//! Every implementation goes through the same calls, so the measurement costs the same
//! everywhere: a producer calls [`Probe::start`] once before its first add and makes each item
//! with [`Probe::item`] (a bulk producer calls [`Probe::stamp_range`] for a chunk, then makes the
//! items with [`Item::make`]); the handler side is [`Tally::batch`](crate::workload::Tally::batch).
//! A sampled item is one whose index is a multiple of a power of two chosen so that a run has
//! between half of [`TARGET_SAMPLES`] and all of it; stamping one is a clock read and a relaxed store, and the
//! channel or lock that carries the item orders that store before the handler's load. A batch
//! that holds sampled items costs the handler one clock read.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::workload::Item;

/// At most how many items of a run are stamped (at least half as many in a run of more items).
pub(crate) const TARGET_SAMPLES: u64 = 4096;

/// Stamps and start time of one run, shared by its producers and its handler.
#[derive(Debug)]
pub(crate) struct Probe {
    /// Zero of every time below.
    base: Instant,
    /// Item `i` is sampled when `i & mask == 0`.
    mask: u64,
    /// `mask.count_ones()`: sampled item `i` has its stamp at `i >> shift`.
    shift: u32,
    /// Nanoseconds since `base`, plus one, when each sampled item was added; 0 until then.
    stamps: Box<[AtomicU64]>,
    /// Nanoseconds since `base` of the earliest producer start; `u64::MAX` before any.
    first_add: AtomicU64,
}

impl Probe {
    /// A probe for a run of the items `0..n`.
    pub(crate) fn new(n: u64) -> Self {
        // Every item in `2^shift`, the power of two that gives at most TARGET_SAMPLES (at least
        // half as many when there are enough items).
        let shift = n.div_ceil(TARGET_SAMPLES).max(1).next_power_of_two().ilog2();
        let mask = (1u64 << shift) - 1;
        let slots = n.div_ceil(1 << shift);
        Self {
            base: Instant::now(),
            mask,
            shift,
            stamps: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            first_add: AtomicU64::new(u64::MAX),
        }
    }

    /// Nanoseconds since the probe was made.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A producer is about to add its first item.
    pub(crate) fn start(&self) {
        self.first_add.fetch_min(self.now(), Ordering::Relaxed);
    }

    /// When the first producer started, if one did.
    pub(crate) fn first_add(&self) -> Option<u64> {
        Some(self.first_add.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX)
    }

    /// Whether item `i` carries a stamp.
    #[inline]
    pub(crate) fn sampled(&self, i: u64) -> bool {
        i & self.mask == 0
    }

    /// How many of the items `0..n` are sampled.
    pub(crate) fn samples(&self) -> usize {
        self.stamps.len()
    }

    /// Item `i`, stamped now if it is sampled. Per-item producers make every item with this,
    /// right before adding it.
    #[inline]
    pub(crate) fn item<T: Item>(&self, i: u64) -> T {
        if self.sampled(i) {
            self.stamp(i);
        }
        T::make(i)
    }

    /// Stamps the sampled items of a chunk a bulk producer is about to hand over.
    pub(crate) fn stamp_range(&self, range: Range<u64>) {
        let first = range.start.next_multiple_of(self.mask + 1);
        for i in (first..range.end).step_by(1 << self.shift) {
            self.stamp(i);
        }
    }

    #[cold]
    #[inline(never)]
    fn stamp(&self, i: u64) {
        self.stamps[(i >> self.shift) as usize].store(self.now() + 1, Ordering::Relaxed);
    }

    /// When sampled item `i` was added (nanoseconds since the probe was made), if it was
    /// stamped.
    pub(crate) fn added(&self, i: u64) -> Option<u64> {
        let stamp = self.stamps.get((i >> self.shift) as usize)?.load(Ordering::Relaxed);
        stamp.checked_sub(1)
    }
}

/// The `q`-quantile (0..=1) of sorted values, nearest rank; `None` for no values.
pub(crate) fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rank between 1 and the (small) number of samples"
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_about_the_target() {
        let p = Probe::new(2_000_000);
        let sampled = (0..2_000_000u64).filter(|&i| p.sampled(i)).count();
        assert_eq!(sampled, p.samples());
        assert!((2048..=4096).contains(&sampled), "{sampled}");
        let exact = Probe::new(4096 * 64);
        assert_eq!(exact.samples(), 4096);
        let small = Probe::new(100);
        assert_eq!(small.samples(), 100);
        assert!((0..100).all(|i| small.sampled(i)));
    }

    #[test]
    fn stamps_ranges_and_items() {
        let p = Probe::new(100_000);
        let every = 100_000 / p.samples() as u64;
        assert!(every.is_power_of_two());
        p.stamp_range(5..3 * every + 1);
        assert_eq!(p.added(0), None);
        assert!(p.added(every).is_some() && p.added(2 * every).is_some() && p.added(3 * every).is_some());
        assert_eq!(p.added(4 * every), None);
        let _: u64 = p.item(4 * every);
        assert!(p.added(4 * every).is_some());
        assert_eq!(p.first_add(), None);
        p.start();
        assert!(p.first_add().is_some());
    }

    #[test]
    fn quantiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
