use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use folio_domain::accounts::{Email, NewUser, Role, User};
use folio_domain::analytics::Aggregate;
use folio_domain::catalog::{
    Book, BookDraft, BookFileInfo, BookFileUpload, BookFilter, Page, PageRequest,
};
use folio_domain::commerce::{ConfirmOutcome, Purchase, PurchaseStatus};
use folio_domain::events::{Event, EventMeta};
use folio_domain::feedback::{Rating, RatingUpdate, Review, ReviewText, ReviewUpdate, Stars};
use folio_domain::ids::{BookId, PurchaseId, ReviewId, UserId};
use folio_domain::money::Money;
use folio_domain::ports::{
    BookFileStore, BookRepository, FileChunks, Outbox, OutboxEntry, PurchaseRepository,
    RatingRepository, Readiness, ReviewRepository, StatsQuery, StatsSink, UpsertReport,
    UserRepository,
};
use folio_domain::stats::figures::{contribution, Total};
use folio_domain::stats::{
    count, fold_by_window, group_of, rank, rank_genres, rank_popular, upsert_into, AggregateGroup,
    BookStats, BookWindow, GenreStats, Overview, OverviewWindow, PopularBook, PopularSort,
    StatsFold, StoredWindow, TimeRange, TopBook, TopGenre, Upserted,
};
use folio_domain::{Error, Result};

/// Chunk size of stored files, as the SQL store uses.
const CHUNK: usize = 256 * 1024;

struct StoredBook {
    book: Book,
    deleted: bool,
}

struct StoredOutbox {
    id: i64,
    event: Event,
    claimed_until: Option<DateTime<Utc>>,
    published: bool,
}

#[derive(Default)]
struct State {
    users: BTreeMap<UserId, User>,
    books: BTreeMap<BookId, StoredBook>,
    files: HashMap<BookId, (BookFileInfo, Arc<Vec<u8>>)>,
    purchases: BTreeMap<PurchaseId, Purchase>,
    reviews: BTreeMap<ReviewId, Review>,
    ratings: HashMap<(UserId, BookId), Rating>,
    outbox: Vec<StoredOutbox>,
    /// Per (window, book, source topic, source partition), the aggregates kept under the
    /// domain's upsert rule.
    stats: BTreeMap<AggregateGroup, Vec<Aggregate>>,
    seq: i64,
    /// Moved by every change of a book or its file ([`BookRepository::revision`]).
    catalog_revision: u64,
}

impl State {
    fn next_id(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    fn enqueue(&mut self, event: Event) {
        let id = self.next_id();
        self.outbox.push(StoredOutbox {
            id,
            event,
            claimed_until: None,
            published: false,
        });
    }

    fn live_book(&self, id: BookId) -> Option<&Book> {
        self.books.get(&id).filter(|b| !b.deleted).map(|b| &b.book)
    }
}

/// Every repository, the outbox and the statistics store in memory, behind one lock so each
/// method is atomic like a transaction.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every event ever written to the outbox, published or not (for assertions).
    pub fn outbox_events(&self) -> Vec<Event> {
        self.lock().outbox.iter().map(|o| o.event.clone()).collect()
    }

    fn aggregates(&self, range: TimeRange, book: Option<BookId>) -> Vec<Aggregate> {
        self.lock()
            .stats
            .values()
            .flatten()
            .filter(|a| range.contains(a.window_start) && book.is_none_or(|b| a.book_id == b))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl UserRepository for MemoryStore {
    async fn create(&self, user: NewUser, at: DateTime<Utc>) -> Result<User> {
        let mut st = self.lock();
        if st.users.values().any(|u| u.email == user.email) {
            return Err(Error::Duplicate(format!(
                "e-mail {} is already registered",
                user.email.as_str()
            )));
        }
        let id = UserId(st.next_id());
        let u = User {
            id,
            email: user.email,
            display_name: user.display_name,
            role: user.role,
            password_hash: user.password_hash,
            created_at: at,
        };
        st.users.insert(id, u.clone());
        Ok(u)
    }

    async fn get(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| &u.email == email)
            .cloned())
    }

