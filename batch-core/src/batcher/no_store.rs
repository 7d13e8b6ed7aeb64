//! Without the `store` feature: the store's hooks in the rest of the core, as constants that
//! compile away.

use super::BatchCore;
use crate::storage::{Queue, Slots};
use crate::time::Instant;

#[allow(clippy::unused_self, reason = "the same signatures as with the feature")]
impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    #[inline]
    pub(super) fn store_open(&self) -> bool {
        true
    }
    #[inline]
    pub(super) fn ram_cut_allowed(&self) -> bool {
        true
    }
    #[inline]
    pub(super) fn stored_items(&self) -> u64 {
        0
    }
    #[inline]
    pub(super) fn spilling(&self) -> usize {
        0
    }
    #[inline]
    pub(super) fn spill_may_make_room(&self) -> bool {
        false
    }
    #[inline]
    pub(super) fn cut_write_ahead(&mut self, _seq: u64) -> bool {
        false
    }
    #[inline]
    pub(super) fn finish_slot(&mut self, index: usize) {
        self.remove_slot(index);
    }
    #[inline]
    pub(super) fn store_timeout(&self) -> Option<Instant> {
        None
    }
    #[inline]
    pub(super) fn store_idle(&self) -> bool {
        true
    }
}
