//! "Nothing is lost, nothing hangs" against user code written the way real services write it:
//! callbacks that panic, handlers that block their thread or never return, batches kept past
//! their attempt, handlers that call back into their own batcher, absurd sizes, runtimes without
//! timers. Each test failed on the adapter before the fix it names.
//!
//! Tests on paused tokio time where the behaviour is the runtime's; tests whose subject is a
//! deadline against a thread that user code blocks run on real time (a blocked OS thread does
//! not follow tokio's clock) and assert only upper bounds on how long a call took.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use batch_tokio::handler::{self, Batch, Handler};
use batch_tokio::{Abandoned, Batcher, BuildError, Overflow, PushError, SHUTDOWN_GRACE, WeakBatcher};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Delivered items, in order.
type Sink<T> = Arc<Mutex<Vec<T>>>;

fn sink<T>() -> Sink<T> {
    Arc::new(Mutex::new(Vec::new()))
}

fn ok_into(sink: &Sink<u32>) -> impl Handler<u32> {
    let sink = Arc::clone(sink);
    handler::from_sync(move |items: &[u32]| {
        sink.lock().unwrap().extend_from_slice(items);
        Ok::<_, std::io::Error>(())
    })
}

/// Silences the default panic hook's output for panics these tests cause on purpose.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg =
                p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str));
            if !msg.unwrap_or("").starts_with("planted") {
                default(info);
            }
        }));
    });
}

