//! `MetricsExporter` (feature `metrics`): what a recorder receives equals `metrics()`, series by
//! series, under the names of the mapping table in `batch_tokio::export`. The expected series
//! are written out here on their own (not taken from the crate), and every field `Metrics`
//! shows in its `Debug` output must be one of them: a field added later fails these tests until
//! it is exported and listed.
#![allow(missing_docs, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batch_tokio::handler::{self, Batch, BoxError, PartialFailure};
use batch_tokio::{Batcher, Metrics, MetricsExporter, Overflow, Trigger};
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const CAPACITY: usize = 8;
const NAME: &str = "ingest";

/// A series: metric name and its labels other than the batcher's two, sorted.
type SeriesKey = (String, Vec<(String, String)>);

/// A recorded value: counters as integers, gauges as floats.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Counter(u64),
    Gauge(f64),
}

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    let mut labels: Vec<_> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// The `Metrics` fields (as `Debug` shows them) that [`expected`] maps: the counters, the
/// flush counts by trigger, and `micros` of `max_item_age`.
const MAPPED: [&str; 21] = [
    "accepted",
    "rejected",
    "delivered",
    "dead_lettered",
    "evicted",
    "returned",
    "abandoned",
    "buffered",
    "in_flight",
    "retries",
    "failed_attempts",
    "batches_delivered",
    "batches_dead_lettered",
    "batches_in_flight",
    "panics",
    "rejected_by_handler",
    "expired",
    "micros",
    "stored",
    "store_lost",
    "store_failures",
];

/// The series `metrics()` and the capacity should produce, written out from the table.
fn expected(m: &Metrics, capacity: usize) -> BTreeMap<SeriesKey, Value> {
    // A field added to `Metrics` must be exported (src/export.rs) and listed here.
    for (field, _) in debug_fields(&format!("{m:?}")) {
        let trigger = Trigger::ALL.iter().any(|t| t.name() == field);
        assert!(trigger || MAPPED.contains(&field.as_str()), "Metrics::{field} is not exported");
    }
    let c = |n: u64| Value::Counter(n);
    let g = |n: u64| Value::Gauge(n as f64);
    let dead = [("error.type", "dead_lettered")];
    let mut out = BTreeMap::from([
        (key("otel.sdk.processor.queue.size", &[]), g(m.buffered)),
        (key("otel.sdk.processor.queue.capacity", &[]), g(capacity as u64)),
        (key("otel.sdk.processor.processed", &[("error.type", "rejected")]), c(m.rejected)),
        (key("otel.sdk.processor.processed", &[("error.type", "queue_full")]), c(m.evicted)),
        (key("otel.sdk.exporter.inflight", &[]), g(m.in_flight)),
        (key("otel.sdk.exporter.exported", &[]), c(m.delivered)),
        (key("otel.sdk.exporter.exported", &dead), c(m.dead_lettered)),
        (
            key("otel.sdk.exporter.exported", &[("error.type", "rejected_by_handler")]),
            c(m.rejected_by_handler),
        ),
        (key("otel.sdk.processor.processed", &[("error.type", "expired")]), c(m.expired)),
        (key("batch.items.accepted", &[]), c(m.accepted)),
        (key("batch.items.returned", &[]), c(m.returned)),
        (key("batch.items.abandoned", &[]), c(m.abandoned)),
        (key("batch.batches.inflight", &[]), g(m.batches_in_flight)),
        (key("batch.batches.exported", &[]), c(m.batches_delivered)),
        (key("batch.batches.exported", &dead), c(m.batches_dead_lettered)),
        (key("batch.retries", &[]), c(m.retries)),
        (key("batch.attempts.failed", &[]), c(m.failed_attempts)),
        (key("batch.panics", &[]), c(m.panics)),
        (key("batch.item.age.max", &[]), Value::Gauge(m.max_item_age.as_micros() as f64 / 1e6)),
    ]);
    for trigger in Trigger::ALL {
        out.insert(key("batch.flushes", &[("trigger", trigger.name())]), c(m.flushes.get(trigger)));
    }
    #[cfg(feature = "disk-store")]
    out.extend([
        (key("batch.store.items", &[]), g(m.stored)),
        (key("batch.store.lost", &[]), c(m.store_lost)),
        (key("batch.store.failures", &[]), c(m.store_failures)),
    ]);
    out
}

