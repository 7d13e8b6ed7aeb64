//! Stopping a batcher: `close`, `shutdown`, `shutdown_timeout`, and what they report.

use std::sync::atomic::Ordering;
use std::time::Duration;

use batch_core::Metrics;

use crate::handle::Batcher;
use crate::shared::State;
use crate::worker::collect_remainder;

/// How long [`Batcher::shutdown_timeout`] lets lanes hand their batches back once its deadline
/// has passed, before it reports whatever they still hold as [`Abandoned`].
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

/// What [`Batcher::shutdown`] and [`Batcher::shutdown_timeout`] report. Its counts always agree
/// with its metrics: `remainder.len()` is what `metrics.returned` grew by, and the lengths in
/// `abandoned` add up to `metrics.abandoned`.
///
/// ```
/// use batch_tokio::{Batcher, handler};
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let b = Batcher::builder()
///     .spawn(handler::from_fn(|_b: handler::Batch<u8>| async {
///         std::future::pending::<()>().await; // an uplink that never answers
///         Ok::<_, std::io::Error>(())
///     }))
///     .unwrap();
/// b.add(1).await.unwrap();
/// let report = b.shutdown_timeout(Duration::from_secs(2)).await;
/// assert!(report.timed_out);
/// assert_eq!(report.remainder, vec![1]); // handed back, not lost
/// assert_eq!(report.metrics.returned, 1);
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport<T> {
    /// Items not delivered nor dead-lettered, handed back by value, oldest batches first (counted
    /// as `returned`). Items of an attempt cut short may have reached the sink (at-least-once for
    /// those). Also what the worker held if it stopped before it drained (its runtime shut down,
    /// its task was aborted, or it found no timers): then `timed_out` may be false and the
    /// remainder still non-empty.
    pub remainder: Vec<T>,
    /// Batches a handler still held when the deadline passed (a handler blocked in its thread or
    /// one that never returns, a shared [`Batch`](crate::handler::Batch) kept by a detached task
    /// or `spawn_blocking`): their items could not be handed back and may or may not have
    /// reached the sink. Counted as `abandoned`, never as returned.
    pub abandoned: Vec<Abandoned>,
    /// Whether the deadline expired before the drain finished.
    pub timed_out: bool,
    /// The final counters.
    pub metrics: Metrics,
}

impl<T> ShutdownReport<T> {
    /// Whether every item accepted reached the sink or the error callback: nothing returned,
    /// nothing abandoned, no deadline hit.
    ///
    /// ```
    /// use batch_tokio::{Batcher, handler};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let b = Batcher::builder().spawn(handler::from_sync(|_: &[u8]| Ok::<_, std::io::Error>(()))).unwrap();
    /// b.add(1).await.unwrap();
    /// assert!(b.shutdown().await.is_clean());
    /// # }
    /// ```
    pub fn is_clean(&self) -> bool {
        !self.timed_out && self.remainder.is_empty() && self.abandoned.is_empty()
    }
}

/// A batch a shutdown deadline could not take back by value (see
/// [`ShutdownReport::abandoned`]): "abandoned in flight, may have reached the sink".
///
/// ```
/// use batch_tokio::Abandoned;
/// let a = Abandoned { seq: 7, len: 3 };
/// assert_eq!(a.to_string(), "batch 7 (3 items) abandoned in flight; it may have reached the sink");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned {
    /// The batch's sequence number (the consumer's dedup key).
    pub seq: u64,
    /// Its number of items.
    pub len: usize,
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch {} ({} items) abandoned in flight; it may have reached the sink", self.seq, self.len)
    }
}

impl<T> Batcher<T> {
    /// Stops taking items (later adds get [`PushError::Closed`](crate::PushError::Closed) with
    /// their item), delivers everything accepted (retries included), and waits for the worker to
    /// end. A paused batcher stays paused: resume it, or use
    /// [`shutdown_timeout`](Self::shutdown_timeout). The report is clean unless the worker
    /// stopped early (its runtime shut down, or it found no timers): then what it held is in
    /// the remainder. If a concurrent `shutdown_timeout` hit its deadline, that call's report
    /// holds the remainder, and this one only says `timed_out`.
    ///
    /// Called from inside this batcher's own handler or `on_error` (which the drain waits for),
    /// it only closes and returns at once, with `timed_out` set: the drain goes on.
    pub async fn shutdown(&self) -> ShutdownReport<T> {
        self.close();
        if self.shared.called_from_worker() {
            return self.reentrant_report();
        }
        self.wait_finished().await;
        if self.shared.aborted.load(Ordering::Acquire) {
            // A concurrent `shutdown_timeout` hit its deadline: what is left is in its report.
            let metrics = self.shared.lock().core.metrics();
            return ShutdownReport { remainder: Vec::new(), abandoned: Vec::new(), timed_out: true, metrics };
        }
        self.take_report(false)
    }