/// Tests whose subject is a thread that user code blocks run on a thread of their own, bounded
/// on the wall clock: a regression to a hang fails the suite instead of stalling it.
fn bounded(test: impl FnOnce() + Send + 'static) {
    const LIMIT: Duration = Duration::from_secs(30);
    let (done, finished) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(LIMIT) {
        Ok(()) => thread.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung: not finished within {LIMIT:?}"),
    }
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

// ------------------------------------------------------------------------------------------------
// 1. Every user callback is a fault domain
// ------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_panicking_on_error_does_not_stop_the_worker() {
    quiet_panics();
    let delivered = sink();
    let d = Arc::clone(&delivered);
    let b = Batcher::builder()
        .max_batch(2)
        .max_attempts(1)
        .on_error(|_, _| panic!("planted: on_error"))
        .spawn(handler::from_sync(move |items: &[u32]| {
            if items.contains(&0) {
                return Err("refused");
            }
            d.lock().unwrap().extend_from_slice(items);
            Ok(())
        }))
        .unwrap();
    b.add_many([0, 1]).await.unwrap(); // dead-lettered; on_error panics
    b.flush().await;
    b.add_many([2, 3]).await.unwrap(); // must still be delivered
    let report = b.shutdown().await;
    assert_eq!(*delivered.lock().unwrap(), vec![2, 3]);
    let m = report.metrics;
    assert_eq!((m.dead_lettered, m.delivered, m.panics), (2, 2, 1));
    assert!(report.is_clean() && m.is_consistent(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_on_evict_does_not_fail_the_add_nor_lose_count() {
    quiet_panics();
    let delivered = sink();
    let b = Batcher::builder()
        .capacity(2)
        .max_batch(2)
        .overflow(Overflow::DropOldest)
        .on_evict(|_: u32| panic!("planted: on_evict"))
        .build(ok_into(&delivered))
        .map(|(b, worker)| (b, tokio::spawn(worker)))
        .unwrap();
    let (b, worker) = b;
    b.pause();
    for i in 0..4 {
        assert_eq!(b.add(i).await, Ok(()), "the add itself succeeded");
    }
    b.resume();
    let report = b.shutdown().await;
    worker.await.unwrap();
    assert_eq!(*delivered.lock().unwrap(), vec![2, 3]);
    let m = report.metrics;
    assert_eq!((m.evicted, m.delivered, m.panics), (2, 2, 2));
    assert!(m.is_consistent());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_retried_and_counted() {
    quiet_panics();
    let delivered = sink();
    let d = Arc::clone(&delivered);
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let b = Batcher::builder()
        .spawn(handler::from_sync(move |items: &[u32]| {
            assert!(c.fetch_add(1, Ordering::SeqCst) != 0, "planted: handler");
            d.lock().unwrap().extend_from_slice(items);
            Ok::<_, std::io::Error>(())
        }))
        .unwrap();
    b.add(7).await.unwrap();
    let report = b.shutdown().await;
    assert_eq!(*delivered.lock().unwrap(), vec![7]);
    assert_eq!((report.metrics.retries, report.metrics.panics), (1, 1));
}

/// An item whose `Drop` panics (user code the worker runs when it is done with a batch).
#[derive(Debug)]
struct Grenade(u32);

impl Drop for Grenade {
    fn drop(&mut self) {
        assert!(self.0 != 1 || std::thread::panicking(), "planted: Drop");
    }
}

#[tokio::test(start_paused = true)]
async fn an_item_whose_drop_panics_does_not_stop_the_worker() {
    quiet_panics();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    let b = Batcher::builder()
        .max_batch(2)
        .spawn(handler::from_sync(move |items: &[Grenade]| {
            s.fetch_add(items.len(), Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        }))
        .unwrap();
    b.add_many((0..4).map(Grenade)).await.unwrap();
    b.flush().await;
    b.add_many((4..6).map(Grenade)).await.unwrap();
    let report = b.shutdown().await;
    assert_eq!(seen.load(Ordering::SeqCst), 6);
    assert_eq!((report.metrics.delivered, report.metrics.panics), (6, 1));
    assert!(report.is_clean());
}

/// The weigher is user code too: it runs outside the lock (here it reads the batcher's own
/// state, which takes the lock: under the lock this deadlocked), and its panic is contained.
#[test]
fn the_weigher_runs_outside_the_lock_and_its_panic_is_contained() {
    use std::sync::OnceLock;
    static ME: OnceLock<WeakBatcher<u32>> = OnceLock::new();
    quiet_panics();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let report = rt.block_on(async {
            let delivered = sink();
            let b = Batcher::builder()
                .max_batch(8)
                .max_weight(10, |item: &u32| {
                    let peek = ME.get().and_then(WeakBatcher::upgrade).map(|b| b.len());
                    assert!(*item != 13, "planted: weigher");
                    let _ = peek;
                    *item
                })
                .spawn(ok_into(&delivered))
                .unwrap();
            let _ = ME.set(b.downgrade());
            b.add(4).await.unwrap();
            b.add(13).await.unwrap(); // the weigher panics: taken as weighing 10, delivered alone
            b.add_many([5, 5]).await.unwrap();
            let report = b.shutdown().await;
            (report, delivered.lock().unwrap().clone())
        });
        let _ = done_tx.send(report);
    });
    let (report, delivered) = done.recv_timeout(Duration::from_secs(30)).expect("deadlocked");
    assert_eq!(delivered, vec![4, 13, 5, 5]);
    assert_eq!((report.metrics.delivered, report.metrics.panics), (4, 1));
    assert_eq!(report.metrics.flushes.total(), 3, "[4] [13] [5 5]: {:?}", report.metrics.flushes);
}

// ------------------------------------------------------------------------------------------------
// 2. Accounting that cannot lie
// ------------------------------------------------------------------------------------------------

/// The gateway's own pattern: the batch goes to `spawn_blocking`, which is still writing when
/// the deadline passes. Before the fix the report said `returned = 3` with an empty remainder.
#[test]
fn a_batch_kept_by_spawn_blocking_past_the_deadline_is_abandoned_not_returned() {
    bounded(|| {
        multi_thread().block_on(async {
            let (release, gate) = mpsc::channel::<()>();
            let gate = Arc::new(Mutex::new(gate));
            let b = Batcher::builder()
                .max_batch(3)
                .spawn(handler::from_fn(move |mut batch: Batch<u32>| {
                    let gate = Arc::clone(&gate);
                    async move {
                        let items = batch.share();
                        tokio::task::spawn_blocking(move || {
                            let _ = gate.lock().unwrap().recv(); // a slow disk
                            items.len()
                        })
                        .await
                        .map(drop)
                    }
                }))
                .unwrap();
            b.add_many([1, 2, 3]).await.unwrap();
            b.add_many([4, 5]).await.unwrap(); // buffered behind it
            let report = b.shutdown_timeout(ms(200)).await;
            release.send(()).unwrap();
            assert!(report.timed_out);
            assert_eq!(report.abandoned, vec![Abandoned { seq: 0, len: 3 }]);
            assert_eq!(report.remainder, vec![4, 5]);
            let m = report.metrics;
            assert_eq!((m.returned, m.abandoned, m.delivered), (2, 3, 0));
            assert!(m.is_consistent(), "{m:?}");
        });
    });
}

#[tokio::test(start_paused = true)]
async fn a_handler_cut_short_hands_its_batch_back_by_value() {
    let b = Batcher::builder()
        .max_batch(2)
        .spawn(handler::from_fn(|_b: Batch<u32>| async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        }))
        .unwrap();
    b.add_many([1, 2, 3]).await.unwrap();
    let report = b.shutdown_timeout(ms(500)).await;
    assert!(report.timed_out && report.abandoned.is_empty());
    assert_eq!(report.remainder, vec![1, 2, 3]);
    assert_eq!((report.metrics.returned, report.metrics.abandoned), (3, 0));
    assert!(report.metrics.is_consistent());
}

// ------------------------------------------------------------------------------------------------
// 3. Deadlines are deadlines
// ------------------------------------------------------------------------------------------------

/// Generous slack above `deadline + SHUTDOWN_GRACE` for a loaded 2-core CI machine.
const SLACK: Duration = ms(1_500);

#[test]
fn shutdown_timeout_returns_on_time_when_a_sync_handler_blocks_its_thread() {
    bounded(|| {
        multi_thread().block_on(async {
            let (release, gate) = mpsc::channel::<()>();
            let gate = Mutex::new(gate);
            let b = Batcher::builder()
                .max_batch(2)
                .spawn(handler::from_sync(move |_: &[u32]| {
                    let _ = gate.lock().unwrap().recv(); // blocks a runtime thread
                    Ok::<_, std::io::Error>(())
                }))
                .unwrap();
            b.add_many([1, 2, 3]).await.unwrap();
            tokio::task::yield_now().await;
            let started = std::time::Instant::now();
            let report = b.shutdown_timeout(ms(200)).await;
            let took = started.elapsed();
            release.send(()).unwrap();
            assert!(took < ms(200) + SHUTDOWN_GRACE + SLACK, "took {took:?}");
            assert!(report.timed_out);
            assert_eq!(report.abandoned, vec![Abandoned { seq: 0, len: 2 }]);
            assert_eq!(report.remainder, vec![3]);
            assert!(report.metrics.is_consistent());
        });
    });
}

/// A handler that never returns, on a current-thread runtime that it blocks for good, and a
/// shutdown awaited from another thread with no runtime at all (a signal-handling thread).
#[test]
fn shutdown_timeout_works_outside_a_runtime_while_the_handler_never_returns() {
    bounded(|| {
        let (ready_tx, ready) = mpsc::channel();
        let (batcher_tx, batcher_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let b = Batcher::builder()
                    .max_batch(1)
                    .spawn(handler::from_sync(move |_: &[u32]| -> Result<(), std::io::Error> {
                        let _ = ready_tx.send(());
                        loop {
                            std::thread::park(); // never returns
                        }
                    }))
                    .unwrap();
                b.try_add(1).unwrap();
                b.try_add(2).unwrap();
                batcher_tx.send(b).unwrap();
                std::future::pending::<()>().await;
            });
        });
        let b: Batcher<u32> = batcher_rx.recv().unwrap();
        ready.recv().unwrap(); // the handler has the thread
        let started = std::time::Instant::now();
        let report = futures_lite::future::block_on(b.shutdown_timeout(ms(200)));
        let took = started.elapsed();
        assert!(took < ms(200) + SHUTDOWN_GRACE + SLACK, "took {took:?}");
        assert!(report.timed_out);
        assert_eq!(report.abandoned, vec![Abandoned { seq: 0, len: 1 }]);
        assert_eq!(report.remainder, vec![2]);
        assert!(report.metrics.is_consistent());
    });
}

