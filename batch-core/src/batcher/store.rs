//! Store and forward, the policy (feature `store`): when batches go to the durable store and
//! come back, in which order, and how sequence numbers survive a reboot. The core decides and the
//! driver does the I/O, one store operation at a time, as with batches: [`poll_store`] says what
//! to do next, [`handle_store`] (or [`unspill`] for a refused spill) reports how it went.
//!
//! The rules (docs/store-design.md):
//!
//! 1. Stored batches are older than anything in RAM and go first: while the store holds a batch
//!    not yet loaded, nothing is cut from RAM; free flight slots are filled by loads, in seq
//!    order.
//! 2. Spill on overflow: when RAM is full and no flight slot can take a batch (paused, all busy,
//!    or stored batches ahead), a whole batch is cut from the front of RAM under a new seq and
//!    appended. Its items count against the capacity until the store acknowledged it, so a
//!    refused spill fits back. At the store's own limit the configured [`Overflow`] applies:
//!    `Reject` stops spilling until a removal frees room (producers wait), `DropOldest` evicts
//!    the oldest stored batch and spills again.
//! 3. Write-ahead (optional): a batch cut from RAM is appended before its first attempt
//!    ([`Flush::write_ahead`], [`handle_written`]); a failed write lets it run unprotected,
//!    counted.
//! 4. A batch in the store keeps its flight slot after its final outcome until the store removed
//!    it, so `flush` tokens and `is_finished` wait for the removal and a power cut before it
//!    redelivers the batch (at least once; consumers deduplicate by seq).
//! 5. No sequence number at or above the persisted floor is handed out: the floor is raised in
//!    blocks of `seq_block` ahead of need, and after a reboot numbering restarts at the floor
//!    (gaps, never reuse).
//! 6. `accepted = ... + stored + store_lost` at every step ([`Metrics::is_consistent`]).
//! 7. Until the driver reported what the store held at boot ([`recovered`]), nothing is accepted
//!    (producers wait, as when full): recovered items are older than every new one.
//!
//! ```
//! use batch_core::{Batch, Batcher, Config, Duration, Instant, Outcome};
//! use batch_core::store::{Recovered, StoreDone, StoreOp, StorePolicy};
//!
//! let config = Config::new().max_batch(2).store(StorePolicy::new().spill(true).seq_block(8));
//! let mut core: Batcher<u32, 2> = Batcher::new(config);
//! let t = Instant::ZERO;
//! let mut io = Batch::<u32, 2>::new(); // the driver's buffer for store operations
//! assert!(core.push(t, 1).is_err()); // not open before the boot's recovery
//! assert!(core.recovered(Recovered { batches: 0, items: 0, seq_floor: 40 }));
//! // First a block of sequence numbers is made durable: 40..48.
//! assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::PersistFloor { floor: 48 }));
//! assert_eq!(core.handle_store(t, StoreDone::FloorPersisted), None);
//! core.pause(t); // the uplink is down
//! core.push(t, 1).unwrap();
//! core.push(t, 2).unwrap();
//! // RAM is full and nothing can be sent: the oldest batch moves to the store.
//! assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Append { seq: 40, len: 2, age: Duration::ZERO }));
//! assert_eq!(&io[..], &[1, 2]);
//! io.clear(); // the driver wrote them durably
//! assert_eq!(core.handle_store(t, StoreDone::Appended), None);
//! assert_eq!((core.len(), core.metrics().stored), (0, 2));
//! core.resume(t); // back online: the stored batch goes first
//! assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Load { after: None }));
//! io.extend_from_slice(&[1, 2]).unwrap(); // the driver read it back
//! let flush = core.handle_store(t, StoreDone::Loaded { seq: 40, len: 2, age: Duration::ZERO }).unwrap();
//! assert_eq!((flush.seq, flush.len), (40, 2));
//! let _ = core.handle_completion(t, 40, Outcome::Delivered);
//! // Delivered, but final only once the store removed it.
//! assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Remove { seq: 40 }));
//! assert_eq!(core.handle_store(t, StoreDone::Removed), None);
//! assert!(core.metrics().is_consistent());
//! assert_eq!(core.metrics().delivered, 2);
//! ```
//!
//! [`poll_store`]: BatchCore::poll_store
//! [`handle_store`]: BatchCore::handle_store
//! [`unspill`]: BatchCore::unspill
//! [`recovered`]: BatchCore::recovered
//! [`handle_written`]: BatchCore::handle_written
//! [`Overflow`]: crate::Overflow
//! [`Metrics::is_consistent`]: crate::Metrics::is_consistent

