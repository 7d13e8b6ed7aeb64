//! What a real uplink needs, in the core's virtual time: per-item outcomes, expiry of stale
//! items, and a paced drain (issue 13). Each policy's rules, one test each.

#[cfg(feature = "uplink")]
use batch_core::ConfigError;
use batch_core::{Batch, Batcher, Completion, Config, Duration, Instant, Outcome, Retry};

const T0: Instant = Instant::ZERO;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn filled(config: Config, n: u32) -> Batcher<u32, 16, 2> {
    let mut core = Batcher::new(config);
    for i in 0..n {
        core.push(T0, i).unwrap();
    }
    core
}

// -------------------------------------------------------------------------------------------
// Per-item outcomes
// -------------------------------------------------------------------------------------------

#[test]
fn a_partial_answer_retries_only_the_rest_under_the_same_seq_and_schedule() {
    let mut core = filled(Config::new().max_batch(5).max_attempts(3), 5);
    let mut batch = Batch::<u32, 16>::new();
    let f = core.poll_flush(T0, &mut batch).unwrap();
    let c = core.handle_completion(T0, f.seq, Outcome::Partial { delivered: 2, rejected: 1 });
    assert_eq!(c, Some(Completion::Retry { attempt: 2, at: T0 + ms(100) }), "the normal back-off");
    let m = core.metrics();
    assert_eq!((m.delivered, m.rejected_by_handler, m.in_flight, m.dead_lettered), (2, 1, 2, 0));
    assert_eq!(m.failed_attempts, 1);
    assert!(m.is_consistent());
    // The 2 left: the next attempt is the same batch, smaller.
    assert_eq!(core.poll_retry(at(100), f.seq), Some(Retry::Attempt(2)));
    assert_eq!(core.in_flight_items(), 2);
    let c = core.handle_completion(at(100), f.seq, Outcome::Delivered);
    assert_eq!(c, Some(Completion::Delivered { len: 2 }));
    let m = core.metrics();
    assert_eq!((m.delivered, m.rejected_by_handler, m.batches_delivered, m.in_flight), (4, 1, 1, 0));
    assert!(m.is_consistent());
}

#[test]
fn rejected_items_are_counted_apart_from_items_that_failed_every_attempt() {
    let mut core = filled(Config::new().max_batch(4).max_attempts(1), 4);
    let mut batch = Batch::<u32, 16>::new();
    let f = core.poll_flush(T0, &mut batch).unwrap();
    let c = core.handle_completion(T0, f.seq, Outcome::Partial { delivered: 1, rejected: 2 });
    assert_eq!(c, Some(Completion::DeadLettered { attempts: 1, len: 1 }), "the one left had no attempt left");
    let m = core.metrics();
    assert_eq!((m.delivered, m.rejected_by_handler, m.dead_lettered), (1, 2, 1));
    assert!(m.is_consistent());
}

#[test]
fn a_partial_answer_that_settles_everything_is_final() {
    let mut core = filled(Config::new().max_batch(3), 3);
    let f = core.poll_flush(T0, &mut Batch::<u32, 16>::new()).unwrap();
    let c = core.handle_completion(T0, f.seq, Outcome::Partial { delivered: 1, rejected: 2 });
    assert_eq!(c, Some(Completion::Delivered { len: 1 }));
    assert_eq!(core.in_flight(), 0);
    assert_eq!(core.metrics().failed_attempts, 0);
}

#[test]
fn a_partial_answer_naming_more_items_than_the_batch_holds_changes_nothing() {
    let mut core = filled(Config::new().max_batch(3), 3);
    let f = core.poll_flush(T0, &mut Batch::<u32, 16>::new()).unwrap();
    let before = core.metrics();
    assert_eq!(core.handle_completion(T0, f.seq, Outcome::Partial { delivered: 3, rejected: 1 }), None);
    assert_eq!(
        core.handle_completion(T0, f.seq, Outcome::Partial { delivered: u32::MAX, rejected: 1 }),
        None
    );
    assert_eq!(core.metrics(), before);
    assert_eq!(core.handle_completion(T0, f.seq, Outcome::Delivered), Some(Completion::Delivered { len: 3 }));
}

// -------------------------------------------------------------------------------------------
// Expiry
// -------------------------------------------------------------------------------------------