/// `from_blocking` keeps a blocking sink off the runtime's threads: on a current-thread runtime,
/// other tasks and producers go on while it blocks (with a blocking `from_sync` the only thread
/// would be held and the task below would never run: the 5 s bound turns that into a failure).
#[test]
fn a_blocking_handler_does_not_starve_the_runtime() {
    bounded(|| {
        current_thread().block_on(async {
            let (release, gate) = mpsc::channel::<()>();
            let gate = Mutex::new(gate);
            let (entered_tx, entered) = mpsc::channel::<()>();
            let entered_tx = Mutex::new(entered_tx);
            let b = Batcher::builder()
                .capacity(8)
                .max_batch(2)
                .spawn(handler::from_blocking(move |_: &[u32]| {
                    let _ = entered_tx.lock().unwrap().send(());
                    let _ = gate.lock().unwrap().recv();
                    Ok::<_, std::io::Error>(())
                }))
                .unwrap();
            b.add_many([1, 2]).await.unwrap();
            // Wait (on the blocking pool, not this thread) until the handler holds its thread.
            tokio::task::spawn_blocking(move || entered.recv()).await.unwrap().unwrap();
            let other = tokio::spawn(async { 42 });
            let ran = tokio::time::timeout(Duration::from_secs(5), other).await;
            assert_eq!(ran.ok().and_then(Result::ok), Some(42), "another task ran while the handler blocked");
            for i in 3..9 {
                b.try_add(i).unwrap();
            }
            for _ in 0..4 {
                release.send(()).unwrap();
            }
            let report = b.shutdown().await;
            assert_eq!(report.metrics.delivered, 8);
        });
    });
}

