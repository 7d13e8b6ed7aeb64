//! The summary table printed on stdout at the end of a run.

use std::fmt::Write as _;
use std::time::Duration;

use batch_tokio::{Metrics, Trigger};

use crate::check::Check;
use crate::stats::StatsSnapshot;

/// The unbatched comparison run: the same kind of rows, one per transaction or request.
#[derive(Debug, Clone)]
pub(crate) struct Baseline {
    /// What was done, e.g. "one row per transaction".
    pub(crate) label: &'static str,
    /// What one item is called in this mode ("row", "reading").
    pub(crate) unit: &'static str,
    /// Items written.
    pub(crate) rows: u64,
    /// How long they took.
    pub(crate) took: Duration,
}

/// Everything the summary shows.
#[derive(Debug)]
pub(crate) struct Summary<'a> {
    /// Where batches went.
    pub(crate) sink: String,
    /// The batcher's settings, in words.
    pub(crate) settings: String,
    /// The load, in words.
    pub(crate) load: String,
    /// Readings the sensors produced.
    pub(crate) produced: u64,
    /// Whether Ctrl-C stopped the sensors early.
    pub(crate) interrupted: bool,
    /// The batcher's final counters.
    pub(crate) metrics: Metrics,
    /// From the first reading to the end of the drain.
    pub(crate) total: Duration,
    /// The drain alone (shutdown).
    pub(crate) drain: Duration,
    /// What the sink recorded.
    pub(crate) stats: StatsSnapshot,
    /// Readings the sink rejected for good, per reason.
    pub(crate) rejections: Vec<(String, u64)>,
    /// Mode-specific lines (label, value).
    pub(crate) extra: Vec<(String, String)>,
    /// The unbatched comparison and the cap it was measured under.
    pub(crate) baseline: Option<(Baseline, u64)>,
    /// The self-check.
    pub(crate) checks: &'a [Check],
}

/// Formats the summary.
pub(crate) fn render(s: &Summary<'_>) -> String {
    let mut out = String::from("\n== gateway summary ==\n");
    // A value may span lines; continuation lines line up under the first.
    let mut row = |label: &str, value: &str| {
        let value = value.replace('\n', &format!("\n  {:<26} ", ""));
        let _ = writeln!(out, "  {label:<26} {value}");
    };
    row("sink", &s.sink);
    row("batcher", &s.settings);
    row("load", &s.load);
    for (label, value) in counts(s) {
        row(label, &value);
    }
    for (label, value) in &s.extra {
        row(label, value);
    }
    if let Some((base, cap)) = &s.baseline {
        comparison(&mut out, s, base, *cap);
    }
    let _ = writeln!(out, "\n  self-check");
    for c in s.checks {
        let _ = writeln!(out, "  [{}] {}", if c.ok { " ok " } else { "FAIL" }, c.text);
    }
    out
}

/// The counters, throughput, latency and triggers, as (label, value) rows.
fn counts(s: &Summary<'_>) -> Vec<(&'static str, String)> {
    let m = &s.metrics;
    let mut rows = vec![
        (
            "produced",
            format!(
                "{}{}",
                thousands(s.produced),
                if s.interrupted { "  (stopped early by Ctrl-C)" } else { "" }
            ),
        ),
        ("delivered", thousands(m.delivered)),
        ("rejected by the sink", rejections(m.rejected_by_handler, &s.rejections)),
        (
            "dead-lettered",
            format!("{}  ({} batches)", thousands(m.dead_lettered), thousands(m.batches_dead_lettered)),
        ),
        ("expired", format!("{}  (older than max_age: not sent)", thousands(m.expired))),
        ("refused at add", thousands(m.rejected)),
    ];
    if m.returned > 0 || m.evicted > 0 {
        rows.push(("returned / evicted", format!("{} / {}", thousands(m.returned), thousands(m.evicted))));
    }
    rows.push(("accepted", accounted(m)));
    let flushes: Vec<String> = Trigger::ALL
        .iter()
        .filter(|&&t| m.flushes.get(t) > 0)
        .map(|&t| format!("{} {}", t.name(), thousands(m.flushes.get(t))))
        .collect();
    rows.extend([
        (
            "batches delivered / dead",
            format!(
                "{} / {}  (avg {:.0} readings per delivered batch)",
                thousands(m.batches_delivered),
                thousands(m.batches_dead_lettered),
                as_f64(m.delivered) / as_f64(m.batches_delivered.max(1))
            ),
        ),
        (
            "retried",
            format!(
                "{} attempts after a batch's first ({} failed attempts){}",
                thousands(m.retries),
                thousands(m.failed_attempts),
                if s.stats.retried_alone > 0 {
                    format!(
                        ";\n{} readings sent again alone (per-item answers)",
                        thousands(s.stats.retried_alone)
                    )
                } else {
                    String::new()
                }
            ),
        ),
        (
            "throughput",
            format!(
                "{} readings/s  ({} delivered in {}, of which drain {})",
                thousands(rate(m.delivered, s.total)),
                thousands(m.delivered),
                dur(s.total),
                dur(s.drain)
            ),
        ),
        (
            "latency p50 / p99 / max",
            if s.stats.recorded == 0 {
                "-  (nothing delivered)".to_owned()
            } else {
                format!(
                    "{} / {} / {}  (add() -> delivered, per reading)",
                    dur(s.stats.p50),
                    dur(s.stats.p99),
                    dur(s.stats.max)
                )
            },
        ),
        ("batches cut by", if flushes.is_empty() { "-".to_owned() } else { flushes.join(", ") }),
        (
            // The core tracks this as an upper bound: under a sustained backlog it can report
            // more than any reading really waited.
            "max_item_age (upper bound)",
            format!(
                "{}  (oldest reading's wait when its batch was cut)",
                dur(Duration::from_micros(m.max_item_age.as_micros()))
            ),
        ),
    ]);
    rows
}

