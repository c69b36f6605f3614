//! Endpoints outside `/api/v1` for operators: liveness, readiness, Prometheus metrics and
//! the admin dashboard page.

use std::sync::Arc;
use std::time::Duration;

use folio_domain::ports::Readiness;
use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{handler, Response};
use serde_json::{json, Map, Value};

use crate::metrics::HttpMetrics;
use crate::problem::PROBLEM_JSON;
use crate::ExtraMetrics;

/// How long one readiness check may take before it counts as failed: a hung database must
/// not hang the orchestrator's probe.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The dashboard: one page (inline CSS and JS, plus the vendored chart library below), so
/// it works offline and needs no build step.
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");

/// The readiness checks, shared by every request.
#[derive(Clone)]
pub(crate) struct Checks(pub Arc<Vec<Arc<dyn Readiness>>>);

/// Liveness: the process answers. Says nothing about dependencies on purpose, so a
/// database outage does not get the process restarted.
#[handler]
pub(crate) fn live() -> poem::web::Json<Value> {
    poem::web::Json(json!({ "status": "ok" }))
}

/// Readiness: every dependency answers. 503 problem+json naming the ones that failed.
#[handler]
pub(crate) async fn ready(checks: Data<&Checks>) -> Response {
    let results = futures_util::future::join_all(checks.0 .0.iter().map(|dep| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, dep.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        };
        (dep.name(), outcome)
    }))
    .await;
    let mut report = Map::new();
    let mut failed = Vec::new();
    for (name, outcome) in results {
        match outcome {
            Ok(()) => {
                report.insert(name.to_string(), json!("ok"));
            }
            Err(reason) => {
                tracing::warn!(dependency = name, %reason, "readiness check failed");
                report.insert(name.to_string(), json!(reason));
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        return Response::builder()
            .content_type("application/json")
            .body(json!({ "status": "ok", "checks": report }).to_string());
    }
    let body = json!({
        "type": "urn:folio:problem:not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": format!("not ready: {} failed", failed.join(", ")),
        "instance": "/health/ready",
        "checks": report,
    });
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .content_type(PROBLEM_JSON)
        .body(body.to_string())
}

/// Prometheus text format: the HTTP layer's metrics, then the composition root's.
#[handler]
pub(crate) fn metrics(metrics: Data<&Arc<HttpMetrics>>, extra: Data<&ExtraMetrics>) -> Response {
    let mut text = metrics.render();
    if let Some(extra) = &extra.0 .0 {
        let more = extra();
        if !more.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&more);
        }
    }
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// Files the dashboard loads, vendored and served from the binary: no CDN. uPlot is MIT
/// licensed; its licence travels with it (`/admin/assets/uPlot.LICENSE`).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/LICENSE"),
    ),
];

/// `/`: to the dashboard, the one page here meant for people.
#[handler]
pub(crate) fn home() -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/admin")
        .finish()
}

/// A vendored dashboard asset; they change only with the binary, so caches may keep them
/// for a day.
#[handler]
pub(crate) fn asset(poem::web::Path(name): poem::web::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => Response::builder()
            .content_type(*content_type)
            .header(header::CACHE_CONTROL, "public, max-age=86400")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .body(*bytes),
        None => Response::builder().status(StatusCode::NOT_FOUND).finish(),
    }
}

/// The admin dashboard. It signs in through the API itself, so the page holds no secret.
#[handler]
pub(crate) fn dashboard() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .body(DASHBOARD_HTML)
}
