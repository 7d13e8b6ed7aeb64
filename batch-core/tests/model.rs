//! Model-based random testing of the core: random operation sequences over random small
//! configurations, run through the simulator in manual mode (the test decides when and how each
//! attempt ends) and checked after every operation against a small reference model.
//!
//! Cases: `BATCH_PROPTEST_CASES` (default 10 000).

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_lossless,
    clippy::too_many_lines,
    reason = "test arithmetic on small counts; the checker reads best as one function"
)]

mod sim;

use std::collections::{BTreeMap, VecDeque};

use batch_core::{
    Batcher, Completion, Config, Duration, FlushToken, Instant, Outcome, Overflow, PushError, Trigger,
};
use proptest::prelude::*;
use sim::{Cut, Scheduled, Settled, Sim};

/// The in-flight table of every batcher under test; `max_in_flight` is 1..=3.
const F: usize = 3;

fn cases() -> u32 {
    std::env::var("BATCH_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

// -------------------------------------------------------------------------------------------
// Inputs
// -------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Params {
    cap: usize,
    max_batch: usize,
    max_in_flight: usize,
    max_attempts: u32,
    linger_ms: u64,
    max_weight: Option<u32>,
    drop_oldest: bool,
    base_ms: u64,
    max_delay_ms: u64,
    /// `(permille, seed)`.
    jitter: Option<(u16, u32)>,
}

impl Params {
    fn config(&self) -> Config {
        let mut c = Config::new()
            .max_batch(self.max_batch)
            .linger(Duration::from_millis(self.linger_ms))
            .max_in_flight(self.max_in_flight)
            .max_attempts(self.max_attempts)
            .retry_delays(Duration::from_millis(self.base_ms), Duration::from_millis(self.max_delay_ms))
            .overflow(if self.drop_oldest { Overflow::DropOldest } else { Overflow::Reject });
        if let Some((permille, seed)) = self.jitter {
            c = c.jitter(permille, seed);
        }
        if let Some(w) = self.max_weight {
            c = c.max_weight(w);
        }
        c
    }

    /// The retry delay after failed attempt `k`, before jitter, computed independently of the
    /// core: `min(base * 2^(k-1), max_delay)`.
    fn backoff_micros(&self, k: u32) -> u64 {
        let mut d = self.base_ms * 1000;
        for _ in 1..k {
            d = d.saturating_mul(2);
        }
        d.min(self.max_delay_ms * 1000)
    }
}

fn params() -> impl Strategy<Value = Params> {
    (1usize..=8).prop_flat_map(|cap| {
        (
            (Just(cap), 1..=cap, 1usize..=F, 1u32..=4, 0u64..=50),
            (
                proptest::option::of(5u32..=30),
                any::<bool>(),
                1u64..=50,
                1u64..=8,
                proptest::option::of((0u16..=1000, any::<u32>())),
            ),
        )
            .prop_map(
                |(
                    (cap, max_batch, max_in_flight, max_attempts, linger_ms),
                    (max_weight, drop_oldest, base_ms, factor, jitter),
                )| Params {
                    cap,
                    max_batch,
                    max_in_flight,
                    max_attempts,
                    linger_ms,
                    max_weight,
                    drop_oldest,
                    base_ms,
                    max_delay_ms: base_ms * factor,
                    jitter,
                },
            )
    })
}

#[derive(Clone, Debug)]
enum Op {
    /// A push with this weight. When the core says `must_wait`, an async producer would wait:
    /// the push is skipped unless `even_if_must_wait` (a `try_add`, which must be refused).
    Push {
        weight: u8,
        even_if_must_wait: bool,
    },
    PushUrgent {
        weight: u8,
    },
    Flush,
    /// Ends a running attempt (picked among the running ones) in success.
    CompleteOk(usize),
    /// Ends a running attempt in failure.
    CompleteErr(usize),
    /// Lets time pass: to the core's deadline exactly, or by `ms` but never past the deadline (a
    /// real driver never oversleeps `poll_timeout`).
    Advance {
        to_deadline: bool,
        ms: u64,
    },
    Pause,
    Resume,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0u8..=12, any::<bool>()).prop_map(|(weight, even_if_must_wait)| Op::Push {
            weight,
            even_if_must_wait
        }),
        3 => (0u8..=12).prop_map(|weight| Op::PushUrgent { weight }),
        3 => Just(Op::Flush),
        12 => any::<usize>().prop_map(Op::CompleteOk),
        8 => any::<usize>().prop_map(Op::CompleteErr),
        20 => (any::<bool>(), 0u64..=80).prop_map(|(to_deadline, ms)| Op::Advance { to_deadline, ms }),
        3 => Just(Op::Pause),
        4 => Just(Op::Resume),
        1 => Just(Op::Close),
    ]
}