/// Where the accepted readings went: the fates add up to `accepted`.
fn accounted(m: &Metrics) -> String {
    let pending = m.buffered + m.in_flight;
    format!(
        "{} = delivered {} + rejected {} + dead {} + expired {} + returned {} + evicted {}{}",
        thousands(m.accepted),
        thousands(m.delivered),
        thousands(m.rejected_by_handler),
        thousands(m.dead_lettered),
        thousands(m.expired),
        thousands(m.returned),
        thousands(m.evicted),
        if pending > 0 { format!(" + pending {}", thousands(pending)) } else { String::new() }
    )
}

/// Rejected readings with their reasons counted, e.g. `12  (no timestamp 5, no value 7)`.
fn rejections(n: u64, reasons: &[(String, u64)]) -> String {
    if reasons.is_empty() {
        return thousands(n);
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, k)| format!("{r} {}", thousands(*k))).collect();
    format!("{}  ({})", thousands(n), reasons.join(", "))
}

/// Batched vs unbatched: sink time per delivered item.
fn comparison(out: &mut String, s: &Summary<'_>, base: &Baseline, cap: u64) {
    let m = &s.metrics;
    let unit = base.unit;
    let batched = per_item(s.stats.busy, m.delivered);
    let single = per_item(base.took, base.rows);
    let _ = writeln!(
        out,
        "\n  comparison: time spent delivering per {unit} (handler time, summed over attempts)"
    );
    let _ = writeln!(
        out,
        "  {:<26} {:>9}/{unit} {:>10} {unit}s/s",
        "batched (this run)",
        dur(batched),
        thousands(rate(m.delivered, s.stats.busy)),
    );
    let _ = writeln!(
        out,
        "  {:<26} {} for {} {unit}s in {} attempts, retries included",
        "",
        dur(s.stats.busy),
        thousands(m.delivered),
        thousands(s.stats.attempts)
    );
    let _ = writeln!(
        out,
        "  {:<26} {:>9}/{unit} {:>10} {unit}s/s",
        base.label,
        dur(single),
        thousands(rate(base.rows, base.took)),
    );
    if base.rows < m.delivered {
        let _ = writeln!(
            out,
            "  {:<26} {} for the first {} {unit}s (capped at {} {unit}s or {})\n  {:<26} all {} would take ~{} (extrapolated)",
            "",
            dur(base.took),
            thousands(base.rows),
            thousands(cap),
            dur(crate::BASELINE_BUDGET),
            "",
            thousands(m.delivered),
            dur(single.mul_f64(as_f64(m.delivered)))
        );
    } else {
        let _ = writeln!(out, "  {:<26} {} for all {} {unit}s", "", dur(base.took), thousands(base.rows));
    }
    if m.delivered > 0 && base.rows > 0 {
        let speedup = single.as_secs_f64() / batched.as_secs_f64().max(1e-12);
        let _ = writeln!(out, "  {:<26} {speedup:.1}x", "speed-up from batching");
    }
}

/// A count as a float, for display arithmetic.
pub(crate) fn as_f64(n: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "display only; counts stay below 2^52")]
    let x = n as f64;
    x
}

/// A non-negative float rounded to a count, for display.
pub(crate) fn round_u64(x: f64) -> u64 {
    #[allow(clippy::cast_sign_loss, reason = "clamped to non-negative first")]
    let n = x.max(0.0).round() as u64;
    n
}

/// Items per second.
fn rate(items: u64, took: Duration) -> u64 {
    round_u64(as_f64(items) / took.as_secs_f64().max(1e-9))
}

/// Time per item.
fn per_item(took: Duration, items: u64) -> Duration {
    if items == 0 { Duration::ZERO } else { took.div_f64(as_f64(items)) }
}

/// A duration with a unit that suits its size.
pub(crate) fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(dur(Duration::from_micros(12)), "12.0 µs");
        assert_eq!(dur(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(dur(Duration::from_millis(2500)), "2.50 s");
    }
}
