//! Handler shapes and failure modes: sync closures, async closures and trait implementations;
//! errors, panics and attempt timeouts are failed attempts, and none of them stops the worker.
#![allow(missing_docs)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use batch_tests::{Cause, Letters, Log, ms, settle};
use batch_tokio::handler::{self, Batch, Handler};
use batch_tokio::{Batcher, BuildError, Trigger};

#[tokio::test(start_paused = true)]
async fn a_sync_closure_handler_receives_the_items() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let b = Batcher::builder()
        .max_batch(2)
        .spawn(handler::from_sync(move |items: &[u32]| {
            sink.lock().unwrap().push(items.to_vec());
            Ok::<_, std::io::Error>(())
        }))
        .unwrap();
    b.add_many([1, 2, 3]).await.unwrap();
    b.flush().await;
    assert_eq!(*seen.lock().unwrap(), vec![vec![1, 2], vec![3]]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_async_closure_handler_owns_its_batch_across_awaits() {
    let start = tokio::time::Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let b = Batcher::builder()
        .max_batch(2)
        .spawn(handler::from_fn(move |batch: Batch<String>| {
            let sink = Arc::clone(&sink);
            async move {
                tokio::time::sleep(ms(300)).await; // e.g. an HTTP POST
                sink.lock().unwrap().push((batch.seq(), batch.join(",")));
                Ok::<_, std::io::Error>(())
            }
        }))
        .unwrap();
    b.add_many(["a", "b", "c"].map(String::from)).await.unwrap();
    b.flush().await;
    assert_eq!(*seen.lock().unwrap(), vec![(0, "a,b".to_owned()), (1, "c".to_owned())]);
    assert_eq!(start.elapsed(), ms(600), "two batches of 300 ms, one after the other");
    b.shutdown().await;
}

struct Summer {
    total: AtomicU64,
    batches: AtomicU64,
}

impl Handler<u64> for Summer {
    type Error = std::convert::Infallible;
    async fn handle(&self, batch: &mut Batch<u64>) -> Result<(), Self::Error> {
        self.total.fetch_add(batch.iter().sum(), Ordering::SeqCst);
        self.batches.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A handler shared with the test, to read its state afterwards.
struct Shared(Arc<Summer>);

impl Handler<u64> for Shared {
    type Error = std::convert::Infallible;
    fn handle(&self, batch: &mut Batch<u64>) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.0.handle(batch)
    }
}

#[tokio::test(start_paused = true)]
async fn a_trait_handler_keeps_state_across_batches() {
    let summer = Arc::new(Summer { total: AtomicU64::new(0), batches: AtomicU64::new(0) });
    let b = Batcher::builder().max_batch(10).spawn(Shared(Arc::clone(&summer))).unwrap();
    b.add_many(1..=100).await.unwrap();
    b.shutdown().await;
    assert_eq!(summer.total.load(Ordering::SeqCst), 5050);
    assert_eq!(summer.batches.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn a_sync_handler_error_is_retried_then_dead_lettered() {
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_attempts(2)
        .on_error(letters.callback())
        .spawn(handler::from_sync(|_: &[u8]| Err::<(), _>("Something went wrong!")))
        .unwrap();
    b.add_many([1, 2, 3]).await.unwrap();
    b.flush().await;
    let all = letters.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].cause, Cause::Handler("Something went wrong!".into()));
    assert_eq!((all[0].items.clone(), all[0].attempts), (vec![1, 2, 3], 2));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_async_handler_fails_the_attempt_and_the_worker_survives() {
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(2)
        .on_error(letters.callback())
        .spawn(handler::from_fn(|batch: Batch<u32>| async move {
            tokio::time::sleep(ms(5)).await;
            assert!(batch[0] != 13, "unlucky item {}", batch[0]);
            Ok::<_, std::io::Error>(())
        }))
        .unwrap();
    b.add_many([12, 13, 14]).await.unwrap();
    b.flush().await;
    let all = letters.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].cause, Cause::Panicked("unlucky item 13".into()));
    assert_eq!(all[0].items, vec![13]);
    let m = b.metrics();
    assert_eq!((m.delivered, m.dead_lettered, m.failed_attempts), (2, 1, 2));
    b.add(15).await.unwrap();
    b.flush().await;
    assert_eq!(b.metrics().delivered, 3, "the worker is still alive");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sync_handler_fails_the_attempt() {
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_attempts(1)
        .on_error(letters.callback())
        .spawn(handler::from_sync(|items: &[u32]| -> Result<(), std::io::Error> {
            assert!(items.len() < 3, "too many items: {}", items.len());
            Ok(())
        }))
        .unwrap();
    b.add_many([1, 2, 3]).await.unwrap();
    b.flush().await;
    b.add_many([4, 5]).await.unwrap();
    b.flush().await;
    assert_eq!(letters.all()[0].cause, Cause::Panicked("too many items: 3".into()));
    let m = b.metrics();
    assert_eq!((m.dead_lettered, m.delivered), (3, 2));
    b.shutdown().await;
}

struct PanicsBeforeItsFuture;

impl Handler<u32> for PanicsBeforeItsFuture {
    type Error = std::io::Error;
    #[allow(clippy::manual_async_fn, reason = "the panic must happen before the future exists")]
    fn handle(&self, batch: &mut Batch<u32>) -> impl Future<Output = Result<(), Self::Error>> + Send {
        assert!(batch[0] != 0, "refused synchronously");
        async { Ok(()) }
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_panicking_before_returning_its_future_fails_the_attempt() {
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(1)
        .on_error(letters.callback())
        .spawn(PanicsBeforeItsFuture)
        .unwrap();
    b.add_many([0, 1]).await.unwrap();
    b.flush().await;
    assert_eq!(letters.all()[0].cause, Cause::Panicked("refused synchronously".into()));
    assert_eq!(b.metrics().delivered, 1);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_attempt_timeout_fails_and_is_retried() {
    // Attempt 1 hangs and is cut at 250 ms; attempt 2 (at 350 ms) is fast.
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .attempt_timeout(ms(250))
        .spawn(log.handler().hang_when(|batch: &Batch<u32>| batch.attempt() == 1))
        .unwrap();
    b.add(1).await.unwrap();
    b.flush().await;
    let attempts = log.attempts_of(0);
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0].ok, attempts[0].end), (None, None), "cancelled");
    assert_eq!(attempts[1].start, ms(350));
    assert_eq!(attempts[1].ok, Some(true));
    assert_eq!(log.running(), 0);
    let m = b.metrics();
    assert_eq!((m.failed_attempts, m.retries, m.delivered), (1, 1, 1));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_batch_is_dead_lettered_with_the_timeout_as_cause() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(2)
        .attempt_timeout(ms(100))
        .on_error(letters.callback())
        .spawn(log.handler().hang_when(|batch: &Batch<u32>| batch[0] == 0))
        .unwrap();
    b.add_many([0, 1]).await.unwrap();
    b.flush().await;
    let all = letters.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].cause, Cause::TimedOut(ms(100)));
    assert_eq!(all[0].at, ms(300), "100 ms attempt, 100 ms backoff, 100 ms attempt");
    assert_eq!(log.delivered(), vec![1], "the worker went on");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_leaves_fast_attempts_alone() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .attempt_timeout(ms(100))
        .spawn(log.handler().latency(ms(99)))
        .unwrap();
    b.add_many([1, 2]).await.unwrap();
    b.flush().await;
    assert_eq!(b.metrics().failed_attempts, 0);
    assert_eq!(log.now(), ms(198));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_attempt_timeout_is_refused() {
    let log = Log::<u32>::new();
    let err = Batcher::builder().attempt_timeout(ms(0)).build(log.handler()).unwrap_err();
    assert_eq!(err, BuildError::ZeroAttemptTimeout);
    assert!(err.to_string().contains("attempt_timeout"));
}

#[tokio::test(start_paused = true)]
async fn the_batch_tells_its_seq_attempt_trigger_and_items() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let b = Batcher::builder()
        .max_batch(2)
        .spawn(handler::from_fn(move |mut batch: Batch<char>| {
            let sink = Arc::clone(&sink);
            async move {
                let clone = batch.share();
                sink.lock().unwrap().push((
                    clone.seq(),
                    clone.attempt(),
                    clone.trigger(),
                    clone.items().to_vec(),
                    batch.len(), // Deref to [T]
                ));
                if batch.attempt() == 1 { Err("first attempt fails") } else { Ok(()) }
            }
        }))
        .unwrap();
    b.add_many(['x', 'y']).await.unwrap();
    b.flush().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(0, 1, Trigger::Size, vec!['x', 'y'], 2), (0, 2, Trigger::Size, vec!['x', 'y'], 2)]
    );
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_keeping_its_batch_does_not_corrupt_later_batches() {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&kept);
    let b = Batcher::builder()
        .max_batch(2)
        .spawn(handler::from_fn(move |batch: Batch<u32>| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(batch); // kept past the attempt
                Ok::<_, std::io::Error>(())
            }
        }))
        .unwrap();
    b.add_many(0..6).await.unwrap();
    b.flush().await;
    settle().await;
    let kept: Vec<Vec<u32>> = kept.lock().unwrap().iter().map(|b| b.to_vec()).collect();
    assert_eq!(kept, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_whose_batch_was_kept_hands_the_letter_back() {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&kept);
    let outcome = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&outcome);
    let b = Batcher::builder()
        .max_attempts(1)
        .on_error(move |_, letter| {
            // A handler kept a clone of the batch, so the items cannot be taken by value; the
            // letter comes back intact instead.
            let back = letter.into_items().unwrap_err();
            *seen.lock().unwrap() = Some((back.seq(), back.attempts(), back.items().to_vec()));
        })
        .spawn(handler::from_fn(move |batch: Batch<u32>| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(batch);
                Err::<(), _>("kept and failed")
            }
        }))
        .unwrap();
    b.add_many([7, 8]).await.unwrap();
    b.flush().await;
    assert_eq!(*outcome.lock().unwrap(), Some((0, 1, vec![7, 8])));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_built_worker_can_be_driven_by_the_caller() {
    let log = Log::new();
    let (b, worker) = Batcher::builder().max_batch(2).build(log.handler()).unwrap();
    let producer = async {
        b.add_many([1, 2, 3]).await.unwrap();
        assert!(log.is_empty(), "the worker has not had a turn yet");
        b.shutdown().await;
    };
    tokio::join!(worker, producer);
    assert_eq!(log.delivered_batches(), vec![vec![1, 2], vec![3]]);
}