/// Items carry a unique number and their weight: `number << 8 | weight`.
#[allow(clippy::trivially_copy_pass_by_ref, reason = "a weigher is `fn(&T) -> u32`")]
fn weigh(item: &u64) -> u32 {
    (item & 0xFF) as u32
}

// -------------------------------------------------------------------------------------------
// The reference model
// -------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Buffered,
    InFlight(u64),
    Delivered,
    DeadLettered,
    Evicted,
    /// Handed back by a deadline shutdown.
    Returned,
}

#[derive(Debug)]
struct MBatch {
    first: u64,
    items: Vec<u64>,
    attempt: u32,
    /// `Some(at)` while waiting to retry, with the deadline as the model computes it.
    backoff: Option<Instant>,
}

#[derive(Debug)]
struct Model {
    p: Params,
    /// `(acceptance index, item, arrival)`.
    buffer: VecDeque<(u64, u64, Instant)>,
    /// Arrival of each accepted item, by acceptance index.
    arrivals: Vec<Instant>,
    fate: Vec<Fate>,
    rejected: u64,
    /// Items with an acceptance index below this are due (manual flush or urgent push).
    mark: u64,
    mark_trigger: Trigger,
    closed: bool,
    paused_at: Option<Instant>,
    last_resume: Instant,
    last_slot_freed: Instant,
    batches: BTreeMap<u64, MBatch>,
    next_seq: u64,
    delivered: u64,
    dead_lettered: u64,
    evicted: u64,
    returned: u64,
    retries: u64,
    failed_attempts: u64,
    batches_delivered: u64,
    batches_dead_lettered: u64,
    flushes: BTreeMap<&'static str, u64>,
    tokens: Vec<FlushToken>,
    // How far the simulator's records have been checked.
    seen_cuts: usize,
    seen_attempts: usize,
    seen_delivered: usize,
    seen_dead: usize,
    seen_retries: usize,
}

impl Model {
    fn new(p: Params) -> Self {
        Self {
            p,
            buffer: VecDeque::new(),
            arrivals: Vec::new(),
            fate: Vec::new(),
            rejected: 0,
            mark: 0,
            mark_trigger: Trigger::Manual,
            closed: false,
            paused_at: None,
            last_resume: Instant::ZERO,
            last_slot_freed: Instant::ZERO,
            batches: BTreeMap::new(),
            next_seq: 0,
            delivered: 0,
            dead_lettered: 0,
            evicted: 0,
            returned: 0,
            retries: 0,
            failed_attempts: 0,
            batches_delivered: 0,
            batches_dead_lettered: 0,
            flushes: BTreeMap::new(),
            tokens: Vec::new(),
            seen_cuts: 0,
            seen_attempts: 0,
            seen_delivered: 0,
            seen_dead: 0,
            seen_retries: 0,
        }
    }

    fn weighted(&self) -> bool {
        self.p.max_weight.is_some()
    }

    fn max_weight(&self) -> u64 {
        self.p.max_weight.map_or(u64::MAX, u64::from)
    }

