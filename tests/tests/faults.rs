//! Seeded fault injection: "prove it loses nothing".
//!
//! Each schedule (a seed) picks a random configuration (capacity, `max_batch`, linger,
//! `max_in_flight` 1-4, `max_attempts` 1-4, retry delays with or without jitter, `Reject` or
//! `DropOldest`, an optional `attempt_timeout`, a trait or closure handler) and a behaviour for
//! every handler attempt, decided by `(seed, batch seq, attempt)`: succeed, fail, panic, hang,
//! answer slowly (and fail), or write to the sink and then hang or acknowledge slowly (the
//! acknowledgement a timeout can cut off). Two to six producers push at full speed with `add`,
//! `try_add`, `add_many`, `add_urgent` and cancelled adds, flush, and drop their handles midway;
//! the controller flushes, pauses and resumes, and ends the run with `shutdown`, a
//! `shutdown_timeout` (often expiring while batches retry), `close` then a deadline, two
//! shutdowns at once, or by dropping every handle and awaiting the worker.
//!
//! # What every run checks
//!
//! Items are `(producer, n)`. Each item a producer hands to the batcher ends exactly once as:
//! **delivered** (an attempt returned `Ok`; the sink marks it acknowledged in the same poll in
//! which it returns), **dead-lettered** (`on_error`, items taken by value), **rejected** (the
//! add failed and handed this very item back), **evicted** (`on_evict`), **returned** (the
//! shutdown report's remainder), or **withdrawn** (an `add` future the producer cancelled while
//! it waited for room; the contract says that drops the item, so it must appear nowhere else).
//!
//! The sink records per attempt. An attempt that wrote to the sink and was then cut short (its
//! `attempt_timeout` fired, or a shutdown deadline aborted it) leaves an unacknowledged write:
//! those items are **at least once** (they may also be delivered by a later attempt, dead-lettered
//! or returned). So the check is: acknowledged writes are exactly once (the outcome above);
//! unacknowledged writes are allowed only for attempts cut short, and only when the run had an
//! `attempt_timeout` or a shutdown deadline expired. The counts of such items are reported.
//!
//! Also: per-producer order (`max_in_flight` 1: final outcomes in event order, then the
//! remainder, strictly increasing; more: batches by seq, each batch in order); retries carry the
//! same items with attempts numbered 1, 2, ... and never start before their backoff (paused time);
//! no more than `max_in_flight` attempts run at once; dead letters carry `max_attempts` attempts
//! and the last attempt's error; `flush` returns only once every item its caller had accepted is
//! final (or, after a deadline shutdown, returned); `metrics().is_consistent()` after every
//! producer step, and the final metrics equal the observed counts.
//!
//! # Running
//!
//! - Default: 2,000 paused-time schedules (deterministic, virtual time) and 150 multi-thread ones
//!   (two workers, real time, no timing in the behaviour: linger an hour, zero retry delays,
//!   zero shutdown deadlines).
//! - `BATCH_FAULT_SCHEDULES=1000000` (and `BATCH_FAULT_MT_SCHEDULES`) for a long run;
//!   `BATCH_FAULT_SEED_START=n` to explore other seeds.
//! - A failure prints `BATCH_FAULT_SEED=<seed>`; set it to replay that one schedule (the
//!   paused-time runs replay exactly, see `schedules_replay_identically`).
//! - `--nocapture` shows the totals: items pushed, faults injected by kind, outcomes.
#![allow(
    missing_docs,
    clippy::too_many_lines,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::struct_excessive_bools,
    clippy::fn_params_excessive_bools,
    clippy::items_after_statements,
    clippy::many_single_char_names,
    clippy::duration_suboptimal_units,
    clippy::single_match_else,
    clippy::match_wild_err_arm
)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

use batch_tests::{XorShift, ms};
use batch_tokio::handler::{self, Batch, BatchError, DeadLetter, Handler};
use batch_tokio::{Batcher, Metrics, Overflow, PushError, ShutdownReport};
use tokio::task::JoinHandle;
use tokio::time::Instant;

type Item = (u32, u32);

const DEFAULT_SCHEDULES: u64 = 2_000;
const DEFAULT_MT_SCHEDULES: u64 = 150;
/// Virtual time after which a paused-time schedule counts as deadlocked.
const VIRTUAL_LIMIT: Duration = Duration::from_secs(10 * 3600);
/// Real time after which a multi-thread schedule counts as deadlocked (a failure detector).
const REAL_LIMIT: Duration = Duration::from_secs(60);
/// Wall-clock time without a finished schedule after which the suite aborts (a livelock
/// detector for paused-time runs, whose virtual clock stands still while tasks keep running).
const WATCHDOG: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    Some(v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// Silences the panics the handler injects (thousands per run); any other panic still prints.
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.starts_with(INJECTED_PANIC) {
                previous(info);
            }
        }));
    });
}

const INJECTED_PANIC: &str = "injected panic";

// ------------------------------------------------------------------------------------------------
// The plan: everything a seed decides
// ------------------------------------------------------------------------------------------------

/// What one handler attempt does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Act {
    /// Write to the sink and acknowledge at once.
    Ok,
    /// Return an error at once.
    Fail,
    /// Panic.
    Panic,
    /// Never answer, before writing anything.
    Hang,
    /// Wait, then write and acknowledge.
    Slow(Duration),
    /// Wait, then return an error.
    SlowFail(Duration),
    /// Write to the sink, then never acknowledge.
    WriteThenHang,
    /// Write to the sink, wait, then acknowledge.
    WriteThenSlowAck(Duration),
}

impl Act {
    const KINDS: [&'static str; 8] =
        ["ok", "fail", "panic", "hang", "slow", "slow_fail", "write_then_hang", "write_then_slow_ack"];

    fn kind(self) -> usize {
        match self {
            Act::Ok => 0,
            Act::Fail => 1,
            Act::Panic => 2,
            Act::Hang => 3,
            Act::Slow(_) => 4,
            Act::SlowFail(_) => 5,
            Act::WriteThenHang => 6,
            Act::WriteThenSlowAck(_) => 7,
        }
    }
}

/// How the controller ends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `shutdown().await`: drain everything.
    Shutdown,
    /// `shutdown_timeout(d)`.
    Deadline(Duration),
    /// `close()`, a gap (virtual time, or yields on the multi-thread runtime), `shutdown_timeout`.
    CloseThenDeadline(Duration, Duration),
    /// Two tasks shut down at once; `None` is a plain `shutdown`.
    Twice(Option<Duration>, Option<Duration>),
    /// Drop every handle (producers drop theirs when done) and await the worker's `JoinHandle`.
    DropAll,
}

impl End {
    fn has_deadline(self) -> bool {
        match self {
            End::Shutdown | End::DropAll => false,
            End::Deadline(_) | End::CloseThenDeadline(..) => true,
            End::Twice(a, b) => a.is_some() || b.is_some(),
        }
    }
}

/// A producer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    TryAdd,
    Urgent,
    Many,
    /// `add` under a timeout: if it is still waiting for room then, the item is withdrawn.
    CancelAdd,
    Flush,
    Yield,
    Sleep,
}

const OPS: [Op; 8] =
    [Op::Add, Op::TryAdd, Op::Urgent, Op::Many, Op::CancelAdd, Op::Flush, Op::Yield, Op::Sleep];

