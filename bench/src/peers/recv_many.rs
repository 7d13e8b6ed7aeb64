//! Bounded `tokio::sync::mpsc` with a hand-written consumer: `recv_many` until the batch is full
//! or a `tokio::time::sleep` started at the batch's first item fires.

use std::sync::Arc;

use tokio::sync::mpsc::Receiver;

use super::{Shape, join_all, mpsc_per_item, spawn_producers};
use crate::probe::Probe;
use crate::workload::{Item, LINGER, Tally, chunks};

/// Producers `send` per item.
pub(super) async fn per_item<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (rx, tasks) = mpsc_per_item::<T>(shape, &probe);
    let consumer = tokio::spawn(consume(rx, shape.batch, Tally::new(probe, shape.n)));
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}

/// Producers reserve room for a chunk with `reserve_many` and fill the permits.
pub(super) async fn bulk<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(shape.bound);
    let tasks = spawn_producers(shape, &probe, |range, probe| {
        let tx = tx.clone();
        async move {
            for part in chunks(range, shape.chunk) {
                probe.stamp_range(part.clone());
                let permits =
                    tx.reserve_many((part.end - part.start) as usize).await.expect("the consumer hung up");
                for (permit, i) in permits.zip(part) {
                    permit.send(T::make(i));
                }
            }
        }
    });
    drop(tx);
    let consumer = tokio::spawn(consume(rx, shape.batch, Tally::new(probe, shape.n)));
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}

/// The consumer: waits for a batch's first items, then fills the batch until it is full, the
/// linger deadline passes or every sender is gone.
async fn consume<T: Item>(mut rx: Receiver<T>, batch: usize, mut tally: Tally) -> Tally {
    let mut buf = Vec::with_capacity(batch);
    // One timer, re-armed only for a batch that is not full after its first `recv_many`.
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    loop {
        if rx.recv_many(&mut buf, batch).await == 0 {
            return tally; // closed and empty
        }
        let mut closed = false;
        if buf.len() < batch {
            deadline.as_mut().reset(tokio::time::Instant::now() + LINGER);
            while buf.len() < batch {
                let room = batch - buf.len();
                tokio::select! {
                    biased;
                    got = rx.recv_many(&mut buf, room) => if got == 0 {
                        closed = true;
                        break;
                    },
                    () = &mut deadline => break,
                }
            }
        }
        tally.batch(&buf);
        buf.clear();
        if closed {
            return tally;
        }
    }
}