    fn buffered_weight(&self) -> u64 {
        self.buffer.iter().map(|(_, it, _)| u64::from(weigh(it))).sum()
    }

    fn over_weight(&self) -> bool {
        self.weighted() && self.buffered_weight() > self.max_weight()
    }

    /// What the core must answer to a push of `item` now, applied to the model.
    fn push(&mut self, now: Instant, item: u64, urgent: bool) -> Result<Option<u64>, PushError<u64>> {
        if self.closed {
            self.rejected += 1;
            return Err(PushError::Closed(item));
        }
        if self.weighted() && u64::from(weigh(&item)) > self.max_weight() {
            self.rejected += 1;
            return Err(PushError::TooHeavy(item));
        }
        let mut evicted = None;
        if self.buffer.len() == self.p.cap {
            if !self.p.drop_oldest {
                self.rejected += 1;
                return Err(PushError::Full(item));
            }
            let (idx, old, _) = self.buffer.pop_front().expect("full");
            assert_eq!(self.fate[idx as usize], Fate::Buffered);
            self.fate[idx as usize] = Fate::Evicted;
            self.evicted += 1;
            evicted = Some(old);
        }
        let idx = self.arrivals.len() as u64;
        self.arrivals.push(now);
        self.fate.push(Fate::Buffered);
        self.buffer.push_back((idx, item, now));
        if urgent {
            self.mark = idx + 1;
            self.mark_trigger = Trigger::Urgent;
        }
        Ok(evicted)
    }

    /// The trigger the core must report for a batch cut from the current buffer, before the cut
    /// (Size may turn into Weight if the weight limit stops the batch early).
    fn expected_trigger(&self) -> Trigger {
        let front = self.buffer.front().expect("non-empty").0;
        if self.buffer.len() >= self.p.max_batch {
            Trigger::Size
        } else if self.over_weight() {
            Trigger::Weight
        } else if front < self.mark {
            self.mark_trigger
        } else if self.closed {
            Trigger::Close
        } else {
            Trigger::Linger
        }
    }

    /// Whether a batch is due now, by the contract (linger from the true oldest arrival).
    fn due(&self, now: Instant) -> bool {
        let Some(&(front, _, arrival)) = self.buffer.front() else {
            return false;
        };
        self.buffer.len() >= self.p.max_batch
            || self.over_weight()
            || front < self.mark
            || self.closed
            || now >= arrival + Duration::from_millis(self.p.linger_ms)
    }

    fn apply_cut(&mut self, cut: &Cut<u64>) {
        let f = cut.flush;
        assert!(self.paused_at.is_none(), "cut while paused: {cut:?}");
        assert!(self.batches.len() < self.p.max_in_flight, "cut with every slot busy: {cut:?}");
        assert_eq!(f.seq, self.next_seq, "sequence numbers are 0, 1, 2, ...");
        self.next_seq += 1;
        let &(front, _, oldest_arrival) = self.buffer.front().expect("cut from an empty buffer");
        assert_eq!(f.first_item, front, "a batch starts at the oldest buffered item");
        assert!(f.len >= 1 && f.len <= self.p.max_batch, "1..=max_batch items: {cut:?}");
        let mut trigger = self.expected_trigger();
        let mut items = Vec::with_capacity(f.len);
        let mut weight = 0u64;
        for _ in 0..f.len {
            let (idx, item, _) = self.buffer.pop_front().expect("enough buffered");
            assert_eq!(self.fate[idx as usize], Fate::Buffered);
            self.fate[idx as usize] = Fate::InFlight(f.seq);
            weight += u64::from(weigh(&item));
            items.push(item);
        }
        assert_eq!(cut.items, items, "a batch is the next items in acceptance order");
        assert!(weight <= self.max_weight(), "over the weight limit: {cut:?}");
        if let Some(&(_, next, _)) = self.buffer.front()
            && f.len < self.p.max_batch
        {
            assert!(
                self.weighted() && weight + u64::from(weigh(&next)) > self.max_weight(),
                "a batch smaller than max_batch left an item that fit: {cut:?}"
            );
            if trigger == Trigger::Size {
                trigger = Trigger::Weight;
            }
        }
        assert_eq!(f.trigger, trigger, "trigger for {cut:?}");
        assert!(f.oldest_age >= cut.at - oldest_arrival, "oldest_age is never less than the truth: {cut:?}");
        // No item waits longer than linger, except for a free flush slot (or a resume).
        let linger_due = oldest_arrival + Duration::from_millis(self.p.linger_ms);
        let bound = linger_due.max(self.last_slot_freed).max(self.last_resume);
        assert!(
            cut.at <= bound,
            "batch cut at {} though due at {linger_due} (slot freed {}, resumed {})",
            cut.at,
            self.last_slot_freed,
            self.last_resume
        );
        *self.flushes.entry(f.trigger.name()).or_default() += 1;
        self.batches.insert(f.seq, MBatch { first: f.first_item, items, attempt: 1, backoff: None });
    }

