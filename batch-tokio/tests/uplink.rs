//! What a real uplink needs, on batch-tokio under paused time (issue 13): per-item answers
//! (`PartialFailure`, `on_reject`), expiry (`max_age`, `on_expire`) and a paced drain (`pace`).
//! Every test checks where each item went: exactly one of delivered, rejected, dead-lettered or
//! expired, and the metrics identity at each read.
#![allow(missing_docs, clippy::many_single_char_names)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use batch_tokio::handler::{self, Batch, BoxError, Expired, PartialFailure, RejectedItems};
use batch_tokio::{Batcher, BuildError, Metrics, WeakBatcher};
use tokio::time::Instant;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Where items went, as the handler and the callbacks saw them.
#[derive(Debug, Default)]
struct Fates {
    /// `(seq, attempt, items)` of each attempt, as the handler saw it.
    attempts: Vec<(u64, u32, Vec<u32>)>,
    delivered: Vec<u32>,
    /// `(seq, attempt, item, reason)`.
    rejected: Vec<(u64, u32, u32, String)>,
    dead: Vec<u32>,
    /// `(seq, item)`.
    expired: Vec<(Option<u64>, u32)>,
    /// Metrics read inside the callbacks (the identity must hold there too).
    reads: Vec<Metrics>,
}

type Shared = Arc<Mutex<Fates>>;

/// A builder whose callbacks record into `fates`, and read the batcher's metrics through
/// `weak` (set once the batcher exists).
fn builder(fates: &Shared, weak: &Arc<Mutex<Option<WeakBatcher<u32>>>>) -> batch_tokio::Builder<u32> {
    let read = |weak: &Arc<Mutex<Option<WeakBatcher<u32>>>>| {
        weak.lock().unwrap().as_ref().and_then(WeakBatcher::upgrade).map(|b| b.metrics())
    };
    let (f1, f2, f3) = (Arc::clone(fates), Arc::clone(fates), Arc::clone(fates));
    let (w1, w2, w3) = (Arc::clone(weak), Arc::clone(weak), Arc::clone(weak));
    Batcher::builder()
        .on_reject(move |r: RejectedItems<u32>| {
            let m = read(&w1);
            let mut f = f1.lock().unwrap();
            f.reads.extend(m);
            let (seq, attempt) = (r.seq(), r.attempt());
            for (item, reason) in r.into_items() {
                f.rejected.push((seq, attempt, item, reason.to_string()));
            }
        })
        .on_error(move |_, letter| {
            let m = read(&w2);
            let mut f = f2.lock().unwrap();
            f.reads.extend(m);
            f.dead.extend(letter.into_items().unwrap());
        })
        .on_expire(move |e: Expired<u32>| {
            let m = read(&w3);
            let mut f = f3.lock().unwrap();
            f.reads.extend(m);
            let seq = e.seq();
            f.expired.extend(e.into_items().unwrap().into_iter().map(|i| (seq, i)));
        })
}

/// A handler that records each attempt and answers with `answer(seq, attempt, items)`:
/// `Ok(None)` delivers all, `Ok(Some(answer))` answers per item, `Err` fails the attempt.
fn recording(
    fates: &Shared,
    answer: impl Fn(u64, u32, &[u32]) -> Result<Option<PartialFailure>, BoxError> + Send + Sync + 'static,
) -> impl handler::Handler<u32> {
    let fates = Arc::clone(fates);
    handler::from_fn(move |batch: Batch<u32>| {
        let items = batch.to_vec();
        let verdict = answer(batch.seq(), batch.attempt(), &items);
        let mut f = fates.lock().unwrap();
        f.attempts.push((batch.seq(), batch.attempt(), items.clone()));
        let result = match verdict {
            Ok(None) => {
                f.delivered.extend(&items);
                Ok(())
            }
            Ok(Some(answer)) => {
                // What the sink took: every item not named.
                let named: Vec<usize> =
                    answer.retries().iter().copied().chain(answer.rejections().map(|(i, _)| i)).collect();
                f.delivered
                    .extend(items.iter().enumerate().filter(|(i, _)| !named.contains(i)).map(|(_, x)| *x));
                Err(BoxError::from(answer))
            }
            Err(e) => Err(e),
        };
        async move { result }
    })
}

