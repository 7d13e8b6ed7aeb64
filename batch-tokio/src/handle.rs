//! The cloneable handle producers use.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use batch_core::{Metrics, PushError};

use crate::builder::Builder;
use crate::shared::{Shared, State};

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
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("metrics", &self.metrics()).finish_non_exhaustive()
    }
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for Batcher<T> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: nobody can add, flush or resume any more, so drain (a paused
            // batcher is resumed: nobody else could) and let the worker end.
            let now = self.shared.now();
            {
                let mut st = self.shared.lock();
                st.core.close();
                st.core.resume(now);
            }
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
                Ok(_) => return Some(Batcher { shared }),
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
    pub async fn add(&self, item: T) -> Result<(), PushError<T>> {
        self.add_waiting(item, false).await
    }

    /// Adds an item if there is room now; otherwise hands it back ([`PushError::Full`],
    /// [`PushError::Closed`] or [`PushError::TooHeavy`]).
    #[inline]
    pub fn try_add(&self, item: T) -> Result<(), PushError<T>> {
        let weight = self.shared.weigh(&item);
        let st = self.shared.lock();
        self.push_locked(st, item, weight)
    }

    /// Adds an item that cuts its batch at once (an alarm among telemetry), waiting while full.
    pub async fn add_urgent(&self, item: T) -> Result<(), PushError<T>> {
        self.add_waiting(item, true).await
    }

    async fn add_waiting(&self, item: T, urgent: bool) -> Result<(), PushError<T>> {
        // The weigher is user code: it runs here, once, outside the lock.
        let weight = self.shared.weigh(&item);
        let mut waiting = None;
        loop {
            let room = {
                let mut st = self.shared.lock();
                if !st.core.must_wait() {
                    let result = match (urgent, weight) {
                        (true, Some(w)) => st.core.push_urgent_weighed(self.shared.now(), item, w),
                        (true, None) => st.core.push_urgent(self.shared.now(), item),
                        (false, Some(w)) => st.core.push_weighed(self.shared.now(), item, w),
                        (false, None) => st.core.push_with(|| self.shared.now(), item),
                    };
                    return self.finish_push(st, result);
                }
                if self.shared.called_from_worker() {
                    drop(st);
                    return Err(PushError::Full(item));
                }
                if waiting.is_none() {
                    waiting = Some(Waiting::new(&self.shared, &mut st));
                }
                self.shared.space.notified()
            };
            // A worker that ends closes the core and wakes us: the next round hands the item back
            // through the core, which counts it as rejected.
            room.await;
        }
    }

    /// Adds many items with one lock per run of room, waiting while full. Items refused because
    /// the batcher stopped or they are too heavy come back in [`Rejected`], in order. Called from
    /// inside this batcher's own handler while full, it does not wait: the items that found no
    /// room come back as [`PushError::Full`].
    pub async fn add_many(&self, items: impl IntoIterator<Item = T>) -> Result<(), Rejected<T>> {
        if self.shared.weigher.is_some() {
            return self.add_many_weighed(items).await;
        }
        let mut items = items.into_iter();
        let mut held: Option<T> = None;
        let mut refused = Vec::new();
        let mut evicted = Vec::new();
        loop {
            let (wake, callback, waiting) = {
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
                let waiting = held
                    .is_some()
                    .then(|| (Waiting::new(&self.shared, &mut st), self.shared.space.notified()));
                (wake, callback, waiting)
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
    }

    /// Items buffered (not yet cut into a batch).
    pub fn len(&self) -> usize {
        self.shared.lock().core.len()
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

    /// A snapshot of the counters. It copies them under the lock producers use (a few dozen
    /// nanoseconds), never waiting on the handler.
    pub fn metrics(&self) -> Metrics {
        self.shared.lock().core.metrics()
    }

    #[inline]
    fn push_locked(
        &self,
        mut st: crate::shared::Guard<'_, State<T>>,
        item: T,
        weight: Option<u32>,
    ) -> Result<(), PushError<T>> {
        let result = match weight {
            Some(w) => st.core.push_weighed(self.shared.now(), item, w),
            None => st.core.push_with(|| self.shared.now(), item),
        };
        self.finish_push(st, result)
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
