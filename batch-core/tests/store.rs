//! Store and forward, the core's policy, in virtual time: one scenario per rule of
//! docs/store-design.md, and a model-based property test with power cuts.
//!
//! Cases of the property test: `BATCH_PROPTEST_CASES` (default 10 000).

#![cfg(all(feature = "store", feature = "alloc"))]
#![allow(clippy::cast_possible_truncation, unreachable_pub, reason = "small test counts; the rig is shared")]

mod store_rig;

use batch_core::store::{Recovered, StoreDone, StoreOp, StorePolicy};
use batch_core::{
    Batch, Batcher, Config, ConfigError, Duration, Instant, Outcome, Overflow, PushError, Trigger,
};
use proptest::prelude::*;
use store_rig::Rig;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(policy: StorePolicy) -> Config {
    Config::new().max_batch(4).linger(ms(10)).max_attempts(3).store(policy)
}

#[test]
fn nothing_is_accepted_before_the_boot_s_recovery_and_recovered_items_count_as_stored() {
    let mut core: Batcher<u32, 8> = Batcher::new(config(StorePolicy::new()));
    assert_eq!(core.push(Instant::ZERO, 1), Err(PushError::Full(1)));
    assert!(core.must_wait(), "an async producer waits for the recovery");
    assert_eq!(core.reserve(4), 0, "no staging places either");
    assert!(core.recovered(Recovered { batches: 2, items: 7, seq_floor: 100 }));
    assert_eq!(core.push(Instant::ZERO, 1), Ok(None));
    let m = core.metrics();
    assert_eq!((m.accepted, m.stored, m.buffered, m.rejected), (8, 7, 1, 1));
    assert!(m.is_consistent());
}

#[test]
fn a_batcher_closed_before_its_store_recovered_is_not_finished_until_the_store_is_drained() {
    // A driver that stops its lanes on `is_finished` must not stop before the store said what
    // it holds: those batches would never be sent.
    let mut core: Batcher<u32, 8> = Batcher::new(config(StorePolicy::new()));
    core.close();
    assert!(!core.is_finished(), "what the store holds is unknown yet");
    assert!(core.recovered(Recovered { batches: 1, items: 2, seq_floor: 10 }));
    assert!(!core.is_finished(), "a stored batch to deliver");
}

#[test]
fn a_zero_seq_block_is_refused_naming_the_field() {
    let err = Batcher::<u32, 8>::try_new(config(StorePolicy::new().seq_block(0))).unwrap_err();
    assert_eq!((err, err.field()), (ConfigError::ZeroSeqBlock, "seq_block"));
}

#[test]
fn sequence_numbers_are_reserved_durably_before_use_and_never_reused_after_a_power_cut() {
    let mut rig = Rig::new(config(StorePolicy::new().seq_block(4).write_ahead(true)), 8, 1);
    assert_eq!(rig.ops.first(), Some(&StoreOp::PersistFloor { floor: 4 }));
    let mut seqs = Vec::new();
    for _ in 0..5 {
        rig.push(4); // a full batch: cut at once
        seqs.extend(rig.flights.keys().copied());
        rig.deliver_all();
    }
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    assert!(rig.store.floor > 4, "the floor moved ahead of need: {}", rig.store.floor);
    rig.push(4);
    let before_cut: Vec<u64> = rig.flights.keys().copied().collect();
    let floor = rig.store.floor;
    rig.power_cut();
    // The batch written ahead is redelivered under its own seq; new batches start at the floor.
    assert_eq!(rig.flights.keys().copied().collect::<Vec<_>>(), before_cut);
    rig.deliver_all();
    rig.push(4);
    let new: Vec<u64> = rig.flights.keys().copied().collect();
    assert!(new.iter().all(|&s| s >= floor), "seq {new:?} below the floor {floor} after a reboot");
    rig.drain();
    rig.check_seqs_never_reused();
}

