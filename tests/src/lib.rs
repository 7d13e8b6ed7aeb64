//! Behaviour suite helpers for `batch-tokio`.
//!
//! - [`Log`] records every handler call (seq, attempt, trigger, items, start and end time on
//!   tokio's clock, outcome) and counts overlapping calls; [`Log::handler`] gives a
//!   [`Recording`] handler whose latency, failures and hangs are scripted per batch.
//! - [`Letters`] records dead letters (with their items, taken by value) and [`Evicted`] records
//!   items evicted by `Overflow::DropOldest`.
//! - [`ms`], [`settle`] and [`XorShift`] are small utilities for paused-time and stress tests.
//!
//! Times are [`Duration`]s since the log was created, read from `tokio::time::Instant`: under
//! `#[tokio::test(start_paused = true)]` they are exact virtual times.

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../README.md")]
mod readme {}

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use batch_tokio::Trigger;
use batch_tokio::handler::{Batch, BatchError, DeadLetter, Handler};
use tokio::time::Instant;

/// `n` milliseconds.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Lets every ready task run (the worker, spawned producers) without advancing the paused clock.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One handler call, as the recording handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<T> {
    /// The batch's sequence number.
    pub seq: u64,
    /// The attempt number (1 for the first).
    pub attempt: u32,
    /// Why the batch was cut.
    pub trigger: Trigger,
    /// The items, oldest first.
    pub items: Vec<T>,
    /// When the attempt started, since the log was created.
    pub start: Duration,
    /// When the attempt ended (`None` while it runs, or if it was cancelled).
    pub end: Option<Duration>,
    /// `Some(true)` delivered, `Some(false)` failed, `None` running or cancelled.
    pub ok: Option<bool>,
}

struct LogInner<T> {
    origin: Instant,
    calls: Mutex<Vec<Call<T>>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

/// A shared record of handler calls. Cloning it shares the record.
pub struct Log<T> {
    inner: Arc<LogInner<T>>,
}

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<T> fmt::Debug for Log<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log").field("calls", &lock(&self.inner.calls).len()).finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Default for Log<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Log<T> {
    /// An empty log whose clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LogInner {
                origin: Instant::now(),
                calls: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
            }),
        }
    }

    /// Time since the log was created.
    pub fn now(&self) -> Duration {
        self.inner.origin.elapsed()
    }

    /// A handler that records into this log and delivers every batch at once.
    pub fn handler(&self) -> Recording<T> {
        Recording {
            log: self.clone(),
            latency: Arc::new(|_| Duration::ZERO),
            fail: Arc::new(|_| false),
            hang: Arc::new(|_| false),
        }
    }

    /// Every call so far, in the order the attempts started.
    pub fn calls(&self) -> Vec<Call<T>> {
        lock(&self.inner.calls).clone()
    }

    /// How many attempts started.
    pub fn len(&self) -> usize {
        lock(&self.inner.calls).len()
    }

    /// Whether no attempt started.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items of delivered batches, batch by batch, in seq order.
    pub fn delivered_batches(&self) -> Vec<Vec<T>> {
        let mut ok: Vec<Call<T>> = self.calls().into_iter().filter(|c| c.ok == Some(true)).collect();
        ok.sort_by_key(|c| c.seq);
        ok.into_iter().map(|c| c.items).collect()
    }

    /// The items of delivered batches, flattened in seq order.
    pub fn delivered(&self) -> Vec<T> {
        self.delivered_batches().into_iter().flatten().collect()
    }

    /// The attempts of batch `seq`, in order.
    pub fn attempts_of(&self, seq: u64) -> Vec<Call<T>> {
        self.calls().into_iter().filter(|c| c.seq == seq).collect()
    }

    /// The most attempts that were running at the same moment.
    pub fn max_running(&self) -> usize {
        self.inner.max_running.load(Ordering::SeqCst)
    }

    /// Attempts running now.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::SeqCst)
    }

    fn start(&self, batch: &Batch<T>) -> usize {
        let call = Call {
            seq: batch.seq(),
            attempt: batch.attempt(),
            trigger: batch.trigger(),
            items: batch.items().to_vec(),
            start: self.now(),
            end: None,
            ok: None,
        };
        let mut calls = lock(&self.inner.calls);
        calls.push(call);
        calls.len() - 1
    }

    fn finish(&self, index: usize, ok: bool) {
        let end = self.now();
        let mut calls = lock(&self.inner.calls);
        calls[index].end = Some(end);
        calls[index].ok = Some(ok);
    }
}

/// A script deciding something per batch attempt.
pub type Script<T, R> = Arc<dyn Fn(&Batch<T>) -> R + Send + Sync>;

/// The error a scripted failure reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The failed batch.
    pub seq: u64,
    /// The failed attempt.
    pub attempt: u32,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scripted failure of batch {} attempt {}", self.seq, self.attempt)
    }
}

impl std::error::Error for Failure {}

/// A handler that records every attempt in a [`Log`], with scripted latency, failures and hangs.
pub struct Recording<T> {
    log: Log<T>,
    latency: Script<T, Duration>,
    fail: Script<T, bool>,
    hang: Script<T, bool>,
}

impl<T> fmt::Debug for Recording<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Recording<T> {
    /// Every attempt takes `d` (on tokio's clock) before it ends.
    #[must_use]
    pub fn latency(self, d: Duration) -> Self {
        self.latency_by(move |_| d)
    }

    /// Each attempt takes as long as `f` says.
    #[must_use]
    pub fn latency_by(mut self, f: impl Fn(&Batch<T>) -> Duration + Send + Sync + 'static) -> Self {
        self.latency = Arc::new(f);
        self
    }

