//! Hostile inputs: every invalid configuration is refused with its own named error, and the
//! extremes that are valid (capacity 1, `max_batch` 1, linger 0, more flights than batches, a
//! clock that never moves or jumps ten years, `Instant::MAX`) work without a panic or a lost item.
#![allow(missing_docs, clippy::cast_possible_truncation, clippy::duration_suboptimal_units)]

use std::time::Duration;

use batch_core::storage::{FixedDeque, InFlight};
use batch_core::{BatchCore, Completion, Config, Instant, Outcome, Retry};
use batch_tests::{Letters, Log, ms, settle};
use batch_tokio::handler::{self, Batch};
use batch_tokio::{Batcher, BuildError, Builder, ConfigError, PushError, Trigger};

const HOUR: Duration = ms(3_600_000);
const TEN_YEARS: Duration = Duration::from_secs(86_400 * 365 * 10);

fn ok_handler() -> impl handler::Handler<u32> {
    handler::from_sync(|_: &[u32]| Ok::<_, std::io::Error>(()))
}

/// Builds and expects the named error; its message must name the field.
#[track_caller]
fn refused(builder: Builder<u32>, expected: BuildError, field: &str) {
    let err = builder.build(ok_handler()).expect_err("an invalid configuration must be refused");
    assert_eq!(err, expected);
    let text = err.to_string();
    assert!(text.contains(field), "`{text}` does not name `{field}`");
    if let BuildError::Config(e) = err {
        assert_eq!(e.field(), field);
        assert!(e.message().contains(field), "{}", e.message());
    }
}

// ------------------------------------------------------------------------------------------------
// Invalid configurations, one test each
// ------------------------------------------------------------------------------------------------

#[test]
fn zero_capacity_is_refused() {
    refused(Batcher::builder().capacity(0), BuildError::Config(ConfigError::ZeroCapacity), "capacity");
}

#[test]
fn zero_max_batch_is_refused() {
    refused(Batcher::builder().max_batch(0), BuildError::Config(ConfigError::ZeroMaxBatch), "max_batch");
}

#[test]
fn max_batch_above_capacity_is_refused() {
    refused(
        Batcher::builder().capacity(4).max_batch(5),
        BuildError::Config(ConfigError::MaxBatchAboveCapacity { max_batch: 5, capacity: 4 }),
        "max_batch",
    );
}

#[test]
fn zero_max_in_flight_is_refused() {
    refused(
        Batcher::builder().max_in_flight(0),
        BuildError::Config(ConfigError::ZeroMaxInFlight),
        "max_in_flight",
    );
}

#[test]
fn zero_max_attempts_is_refused() {
    refused(
        Batcher::builder().max_attempts(0),
        BuildError::Config(ConfigError::ZeroMaxAttempts),
        "max_attempts",
    );
}

#[test]
fn base_delay_above_max_delay_is_refused() {
    refused(
        Batcher::builder().retry_delays(ms(2_000), ms(1_000)),
        BuildError::Config(ConfigError::BaseDelayAboveMaxDelay {
            base_delay: batch_core::Duration::from_millis(2_000),
            max_delay: batch_core::Duration::from_millis(1_000),
        }),
        "base_delay",
    );
}

#[test]
fn jitter_above_one_is_refused() {
    refused(
        Batcher::builder().jitter(1_001, 7),
        BuildError::Config(ConfigError::JitterAboveOne { permille: 1_001 }),
        "jitter",
    );
    // 1000 permille (a delay may shrink to zero) is the limit, and valid.
    assert!(Batcher::builder().jitter(1_000, 7).build(ok_handler()).is_ok());
}

#[test]
fn zero_max_weight_is_refused() {
    refused(
        Batcher::builder().max_weight(0, |x: &u32| *x),
        BuildError::Config(ConfigError::ZeroMaxWeight),
        "max_weight",
    );
}

#[test]
fn zero_attempt_timeout_is_refused() {
    let err = Batcher::builder().attempt_timeout(Duration::ZERO).build(ok_handler()).unwrap_err();
    assert_eq!(err, BuildError::ZeroAttemptTimeout);
    assert!(err.to_string().contains("attempt_timeout"), "{err}");
    // The smallest non-zero timeout is valid.
    assert!(Batcher::builder().attempt_timeout(Duration::from_nanos(1)).build(ok_handler()).is_ok());
}

