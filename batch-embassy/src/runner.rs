//! The runner: embassy-net's `Runner::run` shape over the sans-IO core.

use core::future::poll_fn;
use core::pin::{Pin, pin};
use core::task::Poll;

use batch_core::{Completion, Outcome, Retry};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{Duration, Timer};

use crate::batcher::{Batcher, Flight, State, Step};
use crate::handler::{BatchInfo, Handler};

/// Delivers a [`Batcher`]'s batches: waits on `Timer::at(deadline)` and on new items, runs the
/// handler with retries per the core's schedule, and hands dead letters to
/// [`Handler::dead_letter`]. It holds one batch buffer (`N` items).
///
/// ```
/// use batch_embassy::{Batcher, BatchInfo, Config};
/// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
///
/// async fn uplink(batcher: &Batcher<NoopRawMutex, u32, 32>) {
///     let mut runner = batcher.runner(async |batch: &[u32], _: BatchInfo| {
///         let _ = batch; // transmit
///         Ok::<(), ()>(())
///     });
///     runner.run().await; // returns after `close`, once drained
/// }
/// ```
///
/// # Cancellation, faults and shutdown
///
/// - **[`run`](Self::run) is cancel-safe.** The runner keeps the batch it holds (its items,
///   sequence number, attempt and trigger), so `select(runner.run(), timer)` may lose at any
///   point: the next `run()` on the same runner resumes that batch before it takes a new one.
///   An attempt cut short is re-run as the *same* attempt (same `seq`, same `attempt`): it is
///   not counted as failed, and the handler may see that batch twice (at least once; the `seq`
///   is the dedup key). A cancelled back-off resumes on its original schedule. While the runner
///   is not running, its batch stays in flight: `flush` and `shutdown` wait for it (a
///   [`Batcher::shutdown_timeout`] gives it up at its deadline).
/// - **Dropping a runner** that holds a batch gives the batch up: its items count as
///   `returned` and go, by value, to [`Handler::returned`]. `flush` and `shutdown` then no
///   longer wait for them.
/// - **A hanging handler** holds its batch until it returns, unless an
///   [`attempt_timeout`](Self::attempt_timeout) is set (the attempt then fails, and is retried
///   or dead-lettered) or a shutdown deadline passes (the attempt is cancelled and the batch
///   handed to [`Handler::returned`]).
/// - **After a shutdown deadline** `run` hands back what it held and returns.
pub struct Runner<'a, M: RawMutex, T, const N: usize, const F: usize, H: Handler<T>> {
    pub(crate) batcher: &'a Batcher<M, T, N, F>,
    pub(crate) handler: H,
    pub(crate) batch: heapless::Vec<T, N>,
    /// The batch in `batch` and its current attempt (`None`: the buffer is free).
    pub(crate) held: Option<BatchInfo>,
    timeout: Option<AttemptTimeout<H::Error>>,
}

/// How long an attempt may take, and the error a timed-out attempt reports.
type AttemptTimeout<E> = (Duration, fn() -> E);

impl<M: RawMutex, T, const N: usize, const F: usize, H: Handler<T>> core::fmt::Debug
    for Runner<'_, M, T, N, F, H>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Runner")
            .field("holding", &self.batch.len())
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

/// How an attempt ended.
pub(crate) enum End<E> {
    /// The handler returned, or (an error) the attempt timed out.
    Done(Result<(), E>),
    /// The batch was given up (a shutdown deadline) while it ran.
    Gone,
}

impl<'a, M: RawMutex, T, const N: usize, const F: usize, H: Handler<T>> Runner<'a, M, T, N, F, H> {
    pub(crate) fn new(batcher: &'a Batcher<M, T, N, F>, handler: H) -> Self {
        Self { batcher, handler, batch: heapless::Vec::new(), held: None, timeout: None }
    }

