//! Soak: push many items (10^8 by default) through batch-tokio and watch memory.
//!
//! Four producers (`add`, `add_many` in large and small chunks, `try_add` with retry, and
//! `add_urgent` now and then) feed one batcher on a multi-thread runtime; about 1% of attempts
//! fail (seeded, retried once with backoff, so about one batch in 10,000 is dead-lettered); a task
//! pauses and resumes the batcher periodically. A thread samples the resident set (`VmRSS` in
//! `/proc/self/status`) every 20 ms (`--sample-ms`). On a 2-core machine 10^8 items take a
//! few seconds (about 200 samples); `1e10` items run for minutes.
//!
//! At the end it checks that every item produced was delivered or dead-lettered exactly once (a
//! count and an order-independent checksum per outcome, and the batcher's metrics), that each
//! batch kept each producer's order, and compares the mean RSS of the first and last 10% of the
//! samples. It exits non-zero if the accounting does not add up or the last 10% exceed the first
//! 10% by more than 10% plus 4 MiB of slack (a leak grows with the items pushed; allocator noise
//! does not).
//!
//! ```text
//! cargo xtask soak                      # 10^8 items (release build)
//! cargo xtask soak 1e7 --seed 7         # fewer items, another failure pattern
//! cargo run --release -p batch-tests --bin soak -- --items 1e6 --producers 4 --fail-permille 10
//! ```
//!
//! `BATCH_SOAK_ITEMS` also sets the number of items.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::too_many_lines,
    clippy::duration_suboptimal_units
)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch_tests::XorShift;
use batch_tokio::handler::{Batch, Handler};
use batch_tokio::{Batcher, PushError};

const MIB: f64 = 1024.0 * 1024.0;
/// Allowed growth of the last 10% of RSS samples over the first 10%.
const GROWTH: f64 = 0.10;
const SLACK_MIB: f64 = 4.0;

struct Args {
    items: u64,
    producers: u64,
    seed: u64,
    fail_permille: u64,
    sample_ms: u64,
}

fn parse_count(s: &str) -> Result<u64, String> {
    let s = s.trim().replace('_', "");
    if let Some((m, e)) = s.split_once(['e', 'E']) {
        let m: f64 = m.parse().map_err(|_| format!("not a number: {s}"))?;
        let e: i32 = e.parse().map_err(|_| format!("not a number: {s}"))?;
        return Ok((m * 10f64.powi(e)).round() as u64);
    }
    s.parse().map_err(|_| format!("not a number: {s}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { items: 100_000_000, producers: 4, seed: 1, fail_permille: 10, sample_ms: 20 };
    if let Ok(v) = std::env::var("BATCH_SOAK_ITEMS") {
        args.items = parse_count(&v)?;
    }
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next().ok_or_else(|| format!("{name} needs a value")).and_then(|v| parse_count(&v))
        };
        match a.as_str() {
            "--items" => args.items = value("--items")?,
            "--producers" => args.producers = value("--producers")?.max(1),
            "--seed" => args.seed = value("--seed")?,
            "--fail-permille" => args.fail_permille = value("--fail-permille")?.min(1000),
            "--sample-ms" => args.sample_ms = value("--sample-ms")?.max(1),
            "-h" | "--help" => {
                return Err("usage: soak [ITEMS] [--items N] [--producers P] [--seed S] [--fail-permille F] [--sample-ms MS]".into());
            }
            other => args.items = parse_count(other)?,
        }
    }
    Ok(args)
}

/// An order-independent fingerprint of one item (splitmix64's finalizer).
fn fingerprint(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn item(p: u64, n: u64) -> u64 {
    (p << 48) | n
}

/// What reached a final outcome: items, and the wrapping sum of their fingerprints.
#[derive(Default)]
struct Tally {
    items: AtomicU64,
    sum: AtomicU64,
}

impl Tally {
    fn add(&self, items: &[u64]) {
        let sum = items.iter().fold(0u64, |a, &x| a.wrapping_add(fingerprint(x)));
        self.items.fetch_add(items.len() as u64, Ordering::Relaxed);
        self.sum.fetch_add(sum, Ordering::Relaxed);
    }
}

/// The handler: fails about `fail_permille`/1000 of attempts (decided by seed, batch and attempt),
/// otherwise counts the batch as delivered and checks each producer's order inside it.
struct Sink {
    seed: u64,
    fail_permille: u64,
    delivered: Tally,
    attempts: AtomicU64,
    failures: AtomicU64,
    out_of_order: AtomicU64,
}

#[derive(Debug)]
struct Injected;

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected failure")
    }
}

impl std::error::Error for Injected {}

