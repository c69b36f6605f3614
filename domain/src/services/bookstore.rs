use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::accounts::{AccessToken, Email, NewUser, Password, Principal, Role, User};
use crate::catalog::{
    Book, BookDraft, BookFileInfo, BookFileUpload, BookFilter, Page, PageRequest,
};
use crate::commerce::{ChargeOutcome, ConfirmOutcome, Purchase, PurchaseStatus};
use crate::events::{Event, EventMeta};
use crate::feedback::{Rating, RatingUpdate, Review, ReviewText, ReviewUpdate, Stars};
use crate::ids::BookId;
use crate::money::Currency;
use crate::ports::{
    BookFileStore, BookRepository, Clock, EventPublisher, FileChunks, PasswordHasher,
    PaymentProvider, PurchaseRepository, RatingRepository, ReviewRepository, StatsQuery,
    TokenCodec, UserRepository,
};
use crate::stats::{
    BookStats, BookWindow, GenreStats, Overview, OverviewWindow, PopularBook, PopularSort,
    StoredWindow, TimeRange,
};
use crate::{Error, Result};

use super::book_cache::{BookCache, ServedBook, DEFAULT_BUDGET_BYTES};

/// A live book, or the one answer for a book that is not there.
fn found<B>(id: BookId, book: Option<B>) -> Result<B> {
    book.ok_or_else(|| Error::not_found("book", id))
}

/// Store-wide settings.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Every price is in this currency, so revenue sums exactly.
    pub currency: Currency,
    /// How stale a book page may be after a catalog write on another instance
    /// ([`BookCache`]); zero reads every book page from the database.
    pub book_page_refresh: Duration,
}

/// Everything the bookstore's use cases need, chosen by the composition root.
#[derive(Clone)]
pub struct BookstoreDeps {
    pub config: StoreConfig,
    pub clock: Arc<dyn Clock>,
    pub users: Arc<dyn UserRepository>,
    pub books: Arc<dyn BookRepository>,
    pub files: Arc<dyn BookFileStore>,
    pub purchases: Arc<dyn PurchaseRepository>,
    pub reviews: Arc<dyn ReviewRepository>,
    pub ratings: Arc<dyn RatingRepository>,
    pub stats: Arc<dyn StatsQuery>,
    pub events: Arc<dyn EventPublisher>,
    pub payments: Arc<dyn PaymentProvider>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub tokens: Arc<dyn TokenCodec>,
}

/// A download ready to stream.
pub struct Download {
    pub info: BookFileInfo,
    pub chunks: Box<dyn FileChunks>,
}

/// The bookstore's use cases.
#[derive(Clone)]
pub struct Bookstore {
    d: BookstoreDeps,
    book_pages: Arc<BookCache>,
}

impl Bookstore {
    pub fn new(deps: BookstoreDeps) -> Self {
        let book_pages = Arc::new(BookCache::new(
            deps.config.book_page_refresh,
            DEFAULT_BUDGET_BYTES,
        ));
        Bookstore {
            d: deps,
            book_pages,
        }
    }

    pub fn config(&self) -> StoreConfig {
        self.d.config
    }

    /// The event of `meta` was written to the outbox with its row, which committed: the
    /// event publisher hears of it ([`EventPublisher::outboxed`]), as of views and downloads
    /// it publishes itself.
    fn accepted_via_outbox(&self, meta: EventMeta) {
        self.d.events.outboxed(meta.occurred_at);
    }

    // ----- accounts -----