#[test]
fn a_full_buffer_spills_whole_batches_while_paused_and_they_go_first_in_order() {
    let mut rig = Rig::new(config(StorePolicy::new()), 8, 1);
    rig.core.pause(rig.now);
    assert_eq!(rig.push(30), 30, "nothing is refused: full RAM spills to the store");
    assert_eq!(rig.store.batches.len(), 6, "24 items in 6 batches of max_batch");
    let m = rig.core.metrics();
    assert_eq!((m.stored, m.buffered, m.rejected), (24, 6, 0));
    // Back online: stored batches first (oldest first), then RAM.
    rig.core.resume(rig.now);
    rig.pump();
    let (first, flush_triggers) = (rig.flights.keys().next().copied(), rig.core.metrics().flushes);
    assert_eq!((first, flush_triggers.get(Trigger::Store)), (Some(0), 1));
    rig.drain();
    assert_eq!(rig.first_deliveries(), (0..30).collect::<Vec<_>>(), "acceptance order across the store");
    assert!(rig.store.batches.is_empty(), "every stored batch was removed at its final outcome");
    assert_eq!(rig.core.metrics().delivered, 30);
}

#[test]
fn at_the_store_s_limit_reject_makes_producers_wait_and_loses_nothing() {
    let mut rig = Rig::new(config(StorePolicy::new()), 8, 1);
    rig.store.limit = Some(2);
    rig.core.pause(rig.now);
    assert_eq!(rig.push(30), 16, "8 in the store, 8 in RAM, then full");
    assert!(rig.core.must_wait());
    let m = rig.core.metrics();
    assert_eq!((m.stored, m.buffered, m.evicted), (8, 8, 0));
    rig.drain();
    assert_eq!(rig.first_deliveries(), (0..16).collect::<Vec<_>>());
}

#[test]
fn at_the_store_s_limit_drop_oldest_evicts_the_oldest_stored_batch() {
    let mut rig = Rig::new(config(StorePolicy::new()).overflow(Overflow::DropOldest), 8, 1);
    rig.store.limit = Some(2);
    rig.core.pause(rig.now);
    assert_eq!(rig.push(20), 20);
    // 20 items: the oldest stored batches made room for newer ones, whole.
    assert_eq!(rig.evicted, (0..8).collect::<Vec<_>>());
    rig.drain();
    assert_eq!(rig.first_deliveries(), (8..20).collect::<Vec<_>>());
    let m = rig.core.metrics();
    assert_eq!((m.evicted, m.delivered), (8, 12));
    assert!(m.is_consistent());
}

#[test]
fn write_ahead_a_power_cut_during_an_attempt_or_a_back_off_loses_nothing() {
    let mut rig = Rig::new(config(StorePolicy::new().spill(false).write_ahead(true)), 8, 1);
    rig.push(4);
    assert_eq!(rig.store.batches.len(), 1, "in the store before its first attempt");
    rig.power_cut(); // during attempt 1
    assert_eq!(rig.flights.values().next(), Some(&vec![0, 1, 2, 3]));
    rig.fail_all(); // attempt 1 of the new boot fails: back-off
    rig.power_cut(); // during the back-off
    rig.drain();
    assert_eq!(rig.first_deliveries(), vec![0, 1, 2, 3]);
    assert!(rig.store.batches.is_empty());
}

#[test]
fn a_batch_is_final_only_once_removed_from_the_store() {
    let mut rig = Rig::new(config(StorePolicy::new().write_ahead(true)), 8, 1);
    rig.store.fail_next = 0;
    rig.push(4);
    let token = rig.core.flush();
    rig.store.fail_next = 1; // the removal fails once
    rig.deliver_all();
    assert!(!rig.core.is_flushed(token), "delivered, but not removed yet");
    assert_eq!(rig.store.batches.len(), 1);
    let retry = rig.core.poll_timeout().expect("the failed removal waits for the retry delay");
    assert_eq!(retry, rig.now + ms(100));
    rig.advance_to_deadline();
    assert!(rig.core.is_flushed(token));
    assert!(rig.store.batches.is_empty());
    let m = rig.core.metrics();
    assert_eq!((m.delivered, m.store_failures), (4, 1));
}

