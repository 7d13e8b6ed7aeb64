//! One test per item of the contract in DESIGN.md ("The contract every adapter keeps"), run
//! against the core in virtual time with the simulator in `sim/`.

#![allow(clippy::cast_possible_truncation, clippy::cast_lossless, reason = "test arithmetic on small counts")]

mod sim;

use batch_core::storage::{InFlight, Queue};
use batch_core::{
    Batch, BatchCore, Batcher, Completion, Config, ConfigError, Duration, Instant, Outcome, Overflow,
    PushError, Retry, Trigger,
};
use sim::{Sim, at_ms, deliver_after, fail_first, ms};

/// A config with a long linger, so only the trigger under test fires.
const fn quiet() -> Config {
    Config::new().linger(Duration::from_secs(3600))
}

// -------------------------------------------------------------------------------------------
// 1. Triggers
// -------------------------------------------------------------------------------------------

#[test]
fn size_trigger_cuts_when_max_batch_items_are_buffered() {
    let mut sim: Sim<u32, 8> = Sim::new(quiet().max_batch(3), deliver_after(ms(1)));
    sim.push(1).unwrap();
    sim.push(2).unwrap();
    assert!(sim.cuts.is_empty(), "two of three items: no cut");
    sim.push(3).unwrap();
    assert_eq!(sim.cuts.len(), 1);
    let cut = &sim.cuts[0];
    assert_eq!(cut.at, Instant::ZERO, "cut at the push that filled the batch");
    assert_eq!(cut.flush.trigger, Trigger::Size);
    assert_eq!(cut.items, vec![1, 2, 3]);
    sim.run_until_idle();
    assert_eq!(sim.delivered_items(), vec![1, 2, 3]);
}

#[test]
fn linger_deadline_is_anchored_to_oldest_item() {
    let mut sim: Sim<u32, 8> = Sim::new(Config::new().max_batch(8).linger(ms(50)), deliver_after(ms(0)));
    sim.run_until(at_ms(10));
    sim.push(1).unwrap();
    assert_eq!(sim.core.poll_timeout(), Some(at_ms(60)), "oldest item + linger");
    sim.run_until(at_ms(59));
    assert!(sim.cuts.is_empty(), "not before the oldest item has waited linger");
    sim.run_until(at_ms(100));
    assert_eq!(sim.cuts.len(), 1);
    let cut = &sim.cuts[0];
    assert_eq!(cut.at, at_ms(60), "cut exactly when the oldest item has waited linger");
    assert_eq!(cut.flush.trigger, Trigger::Linger);
    assert_eq!(cut.flush.oldest_age, ms(50));
}

#[test]
fn idle_batcher_sets_no_deadline() {
    let mut sim: Sim<u32, 8> = Sim::new(Config::new().linger(ms(50)), deliver_after(ms(5)));
    assert_eq!(sim.core.poll_timeout(), None, "a new batcher sets no timer");
    sim.run_until(Instant::from_secs(10));
    assert!(sim.cuts.is_empty());
    assert_eq!(sim.core.poll_timeout(), None);
    sim.push(1).unwrap();
    assert!(sim.core.poll_timeout().is_some());
    sim.run_until_idle();
    assert_eq!(sim.delivered_items(), vec![1]);
    assert_eq!(sim.core.poll_timeout(), None, "drained again: no timer at all");
    assert_eq!(sim.next_event(), None);
}

#[test]
fn linger_is_not_reset_by_later_pushes() {
    let mut sim: Sim<u32, 16> = Sim::new(Config::new().max_batch(16).linger(ms(50)), deliver_after(ms(0)));
    for i in 0..5 {
        sim.run_until(at_ms(u64::from(i) * 10));
        sim.push(i).unwrap();
        assert_eq!(
            sim.core.poll_timeout(),
            Some(at_ms(50)),
            "the deadline stays at the first item's arrival + linger"
        );
    }
    sim.run_until(at_ms(200));
    assert_eq!(sim.cuts.len(), 1);
    assert_eq!(sim.cuts[0].at, at_ms(50));
    assert_eq!(sim.cuts[0].items, vec![0, 1, 2, 3, 4]);
}

#[test]
fn item_ages_stay_accurate_behind_a_deep_backlog() {
    // One slot held for a second per batch while six more batches queue up (more than the core
    // keeps exact marks for). Reported ages must never be below the truth and, with marks thinned,
    // at most one batch's arrival spacing (2 items x 10 ms) above it, however deep the backlog.
    let mut sim: Sim<u32, 32> =
        Sim::new(Config::new().max_batch(2).linger(ms(5_000)), deliver_after(ms(1_000)));
    sim.push(0).unwrap();
    sim.push(1).unwrap(); // batch 0, with the handler until t=1000
    let mut arrival = vec![at_ms(0), at_ms(0)];
    for i in 2..14u32 {
        sim.run_until(at_ms(u64::from(i - 1) * 10)); // item i arrives at (i-1) * 10 ms
        arrival.push(sim.now);
        sim.push(i).unwrap();
    }
    sim.run_until_idle();
    assert_eq!(sim.cuts.len(), 7);
    for cut in &sim.cuts[1..] {
        let first = cut.items[0] as usize;
        let truth = cut.at - arrival[first];
        let age = cut.flush.oldest_age;
        assert!(age >= truth, "batch {}: age {age:?} below the truth {truth:?}", cut.flush.seq);
        assert!(age <= truth + ms(20), "batch {}: age {age:?} vs truth {truth:?}", cut.flush.seq);
    }
    assert_eq!(sim.cuts[1].flush.oldest_age, ms(990), "the first waiting batch is exact");
    assert_eq!(sim.core.metrics().max_item_age, sim.cuts.last().unwrap().flush.oldest_age);
}