// ------------------------------------------------------------------------------------------------
// 4. Re-entrancy is safe or refused, never a deadlock
// ------------------------------------------------------------------------------------------------

/// A handler holding a weak handle on its own batcher.
type Slot = Arc<Mutex<Option<WeakBatcher<u32>>>>;

fn reentrant<F, Fut>(f: F) -> (Batcher<u32>, Slot)
where
    F: Fn(Batcher<u32>, Batch<u32>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), std::io::Error>> + Send + 'static,
{
    let slot: Slot = Arc::new(Mutex::new(None));
    let s = Arc::clone(&slot);
    let b = Batcher::builder()
        .capacity(4)
        .max_batch(2)
        .spawn(handler::from_fn(move |batch: Batch<u32>| {
            let me = s.lock().unwrap().as_ref().and_then(WeakBatcher::upgrade).expect("batcher alive");
            f(me, batch)
        }))
        .unwrap();
    *slot.lock().unwrap() = Some(b.downgrade());
    (b, slot)
}

#[tokio::test(start_paused = true)]
async fn flush_and_shutdown_from_inside_the_handler_do_not_deadlock() {
    let (b, _slot) = reentrant(|me, _batch| async move {
        me.flush().await;
        let report = me.shutdown().await; // closes; cannot wait for itself
        assert!(report.timed_out);
        Ok(())
    });
    b.add_many([1, 2]).await.unwrap();
    let outcome = tokio::time::timeout(ms(60_000), b.flush()).await;
    assert!(outcome.is_ok(), "the batcher stalled");
    assert!(b.is_closed());
    assert_eq!(b.add(3).await, Err(PushError::Closed(3)));
    assert_eq!(b.metrics().delivered, 2);
}

#[tokio::test(start_paused = true)]
async fn add_from_inside_the_handler_on_a_full_buffer_refuses_at_once() {
    let refused = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&refused);
    let (b, _slot) = reentrant(move |me, batch| {
        let r = Arc::clone(&r);
        async move {
            if batch.seq() == 0 {
                // Fill the buffer from inside the handler; the add that finds it full must not
                // wait for room that only this very batch's end could make.
                for k in 100..110 {
                    if let Err(e) = me.add(k).await {
                        r.lock().unwrap().push(e);
                        break;
                    }
                }
            }
            Ok(())
        }
    });
    b.add_many([1, 2]).await.unwrap();
    let outcome = tokio::time::timeout(ms(60_000), b.flush()).await;
    assert!(outcome.is_ok(), "the batcher stalled");
    assert_eq!(*refused.lock().unwrap(), vec![PushError::Full(104)], "capacity 4: 100..=103 fit");
    let report = b.shutdown().await;
    assert_eq!(report.metrics.delivered, 6);
}

#[tokio::test(start_paused = true)]
async fn a_weak_handle_in_the_handler_does_not_keep_the_batcher_alive() {
    let (b, slot) = reentrant(|_me, _batch| async { Ok(()) });
    let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
    b.add(1).await.unwrap();
    let weak = slot.lock().unwrap().clone().unwrap();
    tokio::spawn(async move {
        while weak.upgrade().is_some() {
            tokio::time::sleep(ms(10)).await;
        }
        let _ = done_tx.send(());
    });
    drop(b);
    assert!(tokio::time::timeout(ms(60_000), done).await.is_ok(), "the last handle did not close it");
}

