//! The batching state machine.
//!
//! [`BatchCore`] holds the buffer, the in-flight table and the counters, and decides when a batch
//! is cut, when a failed batch may retry and when it is final. It never reads a clock, never
//! sleeps and never calls the handler: a driver feeds it inputs with `now` and acts on its
//! outputs. See the crate documentation for the order of calls.

use core::marker::PhantomData;

use crate::config::{Config, ConfigError, Overflow};
use crate::error::PushError;
use crate::metrics::{Count, Metrics, Trigger};
use crate::storage::{BatchBuf, InFlight, Phase, Queue, Slots};
use crate::time::{Duration, Instant};

mod staging;

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
    counters: Metrics,
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
            counters: Metrics {
                accepted: 0,
                rejected: 0,
                delivered: 0,
                dead_lettered: 0,
                evicted: 0,
                returned: 0,
                abandoned: 0,
                buffered: 0,
                in_flight: 0,
                retries: 0,
                failed_attempts: 0,
                batches_delivered: 0,
                batches_dead_lettered: 0,
                batches_in_flight: 0,
                flushes: crate::metrics::FlushCounts {
                    size: 0,
                    weight: 0,
                    linger: 0,
                    manual: 0,
                    urgent: 0,
                    close: 0,
                },
                max_item_age: Duration::ZERO,
                panics: 0,
            },
            _items: PhantomData,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// Accepts an item at `now`. `Ok(None)`: buffered. `Ok(Some(old))`: buffered, and the oldest
    /// item was evicted to make room ([`Overflow::DropOldest`]) and is handed back. `Err`: refused,
    /// with the item.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, Instant, Overflow};
    /// let mut b: Batcher<u8, 2> =
    ///     Batcher::new(Config::new().max_batch(2).overflow(Overflow::DropOldest));
    /// assert_eq!(b.push(Instant::ZERO, 1), Ok(None));
    /// assert_eq!(b.push(Instant::ZERO, 2), Ok(None));
    /// assert_eq!(b.push(Instant::ZERO, 3), Ok(Some(1)));
    /// ```
    #[inline]
    pub fn push(&mut self, now: Instant, item: T) -> Result<Option<T>, PushError<T>> {
        self.push_with(|| now, item)
    }

    /// Like [`push`](Self::push), reading the clock only when the core needs the time (when the
    /// item is the first of a batch), which saves a clock read per item on hot paths.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, Instant};
    /// let mut b: Batcher<u8, 4> = Batcher::new(Config::new().max_batch(4));
    /// let mut reads = 0;
    /// for i in 0..3 {
    ///     b.push_with(|| { reads += 1; Instant::ZERO }, i).unwrap();
    /// }
    /// assert_eq!(reads, 1);
    /// ```
    #[inline]
    pub fn push_with(&mut self, now: impl FnOnce() -> Instant, item: T) -> Result<Option<T>, PushError<T>> {
        // Fast path: open, unweighted, not the first item of a batch, not one that completes a
        // batch, fills the buffer or needs an arrival mark: only the buffer and a counter change.
        if self.accepted < self.fast_until {
            match self.queue.push_back(item) {
                Ok(()) => {
                    self.accepted += 1;
                    return Ok(None);
                }
                Err(item) => return self.push_slow(now, item, None),
            }
        }
        let result = self.push_slow(now, item, None);
        self.refresh_fast();
        result
    }

    /// Like [`push`](Self::push), with the item's weight computed by the driver (for example
    /// outside its lock, so that no user code runs under it). The weight is kept beside the item
    /// when the queue [keeps weights](crate::storage::Queue::keeps_weights), and the core never
    /// weighs that item again; otherwise the configured weigher is asked at the cut.
    ///
    /// ```
    /// # #[cfg(feature = "alloc")] {
    /// use batch_core::{BatchCore, Config, Instant, PushError, storage::{FixedDeque, InFlight}};
    /// let mut core = BatchCore::<&str, _, _>::with_storage(
    ///     Config::new().max_weight(10),
    ///     FixedDeque::try_with_capacity_weighed(8).unwrap(), // `alloc` feature
    ///     Vec::<InFlight>::with_capacity(1),
    ///     None, // no weigher: the driver weighs
    /// ).unwrap();
    /// assert_eq!(core.push_weighed(Instant::ZERO, "abc", 3), Ok(None));
    /// assert_eq!(core.push_weighed(Instant::ZERO, "too heavy", 11), Err(PushError::TooHeavy("too heavy")));
    /// # }
    /// ```
    pub fn push_weighed(&mut self, now: Instant, item: T, weight: u32) -> Result<Option<T>, PushError<T>> {
        let result = self.push_slow(|| now, item, Some(weight));
        self.refresh_fast();
        result
    }

    /// [`push_urgent`](Self::push_urgent) with a weight computed by the driver
    /// ([`push_weighed`](Self::push_weighed)).
    pub fn push_urgent_weighed(
        &mut self,
        now: Instant,
        item: T,
        weight: u32,
    ) -> Result<Option<T>, PushError<T>> {
        let evicted = self.push_weighed(now, item, weight)?;
        self.mark_urgent();
        Ok(evicted)
    }

    /// Sets how far pushes may take the fast path from here (see `fast_until`).
    fn refresh_fast(&mut self) {
        let len = self.queue.len();
        let fast = if self.closed || self.config.get_max_weight().is_some() || len == 0 {
            0
        } else {
            let to_full = self.queue.capacity().saturating_sub(len + self.reserved);
            let to_batch = if len < self.max_batch { self.max_batch - 1 - len } else { usize::MAX };
            let next_mark = self.marks.last_index() + self.max_batch as u64;
            let to_mark = usize::try_from(next_mark.saturating_sub(self.accepted)).unwrap_or(usize::MAX);
            to_full.min(to_batch).min(to_mark)
        };
        self.fast_until = self.accepted.saturating_add(fast as u64);
    }

    /// Every push that may change more than the buffer and the count.
    #[inline(never)]
    fn push_slow(
        &mut self,
        now: impl FnOnce() -> Instant,
        item: T,
        given: Option<u32>,
    ) -> Result<Option<T>, PushError<T>> {
        if self.closed {
            add(&mut self.counters.rejected, 1);
            return Err(PushError::Closed(item));
        }
        let weight = match self.config.get_max_weight() {
            Some(max) => {
                let w = given.or_else(|| self.weigher.map(|weigh| weigh(&item))).unwrap_or(0);
                if w > max {
                    add(&mut self.counters.rejected, 1);
                    return Err(PushError::TooHeavy(item));
                }
                w
            }
            None => 0,
        };
        let mut evicted = None;
        if self.queue.len() + self.reserved >= self.queue.capacity() {
            match self.config.get_overflow() {
                Overflow::Reject => {
                    add(&mut self.counters.rejected, 1);
                    return Err(PushError::Full(item));
                }
                Overflow::DropOldest => {
                    evicted = self.evict_front();
                }
            }
        }
        let was_empty = self.queue.len() == 0;
        if let Err(item) = self.queue.push_back_weighed(item, weight) {
            // Only reachable with a zero-capacity queue, which validation refuses.
            add(&mut self.counters.rejected, 1);
            return Err(PushError::Full(item));
        }
        let index = self.accepted;
        self.accepted += 1;
        self.buffered_weight += u64::from(weight);
        let len = self.queue.len();
        let max_batch = self.max_batch;
        if was_empty {
            self.marks.reset(index, now());
            self.wake = true;
        } else if index - self.marks.last_index() >= max_batch as u64 {
            // The first item of a later batch (while earlier ones wait): note when it came.
            self.marks.record(index, now());
        }
        if len == max_batch || self.over_weight() {
            self.wake = true;
        }
        Ok(evicted)
    }

    /// Pushes items from `items` in order, in tight runs wherever the fast path allows, until
    /// `items` is exhausted (`None`) or the buffer is full under [`Overflow::Reject`]: then the
    /// item that must wait is returned and the rest stay in `items`. Refused items go to
    /// `refused`, evicted ones ([`Overflow::DropOldest`]) to `evicted`.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, Instant};
    /// let mut b: Batcher<u32, 4> = Batcher::new(Config::new().max_batch(4));
    /// let mut items = 0..10;
    /// let held = b.push_many(|| Instant::ZERO, &mut items, |_| {}, |_| {});
    /// assert_eq!((b.len(), held), (4, Some(4))); // full: item 4 waits, 5..10 untouched
    /// assert_eq!(items.next(), Some(5));
    /// ```
    pub fn push_many(
        &mut self,
        now: impl Fn() -> Instant,
        items: &mut impl Iterator<Item = T>,
        mut refused: impl FnMut(PushError<T>),
        mut evicted: impl FnMut(T),
    ) -> Option<T> {
        loop {
            // A run of fast-path pushes: append only.
            while self.accepted < self.fast_until {
                let item = items.next()?;
                if let Err(item) = self.queue.push_back(item) {
                    // Not reachable (the fast path implies room); take the slow path.
                    self.fast_until = 0;
                    match self.push_with(&now, item) {
                        Ok(None) => {}
                        Ok(Some(old)) => evicted(old),
                        Err(e) => refused(e),
                    }
                    continue;
                }
                self.accepted += 1;
            }
            let item = items.next()?;
            if self.must_wait() {
                return Some(item);
            }
            match self.push_with(&now, item) {
                Ok(None) => {}
                Ok(Some(old)) => evicted(old),
                Err(e) => refused(e),
            }
        }
    }

    /// Accepts an item that cuts its batch at once (an alarm among telemetry): the batch holding
    /// it, and everything before it, is cut at the next [`poll_flush`](Self::poll_flush)
    /// without waiting for size or linger.
    ///
    /// ```
    /// use batch_core::{Batcher, Batch, Config, Instant, Trigger};
    /// let mut b: Batcher<u8, 8> = Batcher::new(Config::new().max_batch(8));
    /// b.push(Instant::ZERO, 1).unwrap();
    /// b.push_urgent(Instant::ZERO, 99).unwrap();
    /// let f = b.poll_flush(Instant::ZERO, &mut Batch::<u8, 8>::new()).unwrap();
    /// assert_eq!((f.trigger, f.len), (Trigger::Urgent, 2));
    /// ```
    pub fn push_urgent(&mut self, now: Instant, item: T) -> Result<Option<T>, PushError<T>> {
        let evicted = self.push(now, item)?;
        self.mark_urgent();
        Ok(evicted)
    }

    /// The item just accepted cuts its batch at once.
    fn mark_urgent(&mut self) {
        self.flush_mark = self.accepted;
        self.mark_trigger = Trigger::Urgent;
        self.wake = true;
    }

    /// Reports how an attempt of batch `seq` ended, at `now`. Returns `None` if `seq` has no
    /// running attempt (a driver bug, reported instead of panicking).
    pub fn handle_completion(&mut self, now: Instant, seq: u64, outcome: Outcome) -> Option<Completion> {
        let index = self.slots.as_slice().iter().position(|s| s.seq == seq && s.phase == Phase::Running)?;
        let slot = self.slots.as_slice()[index];
        let len = slot.len as usize;
        self.wake = true;
        match outcome {
            Outcome::Delivered => {
                self.remove_slot(index);
                add(&mut self.counters.delivered, Count::from(slot.len));
                add(&mut self.counters.batches_delivered, 1);
                self.counters.in_flight -= Count::from(slot.len);
                Some(Completion::Delivered { len })
            }
            Outcome::Failed => {
                add(&mut self.counters.failed_attempts, 1);
                if slot.attempt >= self.config.get_max_attempts() {
                    self.remove_slot(index);
                    add(&mut self.counters.dead_lettered, Count::from(slot.len));
                    add(&mut self.counters.batches_dead_lettered, 1);
                    self.counters.in_flight -= Count::from(slot.len);
                    Some(Completion::DeadLettered { attempts: slot.attempt, len })
                } else {
                    // While paused the retry clock does not run: count from the pause, and
                    // `resume` moves the deadline by the paused time.
                    let from = match self.paused_at {
                        Some(p) => p,
                        None => now,
                    };
                    let at = from + self.retry_delay(slot.attempt);
                    self.slots.as_mut_slice()[index].phase = Phase::Backoff(at);
                    Some(Completion::Retry { attempt: slot.attempt + 1, at })
                }
            }
        }
    }

    /// Asks for a manual flush: every item accepted so far is cut without waiting for linger.
    /// The token tells, through [`is_flushed`](Self::is_flushed), when they all reached a final
    /// outcome. A flush of an empty batcher is flushed at once.
    pub fn flush(&mut self) -> FlushToken {
        self.flush_mark = self.accepted;
        self.mark_trigger = Trigger::Manual;
        self.wake = true;
        FlushToken(self.accepted)
    }

    /// Stops taking items (pushes return [`PushError::Closed`]) and cuts everything buffered
    /// without waiting for linger. Batches in flight finish, retries included. Idempotent.
    pub fn close(&mut self) {
        self.closed = true;
        self.fast_until = 0;
        self.wake = true;
    }

    /// Pauses: no batch starts and no retry clock runs; items keep buffering up to capacity.
    /// Attempts already running finish.
    pub fn pause(&mut self, now: Instant) {
        if self.paused_at.is_none() {
            self.paused_at = Some(now);
        }
    }

    /// Resumes after [`pause`](Self::pause): retry deadlines move by the paused time, and
    /// everything buffered drains in order.
    pub fn resume(&mut self, now: Instant) {
        if let Some(since) = self.paused_at.take() {
            let paused_for = now - since;
            for slot in self.slots.as_mut_slice() {
                if let Phase::Backoff(at) = slot.phase {
                    slot.phase = Phase::Backoff(at + paused_for);
                }
            }
            self.wake = true;
        }
    }

    /// Gives up batch `seq` wherever it is (running or waiting to retry), for a shutdown that hit
    /// its deadline: its items count as returned. The driver keeps them and hands them back.
    /// Returns the number of items, or `None` if `seq` is not in flight.
    pub fn abandon(&mut self, seq: u64) -> Option<usize> {
        let index = self.slots.as_slice().iter().position(|s| s.seq == seq)?;
        let slot = self.remove_slot(index);
        self.counters.in_flight -= Count::from(slot.len);
        add(&mut self.counters.returned, Count::from(slot.len));
        self.wake = true;
        Some(slot.len as usize)
    }

    /// Like [`abandon`](Self::abandon), for a batch whose items the driver cannot hand back by
    /// value (a handler still holds them): they count as abandoned, not returned. Returns the
    /// number of items, or `None` if `seq` is not in flight.
    ///
    /// ```
    /// use batch_core::{Batch, Batcher, Config, Instant};
    /// let mut b: Batcher<u8, 4> = Batcher::new(Config::new().max_batch(1));
    /// b.push(Instant::ZERO, 1).unwrap();
    /// let f = b.poll_flush(Instant::ZERO, &mut Batch::<u8, 4>::new()).unwrap();
    /// assert_eq!(b.abandon_held(f.seq), Some(1));
    /// let m = b.metrics();
    /// assert_eq!((m.abandoned, m.returned, m.in_flight), (1, 0, 0));
    /// assert!(m.is_consistent());
    /// ```
    pub fn abandon_held(&mut self, seq: u64) -> Option<usize> {
        let index = self.slots.as_slice().iter().position(|s| s.seq == seq)?;
        let slot = self.remove_slot(index);
        self.counters.in_flight -= Count::from(slot.len);
        add(&mut self.counters.abandoned, Count::from(slot.len));
        self.wake = true;
        Some(slot.len as usize)
    }

    /// Counts a panic in user code that the driver caught ([`Metrics::panics`]).
    pub fn note_panic(&mut self) {
        add(&mut self.counters.panics, 1);
    }

    /// The sequence numbers of the batches in flight, in no particular order.
    pub fn in_flight_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.as_slice().iter().map(|s| s.seq)
    }

    /// Moves buffered items, oldest first, into `out` (as many as fit) for a shutdown that hit its
    /// deadline: they count as returned. Returns how many moved.
    pub fn take_buffered<B: BatchBuf<T>>(&mut self, out: &mut B) -> usize {
        self.fast_until = 0;
        let mut moved = 0;
        while out.spare() > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let w = self.weight_of_front(front);
            let Some(item) = self.queue.pop_front() else {
                break;
            };
            if let Err(item) = out.push(item) {
                let restored = self.queue.push_front_weighed(item, w as u32);
                debug_assert!(restored.is_ok(), "the slot it came from is free");
                break;
            }
            self.buffered_weight = self.buffered_weight.saturating_sub(w);
            moved += 1;
        }
        self.settle_weight();
        add(&mut self.counters.returned, moved as Count);
        self.reanchor();
        moved
    }

    // ----------------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------------

    /// Cuts the next batch if one is due at `now` and a flight slot is free, moving its items
    /// (oldest first) into `out`. Call it until it returns `None` after every input. `out` must
    /// have room for `max_batch` items; with less room the batch is cut smaller.
    pub fn poll_flush<B: BatchBuf<T>>(&mut self, now: Instant, out: &mut B) -> Option<Flush> {
        if self.paused_at.is_some() || !self.slot_free() {
            return None;
        }
        let mut trigger = self.trigger(now)?;
        self.fast_until = 0;
        let room = self.max_batch.min(out.spare());
        let first = self.front_index();
        let max_weight = self.config.get_max_weight().map_or(u64::MAX, u64::from);
        let (mut len, mut weight) = (0usize, 0u64);
        if self.config.get_max_weight().is_none() {
            // No weights to add up: move the whole batch at once.
            len = room.min(self.queue.len());
            self.queue.move_front_into(len, out);
        } else {
            while len < room {
                let Some(front) = self.queue.front() else { break };
                let w = self.weight_of_front(front);
                if len > 0 && weight + w > max_weight {
                    if trigger == Trigger::Size {
                        trigger = Trigger::Weight;
                    }
                    break;
                }
                let Some(item) = self.queue.pop_front() else { break };
                if let Err(item) = out.push(item) {
                    let restored = self.queue.push_front_weighed(item, w as u32);
                    debug_assert!(restored.is_ok(), "the slot it came from is free");
                    break;
                }
                weight += w;
                len += 1;
            }
        }
        if len == 0 {
            return None;
        }
        self.buffered_weight = self.buffered_weight.saturating_sub(weight);
        self.settle_weight();
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = InFlight { seq, first, len: len as u32, attempt: 1, phase: Phase::Running };
        let added = self.slots.push(slot);
        debug_assert!(added.is_ok(), "slot_free() checked for room");
        let oldest_age = now - self.marks.anchor();
        if oldest_age > self.counters.max_item_age {
            self.counters.max_item_age = oldest_age;
        }
        self.counters.flushes.record(trigger);
        self.counters.in_flight += len as Count;
        self.reanchor();
        Some(Flush { seq, len, trigger, oldest_age, first_item: first })
    }

    /// Starts the next attempt of batch `seq` if its retry is due at `now` (and the batcher is not
    /// paused). Returns the attempt's number; the driver runs the handler again on the items it
    /// kept and reports with [`handle_completion`](Self::handle_completion).
    #[must_use]
    pub fn poll_retry(&mut self, now: Instant, seq: u64) -> Option<u32> {
        if self.paused_at.is_some() {
            return None;
        }
        let slot = self.slots.as_mut_slice().iter_mut().find(|s| s.seq == seq)?;
        match slot.phase {
            Phase::Backoff(at) if now >= at => {
                slot.phase = Phase::Running;
                slot.attempt += 1;
                add(&mut self.counters.retries, 1);
                Some(slot.attempt)
            }
            _ => None,
        }
    }

    /// When the driver must call back (with `poll_flush` and `poll_retry`) if no input arrives
    /// first: the earliest linger deadline or retry deadline. `None` when nothing is pending on
    /// time (idle, paused, or every slot busy with a running attempt): no timer at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.paused_at.is_some() {
            return None;
        }
        let mut next: Option<Instant> = None;
        for slot in self.slots.as_slice() {
            if let Phase::Backoff(at) = slot.phase {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if let Some(at) = self.next_cut() {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// The part of [`poll_timeout`](Self::poll_timeout) about new batches: when the next batch
    /// is due (a past instant if it is due now), or `None` when nothing is buffered, every slot is
    /// busy or the batcher is paused. Drivers whose retries wait elsewhere (one task per flight
    /// slot) sleep on this alone.
    #[must_use]
    pub fn next_cut(&self) -> Option<Instant> {
        if self.paused_at.is_some() || !self.slot_free() || self.queue.len() == 0 {
            return None;
        }
        Some(if self.trigger_without_linger().is_some() {
            self.marks.anchor()
        } else {
            self.marks.anchor() + self.config.get_linger()
        })
    }

    /// Whether an input since the last call may have made work due (a batch ready, a deadline
    /// earlier, a slot freed, a flush, a close, a resume). Drivers use it to wake their runner
    /// only when needed. Clears the flag.
    #[must_use]
    pub fn poll_wake(&mut self) -> bool {
        core::mem::take(&mut self.wake)
    }

    /// When batch `seq`, waiting to retry, may start its next attempt (`None` if it is not
    /// waiting). While paused this is where the deadline would be if resumed now.
    pub fn retry_at(&self, seq: u64) -> Option<Instant> {
        self.slots.as_slice().iter().find(|s| s.seq == seq).and_then(|s| match s.phase {
            Phase::Backoff(at) => Some(at),
            Phase::Running => None,
        })
    }

    // ----------------------------------------------------------------------------------------
    // Getters
    // ----------------------------------------------------------------------------------------

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
        self.queue.len() + self.reserved >= self.queue.capacity()
    }
    /// Whether a push now would be refused only because the buffer is full: an async producer
    /// waits for room instead of pushing.
    #[inline]
    pub fn must_wait(&self) -> bool {
        !self.closed && self.is_full() && self.config.get_overflow() == Overflow::Reject
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
        self.counters.in_flight as usize
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
        self.closed && self.queue.len() == 0 && self.reserved == 0 && self.slots.as_slice().is_empty()
    }
    /// Whether every item accepted before `token` reached a final outcome.
    pub fn is_flushed(&self, token: FlushToken) -> bool {
        self.front_index() >= token.0 && self.slots.as_slice().iter().all(|s| s.first >= token.0)
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.counters;
        m.accepted = self.accepted as Count; // wraps with the other counters
        m.buffered = self.queue.len() as Count;
        m.batches_in_flight = self.slots.as_slice().len() as Count;
        m
    }

    // ----------------------------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------------------------

    /// Removes the in-flight record at `index` (the last record takes its place). Plain copies of
    /// a small `Copy` record: no overlapping move, so no `memmove` in the firmware image.
    fn remove_slot(&mut self, index: usize) -> InFlight {
        let slots = self.slots.as_mut_slice();
        let removed = slots[index];
        let last = slots.len() - 1;
        if index < last {
            // Two disjoint `&mut`s: LLVM knows they do not overlap and copies without `memmove`.
            let (head, tail) = slots.split_at_mut(last);
            core::mem::swap(&mut head[index], &mut tail[0]);
        }
        let _ = self.slots.pop();
        removed
    }

    /// Acceptance index of the oldest buffered item (or of the next item, when empty).
    fn front_index(&self) -> u64 {
        self.accepted - self.queue.len() as u64
    }

    fn slot_free(&self) -> bool {
        let used = self.slots.as_slice().len();
        used < self.config.get_max_in_flight() && used < self.slots.capacity()
    }

    fn weight_of(&self, item: &T) -> u64 {
        self.weigher.map_or(0, |weigh| u64::from(weigh(item)))
    }

    /// The weight of `front`, the oldest item: the one kept beside it if the queue keeps
    /// weights, else the weigher's answer.
    fn weight_of_front(&self, front: &T) -> u64 {
        self.queue.front_weight().map_or_else(|| self.weight_of(front), u64::from)
    }

    fn total_weight_of_queue(&mut self) -> u64 {
        // Only used at construction on pre-filled storage: rotate once through the queue.
        let mut total = 0;
        for _ in 0..self.queue.len() {
            let w = self.queue.front().map_or(0, |front| self.weight_of_front(front));
            if let Some(item) = self.queue.pop_front() {
                total += w;
                let back = self.queue.push_back_weighed(item, w as u32);
                debug_assert!(back.is_ok());
            }
        }
        total
    }

    /// The weigher is user code and may answer differently at the cut than at the push: the
    /// total saturates instead of underflowing, and an empty buffer resets it to exactly zero, so
    /// a wrong answer skews at most the batches cut while those items are buffered.
    fn settle_weight(&mut self) {
        if self.queue.len() == 0 {
            self.buffered_weight = 0;
        }
    }

    fn over_weight(&self) -> bool {
        self.config.get_max_weight().is_some_and(|max| self.buffered_weight > u64::from(max))
    }

    /// Why a batch is due now regardless of linger, if it is.
    fn trigger_without_linger(&self) -> Option<Trigger> {
        if self.queue.len() == 0 {
            None
        } else if self.queue.len() >= self.max_batch {
            Some(Trigger::Size)
        } else if self.over_weight() {
            Some(Trigger::Weight)
        } else if self.front_index() < self.flush_mark {
            Some(self.mark_trigger)
        } else if self.closed {
            Some(Trigger::Close)
        } else {
            None
        }
    }

    fn trigger(&self, now: Instant) -> Option<Trigger> {
        self.trigger_without_linger().or_else(|| {
            (self.queue.len() > 0 && now >= self.marks.anchor() + self.config.get_linger())
                .then_some(Trigger::Linger)
        })
    }

    fn evict_front(&mut self) -> Option<T> {
        let w = self.queue.front().map_or(0, |front| self.weight_of_front(front));
        let old = self.queue.pop_front()?;
        self.buffered_weight = self.buffered_weight.saturating_sub(w);
        self.settle_weight();
        add(&mut self.counters.evicted, 1);
        self.reanchor();
        Some(old)
    }

    /// After items left the front: anchor the new oldest item to the latest mark at or before it.
    fn reanchor(&mut self) {
        if self.queue.len() > 0 {
            self.marks.advance_to(self.front_index());
        }
    }

    fn retry_delay(&mut self, failed_attempt: u32) -> Duration {
        let delay = self.config.backoff(failed_attempt).as_micros();
        let permille = u32::from(self.config.get_jitter_permille());
        if permille == 0 {
            return Duration::from_micros(delay);
        }
        // span = delay * permille / 1000 and cut = span * r / 2^32, with multiplies only (no
        // 64-bit division, which costs ~1 KiB of code on 32-bit MCUs). 4_294_967 = 2^32 / 1000,
        // rounded down, so the span never exceeds the configured share.
        let span = mul_hi(delay, permille * 4_294_967);
        // xorshift32: small, deterministic for a given seed.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        Duration::from_micros(delay - mul_hi(span, x))
    }
}

/// `*counter += n`, wrapping (a `u32` counter on a 32-bit target wraps after 2^32; see
/// [`Count`]).
fn add(counter: &mut Count, n: Count) {
    *counter = counter.wrapping_add(n);
}

/// `(a * b) >> 32` without overflow or 128-bit arithmetic.
const fn mul_hi(a: u64, b: u32) -> u64 {
    let b = b as u64;
    (a >> 32) * b + (((a & 0xFFFF_FFFF) * b) >> 32)
}

/// Arrival marks for linger and item age, without a timestamp per item.
///
/// A mark `(index, at)` says item `index` was accepted at `at`. `marks[0]` is always the oldest
/// buffered item (the anchor). While batches queue up behind a busy flush slot, the first item of
/// each later batch (every `max_batch` items) gets a mark, so after a size cut the new front is
/// usually a marked item and its linger deadline and age are exact. When more than [`MARKS`]
/// batches wait, every other mark is dropped to make room: the new front is then anchored to the
/// latest mark before it, which is earlier than its arrival, so linger is never exceeded (such
/// items may go out early) and reported ages are upper bounds whose error stays within the span of
/// the dropped marks instead of growing with the backlog.
#[derive(Clone, Copy, Debug)]
struct Marks {
    /// A ring: mark `i` (0 = the anchor) is at `ring[(head + i) % MARKS]`, so dropping old marks
    /// moves nothing.
    ring: [(u64, Instant); MARKS],
    head: usize,
    count: usize,
}

/// Arrival marks kept: exact anchors for up to this many waiting batches.
const MARKS: usize = 4;

impl Marks {
    const fn new() -> Self {
        Self { ring: [(0, Instant::ZERO); MARKS], head: 0, count: 0 }
    }

    fn get(&self, i: usize) -> (u64, Instant) {
        self.ring[(self.head + i) % MARKS]
    }

    /// The buffer was empty: `index` is the new oldest item.
    fn reset(&mut self, index: u64, at: Instant) {
        self.head = 0;
        self.ring[0] = (index, at);
        self.count = 1;
    }

    fn anchor(&self) -> Instant {
        self.get(0).1
    }

    fn last_index(&self) -> u64 {
        self.get(self.count.saturating_sub(1)).0
    }

    fn record(&mut self, index: u64, at: Instant) {
        if self.count == MARKS {
            // Keep marks 0 and 2: the anchor stays, the spacing of older marks doubles.
            let (anchor, third) = (self.get(0), self.get(2));
            self.ring[0] = anchor;
            self.ring[1] = third;
            self.head = 0;
            self.count = 2;
        }
        self.ring[(self.head + self.count) % MARKS] = (index, at);
        self.count += 1;
    }

    /// The oldest buffered item is now `front`: anchor it to the latest mark at or before it.
    fn advance_to(&mut self, front: u64) {
        let mut latest = 0;
        while latest + 1 < self.count && self.get(latest + 1).0 <= front {
            latest += 1;
        }
        let at = self.get(latest).1;
        self.head = (self.head + latest) % MARKS;
        self.count -= latest;
        self.ring[self.head] = (front, at);
    }
}