/// The `name: number` pairs of a `Debug` rendering, nested structs included.
fn debug_fields(text: &str) -> Vec<(String, u64)> {
    let words: Vec<&str> = text.split([' ', ',', '{', '}']).filter(|w| !w.is_empty()).collect();
    words.windows(2).filter_map(|w| Some((w[0].strip_suffix(':')?.to_owned(), w[1].parse().ok()?))).collect()
}

/// What the recorder holds for the batcher called `name`: every series, the batcher's labels
/// checked and removed. Counters are reset by a snapshot (the next `record` sets them again).
fn recorded(recorder: &DebuggingRecorder, name: &str) -> BTreeMap<SeriesKey, Value> {
    let mut out = BTreeMap::new();
    for (composite, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let k = composite.key();
        let mut labels: Vec<(String, String)> =
            k.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        let component = labels.iter().find(|(k, _)| k == "otel.component.name").map(|(_, v)| v.clone());
        if component.as_deref() != Some(name) {
            continue;
        }
        let kind = ("otel.component.type".to_owned(), "batch_tokio::Batcher".to_owned());
        assert!(labels.contains(&kind), "{} lacks otel.component.type: {labels:?}", k.name());
        labels.retain(|(k, _)| !k.starts_with("otel.component."));
        labels.sort();
        let value = match value {
            DebugValue::Counter(n) => Value::Counter(n),
            DebugValue::Gauge(x) => Value::Gauge(x.into_inner()),
            DebugValue::Histogram(_) => panic!("{} is a histogram", k.name()),
        };
        assert!(out.insert((k.name().to_owned(), labels), value).is_none(), "{} twice", k.name());
    }
    out
}

/// Records `batcher` into `recorder` and checks every series against `metrics()` taken at the
/// same moment (nothing else runs on this current-thread runtime in between).
fn check(recorder: &DebuggingRecorder, exporter: &MetricsExporter, batcher: &Batcher<u32>) -> Metrics {
    let m = batcher.metrics();
    metrics::with_local_recorder(recorder, || exporter.record(batcher));
    assert!(m.is_consistent(), "{m:?}");
    let got = recorded(recorder, NAME);
    let want = expected(&m, CAPACITY);
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "series {k:?} (metrics: {m:?})");
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "series not in the table: {extra:?}");
    m
}

/// Batches a handler kept past their attempt.
type Kept = Arc<Mutex<Vec<Batch<u32>>>>;

/// Fails every attempt of a batch holding an item of 100 or more; panics on the first attempt
/// of a batch holding 5 (the retry succeeds); keeps a second attempt of a batch holding 200 and
/// never finishes it (a shutdown deadline abandons it); rejects 61 in a per-item answer.
async fn flaky(mut batch: Batch<u32>, kept: Kept) -> Result<(), BoxError> {
    assert!(!(batch.attempt() == 1 && batch.contains(&5)), "planted panic");
    if batch.attempt() == 2 && batch.contains(&200) {
        kept.lock().unwrap().push(batch.share());
        std::future::pending::<()>().await;
    }
    if batch.iter().any(|&i| i >= 100) {
        return Err(std::io::Error::other("refused").into());
    }
    // 61 is malformed: the sink takes the rest of its batch.
    let mut answer = PartialFailure::new();
    for (i, _) in batch.iter().enumerate().filter(|(_, x)| **x == 61) {
        answer.reject(i, "malformed");
    }
    if answer.is_empty() { Ok(()) } else { Err(answer.into()) }
}

