//! Store and forward on a server: the worker's store task, the lanes' write-ahead, and the
//! durable add. The policy is batch-core's ([`batch_core::store`]); this module only performs
//! the operations the core asks for, one at a time, on a [`DiskStore`] whose database runs on a
//! thread of its own.
//!
//! - The **store task** runs beside the lanes inside the worker. It recovers the store first
//!   (adds wait until then: what the store kept is older than anything new), then loops:
//!   `poll_store`, perform, `handle_store`. A store operation is never raced against anything:
//!   once started it finishes (its transaction is on the store's thread anyway), so the core's
//!   view and the file never disagree about an operation cut short. A batch it loads goes to the
//!   next idle lane.
//! - A **lane** whose cut says `write_ahead` appends the batch before its first attempt, and
//!   reports with `handle_written`; if the lane is dropped mid-append (its runtime shut down),
//!   the write is reported failed so the core does not wait for it.
//! - [`Batcher::add_durable`](crate::Batcher::add_durable) adds an item as urgent (its batch is
//!   cut at once, with whatever else is buffered: one append, one `fsync`, for every item that
//!   arrived meanwhile) and resolves once the item is in the store or delivered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use batch_core::store::{Recovered, Store, StoreDone, StoreError, StoreOp, StoredBatch};
use batch_core::{Duration, Instant};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::disk_store::DiskStore;
use crate::shared::Shared;

type BoxFut<'a, R> = Pin<Box<dyn Future<Output = R> + Send + 'a>>;

/// A store operation's failure, without the store's error type.
#[derive(Debug)]
pub(crate) enum Failure {
    Full,
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("store full"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

impl<E: std::fmt::Debug> From<StoreError<E>> for Failure {
    fn from(e: StoreError<E>) -> Self {
        match e {
            StoreError::Full => Self::Full,
            other => Self::Other(format!("{other:?}")),
        }
    }
}

/// [`Store`] with boxed, `Send` futures, so the worker (a `Send` future) can hold any item
/// type's store.
pub(crate) trait ErasedStore<T>: Send {
    fn recover(&mut self) -> BoxFut<'_, Result<Recovered, Failure>>;
    fn append<'a>(&'a mut self, batch: StoredBatch, items: &'a [T]) -> BoxFut<'a, Result<(), Failure>>;
    fn read_after<'a>(
        &'a mut self,
        after: Option<u64>,
        out: &'a mut Vec<T>,
    ) -> BoxFut<'a, Result<Option<StoredBatch>, Failure>>;
    fn remove(&mut self, seq: u64) -> BoxFut<'_, Result<(), Failure>>;
    fn persist_seq_floor(&mut self, floor: u64) -> BoxFut<'_, Result<(), Failure>>;
    /// Closes the store and waits until its medium is released.
    fn close(self: Box<Self>) -> BoxFut<'static, ()>;
}

impl<T> ErasedStore<T> for DiskStore<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn recover(&mut self) -> BoxFut<'_, Result<Recovered, Failure>> {
        Box::pin(async move { Ok(Store::recover(self).await?) })
    }
    fn append<'a>(&'a mut self, batch: StoredBatch, items: &'a [T]) -> BoxFut<'a, Result<(), Failure>> {
        Box::pin(async move { Ok(Store::append(self, batch, items).await?) })
    }
    fn read_after<'a>(
        &'a mut self,
        after: Option<u64>,
        out: &'a mut Vec<T>,
    ) -> BoxFut<'a, Result<Option<StoredBatch>, Failure>> {
        Box::pin(async move { Ok(Store::read_after(self, after, out).await?) })
    }
    fn remove(&mut self, seq: u64) -> BoxFut<'_, Result<(), Failure>> {
        Box::pin(async move { Ok(Store::remove(self, seq).await?) })
    }
    fn persist_seq_floor(&mut self, floor: u64) -> BoxFut<'_, Result<(), Failure>> {
        Box::pin(async move { Ok(Store::persist_seq_floor(self, floor).await?) })
    }
    fn close(self: Box<Self>) -> BoxFut<'static, ()> {
        Box::pin(DiskStore::close(*self))
    }
}

/// A batcher's store, shared by its store task and its lanes (write-ahead).
pub(crate) struct StoreLink<T> {
    /// `None` once the store task closed it.
    store: tokio::sync::Mutex<Option<Box<dyn ErasedStore<T>>>>,
    /// Store work may be due: the buffer filled, a batch reached its final outcome, a resume.
    pub(crate) wake: Notify,
    /// The store clock (Unix time, in milliseconds) at core time zero: records keep their
    /// oldest item's birth on it, so ages at load count the time the process was down.
    unix_at_zero_ms: u64,
}