#[derive(Debug, Clone)]
struct ProducerPlan {
    quota: u32,
    /// Relative weights of [`OPS`].
    weights: [u32; 8],
    /// Drop the handle (stop producing) after this many items.
    drop_at: Option<u32>,
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Flush,
    Pause,
    Resume,
}

#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    virtual_time: bool,
    capacity: usize,
    max_batch: usize,
    linger: Duration,
    max_in_flight: usize,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    jitter: Option<(u16, u32)>,
    overflow: Overflow,
    attempt_timeout: Option<Duration>,
    /// `true`: `handler::from_fn` closure; `false`: a type implementing `Handler`.
    closure_handler: bool,
    /// `true`: `Builder::build` and spawn the worker ourselves (its `JoinHandle` is awaited).
    build: bool,
    /// Cumulative permille thresholds for [`Act`] kinds 1..=7 (the rest is `Ok`).
    faults: [u32; 7],
    slow_max_us: u64,
    producers: Vec<ProducerPlan>,
    /// Controller events: at a virtual time (µs), or after a number of yields (multi-thread).
    events: Vec<(u64, Event)>,
    /// When the end action starts (µs or yields), unless `end_after_producers`.
    end_at: u64,
    end_after_producers: bool,
    end: End,
}

fn pick<T: Copy>(r: &mut XorShift, xs: &[T]) -> T {
    xs[r.below(xs.len() as u64) as usize]
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl Plan {
    fn new(seed: u64, virtual_time: bool) -> Self {
        let mut r = XorShift::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        let capacity = pick(&mut r, &[1, 2, 3, 4, 5, 8, 13, 16, 32, 64, 100]);
        let max_batch = 1 + r.below(capacity as u64) as usize;
        let max_in_flight = 1 + r.below(4) as usize;
        let max_attempts = 1 + r.below(4) as u32;
        let overflow = if r.below(4) == 0 { Overflow::DropOldest } else { Overflow::Reject };
        let closure_handler = r.below(2) == 0;
        let (linger, base_delay, max_delay, jitter, attempt_timeout) = if virtual_time {
            let linger =
                pick(&mut r, &[Duration::ZERO, ms(1), Duration::from_micros(1_500), ms(10), ms(100), HOUR]);
            let base = pick(&mut r, &[Duration::ZERO, ms(1), Duration::from_micros(2_500), ms(10), ms(100)]);
            let max = if base.is_zero() {
                pick(&mut r, &[Duration::ZERO, ms(5)])
            } else {
                base * (1 + r.below(8) as u32)
            };
            let jitter = (r.below(3) == 0).then(|| (r.below(1_001) as u16, r.next_u64() as u32));
            let timeout = (r.below(2) == 0).then(|| Duration::from_micros(500 + r.below(50_000)));
            (linger, base, max, jitter, timeout)
        } else {
            (HOUR, Duration::ZERO, Duration::ZERO, None, None)
        };

        // Fault profile: a fifth of the schedules inject nothing.
        let mut weights = [0u32; 7];
        if r.below(5) != 0 {
            weights[0] = r.below(400) as u32; // fail
            weights[1] = r.below(150) as u32; // panic
            weights[2] = if r.below(3) == 0 { r.below(100) as u32 } else { 0 }; // hang
            if virtual_time {
                weights[3] = r.below(200) as u32; // slow
                weights[4] = r.below(100) as u32; // slow fail
            }
            weights[5] = if r.below(3) == 0 { r.below(80) as u32 } else { 0 }; // write then hang
            if virtual_time {
                weights[6] = r.below(150) as u32; // write then slow ack
            }
        }
        let total: u32 = weights.iter().sum();
        if total > 900 {
            for w in &mut weights {
                *w = *w * 900 / total;
            }
        }
        let mut faults = [0u32; 7];
        let mut acc = 0;
        for (f, w) in faults.iter_mut().zip(weights) {
            acc += w;
            *f = acc;
        }
        let slow_max_us = pick(&mut r, &[100, 2_000, 20_000, 200_000]);
        let can_hang = (weights[2] > 0 || weights[5] > 0) && attempt_timeout.is_none();

        let scale = pick(&mut r, &[0u64, 5, 30, 150, 400]);
        let producers = (0..2 + r.below(5))
            .map(|_| {
                let quota = r.below(scale + 1) as u32;
                let mut weights = [0u32; 8];
                for w in &mut weights {
                    *w = if r.below(3) == 0 { 0 } else { r.below(100) as u32 };
                }
                weights[5] = if r.below(2) == 0 { 0 } else { r.below(5) as u32 }; // flush: rare
                if !virtual_time {
                    weights[7] = 0; // no sleeps on the multi-thread runtime
                }
                if weights[..5].iter().sum::<u32>() == 0 {
                    // At least one step that makes an item, or the producer never ends.
                    weights[r.below(5) as usize] = 1 + r.below(100) as u32;
                }
                let drop_at = (r.below(4) == 0).then(|| r.below(u64::from(quota) + 1) as u32);
                ProducerPlan { quota, weights, drop_at, seed: r.next_u64() }
            })
            .collect();

        // The controller: flushes, pause/resume pairs, then the end.
        let span: u64 = if virtual_time {
            pick(&mut r, &[0, 1_000, 20_000, 300_000])
        } else {
            pick(&mut r, &[0, 10, 200, 2_000])
        };
        let mut events = Vec::new();
        for _ in 0..r.below(4) {
            events.push((r.below(span + 1), Event::Flush));
        }
        for _ in 0..r.below(3) {
            let at = r.below(span + 1);
            events.push((at, Event::Pause));
            events.push((at + r.below(span / 4 + 1), Event::Resume));
        }
        let end_after_producers = !can_hang && r.below(2) == 0;
        let deadline = |r: &mut XorShift| {
            if virtual_time {
                pick(r, &[Duration::ZERO, ms(1), ms(10), ms(100), ms(1_000), ms(10_000)])
            } else {
                Duration::ZERO
            }
        };
        let mut end = match r.below(10) {
            0..=2 => End::Shutdown,
            3..=4 => End::Deadline(deadline(&mut r)),
            5 => {
                let gap = if virtual_time {
                    Duration::from_micros(r.below(span + 1))
                } else {
                    Duration::from_nanos(r.below(200))
                };
                End::CloseThenDeadline(gap, deadline(&mut r))
            }
            6..=7 => {
                let a = (r.below(2) == 0).then(|| deadline(&mut r));
                let b = (r.below(2) == 0).then(|| deadline(&mut r));
                End::Twice(a, b)
            }
            _ => End::DropAll,
        };
        if can_hang && !end.has_deadline() {
            // An attempt may hang forever: only a shutdown deadline can end the run.
            end = End::Deadline(deadline(&mut r));
        }
        let build = end == End::DropAll || r.below(2) == 0;
        // A trailing pause (never resumed) only before an end with a deadline.
        if end.has_deadline() && !end_after_producers && r.below(5) == 0 {
            events.push((r.below(span + 1), Event::Pause));
        }
        events.sort_by_key(|(at, _)| *at);
        let end_at = events.last().map_or(0, |(at, _)| *at).max(r.below(span + 1));
        Plan {
            seed,
            virtual_time,
            capacity,
            max_batch,
            linger,
            max_in_flight,
            max_attempts,
            base_delay,
            max_delay,
            jitter,
            overflow,
            attempt_timeout,
            closure_handler,
            build,
            faults,
            slow_max_us,
            producers,
            events,
            end_at,
            end_after_producers,
            end,
        }
    }

    /// The behaviour of attempt `attempt` of batch `seq`: a pure function of the seed, so it does
    /// not depend on which task asks first.
    fn act(&self, seq: u64, attempt: u32) -> Act {
        let h = XorShift::mix(&[self.seed, seq, u64::from(attempt), 0xFA17]);
        let roll = (h % 1000) as u32;
        let d = Duration::from_micros(1 + (h >> 20) % self.slow_max_us);
        match self.faults.iter().position(|&t| roll < t) {
            Some(0) => Act::Fail,
            Some(1) => Act::Panic,
            Some(2) => Act::Hang,
            Some(3) => Act::Slow(d),
            Some(4) => Act::SlowFail(d),
            Some(5) => Act::WriteThenHang,
            Some(6) => Act::WriteThenSlowAck(d),
            _ => Act::Ok,
        }
    }

    /// The shortest retry delay after failed attempt `k` (jitter shortens it).
    fn min_backoff(&self, k: u32) -> Duration {
        let shift = k.saturating_sub(1).min(63);
        let base = us(self.base_delay);
        let scaled = if base.leading_zeros() < shift { u64::MAX } else { base << shift };
        let delay = scaled.min(us(self.max_delay));
        let permille = self.jitter.map_or(0, |(p, _)| u64::from(p));
        Duration::from_micros((delay - delay * permille / 1000).saturating_sub(u64::from(permille > 0)))
    }
}

// ------------------------------------------------------------------------------------------------
// The sink and the record of everything observed
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptEnd {
    Acked,
    Failed,
    Panicked,
    /// Dropped before it finished: its `attempt_timeout` fired, or a shutdown deadline aborted it.
    Cut,
}

#[derive(Debug, Clone)]
struct AttemptRec {
    seq: u64,
    attempt: u32,
    act: Act,
    items: Vec<Item>,
    start: Duration,
    end: Option<Duration>,
    wrote: bool,
    result: Option<AttemptEnd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinalKind {
    Delivered,
    DeadLettered,
}

#[derive(Debug, Clone)]
struct LetterRec {
    seq: u64,
    attempts: u32,
    items: Vec<Item>,
    cause: String,
    timed_out: Option<Duration>,
}

#[derive(Debug, Default)]
struct Rec {
    attempts: Vec<AttemptRec>,
    /// Batches reaching a final outcome (acknowledged or dead-lettered), in event order.
    finals: Vec<(u64, FinalKind, Vec<Item>)>,
    letters: Vec<LetterRec>,
    evicted: Vec<Item>,
    rejected: Vec<(Item, &'static str)>,
    withdrawn: Vec<Item>,
    /// Items known final (acknowledged, dead-lettered or evicted): for the flush check.
    settled: HashSet<Item>,
    /// Items a producer had accepted before a `flush` that returned while they were not final:
    /// they must be in the shutdown remainder.
    flush_claims: Vec<Item>,
    /// How many items each producer made: `(p, 0..n)`.
    produced: HashMap<u32, u32>,
    running: usize,
    max_running: usize,
    letter_kept: u64,
    flushes: u64,
    handles_dropped_early: u64,
    errors: Vec<String>,
}

struct Sink {
    plan: Plan,
    origin: Instant,
    rec: Mutex<Rec>,
}

impl Sink {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
    fn rec(&self) -> MutexGuard<'_, Rec> {
        lock(&self.rec)
    }
}

/// The error a scripted failure returns.
#[derive(Debug)]
struct Injected {
    seq: u64,
    attempt: u32,
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected failure: batch {} attempt {}", self.seq, self.attempt)
    }
}

impl std::error::Error for Injected {}

/// Marks the attempt cut when its future is dropped before it finished.
struct AttemptGuard<'a> {
    sink: &'a Sink,
    index: usize,
}

