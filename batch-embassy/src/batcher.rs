//! The batcher that lives in a `static`.

use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

#[cfg(feature = "metrics")]
use batch_core::Metrics;
use batch_core::{Config, ConfigError, PushError};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::Timer;

use crate::handler::Handler;
use crate::runner::Runner;
use crate::wait::{Chain, Link};

pub(crate) struct State<T, const N: usize, const F: usize> {
    pub(crate) core: batch_core::Batcher<T, N, F>,
    /// Every waiting future: producers, `flush` and `shutdown` callers, runners.
    pub(crate) chain: Chain,
    /// The batches runners hold, by sequence number.
    pub(crate) flights: heapless::Vec<Flight, F>,
    /// A shutdown deadline passed: the batches in flight were given up and runners stop.
    pub(crate) aborted: bool,
    /// Which store runner may use the store now (feature `store`).
    #[cfg(feature = "store")]
    pub(crate) store_turn: crate::store_runner::Turn,
}

/// A batch a runner holds.
pub(crate) struct Flight {
    pub(crate) seq: u64,
    /// The runner's task while an attempt runs (woken when the batch is given up).
    pub(crate) task: Option<Waker>,
    /// Whether the runner is inside its handler's `poll` right now.
    pub(crate) polling: bool,
}

impl<T, const N: usize, const F: usize> State<T, N, F> {
    /// Wakes the waiters if the core reports a change that may concern them.
    ///
    /// Out of line, as are [`reentrant`](Self::reentrant), [`flight`](Self::flight) and
    /// `Chain::notify`/`Link::leave`: each is called from several waiting calls and runner
    /// steps, and a call is a few bytes where the inlined body (a waker taken and woken, a
    /// search of the flight table) is tens (issue 12: about 200 bytes of `.text` on a Cortex-M4).
    #[inline(never)]
    pub(crate) fn settle(&mut self) {
        if self.core.poll_wake() {
            self.chain.notify();
        }
    }

    /// Whether `waker`'s task is inside one of this batcher's handlers (a re-entrant call,
    /// which must not wait for that handler's own batch).
    #[inline(never)]
    pub(crate) fn reentrant(&self, waker: &Waker) -> bool {
        self.flights.iter().any(|f| f.polling && f.task.as_ref().is_some_and(|t| t.will_wake(waker)))
    }

    #[inline(never)]
    pub(crate) fn flight(&mut self, seq: u64) -> Option<&mut Flight> {
        self.flights.iter_mut().find(|f| f.seq == seq)
    }

    /// Gives up every batch in flight (a shutdown deadline passed): they count as returned, and
    /// their runners are woken to hand them back. Returns how many items they hold.
    pub(crate) fn abort(&mut self) -> usize {
        self.aborted = true;
        let mut held = 0;
        while let Some(flight) = self.flights.pop() {
            held += self.core.abandon(flight.seq).unwrap_or(0);
            if let Some(task) = flight.task {
                task.wake();
            }
        }
        self.settle();
        self.chain.notify();
        held
    }

    /// Closes the core, the first time a shutdown's check runs (`closed` remembers it).
    pub(crate) fn close_once(&mut self, closed: &mut bool) {
        if !core::mem::replace(closed, true) {
            self.core.close();
            self.settle();
        }
    }

    /// Forgets the batch `seq` (final, or given up); whether it was held.
    pub(crate) fn land(&mut self, seq: u64) -> bool {
        let Some(i) = self.flights.iter().position(|f| f.seq == seq) else { return false };
        // The last record moves into the freed place (plain moves: `swap_remove` and
        // `slice::swap` copy with a `memmove`, which costs 1.5 KiB of code in a firmware image).
        // Field by field: a whole 24-byte record is copied with `memcpy` on thumbv6m.
        let Some(Flight { seq, task, polling }) = self.flights.pop() else { return false };
        if let Some(place) = self.flights.get_mut(i) {
            place.seq = seq;
            place.task = task;
            place.polling = polling;
        }
        true
    }
}

/// What a waiting future does after looking at the state.
pub(crate) enum Step<R> {
    /// Done.
    Ready(R),
    /// Wait for a change, or until the instant.
    Wait(Option<embassy_time::Instant>),
}

/// A waiting future's place in the chain, passed on when the future is dropped.
struct Waiter<'a, M: RawMutex, T, const N: usize, const F: usize> {
    batcher: &'a Batcher<M, T, N, F>,
    link: Link,
}

