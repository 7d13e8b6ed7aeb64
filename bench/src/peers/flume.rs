//! A bounded flume channel drained in bulk.

use flume::{Receiver, TryRecvError};

use super::{join_all, spawn_producers};
use crate::workload::{CAPACITY, Item, LINGER, Tally};

/// Producers `send_async` per item; the consumer takes a batch's first item with `recv_async`,
/// then `try_recv`s up to the batch size, and waits (`recv_async` against the linger deadline,
/// armed when the channel first runs dry in that batch) only when the channel runs dry.
pub(super) async fn run<T: Item>(producers: usize, batch: usize, n: u64) -> Tally {
    let (tx, rx) = flume::bounded::<T>(CAPACITY);
    let tasks = spawn_producers(producers, n, |range| {
        let tx = tx.clone();
        async move {
            for i in range {
                tx.send_async(T::make(i)).await.expect("the consumer hung up");
            }
        }
    });
    drop(tx);
    let consumer = tokio::spawn(consume(rx, batch));
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}

async fn consume<T: Item>(rx: Receiver<T>, batch: usize) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(batch);
    // One timer, re-armed only for a batch that has to wait.
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    while let Ok(first) = rx.recv_async().await {
        buf.push(first);
        let mut closed = false;
        let mut armed = false;
        'fill: while buf.len() < batch {
            match rx.try_recv() {
                Ok(item) => buf.push(item),
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
                Err(TryRecvError::Empty) => {
                    if !armed {
                        deadline.as_mut().reset(tokio::time::Instant::now() + LINGER);
                        armed = true;
                    }
                    tokio::select! {
                        biased;
                        got = rx.recv_async() => if let Ok(item) = got {
                            buf.push(item);
                        } else {
                            closed = true;
                            break 'fill;
                        },
                        () = &mut deadline => break 'fill,
                    }
                }
            }
        }
        tally.batch(&buf);
        buf.clear();
        if closed {
            break;
        }
    }
    tally
}
