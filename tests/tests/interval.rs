//! Time trigger (linger): a partial batch is cut when its oldest item has waited `linger`. The
//! deadline is anchored to that item's arrival, not to a periodic tick.
#![allow(missing_docs)]

use batch_tests::{Log, ms, settle};
use batch_tokio::{Batcher, Trigger};

#[tokio::test(start_paused = true)]
async fn a_partial_batch_is_flushed_when_its_oldest_item_has_waited_linger() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(100)).spawn(log.handler()).unwrap();
    b.add("a").await.unwrap();
    tokio::time::sleep(ms(500)).await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].items, vec!["a"]);
    assert_eq!(calls[0].trigger, Trigger::Linger);
    assert_eq!(calls[0].start, ms(100));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn later_items_join_the_batch_of_the_oldest_one() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(100)).spawn(log.handler()).unwrap();
    b.add(0).await.unwrap();
    tokio::time::sleep(ms(30)).await;
    b.add(1).await.unwrap();
    tokio::time::sleep(ms(30)).await;
    b.add(2).await.unwrap();
    tokio::time::sleep(ms(500)).await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].items, vec![0, 1, 2]);
    assert_eq!(calls[0].start, ms(100), "due 100 ms after the oldest item");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_deadline_follows_the_next_arrival_not_a_periodic_tick() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(100)).spawn(log.handler()).unwrap();
    b.add(0).await.unwrap();
    tokio::time::sleep(ms(250)).await;
    b.add(1).await.unwrap(); // at 250 ms: a periodic 100 ms tick would fire at 300 ms
    tokio::time::sleep(ms(500)).await;
    let starts: Vec<_> = log.calls().iter().map(|c| c.start).collect();
    assert_eq!(starts, [ms(100), ms(350)]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_batcher_never_calls_the_handler() {
    let log = Log::<u32>::new();
    let b = Batcher::builder().linger(ms(10)).spawn(log.handler()).unwrap();
    tokio::time::sleep(ms(3_600_000)).await;
    assert!(log.is_empty());
    assert_eq!(b.metrics().flushes.total(), 0);
    // It still wakes for the first item after a long idle period.
    b.add(7).await.unwrap();
    tokio::time::sleep(ms(20)).await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].start, ms(3_600_010));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_default_linger_is_500ms() {
    let log = Log::new();
    let b = Batcher::builder().spawn(log.handler()).unwrap();
    b.add(1u8).await.unwrap();
    tokio::time::sleep(ms(499)).await;
    assert!(log.is_empty());
    tokio::time::sleep(ms(10)).await;
    assert_eq!(log.calls()[0].start, ms(500));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_due_batch_waits_for_a_free_slot_and_keeps_the_linger_trigger() {
    // Batch 0 (size) runs 0..300 ms. Item 2 arrives at 10 ms and is due at 110 ms, but the only
    // slot is busy until 300 ms: it is cut then, and its age at the cut is 290 ms.
    let log = Log::new();
    let b = Batcher::builder().max_batch(2).linger(ms(100)).spawn(log.handler().latency(ms(300))).unwrap();
    b.add(0).await.unwrap();
    b.add(1).await.unwrap();
    tokio::time::sleep(ms(10)).await;
    b.add(2).await.unwrap();
    tokio::time::sleep(ms(1_000)).await;
    let calls = log.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[1].items.clone(), calls[1].start), (vec![2], ms(300)));
    assert_eq!(calls[1].trigger, Trigger::Linger);
    let m = b.metrics();
    assert_eq!(m.max_item_age.as_millis(), 290);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn each_partial_batch_gets_its_own_linger() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(40)).spawn(log.handler()).unwrap();
    for round in 0..5u64 {
        b.add(round).await.unwrap();
        tokio::time::sleep(ms(100)).await;
    }
    let calls = log.calls();
    assert_eq!(calls.len(), 5);
    for (round, call) in calls.iter().enumerate() {
        assert_eq!(call.items, vec![round as u64]);
        assert_eq!(call.start, ms(round as u64 * 100 + 40));
        assert_eq!(call.trigger, Trigger::Linger);
    }
    let m = b.metrics();
    assert_eq!(m.flushes.linger, 5);
    assert_eq!(m.max_item_age.as_millis(), 40);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn advancing_the_clock_past_the_deadline_cuts_the_batch() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(10).linger(ms(100)).spawn(log.handler()).unwrap();
    b.add(1).await.unwrap();
    settle().await;
    tokio::time::advance(ms(99)).await;
    settle().await;
    assert!(log.is_empty(), "not due at 99 ms");
    tokio::time::advance(ms(1)).await;
    settle().await;
    assert_eq!(log.len(), 1, "due at 100 ms");
    assert_eq!(log.calls()[0].start, ms(100));
    b.shutdown().await;
}