    fn apply_retry_start(&mut self, at: Instant, seq: u64, attempt: u32, items: &[u64]) {
        assert!(self.paused_at.is_none(), "retry started while paused");
        let b = self.batches.get_mut(&seq).expect("retry of a batch in flight");
        assert_eq!(b.items, items, "a retry hands the handler the same items");
        assert_eq!(attempt, b.attempt + 1);
        let due = b.backoff.take().expect("retry of a batch waiting to retry");
        assert_eq!(at, due, "retry of {seq} started at {at}, due at {due}");
        b.attempt = attempt;
        self.retries += 1;
    }

    fn apply_retry_scheduled(&mut self, now: Instant, r: Scheduled) {
        let b = self.batches.get_mut(&r.seq).expect("batch in flight");
        assert_eq!(b.attempt, r.failed_attempt);
        assert!(b.backoff.is_none(), "it was running");
        assert!(r.failed_attempt < self.p.max_attempts, "retry after the last attempt");
        self.failed_attempts += 1;
        // While paused the clock counts from the pause.
        let from = self.paused_at.unwrap_or(now);
        let delay = (r.at - from).as_micros();
        let d = self.p.backoff_micros(r.failed_attempt);
        match self.p.jitter {
            Some((permille, _)) if permille > 0 => {
                assert!(delay <= d, "jitter only shortens: {delay} > {d}");
                assert!(
                    u128::from(delay) * 1000 >= u128::from(d) * u128::from(1000 - permille),
                    "delay {delay} shorter than {d} minus {permille} permille"
                );
            }
            _ => assert_eq!(delay, d, "retry delay after attempt {}", r.failed_attempt),
        }
        b.backoff = Some(r.at);
    }

    fn apply_settled(&mut self, s: &Settled<u64>, delivered: bool) {
        let b = self.batches.remove(&s.seq).expect("settled batch was in flight");
        assert!(b.backoff.is_none(), "only a running attempt ends");
        assert_eq!(b.items, s.items, "the exact items come back");
        assert_eq!(b.attempt, s.attempts);
        let fate = if delivered {
            self.delivered += b.items.len() as u64;
            self.batches_delivered += 1;
            Fate::Delivered
        } else {
            assert_eq!(s.attempts, self.p.max_attempts, "dead letter after max_attempts");
            self.failed_attempts += 1;
            self.dead_lettered += b.items.len() as u64;
            self.batches_dead_lettered += 1;
            Fate::DeadLettered
        };
        for i in 0..b.items.len() as u64 {
            let idx = (b.first + i) as usize;
            assert_eq!(self.fate[idx], Fate::InFlight(s.seq), "settled exactly once");
            self.fate[idx] = fate;
        }
        self.last_slot_freed = s.at;
    }
}

