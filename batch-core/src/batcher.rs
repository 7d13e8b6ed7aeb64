//! The batching state machine.
//!
//! [`BatchCore`] holds the buffer, the in-flight table and the counters, and decides when a batch
//! is cut, when a failed batch may retry and when it is final. It never reads a clock, never
//! sleeps and never calls the handler: a driver feeds it inputs with `now` and acts on its
//! outputs. See the crate documentation for the order of calls.

use core::marker::PhantomData;

use crate::config::{Config, ConfigError, Overflow};
#[cfg(feature = "metrics")]
use crate::metrics::Metrics;
use crate::metrics::{Count, Counter, Counters, Trigger};
use crate::storage::{InFlight, Queue, Slots};
use crate::time::{Duration, Instant};

#[cfg(feature = "uplink")]
mod age;
mod buffer;
mod cut;
mod flights;
mod marks;
#[cfg(not(feature = "store"))]
mod no_store;
#[cfg(not(feature = "uplink"))]
mod no_uplink;
#[cfg(feature = "uplink")]
mod pace;
mod staging;
#[cfg(feature = "store")]
mod store;

#[cfg(feature = "store")]
pub use store::{StoreDone, StoreOp, StorePolicy};

use marks::Marks;

/// A batcher on fixed `heapless` storage: room for `N` buffered items and `F` in-flight batches
/// (default 1). Everything is inline, so it can live in a `static`.
///
/// ```
/// use batch_core::{Batcher, Config, Instant};
///
/// const CONFIG: Config = Config::new().max_batch(4);
/// // `new` is a `const fn`: in a `static`, an invalid configuration fails the build.
/// static READINGS: std::sync::Mutex<Batcher<u32, 16>> = std::sync::Mutex::new(Batcher::new(CONFIG));
/// let mut b = READINGS.lock().unwrap();
/// assert_eq!(b.push(Instant::ZERO, 7), Ok(None));
/// assert_eq!(b.len(), 1);
/// ```
pub type Batcher<T, const N: usize, const F: usize = 1> =
    BatchCore<T, heapless::Deque<T, N>, heapless::Vec<InFlight, F>>;

/// The buffer of the batch being handed out by a [`Batcher`] of capacity `N`.
///
/// ```
/// use batch_core::{Batch, Batcher, Config, Instant};
/// let mut b: Batcher<u8, 4> = Batcher::new(Config::new().max_batch(2));
/// b.push(Instant::ZERO, 1).unwrap();
/// b.push(Instant::ZERO, 2).unwrap();
/// let mut batch: Batch<u8, 4> = Batch::new();
/// let flush = b.poll_flush(Instant::ZERO, &mut batch).unwrap();
/// assert_eq!((flush.len, &batch[..]), (2, &[1, 2][..]));
/// ```
pub type Batch<T, const N: usize> = heapless::Vec<T, N>;

/// A batch that was just cut, returned by [`BatchCore::poll_flush`]. Its items were moved into
/// the driver's buffer; its first attempt is now running.
///
/// ```
/// use batch_core::{Batcher, Config, Instant, Trigger, Batch};
/// let mut b: Batcher<u8, 4> = Batcher::new(Config::new().max_batch(1));
/// b.push(Instant::ZERO, 9).unwrap();
/// let f = b.poll_flush(Instant::ZERO, &mut Batch::<u8, 4>::new()).unwrap();
/// assert_eq!((f.seq, f.len, f.trigger), (0, 1, Trigger::Size));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
#[must_use = "the batch's first attempt is running: report its outcome with handle_completion"]
pub struct Flush {
    /// The batch's sequence number: 0, 1, 2, ... in cut order.
    pub seq: u64,
    /// How many items were moved into the driver's buffer.
    pub len: usize,
    /// Why the batch was cut.
    pub trigger: Trigger,
    /// How long its oldest item had waited (never less than the truth).
    pub oldest_age: Duration,
    /// The acceptance index of its first item (items are numbered 0, 1, 2, ... as accepted).
    pub first_item: u64,
    /// Store and forward's write-ahead (feature `store`): append the batch to the store before
    /// its first attempt and report with `handle_written`. Always `false` without a store.
    pub write_ahead: bool,
    /// A batch loaded from the store (feature `store`) already older than
    /// [`Config::max_age`](crate::Config): it is final (counted as expired, and removed from the
    /// store by a later [`StoreOp::Remove`](crate::store::StoreOp)); no attempt runs and no
    /// completion is reported. The driver hands the buffer's items to its expiry path.
    pub expired: bool,
}

