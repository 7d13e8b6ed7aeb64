//! Stress on a multi-thread runtime: many producers on several threads, size triggers and
//! flush/shutdown only (no test waits on time, so real time is fine here). Every item is
//! delivered (or dead-lettered, or evicted) exactly once, and each producer's items keep their
//! order.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use batch_tests::{Evicted, Letters, Log, XorShift, ms};
use batch_tokio::handler::Batch;
use batch_tokio::{Batcher, Overflow, PushError};

const HOUR: Duration = ms(3_600_000);

type Item = (u32, u32);

/// Checks that `items` holds each `(producer, n)` for `n` in `0..per_producer[producer]` exactly
/// once.
#[track_caller]
fn exactly_once(items: &[Item], per_producer: &[u32]) {
    let mut seen: HashMap<Item, u32> = HashMap::with_capacity(items.len());
    for &item in items {
        *seen.entry(item).or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dup.is_empty(), "delivered more than once: {dup:?}");
    let expected: u32 = per_producer.iter().sum();
    assert_eq!(items.len(), expected as usize, "items lost");
    for (p, &count) in per_producer.iter().enumerate() {
        for n in 0..count {
            assert!(seen.contains_key(&(p as u32, n)), "({p}, {n}) never arrived");
        }
    }
}

/// Checks that each producer's items appear in increasing order.
#[track_caller]
fn in_producer_order(items: &[Item]) {
    let mut last: HashMap<u32, u32> = HashMap::new();
    for &(p, n) in items {
        if let Some(prev) = last.insert(p, n) {
            assert!(prev < n, "producer {p}: {n} after {prev}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_from_eight_producers_is_delivered_once_and_in_order() {
    const PRODUCERS: u32 = 8;
    const EACH: u32 = 25_000;
    let log = Log::new();
    let b = Batcher::builder().capacity(4_096).max_batch(512).linger(HOUR).spawn(log.handler()).unwrap();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            match p % 3 {
                // add().await, item by item
                0 => {
                    for n in 0..EACH {
                        b.add((p, n)).await.unwrap();
                    }
                }
                // add_many in chunks
                1 => {
                    for chunk in 0..EACH / 100 {
                        b.add_many((chunk * 100..chunk * 100 + 100).map(|n| (p, n))).await.unwrap();
                    }
                }
                // try_add, retrying the handed-back item when full
                _ => {
                    for n in 0..EACH {
                        let mut item = (p, n);
                        loop {
                            match b.try_add(item) {
                                Ok(()) => break,
                                Err(PushError::Full(back)) => {
                                    item = back;
                                    tokio::task::yield_now().await;
                                }
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
    let delivered = log.delivered();
    exactly_once(&delivered, &[EACH; PRODUCERS as usize]);
    in_producer_order(&delivered);
    assert_eq!(log.max_running(), 1);
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(m.delivered, u64::from(PRODUCERS * EACH));
    assert!(m.flushes.size >= u64::from(PRODUCERS * EACH / 512));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_failures_with_three_in_flight_deliver_or_dead_letter_each_item_once() {
    const PRODUCERS: u32 = 6;
    const EACH: u32 = 20_000;
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .capacity(2_048)
        .max_batch(64)
        .max_in_flight(3)
        .max_attempts(3)
        .retry_delays(Duration::ZERO, Duration::ZERO)
        .linger(HOUR)
        .on_error(letters.callback())
        .spawn(
            log.handler()
                // A third of all attempts fail, decided by (seq, attempt) only, so the outcome
                // does not depend on thread timing: about 1 batch in 27 is dead-lettered.
                .fail_when(|batch: &Batch<Item>| {
                    XorShift::mix(&[batch.seq(), u64::from(batch.attempt())]).is_multiple_of(3)
                }),
        )
        .unwrap();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift::new(u64::from(p) + 1);
            for n in 0..EACH {
                b.add((p, n)).await.unwrap();
                if rng.next_u64().is_multiple_of(1_000) {
                    b.flush().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;

    let delivered = log.delivered();
    let dead = letters.items();
    assert!(!dead.is_empty(), "the script dead-letters some batches");
    assert!(!delivered.is_empty());
    let mut all = delivered.clone();
    all.extend(dead.iter().copied());
    exactly_once(&all, &[EACH; PRODUCERS as usize]);
    in_producer_order(&delivered); // delivered batches in seq order keep each producer's order
    assert!(log.max_running() <= 3);
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(m.delivered as usize, delivered.len());
    assert_eq!(m.dead_lettered as usize, dead.len());
    assert_eq!(m.batches_dead_lettered as usize, letters.len());
    assert!(m.retries > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_producers_run_accepts_a_prefix_and_returns_the_rest() {
    const PRODUCERS: u32 = 4;
    const EACH: u32 = 50_000;
    let log = Log::new();
    let b = Batcher::builder().capacity(1_024).max_batch(128).linger(HOUR).spawn(log.handler()).unwrap();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                if let Err(e) = b.add((p, n)).await {
                    assert_eq!(e, PushError::Closed((p, n)), "the refused item comes back");
                    return n; // accepted 0..n
                }
            }
            EACH
        }));
    }
    while b.metrics().delivered < 20_000 {
        tokio::task::yield_now().await;
    }
    b.shutdown().await;
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.push(t.await.unwrap());
    }
    let delivered = log.delivered();
    exactly_once(&delivered, &accepted);
    in_producer_order(&delivered);
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(m.accepted, m.delivered);
    assert_eq!(m.accepted, accepted.iter().map(|&n| u64::from(n)).sum::<u64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_under_contention_accounts_for_every_item() {
    const PRODUCERS: u32 = 4;
    const EACH: u32 = 25_000;
    let log = Log::new();
    let evicted = Evicted::new();
    let b = Batcher::builder()
        .capacity(64)
        .max_batch(16)
        .linger(HOUR)
        .overflow(Overflow::DropOldest)
        .on_evict(evicted.callback())
        .spawn(log.handler())
        .unwrap();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                b.add((p, n)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
    let delivered = log.delivered();
    let mut all = delivered.clone();
    all.extend(evicted.items());
    exactly_once(&all, &[EACH; PRODUCERS as usize]);
    in_producer_order(&delivered);
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(m.evicted as usize, evicted.items().len());
    assert_eq!(m.delivered as usize, delivered.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_on_any_thread_covers_that_producers_items() {
    const PRODUCERS: u32 = 4;
    const EACH: u32 = 10_000;
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(512)
        .max_batch(100)
        .max_in_flight(2)
        .linger(HOUR)
        .spawn(log.handler())
        .unwrap();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let b = b.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let range = round * EACH / 10..(round + 1) * EACH / 10;
                b.add_many(range.clone().map(|n| (p, n))).await.unwrap();
                b.flush().await;
                let mine = log.delivered().into_iter().filter(|(q, _)| *q == p).count();
                assert!(mine >= range.end as usize, "producer {p}: {mine} < {}", range.end);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
    let delivered = log.delivered();
    exactly_once(&delivered, &[EACH; PRODUCERS as usize]);
    in_producer_order(&delivered);
}
