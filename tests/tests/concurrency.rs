//! Concurrent flushes: with `max_in_flight > 1` batches run at the same time, never more than
//! the limit, start in seq order and may finish out of order; with the limit reached, further
//! cuts queue and start as soon as a slot frees.
#![allow(missing_docs)]

use std::sync::Arc;

use batch_tests::{Log, ms, settle};
use batch_tokio::Batcher;
use batch_tokio::handler::{self, Batch};
use tokio::sync::Semaphore;

#[tokio::test(start_paused = true)]
async fn batches_run_concurrently_up_to_max_in_flight() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(1).max_in_flight(3).spawn(log.handler().latency(ms(100))).unwrap();
    b.add_many(0..9).await.unwrap();
    b.flush().await;
    assert_eq!(log.max_running(), 3);
    assert_eq!(log.now(), ms(300), "9 batches of 100 ms, 3 at a time");
    let starts: Vec<_> = log.calls().iter().map(|c| c.start.as_millis()).collect();
    assert_eq!(starts, [0, 0, 0, 100, 100, 100, 200, 200, 200]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_in_flight_at_once() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(256)
        .max_batch(3)
        .max_in_flight(2)
        .spawn(log.handler().latency_by(|batch: &Batch<u32>| ms(10 + (batch.seq() * 37) % 90)))
        .unwrap();
    for i in 0..200 {
        b.add(i).await.unwrap();
    }
    b.flush().await;
    assert_eq!(log.max_running(), 2);
    assert_eq!(log.delivered().len(), 200);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn batches_start_in_seq_order_and_may_finish_out_of_order() {
    // Batch 0 takes 300 ms, batch 1 takes 50 ms: 1 finishes first, but 0 started first.
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(2)
        .max_in_flight(2)
        .spawn(log.handler().latency_by(|batch: &Batch<u32>| if batch.seq() == 0 { ms(300) } else { ms(50) }))
        .unwrap();
    b.add_many(0..4).await.unwrap();
    b.flush().await;
    let calls = log.calls();
    let start_order: Vec<_> = calls.iter().map(|c| c.seq).collect();
    assert_eq!(start_order, [0, 1]);
    assert_eq!(calls[0].items, vec![0, 1]);
    assert_eq!(calls[1].items, vec![2, 3]);
    assert!(calls[1].end.unwrap() < calls[0].end.unwrap(), "finished out of order");
    assert_eq!((calls[0].end, calls[1].end), (Some(ms(300)), Some(ms(50))));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retrying_batch_does_not_hold_up_the_other_slots() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_in_flight(2)
        .spawn(log.handler().fail_when(|batch: &Batch<u32>| batch.seq() == 0 && batch.attempt() == 1))
        .unwrap();
    b.add_many(0..4).await.unwrap();
    b.flush().await;
    let zero = log.attempts_of(0);
    assert_eq!(zero.len(), 2);
    assert_eq!(zero[1].start, ms(100));
    for seq in 1..4 {
        assert_eq!(log.attempts_of(seq)[0].start, ms(0), "batch {seq} ran during the backoff");
    }
    assert_eq!(log.delivered(), vec![0, 1, 2, 3]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn in_flight_counts_batches_with_the_handler() {
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = Arc::clone(&gate);
    let b = Batcher::builder()
        .max_batch(2)
        .max_in_flight(2)
        .linger(ms(10_000))
        .spawn(handler::from_fn(move |_batch: Batch<u32>| {
            let gate = Arc::clone(&handler_gate);
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, std::io::Error>(())
            }
        }))
        .unwrap();
    b.add_many(0..5).await.unwrap();
    settle().await;
    assert_eq!((b.in_flight(), b.len()), (2, 1));
    let m = b.metrics();
    assert_eq!((m.batches_in_flight, m.in_flight, m.buffered), (2, 4, 1));
    assert!(m.is_consistent(), "{m:?}");
    gate.add_permits(1);
    settle().await;
    assert_eq!(b.in_flight(), 1, "one finished; the last item still lingers");
    gate.add_permits(10);
    b.flush().await;
    assert_eq!((b.in_flight(), b.len()), (0, 0));
    assert_eq!(b.metrics().delivered, 5);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cut_due_while_the_only_slot_is_busy_runs_right_after() {
    // The README's "queued flush": a flush asked for while one runs starts as soon as it ends.
    let log = Log::new();
    let b =
        Batcher::builder().max_batch(100).linger(ms(10_000)).spawn(log.handler().latency(ms(200))).unwrap();
    b.add(1).await.unwrap();
    let first = {
        let b = b.clone();
        tokio::spawn(async move { b.flush().await })
    };
    tokio::time::sleep(ms(50)).await;
    b.add(2).await.unwrap();
    b.flush().await; // queued behind the running batch
    first.await.unwrap();
    let calls = log.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].start, calls[0].end), (ms(0), Some(ms(200))));
    assert_eq!((calls[1].start, calls[1].end), (ms(200), Some(ms(400))));
    assert_eq!(log.max_running(), 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_is_refilled_at_once() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_in_flight(2)
        .spawn(log.handler().latency_by(|batch: &Batch<u32>| ms(if batch.seq() == 0 { 50 } else { 400 })))
        .unwrap();
    b.add_many(0..3).await.unwrap();
    b.flush().await;
    let starts: Vec<_> = log.calls().iter().map(|c| (c.seq, c.start)).collect();
    assert_eq!(starts, [(0, ms(0)), (1, ms(0)), (2, ms(50))]);
    b.shutdown().await;
}