    async fn ensure_admin(
        &self,
        email: &Email,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<User> {
        let mut st = self.lock();
        if let Some(u) = st.users.values_mut().find(|u| &u.email == email) {
            u.role = Role::Admin;
            u.password_hash = password_hash.to_string();
            return Ok(u.clone());
        }
        let id = UserId(st.next_id());
        let u = User {
            id,
            email: email.clone(),
            display_name: "Administrator".into(),
            role: Role::Admin,
            password_hash: password_hash.to_string(),
            created_at: at,
        };
        st.users.insert(id, u.clone());
        Ok(u)
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.lock().users.len() as u64)
    }
}

#[async_trait]
impl BookRepository for MemoryStore {
    async fn create(&self, draft: BookDraft, at: DateTime<Utc>) -> Result<Book> {
        let mut st = self.lock();
        let id = BookId(st.next_id());
        let book = Book {
            id,
            title: draft.title,
            author: draft.author,
            genre: draft.genre,
            description: draft.description,
            price: draft.price,
            file: None,
            created_at: at,
            updated_at: at,
        };
        st.books.insert(
            id,
            StoredBook {
                book: book.clone(),
                deleted: false,
            },
        );
        st.catalog_revision += 1;
        Ok(book)
    }

    async fn get(&self, id: BookId) -> Result<Option<Book>> {
        let st = self.lock();
        Ok(st.live_book(id).map(|b| {
            let mut b = b.clone();
            b.file = st.files.get(&id).map(|(i, _)| i.clone());
            b
        }))
    }

    async fn list(&self, page: PageRequest, filter: &BookFilter) -> Result<Page<Book>> {
        let st = self.lock();
        let all: Vec<&Book> = st
            .books
            .values()
            .filter(|b| !b.deleted && filter.matches(&b.book))
            .map(|b| &b.book)
            .collect();
        let items = all
            .iter()
            .skip(page.offset() as usize)
            .take(page.per_page as usize)
            .map(|b| {
                let mut b = (*b).clone();
                b.file = st.files.get(&b.id).map(|(i, _)| i.clone());
                b
            })
            .collect();
        Ok(Page {
            items,
            page: page.page,
            per_page: page.per_page,
            total: all.len() as u64,
        })
    }

    async fn update(&self, id: BookId, draft: BookDraft, at: DateTime<Utc>) -> Result<Book> {
        let mut st = self.lock();
        let file = st.files.get(&id).map(|(i, _)| i.clone());
        let b = st
            .books
            .get_mut(&id)
            .filter(|b| !b.deleted)
            .ok_or_else(|| Error::not_found("book", id))?;
        b.book.title = draft.title;
        b.book.author = draft.author;
        b.book.genre = draft.genre;
        b.book.description = draft.description;
        b.book.price = draft.price;
        b.book.updated_at = at;
        let mut out = b.book.clone();
        out.file = file;
        st.catalog_revision += 1;
        Ok(out)
    }

    async fn delete(&self, id: BookId, at: DateTime<Utc>) -> Result<()> {
        let mut st = self.lock();
        let b = st
            .books
            .get_mut(&id)
            .filter(|b| !b.deleted)
            .ok_or_else(|| Error::not_found("book", id))?;
        b.deleted = true;
        b.book.updated_at = at;
        st.catalog_revision += 1;
        Ok(())
    }

    async fn revision(&self) -> Result<u64> {
        Ok(self.lock().catalog_revision)
    }
}

struct MemoryChunks {
    data: Arc<Vec<u8>>,
    pos: usize,
}

#[async_trait]
impl FileChunks for MemoryChunks {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let end = (self.pos + CHUNK).min(self.data.len());
        let chunk = self.data[self.pos..end].to_vec();
        self.pos = end;
        Ok(Some(chunk))
    }
}

#[async_trait]
impl BookFileStore for MemoryStore {
    async fn put(&self, book: BookId, upload: BookFileUpload) -> Result<BookFileInfo> {
        let mut st = self.lock();
        if st.live_book(book).is_none() {
            return Err(Error::not_found("book", book));
        }
        let info = BookFileInfo {
            file_name: upload.file_name,
            content_type: upload.content_type,
            size_bytes: upload.bytes.len() as i64,
        };
        st.files
            .insert(book, (info.clone(), Arc::new(upload.bytes)));
        st.catalog_revision += 1;
        Ok(info)
    }