/// The tokio builder sizes the in-flight table from `max_in_flight` and always pairs a weigher
/// with `max_weight`, so these three errors can only come from batch-core directly.
#[test]
fn max_in_flight_above_the_slot_table_is_refused_by_the_core() {
    let err = batch_core::Batcher::<u32, 4, 2>::try_new(Config::new().max_in_flight(3)).unwrap_err();
    assert_eq!(err, ConfigError::MaxInFlightAboveSlots { max_in_flight: 3, slots: 2 });
    assert_eq!(err.field(), "max_in_flight");
    assert!(err.to_string().contains("max_in_flight"), "{err}");
}

#[test]
fn max_weight_without_a_weigher_is_refused_by_the_core() {
    let Err(err) = BatchCore::<u32, _, _>::with_storage(
        Config::new().max_weight(10),
        FixedDeque::with_capacity(4),
        Vec::<InFlight>::with_capacity(1),
        None,
    ) else {
        panic!("refused");
    };
    assert_eq!(err, ConfigError::MaxWeightWithoutWeigher);
    assert_eq!(err.field(), "max_weight");
    assert!(err.to_string().contains("max_weight"), "{err}");
}

#[test]
fn a_weigher_without_max_weight_is_refused_by_the_core() {
    let weigher: fn(&u32) -> u32 = |x| *x;
    let Err(err) = BatchCore::<u32, _, _>::with_storage(
        Config::new(),
        FixedDeque::with_capacity(4),
        Vec::<InFlight>::with_capacity(1),
        Some(weigher),
    ) else {
        panic!("refused");
    };
    assert_eq!(err, ConfigError::WeigherWithoutMaxWeight);
    assert_eq!(err.field(), "weigher");
    assert!(err.to_string().contains("weigher") || err.to_string().contains("max_weight"), "{err}");
}

/// Every error names a different problem: no two variants print the same message.
#[test]
fn every_config_error_has_its_own_message() {
    let all = [
        ConfigError::ZeroCapacity,
        ConfigError::ZeroMaxBatch,
        ConfigError::MaxBatchAboveCapacity { max_batch: 2, capacity: 1 },
        ConfigError::ZeroMaxInFlight,
        ConfigError::MaxInFlightAboveSlots { max_in_flight: 2, slots: 1 },
        ConfigError::ZeroMaxAttempts,
        ConfigError::BaseDelayAboveMaxDelay {
            base_delay: batch_core::Duration::from_millis(2),
            max_delay: batch_core::Duration::from_millis(1),
        },
        ConfigError::JitterAboveOne { permille: 1_001 },
        ConfigError::ZeroMaxWeight,
        ConfigError::MaxWeightWithoutWeigher,
        ConfigError::WeigherWithoutMaxWeight,
    ];
    let mut messages: Vec<String> = all.iter().map(ToString::to_string).collect();
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), all.len());
}

// ------------------------------------------------------------------------------------------------
// Items heavier than the weight limit
// ------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_item_heavier_than_max_weight_is_handed_back_by_every_add() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(16)
        .max_weight(10, |x: &u32| *x)
        .linger(HOUR)
        .spawn(log.handler())
        .unwrap();
    assert_eq!(b.try_add(11), Err(PushError::TooHeavy(11)));
    assert_eq!(b.add(12).await, Err(PushError::TooHeavy(12)));
    assert_eq!(b.add_urgent(13).await, Err(PushError::TooHeavy(13)));
    let refused = b.add_many([1, 14, 10, u32::MAX, 2]).await.unwrap_err();
    assert_eq!(refused.items, vec![PushError::TooHeavy(14), PushError::TooHeavy(u32::MAX)]);
    b.try_add(3).unwrap();
    b.shutdown().await;
    // The weight limit cuts [1] | [10] | [2, 3]: exactly max_weight fits, one item more does not.
    assert_eq!(log.delivered_batches(), vec![vec![1], vec![10], vec![2, 3]]);
    let m = b.metrics();
    assert_eq!((m.accepted, m.rejected, m.delivered), (4, 5, 4));
    assert!(m.is_consistent(), "{m:?}");
}

