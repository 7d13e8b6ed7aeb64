//! The workload every implementation runs: item types, the handler, the producers' share of the
//! items and the check of what was delivered.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// How long a batch may wait for more items after its first one (every implementation).
pub(crate) const LINGER: Duration = Duration::from_millis(10);

/// Room for items in every buffer: batch-tokio's `capacity` and each channel's bound.
pub(crate) const CAPACITY: usize = 8192;

/// How many items a bulk producer hands over at once (`add_many`, `reserve_many`).
pub(crate) const CHUNK: usize = 1024;

/// The batch sizes measured; the single-thread limit dispatches on them as const generics.
pub(crate) const BATCH_SIZES: [usize; 3] = [16, 128, 1024];

/// The producer-task counts measured.
pub(crate) const PRODUCERS: [usize; 2] = [1, 4];

/// Worker threads of the tokio runtime.
pub(crate) const WORKER_THREADS: usize = 2;

/// An item type of the workload: made from its index, checked through one `u64` field.
pub(crate) trait Item: Copy + fmt::Debug + Send + Sync + 'static {
    /// The item with index `i`.
    fn make(i: u64) -> Self;
    /// The field the handler sums.
    fn key(&self) -> u64;
}

impl Item for u64 {
    #[inline]
    fn make(i: u64) -> Self {
        i
    }
    #[inline]
    fn key(&self) -> u64 {
        *self
    }
}

/// A 64-byte record (eight `u64`s), as a telemetry sample or a log line header might be.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wide(pub(crate) [u64; 8]);

const _: () = assert!(size_of::<Wide>() == 64);

impl Item for Wide {
    #[inline]
    fn make(i: u64) -> Self {
        Self([i, i ^ 0x5555, i.wrapping_mul(3), i << 1, !i, i >> 3, i.rotate_left(7), 42])
    }
    #[inline]
    fn key(&self) -> u64 {
        self.0[0]
    }
}

/// Which item type a case moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ItemKind {
    /// `u64`.
    U64,
    /// [`Wide`], 64 bytes.
    Wide,
}

impl ItemKind {
    /// Every item type, in report order.
    pub(crate) const ALL: [Self; 2] = [Self::U64, Self::Wide];

    /// The name on the command line and in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::U64 => "u64",
            Self::Wide => "64B",
        }
    }

    /// Parses [`name`](Self::name).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The handler every implementation calls with each batch: sums the items' key field.
#[inline(never)]
pub(crate) fn consume<T: Item>(items: &[T]) -> u64 {
    items.iter().fold(0u64, |sum, item| sum.wrapping_add(item.key()))
}

/// What the handler saw over a whole case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Items delivered.
    pub(crate) count: u64,
    /// Wrapping sum of their keys.
    pub(crate) sum: u64,
    /// Handler calls (batches).
    pub(crate) batches: u64,
    /// The largest batch.
    pub(crate) largest: usize,
}

impl Tally {
    /// Calls the handler on one batch and adds it up.
    #[inline]
    pub(crate) fn batch<T: Item>(&mut self, items: &[T]) {
        if items.is_empty() {
            return;
        }
        self.count += items.len() as u64;
        self.sum = self.sum.wrapping_add(consume(items));
        self.batches += 1;
        self.largest = self.largest.max(items.len());
    }

    /// Fails unless exactly the items `0..n` were delivered, each once, in batches of at most
    /// `batch` items.
    pub(crate) fn check<T: Item>(&self, n: u64, batch: usize) -> Result<(), String> {
        let sum = (0..n).fold(0u64, |s, i| s.wrapping_add(T::make(i).key()));
        if self.count != n || self.sum != sum {
            return Err(format!(
                "delivered {} items with checksum {:#x}; expected {n} items with checksum {sum:#x}",
                self.count, self.sum
            ));
        }
        if self.largest > batch {
            return Err(format!("a batch of {} items exceeds the batch size {batch}", self.largest));
        }
        Ok(())
    }
}

/// The items producer `p` of `producers` makes: a contiguous share of `0..n`.
pub(crate) fn share(n: u64, producers: usize, p: usize) -> Range<u64> {
    let (producers, p) = (producers as u64, p as u64);
    (n * p / producers)..(n * (p + 1) / producers)
}

/// The chunks of `range`, each at most `chunk` long, as ranges.
pub(crate) fn chunks(range: Range<u64>, chunk: usize) -> impl Iterator<Item = Range<u64>> {
    let chunk = chunk as u64;
    let end = range.end;
    range.step_by(chunk as usize).map(move |start| start..(start + chunk).min(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for producers in 1..=5 {
            let mut next = 0;
            for p in 0..producers {
                let r = share(1003, producers, p);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, 1003);
        }
    }

    #[test]
    fn chunks_cover_the_range() {
        let c: Vec<_> = chunks(10..35, 10).collect();
        assert_eq!(c, vec![10..20, 20..30, 30..35]);
    }

    #[test]
    fn tally_checks_count_and_sum() {
        let mut t = Tally::default();
        let items: Vec<Wide> = (0..100).map(Wide::make).collect();
        t.batch(&items[..60]);
        t.batch(&items[60..]);
        assert!(t.check::<Wide>(100, 60).is_ok());
        assert!(t.check::<Wide>(100, 59).is_err());
        assert_eq!(t.batches, 2);
        t.batch(&items[..1]);
        assert!(t.check::<Wide>(100, 60).is_err());
    }
}
