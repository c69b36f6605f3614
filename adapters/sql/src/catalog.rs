//! `BookRepository` and `BookFileStore`: the catalog and its files.
//!
//! Deleting a book only sets `deleted_at`: the catalog stops showing it, while statistics
//! keep its title. Files are stored in [`CHUNK_SIZE`] rows so a download reads one chunk at
//! a time instead of loading the whole file.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::catalog::{
    Book, BookDraft, BookFileInfo, BookFileUpload, BookFilter, Page, PageRequest,
};
use folio_domain::ids::BookId;
use folio_domain::money::{Currency, Money};
use folio_domain::ports::{BookFileStore, BookRepository, FileChunks};
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Expr, Func, LikeExpr, OnConflict, Query, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use crate::entity::{book_file_chunks, book_files, books};
use crate::error::{corrupt, db_err};
use crate::migration::CatalogRevision;
use crate::store::SqlStore;
use crate::time::{from_ms, to_ms};

/// The size of a stored file chunk: large enough that a download makes few queries, small
/// enough that one chunk in memory per download is cheap.
pub const CHUNK_SIZE: usize = 256 * 1024;

fn to_book(m: books::Model, file: Option<BookFileInfo>) -> Result<Book> {
    let currency =
        Currency::parse(&m.currency).map_err(|_| corrupt(format!("currency of book {}", m.id)))?;
    Ok(Book {
        id: BookId(m.id),
        title: m.title,
        author: m.author,
        genre: m.genre,
        description: m.description,
        price: Money::new(m.price_cents, currency),
        file,
        created_at: from_ms(m.created_at)?,
        updated_at: from_ms(m.updated_at)?,
    })
}

fn to_file_info(m: &book_files::Model) -> BookFileInfo {
    BookFileInfo {
        file_name: m.file_name.clone(),
        content_type: m.content_type.clone(),
        size_bytes: m.size_bytes,
    }
}

fn live() -> sea_orm::Condition {
    sea_orm::Condition::all().add(books::Column::DeletedAt.is_null())
}

/// `title` contains `needle`, ASCII letters without case, as [`BookFilter::matches`]:
/// `LOWER(title) LIKE '%needle%'` with `%`, `_` and `\` in the needle escaped.
fn title_contains(needle: &str) -> SimpleExpr {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
    }
    pattern.push('%');
    Expr::expr(Func::lower(Expr::col(books::Column::Title)))
        .like(LikeExpr::new(pattern).escape('\\'))
}

/// Moves the catalog's revision, inside the transaction of the change it stands for.
async fn bump_revision(conn: &impl ConnectionTrait) -> Result<()> {
    let bump = Query::insert()
        .into_table(CatalogRevision::Table)
        .columns([CatalogRevision::Id, CatalogRevision::Revision])
        .values_panic([1.into(), 1i64.into()])
        .on_conflict(
            OnConflict::column(CatalogRevision::Id)
                .value(
                    CatalogRevision::Revision,
                    Expr::col((CatalogRevision::Table, CatalogRevision::Revision)).add(1),
                )
                .to_owned(),
        )
        .to_owned();
    conn.execute(conn.get_database_backend().build(&bump))
        .await
        .map_err(db_err)?;
    Ok(())
}

impl SqlStore {
    async fn live_book(&self, id: BookId) -> Result<Option<Book>> {
        let Some(row) = books::Entity::find_by_id(id.get())
            .filter(live())
            .one(&self.db)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let file = book_files::Entity::find()
            .filter(book_files::Column::BookId.eq(id.get()))
            .one(&self.db)
            .await
            .map_err(db_err)?;
        to_book(row, file.as_ref().map(to_file_info)).map(Some)
    }
}

#[async_trait]
impl BookRepository for SqlStore {
    async fn create(&self, draft: BookDraft, at: DateTime<Utc>) -> Result<Book> {
        let row = books::ActiveModel {
            title: Set(draft.title),
            author: Set(draft.author),
            genre: Set(draft.genre),
            description: Set(draft.description),
            price_cents: Set(draft.price.amount_cents),
            currency: Set(draft.price.currency.as_str().to_owned()),
            created_at: Set(to_ms(at)),
            updated_at: Set(to_ms(at)),
            deleted_at: Set(None),
            ..Default::default()
        };
        let txn = self.begin_write(books::Entity).await?;
        let row = row.insert(&txn).await.map_err(db_err)?;
        bump_revision(&txn).await?;
        txn.commit().await.map_err(db_err)?;
        to_book(row, None)
    }

    async fn get(&self, id: BookId) -> Result<Option<Book>> {
        self.live_book(id).await
    }

    async fn list(&self, page: PageRequest, filter: &BookFilter) -> Result<Page<Book>> {
        let mut query = books::Entity::find().filter(live());
        if let Some(g) = &filter.genre {
            query = query.filter(books::Column::Genre.eq(g.as_str()));
        }
        if let Some(t) = &filter.title {
            query = query.filter(title_contains(t));
        }
        let total = query.clone().count(&self.db).await.map_err(db_err)?;
        let rows = query
            .order_by_asc(books::Column::Id)
            .offset(page.offset())
            .limit(u64::from(page.per_page))
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let ids: Vec<i64> = rows.iter().map(|b| b.id).collect();
        let mut files: HashMap<i64, BookFileInfo> = if ids.is_empty() {
            HashMap::new()
        } else {
            book_files::Entity::find()
                .filter(book_files::Column::BookId.is_in(ids))
                .all(&self.db)
                .await
                .map_err(db_err)?
                .iter()
                .map(|f| (f.book_id, to_file_info(f)))
                .collect()
        };
        let items = rows
            .into_iter()
            .map(|b| {
                let file = files.remove(&b.id);
                to_book(b, file)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            page: page.page,
            per_page: page.per_page,
            total,
        })
    }

