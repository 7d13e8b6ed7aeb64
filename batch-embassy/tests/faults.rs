//! Issue 9 for batch-embassy: nothing is lost and nothing hangs. Cancelled and dropped runners,
//! many waiters, re-entrant handlers, shutdown with a deadline and per-attempt timeouts, on the
//! mock clock (no test sleeps; a hang is a bounded failure).
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;

use std::cell::{Cell, RefCell};

use batch_embassy::{BatchInfo, Batcher, Config, Handler, PushError, WithDeadLetter, millis};
use common::{Exec, serial};
use embassy_futures::select::select;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{Duration, Instant, Timer};
use heapless::vec::VecView;

/// Virtual milliseconds since `t0`.
fn ms_since(t0: Instant) -> u64 {
    (Instant::now() - t0).as_millis()
}

type Calls = RefCell<Vec<(u64, u64, u32, Vec<u32>)>>;

#[test]
fn a_run_cancelled_mid_attempt_resumes_the_same_batch() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(Config::new().max_batch(2).linger(millis(1000)));
    let calls: Calls = RefCell::new(Vec::new());
    let flushed_at = Cell::new(None);
    let t0 = Instant::now();
    let mut exec = Exec::new();
    exec.spawn(async {
        let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
            calls.borrow_mut().push((ms_since(t0), info.seq, info.attempt, batch.to_vec()));
            Timer::after_millis(100).await;
            Ok::<(), ()>(())
        });
        // The common embassy pattern: run until something else happens, then run again.
        select(runner.run(), Timer::after_millis(50)).await;
        runner.run().await;
    });
    exec.spawn(async {
        b.add(1).await.unwrap();
        b.add(2).await.unwrap();
        b.flush().await;
        flushed_at.set(Some(ms_since(t0)));
        b.add(3).await.unwrap();
        b.add(4).await.unwrap();
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(5), 10_000);
    // The cancelled attempt is re-run as the same attempt of the same batch.
    assert_eq!(calls.take(), vec![(0, 0, 1, vec![1, 2]), (50, 0, 1, vec![1, 2]), (150, 1, 1, vec![3, 4])]);
    assert_eq!(flushed_at.get(), Some(150));
    let m = b.metrics();
    assert!(m.is_consistent());
    assert_eq!((m.delivered, m.failed_attempts, m.retries), (4, 0, 0));
}

#[test]
fn a_run_cancelled_mid_backoff_resumes_the_retry_on_schedule() {
    let _g = serial();
    let config = Config::new().max_batch(2).retry_delays(millis(100), millis(100));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let calls: Calls = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut exec = Exec::new();
    exec.spawn(async {
        let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
            calls.borrow_mut().push((ms_since(t0), info.seq, info.attempt, batch.to_vec()));
            if info.attempt == 1 { Err(()) } else { Ok(()) }
        });
        select(runner.run(), Timer::after_millis(50)).await; // lost while waiting to retry
        runner.run().await;
    });
    exec.spawn(async {
        b.add(1).await.unwrap();
        b.add(2).await.unwrap();
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(5), 10_000);
    assert_eq!(calls.take(), vec![(0, 0, 1, vec![1, 2]), (100, 0, 2, vec![1, 2])]);
    let m = b.metrics();
    assert!(m.is_consistent());
    assert_eq!((m.delivered, m.failed_attempts, m.retries), (2, 1, 1));
}

#[test]
fn a_restarted_runner_never_mixes_its_held_batch_with_the_next() {
    let _g = serial();
    let config = Config::new().max_batch(2).max_in_flight(2).linger(millis(1000));
    let b: Batcher<NoopRawMutex, u32, 8, 2> = Batcher::new(config);
    let calls: Calls = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let handler = || {
        async |batch: &[u32], info: BatchInfo| {
            calls.borrow_mut().push((ms_since(t0), info.seq, info.attempt, batch.to_vec()));
            Timer::after_millis(100).await;
            Ok::<(), ()>(())
        }
    };
    let mut exec = Exec::new();
    exec.spawn(async {
        let mut runner = b.runner(handler());
        select(runner.run(), Timer::after_millis(50)).await;
        runner.run().await;
    });
    exec.spawn(async {
        b.runner(handler()).run().await;
    });
    exec.spawn(async {
        for i in 0..6 {
            b.add(i).await.unwrap();
        }
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(5), 10_000);
    let calls = calls.take();
    assert!(calls.iter().all(|c| c.3.len() <= 2), "a batch above max_batch: {calls:?}");
    let mut seqs: Vec<(u64, Vec<u32>)> = calls.iter().map(|c| (c.1, c.3.clone())).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs, vec![(0, vec![0, 1]), (1, vec![2, 3]), (2, vec![4, 5])]);
    let m = b.metrics();
    assert!(m.is_consistent());
    assert_eq!(m.delivered, 6);
}

