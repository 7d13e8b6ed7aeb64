//! Size trigger: a batch is cut as soon as `max_batch` items are buffered, without waiting for
//! the linger.
#![allow(missing_docs)]

use batch_tests::{Log, ms, settle};
use batch_tokio::{Batcher, Trigger};

#[tokio::test(start_paused = true)]
async fn cuts_a_batch_as_soon_as_max_batch_items_are_buffered() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(3).linger(ms(10_000)).spawn(log.handler()).unwrap();
    for i in 0..3 {
        b.add(i).await.unwrap();
    }
    settle().await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].items, vec![0, 1, 2]);
    assert_eq!(calls[0].trigger, Trigger::Size);
    assert_eq!(calls[0].start, ms(0), "cut at once, long before the linger");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fewer_than_max_batch_items_are_not_cut_by_size() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(3).linger(ms(100)).spawn(log.handler()).unwrap();
    b.add(1).await.unwrap();
    b.add(2).await.unwrap();
    tokio::time::sleep(ms(99)).await;
    assert!(log.is_empty(), "two of three items do not make a batch");
    assert_eq!(b.len(), 2);
    tokio::time::sleep(ms(1)).await;
    settle().await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].trigger, Trigger::Linger);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_splits_into_full_batches_in_acceptance_order() {
    let log = Log::new();
    let b = Batcher::builder().capacity(64).max_batch(4).linger(ms(50)).spawn(log.handler()).unwrap();
    for i in 0..10 {
        b.add(i).await.unwrap();
    }
    tokio::time::sleep(ms(60)).await;
    assert_eq!(log.delivered_batches(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let triggers: Vec<_> = log.calls().iter().map(|c| c.trigger).collect();
    assert_eq!(triggers, [Trigger::Size, Trigger::Size, Trigger::Linger]);
    let starts: Vec<_> = log.calls().iter().map(|c| c.start).collect();
    assert_eq!(starts, [ms(0), ms(0), ms(50)]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_batch_defaults_to_the_capacity() {
    let log = Log::new();
    let b = Batcher::builder().capacity(5).linger(ms(10_000)).spawn(log.handler()).unwrap();
    for i in 0..5 {
        b.add(i).await.unwrap();
    }
    settle().await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].items.len(), calls[0].trigger), (5, Trigger::Size));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn items_arriving_spread_out_are_cut_when_the_count_is_reached() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(3).linger(ms(1_000)).spawn(log.handler()).unwrap();
    for i in 0..3 {
        b.add(i).await.unwrap();
        tokio::time::sleep(ms(100)).await;
    }
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].start, ms(200), "the third item arrived at 200 ms");
    assert_eq!(calls[0].trigger, Trigger::Size);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_item_past_a_full_batch_keeps_its_own_linger_deadline() {
    // Items 0..=2 at 0 ms, items 3 and 4 at 60 ms with max_batch 4: the size cut at 60 ms
    // takes 0..=3, and item 4 (which arrived at 60 ms) is due at 60 + 100 ms, not earlier or
    // later.
    let log = Log::new();
    let b = Batcher::builder().max_batch(4).linger(ms(100)).spawn(log.handler()).unwrap();
    for i in 0..3 {
        b.add(i).await.unwrap();
    }
    tokio::time::sleep(ms(60)).await;
    b.add(3).await.unwrap();
    b.add(4).await.unwrap();
    tokio::time::sleep(ms(200)).await;
    let calls = log.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].items.clone(), calls[0].start, calls[0].trigger),
        (vec![0, 1, 2, 3], ms(60), Trigger::Size)
    );
    assert_eq!(
        (calls[1].items.clone(), calls[1].start, calls[1].trigger),
        (vec![4], ms(160), Trigger::Linger)
    );
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn size_cuts_are_counted() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(2).linger(ms(10_000)).spawn(log.handler()).unwrap();
    for i in 0..6 {
        b.add(i).await.unwrap();
    }
    settle().await;
    let m = b.metrics();
    assert_eq!(m.flushes.size, 3);
    assert_eq!(m.flushes.total(), 3);
    assert_eq!((m.delivered, m.batches_delivered), (6, 3));
    assert!(m.is_consistent(), "{m:?}");
    b.shutdown().await;
}
