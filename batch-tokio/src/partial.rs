//! Per-item answers: a handler that hears back per item (an HTTP 207, a bulk insert, Kinesis
//! `PutRecords`) returns a [`PartialFailure`] as its error, naming the items to retry and the
//! items rejected for good (with a reason); every other item counts as delivered. Only the
//! items to retry are retried (same seq, next attempt, same back-off); rejected items go to
//! [`Builder::on_reject`](crate::Builder::on_reject) at once as [`RejectedItems`], and are
//! counted in [`Metrics::rejected_by_handler`](crate::Metrics::rejected_by_handler), apart from
//! items that failed every attempt.

use std::fmt;

use crate::handler::{Batch, BoxError};
use crate::shared::Shared;
use batch_core::Outcome;

/// A handler's per-item answer, returned as its error: which items (by index in the batch) to
/// retry, and which are rejected for good with a reason. Every item not named was delivered.
/// Only the items to retry are retried (same seq, next attempt, same back-off); rejected items
/// go to [`on_reject`](crate::Builder::on_reject) at once as [`RejectedItems`], and are counted
/// in [`Metrics::rejected_by_handler`](crate::Metrics::rejected_by_handler), apart from items
/// that failed every attempt.
///
/// ```
/// use batch_tokio::handler::PartialFailure;
/// let mut answer = PartialFailure::new();
/// answer.retry(0).reject(2, "temperature out of range");
/// assert_eq!(answer.retries(), &[0]);
/// assert_eq!(answer.to_string(), "partial failure: 1 item to retry, 1 rejected (first: temperature out of range)");
/// ```
///
/// In a handler:
/// ```
/// use batch_tokio::{Batcher, handler::{self, PartialFailure}};
/// use std::sync::{Arc, Mutex};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let refused = Arc::new(Mutex::new(Vec::new()));
/// let r = Arc::clone(&refused);
/// let b = Batcher::builder()
///     .on_reject(move |rejected| {
///         for (item, reason) in rejected.into_items() {
///             r.lock().unwrap().push(format!("{item}: {reason}"));
///         }
///     })
///     .spawn(handler::from_sync(|items: &[i32]| {
///         // As the sink answered: negative readings are malformed, the rest is stored.
///         let mut answer = PartialFailure::new();
///         for (i, &x) in items.iter().enumerate() {
///             if x < 0 {
///                 answer.reject(i, "negative");
///             }
///         }
///         if answer.is_empty() { Ok(()) } else { Err(answer) }
///     }))
///     .unwrap();
/// b.add_many([1, -2, 3]).await.unwrap();
/// b.flush().await;
/// assert_eq!(*refused.lock().unwrap(), ["-2: negative"]);
/// let m = b.metrics();
/// assert_eq!((m.delivered, m.rejected_by_handler, m.retries), (2, 1, 0));
/// # }
/// ```
///
/// # Why an error value, not marks on the batch
///
/// - One value decides the attempt: nothing half-set survives a handler that marks a few items
///   and then fails or panics (either is a plain failure of the whole attempt, as before).
/// - It works the same for every handler shape: [`from_sync`](crate::handler::from_sync) and
///   [`from_blocking`](crate::handler::from_blocking) see only `&[T]`, and a
///   [`from_fn`](crate::handler::from_fn) closure holds a shared handle, not the worker's batch.
/// - It is an `Err`: the batch was not all delivered, and `?`, logs and handlers that know
///   nothing of per-item answers keep their all-or-nothing meaning.
/// - Unnamed items count as delivered, as in the sinks' own answers (a list of failed records),
///   so a handler translates the sink's failure list item by item.
///
/// # Answers that do not fit the batch
///
/// A handler bug must not lose or duplicate items, nor panic the worker:
///
/// - An index out of range (`>= batch.len()`) means the answer does not describe this batch:
///   none of it is trusted, and the attempt fails as a whole (retried, then dead-lettered),
///   with an error logged.
/// - An index named twice: retry wins over reject (the item gets another attempt rather than
///   leaving for good); of two rejections the first reason is kept.
/// - An empty answer (`Err(PartialFailure::new())`) means every item was delivered.
/// - If the handler kept a [shared handle](crate::handler::Batch::share) on its batch beyond
///   the attempt, the worker cannot take the items apart by value: the attempt fails as a whole,
///   with an error logged.
///
/// The error reported for the items still to retry (the `on_error` callback's, if they fail
/// every attempt) is the last attempt's [`PartialFailure`], its rejections already handed over.
#[derive(Debug, Default)]
pub struct PartialFailure {
    retry: Vec<usize>,
    rejected: Vec<(usize, BoxError)>,
    /// Rejections named, also once handed over (for `Display`).
    rejected_named: usize,
    /// The first rejection's reason, kept for `Display` once the reasons are handed over.
    first_reason: Option<String>,
}