// ------------------------------------------------------------------------------------------------
// Extreme but valid sizes
// ------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn capacity_one_delivers_everything_in_order_from_many_producers() {
    let log = Log::new();
    let b = Batcher::builder().capacity(1).linger(HOUR).spawn(log.handler().latency(ms(1))).unwrap();
    let mut tasks = Vec::new();
    for p in 0..4u32 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                b.add(p * 1000 + n).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
    let batches = log.delivered_batches();
    assert!(batches.iter().all(|b| b.len() == 1));
    let delivered = log.delivered();
    assert_eq!(delivered.len(), 200);
    for p in 0..4 {
        let mine: Vec<u32> = delivered.iter().copied().filter(|x| x / 1000 == p).collect();
        assert_eq!(mine, (0..50).map(|n| p * 1000 + n).collect::<Vec<_>>());
    }
    assert!(log.calls().iter().all(|c| c.trigger == Trigger::Size));
    let m = b.metrics();
    assert!(m.is_consistent() && m.delivered == 200, "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn capacity_one_try_add_refuses_while_full_and_drop_oldest_evicts() {
    let log = Log::new();
    let b = Batcher::builder().capacity(1).linger(HOUR).spawn(log.handler().hang()).unwrap();
    b.try_add(1).unwrap();
    settle().await; // [1] hangs in the handler; the buffer is empty again
    b.try_add(2).unwrap();
    assert_eq!(b.try_add(3), Err(PushError::Full(3)));
    let report = b.shutdown_timeout(ms(10)).await;
    assert_eq!(report.remainder, vec![1, 2]);

    let evicted = batch_tests::Evicted::new();
    let b = Batcher::builder()
        .capacity(1)
        .overflow(batch_tokio::Overflow::DropOldest)
        .on_evict(evicted.callback())
        .linger(HOUR)
        .spawn(log.handler().hang())
        .unwrap();
    b.pause();
    for i in 0..5 {
        b.try_add(i).unwrap();
    }
    assert_eq!(evicted.items(), vec![0, 1, 2, 3]);
    let report = b.shutdown_timeout(ms(10)).await;
    assert_eq!(report.remainder, vec![4]);
    assert!(report.metrics.is_consistent(), "{:?}", report.metrics);
    assert_eq!(report.metrics.evicted, 4);
}

