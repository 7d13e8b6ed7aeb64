//! Store and forward through `batch-tokio` with a real `DiskStore` (SQLite on its own thread):
//! spill while the uplink is down, restart from the store, durable adds. The policy itself is
//! tested in batch-core's virtual time (batch-core/tests/store.rs); these tests check that the
//! adapter performs it. They run on real time (the store's thread answers in real time) and wait
//! on events, never on the clock.

#![cfg(feature = "disk-store")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use batch_tokio::handler::{self, Batch};
use batch_tokio::{Batcher, DiskStore, StorePolicy};

const TAG: u32 = 0x7E57_0001;

mod common;
use common::TempDir;

/// What the handler was given: `(seq, items)` per delivered batch.
type Log = Arc<Mutex<Vec<(u64, Vec<u64>)>>>;

fn recording(log: &Log) -> impl handler::Handler<u64> + use<> {
    let log = Arc::clone(log);
    handler::from_fn(move |batch: Batch<u64>| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push((batch.seq(), batch.items().to_vec()));
            Ok::<_, std::io::Error>(())
        }
    })
}

fn items(log: &Log) -> Vec<u64> {
    log.lock().unwrap().iter().flat_map(|(_, b)| b.iter().copied()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_spills_to_disk_while_paused_and_drains_in_order_after_resume() {
    let dir = TempDir::new("tokio-store-spill");
    let store = DiskStore::<u64>::open(dir.file(), TAG).await.unwrap();
    let log = Log::default();
    let batcher = Batcher::builder()
        .capacity(8)
        .max_batch(4)
        .linger(Duration::from_millis(5))
        .disk_store(store, StorePolicy::new())
        .spawn(recording(&log))
        .unwrap();
    batcher.pause(); // the uplink is down
    for i in 0..100 {
        batcher.add(i).await.unwrap(); // never refused: full RAM spills to the store
    }
    let m = batcher.metrics();
    assert!(m.stored >= 92, "the backlog beyond RAM is on disk: {m:?}");
    assert!(m.is_consistent(), "{m:?}");
    assert!(log.lock().unwrap().is_empty(), "paused: nothing sent");
    batcher.resume();
    let report = batcher.shutdown().await;
    assert_eq!(items(&log), (0..100).collect::<Vec<_>>(), "acceptance order across the store");
    let m = report.metrics;
    assert_eq!((m.delivered, m.stored, m.rejected), (100, 0, 0), "{m:?}");
    assert!(m.flushes.store >= 23, "the stored batches went out as such: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_stored_batches_go_first_under_their_seq_and_seqs_are_not_reused() {
    let dir = TempDir::new("tokio-store-restart");
    // First run: the uplink refuses everything; durable adds are written ahead.
    let store = DiskStore::<u64>::open(dir.file(), TAG).await.unwrap();
    let failing =
        handler::from_fn(|_: Batch<u64>| async { Err::<(), _>(std::io::Error::other("uplink down")) });
    let (batcher, worker) = Batcher::builder()
        .capacity(64)
        .max_batch(4)
        .max_attempts(u32::MAX)
        .retry_delays(Duration::from_secs(3600), Duration::from_secs(3600))
        .disk_store(store, StorePolicy::new().write_ahead(true))
        .build(failing)
        .unwrap();
    let worker = tokio::spawn(worker);
    for i in 0..10 {
        batcher.add_durable(i).await.unwrap(); // resolves once on disk
    }
    let m = batcher.metrics();
    assert_eq!((m.delivered, m.in_flight + m.buffered + m.stored), (0, 10), "{m:?}");
    // "Power cut": the process stops with nothing delivered (the report hands back what RAM held,
    // the store keeps its copy).
    let _ = batcher.shutdown_timeout(Duration::from_millis(50)).await;
    drop(batcher);
    worker.await.unwrap(); // the worker closes the store as it ends
    let store = DiskStore::<u64>::open(dir.file(), TAG).await.unwrap();
    // Second run: the uplink is back.
    let log = Log::default();
    let batcher = Batcher::builder()
        .capacity(64)
        .max_batch(4)
        .disk_store(store, StorePolicy::new().write_ahead(true))
        .spawn(recording(&log))
        .unwrap();
    batcher.add_durable(100).await.unwrap();
    let report = batcher.shutdown().await;
    let log = log.lock().unwrap().clone();
    let delivered: Vec<u64> = log.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let mut first_seen = Vec::new();
    for i in &delivered {
        if !first_seen.contains(i) {
            first_seen.push(*i);
        }
    }
    assert_eq!(first_seen, (0..10).chain([100]).collect::<Vec<_>>(), "stored first, in order");
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    let new_seq = *seqs.last().unwrap();
    assert!(
        seqs[..seqs.len() - 1].iter().all(|&s| s < new_seq),
        "a new seq above every stored one: {seqs:?}"
    );
    assert!(report.metrics.is_consistent(), "{:?}", report.metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_add_resolves_once_written_while_the_handler_still_runs() {
    let dir = TempDir::new("tokio-store-durable");
    let store = DiskStore::<u64>::open(dir.file(), TAG).await.unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    let batcher = Batcher::builder()
        .capacity(16)
        .max_batch(4)
        .linger(Duration::from_secs(3600)) // only the durable add's urgency cuts
        .disk_store(store, StorePolicy::new().write_ahead(true))
        .spawn(handler::from_fn(move |_: Batch<u64>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, std::io::Error>(())
            }
        }))
        .unwrap();
    batcher.add_durable(1).await.unwrap();
    let m = batcher.metrics();
    assert_eq!((m.in_flight, m.delivered), (1, 0), "durable before delivery: {m:?}");
    release.send(true).unwrap();
    let report = batcher.shutdown().await;
    assert_eq!(report.metrics.delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_batch_older_than_max_age_when_it_leaves_the_store_goes_to_on_expire() {
    use batch_core::store::{Store, StoredBatch};
    let dir = TempDir::new("tokio-store-expire");
    // What an earlier run left: a batch whose oldest item arrived two hours ago (Unix time), and
    // one from a minute ago.
    let mut store = DiskStore::<u64>::open(dir.file(), TAG).await.unwrap();
    let floor = store.recover().await.unwrap().seq_floor;
    let unix_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    store.append(StoredBatch { seq: floor, born_ms: unix_ms - 7_200_000 }, &[1, 2]).await.unwrap();
    store.append(StoredBatch { seq: floor + 1, born_ms: unix_ms - 60_000 }, &[3]).await.unwrap();
    store.close().await;
    let store = DiskStore::<u64>::open(dir.file(), TAG).await.unwrap();
    let (log, expired) = (Log::default(), Log::default());
    let stale = Arc::clone(&expired);
    let batcher = Batcher::builder()
        .max_age(Duration::from_secs(3600))
        .on_expire(move |e| stale.lock().unwrap().push((e.seq().unwrap(), e.items().to_vec())))
        .disk_store(store, StorePolicy::new())
        .spawn(recording(&log))
        .unwrap();
    let report = batcher.shutdown().await;
    assert_eq!(*expired.lock().unwrap(), [(floor, vec![1, 2])], "two hours old: not sent");
    assert_eq!(*log.lock().unwrap(), [(floor + 1, vec![3])], "a minute old: sent");
    let m = report.metrics;
    assert_eq!((m.expired, m.delivered, m.stored), (2, 1, 0), "{m:?}");
    assert!(m.is_consistent(), "{m:?}");
    // Both were removed from the store.
    let mut store = DiskStore::<u64>::open(dir.file(), TAG).await.unwrap();
    assert_eq!(store.recover().await.unwrap().batches, 0);
    store.close().await;
}