#[test]
fn a_failed_write_ahead_lets_the_batch_run_unprotected_and_counts_it() {
    let mut rig = Rig::new(config(StorePolicy::new().write_ahead(true)), 8, 1);
    rig.store.fail_next = 1;
    rig.push(4);
    assert_eq!(rig.flights.len(), 1, "the batch runs");
    assert!(rig.store.batches.is_empty());
    rig.deliver_all();
    let m = rig.core.metrics();
    assert_eq!((m.delivered, m.store_failures), (4, 1));
}

#[test]
fn a_failed_spill_comes_back_to_the_front_of_ram_in_order() {
    let mut rig = Rig::new(config(StorePolicy::new()), 8, 1);
    rig.core.pause(rig.now);
    rig.store.fail_next = 1;
    assert_eq!(rig.push(8), 8);
    assert!(rig.store.batches.is_empty(), "the spill failed");
    assert_eq!(rig.core.metrics().buffered, 8, "and came back");
    rig.advance(ms(100)); // the retry delay
    assert_eq!(rig.store.batches.len(), 1, "spilled on the retry");
    rig.drain();
    assert_eq!(rig.first_deliveries(), (0..8).collect::<Vec<_>>());
}

#[test]
fn durable_means_stored_or_final() {
    let mut rig = Rig::new(config(StorePolicy::new().write_ahead(true)), 8, 1);
    rig.push(2);
    let token = rig.core.flush();
    assert!(!rig.core.is_durable(token));
    rig.pump(); // the manual flush cuts and writes ahead
    assert!(rig.core.is_durable(token));
}

#[test]
fn a_store_that_cannot_produce_a_batch_it_reported_counts_it_lost() {
    let mut rig = Rig::new(config(StorePolicy::new()), 8, 1);
    rig.core.pause(rig.now);
    rig.push(12);
    assert_eq!(rig.store.batches.len(), 2, "spilled each time RAM was full");
    rig.store.batches.clear(); // the medium lost them
    rig.drain();
    let m = rig.core.metrics();
    assert_eq!((m.store_lost, m.delivered), (8, 4));
    assert!(m.is_consistent());
}

#[test]
fn a_loaded_batch_is_reported_as_such() {
    let mut core: Batcher<u32, 8> = Batcher::new(config(StorePolicy::new()));
    assert!(core.recovered(Recovered { batches: 1, items: 2, seq_floor: 10 }));
    let t = Instant::ZERO;
    let mut io = Batch::<u32, 8>::new();
    assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::PersistFloor { floor: 1034 }));
    assert_eq!(core.handle_store(t, StoreDone::FloorPersisted), None);
    assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Load { after: None }));
    let f = core.handle_store(t, StoreDone::Loaded { seq: 9, len: 2, age: Duration::ZERO }).unwrap();
    assert_eq!((f.seq, f.trigger, f.first_item, f.write_ahead), (9, Trigger::Store, 0, false));
    let _ = core.handle_completion(t, 9, Outcome::Delivered);
    assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Remove { seq: 9 }));
}

/// A batch stored while paused, loaded back `age` old (as its record says).
#[cfg(feature = "uplink")]
fn load_stored(max_age: Duration, age: Duration) -> (Batcher<u32, 8>, batch_core::Flush) {
    let mut core: Batcher<u32, 8> =
        Batcher::new(config(StorePolicy::new()).max_attempts(10).max_age(max_age));
    assert!(core.recovered(Recovered { batches: 1, items: 2, seq_floor: 10 }));
    let (t, mut io) = (Instant::ZERO, Batch::<u32, 8>::new());
    assert!(matches!(core.poll_store(t, &mut io), Some(StoreOp::PersistFloor { .. })));
    assert_eq!(core.handle_store(t, StoreDone::FloorPersisted), None);
    assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Load { after: None }));
    let f = core.handle_store(t, StoreDone::Loaded { seq: 9, len: 2, age }).unwrap();
    (core, f)
}