#[tokio::test(start_paused = true)]
async fn max_batch_one_sends_every_item_alone() {
    let log = Log::new();
    let b = Batcher::builder().capacity(64).max_batch(1).linger(HOUR).spawn(log.handler()).unwrap();
    b.add_many(0..40).await.unwrap();
    b.add_urgent(40).await.unwrap();
    b.flush().await;
    let batches = log.delivered_batches();
    assert_eq!(batches, (0..41).map(|i| vec![i]).collect::<Vec<_>>());
    assert_eq!(log.now(), Duration::ZERO);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn linger_zero_cuts_at_once_without_time_passing() {
    let log = Log::new();
    let b =
        Batcher::builder().capacity(64).max_batch(64).linger(Duration::ZERO).spawn(log.handler()).unwrap();
    for i in 0..100 {
        b.add(i).await.unwrap();
        if i % 7 == 0 {
            settle().await;
        }
    }
    settle().await;
    assert_eq!(log.delivered(), (0..100).collect::<Vec<_>>());
    assert_eq!(log.now(), Duration::ZERO, "linger 0 never waits");
    assert!(log.calls().iter().all(|c| c.trigger == Trigger::Linger || c.trigger == Trigger::Size));
    let m = b.metrics();
    assert_eq!(m.max_item_age, batch_core::Duration::ZERO);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn more_flights_than_batches_that_fit() {
    // Capacity 4 and max_batch 4: at most one full batch is ever buffered, yet 8 may fly.
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .capacity(4)
        .max_batch(4)
        .max_in_flight(8)
        .max_attempts(2)
        .retry_delays(ms(5), ms(5))
        .linger(ms(1))
        .on_error(letters.callback())
        .spawn(log.handler().latency_by(|b: &Batch<u32>| ms(1 + b.seq() % 7)).fail_when(|b| b.seq() % 5 == 0))
        .unwrap();
    let mut tasks = Vec::new();
    for p in 0..3u32 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..100 {
                b.add(p * 1000 + n).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
    let mut all = log.delivered();
    all.extend(letters.items());
    all.sort_unstable();
    let mut expected: Vec<u32> = (0..3).flat_map(|p| (0..100).map(move |n| p * 1000 + n)).collect();
    expected.sort_unstable();
    assert_eq!(all, expected, "every item delivered or dead-lettered once");
    assert!(log.max_running() > 1 && log.max_running() <= 8, "{}", log.max_running());
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(m.delivered + m.dead_lettered, 300);
}

// ------------------------------------------------------------------------------------------------
// Time that stands still, and time that jumps
// ------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn time_that_does_not_move() {
    // Paused time never advances here (no sleep, no timer is ever awaited by the test):
    // thousands of adds and flushes work on size triggers and flushes alone.
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(32)
        .max_batch(8)
        .linger(HOUR)
        .max_in_flight(2)
        .spawn(log.handler())
        .unwrap();
    let start = tokio::time::Instant::now();
    for round in 0..500u32 {
        for i in 0..7 {
            b.add(round * 7 + i).await.unwrap();
        }
        if round % 3 == 0 {
            b.flush().await;
        }
        let _ = b.try_add(1_000_000 + round);
    }
    b.flush().await;
    assert_eq!(tokio::time::Instant::now(), start, "the clock never moved");
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!(m.buffered + m.in_flight, 0);
    assert_eq!(m.delivered + m.rejected, 3_500 + 500);
    assert_eq!(m.max_item_age, batch_core::Duration::ZERO);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn time_that_jumps_ten_years_delivers_by_linger() {
    let log = Log::new();
    let b = Batcher::builder().capacity(64).max_batch(64).linger(HOUR).spawn(log.handler()).unwrap();
    b.add_many(0..10).await.unwrap();
    settle().await;
    assert!(log.is_empty());
    tokio::time::advance(TEN_YEARS).await;
    settle().await;
    assert_eq!(log.delivered(), (0..10).collect::<Vec<_>>());
    assert_eq!(log.calls()[0].trigger, Trigger::Linger);
    // And after the jump, the batcher keeps working at the new time.
    b.add_many(10..20).await.unwrap();
    tokio::time::advance(HOUR).await;
    settle().await;
    assert_eq!(log.delivered(), (0..20).collect::<Vec<_>>());
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert!(m.max_item_age.as_micros() >= TEN_YEARS.as_micros() as u64, "{m:?}");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn time_that_jumps_ten_years_during_retries_and_attempts() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(2)
        .max_attempts(3)
        .retry_delays(ms(100), HOUR)
        .attempt_timeout(ms(50))
        .on_error(letters.callback())
        .spawn(
            log.handler()
                .fail_when(|b| b.seq() == 0 && b.attempt() < 3)
                .hang_when(|b| b.seq() == 1 && b.attempt() == 1),
        )
        .unwrap();
    b.add_many([1, 2]).await.unwrap();
    settle().await; // batch 0, attempt 1 failed: the retry waits 100 ms
    tokio::time::advance(TEN_YEARS).await;
    settle().await; // attempt 2 fails at once; the retry waits 200 ms
    tokio::time::advance(TEN_YEARS).await;
    settle().await;
    assert_eq!(log.delivered(), vec![1, 2]);
    b.add_many([3, 4]).await.unwrap();
    settle().await; // batch 1 hangs: the 50 ms attempt timeout must still fire
    tokio::time::advance(TEN_YEARS).await;
    settle().await;
    tokio::time::advance(ms(100)).await;
    settle().await;
    assert_eq!(log.delivered(), vec![1, 2, 3, 4]);
    assert!(letters.is_empty());
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.retries, m.failed_attempts), (3, 3));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn huge_durations_never_overflow() {
    let log = Log::new();
    let b = Batcher::builder()
        .max_batch(4)
        .linger(Duration::MAX)
        .retry_delays(Duration::MAX, Duration::MAX)
        .max_attempts(2)
        .attempt_timeout(Duration::MAX)
        .jitter(1_000, u32::MAX)
        .spawn(log.handler().fail_first(1))
        .unwrap();
    b.add_many(0..4).await.unwrap(); // a size cut; its retry is "never"
    b.add(9).await.unwrap(); // lingers "forever"
    settle().await;
    tokio::time::advance(TEN_YEARS).await;
    settle().await;
    assert_eq!(log.len(), 1, "the retry waits about 584,000 years");
    let report = b.shutdown_timeout(ms(10)).await;
    assert!(report.timed_out);
    assert_eq!(report.remainder, vec![0, 1, 2, 3, 9]);
    assert!(report.metrics.is_consistent(), "{:?}", report.metrics);
}

// ------------------------------------------------------------------------------------------------
// batch-core at the edges of time
// ------------------------------------------------------------------------------------------------

#[test]
fn the_core_at_instant_max_with_huge_durations() {
    let config = Config::new()
        .max_batch(2)
        .linger(batch_core::Duration::MAX)
        .max_attempts(3)
        .retry_delays(batch_core::Duration::MAX, batch_core::Duration::MAX)
        .jitter(1_000, u32::MAX);
    let mut core: batch_core::Batcher<u32, 4, 2> =
        batch_core::Batcher::try_new(config.max_in_flight(2)).unwrap();
    let almost = Instant::from_micros(u64::MAX - 5);
    core.push(almost, 1).unwrap();
    assert_eq!(core.poll_timeout(), Some(Instant::MAX), "linger saturates at the end of time");
    core.push(Instant::MAX, 2).unwrap();
    let mut buf = batch_core::Batch::<u32, 4>::new();
    let flush = core.poll_flush(Instant::MAX, &mut buf).expect("size cut");
    assert_eq!(flush.oldest_age, batch_core::Duration::from_micros(5));
    // Failures at the end of time: the retry is due at Instant::MAX (saturated), not before.
    let c = core.handle_completion(Instant::MAX, flush.seq, Outcome::Failed);
    assert_eq!(c, Some(Completion::Retry { attempt: 2, at: Instant::MAX }));
    assert_eq!(core.poll_retry(Instant::MAX, flush.seq), Some(Retry::Attempt(2)));
    let c = core.handle_completion(Instant::MAX, flush.seq, Outcome::Failed);
    assert!(matches!(c, Some(Completion::Retry { attempt: 3, .. })), "{c:?}");
    // A clock that goes backwards: nothing panics, nothing is due early.
    assert_eq!(core.poll_retry(Instant::ZERO, flush.seq), None);
    core.pause(Instant::MAX);
    core.resume(Instant::ZERO);
    core.pause(Instant::ZERO);
    core.resume(Instant::MAX);
    let _ = core.poll_timeout();
    assert_eq!(core.poll_retry(Instant::MAX, flush.seq), Some(Retry::Attempt(3)));
    let c = core.handle_completion(Instant::MAX, flush.seq, Outcome::Failed);
    assert!(matches!(c, Some(Completion::DeadLettered { attempts: 3, len: 2 })), "{c:?}");
    // Pushes at Instant::ZERO after Instant::MAX (time going backwards).
    core.push(Instant::ZERO, 3).unwrap();
    core.push(Instant::MAX, 4).unwrap();
    buf.clear();
    let f = core.poll_flush(Instant::ZERO, &mut buf).expect("size cut");
    assert_eq!(&buf[..], &[3, 4]);
    let _ = core.handle_completion(Instant::ZERO, f.seq, Outcome::Delivered);
    core.push(Instant::MAX, 5).unwrap();
    assert_eq!(core.poll_flush(Instant::from_micros(1), &mut buf), None, "linger MAX never elapses");
    core.close();
    buf.clear();
    assert!(core.poll_flush(Instant::ZERO, &mut buf).is_some());
    let m = core.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.accepted, m.dead_lettered, m.delivered, m.in_flight), (5, 2, 2, 1));
}