/// How an attempt ended, reported with [`BatchCore::handle_completion`].
///
/// ```
/// use batch_core::Outcome;
/// assert_ne!(Outcome::Delivered, Outcome::Failed);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// The handler accepted the batch.
    Delivered,
    /// The attempt failed (an error, a panic or a timeout).
    Failed,
    /// The handler answered per item: `delivered` items were accepted, `rejected` are refused
    /// for good (dead-lettered at once, never retried), and the rest are retried under the same
    /// seq with the same back-off schedule. The driver keeps only the retried items, in order,
    /// in the batch's buffer. More than the batch holds is a driver bug (`None`).
    Partial {
        /// Items the sink accepted.
        delivered: u32,
        /// Items the sink refused for good.
        rejected: u32,
    },
}

/// What happens to a batch after an attempt, returned by [`BatchCore::handle_completion`].
///
/// ```
/// use batch_core::{Batcher, Batch, Completion, Config, Instant, Outcome, Duration};
/// let mut b: Batcher<u8, 4> = Batcher::new(Config::new().max_batch(1).max_attempts(2));
/// b.push(Instant::ZERO, 1).unwrap();
/// let f = b.poll_flush(Instant::ZERO, &mut Batch::<u8, 4>::new()).unwrap();
/// let c = b.handle_completion(Instant::ZERO, f.seq, Outcome::Failed);
/// assert_eq!(c, Some(Completion::Retry { attempt: 2, at: Instant::ZERO + Duration::from_millis(100) }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub enum Completion {
    /// The batch was delivered; its slot is free and the driver may reuse its buffer.
    Delivered {
        /// Items delivered.
        len: usize,
    },
    /// The batch keeps its slot; the driver keeps its items and asks [`BatchCore::poll_retry`]
    /// from `at` on.
    Retry {
        /// The number of the next attempt (2 for the first retry).
        attempt: u32,
        /// When it may start (later if the batcher is paused meanwhile).
        at: Instant,
    },
    /// Every attempt failed: the batch is final-failed and the driver hands its items to the
    /// error callback (dead letter).
    DeadLettered {
        /// Attempts made.
        attempts: u32,
        /// Items dead-lettered.
        len: usize,
    },
    /// The batch failed, and its oldest item would be older than `max_age` at the next attempt:
    /// it is final, and the driver hands its items to the expiry path.
    Expired {
        /// Items expired.
        len: usize,
    },
}

/// What [`BatchCore::poll_retry`] decided for a batch whose retry is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "run the attempt, or hand the items to the expiry path"]
pub enum Retry {
    /// Run attempt number `n` now, on the items the driver kept.
    Attempt(u32),
    /// Too old to send now (`max_age`, feature `uplink`): final and counted as expired; the
    /// driver hands the `len` items it kept to its expiry path.
    Expired {
        /// Items expired.
        len: usize,
    },
}

/// A receipt from [`BatchCore::flush`]: [`BatchCore::is_flushed`] says when every item accepted
/// before it has reached a final outcome.
///
/// ```
/// use batch_core::{Batcher, Config, Instant};
/// let mut b: Batcher<u8, 4> = Batcher::new(Config::new());
/// let empty = b.flush();
/// assert!(b.is_flushed(empty)); // nothing was accepted before it
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlushToken(u64);

impl FlushToken {
    /// The number of items accepted before the flush.
    pub const fn items_before(self) -> u64 {
        self.0
    }
}

