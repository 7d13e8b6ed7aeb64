//! The demo checks its own accounting: every reading a sensor produced must have exactly one
//! fate (delivered, rejected by the sink, dead-lettered, expired, refused or handed back), the
//! batcher's counters must add up, the sink must hold exactly the delivered readings, once each,
//! and the readings the sink rejected must be exactly the garbled ones that reached it.
//!
//! With `--store`, the sink also receives readings of earlier runs (numbered below this run's
//! `seq_base`) that the store kept across a restart: they count as delivered by this run, and
//! are reported apart; `cargo xtask crash` checks them against what earlier runs promised.

use batch_tokio::Metrics;

use crate::report::thousands;
use crate::sensors::SensorReport;

/// What a sink holds after the run.
#[derive(Debug)]
pub(crate) struct SinkContents {
    /// What `count` counts, for the report.
    pub(crate) what: &'static str,
    /// Readings held (rows in SQLite; unique readings at the collector).
    pub(crate) count: u64,
    /// Keys held more than once (SQLite: duplicate rows; collector: readings received again).
    pub(crate) duplicates: u64,
    /// SQLite only: rows whose sequence number is not above the previous row of that sensor.
    pub(crate) order_violations: Option<u64>,
    /// Every `(sensor, seq)` held.
    pub(crate) keys: Vec<(u32, u64)>,
}

/// One verified statement.
#[derive(Debug)]
pub(crate) struct Check {
    /// Whether it holds.
    pub(crate) ok: bool,
    /// What was checked, with the numbers.
    pub(crate) text: String,
}

fn check(ok: bool, text: String) -> Check {
    Check { ok, text }
}

/// Everything the checks look at.
#[derive(Debug)]
pub(crate) struct Evidence<'a> {
    /// What each sensor produced and had refused.
    pub(crate) sensors: &'a [SensorReport],
    /// The batcher's final counters.
    pub(crate) metrics: &'a Metrics,
    /// Keys of dead-lettered readings (from `on_error`).
    pub(crate) dead: &'a [(u32, u64)],
    /// Dead-lettered readings and batches as counted by `on_error`.
    pub(crate) dead_counted: (u64, u64),
    /// Keys of readings handed back by a shutdown that hit its deadline.
    pub(crate) returned: &'a [(u32, u64)],
    /// Keys of readings the sink rejected for good (from `on_reject`).
    pub(crate) rejected: &'a [(u32, u64)],
    /// Keys of readings that expired (from `on_expire`).
    pub(crate) expired: &'a [(u32, u64)],
    /// Keys of the readings the sensors garbled on purpose.
    pub(crate) garbled: &'a [(u32, u64)],
    /// Readings whose delivery latency the sink recorded.
    pub(crate) latencies: u64,
    /// What the sink holds.
    pub(crate) sink: &'a SinkContents,
}

/// Runs every check.
pub(crate) fn run(e: &Evidence<'_>) -> Vec<Check> {
    let m = e.metrics;
    let produced: u64 = e.sensors.iter().map(|s| s.produced).sum();
    let refused: u64 = e.sensors.iter().map(|s| s.refused.len() as u64).sum();
    let earlier = earlier_runs(e);
    let from_store = if earlier == 0 {
        String::new()
    } else {
        format!(" (+ {} of earlier runs, from the store)", thousands(earlier))
    };
    let mut checks = vec![
        check(
            m.is_consistent(),
            format!(
                "metrics().is_consistent(): accepted {} = delivered + rejected + dead + expired + evicted + returned + buffered + in flight",
                thousands(m.accepted),
            ),
        ),
        check(
            produced + earlier
                == m.delivered
                    + m.rejected_by_handler
                    + m.dead_lettered
                    + m.expired
                    + m.rejected
                    + m.returned
                    + m.evicted,
            format!(
                "produced {}{from_store} = delivered {} + rejected by the sink {} + dead-lettered {} + expired {} + refused {} + returned {} + evicted {}",
                thousands(produced),
                thousands(m.delivered),
                thousands(m.rejected_by_handler),
                thousands(m.dead_lettered),
                thousands(m.expired),
                thousands(m.rejected),
                thousands(m.returned),
                thousands(m.evicted)
            ),
        ),
        check(
            refused == m.rejected,
            format!(
                "refusals seen by the sensors ({}) = metrics.rejected ({})",
                thousands(refused),
                thousands(m.rejected)
            ),
        ),
        check(
            e.dead_counted == (m.dead_lettered, m.batches_dead_lettered),
            format!(
                "on_error saw {} readings in {} batches = metrics ({} in {})",
                thousands(e.dead_counted.0),
                thousands(e.dead_counted.1),
                thousands(m.dead_lettered),
                thousands(m.batches_dead_lettered)
            ),
        ),
        check(
            e.latencies == m.delivered,
            format!(
                "latency recorded for every delivered reading ({} = {})",
                thousands(e.latencies),
                thousands(m.delivered)
            ),
        ),
        check(
            e.sink.count == m.delivered,
            format!("{}: {} = delivered {}", e.sink.what, thousands(e.sink.count), thousands(m.delivered)),
        ),
        check(
            e.sink.duplicates == 0,
            format!("no duplicate (sensor, seq) in the sink ({} found)", e.sink.duplicates),
        ),
    ];
    if let Some(violations) = e.sink.order_violations {
        checks.push(check(
            violations == 0,
            format!("each sensor's seq increases in insertion (rowid) order ({violations} out of order)"),
        ));
    }
    checks.push(check(
        (e.rejected.len() as u64, e.expired.len() as u64) == (m.rejected_by_handler, m.expired),
        format!(
            "on_reject saw {} readings, on_expire {} = metrics ({}, {})",
            thousands(e.rejected.len() as u64),
            thousands(e.expired.len() as u64),
            thousands(m.rejected_by_handler),
            thousands(m.expired)
        ),
    ));
    checks.push(garbled(e));
    checks.push(fates(e));
    checks
}

