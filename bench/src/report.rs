//! The Markdown report: the machine, the settings, a summary per bound with wins and losses,
//! every case's row and the push micro-benchmark.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::peers::{Impl, Role};
use crate::probe::TARGET_SAMPLES;
use crate::push::PushCosts;
use crate::suite::{Case, Measured, Row, Settings};
use crate::workload::{BATCH_SIZES, Bound, CHUNK, ItemKind, LINGER, PRODUCERS, WORKER_THREADS};

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

/// How a ratio of throughputs reads at the two decimals shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Faster,
    Even,
    Slower,
}

fn verdict(x: f64) -> Verdict {
    let shown = (x * 100.0).round();
    if shown > 100.0 {
        Verdict::Faster
    } else if shown < 100.0 {
        Verdict::Slower
    } else {
        Verdict::Even
    }
}

/// A ratio of batch-tokio's throughput to a peer's: a loss in bold with the word.
fn versus(x: f64) -> String {
    match verdict(x) {
        Verdict::Faster => format!("{x:.2}×"),
        Verdict::Even => format!("{x:.2}× (even)"),
        Verdict::Slower => format!("**{x:.2}× (slower)**"),
    }
}

/// A row's throughput against a peer's, a loss marked; `-` without the other.
fn ratio(row: &Row, to: Option<&Row>) -> String {
    to.map_or_else(|| "-".to_owned(), |to| versus(row.items_per_sec() / to.items_per_sec()))
}

/// A row's throughput against another's, unmarked (for the limit, a ceiling rather than a
/// competitor, and for peers among themselves); `-` without the other.
fn ratio_plain(row: &Row, to: Option<&Row>) -> String {
    to.map_or_else(|| "-".to_owned(), |to| format!("{:.2}×", row.items_per_sec() / to.items_per_sec()))
}

/// A latency in nanoseconds, in the unit that reads best.
fn latency(ns: Option<u32>) -> String {
    match ns {
        None => "-".to_owned(),
        Some(ns) if ns < 1_000 => format!("{ns} ns"),
        Some(ns) if ns < 1_000_000 => format!("{:.1} µs", f64::from(ns) / 1e3),
        Some(ns) => format!("{:.2} ms", f64::from(ns) / 1e6),
    }
}

/// `p50 / p99` of a row's add→handled latency.
fn p50_p99(row: Option<&Row>) -> String {
    row.map_or_else(
        || "-".to_owned(),
        |r| format!("{} / {}", latency(r.latency(0.5)), latency(r.latency(0.99))),
    )
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

/// One configuration's comparison, as the summary shows it.
struct Cell<'a> {
    add: &'a Row,
    many: &'a Row,
    /// The fastest peer whose producers add one item per call.
    single: Option<&'a Row>,
    /// The fastest peer of all, bulk producers included.
    peer: Option<&'a Row>,
    /// The `Vec` limit.
    limit: Option<&'a Row>,
}

