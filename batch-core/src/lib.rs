//! A `no_std`, allocation-free, sans-IO batching engine.
//!
//! `batch-core` collects items and decides when to hand them to a handler in batches: when a
//! batch is full (`max_batch` items, or the next item would exceed `max_weight`), when its oldest
//! item has waited `linger`, on a manual flush or an urgent item, and when closing. It retries
//! failed batches with exponential backoff, limits how many batches are in flight, pushes back
//! when full, pauses and resumes, and keeps counters that always add up. It never reads a clock,
//! spawns a task or calls the handler: an adapter (`batch-tokio`, `batch-embassy`, or a test's
//! virtual clock) drives it.
//!
//! # The driver loop
//!
//! A driver owns the core (usually behind a lock), a batch buffer per flight slot, and a timer.
//!
//! 1. Producers call [`push`](BatchCore::push) (or [`push_urgent`](BatchCore::push_urgent)) with
//!    `now`; an `Err` hands the item back. If [`must_wait`](BatchCore::must_wait) is true an async
//!    producer waits for room instead. After any input, [`poll_wake`](BatchCore::poll_wake) says
//!    whether the runner needs waking.
//! 2. The runner calls [`poll_flush`](BatchCore::poll_flush) until it returns `None`; each
//!    [`Flush`] is a batch moved into the runner's buffer, with its sequence number and trigger.
//! 3. It runs the handler on each batch and reports with
//!    [`handle_completion`](BatchCore::handle_completion): [`Completion::Delivered`] frees the
//!    slot; [`Completion::Retry`] keeps it, and the runner asks
//!    [`poll_retry`](BatchCore::poll_retry) from the given instant on; a
//!    [`Completion::DeadLettered`] batch goes to the error callback.
//! 4. With nothing to do, it sleeps until [`poll_timeout`](BatchCore::poll_timeout) (no timer at
//!    all when that is `None`) or until woken, then goes back to step 2.
//! 5. [`close`](BatchCore::close) starts the drain; the runner stops when
//!    [`is_finished`](BatchCore::is_finished).
//!
//! ```
//! use batch_core::{Batch, Batcher, Completion, Config, Duration, Instant, Outcome};
//!
//! let mut core: Batcher<u32, 16> =
//!     Batcher::new(Config::new().max_batch(4).linger(Duration::from_millis(50)));
//! let mut now = Instant::ZERO;
//! let mut delivered = Vec::new();
//! for i in 0..10 {
//!     core.push(now, i).unwrap();
//! }
//! core.close();
//! let mut batch = Batch::<u32, 16>::new();
//! while !core.is_finished() {
//!     while let Some(flush) = core.poll_flush(now, &mut batch) {
//!         delivered.extend(batch.iter().copied()); // "the handler"
//!         batch.clear();
//!         let done = core.handle_completion(now, flush.seq, Outcome::Delivered);
//!         assert!(matches!(done, Some(Completion::Delivered { .. })));
//!     }
//!     if let Some(t) = core.poll_timeout() {
//!         now = t; // a real driver sleeps until `t` or until woken
//!     }
//! }
//! assert_eq!(delivered, (0..10).collect::<Vec<_>>());
//! assert!(core.metrics().is_consistent());
//! ```
//!
//! # Guarantees
//!
//! - **Order**: items reach batches in acceptance order; batches get increasing sequence numbers
//!   and start in that order. With `max_in_flight = 1` (the default) batch n+1 starts only after
//!   batch n is final, retries included.
//! - **Linger**: a batch is due once its oldest item has waited `linger`; an idle core sets no
//!   deadline. Arrival times are kept per batch boundary, not per item (no timestamp per item
//!   in RAM): the anchor is exact for the common cases (the first item of a batch, and up to four
//!   batches queued behind a busy slot) and otherwise never later than the true arrival, so
//!   linger is never exceeded and `oldest_age` / `max_item_age` are exact or slight upper bounds.
//! - **Nothing is lost silently**: every refusal, eviction, dead letter and deadline shutdown hands
//!   the items back, and [`Metrics::is_consistent`] holds after every call.
//! - **Memory** is the storage the core was built with; nothing is allocated or grown.
//!
//! # Features
//!
//! - `metrics` (default): the counters, `BatchCore::metrics()` and the identity
//!   [`Metrics::is_consistent`] checks. A firmware that needs no counters leaves it out
//!   (`default-features = false`): the same state machine without them, about 240 bytes of code
//!   and 104 bytes of state smaller on a Cortex-M4; `metrics()` does not exist then.
//! - `defmt`: derives `defmt::Format` on public types.
//! - `alloc`: run-time sized storage ([`storage::FixedDeque`], `Vec` slot tables) for adapters
//!   on std; off by default, so the core needs no allocator.
//! - `store`: store and forward's storage side: the batch record format (postcard, CRC-32)
//!   and the async `store::Store` trait that flash and disk stores implement.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batcher;
mod config;
mod error;
mod metrics;
pub mod storage;
#[cfg(feature = "store")]
pub mod store;
mod time;

pub use crate::batcher::{Batch, BatchCore, Batcher, Completion, Flush, FlushToken, Outcome, Retry};
pub use crate::config::{Config, ConfigError, Overflow};
pub use crate::error::PushError;
pub use crate::metrics::{Count, FlushCounts, Metrics, Trigger};
pub use crate::time::{Duration, Instant};

/// Whether this build of batch-core has the `uplink` feature (expiry and pacing). Without it
/// [`Retry::Expired`] and [`Completion::Expired`] never occur, and a driver that tests this
/// constant before its expiry path pays nothing for the path (whatever its own features).
///
/// ```
/// assert_eq!(batch_core::UPLINK, cfg!(feature = "uplink"));
/// ```
pub const UPLINK: bool = cfg!(feature = "uplink");
