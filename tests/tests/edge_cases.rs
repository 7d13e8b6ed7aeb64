//! Edge cases: empty flush, stop during a flush, flush during retries, capacity 1, max_batch 1,
//! linger 0, zero-sized items, an endless linger.
#![allow(missing_docs)]

use std::time::Duration;

use batch_tests::{Evicted, Letters, Log, ms, settle};
use batch_tokio::{Batcher, Overflow, PushError, Trigger};

#[tokio::test(start_paused = true)]
async fn an_empty_flush_resolves_at_once_without_calling_the_handler() {
    let log = Log::<u32>::new();
    let b = Batcher::builder().spawn(log.handler().latency(ms(100))).unwrap();
    b.flush().await;
    assert!(log.is_empty());
    assert_eq!(log.now(), ms(0));
    assert_eq!(b.metrics().flushes.total(), 0);
    b.shutdown().await;
    assert!(log.is_empty(), "shutting down an empty batcher calls nothing either");
}

#[tokio::test(start_paused = true)]
async fn a_flush_after_everything_was_delivered_is_empty_too() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(2).spawn(log.handler()).unwrap();
    b.add_many([1, 2]).await.unwrap();
    b.flush().await;
    b.flush().await;
    assert_eq!(log.len(), 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_during_a_flush_completes_both() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(3).linger(ms(60_000)).spawn(log.handler().latency(ms(100))).unwrap();
    b.add_many(0..7).await.unwrap();
    let flush = {
        let b = b.clone();
        tokio::spawn(async move { b.flush().await })
    };
    tokio::time::sleep(ms(50)).await; // the flush is under way
    b.shutdown().await;
    flush.await.unwrap();
    assert_eq!(log.delivered(), (0..7).collect::<Vec<_>>());
    assert_eq!(log.now(), ms(300));
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(m.delivered, 7);
}

#[tokio::test(start_paused = true)]
async fn a_flush_during_retries_waits_for_the_final_outcome() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(2)
        .on_error(letters.callback())
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add_many([1, 2]).await.unwrap();
    tokio::time::sleep(ms(150)).await; // attempts 1 and 2 have failed
    assert_eq!(log.len(), 2);
    b.flush().await;
    assert_eq!(log.now(), ms(700), "resolved when the batch was dead-lettered");
    assert_eq!(letters.items(), vec![1, 2]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_flush_asked_while_a_batch_retries_also_cuts_new_items() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(10).linger(ms(60_000)).spawn(log.handler().fail_first(1)).unwrap();
    b.add(1).await.unwrap();
    b.flush().await; // [1]: fails at 0, delivered at 100
    b.add(2).await.unwrap();
    b.flush().await; // [2]: fails at 100, delivered at 200
    assert_eq!(log.delivered_batches(), vec![vec![1], vec![2]]);
    assert_eq!(log.now(), ms(200));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn capacity_one_moves_items_one_at_a_time() {
    let log = Log::new();
    let b = Batcher::builder().capacity(1).spawn(log.handler().latency(ms(1))).unwrap();
    for i in 0..20 {
        b.add(i).await.unwrap();
    }
    b.flush().await;
    let batches = log.delivered_batches();
    assert_eq!(batches.len(), 20);
    assert!(batches.iter().all(|batch| batch.len() == 1));
    assert_eq!(log.delivered(), (0..20).collect::<Vec<_>>());
    assert!(log.calls().iter().all(|c| c.trigger == Trigger::Size));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_batch_one_sends_each_item_alone_at_once() {
    let log = Log::new();
    let b = Batcher::builder().capacity(64).max_batch(1).linger(ms(60_000)).spawn(log.handler()).unwrap();
    b.add_many(0..5).await.unwrap();
    settle().await;
    assert_eq!(log.delivered_batches(), vec![vec![0], vec![1], vec![2], vec![3], vec![4]]);
    assert!(log.calls().iter().all(|c| c.start == ms(0)));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn linger_zero_cuts_whatever_is_buffered_at_once() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(Duration::ZERO).spawn(log.handler()).unwrap();
    b.try_add(1).unwrap();
    b.try_add(2).unwrap();
    settle().await;
    tokio::time::sleep(ms(5)).await;
    b.add(3).await.unwrap();
    settle().await;
    let calls = log.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].items.clone(), calls[0].start), (vec![1, 2], ms(0)));
    assert_eq!((calls[1].items.clone(), calls[1].start), (vec![3], ms(5)));
    assert!(calls.iter().all(|c| c.trigger == Trigger::Linger));
    assert_eq!(b.metrics().max_item_age.as_micros(), 0);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn zero_sized_items_are_batched_and_counted() {
    let log = Log::new();
    let b = Batcher::builder().capacity(8).max_batch(3).spawn(log.handler()).unwrap();
    for _ in 0..7 {
        b.add(()).await.unwrap();
    }
    b.flush().await;
    let sizes: Vec<_> = log.delivered_batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(b.metrics().delivered, 7);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_endless_linger_never_fires_but_flush_and_shutdown_still_work() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(10).linger(Duration::MAX).spawn(log.handler()).unwrap();
    b.add(1).await.unwrap();
    tokio::time::sleep(ms(86_400_000 * 365)).await;
    assert!(log.is_empty());
    b.flush().await;
    b.add(2).await.unwrap();
    b.shutdown().await;
    assert_eq!(log.delivered_batches(), vec![vec![1], vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn a_flush_resolves_when_its_items_were_evicted() {
    // Paused, so nothing is cut: the flush waits. Then both items it waits for are evicted by
    // DropOldest, a final outcome ("nothing is lost silently"), so the flush must resolve.
    let log = Log::new();
    let evicted = Evicted::new();
    let b = Batcher::builder()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .on_evict(evicted.callback())
        .spawn(log.handler())
        .unwrap();
    b.pause();
    b.add_many([0, 1]).await.unwrap();
    let flush = {
        let b = b.clone();
        tokio::spawn(async move { b.flush().await })
    };
    settle().await;
    assert!(!flush.is_finished());
    b.add_many([2, 3]).await.unwrap();
    assert_eq!(evicted.items(), vec![0, 1]);
    let resolved = tokio::time::timeout(ms(1_000), flush).await;
    assert!(resolved.is_ok(), "the flush never resolved after its items were evicted");
    assert!(log.is_empty());
    b.resume();
    b.shutdown().await;
    assert_eq!(log.delivered(), vec![2, 3]);
}

#[tokio::test(start_paused = true)]
async fn an_item_refused_as_full_is_the_same_item() {
    let log = Log::new();
    let b = Batcher::builder().capacity(1).spawn(log.handler()).unwrap();
    b.pause();
    b.try_add(String::from("kept")).unwrap();
    let Err(PushError::Full(back)) = b.try_add(String::from("refused")) else {
        panic!("expected Full");
    };
    assert_eq!(back, "refused");
    b.resume();
    b.shutdown().await;
    assert_eq!(log.delivered(), vec!["kept".to_owned()]);
}
