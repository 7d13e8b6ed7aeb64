//! What a push costs: `Batcher::push` against `heapless::Vec::push`, the floor for "append an item
//! to a fixed buffer", on the same workload (1024 `u32`s into room for 1024) in one process.
//!
//! Run with `cargo bench -p batch-core --bench push`. Divan prints each benchmark's time per
//! round of 1024 pushes and, with the item counter, throughput; fresh buffers are made outside the
//! timed region (`with_inputs`), so only the pushes are timed. After divan's table, a plain
//! `std::time::Instant` loop (pushes timed, draining untimed, best of several trials) prints the
//! per-item cost of each variant and its ratio to `heapless::Vec::push`.
//!
//! Variants:
//! - `heapless_vec_push`: `heapless::Vec<u32, 1024>::push`.
//! - `heapless_deque_push_back`: `heapless::Deque<u32, 1024>::push_back`, the ring buffer the
//!   core stores items in (what the container alone costs).
//! - `core_push_fixed_now`: `Batcher::push` with a `now` the caller already has (no clock read).
//! - `core_push_clock_each`: `Batcher::push(clock(), item)`, a monotonic clock read per item, as a
//!   naive driver does.
//! - `core_push_with_lazy_clock`: `Batcher::push_with(clock, item)`: the core reads the clock only
//!   for a batch's first item.
//! - `core_push_and_drain`: a whole cycle: 1024 pushes, `poll_flush` into the driver's buffer and
//!   `handle_completion`.

use std::hint::black_box;
use std::sync::OnceLock;

use batch_core::{Batch, Batcher, Config, Instant, Outcome};
use divan::Bencher;
use divan::counter::ItemsCount;

const N: usize = 1024;
const CONFIG: Config = Config::new().max_batch(N);

type Core = Batcher<u32, N>;

/// A monotonic clock in the core's units, as an adapter converts its runtime's time.
fn clock() -> Instant {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    Instant::from_micros(start.elapsed().as_micros() as u64)
}

fn main() {
    divan::main();
    ratios();
}

#[divan::bench]
fn heapless_vec_push(b: Bencher<'_, '_>) {
    b.counter(ItemsCount::new(N)).with_inputs(heapless::Vec::<u32, N>::new).bench_local_refs(|v| {
        for i in 0..N as u32 {
            v.push(black_box(i)).unwrap();
        }
    });
}

#[divan::bench]
fn heapless_deque_push_back(b: Bencher<'_, '_>) {
    b.counter(ItemsCount::new(N)).with_inputs(heapless::Deque::<u32, N>::new).bench_local_refs(|d| {
        for i in 0..N as u32 {
            d.push_back(black_box(i)).unwrap();
        }
    });
}

#[divan::bench]
fn core_push_fixed_now(b: Bencher<'_, '_>) {
    let now = clock();
    b.counter(ItemsCount::new(N)).with_inputs(|| Core::new(CONFIG)).bench_local_refs(|core| {
        for i in 0..N as u32 {
            core.push(black_box(now), black_box(i)).unwrap();
        }
    });
}

#[divan::bench]
fn core_push_clock_each(b: Bencher<'_, '_>) {
    b.counter(ItemsCount::new(N)).with_inputs(|| Core::new(CONFIG)).bench_local_refs(|core| {
        for i in 0..N as u32 {
            core.push(clock(), black_box(i)).unwrap();
        }
    });
}

#[divan::bench]
fn core_push_with_lazy_clock(b: Bencher<'_, '_>) {
    b.counter(ItemsCount::new(N)).with_inputs(|| Core::new(CONFIG)).bench_local_refs(|core| {
        for i in 0..N as u32 {
            core.push_with(clock, black_box(i)).unwrap();
        }
    });
}

#[divan::bench]
fn core_push_and_drain(b: Bencher<'_, '_>) {
    let mut core = Core::new(CONFIG);
    let mut batch: Batch<u32, N> = Batch::new();
    let now = clock();
    b.counter(ItemsCount::new(N)).bench_local(|| {
        for i in 0..N as u32 {
            core.push(now, black_box(i)).unwrap();
        }
        let flush = core.poll_flush(now, &mut batch).expect("a full batch");
        black_box(&batch);
        batch.clear();
        let done = core.handle_completion(now, flush.seq, Outcome::Delivered);
        black_box(done);
    });
}

// -------------------------------------------------------------------------------------------
// Ratios: the pushes alone, timed with `std::time::Instant`, draining outside the timed part.
// -------------------------------------------------------------------------------------------

const ROUNDS: u32 = 2_000;
const TRIALS: u32 = 7;

/// Best (lowest) per-item nanoseconds over `TRIALS` trials of `ROUNDS` rounds of `N` pushes.
fn measure(mut round: impl FnMut() -> std::time::Duration) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..TRIALS {
        let mut total = std::time::Duration::ZERO;
        for _ in 0..ROUNDS {
            total += round();
        }
        let per_item = total.as_secs_f64() * 1e9 / f64::from(ROUNDS) / f64::from(N as u32);
        best = best.min(per_item);
    }
    best
}

fn ratios() {
    let mut v: heapless::Vec<u32, N> = heapless::Vec::new();
    let vec_ns = measure(|| {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            v.push(black_box(i)).unwrap();
        }
        let e = t.elapsed();
        black_box(&v);
        v.clear();
        e
    });

    let mut d: heapless::Deque<u32, N> = heapless::Deque::new();
    let deque_ns = measure(|| {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            d.push_back(black_box(i)).unwrap();
        }
        let e = t.elapsed();
        black_box(&d);
        d.clear();
        e
    });

    let mut core = Core::new(CONFIG);
    let mut batch: Batch<u32, N> = Batch::new();
    let drain = |core: &mut Core, batch: &mut Batch<u32, N>| {
        let now = clock();
        let flush = core.poll_flush(now, batch).expect("a full batch");
        black_box(&*batch);
        batch.clear();
        let _ = core.handle_completion(now, flush.seq, Outcome::Delivered);
    };

    let now = clock();
    let fixed_ns = measure(|| {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            core.push(black_box(now), black_box(i)).unwrap();
        }
        let e = t.elapsed();
        drain(&mut core, &mut batch);
        e
    });
    let each_ns = measure(|| {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            core.push(clock(), black_box(i)).unwrap();
        }
        let e = t.elapsed();
        drain(&mut core, &mut batch);
        e
    });
    let lazy_ns = measure(|| {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            core.push_with(clock, black_box(i)).unwrap();
        }
        let e = t.elapsed();
        drain(&mut core, &mut batch);
        e
    });
    let cycle_ns = measure(|| {
        let t = std::time::Instant::now();
        for i in 0..N as u32 {
            core.push(now, black_box(i)).unwrap();
        }
        drain(&mut core, &mut batch);
        t.elapsed()
    });
    assert!(core.metrics().is_consistent());

    println!();
    println!("per item, best of {TRIALS} trials x {ROUNDS} rounds x {N} pushes:");
    println!("  heapless::Vec::push              {vec_ns:7.2} ns");
    for (name, ns) in [
        ("heapless::Deque::push_back", deque_ns),
        ("core push (fixed now)", fixed_ns),
        ("core push (clock read each)", each_ns),
        ("core push_with (lazy clock)", lazy_ns),
        ("core push + poll_flush + complete", cycle_ns),
    ] {
        println!("  {name:<33}{ns:7.2} ns   {:6.2}x heapless push", ns / vec_ns);
    }
    println!("core push / heapless push = {:.2}x", fixed_ns / vec_ns);
    println!("core push_with (lazy clock) / heapless push = {:.2}x", lazy_ns / vec_ns);
}
