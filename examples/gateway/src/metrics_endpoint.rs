//! `GET /metrics`: the batcher's counters in Prometheus text format, on an HTTP endpoint the
//! demo starts and stops itself (`--metrics-addr`).
//!
//! The recorder is metrics-exporter-prometheus's, installed as the global `metrics` recorder
//! with Prometheus' recommended naming (counters end in `_total`, the item age in `_seconds`;
//! dots become underscores). Its own HTTP listener is not used: the route is the demo's, so the
//! port and the shutdown follow the run. Each scrape first copies the batcher's `metrics()` into
//! the recorder with [`batch_tokio::MetricsExporter`], then renders: a scrape shows the batcher
//! as it is at that moment, under the names in `batch_tokio::export`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use batch_tokio::handler::BoxError;
use batch_tokio::{Batcher, MetricsExporter, WeakBatcher};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::sensors::Reading;
use crate::serve::Server;

/// The path the counters are served at.
pub(crate) const PATH: &str = "/metrics";
/// The batcher's `otel.component.name`.
pub(crate) const NAME: &str = "gateway";

/// What a scrape reads.
struct Scrape {
    recorder: PrometheusHandle,
    exporter: MetricsExporter,
    /// Weak: the endpoint does not keep the batcher open.
    batcher: WeakBatcher<Reading>,
}

/// A running `/metrics` endpoint.
#[derive(Debug)]
pub(crate) struct MetricsEndpoint {
    server: Server,
}

impl MetricsEndpoint {
    /// Installs the Prometheus recorder (once per process) and serves `batcher`'s counters on
    /// `addr` until [`stop`](Self::stop).
    pub(crate) async fn start(addr: SocketAddr, batcher: &Batcher<Reading>) -> Result<Self, BoxError> {
        let recorder = PrometheusBuilder::new().with_recommended_naming(true).install_recorder()?;
        MetricsExporter::describe();
        let scrape = Scrape { recorder, exporter: MetricsExporter::new(NAME), batcher: batcher.downgrade() };
        let app = Router::new().route(PATH, get(scrape_handler)).with_state(Arc::new(scrape));
        Ok(Self { server: Server::start(addr, app, "metrics endpoint").await? })
    }

    /// The URL to scrape.
    pub(crate) fn url(&self) -> String {
        format!("http://{}{PATH}", self.server.addr())
    }

    /// Stops serving.
    pub(crate) async fn stop(self) {
        self.server.stop().await;
    }
}

/// `GET /metrics`: record the batcher's counters, then render them all.
async fn scrape_handler(State(scrape): State<Arc<Scrape>>) -> impl IntoResponse {
    if let Some(batcher) = scrape.batcher.upgrade() {
        scrape.exporter.record(&batcher);
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], scrape.recorder.render())
}