#[cfg(feature = "uplink")]
#[test]
fn a_stored_batch_too_old_when_it_leaves_the_store_is_expired_not_sent() {
    let (mut core, f) = load_stored(ms(60_000), ms(60_001));
    assert!(f.expired, "not sent: handed to the expiry path");
    assert_eq!((f.seq, f.len, f.oldest_age), (9, 2, ms(60_001)));
    let m = core.metrics();
    assert_eq!((m.expired, m.in_flight, m.stored), (2, 0, 0));
    assert!(m.is_consistent());
    // Final once the store removed it, as any stored batch.
    assert!(!core.is_finished());
    let t = Instant::ZERO;
    assert_eq!(core.poll_store(t, &mut Batch::<u32, 8>::new()), Some(StoreOp::Remove { seq: 9 }));
    assert_eq!(core.handle_store(t, StoreDone::Removed), None);
    core.close();
    assert!(core.is_finished());
}

#[cfg(feature = "uplink")]
#[test]
fn a_stored_batch_keeps_its_age_for_its_retries() {
    // 50 s old when loaded, max 60 s: sent; the retry at 0.1 s is fine; one 10 s later is not.
    let (mut core, f) = load_stored(ms(60_000), ms(50_000));
    assert!(!f.expired);
    let t = Instant::ZERO;
    let c = core.handle_completion(t, f.seq, Outcome::Failed);
    assert!(matches!(c, Some(batch_core::Completion::Retry { attempt: 2, .. })), "{c:?}");
    assert_eq!(core.poll_retry(t + ms(100), f.seq), Some(batch_core::Retry::Attempt(2)));
    core.pause(t + ms(200));
    core.resume(t + ms(10_001));
    let _ = core.handle_completion(t + ms(10_001), f.seq, Outcome::Failed);
    assert_eq!(core.metrics().expired, 2, "10.001 s later the batch is 60.001 s old");
}

#[test]
fn a_store_retry_time_that_passed_while_nothing_is_due_is_not_reported_again() {
    let mut core: Batcher<u32, 8> = Batcher::new(config(StorePolicy::new()));
    assert!(core.recovered(Recovered { batches: 1, items: 2, seq_floor: 10 }));
    let t = Instant::ZERO;
    let mut io = Batch::<u32, 8>::new();
    assert!(matches!(core.poll_store(t, &mut io), Some(StoreOp::PersistFloor { .. })));
    assert_eq!(core.handle_store(t, StoreDone::FloorPersisted), None);
    assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Load { after: None }));
    assert_eq!(core.handle_store(t, StoreDone::Failed), None);
    core.pause(t);
    let at = core.poll_timeout().expect("a failed operation's retry is a timeout, also while paused");
    assert_eq!(core.poll_store(at, &mut io), None, "paused: nothing to load");
    // A driver that slept until `at` must not be told to wake at `at` again (a busy loop).
    assert_eq!(core.poll_timeout(), None);
    core.resume(at);
    assert_eq!(core.poll_store(at, &mut io), Some(StoreOp::Load { after: None }));
}

#[test]
fn a_push_that_fills_the_buffer_wakes_the_driver_when_a_spill_can_make_room() {
    let mut core: Batcher<u32, 8> = Batcher::new(config(StorePolicy::new()));
    assert!(core.recovered(Recovered::default()));
    let t = Instant::ZERO;
    let mut io = Batch::<u32, 8>::new();
    let _ = core.poll_store(t, &mut io);
    assert_eq!(core.handle_store(t, StoreDone::FloorPersisted), None);
    core.pause(t);
    for i in 0..7 {
        core.push(t, i).unwrap();
    }
    let _ = core.poll_wake();
    assert_eq!(core.poll_store(t, &mut io), None, "room left: no spill yet");
    core.push(t, 7).unwrap();
    assert!(core.poll_wake(), "a driver asleep since the last batch must come and spill");
    assert_eq!(core.poll_store(t, &mut io), Some(StoreOp::Append { seq: 0, len: 4, age: Duration::ZERO }));
}

