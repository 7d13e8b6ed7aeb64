//! The batcher that lives in a `static`.

use core::cell::RefCell;
use core::future::poll_fn;
use core::task::{Context, Poll};

use batch_core::{Config, ConfigError, Metrics, PushError};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::waitqueue::MultiWakerRegistration;

use crate::handler::Handler;
use crate::runner::Runner;

/// Producers or flush callers that can wait at once before all are woken to re-register
/// (more are still served: a full registry wakes everyone, nobody is lost).
const WAITERS: usize = 4;

pub(crate) struct State<T, const N: usize, const F: usize> {
    pub(crate) core: batch_core::Batcher<T, N, F>,
    /// Runners waiting for a batch, a retry deadline or a resume.
    pub(crate) runners: MultiWakerRegistration<F>,
    /// Producers waiting for room.
    pub(crate) producers: MultiWakerRegistration<WAITERS>,
    /// `flush` and `shutdown` callers waiting for outcomes.
    pub(crate) settled: MultiWakerRegistration<WAITERS>,
}

impl<T, const N: usize, const F: usize> State<T, N, F> {
    /// Wakes the runners if the core asks for it.
    pub(crate) fn wake_runners(&mut self) {
        if self.core.poll_wake() {
            self.runners.wake();
        }
    }
}

/// A batcher for `N` items of type `T` with up to `F` batches in flight (default 1), guarded by
/// the raw mutex `M`. `const`-constructible: put it in a `static`, call [`add`](Self::add) from
/// any task, and run one [`Runner`] per flight slot.
///
/// Memory: the core (the item buffer, `N × size_of::<T>()`, plus its counters and settings) and
/// three small waker lists, all inside the `static`; each runner holds one batch buffer.
///
/// ```
/// use batch_embassy::{Batcher, Config, PushError};
/// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
///
/// let b: Batcher<NoopRawMutex, u8, 2> = Batcher::new(Config::new());
/// assert_eq!(b.try_add(1), Ok(None));
/// assert_eq!(b.try_add(2), Ok(None));
/// assert_eq!(b.try_add(3), Err(PushError::Full(3))); // the item comes back
/// b.close();
/// assert_eq!(b.try_add(4), Err(PushError::Closed(4)));
/// ```
pub struct Batcher<M: RawMutex, T, const N: usize, const F: usize = 1> {
    state: Mutex<M, RefCell<State<T, N, F>>>,
}

impl<M: RawMutex, T, const N: usize, const F: usize> core::fmt::Debug for Batcher<M, T, N, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batcher").field("metrics", &self.metrics()).finish_non_exhaustive()
    }
}

impl<M: RawMutex, T, const N: usize, const F: usize> Batcher<M, T, N, F> {
    /// A batcher with `config`. In a `static` an invalid configuration fails the build with a
    /// message naming the field.
    ///
    /// # Panics
    ///
    /// At run time with an invalid configuration: use [`try_new`](Self::try_new) for
    /// configurations that are not constants.
    #[track_caller]
    pub const fn new(config: Config) -> Self {
        Self::from_core(batch_core::Batcher::new(config))
    }

    /// Like [`new`](Self::new), with a weigher for `config`'s `max_weight` (e.g. encoded bytes,
    /// for an uplink's maximum payload).
    #[track_caller]
    pub const fn new_weighted(config: Config, weigher: fn(&T) -> u32) -> Self {
        Self::from_core(batch_core::Batcher::new_weighted(config, weigher))
    }

    /// A batcher with `config`, or the [`ConfigError`] naming the field at fault.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config, ConfigError};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let err = Batcher::<NoopRawMutex, u8, 4>::try_new(Config::new().max_attempts(0)).unwrap_err();
    /// assert_eq!(err, ConfigError::ZeroMaxAttempts);
    /// ```
    pub fn try_new(config: Config) -> Result<Self, ConfigError> {
        batch_core::Batcher::try_new(config).map(Self::from_core)
    }

    const fn from_core(core: batch_core::Batcher<T, N, F>) -> Self {
        Self {
            state: Mutex::new(RefCell::new(State {
                core,
                runners: MultiWakerRegistration::new(),
                producers: MultiWakerRegistration::new(),
                settled: MultiWakerRegistration::new(),
            })),
        }
    }

