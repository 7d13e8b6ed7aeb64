//! The counters of [`Batcher::metrics`] through the [`metrics`] facade, so that any `metrics`
//! exporter (Prometheus, StatsD, OpenTelemetry, ...) publishes them. Enabled by the `metrics`
//! feature.
//!
//! A [`MetricsExporter`] names one batcher. [`MetricsExporter::describe`] gives the recorder
//! the descriptions and units, once; [`MetricsExporter::record`] copies a snapshot of the
//! counters into the recorder. Call `record` when the figures are read (in a `/metrics` handler,
//! before rendering) or from a task on an interval. Counters are set with
//! [`Counter::absolute`](metrics::Counter::absolute) and gauges with
//! [`Gauge::set`](metrics::Gauge::set), so recording twice never counts twice, and the
//! batcher's own paths do no metrics work at all. Each `record` looks its series up in the
//! current recorder (some two dozen look-ups), so it works whenever the recorder was installed,
//! and with [`metrics::with_local_recorder`].
//!
//! ```no_run
//! use batch_tokio::{Batcher, MetricsExporter, handler};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Install a recorder first, e.g. metrics-exporter-prometheus's.
//! let batcher = Batcher::builder()
//!     .spawn(handler::from_sync(|lines: &[String]| Ok::<_, std::io::Error>(println!("{}", lines.len()))))
//!     .unwrap();
//! MetricsExporter::describe();
//! let exporter = MetricsExporter::new("ingest");
//! let weak = batcher.downgrade(); // the task does not keep the batcher open
//! tokio::spawn(async move {
//!     let mut tick = tokio::time::interval(Duration::from_secs(10));
//!     loop {
//!         tick.tick().await;
//!         let Some(batcher) = weak.upgrade() else { break };
//!         exporter.record(&batcher);
//!     }
//! });
//! # }
//! ```
//!
//! # Names
//!
//! The names follow the OpenTelemetry semantic conventions for SDK metrics (status:
//! development) where one fits: those of a batching span or log processor and of its exporter,
//! without the signal segment (`span`, `log`), since the items are yours; the handler is the
//! exporter. What the conventions have no name for is under `batch.*`. Every series carries
//! `otel.component.name` (the name given to [`MetricsExporter::new`]) and `otel.component.type`
//! = `batch_tokio::Batcher`.
//!
//! | `metrics()` field | metric | kind | other labels |
//! |---|---|---|---|
//! | `buffered` | `otel.sdk.processor.queue.size` | gauge | |
//! | (the capacity) | `otel.sdk.processor.queue.capacity` | gauge | |
//! | `rejected` | `otel.sdk.processor.processed` | counter | `error.type` = `rejected` |
//! | `evicted` | `otel.sdk.processor.processed` | counter | `error.type` = `queue_full` |
//! | `in_flight` | `otel.sdk.exporter.inflight` | gauge | |
//! | `delivered` | `otel.sdk.exporter.exported` | counter | |
//! | `dead_lettered` | `otel.sdk.exporter.exported` | counter | `error.type` = `dead_lettered` |
//! | `rejected_by_handler` | `otel.sdk.exporter.exported` | counter | `error.type` = `rejected_by_handler` |
//! | `expired` | `otel.sdk.processor.processed` | counter | `error.type` = `expired` |
//! | `accepted` | `batch.items.accepted` | counter | |
//! | `returned` | `batch.items.returned` | counter | |
//! | `abandoned` | `batch.items.abandoned` | counter | |
//! | `batches_in_flight` | `batch.batches.inflight` | gauge | |
//! | `batches_delivered` | `batch.batches.exported` | counter | |
//! | `batches_dead_lettered` | `batch.batches.exported` | counter | `error.type` = `dead_lettered` |
//! | `retries` | `batch.retries` | counter | |
//! | `failed_attempts` | `batch.attempts.failed` | counter | |
//! | `panics` | `batch.panics` | counter | |
//! | `flushes` | `batch.flushes` | counter | `trigger` = [`Trigger::name`] of each trigger: `size`, `linger`, ... |
//! | `max_item_age` | `batch.item.age.max` | gauge, seconds | |
//! | `stored` (with `disk-store`) | `batch.store.items` | gauge | |
//! | `store_lost` (with `disk-store`) | `batch.store.lost` | counter | |
//! | `store_failures` (with `disk-store`) | `batch.store.failures` | counter | |
//!
//! Where this departs from the conventions, and why:
//!
//! - The conventions count an item as `otel.sdk.processor.processed` without `error.type` when
//!   the processor hands it to the exporter, whatever the export's outcome. batch-core does not
//!   count items handed to the handler apart (an item is counted once its outcome is final), so
//!   only the error series of `processed` are exported. What the handler did is in
//!   `otel.sdk.exporter.*`, which counts an item once, after its final attempt, as the
//!   conventions ask of an exporter that retries.
//! - `error.type`: `queue_full` is the conventions' value for an item dropped because the queue
//!   was full ([`Overflow::DropOldest`](crate::Overflow::DropOldest) evicts the oldest);
//!   `rejected` covers every item handed back to its producer (full, closed or too heavy:
//!   batch-core counts them together); `dead_lettered` marks what failed every attempt.
//! - `rejected_by_handler` marks items the handler refused for good in a per-item answer
//!   ([`PartialFailure`](crate::handler::PartialFailure)): the exporter's verdict, so under
//!   `otel.sdk.exporter.exported`. `expired` marks items older than `max_age` that were never
//!   sent (or not sent again): the processor dropped them, so under
//!   `otel.sdk.processor.processed`, like the conventions' other drops. An item expired before a
//!   retry had a failed export first; it is still counted once, as expired.
//! - The conventions' queue size, capacity and in-flight metrics are up-down counters; the
//!   facade has none, and a value read from a snapshot is a gauge.
//!
//! In Prometheus, dots in names and label keys become underscores:
//! `otel_sdk_processor_queue_size{otel_component_name="ingest",otel_component_type="batch_tokio::Batcher"}`.
//! With metrics-exporter-prometheus's `with_recommended_naming(true)`, counters also end in
//! `_total` and the age in `_seconds`. Counters are whole numbers; gauges are `f64`, exact up
//! to 2^53.

