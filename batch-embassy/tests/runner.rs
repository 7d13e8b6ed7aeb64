//! Host tests of batch-embassy on embassy-time's mock driver: time moves only when the test
//! executor finds nothing runnable, so every timing below is exact and no test sleeps.
#![allow(missing_docs, clippy::cast_possible_truncation, clippy::cast_possible_wrap)]

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use batch_embassy::{BatchInfo, Batcher, Config, PushError, Trigger, WithDeadLetter, millis};
use embassy_futures::join::join;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{Duration, Instant, MockDriver, Timer};

/// The mock clock is global: tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `fut` to completion on the mock clock: polls while woken, otherwise advances virtual time
/// by 1 ms. Fails after `limit` of virtual time (a hang becomes a failure, not a stuck test).
fn run<F: Future>(fut: F, limit: Duration) -> F::Output {
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let start = Instant::now();
    loop {
        flag.0.store(false, Ordering::SeqCst);
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        if !flag.0.load(Ordering::SeqCst) {
            assert!(Instant::now() - start < limit, "no progress within {limit:?} of virtual time");
            MockDriver::get().advance(Duration::from_millis(1));
        }
    }
}

/// Virtual milliseconds since `t0`.
fn ms_since(t0: Instant) -> u64 {
    (Instant::now() - t0).as_millis()
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    at_ms: u64,
    seq: u64,
    attempt: u32,
    trigger: Trigger,
    items: Vec<u32>,
}

#[test]
fn size_trigger_cuts_full_batches_in_order() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 16> = Batcher::new(Config::new().max_batch(4).linger(millis(1000)));
    let calls = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
        calls.borrow_mut().push(Call {
            at_ms: ms_since(t0),
            seq: info.seq,
            attempt: info.attempt,
            trigger: info.trigger,
            items: batch.to_vec(),
        });
        Ok::<(), ()>(())
    });
    run(
        join(runner.run(), async {
            for i in 0..8 {
                b.add(i).await.unwrap();
            }
            Timer::after_millis(10).await;
            b.close();
        }),
        Duration::from_secs(5),
    );
    let calls = calls.take();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].items, vec![0, 1, 2, 3]);
    assert_eq!(calls[1].items, vec![4, 5, 6, 7]);
    assert!(calls.iter().all(|c| c.trigger == Trigger::Size && c.at_ms == 0));
    assert_eq!((calls[0].seq, calls[1].seq), (0, 1));
    assert!(b.metrics().is_consistent());
    assert_eq!(b.metrics().delivered, 8);
}

#[test]
fn linger_fires_at_the_oldest_items_deadline() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 16> = Batcher::new(Config::new().max_batch(16).linger(millis(100)));
    let calls = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
        calls.borrow_mut().push((ms_since(t0), info.trigger, batch.to_vec()));
        Ok::<(), ()>(())
    });
    run(
        join(runner.run(), async {
            b.add(1).await.unwrap();
            Timer::after_millis(40).await;
            b.add(2).await.unwrap(); // does not push the deadline back
            Timer::after_millis(200).await;
            b.close();
        }),
        Duration::from_secs(5),
    );
    assert_eq!(calls.take(), vec![(100, Trigger::Linger, vec![1, 2])]);
}

#[test]
fn retries_follow_the_backoff_schedule_then_deliver() {
    let _g = serial();
    let config = Config::new().max_batch(2).max_attempts(4).retry_delays(millis(100), millis(1000));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let attempts = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
        attempts.borrow_mut().push((ms_since(t0), info.attempt, batch.to_vec()));
        if info.attempt < 3 { Err("uplink busy") } else { Ok(()) }
    });
    run(
        join(runner.run(), async {
            b.add(7).await.unwrap();
            b.add(8).await.unwrap();
            b.shutdown().await;
        }),
        Duration::from_secs(5),
    );
    assert_eq!(attempts.take(), vec![(0, 1, vec![7, 8]), (100, 2, vec![7, 8]), (300, 3, vec![7, 8])]);
    let m = b.metrics();
    assert_eq!((m.delivered, m.retries, m.failed_attempts, m.dead_lettered), (2, 2, 2, 0));
}

