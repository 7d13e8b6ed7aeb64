//! The buffer: accepting items (one at a time, in runs, urgent or weighed), the fast path that
//! appends without touching anything else, eviction under [`Overflow::DropOldest`](crate::Overflow::DropOldest), and the
//! weights and arrival marks kept about what is buffered.

use super::{BatchCore, add};
use crate::error::PushError;
use crate::metrics::{Count, Trigger};
use crate::storage::{BatchBuf, Queue, Slots};
use crate::time::Instant;

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// Accepts an item at `now`. `Ok(None)`: buffered. `Ok(Some(old))`: buffered, and the oldest
    /// item was evicted to make room ([`Overflow::DropOldest`](crate::Overflow::DropOldest)) and is handed back. `Err`: refused,
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
    pub(super) fn refresh_fast(&mut self) {
        let len = self.queue.len();
        let fast = if self.closed || self.config.get_max_weight().is_some() || len == 0 || !self.store_open()
        {
            0
        } else {
            // With a store, the push that fills the buffer takes the slow path (it wakes the
            // driver to spill).
            let filling = usize::from(self.spill_may_make_room());
            let to_full = self.queue.capacity().saturating_sub(self.taken() + filling);
            let to_batch = if len < self.max_batch { self.max_batch - 1 - len } else { usize::MAX };
            let next_mark = self.marks.last_index() + self.max_batch as u64;
            let to_mark = usize::try_from(next_mark.saturating_sub(self.accepted)).unwrap_or(usize::MAX);
            to_full.min(to_batch).min(to_mark)
        };
        self.fast_until = self.accepted.saturating_add(fast as u64);
    }

    /// Every push that may change more than the buffer and the count.
    #[inline(never)]
    pub(super) fn push_slow(
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
        if !self.store_open() {
            // A store's content from before the boot is not known yet: it goes first.
            add(&mut self.counters.rejected, 1);
            return Err(PushError::Full(item));
        }
        if self.is_full() {
            if !self.may_evict() {
                add(&mut self.counters.rejected, 1);
                return Err(PushError::Full(item));
            }
            evicted = self.evict_front();
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
        // A full buffer may make a spill to the store due (never without the `store` feature).
        if len == max_batch || self.over_weight() || (self.spill_may_make_room() && self.is_full()) {
            self.wake = true;
        }
        Ok(evicted)
    }

    /// Pushes items from `items` in order, in tight runs wherever the fast path allows, until
    /// `items` is exhausted (`None`) or the buffer is full under [`Overflow::Reject`](crate::Overflow::Reject): then the
    /// item that must wait is returned and the rest stay in `items`. Refused items go to
    /// `refused`, evicted ones ([`Overflow::DropOldest`](crate::Overflow::DropOldest)) to `evicted`.
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

    /// Makes the item just accepted urgent, as [`push_urgent`](Self::push_urgent) does: for a
    /// driver that pushed it with [`push_with`](Self::push_with) (one copy of the push code for
    /// both kinds, and the clock read only when needed). Its batch, and everything accepted
    /// before it, is cut at the next [`poll_flush`](Self::poll_flush).
    ///
    /// ```
    /// use batch_core::{Batcher, Batch, Config, Instant, Trigger};
    /// let mut b: Batcher<u8, 8> = Batcher::new(Config::new().max_batch(8));
    /// b.push_with(|| Instant::ZERO, 1).unwrap();
    /// b.push_with(|| Instant::ZERO, 99).unwrap();
    /// b.mark_urgent(); // 99 is an alarm
    /// let f = b.poll_flush(Instant::ZERO, &mut Batch::<u8, 8>::new()).unwrap();
    /// assert_eq!((f.trigger, f.len), (Trigger::Urgent, 2));
    /// ```
    pub fn mark_urgent(&mut self) {
        self.flush_mark = self.accepted;
        self.mark_trigger = Trigger::Urgent;
        self.wake = true;
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

    /// Acceptance index of the oldest buffered item (or of the next item, when empty).
    pub(super) fn front_index(&self) -> u64 {
        self.accepted - self.queue.len() as u64
    }

    pub(super) fn weight_of(&self, item: &T) -> u64 {
        self.weigher.map_or(0, |weigh| u64::from(weigh(item)))
    }

    /// The weight of `front`, the oldest item: the one kept beside it if the queue keeps
    /// weights, else the weigher's answer.
    pub(super) fn weight_of_front(&self, front: &T) -> u64 {
        self.queue.front_weight().map_or_else(|| self.weight_of(front), u64::from)
    }

    pub(super) fn total_weight_of_queue(&mut self) -> u64 {
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
    pub(super) fn settle_weight(&mut self) {
        if self.queue.len() == 0 {
            self.buffered_weight = 0;
        }
    }

    pub(super) fn over_weight(&self) -> bool {
        self.config.get_max_weight().is_some_and(|max| self.buffered_weight > u64::from(max))
    }

    pub(super) fn evict_front(&mut self) -> Option<T> {
        let w = self.queue.front().map_or(0, |front| self.weight_of_front(front));
        let old = self.queue.pop_front()?;
        self.buffered_weight = self.buffered_weight.saturating_sub(w);
        self.settle_weight();
        add(&mut self.counters.evicted, 1);
        self.reanchor();
        Some(old)
    }

    /// After items left the front: anchor the new oldest item to the latest mark at or before it.
    pub(super) fn reanchor(&mut self) {
        if self.queue.len() > 0 {
            self.marks.advance_to(self.front_index());
        }
    }
}