use super::{BatchCore, Flush, add};
use crate::config::Overflow;
use crate::metrics::{Count, Trigger};
use crate::storage::{BatchBuf, InFlight, Phase, Queue, Slots};
use crate::store::Recovered;
use crate::time::{Duration, Instant};

/// How a batcher uses its store (set with [`Config::store`](crate::Config::store)).
///
/// Defaults: spill on overflow, no write-ahead, sequence numbers reserved 1024 at a time.
///
/// ```
/// use batch_core::store::StorePolicy;
/// const POLICY: StorePolicy = StorePolicy::new().write_ahead(true).seq_block(256);
/// assert!(POLICY.get_spill() && POLICY.get_write_ahead());
/// assert_eq!(POLICY.get_seq_block(), 256);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StorePolicy {
    spill: bool,
    write_ahead: bool,
    seq_block: u32,
}

impl Default for StorePolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl StorePolicy {
    /// The default policy.
    pub const fn new() -> Self {
        Self { spill: true, write_ahead: false, seq_block: 1024 }
    }
    /// Move whole batches to the store when RAM is full and nothing can be sent (rule 2).
    #[must_use]
    pub const fn spill(mut self, on: bool) -> Self {
        self.spill = on;
        self
    }
    /// Append every batch cut from RAM to the store before its first attempt, and remove it at
    /// its final outcome: a power cut during an attempt or a back-off loses nothing (rule 3).
    /// Costs one store write and one removal per batch.
    #[must_use]
    pub const fn write_ahead(mut self, on: bool) -> Self {
        self.write_ahead = on;
        self
    }
    /// How many sequence numbers one durable floor write reserves (at least 1). A reboot skips
    /// at most this many; a smaller block costs more writes (flash wear).
    #[must_use]
    pub const fn seq_block(mut self, n: u32) -> Self {
        self.seq_block = n;
        self
    }
    /// See [`StorePolicy::spill`].
    pub const fn get_spill(&self) -> bool {
        self.spill
    }
    /// See [`StorePolicy::write_ahead`].
    pub const fn get_write_ahead(&self) -> bool {
        self.write_ahead
    }
    /// See [`StorePolicy::seq_block`].
    pub const fn get_seq_block(&self) -> u32 {
        self.seq_block
    }
}

/// The next store operation, from [`BatchCore::poll_store`]. The driver performs it (durably,
/// never cancelled half-way) and reports with [`BatchCore::handle_store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "perform the operation and report it with handle_store"]
pub enum StoreOp {
    /// `Store::persist_seq_floor(floor)`; then [`StoreDone::FloorPersisted`].
    PersistFloor {
        /// The new floor.
        floor: u64,
    },
    /// A spill: `len` items were moved into the driver's buffer;
    /// `Store::append(StoredBatch::at(seq, clock_ms, age), items)`, then
    /// [`StoreDone::Appended`], or, if refused, [`BatchCore::unspill`] with the items.
    Append {
        /// The batch's sequence number.
        seq: u64,
        /// Its items.
        len: usize,
        /// How long its oldest item has waited (never less than the truth): the driver records
        /// the birth on its store clock ([`StoredBatch::at`](crate::store::StoredBatch::at)).
        age: Duration,
    },
    /// `Store::read_after(after, buffer)`: then [`StoreDone::Loaded`] (the batch is in flight
    /// and its first attempt runs on the buffer) or [`StoreDone::Empty`].
    Load {
        /// Read the oldest batch above this seq.
        after: Option<u64>,
    },
    /// `Store::remove(seq)`: the batch reached its final outcome; then [`StoreDone::Removed`].
    Remove {
        /// The batch's sequence number.
        seq: u64,
    },
    /// The store is full under [`Overflow::DropOldest`](crate::Overflow::DropOldest): read the
    /// oldest batch above `after`, remove it, hand its items to the eviction path, and report
    /// [`StoreDone::Evicted`] (or [`StoreDone::Empty`]).
    Evict {
        /// Evict the oldest batch above this seq.
        after: Option<u64>,
    },
}

