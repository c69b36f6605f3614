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

/// `attachment; filename="..."`, plus RFC 6266's `filename*` when the name is not ASCII.
fn content_disposition(file_name: &str) -> String {
    if file_name.is_ascii() {
        return format!("attachment; filename=\"{file_name}\"");
    }
    let fallback: String = file_name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
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

impl IntoResponse for FileDownload {
    fn into_response(self) -> Response {
        let content_type = HeaderValue::from_str(&self.info.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
        let mut resp = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::CONTENT_DISPOSITION,
                content_disposition(&self.info.file_name),
            )
            .body(Body::from_bytes_stream(chunk_stream(self.chunks)));
        if let Ok(len) = u64::try_from(self.info.size_bytes) {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        resp
    }
}

impl ApiResponse for FileDownload {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The book's file, with the media type it was uploaded with.",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/octet-stream",
                    schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                        format: Some("binary"),
                        ..MetaSchema::new("string")
                    })),
                }],
                headers: vec![MetaHeader {
                    name: "Content-Disposition".into(),
                    description: Some("attachment; filename=\"...\"".into()),
                    required: true,
                    deprecated: false,
                    schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                }],
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
        id: Path<i64>,
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
        id: Path<i64>,
    ) -> Answer<FileDownload, DownloadBook> {
        Ok(store.download(auth.0, book_id(id.0)?).await?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

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
    }
}
