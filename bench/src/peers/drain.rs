//! One consumer for the channels drained in bulk (flume `drain`, kanal `drain_into`), so the two
//! differ only in their channel.
//!
//! The consumer waits for a batch's first item, takes everything queued with it in one call,
//! hands every full batch of B to the handler at once, and lets a partial batch wait for more
//! until it is full or [`LINGER`] after it started, as the other peers do. A receive future, once
//! started, is always awaited to its end, also across a deadline (then it brings the next
//! batch's first item): kanal's docs warn that dropping a started receive may lose an item, and
//! that `select!` must not drop one.

use std::pin::pin;

use tokio::time::Instant;

use super::Shape;
use crate::workload::{Item, LINGER, Tally};

/// A bounded channel's receiving side as the drain consumer uses it.
pub(super) trait BulkReceiver<T>: Send + 'static {
    /// Waits for one item: `Err` once every sender is gone and the channel is empty.
    type Recv<'a>: Future<Output = Result<T, Self::Closed>> + Send + 'a
    where
        Self: 'a;
    /// The error of a receive on a closed, empty channel.
    type Closed;

    /// Starts waiting for one item.
    fn recv(&self) -> Self::Recv<'_>;

    /// Appends every item queued now to `buf` without waiting.
    fn drain_into(&self, buf: &mut Vec<T>);
}

/// Hands every full batch at the front of `buf` to the handler and keeps the rest; whether it
/// handled any.
fn cut<T: Item>(buf: &mut Vec<T>, batch: usize, tally: &mut Tally) -> bool {
    let full = buf.len() / batch * batch;
    if full == 0 {
        return false;
    }
    for chunk in buf[..full].chunks_exact(batch) {
        tally.batch(chunk);
    }
    buf.drain(..full);
    true
}

/// Receives until the channel is closed and empty, calling the handler per batch.
pub(super) async fn consume<T: Item, R: BulkReceiver<T>>(rx: R, shape: Shape, mut tally: Tally) -> Tally {
    let batch = shape.batch;
    // What was drained and is not handled yet: between drains, at most one partial batch.
    let mut buf: Vec<T> = Vec::with_capacity(shape.bound + batch);
    // One timer, re-armed for each batch that has to wait.
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    let mut waiting = pin!(None::<R::Recv<'_>>);
    loop {
        // A batch's first item: no deadline yet.
        if waiting.is_none() {
            waiting.set(Some(rx.recv()));
        }
        let got = waiting.as_mut().as_pin_mut().expect("a started receive").await;
        waiting.set(None);
        let Ok(first) = got else {
            return tally; // closed and empty
        };
        buf.push(first);
        rx.drain_into(&mut buf);
        cut(&mut buf, batch, &mut tally);
        // What is left is a partial batch: it waits for more until full or its deadline.
        while !buf.is_empty() {
            deadline.as_mut().reset(Instant::now() + LINGER);
            loop {
                if waiting.is_none() {
                    waiting.set(Some(rx.recv()));
                }
                tokio::select! {
                    biased;
                    got = waiting.as_mut().as_pin_mut().expect("a started receive") => {
                        waiting.set(None);
                        let Ok(item) = got else {
                            tally.batch(&buf);
                            return tally; // closed: the partial batch was the last
                        };
                        buf.push(item);
                        rx.drain_into(&mut buf);
                        if cut(&mut buf, batch, &mut tally) {
                            break; // any rest is a new batch with a deadline of its own
                        }
                    }
                    () = &mut deadline => {
                        // The started receive stays pending for the next batch.
                        tally.batch(&buf);
                        buf.clear();
                        break;
                    }
                }
            }
        }
    }
}