    /// Fails an attempt that takes longer than `timeout`: its handler future is dropped and the
    /// attempt counts as failed with the error `error()` (retried, or passed to
    /// [`Handler::dead_letter`] after the last attempt).
    ///
    /// ```
    /// use batch_embassy::{Batcher, BatchInfo, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// use embassy_time::Duration;
    ///
    /// #[derive(Debug)]
    /// enum UplinkError { Nack, TimedOut }
    /// let b: Batcher<NoopRawMutex, u8, 8> = Batcher::new(Config::new());
    /// let runner = b
    ///     .runner(async |_: &[u8], _: BatchInfo| Err::<(), _>(UplinkError::Nack))
    ///     .attempt_timeout(Duration::from_secs(5), || UplinkError::TimedOut);
    /// # let _ = runner;
    /// ```
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration, error: fn() -> H::Error) -> Self {
        self.timeout = Some((timeout, error));
        self
    }

    /// The handler (for reading a stateful uplink's counters after [`run`](Self::run)).
    ///
    /// ```
    /// use batch_embassy::{Batcher, BatchInfo, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 8> = Batcher::new(Config::new());
    /// let runner = b.runner(async |_: &[u8], _: BatchInfo| Ok::<(), ()>(()));
    /// let _handler = runner.handler();
    /// ```
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The batch this runner holds (delivering it, or waiting to retry it), if any.
    ///
    /// ```
    /// use batch_embassy::{Batcher, BatchInfo, Config};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// let b: Batcher<NoopRawMutex, u8, 8> = Batcher::new(Config::new());
    /// let runner = b.runner(async |_: &[u8], _: BatchInfo| Ok::<(), ()>(()));
    /// assert_eq!(runner.holding(), None);
    /// ```
    pub fn holding(&self) -> Option<BatchInfo> {
        self.held
    }

    /// Runs until the batcher is closed and drained, or a shutdown deadline gave up the rest
    /// (forever if it is never closed). Cancel-safe: see [`Runner`].
    ///
    /// ```
    /// use batch_embassy::{Batcher, BatchInfo, Config};
    /// use embassy_futures::select::select;
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// use embassy_time::Timer;
    ///
    /// async fn uplink(b: &Batcher<NoopRawMutex, u8, 8>) {
    ///     let mut runner = b.runner(async |_: &[u8], _: BatchInfo| Ok::<(), ()>(()));
    ///     loop {
    ///         // Lose to the timer at any point: the next `run` resumes the batch it held.
    ///         select(runner.run(), Timer::after_secs(60)).await;
    ///         if b.is_finished() {
    ///             break;
    ///         }
    ///         // ... periodic housekeeping ...
    ///     }
    /// }
    /// # let _ = uplink;
    /// ```
    pub async fn run(&mut self) {
        loop {
            if self.held.is_none() {
                // A dead-letter callback that panicked may have left items behind: they were
                // dead-lettered already. (Outside the lock: an item's `Drop` is user code.)
                self.batch.clear();
            }
            // One wait for everything between attempts: the next batch, a retry's back-off, a
            // cancelled attempt to resume, or the end.
            let (batch, held) = (&mut self.batch, &mut self.held);
            let next = self.batcher.wait(|st, _| Self::next(st, batch, held)).await;
            if batch_core::UPLINK && next == Go::Expired {
                self.expire(self.held); // too old by its retry (a pause, a late runner)
                continue;
            }
            let Some(info) = self.held else {
                if self.batch.is_empty() {
                    return;
                }
                self.expire(None); // items too old to send, from the front of the buffer
                continue;
            };
            if next != Go::Run {
                self.give_back(info);
                continue;
            }
            match self.attempt().await {
                End::Done(result) => self.complete(info, result),
                End::Gone => self.give_back(info),
            }
        }
    }

    /// Reports how the attempt of `info` ended, and hands a dead letter to the handler.
    pub(crate) fn complete(&mut self, info: BatchInfo, result: Result<(), H::Error>) {
        let seq = info.seq;
        let outcome = match &result {
            Ok(()) => Outcome::Delivered,
            Err(error) => match self.split(info, error) {
                (0, 0) => Outcome::Failed,
                (delivered, rejected) => Outcome::Partial { delivered, rejected },
            },
        };
        let completion = self.batcher.with(|st| {
            let completion = st.core.handle_completion(crate::now(), seq, outcome);
            let is_final = matches!(
                completion,
                Some(
                    Completion::Delivered { .. }
                        | Completion::DeadLettered { .. }
                        | Completion::Expired { .. }
                )
            );
            if is_final {
                st.land(seq);
            }
            st.settle();
            completion
        });
        match (completion, result) {
            (None, _) => self.give_back(info),
            (Some(Completion::Retry { attempt, .. }), _) => {
                #[cfg(feature = "defmt")]
                defmt::warn!("batch {} attempt {} failed; retry {} scheduled", seq, info.attempt, attempt);
                let _ = attempt;
            }
            (Some(Completion::DeadLettered { .. }), Err(error)) => {
                self.held = None;
                self.handler.dead_letter(self.batch.as_mut_view(), info, error);
                self.batch.clear();
            }
            (Some(Completion::Expired { .. }), _) => self.expire(Some(info)),
            (Some(_), _) => {
                self.held = None;
                self.batch.clear();
            }
        }
    }

    /// After a failed attempt: asks the handler's [`verdict`](Handler::verdict) for each item,
    /// drops the delivered ones, hands the rejected ones to [`Handler::rejected`], and keeps
    /// the rest, in order, for the retry. Returns `(delivered, rejected)`.
    fn split(&mut self, info: BatchInfo, error: &H::Error) -> (u32, u32) {
        let (mut delivered, mut rejected) = (0, 0);
        let mut i = 0;
        for index in 0..self.batch.len() {
            match self.handler.verdict(&self.batch[i], index, info, error) {
                crate::Verdict::Retry => i += 1,
                crate::Verdict::Delivered => {
                    drop(self.batch.remove(i));
                    delivered += 1;
                }
                crate::Verdict::Rejected => {
                    let item = self.batch.remove(i);
                    self.handler.rejected(item, index, info);
                    rejected += 1;
                }
            }
        }
        (delivered, rejected)
    }

    /// What the runner does next, under the lock: with no batch held, cut the next one into the
    /// (empty) buffer; with one held, start its due retry or resume its cancelled attempt.
    /// [`Go::Run`]: run the attempt in `held`; [`Go::Stop`]: give the held batch back (it was
    /// given up), or stop if none is held (or hand over expired items the buffer holds);
    /// [`Go::Expired`]: the held batch was too old for its retry (final: hand it to the expiry
    /// path).
    pub(crate) fn next(
        st: &mut State<T, N, F>,
        batch: &mut heapless::Vec<T, N>,
        held: &mut Option<BatchInfo>,
    ) -> Step<Go> {
        let Some(info) = held else {
            if st.aborted {
                return Step::Ready(Go::Stop);
            }
            if Self::poll_expired(st, batch) {
                return Step::Ready(Go::Stop); // no batch held, items in the buffer: expired
            }
            if Self::cut(st, batch, held).is_some() {
                return Step::Ready(Go::Run);
            }
            if st.core.is_finished() {
                return Step::Ready(Go::Stop);
            }
            return Step::Wait(st.core.next_cut().map(crate::to_embassy));
        };
        if st.flight(info.seq).is_none() {
            return Step::Ready(Go::Stop);
        }
        match st.core.poll_retry(crate::now(), info.seq) {
            Some(Retry::Attempt(attempt)) => {
                info.attempt = attempt;
                return Step::Ready(Go::Run);
            }
            Some(Retry::Expired { .. }) if batch_core::UPLINK => {
                st.land(info.seq);
                st.settle();
                st.chain.notify(); // room for producers
                return Step::Ready(Go::Expired);
            }
            Some(Retry::Expired { .. }) | None => {} // (never expired without `uplink`)
        }
        match st.core.retry_at(info.seq) {
            None => Step::Ready(Go::Run), // running: (re-)run this attempt
            Some(_) if st.core.is_paused() => Step::Wait(None),
            Some(at) => Step::Wait(Some(crate::to_embassy(at))),
        }
    }

    /// Moves items too old to send from the front of the buffer into the (empty) batch buffer,
    /// before a cut (`max_age`). Whether any moved.
    pub(crate) fn poll_expired(st: &mut State<T, N, F>, batch: &mut heapless::Vec<T, N>) -> bool {
        #[cfg(feature = "uplink")]
        if st.core.poll_expired(crate::now(), batch) > 0 {
            st.chain.notify(); // room for producers
            return true;
        }
        let _ = (st, batch);
        false
    }

    /// Hands the batch buffer's items (expired) to [`Handler::expired`] with `info` (the batch
    /// they were in, if any; no longer held), and empties it.
    pub(crate) fn expire(&mut self, info: Option<BatchInfo>) {
        self.held = None;
        self.handler.expired(self.batch.as_mut_view(), info);
        self.batch.clear();
    }

    /// Cuts the next batch into the (empty) buffer if one is due, and holds it.
    pub(crate) fn cut(
        st: &mut State<T, N, F>,
        batch: &mut heapless::Vec<T, N>,
        held: &mut Option<BatchInfo>,
    ) -> Option<batch_core::Flush> {
        let flush = st.core.poll_flush(crate::now(), batch)?;
        Self::hold(st, held, &flush);
        st.chain.notify(); // room for producers
        Some(flush)
    }

    /// Holds the batch `flush` (just cut, or read back from a store): attempt 1.
    pub(crate) fn hold(st: &mut State<T, N, F>, held: &mut Option<BatchInfo>, flush: &batch_core::Flush) {
        let flight = Flight { seq: flush.seq, task: None, polling: false };
        let added = st.flights.push(flight);
        debug_assert!(added.is_ok(), "the core holds at most F batches");
        *held = Some(BatchInfo { seq: flush.seq, attempt: 1, trigger: flush.trigger });
    }

    /// Runs one attempt: until the handler returns, the attempt times out, or the batch is
    /// given up.
    pub(crate) async fn attempt(&mut self) -> End<H::Error> {
        let batcher = self.batcher;
        // Read here, not passed in: a 16-byte argument copied into an async fn's state becomes
        // a `memmove` (1.5 KiB of code).
        let Some(info) = self.held else { return End::Gone };
        let seq = info.seq;
        let mut timer = self.timeout.map(|(timeout, error)| (Timer::after(timeout), error));
        let mut handling = pin!(self.handler.handle(&self.batch, info));
        poll_fn(|cx| {
            let held = batcher.with(|st| match st.flight(seq) {
                Some(flight) => {
                    match &flight.task {
                        Some(task) if task.will_wake(cx.waker()) => {}
                        _ => flight.task = Some(cx.waker().clone()),
                    }
                    flight.polling = true;
                    true
                }
                None => false,
            });
            if !held {
                return Poll::Ready(End::Gone);
            }
            let polled = {
                let _inside = Inside { batcher, seq };
                handling.as_mut().poll(cx)
            };
            if let Poll::Ready(result) = polled {
                return Poll::Ready(End::Done(result));
            }
            if let Some((timer, error)) = &mut timer
                && Pin::new(timer).poll(cx).is_ready()
            {
                #[cfg(feature = "defmt")]
                defmt::warn!("batch {} attempt {} timed out", seq, info.attempt);
                return Poll::Ready(End::Done(Err(error())));
            }
            Poll::Pending
        })
        .await
    }

    /// Hands a given-up batch (a shutdown deadline passed) to [`Handler::returned`].
    pub(crate) fn give_back(&mut self, info: BatchInfo) {
        self.held = None;
        if !self.batch.is_empty() {
            self.handler.returned(self.batch.as_mut_view(), info);
        }
        self.batch.clear();
    }
}

