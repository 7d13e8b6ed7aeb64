//! The worker: `max_in_flight` lanes, each taking a batch from the core, running the handler on
//! it through its retries, and reporting the outcome.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use batch_core::{Completion, Flush, Outcome};
use futures_lite::FutureExt as _;

use crate::handler::{Batch, BatchError, DeadLetter, Handler};
use crate::shared::{Shared, far_future};

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
    pub(crate) fn new<T, H>(shared: Arc<Shared<T>>, handler: H, cfg: LaneConfig) -> Self
    where
        T: Send + Sync + 'static,
        H: Handler<T>,
    {
        let handler = Arc::new(handler);
        let lanes: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = (0..cfg.lanes)
            .map(|_| {
                let lane = lane(Arc::clone(&shared), Arc::clone(&handler), cfg);
                Box::pin(lane) as Pin<Box<dyn Future<Output = ()> + Send>>
            })
            .collect();
        // Made here, not in the future: a worker dropped before its first poll (its runtime shut
        // down, or it was never spawned) must still mark the batcher finished.
        let finish = FinishGuard(Arc::clone(&shared));
        let fut = async move {
            let _finish = finish;
            JoinAll { lanes: lanes.into_iter().map(Some).collect() }.await;
            let mut st = shared.lock();
            if st.aborted {
                let st = &mut *st;
                // Oldest batches first, then the buffer.
                st.given_back.sort_by_key(|(seq, _)| *seq);
                for (_, mut items) in std::mem::take(&mut st.given_back) {
                    st.remainder.append(&mut items);
                }
                let mut rest = Vec::with_capacity(st.core.len());
                st.core.take_buffered(&mut rest);
                st.remainder.append(&mut rest);
            }
        };
        Self { fut: Box::pin(fut) }
    }
}

/// Marks the worker finished however it ends (drained, or dropped with its runtime, even
/// unpolled), and closes the core so that later adds hand their item back instead of buffering
/// items nobody will deliver.
struct FinishGuard<T>(Arc<Shared<T>>);

impl<T> Drop for FinishGuard<T> {
    fn drop(&mut self) {
        self.0.lock().core.close();
        self.0.finished.store(true, Ordering::Release);
        self.0.done.notify_waiters();
        self.0.settled.notify_waiters();
        self.0.space.notify_waiters();
    }
}

