//! The runner: embassy-net's `Runner::run` shape over the sans-IO core.

use core::future::poll_fn;
use core::pin::{Pin, pin};
use core::task::Poll;

use batch_core::{Completion, Outcome};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{Duration, Timer};

use crate::batcher::{Batcher, Flight, Step};
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
    batcher: &'a Batcher<M, T, N, F>,
    handler: H,
    batch: heapless::Vec<T, N>,
    /// The batch in `batch` and its current attempt (`None`: the buffer is free).
    held: Option<BatchInfo>,
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
enum End<E> {
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
            let info = if let Some(info) = self.held {
                info
            } else {
                // A dead-letter callback that panicked may have left items behind: they were
                // dead-lettered already.
                self.batch.clear();
                let Some(info) = self.next_batch().await else { return };
                self.held = Some(info);
                info
            };
            self.deliver(info).await;
        }
    }

    /// Cuts the next batch into the (empty) buffer.
    async fn next_batch(&mut self) -> Option<BatchInfo> {
        let batch = &mut self.batch;
        self.batcher
            .wait(|st, _| {
                if st.aborted {
                    return Step::Ready(None);
                }
                if let Some(flush) = st.core.poll_flush(crate::now(), batch) {
                    let flight = Flight { seq: flush.seq, task: None, polling: false };
                    let added = st.flights.push(flight);
                    debug_assert!(added.is_ok(), "the core holds at most F batches");
                    st.chain.notify(); // room for producers
                    return Step::Ready(Some(BatchInfo {
                        seq: flush.seq,
                        attempt: 1,
                        trigger: flush.trigger,
                    }));
                }
                if st.core.is_finished() {
                    return Step::Ready(None);
                }
                Step::Wait(st.core.next_cut().map(crate::to_embassy))
            })
            .await
    }

    /// Delivers the held batch to a final outcome, resuming where a cancelled `run` left it.
    async fn deliver(&mut self, mut info: BatchInfo) {
        let seq = info.seq;
        loop {
            // Waiting to retry (or resuming): the attempt to run, `None` if given up.
            let current = info.attempt;
            let attempt = self
                .batcher
                .wait(|st, _| {
                    if st.flight(seq).is_none() {
                        return Step::Ready(None);
                    }
                    if let Some(attempt) = st.core.poll_retry(crate::now(), seq) {
                        return Step::Ready(Some(attempt));
                    }
                    match st.core.retry_at(seq) {
                        None => Step::Ready(Some(current)), // running: (re-)run this attempt
                        Some(_) if st.core.is_paused() => Step::Wait(None),
                        Some(at) => Step::Wait(Some(crate::to_embassy(at))),
                    }
                })
                .await;
            let Some(attempt) = attempt else { return self.give_back(info) };
            info.attempt = attempt;
            // Field by field: a 16-byte struct copied inside an async fn becomes a `memmove`.
            if let Some(held) = &mut self.held {
                held.attempt = attempt;
            }

            let result = match self.attempt(seq, attempt).await {
                End::Done(result) => result,
                End::Gone => return self.give_back(info),
            };
            let outcome = if result.is_ok() { Outcome::Delivered } else { Outcome::Failed };
            let completion = self.batcher.with(|st| {
                let completion = st.core.handle_completion(crate::now(), seq, outcome);
                if matches!(completion, Some(Completion::Delivered { .. } | Completion::DeadLettered { .. }))
                {
                    st.land(seq);
                }
                st.settle();
                completion
            });
            match (completion, result) {
                (None, _) => return self.give_back(info),
                (Some(Completion::Retry { attempt, .. }), _) => {
                    #[cfg(feature = "defmt")]
                    defmt::warn!(
                        "batch {} attempt {} failed; retry {} scheduled",
                        seq,
                        info.attempt,
                        attempt
                    );
                    let _ = attempt;
                }
                (Some(Completion::DeadLettered { .. }), Err(error)) => {
                    self.held = None;
                    self.handler.dead_letter(self.batch.as_mut_view(), info, error);
                    self.batch.clear();
                    return;
                }
                (Some(_), _) => {
                    self.held = None;
                    self.batch.clear();
                    return;
                }
            }
        }
    }

    /// Runs one attempt: until the handler returns, the attempt times out, or the batch is
    /// given up.
    async fn attempt(&mut self, seq: u64, attempt: u32) -> End<H::Error> {
        let batcher = self.batcher;
        let Some(info) = self.held else { return End::Gone };
        let info = BatchInfo { attempt, ..info };
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
    fn give_back(&mut self, info: BatchInfo) {
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
