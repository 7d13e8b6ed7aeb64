//! A virtual-time driver for `batch-core`, in the spirit of quinn-proto's test `Pair`.
//!
//! [`Sim`] owns a [`Batcher`], a virtual clock, a scripted handler and one lane per in-flight
//! batch. A lane holds the batch's buffer from its cut to its final outcome, retries included
//! (the core only tracks sequence numbers, attempts and deadlines; the driver keeps the items).
//! Every cut, attempt, delivery, retry and dead letter is recorded so tests can assert on the
//! whole history.
//!
//! - [`Sim::step`] does all the work that is due at `now`: completes attempts whose end time has
//!   come, starts due retries, and cuts batches with `poll_flush` until it returns `None`.
//! - [`Sim::run_until`] and [`Sim::run_until_idle`] jump the clock from event to event (the
//!   earlier of `poll_timeout()` and the next attempt completion), with a bounded number of
//!   steps so a bug cannot hang a test.
//!
//! The handler is a closure `(seq, attempt, &items) -> (Outcome, duration)`: the attempt ends
//! `duration` after it starts with that outcome. A sim built with [`Sim::manual`] has no handler:
//! attempts run until the test reports them with [`Sim::complete`].
//!
//! After every step the sim checks what any driver may rely on: the metrics identity, the
//! in-flight table against its lanes, the buffer bound, and that `poll_timeout()` never asks for a
//! wake-up at or before `now` (which would make a real driver spin).

#![allow(dead_code, reason = "each test crate uses a different part of the simulator")]

use std::fmt::Debug;

use batch_core::{
    Batch, Batcher, Completion, Config, Duration, Flush, FlushToken, Instant, Metrics, Outcome, PushError,
    Trigger,
};

/// The scripted handler: `(seq, attempt, items) -> (outcome, how long the attempt takes)`.
pub(crate) type Handler<T> = Box<dyn FnMut(u64, u32, &[T]) -> (Outcome, Duration)>;

/// One batch cut by `poll_flush`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cut<T> {
    /// When it was cut.
    pub at: Instant,
    /// What the core said about it.
    pub flush: Flush,
    /// The items moved into the lane.
    pub items: Vec<T>,
}

/// One attempt handed to the handler.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AttemptStart<T> {
    /// When it started.
    pub at: Instant,
    pub seq: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Why the batch was cut.
    pub trigger: Trigger,
    pub items: Vec<T>,
}

/// A batch that reached a final outcome (delivered or dead-lettered).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settled<T> {
    /// When the final attempt completed.
    pub at: Instant,
    pub seq: u64,
    /// Attempts made.
    pub attempts: u32,
    pub items: Vec<T>,
}

/// A retry the core scheduled after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scheduled {
    /// When the failed attempt completed.
    pub failed_at: Instant,
    pub seq: u64,
    /// The number of the attempt that failed.
    pub failed_attempt: u32,
    /// When the next attempt may start, as the core first said.
    pub at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LaneState {
    /// An attempt is with the handler; `ends` is `None` in manual mode.
    Running { ends: Option<Instant>, outcome: Outcome },
    /// Waiting to retry from `at` on (as far as the driver knows; `poll_retry` decides).
    Backoff { at: Instant },
}

/// One in-flight batch, held by the driver from its cut to its final outcome.
#[derive(Debug)]
struct Lane<T, const N: usize> {
    seq: u64,
    trigger: Trigger,
    attempt: u32,
    batch: Batch<T, N>,
    state: LaneState,
}

