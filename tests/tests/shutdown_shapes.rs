//! Shutdown under every runtime shape: current-thread and multi-thread runtimes, from inside a
//! spawned task, by dropping the last handle, at the same time as a flush, while producers wait
//! for room, while a handler hangs, twice or from two tasks at once, and with the runtime itself
//! going away under the batcher.
//!
//! Every test is bounded: paused time (a stuck test would have the clock jump to the detector's
//! deadline) or, on multi-thread runtimes, `tokio::time::timeout` used only as a deadlock
//! detector. No test sleeps to wait for behaviour.
#![allow(missing_docs, clippy::items_after_statements, clippy::duration_suboptimal_units)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use batch_tests::{Letters, Log, ms, settle};
use batch_tokio::handler::{self, Batch};
use batch_tokio::{Batcher, PushError};

const HOUR: Duration = ms(3_600_000);
/// On paused time: virtual, so a deadlock costs nothing but a jump of the clock.
const VIRTUAL_DEADLOCK: Duration = ms(24 * 3_600_000);
/// On multi-thread runtimes: real time, only ever reached by a deadlock.
const REAL_DEADLOCK: Duration = Duration::from_secs(20);

/// Fails the test if `fut` does not finish before `limit` (a deadlock detector).
#[track_caller]
fn bounded<F: Future>(limit: Duration, fut: F) -> impl Future<Output = F::Output> {
    let at = std::panic::Location::caller();
    async move {
        let Ok(v) = tokio::time::timeout(limit, fut).await else {
            panic!("deadlock: not done within {limit:?} ({at})");
        };
        v
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Both runtime shapes, each with its deadlock limit.
fn on_both_runtimes<F, Fut>(test: F)
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    paused_runtime().block_on(bounded(VIRTUAL_DEADLOCK, test(false)));
    let rt = multi_thread_runtime();
    let run = rt.spawn(test(true));
    rt.block_on(bounded(REAL_DEADLOCK, run)).unwrap();
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

// ------------------------------------------------------------------------------------------------
// Draining shapes
// ------------------------------------------------------------------------------------------------

#[test]
fn shutdown_drains_on_both_runtimes() {
    on_both_runtimes(|_multi| async move {
        let log = Log::new();
        let b = Batcher::builder()
            .capacity(64)
            .max_batch(8)
            .linger(HOUR)
            .max_in_flight(2)
            .spawn(log.handler())
            .unwrap();
        b.add_many(0..100).await.unwrap();
        b.shutdown().await;
        assert_eq!(sorted(log.delivered()), (0..100).collect::<Vec<_>>());
        let m = b.metrics();
        assert!(m.is_consistent() && m.delivered == 100, "{m:?}");
    });
}

#[test]
fn shutdown_from_inside_a_spawned_task() {
    on_both_runtimes(|_multi| async move {
        let log = Log::new();
        let b = Batcher::builder().capacity(64).max_batch(8).linger(HOUR).spawn(log.handler()).unwrap();
        b.add_many(0..30).await.unwrap();
        let b2 = b.clone();
        let metrics = tokio::spawn(async move {
            b2.shutdown().await;
            b2.metrics()
        })
        .await
        .unwrap();
        assert_eq!(metrics.delivered, 30);
        assert_eq!(log.delivered(), (0..30).collect::<Vec<_>>());
        assert_eq!(b.try_add(99), Err(PushError::Closed(99)));
    });
}

#[test]
fn shutdown_from_a_spawned_task_while_another_task_adds() {
    on_both_runtimes(|_multi| async move {
        let log = Log::new();
        let b = Batcher::builder().capacity(8).max_batch(4).linger(HOUR).spawn(log.handler()).unwrap();
        let producer = {
            let b = b.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                let mut refused = Vec::new();
                for i in 0..10_000u32 {
                    match b.add(i).await {
                        Ok(()) => accepted.push(i),
                        Err(PushError::Closed(back)) => refused.push(back),
                        Err(e) => panic!("{e:?}"),
                    }
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                (accepted, refused)
            })
        };
        tokio::task::yield_now().await;
        let stopper = {
            let b = b.clone();
            tokio::spawn(async move { b.shutdown().await })
        };
        stopper.await.unwrap();
        let (accepted, refused) = producer.await.unwrap();
        assert_eq!(log.delivered(), accepted, "everything accepted before the stop, in order");
        assert_eq!(accepted.len() + refused.len(), 10_000);
        let m = b.metrics();
        assert_eq!((m.accepted, m.rejected), (accepted.len() as u64, refused.len() as u64));
    });
}

#[test]
fn dropping_the_last_handle_drains_and_ends_the_worker() {
    on_both_runtimes(|_multi| async move {
        let log = Log::new();
        let letters = Letters::new();
        let (b, worker) = Batcher::builder()
            .capacity(64)
            .max_batch(5)
            .linger(HOUR)
            .max_attempts(2)
            .retry_delays(Duration::ZERO, Duration::ZERO)
            .on_error(letters.callback())
            .build(log.handler().fail_when(|b: &Batch<u32>| b.seq().is_multiple_of(3)))
            .unwrap();
        let worker = tokio::spawn(worker);
        let clones: Vec<_> = (0..4).map(|_| b.clone()).collect();
        for (k, c) in clones.iter().enumerate() {
            c.add_many((k as u32 * 10)..(k as u32 * 10 + 7)).await.unwrap();
        }
        drop(clones);
        assert!(!b.is_closed(), "a live handle keeps the batcher open");
        drop(b); // the last handle
        worker.await.expect("the worker ends after draining");
        let mut all = log.delivered();
        all.extend(letters.items());
        let expected: Vec<u32> = (0..4).flat_map(|k| (k * 10)..(k * 10 + 7)).collect();
        assert_eq!(sorted(all), sorted(expected));
        assert!(!letters.is_empty(), "batches 0, 3, 6 failed both attempts");
    });
}

#[test]
fn dropping_the_last_handle_of_an_idle_batcher_ends_the_worker() {
    on_both_runtimes(|_multi| async move {
        let (b, worker) = Batcher::<u32>::builder().build(Log::new().handler()).unwrap();
        let worker = tokio::spawn(worker);
        drop(b);
        worker.await.unwrap();
    });
}

#[test]
fn shutdown_and_flush_at_once_both_resolve() {
    on_both_runtimes(|multi| async move {
        let log = Log::new();
        let latency = if multi { Duration::ZERO } else { ms(3) };
        let b = Batcher::builder()
            .capacity(32)
            .max_batch(4)
            .linger(HOUR)
            .max_in_flight(2)
            // Real time on the multi-thread runtime: retries without a delay there.
            .retry_delays(if multi { Duration::ZERO } else { ms(100) }, ms(100))
            .spawn(
                log.handler()
                    .latency(latency)
                    .fail_when(|b: &Batch<u32>| b.attempt() == 1 && b.seq().is_multiple_of(2)),
            )
            .unwrap();
        for round in 0..20u32 {
            b.add_many(round * 10..round * 10 + 10).await.unwrap();
            let f = {
                let b = b.clone();
                tokio::spawn(async move { b.flush().await })
            };
            if round == 19 {
                let s = {
                    let b = b.clone();
                    tokio::spawn(async move { b.shutdown().await })
                };
                let f2 = {
                    let b = b.clone();
                    tokio::spawn(async move { b.flush().await })
                };
                s.await.unwrap();
                f2.await.unwrap();
            }
            f.await.unwrap();
        }
        assert_eq!(sorted(log.delivered()), (0..200).collect::<Vec<_>>());
        b.flush().await; // after shutdown: resolves at once
    });
}

#[test]
fn flush_and_shutdown_timeout_at_once_with_a_hanging_handler() {
    on_both_runtimes(|_multi| async move {
        let log = Log::new();
        let b =
            Batcher::builder().capacity(16).max_batch(4).linger(HOUR).spawn(log.handler().hang()).unwrap();
        b.add_many(0..10).await.unwrap();
        let flushes: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.flush().await })
            })
            .collect();
        let report = b.shutdown_timeout(ms(5)).await;
        for f in flushes {
            f.await.unwrap(); // released by the end of the worker
        }
        assert!(report.timed_out);
        assert_eq!(report.remainder, (0..10).collect::<Vec<_>>());
        assert!(report.metrics.is_consistent());
        assert_eq!(report.metrics.returned, 10);
    });
}