/// A waiter's check, type-erased so that one `poll` serves every waiting call: `None` when
/// ready (the check keeps its result), else the instant to wake at, if any.
type Check<'c, T, const N: usize, const F: usize> =
    dyn FnMut(&mut State<T, N, F>, &Waker) -> Option<Option<embassy_time::Instant>> + 'c;

impl<M: RawMutex, T, const N: usize, const F: usize> Waiter<'_, M, T, N, F> {
    /// Runs `check` under the lock until it is ready or must wait: joins the chain to wait for
    /// a change, and asks the time driver for a wake-up at the instant it names. Not generic
    /// over the check, so its code is in the image once, not once per waiting call.
    #[inline(never)]
    fn poll(&mut self, cx: &mut Context<'_>, check: &mut Check<'_, T, N, F>) {
        let mut looked_again = false;
        loop {
            let link = &mut self.link;
            let step = self.batcher.with(|st| {
                link.poll_changed(&st.chain);
                let step = check(st, cx.waker());
                match step {
                    None => link.leave(&mut st.chain),
                    Some(_) => link.register(&mut st.chain, cx.waker()),
                }
                step
            });
            let Some(Some(at)) = step else { return };
            if !looked_again && at <= embassy_time::Instant::now() {
                looked_again = true; // due: look again (once; a check that still waits for a
                continue; // past instant is polled again on the next tick, not in a loop here)
            }
            // A fresh timer's first poll schedules the wake-up and is pending: no timer is kept
            // in the waiting future (smaller futures, which are moved, not built in place).
            let _ = Pin::new(&mut Timer::at(at)).poll(cx);
            return;
        }
    }
}

/// The future of [`Batcher::wait`]: a plain struct, not an `async fn`, so each waiting call
/// adds only its check and a small `poll` to the image.
pub(crate) struct Wait<'a, M: RawMutex, T, const N: usize, const F: usize, C> {
    waiter: Waiter<'a, M, T, N, F>,
    check: C,
}

impl<M: RawMutex, T, const N: usize, const F: usize, C> Unpin for Wait<'_, M, T, N, F, C> {}

impl<R, M: RawMutex, T, const N: usize, const F: usize, C> Future for Wait<'_, M, T, N, F, C>
where
    C: FnMut(&mut State<T, N, F>, &Waker) -> Step<R>,
{
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = self.get_mut();
        let check = &mut this.check;
        let mut out = None;
        this.waiter.poll(cx, &mut |st, waker| match check(st, waker) {
            Step::Ready(r) => {
                out = Some(r);
                None
            }
            Step::Wait(at) => Some(at),
        });
        match out {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl<M: RawMutex, T, const N: usize, const F: usize> Drop for Waiter<'_, M, T, N, F> {
    fn drop(&mut self) {
        if self.link.keeps_waker() {
            self.batcher.with(|st| self.link.leave(&mut st.chain));
        }
    }
}

/// How [`Batcher::shutdown_timeout`] ended.
///
/// ```
/// use batch_embassy::{Batcher, Config};
/// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
/// # embassy_futures::block_on(async {
/// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
/// let report = b.shutdown_timeout(embassy_time::Instant::MAX).await; // nothing to drain
/// assert!(report.drained);
/// assert_eq!((report.buffered, report.held), (0, 0));
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Everything accepted reached a final outcome (delivered or dead-lettered) in time.
    pub drained: bool,
    /// Items still buffered: take them with [`Batcher::take_unsent`].
    pub buffered: usize,
    /// Items of the batches runners held when the deadline passed (their attempts were
    /// cancelled): each runner hands its batch to [`Handler::returned`] when it is next polled
    /// or dropped.
    pub held: usize,
    /// The counters after the shutdown (given-up items count as `returned`; feature
    /// `metrics`).
    #[cfg(feature = "metrics")]
    pub metrics: Metrics,
}

