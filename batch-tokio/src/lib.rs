//! Tokio adapter for [`batch_core`]: collect items from any number of tasks and hand them to a
//! handler in batches, with retries, backpressure, pause/resume and a graceful drain.
//!
//! A [`Batcher`] is a cloneable `Send + Sync` handle over a worker future (tower's `Buffer`
//! shape): [`Builder::spawn`] spawns the worker, [`Builder::build`] returns it for you to spawn.
//! All batching policy lives in `batch-core`; this crate translates tokio time and tasks.
//! With the `metrics` feature, `MetricsExporter` publishes the counters through the `metrics`
//! facade under OpenTelemetry's names (module `export`).
//!
//! ```
//! use batch_tokio::{Batcher, handler::{self, Batch}};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let batcher = Batcher::builder()
//!     .max_batch(64)
//!     .linger(Duration::from_millis(100))
//!     .on_error(|error, letter| eprintln!("dead letter {}: {error}", letter.seq()))
//!     .spawn(handler::from_fn(|batch: Batch<String>| async move {
//!         // e.g. POST the batch; an Err is retried with backoff
//!         println!("sending {} lines (attempt {})", batch.len(), batch.attempt());
//!         Ok::<_, std::io::Error>(())
//!     }))
//!     .unwrap();
//!
//! batcher.add("hello".to_string()).await.unwrap();
//! batcher.try_add("world".to_string()).unwrap();
//! batcher.flush().await; // both delivered
//! batcher.shutdown().await;
//! # }
//! ```
//!
//! # Design notes
//!
//! - Producers do not share a lock per item. Each handle (each clone) that adds more than once
//!   gets a staging area of its own: a run's first item goes into the core under the state lock,
//!   the core grants places for up to 63 more (at most half the room left, never up to the next
//!   full batch), and the next items take only the handle's own lock, which no other producer
//!   touches. The next add after the places are used up hands the run over in one piece and
//!   starts the next one: one shared lock per run. Granted places count against the capacity
//!   (backpressure stays exact: a producer that finds the buffer full first takes back places
//!   other areas hold), staged items count as accepted and buffered in `metrics()`, and `flush`,
//!   `close`, shutdown and a worker that stops hand every area over first. The lanes arm their
//!   linger timer for the oldest staged run too and collect the areas once it is due or before
//!   they cut a batch that is not full, so linger stays anchored to the oldest accepted item.
//!   What staging gives up: with several producers, a size cut waits for the runs that complete
//!   the batch to be handed over (a single producer's size cut is exact), and items of
//!   different producers reach the handler in the order their runs were handed over (each
//!   producer's own items stay in order). With a weight limit or `Overflow::DropOldest` the core
//!   must see every item as it comes, and every add takes the state lock as before. The state
//!   lock is `parking_lot::Mutex` (it spins briefly before parking a thread, which measured 2-3x
//!   faster than `std::sync::Mutex` with four producers on two worker threads); it is never
//!   held across an `.await`, and a lane is woken only when the core says a batch became due
//!   and no lane is already on its way.
//! - Wake-ups use `tokio::sync::Notify` (part of tokio, which this crate needs anyway for timers)
//!   rather than `event-listener`/`async-lock`; `futures-lite` provides `catch_unwind`, so a
//!   panicking handler fails its attempt instead of the worker.
//! - The worker runs `max_in_flight` lanes; each lane keeps its batch buffer (reused, so no
//!   allocation per batch) through the batch's retries.
//! - Memory: the buffer (capacity), the in-flight table and one batch buffer per lane, all
//!   allocated when built and never grown; and per handle that adds more than once, a staging
//!   area of up to 63 items (its items count against the capacity).
//! - No `unsafe`: the staging area is a `Vec` behind the handle's own `parking_lot` lock (two
//!   uncontended atomic operations per item on a cache line the producer owns), not a lock-free
//!   ring.
#![forbid(unsafe_code)]

mod builder;
mod deadline;
#[cfg(feature = "disk-store")]
pub mod disk_store;
mod expire;
#[cfg(feature = "metrics")]
pub mod export;
mod handle;
pub mod handler;
mod partial;
mod shared;
mod shutdown;
mod stage;
#[cfg(feature = "disk-store")]
mod store_drive;
mod worker;

#[cfg(feature = "disk-store")]
pub use batch_core::store::StorePolicy;
pub use batch_core::{ConfigError, FlushCounts, Metrics, Overflow, PushError, Trigger};
pub use builder::{BuildError, Builder};
#[cfg(feature = "disk-store")]
pub use disk_store::{DiskStore, DiskStoreError};
#[cfg(feature = "metrics")]
pub use export::MetricsExporter;
pub use handle::{Batcher, Rejected, WeakBatcher};
pub use shutdown::{Abandoned, SHUTDOWN_GRACE, ShutdownReport};
#[cfg(feature = "disk-store")]
pub use store_drive::DurableError;
pub use worker::Worker;
