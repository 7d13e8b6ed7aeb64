//! Running the cases: every (item, producers, batch, implementation) combination, several runs
//! interleaved, every result checked, then one child process per case for its peak RSS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::peers::{Impl, Role, Shape};
use crate::probe::{Probe, quantile};
use crate::rss;
use crate::workload::{BATCH_SIZES, Bound, Item, ItemKind, PRODUCERS, WORKER_THREADS, Wide};

/// How big and how often.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Items per case for `u64`.
    pub(crate) n_u64: u64,
    /// Items per case for the 64-byte struct.
    pub(crate) n_wide: u64,
    /// Runs per case (the report shows the median).
    pub(crate) runs: usize,
    /// Whether to measure peak RSS in child processes.
    pub(crate) rss: bool,
    /// Which cases to run (all by default).
    pub(crate) only: Filter,
}

/// A subset of the cases, for targeted runs: each `None` or empty field accepts everything.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    /// Implementations (`--impls a,b`).
    pub(crate) impls: Vec<Impl>,
    /// The bound (`--bound`).
    pub(crate) bound: Option<Bound>,
    /// The item type (`--item`).
    pub(crate) item: Option<ItemKind>,
    /// Producer tasks (`--producers`).
    pub(crate) producers: Option<usize>,
    /// Batch size (`--batch`).
    pub(crate) batch: Option<usize>,
}

impl Filter {
    /// Whether `case` is selected.
    pub(crate) fn accepts(&self, case: Case) -> bool {
        (self.impls.is_empty() || self.impls.contains(&case.imp))
            && self.bound.is_none_or(|b| b == case.bound)
            && self.item.is_none_or(|i| i == case.item)
            && self.producers.is_none_or(|p| p == case.producers)
            && self.batch.is_none_or(|b| b == case.batch)
    }

    /// Whether every case is selected.
    pub(crate) fn is_everything(&self) -> bool {
        self.impls.is_empty()
            && self.bound.is_none()
            && self.item.is_none()
            && self.producers.is_none()
            && self.batch.is_none()
    }
}

impl Settings {
    /// Items per case for `item`.
    pub(crate) fn n(&self, item: ItemKind) -> u64 {
        match item {
            ItemKind::U64 => self.n_u64,
            ItemKind::Wide => self.n_wide,
        }
    }
}

/// Identifies a case; the order is the report's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Case {
    /// The room every implementation gets.
    pub(crate) bound: Bound,
    /// The item type.
    pub(crate) item: ItemKind,
    /// Producer tasks.
    pub(crate) producers: usize,
    /// Batch size.
    pub(crate) batch: usize,
    /// The implementation.
    pub(crate) imp: Impl,
}

impl Case {
    /// The shape of a run of `n` items.
    pub(crate) fn shape(self, n: u64) -> Shape {
        Shape {
            producers: self.producers,
            batch: self.batch,
            bound: self.bound.items(self.batch),
            chunk: self.bound.chunk(self.batch),
            n,
        }
    }

    /// Whether `other` is the same configuration (bound, item, producers, batch size).
    pub(crate) fn same_config(self, other: Self) -> bool {
        (self.bound, self.item, self.producers, self.batch)
            == (other.bound, other.item, other.producers, other.batch)
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} bound={} P={} B={}",
            self.imp.id(),
            self.item,
            self.bound,
            self.producers,
            self.batch
        )
    }
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// From the first add to the last item handled.
    pub(crate) elapsed: Duration,
    /// Handler calls.
    pub(crate) batches: u64,
    /// Add→handled nanoseconds of the sampled items.
    pub(crate) latencies: Vec<u32>,
}

/// Every case's measurements.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// The case.
    pub(crate) case: Case,
    /// Items per run.
    pub(crate) n: u64,
    /// Wall time of each run, first add to last item handled.
    pub(crate) times: Vec<Duration>,
    /// Batches the handler got in the last run.
    pub(crate) batches: u64,
    /// Add→handled nanoseconds of every sampled item of every run, sorted once all ran.
    pub(crate) latencies: Vec<u32>,
    /// Peak RSS of a child running this case once, in KiB.
    pub(crate) rss_kib: Option<u64>,
}

impl Row {
    /// The median wall time in seconds (the mean of the middle two for an even count).
    pub(crate) fn median_secs(&self) -> f64 {
        let mut t: Vec<f64> = self.times.iter().map(Duration::as_secs_f64).collect();
        t.sort_by(f64::total_cmp);
        let mid = t.len() / 2;
        if t.len() % 2 == 1 { t[mid] } else { f64::midpoint(t[mid - 1], t[mid]) }
    }

    /// Throughput at the median time.
    pub(crate) fn items_per_sec(&self) -> f64 {
        self.n as f64 / self.median_secs()
    }

    /// Nanoseconds per item at the median time.
    pub(crate) fn ns_per_item(&self) -> f64 {
        self.median_secs() * 1e9 / self.n as f64
    }

    /// (slowest - fastest) / median, as a share.
    pub(crate) fn spread(&self) -> f64 {
        let secs = || self.times.iter().map(Duration::as_secs_f64);
        let (lo, hi) = (secs().fold(f64::INFINITY, f64::min), secs().fold(0.0, f64::max));
        (hi - lo) / self.median_secs()
    }

    /// Items per handler call.
    pub(crate) fn mean_batch(&self) -> f64 {
        self.n as f64 / self.batches.max(1) as f64
    }

    /// The `q`-quantile of the add→handled latency in nanoseconds (`latencies` sorted).
    pub(crate) fn latency(&self, q: f64) -> Option<u32> {
        quantile(&self.latencies, q)
    }
}

