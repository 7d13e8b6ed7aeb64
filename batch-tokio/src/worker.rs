//! The worker: `max_in_flight` lanes, each taking a batch from the core, running the handler on
//! it through its retries, and reporting the outcome.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use batch_core::{Completion, Flush, Instant, Outcome, Retry};
use futures_lite::FutureExt as _;

use crate::handler::{Batch, BatchError, DeadLetter, Handler, Items, PartialFailure};
use crate::shared::{Shared, State, far_future};

/// The future that drives a batcher: spawn it on a tokio runtime (or use
/// [`Builder::spawn`](crate::Builder::spawn), which does). It ends once the batcher is closed
/// (shutdown, or the last handle dropped) and drained.
///
/// ```
/// use batch_tokio::{Batcher, handler};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (batcher, worker) = Batcher::builder()
///     .build(handler::from_sync(|_: &[u32]| Ok::<_, std::io::Error>(())))
///     .unwrap();
/// let worker = tokio::spawn(worker); // or drive it inside your own task
/// batcher.add(1).await.unwrap();
/// drop(batcher); // the last handle: drain, then the worker ends
/// worker.await.unwrap();
/// # }
/// ```
#[must_use = "a batcher does nothing unless its worker runs"]
pub struct Worker {
    fut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Future for Worker {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct LaneConfig {
    pub(crate) max_batch: usize,
    pub(crate) attempt_timeout: Option<std::time::Duration>,
    pub(crate) lanes: usize,
}

impl Worker {
    pub(crate) fn new<T, H>(shared: Arc<Shared<T>>, handler: H, cfg: LaneConfig, bufs: Vec<Vec<T>>) -> Self
    where
        T: Send + 'static,
        H: Handler<T>,
    {
        let handler = Arc::new(handler);
        #[allow(unused_mut, reason = "the store task joins only with the disk-store feature")]
        let mut lanes: Vec<Option<LaneFuture>> = bufs
            .into_iter()
            .enumerate()
            .map(|(id, buf)| {
                let lane = lane(Arc::clone(&shared), Arc::clone(&handler), cfg, id, buf);
                Some(Box::pin(lane) as LaneFuture)
            })
            .collect();
        #[cfg(feature = "disk-store")]
        if let Some(link) = shared.store.clone() {
            let task = crate::store_drive::store_task(Arc::clone(&shared), link, cfg.max_batch);
            lanes.push(Some(Box::pin(task)));
        }
        // Made here, not in the future: a worker dropped before its first poll (its runtime shut
        // down, or it was never spawned) must still mark the batcher finished.
        let finish = FinishGuard(Arc::clone(&shared));
        let id = shared.id();
        let fut = async move {
            let _finish = finish;
            if !crate::deadline::tokio_timers_available() {
                // A runtime built without `enable_time` (or polled outside tokio): no linger, no
                // retry delay could ever fire. Stop now; the finish guard closes the batcher and
                // keeps what was accepted for `shutdown`'s report.
                tracing::error!("batch-tokio: the worker runs without tokio timers; batcher stopped");
                return;
            }
            JoinAll { lanes }.await;
            if shared.aborted.load(Ordering::Acquire) {
                collect_remainder(&mut shared.lock());
            }
        };
        Self { fut: Box::pin(crate::shared::as_worker(id, fut)) }
    }
}

/// Marks the worker finished however it ends (drained, or dropped with its runtime, even
/// unpolled), and closes the core so that later adds hand their item back instead of buffering
/// items nobody will deliver.
struct FinishGuard<T>(Arc<Shared<T>>);

impl<T> Drop for FinishGuard<T> {
    fn drop(&mut self) {
        self.0.lock().core.close();
        // Staged runs go to the core (and so to the remainder, below, if nothing drains them).
        crate::stage::collect(&self.0);
        {
            let mut st = self.0.lock();
            if !st.core.is_finished() || !st.given_back.is_empty() {
                // Dropped before it drained (its runtime shut down, or its task was aborted):
                // the lanes gave their batches back as they were dropped; hand everything held
                // to the next `shutdown_timeout` rather than lose it silently.
                collect_remainder(&mut st);
            }
        }
        self.0.finished.store(true, Ordering::Release);
        self.0.done.notify_waiters();
        self.0.settled.notify_waiters();
        self.0.space.notify_waiters();
    }
}

/// Moves what a stopped worker still holds into the remainder: batches given back by lanes,
/// oldest first, then the buffer. All of it counts as returned.
pub(crate) fn collect_remainder<T>(st: &mut State<T>) {
    // Batches loaded from the store that no lane took: given back like a lane's.
    while let Some((flush, items)) = st.loaded.pop_front() {
        if st.core.abandon(flush.seq).is_some() {
            st.given_back.push((flush.seq, items));
        }
    }
    st.given_back.sort_by_key(|(seq, _)| *seq);
    for (_, mut items) in std::mem::take(&mut st.given_back) {
        st.remainder.append(&mut items);
    }
    let mut rest = Vec::with_capacity(st.core.len());
    st.core.take_buffered(&mut rest);
    st.remainder.append(&mut rest);
}

/// A lane's batch and the seq it holds, if any. Dropped while it holds a batch (the worker
/// dropped mid-attempt or mid-backoff, with its runtime), it gives the batch back as a shutdown
/// deadline does, so that its items reach the remainder instead of vanishing.
struct LaneBuf<T: 'static> {
    shared: Arc<Shared<T>>,
    batch: Batch<T>,
    holding: Option<u64>,
    /// The batch's write-ahead append is under way (its report is owed to the core).
    #[cfg(feature = "disk-store")]
    writing: bool,
}

impl<T: 'static> Drop for LaneBuf<T> {
    fn drop(&mut self) {
        if let Some(seq) = self.holding.take() {
            #[cfg(feature = "disk-store")]
            if self.writing {
                // Dropped mid-append: the core must not wait for a report that never comes.
                self.shared.lock().core.handle_written(seq, false);
            }
            give_back(&self.shared, seq, &mut self.batch);
        }
    }
}

