//! Tokio adapter for [`batch_core`]: collect items from any number of tasks and hand them to a
//! handler in batches, with retries, backpressure, pause/resume and a graceful drain.
//!
//! A [`Batcher`] is a cloneable `Send + Sync` handle over a worker future (tower's `Buffer`
//! shape): [`Builder::spawn`] spawns the worker, [`Builder::build`] returns it for you to spawn.
//! All batching policy lives in `batch-core`; this crate translates tokio time and tasks.
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
//! - Producers push straight into the core under one short-held lock: no channel send and no
//!   allocation per item, and a lane is woken only when the core says a batch became due and no
//!   lane is already on its way (about once per batch at most). An async lock (`async-lock`) is
//!   not needed because the lock is never held across an `.await`; a blocking lock is faster.
//!   It is `parking_lot::Mutex` rather than `std::sync::Mutex`: with four producers on two
//!   worker threads, per-item `add` ran 2-3x faster with it (it spins briefly before parking a
//!   thread; the std lock parked threads that then paid a context switch each).
//! - Wake-ups use `tokio::sync::Notify` (part of tokio, which this crate needs anyway for timers)
//!   rather than `event-listener`/`async-lock`; `futures-lite` provides `catch_unwind`, so a
//!   panicking handler fails its attempt instead of the worker.
//! - The worker runs `max_in_flight` lanes; each lane keeps its batch buffer (reused, so no
//!   allocation per batch) through the batch's retries.
//! - Memory: the buffer (capacity), the in-flight table and one batch buffer per lane, all
//!   allocated when built and never grown.
#![forbid(unsafe_code)]

mod builder;
mod deadline;
#[cfg(feature = "disk-store")]
pub mod disk_store;
mod handle;
pub mod handler;
mod shared;
mod shutdown;
mod worker;

pub use batch_core::{ConfigError, FlushCounts, Metrics, Overflow, PushError, Trigger};
pub use builder::{BuildError, Builder};
#[cfg(feature = "disk-store")]
pub use disk_store::{DiskStore, DiskStoreError};
pub use handle::{Batcher, Rejected, WeakBatcher};
pub use shutdown::{Abandoned, SHUTDOWN_GRACE, ShutdownReport};
pub use worker::Worker;