impl Handler<u64> for Sink {
    type Error = Injected;
    async fn handle(&self, batch: &mut Batch<u64>) -> Result<(), Injected> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if XorShift::mix(&[self.seed, batch.seq(), u64::from(batch.attempt())]) % 1000 < self.fail_permille {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Injected);
        }
        let mut last = [None::<u64>; 64];
        for &x in batch.iter() {
            let (p, n) = ((x >> 48) as usize % 64, x & 0xFFFF_FFFF_FFFF);
            if last[p].is_some_and(|prev| prev >= n) {
                self.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            last[p] = Some(n);
        }
        self.delivered.add(batch.items());
        Ok(())
    }
}

/// The sink shared with `main`, as the batcher's handler.
struct Shared(Arc<Sink>);
impl Handler<u64> for Shared {
    type Error = Injected;
    fn handle(
        &self,
        batch: &mut Batch<u64>,
    ) -> impl std::future::Future<Output = Result<(), Injected>> + Send {
        self.0.handle(batch)
    }
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mean(xs: &[u64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<u64>() as f64 / xs.len() as f64 }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let started = Instant::now();

    // RSS sampler: a plain thread, every half second by default.
    let samples: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
        let every = Duration::from_millis(args.sample_ms);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes() {
                    samples.lock().unwrap().push(rss);
                }
                std::thread::sleep(every);
            }
        })
    };

    let sink = Arc::new(Sink {
        seed: args.seed,
        fail_permille: args.fail_permille,
        delivered: Tally::default(),
        attempts: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
    });
    let dead = Arc::new(Tally::default());
    let letters_kept = Arc::new(AtomicU64::new(0));

    let (produced, pauses, metrics) = rt.block_on(async {
        let b = {
            let (dead, kept) = (Arc::clone(&dead), Arc::clone(&letters_kept));
            Batcher::builder()
                .capacity(16_384)
                .max_batch(1_024)
                .linger(Duration::from_millis(5))
                .max_in_flight(2)
                // Two attempts: at 1% failures about one batch in 10,000 is dead-lettered.
                .max_attempts(2)
                .retry_delays(Duration::from_micros(200), Duration::from_millis(5))
                .jitter(500, args.seed as u32)
                .on_error(move |_error, letter| match letter.into_items() {
                    Ok(items) => dead.add(&items),
                    Err(_) => {
                        kept.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .spawn(Shared(Arc::clone(&sink)))
                .expect("a valid configuration")
        };

        // Pause for 2 ms every 100 ms.
        let done = Arc::new(AtomicBool::new(false));
        let toggler = {
            let (b, done) = (b.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut pauses = 0u64;
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    b.pause();
                    pauses += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    b.resume();
                }
                pauses
            })
        };

        // Progress, every 5 s.
        let progress = {
            let (b, done, samples) = (b.clone(), Arc::clone(&done), Arc::clone(&samples));
            let total = args.items;
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let m = b.metrics();
                    let rss = samples.lock().unwrap().last().copied().unwrap_or(0);
                    eprintln!(
                        "soak: {:>6.1} s  accepted {:>11} ({:5.1}%)  delivered {:>11}  retries {:>7}  RSS {:6.1} MiB",
                        started.elapsed().as_secs_f64(),
                        m.accepted,
                        m.accepted as f64 * 100.0 / total.max(1) as f64,
                        m.delivered,
                        m.retries,
                        rss as f64 / MIB
                    );
                }
            })
        };

        let producers: Vec<_> = (0..args.producers)
            .map(|p| {
                let b = b.clone();
                let share = args.items / args.producers + u64::from(p < args.items % args.producers);
                tokio::spawn(async move {
                    let mut sum = 0u64;
                    let mut n = 0u64;
                    let mut chunk = Vec::with_capacity(1_000);
                    while n < share {
                        match p % 4 {
                            // add, with an urgent item every 100,000
                            0 => {
                                let x = item(p, n);
                                if n % 100_000 == 99_999 {
                                    b.add_urgent(x).await.expect("open");
                                } else {
                                    b.add(x).await.expect("open");
                                }
                                sum = sum.wrapping_add(fingerprint(x));
                                n += 1;
                            }
                            // add_many, 1,000 or 64 at a time
                            1 | 3 => {
                                let k = (if p % 4 == 1 { 1_000 } else { 64 }).min(share - n);
                                chunk.clear();
                                chunk.extend((n..n + k).map(|i| item(p, i)));
                                for &x in &chunk {
                                    sum = sum.wrapping_add(fingerprint(x));
                                }
                                b.add_many(chunk.drain(..)).await.expect("open");
                                n += k;
                            }
                            // try_add, retrying the handed-back item while full
                            _ => {
                                let mut x = item(p, n);
                                loop {
                                    match b.try_add(x) {
                                        Ok(()) => break,
                                        Err(PushError::Full(back)) => {
                                            x = back;
                                            tokio::task::yield_now().await;
                                        }
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                                sum = sum.wrapping_add(fingerprint(x));
                                n += 1;
                            }
                        }
                        if n.is_multiple_of(4_096) {
                            tokio::task::yield_now().await;
                        }
                    }
                    (n, sum)
                })
            })
            .collect();
        let mut produced = (0u64, 0u64);
        for t in producers {
            let (n, sum) = t.await.expect("a producer panicked");
            produced.0 += n;
            produced.1 = produced.1.wrapping_add(sum);
        }
        done.store(true, Ordering::Relaxed);
        let pauses = toggler.await.expect("toggler");
        b.resume();
        b.shutdown().await;
        progress.abort();
        (produced, pauses, b.metrics())
    });
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let elapsed = started.elapsed();

    // Accounting.
    let mut failures = Vec::new();
    let delivered = sink.delivered.items.load(Ordering::Relaxed);
    let dead_items = dead.items.load(Ordering::Relaxed);
    let settled_sum =
        sink.delivered.sum.load(Ordering::Relaxed).wrapping_add(dead.sum.load(Ordering::Relaxed));
    if produced.0 != args.items {
        failures.push(format!("produced {} items, asked for {}", produced.0, args.items));
    }
    if delivered + dead_items != produced.0 {
        failures
            .push(format!("delivered {delivered} + dead-lettered {dead_items} != produced {}", produced.0));
    }
    if settled_sum != produced.1 {
        failures
            .push("the checksum of delivered and dead-lettered items differs from the produced ones".into());
    }
    if !metrics.is_consistent()
        || metrics.accepted != produced.0
        || metrics.delivered != delivered
        || metrics.dead_lettered != dead_items
        || metrics.evicted + metrics.returned + metrics.buffered + metrics.in_flight != 0
    {
        failures.push(format!("metrics do not match what was observed: {metrics:?}"));
    }
    let out_of_order = sink.out_of_order.load(Ordering::Relaxed);
    if out_of_order != 0 {
        failures.push(format!("{out_of_order} items out of their producer's order within a batch"));
    }
    if letters_kept.load(Ordering::Relaxed) != 0 {
        failures.push("a dead letter could not hand its items over".into());
    }

    // Memory.
    let samples = samples.lock().unwrap().clone();
    let tenth = (samples.len() / 10).max(1);
    let (first, last) = if samples.len() >= 2 {
        (mean(&samples[..tenth]), mean(&samples[samples.len() - tenth..]))
    } else {
        (0.0, 0.0)
    };
    let ratio = if first > 0.0 { last / first } else { 1.0 };
    let limit = first * (1.0 + GROWTH) + SLACK_MIB * MIB;
    let memory_ok = samples.len() < 2 || last <= limit;
    if !memory_ok {
        failures.push(format!(
            "RSS grew: last 10% mean {:.1} MiB > first 10% mean {:.1} MiB * {:.2} + {SLACK_MIB} MiB",
            last / MIB,
            first / MIB,
            1.0 + GROWTH
        ));
    }

    let secs = elapsed.as_secs_f64();
    println!(
        "soak: {} items, {} producers, seed {}, fail {} permille: {:.1} s ({:.2} M items/s)",
        args.items,
        args.producers,
        args.seed,
        args.fail_permille,
        secs,
        args.items as f64 / secs / 1e6
    );
    println!(
        "  delivered {delivered}, dead-lettered {dead_items} ({} batches), batches {}, attempts {}, failed attempts {}, retries {}, pauses {pauses}, try_add refusals while full (retried) {}",
        metrics.batches_dead_lettered,
        metrics.flushes.total(),
        sink.attempts.load(Ordering::Relaxed),
        sink.failures.load(Ordering::Relaxed),
        metrics.retries,
        metrics.rejected,
    );
    println!(
        "  flushes: size {}, linger {}, urgent {}, close {}; oldest item at a cut {}",
        metrics.flushes.size,
        metrics.flushes.linger,
        metrics.flushes.urgent,
        metrics.flushes.close,
        metrics.max_item_age
    );
    println!(
        "  RSS: {} samples; first 10% mean {:.1} MiB, last 10% mean {:.1} MiB, ratio {:.3} (limit {:.1} MiB); peak {:.1} MiB",
        samples.len(),
        first / MIB,
        last / MIB,
        ratio,
        limit / MIB,
        samples.iter().copied().max().unwrap_or(0) as f64 / MIB
    );
    if samples.len() < 10 {
        println!("  (fewer than 10 samples: a weak memory verdict; try --sample-ms 50 or more items)");
    }
    if failures.is_empty() {
        println!("soak: ok (lost 0)");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("soak: FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}