/// Runs one case with buffer capacity `N`, then either drains it (close, complete everything)
/// or shuts it down at a deadline (`abandon_all`: everything left is handed back).
fn run<const N: usize>(p: &Params, ops: &[Op], deadline_shutdown: bool) {
    assert_eq!(N, p.cap);
    let config = p.config();
    let core: Batcher<u64, N, F> = if p.max_weight.is_some() {
        Batcher::try_new_weighted(config, weigh)
    } else {
        Batcher::try_new(config)
    }
    .expect("generated configs are valid");
    let mut sim = Sim::manual(core);
    let mut m = Model::new(p.clone());
    let mut counter: u64 = 0;
    for op in ops {
        apply(&mut sim, &mut m, &mut counter, op);
        check(&sim, &mut m);
    }
    if deadline_shutdown {
        apply(&mut sim, &mut m, &mut counter, &Op::Close);
        check(&sim, &mut m);
        let mut expected: Vec<u64> = Vec::new();
        for b in std::mem::take(&mut m.batches).into_values() {
            for i in 0..b.items.len() as u64 {
                m.fate[(b.first + i) as usize] = Fate::Returned;
            }
            expected.extend(b.items);
        }
        for (idx, item, _) in std::mem::take(&mut m.buffer) {
            m.fate[idx as usize] = Fate::Returned;
            expected.push(item);
        }
        m.returned = expected.len() as u64;
        assert_eq!(sim.abandon_all(), expected.len());
        assert_eq!(sim.returned, expected, "everything left is handed back, in order");
        check(&sim, &mut m);
        assert!(sim.core.is_finished());
    } else {
        // Drain: everything accepted reaches a final outcome.
        if m.paused_at.is_some() {
            apply(&mut sim, &mut m, &mut counter, &Op::Resume);
            check(&sim, &mut m);
        }
        apply(&mut sim, &mut m, &mut counter, &Op::Close);
        check(&sim, &mut m);
        let mut guard: usize = 0;
        while !sim.core.is_finished() {
            guard += 1;
            assert!(guard < 10_000, "drain does not finish");
            let op = if sim.running_seqs().is_empty() {
                assert!(
                    sim.core.poll_timeout().is_some(),
                    "closed, not finished, nothing running and no deadline: stuck"
                );
                Op::Advance { to_deadline: true, ms: 0 }
            } else if guard.is_multiple_of(3) {
                Op::CompleteErr(guard)
            } else {
                Op::CompleteOk(guard)
            };
            apply(&mut sim, &mut m, &mut counter, &op);
            check(&sim, &mut m);
        }
    }
    assert!(m.buffer.is_empty() && m.batches.is_empty());
    assert!(
        m.fate.iter().all(|f| !matches!(f, Fate::Buffered | Fate::InFlight(_))),
        "every accepted item reached a final outcome"
    );
    for &t in &m.tokens {
        assert!(sim.core.is_flushed(t));
    }
}