// ------------------------------------------------------------------------------------------------
// Producers waiting for room
// ------------------------------------------------------------------------------------------------

#[test]
fn shutdown_while_producers_wait_for_room() {
    on_both_runtimes(|multi| async move {
        let log = Log::new();
        let latency = if multi { Duration::ZERO } else { ms(2) };
        let b = Batcher::builder()
            .capacity(4)
            .max_batch(2)
            .linger(HOUR)
            .spawn(log.handler().latency(latency))
            .unwrap();
        let producers: Vec<_> = (0..6u32)
            .map(|p| {
                let b = b.clone();
                tokio::spawn(async move {
                    let mut accepted = Vec::new();
                    for n in 0..200 {
                        match b.add(p * 1000 + n).await {
                            Ok(()) => accepted.push(p * 1000 + n),
                            Err(PushError::Closed(back)) => {
                                assert_eq!(back, p * 1000 + n, "the very item comes back");
                                break;
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    accepted
                })
            })
            .collect();
        if multi {
            while b.metrics().accepted < 40 {
                tokio::task::yield_now().await;
            }
        } else {
            // The producers run into the full buffer and all wait in `add` (a busy loop here
            // would keep the paused clock from ever moving).
            settle().await;
            assert_eq!(b.len(), 4);
        }
        b.shutdown().await;
        let mut accepted = Vec::new();
        for p in producers {
            accepted.extend(p.await.unwrap());
        }
        assert_eq!(sorted(log.delivered()), sorted(accepted.clone()));
        let m = b.metrics();
        assert!(m.is_consistent(), "{m:?}");
        assert_eq!(m.delivered, accepted.len() as u64);
    });
}

#[tokio::test(start_paused = true)]
async fn close_wakes_producers_waiting_for_room_while_the_handler_hangs() {
    // The handler never answers (no attempt timeout), so no room will ever appear: a closed
    // batcher must still hand the waiting producers their items back at once.
    let log = Log::new();
    let b = Batcher::builder().capacity(1).linger(HOUR).spawn(log.handler().hang()).unwrap();
    b.add(1).await.unwrap();
    settle().await; // [1] hangs in the handler
    b.add(2).await.unwrap(); // the buffer is full
    let waiters: Vec<_> = (3..6)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.add(i).await })
        })
        .collect();
    let many = {
        let b = b.clone();
        tokio::spawn(async move { b.add_many([6, 7]).await })
    };
    settle().await;
    b.close();
    for (w, i) in waiters.into_iter().zip(3..) {
        let r = bounded(ms(1_000), w).await.unwrap();
        assert_eq!(r, Err(PushError::Closed(i)));
    }
    let r = bounded(ms(1_000), many).await.unwrap();
    assert_eq!(r.unwrap_err().items, vec![PushError::Closed(6), PushError::Closed(7)]);
    let report = b.shutdown_timeout(ms(10)).await;
    assert_eq!(report.remainder, vec![1, 2]);
    let m = report.metrics;
    assert_eq!((m.accepted, m.rejected, m.returned), (2, 5, 2));
}