impl Report<'_> {
    /// The Markdown text of `docs/bench/results.md`.
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        self.header(&mut md);
        self.summary(&mut md);
        for bound in Bound::ALL {
            for item in ItemKind::ALL {
                self.results(&mut md, bound, item);
            }
        }
        self.push_table(&mut md);
        self.notes(&mut md);
        md
    }

    fn header(&self, md: &mut String) {
        let (m, s) = (self.machine, self.settings);
        let _ = writeln!(md, "# batch-tokio against its peers\n");
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
            "- {} `u64` items and {} 64-byte `#[repr(C)]` items (`[u64; 8]`) per run, split into \
             contiguous shares over P producer tasks; P ∈ {PRODUCERS:?}, batch size B ∈ {BATCH_SIZES:?}, \
             linger {} ms.",
            count(s.n_u64),
            count(s.n_wide),
            LINGER.as_millis()
        );
        let _ = writeln!(
            md,
            "- The same bound for everyone, at two sizes: batch-tokio's `capacity` and every channel's \
             bound are 4×B items in one half of the report and {} items in the other. Bulk producers \
             hand over chunks of {CHUNK} items, or of the whole bound when it is smaller.",
            Bound::FIXED
        );
        let _ = writeln!(
            md,
            "- tokio multi-thread runtime with {WORKER_THREADS} worker threads; producers and consumers \
             are tasks on it, the main thread only waits. A run's time goes from the first add (the \
             earliest producer start) to the moment the handler has the last item."
        );
        let _ = writeln!(
            md,
            "- The handler is an `#[inline(never)]` function summing the items (for the struct, one \
             field). Every run checks the delivered count, the checksum, that no batch exceeds B and \
             that every sampled item was stamped and handled once; a wrong result fails the \
             benchmark."
        );
        let _ = writeln!(
            md,
            "- Latency: {} to {TARGET_SAMPLES} items per run (those whose index is a multiple of a \
             power of two) are stamped with the time of their add; the handler reads the clock once \
             per batch that holds one. p50 and p99 are over the samples of all runs. Every \
             implementation pays the same for this: one branch per item on each side, a clock read \
             per sampled item and per batch holding one.",
            TARGET_SAMPLES / 2
        );
        let _ = writeln!(
            md,
            "- {} runs; the tables show the median time. Runs are interleaved: each run goes through \
             every implementation of a configuration back to back, the order rotating from run to \
             run.\n",
            s.runs
        );
    }

    fn cell(&self, bound: Bound, item: ItemKind, producers: usize, batch: usize) -> Option<Cell<'_>> {
        let m = self.measured;
        let case = |imp| Case { bound, item, producers, batch, imp };
        let add = m.get(case(Impl::BatchTokioAdd))?;
        let many = m.get(case(Impl::BatchTokioAddMany))?;
        Some(Cell {
            add,
            many,
            single: m.best_where(add.case, |i| i.role() == Role::Peer && !i.bulk()),
            peer: m.best(add.case, Role::Peer),
            limit: m.get(case(Impl::LimitVec)),
        })
    }

    fn summary(&self, md: &mut String) {
        let _ = writeln!(md, "## Summary\n");
        let _ = writeln!(
            md,
            "Per configuration: `add` (one item per call) against the fastest peer whose producers \
             also send one item per call; `add_many` against the fastest peer of all (bulk \
             producers such as `reserve_many` included, so at least as strong as the fastest bulk \
             peer); `add_many` against the single-thread limit, a `Vec` push with no \
             synchronisation (a ceiling, not a competitor). Above 1× is faster; a loss against a peer \
             is in bold, and one that rounds to 1.00× is called even. Latency is add→handled, p50 / \
             p99.\n"
        );
        let name = |r: Option<&Row>| r.map_or("-", |r| r.case.imp.label());
        let speed = |r: Option<&Row>| r.map_or_else(|| "-".to_owned(), |r| rate(r.items_per_sec()));
        let idle = self.measured.idle_rss_kib;
        let mem = |r: Option<&Row>| r.map_or_else(|| "-".to_owned(), |r| rss(r.rss_kib, idle));
        for bound in Bound::ALL {
            let rooms = BATCH_SIZES.map(|b| bound.items(b));
            let _ = writeln!(md, "### Bound {bound} (room for {rooms:?} items at B = {BATCH_SIZES:?})\n");
            let _ = writeln!(
                md,
                "| item | P | B | fastest per-item peer | its items/s | `add` × it | fastest peer | its items/s | `add_many` × it | `add_many` × `Vec` limit | `add` latency | per-item peer latency | peak RSS MiB `add` / peer |"
            );
            let _ = writeln!(
                md,
                "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            // (faster, even, slower) per comparison.
            let mut add_score = (0, 0, 0);
            let mut many_score = (0, 0, 0);
            let mut losses = Vec::new();
            for item in ItemKind::ALL {
                for producers in PRODUCERS {
                    for batch in BATCH_SIZES {
                        let Some(c) = self.cell(bound, item, producers, batch) else {
                            continue;
                        };
                        let _ = writeln!(
                            md,
                            "| {item} | {producers} | {batch} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                            name(c.single),
                            speed(c.single),
                            ratio(c.add, c.single),
                            name(c.peer),
                            speed(c.peer),
                            ratio(c.many, c.peer),
                            ratio_plain(c.many, c.limit),
                            p50_p99(Some(c.add)),
                            p50_p99(c.single),
                            mem(Some(c.add)),
                            mem(c.single),
                        );
                        let here = format!("{item} P={producers} B={batch}");
                        for (score, row, to, what) in [
                            (&mut add_score, c.add, c.single, "`add`"),
                            (&mut many_score, c.many, c.peer, "`add_many`"),
                        ] {
                            let Some(to) = to else { continue };
                            let x = row.items_per_sec() / to.items_per_sec();
                            match verdict(x) {
                                Verdict::Faster => score.0 += 1,
                                Verdict::Even => score.1 += 1,
                                Verdict::Slower => {
                                    score.2 += 1;
                                    losses.push(format!("{what} {here} at {x:.2}× {}", to.case.imp.label()));
                                }
                            }
                        }
                    }
                }
            }
            let score = |s: (i32, i32, i32)| format!("faster in {}, even in {}, slower in {}", s.0, s.1, s.2);
            let _ = writeln!(
                md,
                "\nAt bound {bound}, against the fastest per-item peer `add` is {}; against the \
                 fastest peer `add_many` is {} (of {} configurations).",
                score(add_score),
                score(many_score),
                add_score.0 + add_score.1 + add_score.2
            );
            if losses.is_empty() {
                let _ = writeln!(md, "No losses.\n");
            } else {
                let _ = writeln!(md, "Losses: {}.\n", losses.join("; "));
            }
        }
    }

    fn results(&self, md: &mut String, bound: Bound, item: ItemKind) {
        let n = self.settings.n(item);
        let _ = writeln!(md, "## Every case: bound {bound}, {item} ({} items per run)\n", count(n));
        let _ = writeln!(
            md,
            "| P | B | implementation | items/s | ns/item | × best peer | × `Vec` limit | spread | mean batch | p50 latency | p99 latency | peak RSS MiB (over idle) |"
        );
        let _ = writeln!(
            md,
            "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for row in self.measured.rows.iter().filter(|r| r.case.item == item && r.case.bound == bound) {
            let peer = self.measured.best(row.case, Role::Peer);
            let limit = self.measured.get(Case { imp: Impl::LimitVec, ..row.case });
            let (name, vs_peer) = match row.case.imp.role() {
                Role::Subject => (format!("**{}**", row.case.imp.label()), ratio(row, peer)),
                Role::Peer | Role::Limit => (row.case.imp.label().to_owned(), ratio_plain(row, peer)),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {name} | {} | {:.2} | {} | {} | {:.0}% | {:.1} | {} | {} | {} |",
                row.case.producers,
                row.case.batch,
                rate(row.items_per_sec()),
                row.ns_per_item(),
                vs_peer,
                ratio_plain(row, limit),
                row.spread() * 100.0,
                row.mean_batch(),
                latency(row.latency(0.5)),
                latency(row.latency(0.99)),
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
        let _ = writeln!(
            md,
            "Implementations, each written the way its documentation shows (B is the batch size, \
             *bound* the room above):\n"
        );
        for imp in Impl::ALL {
            let what = match imp {
                Impl::BatchTokioAdd => {
                    "`Batcher::builder().capacity(bound).max_batch(B).linger(..)`, `add(item).await` per item; `from_sync` handler on the worker task."
                }
                Impl::BatchTokioAddMany => {
                    "the same batcher, `add_many(chunk).await` with chunks made on the fly."
                }
                Impl::TokioStreamChunks => {
                    "`tokio::sync::mpsc::channel(bound)`, `send().await` per item, consumer `ReceiverStream::chunks_timeout(B, linger)` (a `Vec` per batch)."
                }
                Impl::FuturesBatch => {
                    "`tokio::sync::mpsc::channel(bound)`, `send().await` per item, consumer `futures_batch::ChunksTimeout` (a `Vec` per batch, futures-timer's timer thread)."
                }
                Impl::RecvMany => {
                    "`tokio::sync::mpsc::channel(bound)`, `send().await` per item, hand-written consumer: `recv_many` until B items or a `tokio::time::sleep` started at the batch's first item fires (`select!`), one reused buffer."
                }
                Impl::ReserveMany => {
                    "like the previous, but producers take permits for a whole chunk at once with `Sender::reserve_many`: the like-for-like peer of `add_many`."
                }
                Impl::FlumeTryRecv => {
                    "`flume::bounded(bound)`, `send_async().await` per item; consumer `recv_async` for a batch's first item, `try_recv` up to B, `recv_async` against the linger deadline only when the channel is empty."
                }
                Impl::FlumeDrain => {
                    "`flume::bounded(bound)`, `send_async().await` per item; consumer `recv_async` for a batch's first item, then `drain()` (everything queued, one lock), every full batch of B handed over at once, a partial batch waiting (`recv_async` then `drain()` again) until full or its linger is up. A started receive is awaited to its end, never dropped."
                }
                Impl::Kanal => {
                    "`kanal::bounded_async(bound)`, `send(item).await` per item; consumer as the previous with `recv().await` and `drain_into(&mut buf)` (kanal's docs: drain, and `recv` when nothing was there). Its docs warn that dropping a started receive may lose an item, so none is dropped: one left pending at a deadline brings the next batch's first item."
                }
                Impl::LimitHeapless => {
                    "no runtime and no synchronisation: one thread making the items into a `heapless::Vec<T, B>` (B a const generic), calling the handler when full. Same for every P and bound."
                }
                Impl::LimitVec => {
                    "the same with a `Vec<T>` of capacity B: the single-thread limit of the summary."
                }
            };
            let _ = writeln!(md, "- **{}** (`{}`): {what}", imp.label(), imp.id());
        }
        md.push('\n');
        let _ = writeln!(
            md,
            "Columns: *items/s* and *ns/item* at the median time; *× best peer* against the fastest \
             peer (not batch-tokio, not a limit) of the same bound, item type, P and B; *× `Vec` \
             limit* against the `Vec` limit row; *spread* is (slowest − fastest) / median over the \
             runs; *mean batch* is items per handler call in the last run (below B when the linger \
             cut batches or producers were slower than the consumer)."
        );
        let idle = self.measured.idle_rss_kib;
        let _ = writeln!(
            md,
            "\n*Peak RSS* is the `VmHWM` of a child process (the binary re-executed with `--only`) \
             that runs that one case once, process and runtime included; in brackets, the part above \
             a child that only builds the runtime ({} MiB). The items are made on the fly, so this \
             is the implementations' own buffers, tasks and timers (and the latency stamps, the same \
             for all).",
            mib(idle)
        );
        let _ = writeln!(
            md,
            "\nNumbers from a 2-core machine are noisy, and a producer and the consumer share the two \
             workers: with P=4 there are more runnable tasks than threads. No timing is asserted \
             anywhere; only the delivered count, checksum and samples are."
        );
        let _ = writeln!(
            md,
            "\nOne cost falls on batch-tokio alone: its handler reaches the tally through an \
             uncontended lock per batch (the peers' consumers own theirs), so its rows carry one \
             lock round trip per batch that a real handler would not need."
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
        assert_eq!(versus(1.234), "1.23×");
        assert_eq!(versus(0.5), "**0.50× (slower)**");
        assert_eq!(versus(0.996), "1.00× (even)");
        assert_eq!(versus(0.994), "**0.99× (slower)**");
        assert_eq!(latency(Some(999)), "999 ns");
        assert_eq!(latency(Some(12_345)), "12.3 µs");
        assert_eq!(latency(Some(10_200_000)), "10.20 ms");
    }
}
