//! `gateway`: the first demo of `batch-tokio`, an IoT gateway service.
//!
//! Simulated sensors produce temperature readings; a [`batch_tokio::Batcher`] collects them and
//! delivers them in batches, with retries, backpressure and a graceful drain:
//!
//! - default mode: into a SQLite database, one transaction per batch ([`sink_sqlite`]);
//! - `--http`: by JSON POST to a local axum collector that fails a share of requests with 503
//!   ([`sink_http`], [`collector`]);
//! - `--mqtt`: by QoS 1 publish to a Mosquitto broker the demo starts and, half-way, stops for a
//!   few seconds; a subscriber checks what arrived ([`mqtt`], [`sink_mqtt`], [`broker`],
//!   [`subscriber`]); the backlog beyond RAM spills to a disk store during the outage.
//!
//! With `--store DIR` (SQLite mode) the batcher keeps its batches on disk, written ahead, and
//! the sensors add with `add_durable`: a crash loses no reading that was confirmed durable
//! ([`store_mode`]; `cargo xtask crash` kills it over and over to check). `--bench-store`
//! measures what the store costs ([`bench_store`]).
//!
//! At the end it prints a summary (counts, throughput, latency percentiles, batches by trigger),
//! compares against unbatched delivery, and verifies its own accounting ([`check`]); the exit
//! code is 1 when a check fails.
//!
//! While it runs, the batcher's counters are served at `http://127.0.0.1:PORT/metrics` in
//! Prometheus text format under OpenTelemetry's names ([`metrics_endpoint`]; the URL is printed
//! at the start). The port is a free one unless `--metrics-addr` gives one (`off`: not served);
//! `--metrics-hold` keeps the endpoint up after the summary until standard input closes, so that
//! a script can scrape the final figures.
//!
//! ```text
//! cargo run --release -p gateway --bin gateway
//! cargo run --release -p gateway --bin gateway -- --http
//! cargo run --release -p gateway --bin gateway -- --mqtt
//! cargo run --release -p gateway --bin gateway -- --store /tmp/gateway-store
//! cargo run --release -p gateway --bin gateway -- --metrics-addr 127.0.0.1:9898 --metrics-hold
//! cargo run --release -p gateway --bin gateway -- --help
//! ```

