//! The workload every implementation runs: item types, the handler, the producers' share of the
//! items and the check of what was delivered.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::probe::Probe;

/// How long a batch may wait for more items after its first one (every implementation).
pub(crate) const LINGER: Duration = Duration::from_millis(10);

/// How many items a bulk producer hands over at once (`add_many`, `reserve_many`), at most the
/// bound.
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

/// The room every implementation gets: batch-tokio's `capacity` and each channel's bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Bound {
    /// Four batches' worth: `4 × B` items.
    FourBatches,
    /// A fixed [`Bound::FIXED`] items, whatever the batch size.
    Fixed,
}

impl Bound {
    /// Every bound, in report order.
    pub(crate) const ALL: [Self; 2] = [Self::FourBatches, Self::Fixed];

    /// The items of [`Bound::Fixed`].
    pub(crate) const FIXED: usize = 8192;

    /// The room, in items, for batch size `batch`.
    pub(crate) fn items(self, batch: usize) -> usize {
        match self {
            Self::FourBatches => 4 * batch,
            Self::Fixed => Self::FIXED,
        }
    }

    /// The items a bulk producer hands over at once with this bound: [`CHUNK`], or the whole
    /// bound when that is smaller (`reserve_many` cannot wait for more room than there is).
    pub(crate) fn chunk(self, batch: usize) -> usize {
        CHUNK.min(self.items(batch))
    }

    /// The name on the command line.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Self::FourBatches => "4b",
            Self::Fixed => "8192",
        }
    }

    /// The name in the report.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::FourBatches => "4×B",
            Self::Fixed => "8192",
        }
    }

    /// Parses [`id`](Self::id).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.id() == s)
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The handler every implementation calls with each batch: sums the items' key field.
#[inline(never)]
pub(crate) fn consume<T: Item>(items: &[T]) -> u64 {
    items.iter().fold(0u64, |sum, item| sum.wrapping_add(item.key()))
}

/// What the handler saw over one run.
#[derive(Debug)]
pub(crate) struct Tally {
    /// The run's clock and stamps.
    probe: Arc<Probe>,
    /// Items the run moves.
    n: u64,
    /// Items delivered.
    pub(crate) count: u64,
    /// Wrapping sum of their keys.
    pub(crate) sum: u64,
    /// Handler calls (batches).
    pub(crate) batches: u64,
    /// The largest batch.
    pub(crate) largest: usize,
    /// Add→handled nanoseconds of each sampled item handled.
    pub(crate) latencies: Vec<u32>,
    /// Sampled items handled without a stamp (must stay 0).
    unstamped: u64,
    /// Nanoseconds since the probe was made when the `n`th item was handled.
    done: Option<u64>,
}

impl Tally {
    /// An empty tally for a run of the items `0..n`.
    pub(crate) fn new(probe: Arc<Probe>, n: u64) -> Self {
        let latencies = Vec::with_capacity(probe.samples());
        Self { probe, n, count: 0, sum: 0, batches: 0, largest: 0, latencies, unstamped: 0, done: None }
    }

    /// Takes what was tallied, leaving an empty tally (without room for samples) behind.
    pub(crate) fn take(&mut self) -> Self {
        let empty = Self { latencies: Vec::new(), ..Self::new(Arc::clone(&self.probe), self.n) };
        std::mem::replace(self, empty)
    }

    /// Calls the handler on one batch and adds it up; reads the clock once if the batch holds a
    /// sampled item or completes the run.
    #[inline]
    pub(crate) fn batch<T: Item>(&mut self, items: &[T]) {
        if items.is_empty() {
            return;
        }
        self.count += items.len() as u64;
        self.sum = self.sum.wrapping_add(consume(items));
        self.batches += 1;
        self.largest = self.largest.max(items.len());
        let mut now = None;
        for item in items {
            let key = item.key();
            if self.probe.sampled(key) {
                let now = *now.get_or_insert_with(|| self.probe.now());
                match self.probe.added(key) {
                    Some(added) => {
                        self.latencies.push(u32::try_from(now.saturating_sub(added)).unwrap_or(u32::MAX));
                    }
                    None => self.unstamped += 1,
                }
            }
        }
        if self.count == self.n {
            self.done = Some(now.unwrap_or_else(|| self.probe.now()));
        }
    }

    /// Fails unless exactly the items `0..n` were delivered, each once, in batches of at most
    /// `batch` items, and every sampled item was stamped at its add and seen once by the
    /// handler; otherwise returns the time from the first add to the last item handled.
    pub(crate) fn check<T: Item>(&self, batch: usize) -> Result<Duration, String> {
        let n = self.n;
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
        if self.unstamped > 0 || self.latencies.len() != self.probe.samples() {
            return Err(format!(
                "{} sampled items handled with a stamp and {} without; expected {}",
                self.latencies.len(),
                self.unstamped,
                self.probe.samples()
            ));
        }
        let (Some(first), Some(done)) = (self.probe.first_add(), self.done) else {
            return Err("no producer start or no last batch was recorded".into());
        };
        Ok(Duration::from_nanos(done.saturating_sub(first)))
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
    fn tally_checks_count_sum_and_samples() {
        let probe = Arc::new(Probe::new(100));
        probe.start();
        let items: Vec<Wide> = (0..100).map(|i| probe.item(i)).collect();
        let mut t = Tally::new(Arc::clone(&probe), 100);
        t.batch(&items[..60]);
        t.batch(&items[60..]);
        assert!(t.check::<Wide>(60).is_ok());
        assert!(t.check::<Wide>(59).is_err());
        assert_eq!((t.batches, t.latencies.len()), (2, 100));
        let mut dup = t.take();
        assert_eq!(t.count, 0);
        dup.batch(&items[..1]);
        assert!(dup.check::<Wide>(60).is_err());
    }

    #[test]
    fn tally_fails_an_unstamped_item() {
        let probe = Arc::new(Probe::new(10));
        probe.start();
        let mut t = Tally::new(Arc::clone(&probe), 10);
        let items: Vec<u64> = (0..10).map(|i| if i == 3 { i } else { probe.item(i) }).collect();
        t.batch(&items);
        assert!(t.check::<u64>(10).unwrap_err().contains("without"));
    }

    #[test]
    fn bounds() {
        assert_eq!(Bound::FourBatches.items(16), 64);
        assert_eq!(Bound::FourBatches.chunk(16), 64);
        assert_eq!(Bound::Fixed.chunk(16), CHUNK);
        assert_eq!(Bound::parse("4b"), Some(Bound::FourBatches));
    }
}
