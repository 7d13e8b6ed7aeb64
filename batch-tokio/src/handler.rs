//! What the worker calls with each batch.
//!
//! Three shapes, all turned into a [`Handler`]:
//!
//! - a type implementing [`Handler`] (a stateful sink: a database pool, an HTTP client);
//! - an async closure taking an owned [`Batch`], through [`from_fn`];
//! - a sync closure taking `&[T]`, through [`from_sync`].
//!
//! A handler returns `Ok(())` when the batch is delivered. An error, a panic or (with
//! `attempt_timeout`) a timeout fails that attempt; the batch is retried per the retry policy and
//! finally handed to the error callback. None of them stops the batcher. A handler that hears
//! back per item returns a [`PartialFailure`] instead: only the items it names to retry are
//! retried, and the items it rejects go to the reject callback with their reasons.
//!
//! ```
//! use batch_tokio::handler::{self, Batch};
//!
//! let h = handler::from_fn(|batch: Batch<u32>| async move {
//!     println!("batch {} (attempt {}): {:?}", batch.seq(), batch.attempt(), &batch[..]);
//!     Ok::<_, std::io::Error>(())
//! });
//! # let _ = h;
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use batch_core::Trigger;

pub use crate::expire::Expired;
pub use crate::partial::{PartialFailure, RejectedItems};

/// A boxed error, as handlers report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A batch handed to the handler: its items (oldest first) and where it stands.
///
/// ```
/// use batch_tokio::{Trigger, handler::{self, Batch}};
/// let h = handler::from_fn(|b: Batch<u32>| async move {
///     let total: u32 = b.iter().sum(); // derefs to `[u32]`
///     println!("seq {} attempt {} via {:?}: {total}", b.seq(), b.attempt(), b.trigger());
///     Ok::<_, std::io::Error>(())
/// });
/// # let _ = (h, Trigger::Size);
/// ```
///
/// A [`Handler`] gets it by `&mut` (the worker keeps it through the retries); a closure made with
/// [`from_fn`] gets an owned handle that shares the items (cloning it does not copy them). If
/// such a handle outlives its attempt (moved into a detached task or `spawn_blocking` that is
/// still running), the worker cannot take the items back by value: a dead letter then has no
/// items to give ([`DeadLetter::into_items`] fails) and a shutdown deadline reports the batch as
/// [`Abandoned`](crate::Abandoned) instead of returning it.
pub struct Batch<T> {
    pub(crate) items: Items<T>,
    pub(crate) seq: u64,
    pub(crate) attempt: u32,
    pub(crate) trigger: Trigger,
}

/// Where a batch's items are: owned by the worker, or shared with a [`from_fn`] closure (type
/// erased so that `Batch<T>` is `Send` for any `T: Send`; only [`from_fn`], which needs
/// `T: Sync`, ever shares).
pub(crate) enum Items<T> {
    Owned(Vec<T>),
    Shared(Box<dyn Any + Send>, std::marker::PhantomData<fn() -> T>),
}

impl<T: fmt::Debug + 'static> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("seq", &self.seq)
            .field("attempt", &self.attempt)
            .field("trigger", &self.trigger)
            .field("items", &self.items())
            .finish()
    }
}

impl<T: 'static> Batch<T> {
    pub(crate) fn new(items: Vec<T>, seq: u64, attempt: u32, trigger: Trigger) -> Self {
        Self { items: Items::Owned(items), seq, attempt, trigger }
    }

    /// The items, oldest first.
    pub fn items(&self) -> &[T] {
        match &self.items {
            Items::Owned(v) => v,
            Items::Shared(any, _) => any.downcast_ref::<Arc<Vec<T>>>().map_or(&[], |v| v.as_slice()),
        }
    }

    /// Takes the items back by value if nothing else holds them (`Err(self)` otherwise).
    pub(crate) fn try_own(&mut self) -> bool {
        let Items::Shared(any, _) = &mut self.items else { return true };
        let Some(arc) = any.downcast_mut::<Arc<Vec<T>>>() else { return false };
        let Some(v) = Arc::get_mut(arc) else { return false };
        let v = std::mem::take(v);
        self.items = Items::Owned(v);
        true
    }

    /// The items' buffer, if the worker owns it.
    pub(crate) fn owned_mut(&mut self) -> Option<&mut Vec<T>> {
        match &mut self.items {
            Items::Owned(v) => Some(v),
            Items::Shared(..) => None,
        }
    }

    /// The items by value, if nothing else holds them.
    pub(crate) fn take_items(&mut self) -> Option<Vec<T>> {
        if !self.try_own() {
            return None;
        }
        match &mut self.items {
            Items::Owned(v) => Some(std::mem::take(v)),
            Items::Shared(..) => None,
        }
    }
}