mod args;
mod arrivals;
mod bench_store;
mod broker;
mod check;
mod collector;
mod dead_letters;
mod metrics_endpoint;
mod mqtt;
mod progress;
mod report;
mod rng;
mod sensors;
mod serve;
mod sink_http;
mod sink_mqtt;
mod sink_sqlite;
mod stats;
mod store_mode;
mod subscriber;
mod wire;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use batch_tokio::handler::{BoxError, Handler};
use batch_tokio::{Batcher, Builder, DiskStore, Metrics, StorePolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::{Mode, Options, Parsed};
use crate::collector::Collector;
use crate::dead_letters::DeadLetters;
use crate::metrics_endpoint::MetricsEndpoint;
use crate::progress::Progress;
use crate::report::{Baseline, Summary, dur, thousands};
use crate::rng::Faults;
use crate::sensors::{Plan, Reading, SensorReport};
use crate::stats::DeliveryStats;

/// The unbatched comparison writes at most this many items...
const BASELINE_CAP: u64 = 20_000;
/// ...and runs at most this long; the rest is extrapolated.
pub(crate) const BASELINE_BUDGET: Duration = Duration::from_secs(3);
/// How long the drain may take before undelivered readings are handed back.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// After Ctrl-C, how long sensors get to notice before the batcher is closed under them.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The batcher's settings for one mode.
#[derive(Debug, Clone, Copy)]
struct Settings {
    capacity: usize,
    max_batch: usize,
    linger: Duration,
    max_in_flight: usize,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
    jitter_permille: u16,
    attempt_timeout: Option<Duration>,
    /// Readings older than this are not sent (expired).
    max_age: Option<Duration>,
}

/// SQLite: one writer, so one batch at a time (which also keeps rows in arrival order). No
/// attempt timeout: a timed-out `spawn_blocking` insert would keep running and could commit
/// after its retry, duplicating rows.
const SQLITE: Settings = Settings {
    capacity: 20_000,
    max_batch: 500,
    linger: Duration::from_millis(50),
    max_in_flight: 1,
    max_attempts: 3,
    retry_base: Duration::from_millis(20),
    retry_max: Duration::from_millis(200),
    jitter_permille: 200,
    attempt_timeout: None,
    max_age: None,
};

/// HTTP: smaller batches, four requests in flight, few attempts so the collector's outage
/// produces dead letters, and a timeout per request. Readings are worth sending for 120 ms (the
/// demo's time is compressed): a batch held through the collector's failures, or readings
/// queued behind them, expire instead of going out late.
const HTTP: Settings = Settings {
    capacity: 20_000,
    max_batch: 250,
    linger: Duration::from_millis(20),
    max_in_flight: 4,
    max_attempts: 3,
    retry_base: Duration::from_millis(25),
    retry_max: Duration::from_millis(250),
    jitter_permille: 200,
    attempt_timeout: Some(Duration::from_secs(2)),
    max_age: Some(Duration::from_millis(120)),
};

/// MQTT: one publish at a time, because with QoS 1 a sensor's readings stay in order only if
/// batch n+1 waits for batch n's PUBACK (retries included). Attempts run only while connected
/// (the batcher is paused while the broker is down), so many are allowed; the handler waits
/// 2 s for a PUBACK and the attempt timeout is a backstop. RAM holds 20,000 readings; what
/// the outage adds beyond that spills to the disk store ([`mqtt::POLICY`]).
const MQTT: Settings = Settings {
    capacity: mqtt::MIN_CAPACITY,
    max_batch: 500,
    linger: Duration::from_millis(20),
    max_in_flight: 1,
    max_attempts: 10,
    retry_base: Duration::from_millis(20),
    retry_max: Duration::from_millis(500),
    jitter_permille: 200,
    attempt_timeout: Some(Duration::from_secs(5)),
    max_age: None,
};

impl Settings {
    /// A builder with these settings, sending dead letters to `dead`.
    fn builder(&self, seed: u64, dead: &Arc<DeadLetters>) -> Builder<Reading> {
        let (rejects, expiries) = (Arc::clone(dead), Arc::clone(dead));
        let dead = Arc::clone(dead);
        let mut b = Batcher::builder()
            .capacity(self.capacity)
            .max_batch(self.max_batch)
            .linger(self.linger)
            .max_in_flight(self.max_in_flight)
            .max_attempts(self.max_attempts)
            .retry_delays(self.retry_base, self.retry_max)
            .jitter(self.jitter_permille, seed as u32)
            .on_error(move |error, letter| dead.record(&error, letter))
            .on_reject(move |rejected| rejects.rejected(&rejected))
            .on_expire(move |expired| expiries.expired(&expired));
        if let Some(t) = self.attempt_timeout {
            b = b.attempt_timeout(t);
        }
        if let Some(age) = self.max_age {
            b = b.max_age(age);
        }
        b
    }

    /// The settings in words, for the summary.
    fn describe(&self) -> String {
        format!(
            "capacity {}, max_batch {}, linger {}, {} in flight,\n{} attempts (retry after {}, doubling to {}, jitter {}%){}",
            thousands(self.capacity as u64),
            self.max_batch,
            dur(self.linger),
            self.max_in_flight,
            self.max_attempts,
            dur(self.retry_base),
            dur(self.retry_max),
            self.jitter_permille / 10,
            self.attempt_timeout.map(|t| format!(", attempt timeout {}", dur(t))).unwrap_or_default()
                + &self.max_age.map(|a| format!(", max_age {}", dur(a))).unwrap_or_default()
        )
    }

    /// These settings with `--capacity` applied (`max_batch` no larger than the capacity).
    fn with_capacity(self, capacity: Option<usize>) -> Self {
        let capacity = capacity.unwrap_or(self.capacity);
        Self { capacity, max_batch: self.max_batch.min(capacity), ..self }
    }

    /// Builds the batcher, with its store if any, and spawns its worker.
    fn spawn<H: Handler<Reading>>(
        &self,
        opts: &Options,
        dead: &Arc<DeadLetters>,
        store: Option<(DiskStore<Reading>, StorePolicy)>,
        sink: H,
    ) -> Result<Batcher<Reading>, BoxError> {
        let mut builder = self.builder(opts.seed, dead);
        if let Some((store, policy)) = store {
            builder = builder.disk_store(store, policy);
        }
        Ok(builder.spawn(sink)?)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            print!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::DumpDb(path)) => {
            return match sink_sqlite::dump(&path, &mut std::io::stdout().lock()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: --dump-db {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Parsed::BenchStore) => {
            init_tracing();
            return match bench_store::run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: --bench-store: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    match run(opts).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("gateway: SELF-CHECK FAILED: see the [FAIL] lines in the summary");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gateway: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, quiet by default (warnings only; batch-tokio's per-attempt retry warnings
/// are hidden because the summary counts them). `RUST_LOG` overrides, e.g. `gateway=debug`.
fn init_tracing() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter: Targets = std::env::var("RUST_LOG").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        Targets::new().with_default(tracing::Level::WARN).with_target("batch_tokio", tracing::Level::ERROR)
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}

/// Ctrl-C handling: the first stops the sensors, the second abandons the drain, the third
/// exits at once.
fn watch_ctrl_c() -> (watch::Receiver<bool>, watch::Receiver<bool>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("\nCtrl-C: stopping the sensors and draining (Ctrl-C again to abandon the drain)");
        stop_tx.send_replace(true);
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("\nCtrl-C: abandoning the drain");
        abort_tx.send_replace(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    (stop_rx, abort_rx)
}

/// Resolves once `rx` holds `true` (never, if its sender is gone while it is false).
async fn turned_on(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for every sensor. After Ctrl-C they get [`STOP_GRACE`] to stop by themselves; then
/// the batcher is closed so that a sensor stuck waiting for room gets its reading refused.
async fn join_sensors(
    handles: Vec<JoinHandle<SensorReport>>,
    stop: watch::Receiver<bool>,
    batcher: &Batcher<Reading>,
) -> Result<Vec<SensorReport>, BoxError> {
    let all = async {
        let mut reports = Vec::with_capacity(handles.len());
        for h in handles {
            reports.push(h.await?);
        }
        Ok::<_, BoxError>(reports)
    };
    tokio::pin!(all);
    tokio::select! {
        r = &mut all => r,
        () = turned_on(stop) => {
            if let Ok(r) = tokio::time::timeout(STOP_GRACE, &mut all).await {
                r
            } else {
                batcher.close();
                all.await
            }
        }
    }
}

/// The sink a run delivers to, and what it needs at the end.
enum Sink {
    /// The fault injector, and the last row from earlier runs (`--store`; 0 otherwise).
    Sqlite(Arc<Faults>, i64),
    /// The collector and the time its outage starts, if any.
    Http(Collector, Option<Duration>),
    /// The broker, subscriber and uplink, and the batcher's capacity.
    Mqtt(Box<mqtt::MqttRun>, usize),
}

/// Runs the demo; `Ok(false)` when a self-check failed.
#[allow(clippy::too_many_lines, reason = "the demo's story, top to bottom")]
async fn run(opts: Options) -> Result<bool, BoxError> {
    let stats = Arc::new(DeliveryStats::new());
    let dead = Arc::new(DeadLetters::new(opts.dead_letters.as_deref())?);
    let start = Instant::now();

    let mut plan = Plan::default();
    let (batcher, sink, sink_text, settings) = match opts.mode {
        Mode::Sqlite => {
            let settings = SQLITE.with_capacity(opts.capacity);
            let faults = Arc::new(Faults::new(opts.fail_rate, opts.seed));
            let (conn, rows_before, store, text) = if let Some(dir) = &opts.store {
                let run = store_mode::claim_run(dir)?;
                let store = store_mode::open(dir).await?;
                let (conn, last) = sink_sqlite::open_kept(&opts.db)?;
                plan = Plan {
                    seq_base: run * store_mode::RUN_STRIDE,
                    durable: true,
                    print_durable: !std::io::IsTerminal::is_terminal(&std::io::stdout()),
                };
                let text = format!(
                    "SQLite {} (kept across runs), one transaction per batch (WAL, synchronous=FULL);\n\
                     store {}, write-ahead, run {run} of this directory (readings numbered from {})",
                    opts.db.display(),
                    store.path().display(),
                    thousands(plan.seq_base)
                );
                (conn, last, Some((store, store_mode::POLICY)), text)
            } else {
                let text = format!(
                    "SQLite {}, one transaction per batch (WAL, synchronous=FULL)",
                    opts.db.display()
                );
                (sink_sqlite::create(&opts.db)?, 0, None, text)
            };
            let handler = sink_sqlite::SqliteSink::new(conn, Arc::clone(&stats), Arc::clone(&faults));
            let batcher = settings.spawn(&opts, &dead, store, handler)?;
            (batcher, Sink::Sqlite(faults, rows_before), text, settings.describe())
        }
        Mode::Http => {
            // The outage starts half-way through the sensors' run.
            let outage_at = (!opts.outage.is_zero()).then(|| opts.duration / 2);
            let window = outage_at.map(|at| start + at..start + at + opts.outage);
            let collector = Collector::start(opts.fail_rate, opts.seed, window).await?;
            let handler = sink_http::HttpSink::new(&collector.url(), Arc::clone(&stats))?;
            let settings = HTTP.with_capacity(opts.capacity);
            let batcher = settings.spawn(&opts, &dead, None, handler)?;
            let text = format!("HTTP POST {} (local axum collector)", collector.url());
            (batcher, Sink::Http(collector, outage_at), text, settings.describe())
        }
        Mode::Mqtt => {
            let settings = MQTT.with_capacity(opts.capacity);
            let (setup, handler) = mqtt::Setup::start(Arc::clone(&stats)).await?;
            // The backlog beyond RAM spills to a store in the broker's temporary directory.
            let store = setup.open_store().await?;
            let batcher = settings.spawn(&opts, &dead, Some((store, mqtt::POLICY)), handler)?;
            let run = setup.connect(&batcher, &opts, start).await?;
            let text = run.sink_text();
            (batcher, Sink::Mqtt(Box::new(run), settings.capacity), text, settings.describe())
        }
    };

    let load = match opts.rate {
        0 => format!(
            "{} sensors, unthrottled (as fast as backpressure allows), for {}",
            opts.sensors,
            dur(opts.duration)
        ),
        rate => format!(
            "{} sensors x {} Hz for {} (offered {} readings/s)",
            opts.sensors,
            thousands(u64::from(rate)),
            dur(opts.duration),
            thousands(u64::from(rate) * u64::from(opts.sensors))
        ),
    };
    let endpoint = match opts.metrics_addr {
        Some(addr) => Some(MetricsEndpoint::start(addr, &batcher).await?),
        None => None,
    };
    println!("gateway: {load}\n  -> {sink_text}");
    if let Some(endpoint) = &endpoint {
        println!("  metrics: {} (Prometheus text format)", endpoint.url());
    }
    println!("  (Ctrl-C stops the sensors early and drains)");

    // Run: sensors -> batcher -> sink, with a live progress line.
    let (stop, abort) = watch_ctrl_c();
    let produced = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(batcher.clone(), Arc::clone(&produced), start);
    let handles = sensors::spawn(&opts, plan, &batcher, &produced, &stop);
    let reports = join_sensors(handles, stop.clone(), &batcher).await?;
    let interrupted = *stop.borrow();

    // Drain: deliver everything accepted (retries included), then stop the worker.
    let drain_start = Instant::now();
    let aborted = AtomicBool::new(false);
    let shutdown = tokio::select! {
        r = batcher.shutdown_timeout(DRAIN_DEADLINE) => r,
        () = turned_on(abort.clone()) => {
            aborted.store(true, Ordering::Relaxed);
            batcher.shutdown_timeout(Duration::ZERO).await
        }
    };
    let drain = drain_start.elapsed();
    let total = start.elapsed();
    progress.finish().await;
    dead.finish()?;
    if shutdown.timed_out {
        tracing::warn!(
            returned = shutdown.remainder.len(),
            "the drain did not finish; undelivered readings were handed back"
        );
    }
    let metrics = shutdown.metrics;
    let returned: Vec<(u32, u64)> = shutdown.remainder.iter().map(|r| (r.sensor, r.seq)).collect();

    // Compare with unbatched delivery of the same kind of items.
    let cap = BASELINE_CAP.min(metrics.delivered);
    // With --store the run is about durability (and cargo xtask crash restarts it many times).
    let skip_baseline = cap == 0 || aborted.load(Ordering::Relaxed) || opts.store.is_some();
    let mut extra = Vec::new();
    let mut more_checks = Vec::new();
    let (baseline, contents) = match sink {
        Sink::Sqlite(faults, rows_before) => {
            if faults.injected() > 0 {
                extra.push((
                    "injected failures".to_owned(),
                    format!(
                        "{} transactions rolled back half-way (--fail-rate {})",
                        thousands(faults.injected()),
                        opts.fail_rate
                    ),
                ));
            }
            let db = opts.db.clone();
            let contents =
                tokio::task::spawn_blocking(move || sink_sqlite::inspect(&db, rows_before)).await??;
            if opts.store.is_some() {
                extra.push(("store".to_owned(), store_text(&metrics, &reports, &contents, plan)));
            }
            let baseline = if skip_baseline {
                None
            } else {
                eprintln!(
                    "comparing with one row per transaction ({} rows at most, {} at most)...",
                    thousands(cap),
                    dur(BASELINE_BUDGET)
                );
                let mut path = opts.db.clone().into_os_string();
                path.push(".baseline");
                let sensors = opts.sensors;
                Some(
                    tokio::task::spawn_blocking(move || {
                        sink_sqlite::baseline(path.as_ref(), cap, sensors, BASELINE_BUDGET)
                    })
                    .await??,
                )
            };
            (baseline, contents)
        }
        Sink::Http(collector, outage_at) => {
            let c = collector.stats();
            let outage = match outage_at {
                None => "no outage".to_owned(),
                Some(at) if at >= total => format!("the outage at {} was not reached", dur(at)),
                Some(at) => {
                    format!("plus every request during the outage {}..{}", dur(at), dur(at + opts.outage))
                }
            };
            extra.push((
                "collector".to_owned(),
                format!(
                    "{} requests, {} answered 503\n({:.0}% at random, {outage});\n{} readings rejected as malformed ({:.0}% garbled by the sensors),\n{} answered `retry` (write conflicts)",
                    thousands(c.requests),
                    thousands(c.refused),
                    opts.fail_rate * 100.0,
                    thousands(c.rejected),
                    opts.malformed_rate * 100.0,
                    thousands(c.conflicts),
                ),
            ));
            let contents = collector.contents();
            collector.stop().await;
            let baseline = if skip_baseline {
                None
            } else {
                eprintln!(
                    "comparing with one reading per request ({} at most, {} at most, no injected failures)...",
                    thousands(cap),
                    dur(BASELINE_BUDGET)
                );
                Some(http_baseline(&opts, cap).await?)
            };
            (baseline, contents)
        }
        Sink::Mqtt(run, capacity) => {
            let finished = run
                .finish(&mqtt::Outcome {
                    opts: &opts,
                    metrics: &metrics,
                    sensors: &reports,
                    capacity,
                    max_batch: MQTT.with_capacity(opts.capacity).max_batch,
                    baseline_cap: (!skip_baseline).then_some(cap),
                })
                .await?;
            extra.extend(finished.extra);
            more_checks = finished.checks;
            (finished.baseline, finished.contents)
        }
    };
    if let Some(error) = dead.last_error() {
        extra.push(("last dead-letter error".to_owned(), error));
    }
    if let Some(path) = &opts.dead_letters {
        extra.push(("dead letters written to".to_owned(), path.display().to_string()));
    }

    // Verify, then print.
    let dead_keys = dead.keys();
    let (rejected_keys, expired_keys) = (dead.rejected_keys(), dead.expired_keys());
    let garbled = sensors::garbled_keys(&reports, opts.malformed_rate, opts.seed);
    let stats = stats.snapshot();
    let mut checks = check::run(&check::Evidence {
        sensors: &reports,
        metrics: &metrics,
        dead: &dead_keys,
        dead_counted: (dead.items(), dead.batches()),
        returned: &returned,
        rejected: &rejected_keys,
        expired: &expired_keys,
        garbled: &garbled,
        latencies: stats.recorded,
        sink: &contents,
    });
    checks.extend(more_checks);
    let summary = Summary {
        sink: sink_text,
        settings,
        load,
        produced: reports.iter().map(|r| r.produced).sum(),
        interrupted,
        metrics,
        total,
        drain,
        stats,
        rejections: dead.reasons(),
        extra,
        baseline: baseline.map(|b| (b, BASELINE_CAP)),
        checks: &checks,
    };
    print!("{}", report::render(&summary));
    let ok = checks.iter().all(|c| c.ok);
    println!("{}", if ok { "  all checks passed" } else { "  SOME CHECKS FAILED" });
    if let Some(endpoint) = endpoint {
        if opts.metrics_hold {
            hold(&endpoint, &metrics).await;
        }
        endpoint.stop().await;
    }
    Ok(ok)
}

/// `--store`: what went through the store, for the summary.
fn store_text(m: &Metrics, sensors: &[SensorReport], sink: &check::SinkContents, plan: Plan) -> String {
    let confirmed: u64 = sensors.iter().map(|s| s.confirmed).sum();
    let earlier = sink
        .keys
        .iter()
        .filter(|&&(sensor, seq)| seq < plan.seq_base && sensors.iter().any(|s| s.sensor == sensor))
        .count();
    format!(
        "{} readings confirmed durable by add_durable{};\n\
         {} readings of earlier runs delivered first; {} batches loaded from the store;\n\
         {} readings left in the store, {} lost by it, {} store operations failed",
        thousands(confirmed),
        if plan.print_durable { " (printed as `durable` lines)" } else { "" },
        thousands(earlier as u64),
        thousands(m.flushes.store),
        thousands(m.stored),
        thousands(m.store_lost),
        thousands(m.store_failures),
    )
}

/// `--metrics-hold`: prints the final counters and keeps `/metrics` up (the batcher stays
/// readable: `run` still holds it) until standard input closes or Ctrl-C.
async fn hold(endpoint: &MetricsEndpoint, metrics: &Metrics) {
    println!("final metrics(): {metrics:?}");
    println!("metrics: serving {} until standard input closes", endpoint.url());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let (closed, stdin_closed) = tokio::sync::oneshot::channel();
    // A thread of its own, not `spawn_blocking`: the runtime would wait for a blocked read at exit.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The HTTP comparison, against a second collector without injected failures or outage.
async fn http_baseline(opts: &Options, cap: u64) -> Result<Baseline, BoxError> {
    let collector = Collector::start(0.0, opts.seed, None).await?;
    let result = sink_http::baseline(&collector.url(), cap, opts.sensors, BASELINE_BUDGET).await;
    collector.stop().await;
    result
}
