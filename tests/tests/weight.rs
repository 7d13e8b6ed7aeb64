//! Weight limit: a batch is cut before its weight (e.g. encoded bytes) would exceed
//! `max_weight`; an item heavier than the limit alone is refused with the item handed back.
#![allow(missing_docs)]
#![allow(clippy::ptr_arg, reason = "weighers have the signature `fn(&T) -> u32`")]

use batch_tests::{Log, ms, settle};
use batch_tokio::{Batcher, PushError, Trigger};

fn bytes(s: &String) -> u32 {
    s.len() as u32
}

fn line(n: usize) -> String {
    "x".repeat(n)
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_cut_before_it_would_exceed_max_weight() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(100)
        .linger(ms(60_000))
        .max_weight(10, bytes)
        .spawn(log.handler())
        .unwrap();
    b.add(line(4)).await.unwrap();
    b.add(line(4)).await.unwrap();
    settle().await;
    assert!(log.is_empty(), "8 bytes fit");
    b.add(line(4)).await.unwrap(); // 12 > 10: [4, 4] goes out
    settle().await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].items.len(), calls[0].trigger), (2, Trigger::Weight));
    assert_eq!(b.len(), 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn every_batch_stays_within_the_limit() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(64)
        .max_batch(50)
        .linger(ms(5))
        .max_weight(64, bytes)
        .spawn(log.handler())
        .unwrap();
    for i in 0..200 {
        b.add(line(1 + (i * 7) % 30)).await.unwrap();
    }
    b.flush().await;
    let batches = log.delivered_batches();
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 200);
    for batch in &batches {
        let w: usize = batch.iter().map(String::len).sum();
        assert!(w <= 64, "a batch of {w} bytes");
    }
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_heavier_than_the_limit_is_handed_back() {
    let log = Log::new();
    let b = Batcher::builder().max_weight(10, bytes).spawn(log.handler()).unwrap();
    assert_eq!(b.add(line(11)).await, Err(PushError::TooHeavy(line(11))));
    assert_eq!(b.try_add(line(12)), Err(PushError::TooHeavy(line(12))));
    b.add(line(10)).await.unwrap(); // exactly the limit is fine
    b.flush().await;
    assert_eq!(log.delivered(), vec![line(10)]);
    let m = b.metrics();
    assert_eq!((m.rejected, m.accepted), (2, 1));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_batch_still_applies_with_a_weight_limit() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(3).max_weight(1_000, bytes).spawn(log.handler()).unwrap();
    b.add_many((0..3).map(|_| line(1))).await.unwrap();
    settle().await;
    assert_eq!(log.calls()[0].trigger, Trigger::Size);
    b.shutdown().await;
}
