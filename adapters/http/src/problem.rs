//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Two sources of errors meet here, and both leave as problem+json:
//! - the domain's [`folio_domain::Error`], mapped to a status in ONE place
//!   ([`ApiError::from`]);
//! - poem's and poem-openapi's own errors (malformed JSON, a missing field, a bad query
//!   parameter, no route, a missing bearer token...), which [`render_error`] turns into a
//!   problem that keeps their status and message.

use std::marker::PhantomData;

use folio_domain::Error;
use poem::error::{MethodNotAllowedError, NotFoundError, ResponseError};
use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::error::{AuthorizationError, ParseRequestPayloadError};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object, OperationId};
use tracing::{error, warn};

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:folio:problem:<kind>` for folio's own
    /// kinds, `about:blank` when the HTTP status says it all.
    #[oai(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, in words a client developer can act on.
    pub detail: String,
    /// The request path the problem occurred on.
    #[oai(skip_serializing_if_is_none)]
    pub instance: Option<String>,
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Problem {
            kind: "urn:folio:problem:invalid".into(),
            title: "Invalid request".into(),
            status: 422,
            detail: "title must not be empty; price_cents must not be negative".into(),
            instance: Some("/api/v1/books".into()),
        }
    }
}

/// An error a handler answers with: a status and a problem to render.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    /// Seconds for `Retry-After`, when the status calls for one (429).
    retry_after: Option<u64>,
}

impl ApiError {
    /// A problem of folio's own kind (`urn:folio:problem:{kind}`).
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            title,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Sends `Retry-After: secs` with the problem.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    fn response(&self, instance: Option<&str>) -> Response {
        let mut resp = problem_response(&self.problem(instance));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn problem(&self, instance: Option<&str>) -> Problem {
        Problem {
            kind: format!("urn:folio:problem:{}", self.kind),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            instance: instance.map(str::to_owned),
        }
    }
}

/// The one place domain errors become HTTP statuses.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::Invalid(m) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid", "Invalid request", m)
            }
            e @ Error::NotFound { .. } => {
                ApiError::new(S::NOT_FOUND, "not-found", "Not found", e.to_string())
            }
            Error::Duplicate(m) => ApiError::new(S::CONFLICT, "duplicate", "Already exists", m),
            Error::Conflict(m) => ApiError::new(S::CONFLICT, "conflict", "Conflict", m),
            Error::PaymentRequired(m) => ApiError::new(
                S::PAYMENT_REQUIRED,
                "payment-required",
                "Payment required",
                m,
            ),
            Error::Unauthenticated(m) => {
                ApiError::new(S::UNAUTHORIZED, "unauthenticated", "Unauthenticated", m)
            }
            Error::Forbidden(m) => ApiError::new(S::FORBIDDEN, "forbidden", "Forbidden", m),
            Error::Unavailable(dependency, m) => {
                // The driver's words stay in the log: they can name hosts and users.
                warn!(dependency, error = %m, "dependency unavailable");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    format!("{dependency} is unavailable; retry shortly"),
                )
            }
            Error::Internal(m) => {
                error!(error = %m, "internal error");
                internal()
            }
        }
    }
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal server error",
        "an unexpected error occurred; it has been logged",
    )
}

/// Builds a problem+json response, with the headers its status calls for.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = problem.to_json_string();
    let mut resp = Response::builder()
        .status(status)
        .content_type(PROBLEM_JSON)
        .body(body);
    if status == StatusCode::UNAUTHORIZED {
        // RFC 9110 §11.6.1: a 401 names the scheme the client should use.
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"folio\""),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        self.response(None)
    }
}

/// The problem statuses one operation can answer with, as its OpenAPI document lists
/// them. Declared next to each handler with [`statuses!`](crate::statuses); 500 and 503
/// ([`ALWAYS`]) are added to every list.
pub trait Statuses: Send + Sync + 'static {
    const LIST: &'static [u16];
}

/// Statuses any operation can answer with: an unexpected failure, and a database or event
/// bus that does not answer.
pub const ALWAYS: [u16; 2] = [500, 503];

/// Declares marker types for [`Refusal`], one per set of statuses:
/// `statuses! { GetBook = [400, 401, 404, 422]; }`.
#[macro_export]
macro_rules! statuses {
    ($($(#[$meta:meta])* $name:ident = [$($status:literal),* $(,)?];)*) => {$(
        $(#[$meta])*
        pub struct $name;
        impl $crate::problem::Statuses for $name {
            const LIST: &'static [u16] = &[$($status),*];
        }
    )*};
}

/// A handler's error: an [`ApiError`] whose possible statuses `S` lists in the OpenAPI
/// document. It leaves as the `ApiError` it carries, so the problem boundary renders it
/// like any other.
pub struct Refusal<S>(ApiError, PhantomData<S>);

impl<S> std::fmt::Debug for Refusal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S> From<ApiError> for Refusal<S> {
    fn from(e: ApiError) -> Self {
        Refusal(e, PhantomData)
    }
}

impl<S> From<Error> for Refusal<S> {
    fn from(e: Error) -> Self {
        Refusal(e.into(), PhantomData)
    }
}

impl<S> From<Refusal<S>> for poem::Error {
    fn from(r: Refusal<S>) -> Self {
        r.0.into()
    }
}

/// A problem as folio answers it with `status`, for the OpenAPI document's examples.
fn example(status: u16) -> Problem {
    let folio = |kind: &str, title: &str, detail: &str, instance: &str| Problem {
        kind: format!("urn:folio:problem:{kind}"),
        title: title.into(),
        status,
        detail: detail.into(),
        instance: Some(instance.into()),
    };
    let plain = |detail: &str, instance: &str| Problem {
        kind: "about:blank".into(),
        title: StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .into(),
        status,
        detail: detail.into(),
        instance: Some(instance.into()),
    };
    match status {
        400 => plain(
            "the request body is invalid: field `title` must be a string, got 123",
            "/api/v1/books",
        ),
        401 => folio(
            "unauthenticated",
            "Unauthenticated",
            "the bearer token expired at 2025-03-01T22:00:00+00:00; sign in again",
            "/api/v1/auth/me",
        ),
        402 => folio(
            "payment-required",
            "Payment required",
            "buy book 7 before downloading it",
            "/api/v1/books/7/download",
        ),
        403 => folio(
            "forbidden",
            "Forbidden",
            "this endpoint needs the ADMIN role",
            "/api/v1/books",
        ),
        404 => folio(
            "not-found",
            "Not found",
            "book 7 not found",
            "/api/v1/books/7",
        ),
        409 => folio(
            "duplicate",
            "Already exists",
            "you have already bought this book",
            "/api/v1/books/7/purchase",
        ),
        413 => folio(
            "too-large",
            "Payload too large",
            "the file is larger than 67108864 bytes",
            "/api/v1/books/7/file",
        ),
        415 => plain(
            "the `Content-Type` requested by the client is not supported: text/plain",
            "/api/v1/books",
        ),
        429 => folio(
            "rate-limited",
            "Too many requests",
            "too many sign-in or registration attempts for this account; retry in 12 s",
            "/api/v1/auth/login",
        ),
        500 => folio(
            "internal",
            "Internal server error",
            "an unexpected error occurred; it has been logged",
            "/api/v1/books",
        ),
        503 => folio(
            "unavailable",
            "Service unavailable",
            "database is unavailable; retry shortly",
            "/api/v1/books",
        ),
        _ => <Problem as poem_openapi::types::Example>::example(),
    }
}

/// What each status means, in the words of folio's API.
fn meaning(status: u16) -> &'static str {
    match status {
        400 => "The request could not be parsed: a path or query parameter, or the body.",
        401 => "Not authenticated: the bearer token is missing, malformed, expired or forged (for sign-in: the e-mail or password is wrong).",
        402 => "The book has to be bought before it can be downloaded.",
        403 => "The caller's role may not do this.",
        404 => "The book, or the caller's review or rating of it, does not exist.",
        409 => "It conflicts with what exists: already bought, reviewed or rated, or the e-mail is taken.",
        413 => "The body is larger than this operation accepts.",
        429 => "Too many sign-in or registration attempts for this account or from this address; retry after Retry-After seconds.",
        415 => "The body's content type is not the one this operation takes.",
        422 => "The request parses but breaks a rule; the detail names every one.",
        500 => "An unexpected failure; it has been logged.",
        503 => "The database or the event bus does not answer, or too many passwords are being checked; retry after Retry-After seconds.",
        _ => "The problem says what went wrong.",
    }
}

impl<S: Statuses> ApiResponse for Refusal<S> {
    fn meta() -> MetaResponses {
        let header = |name: &str, description: &str| MetaHeader {
            name: name.into(),
            description: Some(description.into()),
            required: true,
            deprecated: false,
            schema: String::schema_ref(),
        };
        let mut statuses: Vec<u16> = S::LIST.iter().copied().chain(ALWAYS).collect();
        statuses.sort_unstable();
        statuses.dedup();
        let responses = statuses
            .into_iter()
            .map(|status| MetaResponse {
                description: meaning(status),
                status: Some(status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: PROBLEM_JSON,
                    // The Problem schema, with an example of this status.
                    schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                        all_of: vec![Problem::schema_ref()],
                        example: Some(example(status).to_json().unwrap_or_default()),
                        ..MetaSchema::ANY
                    })),
                }],
                headers: match status {
                    401 => vec![header(
                        "WWW-Authenticate",
                        "The scheme to authenticate with.",
                    )],
                    429 | 503 => vec![header("Retry-After", "Seconds to wait before retrying.")],
                    _ => vec![],
                },
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

/// The result of a helper that handlers call; its error becomes the handler's
/// [`Refusal`] with `?`.
pub type ApiResult<T> = Result<T, ApiError>;

/// A handler's result: `T`, or a problem with one of the statuses `S` lists.
pub type Answer<T, S> = Result<T, Refusal<S>>;

/// Turns any error that reached the edge into a problem response for `path`.
pub fn render_error(err: poem::Error, method: &str, path: &str) -> Response {
    let operation = err.data::<OperationId>().copied();
    let mut resp = if let Some(api) = err.downcast_ref::<ApiError>() {
        api.response(Some(path))
    } else {
        let status = err.status();
        let detail = if err.is::<AuthorizationError>() {
            "this endpoint needs a bearer token: send `Authorization: Bearer <token>` from /api/v1/auth/login".to_string()
        } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
            format!("the request body is invalid: {}", e.reason)
        } else if err.is::<NotFoundError>() {
            format!("no resource at {path}")
        } else if err.is::<MethodNotAllowedError>() {
            format!("{method} is not allowed on {path}")
        } else if status.is_server_error() {
            error!(%status, error = %err, %path, "request failed");
            internal().detail
        } else {
            err.to_string()
        };
        let problem = Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            instance: Some(path.to_owned()),
        };
        let mut resp = problem_response(&problem);
        if status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 §15.5.6: a 405 lists the methods the resource takes.
            if let Some(allow) = crate::allow::for_path(path) {
                resp.headers_mut().insert(header::ALLOW, allow);
            }
        }
        resp
    };
    // Keep the operation id so the metrics layer can still label the request.
    if let Some(op) = operation {
        resp.set_data(op);
    }
    resp
}

/// The answer to a handler that panicked: a plain 500 problem. The panic message goes to
/// the log only.
pub fn render_panic(payload: &(dyn std::any::Any + Send)) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    error!(panic = message, "a request handler panicked");
    problem_response(&internal().problem(None))
}

/// The outermost error boundary: every `Err` leaves as problem+json.
pub async fn problem_boundary<E: Endpoint>(ep: E, req: Request) -> poem::Result<Response> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    match ep.call(req).await {
        Ok(resp) => Ok(resp.into_response()),
        Err(err) => Ok(render_error(err, &method, &path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_error_has_its_status() {
        let cases = [
            (Error::invalid("x"), 422),
            (Error::not_found("book", 3), 404),
            (Error::Duplicate("x".into()), 409),
            (Error::Conflict("x".into()), 409),
            (Error::PaymentRequired("x".into()), 402),
            (Error::Unauthenticated("x".into()), 401),
            (Error::Forbidden("x".into()), 403),
            (Error::Unavailable("database", "x".into()), 503),
            (Error::internal("x"), 500),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status().as_u16(), status);
        }
    }

    #[test]
    fn internal_details_stay_hidden() {
        let api = ApiError::from(Error::internal("password=hunter2 at db01"));
        assert!(!api.detail().contains("hunter2"));
        let api = ApiError::from(Error::Unavailable("database", "db01:5432 refused".into()));
        assert_eq!(api.detail(), "database is unavailable; retry shortly");
    }
}
