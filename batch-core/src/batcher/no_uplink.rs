//! Without the `uplink` feature: expiry and pacing hooks as constants that compile away.

use super::BatchCore;
use crate::storage::{InFlight, Queue, Slots};
use crate::time::Instant;

#[allow(clippy::unused_self, reason = "the same signatures as with the feature")]
impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    #[inline]
    pub(super) fn pace_ready_at(&self) -> Option<Instant> {
        None
    }
    #[inline]
    pub(super) fn pace_allows(&self, _now: Instant) -> bool {
        true
    }
    #[inline]
    pub(super) fn pace_take(&mut self, _now: Instant) {}
    #[inline]
    pub(super) fn front_expired(&self, _now: Instant) -> bool {
        false
    }
    #[inline]
    pub(super) fn too_old_at(&self, _slot: &InFlight, _at: Instant) -> bool {
        false
    }
    #[inline]
    pub(super) fn expire_late_retry(&mut self, _now: Instant, _seq: u64) -> Option<usize> {
        None
    }
    #[inline]
    pub(super) fn expiry_of(&self, _born: Instant) -> Instant {
        Instant::MAX
    }
    #[cfg(feature = "store")]
    #[inline]
    #[allow(clippy::unnecessary_wraps, reason = "the same signature as with the feature")]
    pub(super) fn expiry_at_age(&self, _now: Instant, _age: crate::Duration) -> Option<Instant> {
        Some(Instant::MAX)
    }
}