/// Polls every lane until all have ended (lanes are few: `max_in_flight`).
struct JoinAll {
    lanes: Vec<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
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

async fn sleep_until(at: Option<tokio::time::Instant>) {
    tokio::time::sleep_until(at.unwrap_or_else(far_future)).await;
}

/// An empty buffer with room for a batch, reusing the previous one when no handler kept it.
fn fresh<T>(buf: &mut Arc<Vec<T>>, max_batch: usize) -> &mut Vec<T> {
    if Arc::get_mut(buf).is_none() {
        *buf = Arc::new(Vec::with_capacity(max_batch));
    }
    let vec = Arc::get_mut(buf).expect("a new Arc has one owner");
    vec.clear();
    vec
}

async fn lane<T, H>(shared: Arc<Shared<T>>, handler: Arc<H>, cfg: LaneConfig)
where
    T: Send + Sync + 'static,
    H: Handler<T>,
{
    let mut buf: Arc<Vec<T>> = Arc::new(Vec::with_capacity(cfg.max_batch));
    while let Some(flush) = next_batch(&shared, &mut buf, cfg.max_batch).await {
        tracing::trace!(seq = flush.seq, len = flush.len, trigger = flush.trigger.name(), "batch cut");
        if !run_batch(&shared, &*handler, flush, &mut buf, cfg).await {
            return;
        }
    }
}

/// Waits for a batch to be due and cuts it into `buf`. `None` when the batcher is finished or a
/// shutdown deadline aborted it.
async fn next_batch<T>(shared: &Shared<T>, buf: &mut Arc<Vec<T>>, max_batch: usize) -> Option<Flush> {
    loop {
        let work = shared.work.notified();
        let abort = shared.abort.notified();
        let deadline = {
            let mut st = shared.lock();
            if st.aborted {
                return None;
            }
            if let Some(flush) = st.core.poll_flush(shared.now(), fresh(buf, max_batch)) {
                if st.waiting_producers > 0 {
                    shared.space.notify_waiters();
                }
                return Some(flush);
            }
            if st.core.is_finished() {
                drop(st);
                shared.work.notify_waiters();
                return None;
            }
            st.core.next_cut().map(|at| shared.to_tokio(at))
        };
        tokio::select! {
            biased;
            () = abort => {}
            () = work => {}
            () = sleep_until(deadline) => {}
        }
    }
}

/// Runs the attempts of one batch until it is final. `false` if a shutdown deadline aborted it
/// (its items went to the remainder).
async fn run_batch<T, H>(
    shared: &Shared<T>,
    handler: &H,
    flush: Flush,
    buf: &mut Arc<Vec<T>>,
    cfg: LaneConfig,
) -> bool
where
    T: Send + Sync + 'static,
    H: Handler<T>,
{
    let mut attempt = 1;
    loop {
        let batch = Batch { items: Arc::clone(buf), seq: flush.seq, attempt, trigger: flush.trigger };
        let abort = shared.abort.notified();
        let aborted = shared.lock().aborted;
        let result = if aborted {
            None
        } else {
            tokio::select! {
                biased;
                () = abort => None,
                r = run_attempt(handler, &batch, cfg.attempt_timeout) => Some(r),
            }
        };
        drop(batch);
        let Some(result) = result else {
            give_back(shared, flush.seq, buf);
            return false;
        };
        let outcome = if result.is_ok() { Outcome::Delivered } else { Outcome::Failed };
        let completion = {
            let mut st = shared.lock();
            let c = st.core.handle_completion(shared.now(), flush.seq, outcome);
            let _ = st.core.poll_wake();
            if st.flush_waiters > 0 {
                shared.settled.notify_waiters();
            }
            c
        };
        if cfg.lanes > 1 {
            shared.work.notify_waiters();
        }
        match (completion, result) {
            (Some(Completion::Delivered { .. }), _) => return true,
            (Some(Completion::Retry { attempt: next, at }), Err(error)) => {
                tracing::debug!(seq = flush.seq, attempt, retry_at_us = at.as_micros(), %error, "batch attempt failed; will retry");
                let Some(n) = wait_retry(shared, flush.seq).await else {
                    give_back(shared, flush.seq, buf);
                    return false;
                };
                debug_assert_eq!(n, next);
                attempt = n;
            }
            (Some(Completion::DeadLettered { attempts, len }), Err(error)) => {
                let items = std::mem::replace(buf, Arc::new(Vec::with_capacity(cfg.max_batch)));
                let letter = DeadLetter {
                    batch: Batch { items, seq: flush.seq, attempt: attempts, trigger: flush.trigger },
                };
                if let Some(cb) = &shared.on_error {
                    cb(error, letter);
                } else {
                    tracing::error!(seq = flush.seq, attempts, len, %error, "batch dead-lettered (no error callback)");
                }
                return true;
            }
            (completion, _) => {
                // The core and this lane disagree: a bug. Report it rather than loop.
                tracing::error!(seq = flush.seq, ?completion, "unexpected completion; batch state lost");
                return true;
            }
        }
    }
}

/// Waits until the core lets batch `seq` retry. `None` if a shutdown deadline aborted it.
async fn wait_retry<T>(shared: &Shared<T>, seq: u64) -> Option<u32> {
    loop {
        let work = shared.work.notified();
        let abort = shared.abort.notified();
        let at = {
            let mut st = shared.lock();
            if st.aborted {
                return None;
            }
            if let Some(attempt) = st.core.poll_retry(shared.now(), seq) {
                return Some(attempt);
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

/// A shutdown deadline expired while this lane held batch `seq`: hand its items back.
fn give_back<T>(shared: &Shared<T>, seq: u64, buf: &mut Arc<Vec<T>>) {
    let mut st = shared.lock();
    let _ = st.core.abandon(seq);
    if let Some(items) = Arc::get_mut(buf) {
        st.given_back.push((seq, std::mem::take(items)));
    } else {
        tracing::error!(
            seq,
            "a handler kept its batch past the shutdown deadline; its items cannot be returned"
        );
    }
}

async fn run_attempt<T, H: Handler<T>>(
    handler: &H,
    batch: &Batch<T>,
    timeout: Option<std::time::Duration>,
) -> Result<(), BatchError> {
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(batch))) {
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