impl<T: 'static> LaneBuf<T> {
    /// Empties the batch's buffer, outside the lock (the items' `Drop` is user code; a panic
    /// there is contained), keeping its allocation. A buffer a handler still shares is left to
    /// it and replaced.
    fn clear(&mut self, max_batch: usize) {
        if !self.batch.try_own() {
            self.batch.items = Items::Owned(Vec::with_capacity(max_batch));
        }
        if let Items::Owned(vec) = &mut self.batch.items {
            if !vec.is_empty() && std::panic::catch_unwind(AssertUnwindSafe(|| vec.clear())).is_err() {
                self.shared.panicked("an item's Drop");
            }
            // A buffer handed over with a dead letter is replaced by an empty one: room for the
            // next batch is made here, outside the lock.
            vec.reserve_exact(max_batch);
        }
    }

    /// The (cleared) buffer the next batch is cut into.
    fn buf(&mut self) -> &mut Vec<T> {
        match &mut self.batch.items {
            Items::Owned(vec) => vec,
            Items::Shared(..) => unreachable!("`clear` makes the buffer owned"),
        }
    }
}

type LaneFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Polls every lane until all have ended (lanes are few: `max_in_flight`).
struct JoinAll {
    lanes: Vec<Option<LaneFuture>>,
}

impl Future for JoinAll {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = false;
        for slot in &mut self.lanes {
            if let Some(lane) = slot {
                if lane.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    }
}

pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    tokio::time::sleep_until(at.unwrap_or_else(far_future)).await;
}