/// A batcher for `N` items of type `T` with up to `F` batches in flight (default 1), guarded by
/// the raw mutex `M`. `const`-constructible: put it in a `static`, call [`add`](Self::add) from
/// any task, and run one [`Runner`] per flight slot.
///
/// Memory: the core (the item buffer, `N × size_of::<T>()`, plus its counters and settings), one
/// waker and one small record per flight slot, all inside the `static`; each runner holds one
/// batch buffer. Any number of tasks may wait on it at once (producers on a full buffer,
/// `flush` and `shutdown` callers, runners): a waiting task is polled once per change of state
/// that may concern it, and not at all while nothing changes.
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
///
/// # Where items go, and how long each call takes
///
/// | Call | Returns | Items |
/// |---|---|---|
/// | [`try_add`](Self::try_add) | at once | buffered, or handed back in the error |
/// | [`add`](Self::add) | when there is room (at once unless full) | buffered, or handed back |
/// | [`flush`](Self::flush) | when everything accepted before it is final | delivered or dead-lettered |
/// | [`shutdown`](Self::shutdown) | when everything accepted is final | delivered or dead-lettered |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | at the deadline at the latest | as above, or given up: buffered ones stay for [`take_unsent`](Self::take_unsent), held ones go to [`Handler::returned`] |
///
/// - **Cancelled calls.** Dropping an `add` future before it completes drops its item (it was
///   not accepted); dropping `flush`, `shutdown` or `shutdown_timeout` changes nothing already
///   requested (the cut, the close). A cancelled [`Runner::run`] keeps its batch; see
///   [`Runner`].
/// - **Called from a handler** of this batcher (the runner's own task, inside the handler):
///   nothing waits for the batch that is calling. `flush` requests the cut and returns at once;
///   `shutdown` and `shutdown_timeout` close and return at once (the report says not drained);
///   `add` on a full buffer returns [`PushError::Full`] with the item. Other calls behave as
///   usual.
/// - **After a shutdown deadline** (`shutdown_timeout` gave up): `flush` and `shutdown`
///   return at once, runners stop, and unsent items are counted as `returned` as they are
///   handed back.
/// - **No user code** (a handler, a dead-letter or returned callback, an item's `Drop`) runs
///   while the batcher's lock is held. A weigher does (it is called on each add).
pub struct Batcher<M: RawMutex, T, const N: usize, const F: usize = 1> {
    state: Mutex<M, RefCell<State<T, N, F>>>,
}

impl<M: RawMutex, T, const N: usize, const F: usize> core::fmt::Debug for Batcher<M, T, N, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut f = f.debug_struct("Batcher");
        #[cfg(feature = "metrics")]
        f.field("metrics", &self.metrics());
        f.finish_non_exhaustive()
    }
}