#[test]
fn linger_of_the_remainder_after_a_size_cut_is_anchored_to_its_oldest_item() {
    // One slot, a slow handler: while batch 0 runs, items pile up past a full batch.
    let mut sim: Sim<u32, 8> = Sim::new(Config::new().max_batch(2).linger(ms(50)), deliver_after(ms(100)));
    sim.push(0).unwrap();
    sim.push(1).unwrap(); // size cut at 0, runs until 100
    sim.run_until(at_ms(10));
    sim.push(2).unwrap();
    sim.run_until(at_ms(20));
    sim.push(3).unwrap();
    sim.run_until(at_ms(30));
    sim.push(4).unwrap();
    assert_eq!(sim.core.poll_timeout(), None, "every slot busy: nothing to wait for");
    sim.run_until(at_ms(100));
    assert_eq!(sim.cuts.len(), 2, "batch [2, 3] cut as soon as the slot is free");
    assert_eq!(sim.cuts[1].at, at_ms(100));
    assert_eq!(sim.cuts[1].items, vec![2, 3]);
    assert_eq!(sim.cuts[1].flush.oldest_age, ms(90));
    // Item 4 arrived at 30; batch 1 runs until 200; linger would have passed at 80.
    sim.run_until(at_ms(200));
    assert_eq!(sim.cuts.len(), 3);
    assert_eq!(sim.cuts[2].items, vec![4]);
    assert_eq!(sim.cuts[2].at, at_ms(200));
    assert_eq!(sim.cuts[2].flush.oldest_age, ms(170), "anchored to item 4's arrival");
    assert_eq!(sim.cuts[2].flush.trigger, Trigger::Linger);

    // And a remainder left by a size cut with a free slot waits linger from its own arrival.
    let mut sim: Sim<u32, 8> = Sim::new(Config::new().max_batch(2).linger(ms(50)), deliver_after(ms(0)));
    sim.push(0).unwrap();
    sim.run_until(at_ms(10));
    sim.push(1).unwrap(); // size cut
    sim.run_until(at_ms(20));
    sim.push(2).unwrap();
    assert_eq!(sim.core.poll_timeout(), Some(at_ms(70)));
}

#[test]
fn manual_flush_cuts_at_once_and_its_token_resolves_when_delivered() {
    let mut sim: Sim<u32, 8> = Sim::new(quiet(), deliver_after(ms(5)));
    sim.push(1).unwrap();
    sim.push(2).unwrap();
    let token = sim.flush();
    assert_eq!(token.items_before(), 2);
    assert_eq!(sim.cuts.len(), 1);
    assert_eq!(sim.cuts[0].flush.trigger, Trigger::Manual);
    assert_eq!(sim.cuts[0].items, vec![1, 2]);
    assert!(!sim.core.is_flushed(token), "still with the handler");
    sim.push(3).unwrap(); // after the flush: not covered by the token
    sim.run_until(at_ms(5));
    assert!(sim.core.is_flushed(token));
    assert_eq!(sim.core.len(), 1, "item 3 waits for its own trigger");
}

#[test]
fn empty_flush_resolves_at_once_without_calling_the_handler() {
    let mut sim: Sim<u32, 8> =
        Sim::new(quiet(), |_, _, _| panic!("the handler must not be called for an empty flush"));
    let token = sim.flush();
    assert!(sim.core.is_flushed(token));
    assert_eq!(token.items_before(), 0);
    sim.run_until(Instant::from_secs(1));
    assert!(sim.attempts.is_empty());
    assert_eq!(sim.metrics().flushes.total(), 0);
}

#[test]
fn urgent_push_cuts_its_batch_at_once() {
    let mut sim: Sim<u32, 8> = Sim::new(quiet(), deliver_after(ms(1)));
    sim.push(1).unwrap();
    sim.push(2).unwrap();
    sim.push_urgent(99).unwrap();
    assert_eq!(sim.cuts.len(), 1);
    assert_eq!(sim.cuts[0].flush.trigger, Trigger::Urgent);
    assert_eq!(sim.cuts[0].items, vec![1, 2, 99], "the urgent item and all before it");
    assert_eq!(sim.metrics().flushes.urgent, 1);
}

#[test]
fn close_cuts_the_remainder_and_rejects_later_pushes_with_the_item() {
    let mut sim: Sim<u32, 8> = Sim::new(quiet(), deliver_after(ms(1)));
    sim.push(1).unwrap();
    sim.push(2).unwrap();
    sim.close();
    assert_eq!(sim.cuts.len(), 1);
    assert_eq!(sim.cuts[0].flush.trigger, Trigger::Close);
    assert_eq!(sim.push(3), Err(PushError::Closed(3)));
    assert_eq!(sim.push_urgent(4), Err(PushError::Closed(4)));
    assert_eq!(sim.metrics().rejected, 2);
    sim.run_until_idle();
    assert!(sim.core.is_finished());
    assert_eq!(sim.delivered_items(), vec![1, 2]);
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "a weigher is `fn(&T) -> u32`")]
fn weight(item: &u32) -> u32 {
    *item
}

#[test]
fn weight_limit_cuts_before_the_batch_would_exceed_it() {
    let core: Batcher<u32, 8> = Batcher::try_new_weighted(quiet().max_weight(10), weight).expect("valid");
    let mut sim = Sim::with_core(core, Some(Box::new(deliver_after(ms(1)))));
    sim.push(4).unwrap();
    sim.push(4).unwrap();
    assert!(sim.cuts.is_empty(), "8 of 10");
    sim.push(3).unwrap();
    assert_eq!(sim.cuts.len(), 1);
    assert_eq!(sim.cuts[0].flush.trigger, Trigger::Weight);
    assert_eq!(sim.cuts[0].items, vec![4, 4], "cut before exceeding 10");
    assert_eq!(sim.core.len(), 1, "the 3 stays for the next batch");
    sim.push(7).unwrap(); // 3 + 7 = 10: exactly at the limit, not over
    assert_eq!(sim.cuts.len(), 1);
    sim.flush();
    sim.run_until_idle(); // the one slot frees at 1 ms
    assert_eq!(sim.cuts[1].items, vec![3, 7]);
    assert_eq!(sim.cuts[1].flush.trigger, Trigger::Manual);
    for cut in &sim.cuts {
        assert!(cut.items.iter().sum::<u32>() <= 10);
    }
}

#[test]
fn too_heavy_item_is_rejected_and_returned() {
    let core: Batcher<u32, 8> = Batcher::try_new_weighted(quiet().max_weight(10), weight).expect("valid");
    let mut sim = Sim::with_core(core, Some(Box::new(deliver_after(ms(1)))));
    assert_eq!(sim.push(11), Err(PushError::TooHeavy(11)));
    assert_eq!(sim.push(10), Ok(None), "exactly the limit fits");
    let m = sim.metrics();
    assert_eq!((m.accepted, m.rejected), (1, 1));
}

