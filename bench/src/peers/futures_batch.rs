//! Bounded `tokio::sync::mpsc` + the futures-batch crate's `ChunksTimeout` (its timer is
//! futures-timer's, on a thread of its own).

use std::sync::Arc;

use futures_batch::ChunksTimeout;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{Shape, join_all, mpsc_per_item};
use crate::probe::Probe;
use crate::workload::{Item, LINGER, Tally};

/// Producers `send` per item; the consumer reads `Vec` chunks from `ChunksTimeout`.
pub(super) async fn run<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (rx, tasks) = mpsc_per_item::<T>(shape, &probe);
    let mut tally = Tally::new(probe, shape.n);
    let batch = shape.batch;
    let consumer = tokio::spawn(async move {
        let chunks = ChunksTimeout::new(ReceiverStream::new(rx), batch, LINGER);
        tokio::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            tally.batch(&chunk);
        }
        tally
    });
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}