/// Spawns the batcher and lets the callbacks read its metrics.
fn spawn(
    b: batch_tokio::Builder<u32>,
    weak: &Arc<Mutex<Option<WeakBatcher<u32>>>>,
    h: impl handler::Handler<u32>,
) -> Batcher<u32> {
    let batcher = b.spawn(h).unwrap();
    *weak.lock().unwrap() = Some(batcher.downgrade());
    batcher
}

/// Every item in `0..n` went to exactly one place, and the counters say the same.
fn each_once(f: &Fates, m: &Metrics, n: u32) {
    let mut all: Vec<u32> = f.delivered.clone();
    all.extend(f.rejected.iter().map(|r| r.2));
    all.extend(&f.dead);
    all.extend(f.expired.iter().map(|e| e.1));
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "each item exactly once: {f:?}");
    assert_eq!(m.delivered, f.delivered.len() as u64, "{m:?}");
    assert_eq!(m.rejected_by_handler, f.rejected.len() as u64, "{m:?}");
    assert_eq!(m.dead_lettered, f.dead.len() as u64, "{m:?}");
    assert_eq!(m.expired, f.expired.len() as u64, "{m:?}");
    assert!(m.is_consistent(), "{m:?}");
    for read in &f.reads {
        assert!(read.is_consistent(), "a read inside a callback: {read:?}");
    }
}

fn answer(retry: &[usize], reject: &[(usize, &str)]) -> PartialFailure {
    let mut a = PartialFailure::new();
    for &i in retry {
        a.retry(i);
    }
    for &(i, reason) in reject {
        a.reject(i, reason.to_owned());
    }
    a
}

// -------------------------------------------------------------------------------------------
// Per-item answers
// -------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_partial_answer_retries_only_the_rest_in_order_under_the_same_seq() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = Arc::clone(&times);
    let h = recording(&fates, move |_, attempt, _| {
        t.lock().unwrap().push(start.elapsed());
        Ok((attempt == 1).then(|| answer(&[1, 3, 5], &[(2, "malformed")])))
    });
    let b = spawn(builder(&fates, &weak).max_batch(6), &weak, h);
    b.add_many(0..6).await.unwrap();
    b.flush().await;
    let f = fates.lock().unwrap();
    assert_eq!(f.attempts, vec![(0, 1, vec![0, 1, 2, 3, 4, 5]), (0, 2, vec![1, 3, 5])]);
    assert_eq!(*times.lock().unwrap(), [ms(0), ms(100)], "the normal back-off");
    assert_eq!(f.rejected, vec![(0, 1, 2, "malformed".to_owned())]);
    let m = b.metrics();
    assert_eq!((m.retries, m.failed_attempts, m.batches_delivered), (1, 1, 1), "{m:?}");
    each_once(&f, &m, 6);
}

#[tokio::test(start_paused = true)]
async fn rejected_items_reach_on_reject_with_their_reason_counted_apart_from_dead_letters() {
    let (fates, weak) = (Shared::default(), Arc::default());
    // Attempt 1: 0 and 3 rejected, 1 and 4 to retry, 2 delivered; every later attempt fails.
    let h = recording(&fates, |_, attempt, _| match attempt {
        1 => Ok(Some(answer(&[1, 4], &[(3, "too hot"), (0, "no timestamp")]))),
        _ => Err("collector down".into()),
    });
    let b = spawn(builder(&fates, &weak).max_batch(5).max_attempts(3), &weak, h);
    b.add_many(0..5).await.unwrap();
    b.flush().await;
    let f = fates.lock().unwrap();
    let reasons: Vec<_> = f.rejected.iter().map(|r| (r.2, r.3.as_str())).collect();
    assert_eq!(reasons, [(0, "no timestamp"), (3, "too hot")], "in batch order, with the handler's reason");
    assert_eq!(f.dead, [1, 4], "the rest failed every attempt");
    let m = b.metrics();
    assert_eq!((m.rejected_by_handler, m.dead_lettered, m.batches_dead_lettered), (2, 2, 1), "{m:?}");
    each_once(&f, &m, 5);
}