/// How a store operation ended, reported with [`BatchCore::handle_store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreDone {
    /// [`StoreOp::PersistFloor`] is durable.
    FloorPersisted,
    /// [`StoreOp::Append`] is durable.
    Appended,
    /// [`StoreOp::Load`] read batch `seq` of `len` items into the driver's buffer.
    Loaded {
        /// Its sequence number.
        seq: u64,
        /// Its items.
        len: usize,
        /// Its oldest item's age now, from the record
        /// ([`StoredBatch::age_at`](crate::store::StoredBatch::age_at) on the store clock).
        age: Duration,
    },
    /// [`StoreOp::Load`] or [`StoreOp::Evict`] found no batch.
    Empty,
    /// [`StoreOp::Remove`] is durable.
    Removed,
    /// [`StoreOp::Evict`] removed batch `seq` and handed its `len` items to the eviction path.
    Evicted {
        /// Its sequence number.
        seq: u64,
        /// Its items.
        len: usize,
    },
    /// The operation failed (a medium error, or a refused read); it is retried after the retry
    /// base delay. For a refused [`StoreOp::Append`] use [`BatchCore::unspill`] instead.
    Failed,
}

/// The one store operation under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Floor(u64),
    /// A spill: its seq, its items and the acceptance index of the first, and their weight.
    Append {
        len: usize,
        weight: u64,
        /// The arrival anchor of its oldest item, restored if the store refuses it.
        born: Instant,
    },
    Load,
    Remove(u64),
    Evict,
}

/// The core's state about its store: counters only, no RAM per stored batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct StoreState {
    /// `recovered` was called: items may be accepted and the store used.
    ready: bool,
    /// Batches and items in the store that are not in flight (not loaded yet).
    batches: u64,
    items: u64,
    /// Loads read above this seq: every stored batch at or below it is loaded or final.
    cursor: Option<u64>,
    /// Sequence numbers below this are durably reserved.
    floor: u64,
    pending: Option<Pending>,
    /// Write-ahead appends handed out and not reported yet ([`BatchCore::handle_written`]).
    writes: u32,
    /// The store refused a spill: none until a removal frees room.
    full: bool,
    /// The store is full under `DropOldest`: evict its oldest batch before the next spill.
    evict: bool,
    /// After a failed operation, none before this instant.
    retry_at: Option<Instant>,
    /// Items accepted before this index are wanted durable ([`BatchCore::request_durable`]):
    /// they spill even though RAM is not full, when nothing can take them now.
    durable_mark: u64,
    lost: Count,
    failures: Count,
}

impl StoreState {
    pub(super) const fn new() -> Self {
        Self {
            ready: false,
            batches: 0,
            items: 0,
            cursor: None,
            floor: 0,
            pending: None,
            writes: 0,
            full: false,
            evict: false,
            retry_at: None,
            durable_mark: 0,
            lost: 0,
            failures: 0,
        }
    }