// ------------------------------------------------------------------------------------------------
// Deadlines
// ------------------------------------------------------------------------------------------------

#[test]
fn shutdown_timeout_while_a_handler_hangs() {
    on_both_runtimes(|multi| async move {
        let log = Log::new();
        let b = Batcher::builder()
            .capacity(16)
            .max_batch(3)
            .max_in_flight(2)
            .spawn(log.handler().hang())
            .unwrap();
        b.add_many(0..8).await.unwrap();
        if !multi {
            settle().await;
        }
        let start = tokio::time::Instant::now();
        let report = b.shutdown_timeout(ms(5)).await;
        assert!(report.timed_out);
        if !multi {
            assert_eq!(start.elapsed(), ms(5), "paused time: exactly the deadline");
        }
        assert_eq!(report.remainder, (0..8).collect::<Vec<_>>(), "oldest batches first, then the buffer");
        assert!(report.metrics.is_consistent());
        assert_eq!(report.metrics.returned, 8);
        assert_eq!(log.running(), 0, "the hanging attempts were cancelled");
    });
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_that_expires_while_a_batch_waits_to_retry() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(2)
        .max_attempts(4)
        .retry_delays(ms(100), ms(1_000))
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add_many(0..5).await.unwrap();
    settle().await;
    let report = bounded(VIRTUAL_DEADLOCK, b.shutdown_timeout(ms(150))).await;
    assert!(report.timed_out);
    // Batch [0, 1] was waiting for its third attempt (due at +300 ms) when the deadline hit.
    assert_eq!(report.remainder, vec![0, 1, 2, 3, 4]);
    assert_eq!(log.attempts_of(0).len(), 2);
    assert!(report.metrics.is_consistent());
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_of_a_paused_batcher_returns_everything() {
    let log = Log::new();
    let b = Batcher::builder().max_batch(2).spawn(log.handler()).unwrap();
    b.pause();
    b.add_many(0..5).await.unwrap();
    let report = b.shutdown_timeout(ms(10)).await;
    assert!(report.timed_out);
    assert_eq!(report.remainder, vec![0, 1, 2, 3, 4]);
    assert!(log.is_empty());
}

// ------------------------------------------------------------------------------------------------
// Twice, and from two tasks at once
// ------------------------------------------------------------------------------------------------

#[test]
fn shutdown_called_twice_in_a_row() {
    on_both_runtimes(|_multi| async move {
        let log = Log::new();
        let b = Batcher::builder().max_batch(4).spawn(log.handler()).unwrap();
        b.add_many(0..10).await.unwrap();
        b.shutdown().await;
        b.shutdown().await;
        let report = b.shutdown_timeout(ms(1)).await;
        assert!(!report.timed_out && report.remainder.is_empty());
        b.close();
        assert_eq!(log.delivered(), (0..10).collect::<Vec<_>>());
        assert_eq!(b.metrics().delivered, 10);
    });
}

#[test]
fn shutdown_from_two_tasks_at_once() {
    on_both_runtimes(|multi| async move {
        let log = Log::new();
        let latency = if multi { Duration::ZERO } else { ms(1) };
        let b = Batcher::builder()
            .capacity(64)
            .max_batch(4)
            .linger(HOUR)
            .spawn(log.handler().latency(latency))
            .unwrap();
        b.add_many(0..50).await.unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.shutdown().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(log.delivered(), (0..50).collect::<Vec<_>>());
    });
}

#[test]
fn two_shutdown_timeouts_at_once_return_the_remainder_once() {
    on_both_runtimes(|_multi| async move {
        let log = Log::new();
        let b =
            Batcher::builder().capacity(64).max_batch(4).linger(HOUR).spawn(log.handler().hang()).unwrap();
        b.add_many(0..20).await.unwrap();
        let tasks: Vec<_> = [ms(5), ms(7)]
            .into_iter()
            .map(|d| {
                let b = b.clone();
                tokio::spawn(async move { b.shutdown_timeout(d).await })
            })
            .collect();
        let mut remainder = Vec::new();
        for t in tasks {
            remainder.extend(t.await.unwrap().remainder);
        }
        assert_eq!(remainder, (0..20).collect::<Vec<_>>(), "once, in order, across both reports");
        assert_eq!(b.metrics().returned, 20);
    });
}

// ------------------------------------------------------------------------------------------------
// The runtime goes away under the batcher
// ------------------------------------------------------------------------------------------------

/// After the worker's runtime is gone, every call on a remaining handle finishes: adds refuse
/// with the item, flush and shutdown return.
fn assert_refuses_after_the_runtime_died(b: &Batcher<u32>) {
    assert_eq!(b.try_add(100), Err(PushError::Closed(100)));
    assert!(b.is_closed());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(bounded(REAL_DEADLOCK, async {
        assert_eq!(b.add(101).await, Err(PushError::Closed(101)));
        assert_eq!(b.add_urgent(102).await, Err(PushError::Closed(102)));
        assert_eq!(
            b.add_many([103, 104]).await.unwrap_err().items,
            vec![PushError::Closed(103), PushError::Closed(104)]
        );
        b.flush().await;
        b.shutdown().await;
        let report = b.shutdown_timeout(ms(1)).await;
        assert!(!report.timed_out);
    }));
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert!(m.rejected >= 5, "{m:?}");
}

#[test]
fn a_current_thread_runtime_dropped_under_an_idle_batcher() {
    let log = Log::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let b = rt.block_on(async {
        let b = Batcher::builder().max_batch(2).linger(HOUR).spawn(log.handler()).unwrap();
        b.add_many([1, 2]).await.unwrap();
        b.flush().await;
        b
    });
    drop(rt);
    assert_eq!(log.delivered(), vec![1, 2]);
    assert_refuses_after_the_runtime_died(&b);
}

#[test]
fn a_multi_thread_runtime_dropped_under_a_hanging_attempt() {
    let log = Log::new();
    let rt = multi_thread_runtime();
    let b = rt.block_on(async {
        let b = Batcher::builder().capacity(8).max_batch(2).linger(HOUR).spawn(log.handler().hang()).unwrap();
        b.add_many(0..5).await.unwrap();
        bounded(REAL_DEADLOCK, async {
            while log.running() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        b
    });
    drop(rt); // the worker (and the hanging attempt) are dropped with their runtime
    assert_eq!(log.running(), 0);
    assert_refuses_after_the_runtime_died(&b);
}

#[test]
fn a_runtime_dropped_before_the_worker_ever_ran() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let b = rt.block_on(async {
        let b = Batcher::builder().spawn(Log::<u32>::new().handler()).unwrap();
        b.try_add(1).unwrap(); // buffered; the worker has not been polled yet
        b
    });
    drop(rt);
    assert_refuses_after_the_runtime_died(&b);
}

#[test]
fn a_worker_that_is_never_spawned() {
    let (b, worker) = Batcher::<u32>::builder().build(Log::new().handler()).unwrap();
    drop(worker);
    assert_refuses_after_the_runtime_died(&b);
}

#[test]
fn a_producer_waiting_on_another_runtime_is_released_when_the_worker_runtime_dies() {
    let log = Log::new();
    let worker_rt = multi_thread_runtime();
    let b = worker_rt.block_on(async {
        let b = Batcher::builder().capacity(1).linger(HOUR).spawn(log.handler().hang()).unwrap();
        b.add(1).await.unwrap();
        bounded(REAL_DEADLOCK, async {
            while log.running() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        b.add(2).await.unwrap(); // the buffer is full from here on
        b
    });
    // One thread: the producer runs while this thread yields, and parks in `add` (the buffer
    // stays full, the handler hangs).
    let producer_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let waiter = {
        let b = b.clone();
        producer_rt.spawn(async move { b.add(3).await })
    };
    producer_rt.block_on(settle());
    assert!(!waiter.is_finished(), "the producer waits for room");
    drop(worker_rt);
    let r = producer_rt.block_on(bounded(REAL_DEADLOCK, waiter)).unwrap();
    assert_eq!(r, Err(PushError::Closed(3)));
    assert_refuses_after_the_runtime_died(&b);
}

/// A handler that holds a clone of its batch: the worker cannot reuse the buffer, and a
/// shutdown deadline cannot hand those items back. This is the documented limit ("do not keep
/// it after the handler's future ends"); it must not hang or panic, and the report says what it
/// could return.
#[tokio::test(start_paused = true)]
async fn a_handler_that_leaks_its_batch_past_a_deadline() {
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let k = Arc::clone(&kept);
    let b = Batcher::builder()
        .max_batch(2)
        .spawn(handler::from_fn(move |batch: Batch<u32>| {
            k.lock().unwrap().push(batch);
            std::future::pending::<Result<(), std::io::Error>>()
        }))
        .unwrap();
    b.add_many(0..3).await.unwrap();
    settle().await;
    let report = bounded(VIRTUAL_DEADLOCK, b.shutdown_timeout(ms(10))).await;
    assert!(report.timed_out);
    assert_eq!(report.remainder, vec![2], "the leaked batch [0, 1] cannot come back");
    assert_eq!(kept.lock().unwrap()[0].items(), &[0, 1]);
    assert!(report.metrics.is_consistent());
}

/// Items the batcher held when its runtime went away (buffered, or in a batch whose attempt was
/// running or waiting to retry) are not lost silently: a later `shutdown_timeout` returns them.
#[test]
fn items_held_when_the_runtime_dies_come_back_in_the_report() {
    let log = Log::new();
    let rt = paused_runtime();
    let b = rt.block_on(async {
        let b = Batcher::builder()
            .capacity(16)
            .max_batch(2)
            .max_in_flight(2)
            .linger(HOUR)
            .retry_delays(HOUR, HOUR)
            .spawn(log.handler().fail_when(|b: &Batch<u32>| b.seq() == 0).hang_when(|b| b.seq() == 1))
            .unwrap();
        b.add_many(0..7).await.unwrap();
        settle().await; // [0, 1] waits an hour to retry, [2, 3] hangs, 4..7 are buffered
        b
    });
    drop(rt);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = rt.block_on(bounded(REAL_DEADLOCK, b.shutdown_timeout(ms(1))));
    assert_eq!(sorted(report.remainder), (0..7).collect::<Vec<_>>());
    let m = report.metrics;
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.returned, m.buffered, m.in_flight), (7, 0, 0), "{m:?}");
    assert_refuses_after_the_runtime_died(&b);
}

/// The same with a closure handler (its future holds a clone of the batch while it hangs) on a
/// multi-thread runtime, and with the worker's task aborted instead of its runtime dropped.
#[test]
fn items_held_by_an_aborted_or_dropped_worker_come_back() {
    for abort_task in [false, true] {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = Arc::clone(&started);
        let rt = multi_thread_runtime();
        let (b, worker) = rt.block_on(async {
            let (b, worker) = Batcher::builder()
                .capacity(16)
                .max_batch(3)
                .linger(HOUR)
                .build(handler::from_fn(move |batch: Batch<u32>| {
                    let s = Arc::clone(&s);
                    async move {
                        s.store(true, std::sync::atomic::Ordering::SeqCst);
                        std::future::pending::<()>().await;
                        drop(batch);
                        Ok::<_, std::io::Error>(())
                    }
                }))
                .unwrap();
            let worker = tokio::spawn(worker);
            b.add_many(0..8).await.unwrap();
            bounded(REAL_DEADLOCK, async {
                while !started.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::task::yield_now().await;
                }
            })
            .await;
            (b, worker)
        });
        if abort_task {
            worker.abort();
            let joined = rt.block_on(bounded(REAL_DEADLOCK, worker));
            assert!(joined.unwrap_err().is_cancelled());
        }
        drop(rt);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let report = rt.block_on(bounded(REAL_DEADLOCK, b.shutdown_timeout(ms(1))));
        assert_eq!(report.remainder, (0..8).collect::<Vec<_>>(), "abort_task: {abort_task}");
        assert!(report.metrics.is_consistent(), "{:?}", report.metrics);
        assert_eq!(report.metrics.returned, 8);
        assert_refuses_after_the_runtime_died(&b);
    }
}
