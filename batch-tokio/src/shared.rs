//! State shared by the handles and the worker.

use std::panic::AssertUnwindSafe;

use parking_lot::{Mutex, MutexGuard};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

/// The state lock's guard.
pub(crate) type Guard<'a, S> = MutexGuard<'a, S>;

use batch_core::storage::{FixedDeque, InFlight};
use batch_core::{BatchCore, Instant};
use tokio::sync::Notify;

use crate::handler::{BatchError, DeadLetter};
use crate::shutdown::Abandoned;
use crate::stage::Stage;

tokio::task_local! {
    /// Set while a batcher's worker is polled: the batcher's id ([`Shared::id`]). A handle used
    /// from inside its own worker (the handler, `on_error`) must not wait for the worker.
    static IN_WORKER: usize;
}

/// Runs `fut` marked as batcher `id`'s worker.
pub(crate) fn as_worker<F: std::future::Future>(
    id: usize,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    IN_WORKER.scope(id, fut)
}

/// The core on run-time sized storage, allocated once.
pub(crate) type Core<T> = BatchCore<T, FixedDeque<T>, Vec<InFlight>>;

/// The error callback: the last attempt's error and the dead-lettered batch.
pub(crate) type OnError<T> = dyn Fn(BatchError, DeadLetter<T>) + Send + Sync;
/// The eviction callback ([`batch_core::Overflow::DropOldest`]).
pub(crate) type OnEvict<T> = dyn Fn(T) + Send + Sync;
/// The callback for items a handler rejected for good ([`crate::handler::PartialFailure`]).
pub(crate) type OnReject<T> = dyn Fn(crate::handler::RejectedItems<T>) + Send + Sync;
/// The callback for items older than `max_age`.
pub(crate) type OnExpire<T> = dyn Fn(crate::handler::Expired<T>) + Send + Sync;

/// The user's callbacks for items that leave without being delivered.
pub(crate) struct Callbacks<T> {
    pub(crate) error: Option<Arc<OnError<T>>>,
    pub(crate) evict: Option<Box<OnEvict<T>>>,
    pub(crate) reject: Option<Box<OnReject<T>>>,
    pub(crate) expire: Option<Box<OnExpire<T>>>,
}
/// The weigher for `max_weight`, with the limit.
pub(crate) type Weigher<T> = (u32, Box<WeighFn<T>>);
/// A user's weigher.
pub(crate) type WeighFn<T> = dyn Fn(&T) -> u32 + Send + Sync;

pub(crate) struct Shared<T> {
    state: Mutex<State<T>>,
    /// The handles' staging areas (see [`crate::stage`]); locked before an area and the state.
    pub(crate) stages: Mutex<Vec<Arc<Stage<T>>>>,
    /// Places a staging area holds per run; 0: no staging (every add goes through the state).
    pub(crate) places: usize,
    /// How many staging areas there are (the registry's length, written under its lock): a
    /// lone area may be granted all the room left (`BatchCore::reserve_among`).
    pub(crate) areas: AtomicUsize,
    /// A batch may be due, a deadline moved, a slot freed, or the batcher closed or resumed.
    pub(crate) work: Notify,
    /// Room appeared in the buffer (producers waiting in `add`).
    pub(crate) space: Notify,
    /// A batch reached a final outcome (`flush` waiters).
    pub(crate) settled: Notify,
    /// The worker ended.
    pub(crate) done: Notify,
    /// A shutdown deadline expired: lanes give their batches back.
    pub(crate) abort: Notify,
    pub(crate) finished: AtomicBool,
    /// A shutdown deadline expired: lanes stop and give their batches back.
    pub(crate) aborted: AtomicBool,
    /// Live `Batcher` handles; the last one to go closes the batcher.
    pub(crate) handles: AtomicUsize,
    epoch: tokio::time::Instant,
    pub(crate) on_error: Option<Arc<OnError<T>>>,
    pub(crate) on_evict: Option<Box<OnEvict<T>>>,
    /// Runs on a lane, outside the lock.
    pub(crate) on_reject: Option<Box<OnReject<T>>>,
    /// Runs on a lane, outside the lock.
    pub(crate) on_expire: Option<Box<OnExpire<T>>>,
    /// Runs on the producer's task, outside the lock; the core keeps each weight.
    pub(crate) weigher: Option<Weigher<T>>,
    /// The store, for store and forward (feature `disk-store`).
    #[cfg(feature = "disk-store")]
    pub(crate) store: Option<Arc<crate::store_drive::StoreLink<T>>>,
}