    /// Items being written by a spill (still counted against the RAM capacity).
    fn spilling(&self) -> usize {
        match self.pending {
            Some(Pending::Append { len, .. }) => len,
            _ => 0,
        }
    }
}

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// Reports what the store held at boot ([`Store::recover`](crate::store::Store::recover)).
    /// Until then a batcher with a store policy accepts nothing (producers wait as when full):
    /// the recovered items are older than every new one and go first. They count as accepted
    /// and stored. Returns `false` (and changes nothing) if it was called before, or if the
    /// batcher has no store policy.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, store::{Recovered, StorePolicy}};
    /// let mut core: Batcher<u8, 4> = Batcher::new(Config::new().store(StorePolicy::new()));
    /// assert!(core.recovered(Recovered { batches: 2, items: 5, seq_floor: 1024 }));
    /// let m = core.metrics();
    /// assert_eq!((m.accepted, m.stored), (5, 5));
    /// assert!(!core.recovered(Recovered::default())); // once per boot
    /// ```
    #[must_use]
    pub fn recovered(&mut self, found: Recovered) -> bool {
        if self.config.get_store().is_none() || self.store.ready {
            return false;
        }
        let s = &mut self.store;
        s.ready = true;
        s.batches = found.batches;
        s.items = found.items;
        s.floor = found.seq_floor;
        self.next_seq = self.next_seq.max(found.seq_floor);
        self.accepted += found.items;
        self.wake = true;
        true
    }

    /// Whether the driver still has to report what the store held at boot: a store policy is
    /// set and [`recovered`](Self::recovered) was not called yet. A driver with several tasks
    /// asks it (under its lock) so that one of them reads the store.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, store::{Recovered, StorePolicy}};
    /// let mut core: Batcher<u8, 4> = Batcher::new(Config::new().store(StorePolicy::new()));
    /// assert!(core.needs_recovery());
    /// assert!(core.recovered(Recovered::default()));
    /// assert!(!core.needs_recovery());
    /// assert!(!Batcher::<u8, 4>::new(Config::new()).needs_recovery()); // no store policy
    /// ```
    pub fn needs_recovery(&self) -> bool {
        self.config.get_store().is_some() && !self.store.ready
    }

    /// Whether items may be accepted: always without a store policy; with one, once
    /// [`recovered`](Self::recovered) was called.
    #[inline]
    pub(super) fn store_open(&self) -> bool {
        self.store.ready || self.config.get_store().is_none()
    }

    /// Items being spilled (they still take places in the buffer).
    #[inline]
    pub(super) fn spilling(&self) -> usize {
        self.store.spilling()
    }

    /// Whether a spill may make room in a full buffer (so producers wait rather than evict).
    pub(super) fn spill_may_make_room(&self) -> bool {
        self.config.get_store().is_some_and(|p| p.get_spill()) && !self.store.full
    }

    /// Whether every item accepted before `token` is durable: in the store (spilled, loaded, or
    /// written ahead and acknowledged) or final. What a durable add waits for.
    ///
    /// ```
    /// use batch_core::{Batch, Batcher, Config, Instant, Outcome};
    /// use batch_core::store::{Recovered, StoreDone, StorePolicy};
    /// let mut core: Batcher<u8, 4> =
    ///     Batcher::new(Config::new().max_batch(1).store(StorePolicy::new().write_ahead(true)));
    /// let (t, mut io) = (Instant::ZERO, Batch::<u8, 4>::new());
    /// assert!(core.recovered(Recovered::default()));
    /// let _ = core.poll_store(t, &mut io);
    /// let _ = core.handle_store(t, StoreDone::FloorPersisted);
    /// core.push(t, 7).unwrap();
    /// let token = core.flush();
    /// assert!(!core.is_durable(token)); // in RAM
    /// let f = core.poll_flush(t, &mut Batch::<u8, 4>::new()).unwrap();
    /// assert!(!core.is_durable(token)); // being written
    /// assert!(core.handle_written(f.seq, true));
    /// assert!(core.is_durable(token));
    /// ```
    pub fn is_durable(&self, token: crate::FlushToken) -> bool {
        let t = token.items_before();
        // RAM and a spill under way are not durable; stored batches are.
        self.front_index() - self.spilling() as u64 >= t
            && self.slots.as_slice().iter().all(|s| s.stored || s.phase == Phase::Removing || s.first >= t)
    }

    /// Whether the next batch may be cut from RAM: the store holds no batch ahead of RAM (rule
    /// 1), a sequence number is durably reserved (rule 5), and under write-ahead the previous
    /// batch's append was reported (appends reach the store in seq order, also when several
    /// drivers' tasks write at once).
    pub(super) fn ram_cut_allowed(&self) -> bool {
        let Some(policy) = self.config.get_store() else {
            return true;
        };
        let s = &self.store;
        s.ready
            && s.batches == 0
            && s.spilling() == 0
            && self.next_seq < s.floor
            && (s.writes == 0 || !policy.get_write_ahead())
    }

    /// Items ahead of the RAM buffer in acceptance order: in the store and not loaded, or being
    /// spilled.
    pub(super) fn stored_items(&self) -> u64 {
        self.store.items + self.store.spilling() as u64
    }

    /// Fills in the store's counters.
    #[cfg(feature = "metrics")]
    pub(super) fn store_metrics(&self, m: &mut crate::Metrics) {
        m.stored = self.stored_items() as Count;
        m.store_lost = self.store.lost;
        m.store_failures = self.store.failures;
    }

    /// The store side of a cut from RAM: under write-ahead, the batch goes to the store before
    /// its first attempt. Returns whether the driver must write it.
    pub(super) fn cut_write_ahead(&mut self, seq: u64) -> bool {
        if self.config.get_store().is_none() {
            return false;
        }
        // Every stored batch at or below this seq is loaded or final (nothing was stored ahead
        // of RAM), so loads read above it.
        self.store.cursor = Some(seq);
        let write = self.config.get_store().is_some_and(|p| p.get_write_ahead());
        if write {
            self.store.writes += 1;
        }
        write
    }

    /// Reports the write-ahead append of batch `seq` ([`Flush::write_ahead`]): `true` if the
    /// store holds it durably (it is then removed at its final outcome), `false` if the write
    /// failed (the batch runs unprotected; counted in `store_failures`). Call it before the
    /// batch's first attempt. Returns `false` if `seq` is not in flight.
    ///
    /// ```
    /// use batch_core::{Batch, Batcher, Config, Instant, Outcome};
    /// use batch_core::store::{Recovered, StoreDone, StoreOp, StorePolicy};
    /// let mut core: Batcher<u8, 4> =
    ///     Batcher::new(Config::new().max_batch(1).store(StorePolicy::new().write_ahead(true)));
    /// let (t, mut io) = (Instant::ZERO, Batch::<u8, 4>::new());
    /// assert!(core.recovered(Recovered::default()));
    /// let op = core.poll_store(t, &mut io); // reserve sequence numbers first
    /// assert_eq!(op, Some(StoreOp::PersistFloor { floor: 1024 }));
    /// let _ = core.handle_store(t, StoreDone::FloorPersisted);
    /// core.push(t, 7).unwrap();
    /// let mut batch = Batch::<u8, 4>::new();
    /// let f = core.poll_flush(t, &mut batch).unwrap();
    /// assert!(f.write_ahead); // append it, then run it
    /// assert!(core.handle_written(f.seq, true));
    /// let _ = core.handle_completion(t, f.seq, Outcome::Delivered);
    /// assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Remove { seq: 0 }));
    /// ```
    pub fn handle_written(&mut self, seq: u64, ok: bool) -> bool {
        self.store.writes = self.store.writes.saturating_sub(1);
        self.wake = true;
        if !ok {
            add(&mut self.store.failures, 1);
        }
        let Some(slot) = self.slots.as_mut_slice().iter_mut().find(|s| s.seq == seq) else {
            return false;
        };
        slot.stored = ok;
        true
    }

    /// The next store operation, if one is due at `now` and none is under way. For a spill
    /// ([`StoreOp::Append`]) the batch's items are moved into `out` (which needs room for
    /// `max_batch` items). Call it after every input, with [`poll_flush`](Self::poll_flush).
    pub fn poll_store<B: BatchBuf<T>>(&mut self, now: Instant, out: &mut B) -> Option<StoreOp> {
        self.next_store_op(now, out, true)
    }

    /// Like [`poll_store`](Self::poll_store), for a driver task whose batch buffer is taken (it
    /// holds a batch waiting to retry) and which performs store operations in a spare buffer:
    /// never a [`StoreOp::Load`] (a loaded batch needs a buffer to run in; another task takes
    /// it), everything else as `poll_store`.
    ///
    /// ```
    /// use batch_core::{Batch, Batcher, Config, Instant};
    /// use batch_core::store::{Recovered, StoreDone, StoreOp, StorePolicy};
    /// let mut core: Batcher<u8, 4> = Batcher::new(Config::new().store(StorePolicy::new()));
    /// let (t, mut spare) = (Instant::ZERO, Batch::<u8, 4>::new());
    /// assert!(core.recovered(Recovered { batches: 1, items: 2, seq_floor: 5000 }));
    /// let floor = core.poll_store_without_load(t, &mut spare); // reserve numbers first
    /// assert_eq!(floor, Some(StoreOp::PersistFloor { floor: 6024 }));
    /// assert_eq!(core.handle_store(t, StoreDone::FloorPersisted), None);
    /// assert_eq!(core.poll_store_without_load(t, &mut spare), None); // a load is due, not here
    /// assert_eq!(core.poll_store(t, &mut spare), Some(StoreOp::Load { after: None }));
    /// ```
    pub fn poll_store_without_load<B: BatchBuf<T>>(&mut self, now: Instant, out: &mut B) -> Option<StoreOp> {
        self.next_store_op(now, out, false)
    }

    fn next_store_op<B: BatchBuf<T>>(&mut self, now: Instant, out: &mut B, load: bool) -> Option<StoreOp> {
        let policy = self.config.get_store()?;
        if !self.store.ready || self.store.pending.is_some() {
            return None;
        }
        match self.store.retry_at {
            Some(at) if now < at => return None,
            // Passed: forgotten, so that `poll_timeout` does not report it again when nothing is
            // due now (a driver would wake at once, again and again).
            Some(_) => self.store.retry_at = None,
            None => {}
        }
        let s = &self.store;
        // Sequence numbers first: reserve the next block before the current one runs out.
        let block = u64::from(policy.get_seq_block());
        if self.next_seq + block / 2 >= s.floor {
            let floor = self.next_seq.saturating_add(block);
            self.store.pending = Some(Pending::Floor(floor));
            return Some(StoreOp::PersistFloor { floor });
        }
        // Then removals: they free flight slots and room in the store.
        if let Some(slot) = self.slots.as_slice().iter().find(|s| s.phase == Phase::Removing) {
            let seq = slot.seq;
            self.store.pending = Some(Pending::Remove(seq));
            return Some(StoreOp::Remove { seq });
        }
        let (evict, batches, after) = (s.evict, s.batches, s.cursor);
        if evict {
            self.store.pending = Some(Pending::Evict);
            return Some(StoreOp::Evict { after });
        }
        // Then loads, oldest first, into free flight slots.
        if load && batches > 0 && self.paused_at.is_none() && self.slot_free() && self.pace_allows(now) {
            self.pace_take(now);
            self.store.pending = Some(Pending::Load);
            return Some(StoreOp::Load { after });
        }
        if policy.get_spill() && self.spill_due(now) {
            return self.spill(now, out);
        }
        None
    }

    /// Whether the front of RAM should move to the store now: the store can take it, and
    /// either RAM is full while the uplink cannot drain it (paused, stored batches ahead, the
    /// pace, or every flight slot holding a batch that failed and waits to retry), or it holds
    /// items wanted durable that no flight slot can take now. A full RAM whose batches are
    /// merely running (a sink slower than the producers) is not an overflow: producers wait, as
    /// without a store (a spill there would write and read back nearly every batch: measured at
    /// 0.45x the throughput).
    fn spill_due(&self, now: Instant) -> bool {
        let s = &self.store;
        if s.full || s.writes > 0 || self.next_seq >= s.floor || self.queue.len() == 0 {
            return false; // (writes: appends stay in seq order)
        }
        let held_back = self.paused_at.is_some() || s.batches > 0 || !self.pace_allows(now);
        let busy = !self.slot_free();
        let failing = busy && !self.slots.as_slice().iter().any(|x| x.phase == Phase::Running);
        let full = self.queue.len() + self.reserved >= self.queue.capacity();
        let wanted = self.front_index() < s.durable_mark;
        (full && (held_back || failing)) || (wanted && (held_back || busy))
    }

    /// Asks for every item accepted before `token` to become durable soon (a durable add): they
    /// are due at once (as urgent items are), and if no flight slot can take them now (paused, all busy, or stored batches ahead), they
    /// spill to the store without waiting for RAM to fill (with `spill` on). Items that can be
    /// cut are cut as usual (and written ahead, with `write_ahead`). Wait with
    /// [`is_durable`](Self::is_durable).
    ///
    /// ```
    /// use batch_core::{Batch, Batcher, Config, Duration, Instant};
    /// use batch_core::store::{Recovered, StoreDone, StoreOp, StorePolicy};
    /// let mut core: Batcher<u8, 8> = Batcher::new(Config::new().max_batch(4).store(StorePolicy::new()));
    /// let (t, mut io) = (Instant::ZERO, Batch::<u8, 8>::new());
    /// assert!(core.recovered(Recovered::default()));
    /// let _ = core.poll_store(t, &mut io);
    /// let _ = core.handle_store(t, StoreDone::FloorPersisted);
    /// core.pause(t); // the uplink is down
    /// core.push(t, 7).unwrap();
    /// let token = core.token();
    /// core.request_durable(token);
    /// assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Append { seq: 0, len: 1, age: Duration::ZERO }));
    /// let _ = core.handle_store(t, StoreDone::Appended);
    /// assert!(core.is_durable(token));
    /// ```
    pub fn request_durable(&mut self, token: crate::FlushToken) {
        let mark = token.items_before();
        if mark > self.store.durable_mark {
            self.store.durable_mark = mark;
            self.wake = true;
        }
        // Due now, as urgent items are: cut at once where a slot is free.
        if mark > self.flush_mark {
            self.flush_mark = mark;
            self.mark_trigger = Trigger::Urgent;
            self.fast_until = 0;
        }
    }

    /// Cuts the front of RAM into `out` as a batch for the store.
    fn spill<B: BatchBuf<T>>(&mut self, now: Instant, out: &mut B) -> Option<StoreOp> {
        let (len, weight, _) = self.cut_front(out, Trigger::Size);
        if len == 0 {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let born = self.marks.anchor();
        self.store.pending = Some(Pending::Append { len, weight, born });
        let age = now - born;
        self.reanchor();
        Some(StoreOp::Append { seq, len, age })
    }

    /// Reports how the operation from [`poll_store`](Self::poll_store) ended. Returns the batch
    /// now in flight after a [`StoreDone::Loaded`]: its first attempt runs on the buffer the
    /// driver read it into, and is reported with
    /// [`handle_completion`](Self::handle_completion) as any other. A report that matches no
    /// operation under way is ignored (`None`).
    pub fn handle_store(&mut self, now: Instant, done: StoreDone) -> Option<Flush> {
        let pending = self.store.pending?;
        self.wake = true;
        if done == StoreDone::Failed {
            self.store_failed(now, pending);
            return None;
        }
        self.store.retry_at = None;
        let s = &mut self.store;
        match (pending, done) {
            (Pending::Floor(floor), StoreDone::FloorPersisted) => s.floor = s.floor.max(floor),
            (Pending::Append { len, .. }, StoreDone::Appended) => {
                s.batches += 1;
                s.items += len as u64;
                s.full = false;
            }
            (Pending::Load, StoreDone::Loaded { seq, len, age }) => {
                self.store.pending = None;
                return self.load(now, seq, len, age);
            }
            (Pending::Load, StoreDone::Empty) => {
                // The store has fewer batches than it reported: what it could not produce is
                // lost, and counted so.
                add(&mut s.lost, s.items as Count);
                s.batches = 0;
                s.items = 0;
            }
            (Pending::Remove(seq), StoreDone::Removed) => {
                s.full = false;
                let index =
                    self.slots.as_slice().iter().position(|x| x.seq == seq && x.phase == Phase::Removing);
                if let Some(index) = index {
                    self.remove_slot(index);
                }
            }
            (Pending::Evict, StoreDone::Evicted { len, .. }) => {
                s.evict = false;
                s.full = false;
                let len = (len as u64).min(s.items);
                s.batches = s.batches.saturating_sub(1);
                s.items -= len;
                add(&mut self.counters.evicted, len as Count);
            }
            (Pending::Evict, StoreDone::Empty) => {
                // Nothing to evict (everything stored is in flight): stop spilling until a
                // removal; the RAM buffer's own overflow policy applies meanwhile.
                s.evict = false;
                s.full = true;
            }
            _ => return None, // not the answer to the operation under way: a driver bug
        }
        self.store.pending = None;
        self.refresh_fast();
        None
    }

    fn store_failed(&mut self, now: Instant, pending: Pending) {
        add(&mut self.store.failures, 1);
        self.store.retry_at = Some(now + self.config.get_base_delay());
        if let Pending::Append { .. } = pending {
            // The items are still with the driver: it must hand them back with `unspill`.
            return;
        }
        self.store.pending = None;
    }

    /// Takes back the items of a spill the store refused ([`StoreOp::Append`] answered with
    /// `StoreError::Full` when `full`, else a failure), oldest first: they return to the front
    /// of RAM, in order. Under [`Overflow::DropOldest`] a full store then evicts its oldest
    /// batch ([`StoreOp::Evict`]); under `Reject` spilling stops until a removal frees room.
    /// Returns how many items came back.
    pub fn unspill(&mut self, now: Instant, full: bool, items: impl DoubleEndedIterator<Item = T>) -> usize {
        let Some(Pending::Append { len, weight, born }) = self.store.pending else {
            return 0;
        };
        self.store.pending = None;
        self.wake = true;
        if full {
            match self.config.get_overflow() {
                Overflow::Reject => self.store.full = true,
                Overflow::DropOldest => self.store.evict = true,
            }
        } else if self.store.retry_at.is_none() {
            add(&mut self.store.failures, 1);
            self.store.retry_at = Some(now + self.config.get_base_delay());
        }
        // Back to the front, newest first. A queue that keeps weights gets the batch's weight on
        // its front item (the others 0), so later cuts add up the same total.
        let driver_weighs = self.queue.keeps_weights() && self.weigher.is_none();
        let mut back = 0;
        let mut rest = items.rev().peekable();
        while let Some(item) = rest.next() {
            let w = match (driver_weighs, rest.peek().is_none()) {
                (true, true) => weight.min(u64::from(u32::MAX)) as u32,
                (true, false) => 0,
                (false, _) => self.weight_of(&item) as u32,
            };
            if self.queue.push_front_weighed(item, w).is_err() {
                break; // not reachable: the spilled items kept their places
            }
            back += 1;
        }
        debug_assert_eq!(back, len, "unspill takes back exactly the spilled items");
        self.buffered_weight += weight;
        if back > 0 {
            // Anchored where the oldest of them was: ages and linger stay upper bounds.
            self.marks.reset(self.front_index(), born);
        }
        self.refresh_fast();
        back
    }

    /// A batch was read back from the store: it takes a flight slot, attempt 1.
    fn load(&mut self, now: Instant, seq: u64, len: usize, age: Duration) -> Option<Flush> {
        let s = &mut self.store;
        let len_items = (len as u64).min(s.items);
        s.batches = s.batches.saturating_sub(1);
        s.items -= len_items;
        s.cursor = Some(seq);
        // Stored items precede RAM in acceptance order: this batch's first item.
        let first = self.front_index() - self.stored_items() - len_items;
        let expires = self.expiry_at_age(now, age);
        let mut slot = InFlight::first_attempt(seq, first, len as u32, expires.unwrap_or(now), true);
        if expires.is_none() {
            // Too old to send: final at once (expired), kept until the store removed it.
            slot.phase = Phase::Removing;
        }
        if self.slots.push(slot).is_err() {
            // No slot (a driver bug: loads are asked for only with one free): keep it stored.
            let s = &mut self.store;
            s.batches += 1;
            s.items += len_items;
            return None;
        }
        let expired = expires.is_none();
        if expired {
            add(&mut self.counters.expired, len as Count);
        } else {
            self.counters.in_flight += len as Count;
            self.counters.flushes.record(Trigger::Store);
        }
        let trigger = Trigger::Store;
        Some(Flush { seq, len, trigger, oldest_age: age, first_item: first, write_ahead: false, expired })
    }

    /// The final outcome of a slot: kept until the store removed the batch if it is stored.
    pub(super) fn finish_slot(&mut self, index: usize) {
        if self.slots.as_slice()[index].stored {
            self.slots.as_mut_slice()[index].phase = Phase::Removing;
        } else {
            self.remove_slot(index);
        }
    }

    /// When a failed store operation may be retried, if one waits for that.
    pub(super) fn store_timeout(&self) -> Option<Instant> {
        let s = &self.store;
        if s.pending.is_some() {
            return None;
        }
        // A failed operation's retry holds every store operation back until then.
        if let Some(at) = s.retry_at {
            return Some(at);
        }
        // A stored batch waiting only for the pace.
        let loadable = s.ready && s.batches > 0 && self.paused_at.is_none() && self.slot_free();
        if loadable { self.pace_ready_at() } else { None }
    }

    /// Recovered, and nothing stored, being written or waiting for removal.
    pub(super) fn store_idle(&self) -> bool {
        let s = &self.store;
        // Before recovery what the store holds is unknown: not finished, even if closed.
        !self.needs_recovery() && s.items == 0 && s.pending.is_none() && s.writes == 0
    }
}
