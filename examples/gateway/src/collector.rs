//! The HTTP mode's "cloud": an axum server on 127.0.0.1 that takes JSON batches of readings by
//! POST at `/api/temperatures`, keeps the `(sensor, seq)` keys it stored, and answers 503 to a
//! seeded share of requests (and to every request during a scheduled outage).
//!
//! A refused request is refused before anything is stored, so a retried batch is never stored
//! twice; the collector still counts duplicates, and the self-check requires none.

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
use serde::Deserialize;

use crate::check::SinkContents;
use crate::rng::Faults;
use crate::serve::Server;

/// The path batches are posted to.
pub(crate) const PATH: &str = "/api/temperatures";

/// A reading as the collector receives it (the wire format the gateway serializes).
#[derive(Debug, Deserialize)]
struct IncomingReading {
    sensor: u32,
    seq: u64,
    temperature: f64,
    timestamp_ms: u64,
}

impl IncomingReading {
    /// A plausible reading: a finite temperature in a sensor's range and a set timestamp.
    fn is_valid(&self) -> bool {
        self.temperature.is_finite() && (-60.0..=150.0).contains(&self.temperature) && self.timestamp_ms > 0
    }
}

/// The collector's state, shared by its request handlers.
#[derive(Debug)]
struct Shared {
    faults: Faults,
    outage: Option<Range<Instant>>,
    stored: Mutex<HashSet<(u32, u64)>>,
    requests: AtomicU64,
    refused: AtomicU64,
    duplicates: AtomicU64,
}

/// What the collector saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CollectorStats {
    /// POSTs received.
    pub(crate) requests: u64,
    /// POSTs answered 503 (injected failures and the outage).
    pub(crate) refused: u64,
}

/// A running collector.
#[derive(Debug)]
pub(crate) struct Collector {
    shared: Arc<Shared>,
    server: Server,
}

impl Collector {
    /// Binds 127.0.0.1 on a free port and serves until [`stop`](Self::stop). `fail_rate` of the
    /// requests get a 503 (seeded by `seed`), and so does every request during `outage`.
    pub(crate) async fn start(
        fail_rate: f64,
        seed: u64,
        outage: Option<Range<Instant>>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            faults: Faults::new(fail_rate, seed),
            outage,
            stored: Mutex::new(HashSet::new()),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
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

/// `POST /api/temperatures`: store a batch, or refuse it with 503 before storing anything.
async fn receive(
    State(shared): State<Arc<Shared>>,
    Json(batch): Json<Vec<IncomingReading>>,
) -> (StatusCode, &'static str) {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let in_outage = shared.outage.as_ref().is_some_and(|w| w.contains(&Instant::now()));
    if in_outage || shared.faults.should_fail() {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
    }
    if !batch.iter().all(IncomingReading::is_valid) {
        return (StatusCode::UNPROCESSABLE_ENTITY, "implausible reading\n");
    }
    let mut duplicates = 0;
    {
        let mut stored = shared.stored.lock().unwrap_or_else(PoisonError::into_inner);
        for r in &batch {
            if !stored.insert((r.sensor, r.seq)) {
                duplicates += 1;
            }
        }
    }
    shared.duplicates.fetch_add(duplicates, Ordering::Relaxed);
    (StatusCode::OK, "stored\n")
}