/// The virtual-time driver. `N` is the buffer capacity, `F` the in-flight table size.
pub(crate) struct Sim<T, const N: usize, const F: usize = 1> {
    /// The core under test. Tests may call it directly (then call [`Sim::step`]).
    pub core: Batcher<T, N, F>,
    /// Virtual time. Only moves forward.
    pub now: Instant,
    handler: Option<Handler<T>>,
    lanes: Vec<Lane<T, N>>,
    /// Items accepted, in acceptance order, with their arrival time.
    pub accepted: Vec<(Instant, T)>,
    /// Refused pushes, with the item handed back.
    pub rejected: Vec<PushError<T>>,
    /// Items evicted by `DropOldest`, as handed back.
    pub evicted: Vec<T>,
    /// Items handed back by a deadline shutdown (`abandon` + `take_buffered`).
    pub returned: Vec<T>,
    pub cuts: Vec<Cut<T>>,
    pub attempts: Vec<AttemptStart<T>>,
    pub delivered: Vec<Settled<T>>,
    pub dead_letters: Vec<Settled<T>>,
    pub retries: Vec<Scheduled>,
    /// Times at which a flight slot was freed (a batch reached a final outcome or was abandoned).
    pub slot_freed: Vec<Instant>,
    /// The most batches in flight at once.
    pub peak_in_flight: usize,
    /// The most attempts running at once.
    pub peak_running: usize,
    /// Work loops and clock jumps so far.
    pub steps: u64,
    /// Panics beyond this many steps: a bug must not hang a test.
    pub max_steps: u64,
}

impl<T, const N: usize, const F: usize> Debug for Sim<T, N, F>
where
    T: Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("core", &self.core)
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

/// A handler that delivers every batch after `d`.
pub(crate) fn deliver_after<T>(d: Duration) -> impl FnMut(u64, u32, &[T]) -> (Outcome, Duration) {
    move |_, _, _| (Outcome::Delivered, d)
}

/// A handler whose attempts fail while `attempt <= failures` and then deliver, each taking `d`.
pub(crate) fn fail_first<T>(failures: u32, d: Duration) -> impl FnMut(u64, u32, &[T]) -> (Outcome, Duration) {
    move |_, attempt, _| {
        if attempt <= failures { (Outcome::Failed, d) } else { (Outcome::Delivered, d) }
    }
}

pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) const fn at_ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

impl<T: Clone + Debug, const N: usize, const F: usize> Sim<T, N, F> {
    /// A sim over `Batcher::new(config)` with a scripted handler, at time zero.
    pub(crate) fn new(
        config: Config,
        handler: impl FnMut(u64, u32, &[T]) -> (Outcome, Duration) + 'static,
    ) -> Self {
        let core = Batcher::try_new(config).expect("valid config");
        Self::with_core(core, Some(Box::new(handler)))
    }

    /// A sim without a handler: attempts run until [`Sim::complete`] reports them.
    pub(crate) fn manual(core: Batcher<T, N, F>) -> Self {
        Self::with_core(core, None)
    }