impl AttemptGuard<'_> {
    fn finish(&self, result: AttemptEnd) {
        let end = self.sink.now();
        let mut rec = self.sink.rec();
        let a = &mut rec.attempts[self.index];
        a.end = Some(end);
        a.result = Some(result);
        if result == AttemptEnd::Acked {
            let (seq, items) = (a.seq, a.items.clone());
            a.wrote = true;
            rec.settled.extend(items.iter().copied());
            rec.finals.push((seq, FinalKind::Delivered, items));
        }
    }
    fn write(&self) {
        self.sink.rec().attempts[self.index].wrote = true;
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        let end = self.sink.now();
        let mut rec = self.sink.rec();
        rec.running -= 1;
        let a = &mut rec.attempts[self.index];
        if a.result.is_none() {
            a.end = Some(end);
            a.result = Some(AttemptEnd::Cut);
        }
    }
}

/// One attempt: what the plan says for `(seq, attempt)`.
async fn attempt(sink: &Sink, seq: u64, attempt: u32, items: Vec<Item>) -> Result<(), Injected> {
    let act = sink.plan.act(seq, attempt);
    let index = {
        let start = sink.now();
        let mut rec = sink.rec();
        rec.running += 1;
        rec.max_running = rec.max_running.max(rec.running);
        rec.attempts.push(AttemptRec {
            seq,
            attempt,
            act,
            items,
            start,
            end: None,
            wrote: false,
            result: None,
        });
        rec.attempts.len() - 1
    };
    let guard = AttemptGuard { sink, index };
    match act {
        Act::Ok => {}
        Act::Fail => {
            guard.finish(AttemptEnd::Failed);
            return Err(Injected { seq, attempt });
        }
        Act::Panic => {
            guard.finish(AttemptEnd::Panicked);
            panic!("{INJECTED_PANIC}: batch {seq} attempt {attempt}");
        }
        Act::Hang => std::future::pending::<()>().await,
        Act::Slow(d) => tokio::time::sleep(d).await,
        Act::SlowFail(d) => {
            tokio::time::sleep(d).await;
            guard.finish(AttemptEnd::Failed);
            return Err(Injected { seq, attempt });
        }
        Act::WriteThenHang => {
            guard.write();
            std::future::pending::<()>().await;
        }
        Act::WriteThenSlowAck(d) => {
            guard.write();
            tokio::time::sleep(d).await;
        }
    }
    // Acknowledged in the same poll that returns `Ok`: nothing can cut it off after this.
    guard.finish(AttemptEnd::Acked);
    Ok(())
}

/// The sink as a type implementing [`Handler`].
struct TraitSink(Arc<Sink>);

impl Handler<Item> for TraitSink {
    type Error = Injected;
    async fn handle(&self, batch: &mut Batch<Item>) -> Result<(), Injected> {
        attempt(&self.0, batch.seq(), batch.attempt(), batch.to_vec()).await
    }
}

// ------------------------------------------------------------------------------------------------
// Producers and the controller
// ------------------------------------------------------------------------------------------------

fn reason<T>(e: &PushError<T>) -> &'static str {
    match e {
        PushError::Full(_) => "full",
        PushError::Closed(_) => "closed",
        PushError::TooHeavy(_) => "too_heavy",
    }
}

/// Records a refused item (checking it is the one handed in); `true` if the batcher is closed.
fn refused(sink: &Sink, sent: Item, e: PushError<Item>) -> bool {
    let closed = matches!(e, PushError::Closed(_));
    let why = reason(&e);
    let back = e.into_inner();
    let mut rec = sink.rec();
    if back != sent {
        rec.errors.push(format!("sent {sent:?}, got {back:?} back"));
    }
    rec.rejected.push((back, why));
    closed
}