pub(crate) struct State<T> {
    pub(crate) core: Core<T>,
    pub(crate) waiting_producers: usize,
    /// Live staged runs: (area, start). The lanes' linger timer covers the oldest.
    pub(crate) runs: Vec<(usize, Instant)>,
    /// Per lane: `Some(t)` while the lane waits for work with its timer armed for `t`
    /// (`Some(Instant::MAX)`: waiting with no timer); `None` while it works.
    pub(crate) idle: Vec<Option<Instant>>,
    pub(crate) flush_waiters: usize,
    /// Final outcomes the core has counted whose callback (`on_evict`, `on_error`) has not run
    /// yet: the acceptance index of the (first) item each covers. Callbacks run outside the lock,
    /// so without this a `flush` on another thread could return before the dead letter or
    /// evicted item it waits for reached its callback. One entry per callback in progress (at
    /// most one per producer and one per lane).
    pub(crate) callbacks: Vec<u64>,
    /// Batches given back by lanes cut short by a shutdown deadline, with their seq: lanes
    /// give back in lane order, and the remainder lists them in seq order.
    pub(crate) given_back: Vec<(u64, Vec<T>)>,
    pub(crate) remainder: Vec<T>,
    /// Batches a shutdown deadline could not take back by value.
    pub(crate) abandoned: Vec<Abandoned>,
    /// Batches the store task loaded from the store, each in flight in the core, waiting for
    /// an idle lane to run them.
    pub(crate) loaded: std::collections::VecDeque<(batch_core::Flush, Vec<T>)>,
}

impl<T> Shared<T> {
    pub(crate) fn new(
        core: Core<T>,
        lanes: usize,
        callbacks: Callbacks<T>,
        weigher: Option<Weigher<T>>,
        places: usize,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                core,
                waiting_producers: 0,
                runs: Vec::new(),
                idle: vec![None; lanes],
                flush_waiters: 0,
                callbacks: Vec::with_capacity(lanes.saturating_add(4)),
                given_back: Vec::new(),
                remainder: Vec::new(),
                abandoned: Vec::new(),
                loaded: std::collections::VecDeque::new(),
            }),
            stages: Mutex::new(Vec::new()),
            places,
            areas: AtomicUsize::new(0),
            work: Notify::new(),
            space: Notify::new(),
            settled: Notify::new(),
            done: Notify::new(),
            abort: Notify::new(),
            finished: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            handles: AtomicUsize::new(1),
            epoch: tokio::time::Instant::now(),
            on_error: callbacks.error,
            on_evict: callbacks.evict,
            on_reject: callbacks.reject,
            on_expire: callbacks.expire,
            weigher,
            #[cfg(feature = "disk-store")]
            store: None,
        }
    }

    /// Wakes the store task, if there is one: store work may be due.
    #[inline]
    #[cfg_attr(not(feature = "disk-store"), allow(clippy::unused_self))]
    pub(crate) fn store_wake(&self) {
        #[cfg(feature = "disk-store")]
        if let Some(link) = &self.store {
            link.wake.notify_waiters();
        }
    }

    /// Locks the state. Held for a push or a cut, never across an `.await`; handlers and callbacks
    /// run outside it. `parking_lot`'s lock spins briefly before parking, which under contention
    /// (several producers, a lane cutting a batch) measured 2-3x faster than `std::sync::Mutex`.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock()
    }

    /// The counters, with the items staged in the handles' areas counted as accepted and
    /// buffered (read under the state lock, which every hand-over holds: they add up).
    pub(crate) fn metrics(&self) -> batch_core::Metrics {
        let stages = self.stages.lock();
        let st = self.lock();
        let mut m = st.core.metrics();
        let staged = crate::stage::staged_total(&stages);
        m.accepted = m.accepted.wrapping_add(staged as _);
        m.buffered = m.buffered.wrapping_add(staged as _);
        m
    }

    /// Tokio's clock (virtual under `start_paused`) as core time.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        let micros = self.epoch.elapsed().as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// Core time as a tokio instant.
    pub(crate) fn to_tokio(&self, at: Instant) -> tokio::time::Instant {
        let offset = std::time::Duration::from_micros(at.as_micros());
        self.epoch.checked_add(offset).unwrap_or_else(far_future)
    }

    /// This batcher's identity (for [`as_worker`]).
    pub(crate) fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Whether the caller runs inside this batcher's own worker (its handler or `on_error`),
    /// where waiting for the worker would wait for itself.
    pub(crate) fn called_from_worker(&self) -> bool {
        IN_WORKER.try_with(|&id| id == self.id()).unwrap_or(false)
    }

    /// Hands an evicted item to the callback, or drops it (it is counted as evicted). A panic in
    /// the callback or in the item's `Drop` is contained and counted.
    pub(crate) fn evicted(&self, item: T) {
        let contained = if let Some(cb) = &self.on_evict {
            std::panic::catch_unwind(AssertUnwindSafe(|| cb(item)))
        } else {
            tracing::debug!("item evicted by DropOldest (no on_evict callback)");
            std::panic::catch_unwind(AssertUnwindSafe(|| drop(item)))
        };
        if contained.is_err() {
            self.panicked("on_evict");
        }
    }

    /// The item's weight, if a weigher is set: asked once, outside the lock. A weigher that
    /// panics is contained and counted, and the item is taken as weighing `max_weight` (it
    /// travels in a batch of its own): accepted, not lost.
    pub(crate) fn weigh(&self, item: &T) -> Option<u32> {
        let (max, weigh) = self.weigher.as_ref()?;
        let weighed = std::panic::catch_unwind(AssertUnwindSafe(|| weigh(item)));
        if weighed.is_err() {
            self.panicked("weigher");
        }
        Some(weighed.unwrap_or(*max))
    }

    /// Counts and logs a panic in user code that was contained.
    pub(crate) fn panicked(&self, what: &str) {
        tracing::error!(callback = what, "user code panicked; the panic was contained");
        self.lock().core.note_panic();
    }

    /// Drops items outside the state lock, containing a panic in their `Drop`.
    pub(crate) fn drop_items<I>(&self, items: I) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| drop(items))).is_err() {
            self.panicked("an item's Drop");
        }
    }
}