/// A weigher that answers 1 the first time it sees each item and 9 afterwards: user code that
/// weighs differently at the cut than at the push.
#[allow(clippy::trivially_copy_pass_by_ref, reason = "a weigher is `fn(&T) -> u32`")]
fn lying_weight(item: &u32) -> u32 {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap();
    if seen.contains(item) {
        9
    } else {
        seen.push(*item);
        1
    }
}

#[test]
fn a_weigher_that_changes_its_answer_cannot_underflow_the_weight_or_disable_linger() {
    let core: Batcher<u32, 8> =
        Batcher::try_new_weighted(Config::new().linger(ms(10)).max_weight(100), lying_weight).expect("valid");
    let mut sim = Sim::with_core(core, Some(Box::new(deliver_after(ms(1)))));
    // Pushed at weight 1 each, cut at weight 9 each: the total would go below zero.
    for i in 1000..1003 {
        sim.push(i).unwrap();
    }
    sim.flush();
    sim.run_until_idle();
    assert_eq!(sim.cuts.len(), 1);
    // The total recovered: a lone light item waits for linger, as it must, and is cut by it.
    sim.push(2000).unwrap();
    let deadline = sim.core.poll_timeout().expect("a linger deadline is set");
    assert_eq!(deadline, sim.now + ms(10));
    sim.run_until_idle();
    assert_eq!(sim.cuts.len(), 2);
    assert_eq!(sim.cuts[1].flush.trigger, Trigger::Linger, "not an endless weight trigger");
    assert!(sim.metrics().is_consistent());
}

/// A driver that weighs outside its lock (batch-tokio) passes the weight in; the queue keeps it
/// beside the item, and the core never calls user code to weigh that item again.
#[cfg(feature = "alloc")]
#[test]
fn weights_given_at_the_push_are_kept_and_cut_on_without_a_weigher() {
    use batch_core::storage::FixedDeque;
    let mut core = BatchCore::<u32, _, _>::with_storage(
        quiet().max_weight(10),
        FixedDeque::try_with_capacity_weighed(8).unwrap(),
        Vec::<InFlight>::with_capacity(1),
        None,
    )
    .expect("a weight-keeping queue needs no weigher");
    // Item values are not weights here: the weights are 4, 4, 3.
    for (item, w) in [(100, 4), (200, 4), (300, 3)] {
        core.push_weighed(Instant::ZERO, item, w).unwrap();
    }
    let mut out = Vec::with_capacity(8);
    let f = core.poll_flush(Instant::ZERO, &mut out).expect("over 10: due");
    assert_eq!((f.trigger, &out[..]), (Trigger::Weight, &[100, 200][..]));
    assert_eq!(core.push_weighed(Instant::ZERO, 400, 11), Err(PushError::TooHeavy(400)));
    assert!(core.metrics().is_consistent());
}

// -------------------------------------------------------------------------------------------
// 2. Order
// -------------------------------------------------------------------------------------------

/// Pushes `items` the way an async producer would: waits (in virtual time) while the core says
/// `must_wait`, and lets time pass between pushes in an irregular, repeatable pattern.
fn feed<const N: usize, const F: usize>(sim: &mut Sim<u32, N, F>, items: std::ops::Range<u32>) {
    for i in items {
        while sim.core.must_wait() {
            sim.advance(ms(1));
        }
        sim.push(i).unwrap();
        if i % 7 == 0 {
            sim.advance(ms(u64::from(i % 11)));
        }
    }
}

#[test]
fn items_reach_the_handler_in_acceptance_order_across_many_batches() {
    let mut sim: Sim<u32, 16> =
        Sim::new(Config::new().max_batch(7).linger(ms(3)).max_attempts(3), |seq, attempt, _| {
            let outcome = if seq % 5 == 0 && attempt == 1 { Outcome::Failed } else { Outcome::Delivered };
            (outcome, ms(seq % 4))
        });
    feed(&mut sim, 0..1000);
    sim.close();
    sim.run_until_idle();
    assert!(sim.core.is_finished());
    assert_eq!(sim.delivered_items(), (0..1000).collect::<Vec<_>>());
    assert!(sim.cuts.len() > 140, "many batches: {}", sim.cuts.len());
    // Each attempt carries a contiguous run of the acceptance order.
    for cut in &sim.cuts {
        let first = cut.flush.first_item as u32;
        let expected: Vec<u32> = (first..first + cut.items.len() as u32).collect();
        assert_eq!(cut.items, expected);
    }
}

#[test]
fn sequence_numbers_strictly_increase() {
    let mut sim: Sim<u32, 8, 3> =
        Sim::new(Config::new().max_batch(3).linger(ms(2)).max_in_flight(3), |seq, attempt, _| {
            let outcome = if seq % 3 == 1 && attempt < 3 { Outcome::Failed } else { Outcome::Delivered };
            (outcome, ms(7 - seq % 7))
        });
    feed(&mut sim, 0..200);
    sim.close();
    sim.run_until_idle();
    let seqs: Vec<u64> = sim.cuts.iter().map(|c| c.flush.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "0, 1, 2, ...");
    let firsts: Vec<u64> = sim.cuts.iter().map(|c| c.flush.first_item).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]));
    let mut all = sim.delivered_items();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
}

