//! A small axum server on a port of the demo's choosing, stopped gracefully by its owner: the
//! HTTP collector and the `/metrics` endpoint run on it.

use std::net::SocketAddr;

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    what: &'static str,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` (port 0: a free one) and serves `app` until [`stop`](Self::stop); `what`
    /// names the server in logs.
    pub(crate) async fn start(addr: SocketAddr, app: Router, what: &'static str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "{what} listening");
        Ok(Self { addr, what, shutdown, task })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(self) {
        let what = self.what;
        let _ = self.shutdown.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{what} ended with an error"),
            Err(e) => tracing::warn!(error = %e, "{what} task failed"),
        }
    }
}