use batch_core::{Count, Metrics, Trigger};
use metrics::{Label, SharedString, Unit};

use crate::Batcher;

/// The `otel.component.type` of every series.
const COMPONENT_TYPE: &str = "batch_tokio::Batcher";
/// The label of an error series.
const ERROR_TYPE: &str = "error.type";
/// `error.type` of what failed every attempt.
const DEAD_LETTERED: Option<&str> = Some("dead_lettered");

/// Whether a metric only grows (set with `absolute`) or goes up and down.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric name with its description.
#[derive(Debug)]
struct Metric {
    name: &'static str,
    kind: Kind,
    unit: Unit,
    help: &'static str,
}

impl Metric {
    const fn counter(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Counter, unit: Unit::Count, help }
    }

    const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Gauge, unit: Unit::Count, help }
    }

    /// Gives the current recorder the description.
    fn describe(&self) {
        match self.kind {
            Kind::Counter => metrics::describe_counter!(self.name, self.unit, self.help),
            Kind::Gauge => metrics::describe_gauge!(self.name, self.unit, self.help),
        }
    }
}

const QUEUE_SIZE: Metric = Metric::gauge(
    "otel.sdk.processor.queue.size",
    "Items waiting in the batcher's buffer (items staged by a producer included).",
);
const QUEUE_CAPACITY: Metric =
    Metric::gauge("otel.sdk.processor.queue.capacity", "Items the batcher's buffer can hold.");
const PROCESSED: Metric = Metric::counter(
    "otel.sdk.processor.processed",
    "Items the batcher did not take or dropped, by error.type: rejected (handed back to the \
     producer: full, closed or too heavy), queue_full (evicted by Overflow::DropOldest), expired \
     (older than max_age, not sent).",
);
const INFLIGHT: Metric =
    Metric::gauge("otel.sdk.exporter.inflight", "Items in batches with the handler or waiting to retry.");
const EXPORTED: Metric = Metric::counter(
    "otel.sdk.exporter.exported",
    "Items the handler accepted (no error.type), that failed every attempt \
     (error.type=dead_lettered), or that the handler refused for good in a per-item answer \
     (error.type=rejected_by_handler).",
);
const ACCEPTED: Metric = Metric::counter("batch.items.accepted", "Items the batcher took in.");
const RETURNED: Metric = Metric::counter(
    "batch.items.returned",
    "Items handed back undelivered by a shutdown that hit its deadline.",
);
const ABANDONED: Metric = Metric::counter(
    "batch.items.abandoned",
    "Items of batches a handler still held when a shutdown deadline expired (delivery unknown).",
);
const BATCHES_INFLIGHT: Metric =
    Metric::gauge("batch.batches.inflight", "Batches with the handler or waiting to retry.");