#[test]
fn one_in_flight_keeps_strict_order_through_retries() {
    let mut sim: Sim<u32, 8> =
        Sim::new(Config::new().max_batch(2).linger(ms(10)).max_attempts(4), |seq, attempt, _| {
            // Batch 0 fails twice, batch 2 once.
            let fails = match seq {
                0 => 2,
                2 => 1,
                _ => 0,
            };
            let outcome = if attempt <= fails { Outcome::Failed } else { Outcome::Delivered };
            (outcome, ms(5))
        });
    feed(&mut sim, 0..10);
    sim.close();
    sim.run_until_idle();
    assert_eq!(sim.peak_in_flight, 1);
    assert_eq!(sim.delivered_items(), (0..10).collect::<Vec<_>>());
    // Batch n+1's first attempt starts no earlier than batch n's final outcome.
    for w in sim.delivered.windows(2) {
        let next_start = sim.attempts_of(w[1].seq)[0].0;
        assert!(next_start >= w[0].at, "batch {} started before {} was final", w[1].seq, w[0].seq);
    }
    let seqs: Vec<u64> = sim.attempts.iter().map(|a| a.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(seqs, sorted, "attempts never interleave between batches");
    assert_eq!(sim.attempts_of(0).len(), 3);
}

#[test]
fn three_in_flight_start_in_order_and_may_finish_out_of_order() {
    let mut sim: Sim<u32, 16, 3> = Sim::new(
        quiet().max_batch(2).max_in_flight(3),
        // Earlier batches are slower.
        |seq, _, _| (Outcome::Delivered, ms(30 - 10 * seq.min(2))),
    );
    for i in 0..6 {
        sim.push(i).unwrap();
    }
    assert_eq!(sim.peak_running, 3, "three batches run at once");
    let starts: Vec<u64> = sim.attempts.iter().map(|a| a.seq).collect();
    assert_eq!(starts, vec![0, 1, 2], "started in order");
    sim.run_until_idle();
    let finished: Vec<u64> = sim.delivered.iter().map(|d| d.seq).collect();
    assert_eq!(finished, vec![2, 1, 0], "finished out of order");
    let mut all = sim.delivered_items();
    all.sort_unstable();
    assert_eq!(all, (0..6).collect::<Vec<_>>());
    // A fourth batch waits for a free slot.
    sim.push(6).unwrap();
    sim.push(7).unwrap();
    assert_eq!(sim.cuts.len(), 4);
}

#[test]
fn three_in_flight_limit_holds_back_a_fourth_batch() {
    let mut sim: Sim<u32, 16, 3> = Sim::new(quiet().max_batch(1).max_in_flight(3), deliver_after(ms(10)));
    for i in 0..4 {
        sim.push(i).unwrap();
    }
    assert_eq!(sim.cuts.len(), 3);
    assert_eq!(sim.core.len(), 1);
    sim.run_until(at_ms(10));
    assert_eq!(sim.cuts.len(), 4);
    assert_eq!(sim.cuts[3].at, at_ms(10), "cut as soon as a slot frees");
}

// -------------------------------------------------------------------------------------------
// 3. Retry
// -------------------------------------------------------------------------------------------

/// Pushes one item into a `max_batch(1)` sim whose handler always fails instantly, runs to the
/// end, and returns the start times of its attempts.
fn attempt_times(config: Config) -> Vec<Instant> {
    let mut sim: Sim<u32, 4> = Sim::new(config.max_batch(1), |_, _, _| (Outcome::Failed, Duration::ZERO));
    sim.push(1).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.dead_items(), vec![1]);
    sim.attempts_of(0).into_iter().map(|(t, _)| t).collect()
}

#[test]
fn retry_delays_double_from_the_base_without_jitter() {
    let times = attempt_times(Config::new().max_attempts(4));
    assert_eq!(times, vec![at_ms(0), at_ms(100), at_ms(300), at_ms(700)], "waits of 100, 200 and 400 ms");
}

#[test]
fn retry_delays_are_capped_by_max_delay() {
    let times = attempt_times(Config::new().max_attempts(6).retry_delays(ms(100), ms(250)));
    let waits: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert_eq!(waits, vec![100, 200, 250, 250, 250]);
}

#[test]
fn retry_delay_counts_from_the_failure_not_the_start() {
    let mut sim: Sim<u32, 4> = Sim::new(Config::new().max_batch(1).max_attempts(2), fail_first(1, ms(30)));
    sim.push(1).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.attempts_of(0), vec![(at_ms(0), 1), (at_ms(130), 2)]);
    assert_eq!(sim.retries[0].failed_at, at_ms(30));
    assert_eq!(sim.retries[0].at, at_ms(130));
    assert_eq!(sim.delivered_items(), vec![1]);
}

fn jittered_waits(permille: u16, seed: u32) -> Vec<(u32, Duration)> {
    let mut sim: Sim<u32, 64> = Sim::new(
        Config::new().max_batch(1).max_attempts(5).retry_delays(ms(100), ms(1000)).jitter(permille, seed),
        |_, _, _| (Outcome::Failed, Duration::ZERO),
    );
    for i in 0..40 {
        sim.push(i).unwrap();
        sim.run_until_idle();
    }
    assert_eq!(sim.dead_letters.len(), 40);
    sim.retries.iter().map(|r| (r.failed_attempt, r.at - r.failed_at)).collect()
}

#[test]
fn jittered_retry_delays_stay_within_bounds() {
    let config = Config::new().retry_delays(ms(100), ms(1000));
    let waits = jittered_waits(300, 7);
    assert_eq!(waits.len(), 160);
    let mut shortened = 0;
    for (failed, wait) in waits {
        let d = config.backoff(failed).as_micros();
        let w = wait.as_micros();
        assert!(w <= d, "jitter only shortens: {w} > {d}");
        assert!(w * 1000 >= d * 700, "at most 30% shorter: {w} vs {d}");
        if w < d {
            shortened += 1;
        }
    }
    assert!(shortened > 100, "jitter does shorten most delays ({shortened})");
    // Full jitter never makes a delay negative (or panics).
    for (failed, wait) in jittered_waits(1000, 99) {
        assert!(wait <= config.backoff(failed));
    }
}

#[test]
fn jitter_is_deterministic_for_a_seed() {
    assert_eq!(jittered_waits(500, 42), jittered_waits(500, 42));
    assert_ne!(jittered_waits(500, 42), jittered_waits(500, 43));
}

#[test]
fn dead_letter_after_max_attempts_hands_back_the_exact_items() {
    let mut sim: Sim<&'static str, 8> = Sim::new(quiet().max_batch(3).max_attempts(3), |seq, _, _| {
        let outcome = if seq == 0 { Outcome::Failed } else { Outcome::Delivered };
        (outcome, ms(1))
    });
    for s in ["a", "b", "c", "d", "e", "f"] {
        sim.push(s).unwrap();
    }
    sim.run_until_idle();
    assert_eq!(sim.dead_letters.len(), 1);
    assert_eq!(sim.dead_letters[0].items, vec!["a", "b", "c"]);
    assert_eq!(sim.dead_letters[0].attempts, 3);
    assert_eq!(sim.attempts_of(0).len(), 3, "exactly max_attempts attempts");
    assert_eq!(sim.delivered_items(), vec!["d", "e", "f"]);
    let m = sim.metrics();
    assert_eq!((m.dead_lettered, m.batches_dead_lettered), (3, 1));
    assert_eq!((m.failed_attempts, m.retries), (3, 2));
}