    /// Like [`shutdown`](Self::shutdown), but gives up after `deadline`: attempts still running
    /// are cancelled and everything not yet delivered or dead-lettered is handed back in the
    /// report's remainder; batches a handler still holds (it blocks its thread, never returns,
    /// or kept a shared handle) are reported as [`Abandoned`].
    ///
    /// It returns within `deadline` plus [`SHUTDOWN_GRACE`] whatever the handler does, on a
    /// current-thread or multi-thread runtime, and also when awaited outside any tokio runtime
    /// (e.g. `block_on` on a signal-handling thread; the deadline is then kept on the wall
    /// clock). The only exception is the caller's own thread being the one a handler blocks (a
    /// current-thread runtime running a blocking [`from_sync`](crate::handler::from_sync)
    /// handler): nothing can run there until the handler returns, so use
    /// [`from_blocking`](crate::handler::from_blocking) for blocking work.
    ///
    /// Called from inside this batcher's own handler or `on_error`, it only closes and returns
    /// at once, with `timed_out` set: the drain goes on.
    pub async fn shutdown_timeout(&self, deadline: Duration) -> ShutdownReport<T> {
        self.close();
        if self.shared.called_from_worker() {
            return self.reentrant_report();
        }
        let drained = crate::deadline::within(deadline, self.wait_finished()).await.is_some();
        if !drained {
            self.shared.aborted.store(true, Ordering::Release);
            self.shared.abort.notify_waiters();
            // Lanes that are polled give their batches back at once; a worker whose thread a
            // handler blocks cannot, and what it holds is taken over below.
            let _ = crate::deadline::within(SHUTDOWN_GRACE, self.wait_finished()).await;
            let mut st = self.shared.lock();
            take_over(&mut st);
        }
        self.take_report(!drained)
    }

    /// Stops taking items and starts the drain, without waiting.
    pub fn close(&self) {
        self.shared.lock().core.close();
        // Closed first, so that no area is granted places any more; then the staged runs (items
        // accepted before) go to the core, to be drained.
        crate::stage::collect(&self.shared);
        self.shared.work.notify_waiters();
        // Producers waiting for room get their item back now.
        self.shared.space.notify_waiters();
    }

    fn reentrant_report(&self) -> ShutdownReport<T> {
        tracing::warn!("shutdown called from inside the batcher's own handler: closing without waiting");
        let metrics = self.shared.lock().core.metrics();
        ShutdownReport { remainder: Vec::new(), abandoned: Vec::new(), timed_out: true, metrics }
    }

    fn take_report(&self, timed_out: bool) -> ShutdownReport<T> {
        let mut st = self.shared.lock();
        if self.shared.finished.load(Ordering::Acquire) && !st.given_back.is_empty() {
            collect_remainder(&mut st);
        }
        ShutdownReport {
            remainder: std::mem::take(&mut st.remainder),
            abandoned: std::mem::take(&mut st.abandoned),
            timed_out,
            metrics: st.core.metrics(),
        }
    }

    pub(crate) async fn wait_finished(&self) {
        loop {
            let done = self.shared.done.notified();
            if self.shared.finished.load(Ordering::Acquire) {
                return;
            }
            done.await;
        }
    }
}

/// After a deadline and its grace: every batch still in flight belongs to a lane that could not
/// give it back (its handler holds the thread or the items), so it is abandoned; what lanes gave
/// back and what is buffered go to the remainder.
fn take_over<T>(st: &mut State<T>) {
    let held: Vec<u64> = st.core.in_flight_seqs().collect();
    for seq in held {
        st.abandon_held(seq);
    }
    st.abandoned.sort_by_key(|a| a.seq);
    collect_remainder(st);
}