fn check_metrics(sink: &Sink, b: &Batcher<Item>, when: &str) {
    let m = b.metrics();
    if !m.is_consistent() {
        sink.rec().errors.push(format!("inconsistent metrics {when}: {m:?}"));
    }
}

async fn producer(b: Batcher<Item>, p: u32, pp: ProducerPlan, sink: Arc<Sink>) {
    let virtual_time = sink.plan.virtual_time;
    let mut r = XorShift::new(pp.seed);
    let total: u32 = pp.weights.iter().sum();
    let mut n = 0u32;
    // Items accepted since this producer's last flush: the next flush must make them final.
    let mut accepted: Vec<Item> = Vec::new();
    let max_chunk = 3 * sink.plan.max_batch as u64 + 2;
    'run: while n < pp.quota {
        if pp.drop_at == Some(n) {
            sink.rec().handles_dropped_early += 1;
            break;
        }
        let mut roll = r.below(u64::from(total)) as u32;
        let op = OPS[pp
            .weights
            .iter()
            .position(|&w| {
                if roll < w {
                    true
                } else {
                    roll -= w;
                    false
                }
            })
            .unwrap_or(0)];
        match op {
            Op::Add | Op::Urgent | Op::TryAdd => {
                let item = (p, n);
                n += 1;
                let result = match op {
                    Op::Add => b.add(item).await,
                    Op::Urgent => b.add_urgent(item).await,
                    _ => b.try_add(item),
                };
                match result {
                    Ok(()) => accepted.push(item),
                    Err(e) => {
                        if refused(&sink, item, e) {
                            break 'run;
                        }
                    }
                }
            }
            Op::Many => {
                let k = (1 + r.below(max_chunk) as u32).min(pp.quota - n);
                let items: Vec<Item> = (n..n + k).map(|i| (p, i)).collect();
                n += k;
                match b.add_many(items.iter().copied()).await {
                    Ok(()) => accepted.extend_from_slice(&items),
                    Err(rejected) => {
                        let mut back: HashSet<Item> = HashSet::new();
                        let mut closed = false;
                        let mut last = None;
                        for e in rejected.items {
                            let item = *e.item();
                            if last.is_some_and(|l| l >= item) {
                                sink.rec().errors.push(format!("add_many refusals out of order at {item:?}"));
                            }
                            last = Some(item);
                            if !items.contains(&item) {
                                sink.rec().errors.push(format!("add_many handed back {item:?}, never sent"));
                            }
                            back.insert(item);
                            closed |= refused(&sink, item, e);
                        }
                        accepted.extend(items.iter().filter(|i| !back.contains(i)));
                        if closed {
                            break 'run;
                        }
                    }
                }
            }
            Op::CancelAdd => {
                let item = (p, n);
                n += 1;
                let limit = if virtual_time { Duration::from_micros(r.below(5_000)) } else { Duration::ZERO };
                match tokio::time::timeout(limit, b.add(item)).await {
                    Ok(Ok(())) => accepted.push(item),
                    Ok(Err(e)) => {
                        if refused(&sink, item, e) {
                            break 'run;
                        }
                    }
                    Err(_) => sink.rec().withdrawn.push(item),
                }
            }
            Op::Flush => {
                b.flush().await;
                let mut rec = sink.rec();
                rec.flushes += 1;
                let pending: Vec<Item> = accepted.drain(..).filter(|i| !rec.settled.contains(i)).collect();
                rec.flush_claims.extend(pending);
            }
            Op::Yield => tokio::task::yield_now().await,
            Op::Sleep => tokio::time::sleep(Duration::from_micros(r.below(3_000))).await,
        }
        check_metrics(&sink, &b, "after a producer step");
    }
    sink.rec().produced.insert(p, n);
}

/// Waits `at` µs of virtual time since the start, or yields `at` times (multi-thread).
async fn wait_until(virtual_time: bool, origin: Instant, at: u64, yielded: &mut u64) {
    if virtual_time {
        tokio::time::sleep_until(origin + Duration::from_micros(at)).await;
    } else {
        while *yielded < at {
            tokio::task::yield_now().await;
            *yielded += 1;
        }
    }
}

async fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        if let Err(e) = h.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// What a run observed, for the totals.
#[derive(Debug, Default, Clone)]
struct Totals {
    schedules: u64,
    produced: u64,
    delivered: u64,
    dead_lettered: u64,
    rejected_full: u64,
    rejected_closed: u64,
    evicted: u64,
    returned: u64,
    withdrawn: u64,
    acts: [u64; 8],
    cut_attempts: u64,
    retries: u64,
    at_least_once_dups: u64,
    written_not_delivered: u64,
    deadline_expired: u64,
    flushes: u64,
    handles_dropped_early: u64,
    ends: [u64; 5],
    lost: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.schedules += o.schedules;
        self.produced += o.produced;
        self.delivered += o.delivered;
        self.dead_lettered += o.dead_lettered;
        self.rejected_full += o.rejected_full;
        self.rejected_closed += o.rejected_closed;
        self.evicted += o.evicted;
        self.returned += o.returned;
        self.withdrawn += o.withdrawn;
        for (a, b) in self.acts.iter_mut().zip(o.acts) {
            *a += b;
        }
        self.cut_attempts += o.cut_attempts;
        self.retries += o.retries;
        self.at_least_once_dups += o.at_least_once_dups;
        self.written_not_delivered += o.written_not_delivered;
        self.deadline_expired += o.deadline_expired;
        self.flushes += o.flushes;
        self.handles_dropped_early += o.handles_dropped_early;
        for (a, b) in self.ends.iter_mut().zip(o.ends) {
            *a += b;
        }
        self.lost += o.lost;
    }

    fn print(&self, title: &str, elapsed: Duration) {
        let acts: Vec<String> = Act::KINDS.iter().zip(self.acts).map(|(k, n)| format!("{k} {n}")).collect();
        eprintln!(
            "{title}: {} schedules in {:.1?}\n  items pushed {}: delivered {}, dead-lettered {}, rejected {} (full {}, closed {}), evicted {}, returned by a deadline {}, withdrawn {}; lost {}\n  attempts by behaviour: {}\n  attempts cut short (timeout or deadline) {}, retries {}, deadlines expired {}\n  at least once: items in the sink more than once {}, items in the sink but not delivered {}\n  flushes by producers {}, handles dropped early {}, ends (shutdown, deadline, close+deadline, twice, drop all) {:?}",
            self.schedules,
            elapsed,
            self.produced,
            self.delivered,
            self.dead_lettered,
            self.rejected_full + self.rejected_closed,
            self.rejected_full,
            self.rejected_closed,
            self.evicted,
            self.returned,
            self.withdrawn,
            self.lost,
            acts.join(", "),
            self.cut_attempts,
            self.retries,
            self.deadline_expired,
            self.at_least_once_dups,
            self.written_not_delivered,
            self.flushes,
            self.handles_dropped_early,
            self.ends,
        );
    }
}