#[test]
fn backoff_and_jitter_at_extremes_stay_in_range() {
    for permille in [0u16, 1, 500, 999, 1_000] {
        for seed in [0u32, 1, u32::MAX] {
            let config = Config::new()
                .max_batch(1)
                .max_attempts(u32::MAX)
                .retry_delays(batch_core::Duration::from_micros(1), batch_core::Duration::MAX)
                .jitter(permille, seed);
            let mut core: batch_core::Batcher<u8, 1> = batch_core::Batcher::try_new(config).unwrap();
            core.push(Instant::ZERO, 1).unwrap();
            let mut buf = batch_core::Batch::<u8, 1>::new();
            let f = core.poll_flush(Instant::ZERO, &mut buf).unwrap();
            let mut now = Instant::ZERO;
            for k in 1..=80u32 {
                let c = core.handle_completion(now, f.seq, Outcome::Failed);
                let Some(Completion::Retry { at, .. }) = c else { panic!("{c:?}") };
                let full = config.backoff(k).as_micros();
                let waited = (at - now).as_micros();
                assert!(waited <= full, "attempt {k}: {waited} > {full}");
                if at < Instant::MAX {
                    // Jitter shortens a delay by at most its share (rounded up by a microsecond).
                    let share = (u128::from(full) * u128::from(permille) / 1000) as u64 + 1;
                    assert!(waited >= full.saturating_sub(share), "attempt {k}: {waited} of {full}");
                }
                now = at;
                let _ = core.poll_retry(now, f.seq).expect("due");
            }
            assert!(core.metrics().is_consistent());
        }
    }
}
