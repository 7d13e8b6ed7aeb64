//! Bounded `tokio::sync::mpsc` + tokio-stream's `chunks_timeout`.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{Shape, join_all, mpsc_per_item};
use crate::probe::Probe;
use crate::workload::{Item, LINGER, Tally};

/// Producers `send` per item; the consumer reads `Vec` chunks from `chunks_timeout`.
pub(super) async fn run<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (rx, tasks) = mpsc_per_item::<T>(shape, &probe);
    let mut tally = Tally::new(probe, shape.n);
    let batch = shape.batch;
    let consumer = tokio::spawn(async move {
        let chunks = ReceiverStream::new(rx).chunks_timeout(batch, LINGER);
        tokio::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            tally.batch(&chunk);
        }
        tally
    });
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}
