//! The implementations under test: batch-tokio, its peers and the single-thread limit.
//!
//! Every implementation takes the items `0..n` from `producers` tokio tasks (each a contiguous
//! share, see [`share`]), cuts batches of at most `batch` items or after
//! [`LINGER`](crate::workload::LINGER) since a batch's first item, calls
//! [`consume`](crate::workload::consume) on each batch, and returns what the handler saw once
//! every item was handled. Channel-based peers get a bound of [`CAPACITY`], the same room as
//! batch-tokio's buffer.

mod batch_tokio;
mod flume;
mod futures_batch;
mod limit;
mod recv_many;
mod tokio_stream;

use std::fmt;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::workload::{CAPACITY, Item, Tally, share};

/// What part an implementation plays in the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The project under test.
    Subject,
    /// Another way to batch on tokio; the best of them is the yardstick.
    Peer,
    /// No synchronisation at all: one thread filling a buffer.
    Limit,
}

/// One implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Impl {
    /// `Batcher::add(item).await` per item.
    BatchTokioAdd,
    /// `Batcher::add_many(chunk).await` with chunks of [`CHUNK`](crate::workload::CHUNK) items.
    BatchTokioAddMany,
    /// Bounded `tokio::sync::mpsc` wrapped in a `ReceiverStream` with tokio-stream's
    /// `chunks_timeout`.
    TokioStreamChunks,
    /// Bounded `tokio::sync::mpsc` wrapped in a `ReceiverStream` with futures-batch's
    /// `ChunksTimeout`.
    FuturesBatch,
    /// Bounded `tokio::sync::mpsc`, a consumer filling its batch with `recv_many` until full or
    /// a `tokio::time::sleep` deadline fires (`select!`), as written by hand.
    RecvMany,
    /// Like [`RecvMany`](Self::RecvMany), but producers reserve room for a chunk at once with
    /// `Sender::reserve_many` (the like-for-like peer of `add_many`).
    ReserveMany,
    /// A bounded flume channel: `recv_async` for a batch's first item, then `try_recv` up to
    /// the batch size, waiting (`recv_async` against the deadline) only when it runs dry.
    Flume,
    /// One thread filling a `heapless::Vec<T, B>`, calling the handler when it is full.
    LimitHeapless,
    /// One thread filling a `Vec<T>` with room for the batch, calling the handler when full.
    LimitVec,
}

impl Impl {
    /// Every implementation, in report order.
    pub(crate) const ALL: [Self; 9] = [
        Self::BatchTokioAdd,
        Self::BatchTokioAddMany,
        Self::TokioStreamChunks,
        Self::FuturesBatch,
        Self::RecvMany,
        Self::ReserveMany,
        Self::Flume,
        Self::LimitHeapless,
        Self::LimitVec,
    ];

    /// The name on the command line (`--only`).
    pub(crate) fn id(self) -> &'static str {
        match self {
            Self::BatchTokioAdd => "batch-tokio-add",
            Self::BatchTokioAddMany => "batch-tokio-add-many",
            Self::TokioStreamChunks => "tokio-stream-chunks",
            Self::FuturesBatch => "futures-batch",
            Self::RecvMany => "mpsc-recv-many",
            Self::ReserveMany => "mpsc-reserve-many",
            Self::Flume => "flume",
            Self::LimitHeapless => "limit-heapless",
            Self::LimitVec => "limit-vec",
        }
    }

    /// The name in tables and the chart.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::BatchTokioAdd => "batch-tokio add",
            Self::BatchTokioAddMany => "batch-tokio add_many",
            Self::TokioStreamChunks => "mpsc + tokio-stream chunks_timeout",
            Self::FuturesBatch => "mpsc + futures-batch",
            Self::RecvMany => "mpsc recv_many + sleep",
            Self::ReserveMany => "mpsc reserve_many + recv_many",
            Self::Flume => "flume bulk drain",
            Self::LimitHeapless => "limit: heapless::Vec",
            Self::LimitVec => "limit: Vec",
        }
    }

    /// Parses [`id`](Self::id).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.id() == s)
    }

    /// Its part in the comparison.
    pub(crate) fn role(self) -> Role {
        match self {
            Self::BatchTokioAdd | Self::BatchTokioAddMany => Role::Subject,
            Self::LimitHeapless | Self::LimitVec => Role::Limit,
            _ => Role::Peer,
        }
    }

    /// Whether producers hand over chunks rather than single items.
    pub(crate) fn bulk(self) -> bool {
        matches!(self, Self::BatchTokioAddMany | Self::ReserveMany)
    }

    /// Runs the workload once and returns what the handler saw. Only the limit runs on the
    /// calling thread; the others run their producers and consumer on `rt`'s workers.
    pub(crate) fn run<T: Item>(self, rt: &Runtime, producers: usize, batch: usize, n: u64) -> Tally {
        match self {
            Self::LimitHeapless => limit::heapless::<T>(batch, n),
            Self::LimitVec => limit::vec::<T>(batch, n),
            Self::BatchTokioAdd => rt.block_on(batch_tokio::add::<T>(producers, batch, n)),
            Self::BatchTokioAddMany => rt.block_on(batch_tokio::add_many::<T>(producers, batch, n)),
            Self::TokioStreamChunks => rt.block_on(tokio_stream::run::<T>(producers, batch, n)),
            Self::FuturesBatch => rt.block_on(futures_batch::run::<T>(producers, batch, n)),
            Self::RecvMany => rt.block_on(recv_many::per_item::<T>(producers, batch, n)),
            Self::ReserveMany => rt.block_on(recv_many::bulk::<T>(producers, batch, n)),
            Self::Flume => rt.block_on(flume::run::<T>(producers, batch, n)),
        }
    }
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Spawns `producers` tasks, each running `produce` on its share of `0..n`.
fn spawn_producers<F, Fut>(producers: usize, n: u64, produce: F) -> Vec<JoinHandle<()>>
where
    F: Fn(std::ops::Range<u64>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    (0..producers).map(|p| tokio::spawn(produce(share(n, producers, p)))).collect()
}

/// Waits for every producer; a producer's panic is the case's failure.
async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        task.await.expect("a producer task panicked");
    }
}

/// Spawns one producer per share sending item by item into a bounded tokio channel, and returns
/// the receiver with the producers' handles (the senders drop when the producers end).
fn mpsc_per_item<T: Item>(producers: usize, n: u64) -> (tokio::sync::mpsc::Receiver<T>, Vec<JoinHandle<()>>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(CAPACITY);
    let tasks = spawn_producers(producers, n, |range| {
        let tx = tx.clone();
        async move {
            for i in range {
                tx.send(T::make(i)).await.expect("the consumer hung up");
            }
        }
    });
    (rx, tasks)
}