fn apply<const N: usize>(sim: &mut Sim<u64, N, F>, m: &mut Model, counter: &mut u64, op: &Op) {
    let now = sim.now;
    match *op {
        Op::Push { weight, even_if_must_wait } => {
            if sim.core.must_wait() && !even_if_must_wait {
                return;
            }
            *counter += 1;
            let item = *counter << 8 | u64::from(weight);
            let expected = m.push(now, item, false);
            assert_eq!(sim.push(item), expected, "push of {item:#x}");
        }
        Op::PushUrgent { weight } => {
            *counter += 1;
            let item = *counter << 8 | u64::from(weight);
            let expected = m.push(now, item, true);
            assert_eq!(sim.push_urgent(item), expected, "urgent push of {item:#x}");
        }
        Op::Flush => {
            m.mark = m.arrivals.len() as u64;
            m.mark_trigger = Trigger::Manual;
            let token = sim.flush();
            assert_eq!(token.items_before(), m.arrivals.len() as u64);
            m.tokens.push(token);
        }
        Op::CompleteOk(i) | Op::CompleteErr(i) => {
            let running = sim.running_seqs();
            if running.is_empty() {
                return;
            }
            let seq = running[i % running.len()];
            let outcome = if matches!(op, Op::CompleteOk(_)) { Outcome::Delivered } else { Outcome::Failed };
            let c = sim.complete(seq, outcome);
            let attempt = m.batches[&seq].attempt;
            match c {
                Completion::Delivered { .. } => assert_eq!(outcome, Outcome::Delivered),
                Completion::Retry { attempt: next, .. } => {
                    assert_eq!(outcome, Outcome::Failed);
                    assert!(attempt < m.p.max_attempts);
                    assert_eq!(next, attempt + 1);
                }
                Completion::DeadLettered { attempts, .. } => {
                    assert_eq!(outcome, Outcome::Failed);
                    assert_eq!(attempts, m.p.max_attempts);
                }
                Completion::Expired { .. } => panic!("this model sets no max_age (see tests/store.rs)"),
            }
        }
        Op::Advance { to_deadline, ms } => {
            let target = match sim.core.poll_timeout() {
                Some(t) if to_deadline => t,
                Some(t) => now + Duration::from_millis(ms).min(t - now),
                None => now + Duration::from_millis(ms),
            };
            sim.run_until(target);
            assert_eq!(sim.now, target);
        }
        Op::Pause => {
            if m.paused_at.is_none() {
                m.paused_at = Some(now);
            }
            sim.pause();
        }
        Op::Resume => {
            if let Some(since) = m.paused_at.take() {
                let paused_for = now - since;
                for b in m.batches.values_mut() {
                    if let Some(at) = b.backoff.as_mut() {
                        *at += paused_for;
                    }
                }
                m.last_resume = now;
            }
            sim.resume();
        }
        Op::Close => {
            m.closed = true;
            sim.close();
        }
    }
}

