//! The cloneable handle producers use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use batch_core::{Metrics, PushError};
use parking_lot::MutexGuard;

use crate::builder::Builder;
use crate::shared::{Shared, State};
use crate::stage::{self, Run, Stage};

/// A cloneable, `Send + Sync` handle to a batcher whose worker runs on tokio.
///
/// Producers call [`add`](Self::add) (waits while full), [`try_add`](Self::try_add) (hands the
/// item back when full or stopped), [`add_many`](Self::add_many), [`add_urgent`](Self::add_urgent).
/// [`flush`](Self::flush) waits until everything accepted before it has a final outcome;
/// [`shutdown`](Self::shutdown) drains and stops. Dropping the last handle drains too (a paused
/// batcher is resumed first: nobody else could).
///
/// # When user code misbehaves
///
/// Every item accepted ends in exactly one place the metrics count: delivered, dead-lettered
/// (`on_error` gets it by value), evicted (`on_evict`), returned (a shutdown report's
/// remainder), or abandoned (a shutdown report's [`Abandoned`](crate::Abandoned) list). No user
/// code (handler, callbacks, weigher, an item's `Drop`) runs under the batcher's lock.
///
/// | what happens | effect on items | effect on calls |
/// |---|---|---|
/// | the handler errs, panics, or passes `attempt_timeout` | that attempt fails: retried, then dead-lettered | none; a panic is counted in [`Metrics::panics`] |
/// | `on_error` panics | the batch stays dead-lettered (the callback had it) | none; counted |
/// | `on_evict`, the weigher or an item's `Drop` panics | evicted item: counted evicted; unweighable item: taken as weighing `max_weight`; dropped item: already final | the `add` still succeeds; counted |
/// | a handler blocks its thread or never returns | its batch is abandoned at a shutdown deadline (it may have reached the sink) | `shutdown_timeout(d)` returns within `d` + [`SHUTDOWN_GRACE`](crate::SHUTDOWN_GRACE); `flush` and plain `shutdown` wait for it, as asked |
/// | a handler keeps a [`Batch::share`](crate::handler::Batch::share) handle (detached task, `spawn_blocking`) | at a deadline: abandoned, not returned; as a dead letter: [`DeadLetter::into_items`](crate::handler::DeadLetter::into_items) fails | none |
/// | the handler or `on_error` calls back into its own batcher | `add` on a full buffer: [`PushError::Full`] at once | `flush`/`shutdown` start their work and return at once (they cannot wait for the caller itself) |
/// | the worker's runtime shuts down, or it has no timers | buffered and in-flight items: a shutdown report's remainder | adds get their item back (`Closed`) |
///
/// How long calls take: `try_add`, `close`, `pause`, `resume`, `metrics` and the getters take
/// the lock for a few dozen nanoseconds and never wait for the handler; `add` waits only while
/// the buffer is full; `flush` waits for the handler's outcomes; `shutdown_timeout(d)` is bounded
/// as above, also when awaited outside any tokio runtime.
///
/// ```
/// use batch_tokio::{Batcher, handler};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let batcher = Batcher::builder()
///     .max_batch(100)
///     .linger(Duration::from_millis(50))
///     .spawn(handler::from_sync(|batch: &[u32]| {
///         println!("{} readings", batch.len());
///         Ok::<_, std::io::Error>(())
///     }))
///     .unwrap();
/// for i in 0..250 {
///     batcher.add(i).await.unwrap();
/// }
/// batcher.flush().await;
/// assert_eq!(batcher.metrics().delivered, 250);
/// batcher.shutdown().await;
/// # }
/// ```
pub struct Batcher<T> {
    pub(crate) shared: Arc<Shared<T>>,
    /// This handle's staging area, made at its second add (a handle cloned for one add never
    /// makes one).
    stage: OnceLock<Arc<Stage<T>>>,
    /// Whether this handle added once already.
    added: AtomicBool,
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("metrics", &self.metrics()).finish_non_exhaustive()
    }
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self::from_shared(Arc::clone(&self.shared))
    }
}