/// The sink rejected exactly the garbled readings that reached it: all of them but those that
/// never got an answer (dead-lettered, expired, refused or handed back).
fn garbled(e: &Evidence<'_>) -> Check {
    use std::collections::BTreeSet;
    let never_judged: BTreeSet<(u32, u64)> = e
        .dead
        .iter()
        .chain(e.expired)
        .chain(e.returned)
        .copied()
        .chain(e.sensors.iter().flat_map(|s| s.refused.iter().map(move |&seq| (s.sensor, seq))))
        .collect();
    let judged: BTreeSet<(u32, u64)> =
        e.garbled.iter().copied().filter(|k| !never_judged.contains(k)).collect();
    let rejected: BTreeSet<(u32, u64)> = e.rejected.iter().copied().collect();
    check(
        rejected == judged && rejected.len() == e.rejected.len(),
        format!(
            "readings rejected by the sink ({}) = the garbled ones that reached it ({} of {} garbled)",
            thousands(e.rejected.len() as u64),
            thousands(judged.len() as u64),
            thousands(e.garbled.len() as u64)
        ),
    )
}

/// Sink keys numbered below their sensor's `seq_base`: readings of earlier runs (`--store`).
pub(crate) fn earlier_runs(e: &Evidence<'_>) -> u64 {
    let base = |sensor: u32| e.sensors.iter().find(|s| s.sensor == sensor).map_or(0, |s| s.seq_base);
    e.sink.keys.iter().filter(|&&(sensor, seq)| seq < base(sensor)).count() as u64
}

/// Every produced `(sensor, seq)` is in exactly one place: the sink, the dead letters, the
/// refusals or the shutdown's remainder; and nothing is anywhere that was not produced.
fn fates(e: &Evidence<'_>) -> Check {
    let mut seen: Vec<Vec<u8>> =
        e.sensors.iter().map(|s| vec![0u8; usize::try_from(s.produced).unwrap_or(usize::MAX)]).collect();
    let bases: Vec<u64> = e.sensors.iter().map(|s| s.seq_base).collect();
    let mut unknown = 0u64;
    let mut mark = |sensor: u32, seq: u64| {
        let base = bases.get(sensor as usize).copied().unwrap_or(0);
        if seq < base {
            return; // an earlier run's reading, delivered from the store
        }
        let slot = seen.get_mut(sensor as usize).and_then(|v| v.get_mut(usize::try_from(seq - base).ok()?));
        match slot {
            Some(n) => *n = n.saturating_add(1),
            None => unknown += 1,
        }
    };
    for &(sensor, seq) in
        e.sink.keys.iter().chain(e.dead).chain(e.returned).chain(e.rejected).chain(e.expired)
    {
        mark(sensor, seq);
    }
    for s in e.sensors {
        for &seq in &s.refused {
            mark(s.sensor, seq);
        }
    }
    let missing: u64 = seen.iter().flatten().filter(|&&n| n == 0).count() as u64;
    let twice: u64 = seen.iter().flatten().filter(|&&n| n > 1).count() as u64;
    check(
        missing == 0 && twice == 0 && unknown == 0,
        format!(
            "each produced reading has exactly one fate (sink/rejected/dead/expired/refused/returned): \
             {missing} missing, {twice} twice, {unknown} unknown"
        ),
    )
}
