//! Prometheus metrics for the HTTP layer: request counts and latency by route and status.
//!
//! Each [`HttpMetrics`] owns its own Prometheus recorder instead of installing a global one,
//! so several apps in one process (tests, the embedded mode) never mix their figures. The
//! route label is the OpenAPI operation id (`get_book`), never the raw path, so ids in
//! paths cannot blow up the number of series.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use tracing::debug;

const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds";
const IN_FLIGHT: &str = "http_requests_in_flight";

/// Latency buckets in seconds, from sub-millisecond views to slow uploads.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The HTTP layer's metrics and their Prometheus rendering.
pub struct HttpMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.into()), BUCKETS)
            // Only an empty bucket list fails, and BUCKETS is not empty; summaries are the
            // exporter's fallback, still valid Prometheus.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        recorder.describe_counter(
            KeyName::from_const_str(REQUESTS),
            Some(Unit::Count),
            "HTTP requests answered, by method, route (operation id) and status.".into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(DURATION),
            Some(Unit::Seconds),
            "Time to answer an HTTP request (to the response head), by method and route.".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(IN_FLIGHT),
            Some(Unit::Count),
            "HTTP requests being handled now.".into(),
        );
        HttpMetrics { recorder, handle }
    }

    fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = Label::new("method", method.to_owned());
        let route = Label::new("route", route.to_owned());
        let status = Label::new("status", status.to_string());
        let key = Key::from_parts(DURATION, vec![method.clone(), route.clone()]);
        self.recorder
            .register_histogram(&key, &METADATA)
            .record(elapsed.as_secs_f64());
        let key = Key::from_parts(REQUESTS, vec![method, route, status]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// Counts a request in flight until the guard drops, even when the client goes away
    /// and the request's future is dropped midway.
    fn in_flight(&self) -> InFlight {
        let gauge = self
            .recorder
            .register_gauge(&Key::from_static_name(IN_FLIGHT), &METADATA);
        gauge.increment(1.0);
        InFlight(gauge)
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

struct InFlight(metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The label for requests that no OpenAPI operation answered.
fn route_label(path: &str) -> &'static str {
    match path {
        "/health/live" => "health_live",
        "/health/ready" => "health_ready",
        "/metrics" => "metrics",
        "/admin" | "/admin/" => "dashboard",
        "/openapi.json" => "openapi",
        p if p == "/docs" || p.starts_with("/docs/") => "docs",
        _ => "unmatched",
    }
}

/// Middleware body: counts and times every request, whatever it answered.
pub async fn observe<E: Endpoint>(
    metrics: Arc<HttpMetrics>,
    ep: E,
    req: Request,
) -> poem::Result<Response> {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let in_flight = metrics.in_flight();
    let result = ep.call(req).await.map(IntoResponse::into_response);
    drop(in_flight);
    let elapsed = start.elapsed();
    let (status, operation) = match &result {
        Ok(resp) => (resp.status(), resp.data::<OperationId>().copied()),
        Err(err) => (err.status(), err.data::<OperationId>().copied()),
    };
    let route = operation.map_or_else(|| route_label(&path), |op| op.0);
    metrics.record(&method, route, status.as_u16(), elapsed);
    debug!(%method, %path, route, status = status.as_u16(), elapsed_us = elapsed.as_micros() as u64, "request answered");
    result
}