#[test]
fn max_attempts_one_means_no_retry() {
    let mut sim: Sim<u32, 4> = Sim::new(Config::new().max_batch(1).max_attempts(1), fail_first(1, ms(1)));
    sim.push(5).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.attempts.len(), 1);
    assert_eq!(sim.dead_items(), vec![5]);
    assert_eq!(sim.metrics().retries, 0);
}

// -------------------------------------------------------------------------------------------
// 4. Nothing is lost silently; 5. backpressure
// -------------------------------------------------------------------------------------------

#[test]
fn reject_overflow_returns_the_item_and_counts_it() {
    let mut sim: Sim<u32, 2> = Sim::new(quiet(), deliver_after(ms(10)));
    sim.pause(); // nothing leaves the buffer
    sim.push(1).unwrap();
    sim.push(2).unwrap();
    assert!(sim.core.is_full());
    assert!(sim.core.must_wait(), "an async producer waits");
    assert_eq!(sim.push(3), Err(PushError::Full(3)));
    let m = sim.metrics();
    assert_eq!((m.accepted, m.rejected, m.buffered), (2, 1, 2));
    sim.resume();
    sim.close();
    sim.run_until_idle();
    assert_eq!(sim.delivered_items(), vec![1, 2]);
}

#[test]
fn drop_oldest_evicts_the_oldest_item_and_returns_it() {
    let mut sim: Sim<u32, 3> = Sim::new(quiet().overflow(Overflow::DropOldest), deliver_after(ms(10)));
    sim.pause();
    for i in 1..=3 {
        assert_eq!(sim.push(i), Ok(None));
    }
    assert!(!sim.core.must_wait(), "drop-oldest never makes a producer wait");
    assert_eq!(sim.push(4), Ok(Some(1)));
    assert_eq!(sim.push(5), Ok(Some(2)));
    let m = sim.metrics();
    assert_eq!((m.accepted, m.evicted, m.rejected, m.buffered), (5, 2, 0, 3));
    sim.resume();
    sim.close();
    sim.run_until_idle();
    assert_eq!(sim.delivered_items(), vec![3, 4, 5]);
    assert_eq!(sim.evicted, vec![1, 2]);
}

#[test]
fn pause_stops_starts_and_items_keep_buffering_to_capacity() {
    let mut sim: Sim<u32, 4> = Sim::new(Config::new().max_batch(2).linger(ms(10)), deliver_after(ms(1)));
    sim.pause();
    for i in 0..4 {
        sim.push(i).unwrap();
    }
    assert_eq!(sim.core.poll_timeout(), None, "paused: no deadline");
    sim.run_until(Instant::from_secs(60));
    assert!(sim.cuts.is_empty(), "no batch starts while paused");
    assert_eq!(sim.push(4), Err(PushError::Full(4)));
    sim.resume();
    assert_eq!(sim.cuts.len(), 1, "one slot: the first batch starts at resume");
    assert_eq!(sim.cuts[0].at, Instant::from_secs(60));
    sim.run_until_idle();
    assert_eq!(sim.delivered_items(), vec![0, 1, 2, 3], "drained in order");
}

#[test]
fn pause_stops_the_retry_clock_and_resume_shifts_the_deadline() {
    let mut sim: Sim<u32, 4> =
        Sim::new(Config::new().max_batch(1).max_attempts(2), fail_first(1, Duration::ZERO));
    sim.push(1).unwrap(); // fails at 0, retry due at 100
    assert_eq!(sim.core.retry_at(0), Some(at_ms(100)));
    sim.run_until(at_ms(50));
    sim.pause();
    assert_eq!(sim.core.poll_timeout(), None, "no retry deadline runs while paused");
    sim.run_until(at_ms(550));
    assert_eq!(sim.attempts.len(), 1, "no retry while paused");
    sim.resume();
    assert_eq!(sim.core.retry_at(0), Some(at_ms(600)), "moved by the 500 ms paused");
    sim.run_until_idle();
    assert_eq!(sim.attempts_of(0), vec![(at_ms(0), 1), (at_ms(600), 2)]);
    assert_eq!(sim.delivered_items(), vec![1]);
}

#[test]
fn failure_while_paused_counts_the_delay_from_resume() {
    let mut sim: Sim<u32, 4> = Sim::new(Config::new().max_batch(1).max_attempts(2), fail_first(1, ms(40)));
    sim.push(1).unwrap(); // runs 0..40
    sim.run_until(at_ms(10));
    sim.pause();
    sim.run_until(at_ms(500)); // the attempt fails at 40, while paused
    assert_eq!(sim.retries.len(), 1);
    assert_eq!(sim.attempts.len(), 1);
    sim.resume();
    sim.run_until_idle();
    assert_eq!(sim.attempts_of(0)[1], (at_ms(600), 2), "resume + the full 100 ms");
}

// -------------------------------------------------------------------------------------------
// 6. Flush and shutdown
// -------------------------------------------------------------------------------------------

#[test]
fn close_drains_everything_to_is_finished() {
    let mut sim: Sim<u32, 8, 2> =
        Sim::new(Config::new().max_batch(3).max_in_flight(2).max_attempts(2), |seq, attempt, _| {
            let outcome =
                if seq == 1 || (seq == 2 && attempt == 1) { Outcome::Failed } else { Outcome::Delivered };
            (outcome, ms(3))
        });
    feed(&mut sim, 0..20);
    sim.close();
    assert!(!sim.core.is_finished());
    sim.run_until_idle();
    assert!(sim.core.is_finished());
    let m = sim.metrics();
    assert_eq!(m.delivered + m.dead_lettered, 20);
    assert_eq!(m.dead_lettered, 3, "batch 1 failed both attempts");
    let mut all = sim.delivered_items();
    all.extend(sim.dead_items());
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
}

