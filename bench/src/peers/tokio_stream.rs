//! Bounded `tokio::sync::mpsc` + tokio-stream's `chunks_timeout`.

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{join_all, mpsc_per_item};
use crate::workload::{Item, LINGER, Tally};

/// Producers `send` per item; the consumer reads `Vec` chunks from `chunks_timeout`.
pub(super) async fn run<T: Item>(producers: usize, batch: usize, n: u64) -> Tally {
    let (rx, tasks) = mpsc_per_item::<T>(producers, n);
    let consumer = tokio::spawn(async move {
        let mut tally = Tally::default();
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