    /// Registers a reader (role USER) and signs them in.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<AccessToken> {
        let email = Email::parse(email)?;
        let password = Password::parse(password)?;
        let name = display_name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("display_name must be 1 to 100 characters"));
        }
        let hash = self.d.hasher.hash(&password).await?;
        let user = self
            .d
            .users
            .create(
                NewUser {
                    email,
                    display_name: name.to_string(),
                    role: Role::User,
                    password_hash: hash,
                },
                self.d.clock.now(),
            )
            .await?;
        self.issue(&user)
    }

    /// Signs in. Wrong e-mail and wrong password get the same answer, in the same time:
    /// an unknown account still costs a password verification.
    pub async fn login(&self, email: &str, password: &str) -> Result<AccessToken> {
        let denied = || Error::Unauthenticated("e-mail or password is wrong".into());
        let email = Email::parse(email).map_err(|_| denied())?;
        let Some(user) = self.d.users.find_by_email(&email).await? else {
            self.d.hasher.verify_unknown(password).await?;
            return Err(denied());
        };
        if !self.d.hasher.verify(password, &user.password_hash).await? {
            return Err(denied());
        }
        self.issue(&user)
    }

    fn issue(&self, user: &User) -> Result<AccessToken> {
        self.d.tokens.issue(
            Principal {
                user_id: user.id,
                role: user.role,
            },
            self.d.clock.now(),
        )
    }

    /// The principal behind a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        self.d.tokens.verify(token, self.d.clock.now())
    }

    /// Ensures the configured admin account exists with this password.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<User> {
        let email = Email::parse(email)?;
        let password = Password::parse(password)
            .map_err(|e| Error::invalid(format!("FOLIO_ADMIN_PASSWORD: {e}")))?;
        let hash = self.d.hasher.hash(&password).await?;
        let user = self
            .d
            .users
            .ensure_admin(&email, &hash, self.d.clock.now())
            .await?;
        info!(user_id = %user.id, email = %email.as_str(), "admin account ensured");
        Ok(user)
    }

    pub async fn me(&self, who: Principal) -> Result<User> {
        self.d
            .users
            .get(who.user_id)
            .await?
            .ok_or_else(|| Error::Unauthenticated("the account no longer exists".into()))
    }

    // ----- catalog -----

    /// Live books that pass `filter`, one page at a time.
    pub async fn list_books(&self, page: PageRequest, filter: &BookFilter) -> Result<Page<Book>> {
        self.d.books.list(page, filter).await
    }

    async fn live_book(&self, id: BookId) -> Result<Book> {
        found(id, self.d.books.get(id).await?)
    }

    /// Shows a book and emits a view (anonymous when there is no viewer). The publisher
    /// only spools the view (it never waits for the broker). When the spool refuses it
    /// (full, or its disk failed) the page is still served: a reader's page is worth more
    /// than one view, and the refusal is logged and counted by the spool's metrics.
    ///
    /// The book comes shared with the page cache ([`ServedBook`]), so a view copies nothing.
    pub async fn view_book(
        &self,
        id: BookId,
        viewer: Option<Principal>,
    ) -> Result<Arc<ServedBook>> {
        let book = found(id, self.book_pages.get(id, self.d.books.as_ref()).await?)?;
        let meta = EventMeta::new(self.d.clock.now());
        let published = self
            .d
            .events
            .publish(&Event::BookViewed {
                event_id: meta.event_id,
                occurred_at: meta.occurred_at,
                book_id: id,
                user_id: viewer.map(|p| p.user_id),
            })
            .await;
        match published {
            Ok(()) => {}
            Err(Error::Unavailable(what, why)) => {
                // The spool logs refusals itself, at a bounded rate; one line per view
                // would flood the log exactly when it is full.
                debug!(book_id = %id, %what, %why, "view served but its event was refused");
            }
            Err(e) => return Err(e),
        }
        Ok(book)
    }

    pub async fn create_book(&self, who: Principal, draft: BookDraft) -> Result<Book> {
        who.require_admin()?;
        let book = self.d.books.create(draft, self.d.clock.now()).await?;
        self.book_pages.changed(book.id);
        Ok(book)
    }

    pub async fn update_book(&self, who: Principal, id: BookId, draft: BookDraft) -> Result<Book> {
        who.require_admin()?;
        let updated = self.d.books.update(id, draft, self.d.clock.now()).await;
        self.book_pages.changed(id);
        updated
    }

    pub async fn delete_book(&self, who: Principal, id: BookId) -> Result<()> {
        who.require_admin()?;
        let deleted = self.d.books.delete(id, self.d.clock.now()).await;
        self.book_pages.changed(id);
        deleted
    }

    pub async fn upload_file(
        &self,
        who: Principal,
        id: BookId,
        upload: BookFileUpload,
    ) -> Result<BookFileInfo> {
        who.require_admin()?;
        self.live_book(id).await?;
        let stored = self.d.files.put(id, upload).await;
        self.book_pages.changed(id);
        stored
    }

    // ----- purchases and downloads -----

    /// Buys a book through the payment provider. A confirmed charge completes the purchase
    /// (and writes its event to the outbox) at once; a pending one waits for the webhook.
    pub async fn purchase(&self, who: Principal, id: BookId) -> Result<Purchase> {
        let book = self.live_book(id).await?;
        if book.is_free() {
            return Err(Error::Conflict(
                "this book is free: download it without buying".into(),
            ));
        }
        if let Some(p) = self.d.purchases.find(who.user_id, id).await? {
            match p.status {
                PurchaseStatus::Completed => {
                    return Err(Error::Duplicate("you have already bought this book".into()))
                }
                PurchaseStatus::Pending => {
                    return Err(Error::Conflict(format!(
                        "purchase {} of this book is waiting for payment confirmation",
                        p.id
                    )))
                }
                PurchaseStatus::Failed => {}
            }
        }
        let pending = self
            .d
            .purchases
            .create_pending(who.user_id, id, book.price, self.d.clock.now())
            .await?;
        match self.d.payments.charge(&pending).await? {
            ChargeOutcome::Confirmed { payment_ref } => {
                let meta = EventMeta::new(self.d.clock.now());
                match self
                    .d
                    .purchases
                    .complete(pending.id, &payment_ref, meta)
                    .await?
                {
                    ConfirmOutcome::Completed(p) => {
                        self.accepted_via_outbox(meta);
                        Ok(p)
                    }
                    ConfirmOutcome::AlreadyCompleted(p) => Ok(p),
                }
            }
            ChargeOutcome::Pending { .. } => Ok(pending),
            ChargeOutcome::Declined { reason } => {
                self.d.purchases.fail(pending.id, "declined").await?;
                Err(Error::PaymentRequired(format!(
                    "the payment was declined: {reason}"
                )))
            }
        }
    }

    /// Handles the payment provider's signed webhook. Idempotent: a retried notification
    /// finds the purchase completed and changes nothing.
    pub async fn payment_webhook(&self, body: &[u8], signature: Option<&str>) -> Result<Purchase> {
        let n = self.d.payments.verify_notification(body, signature)?;
        if n.succeeded {
            let meta = EventMeta::new(self.d.clock.now());
            match self
                .d
                .purchases
                .complete(n.purchase_id, &n.payment_ref, meta)
                .await?
            {
                ConfirmOutcome::Completed(p) => {
                    self.accepted_via_outbox(meta);
                    info!(purchase_id = %p.id, "purchase completed by webhook");
                    Ok(p)
                }
                ConfirmOutcome::AlreadyCompleted(p) => Ok(p),
            }
        } else {
            self.d.purchases.fail(n.purchase_id, &n.payment_ref).await
        }
    }

    /// Opens a book's file for a reader who bought it (or any reader of a free book) and
    /// emits a download. 402 without a completed purchase; 404 when there is no file.
    pub async fn download(&self, who: Principal, id: BookId) -> Result<Download> {
        let book = self.live_book(id).await?;
        if !book.is_free() && who.role != Role::Admin {
            let bought = self
                .d
                .purchases
                .find(who.user_id, id)
                .await?
                .is_some_and(|p| p.status == PurchaseStatus::Completed);
            if !bought {
                return Err(Error::PaymentRequired(format!(
                    "buy book {id} before downloading it"
                )));
            }
        }
        let (info, chunks) = self
            .d
            .files
            .open(id)
            .await?
            .ok_or_else(|| Error::not_found("file of book", id))?;
        let meta = EventMeta::new(self.d.clock.now());
        self.d
            .events
            .publish(&Event::BookDownloaded {
                event_id: meta.event_id,
                occurred_at: meta.occurred_at,
                book_id: id,
                user_id: who.user_id,
            })
            .await?;
        Ok(Download { info, chunks })
    }

    // ----- reviews and ratings -----

    pub async fn create_review(&self, who: Principal, id: BookId, text: &str) -> Result<Review> {
        let text = ReviewText::parse(text)?;
        self.live_book(id).await?;
        let meta = EventMeta::new(self.d.clock.now());
        let written = self.d.reviews.create(id, who.user_id, &text, meta).await?;
        self.accepted_via_outbox(meta);
        Ok(written)
    }

    pub async fn update_my_review(
        &self,
        who: Principal,
        id: BookId,
        text: &str,
    ) -> Result<ReviewUpdate> {
        let text = ReviewText::parse(text)?;
        self.live_book(id).await?;
        let meta = EventMeta::new(self.d.clock.now());
        let written = self.d.reviews.update(id, who.user_id, &text, meta).await?;
        self.accepted_via_outbox(meta);
        Ok(written)
    }

    pub async fn list_reviews(&self, id: BookId, page: PageRequest) -> Result<Page<Review>> {
        self.live_book(id).await?;
        self.d.reviews.list_for_book(id, page).await
    }

    pub async fn rate(&self, who: Principal, id: BookId, stars: i64) -> Result<Rating> {
        let stars = Stars::parse(stars)?;
        self.live_book(id).await?;
        let meta = EventMeta::new(self.d.clock.now());
        let written = self.d.ratings.create(id, who.user_id, stars, meta).await?;
        self.accepted_via_outbox(meta);
        Ok(written)
    }

    pub async fn update_my_rating(
        &self,
        who: Principal,
        id: BookId,
        stars: i64,
    ) -> Result<RatingUpdate> {
        let stars = Stars::parse(stars)?;
        self.live_book(id).await?;
        let meta = EventMeta::new(self.d.clock.now());
        let written = self.d.ratings.update(id, who.user_id, stars, meta).await?;
        self.accepted_via_outbox(meta);
        Ok(written)
    }

    // ----- admin statistics -----

    pub async fn book_stats(
        &self,
        who: Principal,
        id: BookId,
        range: TimeRange,
    ) -> Result<BookStats> {
        who.require_admin()?;
        self.known_book(id).await?;
        self.d.stats.book(id, range).await
    }

    pub async fn book_history(
        &self,
        who: Principal,
        id: BookId,
        range: TimeRange,
    ) -> Result<Vec<BookWindow>> {
        who.require_admin()?;
        self.known_book(id).await?;
        self.d.stats.book_history(id, range).await
    }

    /// Statistics are kept for deleted books too; only ids that never existed are 404.
    async fn known_book(&self, id: BookId) -> Result<()> {
        if self.d.books.get(id).await?.is_some() {
            return Ok(());
        }
        let stats = self.d.stats.book(id, TimeRange::ALL).await?;
        if stats.figures.views + stats.figures.downloads + stats.figures.purchases == 0
            && stats.figures.rating_events == 0
            && stats.figures.reviews == 0
        {
            warn!(book_id = %id, "statistics asked for an unknown book");
            return Err(Error::not_found("book", id));
        }
        Ok(())
    }

    pub async fn overview(&self, who: Principal, range: TimeRange) -> Result<Overview> {
        who.require_admin()?;
        self.d.stats.overview(range).await
    }

    pub async fn overview_history(
        &self,
        who: Principal,
        range: TimeRange,
    ) -> Result<Vec<OverviewWindow>> {
        who.require_admin()?;
        self.d.stats.overview_history(range).await
    }

    pub async fn popular(
        &self,
        who: Principal,
        sort: PopularSort,
        limit: Option<u32>,
        range: TimeRange,
    ) -> Result<Vec<PopularBook>> {
        who.require_admin()?;
        let limit = limit.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid("limit must be between 1 and 100"));
        }
        self.d.stats.popular(sort, limit, range).await
    }

    /// Views, downloads, purchases, revenue and ratings per genre.
    pub async fn genres(&self, who: Principal, range: TimeRange) -> Result<Vec<GenreStats>> {
        who.require_admin()?;
        self.d.stats.genres(range).await
    }

    /// The newest window stored, to tell how far behind the pipeline is.
    pub async fn newest_window(&self, who: Principal) -> Result<Option<StoredWindow>> {
        who.require_admin()?;
        self.d.stats.newest_window().await
    }

    /// The clock the use cases read.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.d.clock.now()
    }
}
