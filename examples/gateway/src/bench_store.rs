//! `--bench-store`: what store and forward costs, measured on the demo's own workload.
//!
//! Every case delivers readings into a fresh SQLite sink (the default mode's sink and settings:
//! batches of 500, linger 50 ms, one in flight, one transaction per batch) from producer tasks
//! that add as fast as the batcher takes them, and ends when the batcher has drained (every
//! reading delivered and, with a store, removed from it). Cases:
//!
//! - no store, `add`; and the same with RAM for the whole run (capacity 400,000), beside a
//!   spill-only store with that RAM: RAM never fills, the store is never written, and the
//!   difference is the cost of having one;
//! - a store with spill on overflow only, `add`, no outage. The producers are faster than the
//!   sink, so RAM fills while the one flight slot is busy, and that is an overflow: whole
//!   batches spill to disk and come back in order (the table counts them). A producer never
//!   waits for room while the store takes batches;
//! - a store with write-ahead, `add` (every batch appended before its first attempt and removed
//!   after it: two store transactions per batch);
//! - the same without spill: producers wait for room (backpressure), each batch is appended,
//!   delivered and removed;
//! - write-ahead with `add_durable`, each producer awaiting every reading (group commit: the
//!   readings that arrived while the previous append was being written share the next one),
//!   with the latency of each `add_durable` call, at two producer counts.
//!
//! Rounds are interleaved (every case once per round) and the table shows medians. Each run
//! checks that the sink holds every reading, so a figure never comes from a run that lost data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_tokio::handler::BoxError;
use batch_tokio::{Batcher, DiskStore, StorePolicy};
use hdrhistogram::Histogram;

use crate::dead_letters::DeadLetters;
use crate::report::{as_f64, dur, thousands};
use crate::rng::Faults;
use crate::sensors::Reading;
use crate::stats::DeliveryStats;
use crate::store_mode::READING_TAG;

/// Interleaved rounds; the table shows each case's median.
const ROUNDS: usize = 5;
/// Producers of the `add` cases.
const PRODUCERS: u32 = 8;
/// Readings per producer in the `add` cases.
const PER_PRODUCER: u64 = 50_000;

/// RAM for the whole run of the `add` cases.
const WHOLE_RUN: usize = PRODUCERS as usize * PER_PRODUCER as usize;

/// One configuration.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// No store; RAM for the whole run if `true`.
    Plain(bool),
    /// A store, spill on overflow only; RAM for the whole run if `true`.
    Spill(bool),
    /// A store with write-ahead; `add`.
    WriteAhead,
    /// A store with write-ahead and no spill; `add` (a full RAM makes producers wait).
    WriteAheadNoSpill,
    /// A store with write-ahead; `add_durable` from this many producers, this many readings each.
    Durable(u32, u64),
}

impl Case {
    fn label(self) -> String {
        match self {
            Self::Plain(false) => "no store, add".to_owned(),
            Self::Spill(false) => "store: spill only (no outage), add".to_owned(),
            Self::Plain(true) => "no store, add, RAM for the whole run".to_owned(),
            Self::Spill(true) => "store: spill only, add, RAM for the whole run".to_owned(),
            Self::WriteAhead => "store: write-ahead, add".to_owned(),
            Self::WriteAheadNoSpill => "store: write-ahead, no spill, add".to_owned(),
            Self::Durable(p, _) => format!("store: write-ahead, add_durable ({p} producers)"),
        }
    }

    fn policy(self) -> Option<StorePolicy> {
        match self {
            Self::Plain(_) => None,
            Self::Spill(_) => Some(StorePolicy::new().spill(true)),
            Self::WriteAhead | Self::Durable(..) => Some(StorePolicy::new().write_ahead(true)),
            Self::WriteAheadNoSpill => Some(StorePolicy::new().write_ahead(true).spill(false)),
        }
    }

    /// The capacity, if not the SQLite mode's 20,000.
    fn ram(self) -> Option<usize> {
        matches!(self, Self::Plain(true) | Self::Spill(true)).then_some(WHOLE_RUN)
    }

