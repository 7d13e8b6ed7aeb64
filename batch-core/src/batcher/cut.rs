//! Cutting batches: when the next batch is due (size, weight, linger, a manual or urgent flush,
//! close), the commands that change that (flush, close, pause, resume), and the cut itself.

use super::{BatchCore, Flush, FlushToken};
use crate::metrics::{Count, Trigger};
use crate::storage::{BatchBuf, InFlight, Phase, Queue, Slots};
use crate::time::Instant;

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// Asks for a manual flush: every item accepted so far is cut without waiting for linger.
    /// The token tells, through [`is_flushed`](Self::is_flushed), when they all reached a final
    /// outcome. A flush of an empty batcher is flushed at once.
    pub fn flush(&mut self) -> FlushToken {
        self.flush_mark = self.accepted;
        self.mark_trigger = Trigger::Manual;
        self.wake = true;
        FlushToken(self.accepted)
    }

    /// A token for every item accepted so far, without asking for a flush: for waiting on
    /// [`is_flushed`](Self::is_flushed) (or, with a store, `is_durable`) while linger and size
    /// still decide when the items go.
    ///
    /// ```
    /// use batch_core::{Batcher, Config, Instant};
    /// let mut b: Batcher<u8, 4> = Batcher::new(Config::new());
    /// b.push(Instant::ZERO, 1).unwrap();
    /// let token = b.token();
    /// assert_eq!(token.items_before(), 1);
    /// assert!(!b.is_flushed(token));
    /// ```
    pub fn token(&self) -> FlushToken {
        FlushToken(self.accepted)
    }

    /// Stops taking items (pushes return [`PushError::Closed`](crate::PushError::Closed)) and cuts everything buffered
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

    /// Cuts the next batch if one is due at `now` and a flight slot is free, moving its items
    /// (oldest first) into `out`. Call it until it returns `None` after every input. `out` must
    /// have room for `max_batch` items; with less room the batch is cut smaller.
    pub fn poll_flush<B: BatchBuf<T>>(&mut self, now: Instant, out: &mut B) -> Option<Flush> {
        if self.paused_at.is_some()
            || !self.slot_free()
            || !self.ram_cut_allowed()
            || !self.pace_allows(now)
            || self.front_expired(now)
        {
            return None;
        }
        let trigger = self.trigger(now)?;
        let first = self.front_index();
        let (len, _, trigger) = self.cut_front(out, trigger);
        if len == 0 {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let write_ahead = self.cut_write_ahead(seq);
        self.pace_take(now);
        let slot =
            InFlight::first_attempt(seq, first, len as u32, self.expiry_of(self.marks.anchor()), false);
        let added = self.slots.push(slot);
        debug_assert!(added.is_ok(), "slot_free() checked for room");
        let oldest_age = now - self.marks.anchor();
        self.counters.note_age(oldest_age);
        self.counters.flushes.record(trigger);
        self.counters.in_flight += len as Count;
        self.reanchor();
        Some(Flush { seq, len, trigger, oldest_age, first_item: first, write_ahead, expired: false })
    }

    /// Moves a batch from the front of the buffer into `out`: up to `max_batch` items (fewer if
    /// `out` has less room) and, with a weight limit, no more than `max_weight` (then a size
    /// trigger becomes a weight trigger). Returns the items moved, their weight and the trigger.
    pub(super) fn cut_front<B: BatchBuf<T>>(
        &mut self,
        out: &mut B,
        mut trigger: Trigger,
    ) -> (usize, u64, Trigger) {
        self.fast_until = 0;
        let room = self.max_batch.min(out.spare());
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
        self.buffered_weight = self.buffered_weight.saturating_sub(weight);
        self.settle_weight();
        (len, weight, trigger)
    }

    /// When the driver must call back (with `poll_flush` and `poll_retry`) if no input arrives
    /// first: the earliest linger deadline or retry deadline. `None` when nothing is pending on
    /// time (idle, paused, or every slot busy with a running attempt): no timer at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A failed store operation waits for its retry also while paused.
        let mut next = self.store_timeout();
        if self.paused_at.is_some() {
            return next;
        }
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
        if self.paused_at.is_some() || !self.slot_free() || self.queue.len() == 0 || !self.ram_cut_allowed() {
            return None;
        }
        let due = if self.trigger_without_linger().is_some() {
            self.marks.anchor()
        } else {
            self.marks.anchor() + self.config.get_linger()
        };
        // A paced drain starts the batch no earlier than the pace allows.
        Some(self.pace_ready_at().map_or(due, |ready| due.max_of(ready)))
    }

    /// Whether an input since the last call may have made work due (a batch ready, a deadline
    /// earlier, a slot freed, a flush, a close, a resume). Drivers use it to wake their runner
    /// only when needed. Clears the flag.
    #[must_use]
    pub fn poll_wake(&mut self) -> bool {
        core::mem::take(&mut self.wake)
    }

    /// Why a batch is due now regardless of linger, if it is.
    pub(super) fn trigger_without_linger(&self) -> Option<Trigger> {
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

    pub(super) fn trigger(&self, now: Instant) -> Option<Trigger> {
        self.trigger_without_linger().or_else(|| {
            (self.queue.len() > 0 && now >= self.marks.anchor() + self.config.get_linger())
                .then_some(Trigger::Linger)
        })
    }
}
