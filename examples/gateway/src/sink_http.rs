//! The HTTP mode's sink: one JSON POST per batch with a minimal hyper client (keep-alive pool).
//! A non-2xx answer fails the attempt, and the batcher retries it with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_tokio::handler::{Batch, BoxError, Handler};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

    /// POSTs `readings` as one JSON array; `Ok` only for a 2xx answer.
    pub(crate) async fn post(&self, readings: &[Reading]) -> Result<(), BoxError> {
        let body = serde_json::to_vec(readings)?;
        let request = Request::post(&self.uri)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        // Read the answer to the end so the connection goes back to the pool.
        let answer = response.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(())
        } else {
            let answer = String::from_utf8_lossy(&answer);
            Err(format!("collector answered {status}: {}", answer.trim()).into())
        }
    }
}

impl Handler<Reading> for HttpSink {
    type Error = BoxError;

    async fn handle(&self, batch: &mut Batch<Reading>) -> Result<(), BoxError> {
        let started = Instant::now();
        let result = self.post(batch).await;
        self.stats.attempt(started.elapsed());
        result?;
        self.stats.delivered(batch, Instant::now());
        Ok(())
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
