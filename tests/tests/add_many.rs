//! `add_many`: many items with one lock per run of room, waiting while full, handing back items
//! refused because the batcher stopped or they are too heavy.
#![allow(missing_docs)]
#![allow(clippy::trivially_copy_pass_by_ref, reason = "weighers have the signature `fn(&T) -> u32`")]

use batch_tests::{Log, ms, settle};
use batch_tokio::{Batcher, PushError};

#[tokio::test(start_paused = true)]
async fn add_many_buffers_every_item_in_order() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).spawn(log.handler()).unwrap();
    b.add_many(vec![1, 2, 3, 4, 5]).await.unwrap();
    assert_eq!(b.len(), 5);
    b.flush().await;
    assert_eq!(log.delivered_batches(), vec![vec![1, 2, 3, 4, 5]]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn add_many_larger_than_capacity_waits_for_room() {
    let log = Log::new();
    let b = Batcher::builder().capacity(4).max_batch(4).spawn(log.handler().latency(ms(10))).unwrap();
    b.add_many(0..20).await.unwrap();
    b.flush().await;
    assert_eq!(log.delivered(), (0..20).collect::<Vec<_>>());
    assert!(log.delivered_batches().iter().all(|batch| batch.len() <= 4));
    assert_eq!(b.metrics().rejected, 0);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn add_many_after_close_returns_every_item() {
    let log = Log::<u32>::new();
    let b = Batcher::builder().spawn(log.handler()).unwrap();
    b.close();
    let refused = b.add_many([1, 2, 3]).await.unwrap_err();
    assert_eq!(refused.items, vec![PushError::Closed(1), PushError::Closed(2), PushError::Closed(3)]);
    assert_eq!(refused.to_string(), "3 items were refused");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn add_many_keeps_good_items_and_returns_heavy_ones() {
    fn weigh(n: &u32) -> u32 {
        *n
    }
    let log = Log::new();
    let b = Batcher::builder().max_weight(10, weigh).spawn(log.handler()).unwrap();
    let refused = b.add_many([1, 50, 2, 11, 3]).await.unwrap_err();
    assert_eq!(refused.items, vec![PushError::TooHeavy(50), PushError::TooHeavy(11)]);
    b.flush().await;
    assert_eq!(log.delivered(), vec![1, 2, 3]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn add_many_waiting_for_room_returns_the_rest_when_the_batcher_stops() {
    let log = Log::new();
    let b = Batcher::builder().capacity(2).spawn(log.handler()).unwrap();
    b.pause();
    let adder = {
        let b = b.clone();
        tokio::spawn(async move { b.add_many(0..5).await })
    };
    settle().await;
    assert_eq!(b.len(), 2);
    let report = b.shutdown_timeout(ms(100)).await;
    let refused = adder.await.unwrap().unwrap_err();
    let back: Vec<_> = refused.items.into_iter().map(PushError::into_inner).collect();
    assert_eq!(back, vec![2, 3, 4]);
    assert_eq!(report.remainder, vec![0, 1]);
    assert!(log.is_empty());
}