#[tokio::test(start_paused = true)]
async fn the_identity_holds_at_every_read_through_partial_answers() {
    let (fates, weak) = (Shared::default(), Arc::default());
    // Each attempt: the first item is rejected, the second retried, the rest delivered.
    let h = recording(&fates, |_, _, items| {
        Ok(Some(match items.len() {
            0 => PartialFailure::new(),
            1 => answer(&[], &[(0, "bad")]),
            _ => answer(&[1], &[(0, "bad")]),
        }))
    });
    let b = spawn(builder(&fates, &weak).max_batch(4).max_in_flight(2).max_attempts(5), &weak, h);
    for chunk in 0..10 {
        b.add_many(chunk * 4..chunk * 4 + 4).await.unwrap();
        assert!(b.metrics().is_consistent());
        tokio::time::sleep(ms(30)).await;
        assert!(b.metrics().is_consistent());
    }
    b.flush().await;
    let m = b.metrics();
    {
        let f = fates.lock().unwrap();
        assert!(f.reads.len() >= 10, "the callbacks read the metrics");
        each_once(&f, &m, 40);
    }
    let report = b.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn an_answer_naming_an_item_out_of_range_fails_the_attempt_as_a_whole() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = recording(&fates, |_, attempt, _| {
        // Attempt 1 answers for a batch it does not have; attempt 2 takes everything.
        Ok((attempt == 1).then(|| answer(&[0], &[(7, "off by one")])))
    });
    let b = spawn(builder(&fates, &weak).max_batch(3), &weak, h);
    b.add_many(0..3).await.unwrap();
    b.flush().await;
    let mut f = fates.lock().unwrap();
    assert_eq!(f.attempts.iter().map(|a| a.2.clone()).collect::<Vec<_>>(), [vec![0, 1, 2], vec![0, 1, 2]]);
    // The recording handler counted 1 and 2 as taken by attempt 1; the worker did not trust
    // the answer and sent them again (at least once, never lost).
    f.delivered.sort_unstable();
    f.delivered.dedup();
    let m = b.metrics();
    assert_eq!((m.delivered, m.rejected_by_handler, m.retries), (3, 0, 1), "{m:?}");
    each_once(&f, &m, 3);
}

#[tokio::test(start_paused = true)]
async fn an_item_named_twice_is_retried_not_rejected_and_keeps_its_first_reason() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = recording(&fates, |_, attempt, _| {
        Ok((attempt == 1).then(|| {
            let mut a = PartialFailure::new();
            a.reject(1, "first").retry(1).retry(1).reject(2, "a").reject(2, "b").retry(0);
            a
        }))
    });
    let b = spawn(builder(&fates, &weak).max_batch(4), &weak, h);
    b.add_many(0..4).await.unwrap();
    b.flush().await;
    let f = fates.lock().unwrap();
    assert_eq!(f.attempts[1], (0, 2, vec![0, 1]), "retried once each, in order");
    assert_eq!(f.rejected, vec![(0, 1, 2, "a".to_owned())]);
    each_once(&f, &b.metrics(), 4);
}

#[tokio::test(start_paused = true)]
async fn an_empty_answer_delivers_everything_and_a_blocking_handler_answers_per_item_too() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = recording(&fates, |_, _, _| Ok(Some(PartialFailure::new())));
    let b = spawn(builder(&fates, &weak).max_batch(2), &weak, h);
    b.add_many(0..2).await.unwrap();
    b.flush().await;
    let m = b.metrics();
    assert_eq!((m.delivered, m.failed_attempts, m.batches_delivered), (2, 0, 1), "{m:?}");

    // from_blocking: the answer travels through a BoxError from another thread.
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = handler::from_blocking(|items: &[u32]| {
        let mut a = PartialFailure::new();
        for (i, _) in items.iter().enumerate().filter(|(_, x)| **x % 2 == 1) {
            a.reject(i, "odd");
        }
        if a.is_empty() { Ok(()) } else { Err(a) }
    });
    let b = spawn(builder(&fates, &weak).max_batch(4), &weak, h);
    b.add_many(0..4).await.unwrap();
    b.flush().await;
    let m = b.metrics();
    assert_eq!((m.delivered, m.rejected_by_handler), (2, 2), "{m:?}");
    assert_eq!(fates.lock().unwrap().rejected.iter().map(|r| r.2).collect::<Vec<_>>(), [1, 3]);
}

