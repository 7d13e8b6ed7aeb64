//! Pause and resume: while paused no batch starts and no retry clock runs, adds keep buffering
//! up to capacity, a running attempt finishes; on resume everything drains in order.
#![allow(missing_docs)]

use batch_tests::{Log, ms, settle};
use batch_tokio::handler::Batch;
use batch_tokio::{Batcher, PushError};

#[tokio::test(start_paused = true)]
async fn nothing_starts_while_paused() {
    let log = Log::new();
    let b = Batcher::builder().capacity(16).max_batch(2).linger(ms(10)).spawn(log.handler()).unwrap();
    b.pause();
    b.add_many(0..5).await.unwrap(); // two full batches and a lingering item
    tokio::time::sleep(ms(10_000)).await;
    assert!(log.is_empty(), "size and linger triggers wait while paused");
    assert_eq!(b.len(), 5);
    b.resume();
    settle().await;
    let calls = log.calls();
    assert_eq!(log.delivered(), vec![0, 1, 2, 3, 4], "drained in order");
    assert!(calls.iter().all(|c| c.start == ms(10_000)));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_flush_while_paused_resolves_after_resume() {
    let log = Log::new();
    let b = Batcher::builder().spawn(log.handler()).unwrap();
    b.pause();
    b.add(1).await.unwrap();
    let flush = {
        let b = b.clone();
        tokio::spawn(async move { b.flush().await })
    };
    tokio::time::sleep(ms(1_000)).await;
    assert!(!flush.is_finished());
    b.resume();
    flush.await.unwrap();
    assert_eq!(log.calls()[0].start, ms(1_000));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_retry_clock_is_frozen_while_paused() {
    // Attempt 1 fails at 0 ms (retry due at 100 ms). Paused from 50 to 1050 ms, so the retry
    // is due at 1100 ms.
    let log = Log::new();
    let b = Batcher::builder().max_batch(1).spawn(log.handler().fail_first(1)).unwrap();
    b.add(1).await.unwrap();
    tokio::time::sleep(ms(50)).await;
    b.pause();
    tokio::time::sleep(ms(1_000)).await;
    assert_eq!(log.len(), 1, "no retry while paused");
    b.resume();
    b.flush().await;
    let starts: Vec<_> = log.attempts_of(0).iter().map(|c| c.start).collect();
    assert_eq!(starts, [ms(0), ms(1_100)]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_while_paused_starts_its_backoff_at_resume() {
    // Attempt 1 runs 0..200 ms and fails while paused (paused at 100 ms): its 100 ms backoff
    // only starts counting at the resume (500 ms).
    let log = Log::new();
    let b = Batcher::builder().max_batch(1).spawn(log.handler().latency(ms(200)).fail_first(1)).unwrap();
    b.add(1).await.unwrap();
    tokio::time::sleep(ms(100)).await;
    b.pause();
    tokio::time::sleep(ms(400)).await;
    b.resume();
    b.flush().await;
    let starts: Vec<_> = log.attempts_of(0).iter().map(|c| c.start).collect();
    assert_eq!(starts, [ms(0), ms(600)]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_running_attempt_finishes_while_paused() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(1).spawn(log.handler().latency(ms(100))).unwrap();
    b.add_many([1, 2]).await.unwrap();
    settle().await;
    b.pause();
    tokio::time::sleep(ms(500)).await;
    assert_eq!(log.delivered(), vec![1], "the running one finished, the next did not start");
    assert_eq!(b.len(), 1);
    b.resume();
    b.flush().await;
    assert_eq!(log.calls()[1].start, ms(500));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn adds_buffer_up_to_capacity_while_paused() {
    let log = Log::new();
    let b = Batcher::builder().capacity(3).spawn(log.handler()).unwrap();
    b.pause();
    for i in 0..3 {
        b.try_add(i).unwrap();
    }
    assert_eq!(b.try_add(3), Err(PushError::Full(3)));
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.add(4).await })
    };
    tokio::time::sleep(ms(100)).await;
    assert!(!waiter.is_finished(), "add waits while paused and full");
    b.resume();
    waiter.await.unwrap().unwrap();
    b.flush().await;
    assert_eq!(log.delivered(), vec![0, 1, 2, 4]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_are_idempotent() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .spawn(log.handler().fail_when(|batch: &Batch<u32>| batch.attempt() == 1))
        .unwrap();
    b.add(1).await.unwrap();
    settle().await; // attempt 1 failed at 0: retry due at 100 ms
    b.pause();
    tokio::time::sleep(ms(20)).await;
    b.pause(); // a second pause does not restart the paused period
    tokio::time::sleep(ms(30)).await;
    b.resume(); // paused 0..50
    b.resume(); // no effect
    b.flush().await;
    assert_eq!(log.attempts_of(0)[1].start, ms(150));
    b.shutdown().await;
}