impl<T: Send + Sync + 'static> Batch<T> {
    /// Another handle on the same items, without copying them: for handing the batch to
    /// `spawn_blocking` or another task. See the type's notes on keeping one beyond its attempt.
    ///
    /// ```
    /// use batch_tokio::handler::{self, Batch};
    /// let h = handler::from_fn(|mut batch: Batch<String>| async move {
    ///     let shared = batch.share();
    ///     tokio::task::spawn_blocking(move || shared.len()).await.map(drop)
    /// });
    /// # let _ = h;
    /// ```
    #[must_use]
    pub fn share(&mut self) -> Self {
        if let Items::Owned(v) = &mut self.items {
            let arc: Arc<Vec<T>> = Arc::new(std::mem::take(v));
            self.items = Items::Shared(Box::new(arc), std::marker::PhantomData);
        }
        let arc = match &self.items {
            Items::Shared(any, _) => any.downcast_ref::<Arc<Vec<T>>>().map(Arc::clone),
            Items::Owned(_) => None,
        };
        let arc = arc.unwrap_or_default();
        Self {
            items: Items::Shared(Box::new(arc), std::marker::PhantomData),
            seq: self.seq,
            attempt: self.attempt,
            trigger: self.trigger,
        }
    }
}

impl<T> Batch<T> {
    /// The batch's sequence number (0, 1, 2, ... in cut order; the same on every retry).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The attempt number: 1 for the first, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Why the batch was cut.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }
}

impl<T: 'static> Deref for Batch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.items()
    }
}

/// Why an attempt failed.
///
/// ```
/// use batch_tokio::handler::BatchError;
/// let e = BatchError::Panicked("index out of bounds".into());
/// assert_eq!(e.to_string(), "handler panicked: index out of bounds");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum BatchError {
    /// The handler returned an error.
    Handler(BoxError),
    /// The handler panicked; the message if it was a string.
    Panicked(String),
    /// The attempt ran past `attempt_timeout` and was cancelled.
    TimedOut(std::time::Duration),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handler(e) => write!(f, "handler failed: {e}"),
            Self::Panicked(msg) => write!(f, "handler panicked: {msg}"),
            Self::TimedOut(d) => write!(f, "handler timed out after {d:?}"),
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Handler(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A batch that failed every attempt, handed to the error callback with ownership of its items.
///
/// ```
/// use batch_tokio::{Batcher, handler};
/// use std::sync::{Arc, Mutex};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let kept = Arc::new(Mutex::new(Vec::new()));
/// let k = Arc::clone(&kept);
/// let b = Batcher::builder()
///     .max_attempts(2)
///     .on_error(move |_error, letter| k.lock().unwrap().extend(letter.into_items().unwrap()))
///     .spawn(handler::from_sync(|_: &[u8]| Err("uplink down")))
///     .unwrap();
/// b.add_many([1, 2]).await.unwrap();
/// b.flush().await;
/// assert_eq!(*kept.lock().unwrap(), vec![1, 2]);
/// # }
/// ```
pub struct DeadLetter<T> {
    pub(crate) batch: Batch<T>,
}

impl<T: fmt::Debug + 'static> fmt::Debug for DeadLetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter").field("batch", &self.batch).finish()
    }
}

impl<T: 'static> DeadLetter<T> {
    /// The items, oldest first.
    pub fn items(&self) -> &[T] {
        self.batch.items()
    }
    /// The batch's sequence number.
    pub fn seq(&self) -> u64 {
        self.batch.seq
    }
    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.batch.attempt
    }
    /// Takes the items by value. Fails (handing the letter back) only if a handler kept a
    /// [shared handle](Batch::share) on its batch beyond its attempt.
    pub fn into_items(mut self) -> Result<Vec<T>, Self> {
        self.batch.take_items().ok_or(self)
    }
}

