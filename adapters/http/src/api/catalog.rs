//! `/books`: the catalog. Reading is open to everyone; changing it needs ADMIN.

use bytes::Bytes;
use folio_domain::catalog::{BookDraft, BookFileUpload, BookFilter, PageRequest};
use folio_domain::services::Bookstore;
use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{BookPage, BookRequest, BookResponse, FileInfoResponse};
use super::rendered::Rendered;
use super::{
    book_id, check_content_length, read_limited, ApiTags, BearerAuth, JsonBody, MaybeAuth, RawBody,
};
use crate::problem::Answer;

/// The catalog.
pub struct CatalogApi;

#[derive(ApiResponse)]
enum BookCreated {
    /// The book is in the catalog.
    #[oai(status = 201)]
    Created(Json<BookResponse>),
}

#[derive(ApiResponse)]
enum BookDeleted {
    /// The book left the catalog; its statistics remain.
    #[oai(status = 204)]
    NoContent,
}

impl BookRequest {
    fn draft(&self, store: &Bookstore) -> folio_domain::Result<BookDraft> {
        let currency = store.config().currency;
        BookDraft::new(
            &self.title,
            &self.author,
            &self.genre,
            &self.description,
            self.price_cents,
            self.currency.as_deref().unwrap_or(currency.as_str()),
            currency,
        )
    }
}

/// A file name for uploads that do not give one, with an extension from the media type.
fn default_file_name(id: i64, content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let ext = match essence {
        "application/pdf" => "pdf",
        "application/epub+zip" => "epub",
        "application/x-mobipocket-ebook" => "mobi",
        "text/plain" => "txt",
        "text/html" => "html",
        "text/markdown" => "md",
        "application/zip" => "zip",
        _ => "bin",
    };
    format!("book-{id}.{ext}")
}

crate::statuses! {
    /// `list_books`
    ListBooks = [400, 422];
    /// `get_book`
    GetBook = [400, 401, 404, 422];
    /// `create_book`
    CreateBook = [400, 401, 403, 413, 415, 422];
    /// `update_book`
    UpdateBook = [400, 401, 403, 404, 413, 415, 422];
    /// `delete_book`
    DeleteBook = [400, 401, 403, 404, 422];
    /// `upload_book_file`
    UploadBookFile = [400, 401, 403, 404, 413, 422];
}

#[OpenApi(prefix_path = "/books", tag = "ApiTags::Books")]
impl CatalogApi {
    /// List books
    ///
    /// Live books by id, optionally of one genre or with a title containing some text,
    /// one page at a time.
    #[oai(path = "/", method = "get", operation_id = "list_books")]
    async fn list_books(
        &self,
        store: Data<&Bookstore>,
        /// 1-based page number (default 1).
        #[oai(validator(minimum(value = "1"), maximum(value = "4294967295")))]
        page: Query<Option<u32>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        per_page: Query<Option<u32>>,
        /// Only books of this genre.
        genre: Query<Option<String>>,
        /// Only books whose title contains this text (ASCII letters ignore case), at most
        /// 300 characters.
        title: Query<Option<String>>,
    ) -> Answer<Json<BookPage>, ListBooks> {
        let page = PageRequest::new(page.0, per_page.0)?;
        let filter = BookFilter::new(genre.0.as_deref(), title.0.as_deref())?;
        Ok(Json(store.list_books(page, &filter).await?.into()))
    }

    /// Show a book
    ///
    /// Counts a view for the analytics. Works without a token (an anonymous view); with
    /// a token the view is the caller's, and an invalid token is refused with 401.
    #[oai(path = "/:id", method = "get", operation_id = "get_book")]
    async fn get_book(
        &self,
        store: Data<&Bookstore>,
        auth: MaybeAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
    ) -> Answer<Rendered<BookResponse>, GetBook> {
        let book = store.view_book(book_id(id.0)?, auth.0).await?;
        let json = book.rendered(|b| Rendered::render(&BookResponse::from(b.clone())));
        Ok(Rendered::new(Bytes::copy_from_slice(json)))
    }

    /// Add a book (ADMIN)
    #[oai(path = "/", method = "post", operation_id = "create_book")]
    async fn create_book(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        body: JsonBody<BookRequest>,
    ) -> Answer<BookCreated, CreateBook> {
        let draft = body.draft(&store)?;
        let book = store.create_book(auth.0, draft).await?;
        Ok(BookCreated::Created(Json(book.into())))
    }

    /// Replace a book's fields (ADMIN)
    #[oai(path = "/:id", method = "put", operation_id = "update_book")]
    async fn update_book(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        body: JsonBody<BookRequest>,
    ) -> Answer<Json<BookResponse>, UpdateBook> {
        let id = book_id(id.0)?;
        let draft = body.draft(&store)?;
        Ok(Json(store.update_book(auth.0, id, draft).await?.into()))
    }

    /// Remove a book from the catalog (ADMIN)
    #[oai(path = "/:id", method = "delete", operation_id = "delete_book")]
    async fn delete_book(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
    ) -> Answer<BookDeleted, DeleteBook> {
        store.delete_book(auth.0, book_id(id.0)?).await?;
        Ok(BookDeleted::NoContent)
    }

    /// Upload a book's file (ADMIN)
    ///
    /// The raw request body is the file; its `Content-Type` is stored and served back on
    /// download. Replaces an earlier file. At most 64 MiB.
    #[oai(path = "/:id/file", method = "put", operation_id = "upload_book_file")]
    async fn upload_book_file(
        &self,
        store: Data<&Bookstore>,
        req: &Request,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        /// The name downloads get (default `book-<id>.<ext>`).
        file_name: Query<Option<String>>,
        body: RawBody,
    ) -> Answer<Json<FileInfoResponse>, UploadBookFile> {
        let id = book_id(id.0)?;
        // Who may upload is checked before a byte of a possibly large body is read.
        auth.0.require_admin()?;
        let max = BookFileUpload::MAX_BYTES;
        check_content_length(req, max, "file")?;
        let content_type = req
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_string();
        let file_name = file_name
            .0
            .unwrap_or_else(|| default_file_name(id.get(), &content_type));
        let bytes = read_limited(body.0, max, "file").await?;
        let upload = BookFileUpload::new(&file_name, &content_type, bytes)?;
        Ok(Json(store.upload_file(auth.0, id, upload).await?.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::default_file_name;

    #[test]
    fn default_file_names_follow_the_media_type() {
        assert_eq!(default_file_name(3, "application/epub+zip"), "book-3.epub");
        assert_eq!(
            default_file_name(3, "text/plain; charset=utf-8"),
            "book-3.txt"
        );
        assert_eq!(default_file_name(3, "application/x-unknown"), "book-3.bin");
    }
}