impl<M: RawMutex, T, const N: usize, const F: usize> Batcher<M, T, N, F> {
    /// A batcher with `config`. In a `static` an invalid configuration fails the build with a
    /// message naming the field.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
    /// static B: Batcher<CriticalSectionRawMutex, u16, 32> = Batcher::new(Config::new().max_batch(8));
    /// assert!(B.is_empty());
    /// ```
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
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config, PushError};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, &str, 8> =
    ///     Batcher::new_weighted(Config::new().max_weight(8), |s: &&str| s.len() as u32);
    /// assert_eq!(b.try_add("far too long"), Err(PushError::TooHeavy("far too long")));
    /// ```
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
                chain: Chain::new(),
                flights: heapless::Vec::new(),
                aborted: false,
                #[cfg(feature = "store")]
                store_turn: crate::store_runner::Turn::new(),
            })),
        }
    }

    /// Runs `f` on the state inside the lock (never across an `.await`, never user code).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State<T, N, F>) -> R) -> R {
        self.state.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// Waits until `check` (called under the lock with the task's waker) is ready: again after
    /// every change of state that concerns waiters, and at the instant it asks for.
    pub(crate) fn wait<R, C>(&self, check: C) -> Wait<'_, M, T, N, F, C>
    where
        C: FnMut(&mut State<T, N, F>, &Waker) -> Step<R>,
    {
        Wait { waiter: Waiter { batcher: self, link: Link::default() }, check }
    }

    /// Adds an item, waiting while the buffer is full. `Ok(Some(old))`: with
    /// [`Overflow::DropOldest`](crate::Overflow::DropOldest), the evicted item. `Err` hands the
    /// item back when the batcher is closed or the item is heavier than `max_weight`, and
    /// ([`PushError::Full`]) when called from this batcher's own handler on a full buffer.
    ///
    /// Takes as long as the buffer stays full (forever while paused and full); cancel it with a
    /// timeout if that matters (the item is then dropped).
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// # embassy_futures::block_on(async {
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// assert_eq!(b.add(1).await, Ok(None));
    /// assert_eq!(b.len(), 1);
    /// # });
    /// ```
    pub fn add(&self, item: T) -> impl Future<Output = Result<Option<T>, PushError<T>>> {
        self.add_inner(item, false)
    }

    /// Adds an item that cuts its batch at once (an alarm among telemetry), waiting while full,
    /// as [`add`](Self::add) does.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// # embassy_futures::block_on(async {
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.add_urgent(99).await.unwrap(); // a runner cuts it without waiting for linger
    /// # });
    /// ```
    pub fn add_urgent(&self, item: T) -> impl Future<Output = Result<Option<T>, PushError<T>>> {
        self.add_inner(item, true)
    }

    /// [`add`](Self::add) and [`add_urgent`](Self::add_urgent): the waiting future itself, not an
    /// `async fn` around it (one state machine less per call, in the image and in the task).
    fn add_inner(&self, item: T, urgent: bool) -> impl Future<Output = Result<Option<T>, PushError<T>>> {
        let mut item = Some(item);
        self.wait(move |st, waker| {
            if st.core.must_wait() && !st.reentrant(waker) {
                return Step::Wait(None);
            }
            let Some(item) = item.take() else { return Step::Wait(None) };
            // The clock is read only when the core needs the time (the first item of a batch),
            // and urgent or not the push is the same code.
            let result = st.core.push_with(crate::now, item);
            if urgent && result.is_ok() {
                st.core.mark_urgent();
            }
            st.settle();
            Step::Ready(result)
        })
    }

    /// Adds an item if there is room now, or hands it back ([`PushError`]). Never waits.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// assert_eq!(b.try_add(1), Ok(None));
    /// ```
    pub fn try_add(&self, item: T) -> Result<Option<T>, PushError<T>> {
        self.with(|st| {
            let result = st.core.push_with(crate::now, item);
            st.settle();
            result
        })
    }

    /// Cuts everything buffered now and waits until every item accepted before the call reached
    /// a final outcome (delivered or dead-lettered). Resolves at once when nothing is pending,
    /// when called from this batcher's own handler (after requesting the cut), and after a
    /// shutdown deadline gave up the rest.
    ///
    /// Takes as long as those batches take, retries included (forever while paused with items
    /// pending, or while no runner runs).
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// # embassy_futures::block_on(async {
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.flush().await; // nothing pending: at once
    /// # });
    /// ```
    pub fn flush(&self) -> impl Future<Output = ()> {
        // The waiting future itself, not an `async fn` around it (see `add_inner`); the flush
        // is requested at the first poll, as an `async fn` would.
        let mut token = None;
        self.wait(move |st, waker| {
            let token = *token.get_or_insert_with(|| {
                let token = st.core.flush();
                st.settle();
                token
            });
            if st.core.is_flushed(token) || st.aborted || st.reentrant(waker) {
                Step::Ready(())
            } else {
                Step::Wait(None)
            }
        })
    }

    /// Stops taking items (adds return [`PushError::Closed`]) and starts the drain; runners
    /// return from [`Runner::run`] once everything is delivered or dead-lettered. Never waits.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.close();
    /// assert!(b.try_add(1).is_err());
    /// assert!(b.is_finished()); // nothing was pending
    /// ```
    pub fn close(&self) {
        self.with(|st| {
            st.core.close();
            st.settle();
        });
    }

    /// [`close`](Self::close), then waits until the drain is finished: everything accepted was
    /// delivered or dead-lettered. Returns at once when called from this batcher's own handler
    /// and after a shutdown deadline gave up the rest.
    ///
    /// Takes as long as the drain takes, retries included (forever while paused with items
    /// pending, or while no runner runs): use [`shutdown_timeout`](Self::shutdown_timeout) for
    /// a bound.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// # embassy_futures::block_on(async {
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.shutdown().await;
    /// assert!(b.is_finished());
    /// # });
    /// ```
    pub fn shutdown(&self) -> impl Future<Output = ()> {
        // The waiting future itself, not an `async fn` around it (see `add_inner`); it closes
        // at the first poll, as an `async fn` would.
        let mut closed = false;
        self.wait(move |st, waker| {
            st.close_once(&mut closed);
            if st.core.is_finished() || st.aborted || st.reentrant(waker) {
                Step::Ready(())
            } else {
                Step::Wait(None)
            }
        })
    }

    /// [`shutdown`](Self::shutdown), giving up at `deadline`: the attempts still running are
    /// cancelled (their handler futures are dropped when the runners are next polled), the
    /// batches in flight are given up (each runner hands its items to [`Handler::returned`]),
    /// buffered items stay for [`take_unsent`](Self::take_unsent), and runners stop. Given-up
    /// items count as `returned` in the metrics.
    ///
    /// Returns by the deadline (at once when called from this batcher's own handler: then it
    /// only closes, and the report says not drained).
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// use embassy_time::Instant;
    /// # embassy_futures::block_on(async {
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.try_add(1).unwrap(); // no runner: it can never be delivered
    /// let report = b.shutdown_timeout(Instant::now()).await;
    /// assert!(!report.drained);
    /// let mut unsent = heapless::Vec::<u8, 4>::new();
    /// assert_eq!(b.take_unsent(&mut unsent), 1); // e.g. to save in flash before a reboot
    /// assert_eq!(unsent, [1]);
    /// assert!(b.metrics().is_consistent());
    /// # });
    /// ```
    pub fn shutdown_timeout(&self, deadline: embassy_time::Instant) -> impl Future<Output = ShutdownReport> {
        // The waiting future itself (see `shutdown`), which closes at the first poll and reports
        // under the lock it decided in.
        let mut closed = false;
        self.wait(move |st, waker| {
            st.close_once(&mut closed);
            let (drained, held) = if st.core.is_finished() {
                (true, 0)
            } else if st.aborted || st.reentrant(waker) {
                (false, 0)
            } else if embassy_time::Instant::now() >= deadline {
                (false, st.abort())
            } else {
                return Step::Wait(Some(deadline));
            };
            Step::Ready(ShutdownReport {
                drained,
                buffered: st.core.len(),
                held,
                #[cfg(feature = "metrics")]
                metrics: st.core.metrics(),
            })
        })
    }

    /// Moves buffered items, oldest first, into `out` (as many as fit): the unsent items after
    /// [`shutdown_timeout`](Self::shutdown_timeout) gave up, or at any time to empty the buffer.
    /// They count as `returned`. Returns how many moved. Never waits.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.try_add(1).unwrap();
    /// b.try_add(2).unwrap();
    /// let mut out = heapless::Vec::<u8, 1>::new();
    /// assert_eq!(b.take_unsent(&mut out), 1); // as many as fit
    /// assert_eq!((out[0], b.len(), b.metrics().returned), (1, 1, 1));
    /// ```
    pub fn take_unsent<const K: usize>(&self, out: &mut heapless::Vec<T, K>) -> usize {
        self.with(|st| {
            let moved = st.core.take_buffered(out);
            if moved > 0 {
                st.chain.notify(); // room, and maybe finished
            }
            moved
        })
    }

    /// Pauses (the uplink is down): no batch starts and no retry clock runs; adds keep buffering
    /// up to capacity. Attempts already running finish.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.pause();
    /// b.resume();
    /// ```
    pub fn pause(&self) {
        self.with(|st| st.core.pause(crate::now()));
    }

    /// Resumes after [`pause`](Self::pause): everything buffered drains in order.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.pause();
    /// b.try_add(1).unwrap(); // buffered while paused
    /// b.resume();
    /// ```
    pub fn resume(&self) {
        self.with(|st| {
            st.core.resume(crate::now());
            st.settle();
        });
    }

    /// A snapshot of the counters (feature `metrics`, on by default: a firmware that leaves it
    /// out keeps no counters, and this method does not exist).
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.try_add(1).unwrap();
    /// let m = b.metrics();
    /// assert_eq!((m.accepted, m.buffered), (1, 1));
    /// assert!(m.is_consistent());
    /// ```
    #[cfg(feature = "metrics")]
    pub fn metrics(&self) -> Metrics {
        self.with(|st| st.core.metrics())
    }

    /// Items buffered (not yet cut).
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// b.try_add(7).unwrap();
    /// assert_eq!(b.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.with(|st| st.core.len())
    }

    /// Whether no item is buffered.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// assert!(b.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches with the handler or waiting to retry.
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// assert_eq!(b.in_flight(), 0); // no runner took a batch yet
    /// ```
    pub fn in_flight(&self) -> usize {
        self.with(|st| st.core.in_flight())
    }

    /// Whether the batcher is closed and everything accepted reached a final outcome (or was
    /// taken back after a shutdown deadline).
    ///
    /// ```
    /// use batch_embassy::{Batcher, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// assert!(!b.is_finished()); // still open
    /// b.close();
    /// assert!(b.is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        self.with(|st| st.core.is_finished())
    }

    /// A runner that delivers this batcher's batches with `handler`. Spawn one task per flight
    /// slot (`max_in_flight`) that calls [`Runner::run`].
    ///
    /// ```
    /// use batch_embassy::{Batcher, BatchInfo, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 4> = Batcher::new(Config::new());
    /// let runner = b.runner(async |_: &[u8], _: BatchInfo| Ok::<(), ()>(()));
    /// # let _ = runner;
    /// ```
    pub fn runner<H: Handler<T>>(&self, handler: H) -> Runner<'_, M, T, N, F, H> {
        Runner::new(self, handler)
    }
}
