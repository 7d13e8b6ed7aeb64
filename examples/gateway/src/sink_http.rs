//! The HTTP mode's sink: one JSON POST per batch with a minimal hyper client (keep-alive pool).
//! A non-2xx answer fails the attempt, and the batcher retries it with backoff. A 2xx answer
//! says what became of each reading ([`collector::Answer`](crate::collector::Answer)); the
//! handler turns it into a per-item answer for the batcher, a
//! [`PartialFailure`]: readings the collector asks for
//! again are retried alone, rejected ones go to `on_reject` with the collector's reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_tokio::handler::{Batch, BoxError, Handler, PartialFailure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::collector::{Answer, ItemStatus};
use crate::report::Baseline;
use crate::sensors::Reading;
use crate::stats::DeliveryStats;

/// Posts batches of readings as JSON arrays.
#[derive(Debug)]
pub(crate) struct HttpSink {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    stats: Arc<DeliveryStats>,
}

impl HttpSink {
    /// A sink posting to `url`.
    pub(crate) fn new(url: &str, stats: Arc<DeliveryStats>) -> Result<Self, BoxError> {
        Ok(Self { client: Client::builder(TokioExecutor::new()).build_http(), uri: url.parse()?, stats })
    }

    /// POSTs `readings` as one JSON array; `Ok` with the per-reading answer for a 2xx answer
    /// that has one status per reading, an error otherwise.
    pub(crate) async fn post(&self, readings: &[Reading]) -> Result<Answer, BoxError> {
        let body = serde_json::to_vec(readings)?;
        let request = Request::post(&self.uri)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        // Read the answer to the end so the connection goes back to the pool.
        let answer = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let answer = String::from_utf8_lossy(&answer);
            return Err(format!("collector answered {status}: {}", answer.trim()).into());
        }
        let answer: Answer = serde_json::from_slice(&answer)?;
        if answer.results.len() != readings.len() {
            // An answer for another batch: trust none of it (the batch is sent again).
            return Err(format!("{} results for {} readings", answer.results.len(), readings.len()).into());
        }
        Ok(answer)
    }
}

impl Handler<Reading> for HttpSink {
    type Error = BoxError;

    async fn handle(&self, batch: &mut Batch<Reading>) -> Result<(), BoxError> {
        let started = Instant::now();
        let result = self.post(batch).await;
        self.stats.attempt(started.elapsed());
        let answer = result?;
        let now = Instant::now();
        let mut failure = PartialFailure::new();
        for (i, status) in answer.results.iter().enumerate() {
            match status {
                ItemStatus::Stored => {}
                ItemStatus::Rejected { reason } => {
                    failure.reject(i, reason.clone());
                }
                ItemStatus::Retry { .. } => {
                    failure.retry(i);
                }
            }
        }
        let stored = batch.iter().zip(&answer.results).filter(|(_, s)| **s == ItemStatus::Stored);
        self.stats.delivered_some(stored.map(|(r, _)| r), now);
        self.stats.retried_alone(failure.retries().len() as u64);
        if failure.is_empty() { Ok(()) } else { Err(failure.into()) }
    }
}

/// The comparison: POSTs up to `max_items` readings one per request, one after the other, to
/// `url` (a collector without injected failures), stopping early after `budget`.
pub(crate) async fn baseline(
    url: &str,
    max_items: u64,
    sensors: u32,
    budget: Duration,
) -> Result<Baseline, BoxError> {
    let sink = HttpSink::new(url, Arc::new(DeliveryStats::new()))?;
    let start = Instant::now();
    let mut rows = 0;
    while rows < max_items && start.elapsed() < budget {
        sink.post(std::slice::from_ref(&Reading::synthetic(rows, sensors))).await?;
        rows += 1;
    }
    Ok(Baseline { label: "one reading per request", unit: "reading", rows, took: start.elapsed() })
}