/// Marks the runner as inside its handler's `poll` (re-entrant calls must not wait for its
/// batch); unmarks it when the poll returns or unwinds.
struct Inside<'b, M: RawMutex, T, const N: usize, const F: usize> {
    batcher: &'b Batcher<M, T, N, F>,
    seq: u64,
}

impl<M: RawMutex, T, const N: usize, const F: usize> Drop for Inside<'_, M, T, N, F> {
    fn drop(&mut self) {
        self.batcher.with(|st| {
            if let Some(flight) = st.flight(self.seq) {
                flight.polling = false;
            }
        });
    }
}

impl<M: RawMutex, T, const N: usize, const F: usize, H: Handler<T>> Drop for Runner<'_, M, T, N, F, H> {
    /// A runner dropped while it holds a batch gives it up: the items count as `returned` and
    /// go to [`Handler::returned`].
    fn drop(&mut self) {
        if let Some(info) = self.held {
            self.batcher.with(|st| {
                if st.land(info.seq) {
                    let _ = st.core.abandon(info.seq);
                    st.settle();
                }
            });
            self.give_back(info);
        }
    }
}

/// What a runner does next (see [`Runner::next`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Go {
    /// Run the attempt of the held batch.
    Run,
    /// Give the held batch back, or stop (or hand over expired items) if none is held.
    Stop,
    /// The held batch expired at its retry: hand its items to the expiry path.
    Expired,
}