    async fn update(&self, id: BookId, draft: BookDraft, at: DateTime<Utc>) -> Result<Book> {
        let txn = self.begin_write(books::Entity).await?;
        let done = books::Entity::update_many()
            .col_expr(books::Column::Title, Expr::value(draft.title))
            .col_expr(books::Column::Author, Expr::value(draft.author))
            .col_expr(books::Column::Genre, Expr::value(draft.genre))
            .col_expr(books::Column::Description, Expr::value(draft.description))
            .col_expr(
                books::Column::PriceCents,
                Expr::value(draft.price.amount_cents),
            )
            .col_expr(
                books::Column::Currency,
                Expr::value(draft.price.currency.as_str()),
            )
            .col_expr(books::Column::UpdatedAt, Expr::value(to_ms(at)))
            .filter(books::Column::Id.eq(id.get()))
            .filter(live())
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if done.rows_affected == 0 {
            return Err(Error::not_found("book", id));
        }
        bump_revision(&txn).await?;
        txn.commit().await.map_err(db_err)?;
        self.live_book(id)
            .await?
            .ok_or_else(|| Error::not_found("book", id))
    }

    async fn delete(&self, id: BookId, at: DateTime<Utc>) -> Result<()> {
        let txn = self.begin_write(books::Entity).await?;
        let done = books::Entity::update_many()
            .col_expr(books::Column::DeletedAt, Expr::value(to_ms(at)))
            .filter(books::Column::Id.eq(id.get()))
            .filter(live())
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if done.rows_affected == 0 {
            return Err(Error::not_found("book", id));
        }
        bump_revision(&txn).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn revision(&self) -> Result<u64> {
        let read = Query::select()
            .column(CatalogRevision::Revision)
            .from(CatalogRevision::Table)
            .and_where(Expr::col(CatalogRevision::Id).eq(1))
            .to_owned();
        let row = self
            .db
            .query_one(self.backend().build(&read))
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(0) };
        let revision: i64 = row.try_get_by_index(0).map_err(db_err)?;
        u64::try_from(revision).map_err(|_| corrupt("the catalog revision is negative"))
    }
}

#[async_trait]
impl BookFileStore for SqlStore {
    async fn put(&self, book: BookId, upload: BookFileUpload) -> Result<BookFileInfo> {
        let chunks: Vec<&[u8]> = upload.bytes.chunks(CHUNK_SIZE).collect();
        let chunk_count = i32::try_from(chunks.len())
            .map_err(|_| Error::invalid("the file has too many chunks"))?;
        let size_bytes = i64::try_from(upload.bytes.len())
            .map_err(|_| Error::invalid("the file is too large"))?;
        let txn = self.begin().await?;
        // Writes come first, so SQLite takes its write lock before anything is read.
        let old_files = Query::select()
            .column(book_files::Column::Id)
            .from(book_files::Entity)
            .and_where(Expr::col(book_files::Column::BookId).eq(book.get()))
            .to_owned();
        let drop_chunks = Query::delete()
            .from_table(book_file_chunks::Entity)
            .and_where(Expr::col(book_file_chunks::Column::FileId).in_subquery(old_files))
            .to_owned();
        txn.execute(txn.get_database_backend().build(&drop_chunks))
            .await
            .map_err(db_err)?;
        book_files::Entity::delete_many()
            .filter(book_files::Column::BookId.eq(book.get()))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        let live_book = books::Entity::find_by_id(book.get())
            .filter(live())
            .one(&txn)
            .await
            .map_err(db_err)?;
        if live_book.is_none() {
            return Err(Error::not_found("book", book));
        }
        let file = book_files::ActiveModel {
            book_id: Set(book.get()),
            file_name: Set(upload.file_name.clone()),
            content_type: Set(upload.content_type.clone()),
            size_bytes: Set(size_bytes),
            chunk_count: Set(chunk_count),
            created_at: Set(to_ms(Utc::now())),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(db_err)?;
        for (seq, data) in (0i32..).zip(chunks) {
            book_file_chunks::ActiveModel {
                file_id: Set(file.id),
                seq: Set(seq),
                data: Set(data.to_vec()),
            }
            .insert(&txn)
            .await
            .map_err(db_err)?;
        }
        bump_revision(&txn).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(to_file_info(&file))
    }

    async fn open(&self, book: BookId) -> Result<Option<(BookFileInfo, Box<dyn FileChunks>)>> {
        let Some(file) = book_files::Entity::find()
            .filter(book_files::Column::BookId.eq(book.get()))
            .one(&self.db)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let reader = SqlFileChunks {
            db: self.db.clone(),
            file_id: file.id,
            next: 0,
            count: file.chunk_count,
        };
        Ok(Some((to_file_info(&file), Box::new(reader))))
    }
}

/// Reads a stored file one chunk per call, each with its own query, so a slow download
/// holds neither a connection nor the whole file.
struct SqlFileChunks {
    db: DatabaseConnection,
    file_id: i64,
    next: i32,
    count: i32,
}

#[async_trait]
impl FileChunks for SqlFileChunks {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.next >= self.count {
            return Ok(None);
        }
        let data: Option<Vec<u8>> = book_file_chunks::Entity::find()
            .select_only()
            .column(book_file_chunks::Column::Data)
            .filter(book_file_chunks::Column::FileId.eq(self.file_id))
            .filter(book_file_chunks::Column::Seq.eq(self.next))
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(db_err)?;
        let data = data.ok_or_else(|| {
            Error::Conflict("the book's file was replaced while it was being read".into())
        })?;
        self.next += 1;
        Ok(Some(data))
    }
}
