//! Backpressure: the buffer holds `capacity` items. When it is full an async `add` waits and
//! resumes when room appears, `try_add` hands the item back, and `Overflow::DropOldest` evicts
//! the oldest item to the eviction callback instead.
#![allow(missing_docs)]

use batch_tests::{Evicted, Log, ms, settle};
use batch_tokio::{Batcher, Overflow, PushError};

#[tokio::test(start_paused = true)]
async fn add_waits_while_full_and_resumes_when_room_appears() {
    // Capacity 2: batch [0, 1] runs 0..100 ms, [2, 3] fills the buffer, so add(4) waits until
    // the first batch ends and [2, 3] is cut at 100 ms.
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(2)
        .max_batch(2)
        .linger(ms(10_000))
        .spawn(log.handler().latency(ms(100)))
        .unwrap();
    for i in 0..4 {
        b.add(i).await.unwrap();
        settle().await;
    }
    assert_eq!(b.len(), 2);
    let before = tokio::time::Instant::now();
    b.add(4).await.unwrap();
    assert_eq!(before.elapsed(), ms(100), "add(4) waited for room");
    b.flush().await;
    assert_eq!(log.delivered(), vec![0, 1, 2, 3, 4]);
    let m = b.metrics();
    assert_eq!((m.accepted, m.rejected), (5, 0));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn try_add_hands_the_item_back_when_full() {
    let log = Log::new();
    let b = Batcher::builder().capacity(3).linger(ms(10_000)).spawn(log.handler()).unwrap();
    b.pause();
    for i in 0..3 {
        b.try_add(i).unwrap();
    }
    assert_eq!(b.try_add(99), Err(PushError::Full(99)));
    let m = b.metrics();
    assert_eq!((m.accepted, m.rejected, m.buffered), (3, 1, 3));
    b.resume();
    b.flush().await;
    assert_eq!(log.delivered(), vec![0, 1, 2]);
    b.try_add(3).unwrap();
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_producers_all_get_in_and_keep_their_order() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(4)
        .max_batch(4)
        .linger(ms(5))
        .spawn(log.handler().latency(ms(10)))
        .unwrap();
    let mut producers = Vec::new();
    for p in 0..5u32 {
        let b = b.clone();
        producers.push(tokio::spawn(async move {
            for n in 0..20u32 {
                b.add((p, n)).await.unwrap();
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    b.flush().await;
    let delivered = log.delivered();
    assert_eq!(delivered.len(), 100);
    for p in 0..5 {
        let mine: Vec<_> = delivered.iter().filter(|(q, _)| *q == p).map(|(_, n)| *n).collect();
        assert_eq!(mine, (0..20).collect::<Vec<_>>(), "producer {p} in order");
    }
    assert_eq!(log.max_running(), 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_buffer_never_holds_more_than_capacity() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(8)
        .max_batch(3)
        .linger(ms(20))
        .spawn(log.handler().latency(ms(7)))
        .unwrap();
    let producer = {
        let b = b.clone();
        tokio::spawn(async move {
            for i in 0..200u32 {
                b.add(i).await.unwrap();
                assert!(b.len() <= 8);
            }
        })
    };
    while !producer.is_finished() {
        assert!(b.len() <= 8);
        assert!(b.in_flight() <= 1);
        tokio::time::sleep(ms(1)).await;
    }
    producer.await.unwrap();
    b.flush().await;
    assert_eq!(log.delivered(), (0..200).collect::<Vec<_>>());
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiting_add_gets_its_item_back_when_the_batcher_stops() {
    let log = Log::new();
    let b = Batcher::builder().capacity(1).max_batch(1).spawn(log.handler().latency(ms(100))).unwrap();
    b.add(0).await.unwrap();
    settle().await; // 0 is running
    b.add(1).await.unwrap(); // buffered: full
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.add(2).await })
    };
    settle().await;
    assert!(!waiter.is_finished());
    b.close();
    assert_eq!(waiter.await.unwrap(), Err(PushError::Closed(2)));
    b.shutdown().await;
    assert_eq!(log.delivered(), vec![0, 1]);
    let m = b.metrics();
    assert_eq!((m.accepted, m.rejected, m.delivered), (2, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiting_add_leaves_the_batcher_usable() {
    let log = Log::new();
    let b = Batcher::builder().capacity(1).linger(ms(10_000)).spawn(log.handler()).unwrap();
    b.pause();
    b.add(0).await.unwrap();
    let gave_up = tokio::time::timeout(ms(50), b.add(1)).await;
    assert!(gave_up.is_err(), "add waited while full and paused");
    b.resume();
    b.add(2).await.unwrap();
    b.flush().await;
    assert_eq!(log.delivered(), vec![0, 2], "the cancelled item was dropped, not delivered");
    let m = b.metrics();
    assert_eq!(m.accepted, 2);
    assert!(m.is_consistent(), "{m:?}");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_evicts_to_on_evict_and_keeps_the_newest() {
    let log = Log::new();
    let evicted = Evicted::new();
    let b = Batcher::builder()
        .capacity(3)
        .overflow(Overflow::DropOldest)
        .on_evict(evicted.callback())
        .linger(ms(10_000))
        .spawn(log.handler())
        .unwrap();
    b.pause();
    for i in 0..5 {
        b.add(i).await.unwrap();
    }
    b.try_add(5).unwrap();
    assert_eq!(evicted.items(), vec![0, 1, 2]);
    assert_eq!(b.len(), 3);
    b.resume();
    b.flush().await;
    assert_eq!(log.delivered(), vec![3, 4, 5]);
    let m = b.metrics();
    assert_eq!((m.accepted, m.evicted, m.delivered, m.rejected), (6, 3, 3, 0));
    assert!(m.is_consistent(), "{m:?}");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_without_a_callback_still_counts_evictions() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .linger(ms(10_000))
        .spawn(log.handler())
        .unwrap();
    b.pause();
    b.add_many(0..5).await.unwrap();
    b.resume();
    b.flush().await;
    assert_eq!(log.delivered(), vec![3, 4]);
    let m = b.metrics();
    assert_eq!((m.evicted, m.delivered), (3, 2));
    assert!(m.is_consistent(), "{m:?}");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn add_never_waits_under_drop_oldest() {
    let log = Log::new();
    let evicted = Evicted::new();
    let b = Batcher::builder()
        .capacity(2)
        .max_batch(2)
        .overflow(Overflow::DropOldest)
        .on_evict(evicted.callback())
        .spawn(log.handler().hang())
        .unwrap();
    b.add_many([0, 1]).await.unwrap();
    settle().await; // [0, 1] hangs in the handler
    for i in 2..10 {
        b.add(i).await.unwrap();
    }
    assert_eq!(log.now(), ms(0), "no add waited");
    assert_eq!(evicted.items(), (2..8).collect::<Vec<_>>());
    let report = b.shutdown_timeout(ms(100)).await;
    assert_eq!(report.remainder, vec![0, 1, 8, 9]);
    assert!(report.metrics.is_consistent(), "{:?}", report.metrics);
}