// ------------------------------------------------------------------------------------------------
// 5. Bad configuration and misuse give errors, never panics or aborts
// ------------------------------------------------------------------------------------------------

fn nothing() -> impl Handler<u64> {
    handler::from_sync(|_: &[u64]| Ok::<_, std::io::Error>(()))
}

#[test]
fn sizes_that_cannot_be_allocated_are_build_errors() {
    let err = Batcher::builder().capacity(usize::MAX).build(nothing()).unwrap_err();
    assert_eq!(err, BuildError::OutOfMemory { field: "capacity", requested: usize::MAX });
    let err = Batcher::builder().capacity(1 << 40).build(nothing()).unwrap_err();
    assert_eq!(err.field(), "capacity");
    assert!(err.to_string().contains("capacity"), "{err}");
    let err = Batcher::builder().max_in_flight(usize::MAX).build(nothing()).unwrap_err();
    assert_eq!(err, BuildError::OutOfMemory { field: "max_in_flight", requested: usize::MAX });
    let err = Batcher::builder().capacity(1 << 24).max_in_flight(1 << 24).build(nothing()).unwrap_err();
    assert_eq!(err.field(), "max_in_flight", "{err}");
}

#[test]
fn a_runtime_without_timers_is_an_error_at_spawn() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let err = Batcher::builder().spawn(nothing()).unwrap_err();
        assert_eq!(err, BuildError::NoTimers);
        assert!(err.to_string().contains("enable_time"));
    });
    let err = Batcher::<u64>::builder().spawn(nothing()).unwrap_err();
    assert_eq!(err, BuildError::NoRuntime);
}

#[test]
fn a_worker_spawned_on_a_runtime_without_timers_stops_and_strands_nothing() {
    let (b, worker) = Batcher::builder().build(nothing()).unwrap(); // outside any runtime
    b.try_add(1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        tokio::spawn(worker).await.unwrap();
        assert_eq!(b.try_add(2), Err(PushError::Closed(2)));
        let report = b.shutdown().await;
        assert_eq!(report.remainder, vec![1]);
        assert!(report.metrics.is_consistent());
    });
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_while_paused_drains() {
    let delivered = sink();
    let (b, worker) = Batcher::builder().build(ok_into(&delivered)).unwrap();
    let worker = tokio::spawn(worker);
    b.pause();
    b.add_many([1, 2, 3]).await.unwrap();
    drop(b);
    assert!(tokio::time::timeout(ms(60_000), worker).await.is_ok(), "the worker leaked");
    assert_eq!(*delivered.lock().unwrap(), vec![1, 2, 3]);
}

// ------------------------------------------------------------------------------------------------
// 6. Items need `Send`, not `Sync`
// ------------------------------------------------------------------------------------------------

struct CellSink(Arc<AtomicU32>);

impl Handler<Cell<u32>> for CellSink {
    type Error = std::io::Error;
    async fn handle(&self, batch: &mut Batch<Cell<u32>>) -> Result<(), Self::Error> {
        tokio::task::yield_now().await;
        self.0.fetch_add(batch.iter().map(Cell::get).sum(), Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_that_are_send_but_not_sync_work() {
    let total = Arc::new(AtomicU32::new(0));
    let b = Batcher::builder().max_batch(3).spawn(CellSink(Arc::clone(&total))).unwrap();
    for i in 1..=10 {
        b.add(Cell::new(i)).await.unwrap();
    }
    let letters = Arc::new(AtomicU32::new(0));
    let l = Arc::clone(&letters);
    let b2 = Batcher::builder()
        .max_attempts(1)
        .on_error(move |_, letter| {
            let items = letter.into_items().unwrap();
            l.fetch_add(items.iter().map(Cell::get).sum(), Ordering::SeqCst);
        })
        .spawn(handler::from_sync(|_: &[Cell<u32>]| Err("down")))
        .unwrap();
    b2.add(Cell::new(5)).await.unwrap();
    assert!(b.shutdown().await.is_clean());
    b2.shutdown().await;
    assert_eq!(total.load(Ordering::SeqCst), 55);
    assert_eq!(letters.load(Ordering::SeqCst), 5);
}