impl PartialFailure {
    /// An answer naming no item yet (as an error: every item was delivered).
    pub fn new() -> Self {
        Self::default()
    }

    /// Item `index` of the batch failed for now: it is retried with the next attempt.
    pub fn retry(&mut self, index: usize) -> &mut Self {
        self.retry.push(index);
        self
    }

    /// Item `index` of the batch is refused for good: it is not retried, and goes to
    /// [`on_reject`](crate::Builder::on_reject) with `reason`.
    pub fn reject(&mut self, index: usize, reason: impl Into<BoxError>) -> &mut Self {
        let reason = reason.into();
        if self.first_reason.is_none() {
            self.first_reason = Some(reason.to_string());
        }
        self.rejected.push((index, reason));
        self.rejected_named += 1;
        self
    }

    /// Whether no item is named (every item was delivered).
    pub fn is_empty(&self) -> bool {
        self.retry.is_empty() && self.rejected.is_empty()
    }

    /// The indexes named to retry, as given.
    pub fn retries(&self) -> &[usize] {
        &self.retry
    }

    /// The indexes rejected, with their reasons, as given (empty once the worker handed them
    /// to `on_reject`).
    pub fn rejections(&self) -> impl Iterator<Item = (usize, &BoxError)> {
        self.rejected.iter().map(|(i, r)| (*i, r))
    }

    /// Checks the answer against a batch of `len` items; takes the reasons out.
    fn plan(&mut self, len: usize) -> Result<Plan, usize> {
        if let Some(&bad) = self.retry.iter().chain(self.rejected.iter().map(|(i, _)| i)).find(|&&i| i >= len)
        {
            return Err(bad);
        }
        let mut marks = vec![Mark::Delivered; len];
        for &i in &self.retry {
            marks[i] = Mark::Retry;
        }
        let mut reasons = Vec::with_capacity(self.rejected.len());
        for (i, reason) in std::mem::take(&mut self.rejected) {
            if marks[i] == Mark::Delivered {
                marks[i] = Mark::Rejected;
                reasons.push((i, reason));
            }
        }
        // Handed over in item order, whatever the order named.
        reasons.sort_by_key(|(i, _)| *i);
        Ok(Plan { marks, reasons })
    }
}

impl fmt::Display for PartialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.retry.len();
        write!(
            f,
            "partial failure: {n} item{} to retry, {} rejected",
            if n == 1 { "" } else { "s" },
            self.rejected_named
        )?;
        if let Some(reason) = &self.first_reason {
            write!(f, " (first: {reason})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PartialFailure {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Delivered,
    Retry,
    Rejected,
}

/// An answer checked against its batch: one mark per item, the reasons in item order.
struct Plan {
    marks: Vec<Mark>,
    reasons: Vec<(usize, BoxError)>,
}

/// Items a handler rejected for good in one attempt of a batch, each with the handler's reason,
/// in batch order: what [`on_reject`](crate::Builder::on_reject) receives, by value.
///
/// ```
/// use batch_tokio::{Batcher, handler::{self, PartialFailure, RejectedItems}};
/// let b = Batcher::builder()
///     .on_reject(|rejected: RejectedItems<String>| {
///         for (line, reason) in rejected.iter() {
///             eprintln!("batch {}: dropped {line:?}: {reason}", rejected.seq());
///         }
///     })
///     .build(handler::from_sync(|_: &[String]| Ok::<_, PartialFailure>(())));
/// # let _ = b;
/// ```
pub struct RejectedItems<T> {
    seq: u64,
    attempt: u32,
    items: Vec<(T, BoxError)>,
}

impl<T: fmt::Debug> fmt::Debug for RejectedItems<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectedItems")
            .field("seq", &self.seq)
            .field("attempt", &self.attempt)
            .field("items", &self.items)
            .finish()
    }
}

