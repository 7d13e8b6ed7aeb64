//! Graceful shutdown: stop taking items, deliver (or dead-letter) everything accepted, and end
//! the worker; with a deadline, return what is left. Dropping the last handle drains too.
#![allow(missing_docs)]

use batch_tests::{Letters, Log, ms, settle};
use batch_tokio::handler::Batch;
use batch_tokio::{Batcher, PushError, Trigger};

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_everything_buffered() {
    let log = Log::new();
    let b = Batcher::builder().capacity(64).max_batch(8).linger(ms(60_000)).spawn(log.handler()).unwrap();
    b.add_many(0..20).await.unwrap();
    b.shutdown().await;
    assert_eq!(log.delivered(), (0..20).collect::<Vec<_>>());
    assert_eq!(log.now(), ms(0), "no linger wait");
    let triggers: Vec<_> = log.calls().iter().map(|c| c.trigger).collect();
    assert_eq!(triggers, [Trigger::Size, Trigger::Size, Trigger::Close]);
    assert!(b.is_closed());
    let m = b.metrics();
    assert_eq!((m.delivered, m.flushes.close), (20, 1));
    assert!(m.is_consistent(), "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn adds_after_shutdown_hand_the_item_back() {
    let log = Log::new();
    let b = Batcher::builder().spawn(log.handler()).unwrap();
    b.add(1).await.unwrap();
    b.shutdown().await;
    assert_eq!(b.add(2).await, Err(PushError::Closed(2)));
    assert_eq!(b.try_add(3), Err(PushError::Closed(3)));
    assert_eq!(b.add_urgent(4).await, Err(PushError::Closed(4)));
    let refused = b.add_many([5, 6]).await.unwrap_err();
    assert_eq!(refused.items, vec![PushError::Closed(5), PushError::Closed(6)]);
    assert_eq!(log.delivered(), vec![1]);
    let m = b.metrics();
    assert_eq!((m.accepted, m.rejected), (1, 5));
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_running_batch_and_its_retries() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(2).spawn(log.handler().latency(ms(10)).fail_first(2)).unwrap();
    b.add_many([1, 2, 3]).await.unwrap();
    settle().await;
    b.shutdown().await;
    // Each batch: attempts at +0, +110, +320 (each 10 ms long), delivered at +330.
    assert_eq!(log.now(), ms(660));
    assert_eq!(log.delivered_batches(), vec![vec![1, 2], vec![3]]);
    let m = b.metrics();
    assert_eq!((m.delivered, m.retries), (3, 4));
}

#[tokio::test(start_paused = true)]
async fn shutdown_dead_letters_what_keeps_failing() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_attempts(2)
        .on_error(letters.callback())
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add_many([1, 2]).await.unwrap();
    b.shutdown().await;
    assert_eq!(letters.items(), vec![1, 2]);
    let m = b.metrics();
    assert_eq!((m.dead_lettered, m.buffered, m.in_flight), (2, 0, 0));
    assert!(m.is_consistent(), "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_returns_the_remainder_when_the_handler_hangs() {
    let log = Log::new();
    let b = Batcher::builder().capacity(16).max_batch(3).spawn(log.handler().hang()).unwrap();
    b.add_many(0..7).await.unwrap();
    settle().await; // [0, 1, 2] hangs in the handler
    let report = b.shutdown_timeout(ms(500)).await;
    assert!(report.timed_out);
    assert_eq!(log.now(), ms(500));
    assert_eq!(report.remainder, (0..7).collect::<Vec<_>>(), "in flight first, then buffered");
    let m = report.metrics;
    assert_eq!((m.returned, m.delivered, m.buffered, m.in_flight), (7, 0, 0, 0));
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(log.running(), 0, "the hanging attempt was cancelled");
    assert_eq!(b.try_add(8), Err(PushError::Closed(8)));
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_that_drains_in_time_returns_nothing() {
    let log = Log::new();
    let b = Batcher::builder().spawn(log.handler().latency(ms(100))).unwrap();
    b.add_many(0..5).await.unwrap();
    let report = b.shutdown_timeout(ms(1_000)).await;
    assert!(!report.timed_out);
    assert!(report.remainder.is_empty());
    assert_eq!(log.now(), ms(100), "returned as soon as the drain finished");
    assert_eq!(report.metrics.delivered, 5);
    assert!(report.metrics.is_consistent());
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_returns_a_batch_waiting_to_retry() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(2)
        .retry_delays(ms(1_000), ms(1_000))
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add_many([1, 2, 3]).await.unwrap();
    settle().await;
    let report = b.shutdown_timeout(ms(300)).await;
    assert!(report.timed_out);
    assert_eq!(report.remainder, vec![1, 2, 3]);
    assert_eq!(log.len(), 1, "the retry never ran");
    let m = report.metrics;
    assert_eq!((m.returned, m.failed_attempts), (3, 1));
    assert!(m.is_consistent(), "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_keeps_batch_order_with_several_slots() {
    // Slot A runs batch 0 (0..50 ms), slot B takes batch 1 at 10 ms and hangs, slot A takes
    // batch 2 at 60 ms and hangs. The remainder must list batch 1 before batch 2 ("oldest
    // batches first"), then the buffered items.
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(16)
        .max_batch(2)
        .max_in_flight(2)
        .linger(ms(60_000))
        .spawn(
            log.handler()
                .latency_by(|batch: &Batch<u32>| if batch.seq() == 0 { ms(50) } else { ms(0) })
                .hang_when(|batch: &Batch<u32>| batch.seq() > 0),
        )
        .unwrap();
    b.add_many([0, 1]).await.unwrap();
    tokio::time::sleep(ms(10)).await;
    b.add_many([2, 3]).await.unwrap();
    tokio::time::sleep(ms(50)).await;
    b.add_many([4, 5]).await.unwrap();
    settle().await;
    b.add(6).await.unwrap();
    settle().await;
    let seqs: Vec<_> = log.calls().iter().map(|c| (c.seq, c.start)).collect();
    assert_eq!(seqs, [(0, ms(0)), (1, ms(10)), (2, ms(60))]);
    let report = b.shutdown_timeout(ms(100)).await;
    assert_eq!(report.remainder, vec![2, 3, 4, 5, 6]);
    assert!(report.metrics.is_consistent(), "{:?}", report.metrics);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_drains_and_ends_the_worker() {
    let log = Log::new();
    let (b, worker) =
        Batcher::builder().max_batch(4).linger(ms(60_000)).build(log.handler().latency(ms(10))).unwrap();
    let worker = tokio::spawn(worker);
    b.add_many(0..10).await.unwrap();
    drop(b);
    worker.await.unwrap();
    assert_eq!(log.delivered(), (0..10).collect::<Vec<_>>());
    assert_eq!(log.calls().last().unwrap().trigger, Trigger::Close);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_clone_keeps_the_batcher_running() {
    let log = Log::new();
    let (b, worker) = Batcher::builder().linger(ms(100)).build(log.handler()).unwrap();
    let worker = tokio::spawn(worker);
    let clone = b.clone();
    clone.add(1).await.unwrap();
    drop(clone);
    settle().await;
    assert!(!b.is_closed());
    b.add(2).await.unwrap();
    tokio::time::sleep(ms(200)).await;
    assert_eq!(log.delivered(), vec![1, 2]);
    assert!(!worker.is_finished());
    drop(b);
    worker.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_idempotent_and_concurrent_shutdowns_all_return() {
    let log = Log::new();
    let b = Batcher::builder().spawn(log.handler().latency(ms(50))).unwrap();
    b.add_many(0..3).await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let b = b.clone();
        waiters.push(tokio::spawn(async move { b.shutdown().await }));
    }
    for w in waiters {
        w.await.unwrap();
    }
    b.shutdown().await;
    let report = b.shutdown_timeout(ms(10)).await;
    assert!(!report.timed_out);
    assert!(report.remainder.is_empty());
    assert_eq!(log.delivered(), vec![0, 1, 2]);
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn close_starts_the_drain_without_waiting() {
    let log = Log::new();
    let b = Batcher::builder().linger(ms(60_000)).spawn(log.handler().latency(ms(40))).unwrap();
    b.add_many([1, 2]).await.unwrap();
    b.close();
    assert!(b.is_closed());
    assert_eq!(log.now(), ms(0));
    assert_eq!(b.try_add(3), Err(PushError::Closed(3)));
    b.flush().await;
    assert_eq!(log.delivered(), vec![1, 2]);
    assert_eq!(log.now(), ms(40));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_batcher_shut_down_with_a_deadline_returns_its_buffer() {
    let log = Log::new();
    let b = Batcher::builder().spawn(log.handler()).unwrap();
    b.pause();
    b.add_many([1, 2, 3]).await.unwrap();
    let report = b.shutdown_timeout(ms(200)).await;
    assert!(report.timed_out);
    assert_eq!(report.remainder, vec![1, 2, 3]);
    assert!(log.is_empty());
    assert!(report.metrics.is_consistent(), "{:?}", report.metrics);
}

#[test]
fn a_batcher_whose_runtime_is_gone_refuses_items_instead_of_losing_them() {
    // The worker was spawned on a runtime that has since shut down (it never ran). The handle
    // must not keep accepting items nobody will deliver, and must not hang on shutdown.
    let log = Log::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let b = rt.block_on(async { Batcher::builder().spawn(log.handler()).unwrap() });
    drop(rt);
    assert_eq!(b.try_add(1), Err(PushError::Closed(1)));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let finished = tokio::time::timeout(ms(1_000), b.shutdown()).await;
        assert!(finished.is_ok(), "shutdown hung on a batcher without a worker");
        assert_eq!(b.add(2).await, Err(PushError::Closed(2)));
    });
    assert!(log.is_empty());
}

#[test]
fn a_batcher_whose_worker_died_mid_run_refuses_items() {
    // Same, but the worker had run (it holds a batch in its handler) when the runtime went away.
    let log = Log::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let b = rt.block_on(async {
        let b = Batcher::builder().max_batch(1).spawn(log.handler().hang()).unwrap();
        b.add(0).await.unwrap();
        settle().await;
        b
    });
    assert_eq!(log.running(), 1);
    drop(rt);
    assert_eq!(b.try_add(1), Err(PushError::Closed(1)));
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
}

#[test]
fn a_producer_waiting_for_room_when_the_worker_dies_gets_its_item_back_and_it_is_counted() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    // The buffer is full and a producer waits in `add`; then the worker's runtime goes away.
    let log = Log::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let b = rt.block_on(async {
        let b = Batcher::builder().capacity(1).max_batch(1).spawn(log.handler().hang()).unwrap();
        b.add(0).await.unwrap(); // taken by the hanging handler
        settle().await;
        b.add(1).await.unwrap(); // fills the buffer
        b
    });
    let mut add = std::pin::pin!(b.add(2));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(add.as_mut().poll(&mut cx).is_pending(), "the buffer is full: add must wait");
    drop(rt);
    assert_eq!(add.as_mut().poll(&mut cx), Poll::Ready(Err(PushError::Closed(2))));
    let m = b.metrics();
    assert_eq!(m.rejected, 1, "{m:?}");
    assert!(m.is_consistent(), "{m:?}");
}