    /// A sim over a core built elsewhere (for example `new_weighted`).
    pub(crate) fn with_core(core: Batcher<T, N, F>, handler: Option<Handler<T>>) -> Self {
        Self {
            core,
            now: Instant::ZERO,
            handler,
            lanes: Vec::new(),
            accepted: Vec::new(),
            rejected: Vec::new(),
            evicted: Vec::new(),
            returned: Vec::new(),
            cuts: Vec::new(),
            attempts: Vec::new(),
            delivered: Vec::new(),
            dead_letters: Vec::new(),
            retries: Vec::new(),
            slot_freed: Vec::new(),
            peak_in_flight: 0,
            peak_running: 0,
            steps: 0,
            max_steps: 100_000,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Inputs: each one is followed by a step, as a woken runner would do.
    // ---------------------------------------------------------------------------------------

    /// Pushes at `now`, records the outcome, then steps.
    pub(crate) fn push(&mut self, item: T) -> Result<Option<T>, PushError<T>> {
        let r = self.core.push(self.now, item.clone());
        self.record_push(item, r.clone());
        self.step();
        r
    }

    /// Pushes an urgent item at `now`, records the outcome, then steps.
    pub(crate) fn push_urgent(&mut self, item: T) -> Result<Option<T>, PushError<T>> {
        let r = self.core.push_urgent(self.now, item.clone());
        self.record_push(item, r.clone());
        self.step();
        r
    }

    /// Pushes without stepping (a producer that does not wake the runner).
    pub(crate) fn push_quiet(&mut self, item: T) -> Result<Option<T>, PushError<T>> {
        let r = self.core.push(self.now, item.clone());
        self.record_push(item, r.clone());
        self.check();
        r
    }

    fn record_push(&mut self, item: T, r: Result<Option<T>, PushError<T>>) {
        match r {
            Ok(evicted) => {
                self.accepted.push((self.now, item));
                self.evicted.extend(evicted);
            }
            Err(e) => self.rejected.push(e),
        }
    }

    /// Asks for a manual flush, then steps.
    pub(crate) fn flush(&mut self) -> FlushToken {
        let token = self.core.flush();
        self.step();
        token
    }

    /// Closes, then steps.
    pub(crate) fn close(&mut self) {
        self.core.close();
        self.step();
    }

    /// Pauses at `now`, then steps.
    pub(crate) fn pause(&mut self) {
        self.core.pause(self.now);
        self.step();
    }

    /// Resumes at `now`, then steps.
    pub(crate) fn resume(&mut self) {
        self.core.resume(self.now);
        self.step();
    }

    /// Reports the running attempt of `seq` (manual mode, or early in scripted mode) as ended
    /// now with `outcome`, then steps. Returns what the core said.
    pub(crate) fn complete(&mut self, seq: u64, outcome: Outcome) -> Completion {
        let i = self
            .lanes
            .iter()
            .position(|l| l.seq == seq && matches!(l.state, LaneState::Running { .. }))
            .unwrap_or_else(|| panic!("batch {seq} has no running attempt"));
        let c = self.finish(i, outcome);
        self.step();
        c
    }

    /// A deadline shutdown: abandons every in-flight batch and takes every buffered item, all
    /// handed back (into [`Sim::returned`], in acceptance order). Returns how many items.
    pub(crate) fn abandon_all(&mut self) -> usize {
        let mut n = 0;
        let lanes = std::mem::take(&mut self.lanes);
        for lane in lanes {
            let len = self.core.abandon(lane.seq).expect("lane is in flight");
            assert_eq!(len, lane.batch.len(), "abandon counts the lane's items");
            self.returned.extend(lane.batch);
            self.slot_freed.push(self.now);
            n += len;
        }
        loop {
            let mut out: Batch<T, N> = Batch::new();
            let moved = self.core.take_buffered(&mut out);
            assert_eq!(moved, out.len());
            if moved == 0 {
                break;
            }
            n += moved;
            self.returned.extend(out);
        }
        assert_eq!(self.core.len(), 0);
        self.check();
        n
    }

    // ---------------------------------------------------------------------------------------
    // Time
    // ---------------------------------------------------------------------------------------

    /// Does everything due at `now`: completes attempts whose end has come (earliest first),
    /// starts due retries, cuts batches until `poll_flush` returns `None`; repeats until nothing
    /// changes.
    pub(crate) fn step(&mut self) {
        loop {
            self.tick();
            let mut progressed = false;
            while let Some(i) = self.next_due_completion() {
                let LaneState::Running { outcome, .. } = self.lanes[i].state else { unreachable!() };
                let _ = self.finish(i, outcome);
                progressed = true;
            }
            for i in 0..self.lanes.len() {
                if !matches!(self.lanes[i].state, LaneState::Backoff { .. }) {
                    continue;
                }
                let seq = self.lanes[i].seq;
                let core_at = self.core.retry_at(seq);
                if let Some(retry) = self.core.poll_retry(self.now, seq) {
                    let batch_core::Retry::Attempt(attempt) = retry else {
                        panic!("no max_age: never expired")
                    };
                    assert!(
                        core_at.is_some_and(|a| a <= self.now),
                        "retry of {seq} started before its deadline {core_at:?} at {}",
                        self.now
                    );
                    assert_eq!(attempt, self.lanes[i].attempt + 1, "attempts count up");
                    self.lanes[i].attempt = attempt;
                    self.start(i);
                    progressed = true;
                } else {
                    if !self.core.is_paused() {
                        assert!(
                            core_at.is_some_and(|a| a > self.now),
                            "retry of {seq} not started though due at {core_at:?} (now {})",
                            self.now
                        );
                    }
                    // Keep the driver's idea of the deadline in step with the core's.
                    if let Some(at) = core_at {
                        self.lanes[i].state = LaneState::Backoff { at };
                    }
                }
            }
            loop {
                let mut batch: Batch<T, N> = Batch::new();
                let Some(flush) = self.core.poll_flush(self.now, &mut batch) else {
                    assert!(batch.is_empty(), "no flush, no items moved");
                    break;
                };
                assert_eq!(flush.len, batch.len(), "Flush::len is the items moved");
                assert!(!self.core.is_paused(), "no batch starts while paused");
                self.cuts.push(Cut { at: self.now, flush, items: batch.to_vec() });
                self.lanes.push(Lane {
                    seq: flush.seq,
                    trigger: flush.trigger,
                    attempt: 1,
                    batch,
                    state: LaneState::Backoff { at: self.now },
                });
                self.peak_in_flight = self.peak_in_flight.max(self.lanes.len());
                let i = self.lanes.len() - 1;
                self.start(i);
                progressed = true;
            }
            self.check();
            if !progressed {
                break;
            }
        }
        if let Some(t) = self.core.poll_timeout() {
            assert!(
                t > self.now,
                "poll_timeout {t} is not after now {} with nothing left to do: a driver would spin",
                self.now
            );
        }
    }

    /// The next instant at which something happens by itself: the core's deadline or the end of
    /// a running attempt.
    pub(crate) fn next_event(&self) -> Option<Instant> {
        let ends = self.lanes.iter().filter_map(|l| match l.state {
            LaneState::Running { ends, .. } => ends,
            LaneState::Backoff { .. } => None,
        });
        self.core.poll_timeout().into_iter().chain(ends).min()
    }

    /// Steps, jumping the clock from event to event, until `t`; then sets `now = t` (if later)
    /// and steps once more.
    pub(crate) fn run_until(&mut self, t: Instant) {
        loop {
            self.step();
            match self.next_event() {
                Some(next) if next <= t => {
                    assert!(next >= self.now, "events are never in the past");
                    self.now = next;
                }
                _ => break,
            }
        }
        self.now = self.now.max(t);
        self.step();
    }

    /// Runs for `d` of virtual time.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Steps from event to event until nothing is pending on time (no deadline, no running
    /// attempt with an end time). Returns the time reached.
    pub(crate) fn run_until_idle(&mut self) -> Instant {
        loop {
            self.step();
            match self.next_event() {
                Some(next) => {
                    assert!(next >= self.now, "events are never in the past");
                    self.now = next;
                }
                None => return self.now,
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Observations
    // ---------------------------------------------------------------------------------------

    pub(crate) fn metrics(&self) -> Metrics {
        self.core.metrics()
    }

    /// Every delivered item, in delivery order.
    pub(crate) fn delivered_items(&self) -> Vec<T> {
        self.delivered.iter().flat_map(|s| s.items.iter().cloned()).collect()
    }

    /// Every dead-lettered item, in dead-letter order.
    pub(crate) fn dead_items(&self) -> Vec<T> {
        self.dead_letters.iter().flat_map(|s| s.items.iter().cloned()).collect()
    }

    /// The sequence numbers of the batches in flight, in cut order.
    pub(crate) fn in_flight_seqs(&self) -> Vec<u64> {
        self.lanes.iter().map(|l| l.seq).collect()
    }

    /// The sequence numbers of the batches whose attempt is running, in cut order.
    pub(crate) fn running_seqs(&self) -> Vec<u64> {
        self.lanes.iter().filter(|l| matches!(l.state, LaneState::Running { .. })).map(|l| l.seq).collect()
    }

    /// The items held for in-flight batches, in cut order.
    pub(crate) fn in_flight_items(&self) -> Vec<T> {
        self.lanes.iter().flat_map(|l| l.batch.iter().cloned()).collect()
    }

    /// The attempts of batch `seq`, as `(start time, attempt)`.
    pub(crate) fn attempts_of(&self, seq: u64) -> Vec<(Instant, u32)> {
        self.attempts.iter().filter(|a| a.seq == seq).map(|a| (a.at, a.attempt)).collect()
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    fn tick(&mut self) {
        self.steps += 1;
        assert!(
            self.steps <= self.max_steps,
            "more than {} steps: the core or the sim is looping (now {})",
            self.max_steps,
            self.now
        );
    }

    fn next_due_completion(&self) -> Option<usize> {
        self.lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l.state {
                LaneState::Running { ends: Some(e), .. } if e <= self.now => Some((e, l.seq, i)),
                _ => None,
            })
            .min()
            .map(|(_, _, i)| i)
    }

    /// Starts the lane's current attempt: records it and asks the handler (if any).
    fn start(&mut self, i: usize) {
        let lane = &mut self.lanes[i];
        self.attempts.push(AttemptStart {
            at: self.now,
            seq: lane.seq,
            attempt: lane.attempt,
            trigger: lane.trigger,
            items: lane.batch.to_vec(),
        });
        lane.state = match self.handler.as_mut() {
            Some(h) => {
                let (outcome, d) = h(lane.seq, lane.attempt, &lane.batch);
                LaneState::Running { ends: Some(self.now + d), outcome }
            }
            None => LaneState::Running { ends: None, outcome: Outcome::Delivered },
        };
        let running = self.lanes.iter().filter(|l| matches!(l.state, LaneState::Running { .. })).count();
        self.peak_running = self.peak_running.max(running);
    }

    /// Reports lane `i`'s running attempt as ended now with `outcome` and acts on the answer.
    fn finish(&mut self, i: usize, outcome: Outcome) -> Completion {
        let seq = self.lanes[i].seq;
        let c = self
            .core
            .handle_completion(self.now, seq, outcome)
            .unwrap_or_else(|| panic!("core does not know running batch {seq}"));
        let attempts = self.lanes[i].attempt;
        match c {
            Completion::Delivered { len } => {
                assert_eq!(outcome, Outcome::Delivered);
                let lane = self.lanes.remove(i);
                assert_eq!(len, lane.batch.len(), "Delivered::len is the batch's length");
                self.delivered.push(Settled { at: self.now, seq, attempts, items: lane.batch.to_vec() });
                self.slot_freed.push(self.now);
            }
            Completion::Retry { attempt, at } => {
                assert_eq!(outcome, Outcome::Failed);
                assert_eq!(attempt, attempts + 1, "Retry::attempt is the next attempt");
                self.retries.push(Scheduled { failed_at: self.now, seq, failed_attempt: attempts, at });
                self.lanes[i].state = LaneState::Backoff { at };
            }
            Completion::DeadLettered { attempts: made, len } => {
                assert_eq!(outcome, Outcome::Failed);
                assert_eq!(made, attempts, "DeadLettered::attempts counts every attempt");
                let lane = self.lanes.remove(i);
                assert_eq!(len, lane.batch.len(), "DeadLettered::len is the batch's length");
                self.dead_letters.push(Settled { at: self.now, seq, attempts, items: lane.batch.to_vec() });
                self.slot_freed.push(self.now);
            }
            Completion::Expired { .. } => panic!("the simulator sets no max_age"),
        }
        c
    }

    /// What every driver may rely on after any call.
    fn check(&self) {
        let m = self.core.metrics();
        assert!(m.is_consistent(), "metrics do not add up: {m:?}");
        assert_eq!(self.core.in_flight(), self.lanes.len(), "in-flight batches match the driver's lanes");
        let held: usize = self.lanes.iter().map(|l| l.batch.len()).sum();
        assert_eq!(self.core.in_flight_items(), held, "in-flight items match the lanes");
        assert_eq!(m.in_flight, held as u64);
        assert!(self.core.len() <= N, "buffer within capacity");
        assert!(
            self.lanes.len() <= self.core.config().get_max_in_flight(),
            "never more batches in flight than max_in_flight"
        );
        assert_eq!(
            m.accepted,
            self.accepted.len() as u64,
            "accepted matches the pushes the driver saw succeed"
        );
        assert_eq!(m.rejected, self.rejected.len() as u64);
        assert_eq!(m.evicted, self.evicted.len() as u64);
        assert_eq!(m.flushes.total(), self.cuts.len() as u64);
    }
}