#[test]
fn a_write_ahead_cut_waits_for_the_previous_append_so_appends_come_in_seq_order() {
    let config = Config::new().max_batch(2).max_in_flight(2).store(StorePolicy::new().write_ahead(true));
    let mut core: Batcher<u32, 8, 2> = Batcher::new(config);
    assert!(core.recovered(Recovered::default()));
    let t = Instant::ZERO;
    let mut io = Batch::<u32, 8>::new();
    let _ = core.poll_store(t, &mut io);
    assert_eq!(core.handle_store(t, StoreDone::FloorPersisted), None);
    for i in 0..4 {
        core.push(t, i).unwrap();
    }
    let mut batch = Batch::<u32, 8>::new();
    let first = core.poll_flush(t, &mut batch).unwrap();
    assert!(first.write_ahead);
    assert!(core.poll_flush(t, &mut Batch::<u32, 8>::new()).is_none(), "batch 1 waits for batch 0's append");
    assert_eq!(core.next_cut(), None, "and sets no timer for it");
    assert!(core.handle_written(first.seq, true));
    assert!(core.poll_wake());
    let second = core.poll_flush(t, &mut Batch::<u32, 8>::new()).unwrap();
    assert_eq!((second.seq, second.write_ahead), (first.seq + 1, true));
}

// -------------------------------------------------------------------------------------------
// Model-based: random inputs with power cuts
// -------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Pause,
    Resume,
    Deliver,
    Fail,
    /// Per-item answer: the first `.0` delivered, the next `.1` rejected, the rest retried.
    Partial(u32, u32),
    Advance(u64),
    StoreFails(u32),
    Flush,
    Durable,
    PowerCut,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..12).prop_map(Op::Push),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        3 => Just(Op::Deliver),
        1 => Just(Op::Fail),
        2 => (0u32..3, 0u32..3).prop_map(|(d, r)| Op::Partial(d, r)),
        2 => (1u64..300).prop_map(Op::Advance),
        1 => (1u32..3).prop_map(Op::StoreFails),
        1 => Just(Op::Flush),
        1 => Just(Op::Durable),
        1 => Just(Op::PowerCut),
    ]
}