#[test]
fn many_waiters_cost_nothing_while_nothing_changes() {
    const PRODUCERS: usize = 24;
    const FLUSHERS: usize = 8;
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 4> = Batcher::new(Config::new().max_batch(4).linger(millis(10)));
    let delivered = RefCell::new(Vec::new());
    let mut exec = Exec::new();
    b.pause(); // the uplink is down
    for i in 0..4 {
        b.try_add(i).unwrap(); // full
    }
    let runner = exec.spawn(async {
        b.runner(async |batch: &[u32], _: BatchInfo| {
            delivered.borrow_mut().extend_from_slice(batch);
            Ok::<(), ()>(())
        })
        .run()
        .await;
    });
    let b = &b;
    let producers: Vec<usize> = (0..PRODUCERS)
        .map(|p| {
            exec.spawn(async move {
                b.add(100 + p as u32).await.unwrap();
            })
        })
        .collect();
    let flushers: Vec<usize> = (0..FLUSHERS).map(|_| exec.spawn(async { b.flush().await })).collect();
    // A long outage: ten minutes in which nothing changes.
    exec.run_for(Duration::from_secs(600), 100_000);
    for &t in producers.iter().chain(&flushers).chain([&runner]) {
        assert!(exec.polls(t) <= 3, "task {t} polled {} times while idle", exec.polls(t));
        assert!(!exec.is_done(t));
    }
    // The link is back: every waiter is served, each with a few polls per real state change.
    b.resume();
    exec.run_until(Duration::from_secs(5), 100_000, |e| {
        producers.iter().chain(&flushers).all(|&t| e.is_done(t))
    });
    for &t in producers.iter().chain(&flushers) {
        assert!(exec.is_done(t), "task {t} was never served");
    }
    b.close();
    exec.run_all(Duration::from_secs(5), 100_000);
    let mut got = delivered.take();
    got.sort_unstable();
    let mut want: Vec<u32> = (0..4).chain(100..100 + PRODUCERS as u32).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    // 28 items in 7 batches: every waiter is polled O(1) times per batch, not in a loop.
    let per_waiter = exec.total_polls / (PRODUCERS + FLUSHERS + 1) as u64;
    assert!(per_waiter <= 10, "{} polls in total", exec.total_polls);
}

#[test]
fn a_handler_calling_flush_shutdown_or_add_does_not_deadlock() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 2> = Batcher::new(Config::new().max_batch(2).linger(millis(10)));
    let log = RefCell::new(Vec::new());
    let mut exec = Exec::new();
    let b = &b;
    exec.spawn(async {
        b.runner(async |batch: &[u32], info: BatchInfo| {
            log.borrow_mut().push((info.seq, batch.to_vec()));
            if info.seq == 0 {
                b.add(10).await.unwrap();
                b.add(11).await.unwrap(); // the buffer is full now
                let full = b.add(12).await; // would wait for this very batch: refused at once
                assert_eq!(full, Err(PushError::Full(12)));
                b.flush().await; // requests the cut, does not wait for this batch
                b.shutdown().await; // closes, does not wait for this batch
                assert_eq!(b.try_add(13), Err(PushError::Closed(13)));
            }
            Ok::<(), ()>(())
        })
        .run()
        .await;
    });
    exec.spawn(async {
        b.add(1).await.unwrap();
        b.add(2).await.unwrap();
    });
    exec.run_all(Duration::from_secs(5), 10_000);
    assert_eq!(log.take(), vec![(0, vec![1, 2]), (1, vec![10, 11])]);
    let m = b.metrics();
    assert!(m.is_consistent());
    assert_eq!((m.delivered, m.rejected), (4, 2));
}

/// A handler that records what it is given back, and whose attempts can be made to hang.
struct Uplink<'a> {
    calls: &'a Calls,
    returned: &'a RefCell<Vec<(u64, u32, Vec<u32>)>>,
    hang: bool,
    t0: Instant,
}

impl Handler<u32> for Uplink<'_> {
    type Error = &'static str;
    async fn handle(&mut self, batch: &[u32], info: BatchInfo) -> Result<(), &'static str> {
        self.calls.borrow_mut().push((ms_since(self.t0), info.seq, info.attempt, batch.to_vec()));
        if self.hang {
            core::future::pending::<()>().await;
        }
        Timer::after_millis(100).await;
        Ok(())
    }
    fn returned(&mut self, items: &mut VecView<u32>, info: BatchInfo) {
        self.returned.borrow_mut().push((info.seq, info.attempt, items.drain(..).collect()));
    }
}