impl<T> StoreLink<T> {
    /// A link for a batcher whose core time is `now`.
    pub(crate) fn new(store: Box<dyn ErasedStore<T>>, now: Instant) -> Self {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let unix_ms = u64::try_from(unix.as_millis()).unwrap_or(u64::MAX);
        let unix_at_zero_ms = unix_ms.saturating_sub(now.as_millis());
        Self { store: tokio::sync::Mutex::new(Some(store)), wake: Notify::new(), unix_at_zero_ms }
    }

    /// The store clock at core time `now`: Unix time as of the batcher's start, advanced by
    /// tokio's clock since (monotonic, and virtual under paused time).
    pub(crate) fn clock_ms(&self, now: Instant) -> u64 {
        self.unix_at_zero_ms.saturating_add(now.as_millis())
    }

    /// The header to store batch `seq` under, its oldest item `age` old now.
    pub(crate) fn header(&self, seq: u64, now: Instant, age: Duration) -> StoredBatch {
        StoredBatch::at(seq, self.clock_ms(now), age)
    }

    /// Closes the store (once its last operation is done), releasing the file for the next
    /// process or batcher.
    async fn close(&self) {
        let store = self.store.lock().await.take();
        if let Some(store) = store {
            store.close().await;
        }
    }
}

/// Why [`Batcher::add_durable`](crate::Batcher::add_durable) did not confirm an item durable.
///
/// ```
/// use batch_tokio::{DurableError, PushError};
/// let e: DurableError<u32> = DurableError::Refused(PushError::Closed(7));
/// assert!(e.to_string().starts_with("the item was refused: "));
/// ```
#[derive(Debug, PartialEq, Eq)]
pub enum DurableError<T> {
    /// The item was not accepted (the batcher is closed, or the item is too heavy), and comes
    /// back.
    Refused(batch_core::PushError<T>),
    /// The item was accepted, but the batcher stopped at a shutdown deadline before it was
    /// stored or delivered: it is in that shutdown's report (remainder or abandoned).
    Stopped,
}

impl<T> std::fmt::Display for DurableError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) => write!(f, "the item was refused: {e}"),
            Self::Stopped => f.write_str("the batcher stopped before the item was stored"),
        }
    }
}

impl<T: std::fmt::Debug> std::error::Error for DurableError<T> {}

/// Runs store operations for the core until the batcher is finished or a shutdown deadline
/// aborts it.
pub(crate) async fn store_task<T: Send + 'static>(
    shared: Arc<Shared<T>>,
    link: Arc<StoreLink<T>>,
    max_batch: usize,
) {
    if recover(&shared, &link).await {
        serve(&shared, &link, max_batch).await;
    }
    link.close().await;
}

/// The store task's loop, once the store is recovered.
async fn serve<T: Send + 'static>(shared: &Shared<T>, link: &StoreLink<T>, max_batch: usize) {
    let mut io: Vec<T> = Vec::with_capacity(max_batch);
    loop {
        let wake = link.wake.notified();
        let work = shared.work.notified();
        let abort = shared.abort.notified();
        let (op, timeout) = {
            let mut st = shared.lock();
            if shared.aborted.load(Ordering::Acquire) || st.core.is_finished() {
                drop(st);
                shared.work.notify_waiters();
                return;
            }
            let op = st.core.poll_store(shared.now(), &mut io);
            (op, st.core.poll_timeout().map(|at| shared.to_tokio(at)))
        };
        let Some(op) = op else {
            tokio::select! {
                biased;
                () = abort => {}
                () = wake => {}
                () = work => {}
                () = crate::worker::sleep_until(timeout) => {}
            }
            continue;
        };
        tracing::trace!(?op, "store operation");
        perform(shared, link, op, &mut io, max_batch).await;
        // Room in RAM (a spill), a batch to run (a load), a slot freed (a removal), durability:
        // whoever waits on any of these looks again.
        shared.space.notify_waiters();
        shared.work.notify_waiters();
        shared.settled.notify_waiters();
    }
}

/// Recovers the store and opens the core. A failing store is retried (logged) until it answers
/// or the batcher stops; adds wait meanwhile. Returns `false` if the batcher stopped first.
async fn recover<T>(shared: &Shared<T>, link: &StoreLink<T>) -> bool {
    loop {
        let abort = shared.abort.notified();
        let found = match link.store.lock().await.as_mut() {
            Some(store) => store.recover().await,
            None => return false,
        };
        match found {
            Ok(found) => {
                let opened = shared.lock().core.recovered(found);
                debug_assert!(opened, "recovered once, with a store policy");
                tracing::info!(
                    batches = found.batches,
                    items = found.items,
                    seq_floor = found.seq_floor,
                    "store recovered"
                );
                shared.space.notify_waiters();
                shared.work.notify_waiters();
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, "store recovery failed; retrying");
                let delay = shared.lock().core.config().get_base_delay();
                if shared.aborted.load(Ordering::Acquire) {
                    return false;
                }
                tokio::select! {
                    biased;
                    () = abort => return false,
                    () = tokio::time::sleep(std::time::Duration::from_micros(delay.as_micros())) => {}
                }
            }
        }
    }
}

