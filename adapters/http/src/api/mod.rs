//! The REST API under `/api/v1` (docs/contract.md §3), described with poem-openapi so the code is the
//! OpenAPI document.
//!
//! Each area is one `#[OpenApi]` struct. The structs hold no state: handlers take the
//! [`Bookstore`] from the request data, which lets [`service`] build the document without a
//! running store. Handlers stay thin: parse, call one [`Bookstore`] use case, map the result.

use folio_domain::accounts::Principal;
use folio_domain::ids::BookId;
use folio_domain::services::Bookstore;
use folio_domain::Error;
use poem::http::header;
use poem::{Body, Request, RequestBody};
use poem_openapi::auth::Bearer;
use poem_openapi::registry::Registry;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, OpenApiService, SecurityScheme, Tags,
};

use crate::problem::{ApiError, ApiResult};

mod accounts;
mod admin;
mod analytics;
mod body;
mod catalog;
mod commerce;
mod feedback;
mod index;
pub mod models;
mod rendered;

pub use accounts::AccountsApi;
pub use admin::{
    AdminApi, AnalyticsStatus, IngestStatus, PipelineFigures, PipelineProbe, SharedProbe,
    SpoolStatus,
};
pub use analytics::AnalyticsApi;
pub use body::{JsonBody, RawBody};
pub use catalog::CatalogApi;
pub use commerce::{CommerceApi, SIGNATURE_HEADER};
pub use feedback::FeedbackApi;
pub use index::IndexApi;

/// Where the API is mounted.
pub const API_PREFIX: &str = "/api/v1";

/// The API's sections in the OpenAPI document.
#[derive(Tags)]
pub enum ApiTags {
    /// What the API offers.
    Index,
    /// Registration, sign-in and the current user.
    Auth,
    /// The catalog: books and their files.
    Books,
    /// Buying books, the payment webhook, and downloads.
    Purchases,
    /// Reviews and ratings.
    Feedback,
    /// Statistics for administrators, from the analytics service's aggregates, and the
    /// pipeline's health.
    Analytics,
}

/// Every area of the API, in the document's order.
pub type Apis = (
    AccountsApi,
    CatalogApi,
    CommerceApi,
    FeedbackApi,
    AnalyticsApi,
    AdminApi,
    IndexApi,
);

/// The whole API as one poem-openapi service, with paths under [`API_PREFIX`].
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            AccountsApi,
            CatalogApi,
            CommerceApi,
            FeedbackApi,
            AnalyticsApi,
            AdminApi,
            IndexApi,
        ),
        "folio bookstore API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "The bookstore's REST API. Every user action emits an event that the analytics \
         service aggregates; administrators read the aggregates under /admin/analytics. \
         Errors are RFC 9457 problem details (application/problem+json).",
    )
    .server("/")
    .url_prefix(API_PREFIX)
}

/// A signed bearer token from `/auth/login` or `/auth/register`; proves who is calling.
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerAuth",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_bearer"
)]
pub struct BearerAuth(pub Principal);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let store = bookstore(req)?;
    store
        .authenticate(&bearer.token)
        .map_err(|e| ApiError::from(e).into())
}

fn bookstore(req: &Request) -> poem::Result<&Bookstore> {
    req.data::<Bookstore>().ok_or_else(|| {
        ApiError::from(Error::internal(
            "the bookstore is not attached to the request",
        ))
        .into()
    })
}

/// An optional bearer token: anonymous without an `Authorization` header, the caller with
/// a valid one, and 401 with an invalid one (a bad token is a client bug worth reporting,
/// not a reason to count the caller as anonymous).
pub struct MaybeAuth(pub Option<Principal>);

impl<'a> ApiExtractor<'a> for MaybeAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <BearerAuth as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        <BearerAuth as ApiExtractor>::security_schemes()
    }

    fn has_security_fallback() -> bool {
        true
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if request.headers().contains_key(header::AUTHORIZATION) {
            let auth =
                <BearerAuth as ApiExtractor>::from_request(request, body, param_opts).await?;
            Ok(MaybeAuth(Some(auth.0)))
        } else {
            Ok(MaybeAuth(None))
        }
    }
}

/// Validates a book id from the path.
fn book_id(raw: i64) -> ApiResult<BookId> {
    Ok(BookId::parse(raw)?)
}

/// Reads a request body, refusing it with 413 once it passes `max` bytes, so an oversized
/// upload is never held in memory whole.
async fn read_limited(body: Body, max: usize, what: &str) -> ApiResult<Vec<u8>> {
    use futures_util::StreamExt as _;
    let too_large = || {
        ApiError::new(
            poem::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Payload too large",
            format!("the {what} is larger than {max} bytes"),
        )
    };
    let mut stream = body.into_bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                poem::http::StatusCode::BAD_REQUEST,
                "bad-body",
                "Unreadable body",
                format!("the {what} could not be read: {e}"),
            )
        })?;
        if out.len() + chunk.len() > max {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Refuses early when the declared length is already too large.
fn check_content_length(req: &Request, max: usize, what: &str) -> ApiResult<()> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(ApiError::new(
            poem::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Payload too large",
            format!("the {what} is larger than {max} bytes"),
        )),
        _ => Ok(()),
    }
}