#[test]
fn deadline_shutdown_returns_in_flight_and_buffered_items_as_returned() {
    let mut sim: Sim<u32, 8> = Sim::new(quiet().max_batch(2).max_attempts(10), |seq, _, _| {
        let outcome = if seq == 0 { Outcome::Delivered } else { Outcome::Failed };
        (outcome, ms(10))
    });
    for i in 0..7 {
        sim.push(i).unwrap();
    }
    sim.close();
    sim.run_until(at_ms(50)); // batch 0 delivered, batch 1 keeps failing
    assert_eq!(sim.delivered_items(), vec![0, 1]);
    let token_before = sim.core.flush();
    assert!(!sim.core.is_flushed(token_before));
    // The deadline hits: give up on everything.
    let n = sim.abandon_all();
    assert_eq!(n, 5);
    assert_eq!(sim.returned, vec![2, 3, 4, 5, 6], "in acceptance order, by value");
    let m = sim.metrics();
    assert_eq!(m.returned, 5);
    assert_eq!((m.buffered, m.in_flight), (0, 0));
    assert!(m.is_consistent());
    assert!(sim.core.is_finished());
    assert!(sim.core.is_flushed(token_before));
    assert_eq!(sim.core.abandon(1), None, "already gone");
}

// -------------------------------------------------------------------------------------------
// 7. Metrics
// -------------------------------------------------------------------------------------------

#[test]
fn metrics_count_flushes_by_trigger_and_the_max_item_age() {
    let core: Batcher<u32, 16> =
        Batcher::try_new_weighted(Config::new().max_batch(3).linger(ms(20)).max_weight(100), weight)
            .expect("valid");
    let mut sim = Sim::with_core(core, Some(Box::new(deliver_after(Duration::ZERO))));
    // size
    for _ in 0..3 {
        sim.push(1).unwrap();
    }
    // weight
    sim.push(60).unwrap();
    sim.push(50).unwrap();
    // linger: the 50 waits 20 ms
    sim.advance(ms(30));
    // manual
    sim.push(1).unwrap();
    sim.advance(ms(5));
    sim.flush();
    // urgent
    sim.push_urgent(1).unwrap();
    // close
    sim.push(1).unwrap();
    sim.advance(ms(7));
    sim.close();
    sim.run_until_idle();
    let f = sim.metrics().flushes;
    let by_trigger: Vec<(Trigger, u64)> = Trigger::ALL.iter().map(|&t| (t, f.get(t))).collect();
    assert_eq!(
        by_trigger,
        vec![
            (Trigger::Size, 1),
            (Trigger::Weight, 1),
            (Trigger::Linger, 1),
            (Trigger::Manual, 1),
            (Trigger::Urgent, 1),
            (Trigger::Close, 1),
            (Trigger::Store, 0),
        ]
    );
    assert_eq!(sim.metrics().max_item_age, ms(20), "the linger batch's oldest item");
    let m = sim.metrics();
    assert_eq!((m.accepted, m.delivered, m.batches_delivered), (8, 8, 6));
}

#[test]
fn poll_wake_reports_when_the_runner_must_wake() {
    let mut core: Batcher<u32, 4> = Batcher::new(Config::new().max_batch(2).max_attempts(2));
    let t = Instant::ZERO;
    assert!(!core.poll_wake(), "nothing happened yet");
    core.push(t, 1).unwrap();
    assert!(core.poll_wake(), "first item: a deadline appeared");
    assert!(!core.poll_wake(), "poll_wake clears the flag");
    core.push(t, 2).unwrap();
    assert!(core.poll_wake(), "a full batch is due");
    let mut batch = Batch::<u32, 4>::new();
    let f = core.poll_flush(t, &mut batch).unwrap();
    assert!(!core.poll_wake(), "the runner's own poll needs no wake");
    core.push(t, 3).unwrap();
    assert!(core.poll_wake(), "first item of a new batch");
    core.push(t, 4).unwrap();
    assert!(core.poll_wake(), "second batch full (even though no slot is free)");
    core.push(t, 5).unwrap();
    assert!(!core.poll_wake(), "an item past a full batch changes nothing now");
    let c = core.handle_completion(t, f.seq, Outcome::Failed);
    assert!(matches!(c, Some(Completion::Retry { .. })));
    assert!(core.poll_wake(), "a completion wakes the runner");
    core.pause(t);
    assert!(!core.poll_wake(), "pausing leaves nothing new to do");
    core.resume(t);
    assert!(core.poll_wake(), "resume: work may be due");
    core.resume(t);
    assert!(!core.poll_wake(), "resume without pause is a no-op");
    let _ = core.flush();
    assert!(core.poll_wake(), "flush");
    core.close();
    assert!(core.poll_wake(), "close");
    assert_eq!(core.push(t, 6), Err(PushError::Closed(6)));
    assert!(!core.poll_wake(), "a refused push changes nothing");
}

// -------------------------------------------------------------------------------------------
// 8. Time
// -------------------------------------------------------------------------------------------

#[test]
fn time_that_does_not_move_still_cuts_retries_and_drains() {
    let mut sim: Sim<u32, 8> = Sim::new(
        Config::new().max_batch(3).max_attempts(3).retry_delays(Duration::ZERO, Duration::ZERO),
        fail_first(2, Duration::ZERO),
    );
    for i in 0..8 {
        sim.push(i).unwrap();
    }
    assert_eq!(sim.cuts.len(), 2, "size cuts need no time");
    sim.close();
    sim.run_until_idle();
    assert_eq!(sim.now, Instant::ZERO, "the clock never moved");
    assert!(sim.core.is_finished());
    assert_eq!(sim.delivered_items(), (0..8).collect::<Vec<_>>());
    assert_eq!(sim.metrics().retries, 6, "two retries for each of three batches");
}

