//! Metrics: the counters add up at every moment
//! (`accepted = delivered + dead_lettered + evicted + returned + buffered + in_flight`), and
//! count rejections, retries, batches by outcome, flushes by trigger and the oldest item's age.
#![allow(missing_docs)]
#![allow(clippy::trivially_copy_pass_by_ref, reason = "weighers have the signature `fn(&T) -> u32`")]

use batch_tests::{Evicted, Letters, Log, ms, settle};
use batch_tokio::handler::Batch;
use batch_tokio::{Batcher, Metrics, Overflow, PushError};

#[track_caller]
fn consistent(m: &Metrics) {
    assert!(m.is_consistent(), "counters do not add up: {m:?}");
}

#[tokio::test(start_paused = true)]
async fn the_identity_holds_after_every_step_of_a_mixed_scenario() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .capacity(8)
        .max_batch(3)
        .max_in_flight(2)
        .max_attempts(2)
        .linger(ms(20))
        .on_error(letters.callback())
        .spawn(log.handler().latency(ms(15)).fail_when(|batch: &Batch<u32>| batch.items().contains(&13)))
        .unwrap();
    let observer = {
        let b = b.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                consistent(&b.metrics());
                tokio::time::sleep(ms(1)).await;
            }
        })
    };
    for i in 0..60 {
        b.add(i).await.unwrap();
        consistent(&b.metrics());
        if i % 7 == 0 {
            tokio::time::sleep(ms(9)).await;
        }
        if i % 20 == 0 {
            b.flush().await;
            consistent(&b.metrics());
        }
    }
    let _ = b.try_add(1000);
    b.flush().await;
    observer.await.unwrap();
    b.shutdown().await;
    let m = b.metrics();
    consistent(&m);
    assert_eq!(m.accepted, m.delivered + m.dead_lettered);
    assert_eq!(m.dead_lettered as usize, letters.items().len());
    assert!(letters.items().contains(&13));
    assert_eq!(m.delivered as usize, log.delivered().len());
}