impl<T> RejectedItems<T> {
    /// The batch's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The attempt that rejected them (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// How many items.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether there are none (never, as handed to `on_reject`).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// The items with their reasons, in batch order.
    pub fn iter(&self) -> impl Iterator<Item = (&T, &BoxError)> {
        self.items.iter().map(|(item, reason)| (item, reason))
    }
    /// The items with their reasons, by value.
    pub fn into_items(self) -> Vec<(T, BoxError)> {
        self.items
    }
}

/// Applies a per-item answer to the lane's batch: the items to retry stay in its buffer, in
/// order, in place; delivered items are dropped (outside the state lock, their `Drop`
/// contained); rejected items go to `rejected` with their reasons. Returns the outcome for the
/// core: `Delivered` for an empty answer, `Failed` for an answer that does not fit the batch or
/// a batch whose items the handler still shares.
pub(crate) fn apply<T: 'static>(
    shared: &Shared<T>,
    answer: &mut PartialFailure,
    batch: &mut Batch<T>,
    rejected: &mut Vec<(T, BoxError)>,
) -> Outcome {
    if answer.is_empty() {
        return Outcome::Delivered;
    }
    let len = batch.items().len();
    let plan = match answer.plan(len) {
        Ok(plan) => plan,
        Err(index) => {
            tracing::error!(
                seq = batch.seq(),
                index,
                len,
                "a per-item answer names an item the batch does not have; the attempt fails as a whole"
            );
            return Outcome::Failed;
        }
    };
    if !batch.try_own() {
        tracing::error!(
            seq = batch.seq(),
            "a per-item answer for a batch the handler still shares; the attempt fails as a whole"
        );
        return Outcome::Failed;
    }
    let Some(items) = batch.owned_mut() else { return Outcome::Failed };
    let Plan { marks, reasons } = plan;
    let mut delivered = Vec::new();
    let mut reasons = reasons.into_iter();
    let next = std::cell::Cell::new(0);
    let last = std::cell::Cell::new(0);
    // `extract_if` visits the items in order and keeps the rest in place: no new buffer.
    for item in items.extract_if(.., |_| {
        let i = next.get();
        next.set(i + 1);
        last.set(i);
        marks[i] != Mark::Retry
    }) {
        let last = last.get();
        if marks[last] == Mark::Rejected {
            let (_, reason) = reasons.next().unwrap_or_else(|| (last, "rejected".into()));
            rejected.push((item, reason));
        } else {
            delivered.push(item);
        }
    }
    let counts = (delivered.len() as u32, rejected.len() as u32);
    shared.drop_items(delivered);
    Outcome::Partial { delivered: counts.0, rejected: counts.1 }
}

/// Hands rejected items to `on_reject`, or logs and drops them. A panic in the callback (or in
/// an item's `Drop`) is contained and counted.
pub(crate) fn hand_over<T>(shared: &Shared<T>, seq: u64, attempt: u32, items: Vec<(T, BoxError)>) {
    let rejected = RejectedItems { seq, attempt, items };
    let contained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some(cb) = &shared.on_reject {
            cb(rejected);
        } else {
            let first = rejected.items.first().map(|(_, reason)| reason.to_string()).unwrap_or_default();
            tracing::warn!(
                seq,
                len = rejected.len(),
                first,
                "items rejected by the handler (no on_reject callback)"
            );
            drop(rejected);
        }
    }));
    if contained.is_err() {
        shared.panicked("on_reject");
    }
}
