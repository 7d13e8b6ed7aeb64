//! A bounded kanal channel: producers `send(item).await` on an `AsyncSender`; the consumer drains
//! it in bulk with `drain_into` and waits with `recv().await` when it is empty, as kanal's docs
//! show. See [`drain::consume`] for the batching (shared with flume's `drain`).

use std::sync::Arc;

use kanal::{AsyncReceiver, ReceiveError, ReceiveFuture};

use super::drain::{self, BulkReceiver};
use super::{Shape, join_all, spawn_producers};
use crate::probe::Probe;
use crate::workload::{Item, Tally};

/// Producers `send` per item into `kanal::bounded_async(bound)`.
pub(super) async fn run<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (tx, rx) = kanal::bounded_async::<T>(shape.bound);
    let tasks = spawn_producers(shape, &probe, |range, probe| {
        let tx = tx.clone();
        async move {
            for i in range {
                tx.send(probe.item(i)).await.expect("the consumer hung up");
            }
        }
    });
    drop(tx);
    let consumer = tokio::spawn(drain::consume(rx, shape, Tally::new(probe, shape.n)));
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}

impl<T: Item> BulkReceiver<T> for AsyncReceiver<T> {
    type Recv<'a> = ReceiveFuture<'a, T>;
    type Closed = ReceiveError;

    fn recv(&self) -> Self::Recv<'_> {
        AsyncReceiver::recv(self)
    }

    fn drain_into(&self, buf: &mut Vec<T>) {
        // An error only means this receiver was closed, which nothing here does.
        let _ = AsyncReceiver::drain_into(self, buf);
    }
}