/// Delivers batches. Implement it for stateful sinks; use [`from_fn`], [`from_sync`] or
/// [`from_blocking`] for closures. With `max_in_flight > 1` several attempts run at once on the
/// same handler, hence `&self` and `Sync`.
///
/// The worker keeps the batch through its retries and lends it by `&mut` for each attempt. The
/// future runs on the worker's task: it must not block its thread (blocking work belongs in
/// `spawn_blocking`, or use [`from_blocking`]). An error, a panic (when the future is created or
/// while it runs) or an `attempt_timeout` fails the attempt; none of them stops the batcher.
///
/// ```
/// use batch_tokio::handler::{Batch, Handler};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Sum(AtomicU64);
/// impl Handler<u64> for Sum {
///     type Error = std::convert::Infallible;
///     async fn handle(&self, batch: &mut Batch<u64>) -> Result<(), Self::Error> {
///         self.0.fetch_add(batch.iter().sum(), Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait Handler<T>: Send + Sync + 'static {
    /// What a failed attempt reports.
    type Error: Into<BoxError>;
    /// Delivers one batch (one attempt).
    fn handle(&self, batch: &mut Batch<T>) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A [`Handler`] from an async closure that takes an owned [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct FromFn<F>(F);

/// Wraps an async closure `|batch: Batch<T>| async move { ... }` as a [`Handler`]. The closure
/// gets a handle that shares the items with the worker, hence `T: Sync`.
///
/// ```
/// use batch_tokio::handler::{from_fn, Batch};
/// let h = from_fn(|b: Batch<String>| async move {
///     if b.is_empty() { Err("empty") } else { Ok(()) }
/// });
/// # let _ = h;
/// ```
pub fn from_fn<T, F, Fut, E>(f: F) -> FromFn<F>
where
    T: Send + Sync + 'static,
    F: Fn(Batch<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    FromFn(f)
}

impl<T, F, Fut, E> Handler<T> for FromFn<F>
where
    T: Send + Sync + 'static,
    F: Fn(Batch<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    type Error = E;
    fn handle(&self, batch: &mut Batch<T>) -> impl Future<Output = Result<(), E>> + Send {
        (self.0)(batch.share())
    }
}

/// A [`Handler`] from a sync closure over the items, run on the worker's task.
#[derive(Debug, Clone, Copy)]
pub struct FromSync<F>(F);

/// Wraps a sync closure `|items: &[T]| -> Result<(), E>` as a [`Handler`] that runs on the
/// worker's task: for quick, non-blocking work (counting, pushing into a channel). While it runs,
/// the worker does nothing else and its thread runs no other task, and an `attempt_timeout`
/// cannot interrupt it; use [`from_blocking`] for anything that blocks (files, SQLite, a
/// blocking client).
///
/// ```
/// use batch_tokio::handler::from_sync;
/// let h = from_sync(|items: &[u8]| -> Result<(), std::io::Error> {
///     println!("{} items", items.len());
///     Ok(())
/// });
/// # let _ = h;
/// ```
pub fn from_sync<T, F, E>(f: F) -> FromSync<F>
where
    T: Send + 'static,
    F: Fn(&[T]) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    FromSync(f)
}

impl<T, F, E> Handler<T> for FromSync<F>
where
    T: Send + 'static,
    F: Fn(&[T]) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError> + Send,
{
    type Error = E;
    // Runs inside the worker's panic guard, before the (ready) future is returned, so the future
    // holds no borrow of the items and `T` need not be `Sync`.
    fn handle(&self, batch: &mut Batch<T>) -> impl Future<Output = Result<(), E>> + Send {
        std::future::ready((self.0)(batch.items()))
    }
}

/// A [`Handler`] from a blocking closure, run on tokio's blocking thread pool.
#[derive(Debug)]
pub struct FromBlocking<F>(Arc<F>);

/// Wraps a blocking closure `|items: &[T]| -> Result<(), E>` as a [`Handler`] that runs on
/// tokio's blocking pool (`spawn_blocking`), so a slow disk, a SQLite transaction or a blocking
/// client never holds up producers, timers or other tasks. Its panics fail the attempt. An
/// `attempt_timeout` or a shutdown deadline stops waiting for it but cannot stop the thread: the
/// batch is then reported as [`Abandoned`](crate::Abandoned) (it may or may not have reached
/// the sink), never as returned.
///
/// ```
/// use batch_tokio::handler::from_blocking;
/// let h = from_blocking(|rows: &[String]| -> Result<(), std::io::Error> {
///     // e.g. one SQLite transaction for the whole batch
///     let _ = rows;
///     Ok(())
/// });
/// # let _ = h;
/// ```
pub fn from_blocking<T, F, E>(f: F) -> FromBlocking<F>
where
    T: Send + Sync + 'static,
    F: Fn(&[T]) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError> + Send + 'static,
{
    FromBlocking(Arc::new(f))
}

impl<T, F, E> Handler<T> for FromBlocking<F>
where
    T: Send + Sync + 'static,
    F: Fn(&[T]) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError> + Send + 'static,
{
    type Error = BoxError;
    fn handle(&self, batch: &mut Batch<T>) -> impl Future<Output = Result<(), BoxError>> + Send {
        let f = Arc::clone(&self.0);
        let shared = batch.share();
        let task = tokio::task::spawn_blocking(move || f(shared.items()).map_err(Into::into));
        async move {
            match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(Box::new(e) as BoxError),
            }
        }
    }
}
