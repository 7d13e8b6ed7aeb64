//! `/metrics`: the demo serves the batcher's counters in Prometheus text format. A short run
//! with `--metrics-hold` prints the final `metrics()` and keeps serving until its standard input
//! closes; this test scrapes the endpoint over HTTP then, and every scraped figure must equal
//! the printed one. The test waits on the demo's output and its socket, never on a clock.
#![allow(clippy::cast_precision_loss, reason = "the figures are far below 2^53")]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use batch_tokio::Trigger;

/// The series a `Metrics` field (as its `Debug` output names it) is exported as, with its
/// labels besides the batcher's, and the divisor from the field to the scraped value. Names
/// follow batch_tokio::export with Prometheus' recommended naming (dots to underscores,
/// `_total` on counters, `_seconds` on the age).
const SERIES: [(&str, &str, &str, f64); 22] = [
    ("buffered", "otel_sdk_processor_queue_size", "", 1.0),
    ("rejected", "otel_sdk_processor_processed_total", "error_type=rejected", 1.0),
    ("evicted", "otel_sdk_processor_processed_total", "error_type=queue_full", 1.0),
    ("in_flight", "otel_sdk_exporter_inflight", "", 1.0),
    ("delivered", "otel_sdk_exporter_exported_total", "", 1.0),
    ("dead_lettered", "otel_sdk_exporter_exported_total", "error_type=dead_lettered", 1.0),
    ("accepted", "batch_items_accepted_total", "", 1.0),
    ("returned", "batch_items_returned_total", "", 1.0),
    ("abandoned", "batch_items_abandoned_total", "", 1.0),
    ("batches_in_flight", "batch_batches_inflight", "", 1.0),
    ("batches_delivered", "batch_batches_exported_total", "", 1.0),
    ("batches_dead_lettered", "batch_batches_exported_total", "error_type=dead_lettered", 1.0),
    ("retries", "batch_retries_total", "", 1.0),
    ("failed_attempts", "batch_attempts_failed_total", "", 1.0),
    ("panics", "batch_panics_total", "", 1.0),
    ("rejected_by_handler", "otel_sdk_exporter_exported_total", "error_type=rejected_by_handler", 1.0),
    ("expired", "otel_sdk_processor_processed_total", "error_type=expired", 1.0),
    ("micros", "batch_item_age_max_seconds", "", 1e6),
    // The gateway builds batch-tokio with `disk-store` (--store, --mqtt's spill).
    ("stored", "batch_store_items", "", 1.0),
    ("store_lost", "batch_store_lost_total", "", 1.0),
    ("store_failures", "batch_store_failures_total", "", 1.0),
    ("", "otel_sdk_processor_queue_capacity", "", 1.0),
];

/// [`SERIES`] and the flush counts by trigger (`FlushCounts`' fields are the trigger names).
fn all_series() -> Vec<(String, String, String, f64)> {
    let flushes =
        Trigger::ALL.map(|t| (t.name(), "batch_flushes_total", format!("trigger={}", t.name()), 1.0));
    SERIES
        .iter()
        .map(|&(field, name, labels, factor)| (field, name, labels.to_owned(), factor))
        .chain(flushes)
        .map(|(field, name, labels, factor)| (field.to_owned(), name.to_owned(), labels, factor))
        .collect()
}

/// The `name: number` pairs of a `Debug` rendering, nested structs included.
fn debug_fields(text: &str) -> BTreeMap<String, u64> {
    let words: Vec<&str> = text.split([' ', ',', '{', '}']).filter(|w| !w.is_empty()).collect();
    words.windows(2).filter_map(|w| Some((w[0].strip_suffix(':')?.to_owned(), w[1].parse().ok()?))).collect()
}

/// The samples of a Prometheus text page whose `otel_component_name` is "gateway", keyed by
/// name and their other labels (`k=v`, sorted, joined by commas, `otel_component_*` left out).
fn samples(page: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in page.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut labels: Vec<(&str, &str)> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k, v.trim_matches('"'))
            })
            .collect();
        if !labels.contains(&("otel_component_name", "gateway")) {
            continue;
        }
        assert!(labels.contains(&("otel_component_type", "batch_tokio::Batcher")), "{line}");
        labels.retain(|(k, _)| !k.starts_with("otel_component_"));
        labels.sort_unstable();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert!(out.insert((name.to_owned(), labels.join(",")), value).is_none(), "twice: {line}");
    }
    out
}

/// `GET url` over plain HTTP/1.1; the body of a 200 answer.
fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = TcpStream::connect(host).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

#[test]
fn scraped_figures_equal_the_final_metrics() {
    let dir = std::env::temp_dir().join(format!("gateway-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--seconds", "0.5", "--rate", "400", "--sensors", "4", "--fail-rate", "0.3"])
        .args(["--db", "metrics.db", "--metrics-addr", "127.0.0.1:0", "--metrics-hold"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway binary runs");

    // Read until the demo says it holds; it prints the URL at the start, the final counters last.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = String::new();
    let (mut url, mut last) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        output.push_str(&line);
        output.push('\n');
        if let Some(u) = line.trim().strip_prefix("metrics: ") {
            url.get_or_insert_with(|| u.split(' ').next().unwrap().to_owned());
        }
        if let Some(m) = line.strip_prefix("final metrics(): ") {
            last = Some(m.to_owned());
        }
        if line.starts_with("metrics: serving") {
            break;
        }
    }
    let (Some(url), Some(last)) = (url, last) else {
        panic!("no URL or final metrics in the output:\n{output}");
    };
    assert!(output.contains("all checks passed"), "{output}");
    let page = get(&url);
    drop(child.stdin.take()); // the demo stops serving and exits
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}\n{output}");
    let _ = std::fs::remove_dir_all(&dir);

    let fields = debug_fields(&last);
    let scraped = samples(&page);
    let series = all_series();
    for field in fields.keys() {
        assert!(series.iter().any(|s| &s.0 == field), "Metrics::{field} is not checked here");
    }
    for (field, name, labels, divisor) in &series {
        // The capacity is not in `metrics()`: SQLite mode's, from main.rs.
        let want = if field.is_empty() { 20_000.0 } else { fields[field] as f64 / divisor };
        let got = scraped.get(&(name.clone(), labels.clone()));
        assert_eq!(got, Some(&want), "{name}{{{labels}}} (Metrics::{field})\n{page}");
    }
    assert_eq!(scraped.len(), series.len(), "series not checked here:\n{page}");
    assert!(fields["delivered"] > 0 && fields["retries"] > 0, "{last}");
}