/// The batching state machine over a [`Queue`] of items and a [`Slots`] table of in-flight
/// batches. Most users name it through [`Batcher`] (fixed capacity) or an adapter.
///
/// Methods come in four kinds, as in quinn-proto: `&self` getters; inputs that take `now`
/// ([`push`](Self::push), [`handle_completion`](Self::handle_completion), [`pause`](Self::pause),
/// ...); commands ([`flush`](Self::flush), [`close`](Self::close)); and `#[must_use]` outputs
/// ([`poll_flush`](Self::poll_flush), [`poll_retry`](Self::poll_retry),
/// [`poll_timeout`](Self::poll_timeout), [`poll_wake`](Self::poll_wake)).
///
/// ```
/// use batch_core::{Batcher, Batch, Completion, Config, Duration, Instant, Outcome, Trigger};
///
/// let mut core: Batcher<u32, 8> =
///     Batcher::new(Config::new().max_batch(3).linger(Duration::from_millis(10)));
/// let t = Instant::from_millis(1);
/// core.push(t, 1).unwrap();
/// core.push(t, 2).unwrap();
/// let mut batch = Batch::<u32, 8>::new();
/// assert!(core.poll_flush(t, &mut batch).is_none()); // neither full nor old enough
/// let deadline = core.poll_timeout().unwrap();
/// assert_eq!(deadline, t + Duration::from_millis(10));
/// let flush = core.poll_flush(deadline, &mut batch).unwrap();
/// assert_eq!((flush.trigger, &batch[..]), (Trigger::Linger, &[1, 2][..]));
/// let done = core.handle_completion(deadline, flush.seq, Outcome::Delivered);
/// assert_eq!(done, Some(Completion::Delivered { len: 2 }));
/// assert_eq!(core.poll_timeout(), None); // idle: no timer at all
/// ```
#[derive(Debug)]
pub struct BatchCore<T, Q, S> {
    queue: Q,
    slots: S,
    config: Config,
    /// The effective batch size (`max_batch`, or the capacity).
    max_batch: usize,
    /// Pushes while `accepted < fast_until` take the fast path (append and count, nothing else):
    /// until the batch fills, the buffer fills or an arrival mark is due. Set by the slow path;
    /// reset by anything else that changes the buffer.
    fast_until: u64,
    /// Places granted to a driver's staging areas ([`reserve`](Self::reserve)): taken, as far as
    /// the capacity goes, until the staged items are handed over or the places given back.
    reserved: usize,
    weigher: Option<fn(&T) -> u32>,
    /// Total weight of buffered items (only kept with a weigher).
    buffered_weight: u64,
    /// Arrival marks `(acceptance index, arrival)`, oldest first, one per `max_batch` items.
    /// `marks[0]` is the anchor: the oldest buffered item with its arrival, or an earlier instant
    /// (never later). See [`Marks`].
    marks: Marks,
    /// Items with an acceptance index below this are cut without waiting for linger.
    flush_mark: u64,
    mark_trigger: Trigger,
    next_seq: u64,
    closed: bool,
    paused_at: Option<Instant>,
    wake: bool,
    rng: u32,
    /// Items accepted so far: the acceptance index of the next item (a `u64` on every target,
    /// unlike the counters, because it orders items).
    accepted: u64,
    /// Counters; `accepted`, `buffered` and `batches_in_flight` are filled in by `metrics()`.
    /// Without the `metrics` feature only `in_flight` is kept (see `Counters`).
    counters: Counters,
    /// The paced drain's theoretical arrival time (see the `pace` module).
    #[cfg(feature = "uplink")]
    pace_tat: Instant,
    /// What the core knows about its store (feature `store`).
    #[cfg(feature = "store")]
    store: store::StoreState,
    _items: PhantomData<fn(T) -> T>,
}

impl<T, const N: usize, const F: usize> BatchCore<T, heapless::Deque<T, N>, heapless::Vec<InFlight, F>> {
    /// A batcher with room for `N` items and `F` in-flight batches, for a `static` or `const`.
    ///
    /// In a `static` or `const` an invalid `config` stops the build with a message naming the
    /// field (a compile-time error, never a run-time surprise):
    ///
    /// ```compile_fail
    /// use batch_core::{Batcher, Config};
    /// static B: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(0)); // error: "max_batch is 0: ..."
    /// ```
    ///
    /// # Panics
    ///
    /// Called at run time with an invalid configuration. For a configuration that is not a
    /// constant use [`try_new`](Self::try_new), which returns the [`ConfigError`] instead.
    ///
    /// ```
    /// use batch_core::{Batcher, Config};
    /// const CONFIG: Config = Config::new().max_batch(4);
    /// static READINGS: std::sync::Mutex<Batcher<u32, 16>> = std::sync::Mutex::new(Batcher::new(CONFIG));
    /// assert_eq!(READINGS.lock().unwrap().capacity(), 16);
    /// ```
    #[track_caller]
    pub const fn new(config: Config) -> Self {
        if let Err(e) = Self::check(&config, false) {
            panic!("{}", e.message());
        }
        Self::assemble(heapless::Deque::new(), heapless::Vec::new(), N, config, None)
    }