#[tokio::test(start_paused = true)]
async fn flushes_are_counted_by_trigger() {
    fn weigh(s: &&str) -> u32 {
        s.len() as u32
    }
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(16)
        .max_batch(3)
        .linger(ms(100))
        .max_weight(10, weigh)
        .spawn(log.handler())
        .unwrap();
    b.add_many(["a", "b", "c"]).await.unwrap(); // size
    settle().await;
    b.add_many(["123456", "123456"]).await.unwrap(); // weight: 12 > 10 cuts the first alone
    settle().await;
    tokio::time::sleep(ms(200)).await; // linger takes the second "123456"
    b.add("m").await.unwrap();
    b.flush().await; // manual
    b.add_urgent("u").await.unwrap(); // urgent
    settle().await;
    b.add("z").await.unwrap();
    b.shutdown().await; // close
    let f = b.metrics().flushes;
    assert_eq!((f.size, f.weight, f.linger, f.manual, f.urgent, f.close), (1, 1, 1, 1, 1, 1), "{f:?}");
    assert_eq!(f.total(), 6);
    assert_eq!(log.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn retries_and_failed_attempts_are_counted() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(3)
        .spawn(log.handler().fail_when(|batch: &Batch<u32>| match batch.items()[0] {
            0 => false,                // delivered first time
            1 => batch.attempt() == 1, // one retry
            _ => true,                 // dead-lettered after 3 attempts
        }))
        .unwrap();
    b.add_many([0, 1, 2]).await.unwrap();
    b.flush().await;
    let m = b.metrics();
    assert_eq!(m.retries, 1 + 2);
    assert_eq!(m.failed_attempts, 1 + 3);
    assert_eq!((m.batches_delivered, m.batches_dead_lettered), (2, 1));
    assert_eq!((m.delivered, m.dead_lettered), (2, 1));
    assert_eq!(log.len(), 1 + 2 + 3);
    consistent(&m);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_item_age_is_the_longest_wait_at_a_cut() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(10).linger(ms(100)).spawn(log.handler()).unwrap();
    b.add(1).await.unwrap();
    tokio::time::sleep(ms(30)).await;
    b.flush().await;
    assert_eq!(b.metrics().max_item_age.as_millis(), 30);
    b.add(2).await.unwrap();
    tokio::time::sleep(ms(200)).await; // linger cut at 100 ms of age
    assert_eq!(b.metrics().max_item_age.as_millis(), 100);
    b.add(3).await.unwrap();
    b.flush().await; // age 0 does not lower the maximum
    assert_eq!(b.metrics().max_item_age.as_millis(), 100);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn buffered_and_in_flight_are_live_counts() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(10)
        .max_batch(3)
        .linger(ms(60_000))
        .spawn(log.handler().latency(ms(100)))
        .unwrap();
    b.add_many(0..5).await.unwrap();
    settle().await;
    let m = b.metrics();
    assert_eq!((m.accepted, m.in_flight, m.batches_in_flight, m.buffered), (5, 3, 1, 2));
    consistent(&m);
    tokio::time::sleep(ms(100)).await;
    settle().await;
    let m = b.metrics();
    assert_eq!((m.delivered, m.in_flight, m.buffered), (3, 0, 2));
    consistent(&m);
    b.shutdown().await;
    let m = b.metrics();
    assert_eq!((m.delivered, m.in_flight, m.buffered, m.batches_in_flight), (5, 0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn rejections_are_counted_for_every_reason() {
    fn weigh(n: &u32) -> u32 {
        *n
    }
    let log = Log::new();
    let b = Batcher::builder().capacity(2).max_weight(100, weigh).spawn(log.handler()).unwrap();
    b.pause();
    b.try_add(1).unwrap();
    b.try_add(2).unwrap();
    assert_eq!(b.try_add(3), Err(PushError::Full(3)));
    assert_eq!(b.try_add(500), Err(PushError::TooHeavy(500)));
    b.resume();
    b.shutdown().await;
    assert_eq!(b.try_add(4), Err(PushError::Closed(4)));
    let m = b.metrics();
    assert_eq!((m.accepted, m.rejected, m.delivered), (2, 3, 2));
    consistent(&m);
}

#[tokio::test(start_paused = true)]
async fn evictions_and_returns_keep_the_identity() {
    let log = Log::new();
    let evicted = Evicted::new();
    let b = Batcher::builder()
        .capacity(3)
        .max_batch(2)
        .overflow(Overflow::DropOldest)
        .on_evict(evicted.callback())
        .spawn(log.handler().hang())
        .unwrap();
    b.add_many(0..2).await.unwrap();
    settle().await; // [0, 1] hangs
    b.pause();
    b.add_many(2..7).await.unwrap(); // 2 and 3 are evicted
    let m = b.metrics();
    assert_eq!((m.accepted, m.evicted, m.in_flight, m.buffered), (7, 2, 2, 3));
    consistent(&m);
    let report = b.shutdown_timeout(ms(50)).await;
    let m = report.metrics;
    assert_eq!((m.returned, m.evicted, m.delivered), (5, 2, 0));
    consistent(&m);
    assert_eq!(report.remainder, vec![0, 1, 4, 5, 6]);
    assert_eq!(evicted.items(), vec![2, 3]);
}

#[tokio::test(start_paused = true)]
async fn reading_metrics_does_not_wait_for_a_running_handler() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(1).spawn(log.handler().hang()).unwrap();
    b.add(1).await.unwrap();
    settle().await;
    assert_eq!(log.running(), 1);
    let m = b.metrics(); // a plain call: would deadlock the test if it waited on the handler
    assert_eq!(m.batches_in_flight, 1);
    let debug = format!("{b:?}");
    assert!(debug.contains("metrics"), "{debug}");
    let report = b.shutdown_timeout(ms(1)).await;
    assert_eq!(report.remainder, vec![1]);
}
