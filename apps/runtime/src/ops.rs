//! A role's operator endpoints on `HTTP_ADDR` when it serves no API (the analytics
//! service): `/metrics`, `/health/live` and `/health/ready`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use folio_domain::analytics::StopFlag;
use folio_domain::ports::Readiness;
use tracing::info;

use crate::metrics::Metrics;

/// Binds `addr` now (so a taken port fails the start), and returns the bound address and
/// the server, which runs until `stop` is set and then drains for up to `drain`.
pub async fn bind(
    addr: &str,
    readiness: Vec<Arc<dyn Readiness>>,
    metrics: &Arc<Metrics>,
    drain: Duration,
) -> anyhow::Result<(String, impl FnOnce(StopFlag) -> OpsServer)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    info!(addr = %bound, "metrics and health endpoints listening");
    let app = folio_http::ops_app(readiness, Some(metrics.text()));
    let serve = move |stop: StopFlag| -> OpsServer {
        Box::pin(async move {
            folio_http::serve_on(listener, app, async move { stop.stopped().await }, drain)
                .await
                .context("HTTP server")
        })
    };
    Ok((bound, serve))
}

/// The running server's future.
pub type OpsServer = futures_util::future::BoxFuture<'static, anyhow::Result<()>>;