/// Performs one operation and reports it to the core.
async fn perform<T: Send + 'static>(
    shared: &Shared<T>,
    link: &StoreLink<T>,
    op: StoreOp,
    io: &mut Vec<T>,
    max_batch: usize,
) {
    let mut guard = link.store.lock().await;
    let Some(store) = guard.as_mut() else { return };
    let done = match op {
        StoreOp::PersistFloor { floor } => match store.persist_seq_floor(floor).await {
            Ok(()) => StoreDone::FloorPersisted,
            Err(e) => failed("persist the seq floor", &e),
        },
        StoreOp::Append { seq, len, age } => {
            debug_assert_eq!(io.len(), len);
            match store.append(link.header(seq, shared.now(), age), io).await {
                Ok(()) => {
                    shared.drop_items(std::mem::replace(io, Vec::with_capacity(max_batch)));
                    StoreDone::Appended
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "spill refused; the batch stays in RAM");
                    let full = matches!(e, Failure::Full);
                    shared.lock().core.unspill(shared.now(), full, io.drain(..));
                    return;
                }
            }
        }
        StoreOp::Load { after } => match store.read_after(after, io).await {
            Ok(Some(stored)) => {
                let batch = std::mem::replace(io, Vec::with_capacity(max_batch));
                let mut st = shared.lock();
                let (seq, len, now) = (stored.seq, batch.len(), shared.now());
                let age = stored.age_at(link.clock_ms(now));
                let flush = st.core.handle_store(now, StoreDone::Loaded { seq, len, age });
                if let Some(flush) = flush.filter(|f| f.expired) {
                    // Too old to send by now: to `on_expire`; the core removes it from the store.
                    let guard = st.callback_starts(shared, flush.first_item);
                    drop(st);
                    tracing::debug!(seq, len, age_ms = age.as_millis(), "stored batch expired");
                    let batch = crate::handler::Batch::new(batch, seq, 0, flush.trigger);
                    crate::expire::hand_over(shared, crate::handler::Expired { batch, seq: Some(seq) });
                    drop(guard);
                } else if let Some(flush) = flush {
                    st.loaded.push_back((flush, batch));
                } else {
                    drop(st);
                    tracing::error!(seq, "loaded batch refused by the core");
                    shared.drop_items(batch);
                }
                return;
            }
            Ok(None) => StoreDone::Empty,
            Err(e) => {
                shared.drop_items(std::mem::take(io));
                failed("read a stored batch", &e)
            }
        },
        StoreOp::Remove { seq } => match store.remove(seq).await {
            Ok(()) => StoreDone::Removed,
            Err(e) => failed("remove a final batch", &e),
        },
        StoreOp::Evict { after } => match store.read_after(after, io).await {
            Ok(Some(StoredBatch { seq, .. })) => match store.remove(seq).await {
                Ok(()) => {
                    let items = std::mem::replace(io, Vec::with_capacity(max_batch));
                    let len = items.len();
                    shared.lock().core.handle_store(shared.now(), StoreDone::Evicted { seq, len });
                    for item in items {
                        shared.evicted(item);
                    }
                    return;
                }
                Err(e) => {
                    shared.drop_items(std::mem::take(io));
                    failed("evict the oldest stored batch", &e)
                }
            },
            Ok(None) => StoreDone::Empty,
            Err(e) => failed("read the oldest stored batch", &e),
        },
    };
    drop(guard);
    let _ = shared.lock().core.handle_store(shared.now(), done);
}

fn failed(what: &str, e: &Failure) -> StoreDone {
    tracing::error!(error = %e, "store: could not {what}; retrying after the retry base delay");
    StoreDone::Failed
}

/// Appends a batch cut with `write_ahead` before its first attempt: `true` if the store holds it.
pub(crate) async fn write_ahead<T>(link: &StoreLink<T>, batch: StoredBatch, items: &mut Vec<T>) -> bool {
    let (mut guard, seq) = (link.store.lock().await, batch.seq);
    let Some(store) = guard.as_mut() else { return false };
    // The slice is only lent to the store's (`Send`) future: `T` need not be `Sync` here.
    let append = store.append(batch, items.as_slice());
    match append.await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(seq, error = %e, "write-ahead failed; the batch runs unprotected");
            false
        }
    }
}