impl<T> Drop for Batcher<T> {
    fn drop(&mut self) {
        if let Some(stage) = self.stage.take() {
            // What this handle staged goes to the core before the handle goes.
            hand_over(&self.shared, &stage);
            let mut stages = self.shared.stages.lock();
            if let Some(i) = stages.iter().position(|s| Arc::ptr_eq(s, &stage)) {
                stages.swap_remove(i);
            }
            self.shared.areas.store(stages.len(), Ordering::Relaxed);
        }
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: nobody can add, flush or resume any more, so drain (a paused
            // batcher is resumed: nobody else could) and let the worker end.
            let now = self.shared.now();
            {
                let mut st = self.shared.lock();
                st.core.close();
                st.core.resume(now);
            }
            // Closed first, so that no area is granted places any more; then every area's run
            // goes to the core, to be drained.
            stage::collect(&self.shared);
            self.shared.work.notify_waiters();
            self.shared.space.notify_waiters();
        }
    }
}

/// A handle that does not keep its batcher alive (`std::sync::Weak`'s role): for a handler or a
/// callback that needs a way back to its own batcher. A strong [`Batcher`] captured by its own
/// handler would keep the batcher open forever, since dropping the last handle is what closes
/// it.
///
/// ```
/// use batch_tokio::{Batcher, handler};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let b = Batcher::builder().spawn(handler::from_sync(|_: &[u8]| Ok::<_, std::io::Error>(()))).unwrap();
/// let weak = b.downgrade();
/// assert!(weak.upgrade().is_some());
/// drop(b); // the last strong handle: the batcher drains and closes
/// assert!(weak.upgrade().is_none());
/// # }
/// ```
pub struct WeakBatcher<T> {
    shared: std::sync::Weak<Shared<T>>,
}

impl<T> Clone for WeakBatcher<T> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<T> std::fmt::Debug for WeakBatcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakBatcher").finish_non_exhaustive()
    }
}

impl<T> WeakBatcher<T> {
    /// A strong handle, if some other strong handle still exists (once the last one is dropped
    /// the batcher is closed for good, and this returns `None`).
    pub fn upgrade(&self) -> Option<Batcher<T>> {
        let shared = self.shared.upgrade()?;
        let mut n = shared.handles.load(Ordering::Acquire);
        loop {
            if n == 0 {
                return None;
            }
            match shared.handles.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Batcher::from_shared(shared)),
                Err(now) => n = now,
            }
        }
    }
}

/// Items [`Batcher::add_many`] could not take, each with the reason and the item.
///
/// ```
/// use batch_tokio::{Batcher, PushError, handler};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let b = Batcher::builder().spawn(handler::from_sync(|_: &[u8]| Ok::<_, std::io::Error>(()))).unwrap();
/// b.close();
/// let rejected = b.add_many([1, 2]).await.unwrap_err();
/// assert_eq!(rejected.items, vec![PushError::Closed(1), PushError::Closed(2)]);
/// # }
/// ```
#[derive(Debug)]
pub struct Rejected<T> {
    /// The refused items, in input order.
    pub items: Vec<PushError<T>>,
}

impl<T> std::fmt::Display for Rejected<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} items were refused", self.items.len())
    }
}

impl<T: std::fmt::Debug> std::error::Error for Rejected<T> {}

impl<T: Send + 'static> Batcher<T> {
    /// A builder with the default settings (see [`Builder`]).
    pub fn builder() -> Builder<T> {
        Builder::new()
    }
}

impl<T> Batcher<T> {
    pub(crate) fn from_shared(shared: Arc<Shared<T>>) -> Self {
        Self { shared, stage: OnceLock::new(), added: AtomicBool::new(false) }
    }

    /// A [`WeakBatcher`] for this batcher.
    pub fn downgrade(&self) -> WeakBatcher<T> {
        WeakBatcher { shared: Arc::downgrade(&self.shared) }
    }

