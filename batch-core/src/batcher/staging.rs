//! Staging: items a driver keeps outside the core for a while and hands over in runs.
//!
//! A multi-threaded driver can give each producer a staging area of its own, so that producers
//! do not share a lock per item: the producer appends to its area and hands the whole run to
//! the core now and then. The policy stays here. The places a staging area may fill are granted
//! by [`reserve`](BatchCore::reserve) and count against the capacity until the run is handed
//! over ([`push_staged`](BatchCore::push_staged)) or the places are given back
//! ([`unreserve`](BatchCore::unreserve)), so backpressure stays exact; a run's arrival anchors
//! linger before it is handed over ([`staged_deadline`](BatchCore::staged_deadline)) and after
//! (the run's arrival can only move the anchor earlier); and a closed core does not finish while
//! places are still granted.
//!
//! ```
//! use batch_core::{Batch, Batcher, Config, Duration, Instant, Trigger};
//! let mut core: Batcher<u32, 8> =
//!     Batcher::new(Config::new().max_batch(4).linger(Duration::from_millis(10)));
//! let t = Instant::from_millis(1);
//! let granted = core.reserve(6); // at most half the room left, short of a full batch
//! assert_eq!(granted, 3);
//! assert_eq!(core.staged_deadline(t), Some(t + Duration::from_millis(10)));
//! let mut run = vec![1, 2, 3]; // staged by a producer since `t`
//! core.push_staged(t, &mut run.drain(..), granted);
//! assert_eq!((core.len(), core.reserved()), (3, 0));
//! let mut batch = Batch::<u32, 8>::new();
//! let later = t + Duration::from_millis(10);
//! let flush = core.poll_flush(later, &mut batch).unwrap();
//! assert_eq!((flush.trigger, &batch[..]), (Trigger::Linger, &[1, 2, 3][..]));
//! ```

