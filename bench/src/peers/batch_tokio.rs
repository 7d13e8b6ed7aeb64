//! batch-tokio, the project under test: producers push into the shared core; its worker task
//! calls a `from_sync` handler.

use std::sync::{Arc, Mutex};

use batch_tokio::{Batcher, handler};

use super::{join_all, spawn_producers};
use crate::workload::{CAPACITY, CHUNK, Item, LINGER, Tally, chunks};

/// A batcher with the workload's settings whose handler adds each batch to the returned tally.
fn batcher<T: Item>(batch: usize) -> (Batcher<T>, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let seen = Arc::clone(&tally);
    let batcher = Batcher::builder()
        .capacity(CAPACITY)
        .max_batch(batch)
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
    let tally = *tally.lock().expect("tally lock");
    assert_eq!(metrics.delivered, tally.count, "batch-tokio's delivered counter disagrees with the handler");
    tally
}

/// Each producer calls `add(item).await` per item.
pub(super) async fn add<T: Item>(producers: usize, batch: usize, n: u64) -> Tally {
    let (batcher, tally) = batcher::<T>(batch);
    let tasks = spawn_producers(producers, n, |range| {
        let b = batcher.clone();
        async move {
            for i in range {
                b.add(T::make(i)).await.expect("batcher stopped early");
            }
        }
    });
    join_all(tasks).await;
    finish(batcher, &tally).await
}

/// Each producer calls `add_many(chunk).await` with chunks of [`CHUNK`] items.
pub(super) async fn add_many<T: Item>(producers: usize, batch: usize, n: u64) -> Tally {
    let (batcher, tally) = batcher::<T>(batch);
    let tasks = spawn_producers(producers, n, |range| {
        let b = batcher.clone();
        async move {
            for chunk in chunks(range, CHUNK) {
                b.add_many(chunk.map(T::make)).await.expect("batcher stopped early");
            }
        }
    });
    join_all(tasks).await;
    finish(batcher, &tally).await
}