    /// Runs `f` on the state inside the lock (never across an `.await`).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State<T, N, F>) -> R) -> R {
        self.state.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// Adds an item, waiting while the buffer is full. `Ok(Some(old))`: with
    /// [`Overflow::DropOldest`](crate::Overflow::DropOldest), the evicted item. `Err` hands the
    /// item back when the batcher is closed or the item is heavier than `max_weight`.
    pub async fn add(&self, item: T) -> Result<Option<T>, PushError<T>> {
        self.add_inner(item, false).await
    }

    /// Adds an item that cuts its batch at once (an alarm among telemetry), waiting while full.
    pub async fn add_urgent(&self, item: T) -> Result<Option<T>, PushError<T>> {
        self.add_inner(item, true).await
    }

    async fn add_inner(&self, item: T, urgent: bool) -> Result<Option<T>, PushError<T>> {
        let mut item = Some(item);
        poll_fn(|cx: &mut Context<'_>| {
            self.with(|st| {
                if st.core.must_wait() {
                    st.producers.register(cx.waker());
                    return Poll::Pending;
                }
                let Some(item) = item.take() else { return Poll::Pending };
                let now = crate::now();
                let result = if urgent { st.core.push_urgent(now, item) } else { st.core.push(now, item) };
                st.wake_runners();
                Poll::Ready(result)
            })
        })
        .await
    }

    /// Adds an item if there is room now, or hands it back ([`PushError`]).
    pub fn try_add(&self, item: T) -> Result<Option<T>, PushError<T>> {
        self.with(|st| {
            let result = st.core.push_with(crate::now, item);
            st.wake_runners();
            result
        })
    }

    /// Cuts everything buffered now and waits until every item accepted before the call reached
    /// a final outcome (delivered or dead-lettered). Resolves at once when nothing is pending.
    pub async fn flush(&self) {
        let token = self.with(|st| {
            let token = st.core.flush();
            st.wake_runners();
            token
        });
        poll_fn(|cx| {
            self.with(|st| {
                if st.core.is_flushed(token) {
                    Poll::Ready(())
                } else {
                    st.settled.register(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await;
    }

    /// Stops taking items (adds return [`PushError::Closed`]) and starts the drain; runners
    /// return from [`Runner::run`] once everything is delivered or dead-lettered.
    pub fn close(&self) {
        self.with(|st| {
            st.core.close();
            st.wake_runners();
            st.producers.wake();
        });
    }

    /// [`close`](Self::close), then waits until the drain is finished.
    pub async fn shutdown(&self) {
        self.close();
        poll_fn(|cx| {
            self.with(|st| {
                if st.core.is_finished() {
                    Poll::Ready(())
                } else {
                    st.settled.register(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await;
    }

    /// Pauses (the uplink is down): no batch starts and no retry clock runs; adds keep buffering
    /// up to capacity.
    pub fn pause(&self) {
        self.with(|st| st.core.pause(crate::now()));
    }

    /// Resumes after [`pause`](Self::pause): everything buffered drains in order.
    pub fn resume(&self) {
        self.with(|st| {
            st.core.resume(crate::now());
            st.wake_runners();
        });
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.with(|st| st.core.metrics())
    }

    /// Items buffered (not yet cut).
    pub fn len(&self) -> usize {
        self.with(|st| st.core.len())
    }

    /// Whether no item is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches with the handler or waiting to retry.
    pub fn in_flight(&self) -> usize {
        self.with(|st| st.core.in_flight())
    }

    /// Whether the batcher is closed and everything accepted reached a final outcome.
    pub fn is_finished(&self) -> bool {
        self.with(|st| st.core.is_finished())
    }

    /// A runner that delivers this batcher's batches with `handler`. Spawn one task per flight
    /// slot (`max_in_flight`) that calls [`Runner::run`].
    pub fn runner<H: Handler<T>>(&self, handler: H) -> Runner<'_, M, T, N, F, H> {
        Runner::new(self, handler)
    }
}