#[test]
fn a_dropped_runner_hands_its_batch_back_and_flush_resolves() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(Config::new().max_batch(2).linger(millis(1000)));
    let calls: Calls = RefCell::new(Vec::new());
    let returned = RefCell::new(Vec::new());
    let flushed = Cell::new(false);
    let t0 = Instant::now();
    let mut exec = Exec::new();
    let first = exec.spawn(async {
        b.runner(Uplink { calls: &calls, returned: &returned, hang: true, t0 }).run().await;
    });
    exec.spawn(async {
        b.add(1).await.unwrap();
        b.add(2).await.unwrap();
        b.flush().await;
        flushed.set(true);
    });
    exec.run_for(Duration::from_millis(50), 10_000);
    assert!(!flushed.get());
    exec.cancel(first); // the runner task ends (its future, and the runner in it, are dropped)
    exec.run_until(Duration::from_millis(10), 10_000, |_| flushed.get());
    assert!(flushed.get(), "flush must not wait for a batch nobody holds");
    assert_eq!(returned.take(), vec![(0, 1, vec![1, 2])]);
    // The batcher goes on with a new runner.
    exec.spawn(async {
        b.add(3).await.unwrap();
        b.shutdown().await;
    });
    exec.spawn(async {
        b.runner(Uplink { calls: &calls, returned: &returned, hang: false, t0 }).run().await;
    });
    exec.run_all(Duration::from_secs(5), 10_000);
    assert_eq!(calls.take().last(), Some(&(50, 1, 1, vec![3])));
    let m = b.metrics();
    assert!(m.is_consistent());
    assert_eq!((m.accepted, m.returned, m.delivered), (3, 2, 1));
}

#[test]
fn shutdown_timeout_gives_up_at_the_deadline_and_everything_comes_back() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(Config::new().max_batch(2).linger(millis(1000)));
    let calls: Calls = RefCell::new(Vec::new());
    let returned = RefCell::new(Vec::new());
    let report = Cell::new(None);
    let run_ended = Cell::new(None);
    let t0 = Instant::now();
    let mut exec = Exec::new();
    exec.spawn(async {
        b.runner(Uplink { calls: &calls, returned: &returned, hang: true, t0 }).run().await;
        run_ended.set(Some(ms_since(t0)));
    });
    let flusher = exec.spawn(async { b.flush().await });
    exec.spawn(async {
        for i in 0..5 {
            b.add(i).await.unwrap();
        }
        let r = b.shutdown_timeout(Instant::now() + Duration::from_millis(200)).await;
        report.set(Some((ms_since(t0), r)));
    });
    exec.run_all(Duration::from_secs(5), 10_000);
    let (at, r) = report.get().unwrap();
    assert_eq!(at, 200);
    assert!(!r.drained);
    assert_eq!((r.held, r.buffered), (2, 3));
    assert_eq!(run_ended.get(), Some(200));
    assert!(exec.is_done(flusher));
    // The hung attempt was cancelled; its batch came back by value, the rest is taken here.
    assert_eq!(returned.take(), vec![(0, 1, vec![0, 1])]);
    let mut unsent = heapless::Vec::<u32, 8>::new();
    assert_eq!(b.take_unsent(&mut unsent), 3);
    assert_eq!(unsent, [2, 3, 4]);
    assert!(b.is_finished());
    let m = b.metrics();
    assert!(m.is_consistent());
    assert_eq!((m.accepted, m.returned, m.delivered, m.buffered, m.in_flight), (5, 5, 0, 0, 0));
    assert_eq!(calls.take().len(), 1);
}

#[test]
fn shutdown_timeout_reaches_a_batch_whose_runner_is_not_running() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(Config::new().max_batch(2).linger(millis(1000)));
    let calls: Calls = RefCell::new(Vec::new());
    let returned = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut runner = b.runner(Uplink { calls: &calls, returned: &returned, hang: true, t0 });
    let drained = Cell::new(None);
    {
        let mut exec = Exec::new();
        exec.spawn(async {
            // Lost mid-attempt, never run again.
            select(runner.run(), Timer::after_millis(10)).await;
        });
        exec.spawn(async {
            b.add(1).await.unwrap();
            b.add(2).await.unwrap();
            drained.set(Some(b.shutdown_timeout(Instant::now() + Duration::from_millis(100)).await.drained));
        });
        exec.run_all(Duration::from_secs(5), 10_000);
    }
    assert_eq!(drained.get(), Some(false));
    assert_eq!(runner.holding().map(|i| i.seq), Some(0));
    // Running it again hands the batch back and returns at once.
    let mut exec = Exec::new();
    exec.spawn(runner.run());
    exec.run_all(Duration::from_millis(1), 100);
    assert_eq!(returned.take(), vec![(0, 1, vec![1, 2])]);
    assert!(b.is_finished() && b.metrics().is_consistent());
}

