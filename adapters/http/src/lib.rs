//! folio's HTTP adapter: the REST API of docs/contract.md §3 with poem and poem-openapi, plus Swagger
//! UI, health probes, Prometheus metrics and the admin dashboard page. It also holds the
//! credential adapters the API relies on: [`Argon2Hasher`] and [`HmacTokens`].
//!
//! # Request flow
//! ```text
//! request ─▶ metrics (count, time) ─▶ problem boundary ─▶ panic guard ─▶ router
//!   /api/v1/...  poem-openapi: parse path/query/body, check the bearer token
//!                ─▶ handler ─▶ one `Bookstore` use case ─▶ map to JSON
//!   /docs /openapi.json /health/* /metrics /admin   operator endpoints
//! ```
//! - Handlers are thin: parse, call [`folio_domain::services::Bookstore`], map the result.
//!   Validation and authorization live in the domain; nothing here touches storage.
//! - Every error leaves as RFC 9457 `application/problem+json`: domain errors are mapped to
//!   statuses in one place ([`problem::ApiError`]), and poem's own parse, auth and routing
//!   errors are converted by the problem boundary ([`problem::render_error`]).
//! - The OpenAPI document is generated from the handlers ([`openapi_json`]) and kept in
//!   `openapi/openapi.json` by a test.
//!
//! # Layout
//! - [`api`]: the `/api/v1` operations, one struct per area, and their JSON [`api::models`].
//! - [`auth`]: password hashing and bearer tokens.
//! - [`problem`]: problem details and the error boundary.
//! - [`metrics`]: request counts and latency in Prometheus format.
//! - `ops`: health, metrics and dashboard endpoints.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use folio_domain::ports::Readiness;
use folio_domain::services::Bookstore;
use poem::endpoint::BoxEndpoint;
use poem::http::header;
use poem::middleware::CatchPanic;
use poem::middleware::SetHeader;
use poem::{get, EndpointExt, Route};

mod allow;
pub mod api;
pub mod auth;
pub mod limits;
pub mod metrics;
mod ops;
pub mod problem;
pub mod server;

pub use api::SIGNATURE_HEADER;
pub use auth::{Argon2Hasher, HmacTokens};
pub use limits::{AuthLimiter, AuthLimits, Rate};
pub use metrics::HttpMetrics;
pub use server::{serve_with, ServeOptions};

/// Renders extra Prometheus text (worker counters, outbox backlog...) appended to
/// `/metrics`. Called on every scrape, so it should only read counters.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub(crate) struct ExtraMetrics(pub Option<MetricsFn>);

/// Where and how the HTTP server runs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The address to listen on, such as `127.0.0.1:8080` (`HTTP_ADDR`).
    pub addr: String,
    /// How long shutdown waits for in-flight requests before closing them.
    pub drain_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8080".into(),
            drain_timeout: ServeOptions::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// What the HTTP layer needs from the composition root.
#[derive(Clone)]
pub struct HttpState {
    pub bookstore: Bookstore,
    /// Dependencies `/health/ready` checks.
    pub readiness: Vec<Arc<dyn Readiness>>,
    /// Extra text appended to `/metrics`.
    pub extra_metrics: Option<MetricsFn>,
    /// Live figures for `/api/v1/admin/pipeline`.
    pub pipeline: Option<api::SharedProbe>,
    /// Rate limits on sign-in and registration.
    pub auth_limits: AuthLimits,
}

impl HttpState {
    pub fn new(bookstore: Bookstore) -> Self {
        HttpState {
            bookstore,
            readiness: Vec::new(),
            extra_metrics: None,
            pipeline: None,
            auth_limits: AuthLimits::default(),
        }
    }
}

/// The whole HTTP application: the API under `/api/v1` and the operator endpoints.
pub fn app(state: HttpState) -> BoxEndpoint<'static> {
    let api = api::service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let metrics = Arc::new(HttpMetrics::new());
    let observed = metrics.clone();
    Route::new()
        .nest(api::API_PREFIX, api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/health/live", get(ops::live))
        .at("/health/ready", get(ops::ready))
        .at("/metrics", get(ops::metrics))
        .at("/", get(ops::home))
        .at("/admin", get(ops::dashboard))
        .at("/admin/", get(ops::dashboard))
        .at("/admin/assets/:name", get(ops::asset))
        .data(state.bookstore)
        .data(state.pipeline)
        .data(ops::Checks(Arc::new(state.readiness)))
        .data(ExtraMetrics(state.extra_metrics))
        .data(AuthLimiter::new(state.auth_limits))
        .data(metrics)
        .with(
            CatchPanic::new()
                .with_handler(|p: Box<dyn std::any::Any + Send>| problem::render_panic(&*p)),
        )
        .around(problem::problem_boundary)
        // No response, problems and downloads included, is to be sniffed as another type.
        .with(SetHeader::new().overriding(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .around(move |ep, req| metrics::observe(observed.clone(), ep, req))
        .boxed()
}

/// The operator endpoints alone, for a role without the API (the analytics service):
/// `/health/live`, `/health/ready` over `readiness`, and `/metrics` (its own HTTP
/// requests, then `extra`). Errors are problem+json, as in [`app`].
pub fn ops_app(
    readiness: Vec<Arc<dyn Readiness>>,
    extra: Option<MetricsFn>,
) -> BoxEndpoint<'static> {
    let metrics = Arc::new(HttpMetrics::new());
    let observed = metrics.clone();
    Route::new()
        .at("/health/live", get(ops::live))
        .at("/health/ready", get(ops::ready))
        .at("/metrics", get(ops::metrics))
        .data(ops::Checks(Arc::new(readiness)))
        .data(ExtraMetrics(extra))
        .data(metrics)
        .around(problem::problem_boundary)
        .with(SetHeader::new().overriding(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .around(move |ep, req| metrics::observe(observed.clone(), ep, req))
        .boxed()
}

/// The OpenAPI document of `/api/v1`, rendered the same way every time.
pub fn openapi_json() -> String {
    let mut spec = api::service().spec();
    spec.push('\n');
    spec
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting connections
/// and lets in-flight requests finish for up to `drain_timeout`. Header-read and idle
/// timeouts are [`ServeOptions`]' defaults; [`serve_with`] chooses them.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: BoxEndpoint<'static>,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let options = ServeOptions {
        drain_timeout,
        ..ServeOptions::default()
    };
    serve_with(listener, app, shutdown, options).await
}

/// Binds `config.addr` and serves `app` until `shutdown` resolves (see [`serve_on`]).
pub async fn serve(
    config: &HttpConfig,
    app: BoxEndpoint<'static>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP server listening");
    serve_on(listener, app, shutdown, config.drain_timeout).await
}