    /// Like [`new`](Self::new), with a weigher for the `max_weight` limit (which must be set).
    ///
    /// ```
    /// use batch_core::{Batcher, Config, Instant, PushError};
    /// fn bytes(s: &&str) -> u32 { s.len() as u32 }
    /// const B: Batcher<&str, 8> = Batcher::new_weighted(Config::new().max_weight(10), bytes);
    /// let mut b = B;
    /// assert_eq!(b.push(Instant::ZERO, "far too long"), Err(PushError::TooHeavy("far too long")));
    /// ```
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new); use [`try_new_weighted`](Self::try_new_weighted) at run time.
    #[track_caller]
    pub const fn new_weighted(config: Config, weigher: fn(&T) -> u32) -> Self {
        if let Err(e) = Self::check(&config, true) {
            panic!("{}", e.message());
        }
        Self::assemble(heapless::Deque::new(), heapless::Vec::new(), N, config, Some(weigher))
    }

    /// A batcher with room for `N` items and `F` in-flight batches, or the [`ConfigError`] naming
    /// the field at fault.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, ConfigError};
    /// let err = Batcher::<u8, 4>::try_new(Config::new().max_batch(5)).unwrap_err();
    /// assert_eq!(err, ConfigError::MaxBatchAboveCapacity { max_batch: 5, capacity: 4 });
    /// assert_eq!(err.to_string(), "max_batch (5) is larger than the capacity (4): a full batch could never be buffered");
    /// ```
    pub const fn try_new(config: Config) -> Result<Self, ConfigError> {
        if let Err(e) = Self::check(&config, false) {
            return Err(e);
        }
        Ok(Self::assemble(heapless::Deque::new(), heapless::Vec::new(), N, config, None))
    }

    /// Like [`try_new`](Self::try_new), with a weigher for `max_weight`.
    pub const fn try_new_weighted(config: Config, weigher: fn(&T) -> u32) -> Result<Self, ConfigError> {
        if let Err(e) = Self::check(&config, true) {
            return Err(e);
        }
        Ok(Self::assemble(heapless::Deque::new(), heapless::Vec::new(), N, config, Some(weigher)))
    }

    const fn check(config: &Config, weighted: bool) -> Result<(), ConfigError> {
        if let Err(e) = config.validate(N, F) {
            return Err(e);
        }
        match (config.get_max_weight().is_some(), weighted) {
            (true, false) => Err(ConfigError::MaxWeightWithoutWeigher),
            (false, true) => Err(ConfigError::WeigherWithoutMaxWeight),
            _ => Ok(()),
        }
    }
}

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// A batcher over storage chosen at run time (for example [`FixedDeque`] and `Vec` with
    /// the `alloc` feature). `queue` and `slots` must be empty; `weigher` goes with
    /// `max_weight`.
    ///
    /// [`FixedDeque`]: crate::storage::FixedDeque
    ///
    /// ```
    /// use batch_core::{BatchCore, Config, storage::InFlight};
    /// let core = BatchCore::<u8, _, _>::with_storage(
    ///     Config::new().max_batch(2),
    ///     heapless::Deque::<u8, 4>::new(),
    ///     heapless::Vec::<InFlight, 1>::new(),
    ///     None,
    /// ).unwrap();
    /// assert_eq!(core.capacity(), 4);
    /// ```
    pub fn with_storage(
        config: Config,
        queue: Q,
        slots: S,
        weigher: Option<fn(&T) -> u32>,
    ) -> Result<Self, ConfigError> {
        config.validate(queue.capacity(), slots.capacity())?;
        match (config.get_max_weight(), weigher) {
            // A queue that keeps weights takes them from the driver (`push_weighed`).
            (Some(_), None) if !queue.keeps_weights() => return Err(ConfigError::MaxWeightWithoutWeigher),
            (None, Some(_)) => return Err(ConfigError::WeigherWithoutMaxWeight),
            _ => {}
        }
        let capacity = queue.capacity();
        let mut core = Self::assemble(queue, slots, capacity, config, weigher);
        // Anything already in the storage is taken as accepted now, so the counters add up.
        core.accepted = core.queue.len() as u64;
        if core.queue.len() > 0 {
            core.marks.reset(0, Instant::ZERO); // arrival unknown: as early as can be
        }
        core.buffered_weight = core.total_weight_of_queue();
        while !core.slots.as_slice().is_empty() {
            let _ = core.slots.pop();
        }
        Ok(core)
    }

    const fn assemble(
        queue: Q,
        slots: S,
        capacity: usize,
        config: Config,
        weigher: Option<fn(&T) -> u32>,
    ) -> Self {
        let seed = config.get_jitter_seed();
        Self {
            queue,
            slots,
            max_batch: config.max_batch_for(capacity),
            fast_until: 0,
            reserved: 0,
            config,
            weigher,
            buffered_weight: 0,
            marks: Marks::new(),
            flush_mark: 0,
            mark_trigger: Trigger::Manual,
            next_seq: 0,
            closed: false,
            paused_at: None,
            wake: false,
            rng: if seed == 0 { 0x9E37_79B9 } else { seed },
            accepted: 0,
            counters: Counters::ZERO,
            #[cfg(feature = "uplink")]
            pace_tat: Instant::ZERO,
            #[cfg(feature = "store")]
            store: store::StoreState::new(),
            _items: PhantomData,
        }
    }

    /// Items buffered (not yet cut).
    #[inline]
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    /// Whether no item is buffered.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.queue.len() == 0
    }
    /// Whether the buffer is full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.taken() >= self.queue.capacity()
    }
    /// Whether a push now would be refused only because the buffer is full (or, with a store,
    /// not open yet, or full while a spill can make room): an async producer waits for room
    /// instead of pushing.
    #[inline]
    pub fn must_wait(&self) -> bool {
        !self.closed && (!self.store_open() || (self.is_full() && !self.may_evict()))
    }
    /// The buffer's capacity.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
    /// Batches in flight (running or waiting to retry).
    pub fn in_flight(&self) -> usize {
        self.slots.as_slice().len()
    }
    /// Items in flight.
    pub fn in_flight_items(&self) -> usize {
        #[cfg(feature = "metrics")]
        return self.counters.in_flight as usize;
        #[cfg(not(feature = "metrics"))]
        self.items_in_flight()
    }

    /// Items in flight, from the flight table (a batch that only waits for its removal from
    /// the store holds none): what the `in_flight` counter keeps with the `metrics` feature.
    #[cfg_attr(all(feature = "metrics", not(debug_assertions)), allow(dead_code))]
    fn items_in_flight(&self) -> usize {
        let slots = self.slots.as_slice().iter();
        #[cfg(feature = "store")]
        let slots = slots.filter(|s| s.phase != crate::storage::Phase::Removing);
        slots.map(|s| s.len as usize).sum()
    }
    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
    /// Whether the batcher is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }
    /// Closed, empty, nothing staged and nothing in flight: the driver may stop.
    pub fn is_finished(&self) -> bool {
        self.closed
            && self.queue.len() == 0
            && self.reserved == 0
            && self.slots.as_slice().is_empty()
            && self.store_idle()
    }
    /// Whether every item accepted before `token` reached a final outcome (with a store: and
    /// was removed from it).
    pub fn is_flushed(&self, token: FlushToken) -> bool {
        self.front_index() - self.stored_items() >= token.0
            && self.slots.as_slice().iter().all(|s| s.first >= token.0)
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// A snapshot of the counters (feature `metrics`, on by default; a firmware that leaves it
    /// out keeps no counters and has no `metrics()`).
    #[cfg(feature = "metrics")]
    pub fn metrics(&self) -> Metrics {
        let mut m = self.counters;
        m.accepted = self.accepted as Count; // wraps with the other counters
        m.buffered = self.queue.len() as Count;
        m.batches_in_flight = self.slots.as_slice().len() as Count;
        debug_assert_eq!(m.in_flight as usize, self.items_in_flight(), "the in-flight counter adds up");
        #[cfg(feature = "store")]
        self.store_metrics(&mut m);
        m
    }

    /// Places taken in the buffer: items, places granted to staging areas, and items being
    /// spilled to the store.
    #[inline]
    fn taken(&self) -> usize {
        self.queue.len() + self.reserved + self.spilling()
    }

    /// Whether a push into a full buffer evicts its oldest item ([`Overflow::DropOldest`]),
    /// rather than waiting or being refused: not while a spill to the store can make room.
    #[inline]
    fn may_evict(&self) -> bool {
        self.config.get_overflow() == Overflow::DropOldest && !self.spill_may_make_room()
    }
}

/// `*counter += n`, wrapping (a `u32` counter on a 32-bit target wraps after 2^32; see
/// [`Count`]); nothing for a counter left out (no `metrics` feature).
#[inline]
fn add(counter: &mut impl Counter, n: Count) {
    counter.add(n);
}