#[test]
fn dead_letter_hands_the_items_back_and_the_batcher_goes_on() {
    let _g = serial();
    let config = Config::new().max_batch(2).max_attempts(2).retry_delays(millis(10), millis(10));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let delivered = RefCell::new(Vec::new());
    let lost = RefCell::new(Vec::new());
    let mut runner = b.runner(WithDeadLetter(
        async |batch: &[u32], info: BatchInfo| {
            if info.seq == 0 {
                Err("rejected")
            } else {
                delivered.borrow_mut().extend_from_slice(batch);
                Ok(())
            }
        },
        |items: &mut heapless::vec::VecView<u32>, info: BatchInfo, error: &str| {
            assert_eq!((info.seq, info.attempt, error), (0, 2, "rejected"));
            lost.borrow_mut().extend(items.drain(..));
        },
    ));
    run(
        join(runner.run(), async {
            for i in 0..4 {
                b.add(i).await.unwrap();
            }
            b.shutdown().await;
        }),
        Duration::from_secs(5),
    );
    assert_eq!(lost.take(), vec![0, 1]);
    assert_eq!(delivered.take(), vec![2, 3]);
    let m = b.metrics();
    assert_eq!((m.dead_lettered, m.batches_dead_lettered, m.delivered), (2, 1, 2));
    assert!(m.is_consistent());
}

#[test]
fn add_waits_while_full_and_try_add_hands_the_item_back() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 4> = Batcher::new(Config::new().max_batch(4).linger(millis(5)));
    let delivered = RefCell::new(Vec::new());
    let mut runner = b.runner(async |batch: &[u32], _: BatchInfo| {
        Timer::after_millis(50).await; // a slow uplink
        delivered.borrow_mut().extend_from_slice(batch);
        Ok::<(), ()>(())
    });
    let mut refused = Vec::new();
    run(
        join(runner.run(), async {
            for i in 0..4 {
                b.add(i).await.unwrap();
            }
            // The runner took the first batch; the buffer fills again while it works.
            for i in 4..8 {
                b.add(i).await.unwrap();
            }
            match b.try_add(99) {
                Err(PushError::Full(item)) => refused.push(item),
                other => panic!("expected Full, got {other:?}"),
            }
            for i in 8..16 {
                b.add(i).await.unwrap(); // waits for room
            }
            b.shutdown().await;
        }),
        Duration::from_secs(5),
    );
    assert_eq!(refused, vec![99]);
    assert_eq!(delivered.take(), (0..16).collect::<Vec<_>>());
    let m = b.metrics();
    assert_eq!((m.accepted, m.rejected, m.delivered), (16, 1, 16));
}

#[test]
fn close_rejects_adds_and_drains_everything() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 32> = Batcher::new(Config::new().max_batch(8).linger(millis(10_000)));
    let delivered = RefCell::new(Vec::new());
    let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
        delivered.borrow_mut().push((info.trigger, batch.len()));
        Ok::<(), ()>(())
    });
    let mut after = None;
    run(
        join(runner.run(), async {
            for i in 0..11 {
                b.add(i).await.unwrap();
            }
            b.shutdown().await;
            after = Some(b.try_add(100));
        }),
        Duration::from_secs(5),
    );
    assert_eq!(after, Some(Err(PushError::Closed(100))));
    assert_eq!(delivered.take(), vec![(Trigger::Size, 8), (Trigger::Close, 3)]);
    assert!(b.is_finished());
}

#[test]
fn pause_holds_batches_and_retry_clock_until_resume() {
    let _g = serial();
    let config = Config::new().max_batch(2).linger(millis(10)).retry_delays(millis(100), millis(100));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let calls = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
        calls.borrow_mut().push((ms_since(t0), info.attempt, batch.to_vec()));
        if info.seq == 0 && info.attempt == 1 { Err(()) } else { Ok(()) }
    });
    run(
        join(runner.run(), async {
            b.add(1).await.unwrap();
            b.add(2).await.unwrap(); // batch 0 fails at t=0, retry due at t=100
            Timer::after_millis(50).await;
            b.pause(); // link down at t=50: the retry clock stops with 50 ms left
            b.add(3).await.unwrap();
            b.add(4).await.unwrap();
            Timer::after_millis(500).await;
            b.resume(); // t=550: retry at 600, then batch 1
            b.shutdown().await;
        }),
        Duration::from_secs(5),
    );
    assert_eq!(calls.take(), vec![(0, 1, vec![1, 2]), (600, 2, vec![1, 2]), (600, 1, vec![3, 4])]);
}

#[test]
fn flush_resolves_when_earlier_items_are_delivered() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(Config::new().max_batch(8).linger(millis(10_000)));
    let calls = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
        Timer::after_millis(20).await;
        calls.borrow_mut().push((info.trigger, batch.to_vec()));
        Ok::<(), ()>(())
    });
    let mut flushed_at = 0;
    run(
        join(runner.run(), async {
            b.flush().await; // empty: resolves at once
            assert_eq!(ms_since(t0), 0);
            b.add(1).await.unwrap();
            b.add(2).await.unwrap();
            b.flush().await;
            flushed_at = ms_since(t0);
            b.close();
        }),
        Duration::from_secs(5),
    );
    assert_eq!(flushed_at, 20);
    assert_eq!(calls.take(), vec![(Trigger::Manual, vec![1, 2])]);
}