const BATCHES_EXPORTED: Metric = Metric::counter(
    "batch.batches.exported",
    "Batches the handler accepted (no error.type), or that failed every attempt \
     (error.type=dead_lettered).",
);
const RETRIES: Metric = Metric::counter("batch.retries", "Attempts after a batch's first.");
const FAILED_ATTEMPTS: Metric =
    Metric::counter("batch.attempts.failed", "Attempts that failed (an error, a panic or a timeout).");
const PANICS: Metric = Metric::counter(
    "batch.panics",
    "Panics in user code (handler, callbacks, weigher, an item's Drop) caught and contained.",
);
const FLUSHES: Metric = Metric::counter("batch.flushes", "Batches cut, by trigger.");
const MAX_ITEM_AGE: Metric = Metric {
    name: "batch.item.age.max",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    help: "The largest age of a batch's oldest item when the batch was cut.",
};

#[cfg(feature = "disk-store")]
const STORED: Metric = Metric::gauge(
    "batch.store.items",
    "Items in the store waiting to be loaded, or being written by a spill.",
);
#[cfg(feature = "disk-store")]
const STORE_LOST: Metric =
    Metric::counter("batch.store.lost", "Items the store acknowledged but could not produce again.");
#[cfg(feature = "disk-store")]
const STORE_FAILURES: Metric =
    Metric::counter("batch.store.failures", "Store operations that failed (each is retried).");

/// The metrics not in [`SERIES`].
const OTHERS: [&Metric; 3] = [&QUEUE_CAPACITY, &FLUSHES, &MAX_ITEM_AGE];

/// One series read from a [`Metrics`] field: its metric, its `error.type` and the field.
struct Series {
    metric: &'static Metric,
    error: Option<&'static str>,
    value: fn(&Metrics) -> Count,
}

impl Series {
    const fn new(metric: &'static Metric, error: Option<&'static str>, value: fn(&Metrics) -> Count) -> Self {
        Self { metric, error, value }
    }
}

/// Every series read from a counter of [`Metrics`], one line per field. The others (capacity,
/// flushes by trigger, age) are in [`MetricsExporter::record_snapshot`] and [`OTHERS`].
const SERIES: [Series; 17] = [
    Series::new(&QUEUE_SIZE, None, |m| m.buffered),
    Series::new(&PROCESSED, Some("rejected"), |m| m.rejected),
    Series::new(&PROCESSED, Some("queue_full"), |m| m.evicted),
    Series::new(&PROCESSED, Some("expired"), |m| m.expired),
    Series::new(&INFLIGHT, None, |m| m.in_flight),
    Series::new(&EXPORTED, None, |m| m.delivered),
    Series::new(&EXPORTED, DEAD_LETTERED, |m| m.dead_lettered),
    Series::new(&EXPORTED, Some("rejected_by_handler"), |m| m.rejected_by_handler),
    Series::new(&ACCEPTED, None, |m| m.accepted),
    Series::new(&RETURNED, None, |m| m.returned),
    Series::new(&ABANDONED, None, |m| m.abandoned),
    Series::new(&BATCHES_INFLIGHT, None, |m| m.batches_in_flight),
    Series::new(&BATCHES_EXPORTED, None, |m| m.batches_delivered),
    Series::new(&BATCHES_EXPORTED, DEAD_LETTERED, |m| m.batches_dead_lettered),
    Series::new(&RETRIES, None, |m| m.retries),
    Series::new(&FAILED_ATTEMPTS, None, |m| m.failed_attempts),
    Series::new(&PANICS, None, |m| m.panics),
];

/// The store's counters: they exist with batch-core's `store` feature, which `disk-store` turns
/// on.
#[cfg(feature = "disk-store")]
const STORE_SERIES: [Series; 3] = [
    Series::new(&STORED, None, |m| m.stored),
    Series::new(&STORE_LOST, None, |m| m.store_lost),
    Series::new(&STORE_FAILURES, None, |m| m.store_failures),
];
#[cfg(not(feature = "disk-store"))]
const STORE_SERIES: [Series; 0] = [];