fn cases() -> u32 {
    std::env::var("BATCH_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Whatever the inputs (per-item outcomes, expiry and pacing included) and wherever the
    /// power is cut: every item the store acknowledged is delivered at least once (or rejected,
    /// expired or evicted); first deliveries keep acceptance order; a seq always names the
    /// same items; the metrics add up after every step; and the only items missing are those
    /// in RAM at a power cut, dead letters and evictions.
    #[test]
    fn stored_items_survive_power_cuts_in_order(
        cap in 2usize..10,
        batch_div in 1usize..4,
        write_ahead in any::<bool>(),
        spill in any::<bool>(),
        drop_oldest in any::<bool>(),
        limit in proptest::option::of(1usize..4),
        seq_block in 1u32..6,
        max_age in proptest::option::of(50u64..2000),
        pace in proptest::option::of((1u64..200, 1u32..4)),
        ops in proptest::collection::vec(op(), 0..50),
    ) {
        let max_batch = (cap / batch_div).max(1);
        let policy = StorePolicy::new().spill(spill).write_ahead(write_ahead).seq_block(seq_block);
        let overflow = if drop_oldest { Overflow::DropOldest } else { Overflow::Reject };
        #[cfg_attr(not(feature = "uplink"), allow(unused_mut))]
        let mut config = Config::new().max_batch(max_batch).linger(ms(10)).max_attempts(100).overflow(overflow).store(policy);
        #[cfg(feature = "uplink")]
        if let Some(age) = max_age {
            config = config.max_age(ms(age));
        }
        #[cfg(feature = "uplink")]
        if let Some((interval, burst)) = pace {
            config = config.pace(ms(interval), burst);
        }
        let _ = (max_age, pace);
        let mut rig = Rig::new(config, cap, 1);
        rig.store.limit = limit;
        let mut lost_in_ram: Vec<u32> = Vec::new();
        for op in ops {
            match op {
                Op::Push(n) => { rig.push(n); }
                Op::Pause => rig.core.pause(rig.now),
                Op::Resume => { rig.core.resume(rig.now); rig.pump(); }
                Op::Deliver => rig.deliver_all(),
                Op::Fail => rig.fail_all(),
                Op::Partial(delivered, rejected) => rig.complete_all(Outcome::Partial { delivered, rejected }),
                Op::Advance(d) => rig.advance(ms(d)),
                Op::StoreFails(n) => rig.store.fail_next = n,
                Op::Flush => { let _ = rig.core.flush(); rig.pump(); }
                Op::Durable => {
                    let token = rig.core.token();
                    rig.core.request_durable(token);
                    rig.pump();
                    // With spill on, a store that takes it and nothing failing, it is durable
                    // at once (stored, written ahead, or already final).
                    let failed = rig.core.metrics().store_failures > 0;
                    if spill && limit.is_none() && rig.store.fail_next == 0 && !failed && !rig.core.is_paused() {
                        // Not durable only while running unprotected (no write-ahead): final soon.
                        let running = rig.core.metrics().in_flight > 0 && !write_ahead;
                        prop_assert!(rig.core.is_durable(token) || running,
                            "durable request not met: {:?}", rig.core.metrics());
                    }
                }
                Op::PowerCut => {
                    // What only RAM held (and was not delivered) is lost with the power.
                    let delivered = rig.first_deliveries();
                    let stored: Vec<u32> = rig.store.batches.values().flatten().copied().collect();
                    for i in 0..rig.next_item {
                        let settled = rig.evicted.contains(&i) || rig.dead.contains(&i) || rig.rejected.contains(&i) || rig.expired.contains(&i);
                        if !delivered.contains(&i) && !stored.contains(&i) && !settled {
                            lost_in_ram.push(i);
                        }
                    }
                    rig.power_cut();
                }
            }
        }
        rig.store.fail_next = 0;
        rig.drain();
        rig.check_seqs_never_reused();
        let delivered = rig.first_deliveries();
        // Every acknowledged item was delivered, unless evicted at the store's limit, rejected by
        // the handler or expired.
        let final_elsewhere = |i: &u32| rig.evicted.contains(i) || rig.rejected.contains(i) || rig.expired.contains(i);
        for i in &rig.acknowledged {
            prop_assert!(delivered.contains(i) || final_elsewhere(i), "item {} was stored, then lost", i);
        }
        // First deliveries in acceptance order (one flight slot, retries until delivered). An
        // item the handler rejected, or that expired, may come again after a power cut (the
        // store redelivers its whole batch, at least once): order is about the others.
        let ordered: Vec<u32> = delivered.iter().copied().filter(|i| !final_elsewhere(i)).collect();
        prop_assert!(ordered.windows(2).all(|w| w[0] < w[1]), "out of order: {:?}", ordered);
        // Nothing missing but RAM lost to a power cut, and evictions.
        for i in 0..rig.next_item {
            prop_assert!(
                delivered.contains(&i) || final_elsewhere(&i) || lost_in_ram.contains(&i),
                "item {} vanished", i
            );
        }
        prop_assert!(rig.store.batches.is_empty());
        // Without a power cut, every item has exactly one final outcome.
        if lost_in_ram.is_empty() && rig.boot == 0 {
            let m = rig.core.metrics();
            prop_assert_eq!(m.rejected_by_handler as usize, rig.rejected.len());
            prop_assert_eq!(m.expired as usize, rig.expired.len());
            prop_assert!(rig.rejected.iter().all(|i| !delivered.contains(i)), "a rejected item was delivered");
        }
    }
}

#[test]
fn a_slow_but_healthy_sink_gets_backpressure_not_spills_and_a_failing_one_spills() {
    let mut rig = Rig::new(config(StorePolicy::new()), 8, 1);
    assert_eq!(rig.push(12), 12, "4 cut and running, 8 in RAM");
    assert_eq!(rig.push(1), 0, "full while the batch runs: producers wait, nothing spills");
    assert!(rig.core.must_wait());
    assert!(rig.store.batches.is_empty());
    rig.fail_all(); // the uplink is failing: the batch waits to retry
    assert_eq!(rig.store.batches.len(), 1, "now RAM's front goes to the store");
    assert_eq!(rig.push(4), 4);
    rig.drain();
    assert_eq!(rig.first_deliveries(), (0..16).collect::<Vec<_>>());
}