/// Everything measured.
#[derive(Debug)]
pub(crate) struct Measured {
    /// One row per case, in report order.
    pub(crate) rows: Vec<Row>,
    /// Peak RSS of a child that built the runtime and ran nothing, in KiB.
    pub(crate) idle_rss_kib: Option<u64>,
}

impl Measured {
    /// The row of a case.
    pub(crate) fn get(&self, case: Case) -> Option<&Row> {
        self.rows.iter().find(|r| r.case == case)
    }

    /// The fastest row among `role` for the case's configuration.
    pub(crate) fn best(&self, case: Case, role: Role) -> Option<&Row> {
        self.best_where(case, |imp| imp.role() == role)
    }

    /// The fastest row among the implementations `pick` accepts, for the case's bound, item,
    /// producers and batch size.
    pub(crate) fn best_where(&self, case: Case, pick: impl Fn(Impl) -> bool) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|r| pick(r.case.imp) && r.case.same_config(case))
            .max_by(|a, b| a.items_per_sec().total_cmp(&b.items_per_sec()))
    }
}

/// The runtime every case runs on: multi-threaded, [`WORKER_THREADS`] workers.
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Every case, in report order.
pub(crate) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for bound in Bound::ALL {
        for item in ItemKind::ALL {
            for producers in PRODUCERS {
                for batch in BATCH_SIZES {
                    for imp in Impl::ALL {
                        cases.push(Case { bound, item, producers, batch, imp });
                    }
                }
            }
        }
    }
    cases
}

/// Runs one case once and checks the delivery: a lost, duplicated or unstamped item, or a batch
/// above B, is an error naming the case.
pub(crate) fn run_once(rt: &Runtime, case: Case, n: u64) -> Result<Outcome, String> {
    fn checked<T: Item>(rt: &Runtime, case: Case, n: u64) -> Result<Outcome, String> {
        let probe = Arc::new(Probe::new(n));
        let tally = case.imp.run::<T>(rt, case.shape(n), &probe);
        let elapsed = tally.check::<T>(case.batch).map_err(|e| format!("{case}: {e}"))?;
        Ok(Outcome { elapsed, batches: tally.batches, latencies: tally.latencies })
    }
    match case.item {
        ItemKind::U64 => checked::<u64>(rt, case, n),
        ItemKind::Wide => checked::<Wide>(rt, case, n),
    }
}

/// Runs every case `settings.runs` times. Within a run every implementation of a configuration
/// runs back to back, and the order rotates from run to run, so drift (other load, thermal
/// state) spreads over all of them instead of favouring one.
pub(crate) fn measure(settings: &Settings) -> Result<Measured, String> {
    let rt = runtime();
    let cases: Vec<Case> = cases().into_iter().filter(|&c| settings.only.accepts(c)).collect();
    let mut rows: BTreeMap<Case, Row> = cases
        .iter()
        .map(|&case| {
            let row = Row {
                case,
                n: settings.n(case.item),
                times: Vec::new(),
                batches: 0,
                latencies: Vec::new(),
                rss_kib: None,
            };
            (case, row)
        })
        .collect();
    // The cases of one configuration, back to back (`cases()` lists them so).
    let mut configs: Vec<Vec<Case>> = Vec::new();
    for &case in &cases {
        match configs.last_mut() {
            Some(config) if config[0].same_config(case) => config.push(case),
            _ => configs.push(vec![case]),
        }
    }
    for run in 0..settings.runs {
        eprintln!("run {}/{}", run + 1, settings.runs);
        for config in &configs {
            let started = Instant::now();
            let impls = config.len();
            for k in 0..impls {
                let case = config[(k + run) % impls];
                let outcome = run_once(&rt, case, settings.n(case.item))?;
                let row = rows.get_mut(&case).expect("every case has a row");
                row.times.push(outcome.elapsed);
                row.batches = outcome.batches;
                row.latencies.extend_from_slice(&outcome.latencies);
            }
            let c = config[0];
            eprintln!(
                "  bound {:<4} {} P={} B={:<4} all implementations in {:.2} s",
                c.bound,
                c.item,
                c.producers,
                c.batch,
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(rt);
    for row in rows.values_mut() {
        row.latencies.sort_unstable();
    }

    let mut idle_rss_kib = None;
    if settings.rss {
        eprintln!("peak RSS: one child process per case");
        let idle = Case {
            bound: Bound::Fixed,
            item: ItemKind::U64,
            producers: 1,
            batch: BATCH_SIZES[0],
            imp: Impl::LimitVec,
        };
        idle_rss_kib = rss::measure(None, idle, 0)?;
        for row in rows.values_mut() {
            row.rss_kib = rss::measure(Some(row.case.imp), row.case, row.n)?;
        }
    }
    Ok(Measured { rows: rows.into_values().collect(), idle_rss_kib })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_delivers_everything() {
        let rt = runtime();
        for case in cases() {
            let n = if case.item == ItemKind::U64 { 5_000 } else { 1_000 };
            let outcome = run_once(&rt, case, n).unwrap();
            assert_eq!(outcome.latencies.len(), Probe::new(n).samples(), "{case}");
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let case =
            Case { bound: Bound::Fixed, item: ItemKind::U64, producers: 1, batch: 16, imp: Impl::Kanal };
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect();
        let mut row = Row {
            case,
            n: 1000,
            times: ms(&[30, 10, 20]),
            batches: 10,
            latencies: vec![5, 7],
            rss_kib: None,
        };
        assert!((row.median_secs() - 0.020).abs() < 1e-12);
        row.times = ms(&[40, 10, 20, 30]);
        assert!((row.median_secs() - 0.025).abs() < 1e-12);
        assert!((row.mean_batch() - 100.0).abs() < 1e-12);
    }
}
