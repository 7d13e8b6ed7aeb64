//! Expiry ([`Config::max_age`](crate::Config::max_age)): items too old to be worth sending are
//! handed back instead. Checked at the three moments an item would go out: when its batch is
//! cut ([`poll_expired`](BatchCore::poll_expired), before [`poll_flush`](BatchCore::poll_flush)),
//! before a retry (a failed batch whose oldest item would be too old at its next attempt ends
//! as [`Completion::Expired`](crate::Completion::Expired)), and when it leaves the store (a
//! loaded batch already too old comes back as a [`Flush`](crate::Flush) with `expired` set).
//!
//! Ages come from the arrival marks (no timestamp per item): the front item is anchored to a
//! mark at or before its arrival, so an age is never underestimated; an item can expire early
//! by at most the time between its batch's first arrival and its own. A stored batch keeps that
//! anchor as its birth on the driver's store clock
//! ([`StoredBatch`](crate::store::StoredBatch)), in milliseconds: as exact as that clock
//! (batch-tokio: Unix time, so the time a service was down counts; batch-embassy: time since
//! boot, so the time before a reboot is not counted and a stored batch expires late, never
//! early).
//!
//! ```
//! use batch_core::{Batch, Batcher, Config, Duration, Instant};
//! let config = Config::new().max_batch(1).max_age(Duration::from_secs(60));
//! let mut core: Batcher<u32, 8> = Batcher::new(config);
//! core.pause(Instant::ZERO); // the uplink is down
//! core.push(Instant::ZERO, 1).unwrap();
//! core.push(Instant::from_secs(90), 2).unwrap();
//! let later = Instant::from_secs(100);
//! core.resume(later);
//! let mut stale = Batch::<u32, 8>::new();
//! assert_eq!(core.poll_expired(later, &mut stale), 1);
//! assert_eq!(&stale[..], &[1]); // 100 s old: handed back, not sent
//! let mut batch = Batch::<u32, 8>::new();
//! assert!(core.poll_flush(later, &mut batch).is_some());
//! assert_eq!(&batch[..], &[2]); // 10 s old: sent
//! assert_eq!(core.metrics().expired, 1);
//! ```

use super::{BatchCore, add};
use crate::metrics::Count;
use crate::storage::{BatchBuf, Queue, Slots};
use crate::time::Instant;

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// Moves the items at the front of the buffer that are older than `max_age` at `now` into
    /// `out` (as many as fit), oldest first: they are final, counted as expired, and the driver
    /// hands them to its expiry path. Call it before [`poll_flush`](Self::poll_flush), which
    /// cuts nothing while the front item is expired. Returns how many moved (always 0 without
    /// `max_age`).
    pub fn poll_expired<B: BatchBuf<T>>(&mut self, now: Instant, out: &mut B) -> usize {
        let mut moved = 0;
        while out.spare() > 0 && self.front_expired(now) {
            let w = self.queue.front().map_or(0, |front| self.weight_of_front(front));
            let Some(item) = self.queue.pop_front() else { break };
            if let Err(item) = out.push(item) {
                let restored = self.queue.push_front_weighed(item, w as u32);
                debug_assert!(restored.is_ok(), "the slot it came from is free");
                break;
            }
            self.buffered_weight = self.buffered_weight.saturating_sub(w);
            self.settle_weight();
            self.reanchor();
            moved += 1;
        }
        if moved > 0 {
            add(&mut self.counters.expired, moved as Count);
            self.fast_until = 0;
            self.wake = true;
        }
        moved
    }

    /// Whether the oldest buffered item is older than `max_age` at `now`.
    pub(super) fn front_expired(&self, now: Instant) -> bool {
        self.config.get_max_age().is_some_and(|max| self.queue.len() > 0 && now - self.marks.anchor() > max)
    }

    /// A retry due at `now` for batch `seq` that comes after the batch's expiry (a pause, a late
    /// driver): the batch is final, counted as expired. Returns its items' count.
    pub(super) fn expire_late_retry(&mut self, now: Instant, seq: u64) -> Option<usize> {
        let index = self.slots.as_slice().iter().position(|s| s.seq == seq)?;
        let slot = &self.slots.as_slice()[index];
        let due = matches!(slot.phase, crate::storage::Phase::Backoff(at) if now >= at);
        if !due || !self.too_old_at(slot, now) {
            return None;
        }
        let len = slot.len;
        self.finish_slot(index);
        add(&mut self.counters.expired, Count::from(len));
        self.counters.in_flight -= Count::from(len);
        self.wake = true;
        Some(len as usize)
    }

    /// Whether the batch of `slot` would be too old to send at `at`.
    #[allow(clippy::unused_self, reason = "the same signature as without the feature")]
    pub(super) fn too_old_at(&self, slot: &crate::storage::InFlight, at: Instant) -> bool {
        at > slot.expires
    }

    /// The last moment a batch whose oldest item arrived at `born` may be sent.
    pub(super) fn expiry_of(&self, born: Instant) -> Instant {
        self.config.get_max_age().map_or(Instant::MAX, |max| born + max)
    }

    /// The last moment a batch whose oldest item is `age` old at `now` may be sent, or `None` if
    /// it is too old already (a batch leaving the store).
    #[cfg(feature = "store")]
    pub(super) fn expiry_at_age(&self, now: Instant, age: crate::Duration) -> Option<Instant> {
        match self.config.get_max_age() {
            None => Some(Instant::MAX),
            Some(max) if age > max => None,
            Some(max) => Some(now + crate::Duration::from_micros(max.as_micros() - age.as_micros())),
        }
    }
}