async fn lane<T, H>(shared: Arc<Shared<T>>, handler: Arc<H>, cfg: LaneConfig, id: usize, buf: Vec<T>)
where
    T: Send + 'static,
    H: Handler<T>,
{
    let mut lane = LaneBuf {
        shared: Arc::clone(&shared),
        batch: Batch::new(buf, 0, 1, batch_core::Trigger::Manual),
        holding: None,
        #[cfg(feature = "disk-store")]
        writing: false,
    };
    // One timer per lane, re-armed only when a batch is due earlier than it fires (quinn's
    // pattern): most batches are cut by size long before their linger deadline, so most never
    // touch the timer wheel.
    let mut timer = LaneTimer { sleep: Box::pin(tokio::time::sleep_until(far_future())), armed: None };
    let mut next = None;
    loop {
        let flush = match next.take() {
            Some(flush) => flush,
            None => match next_batch(&shared, &mut lane, cfg.max_batch, id, &mut timer).await {
                Some(flush) => flush,
                None => return,
            },
        };
        tracing::trace!(seq = flush.seq, len = flush.len, trigger = flush.trigger.name(), "batch cut");
        // No `.await` between the cut and here, nor between the end of `run_batch` and the
        // next cut: `holding` is exact at every point where the lane can be dropped.
        lane.holding = Some(flush.seq);
        #[cfg(feature = "disk-store")]
        if flush.write_ahead {
            write_ahead(&shared, &mut lane, flush.seq, flush.oldest_age).await;
        }
        let after = run_batch(&shared, &*handler, flush, &mut lane, cfg).await;
        match after {
            After::Next(cut) => next = cut,
            After::Aborted => return,
        }
    }
}

/// Appends the lane's batch to the store before its first attempt (write-ahead) and reports it.
#[cfg(feature = "disk-store")]
async fn write_ahead<T: 'static>(
    shared: &Shared<T>,
    lane: &mut LaneBuf<T>,
    seq: u64,
    age: batch_core::Duration,
) {
    let Some(link) = shared.store.as_ref() else {
        shared.lock().core.handle_written(seq, false);
        return;
    };
    lane.writing = true;
    let header = link.header(seq, shared.now(), age);
    let ok = crate::store_drive::write_ahead(link, header, lane.buf()).await;
    let waiters = {
        let mut st = shared.lock();
        st.core.handle_written(seq, ok);
        st.flush_waiters > 0
    };
    lane.writing = false;
    shared.store_wake();
    if waiters {
        shared.settled.notify_waiters();
    }
}

/// A lane's linger timer and the core instant it is armed for.
struct LaneTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl LaneTimer {
    /// Makes sure the timer fires no later than `due`. A timer armed for an earlier instant is
    /// kept: it fires early, and the lane re-checks.
    fn arm<T>(&mut self, shared: &Shared<T>, due: Option<Instant>, now: Instant) {
        if let Some(due) = due
            && self.armed.is_none_or(|armed| armed > due || armed <= now)
        {
            self.sleep.as_mut().reset(shared.to_tokio(due));
            self.armed = Some(due);
        }
    }
}

/// Waits for a batch to be due and cuts it into the lane's buffer. `None` when the batcher is
/// finished or a shutdown deadline aborted it.
async fn next_batch<T: 'static>(
    shared: &Shared<T>,
    lane: &mut LaneBuf<T>,
    max_batch: usize,
    id: usize,
    timer: &mut LaneTimer,
) -> Option<Flush> {
    loop {
        lane.clear(max_batch);
        let work = shared.work.notified();
        let abort = shared.abort.notified();
        {
            let mut st = shared.lock();
            st.idle[id] = None;
            if shared.aborted.load(Ordering::Acquire) {
                return None;
            }
            if let Some((flush, items)) = st.loaded.pop_front() {
                // A batch loaded from the store (older than anything in RAM): run it.
                drop(st);
                let old = std::mem::replace(lane.buf(), items);
                shared.drop_items(old);
                return Some(flush);
            }
            let now = shared.now();
            if !st.runs.is_empty()
                && st.core.len() < max_batch
                && st.core.next_cut().is_some_and(|due| due <= now)
            {
                // A batch that is not full is due: staged items join it, as they would have
                // without staging.
                drop(st);
                crate::stage::collect(shared);
                st = shared.lock();
            }
            // Items too old to send leave the front of the buffer before a cut (the core cuts
            // nothing while the front item is expired): to `on_expire`, outside the lock.
            if let Some(guard) = crate::expire::poll(shared, &mut st, lane.buf(), now) {
                drop(st);
                let items = std::mem::take(lane.buf());
                let batch = Batch::new(items, 0, 0, batch_core::Trigger::Manual);
                crate::expire::hand_over(shared, crate::handler::Expired { batch, seq: None });
                drop(guard);
                continue;
            }
            if let Some(flush) = cut(shared, &mut st, lane.buf(), now) {
                return Some(flush);
            }
            // Runs staged in the handles' areas: once the oldest is due, they all go to the core
            // (where the run's start anchors linger), and the lane looks again.
            let staged = crate::stage::oldest_run(&st).and_then(|since| st.core.staged_deadline(since));
            if staged.is_some_and(|due| due <= now) {
                drop(st);
                crate::stage::collect(shared);
                continue;
            }
            if st.core.is_finished() {
                drop(st);
                shared.work.notify_waiters();
                return None;
            }
            if st.waiting_producers > 0 {
                shared.space.notify_waiters();
            }
            let due = match (st.core.next_cut(), staged) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            timer.arm(shared, due, now);
            st.idle[id] = Some(timer.armed.filter(|&at| at > now).unwrap_or(Instant::MAX));
        }
        let armed = timer.armed.is_some();
        tokio::select! {
            biased;
            () = abort => {}
            () = work => {}
            () = timer.sleep.as_mut(), if armed => timer.armed = None,
        }
    }
}

