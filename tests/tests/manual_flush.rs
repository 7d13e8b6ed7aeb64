//! Manual flush: `flush().await` cuts everything buffered now and resolves when every item
//! accepted before the call has reached a final outcome.
#![allow(missing_docs)]

use batch_tests::{Letters, Log, ms, settle};
use batch_tokio::{Batcher, Trigger};

#[tokio::test(start_paused = true)]
async fn flush_delivers_buffered_items_without_waiting_for_linger() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(10_000)).spawn(log.handler()).unwrap();
    b.add_many(["a", "b", "c"]).await.unwrap();
    b.flush().await;
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].items, vec!["a", "b", "c"]);
    assert_eq!(calls[0].trigger, Trigger::Manual);
    assert_eq!(calls[0].start, ms(0));
    assert_eq!(log.now(), ms(0), "no time passed");
    assert_eq!(b.metrics().flushes.manual, 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_resolves_only_once_the_handler_finished() {
    let log = Log::new();
    let b =
        Batcher::builder().max_batch(100).linger(ms(10_000)).spawn(log.handler().latency(ms(250))).unwrap();
    b.add(1).await.unwrap();
    b.flush().await;
    assert_eq!(log.now(), ms(250));
    assert_eq!(log.calls()[0].end, Some(ms(250)));
    assert_eq!(b.metrics().delivered, 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_a_batch_already_in_flight() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(2).linger(ms(10_000)).spawn(log.handler().latency(ms(300))).unwrap();
    b.add(1).await.unwrap();
    b.add(2).await.unwrap(); // size cut at 0 ms, runs until 300 ms
    settle().await;
    assert_eq!((b.len(), b.in_flight()), (0, 1));
    b.flush().await; // nothing buffered, but a batch accepted before is still in flight
    assert_eq!(log.now(), ms(300));
    assert_eq!(b.metrics().delivered, 2);
    assert_eq!(b.metrics().flushes.manual, 0, "nothing was left to cut");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_large_flush_is_cut_into_several_batches() {
    let log = Log::new();
    let b = Batcher::builder().capacity(32).max_batch(4).linger(ms(10_000)).spawn(log.handler()).unwrap();
    for i in 0..10 {
        b.try_add(i).unwrap();
    }
    b.flush().await;
    assert_eq!(log.delivered_batches(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let triggers: Vec<_> = log.calls().iter().map(|c| c.trigger).collect();
    assert_eq!(triggers, [Trigger::Size, Trigger::Size, Trigger::Manual]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_does_not_wait_for_items_added_after_it() {
    let log = Log::new();
    let b =
        Batcher::builder().max_batch(100).linger(ms(1_000)).spawn(log.handler().latency(ms(100))).unwrap();
    b.add(1).await.unwrap();
    let flusher = b.clone();
    let flush = tokio::spawn(async move {
        flusher.flush().await;
        flusher.metrics()
    });
    settle().await;
    b.add(2).await.unwrap(); // after the flush: waits for its own linger (1 s)
    let at_flush = flush.await.unwrap();
    assert_eq!(log.now(), ms(100), "the flush resolved when item 1 was delivered");
    assert_eq!((at_flush.delivered, at_flush.buffered), (1, 1));
    tokio::time::sleep(ms(2_000)).await;
    assert_eq!(log.delivered_batches(), vec![vec![1], vec![2]]);
    assert_eq!(log.calls()[1].trigger, Trigger::Linger);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_flushes_all_resolve() {
    let log = Log::new();
    let b =
        Batcher::builder().max_batch(100).linger(ms(10_000)).spawn(log.handler().latency(ms(50))).unwrap();
    b.add_many(0..10).await.unwrap();
    let mut flushes = Vec::new();
    for _ in 0..5 {
        let b = b.clone();
        flushes.push(tokio::spawn(async move { b.flush().await }));
    }
    for f in flushes {
        f.await.unwrap();
    }
    assert_eq!(log.delivered(), (0..10).collect::<Vec<_>>());
    assert_eq!(log.len(), 1, "one cut serves every flush");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_resolves_when_the_batch_is_dead_lettered() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(10)
        .max_attempts(2)
        .on_error(letters.callback())
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add(5).await.unwrap();
    b.flush().await;
    assert_eq!(log.now(), ms(100), "after the one retry");
    assert_eq!(letters.items(), vec![5]);
    let m = b.metrics();
    assert_eq!((m.delivered, m.dead_lettered), (0, 1));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn repeated_flushes_cut_each_time() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(100).linger(ms(10_000)).spawn(log.handler()).unwrap();
    for round in 0..4 {
        b.add(round).await.unwrap();
        b.flush().await;
    }
    assert_eq!(log.delivered_batches(), vec![vec![0], vec![1], vec![2], vec![3]]);
    assert_eq!(b.metrics().flushes.manual, 4);
    b.shutdown().await;
}
