//! The implementations under test: batch-tokio, its peers and the single-thread limit.
//!
//! Every implementation takes the items `0..n` from `producers` tokio tasks (each a contiguous
//! share, see [`share`]), cuts batches of at most `batch` items or after
//! [`LINGER`](crate::workload::LINGER) since a batch's first item, calls
//! [`consume`](crate::workload::consume) on each batch (through
//! [`Tally::batch`]), and returns what the handler saw once every item was handled. Every one
//! gets the same room, [`Shape::bound`]: batch-tokio's `capacity` and each channel's bound.
//! Producers make their items with the run's [`Probe`], which stamps a sample of them.

mod batch_tokio;
mod drain;
mod flume;
mod futures_batch;
mod kanal;
mod limit;
mod recv_many;
mod tokio_stream;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::probe::Probe;
use crate::workload::{Item, Tally, share};

/// The shape of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Producer tasks.
    pub(crate) producers: usize,
    /// Batch size B.
    pub(crate) batch: usize,
    /// Room for items: batch-tokio's `capacity`, every channel's bound.
    pub(crate) bound: usize,
    /// Items a bulk producer hands over at once (at most `bound`).
    pub(crate) chunk: usize,
    /// Items `0..n` to move.
    pub(crate) n: u64,
}

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
    FlumeTryRecv,
    /// A bounded flume channel drained in bulk: `drain()` takes everything queued under one
    /// lock; full batches are cut from it, a partial one waits for more against the deadline.
    FlumeDrain,
    /// A bounded kanal channel drained in bulk with `drain_into`, otherwise as
    /// [`FlumeDrain`](Self::FlumeDrain).
    Kanal,
    /// One thread filling a `heapless::Vec<T, B>`, calling the handler when it is full.
    LimitHeapless,
    /// One thread filling a `Vec<T>` with room for the batch, calling the handler when full.
    LimitVec,
}

impl Impl {
    /// Every implementation, in report order.
    pub(crate) const ALL: [Self; 11] = [
        Self::BatchTokioAdd,
        Self::BatchTokioAddMany,
        Self::TokioStreamChunks,
        Self::FuturesBatch,
        Self::RecvMany,
        Self::ReserveMany,
        Self::FlumeTryRecv,
        Self::FlumeDrain,
        Self::Kanal,
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
            Self::FlumeTryRecv => "flume-try-recv",
            Self::FlumeDrain => "flume-drain",
            Self::Kanal => "kanal",
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
            Self::FlumeTryRecv => "flume try_recv",
            Self::FlumeDrain => "flume drain",
            Self::Kanal => "kanal drain_into",
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
    pub(crate) fn run<T: Item>(self, rt: &Runtime, shape: Shape, probe: &Arc<Probe>) -> Tally {
        let probe = Arc::clone(probe);
        match self {
            Self::LimitHeapless => limit::heapless::<T>(shape, &probe),
            Self::LimitVec => limit::vec::<T>(shape, &probe),
            Self::BatchTokioAdd => rt.block_on(batch_tokio::add::<T>(shape, probe)),
            Self::BatchTokioAddMany => rt.block_on(batch_tokio::add_many::<T>(shape, probe)),
            Self::TokioStreamChunks => rt.block_on(tokio_stream::run::<T>(shape, probe)),
            Self::FuturesBatch => rt.block_on(futures_batch::run::<T>(shape, probe)),
            Self::RecvMany => rt.block_on(recv_many::per_item::<T>(shape, probe)),
            Self::ReserveMany => rt.block_on(recv_many::bulk::<T>(shape, probe)),
            Self::FlumeTryRecv => rt.block_on(flume::try_recv::<T>(shape, probe)),
            Self::FlumeDrain => rt.block_on(flume::drain::<T>(shape, probe)),
            Self::Kanal => rt.block_on(kanal::run::<T>(shape, probe)),
        }
    }
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Spawns `shape.producers` tasks, each running `produce` on its share of `0..n`; each marks its
/// start on the probe right before its first add.
fn spawn_producers<F, Fut>(shape: Shape, probe: &Arc<Probe>, produce: F) -> Vec<JoinHandle<()>>
where
    F: Fn(Range<u64>, Arc<Probe>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    (0..shape.producers)
        .map(|p| {
            let probe = Arc::clone(probe);
            let work = produce(share(shape.n, shape.producers, p), Arc::clone(&probe));
            tokio::spawn(async move {
                probe.start();
                work.await;
            })
        })
        .collect()
}

/// Waits for every producer; a producer's panic is the case's failure.
async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        task.await.expect("a producer task panicked");
    }
}

/// Spawns one producer per share sending item by item into a bounded tokio channel, and returns
/// the receiver with the producers' handles (the senders drop when the producers end).
fn mpsc_per_item<T: Item>(
    shape: Shape,
    probe: &Arc<Probe>,
) -> (tokio::sync::mpsc::Receiver<T>, Vec<JoinHandle<()>>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(shape.bound);
    let tasks = spawn_producers(shape, probe, |range, probe| {
        let tx = tx.clone();
        async move {
            for i in range {
                tx.send(probe.item(i)).await.expect("the consumer hung up");
            }
        }
    });
    (rx, tasks)
}