/// One schedule, start to finish, then every check. Returns the totals and a fingerprint of
/// everything observed (for the replay test).
async fn schedule(plan: Plan) -> (Totals, u64) {
    let sink = Arc::new(Sink { plan: plan.clone(), origin: Instant::now(), rec: Mutex::new(Rec::default()) });
    let on_error = {
        let sink = Arc::clone(&sink);
        move |error: BatchError, letter: DeadLetter<Item>| {
            let (seq, attempts) = (letter.seq(), letter.attempts());
            let timed_out = match &error {
                BatchError::TimedOut(d) => Some(*d),
                _ => None,
            };
            let cause = error.to_string();
            let mut rec = sink.rec();
            match letter.into_items() {
                Ok(items) => {
                    rec.settled.extend(items.iter().copied());
                    rec.finals.push((seq, FinalKind::DeadLettered, items.clone()));
                    rec.letters.push(LetterRec { seq, attempts, items, cause, timed_out });
                }
                Err(_) => rec.letter_kept += 1,
            }
        }
    };
    let on_evict = {
        let sink = Arc::clone(&sink);
        move |item: Item| {
            let mut rec = sink.rec();
            rec.settled.insert(item);
            rec.evicted.push(item);
        }
    };
    let mut builder = Batcher::builder()
        .capacity(plan.capacity)
        .max_batch(plan.max_batch)
        .linger(plan.linger)
        .max_in_flight(plan.max_in_flight)
        .max_attempts(plan.max_attempts)
        .retry_delays(plan.base_delay, plan.max_delay)
        .overflow(plan.overflow)
        .on_error(on_error)
        .on_evict(on_evict);
    if let Some((permille, seed)) = plan.jitter {
        builder = builder.jitter(permille, seed);
    }
    if let Some(t) = plan.attempt_timeout {
        builder = builder.attempt_timeout(t);
    }
    let built = if plan.closure_handler {
        let s = Arc::clone(&sink);
        builder.build(handler::from_fn(move |batch: Batch<Item>| {
            let s = Arc::clone(&s);
            async move {
                // The clone of the batch lives as long as the attempt, as closures' do.
                let r = attempt(&s, batch.seq(), batch.attempt(), batch.to_vec()).await;
                drop(batch);
                r
            }
        }))
    } else {
        builder.build(TraitSink(Arc::clone(&sink)))
    };
    let (b, worker) = built.expect("the plan only makes valid configurations");
    let worker: JoinHandle<()> = tokio::spawn(worker);
    let worker = plan.build.then_some(worker);

    let producers: Vec<JoinHandle<()>> = plan
        .producers
        .iter()
        .enumerate()
        .map(|(p, pp)| tokio::spawn(producer(b.clone(), p as u32, pp.clone(), Arc::clone(&sink))))
        .collect();

    // Controller events.
    let origin = Instant::now();
    let mut yielded = 0;
    let mut flushers = Vec::new();
    for &(at, event) in &plan.events {
        wait_until(plan.virtual_time, origin, at, &mut yielded).await;
        match event {
            Event::Flush => {
                let b = b.clone();
                let sink = Arc::clone(&sink);
                flushers.push(tokio::spawn(async move {
                    let before = b.metrics();
                    b.flush().await;
                    let after = b.metrics();
                    if after.settled() < before.accepted {
                        sink.rec().errors.push(format!(
                            "flush returned with {} settled, {} accepted before it",
                            after.settled(),
                            before.accepted
                        ));
                    }
                }));
            }
            Event::Pause => b.pause(),
            Event::Resume => b.resume(),
        }
    }
    let mut producers = Some(producers);
    if plan.end_after_producers {
        join_all(producers.take().unwrap_or_default()).await;
    } else {
        wait_until(plan.virtual_time, origin, plan.end_at, &mut yielded).await;
    }

    let gap = |d: Duration| async move {
        if plan.virtual_time {
            tokio::time::sleep(d).await;
        } else {
            for _ in 0..d.as_nanos() {
                tokio::task::yield_now().await;
            }
        }
    };
    let mut reports: Vec<ShutdownReport<Item>> = Vec::new();
    let mut final_metrics: Option<Metrics> = None;
    let end_index;
    match plan.end {
        End::Shutdown => {
            end_index = 0;
            b.shutdown().await;
        }
        End::Deadline(d) => {
            end_index = 1;
            reports.push(b.shutdown_timeout(d).await);
        }
        End::CloseThenDeadline(g, d) => {
            end_index = 2;
            b.close();
            gap(g).await;
            reports.push(b.shutdown_timeout(d).await);
        }
        End::Twice(x, y) => {
            end_index = 3;
            let tasks: Vec<JoinHandle<Option<ShutdownReport<Item>>>> = [x, y]
                .into_iter()
                .map(|d| {
                    let b = b.clone();
                    tokio::spawn(async move {
                        match d {
                            Some(d) => Some(b.shutdown_timeout(d).await),
                            None => {
                                b.shutdown().await;
                                None
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                match t.await {
                    Ok(r) => reports.extend(r),
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
        }
        End::DropAll => {
            end_index = 4;
        }
    }
    if plan.end == End::DropAll {
        drop(b);
        join_all(producers.take().unwrap_or_default()).await;
        join_all(flushers).await;
        if let Some(w) = worker {
            w.await.expect("the worker ends once the last handle is gone");
        }
    } else {
        join_all(producers.take().unwrap_or_default()).await;
        join_all(flushers).await;
        if let Some(w) = worker {
            w.await.expect("the worker ends after shutdown");
        }
        assert!(b.is_closed(), "closed after shutdown");
        final_metrics = Some(b.metrics());
        drop(b);
    }
    check(&plan, &sink, &reports, final_metrics, end_index)
}

// ------------------------------------------------------------------------------------------------
// The checks
// ------------------------------------------------------------------------------------------------

#[track_caller]
fn strictly_increasing_per_producer<'a>(what: &str, items: impl IntoIterator<Item = &'a Item>) {
    let mut last: HashMap<u32, u32> = HashMap::new();
    for &(p, n) in items {
        if let Some(prev) = last.insert(p, n) {
            assert!(prev < n, "{what}: producer {p}'s item {n} after {prev}");
        }
    }
}

fn check(
    plan: &Plan,
    sink: &Sink,
    reports: &[ShutdownReport<Item>],
    metrics: Option<Metrics>,
    end: usize,
) -> (Totals, u64) {
    let rec = sink.rec();
    assert!(rec.errors.is_empty(), "errors seen during the run: {:#?}", rec.errors);
    assert_eq!(rec.letter_kept, 0, "a dead letter could not hand its items over");
    assert_eq!(rec.running, 0, "attempts still running after the end");
    let remainder: Vec<Item> = reports.iter().flat_map(|r| r.remainder.iter().copied()).collect();
    let deadline_expired = reports.iter().any(|r| r.timed_out);

    // Outcomes of every produced item.
    let mut outcomes: HashMap<Item, Vec<&'static str>> = HashMap::new();
    let mut note = |item: Item, what: &'static str| outcomes.entry(item).or_default().push(what);
    let mut acked_items = 0u64;
    let mut acked_batches = 0u64;
    let mut written: HashMap<Item, u32> = HashMap::new();
    for a in &rec.attempts {
        assert!(a.result.is_some(), "attempt {}#{} never ended", a.seq, a.attempt);
        if a.wrote {
            for &i in &a.items {
                *written.entry(i).or_default() += 1;
            }
        }
        if a.result == Some(AttemptEnd::Acked) {
            acked_batches += 1;
            for &i in &a.items {
                note(i, "delivered");
                acked_items += 1;
            }
        }
    }
    let dead: u64 = rec.letters.iter().map(|l| l.items.len() as u64).sum();
    for l in &rec.letters {
        for &i in &l.items {
            note(i, "dead-lettered");
        }
    }
    for &(i, why) in &rec.rejected {
        note(i, why);
    }
    for &i in &rec.evicted {
        note(i, "evicted");
    }
    for &i in &rec.withdrawn {
        note(i, "withdrawn");
    }
    for &i in &remainder {
        note(i, "returned");
    }
    // Every item a producer made has exactly one outcome, and nothing else has one.
    for (item, what) in &outcomes {
        assert_eq!(what.len(), 1, "item {item:?} ended {} times: {what:?}", what.len());
        let made = rec.produced.get(&item.0).copied().unwrap_or(0);
        assert!(item.1 < made, "item {item:?} has an outcome ({what:?}) but was never produced");
    }
    let produced: u64 = rec.produced.values().map(|&n| u64::from(n)).sum();
    let mut lost = 0u64;
    let mut missing = Vec::new();
    for (&p, &made) in &rec.produced {
        for n in 0..made {
            if !outcomes.contains_key(&(p, n)) {
                lost += 1;
                if missing.len() < 10 {
                    missing.push((p, n));
                }
            }
        }
    }
    assert_eq!(lost, 0, "{lost} items produced but never accounted for, e.g. {missing:?}");

    // The sink: acknowledged writes are the deliveries; unacknowledged writes only from attempts
    // cut short, and only when something could cut them.
    let mut dups = 0;
    let mut written_not_delivered = 0;
    for (item, &times) in &written {
        let outcome = outcomes.get(item).map(|v| v[0]);
        if times > 1 {
            dups += 1;
        }
        if outcome != Some("delivered") {
            written_not_delivered += 1;
        }
    }
    let cut: Vec<&AttemptRec> = rec.attempts.iter().filter(|a| a.result == Some(AttemptEnd::Cut)).collect();
    if plan.attempt_timeout.is_none() && !deadline_expired {
        assert!(cut.is_empty(), "attempts cut short without a timeout or a deadline: {:?}", cut.first());
    }
    for a in &rec.attempts {
        if a.wrote {
            assert!(
                matches!(a.result, Some(AttemptEnd::Acked | AttemptEnd::Cut)),
                "attempt {}#{} wrote and then ended {:?}",
                a.seq,
                a.attempt,
                a.result
            );
        }
    }

    // Attempts: same items on every retry, numbered 1.., within max_batch, no more than
    // max_in_flight at once, retries after their backoff.
    assert!(rec.max_running <= plan.max_in_flight, "{} attempts ran at once", rec.max_running);
    let mut by_seq: HashMap<u64, Vec<&AttemptRec>> = HashMap::new();
    for a in &rec.attempts {
        by_seq.entry(a.seq).or_default().push(a);
    }
    for (seq, atts) in &by_seq {
        let first = atts[0];
        assert!(
            !first.items.is_empty() && first.items.len() <= plan.max_batch,
            "batch {seq} has {} items",
            first.items.len()
        );
        strictly_increasing_per_producer("within a batch", &first.items);
        for (k, a) in atts.iter().enumerate() {
            assert_eq!(a.attempt, k as u32 + 1, "batch {seq}: attempts out of order");
            assert!(a.attempt <= plan.max_attempts, "batch {seq}: attempt {} > max_attempts", a.attempt);
            assert_eq!(a.items, first.items, "batch {seq}: a retry carries other items");
            if k > 0 && plan.virtual_time {
                let prev = atts[k - 1];
                let prev_end = prev.end.expect("ended");
                let earliest = prev_end + plan.min_backoff(prev.attempt);
                assert!(
                    a.start + Duration::from_micros(1) >= earliest,
                    "batch {seq}: attempt {} at {:?}, before the backoff after {:?} ({:?})",
                    a.attempt,
                    a.start,
                    prev_end,
                    plan.min_backoff(prev.attempt)
                );
            }
            if plan.virtual_time && a.result == Some(AttemptEnd::Cut) && !deadline_expired {
                let limit = plan.attempt_timeout.expect("only timeouts cut attempts here");
                let took = a.end.expect("ended").saturating_sub(a.start);
                assert!(
                    took >= limit && took <= limit + ms(1),
                    "batch {seq}: cut after {took:?}, timeout {limit:?}"
                );
            }
        }
    }
    // Dead letters: after max_attempts, with the last attempt's error.
    let mut final_seqs = HashSet::new();
    for (seq, _, _) in &rec.finals {
        assert!(final_seqs.insert(*seq), "batch {seq} reached two final outcomes");
    }
    for l in &rec.letters {
        assert_eq!(
            l.attempts, plan.max_attempts,
            "batch {} dead-lettered after {} attempts",
            l.seq, l.attempts
        );
        let atts = &by_seq[&l.seq];
        let last = atts.last().expect("a dead letter had attempts");
        assert_eq!(last.attempt, l.attempts);
        assert_eq!(last.items, l.items, "batch {}: the dead letter carries other items", l.seq);
        match last.result {
            Some(AttemptEnd::Failed) => assert!(l.cause.contains("injected failure"), "cause {}", l.cause),
            Some(AttemptEnd::Panicked) => assert!(l.cause.contains(INJECTED_PANIC), "cause {}", l.cause),
            Some(AttemptEnd::Cut) => assert_eq!(l.timed_out, plan.attempt_timeout, "cause {}", l.cause),
            other => panic!("batch {} dead-lettered after an attempt that ended {other:?}", l.seq),
        }
    }

    // Order per producer.
    if plan.max_in_flight == 1 {
        let mut seqs = rec.finals.iter().map(|(s, _, _)| *s);
        if let Some(mut prev) = seqs.next() {
            for s in seqs {
                assert!(s > prev, "one in flight: batch {s} final after batch {prev}");
                prev = s;
            }
        }
        let sequence: Vec<Item> = rec
            .finals
            .iter()
            .flat_map(|(_, _, items)| items.iter().copied())
            .chain(remainder.iter().copied())
            .collect();
        strictly_increasing_per_producer("one in flight: final outcomes then the remainder", &sequence);
    } else {
        let mut batches: Vec<&(u64, FinalKind, Vec<Item>)> = rec.finals.iter().collect();
        batches.sort_by_key(|(s, _, _)| *s);
        strictly_increasing_per_producer(
            "batches by seq",
            batches.iter().flat_map(|(_, _, items)| items.iter()),
        );
        strictly_increasing_per_producer("the remainder", &remainder);
    }
    if plan.virtual_time {
        // On one thread `on_evict` runs in eviction order. On several, two producers that evict
        // at once call it after releasing the lock, in either order: no order is promised.
        strictly_increasing_per_producer("evictions", &rec.evicted);
    }

    // A flush that returned before its items were final: only after a deadline, into the remainder.
    if !rec.flush_claims.is_empty() {
        let returned: HashSet<Item> = remainder.iter().copied().collect();
        for i in &rec.flush_claims {
            assert!(
                returned.contains(i),
                "flush returned before item {i:?} was final (it ended {:?})",
                outcomes.get(i)
            );
        }
    }

    // Metrics equal what was observed.
    let count = |what: &str| outcomes.values().filter(|v| v[0] == what).count() as u64;
    let rejected_full = count("full");
    let rejected_closed = count("closed");
    let evicted = rec.evicted.len() as u64;
    let withdrawn = rec.withdrawn.len() as u64;
    let failed_attempts = rec
        .attempts
        .iter()
        .filter(|a| matches!(a.result, Some(AttemptEnd::Failed | AttemptEnd::Panicked | AttemptEnd::Cut)))
        .count() as u64;
    let observed_retries = rec.attempts.iter().filter(|a| a.attempt > 1).count() as u64;
    if let Some(m) = metrics {
        assert!(m.is_consistent(), "{m:?}");
        for r in reports {
            assert!(r.metrics.is_consistent(), "{:?}", r.metrics);
        }
        assert_eq!(m.accepted, produced - rejected_full - rejected_closed - withdrawn, "accepted {m:?}");
        assert_eq!(m.rejected, rejected_full + rejected_closed, "rejected {m:?}");
        assert_eq!(m.delivered, acked_items, "delivered {m:?}");
        assert_eq!(m.dead_lettered, dead, "dead-lettered {m:?}");
        assert_eq!(m.evicted, evicted, "evicted {m:?}");
        assert_eq!(m.returned, remainder.len() as u64, "returned {m:?}");
        assert_eq!((m.buffered, m.in_flight, m.batches_in_flight), (0, 0, 0), "{m:?}");
        assert_eq!(m.batches_delivered, acked_batches, "batches delivered {m:?}");
        assert_eq!(m.batches_dead_lettered, rec.letters.len() as u64, "batches dead-lettered {m:?}");
        if deadline_expired {
            // Attempts aborted by the deadline are neither failures nor deliveries; a retry due
            // at the deadline may be counted without its attempt starting.
            let aborted = cut.len() as u64;
            assert!(
                m.failed_attempts <= failed_attempts && m.failed_attempts + aborted >= failed_attempts,
                "failed attempts {m:?}"
            );
            assert!(
                m.retries >= observed_retries && m.retries <= observed_retries + plan.max_in_flight as u64,
                "retries {m:?}"
            );
        } else {
            assert_eq!(m.failed_attempts, failed_attempts, "failed attempts {m:?}");
            assert_eq!(m.retries, observed_retries, "retries {m:?}");
            assert_eq!(m.flushes.total(), m.batches_delivered + m.batches_dead_lettered, "{m:?}");
            assert!(remainder.is_empty(), "a remainder without an expired deadline");
        }
    } else {
        // Dropped every handle: the worker drained everything.
        assert!(remainder.is_empty());
    }
    if !plan.end.has_deadline() {
        assert!(remainder.is_empty() && !deadline_expired);
    }

    let mut acts = [0u64; 8];
    for a in &rec.attempts {
        acts[a.act.kind()] += 1;
    }
    let mut ends = [0u64; 5];
    ends[end] = 1;
    let totals = Totals {
        schedules: 1,
        produced,
        delivered: acked_items,
        dead_lettered: dead,
        rejected_full,
        rejected_closed,
        evicted,
        returned: remainder.len() as u64,
        withdrawn,
        acts,
        cut_attempts: cut.len() as u64,
        retries: observed_retries,
        at_least_once_dups: dups,
        written_not_delivered,
        deadline_expired: u64::from(deadline_expired),
        flushes: rec.flushes,
        handles_dropped_early: rec.handles_dropped_early,
        ends,
        lost,
    };

    // A fingerprint of everything observed, in order, with virtual times.
    let mut fp = XorShift::mix(&[plan.seed]);
    let mut feed = |x: u64| fp = XorShift::mix(&[fp, x]);
    for a in &rec.attempts {
        feed(a.seq);
        feed(u64::from(a.attempt));
        feed(us(a.start));
        feed(a.end.map_or(0, us));
        feed(a.items.len() as u64);
    }
    for (s, k, items) in &rec.finals {
        feed(*s);
        feed(*k as u64);
        feed(items.len() as u64);
    }
    for &(p, n) in rec.evicted.iter().chain(&remainder).chain(rec.rejected.iter().map(|(i, _)| i)) {
        feed(u64::from(p) << 32 | u64::from(n));
    }
    if let Some(m) = metrics {
        feed(m.accepted);
        feed(m.retries);
        feed(m.flushes.total());
        feed(m.max_item_age.as_micros());
    }
    (totals, fp)
}

// ------------------------------------------------------------------------------------------------
// Runners
// ------------------------------------------------------------------------------------------------

fn run_paused(seed: u64) -> (Totals, u64) {
    let plan = Plan::new(seed, true);
    if std::env::var_os("BATCH_FAULT_VERBOSE").is_some() {
        eprintln!("seed {seed}: {plan:?}");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        match tokio::time::timeout(VIRTUAL_LIMIT, schedule(plan)).await {
            Ok(r) => r,
            Err(_) => panic!("deadlock: the schedule did not end within {VIRTUAL_LIMIT:?} of virtual time"),
        }
    })
}

fn run_multi_thread(seed: u64) -> (Totals, u64) {
    let plan = Plan::new(seed, false);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let run = tokio::spawn(schedule(plan));
        match tokio::time::timeout(REAL_LIMIT, run).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("deadlock: the schedule did not end within {REAL_LIMIT:?}"),
        }
    })
}

/// Aborts the process if no schedule finishes for [`WATCHDOG`] (a livelock under paused time
/// never lets the virtual deadlock detector fire).
struct Watchdog {
    /// `(seed, true)` when a schedule starts, `(seed, false)` when it ends.
    beat: std::sync::mpsc::Sender<(u64, bool)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(test: &'static str) -> Self {
        let (beat, rx) = std::sync::mpsc::channel::<(u64, bool)>();
        let thread = std::thread::spawn(move || {
            let mut running = HashSet::new();
            loop {
                match rx.recv_timeout(WATCHDOG) {
                    Ok((seed, true)) => {
                        running.insert(seed);
                    }
                    Ok((seed, false)) => {
                        running.remove(&seed);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        // Straight to the file descriptor: the test harness's capture dies with us.
                        use std::io::Write as _;
                        let _ = writeln!(
                            std::io::stderr(),
                            "{test}: no schedule finished for {WATCHDOG:?} (livelock?); still running: BATCH_FAULT_SEED in {running:?}"
                        );
                        std::process::abort();
                    }
                }
            }
        });
        Self { beat, thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (dead, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.beat, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `count` seeds from `start` (or only `BATCH_FAULT_SEED`) on `threads` threads; on the first
/// failure prints how to replay it and fails.
fn run_seeds(
    test: &'static str,
    run: fn(u64) -> (Totals, u64),
    default_count: u64,
    count_var: &str,
    threads: usize,
) -> Totals {
    quiet_injected_panics();
    let (start, count) = match env_u64("BATCH_FAULT_SEED") {
        Some(seed) => (seed, 1),
        None => (env_u64("BATCH_FAULT_SEED_START").unwrap_or(0), env_u64(count_var).unwrap_or(default_count)),
    };
    let started = std::time::Instant::now();
    let watchdog = Watchdog::new(test);
    let failed = AtomicBool::new(false);
    let next = AtomicU64::new(start);
    let end = start.saturating_add(count);
    let totals = Mutex::new(Totals::default());
    let failure = Mutex::new(None::<(u64, String)>);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let beat = watchdog.beat.clone();
            s.spawn(|| {
                let beat = beat;
                let mut mine = Totals::default();
                while !failed.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let _ = beat.send((seed, true));
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(seed)));
                    let _ = beat.send((seed, false));
                    match result {
                        Ok((t, _)) => mine.add(&t),
                        Err(panic) => {
                            failed.store(true, Ordering::Relaxed);
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                                .unwrap_or_default();
                            let mut f = lock(&failure);
                            if f.as_ref().is_none_or(|(s, _)| seed < *s) {
                                *f = Some((seed, msg));
                            }
                        }
                    }
                }
                lock(&totals).add(&mine);
            });
        }
    });
    drop(watchdog);
    if let Some((seed, msg)) = lock(&failure).take() {
        let flavor = !test.contains("multi_thread");
        panic!(
            "fault schedule failed: {msg}\n  replay: BATCH_FAULT_SEED={seed} cargo test -p batch-tests --test faults {test} -- --nocapture\n  plan: {:#?}",
            Plan::new(seed, flavor)
        );
    }
    let totals = totals.into_inner().unwrap_or_else(PoisonError::into_inner);
    totals.print(test, started.elapsed());
    assert_eq!(totals.lost, 0);
    totals
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8)
}