/// Cuts the next due batch into `buf` (empty, with room for a batch), with the lock held, and
/// wakes who needs it.
fn cut<T>(shared: &Shared<T>, st: &mut State<T>, buf: &mut Vec<T>, now: Instant) -> Option<Flush> {
    let flush = st.core.poll_flush(now, buf)?;
    // Producers waiting for room are woken once half the buffer is free (or when a lane goes
    // idle): one wake-up per many batches, not one per batch.
    if st.waiting_producers > 0 && 2 * st.core.len() <= st.core.capacity() {
        shared.space.notify_waiters();
    }
    // Another idle lane may take the next batch if one is due too.
    let _ = st.core.poll_wake();
    if st.lane_needs_waking() {
        shared.work.notify_waiters();
    }
    Some(flush)
}

/// What a lane does after a batch.
enum After {
    /// Go on: with the next batch if it was cut in the same critical section as the completion.
    Next(Option<Flush>),
    /// A shutdown deadline cut it short: the lane ends.
    Aborted,
}

/// Runs the attempts of one batch until it is final, or a shutdown deadline aborts it (its items
/// go to the remainder, or are reported abandoned if a handler still holds them).
async fn run_batch<T, H>(
    shared: &Shared<T>,
    handler: &H,
    flush: Flush,
    lane: &mut LaneBuf<T>,
    cfg: LaneConfig,
) -> After
where
    T: Send + 'static,
    H: Handler<T>,
{
    let mut attempt = 1;
    loop {
        lane.batch.seq = flush.seq;
        lane.batch.attempt = attempt;
        lane.batch.trigger = flush.trigger;
        let abort = shared.abort.notified();
        let result = if shared.aborted.load(Ordering::Acquire) {
            None
        } else {
            let mut attempt = std::pin::pin!(run_attempt(handler, &mut lane.batch, cfg.attempt_timeout));
            // Polled once before `abort` is: a handler that finishes at once (a sync handler)
            // never registers in the abort list, whose lock would cost two round trips per
            // batch. `abort` was made above, so a deadline that fires from here on still wakes it.
            if let Some(r) = futures_lite::future::poll_once(attempt.as_mut()).await {
                Some(r)
            } else {
                tokio::select! {
                    biased;
                    () = abort => None,
                    r = attempt => Some(r),
                }
            }
        };
        let Some(result) = result else {
            return lane.give_back_and_stop();
        };
        let mut result = result;
        let mut rejected = Vec::new();
        let outcome = outcome_of(shared, &mut result, lane, &mut rejected, cfg.max_batch);
        // One critical section completes this batch and, when it was delivered, cuts the next:
        // half the lock traffic per batch.
        let (completion, next, callback, reject_callback) = {
            let mut st = shared.lock();
            let now = shared.now();
            let c = st.core.handle_completion(now, flush.seq, outcome);
            let _ = st.core.poll_wake();
            // A dead letter (expired items, rejected items) is final once `on_error`
            // (`on_expire`, `on_reject`) has it: a flush waits for that.
            let callback = matches!(c, Some(Completion::DeadLettered { .. } | Completion::Expired { .. }))
                .then(|| st.callback_starts(shared, flush.first_item));
            let reject_callback =
                (c.is_some() && !rejected.is_empty()).then(|| st.callback_starts(shared, flush.first_item));
            if st.flush_waiters > 0 {
                shared.settled.notify_waiters();
            }
            let next = match c {
                Some(Completion::Delivered { .. }) if !shared.aborted.load(Ordering::Acquire) => {
                    cut(shared, &mut st, lane.buf(), now)
                }
                _ => None,
            };
            if cfg.lanes > 1 && st.idle.iter().any(Option::is_some) {
                shared.work.notify_waiters();
            }
            (c, next, callback, reject_callback)
        };
        // A final batch that is in the store waits for its removal; a slot may be free to load.
        shared.store_wake();
        lane.holding = next.map(|f| f.seq);
        if !rejected.is_empty() {
            if completion.is_some() {
                crate::partial::hand_over(shared, flush.seq, attempt, rejected);
            } else {
                // A shutdown deadline took the batch over during the attempt: its items were
                // reported abandoned, these with them.
                shared.drop_items(rejected);
            }
        }
        drop(reject_callback);
        match (completion, result) {
            (Some(Completion::Delivered { .. }), _) => return After::Next(next),
            (Some(Completion::Retry { attempt: next, at }), Err(error)) => {
                lane.holding = Some(flush.seq);
                tracing::debug!(seq = flush.seq, attempt, retry_at_us = at.as_micros(), %error, "batch attempt failed; will retry");
                match wait_retry(shared, flush.seq, flush.first_item).await {
                    Waited::Attempt(n) => {
                        debug_assert_eq!(n, next);
                        attempt = n;
                    }
                    Waited::Expired(guard) => {
                        // The retry came too late (a pause, a busy runtime): too old to send.
                        tracing::debug!(seq = flush.seq, "batch expired at its retry");
                        lane.holding = None;
                        expire_held(shared, lane, &flush, attempt, guard);
                        shared.store_wake();
                        return After::Next(None);
                    }
                    Waited::Aborted => return lane.give_back_and_stop(),
                }
            }
            (Some(Completion::DeadLettered { attempts, len }), Err(error)) => {
                dead_letter(shared, lane, &flush, error, attempts, len);
                drop(callback);
                return After::Next(None);
            }
            (Some(Completion::Expired { len }), _) => {
                tracing::debug!(seq = flush.seq, len, "batch expired before its retry");
                expire_held(shared, lane, &flush, attempt, callback);
                return After::Next(None);
            }
            (None, _) => {
                // A shutdown deadline took this batch over while its attempt ran: it was
                // reported abandoned. Nothing more to do with it.
                return After::Aborted;
            }
            (completion, _) => {
                // The core and this lane disagree: a bug. Report it rather than loop.
                tracing::error!(seq = flush.seq, ?completion, "unexpected completion; batch state lost");
                return After::Next(None);
            }
        }
    }
}