#[test]
fn attempt_timeout_fails_a_hanging_attempt_then_dead_letters() {
    let _g = serial();
    let config = Config::new().max_batch(2).max_attempts(3).retry_delays(millis(100), millis(100));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let attempts = RefCell::new(Vec::new());
    let dead = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut exec = Exec::new();
    exec.spawn(async {
        let handler = WithDeadLetter(
            async |batch: &[u32], info: BatchInfo| {
                attempts.borrow_mut().push((ms_since(t0), info.seq, info.attempt));
                if info.seq == 0 {
                    core::future::pending::<()>().await; // hangs
                }
                let _ = batch;
                Ok::<(), &'static str>(())
            },
            |items: &mut VecView<u32>, info: BatchInfo, error: &'static str| {
                dead.borrow_mut().push((info.seq, info.attempt, error, items.drain(..).collect::<Vec<_>>()));
            },
        );
        b.runner(handler).attempt_timeout(Duration::from_millis(50), || "timed out").run().await;
    });
    exec.spawn(async {
        for i in 0..4 {
            b.add(i).await.unwrap();
        }
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(5), 10_000);
    // 0: attempt 1 times out at 50, retry at 150 times out at 200, retry at 300 times out at 350.
    assert_eq!(attempts.take(), vec![(0, 0, 1), (150, 0, 2), (300, 0, 3), (350, 1, 1)]);
    assert_eq!(dead.take(), vec![(0, 3, "timed out", vec![0, 1])]);
    let m = b.metrics();
    assert!(m.is_consistent());
    assert_eq!((m.failed_attempts, m.dead_lettered, m.delivered), (3, 2, 2));
}

#[test]
fn cancelled_waiters_pass_their_place_on() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 2> = Batcher::new(Config::new().max_batch(2).linger(millis(10)));
    let delivered = RefCell::new(Vec::new());
    b.pause();
    b.try_add(0).unwrap();
    b.try_add(1).unwrap();
    let mut exec = Exec::new();
    let b = &b;
    exec.spawn(async {
        b.runner(async |batch: &[u32], _: BatchInfo| {
            delivered.borrow_mut().extend_from_slice(batch);
            Ok::<(), ()>(())
        })
        .run()
        .await;
    });
    let producers: Vec<usize> = (0..12)
        .map(|p| {
            exec.spawn(async move {
                b.add(10 + p).await.unwrap();
            })
        })
        .collect();
    let flushers: Vec<usize> = (0..4).map(|_| exec.spawn(async { b.flush().await })).collect();
    exec.run_for(Duration::from_millis(100), 10_000);
    // Cancel waiters from the middle, the newest and the oldest places of the chain.
    for &t in &[producers[0], producers[5], producers[11], flushers[1]] {
        exec.cancel(t);
    }
    exec.run_for(Duration::from_millis(100), 10_000);
    b.resume();
    let waiting: Vec<usize> = producers.iter().chain(&flushers).copied().collect();
    exec.run_until(Duration::from_secs(5), 10_000, |e| waiting.iter().all(|&t| e.is_done(t)));
    b.close();
    exec.run_all(Duration::from_secs(5), 10_000);
    let mut got = delivered.take();
    got.sort_unstable();
    let want: Vec<u32> = [0, 1].into_iter().chain((10..22).filter(|p| ![10, 15, 21].contains(p))).collect();
    assert_eq!(got, want);
    assert!(b.metrics().is_consistent());
}

#[test]
fn a_waiter_polled_from_another_task_is_woken_there() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Wake, Waker};
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 1> = Batcher::new(Config::new());
    b.try_add(1).unwrap(); // full
    let (a, c) = (Arc::new(Flag(AtomicBool::new(false))), Arc::new(Flag(AtomicBool::new(false))));
    let (wa, wc) = (Waker::from(Arc::clone(&a)), Waker::from(Arc::clone(&c)));
    let mut add = std::pin::pin!(b.add(2));
    assert!(add.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
    assert!(add.as_mut().poll(&mut Context::from_waker(&wc)).is_pending()); // moved
    let mut unsent = heapless::Vec::<u32, 1>::new();
    b.take_unsent(&mut unsent); // room
    assert!(c.0.load(Ordering::SeqCst), "the task that polled last is woken");
    assert!(add.as_mut().poll(&mut Context::from_waker(&wc)).is_ready());
}