#[test]
fn paused_time_schedules_lose_nothing() {
    let totals = run_seeds(
        "paused_time_schedules_lose_nothing",
        run_paused,
        DEFAULT_SCHEDULES,
        "BATCH_FAULT_SCHEDULES",
        threads(),
    );
    if env_u64("BATCH_FAULT_SEED").is_none() && totals.schedules >= 500 {
        // The seeds must actually exercise the faults they claim to.
        for (kind, n) in Act::KINDS.iter().zip(totals.acts) {
            assert!(n > 0, "no attempt behaved as {kind}");
        }
        assert!(totals.cut_attempts > 0 && totals.deadline_expired > 0 && totals.at_least_once_dups > 0);
        assert!(
            totals.evicted > 0 && totals.withdrawn > 0 && totals.rejected_full > 0 && totals.returned > 0
        );
        assert!(totals.ends.iter().all(|&n| n > 0), "every end shape ran: {:?}", totals.ends);
    }
}

#[test]
fn multi_thread_schedules_lose_nothing() {
    run_seeds(
        "multi_thread_schedules_lose_nothing",
        run_multi_thread,
        DEFAULT_MT_SCHEDULES,
        "BATCH_FAULT_MT_SCHEDULES",
        1,
    );
}

/// Paused time makes a schedule a pure function of its seed: the same seed twice observes the
/// same attempts at the same virtual times, so a printed seed replays the failure.
#[test]
fn schedules_replay_identically() {
    quiet_injected_panics();
    for seed in 0..40 {
        let (_, a) = run_paused(seed);
        let (_, b) = run_paused(seed);
        assert_eq!(a, b, "seed {seed} observed something different on replay");
    }
}