/// What an attempt's result tells the core. A per-item answer shrinks the lane's batch to the
/// items to retry, in place, and moves the rejected ones into `rejected`; a delivered batch's
/// items go now, outside the lock.
fn outcome_of<T: 'static>(
    shared: &Shared<T>,
    result: &mut Result<(), BatchError>,
    lane: &mut LaneBuf<T>,
    rejected: &mut Vec<(T, crate::handler::BoxError)>,
    max_batch: usize,
) -> Outcome {
    if let Err(BatchError::Panicked(_)) = result {
        shared.lock().core.note_panic();
    }
    let outcome = match result {
        Ok(()) => Outcome::Delivered,
        Err(BatchError::Handler(e)) => match e.downcast_mut::<PartialFailure>() {
            Some(answer) => crate::partial::apply(shared, answer, &mut lane.batch, rejected),
            None => Outcome::Failed,
        },
        Err(_) => Outcome::Failed,
    };
    if outcome == Outcome::Delivered {
        lane.clear(max_batch);
    }
    outcome
}

/// Hands the lane's batch, which failed every attempt, to `on_error` (or logs it), containing
/// a panic.
fn dead_letter<T: 'static>(
    shared: &Shared<T>,
    lane: &mut LaneBuf<T>,
    flush: &Flush,
    error: BatchError,
    attempts: u32,
    len: usize,
) {
    let batch =
        std::mem::replace(&mut lane.batch, Batch::new(Vec::new(), flush.seq, attempts, flush.trigger));
    let letter = DeadLetter { batch };
    let contained = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if let Some(cb) = &shared.on_error {
            cb(error, letter);
        } else {
            tracing::error!(seq = flush.seq, attempts, len, %error, "batch dead-lettered (no error callback)");
            drop(letter);
        }
    }));
    if contained.is_err() {
        shared.panicked("on_error");
    }
}