#[cfg(feature = "uplink")]
#[test]
fn items_older_than_max_age_at_their_cut_are_handed_back_oldest_first() {
    let config = Config::new().max_batch(2).linger(ms(10)).max_age(Duration::from_secs(60));
    let mut core: Batcher<u32, 16> = Batcher::new(config);
    core.pause(T0); // the uplink is down for two minutes
    for i in 0..4 {
        core.push(T0, i).unwrap();
    }
    core.push(Instant::from_secs(100), 4).unwrap();
    let back = Instant::from_secs(120);
    core.resume(back);
    let mut batch = Batch::<u32, 16>::new();
    assert!(core.poll_flush(back, &mut batch).is_none(), "nothing stale is cut");
    let mut stale = Batch::<u32, 16>::new();
    assert_eq!(core.poll_expired(back, &mut stale), 4);
    assert_eq!(&stale[..], &[0, 1, 2, 3]);
    assert_eq!(core.poll_expired(back, &mut stale), 0, "the fresh one stays");
    let f = core.poll_flush(back + ms(10), &mut batch).unwrap();
    assert_eq!((&batch[..], f.len), (&[4][..], 1));
    let m = core.metrics();
    assert_eq!((m.expired, m.in_flight), (4, 1));
    assert!(m.is_consistent());
}

#[cfg(feature = "uplink")]
#[test]
fn an_age_is_never_underestimated() {
    // Three batches' worth arrive at 0, 30 and 50 s; at 89 s only the first batch is older
    // than 60 s by its own arrival: exactly those expire, nothing fresher.
    let config = Config::new().max_batch(2).max_age(Duration::from_secs(60));
    let mut core: Batcher<u32, 16> = Batcher::new(config);
    core.pause(T0);
    for (i, t) in [(0, 0), (1, 0), (2, 30), (3, 30), (4, 50), (5, 50)] {
        core.push(Instant::from_secs(t), i).unwrap();
    }
    core.resume(Instant::from_secs(89));
    let mut stale = Batch::<u32, 16>::new();
    assert_eq!(core.poll_expired(Instant::from_secs(89), &mut stale), 2);
    assert_eq!(&stale[..], &[0, 1]);
    assert_eq!(core.poll_expired(Instant::from_secs(91), &mut stale), 2, "the 30 s pair at 91 s");
}

#[cfg(feature = "uplink")]
#[test]
fn a_batch_that_would_be_too_old_at_its_retry_expires_instead() {
    let config = Config::new().max_batch(2).max_attempts(10).max_age(ms(250));
    let mut core = filled(config, 2);
    let f = core.poll_flush(T0, &mut Batch::<u32, 16>::new()).unwrap();
    // Attempt 1 fails at 0: the retry at 100 ms is within the age.
    assert!(matches!(core.handle_completion(T0, f.seq, Outcome::Failed), Some(Completion::Retry { .. })));
    assert_eq!(core.poll_retry(at(100), f.seq), Some(Retry::Attempt(2)));
    // Attempt 2 fails at 100: the retry would be at 300 ms, past 250.
    assert_eq!(core.handle_completion(at(100), f.seq, Outcome::Failed), Some(Completion::Expired { len: 2 }));
    let m = core.metrics();
    assert_eq!((m.expired, m.in_flight, m.dead_lettered), (2, 0, 0));
    assert!(m.is_consistent());
}

#[cfg(feature = "uplink")]
#[test]
fn a_retry_that_comes_late_expires_instead_of_sending_stale_items() {
    // The retry was due in time (100 ms < 250 ms), but the uplink was paused meanwhile: by the
    // resume the items are too old, and the retry hands them back instead.
    let config = Config::new().max_batch(2).max_attempts(10).max_age(ms(250));
    let mut core = filled(config, 2);
    let f = core.poll_flush(T0, &mut Batch::<u32, 16>::new()).unwrap();
    let Some(Completion::Retry { at: due, .. }) = core.handle_completion(T0, f.seq, Outcome::Failed) else {
        panic!("a retry")
    };
    assert_eq!(due, at(100));
    core.pause(at(50));
    core.resume(at(400));
    let later = core.retry_at(f.seq).unwrap();
    assert_eq!(core.poll_retry(later, f.seq), Some(Retry::Expired { len: 2 }));
    let m = core.metrics();
    assert_eq!((m.expired, m.in_flight, m.retries), (2, 0, 0));
    assert!(m.is_consistent());
    assert_eq!(core.in_flight(), 0);
    // A driver that was simply late (not scheduled) gets the same answer.
    let mut core = filled(Config::new().max_batch(2).max_age(ms(250)), 2);
    let f = core.poll_flush(T0, &mut Batch::<u32, 16>::new()).unwrap();
    let _ = core.handle_completion(T0, f.seq, Outcome::Failed);
    assert_eq!(core.poll_retry(at(251), f.seq), Some(Retry::Expired { len: 2 }));
    assert_eq!(core.poll_retry(at(251), f.seq), None, "final: nothing more to retry");
}