/// Brings the model up to date with what the simulator recorded, then checks every invariant.
fn check<const N: usize>(sim: &Sim<u64, N, F>, m: &mut Model) {
    let now = sim.now;
    // Completions (at most one per operation), then attempt starts in the order they happened.
    while m.seen_retries < sim.retries.len() {
        let r = sim.retries[m.seen_retries];
        m.seen_retries += 1;
        m.apply_retry_scheduled(now, r);
    }
    while m.seen_delivered < sim.delivered.len() {
        let s = &sim.delivered[m.seen_delivered];
        m.seen_delivered += 1;
        m.apply_settled(s, true);
    }
    while m.seen_dead < sim.dead_letters.len() {
        let s = &sim.dead_letters[m.seen_dead];
        m.seen_dead += 1;
        m.apply_settled(s, false);
    }
    while m.seen_attempts < sim.attempts.len() {
        let a = &sim.attempts[m.seen_attempts];
        m.seen_attempts += 1;
        assert_eq!(a.at, now, "attempts start when the driver steps");
        if a.attempt == 1 {
            let cut = &sim.cuts[m.seen_cuts];
            m.seen_cuts += 1;
            assert_eq!(cut.flush.seq, a.seq);
            m.apply_cut(cut);
        } else {
            m.apply_retry_start(a.at, a.seq, a.attempt, &a.items);
        }
    }
    assert_eq!(m.seen_cuts, sim.cuts.len());
    assert!(sim.evicted.len() as u64 == m.evicted);

    // Counters match the model and add up.
    let c = sim.core.metrics();
    assert!(c.is_consistent(), "{c:?}");
    let in_flight_items: u64 = m.batches.values().map(|b| b.items.len() as u64).sum();
    assert_eq!(c.accepted, m.arrivals.len() as u64);
    assert_eq!(c.rejected, m.rejected);
    assert_eq!(c.delivered, m.delivered);
    assert_eq!(c.dead_lettered, m.dead_lettered);
    assert_eq!(c.evicted, m.evicted);
    assert_eq!(c.returned, m.returned);
    assert_eq!(c.buffered, m.buffer.len() as u64);
    assert_eq!(c.in_flight, in_flight_items);
    assert_eq!(c.retries, m.retries);
    assert_eq!(c.failed_attempts, m.failed_attempts);
    assert_eq!(c.batches_delivered, m.batches_delivered);
    assert_eq!(c.batches_dead_lettered, m.batches_dead_lettered);
    assert_eq!(c.batches_in_flight, m.batches.len() as u64);
    for t in Trigger::ALL {
        assert_eq!(
            c.flushes.get(t),
            m.flushes.get(t.name()).copied().unwrap_or(0),
            "flushes by {}",
            t.name()
        );
    }
    let mut fates = [0u64; 6];
    for f in &m.fate {
        fates[match f {
            Fate::Buffered => 0,
            Fate::InFlight(_) => 1,
            Fate::Delivered => 2,
            Fate::DeadLettered => 3,
            Fate::Evicted => 4,
            Fate::Returned => 5,
        }] += 1;
    }
    assert_eq!(
        fates,
        [c.buffered, c.in_flight, c.delivered, c.dead_lettered, c.evicted, c.returned],
        "every accepted item is in exactly one place"
    );

    // The driver holds exactly the in-flight items, batch by batch in sequence order.
    let held: Vec<u64> = m.batches.values().flat_map(|b| b.items.iter().copied()).collect();
    assert_eq!(sim.in_flight_items(), held);
    assert_eq!(sim.in_flight_seqs(), m.batches.keys().copied().collect::<Vec<_>>());

    // Buffer and flight bounds.
    assert!(sim.core.len() <= m.p.cap);
    assert!(m.batches.len() <= m.p.max_in_flight);
    if m.p.max_in_flight == 1 {
        assert!(m.batches.len() <= 1, "never two batches in flight");
    }
    assert_eq!(sim.core.is_paused(), m.paused_at.is_some());
    assert_eq!(sim.core.must_wait(), !m.closed && m.buffer.len() == m.p.cap && !m.p.drop_oldest);
    assert_eq!(sim.core.is_finished(), m.closed && m.buffer.is_empty() && m.batches.is_empty());

    // Liveness: with a free slot and not paused, nothing due is left waiting after a step.
    if m.paused_at.is_none() && m.batches.len() < m.p.max_in_flight {
        assert!(
            !m.due(now),
            "a batch is due at {now} with a free slot, but was not cut (buffer {:?})",
            m.buffer
        );
    }
    // Retries: no deadline has passed unstarted while running.
    if m.paused_at.is_none() {
        for (seq, b) in &m.batches {
            if let Some(at) = b.backoff {
                assert!(at > now, "retry of {seq} due at {at} not started at {now}");
                assert_eq!(sim.core.retry_at(*seq), Some(at), "retry deadline of {seq}");
            }
        }
    }

    // Flush tokens resolve exactly when every item before them is final.
    for &t in &m.tokens {
        let all_final = m.fate[..t.items_before() as usize]
            .iter()
            .all(|f| !matches!(f, Fate::Buffered | Fate::InFlight(_)));
        assert_eq!(sim.core.is_flushed(t), all_final, "token {t:?}");
    }
}

fn run_case(p: &Params, ops: &[Op], deadline_shutdown: bool) {
    let d = deadline_shutdown;
    match p.cap {
        1 => run::<1>(p, ops, d),
        2 => run::<2>(p, ops, d),
        3 => run::<3>(p, ops, d),
        4 => run::<4>(p, ops, d),
        5 => run::<5>(p, ops, d),
        6 => run::<6>(p, ops, d),
        7 => run::<7>(p, ops, d),
        8 => run::<8>(p, ops, d),
        _ => unreachable!("capacity 1..=8"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn core_agrees_with_the_model(
        p in params(),
        ops in proptest::collection::vec(op(), 0..60),
        deadline_shutdown in proptest::bool::weighted(0.25),
    ) {
        run_case(&p, &ops, deadline_shutdown);
    }
}
