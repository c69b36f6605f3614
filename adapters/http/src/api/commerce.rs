//! Purchases, the payment provider's webhook, and downloads.

use std::io;

use bytes::Bytes;
use folio_domain::catalog::BookFileInfo;
use folio_domain::commerce::PurchaseStatus;
use folio_domain::ports::FileChunks;
use folio_domain::services::{Bookstore, Download};
use futures_util::Stream;
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::Data;
use poem::{Body, IntoResponse, Request, Response};
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::{ApiResponse, OpenApi};
use tracing::warn;

use super::models::PurchaseResponse;
use super::{book_id, check_content_length, read_limited, ApiTags, BearerAuth, RawBody};
use crate::problem::Answer;

/// The header carrying the payment provider's signature of a webhook body.
pub const SIGNATURE_HEADER: &str = "X-Folio-Signature";

/// Payment notifications are small; anything larger is not one.
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Purchases and downloads.
pub struct CommerceApi;

#[derive(ApiResponse)]
enum PurchaseOutcome {
    /// Paid: the purchase is COMPLETED and the book can be downloaded.
    #[oai(status = 201)]
    Completed(Json<PurchaseResponse>),
    /// Accepted by the payment provider, which confirms later through the webhook; the
    /// purchase is PENDING until then.
    #[oai(status = 202)]
    Pending(Json<PurchaseResponse>),
}

/// A book's file, streamed.
pub struct FileDownload {
    info: BookFileInfo,
    chunks: Box<dyn FileChunks>,
}

impl From<Download> for FileDownload {
    fn from(d: Download) -> Self {
        FileDownload {
            info: d.info,
            chunks: d.chunks,
        }
    }
}

/// Streams chunks as the store yields them, so a download never holds the whole file. A
/// failure midway ends the stream with an error, which aborts the response: the client
/// sees a truncated transfer rather than a file that looks complete.
fn chunk_stream(
    chunks: Box<dyn FileChunks>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(chunks), |state| async move {
        let mut chunks = state?;
        match chunks.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk)), Some(chunks))),
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, "download failed while streaming");
                Some((Err(io::Error::other(e.to_string())), None))
            }
        }
    })
}

/// `attachment; filename="..."` (RFC 6266), plus `filename*=UTF-8''...` (RFC 5987) when
/// the name is not plain printable ASCII. The quoted fallback keeps printable ASCII only
/// and never a quote or backslash, so even a name stored before uploads were checked
/// cannot break out of the parameter or the header.
fn content_disposition(file_name: &str) -> String {
    let plain = |c: char| (' '..='~').contains(&c) && c != '"' && c != '\\';
    let fallback: String = file_name
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    if fallback == file_name {
        return format!("attachment; filename=\"{file_name}\"");
    }
    let mut encoded = String::new();
    for b in file_name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// What every download says besides its type: save it, never sniff it, and if a browser
/// shows it anyway (a user opening the URL), render it sandboxed, without scripts and
/// without the API's origin. So an uploaded `text/html` file cannot run on this origin.
const DOWNLOAD_CSP: &str = "sandbox; default-src 'none'";

/// The media types a download is sent with: the uploaded type when it is one of these book
/// formats, which no browser runs, and `application/octet-stream` for anything else (an
/// HTML, SVG, XML, JSON or script upload included), so the bytes are never interpreted
/// as anything but a file to save.
pub const DOWNLOAD_TYPES: [&str; 6] = [
    "application/octet-stream",
    "application/pdf",
    "application/epub+zip",
    "application/x-mobipocket-ebook",
    "application/vnd.amazon.ebook",
    "application/zip",
];

fn download_type(stored: &str) -> &'static str {
    let essence = stored.split(';').next().unwrap_or("").trim();
    DOWNLOAD_TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(essence))
        .copied()
        .unwrap_or(DOWNLOAD_TYPES[0])
}

impl IntoResponse for FileDownload {
    fn into_response(self) -> Response {
        let content_type = download_type(&self.info.content_type);
        let mut resp = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::CONTENT_DISPOSITION,
                content_disposition(&self.info.file_name),
            )
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::CONTENT_SECURITY_POLICY, DOWNLOAD_CSP)
            .body(Body::from_bytes_stream(chunk_stream(self.chunks)));
        if let Ok(len) = u64::try_from(self.info.size_bytes) {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        resp
    }
}

fn header(name: &str, description: &str) -> MetaHeader {
    MetaHeader {
        name: name.into(),
        description: Some(description.into()),
        required: true,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
    }
}