#[test]
fn time_jumping_forward_years_does_not_panic_and_stays_correct() {
    let year = Duration::from_secs(365 * 24 * 3600);
    let mut sim: Sim<u32, 8> =
        Sim::new(Config::new().max_batch(4).linger(ms(50)).max_attempts(2), fail_first(1, ms(1)));
    sim.push(1).unwrap();
    sim.run_until(Instant::ZERO + year.saturating_mul(100));
    assert_eq!(sim.cuts.len(), 1);
    assert_eq!(sim.cuts[0].at, at_ms(50), "the deadline was honoured, not skipped");
    assert_eq!(sim.delivered_items(), vec![1]);

    // A clock that jumps ahead without the driver waking at the deadline (a suspended device).
    let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(4).linger(ms(50)));
    let late = Instant::ZERO + year.saturating_mul(500);
    core.push(Instant::ZERO, 1).unwrap();
    let mut batch = Batch::<u32, 8>::new();
    let f = core.poll_flush(late, &mut batch).unwrap();
    assert_eq!(f.trigger, Trigger::Linger);
    assert_eq!(f.oldest_age, late - Instant::ZERO);
    assert_eq!(core.metrics().max_item_age, f.oldest_age);

    // At the very end of time, deadlines saturate instead of overflowing.
    let mut sim: Sim<u32, 8> =
        Sim::new(Config::new().max_batch(4).linger(ms(50)).max_attempts(3), fail_first(1, ms(1)));
    sim.run_until(Instant::from_micros(u64::MAX - 10_000));
    sim.push(1).unwrap();
    assert_eq!(sim.core.poll_timeout(), Some(Instant::MAX));
    sim.run_until_idle();
    assert_eq!(sim.now, Instant::MAX);
    assert_eq!(sim.delivered_items(), vec![1]);
    assert!(sim.metrics().is_consistent());
}

#[test]
fn time_going_backwards_does_not_panic() {
    // Two producers can read the clock in one order and take the lock in the other.
    let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(3).linger(ms(50)).max_attempts(2));
    core.push(at_ms(100), 1).unwrap();
    core.push(at_ms(60), 2).unwrap();
    let mut batch = Batch::<u32, 8>::new();
    assert!(core.poll_flush(at_ms(20), &mut batch).is_none(), "not due");
    let f = core.poll_flush(at_ms(150), &mut batch).unwrap();
    assert_eq!((f.trigger, f.len, f.oldest_age), (Trigger::Linger, 2, ms(50)));
    let c = core.handle_completion(at_ms(10), f.seq, Outcome::Failed);
    assert_eq!(c, Some(Completion::Retry { attempt: 2, at: at_ms(110) }));
    assert_eq!(core.poll_retry(at_ms(5), f.seq), None);
    core.pause(at_ms(200));
    core.resume(at_ms(150)); // "resumed before it paused": no shift, no panic
    assert_eq!(core.retry_at(f.seq), Some(at_ms(110)));
    assert_eq!(core.poll_retry(at_ms(110), f.seq), Some(Retry::Attempt(2)));
    assert!(core.metrics().is_consistent());
}

#[test]
fn push_with_reads_the_clock_only_when_the_core_needs_the_time() {
    let mut core: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(3).linger(ms(50)));
    let mut reads = Vec::new();
    for i in 0..5u32 {
        let t = at_ms(u64::from(i) * 10);
        core.push_with(
            || {
                reads.push(i);
                t
            },
            i,
        )
        .unwrap();
    }
    // Item 0 starts a batch; item 3 is the first past a full batch (its arrival anchors the
    // remainder after the size cut).
    assert_eq!(reads, vec![0, 3]);
    assert_eq!(core.poll_timeout(), Some(at_ms(0)), "a full batch is due at once");
    let mut batch = Batch::<u32, 8>::new();
    let f = core.poll_flush(at_ms(40), &mut batch).unwrap();
    assert_eq!((f.trigger, &batch[..]), (Trigger::Size, &[0, 1, 2][..]));
    let _ = core.handle_completion(at_ms(40), f.seq, Outcome::Delivered);
    assert_eq!(core.poll_timeout(), Some(at_ms(80)), "item 3 arrived at 30");
}

#[test]
fn capacity_one_max_batch_one_linger_zero() {
    let mut sim: Sim<u32, 1> =
        Sim::new(Config::new().max_batch(1).linger(Duration::ZERO), deliver_after(ms(2)));
    sim.push(1).unwrap();
    assert_eq!(sim.cuts.len(), 1, "cut at once");
    sim.push(2).unwrap(); // buffered while batch 0 runs
    assert!(sim.core.is_full());
    assert_eq!(sim.push(3), Err(PushError::Full(3)));
    sim.run_until_idle();
    assert_eq!(sim.delivered_items(), vec![1, 2]);
    assert_eq!(sim.cuts[1].at, at_ms(2));

    // linger 0 on its own, with a larger batch: every push goes out at once.
    let mut sim: Sim<u32, 4> =
        Sim::new(Config::new().max_batch(4).linger(Duration::ZERO), deliver_after(Duration::ZERO));
    for i in 0..3 {
        sim.push(i).unwrap();
    }
    assert_eq!(sim.cuts.len(), 3);
    assert!(sim.cuts.iter().all(|c| c.flush.trigger == Trigger::Linger && c.items.len() == 1));
}

// -------------------------------------------------------------------------------------------
// Configuration errors: one test per variant.
// -------------------------------------------------------------------------------------------

/// A queue with room for nothing. (`Batcher<T, 0>` does not even compile: heapless refuses a
/// zero-capacity `Deque` at build time, so run-time storage is the only way to reach this error.)
#[derive(Debug)]
struct NoRoom;

impl Queue<u32> for NoRoom {
    fn capacity(&self) -> usize {
        0
    }
    fn len(&self) -> usize {
        0
    }
    fn push_back(&mut self, item: u32) -> Result<(), u32> {
        Err(item)
    }
    fn push_front(&mut self, item: u32) -> Result<(), u32> {
        Err(item)
    }
    fn pop_front(&mut self) -> Option<u32> {
        None
    }
    fn front(&self) -> Option<&u32> {
        None
    }
}

#[test]
fn config_error_zero_capacity() {
    let slots = heapless::Vec::<InFlight, 1>::new();
    let err = BatchCore::with_storage(Config::new(), NoRoom, slots, None).unwrap_err();
    assert_eq!(err, ConfigError::ZeroCapacity);
    assert_eq!(err.field(), "capacity");
    assert_eq!(Config::new().validate(0, 1), Err(ConfigError::ZeroCapacity));
}

#[test]
fn config_error_zero_max_batch() {
    let err = Batcher::<u32, 4>::try_new(Config::new().max_batch(0)).unwrap_err();
    assert_eq!(err, ConfigError::ZeroMaxBatch);
    assert_eq!(err.field(), "max_batch");
}

#[test]
fn config_error_max_batch_above_capacity() {
    let err = Batcher::<u32, 4>::try_new(Config::new().max_batch(5)).unwrap_err();
    assert_eq!(err, ConfigError::MaxBatchAboveCapacity { max_batch: 5, capacity: 4 });
    assert_eq!(err.field(), "max_batch");
}

