//! Per-handle staging areas (batch-tokio's producer path): what a staged item is owed. A handle
//! that adds more than once stages its items in an area of its own and hands them to the core
//! in runs; these tests pin down that staged items are accepted items in every respect.
#![allow(missing_docs)]

use batch_tests::{Log, ms, settle};
use batch_tokio::{Batcher, PushError, Trigger};

#[tokio::test(start_paused = true)]
async fn staged_items_count_as_accepted_and_buffered() {
    let log = Log::new();
    let b = Batcher::builder().capacity(256).max_batch(128).linger(ms(1_000)).spawn(log.handler()).unwrap();
    let p = b.clone();
    for i in 0..10 {
        p.add(i).await.unwrap(); // items 2.. are staged in p's area
    }
    let m = b.metrics();
    assert_eq!((m.accepted, m.buffered), (10, 10));
    assert!(m.is_consistent());
    assert_eq!(b.len(), 10);
    b.shutdown().await;
    assert_eq!(log.delivered(), (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_staged_item_keeps_its_linger_deadline() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(100)).spawn(log.handler()).unwrap();
    let p = b.clone();
    p.add(0).await.unwrap();
    p.add(1).await.unwrap();
    tokio::time::sleep(ms(30)).await;
    p.add(2).await.unwrap(); // staged at 30 ms
    tokio::time::sleep(ms(75)).await;
    assert_eq!(log.calls().len(), 1, "cut at 100 ms, linger after the oldest");
    let call = &log.calls()[0];
    assert_eq!((call.items.clone(), call.start, call.trigger), (vec![0, 1, 2], ms(100), Trigger::Linger));
    // An item staged alone, after the cut, is due linger after its own arrival.
    p.add(3).await.unwrap(); // direct: a new run
    p.add(4).await.unwrap(); // staged at 105 ms
    tokio::time::sleep(ms(200)).await;
    let calls = log.calls();
    assert_eq!((calls[1].items.clone(), calls[1].start), (vec![3, 4], ms(205)));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_staged_items() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(10_000)).spawn(log.handler()).unwrap();
    let p = b.clone();
    for i in 0..5 {
        p.add(i).await.unwrap();
    }
    b.flush().await; // from another handle
    assert_eq!(log.delivered(), vec![0, 1, 2, 3, 4]);
    assert_eq!(b.metrics().delivered, 5);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backpressure_is_exact_with_places_held_by_other_areas() {
    let log = Log::new();
    let b = Batcher::builder().capacity(16).max_batch(16).linger(ms(10_000)).spawn(log.handler()).unwrap();
    b.pause();
    let a = b.clone();
    a.add(0).await.unwrap();
    a.add(1).await.unwrap(); // a's area is granted places
    // Another handle fills the buffer to exactly its capacity, places held by `a` included.
    let c = b.clone();
    for i in 2..16 {
        c.try_add(i).unwrap();
    }
    assert_eq!(c.try_add(99), Err(PushError::Full(99)));
    assert_eq!(a.try_add(98), Err(PushError::Full(98)));
    let m = b.metrics();
    assert_eq!((m.accepted, m.buffered, m.rejected), (16, 16, 2));
    assert!(m.is_consistent());
    b.resume();
    b.flush().await;
    let mut delivered = log.delivered();
    delivered.sort_unstable();
    assert_eq!(delivered, (0..16).collect::<Vec<_>>());
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn each_producer_keeps_its_order_across_runs_and_paths() {
    let log = Log::new();
    let b = Batcher::builder().capacity(64).max_batch(16).linger(ms(5)).spawn(log.handler()).unwrap();
    let tasks: Vec<_> = (0..3u32)
        .map(|p| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..200u32 {
                    let item = p * 1_000 + i;
                    match i % 50 {
                        17 => b.add_urgent(item).await.unwrap(),
                        33 => b.add_many([item]).await.unwrap(),
                        _ => b.add(item).await.unwrap(),
                    }
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
    let delivered = log.delivered();
    assert_eq!(delivered.len(), 600);
    for p in 0..3u32 {
        let mine: Vec<u32> = delivered.iter().copied().filter(|i| i / 1_000 == p).collect();
        assert_eq!(mine, (0..200).map(|i| p * 1_000 + i).collect::<Vec<_>>(), "producer {p}");
    }
    assert!(log.calls().iter().all(|c| c.items.len() <= 16));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_handle_hands_its_run_over_and_close_drains_every_area() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(10_000)).spawn(log.handler()).unwrap();
    let p = b.clone();
    let q = b.clone();
    for i in 0..4 {
        p.add(i).await.unwrap();
        q.add(10 + i).await.unwrap();
    }
    drop(p);
    settle().await;
    assert_eq!(b.metrics().accepted, 8);
    let report = b.shutdown().await;
    assert!(report.is_clean());
    let mut delivered = log.delivered();
    delivered.sort_unstable();
    assert_eq!(delivered, vec![0, 1, 2, 3, 10, 11, 12, 13]);
    assert_eq!(q.try_add(99), Err(PushError::Closed(99)));
}