impl<T: 'static> LaneBuf<T> {
    fn give_back_and_stop(&mut self) -> After {
        if let Some(seq) = self.holding.take() {
            give_back(&self.shared, seq, &mut self.batch);
        }
        After::Aborted
    }
}

/// Hands the lane's batch (too old for its next attempt) to `on_expire`; `guard` (the note
/// that keeps a `flush` waiting for the callback) is dropped after it.
fn expire_held<T: 'static, G>(
    shared: &Shared<T>,
    lane: &mut LaneBuf<T>,
    flush: &Flush,
    attempt: u32,
    guard: G,
) {
    let empty = Batch::new(Vec::new(), flush.seq, attempt, flush.trigger);
    let batch = std::mem::replace(&mut lane.batch, empty);
    crate::expire::hand_over(shared, crate::handler::Expired { batch, seq: Some(flush.seq) });
    drop(guard);
}

/// How a wait for a retry ended.
enum Waited<'a, T> {
    /// Run this attempt.
    Attempt(u32),
    /// Too old to send by now: final (expired); the guard covers the `on_expire` call.
    Expired(crate::shared::CallbackGuard<'a, T>),
    /// A shutdown deadline aborted it.
    Aborted,
}

/// Waits until the core lets batch `seq` (whose first item has acceptance index `first`) retry.
async fn wait_retry<T>(shared: &Shared<T>, seq: u64, first: u64) -> Waited<'_, T> {
    loop {
        let work = shared.work.notified();
        let abort = shared.abort.notified();
        let at = {
            let mut st = shared.lock();
            if shared.aborted.load(Ordering::Acquire) {
                return Waited::Aborted;
            }
            match st.core.poll_retry(shared.now(), seq) {
                Some(Retry::Attempt(attempt)) => return Waited::Attempt(attempt),
                Some(Retry::Expired { .. }) => {
                    let guard = st.callback_starts(shared, first);
                    if st.waiting_producers > 0 {
                        shared.space.notify_waiters();
                    }
                    return Waited::Expired(guard);
                }
                None => {}
            }
            if st.core.is_paused() { None } else { st.core.retry_at(seq).map(|at| shared.to_tokio(at)) }
        };
        tokio::select! {
            biased;
            () = abort => {}
            () = work => {}
            () = sleep_until(at) => {}
        }
    }
}

/// A shutdown deadline expired (or the worker was dropped) while this lane held batch `seq`:
/// hand its items back, or report them abandoned if a handler still holds them. If the deadline
/// already took the batch over (reported abandoned), the items are dropped, outside the lock.
fn give_back<T: 'static>(shared: &Shared<T>, seq: u64, batch: &mut Batch<T>) {
    let items = batch.take_items();
    let mut st = shared.lock();
    let late = if let Some(items) = items {
        if st.core.abandon(seq).is_some() {
            st.given_back.push((seq, items));
            None
        } else {
            Some(items)
        }
    } else {
        st.abandon_held(seq);
        None
    };
    drop(st);
    if let Some(items) = late {
        shared.drop_items(items);
    }
}

async fn run_attempt<T, H: Handler<T>>(
    handler: &H,
    batch: &mut Batch<T>,
    timeout: Option<std::time::Duration>,
) -> Result<(), BatchError> {
    let mut lend = Some(batch);
    let start = AssertUnwindSafe(|| lend.take().map(|batch| handler.handle(batch)));
    let fut = match std::panic::catch_unwind(start).map(Option::unwrap) {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind(),
        Err(panic) => return Err(BatchError::Panicked(panic_message(&*panic))),
    };
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => return Err(BatchError::TimedOut(limit)),
        },
        None => fut.await,
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(BatchError::Handler(e.into())),
        Err(panic) => Err(BatchError::Panicked(panic_message(&*panic))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