    /// Adds an item, waiting while the buffer is full. Fails only when the batcher is stopped
    /// ([`PushError::Closed`]) or the item is heavier than `max_weight` ([`PushError::TooHeavy`]),
    /// handing the item back. Cancel-safe: dropping the future before it completes drops the item.
    ///
    /// Called from inside this batcher's own handler or `on_error` while the buffer is full, it
    /// returns [`PushError::Full`] at once instead of waiting (the room it would wait for can only
    /// come from the worker that is calling).
    #[inline]
    pub async fn add(&self, item: T) -> Result<(), PushError<T>> {
        match self.try_stage(item) {
            Ok(()) => Ok(()),
            Err(item) => self.add_waiting(item, false).await,
        }
    }

    /// Adds an item if there is room now; otherwise hands it back ([`PushError::Full`],
    /// [`PushError::Closed`] or [`PushError::TooHeavy`]).
    #[inline]
    pub fn try_add(&self, item: T) -> Result<(), PushError<T>> {
        match self.try_stage(item) {
            Ok(()) => Ok(()),
            Err(item) => {
                let weight = self.shared.weigh(&item);
                match self.push_now(item, false, weight, true) {
                    Pushed::Done(result) => result,
                    Pushed::Full(item, mut st, own) => {
                        drop(own);
                        // The core refuses it (full, or too heavy) and counts the refusal.
                        let now = self.shared.now();
                        let result = match weight {
                            Some(w) => st.core.push_weighed(now, item, w),
                            None => st.core.push_with(|| now, item),
                        };
                        self.finish_push(st, result)
                    }
                }
            }
        }
    }

    /// Adds an item that cuts its batch at once (an alarm among telemetry), waiting while full.
    pub async fn add_urgent(&self, item: T) -> Result<(), PushError<T>> {
        self.add_waiting(item, true).await
    }

    /// The fast path: the item joins this handle's staged run if the run has a place left.
    #[inline]
    fn try_stage(&self, item: T) -> Result<(), T> {
        match self.stage.get() {
            Some(stage) => stage.try_push(item, || self.shared.now()),
            None => Err(item),
        }
    }

    /// This handle's staging area, made at its second add if the batcher stages at all.
    fn stage_for_add(&self) -> Option<&Arc<Stage<T>>> {
        if let Some(stage) = self.stage.get() {
            return Some(stage);
        }
        if self.shared.places == 0 || !self.added.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(self.stage.get_or_init(|| {
            let stage = Arc::new(Stage::new(self.shared.places));
            let mut stages = self.shared.stages.lock();
            stages.push(Arc::clone(&stage));
            self.shared.areas.store(stages.len(), Ordering::Relaxed);
            stage
        }))
    }

    /// Hands this handle's staged run to the core (before any add that does not go through it).
    fn hand_over_own(&self) {
        if let Some(stage) = self.stage.get() {
            hand_over(&self.shared, stage);
        }
    }

