//! Store and forward, the storage side: the record format every store writes, and the small
//! async trait a store implements (a flash queue on a microcontroller, a crash-safe embedded
//! database on a server). A store keeps whole batches, each under the sequence number it was
//! cut with, oldest first; it decides nothing. What goes to the store and when (spill on
//! overflow, write-ahead before the first attempt, delivering stored batches before anything in
//! RAM, never reusing a sequence number after a reboot) is the core's policy.
//!
//! Enabled by the `store` feature (it brings `serde`, `postcard` and `crc`, all `no_std`).
//!
//! ```
//! use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
//! use batch_core::storage::BatchBuf;
//!
//! /// A store in RAM (for tests): a `Vec` of `(header, items)`.
//! #[derive(Default)]
//! struct Mem { batches: Vec<(StoredBatch, Vec<u32>)>, floor: u64 }
//!
//! impl Store<u32> for Mem {
//!     type Error = core::convert::Infallible;
//!     async fn recover(&mut self) -> Result<Recovered, StoreError<Self::Error>> {
//!         let items = self.batches.iter().map(|(_, b)| b.len() as u64).sum();
//!         Ok(Recovered { batches: self.batches.len() as u64, items, seq_floor: self.floor })
//!     }
//!     async fn append(&mut self, batch: StoredBatch, items: &[u32]) -> Result<(), StoreError<Self::Error>> {
//!         self.batches.push((batch, items.to_vec()));
//!         Ok(())
//!     }
//!     async fn read_after<B: BatchBuf<u32>>(&mut self, after: Option<u64>, out: &mut B)
//!         -> Result<Option<StoredBatch>, StoreError<Self::Error>> {
//!         let found = self.batches.iter().find(|(b, _)| after.is_none_or(|a| b.seq > a));
//!         let Some((batch, items)) = found else { return Ok(None) };
//!         out.extend_from(items.iter().copied());
//!         Ok(Some(*batch))
//!     }
//!     async fn remove(&mut self, seq: u64) -> Result<(), StoreError<Self::Error>> {
//!         self.batches.retain(|(b, _)| b.seq != seq);
//!         Ok(())
//!     }
//!     async fn persist_seq_floor(&mut self, floor: u64) -> Result<(), StoreError<Self::Error>> {
//!         self.floor = self.floor.max(floor);
//!         Ok(())
//!     }
//! }
//! # let _ = Mem::default();
//! ```

pub mod record;

pub use crate::batcher::{StoreDone, StoreOp, StorePolicy};

use crate::storage::BatchBuf;
use crate::time::Duration;

/// The header of a stored batch: its sequence number and when its oldest item arrived, in
/// milliseconds on the driver's store clock (for [`Config::max_age`](crate::Config) when the
/// batch leaves the store).
///
/// The store clock is the driver's, not the core's (whose [`Instant`](crate::Instant) restarts at
/// every boot): batch-tokio uses Unix time (so ages count the time the service was down);
/// batch-embassy uses the time since boot, which after a reboot makes every age from an earlier
/// boot an *underestimate* (the record's birth looks recent), so a stored item is never expired
/// early for want of a real-time clock, only late. [`BORN_UNKNOWN`](Self::BORN_UNKNOWN) (records
/// of format version 1) is an age of zero.
///
/// ```
/// use batch_core::Duration;
/// use batch_core::store::StoredBatch;
/// let batch = StoredBatch::at(7, 10_000, Duration::from_millis(2_500)); // stored at 10 s on its clock
/// assert_eq!(batch.born_ms, 7_500);
/// assert_eq!(batch.age_at(60_000), Duration::from_millis(52_500));
/// assert_eq!(batch.age_at(5_000), Duration::ZERO); // the clock went back: no age, not a panic
/// assert_eq!(StoredBatch { seq: 7, born_ms: StoredBatch::BORN_UNKNOWN }.age_at(60_000), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StoredBatch {
    /// Its sequence number.
    pub seq: u64,
    /// When its oldest item arrived, in milliseconds on the store clock.
    pub born_ms: u64,
}

impl StoredBatch {
    /// The birth of a batch whose record keeps none.
    pub const BORN_UNKNOWN: u64 = u64::MAX;

    /// Batch `seq` whose oldest item is `age` old at `now_ms` on the store clock. The age is
    /// rounded up to whole milliseconds, so the birth recorded is never later than the truth.
    pub const fn at(seq: u64, now_ms: u64, age: Duration) -> Self {
        Self { seq, born_ms: now_ms.saturating_sub(age.as_micros().div_ceil(1000)) }
    }

    /// The age of its oldest item at `now_ms` on the store clock: zero if the birth is unknown
    /// or later than `now_ms` (a clock set back, or the uptime of a previous boot).
    pub const fn age_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.born_ms))
    }
}

/// What a store found when it was opened after a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Recovered {
    /// Batches it holds (each is delivered again, at least once, in seq order).
    pub batches: u64,
    /// Items in those batches.
    pub items: u64,
    /// No sequence number below this was ever handed out and none may be again: the highest
    /// floor persisted, and above the seq of every batch held.
    pub seq_floor: u64,
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError<E> {
    /// No room for the batch: the store's own limit (the core applies its overflow policy).
    Full,
    /// What was read is not a valid record (see [`record::Corrupt`]); nothing was delivered
    /// from it.
    Corrupt(record::Corrupt),
    /// The medium failed (flash, file system).
    Io(E),
}

impl<E: core::fmt::Debug> core::fmt::Display for StoreError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full => f.write_str("store full"),
            Self::Corrupt(c) => write!(f, "{c}"),
            Self::Io(e) => write!(f, "store I/O error: {e:?}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for StoreError<E> {}

/// A durable FIFO of batches, each under its sequence number. Operations are async so a store
/// can wait on flash or a disk thread; each must be durable when it returns `Ok` (a power cut
/// right after loses nothing it acknowledged) and atomic (a power cut during it leaves the
/// batch either wholly there or not at all). Drivers run store operations one at a time, from
/// one task, and never cancel one mid-way.
///
/// The futures carry no `Send` bound: a firmware polls them on its one store task, and a server
/// runs its (blocking) database on a thread of its own.
#[allow(async_fn_in_trait, reason = "driven from one task; see the trait's documentation")]
pub trait Store<T> {
    /// The medium's error.
    type Error: core::fmt::Debug;
    /// Opens after a boot: counts what is held and reads the persisted seq floor. Records that
    /// fail their checks are skipped and reported by the store's own means, never delivered.
    async fn recover(&mut self) -> Result<Recovered, StoreError<Self::Error>>;
    /// Durably appends the items of `batch` (its seq greater than every seq appended before).
    async fn append(&mut self, batch: StoredBatch, items: &[T]) -> Result<(), StoreError<Self::Error>>;
    /// Reads the oldest batch with a seq above `after` (`None`: the oldest of all) into `out`,
    /// returning its header, or `None` if there is none.
    async fn read_after<B: BatchBuf<T>>(
        &mut self,
        after: Option<u64>,
        out: &mut B,
    ) -> Result<Option<StoredBatch>, StoreError<Self::Error>>;
    /// Removes batch `seq` (it reached a final outcome). Removing a seq that is not held is not
    /// an error (a removal repeated after a power cut).
    async fn remove(&mut self, seq: u64) -> Result<(), StoreError<Self::Error>>;
    /// Durably records that sequence numbers below `floor` may have been handed out.
    async fn persist_seq_floor(&mut self, floor: u64) -> Result<(), StoreError<Self::Error>>;
}
