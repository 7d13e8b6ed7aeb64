//! Urgent items: `add_urgent` cuts the batch holding the item (and everything before it) at once.
#![allow(missing_docs)]

use batch_tests::{Log, ms, settle};
use batch_tokio::{Batcher, Trigger};

#[tokio::test(start_paused = true)]
async fn an_urgent_item_cuts_its_batch_at_once() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(60_000)).spawn(log.handler()).unwrap();
    b.add_many(["t1", "t2"]).await.unwrap();
    b.add_urgent("ALARM").await.unwrap();
    settle().await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].items, vec!["t1", "t2", "ALARM"]);
    assert_eq!((calls[0].trigger, calls[0].start), (Trigger::Urgent, ms(0)));
    assert_eq!(b.metrics().flushes.urgent, 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn items_after_an_urgent_one_wait_for_their_own_trigger() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(100)).spawn(log.handler().latency(ms(10))).unwrap();
    b.add_urgent(1).await.unwrap();
    b.add(2).await.unwrap();
    tokio::time::sleep(ms(500)).await;
    let calls = log.calls();
    assert_eq!(log.delivered_batches(), vec![vec![1, 2]]);
    assert_eq!(calls[0].trigger, Trigger::Urgent, "item 2 was buffered before the cut");
    b.add(3).await.unwrap();
    b.add(4).await.unwrap();
    tokio::time::sleep(ms(500)).await;
    let calls = log.calls();
    assert_eq!((calls[1].items.clone(), calls[1].trigger), (vec![3, 4], Trigger::Linger));
    assert_eq!(calls[1].start, ms(600));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_urgent_item_queued_behind_a_running_batch_goes_next() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(2).linger(ms(60_000)).spawn(log.handler().latency(ms(100))).unwrap();
    b.add_many([1, 2]).await.unwrap(); // size cut, runs 0..100
    settle().await;
    b.add_urgent(3).await.unwrap();
    tokio::time::sleep(ms(200)).await;
    let calls = log.calls();
    assert_eq!((calls[1].items.clone(), calls[1].start), (vec![3], ms(100)));
    assert_eq!(calls[1].trigger, Trigger::Urgent);
    b.shutdown().await;
}