    /// One attempt on the shared path, with this handle's run handed over first (so that its
    /// earlier items stay ahead) and, after a plain add, the next run started. When the buffer is
    /// full while areas hold places, it takes them back and looks again (every accepted item is
    /// then in the core, where a full buffer is a due batch); `exact` (`try_add`) does so always,
    /// a producer that may wait only when the core holds no full batch. If the buffer is still
    /// full, it returns the item with the locks held, for the caller to wait or refuse.
    fn push_now(&self, item: T, urgent: bool, weight: Option<u32>, exact: bool) -> Pushed<'_, T> {
        loop {
            let stage = if urgent { self.stage.get() } else { self.stage_for_add() };
            let mut own = stage.map(|s| (s, s.lock()));
            let mut st = self.shared.lock();
            let mut freed = false;
            if let Some((stage, run)) = &mut own {
                freed = stage.hand_over(run, &mut st);
            }
            if freed && st.waiting_producers > 0 {
                self.shared.space.notify_waiters();
            }
            // The run handed over may have made a batch due (a full buffer, on the way to waiting).
            if st.core.poll_wake() && st.lane_needs_waking() {
                self.shared.work.notify_waiters();
            }
            if !st.core.must_wait() {
                // The clock is read at most once, and only if the core or a new run needs it.
                let mut read = None;
                let mut now = || *read.get_or_insert_with(|| self.shared.now());
                let result = match (urgent, weight) {
                    (true, Some(w)) => st.core.push_urgent_weighed(now(), item, w),
                    (true, None) => st.core.push_urgent(now(), item),
                    (false, Some(w)) => st.core.push_weighed(now(), item, w),
                    (false, None) => st.core.push_with(&mut now, item),
                };
                if let (Ok(None), false, Some((stage, run))) = (&result, urgent, &mut own) {
                    stage.start_run(run, &mut st, self.shared.areas.load(Ordering::Relaxed), now);
                }
                drop(own);
                return Pushed::Done(self.finish_push(st, result));
            }
            if st.core.reclaim_before_waiting(exact) {
                // Other areas hold places: take them back, then look again. A producer that may
                // wait skips this while the core holds a full batch: its cut makes room, and
                // collecting every area at each full buffer costs more than it gains.
                drop(st);
                drop(own);
                stage::collect(&self.shared);
                continue;
            }
            // Full: a spill to the store may make room.
            self.shared.store_wake();
            return Pushed::Full(item, st, own.map(|(_, run)| run));
        }
    }

    async fn add_waiting(&self, item: T, urgent: bool) -> Result<(), PushError<T>> {
        // The weigher is user code: it runs here, once, outside the lock.
        let weight = self.shared.weigh(&item);
        let mut item = item;
        let mut waiting = None;
        loop {
            let room = match self.push_now(item, urgent, weight, false) {
                Pushed::Done(result) => return result,
                Pushed::Full(back, mut st, own) => {
                    drop(own);
                    if self.shared.called_from_worker() {
                        drop(st);
                        return Err(PushError::Full(back));
                    }
                    item = back;
                    if waiting.is_none() {
                        waiting = Some(Waiting::new(&self.shared, &mut st));
                    }
                    self.shared.space.notified()
                }
            };
            // A worker that ends closes the core and wakes us: the next round hands the item back
            // through the core, which counts it as rejected.
            room.await;
        }
    }

    /// Adds an item and resolves once it is durable: in the store (written ahead, or spilled)
    /// or already delivered (feature `disk-store`, with [`Builder::disk_store`]). The item is
    /// added as urgent, so its batch is cut at once with everything buffered before it: every
    /// durable add that arrived while the previous batch was being written shares one append
    /// and one `fsync` (group commit). Waits while the buffer is full, as [`add`](Self::add).
    /// Without a store it resolves once the item is delivered (or final).
    ///
    /// # Errors
    ///
    /// [`DurableError::Refused`] with the item if it was not accepted;
    /// [`DurableError::Stopped`] if a shutdown deadline stopped the batcher first.
    ///
    /// [`Builder::disk_store`]: crate::Builder::disk_store
    /// [`DurableError::Refused`]: crate::DurableError::Refused
    /// [`DurableError::Stopped`]: crate::DurableError::Stopped
    #[cfg(feature = "disk-store")]
    pub async fn add_durable(&self, item: T) -> Result<(), crate::DurableError<T>> {
        self.add_waiting(item, true).await.map_err(crate::DurableError::Refused)?;
        let token = {
            let mut st = self.shared.lock();
            st.flush_waiters += 1;
            let token = st.core.token();
            // If no flight slot can take it now, it spills to the store instead of waiting.
            st.core.request_durable(token);
            token
        };
        self.shared.store_wake();
        let _waiting = FlushWaiter(&self.shared);
        loop {
            let settled = self.shared.settled.notified();
            {
                let st = self.shared.lock();
                if st.core.is_durable(token) {
                    return Ok(());
                }
                if self.shared.aborted.load(Ordering::Acquire) || self.shared.finished.load(Ordering::Acquire)
                {
                    return Err(crate::DurableError::Stopped);
                }
            }
            settled.await;
        }
    }

    /// Adds many items with one lock per run of room, waiting while full. Items refused because
    /// the batcher stopped or they are too heavy come back in [`Rejected`], in order. Called from
    /// inside this batcher's own handler while full, it does not wait: the items that found no
    /// room come back as [`PushError::Full`].
    pub async fn add_many(&self, items: impl IntoIterator<Item = T>) -> Result<(), Rejected<T>> {
        // This handle's staged items go first.
        self.hand_over_own();
        if self.shared.weigher.is_some() {
            return self.add_many_weighed(items).await;
        }
        let mut items = items.into_iter();
        let mut held: Option<T> = None;
        let mut refused = Vec::new();
        let mut evicted = Vec::new();
        loop {
            let (wake, callback, waiting, reserved) = {
                let mut st = self.shared.lock();
                // Evictions take the oldest items in order and nothing else moves the front while
                // we hold the lock: the first item evicted here is the current oldest.
                let evicted_before = evicted.len();
                let front = {
                    let m = st.core.metrics();
                    m.accepted - m.buffered
                };
                let mut source = held.take().into_iter().chain(&mut items);
                held = st.core.push_many(
                    || self.shared.now(),
                    &mut source,
                    |e| refused.push(e),
                    |old| evicted.push(old),
                );
                let first_evicted = (evicted.len() > evicted_before).then_some(front);
                let wake = st.core.poll_wake() && st.lane_needs_waking();
                // An eviction is final once `on_evict` has the item: a flush waits for that.
                let callback = first_evicted.map(|first| st.callback_starts(&self.shared, first));
                let reserved = st.core.reserved() > 0;
                let waiting = held
                    .is_some()
                    .then(|| (Waiting::new(&self.shared, &mut st), self.shared.space.notified()));
                (wake, callback, waiting, reserved)
            };
            if wake {
                self.shared.work.notify_waiters();
            }
            for old in evicted.drain(..) {
                self.shared.evicted(old);
            }
            drop(callback);
            let Some((guard, room)) = waiting else {
                return if refused.is_empty() { Ok(()) } else { Err(Rejected { items: refused }) };
            };
            if reserved {
                // Full while areas hold places: take them back and look again instead of waiting.
                drop(guard);
                stage::collect(&self.shared);
                continue;
            }
            if self.shared.called_from_worker() {
                drop(guard);
                refused.extend(held.take().into_iter().chain(items).map(PushError::Full));
                return Err(Rejected { items: refused });
            }
            room.await;
            drop(guard);
        }
    }

    /// `add_many` with a weigher: each item is weighed outside the lock and added in turn.
    async fn add_many_weighed(&self, items: impl IntoIterator<Item = T>) -> Result<(), Rejected<T>> {
        let mut refused = Vec::new();
        for item in items {
            if let Err(e) = self.add_waiting(item, false).await {
                refused.push(e);
            }
        }
        if refused.is_empty() { Ok(()) } else { Err(Rejected { items: refused }) }
    }

    /// Cuts everything buffered now and waits until every item accepted before the call has
    /// reached a final outcome (delivered or dead-lettered). Resolves at once, without calling
    /// the handler, when nothing is pending, and when the worker has stopped.
    ///
    /// Called from inside this batcher's own handler or `on_error`, it starts the cut and
    /// returns at once: waiting would wait for the very batch that is calling.
    pub async fn flush(&self) {
        // Staged items were accepted before the call: they go to the core, under the flush.
        stage::collect(&self.shared);
        if self.shared.called_from_worker() {
            let mut st = self.shared.lock();
            let _ = st.core.flush();
            let wake = st.core.poll_wake();
            drop(st);
            if wake {
                self.shared.work.notify_waiters();
            }
            return;
        }
        let token = {
            let mut st = self.shared.lock();
            let token = st.core.flush();
            let wake = st.core.poll_wake();
            st.flush_waiters += 1;
            drop(st);
            if wake {
                self.shared.work.notify_waiters();
            }
            token
        };
        loop {
            let settled = self.shared.settled.notified();
            {
                let mut st = self.shared.lock();
                if st.is_flushed(token) || self.shared.finished.load(Ordering::Acquire) {
                    st.flush_waiters -= 1;
                    return;
                }
            }
            settled.await;
        }
    }

    /// Pauses: no batch starts and no retry clock runs; adds keep buffering up to capacity.
    pub fn pause(&self) {
        let now = self.shared.now();
        self.shared.lock().core.pause(now);
        self.shared.work.notify_waiters();
    }

    /// Resumes after [`pause`](Self::pause): everything buffered drains in order.
    pub fn resume(&self) {
        let now = self.shared.now();
        self.shared.lock().core.resume(now);
        self.shared.work.notify_waiters();
        self.shared.store_wake();
    }

    /// Items buffered (not yet cut into a batch), staged ones included.
    pub fn len(&self) -> usize {
        let stages = self.shared.stages.lock();
        let st = self.shared.lock();
        st.core.len() + stage::staged_total(&stages)
    }

    /// Whether no item is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches with the handler or waiting to retry.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().core.in_flight()
    }

    /// Whether the batcher stopped taking items.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().core.is_closed()
    }

    /// A snapshot of the counters. It copies them under the state lock (a few dozen
    /// nanoseconds), never waiting on the handler. Items staged in a handle's area count as
    /// accepted and buffered.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics()
    }

    #[inline]
    fn finish_push(
        &self,
        mut st: crate::shared::Guard<'_, State<T>>,
        result: Result<Option<T>, PushError<T>>,
    ) -> Result<(), PushError<T>> {
        let wake = st.core.poll_wake() && st.lane_needs_waking();
        // An eviction is final once `on_evict` has the item: a flush waits for that.
        let callback = if matches!(result, Ok(Some(_))) {
            let first = st.evicted_index();
            Some(st.callback_starts(&self.shared, first))
        } else {
            None
        };
        drop(st);
        if wake {
            self.shared.work.notify_waiters();
        }
        match result {
            Ok(None) => Ok(()),
            Ok(Some(old)) => {
                self.shared.evicted(old);
                drop(callback);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Counts a durable add's wait in `flush_waiters` (so outcomes wake it) until it ends, also if
/// its future is dropped.
#[cfg(feature = "disk-store")]
struct FlushWaiter<'a, T>(&'a Shared<T>);

#[cfg(feature = "disk-store")]
impl<T> Drop for FlushWaiter<'_, T> {
    fn drop(&mut self) {
        self.0.lock().flush_waiters -= 1;
    }
}

/// Counts a producer waiting for room while it waits (also when its future is dropped).
struct Waiting<'a, T> {
    shared: &'a Shared<T>,
}

impl<'a, T> Waiting<'a, T> {
    fn new(shared: &'a Shared<T>, st: &mut State<T>) -> Self {
        st.waiting_producers += 1;
        Self { shared }
    }
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        self.shared.lock().waiting_producers -= 1;
    }
}

/// What one attempt on the shared path came to.
enum Pushed<'a, T> {
    /// Accepted, refused or evicting: the result for the caller.
    Done(Result<(), PushError<T>>),
    /// The buffer is full and no area holds places: the item, with the state lock (and the
    /// handle's area) still held, for the caller to wait or refuse.
    Full(T, crate::shared::Guard<'a, State<T>>, Option<MutexGuard<'a, Run<T>>>),
}

/// Hands `stage`'s run to the core and wakes whoever that concerns.
fn hand_over<T>(shared: &Shared<T>, stage: &Stage<T>) {
    let mut run = stage.lock();
    let mut st = shared.lock();
    let freed = stage.hand_over(&mut run, &mut st);
    let wake = st.core.poll_wake() && st.lane_needs_waking();
    let room = freed && st.waiting_producers > 0;
    drop(st);
    drop(run);
    if wake {
        shared.work.notify_waiters();
    }
    if room {
        shared.space.notify_waiters();
    }
}