#[tokio::test(start_paused = true)]
async fn an_answer_for_a_batch_the_handler_still_shares_fails_the_whole_attempt() {
    let kept: Arc<Mutex<Vec<Batch<u32>>>> = Arc::default();
    let k = Arc::clone(&kept);
    let b = Batcher::builder()
        .max_batch(3)
        .spawn(handler::from_fn(move |mut batch: Batch<u32>| {
            let first = batch.attempt() == 1;
            if first {
                k.lock().unwrap().push(batch.share()); // kept past the attempt
            }
            async move {
                if first {
                    let mut a = PartialFailure::new();
                    a.reject(0, "bad");
                    Err(a)
                } else {
                    Ok(())
                }
            }
        }))
        .unwrap();
    b.add_many(0..3).await.unwrap();
    b.flush().await;
    let m = b.metrics();
    assert_eq!((m.delivered, m.rejected_by_handler, m.retries), (3, 0, 1), "{m:?}");
    assert!(m.is_consistent());
    drop(kept);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_on_reject_is_contained_and_counted() {
    let b = Batcher::builder()
        .max_batch(2)
        .on_reject(|_| panic!("planted: on_reject"))
        .spawn(handler::from_sync(|items: &[u32]| {
            let mut a = PartialFailure::new();
            if items.contains(&0) {
                a.reject(0, "bad");
            }
            if a.is_empty() { Ok(()) } else { Err(a) }
        }))
        .unwrap();
    b.add_many(0..2).await.unwrap();
    b.flush().await;
    let m = still_delivers(b, 2..4).await;
    assert_eq!((m.delivered, m.rejected_by_handler, m.panics), (3, 1, 1), "{m:?}");
}

/// After a callback panicked: the batcher still delivers `more` and shuts down clean, the
/// identity holding; its counters, for the caller to check.
async fn still_delivers(b: Batcher<u32>, more: std::ops::Range<u32>) -> Metrics {
    b.add_many(more).await.unwrap();
    b.flush().await;
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert!(b.shutdown().await.is_clean());
    m
}

// -------------------------------------------------------------------------------------------
// Expiry
// -------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn items_held_past_max_age_expire_at_the_cut_after_a_long_pause() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = recording(&fates, |_, _, _| Ok(None));
    let b =
        spawn(builder(&fates, &weak).max_batch(2).linger(ms(10)).max_age(Duration::from_secs(60)), &weak, h);
    b.pause(); // the uplink is down for two minutes
    b.add_many(0..4).await.unwrap();
    tokio::time::sleep(Duration::from_secs(100)).await;
    // 20 s old when the uplink is back: still worth sending. (It starts a batch of its own:
    // an item that joins a batch's worth of older items is aged from their first arrival.)
    b.add(4).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    b.resume();
    b.flush().await; // waits for on_expire too
    let f = fates.lock().unwrap();
    assert_eq!(f.expired, [(None, 0), (None, 1), (None, 2), (None, 3)], "oldest first, never cut");
    assert_eq!(f.attempts, [(0, 1, vec![4])]);
    each_once(&f, &b.metrics(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_that_would_be_too_old_at_its_retry_expires_instead() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = recording(&fates, |_, _, _| Err("down".into()));
    let b =
        builder(&fates, &weak).max_batch(2).max_attempts(5).retry_delays(ms(100), ms(1000)).max_age(ms(250));
    let b = spawn(b, &weak, h);
    let start = Instant::now();
    b.add_many(0..2).await.unwrap();
    b.flush().await;
    // Attempts at 0 and 100 ms; the next would be at 300 ms, past 250 ms of age.
    assert_eq!(start.elapsed(), ms(100));
    let f = fates.lock().unwrap();
    assert_eq!(f.attempts.len(), 2);
    assert_eq!(f.expired, [(Some(0), 0), (Some(0), 1)]);
    let m = b.metrics();
    assert_eq!((m.failed_attempts, m.dead_lettered, m.batches_in_flight), (2, 0, 0), "{m:?}");
    each_once(&f, &m, 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_delayed_by_a_pause_past_max_age_expires_instead_of_sending_stale_items() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = recording(&fates, |_, _, _| Err("down".into()));
    let b =
        builder(&fates, &weak).max_batch(2).max_attempts(5).retry_delays(ms(100), ms(1000)).max_age(ms(250));
    let b = spawn(b, &weak, h);
    b.add_many(0..2).await.unwrap();
    tokio::time::sleep(ms(50)).await; // attempt 1 failed at 0; its retry is due at 100 ms
    assert_eq!(fates.lock().unwrap().attempts.len(), 1);
    b.pause(); // the uplink went down meanwhile, for an hour
    tokio::time::sleep(Duration::from_secs(3600)).await;
    b.resume();
    b.flush().await;
    let f = fates.lock().unwrap();
    assert_eq!(f.attempts.len(), 1, "no attempt with items an hour old");
    assert_eq!(f.expired, [(Some(0), 0), (Some(0), 1)]);
    let m = b.metrics();
    assert_eq!((m.expired, m.retries, m.batches_in_flight), (2, 0, 0), "{m:?}");
    each_once(&f, &m, 2);
}

#[tokio::test(start_paused = true)]
async fn the_rest_of_a_partial_answer_can_expire_while_its_rejections_go_to_on_reject() {
    let (fates, weak) = (Shared::default(), Arc::default());
    let h = recording(&fates, |_, _, items| {
        Ok(Some(if items.len() == 4 { answer(&[1, 2], &[(3, "bad")]) } else { answer(&[0, 1], &[]) }))
    });
    let b =
        builder(&fates, &weak).max_batch(4).max_attempts(9).retry_delays(ms(100), ms(1000)).max_age(ms(250));
    let b = spawn(b, &weak, h);
    b.add_many(0..4).await.unwrap();
    b.flush().await;
    let f = fates.lock().unwrap();
    assert_eq!(f.rejected.iter().map(|r| r.2).collect::<Vec<_>>(), [3]);
    assert_eq!(f.expired, [(Some(0), 1), (Some(0), 2)]);
    each_once(&f, &b.metrics(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_on_expire_is_contained_and_counted() {
    let b = Batcher::builder()
        .max_batch(1)
        .max_age(Duration::from_secs(1))
        .on_expire(|_| panic!("planted: on_expire"))
        .spawn(handler::from_sync(|_: &[u32]| Ok::<_, std::io::Error>(())))
        .unwrap();
    b.pause();
    b.add(0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.resume();
    b.flush().await;
    let m = still_delivers(b, 1..2).await;
    assert_eq!((m.expired, m.delivered, m.panics), (1, 1, 1), "{m:?}");
}

// -------------------------------------------------------------------------------------------
// Pacing
// -------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_paced_drain_spaces_batch_starts_on_the_virtual_clock() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&starts);
    let start = Instant::now();
    let b = Batcher::builder()
        .max_batch(2)
        .max_in_flight(4)
        .pace(ms(100), 2)
        .spawn(handler::from_sync(move |_: &[u32]| {
            s.lock().unwrap().push(start.elapsed());
            Ok::<_, std::io::Error>(())
        }))
        .unwrap();
    b.pause(); // a backlog builds up
    b.add_many(0..12).await.unwrap();
    b.resume();
    b.flush().await;
    assert_eq!(
        *starts.lock().unwrap(),
        [0, 0, 100, 200, 300, 400].map(ms),
        "a burst of 2, then 10 per second"
    );
    let m = b.metrics();
    assert_eq!((m.delivered, m.batches_delivered), (12, 6));
}

#[test]
fn zero_max_age_and_zero_pace_burst_are_build_errors_naming_the_field() {
    let h = || handler::from_sync(|_: &[u8]| Ok::<_, std::io::Error>(()));
    let err = Batcher::builder().max_age(Duration::ZERO).build(h()).unwrap_err();
    assert!(matches!(err, BuildError::Config(_)));
    assert_eq!(err.field(), "max_age");
    let err = Batcher::builder().pace(ms(100), 0).build(h()).unwrap_err();
    assert_eq!(err.field(), "pace");
    assert!(err.to_string().contains("burst"), "{err}");
}
