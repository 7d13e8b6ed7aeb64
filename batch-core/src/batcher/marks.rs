//! Arrival marks: linger deadlines and item ages without a timestamp per item.

use crate::time::Instant;

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
pub(super) struct Marks {
    /// A ring: mark `i` (0 = the anchor) is at `ring[(head + i) % MARKS]`, so dropping old marks
    /// moves nothing.
    ring: [(u64, Instant); MARKS],
    head: usize,
    count: usize,
}

/// Arrival marks kept: exact anchors for up to this many waiting batches.
const MARKS: usize = 4;

impl Marks {
    pub(super) const fn new() -> Self {
        Self { ring: [(0, Instant::ZERO); MARKS], head: 0, count: 0 }
    }

    pub(super) fn get(&self, i: usize) -> (u64, Instant) {
        self.ring[(self.head + i) % MARKS]
    }

    /// The buffer was empty: `index` is the new oldest item.
    pub(super) fn reset(&mut self, index: u64, at: Instant) {
        self.head = 0;
        self.ring[0] = (index, at);
        self.count = 1;
    }

    pub(super) fn anchor(&self) -> Instant {
        self.get(0).1
    }

    pub(super) fn last_index(&self) -> u64 {
        self.get(self.count.saturating_sub(1)).0
    }

    pub(super) fn record(&mut self, index: u64, at: Instant) {
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
    pub(super) fn advance_to(&mut self, front: u64) {
        let mut latest = 0;
        while latest + 1 < self.count && self.get(latest + 1).0 <= front {
            latest += 1;
        }
        let at = self.get(latest).1;
        self.head = (self.head + latest) % MARKS;
        self.count -= latest;
        self.ring[self.head] = (front, at);
    }

    /// No mark later than `at`: items older than the anchor were handed over.
    pub(super) fn lower_to(&mut self, at: Instant) {
        for i in 0..self.count {
            let slot = &mut self.ring[(self.head + i) % MARKS];
            if slot.1 > at {
                slot.1 = at;
            }
        }
    }
}
