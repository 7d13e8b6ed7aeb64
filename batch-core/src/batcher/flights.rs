//! The flight table: batches between their cut and their final outcome, their attempts, the
//! retry back-off with jitter, and giving a batch up at a shutdown deadline.

use super::{BatchCore, Completion, Outcome, Retry, add};
use crate::metrics::Count;
use crate::storage::{Phase, Queue, Slots};
use crate::time::{Duration, Instant};

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// Reports how an attempt of batch `seq` ended, at `now`. Returns `None` if `seq` has no
    /// running attempt, or a [partial](Outcome::Partial) outcome names more items than the batch
    /// holds (driver bugs, reported instead of panicking).
    ///
    /// ```
    /// use batch_core::{Batch, Batcher, Completion, Config, Instant, Outcome};
    /// let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(5));
    /// for i in 0..5 {
    ///     core.push(Instant::ZERO, i).unwrap();
    /// }
    /// let mut batch = Batch::<u32, 8>::new();
    /// let f = core.poll_flush(Instant::ZERO, &mut batch).unwrap();
    /// // The sink took 2, refused 1 for good: the other 2 are retried.
    /// let c = core.handle_completion(Instant::ZERO, f.seq, Outcome::Partial { delivered: 2, rejected: 1 });
    /// assert!(matches!(c, Some(Completion::Retry { attempt: 2, .. })));
    /// let m = core.metrics();
    /// assert_eq!((m.delivered, m.rejected_by_handler, m.in_flight), (2, 1, 2));
    /// ```
    pub fn handle_completion(&mut self, now: Instant, seq: u64, outcome: Outcome) -> Option<Completion> {
        let index = self.slots.as_slice().iter().position(|s| s.seq == seq && s.phase == Phase::Running)?;
        let slot = self.slots.as_slice()[index];
        let (delivered, rejected) = match outcome {
            Outcome::Delivered => (slot.len, 0),
            Outcome::Failed => (0, 0),
            Outcome::Partial { delivered, rejected } => {
                if delivered.checked_add(rejected)? > slot.len {
                    return None;
                }
                (delivered, rejected)
            }
        };
        self.wake = true;
        add(&mut self.counters.delivered, Count::from(delivered));
        add(&mut self.counters.rejected_by_handler, Count::from(rejected));
        self.counters.in_flight -= Count::from(delivered + rejected);
        let rest = slot.len - delivered - rejected;
        if rest == 0 {
            self.finish_slot(index);
            add(&mut self.counters.batches_delivered, 1);
            return Some(Completion::Delivered { len: delivered as usize });
        }
        // Only the rest is retried, under the same seq.
        self.slots.as_mut_slice()[index].len = rest;
        add(&mut self.counters.failed_attempts, 1);
        if slot.attempt >= self.config.get_max_attempts() {
            self.finish_slot(index);
            add(&mut self.counters.dead_lettered, Count::from(rest));
            add(&mut self.counters.batches_dead_lettered, 1);
            self.counters.in_flight -= Count::from(rest);
            return Some(Completion::DeadLettered { attempts: slot.attempt, len: rest as usize });
        }
        // While paused the retry clock does not run: count from the pause, and `resume` moves
        // the deadline by the paused time.
        let from = match self.paused_at {
            Some(p) => p,
            None => now,
        };
        let at = from + self.retry_delay(slot.attempt);
        if self.too_old_at(&slot, at) {
            self.finish_slot(index);
            add(&mut self.counters.expired, Count::from(rest));
            self.counters.in_flight -= Count::from(rest);
            return Some(Completion::Expired { len: rest as usize });
        }
        self.slots.as_mut_slice()[index].phase = Phase::Backoff(at);
        Some(Completion::Retry { attempt: slot.attempt + 1, at })
    }

    /// Gives up batch `seq` wherever it is (running or waiting to retry), for a shutdown that hit
    /// its deadline: its items count as returned. The driver keeps them and hands them back.
    /// Returns the number of items, or `None` if `seq` is not in flight.
    pub fn abandon(&mut self, seq: u64) -> Option<usize> {
        let len = self.give_up(seq)?;
        add(&mut self.counters.returned, Count::from(len));
        self.wake = true;
        Some(len as usize)
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
        let len = self.give_up(seq)?;
        add(&mut self.counters.abandoned, Count::from(len));
        self.wake = true;
        Some(len as usize)
    }

    /// Removes batch `seq` from the flight table for [`abandon`](Self::abandon) and
    /// [`abandon_held`](Self::abandon_held), its items no longer in flight. A batch that was
    /// already final and only waited for its removal from the store comes back with no items
    /// (the store keeps it: the next boot delivers it again, under the same seq).
    fn give_up(&mut self, seq: u64) -> Option<u32> {
        let index = self.slots.as_slice().iter().position(|s| s.seq == seq)?;
        let slot = &self.slots.as_slice()[index];
        #[cfg(feature = "store")]
        let len = if slot.phase == Phase::Removing { 0 } else { slot.len };
        #[cfg(not(feature = "store"))]
        let len = slot.len;
        self.remove_slot(index);
        self.counters.in_flight -= Count::from(len);
        Some(len)
    }

    /// Counts a panic in user code that the driver caught ([`Metrics::panics`](crate::Metrics::panics)).
    pub fn note_panic(&mut self) {
        add(&mut self.counters.panics, 1);
    }

    /// The sequence numbers of the batches in flight, in no particular order.
    pub fn in_flight_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.as_slice().iter().map(|s| s.seq)
    }

    /// Starts the next attempt of batch `seq` if its retry is due at `now` (and the batcher is not
    /// paused): [`Retry::Attempt`] with the attempt's number; the driver runs the handler again
    /// on the items it kept and reports with [`handle_completion`](Self::handle_completion). With
    /// [`Config::max_age`](crate::Config) (feature `uplink`), a batch too old to send by now (its
    /// retry came late: a pause, a driver that was not scheduled) is final instead:
    /// [`Retry::Expired`], and the driver hands the kept items to its expiry path.
    ///
    /// ```
    /// use batch_core::{Batch, Batcher, Completion, Config, Duration, Instant, Outcome, Retry};
    /// let mut core: Batcher<u8, 4> = Batcher::new(Config::new().max_batch(1));
    /// let t = Instant::ZERO;
    /// core.push(t, 1).unwrap();
    /// let f = core.poll_flush(t, &mut Batch::<u8, 4>::new()).unwrap();
    /// let Some(Completion::Retry { attempt: 2, at }) = core.handle_completion(t, f.seq, Outcome::Failed) else {
    ///     panic!()
    /// };
    /// assert_eq!(core.poll_retry(t, f.seq), None); // not yet
    /// assert_eq!(core.poll_retry(at, f.seq), Some(Retry::Attempt(2)));
    /// ```
    #[must_use]
    pub fn poll_retry(&mut self, now: Instant, seq: u64) -> Option<Retry> {
        if self.paused_at.is_some() {
            return None;
        }
        if let Some(len) = self.expire_late_retry(now, seq) {
            return Some(Retry::Expired { len });
        }
        let slot = self.slots.as_mut_slice().iter_mut().find(|s| s.seq == seq)?;
        match slot.phase {
            Phase::Backoff(at) if now >= at => {
                slot.phase = Phase::Running;
                slot.attempt += 1;
                add(&mut self.counters.retries, 1);
                Some(Retry::Attempt(slot.attempt))
            }
            _ => None,
        }
    }

    /// When batch `seq`, waiting to retry, may start its next attempt (`None` if it is not
    /// waiting). While paused this is where the deadline would be if resumed now.
    pub fn retry_at(&self, seq: u64) -> Option<Instant> {
        self.slots.as_slice().iter().find(|s| s.seq == seq).and_then(|s| match s.phase {
            Phase::Backoff(at) => Some(at),
            #[cfg(feature = "store")]
            Phase::Removing => None,
            Phase::Running => None,
        })
    }

    /// Removes the in-flight record at `index` (the last record takes its place). Field by field,
    /// between two disjoint borrows: no overlapping move (`memmove`), and no whole 40-byte record
    /// copied at once (a `swap`, or the removed record returned by value), which is a `memcpy`
    /// call on riscv32, where `memcpy` itself costs 400 bytes of code.
    pub(super) fn remove_slot(&mut self, index: usize) {
        let slots = self.slots.as_mut_slice();
        let last = slots.len() - 1;
        if index < last {
            let (head, tail) = slots.split_at_mut(last);
            let (to, from) = (&mut head[index], &tail[0]);
            to.seq = from.seq;
            to.first = from.first;
            to.len = from.len;
            to.attempt = from.attempt;
            to.phase = from.phase;
            #[cfg(feature = "uplink")]
            {
                to.expires = from.expires;
            }
            #[cfg(feature = "store")]
            {
                to.stored = from.stored;
            }
        }
        let _ = self.slots.pop();
    }

    pub(super) fn slot_free(&self) -> bool {
        let used = self.slots.as_slice().len();
        used < self.config.get_max_in_flight() && used < self.slots.capacity()
    }

    pub(super) fn retry_delay(&mut self, failed_attempt: u32) -> Duration {
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

/// `(a * b) >> 32` without overflow or 128-bit arithmetic.
const fn mul_hi(a: u64, b: u32) -> u64 {
    let b = b as u64;
    (a >> 32) * b + (((a & 0xFFFF_FFFF) * b) >> 32)
}