#[cfg(feature = "uplink")]
#[test]
fn each_batch_in_flight_keeps_its_own_age_when_another_completes() {
    // Two batches in flight, 200 ms apart; the older completes first and its record is removed
    // (the younger one's record moves into its place): the younger keeps its own age.
    let config = Config::new().max_batch(1).max_in_flight(2).max_attempts(10).max_age(ms(250));
    let mut core: Batcher<u32, 16, 2> = Batcher::new(config);
    core.push(T0, 1).unwrap();
    let old = core.poll_flush(T0, &mut Batch::<u32, 16>::new()).unwrap();
    core.push(at(200), 2).unwrap();
    let young = core.poll_flush(at(200), &mut Batch::<u32, 16>::new()).unwrap();
    assert_eq!(
        core.handle_completion(at(200), old.seq, Outcome::Delivered),
        Some(Completion::Delivered { len: 1 })
    );
    // The young batch fails at 200: its retry at 300 is 100 ms after its item arrived.
    let c = core.handle_completion(at(200), young.seq, Outcome::Failed);
    assert_eq!(c, Some(Completion::Retry { attempt: 2, at: at(300) }), "not expired by the old batch's age");
    assert_eq!(core.poll_retry(at(300), young.seq), Some(Retry::Attempt(2)));
}

#[cfg(feature = "uplink")]
#[test]
fn a_zero_max_age_and_a_zero_burst_are_refused_naming_the_field() {
    let err = Batcher::<u32, 8>::try_new(Config::new().max_age(Duration::ZERO)).unwrap_err();
    assert_eq!((err, err.field()), (ConfigError::ZeroMaxAge, "max_age"));
    let err = Batcher::<u32, 8>::try_new(Config::new().pace(ms(10), 0)).unwrap_err();
    assert_eq!((err, err.field()), (ConfigError::ZeroPaceBurst, "pace"));
}

// -------------------------------------------------------------------------------------------
// Pacing
// -------------------------------------------------------------------------------------------

#[cfg(feature = "uplink")]
/// Drains a backlog of `n` single-item batches, delivering each at once; returns the start
/// times, in ms, following `poll_timeout` between starts.
fn drain_times(core: &mut Batcher<u32, 16, 2>, n: usize, from: Instant) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut now = from;
    for _ in 0..1000 {
        if starts.len() == n {
            break;
        }
        let mut batch = Batch::<u32, 16>::new();
        if let Some(f) = core.poll_flush(now, &mut batch) {
            starts.push(now.as_millis());
            let _ = core.handle_completion(now, f.seq, Outcome::Delivered);
            continue;
        }
        let next = core.poll_timeout().expect("a backlog always has a deadline");
        assert!(next > now, "a deadline at or before now would make a driver spin");
        now = next;
    }
    starts
}

#[cfg(feature = "uplink")]
#[test]
fn a_backlog_drains_at_the_pace_after_a_burst() {
    let config = Config::new().max_batch(1).max_in_flight(2).pace(ms(100), 3);
    let mut core = filled(config, 8);
    assert_eq!(drain_times(&mut core, 8, T0), vec![0, 0, 0, 100, 200, 300, 400, 500]);
}

#[cfg(feature = "uplink")]
#[test]
fn pacing_decides_when_a_batch_starts_not_what_it_holds() {
    // Size 4: a full batch is cut whole even if it waited for the pace.
    let config = Config::new().max_batch(4).pace(ms(1000), 1);
    let mut core = filled(config, 8);
    let mut batch = Batch::<u32, 16>::new();
    let f = core.poll_flush(T0, &mut batch).unwrap();
    let _ = core.handle_completion(T0, f.seq, Outcome::Delivered);
    assert!(core.poll_flush(at(999), &mut batch).is_none(), "paced");
    assert_eq!(core.poll_timeout(), Some(at(1000)));
    let f = core.poll_flush(at(1000), &mut Batch::<u32, 16>::new()).unwrap();
    assert_eq!(f.len, 4);
}

#[cfg(feature = "uplink")]
#[test]
fn retries_are_not_paced() {
    let config = Config::new().max_batch(2).pace(Duration::from_secs(10), 1).retry_delays(ms(50), ms(50));
    let mut core = filled(config, 2);
    let f = core.poll_flush(T0, &mut Batch::<u32, 16>::new()).unwrap();
    let _ = core.handle_completion(T0, f.seq, Outcome::Failed);
    assert_eq!(core.poll_retry(at(50), f.seq), Some(Retry::Attempt(2)), "the retry keeps its own schedule");
}