use super::BatchCore;
use crate::config::Overflow;
use crate::storage::{Queue, Slots};
use crate::time::Instant;

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// Grants places for up to `n` items that a driver will stage outside the core: at most half
    /// of the room left, so that other producers still find some, and never up to the next full
    /// batch (counting places granted before), so that the item completing a batch comes
    /// through the core and, for a producer on its own, the size trigger fires at that very
    /// item. None while closed, and none under [`Overflow::DropOldest`] or a weight limit (an
    /// eviction or a weight cut must see every item). Granted places count as taken until handed
    /// back with [`push_staged`](Self::push_staged) or [`unreserve`](Self::unreserve).
    pub fn reserve(&mut self, n: usize) -> usize {
        self.reserve_among(n, 2)
    }

    /// Like [`reserve`](Self::reserve), for a driver that knows how many staging areas share
    /// the buffer. With two or more it grants what `reserve` does (at most half of the room
    /// left). With one, the area may take all the room left short of the next full batch:
    /// nobody else stages, and a producer that comes later and finds the buffer full takes the
    /// places back before it waits or is refused
    /// ([`reclaim_before_waiting`](Self::reclaim_before_waiting)), so backpressure stays exact.
    /// The half rule would otherwise cut a lone producer's runs short as the buffer fills, each
    /// cut costing a round on the shared path.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, Instant};
    /// let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(8));
    /// core.push(Instant::ZERO, 0).unwrap();
    /// assert_eq!(core.reserve_among(63, 2), 3); // half of the 7 left
    /// core.unreserve(3);
    /// assert_eq!(core.reserve_among(63, 1), 6); // all but the batch-completing place
    /// ```
    pub fn reserve_among(&mut self, n: usize, areas: usize) -> usize {
        if self.closed
            || !self.store_open()
            || self.config.get_overflow() != Overflow::Reject
            || self.config.get_max_weight().is_some()
        {
            return 0;
        }
        let taken = self.taken();
        let free = self.queue.capacity().saturating_sub(taken);
        let to_batch = self.max_batch - 1 - taken % self.max_batch;
        let share = if areas <= 1 { free } else { free / 2 };
        let granted = n.min(share).min(to_batch);
        if granted > 0 {
            self.reserved += granted;
            self.refresh_fast();
        }
        granted
    }

    /// Gives back `n` granted places that were not used.
    pub fn unreserve(&mut self, n: usize) {
        self.reserved = self.reserved.saturating_sub(n);
        self.refresh_fast();
    }

    /// Whether a producer that found the buffer full should take back the places granted to
    /// staging areas (hand their runs over) and look again, rather than wait or be refused:
    /// when places are granted, and either `exact` (a `try_add`, which must not refuse an item
    /// while granted places hide room) or the buffer holds no full batch (no cut is about to
    /// make room, so waiting could wait for staged items that only a hand-over brings in).
    ///
    /// ```
    /// use batch_core::{Batcher, Config, Instant};
    /// let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(4));
    /// assert!(!core.reclaim_before_waiting(true)); // nothing granted
    /// assert_eq!(core.reserve(3), 3);
    /// assert!(core.reclaim_before_waiting(false)); // no full batch buffered
    /// for i in 0..4 {
    ///     core.push(Instant::ZERO, i).unwrap();
    /// }
    /// assert!(!core.reclaim_before_waiting(false)); // its cut makes room: wait
    /// assert!(core.reclaim_before_waiting(true)); // try_add: exact
    /// ```
    pub fn reclaim_before_waiting(&self, exact: bool) -> bool {
        self.reserved > 0 && (exact || self.queue.len() < self.max_batch)
    }

    /// Places granted to staging areas and not handed back yet.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Accepts a staged run, in order: `items`, which arrived at `arrived` or later, on places
    /// that [`reserve`](Self::reserve) granted; `granted` places are given back in all (the
    /// run's and any it did not use). The run is accepted also after [`close`](Self::close):
    /// its items were accepted into the staging area before. Returns how many items were taken;
    /// one that finds no place (more items than were granted, a driver bug) stays in `items`.
    pub fn push_staged(
        &mut self,
        arrived: Instant,
        items: &mut impl Iterator<Item = T>,
        granted: usize,
    ) -> usize {
        self.reserved = self.reserved.saturating_sub(granted);
        let was_empty = self.queue.len() == 0;
        let first = self.accepted;
        let taken = self.queue.extend_back(items);
        self.accepted += taken as u64;
        if taken > 0 {
            if was_empty {
                self.marks.reset(first, arrived);
                self.wake = true;
            } else {
                // The run may be older than the items handed over before it: linger is anchored
                // to the oldest, so no mark may be later than the run's arrival.
                self.marks.lower_to(arrived);
                if first - self.marks.last_index() >= self.max_batch as u64 {
                    self.marks.record(first, arrived);
                }
            }
            if self.queue.len() >= self.max_batch {
                self.wake = true;
            }
        }
        self.refresh_fast();
        taken
    }

    /// When a batch is due for items staged since `since` (not handed over yet): `since` plus
    /// linger. `None` while paused or while every flight slot is busy (as
    /// [`next_cut`](Self::next_cut)): the driver then hands staged runs over once a slot frees.
    #[must_use]
    pub fn staged_deadline(&self, since: Instant) -> Option<Instant> {
        if self.paused_at.is_some() || !self.slot_free() {
            return None;
        }
        Some(since + self.config.get_linger())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Batch, Batcher, Config, Duration, Instant, Overflow, PushError, Trigger};

    const T0: Instant = Instant::ZERO;

    #[test]
    fn granted_places_count_against_the_capacity() {
        let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(8));
        core.push(T0, 0).unwrap();
        assert_eq!(core.reserve(63), 3); // half of the 7 left
        core.push(T0, 1).unwrap();
        assert_eq!(core.reserve(63), 1); // half of the 3 left
        core.push(T0, 2).unwrap();
        core.push(T0, 3).unwrap();
        assert!(core.is_full() && core.must_wait());
        assert_eq!(core.push(T0, 4), Err(PushError::Full(4)));
        core.unreserve(1);
        assert!(!core.is_full());
        #[cfg(feature = "metrics")]
        {
            let m = core.metrics();
            assert_eq!((m.accepted, m.buffered, m.rejected), (4, 4, 1));
        }
    }

    #[test]
    fn a_lone_area_may_take_the_room_up_to_the_next_full_batch() {
        let mut core: Batcher<u32, 64> = Batcher::new(Config::new().max_batch(16));
        for i in 0..48 {
            core.push(T0, i).unwrap();
        }
        assert_eq!(core.reserve_among(63, 1), 15); // the 16 left, short of the batch's last
        assert_eq!(core.reserve_among(63, 1), 0);
        core.unreserve(15);
        assert_eq!(core.reserve_among(63, 2), 8); // half of the 16 left
        core.unreserve(8);
        assert_eq!(core.reserve_among(63, 0), 15); // no area known: as one
        // The places count against the capacity: the batch-completing item still fits, the
        // next is refused until the places come back.
        core.push(T0, 48).unwrap();
        assert_eq!(core.push(T0, 49), Err(PushError::Full(49)));
        #[cfg(feature = "metrics")]
        {
            let m = core.metrics();
            assert_eq!((m.accepted, m.rejected), (49, 1));
        }
    }

    #[test]
    fn no_places_where_every_item_must_be_seen() {
        let mut evicting: Batcher<u32, 8> = Batcher::new(Config::new().overflow(Overflow::DropOldest));
        assert_eq!(evicting.reserve(4), 0);
        let mut closed: Batcher<u32, 8> = Batcher::new(Config::new());
        closed.close();
        assert_eq!(closed.reserve(4), 0);
    }

    #[test]
    fn never_up_to_the_next_full_batch() {
        let mut core: Batcher<u32, 64> = Batcher::new(Config::new().max_batch(4));
        core.push(T0, 0).unwrap();
        assert_eq!(core.reserve(63), 2); // items 1 and 2; item 3 completes the batch in the core
        assert_eq!(core.reserve(63), 0);
    }

    #[test]
    fn a_closed_core_with_places_granted_is_not_finished() {
        let mut core: Batcher<u32, 8> = Batcher::new(Config::new());
        let granted = core.reserve(2);
        core.close();
        assert!(!core.is_finished());
        let mut run = [7u32].into_iter();
        assert_eq!(core.push_staged(T0, &mut run, granted), 1); // accepted before the close
        assert_eq!(core.reserved(), 0);
        let mut batch = Batch::<u32, 8>::new();
        let flush = core.poll_flush(T0, &mut batch).unwrap();
        assert_eq!((flush.trigger, &batch[..]), (Trigger::Close, &[7][..]));
        let _ = core.handle_completion(T0, flush.seq, crate::Outcome::Delivered);
        assert!(core.is_finished());
    }

    #[test]
    fn an_older_run_moves_the_anchor_earlier() {
        let linger = Duration::from_millis(100);
        let mut core: Batcher<u32, 16> = Batcher::new(Config::new().max_batch(8).linger(linger));
        let granted = core.reserve(4);
        core.push(Instant::from_millis(50), 1).unwrap(); // another producer's item, later
        let mut run = [0u32].into_iter();
        core.push_staged(Instant::from_millis(10), &mut run, granted); // staged at 10 ms
        assert_eq!(core.next_cut(), Some(Instant::from_millis(110)));
        let mut batch = Batch::<u32, 16>::new();
        assert!(core.poll_flush(Instant::from_millis(109), &mut batch).is_none());
        let flush = core.poll_flush(Instant::from_millis(110), &mut batch).unwrap();
        assert_eq!((flush.trigger, flush.oldest_age), (Trigger::Linger, linger));
    }

    #[test]
    fn the_staged_deadline_waits_for_a_free_slot_and_a_resume() {
        let linger = Duration::from_millis(5);
        let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(1).linger(linger));
        assert_eq!(core.staged_deadline(T0), Some(T0 + linger));
        core.pause(T0);
        assert_eq!(core.staged_deadline(T0), None);
        core.resume(T0);
        core.push(T0, 1).unwrap();
        let flush = core.poll_flush(T0, &mut Batch::<u32, 8>::new()).unwrap();
        assert_eq!(core.staged_deadline(T0), None); // the only slot is busy
        let _ = core.handle_completion(T0, flush.seq, crate::Outcome::Delivered);
        assert_eq!(core.staged_deadline(T0), Some(T0 + linger));
    }
}
