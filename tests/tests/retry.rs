//! Retries: a failed attempt is retried after `base * 2^(attempt-1)`, capped at `max_delay`,
//! optionally shortened by seeded jitter; after `max_attempts` the batch goes to the error
//! callback with its items (dead letter).
#![allow(missing_docs)]

use std::time::Duration;

use batch_tests::{Cause, Letters, Log, ms};
use batch_tokio::Batcher;
use batch_tokio::handler::Batch;

fn since(later: Duration, earlier: Duration) -> Duration {
    later.checked_sub(earlier).expect("times only grow")
}

fn deltas(starts: &[Duration]) -> Vec<Duration> {
    starts.windows(2).map(|w| since(w[1], w[0])).collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_is_retried_until_it_succeeds() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(3)
        .on_error(letters.callback())
        .spawn(log.handler().fail_first(2))
        .unwrap();
    b.add_many([1, 2, 3]).await.unwrap();
    b.flush().await;
    let attempts = log.attempts_of(0);
    assert_eq!(attempts.len(), 3);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a.attempt, i as u32 + 1);
        assert_eq!(a.items, vec![1, 2, 3], "every attempt gets the same items");
    }
    assert_eq!(attempts[2].ok, Some(true));
    assert!(letters.is_empty());
    let m = b.metrics();
    assert_eq!((m.delivered, m.retries, m.failed_attempts), (3, 2, 2));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_default_backoff_is_100_200_400ms_then_dead_letter() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(1)
        .on_error(letters.callback())
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add(9).await.unwrap();
    b.flush().await;
    let starts: Vec<_> = log.attempts_of(0).iter().map(|c| c.start).collect();
    assert_eq!(starts, [ms(0), ms(100), ms(300), ms(700)]);
    assert_eq!(deltas(&starts), [ms(100), ms(200), ms(400)]);
    let all = letters.all();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].attempts, all[0].at), (4, ms(700)));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_custom_base_delay_doubles_each_time() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(5)
        .retry_delays(ms(10), ms(10_000))
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add(1).await.unwrap();
    b.flush().await;
    let starts: Vec<_> = log.attempts_of(0).iter().map(|c| c.start).collect();
    assert_eq!(deltas(&starts), [ms(10), ms(20), ms(40), ms(80)]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_delay_caps_the_backoff() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(6)
        .retry_delays(ms(100), ms(250))
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add(1).await.unwrap();
    b.flush().await;
    let starts: Vec<_> = log.attempts_of(0).iter().map(|c| c.start).collect();
    assert_eq!(deltas(&starts), [ms(100), ms(200), ms(250), ms(250), ms(250)]);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_delay_counts_from_the_end_of_the_failed_attempt() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(3)
        .spawn(log.handler().latency(ms(30)).always_fail())
        .unwrap();
    b.add(1).await.unwrap();
    b.flush().await;
    let calls = log.attempts_of(0);
    let starts: Vec<_> = calls.iter().map(|c| c.start).collect();
    assert_eq!(starts, [ms(0), ms(130), ms(360)]);
    assert_eq!(since(calls[1].start, calls[0].end.unwrap()), ms(100));
    assert_eq!(since(calls[2].start, calls[1].end.unwrap()), ms(200));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_hands_the_items_and_last_error_to_on_error() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(3)
        .max_attempts(3)
        .on_error(letters.callback())
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add_many([String::from("x"), String::from("y")]).await.unwrap();
    b.flush().await;
    let all = letters.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].seq, 0);
    assert_eq!(all[0].attempts, 3);
    assert_eq!(all[0].items, vec!["x".to_owned(), "y".to_owned()]);
    assert_eq!(
        all[0].cause,
        Cause::Handler("scripted failure of batch 0 attempt 3".into()),
        "the last attempt's error"
    );
    let m = b.metrics();
    assert_eq!((m.dead_lettered, m.batches_dead_lettered, m.delivered), (2, 1, 0));
    assert_eq!((m.retries, m.failed_attempts), (2, 3));
    assert!(m.is_consistent(), "{m:?}");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_attempts_one_means_no_retry() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(1)
        .on_error(letters.callback())
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add(1).await.unwrap();
    b.flush().await;
    assert_eq!(log.len(), 1);
    assert_eq!(letters.all()[0].at, ms(0));
    assert_eq!(b.metrics().retries, 0);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn without_on_error_a_dead_letter_is_counted_and_the_batcher_goes_on() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(2)
        .spawn(log.handler().fail_when(|batch: &Batch<u32>| batch.items()[0] == 0))
        .unwrap();
    b.add_many([0, 1]).await.unwrap();
    b.flush().await;
    let m = b.metrics();
    assert_eq!((m.dead_lettered, m.delivered), (1, 1));
    assert_eq!(log.delivered(), vec![1]);
    b.shutdown().await;
}

async fn jittered_delays(seed: u32) -> Vec<Duration> {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(6)
        .retry_delays(ms(100), ms(100_000))
        .jitter(500, seed)
        .spawn(log.handler().always_fail())
        .unwrap();
    b.add(1).await.unwrap();
    b.flush().await;
    b.shutdown().await;
    let starts: Vec<_> = log.attempts_of(0).iter().map(|c| c.start).collect();
    deltas(&starts)
}

#[tokio::test(start_paused = true)]
async fn jitter_is_repeatable_for_a_seed_and_stays_in_bounds() {
    let first = jittered_delays(42).await;
    let second = jittered_delays(42).await;
    assert_eq!(first, second, "same seed, same delays");
    assert_eq!(first.len(), 5);
    for (k, d) in first.iter().enumerate() {
        let full = ms(100 * (1 << k));
        // Shortened by at most 50 %; the timer may round up to the next millisecond.
        assert!(*d <= full, "retry {k}: {d:?} > {full:?}");
        assert!(*d >= full / 2, "retry {k}: {d:?} < half of {full:?}");
    }
    assert_ne!(first, (0..5).map(|k| ms(100 * (1 << k))).collect::<Vec<_>>(), "jitter changed something");
}

#[tokio::test(start_paused = true)]
async fn different_seeds_give_different_delays() {
    let a = jittered_delays(1).await;
    let b = jittered_delays(2).await;
    assert_ne!(a, b);
}

#[tokio::test(start_paused = true)]
async fn later_batches_wait_while_an_earlier_one_retries() {
    // One batch in flight (the default): batch 1 starts only once batch 0 is delivered.
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(1)
        .spawn(log.handler().fail_when(|batch: &Batch<u32>| batch.seq() == 0 && batch.attempt() < 3))
        .unwrap();
    b.add_many([10, 11]).await.unwrap();
    b.flush().await;
    let order: Vec<_> = log.calls().iter().map(|c| (c.seq, c.attempt, c.start)).collect();
    assert_eq!(order, [(0, 1, ms(0)), (0, 2, ms(100)), (0, 3, ms(300)), (1, 1, ms(300))]);
    b.shutdown().await;
}