    fn shape(self) -> (u32, u64) {
        match self {
            Self::Durable(p, n) => (p, n),
            _ => (PRODUCERS, PER_PRODUCER),
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    readings: u64,
    took: Duration,
    /// `add_durable` latency p50 / p99 (durable cases).
    latency: Option<(Duration, Duration)>,
    /// Batches delivered, and of them loaded from the store (spilled), for the table.
    batches: (u64, u64),
}

/// Runs every case `ROUNDS` times, interleaved, and prints the medians.
pub(crate) async fn run() -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("gateway-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cases = [
        Case::Plain(false),
        Case::Spill(false),
        Case::WriteAhead,
        Case::WriteAheadNoSpill,
        Case::Durable(PRODUCERS, 500),
        Case::Durable(64, 250),
        Case::Plain(true),
        Case::Spill(true),
    ];
    println!(
        "gateway --bench-store: SQLite sink in {} (max_batch 500, linger 50 ms, 1 in flight),\n\
         store = batch-tokio DiskStore (SQLite WAL, synchronous=FULL) in the same directory;\n\
         {ROUNDS} interleaved rounds, medians; every run checks the sink holds every reading",
        dir.display()
    );
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    for round in 0..ROUNDS {
        for (i, &case) in cases.iter().enumerate() {
            let run = measure(case, &dir).await?;
            eprintln!(
                "  round {}/{ROUNDS}: {:<46} {:>9} readings/s",
                round + 1,
                case.label(),
                thousands(rate(&run))
            );
            results[i].push(run);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let plain = median_rate(&results[0]);
    let whole_plain = median_rate(&results[6]);
    println!(
        "\n| case | producers x readings | readings/s | x no store (same RAM) | batches (spilled and loaded back) | add_durable p50 / p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (case, runs) in cases.iter().zip(&results) {
        let (p, n) = case.shape();
        let r = median_rate(runs);
        // Each case against the no-store case with the same RAM.
        let plain = if case.ram().is_some() { whole_plain } else { plain };
        let latency =
            median_latency(runs).map_or_else(|| "-".to_owned(), |(a, b)| format!("{} / {}", dur(a), dur(b)));
        let mut batches: Vec<(u64, u64)> = runs.iter().map(|r| r.batches).collect();
        batches.sort_unstable();
        let (all, spilled) = batches.get(batches.len() / 2).copied().unwrap_or_default();
        println!(
            "| {} | {p} x {} | {} | {:.2}x | {} ({}) | {latency} |",
            case.label(),
            thousands(n),
            thousands(r),
            as_f64(r) / as_f64(plain.max(1)),
            thousands(all),
            thousands(spilled),
        );
    }
    println!(
        "\n(write-ahead: every batch cut from RAM is appended before its first attempt and removed\n\
         after it; a spilled batch is appended, loaded and removed. add_durable cuts a batch per\n\
         group commit: while the sink is busy those batches spill, so they stay small.)"
    );
    Ok(())
}

fn rate(run: &Run) -> u64 {
    crate::report::round_u64(as_f64(run.readings) / run.took.as_secs_f64())
}

fn median_rate(runs: &[Run]) -> u64 {
    let mut rates: Vec<u64> = runs.iter().map(rate).collect();
    rates.sort_unstable();
    rates.get(rates.len() / 2).copied().unwrap_or(0)
}

fn median_latency(runs: &[Run]) -> Option<(Duration, Duration)> {
    let mut l: Vec<(Duration, Duration)> = runs.iter().filter_map(|r| r.latency).collect();
    l.sort_unstable();
    l.get(l.len() / 2).copied()
}

/// One run of `case`, from a fresh sink and store.
async fn measure(case: Case, dir: &Path) -> Result<Run, BoxError> {
    let db = dir.join("sink.db");
    let conn = crate::sink_sqlite::create(&db)?;
    let store_file: PathBuf = dir.join("batches.db");
    crate::sink_sqlite::remove(&store_file);
    let stats = Arc::new(DeliveryStats::new());
    let dead = Arc::new(DeadLetters::new(None)?);
    let sink = crate::sink_sqlite::SqliteSink::new(conn, stats, Arc::new(Faults::new(0.0, 1)));
    let mut builder = crate::SQLITE.builder(42, &dead);
    if let Some(ram) = case.ram() {
        builder = builder.capacity(ram);
    }
    if let Some(policy) = case.policy() {
        builder = builder.disk_store(DiskStore::open(&store_file, READING_TAG).await?, policy);
    }
    let batcher = builder.spawn(sink)?;
    let (producers, per) = case.shape();
    let durable = matches!(case, Case::Durable(..));
    let start = Instant::now();
    let tasks: Vec<_> =
        (0..producers).map(|p| tokio::spawn(produce(batcher.clone(), p, producers, per, durable))).collect();
    let mut latencies = Histogram::<u64>::new(3)?;
    for t in tasks {
        latencies.add(t.await??)?;
    }
    let report = batcher.shutdown().await;
    let took = start.elapsed();
    let readings = u64::from(producers) * per;
    let m = report.metrics;
    let rows = crate::sink_sqlite::inspect(&db, 0)?;
    if m.delivered != readings || rows.count != readings || rows.duplicates != 0 || m.stored != 0 {
        return Err(format!(
            "{}: {readings} readings added, {} delivered, {} rows ({} duplicated keys), {} left in the store",
            case.label(),
            m.delivered,
            rows.count,
            rows.duplicates,
            m.stored
        )
        .into());
    }
    let latency = durable.then(|| {
        let q = |p: f64| Duration::from_micros(latencies.value_at_quantile(p));
        (q(0.5), q(0.99))
    });
    Ok(Run { readings, took, latency, batches: (m.batches_delivered, m.flushes.store) })
}

/// One producer: `per` readings as fast as the batcher takes them; with `durable`, each awaited
/// with `add_durable` and its latency recorded (microseconds).
async fn produce(
    batcher: Batcher<Reading>,
    p: u32,
    producers: u32,
    per: u64,
    durable: bool,
) -> Result<Histogram<u64>, BoxError> {
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..per {
        let reading = Reading::synthetic(i * u64::from(producers) + u64::from(p), producers);
        if durable {
            let t = Instant::now();
            batcher.add_durable(reading).await.map_err(|e| e.to_string())?;
            hist.record(crate::stats::micros(t.elapsed()).max(1))?;
        } else {
            batcher.add(reading).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(hist)
}