/// Publishes one batcher's [`metrics()`](Batcher::metrics) through the [`metrics`] facade, under
/// the names in the [module documentation](self).
///
/// ```
/// use batch_tokio::{Batcher, MetricsExporter, handler};
/// use metrics_util::debugging::{DebugValue, DebuggingRecorder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let batcher = Batcher::builder().spawn(handler::from_sync(|_: &[u32]| Ok::<_, std::io::Error>(()))).unwrap();
/// batcher.add(7).await.unwrap();
/// batcher.flush().await;
///
/// // In a service: the recorder of metrics-exporter-prometheus or another exporter.
/// let recorder = DebuggingRecorder::new();
/// let exporter = MetricsExporter::new("ingest");
/// metrics::with_local_recorder(&recorder, || {
///     MetricsExporter::describe();
///     exporter.record(&batcher);
/// });
/// let delivered = recorder.snapshotter().snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
///     let key = key.key();
///     let plain = key.labels().all(|label| label.key() != "error.type");
///     (key.name() == "otel.sdk.exporter.exported" && plain).then_some(value)
/// });
/// assert_eq!(delivered, Some(DebugValue::Counter(1)));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MetricsExporter {
    /// `otel.component.name` and `otel.component.type`, on every series.
    labels: [Label; 2],
}

impl MetricsExporter {
    /// An exporter for a batcher called `name` (the `otel.component.name` of its series: give
    /// each batcher of a process its own).
    pub fn new(name: impl Into<SharedString>) -> Self {
        Self {
            labels: [
                Label::new("otel.component.name", name),
                Label::from_static_parts("otel.component.type", COMPONENT_TYPE),
            ],
        }
    }

    /// Gives the current recorder the description and unit of every metric. Call it once, after
    /// the recorder is installed; the descriptions are the same for every batcher.
    pub fn describe() {
        for metric in SERIES.iter().chain(&STORE_SERIES).map(|s| s.metric).chain(OTHERS) {
            metric.describe();
        }
    }

    /// Copies `batcher`'s counters and capacity into the current recorder (see the
    /// [module documentation](self) for when to call it).
    pub fn record<T>(&self, batcher: &Batcher<T>) {
        let metrics = batcher.metrics();
        let capacity = batcher.shared.lock().core.capacity();
        self.record_snapshot(&metrics, capacity);
    }

    /// Copies a snapshot, e.g. a [`ShutdownReport`](crate::ShutdownReport)'s final counters,
    /// into the current recorder.
    pub fn record_snapshot(&self, metrics: &Metrics, capacity: usize) {
        for series in SERIES.iter().chain(&STORE_SERIES) {
            self.put(series.metric, series.error.map(|e| (ERROR_TYPE, e)), (series.value)(metrics));
        }
        for trigger in Trigger::ALL {
            self.put(&FLUSHES, Some(("trigger", trigger.name())), metrics.flushes.get(trigger));
        }
        self.put(&QUEUE_CAPACITY, None, capacity as Count);
        #[allow(clippy::cast_precision_loss, reason = "exact below 2^53 µs, 285 years")]
        let age = metrics.max_item_age.as_micros() as f64 / 1e6;
        metrics::gauge!(MAX_ITEM_AGE.name, self.labels(None)).set(age);
    }

    /// Sets one series of `metric`, with the extra label if any.
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53 stay exact")]
    #[allow(clippy::unnecessary_cast, reason = "`Count` is `u32` on 32-bit targets")]
    fn put(&self, metric: &'static Metric, extra: Option<(&'static str, &'static str)>, value: Count) {
        let labels = self.labels(extra);
        match metric.kind {
            Kind::Counter => metrics::counter!(metric.name, labels).absolute(value as u64),
            Kind::Gauge => metrics::gauge!(metric.name, labels).set(value as f64),
        }
    }

    /// The labels of a series: the batcher's, then the extra one.
    fn labels(&self, extra: Option<(&'static str, &'static str)>) -> Vec<Label> {
        let extra = extra.map(|(key, value)| Label::from_static_parts(key, value));
        self.labels.iter().cloned().chain(extra).collect()
    }
}