/// The plans cover what the suite promises (a quick check on the generator itself).
#[test]
fn plans_cover_the_promised_space() {
    let plans: Vec<Plan> = (0..DEFAULT_SCHEDULES).map(|s| Plan::new(s, true)).collect();
    for mif in 1..=4 {
        assert!(plans.iter().any(|p| p.max_in_flight == mif));
    }
    for att in 1..=4 {
        assert!(plans.iter().any(|p| p.max_attempts == att));
    }
    assert!(plans.iter().any(|p| p.overflow == Overflow::DropOldest));
    assert!(plans.iter().any(|p| p.attempt_timeout.is_some()));
    assert!(plans.iter().any(|p| p.jitter.is_some()));
    assert!(plans.iter().any(|p| p.closure_handler) && plans.iter().any(|p| !p.closure_handler));
    assert!(plans.iter().all(|p| (2..=6).contains(&p.producers.len())));
    // A hang without a timeout can only end through a shutdown deadline.
    for p in &plans {
        let can_hang =
            p.attempt_timeout.is_none() && (p.faults[2] > p.faults[1] || p.faults[5] > p.faults[4]);
        if can_hang {
            assert!(p.end.has_deadline(), "seed {}", p.seed);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Regressions found by the schedules above, made deterministic
// ------------------------------------------------------------------------------------------------

/// Polls a future once.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// A callback that signals when it starts and then blocks its thread until released.
struct Gate {
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Gate {
    fn new() -> (Arc<Self>, tokio::sync::oneshot::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        (
            Arc::new(Self { entered: Mutex::new(Some(entered_tx)), release: Mutex::new(release_rx) }),
            entered_rx,
            release_tx,
        )
    }
    fn pass(&self) {
        if let Some(tx) = lock(&self.entered).take() {
            let _ = tx.send(());
            let _ = lock(&self.release).recv();
        }
    }
}

fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `flush` on one thread must not return while `on_error` on another still has not finished with
/// the dead letter it waits for (the callback runs outside the lock, after the core counted the
/// batch as dead-lettered). Found by `multi_thread_schedules_lose_nothing`.
#[test]
fn flush_waits_for_the_error_callback_on_another_thread() {
    two_workers().block_on(async {
        let (gate, entered, release) = Gate::new();
        let letters = Arc::new(Mutex::new(Vec::new()));
        let (g, l) = (Arc::clone(&gate), Arc::clone(&letters));
        let b = Batcher::builder()
            .max_attempts(1)
            .linger(HOUR)
            .on_error(move |_e, letter: DeadLetter<u32>| {
                g.pass();
                lock(&l).extend(letter.into_items().unwrap());
            })
            .spawn(handler::from_sync(|_: &[u32]| Err("uplink down")))
            .unwrap();
        b.add(1).await.unwrap();
        let mut flush = Box::pin(b.flush());
        assert!(poll_once(&mut flush).await.is_pending());
        tokio::time::timeout(REAL_LIMIT, entered).await.expect("deadlock").unwrap();
        // The core has counted [1] as dead-lettered and woken the flush; the callback is not done.
        assert!(
            poll_once(&mut flush).await.is_pending(),
            "flush returned before on_error had the dead letter"
        );
        release.send(()).unwrap();
        tokio::time::timeout(REAL_LIMIT, flush).await.expect("deadlock");
        assert_eq!(*lock(&letters), vec![1]);
        b.shutdown().await;
    });
}

/// The same for `on_evict`: a flush that starts while another producer's eviction callback runs
/// waits for it. Found by `multi_thread_schedules_lose_nothing`.
#[test]
fn flush_waits_for_the_evict_callback_on_another_thread() {
    two_workers().block_on(async {
        let (gate, entered, release) = Gate::new();
        let evicted = Arc::new(Mutex::new(Vec::new()));
        let (g, e) = (Arc::clone(&gate), Arc::clone(&evicted));
        let b = Batcher::builder()
            .capacity(2)
            .linger(HOUR)
            .overflow(Overflow::DropOldest)
            .on_evict(move |item: u32| {
                g.pass();
                lock(&e).push(item);
            })
            .spawn(handler::from_sync(|_: &[u32]| Ok::<_, std::io::Error>(())))
            .unwrap();
        b.pause();
        b.try_add(0).unwrap();
        b.try_add(1).unwrap();
        // A plain thread (`try_add` is sync): blocking a runtime worker in the callback could
        // strand the batcher's task in that worker's LIFO slot, which other workers cannot steal.
        let producer = {
            let b = b.clone();
            std::thread::spawn(move || b.try_add(2)) // evicts 0, then blocks in on_evict
        };
        tokio::time::timeout(REAL_LIMIT, entered).await.expect("deadlock").unwrap();
        b.resume(); // [1, 2] is cut and delivered while on_evict(0) is still running
        tokio::time::timeout(REAL_LIMIT, async {
            while b.metrics().delivered < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("deadlock");
        let mut flush = Box::pin(b.flush());
        assert!(poll_once(&mut flush).await.is_pending(), "flush returned before on_evict had item 0");
        release.send(()).unwrap();
        tokio::time::timeout(REAL_LIMIT, flush).await.expect("deadlock");
        assert_eq!(*lock(&evicted), vec![0]);
        producer.join().unwrap().unwrap();
        b.shutdown().await;
    });
}
