//! The cost of one push into the core against `heapless::Vec::push`, measured as
//! `batch-core/benches/push.rs` does: rounds of 1024 `u32` pushes into room for 1024, the pushes
//! timed with `std::time::Instant`, the draining not, best of several trials.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use batch_core::{Batch, Batcher, Config, Instant, Outcome};

/// Pushes per round (the buffer's room).
const N: usize = 1024;

type Core = Batcher<u32, N>;

/// Per-item costs in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PushCosts {
    /// `heapless::Vec<u32, 1024>::push`.
    pub(crate) heapless_vec: f64,
    /// `heapless::Deque<u32, 1024>::push_back` (the core's storage alone).
    pub(crate) heapless_deque: f64,
    /// `Batcher::push` with a `now` the caller has.
    pub(crate) core_fixed_now: f64,
    /// `Batcher::push_with(clock, item)` (clock read for a batch's first item only).
    pub(crate) core_lazy_clock: f64,
    /// Trials and rounds per trial.
    pub(crate) trials: u32,
    /// Rounds of [`N`] pushes per trial.
    pub(crate) rounds: u32,
}

/// A monotonic clock in the core's units.
fn clock() -> Instant {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    Instant::from_micros(start.elapsed().as_micros() as u64)
}

/// Best (lowest) per-item nanoseconds over `trials` trials of `rounds` rounds.
fn measure(trials: u32, rounds: u32, mut round: impl FnMut() -> Duration) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..trials {
        let mut total = Duration::ZERO;
        for _ in 0..rounds {
            total += round();
        }
        best = best.min(total.as_secs_f64() * 1e9 / f64::from(rounds) / N as f64);
    }
    best
}

/// Measures every variant (`trials` × `rounds` × 1024 pushes each).
pub(crate) fn measure_all(trials: u32, rounds: u32) -> PushCosts {
    let mut v: heapless::Vec<u32, N> = heapless::Vec::new();
    let heapless_vec = measure(trials, rounds, || {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            v.push(black_box(i)).expect("room for a round");
        }
        let e = t.elapsed();
        black_box(&v);
        v.clear();
        e
    });

    let mut d: heapless::Deque<u32, N> = heapless::Deque::new();
    let heapless_deque = measure(trials, rounds, || {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            d.push_back(black_box(i)).expect("room for a round");
        }
        let e = t.elapsed();
        black_box(&d);
        d.clear();
        e
    });

    let mut core = Core::new(Config::new().max_batch(N));
    let mut batch: Batch<u32, N> = Batch::new();
    let drain = |core: &mut Core, batch: &mut Batch<u32, N>| {
        let now = clock();
        let flush = core.poll_flush(now, batch).expect("a full batch");
        black_box(&*batch);
        batch.clear();
        let _ = core.handle_completion(now, flush.seq, Outcome::Delivered);
    };
    let now = clock();
    let core_fixed_now = measure(trials, rounds, || {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            core.push(black_box(now), black_box(i)).expect("room for a round");
        }
        let e = t.elapsed();
        drain(&mut core, &mut batch);
        e
    });
    let core_lazy_clock = measure(trials, rounds, || {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            core.push_with(clock, black_box(i)).expect("room for a round");
        }
        let e = t.elapsed();
        drain(&mut core, &mut batch);
        e
    });
    assert!(core.metrics().is_consistent(), "the core's counters are inconsistent");
    PushCosts { heapless_vec, heapless_deque, core_fixed_now, core_lazy_clock, trials, rounds }
}