    async fn open(&self, book: BookId) -> Result<Option<(BookFileInfo, Box<dyn FileChunks>)>> {
        Ok(self.lock().files.get(&book).map(|(info, data)| {
            let chunks: Box<dyn FileChunks> = Box::new(MemoryChunks {
                data: data.clone(),
                pos: 0,
            });
            (info.clone(), chunks)
        }))
    }
}

#[async_trait]
impl PurchaseRepository for MemoryStore {
    async fn create_pending(
        &self,
        user: UserId,
        book: BookId,
        price: Money,
        at: DateTime<Utc>,
    ) -> Result<Purchase> {
        let mut st = self.lock();
        if let Some(existing) = st
            .purchases
            .values()
            .find(|p| p.user_id == user && p.book_id == book)
            .cloned()
        {
            if existing.status != PurchaseStatus::Failed {
                return Err(Error::Duplicate(
                    "a purchase of this book already exists".into(),
                ));
            }
            st.purchases.remove(&existing.id);
        }
        let id = PurchaseId(st.next_id());
        let p = Purchase {
            id,
            user_id: user,
            book_id: book,
            price,
            status: PurchaseStatus::Pending,
            payment_ref: None,
            created_at: at,
            completed_at: None,
        };
        st.purchases.insert(id, p.clone());
        Ok(p)
    }

    async fn get(&self, id: PurchaseId) -> Result<Option<Purchase>> {
        Ok(self.lock().purchases.get(&id).cloned())
    }

    async fn find(&self, user: UserId, book: BookId) -> Result<Option<Purchase>> {
        Ok(self
            .lock()
            .purchases
            .values()
            .find(|p| p.user_id == user && p.book_id == book)
            .cloned())
    }

    async fn complete(
        &self,
        id: PurchaseId,
        payment_ref: &str,
        meta: EventMeta,
    ) -> Result<ConfirmOutcome> {
        let mut st = self.lock();
        let p = st
            .purchases
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("purchase", id))?;
        match p.status {
            PurchaseStatus::Completed => Ok(ConfirmOutcome::AlreadyCompleted(p.clone())),
            PurchaseStatus::Failed => Err(Error::Conflict(format!("purchase {id} has failed"))),
            PurchaseStatus::Pending => {
                p.status = PurchaseStatus::Completed;
                p.payment_ref = Some(payment_ref.to_string());
                p.completed_at = Some(meta.occurred_at);
                let done = p.clone();
                st.enqueue(Event::purchased(meta, &done));
                Ok(ConfirmOutcome::Completed(done))
            }
        }
    }

    async fn fail(&self, id: PurchaseId, payment_ref: &str) -> Result<Purchase> {
        let mut st = self.lock();
        let p = st
            .purchases
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("purchase", id))?;
        match p.status {
            PurchaseStatus::Completed => Err(Error::Conflict(format!(
                "purchase {id} has already completed"
            ))),
            _ => {
                p.status = PurchaseStatus::Failed;
                p.payment_ref = Some(payment_ref.to_string());
                Ok(p.clone())
            }
        }
    }
}

#[async_trait]
impl ReviewRepository for MemoryStore {
    async fn create(
        &self,
        book: BookId,
        user: UserId,
        text: &ReviewText,
        meta: EventMeta,
    ) -> Result<Review> {
        let mut st = self.lock();
        if st
            .reviews
            .values()
            .any(|r| r.book_id == book && r.user_id == user)
        {
            return Err(Error::Duplicate(
                "you have already reviewed this book; update it instead".into(),
            ));
        }
        let id = ReviewId(st.next_id());
        let r = Review {
            id,
            book_id: book,
            user_id: user,
            text: text.as_str().to_string(),
            created_at: meta.occurred_at,
            updated_at: meta.occurred_at,
        };
        st.reviews.insert(id, r.clone());
        st.enqueue(Event::reviewed(meta, &r, None));
        Ok(r)
    }

    async fn update(
        &self,
        book: BookId,
        user: UserId,
        text: &ReviewText,
        meta: EventMeta,
    ) -> Result<ReviewUpdate> {
        let mut st = self.lock();
        let r = st
            .reviews
            .values_mut()
            .find(|r| r.book_id == book && r.user_id == user)
            .ok_or_else(|| Error::not_found("your review of book", book))?;
        let old_length = r.text.chars().count() as u32;
        r.text = text.as_str().to_string();
        r.updated_at = meta.occurred_at;
        let r = r.clone();
        st.enqueue(Event::reviewed(meta, &r, Some(old_length)));
        Ok(ReviewUpdate {
            review: r,
            old_length,
        })
    }

