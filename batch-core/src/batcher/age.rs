//! Expiry ([`Config::max_age`](crate::Config::max_age)): items too old to be worth sending are
//! handed back instead. Checked at the two moments an item would go out: when its batch is cut
//! ([`poll_expired`](BatchCore::poll_expired), before [`poll_flush`](BatchCore::poll_flush)) and
//! before a retry (a failed batch whose oldest item would be too old at its next attempt ends
//! as [`Completion::Expired`](crate::Completion::Expired)).
//!
//! Ages come from the arrival marks (no timestamp per item): the front item is anchored to a
//! mark at or before its arrival, so an age is never underestimated; an item can expire early
//! by at most the time between its batch's first arrival and its own. A batch loaded from the
//! store has no arrival on record (the record format keeps none): it is not expired.
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

    /// Whether the batch of `slot` would be too old to send at `at`.
    pub(super) fn too_old_at(&self, slot: &crate::storage::InFlight, at: Instant) -> bool {
        self.config.get_max_age().is_some_and(|max| at - slot.born > max)
    }
}