#[test]
fn urgent_item_cuts_its_batch_at_once() {
    let _g = serial();
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(Config::new().max_batch(8).linger(millis(10_000)));
    let calls = RefCell::new(Vec::new());
    let mut runner = b.runner(async |batch: &[u32], info: BatchInfo| {
        calls.borrow_mut().push((info.trigger, batch.to_vec()));
        Ok::<(), ()>(())
    });
    run(
        join(runner.run(), async {
            b.add(1).await.unwrap();
            b.add_urgent(911).await.unwrap();
            Timer::after_millis(1).await;
            b.close();
        }),
        Duration::from_secs(5),
    );
    assert_eq!(calls.take(), vec![(Trigger::Urgent, vec![1, 911])]);
}

#[test]
fn two_runners_share_the_flight_slots() {
    let _g = serial();
    let config = Config::new().max_batch(2).max_in_flight(2).linger(millis(1000));
    let b: Batcher<NoopRawMutex, u32, 8, 2> = Batcher::new(config);
    let log = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let handler = || {
        async |batch: &[u32], info: BatchInfo| {
            log.borrow_mut().push((ms_since(t0), info.seq, batch.to_vec()));
            Timer::after_millis(100).await;
            Ok::<(), ()>(())
        }
    };
    let mut r1 = b.runner(handler());
    let mut r2 = b.runner(handler());
    run(
        join(join(r1.run(), r2.run()), async {
            for i in 0..4 {
                b.add(i).await.unwrap();
            }
            b.shutdown().await;
        }),
        Duration::from_secs(5),
    );
    let mut log = log.take();
    log.sort();
    // Both batches started at t=0: two in flight at once.
    assert_eq!(log, vec![(0, 0, vec![0, 1]), (0, 1, vec![2, 3])]);
}

/// A handler that records deliveries and expired items (`max_age`).
#[cfg(feature = "uplink")]
struct Expiring<'c> {
    delivered: &'c RefCell<Vec<u32>>,
    expired: &'c RefCell<Vec<(Option<u64>, Vec<u32>)>>,
    fail_first: u32,
}

#[cfg(feature = "uplink")]
impl batch_embassy::Handler<u32> for Expiring<'_> {
    type Error = &'static str;
    async fn handle(&mut self, batch: &[u32], info: BatchInfo) -> Result<(), &'static str> {
        if info.attempt <= self.fail_first {
            return Err("uplink down");
        }
        self.delivered.borrow_mut().extend_from_slice(batch);
        Ok(())
    }
    fn expired(&mut self, items: &mut heapless::vec::VecView<u32>, info: Option<BatchInfo>) {
        self.expired.borrow_mut().push((info.map(|i| i.seq), items.iter().copied().collect()));
    }
}

#[cfg(feature = "uplink")]
#[test]
fn items_older_than_max_age_go_to_the_expiry_path_at_the_cut_and_before_a_retry() {
    let _g = serial();
    let config = Config::new()
        .max_batch(2)
        .linger(millis(10))
        .max_age(millis(500))
        .retry_delays(millis(300), millis(300));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let (delivered, expired) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let mut runner = b.runner(Expiring { delivered: &delivered, expired: &expired, fail_first: 0 });
    run(
        join(runner.run(), async {
            b.pause(); // the uplink is down for a second
            for i in 0..2 {
                b.add(i).await.unwrap();
            }
            Timer::after_millis(1000).await;
            b.add(2).await.unwrap();
            b.add(3).await.unwrap();
            b.resume();
            Timer::after_millis(50).await;
            b.close();
        }),
        Duration::from_secs(5),
    );
    assert_eq!(expired.take(), vec![(None, vec![0, 1])], "the stale pair, at its cut");
    assert_eq!(delivered.take(), vec![2, 3]);
    let m = b.metrics();
    assert_eq!((m.expired, m.delivered), (2, 2));
    assert!(m.is_consistent());

    // Before a retry: attempt 1 fails at once, the retry would come 300 ms later, past 200 ms.
    let config = Config::new().max_batch(2).max_age(millis(200)).retry_delays(millis(300), millis(300));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let (delivered, expired) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let mut runner = b.runner(Expiring { delivered: &delivered, expired: &expired, fail_first: 1 });
    run(
        join(runner.run(), async {
            b.add(7).await.unwrap();
            b.add(8).await.unwrap();
            Timer::after_millis(50).await;
            b.close();
        }),
        Duration::from_secs(5),
    );
    assert_eq!(expired.take(), vec![(Some(0), vec![7, 8])]);
    assert!(delivered.take().is_empty());
    assert_eq!(b.metrics().expired, 2);
}