    /// An attempt fails when `f` says so (after its latency).
    #[must_use]
    pub fn fail_when(mut self, f: impl Fn(&Batch<T>) -> bool + Send + Sync + 'static) -> Self {
        self.fail = Arc::new(f);
        self
    }

    /// The first `n` attempts of every batch fail.
    #[must_use]
    pub fn fail_first(self, n: u32) -> Self {
        self.fail_when(move |b| b.attempt() <= n)
    }

    /// Every attempt fails.
    #[must_use]
    pub fn always_fail(self) -> Self {
        self.fail_when(|_| true)
    }

    /// An attempt never ends when `f` says so (until cancelled).
    #[must_use]
    pub fn hang_when(mut self, f: impl Fn(&Batch<T>) -> bool + Send + Sync + 'static) -> Self {
        self.hang = Arc::new(f);
        self
    }

    /// Every attempt hangs.
    #[must_use]
    pub fn hang(self) -> Self {
        self.hang_when(|_| true)
    }
}

/// Counts a running attempt; the count drops also when the attempt is cancelled.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T: Clone + Send + Sync + 'static> Handler<T> for Recording<T> {
    type Error = Failure;

    async fn handle(&self, batch: &mut Batch<T>) -> Result<(), Failure> {
        let inner = &self.log.inner;
        let index = self.log.start(batch);
        let now_running = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_running.fetch_max(now_running, Ordering::SeqCst);
        let _running = Running(&inner.running);
        let latency = (self.latency)(batch);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if (self.hang)(batch) {
            std::future::pending::<()>().await;
        }
        let fail = (self.fail)(batch);
        self.log.finish(index, !fail);
        if fail { Err(Failure { seq: batch.seq(), attempt: batch.attempt() }) } else { Ok(()) }
    }
}

/// How an attempt failed, as a dead letter reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The handler returned this error (its `Display`).
    Handler(String),
    /// The handler panicked with this message.
    Panicked(String),
    /// The attempt timed out after this long.
    TimedOut(Duration),
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter<T> {
    /// The batch's sequence number.
    pub seq: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The items, taken by value from the dead letter.
    pub items: Vec<T>,
    /// The last attempt's error.
    pub cause: Cause,
    /// When the error callback ran, since the recorder was created.
    pub at: Duration,
}

/// Records dead letters handed to `on_error`. Cloning it shares the record.
pub struct Letters<T> {
    origin: Instant,
    letters: Arc<Mutex<Vec<Letter<T>>>>,
}

impl<T> Clone for Letters<T> {
    fn clone(&self) -> Self {
        Self { origin: self.origin, letters: Arc::clone(&self.letters) }
    }
}

impl<T> fmt::Debug for Letters<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Letters").field("len", &lock(&self.letters).len()).finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Default for Letters<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Letters<T> {
    /// An empty recorder whose clock starts now.
    pub fn new() -> Self {
        Self { origin: Instant::now(), letters: Arc::new(Mutex::new(Vec::new())) }
    }

    /// An `on_error` callback recording into this recorder. It takes each letter's items by
    /// value and panics if it cannot (the contract says dead letters hand their items over).
    pub fn callback(&self) -> impl Fn(BatchError, DeadLetter<T>) + Send + Sync + 'static {
        let me = self.clone();
        move |error, letter| {
            let seq = letter.seq();
            let attempts = letter.attempts();
            let Ok(items) = letter.into_items() else {
                panic!("a dead letter hands its items over by value");
            };
            let cause = match error {
                BatchError::Handler(e) => Cause::Handler(e.to_string()),
                BatchError::Panicked(msg) => Cause::Panicked(msg),
                BatchError::TimedOut(d) => Cause::TimedOut(d),
                other => Cause::Handler(other.to_string()),
            };
            lock(&me.letters).push(Letter { seq, attempts, items, cause, at: me.origin.elapsed() });
        }
    }

    /// Every letter so far.
    pub fn all(&self) -> Vec<Letter<T>> {
        lock(&self.letters).clone()
    }

    /// The items of every letter, flattened in callback order.
    pub fn items(&self) -> Vec<T> {
        lock(&self.letters).iter().flat_map(|l| l.items.iter().cloned()).collect()
    }

    /// How many letters arrived.
    pub fn len(&self) -> usize {
        lock(&self.letters).len()
    }

    /// Whether no letter arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Records items evicted by `Overflow::DropOldest`. Cloning it shares the record.
pub struct Evicted<T> {
    items: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Evicted<T> {
    fn clone(&self) -> Self {
        Self { items: Arc::clone(&self.items) }
    }
}

impl<T> fmt::Debug for Evicted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evicted").finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Default for Evicted<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Evicted<T> {
    /// An empty recorder.
    pub fn new() -> Self {
        Self { items: Arc::new(Mutex::new(Vec::new())) }
    }

    /// An `on_evict` callback recording into this recorder.
    pub fn callback(&self) -> impl Fn(T) + Send + Sync + 'static {
        let me = self.clone();
        move |item| lock(&me.items).push(item)
    }

    /// The evicted items, in eviction order.
    pub fn items(&self) -> Vec<T> {
        lock(&self.items).clone()
    }
}

/// A tiny deterministic generator (xorshift64) for seeded random behaviour in stress tests.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed non-zero seed).
    pub const fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A value mixed from `parts` (a stateless hash, for decisions that must not depend on the
    /// order in which concurrent tasks ask).
    pub fn mix(parts: &[u64]) -> u64 {
        let mut g = Self::new(0x2545_F491_4F6C_DD1D);
        let mut acc = 0;
        for &p in parts {
            g.0 ^= p.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            acc = g.next_u64();
        }
        acc
    }
}