    async fn list_for_book(&self, book: BookId, page: PageRequest) -> Result<Page<Review>> {
        let st = self.lock();
        let all: Vec<&Review> = st.reviews.values().filter(|r| r.book_id == book).collect();
        Ok(Page {
            items: all
                .iter()
                .skip(page.offset() as usize)
                .take(page.per_page as usize)
                .map(|r| (*r).clone())
                .collect(),
            page: page.page,
            per_page: page.per_page,
            total: all.len() as u64,
        })
    }
}

#[async_trait]
impl RatingRepository for MemoryStore {
    async fn create(
        &self,
        book: BookId,
        user: UserId,
        stars: Stars,
        meta: EventMeta,
    ) -> Result<Rating> {
        let mut st = self.lock();
        if st.ratings.contains_key(&(user, book)) {
            return Err(Error::Duplicate(
                "you have already rated this book; update it instead".into(),
            ));
        }
        let r = Rating {
            book_id: book,
            user_id: user,
            stars,
            created_at: meta.occurred_at,
            updated_at: meta.occurred_at,
        };
        st.ratings.insert((user, book), r.clone());
        st.enqueue(Event::rated(meta, &r, None));
        Ok(r)
    }

    async fn update(
        &self,
        book: BookId,
        user: UserId,
        stars: Stars,
        meta: EventMeta,
    ) -> Result<RatingUpdate> {
        let mut st = self.lock();
        let r = st
            .ratings
            .get_mut(&(user, book))
            .ok_or_else(|| Error::not_found("your rating of book", book))?;
        let old = r.stars;
        r.stars = stars;
        r.updated_at = meta.occurred_at;
        let r = r.clone();
        st.enqueue(Event::rated(meta, &r, Some(old)));
        Ok(RatingUpdate { rating: r, old })
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxEntry>> {
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let mut st = self.lock();
        Ok(st
            .outbox
            .iter_mut()
            .filter(|o| !o.published && o.claimed_until.is_none_or(|c| c < now))
            .take(limit as usize)
            .map(|o| {
                o.claimed_until = Some(until);
                OutboxEntry {
                    id: o.id,
                    event: o.event.clone(),
                }
            })
            .collect())
    }

    async fn mark_published(&self, ids: &[i64], _now: DateTime<Utc>) -> Result<()> {
        let mut st = self.lock();
        for o in st.outbox.iter_mut().filter(|o| ids.contains(&o.id)) {
            o.published = true;
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<u64> {
        Ok(self.lock().outbox.iter().filter(|o| !o.published).count() as u64)
    }
}

#[async_trait]
impl StatsSink for MemoryStore {
    async fn upsert(&self, aggregates: &[Aggregate]) -> Result<UpsertReport> {
        let mut st = self.lock();
        let mut report = UpsertReport::default();
        for a in aggregates {
            match upsert_into(st.stats.entry(group_of(a)).or_default(), a) {
                Upserted::Inserted => report.inserted += 1,
                Upserted::Replaced => report.replaced += 1,
                Upserted::Ignored => report.ignored += 1,
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl StatsQuery for MemoryStore {
    async fn book(&self, book: BookId, range: TimeRange) -> Result<BookStats> {
        let mut fold = StatsFold::default();
        for a in self.aggregates(range, Some(book)) {
            fold.add(&a);
        }
        let currency = fold.currency.clone();
        let (figures, _) = fold.finish();
        Ok(BookStats {
            book_id: book,
            figures,
            currency,
        })
    }

    async fn book_history(&self, book: BookId, range: TimeRange) -> Result<Vec<BookWindow>> {
        let aggs = self.aggregates(range, Some(book));
        Ok(fold_by_window(&aggs)
            .into_iter()
            .map(|(start, (end, fold))| BookWindow {
                window_start: start,
                window_end: end,
                figures: fold.finish().0,
            })
            .collect())
    }

    async fn overview(&self, range: TimeRange) -> Result<Overview> {
        let aggs = self.aggregates(range, None);
        let mut all = StatsFold::default();
        let mut per_book: BTreeMap<BookId, u64> = BTreeMap::new();
        for a in &aggs {
            all.add(a);
            let views = contribution(Total::Views, a.source.topic, &a.figures);
            *per_book.entry(a.book_id).or_default() += u64::try_from(views).unwrap_or(0);
        }
        let st = self.lock();
        let title = |id: BookId| {
            st.books
                .get(&id)
                .map(|b| b.book.title.clone())
                .unwrap_or_default()
        };
        let most_popular_book =
            rank::top(&per_book, |(id, v)| (count(**v), *id)).map(|(id, views)| TopBook {
                book_id: *id,
                title: title(*id),
                views: *views,
            });
        let mut genres: BTreeMap<String, u64> = BTreeMap::new();
        for (id, views) in &per_book {
            if let Some(b) = st.books.get(id) {
                *genres.entry(b.book.genre.clone()).or_default() += views;
            }
        }
        let top_genre =
            rank::top(&genres, |(g, v)| (count(**v), g.as_str())).map(|(g, views)| TopGenre {
                genre: g.clone(),
                book_count: st
                    .books
                    .values()
                    .filter(|b| !b.deleted && &b.book.genre == g)
                    .count() as u64,
                views: *views,
            });
        let currency = all.currency.clone();
        let (totals, unique_users) = all.finish();
        Ok(Overview {
            totals,
            unique_users,
            books_with_activity: per_book.len() as u64,
            most_popular_book,
            top_genre,
            currency,
        })
    }

    async fn overview_history(&self, range: TimeRange) -> Result<Vec<OverviewWindow>> {
        let aggs = self.aggregates(range, None);
        Ok(fold_by_window(&aggs)
            .into_iter()
            .map(|(start, (end, fold))| {
                let (totals, unique_users) = fold.finish();
                OverviewWindow {
                    window_start: start,
                    window_end: end,
                    totals,
                    unique_users,
                }
            })
            .collect())
    }

    async fn popular(
        &self,
        sort: PopularSort,
        limit: u32,
        range: TimeRange,
    ) -> Result<Vec<PopularBook>> {
        let aggs = self.aggregates(range, None);
        let mut folds: BTreeMap<BookId, StatsFold> = BTreeMap::new();
        for a in &aggs {
            folds.entry(a.book_id).or_default().add(a);
        }
        let st = self.lock();
        let rows = folds
            .into_iter()
            .map(|(id, fold)| {
                let currency = fold.currency.clone();
                let f = fold.figures;
                PopularBook {
                    rank: 0,
                    book_id: id,
                    title: st
                        .books
                        .get(&id)
                        .map(|b| b.book.title.clone())
                        .unwrap_or_default(),
                    views: f.views,
                    downloads: f.downloads,
                    purchases: f.purchases,
                    revenue: currency
                        .and_then(|c| folio_domain::money::Currency::parse(&c).ok())
                        .map(|c| Money::new(f.revenue_cents, c)),
                }
            })
            .collect();
        Ok(rank_popular(rows, sort, limit))
    }

    async fn genres(&self, range: TimeRange) -> Result<Vec<GenreStats>> {
        let aggs = self.aggregates(range, None);
        let st = self.lock();
        let mut folds: BTreeMap<String, (StatsFold, BTreeSet<BookId>)> = BTreeMap::new();
        for a in &aggs {
            let Some(book) = st.books.get(&a.book_id) else {
                continue;
            };
            let (fold, books) = folds.entry(book.book.genre.clone()).or_default();
            fold.add(a);
            books.insert(a.book_id);
        }
        let rows = folds
            .into_iter()
            .map(|(genre, (fold, books))| {
                let book_count = st
                    .books
                    .values()
                    .filter(|b| !b.deleted && b.book.genre == genre)
                    .count() as u64;
                GenreStats::from_figures(genre, book_count, books.len() as u64, &fold.figures)
            })
            .collect();
        Ok(rank_genres(rows))
    }

    async fn newest_window(&self) -> Result<Option<StoredWindow>> {
        Ok(self
            .lock()
            .stats
            .values()
            .flatten()
            .max_by_key(|a| (a.window_end, a.window_start))
            .map(|a| StoredWindow {
                window_start: a.window_start,
                window_end: a.window_end,
            }))
    }
}

#[async_trait]
impl Readiness for MemoryStore {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }
}
