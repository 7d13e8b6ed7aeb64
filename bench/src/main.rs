//! `batch-bench`: batch-tokio against the ways people batch on tokio without it, and against the
//! single-thread limit, on one workload in one process.
//!
//! ```text
//! batch-bench [--smoke] [--runs R] [--n N] [--n-wide N] [--out DIR] [--no-rss]
//! ```
//!
//! Runs every (bound, item type, producers, batch size, implementation) case `R` times
//! (interleaved), checks every delivery, samples add→handled latency, measures each case's peak
//! RSS in a child process, times batch-core's push against `heapless::Vec::push`, prints the
//! Markdown report and, with `--out DIR`, writes `DIR/results.md` and `DIR/throughput.png`.
//! `--impls`, `--bound`, `--item`, `--producers` and `--batch` restrict a run to some cases (for
//! targeted measurements; the report then shows only those, and the push micro-benchmark is
//! skipped).
//! `--smoke` is the quick correctness pass CI runs (tiny N, one run). `cargo xtask bench` is the
//! usual entry point.
//!
//! Internally the binary re-executes itself as
//! `batch-bench --only IMPL --bound BOUND --item ITEM --producers P --batch B --n N` for the RSS
//! children.
#![allow(
    clippy::cast_precision_loss,
    reason = "statistics and display of counts, sizes and durations far below 2^52"
)]

mod chart;
mod peers;
mod probe;
mod push;
mod report;
mod rss;
mod suite;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use peers::Impl;
use suite::{Case, Settings};
use workload::{Bound, ItemKind};

/// What the command line asked for.
#[derive(Debug)]
enum Mode {
    /// The whole benchmark.
    Bench { settings: Settings, out: Option<PathBuf>, smoke: bool },
    /// One case in a child process (or the idle baseline), for its peak RSS.
    Child { imp: Option<Impl>, case: Case, n: u64 },
}

const USAGE: &str = "usage: batch-bench [--smoke] [--runs R] [--n N] [--n-wide N] [--out DIR] [--no-rss]
                   [--impls A,B] [--bound 4b|8192] [--item u64|64B] [--producers P] [--batch B]
       batch-bench --only IMPL|idle --bound 4b|8192 --item u64|64B --producers P --batch B --n N

  --smoke      tiny N and one run: checks every implementation at both bounds, times nothing
  --runs R     runs per case, median reported (default 7)
  --n N        u64 items per case (default 2000000)
  --n-wide N   64-byte items per case (default 1000000)
  --out DIR    write DIR/results.md and DIR/throughput.png
  --no-rss     skip the peak-RSS child processes
  --impls, --bound, --item, --producers, --batch
               run only the matching cases (implementations by their --only name)";

fn parse(args: &[String]) -> Result<Mode, String> {
    let mut it = args.iter();
    let mut smoke = false;
    let mut runs = None;
    let mut n = None;
    let mut n_wide = None;
    let mut out = None;
    let mut rss = true;
    let mut only = None;
    let mut filter = suite::Filter::default();
    let num = |flag: &str, v: Option<&String>| -> Result<u64, String> {
        v.ok_or_else(|| format!("{flag} needs a value"))?.parse().map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--no-rss" => rss = false,
            "--runs" => runs = Some(num(arg, it.next())? as usize),
            "--n" => n = Some(num(arg, it.next())?),
            "--n-wide" => n_wide = Some(num(arg, it.next())?),
            "--out" => out = Some(PathBuf::from(it.next().ok_or("--out needs a directory")?)),
            "--only" => only = Some(it.next().ok_or("--only needs an implementation")?.clone()),
            "--impls" => {
                let v = it.next().ok_or("--impls needs a list")?;
                for id in v.split(',') {
                    filter
                        .impls
                        .push(Impl::parse(id).ok_or_else(|| format!("unknown implementation `{id}`"))?);
                }
            }
            "--bound" => {
                let v = it.next().ok_or("--bound needs a value")?;
                filter.bound = Some(Bound::parse(v).ok_or_else(|| format!("unknown bound `{v}`"))?);
            }
            "--item" => {
                let v = it.next().ok_or("--item needs a value")?;
                filter.item = Some(ItemKind::parse(v).ok_or_else(|| format!("unknown item type `{v}`"))?);
            }
            "--producers" => filter.producers = Some(num(arg, it.next())? as usize),
            "--batch" => filter.batch = Some(num(arg, it.next())? as usize),
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if let Some(only) = only {
        let bound = filter.bound.unwrap_or(Bound::Fixed);
        let item = filter.item.unwrap_or(ItemKind::U64);
        let producers = filter.producers.unwrap_or(1);
        let batch = filter.batch.unwrap_or(16);
        let imp = if only == rss::IDLE {
            None
        } else {
            Some(Impl::parse(&only).ok_or_else(|| format!("unknown implementation `{only}`"))?)
        };
        if producers == 0 || batch == 0 {
            return Err("--producers and --batch must be positive".into());
        }
        let case = Case { bound, item, producers, batch, imp: imp.unwrap_or(Impl::LimitVec) };
        return Ok(Mode::Child { imp, case, n: n.unwrap_or(1000) });
    }
    let settings = Settings {
        n_u64: n.unwrap_or(if smoke { 20_000 } else { 2_000_000 }),
        n_wide: n_wide.unwrap_or(if smoke { 5_000 } else { 1_000_000 }),
        runs: runs.unwrap_or(if smoke { 1 } else { 7 }).max(1),
        rss,
        only: filter,
    };
    Ok(Mode::Bench { settings, out, smoke })
}

fn child(imp: Option<Impl>, case: Case, n: u64) -> Result<(), String> {
    let rt = suite::runtime();
    if imp.is_some() {
        suite::run_once(&rt, case, n)?;
    } else {
        rt.block_on(tokio::task::yield_now());
    }
    drop(rt);
    println!("{}", rss::child_line(rss::peak_kib()));
    Ok(())
}

fn bench(settings: &Settings, out: Option<PathBuf>, smoke: bool) -> Result<(), String> {
    let started = Instant::now();
    let machine = report::Machine::detect();
    eprintln!(
        "batch-bench: {} u64 / {} 64B items per case, {} run(s), {} on {} ({} CPUs)",
        settings.n_u64, settings.n_wide, settings.runs, machine.rustc, machine.cpu, machine.cpus
    );
    let measured = suite::measure(settings)?;
    eprintln!("push micro-benchmark");
    let push = if smoke || !settings.only.is_everything() {
        push::measure_all(1, 20)
    } else {
        push::measure_all(7, 2_000)
    };
    let report = report::Report {
        machine: &machine,
        settings,
        measured: &measured,
        push: &push,
        elapsed: started.elapsed(),
    };
    let md = report.markdown();
    println!("{md}");
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let results = dir.join("results.md");
        std::fs::write(&results, &md).map_err(|e| format!("writing {}: {e}", results.display()))?;
        let png = dir.join("throughput.png");
        let title = format!("batch-tokio vs peers: throughput against batch size ({})", machine.date);
        chart::draw(&measured, &title, &png)?;
        eprintln!("wrote {} and {}", results.display(), png.display());
    }
    eprintln!(
        "batch-bench: {} cases x {} run(s) checked in {:.1} s",
        measured.rows.len(),
        settings.runs,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|mode| match mode {
        Mode::Bench { settings, out, smoke } => bench(&settings, out, smoke),
        Mode::Child { imp, case, n } => child(imp, case, n),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batch-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