#[cfg(feature = "uplink")]
#[test]
fn a_retry_delayed_by_a_pause_past_max_age_goes_to_the_expiry_path_instead() {
    let _g = serial();
    // Attempt 1 fails at once; its retry is due at 100 ms, well within 250 ms; but the uplink is
    // paused at 50 ms for a second, and by the resume the items are too old to send.
    let config = Config::new().max_batch(2).max_age(millis(250)).retry_delays(millis(100), millis(100));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let (delivered, expired) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let mut runner = b.runner(Expiring { delivered: &delivered, expired: &expired, fail_first: 1 });
    run(
        join(runner.run(), async {
            b.add(7).await.unwrap();
            b.add(8).await.unwrap();
            Timer::after_millis(50).await;
            b.pause();
            Timer::after_millis(1000).await;
            b.resume();
            Timer::after_millis(50).await;
            b.close();
        }),
        Duration::from_secs(5),
    );
    assert_eq!(expired.take(), vec![(Some(0), vec![7, 8])], "handed over with their batch");
    assert!(delivered.take().is_empty(), "never sent a second old");
    let m = b.metrics();
    assert_eq!((m.expired, m.retries, m.failed_attempts), (2, 0, 1));
    assert!(m.is_consistent());
}

/// A sink that answers per item: it takes even readings, refuses multiples of 5 for good, and
/// fails the odd ones on the first attempt only.
struct PerItem<'c> {
    got: &'c RefCell<Vec<(u32, Vec<u32>)>>,
    refused: &'c RefCell<Vec<(u32, usize)>>,
}

impl batch_embassy::Handler<u32> for PerItem<'_> {
    type Error = ();
    async fn handle(&mut self, batch: &[u32], info: BatchInfo) -> Result<(), ()> {
        self.got.borrow_mut().push((info.attempt, batch.to_vec()));
        if info.attempt == 1 { Err(()) } else { Ok(()) }
    }
    fn verdict(&mut self, item: &u32, _: usize, _: BatchInfo, &(): &()) -> batch_embassy::Verdict {
        match item {
            i if i % 5 == 0 => batch_embassy::Verdict::Rejected,
            i if i % 2 == 0 => batch_embassy::Verdict::Delivered,
            _ => batch_embassy::Verdict::Retry,
        }
    }
    fn rejected(&mut self, item: u32, index: usize, _: BatchInfo) {
        self.refused.borrow_mut().push((item, index));
    }
}

#[test]
fn a_per_item_answer_retries_only_the_rest_and_rejects_for_good() {
    let _g = serial();
    let config = Config::new().max_batch(6).retry_delays(millis(100), millis(100));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let (got, refused) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let mut runner = b.runner(PerItem { got: &got, refused: &refused });
    run(
        join(runner.run(), async {
            for i in 1..=6 {
                b.add(i).await.unwrap();
            }
            Timer::after_millis(10).await;
            b.close();
        }),
        Duration::from_secs(5),
    );
    // Attempt 1: all six; 2, 4, 6 taken, 5 refused, 1 and 3 retried (in order, same seq).
    assert_eq!(got.take(), vec![(1, vec![1, 2, 3, 4, 5, 6]), (2, vec![1, 3])]);
    assert_eq!(refused.take(), vec![(5, 4)]);
    let m = b.metrics();
    assert_eq!((m.delivered, m.rejected_by_handler, m.dead_lettered, m.retries), (5, 1, 0, 1));
    assert!(m.is_consistent());
}

#[cfg(feature = "uplink")]
#[test]
fn a_paced_runner_starts_batches_no_faster_than_the_pace() {
    let _g = serial();
    let config = Config::new().max_batch(2).pace(millis(100), 1);
    let b: Batcher<NoopRawMutex, u32, 16> = Batcher::new(config);
    let starts = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let mut runner = b.runner(async |_: &[u32], _: BatchInfo| {
        starts.borrow_mut().push(ms_since(t0));
        Ok::<(), ()>(())
    });
    run(
        join(runner.run(), async {
            for i in 0..8 {
                b.add(i).await.unwrap(); // a backlog of four full batches at once
            }
            b.close();
        }),
        Duration::from_secs(5),
    );
    assert_eq!(starts.take(), vec![0, 100, 200, 300]);
}
