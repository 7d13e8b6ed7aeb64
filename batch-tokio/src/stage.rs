//! Per-handle staging areas: the producer path without a shared lock per item.
//!
//! Each [`Batcher`](crate::Batcher) handle that adds more than once gets a staging area of its
//! own. A run starts on the shared path: the run's first item goes into the core under the state
//! lock, and the core grants places for up to [`RUN`]` - 1` more (`BatchCore::reserve_among`: at
//! most half of the room left, or all of it for a lone area, and never up to the next full
//! batch, so that a producer's batch-completing item comes through the core and its size cut is
//! exact). The next items of the run only take the handle's own lock, which no other producer
//! touches, and append to its buffer. When the places are used up, the next add
//! hands the run over to the core in one piece (`BatchCore::push_staged`) and starts the next
//! run, under one state lock: one shared lock per run instead of one per item.
//!
//! What still holds, and why:
//!
//! - Per-producer FIFO: a handle's items go through its area in order, and every other path of
//!   the handle (`add_urgent`, `add_many`, a run's first item, dropping the handle) hands the area
//!   over first.
//! - Backpressure is exact: granted places count against the capacity in the core. A `try_add`
//!   that finds the buffer full while other areas hold places takes them back ([`collect`])
//!   before it refuses; an `add` or `add_many` does so before it waits unless the core holds a
//!   full batch (whose cut makes room): every accepted item is then in the core, where a full
//!   buffer is a due batch (with a long linger, staged items would otherwise hold back the size
//!   trigger the waiting producer needs).
//! - What is given up: with several producers, a size cut waits until the runs that complete
//!   the batch are handed over, and items of different producers reach the handler in the order
//!   their runs were handed over.
//! - Linger: the state lists each live run with its start ([`State::runs`]); the lanes arm their
//!   timer for the core's `staged_deadline` of the oldest and, once it is due, collect every area
//!   into the core, where the arrival of the run's first staged item anchors linger. A lane about
//!   to cut a batch that is not full (linger, flush, close) collects first, so that staged items
//!   join the batch of the oldest item as they would without staging.
//! - Metrics add up at every read: a staged item counts as accepted and buffered (each area
//!   publishes its length; `metrics` reads it under the state lock, and a hand-over changes it
//!   only under that lock).
//! - Flush, close, shutdown and a worker that stops collect every area first: a staged item is
//!   an accepted one.
//!
//! Lock order: the registry of areas, then an area, then the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use batch_core::Instant;
use parking_lot::Mutex;

use crate::shared::{Shared, State};

/// Items per run: the first (through the core) and up to `RUN - 1` staged. Small enough that an
/// area of 64-byte items stays within a few pages, large enough that the shared lock is taken
/// once per many items.
pub(crate) const RUN: usize = 64;

/// One handle's staging area.
pub(crate) struct Stage<T> {
    run: Mutex<Run<T>>,
    /// Items staged now (written under the area's lock; read for metrics under the state lock).
    staged: AtomicUsize,
}

/// The run being staged.
pub(crate) struct Run<T> {
    items: Vec<T>,
    /// Places left: items that may still be staged in this run.
    room: usize,
    /// Places the core granted for this run, used or not.
    granted: usize,
    /// When its first staged item came: the others came at or after it.
    since: Instant,
}

impl<T> Stage<T> {
    /// An empty area with room for `places` items.
    pub(crate) fn new(places: usize) -> Self {
        Self {
            run: Mutex::new(Run {
                items: Vec::with_capacity(places),
                room: 0,
                granted: 0,
                since: Instant::ZERO,
            }),
            staged: AtomicUsize::new(0),
        }
    }

    /// The fast path: stages `item` if the current run has a place left, or hands it back. The
    /// clock is read for the first staged item of a run only.
    #[inline]
    pub(crate) fn try_push(&self, item: T, now: impl FnOnce() -> Instant) -> Result<(), T> {
        let mut run = self.run.lock();
        if run.room == 0 {
            return Err(item);
        }
        if run.items.is_empty() {
            run.since = now();
        }
        run.room -= 1;
        run.items.push(item);
        self.staged.store(run.items.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Locks the area (before the state lock).
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Run<T>> {
        self.run.lock()
    }

    /// Items staged now.
    pub(crate) fn staged(&self) -> usize {
        self.staged.load(Ordering::Relaxed)
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Hands the run over to the core (area and state locked) and gives back the places it did
    /// not use. Whether places went back unused (producers waiting for room may find some).
    pub(crate) fn hand_over(&self, run: &mut Run<T>, st: &mut State<T>) -> bool {
        if run.granted == 0 {
            return false;
        }
        let unused = run.room;
        let taken = st.core.push_staged(run.since, &mut run.items.drain(..), run.granted);
        debug_assert!(run.items.is_empty(), "a run took more places than it was granted ({taken} taken)");
        run.room = 0;
        run.granted = 0;
        self.staged.store(0, Ordering::Relaxed);
        let id = self.id();
        if let Some(i) = st.runs.iter().position(|&(r, _)| r == id) {
            st.runs.swap_remove(i);
        }
        unused > 0
    }

    /// Starts a run (area and state locked, the run's first item just accepted by the core at
    /// `now`): asks the core for places for the rest of it, as one of `areas` staging areas.
    pub(crate) fn start_run(
        &self,
        run: &mut Run<T>,
        st: &mut State<T>,
        areas: usize,
        now: impl FnOnce() -> Instant,
    ) {
        debug_assert_eq!(run.granted, 0, "the previous run was handed over");
        let places = run.items.capacity();
        let granted = st.core.reserve_among(places, areas);
        if granted > 0 {
            run.room = granted;
            run.granted = granted;
            // The lanes' deadline counts from the run's start, no later than any staged item.
            st.runs.push((self.id(), now()));
        }
    }
}

/// Hands every area's run over to the core (flush, close, a due linger deadline, a full buffer
/// whose places other areas hold), and wakes whoever that concerns.
pub(crate) fn collect<T>(shared: &Shared<T>) {
    let stages = shared.stages.lock();
    let (mut wake, mut room) = (false, false);
    for stage in stages.iter() {
        let mut run = stage.lock();
        if run.granted == 0 {
            continue;
        }
        let mut st = shared.lock();
        let freed = stage.hand_over(&mut run, &mut st);
        room |= freed && st.waiting_producers > 0;
        wake |= st.core.poll_wake() && st.lane_needs_waking();
    }
    drop(stages);
    if wake {
        shared.work.notify_waiters();
    }
    if room {
        shared.space.notify_waiters();
    }
}

/// The oldest live run's start, if any run is staged.
pub(crate) fn oldest_run<T>(st: &State<T>) -> Option<Instant> {
    st.runs.iter().map(|&(_, since)| since).min()
}

/// Items staged in every area (registry locked by the caller).
pub(crate) fn staged_total<T>(stages: &[Arc<Stage<T>>]) -> usize {
    stages.iter().map(|s| s.staged()).sum()
}

/// Places an area holds per run for batches of `max_batch`: 0 (no staging) where the core must
/// see every item as it comes (a weight limit, [`Overflow::DropOldest`](batch_core::Overflow)).
pub(crate) fn places_per_run(max_batch: usize, staging: bool) -> usize {
    if staging { max_batch.min(RUN).saturating_sub(1) } else { 0 }
}
