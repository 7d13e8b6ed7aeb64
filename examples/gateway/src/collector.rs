//! The HTTP mode's "cloud": an axum server on 127.0.0.1 that takes JSON batches of readings by
//! POST at `/api/temperatures`, keeps the `(sensor, seq)` keys it stored, and answers 503 to a
//! seeded share of requests (and to every request during a scheduled outage).
//!
//! Otherwise it answers per reading, in order (200 when all were stored, 207 Multi-Status when
//! not): `{"results": [{"status": "stored"}, {"status": "rejected", "reason": "..."},
//! {"status": "retry", "reason": "..."}]}`. A malformed reading (no value, a temperature out of
//! range, no timestamp) is rejected for good; a seeded share of the others meets a write
//! conflict and is to be sent again. Only stored readings are kept, so nothing is stored twice;
//! the collector still counts duplicates, and the self-check requires none.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::check::SinkContents;
use crate::rng::Faults;
use crate::serve::Server;

/// The path batches are posted to.
pub(crate) const PATH: &str = "/api/temperatures";

/// A reading as the collector receives it (the wire format the gateway serializes; a missing
/// value arrives as `null`).
#[derive(Debug, Deserialize)]
struct IncomingReading {
    sensor: u32,
    seq: u64,
    temperature: Option<f64>,
    timestamp_ms: u64,
}

impl IncomingReading {
    /// Why the reading is implausible, if it is: a finite temperature in a sensor's range and a
    /// set timestamp are required.
    fn defect(&self) -> Option<&'static str> {
        match self.temperature {
            None => Some("no temperature value"),
            Some(t) if !(-60.0..=150.0).contains(&t) => Some("temperature out of range"),
            Some(_) if self.timestamp_ms == 0 => Some("no timestamp"),
            Some(_) => None,
        }
    }
}

/// One reading's fate in the collector's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum ItemStatus {
    /// Stored.
    Stored,
    /// Refused for good: sending it again would not help.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Not stored this time: send it again.
    Retry {
        /// Why.
        reason: String,
    },
}

/// The collector's answer to a batch it did not refuse as a whole: one status per reading, in
/// the order posted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Answer {
    /// Per reading.
    pub(crate) results: Vec<ItemStatus>,
}

/// The collector's state, shared by its request handlers.
#[derive(Debug)]
struct Shared {
    faults: Faults,
    /// Per reading: write conflicts (answered `retry`).
    conflicts: Faults,
    outage: Option<Range<Instant>>,
    stored: Mutex<HashSet<(u32, u64)>>,
    requests: AtomicU64,
    refused: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
}

/// What the collector saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CollectorStats {
    /// POSTs received.
    pub(crate) requests: u64,
    /// POSTs answered 503 (injected failures and the outage).
    pub(crate) refused: u64,
    /// Readings rejected for good (malformed).
    pub(crate) rejected: u64,
    /// Readings answered `retry` (write conflicts).
    pub(crate) conflicts: u64,
}

/// A running collector.
#[derive(Debug)]
pub(crate) struct Collector {
    shared: Arc<Shared>,
    server: Server,
}

impl Collector {
    /// Binds 127.0.0.1 on a free port and serves until [`stop`](Self::stop). `fail_rate` of the
    /// requests get a 503 (seeded by `seed`), and so does every request during `outage`; a
    /// quarter of that share of the readings it would store meet a write conflict instead.
    pub(crate) async fn start(
        fail_rate: f64,
        seed: u64,
        outage: Option<Range<Instant>>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            faults: Faults::new(fail_rate, seed),
            conflicts: Faults::new(fail_rate / 4.0, seed ^ 0xC0F1_1C75),
            outage,
            stored: Mutex::new(HashSet::new()),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        let app = Router::new().route(PATH, post(receive)).with_state(Arc::clone(&shared));
        let server = Server::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), app, "collector").await?;
        Ok(Self { shared, server })
    }

    /// The URL batches are posted to.
    pub(crate) fn url(&self) -> String {
        format!("http://{}{PATH}", self.server.addr())
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> CollectorStats {
        CollectorStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            conflicts: self.shared.conflicts.injected(),
        }
    }

    /// What the collector stored, for the self-check.
    pub(crate) fn contents(&self) -> SinkContents {
        let stored = self.shared.stored.lock().unwrap_or_else(PoisonError::into_inner);
        SinkContents {
            what: "unique readings stored by the collector",
            count: stored.len() as u64,
            duplicates: self.shared.duplicates.load(Ordering::Relaxed),
            order_violations: None,
            keys: stored.iter().copied().collect(),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(self) {
        self.server.stop().await;
    }
}

/// `POST /api/temperatures`: refuse the batch with 503 before storing anything, or answer per
/// reading: store it, reject it for good (malformed), or ask for it again (a write conflict).
async fn receive(
    State(shared): State<Arc<Shared>>,
    Json(batch): Json<Vec<IncomingReading>>,
) -> Result<(StatusCode, Json<Answer>), (StatusCode, &'static str)> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let in_outage = shared.outage.as_ref().is_some_and(|w| w.contains(&Instant::now()));
    if in_outage || shared.faults.should_fail() {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return Err((StatusCode::SERVICE_UNAVAILABLE, "try again later\n"));
    }
    let mut results = Vec::with_capacity(batch.len());
    let (mut duplicates, mut rejected) = (0, 0);
    {
        let mut stored = shared.stored.lock().unwrap_or_else(PoisonError::into_inner);
        for r in &batch {
            let status = if let Some(defect) = r.defect() {
                rejected += 1;
                ItemStatus::Rejected { reason: defect.to_owned() }
            } else if shared.conflicts.should_fail() {
                ItemStatus::Retry { reason: "write conflict".to_owned() }
            } else {
                if !stored.insert((r.sensor, r.seq)) {
                    duplicates += 1;
                }
                ItemStatus::Stored
            };
            results.push(status);
        }
    }
    shared.duplicates.fetch_add(duplicates, Ordering::Relaxed);
    shared.rejected.fetch_add(rejected, Ordering::Relaxed);
    let all_stored = results.iter().all(|s| *s == ItemStatus::Stored);
    let status = if all_stored { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    Ok((status, Json(Answer { results })))
}
