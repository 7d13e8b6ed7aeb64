//! The Markdown report: the machine, the settings, a summary, every case's row and the push
//! micro-benchmark.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::peers::{Impl, Role};
use crate::push::PushCosts;
use crate::suite::{Case, Measured, Row, Settings};
use crate::workload::{BATCH_SIZES, CAPACITY, CHUNK, ItemKind, LINGER, PRODUCERS, WORKER_THREADS};

/// Where the numbers were taken.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    /// The CPU model (`model name` in `/proc/cpuinfo`).
    pub(crate) cpu: String,
    /// Logical CPUs listed in `/proc/cpuinfo`.
    pub(crate) cpus: usize,
    /// What `std::thread::available_parallelism` says.
    pub(crate) parallelism: usize,
    /// The compiler that built this binary.
    pub(crate) rustc: &'static str,
    /// OS and architecture.
    pub(crate) platform: String,
    /// When the run started, `YYYY-MM-DD HH:MM UTC`.
    pub(crate) date: String,
}

impl Machine {
    /// Looks around.
    pub(crate) fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let parallelism = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            cpu,
            cpus,
            parallelism,
            rustc: env!("BENCH_RUSTC_VERSION"),
            platform: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            date: utc(secs),
        }
    }
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch (proleptic Gregorian calendar).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400).cast_signed();
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// `12.3 M`-style items per second.
fn rate(per_sec: f64) -> String {
    if per_sec >= 1e9 {
        format!("{:.2} G", per_sec / 1e9)
    } else if per_sec >= 1e6 {
        format!("{:.2} M", per_sec / 1e6)
    } else {
        format!("{:.1} k", per_sec / 1e3)
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Peak RSS in MiB and, when the idle baseline is known, the part above it.
fn rss(kib: Option<u64>, idle: Option<u64>) -> String {
    match (kib, idle) {
        (Some(k), Some(i)) => format!("{} (+{:.1})", mib(Some(k)), k.saturating_sub(i) as f64 / 1024.0),
        _ => mib(kib),
    }
}

fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The ratio of a row's throughput to another's, `-` without the other.
fn ratio(row: &Row, to: Option<&Row>) -> String {
    to.map_or_else(|| "-".to_owned(), |to| format!("{:.2}×", row.items_per_sec() / to.items_per_sec()))
}

/// Everything the report says.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    /// Where and when.
    pub(crate) machine: &'a Machine,
    /// How big and how often.
    pub(crate) settings: &'a Settings,
    /// The measurements.
    pub(crate) measured: &'a Measured,
    /// The push micro-benchmark.
    pub(crate) push: &'a PushCosts,
    /// Wall time of the whole benchmark.
    pub(crate) elapsed: Duration,
}

impl Report<'_> {
    /// The Markdown text of `docs/bench/results.md`.
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        self.header(&mut md);
        self.summary(&mut md);
        for item in ItemKind::ALL {
            self.results(&mut md, item);
        }
        self.push_table(&mut md);
        self.notes(&mut md);
        md
    }

    fn header(&self, md: &mut String) {
        let (m, s) = (self.machine, self.settings);
        let _ = writeln!(md, "# batch-tokio throughput against its peers\n");
        let _ = writeln!(
            md,
            "Written by `cargo xtask bench` (the `batch-bench` binary, `--release`) on {}; the whole \
             benchmark took {:.0} s. The chart is [`throughput.png`](throughput.png).\n",
            m.date,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(md, "| machine | |\n| --- | --- |");
        let _ = writeln!(md, "| CPU | {} |", m.cpu);
        let _ = writeln!(
            md,
            "| cores | {} logical CPUs in /proc/cpuinfo, available parallelism {} |",
            m.cpus, m.parallelism
        );
        let _ = writeln!(md, "| rustc | {} |", m.rustc);
        let _ = writeln!(md, "| platform | {} |\n", m.platform);
        let _ = writeln!(md, "Workload:\n");
        let _ = writeln!(
            md,
            "- {} `u64` items and {} 64-byte `#[repr(C)]` items (`[u64; 8]`) per case, split into \
             contiguous shares over P producer tasks; P ∈ {PRODUCERS:?}, batch size B ∈ {BATCH_SIZES:?}, \
             linger {} ms.",
            count(s.n_u64),
            count(s.n_wide),
            LINGER.as_millis()
        );
        let _ = writeln!(
            md,
            "- tokio multi-thread runtime with {WORKER_THREADS} worker threads; producers and consumers \
             are tasks on it, the main thread only waits. Time runs from building the batcher or \
             channel to the last batch handled (shutdown / channel closed included)."
        );
        let _ = writeln!(
            md,
            "- The handler is an `#[inline(never)]` function summing the items (for the struct, one \
             field). Every run checks the delivered count, the checksum and that no batch exceeds \
             B; a wrong result fails the benchmark."
        );
        let _ = writeln!(
            md,
            "- {} runs; the tables show the median. Runs are interleaved: each run goes through every \
             implementation of a configuration back to back, the order rotating from run to run.",
            s.runs
        );
        let _ = writeln!(
            md,
            "- Buffer room: batch-tokio `capacity({CAPACITY})`, and every channel peer is bounded at \
             {CAPACITY} items. Bulk producers hand over chunks of {CHUNK} items.\n"
        );
    }

    fn summary(&self, md: &mut String) {
        let _ = writeln!(md, "## Summary\n");
        let _ = writeln!(
            md,
            "batch-tokio's throughput relative to the fastest peer of each configuration, like for \
             like: `add` (one item per call) against the fastest peer whose producers also send one \
             item per call, `add_many` (chunks of {CHUNK}) against the fastest peer of all, bulk \
             `reserve_many` included; and both against the single-thread limit (the faster limit \
             row). Above 1× is faster.\n"
        );
        let _ = writeln!(
            md,
            "| item | P | B | fastest per-item peer | its items/s | `add` × it | fastest peer | its items/s | `add_many` × it | `add` × limit | `add_many` × limit |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |");
        let name = |r: Option<&Row>| r.map_or("-", |r| r.case.imp.label());
        let speed = |r: Option<&Row>| r.map_or_else(|| "-".to_owned(), |r| rate(r.items_per_sec()));
        for item in ItemKind::ALL {
            for producers in PRODUCERS {
                for batch in BATCH_SIZES {
                    let case = |imp| Case { item, producers, batch, imp };
                    let m = self.measured;
                    let (Some(add), Some(many)) =
                        (m.get(case(Impl::BatchTokioAdd)), m.get(case(Impl::BatchTokioAddMany)))
                    else {
                        continue;
                    };
                    let single = m.best_where(add.case, |i| i.role() == Role::Peer && !i.bulk());
                    let peer = m.best(add.case, Role::Peer);
                    let limit = m.best(add.case, Role::Limit);
                    let _ = writeln!(
                        md,
                        "| {item} | {producers} | {batch} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        name(single),
                        speed(single),
                        ratio(add, single),
                        name(peer),
                        speed(peer),
                        ratio(many, peer),
                        ratio(add, limit),
                        ratio(many, limit),
                    );
                }
            }
        }
        md.push('\n');
    }

    fn results(&self, md: &mut String, item: ItemKind) {
        let n = self.settings.n(item);
        let _ = writeln!(md, "## Every case: {item} ({} items per run)\n", count(n));
        let _ = writeln!(
            md,
            "| P | B | implementation | items/s | ns/item | × best peer | × limit | spread | mean batch | peak RSS MiB (over idle) |"
        );
        let _ = writeln!(md, "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for row in self.measured.rows.iter().filter(|r| r.case.item == item) {
            let peer = self.measured.best(row.case, Role::Peer);
            let limit = self.measured.best(row.case, Role::Limit);
            let name = match row.case.imp.role() {
                Role::Subject => format!("**{}**", row.case.imp.label()),
                Role::Peer | Role::Limit => row.case.imp.label().to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {name} | {} | {:.2} | {} | {} | {:.0}% | {:.1} | {} |",
                row.case.producers,
                row.case.batch,
                rate(row.items_per_sec()),
                row.ns_per_item(),
                ratio(row, peer),
                ratio(row, limit),
                row.spread() * 100.0,
                row.mean_batch(),
                rss(row.rss_kib, self.measured.idle_rss_kib),
            );
        }
        md.push('\n');
    }

    fn push_table(&self, md: &mut String) {
        let p = self.push;
        let _ = writeln!(md, "## One push: batch-core against `heapless::Vec::push`\n");
        let _ = writeln!(
            md,
            "As in `batch-core/benches/push.rs`: rounds of 1024 `u32` pushes into room for 1024, \
             pushes timed with `std::time::Instant`, draining untimed, best of {} trials × {} rounds.\n",
            p.trials, p.rounds
        );
        let _ = writeln!(md, "| operation | ns/item | × `heapless::Vec::push` |");
        let _ = writeln!(md, "| --- | ---: | ---: |");
        for (name, ns) in [
            ("`heapless::Vec::push`", p.heapless_vec),
            ("`heapless::Deque::push_back` (the core's storage)", p.heapless_deque),
            ("`Batcher::push` (caller's `now`)", p.core_fixed_now),
            ("`Batcher::push_with` (clock read per batch)", p.core_lazy_clock),
        ] {
            let _ = writeln!(md, "| {name} | {ns:.2} | {:.2}× |", ns / p.heapless_vec);
        }
        md.push('\n');
    }

    fn notes(&self, md: &mut String) {
        let _ = writeln!(md, "## Notes\n");
        let _ = writeln!(md, "Implementations:\n");
        for imp in Impl::ALL {
            let what = match imp {
                Impl::BatchTokioAdd => {
                    "`Batcher::add(item).await` per item; `from_sync` handler on the worker task."
                }
                Impl::BatchTokioAddMany => {
                    "`Batcher::add_many(chunk).await`, chunks of 1024 items made on the fly."
                }
                Impl::TokioStreamChunks => {
                    "bounded `tokio::sync::mpsc`, `send().await` per item, consumer `ReceiverStream::chunks_timeout(B, linger)` (a `Vec` per batch)."
                }
                Impl::FuturesBatch => {
                    "bounded `tokio::sync::mpsc`, `send().await` per item, consumer `futures_batch::ChunksTimeout` (a `Vec` per batch, futures-timer's timer thread)."
                }
                Impl::RecvMany => {
                    "bounded `tokio::sync::mpsc`, `send().await` per item, hand-written consumer: `recv_many` until B items or a `tokio::time::sleep` started at the batch's first item fires (`select!`), one reused buffer."
                }
                Impl::ReserveMany => {
                    "like the previous, but producers take permits for 1024 items at once with `Sender::reserve_many`: the like-for-like peer of `add_many`."
                }
                Impl::Flume => {
                    "bounded flume channel, `send_async().await` per item; consumer `recv_async` for a batch's first item, `try_recv` up to B, `recv_async` against the linger deadline only when the channel is empty."
                }
                Impl::LimitHeapless => {
                    "no runtime and no synchronisation: one thread making the items into a `heapless::Vec<T, B>` (B a const generic), calling the handler when full. Same for every P."
                }
                Impl::LimitVec => "the same with a `Vec<T>` of capacity B.",
            };
            let _ = writeln!(md, "- **{}** (`{}`): {what}", imp.label(), imp.id());
        }
        md.push('\n');
        let _ = writeln!(
            md,
            "Columns: *items/s* and *ns/item* at the median wall time; *× best peer* against the \
             fastest peer (not batch-tokio, not the limit) of the same item type, P and B; *× limit* \
             against the faster limit row; *spread* is (slowest − fastest) / median over the runs; \
             *mean batch* is items per handler call in the last run (below B when the linger cut \
             batches or producers were slower than the consumer)."
        );
        let idle = self.measured.idle_rss_kib;
        let _ = writeln!(
            md,
            "\n*Peak RSS* is the `VmHWM` of a child process (the binary re-executed with `--only`) \
             that runs that one case once, process and runtime included; in brackets, the part above \
             a child that only builds the runtime ({} MiB). The items are made on the fly, so this \
             is the implementations' own buffers, tasks and timers.",
            mib(idle)
        );
        let _ = writeln!(
            md,
            "\nNumbers from a 2-core machine are noisy, and a producer and the consumer share the two \
             workers: with P=4 there are more runnable tasks than threads. No timing is asserted \
             anywhere; only the delivered count and checksum are."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_767_225_600 + 3_600 * 13 + 60 * 7), "2026-01-01 13:07 UTC");
    }

    #[test]
    fn formatting() {
        assert_eq!(count(4_000_000), "4,000,000");
        assert_eq!(count(999), "999");
        assert_eq!(rate(12_345_678.0), "12.35 M");
        assert_eq!(mib(Some(2048)), "2.0");
        assert_eq!(rss(Some(4096), Some(3072)), "4.0 (+1.0)");
        assert_eq!(rss(None, Some(3072)), "n/a");
    }
}
