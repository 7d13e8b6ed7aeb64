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
//! finally handed to the error callback. None of them stops the batcher.
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

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use batch_core::Trigger;

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
/// It is a cheap handle: cloning it does not copy the items. Do not keep it after the handler's
/// future ends: the worker reuses the buffer, and a dead-lettered batch can only hand its items
/// over by value when nothing else holds them.
#[derive(Debug)]
pub struct Batch<T> {
    pub(crate) items: Arc<Vec<T>>,
    pub(crate) seq: u64,
    pub(crate) attempt: u32,
    pub(crate) trigger: Trigger,
}

impl<T> Clone for Batch<T> {
    fn clone(&self) -> Self {
        Self { items: Arc::clone(&self.items), seq: self.seq, attempt: self.attempt, trigger: self.trigger }
    }
}

impl<T> Batch<T> {
    /// The items, oldest first.
    pub fn items(&self) -> &[T] {
        &self.items
    }
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

impl<T> Deref for Batch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
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
#[derive(Debug)]
pub struct DeadLetter<T> {
    pub(crate) batch: Batch<T>,
}

impl<T> DeadLetter<T> {
    /// The items, oldest first.
    pub fn items(&self) -> &[T] {
        &self.batch.items
    }
    /// The batch's sequence number.
    pub fn seq(&self) -> u64 {
        self.batch.seq
    }
    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.batch.attempt
    }
    /// Takes the items by value. Fails (handing the letter back) only if a handler kept a clone
    /// of its [`Batch`] beyond its attempt.
    pub fn into_items(self) -> Result<Vec<T>, Self> {
        let Batch { items, seq, attempt, trigger } = self.batch;
        Arc::try_unwrap(items).map_err(|items| Self { batch: Batch { items, seq, attempt, trigger } })
    }
}

/// Delivers batches. Implement it for stateful sinks; use [`from_fn`] or [`from_sync`] for
/// closures. With `max_in_flight > 1` several attempts run at once on the same handler, hence
/// `&self` and `Sync`.
///
/// ```
/// use batch_tokio::handler::{Batch, Handler};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Sum(AtomicU64);
/// impl Handler<u64> for Sum {
///     type Error = std::convert::Infallible;
///     async fn handle(&self, batch: &Batch<u64>) -> Result<(), Self::Error> {
///         self.0.fetch_add(batch.iter().sum(), Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait Handler<T>: Send + Sync + 'static {
    /// What a failed attempt reports.
    type Error: Into<BoxError>;
    /// Delivers one batch (one attempt).
    fn handle(&self, batch: &Batch<T>) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A [`Handler`] from an async closure that takes an owned [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct FromFn<F>(F);

/// Wraps an async closure `|batch: Batch<T>| async move { ... }` as a [`Handler`].
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
    fn handle(&self, batch: &Batch<T>) -> impl Future<Output = Result<(), E>> + Send {
        (self.0)(batch.clone())
    }
}

/// A [`Handler`] from a sync closure over the items.
#[derive(Debug, Clone, Copy)]
pub struct FromSync<F>(F);

/// Wraps a sync closure `|items: &[T]| -> Result<(), E>` as a [`Handler`]. It runs on the
/// worker task: keep it short, or use [`from_fn`] with `spawn_blocking` for blocking work.
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
    F: Fn(&[T]) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    FromSync(f)
}

impl<T, F, E> Handler<T> for FromSync<F>
where
    T: Send + Sync + 'static,
    F: Fn(&[T]) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    type Error = E;
    // Runs on first poll, inside the worker's panic and timeout guards.
    #[allow(clippy::manual_async_fn, reason = "the trait's signature asks for `impl Future + Send`")]
    fn handle(&self, batch: &Batch<T>) -> impl Future<Output = Result<(), E>> + Send {
        async move { (self.0)(batch.items()) }
    }
}
