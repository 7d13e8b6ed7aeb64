//! A bounded flume channel, producers `send_async().await` per item, read two ways: item by item
//! with `try_recv`, and in bulk with `drain`.

use std::sync::Arc;

use flume::{Receiver, RecvError, TryRecvError};
use tokio::task::JoinHandle;

use super::drain::{self, BulkReceiver};
use super::{Shape, join_all, spawn_producers};
use crate::probe::Probe;
use crate::workload::{Item, LINGER, Tally};

/// The channel and its producers, `send_async` per item (the senders drop when they end).
fn channel<T: Item>(shape: Shape, probe: &Arc<Probe>) -> (Receiver<T>, Vec<JoinHandle<()>>) {
    let (tx, rx) = flume::bounded::<T>(shape.bound);
    let tasks = spawn_producers(shape, probe, |range, probe| {
        let tx = tx.clone();
        async move {
            for i in range {
                tx.send_async(probe.item(i)).await.expect("the consumer hung up");
            }
        }
    });
    (rx, tasks)
}

/// The consumer takes a batch's first item with `recv_async`, then `try_recv`s up to the batch
/// size, and waits (`recv_async` against the linger deadline, armed when the channel first runs
/// dry in that batch) only when the channel runs dry.
pub(super) async fn try_recv<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (rx, tasks) = channel::<T>(shape, &probe);
    let consumer = tokio::spawn(consume(rx, shape.batch, Tally::new(probe, shape.n)));
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}

/// The consumer takes everything queued with `drain()` (one lock) and cuts batches from it; see
/// [`drain::consume`].
pub(super) async fn drain<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (rx, tasks) = channel::<T>(shape, &probe);
    let consumer = tokio::spawn(drain::consume(rx, shape, Tally::new(probe, shape.n)));
    join_all(tasks).await;
    consumer.await.expect("the consumer panicked")
}

impl<T: Item> BulkReceiver<T> for Receiver<T> {
    type Recv<'a> = flume::r#async::RecvFut<'a, T>;
    type Closed = RecvError;

    fn recv(&self) -> Self::Recv<'_> {
        self.recv_async()
    }

    fn drain_into(&self, buf: &mut Vec<T>) {
        buf.extend(self.drain());
    }
}

async fn consume<T: Item>(rx: Receiver<T>, batch: usize, mut tally: Tally) -> Tally {
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