#[tokio::test(start_paused = true)]
async fn every_exported_value_equals_metrics() {
    let dead = Arc::new(Mutex::new(Vec::new()));
    let kept = Kept::default();
    let on_error = Arc::clone(&dead);
    let batcher = Batcher::builder()
        .capacity(CAPACITY)
        .max_batch(4)
        .linger(ms(100))
        .max_attempts(2)
        .retry_delays(ms(50), ms(50))
        .overflow(Overflow::DropOldest)
        .max_age(Duration::from_secs(10))
        .on_error(move |_, letter| on_error.lock().unwrap().extend_from_slice(letter.items()))
        .spawn(handler::from_fn({
            let kept = Arc::clone(&kept);
            move |batch| flaky(batch, Arc::clone(&kept))
        }))
        .unwrap();
    let recorder = DebuggingRecorder::new();
    let exporter = MetricsExporter::new(NAME);

    // Idle: every series is there, zero but for the capacity.
    let m = check(&recorder, &exporter, &batcher);
    assert_eq!(m, Metrics::default());

    // Delivered (one batch panics once, then succeeds) and dead-lettered (two attempts).
    // A lone item waits for linger.
    batcher.add_many(0..8).await.unwrap();
    batcher.flush().await;
    batcher.add(50).await.unwrap();
    tokio::time::sleep(ms(150)).await;
    batcher.add_many(100..104).await.unwrap();
    batcher.flush().await;
    let m = check(&recorder, &exporter, &batcher);
    assert_eq!((m.delivered, m.dead_lettered, m.panics, m.evicted), (9, 4, 1, 0), "{m:?}");
    assert_eq!((m.flushes.size, m.flushes.linger, m.max_item_age.as_micros()), (3, 1, 100_000), "{m:?}");
    assert_eq!(dead.lock().unwrap().len(), 4);

    // A per-item answer rejects one item; one item waits past max_age while paused.
    batcher.add_many(60..64).await.unwrap();
    batcher.flush().await;
    batcher.pause();
    batcher.add(70).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    batcher.resume();
    batcher.flush().await;
    let m = check(&recorder, &exporter, &batcher);
    assert_eq!((m.delivered, m.rejected_by_handler, m.expired), (12, 1, 1), "{m:?}");

    // A batch waiting to retry, items buffered behind it, and evictions.
    batcher.add_many(200..204).await.unwrap();
    tokio::time::sleep(ms(10)).await; // the first attempt fails; the retry is due at 50 ms
    batcher.add_many(0..10).await.unwrap(); // 8 fit: the 2 oldest are evicted
    let m = check(&recorder, &exporter, &batcher);
    assert_eq!((m.in_flight, m.batches_in_flight), (4, 1), "{m:?}");
    assert_eq!((m.buffered, m.evicted), (8, 2), "{m:?}");

    // The retry (at 50 ms) never ends and the handler keeps its batch. Rejected after close; the
    // shutdown deadline returns the buffered items and abandons the kept batch.
    tokio::time::sleep(ms(50)).await;
    assert_eq!(kept.lock().unwrap().len(), 1);
    batcher.close();
    assert!(batcher.try_add(7).is_err());
    let report = batcher.shutdown_timeout(ms(20)).await;
    assert!(report.timed_out);
    let m = check(&recorder, &exporter, &batcher);
    assert_eq!(m, report.metrics);
    assert_eq!((m.rejected, m.returned, m.abandoned, m.buffered, m.in_flight), (1, 8, 4, 0, 0), "{m:?}");
}

#[test]
fn describe_gives_every_metric_a_description_and_unit() {
    let recorder = DebuggingRecorder::new();
    let m = Metrics::default();
    metrics::with_local_recorder(&recorder, || {
        MetricsExporter::describe();
        MetricsExporter::new(NAME).record_snapshot(&m, CAPACITY);
    });
    let snapshot = recorder.snapshotter().snapshot().into_vec();
    let names: std::collections::BTreeSet<_> = expected(&m, CAPACITY).into_keys().map(|(n, _)| n).collect();
    assert_eq!(names.len(), if cfg!(feature = "disk-store") { 18 } else { 15 });
    let mut described = std::collections::BTreeSet::new();
    for (composite, unit, help, _) in snapshot {
        let name = composite.key().name();
        let want = if name == "batch.item.age.max" { Unit::Seconds } else { Unit::Count };
        assert_eq!(unit, Some(want), "{name}");
        assert!(help.is_some_and(|h| !h.is_empty()), "{name} has no description");
        described.insert(name.to_owned());
    }
    assert_eq!(described, names);
}

#[test]
fn batchers_are_told_apart_by_their_name() {
    let recorder = DebuggingRecorder::new();
    let a = Metrics { accepted: 3, buffered: 3, ..Metrics::default() };
    let b = Metrics { accepted: 5, delivered: 5, ..Metrics::default() };
    metrics::with_local_recorder(&recorder, || {
        MetricsExporter::new("a").record_snapshot(&a, 16);
        MetricsExporter::new(String::from("b")).record_snapshot(&b, 32);
    });
    let snapshot = recorder.snapshotter();
    let all = snapshot.snapshot();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for (composite, ..) in all.into_vec() {
        let name = composite.key().labels().find(|l| l.key() == "otel.component.name").unwrap();
        *by_name.entry(name.value().to_owned()).or_default() += 1;
    }
    let each = expected(&Metrics::default(), 0).len();
    assert_eq!(by_name, BTreeMap::from([("a".to_owned(), each), ("b".to_owned(), each)]));
}