impl ApiResponse for FileDownload {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The book's file, always as an attachment: with the media type \
                              it was uploaded with when that is a book format listed here, \
                              as application/octet-stream otherwise.",
                status: Some(200),
                status_range: None,
                content: DOWNLOAD_TYPES
                    .iter()
                    .map(|content_type| MetaMediaType {
                        content_type,
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                            format: Some("binary"),
                            ..MetaSchema::new("string")
                        })),
                    })
                    .collect(),
                headers: vec![
                    header(
                        "Content-Disposition",
                        "`attachment; filename=\"...\"`, with `filename*=UTF-8''...` (RFC 5987) for a name that is not plain ASCII.",
                    ),
                    header("X-Content-Type-Options", "Always `nosniff`."),
                    header(
                        "Content-Security-Policy",
                        "`sandbox; default-src 'none'`: shown in a browser, the file runs no script and has no origin.",
                    ),
                ],
            }],
        }
    }

    fn register(_registry: &mut Registry) {}
}

crate::statuses! {
    /// `purchase_book`
    PurchaseBook = [400, 401, 402, 404, 409, 422];
    /// `payment_webhook`
    PaymentWebhook = [400, 401, 404, 409, 413, 422];
    /// `download_book`
    DownloadBook = [400, 401, 402, 404, 422];
}

#[OpenApi(tag = "ApiTags::Purchases")]
impl CommerceApi {
    /// Buy a book
    ///
    /// Charges through the payment provider. 201 when paid at once; 202 when the provider
    /// confirms later through the webhook. 402 when declined, 409 when already bought, 409
    /// for a free book (download it directly).
    #[oai(
        path = "/books/:id/purchase",
        method = "post",
        operation_id = "purchase_book"
    )]
    async fn purchase(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
    ) -> Answer<PurchaseOutcome, PurchaseBook> {
        let purchase = store.purchase(auth.0, book_id(id.0)?).await?;
        Ok(match purchase.status {
            PurchaseStatus::Completed => PurchaseOutcome::Completed(Json(purchase.into())),
            PurchaseStatus::Pending | PurchaseStatus::Failed => {
                PurchaseOutcome::Pending(Json(purchase.into()))
            }
        })
    }

    /// Payment provider webhook
    ///
    /// Confirms or fails a pending purchase. The raw body must carry the provider's
    /// signature in `X-Folio-Signature` (401 otherwise). Idempotent: a retried
    /// notification answers the same purchase and records nothing twice.
    #[oai(
        path = "/payments/webhook",
        method = "post",
        operation_id = "payment_webhook"
    )]
    async fn webhook(
        &self,
        store: Data<&Bookstore>,
        req: &Request,
        /// The provider's signature of the raw body.
        #[oai(name = "X-Folio-Signature")]
        signature: Header<Option<String>>,
        body: RawBody,
    ) -> Answer<Json<PurchaseResponse>, PaymentWebhook> {
        check_content_length(req, MAX_WEBHOOK_BYTES, "notification")?;
        let body = read_limited(body.0, MAX_WEBHOOK_BYTES, "notification").await?;
        let purchase = store.payment_webhook(&body, signature.0.as_deref()).await?;
        Ok(Json(purchase.into()))
    }

    /// Download a book's file
    ///
    /// Streams the file. 402 unless the caller bought the book or it is free; 404 when the
    /// book has no file yet. Counts a download for the analytics.
    #[oai(
        path = "/books/:id/download",
        method = "get",
        operation_id = "download_book"
    )]
    async fn download(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
    ) -> Answer<FileDownload, DownloadBook> {
        Ok(store.download(auth.0, book_id(id.0)?).await?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn only_book_formats_keep_their_type() {
        use super::download_type;
        assert_eq!(
            download_type("application/epub+zip"),
            "application/epub+zip"
        );
        assert_eq!(download_type("application/PDF; x=y"), "application/pdf");
        for other in [
            "text/html",
            "image/svg+xml",
            "application/json",
            "text/plain",
            "x/y",
        ] {
            assert_eq!(download_type(other), "application/octet-stream", "{other}");
        }
    }

    #[test]
    fn content_disposition_quotes_and_encodes() {
        assert_eq!(
            content_disposition("dune.epub"),
            "attachment; filename=\"dune.epub\""
        );
        assert_eq!(
            content_disposition("é.txt"),
            "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt"
        );
        // Names stored before uploads were checked still make a safe header.
        assert_eq!(
            content_disposition("a\"b\r\n.txt"),
            "attachment; filename=\"a_b__.txt\"; filename*=UTF-8''a%22b%0D%0A.txt"
        );
        assert_eq!(
            content_disposition("my book.pdf"),
            "attachment; filename=\"my book.pdf\""
        );
    }
}
