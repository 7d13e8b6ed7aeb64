//! batch-tokio, the project under test: producers push into the shared core; its worker task
//! calls a `from_sync` handler.

use std::sync::{Arc, Mutex};

use batch_tokio::{Batcher, handler};

use super::{Shape, join_all, spawn_producers};
use crate::probe::Probe;
use crate::workload::{Item, LINGER, Tally, chunks};

/// A batcher with the workload's settings whose handler adds each batch to the returned tally.
fn batcher<T: Item>(shape: Shape, probe: &Arc<Probe>) -> (Batcher<T>, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::new(Arc::clone(probe), shape.n)));
    let seen = Arc::clone(&tally);
    let batcher = Batcher::builder()
        .capacity(shape.bound)
        .max_batch(shape.batch)
        .linger(LINGER)
        .spawn(handler::from_sync(move |items: &[T]| {
            // One uncontended lock per batch (only the worker calls the handler).
            seen.lock().expect("tally lock").batch(items);
            Ok::<_, std::convert::Infallible>(())
        }))
        .expect("valid batcher settings");
    (batcher, tally)
}

/// Drains and stops the batcher, checks its counters against the handler's and returns the tally.
async fn finish<T: Item>(batcher: Batcher<T>, tally: &Mutex<Tally>) -> Tally {
    batcher.shutdown().await;
    let metrics = batcher.metrics();
    let tally = tally.lock().expect("tally lock").take();
    assert_eq!(metrics.delivered, tally.count, "batch-tokio's delivered counter disagrees with the handler");
    tally
}

/// Each producer calls `add(item).await` per item.
pub(super) async fn add<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (batcher, tally) = batcher::<T>(shape, &probe);
    let tasks = spawn_producers(shape, &probe, |range, probe| {
        let b = batcher.clone();
        async move {
            for i in range {
                b.add(probe.item(i)).await.expect("batcher stopped early");
            }
        }
    });
    join_all(tasks).await;
    finish(batcher, &tally).await
}

/// Each producer calls `add_many(chunk).await` with chunks of `shape.chunk` items.
pub(super) async fn add_many<T: Item>(shape: Shape, probe: Arc<Probe>) -> Tally {
    let (batcher, tally) = batcher::<T>(shape, &probe);
    let tasks = spawn_producers(shape, &probe, |range, probe| {
        let b = batcher.clone();
        async move {
            for chunk in chunks(range, shape.chunk) {
                probe.stamp_range(chunk.clone());
                b.add_many(chunk.map(T::make)).await.expect("batcher stopped early");
            }
        }
    });
    join_all(tasks).await;
    finish(batcher, &tally).await
}