impl<T> State<T> {
    /// Gives up batch `seq`, which a handler still holds (its items cannot come back by value):
    /// it is counted and reported as abandoned.
    pub(crate) fn abandon_held(&mut self, seq: u64) {
        if let Some(len) = self.core.abandon_held(seq) {
            tracing::error!(
                seq,
                len,
                "a handler still holds this batch at the shutdown deadline; reported abandoned"
            );
            self.abandoned.push(Abandoned { seq, len });
        }
    }

    /// Whether every item accepted before `token` reached a final outcome, its callback included.
    pub(crate) fn is_flushed(&self, token: batch_core::FlushToken) -> bool {
        let before = token.items_before();
        self.core.is_flushed(token) && !self.callbacks.iter().any(|&first| first < before)
    }

    /// Notes (lock held) a callback about to run for items from acceptance index `first` on;
    /// dropping the guard after the callback (also if it panicked) clears the note.
    pub(crate) fn callback_starts<'a>(&mut self, shared: &'a Shared<T>, first: u64) -> CallbackGuard<'a, T> {
        self.callbacks.push(first);
        CallbackGuard { shared, first }
    }

    /// The acceptance index of the item the last push evicted: it was the oldest buffered item,
    /// and a push that evicts keeps the buffer's length while counting one more accepted item.
    pub(crate) fn evicted_index(&self) -> u64 {
        let m = self.core.metrics();
        m.accepted - 1 - m.buffered
    }

    /// After an input the core flagged (`poll_wake`): whether an idle lane must be woken, because
    /// a batch is due before the earliest timer an idle lane has armed. Busy lanes look at the
    /// core themselves when they finish, so pushes while every lane works wake nobody.
    ///
    /// When it answers yes, the caller wakes every lane waiting for work (`work.notify_waiters`,
    /// after the lock): the idle lanes are marked working here, so that the next inputs before
    /// they run do not wake them again. Each made its `work` future before it went idle under
    /// this lock, so the wake reaches it however late it comes, and it looks at the core again.
    pub(crate) fn lane_needs_waking(&mut self) -> bool {
        let Some(&armed) = self.idle.iter().flatten().min() else { return false };
        let wake = self.core.next_cut().is_some_and(|due| due < armed);
        if wake {
            self.idle.fill(None);
        }
        wake
    }
}

/// A final-outcome callback in progress (see [`State::callbacks`]).
pub(crate) struct CallbackGuard<'a, T> {
    shared: &'a Shared<T>,
    first: u64,
}

impl<T> Drop for CallbackGuard<'_, T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(i) = st.callbacks.iter().position(|&f| f == self.first) {
            st.callbacks.swap_remove(i);
        }
        let waiters = st.flush_waiters > 0;
        drop(st);
        if waiters {
            self.shared.settled.notify_waiters();
        }
    }
}

/// About thirty years from now: what tokio itself uses as "never".
pub(crate) fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365 * 30)
}