#[test]
fn config_error_zero_max_in_flight() {
    let err = Batcher::<u32, 4>::try_new(Config::new().max_in_flight(0)).unwrap_err();
    assert_eq!(err, ConfigError::ZeroMaxInFlight);
    assert_eq!(err.field(), "max_in_flight");
}

#[test]
fn config_error_max_in_flight_above_slots() {
    let err = Batcher::<u32, 4, 2>::try_new(Config::new().max_in_flight(3)).unwrap_err();
    assert_eq!(err, ConfigError::MaxInFlightAboveSlots { max_in_flight: 3, slots: 2 });
    assert_eq!(err.field(), "max_in_flight");
}

#[test]
fn config_error_zero_max_attempts() {
    let err = Batcher::<u32, 4>::try_new(Config::new().max_attempts(0)).unwrap_err();
    assert_eq!(err, ConfigError::ZeroMaxAttempts);
    assert_eq!(err.field(), "max_attempts");
}

#[test]
fn config_error_base_delay_above_max_delay() {
    let err = Batcher::<u32, 4>::try_new(Config::new().retry_delays(ms(500), ms(499))).unwrap_err();
    assert_eq!(err, ConfigError::BaseDelayAboveMaxDelay { base_delay: ms(500), max_delay: ms(499) });
    assert_eq!(err.field(), "base_delay");
}

#[test]
fn config_error_jitter_above_one() {
    let err = Batcher::<u32, 4>::try_new(Config::new().jitter(1001, 1)).unwrap_err();
    assert_eq!(err, ConfigError::JitterAboveOne { permille: 1001 });
    assert_eq!(err.field(), "jitter");
    assert!(Batcher::<u32, 4>::try_new(Config::new().jitter(1000, 1)).is_ok());
}

#[test]
fn config_error_zero_max_weight() {
    let err = Batcher::<u32, 4>::try_new_weighted(Config::new().max_weight(0), weight).unwrap_err();
    assert_eq!(err, ConfigError::ZeroMaxWeight);
    assert_eq!(err.field(), "max_weight");
}

#[test]
fn config_error_max_weight_without_weigher() {
    let err = Batcher::<u32, 4>::try_new(Config::new().max_weight(10)).unwrap_err();
    assert_eq!(err, ConfigError::MaxWeightWithoutWeigher);
    assert_eq!(err.field(), "max_weight");
}

#[test]
fn config_error_weigher_without_max_weight() {
    let err = Batcher::<u32, 4>::try_new_weighted(Config::new(), weight).unwrap_err();
    assert_eq!(err, ConfigError::WeigherWithoutMaxWeight);
    assert_eq!(err.field(), "weigher");
}

#[test]
fn every_config_error_names_its_field_in_its_message() {
    let all = [
        ConfigError::ZeroCapacity,
        ConfigError::ZeroMaxBatch,
        ConfigError::MaxBatchAboveCapacity { max_batch: 5, capacity: 4 },
        ConfigError::ZeroMaxInFlight,
        ConfigError::MaxInFlightAboveSlots { max_in_flight: 3, slots: 2 },
        ConfigError::ZeroMaxAttempts,
        ConfigError::BaseDelayAboveMaxDelay { base_delay: ms(2), max_delay: ms(1) },
        ConfigError::JitterAboveOne { permille: 1001 },
        ConfigError::ZeroMaxWeight,
        ConfigError::MaxWeightWithoutWeigher,
        ConfigError::WeigherWithoutMaxWeight,
    ];
    for err in all {
        let field = err.field();
        let shown = err.to_string();
        let key = if field == "weigher" { "weigher" } else { field };
        assert!(shown.contains(key), "{shown:?} names {field}");
        assert!(err.message().contains(key), "{:?} names {field}", err.message());
    }
}

#[test]
#[should_panic(expected = "max_batch is 0")]
fn new_panics_on_an_invalid_config_at_run_time() {
    let _ = Batcher::<u32, 4>::new(Config::new().max_batch(0));
}

#[test]
fn push_many_matches_pushing_one_by_one() {
    // The bulk path must leave the core exactly as single pushes would: same batches, counters,
    // evictions and refusals, across fast runs, batch boundaries, marks and a full buffer.
    #[allow(clippy::trivially_copy_pass_by_ref, reason = "a weigher takes &T")]
    fn weight(x: &u32) -> u32 {
        *x % 7
    }
    for overflow in [batch_core::Overflow::Reject, batch_core::Overflow::DropOldest] {
        for weighted in [false, true] {
            let config = Config::new().max_batch(5).overflow(overflow);
            let make = || -> batch_core::Batcher<u32, 16> {
                if weighted {
                    batch_core::Batcher::new_weighted(config.max_weight(12), weight)
                } else {
                    batch_core::Batcher::new(config)
                }
            };
            let (mut one, mut many) = (make(), make());
            let (mut evicted_one, mut evicted_many) = (Vec::new(), Vec::new());
            let (mut refused_one, mut refused_many) = (Vec::new(), Vec::new());
            let mut items = 0..40u32;
            let held = many.push_many(
                || at_ms(3),
                &mut items,
                |e| refused_many.push(e),
                |old| evicted_many.push(old),
            );
            let mut held_one = None;
            for item in 0..40u32 {
                if one.must_wait() {
                    held_one = Some(item);
                    break;
                }
                match one.push(at_ms(3), item) {
                    Ok(Some(old)) => evicted_one.push(old),
                    Ok(None) => {}
                    Err(e) => refused_one.push(e),
                }
            }
            assert_eq!(held, held_one, "{overflow:?} weighted={weighted}");
            assert_eq!(evicted_many, evicted_one);
            assert_eq!(refused_many, refused_one);
            assert_eq!(many.metrics(), one.metrics());
            assert_eq!(many.poll_timeout(), one.poll_timeout());
            let (mut a, mut b) = (batch_core::Batch::<u32, 16>::new(), batch_core::Batch::<u32, 16>::new());
            let (fa, fb) = (many.poll_flush(at_ms(3), &mut a), one.poll_flush(at_ms(3), &mut b));
            assert_eq!((fa, &a), (fb, &b));
        }
    }
}
