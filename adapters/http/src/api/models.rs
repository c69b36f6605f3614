//! The JSON shapes of the REST API, and their translation from domain types. Requests carry
//! raw values; the domain's validating constructors decide what is valid, so there is one
//! rule set and its messages name the fields as clients send them.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use folio_domain::accounts::{AccessToken, Role, User};
use folio_domain::catalog::{Book, BookFileInfo, Page};
use folio_domain::commerce::{Purchase, PurchaseStatus};
use folio_domain::feedback::{Rating, RatingUpdate, Review, ReviewUpdate};
use folio_domain::money::{Currency, Money};
use folio_domain::stats::{
    BookFigures, BookStats, BookWindow, Overview, OverviewWindow, PopularBook, PopularSort,
    TimeRange,
};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{Example, ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::Value;

// ----- time -----

/// An instant in RFC 3339 form, always UTC with a `Z`, like the events' `occurred_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp(t)
    }
}

impl Type for Timestamp {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "date-time")))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(
            self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        ))
    }
}

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| Timestamp(t.with_timezone(&Utc)))
                .map_err(|e| ParseError::custom(format!("not an RFC 3339 time: {e}"))),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp(t)
}

fn ts_opt(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(Timestamp)
}

// ----- accounts -----

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "UPPERCASE")]
pub enum ApiRole {
    User,
    Admin,
}

impl From<Role> for ApiRole {
    fn from(r: Role) -> Self {
        match r {
            Role::User => ApiRole::User,
            Role::Admin => ApiRole::Admin,
        }
    }
}

/// A new reader account.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RegisterRequest {
    /// Unique, case-insensitive.
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    /// 1 to 100 characters.
    pub display_name: String,
}

impl Example for RegisterRequest {
    fn example() -> Self {
        RegisterRequest {
            email: "ann@example.org".into(),
            password: "correct horse battery".into(),
            display_name: "Ann".into(),
        }
    }
}

/// E-mail and password.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

impl Example for LoginRequest {
    fn example() -> Self {
        LoginRequest {
            email: "ann@example.org".into(),
            password: "correct horse battery".into(),
        }
    }
}

/// A bearer token: send it as `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Object)]
pub struct TokenResponse {
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_at: Timestamp,
    pub user_id: i64,
    pub role: ApiRole,
}

impl From<AccessToken> for TokenResponse {
    fn from(t: AccessToken) -> Self {
        TokenResponse {
            token: t.token,
            token_type: "Bearer".into(),
            expires_at: ts(t.expires_at),
            user_id: t.principal.user_id.get(),
            role: t.principal.role.into(),
        }
    }
}

/// A registered user.
#[derive(Debug, Clone, Object)]
pub struct UserResponse {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    pub role: ApiRole,
    pub created_at: Timestamp,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        UserResponse {
            id: u.id.get(),
            email: u.email.as_str().to_string(),
            display_name: u.display_name,
            role: u.role.into(),
            created_at: ts(u.created_at),
        }
    }
}

// ----- catalog -----

/// An amount of money in minor units (cents): never floating point.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct MoneyBody {
    pub amount_cents: i64,
    /// ISO 4217 code, such as `USD`.
    pub currency: String,
}

impl From<Money> for MoneyBody {
    fn from(m: Money) -> Self {
        MoneyBody {
            amount_cents: m.amount_cents,
            currency: m.currency.to_string(),
        }
    }
}

impl MoneyBody {
    fn cents(amount_cents: i64, currency: Currency) -> Self {
        Money::new(amount_cents, currency).into()
    }
}

/// A new book, or the full replacement of one.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct BookRequest {
    pub title: String,
    pub author: String,
    pub genre: String,
    /// Optional; up to 10000 characters.
    #[oai(default)]
    pub description: String,
    /// The price in cents, 0 to 1000000000 (10,000,000.00); 0 makes the book free to
    /// download.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub price_cents: i64,
    /// Defaults to the store's currency, the only one accepted.
    #[oai(nullable)]
    pub currency: Option<String>,
}

impl Example for BookRequest {
    fn example() -> Self {
        BookRequest {
            title: "Dune".into(),
            author: "Frank Herbert".into(),
            genre: "Science Fiction".into(),
            description: "A desert planet and its spice.".into(),
            price_cents: 1999,
            currency: Some("USD".into()),
        }
    }
}

/// What is known about a book's file.
#[derive(Debug, Clone, Object)]
pub struct FileInfoResponse {
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
}

impl From<BookFileInfo> for FileInfoResponse {
    fn from(f: BookFileInfo) -> Self {
        FileInfoResponse {
            file_name: f.file_name,
            content_type: f.content_type,
            size_bytes: f.size_bytes,
        }
    }
}

/// A book in the catalog.
#[derive(Debug, Clone, Object)]
pub struct BookResponse {
    pub id: i64,
    pub title: String,
    pub author: String,
    pub genre: String,
    pub description: String,
    pub price: MoneyBody,
    /// True when the price is zero: anyone signed in may download it.
    pub free: bool,
    /// The uploaded file, or null before an upload.
    #[oai(nullable)]
    pub file: Option<FileInfoResponse>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<Book> for BookResponse {
    fn from(b: Book) -> Self {
        BookResponse {
            id: b.id.get(),
            free: b.is_free(),
            title: b.title,
            author: b.author,
            genre: b.genre,
            description: b.description,
            price: b.price.into(),
            file: b.file.map(Into::into),
            created_at: ts(b.created_at),
            updated_at: ts(b.updated_at),
        }
    }
}

/// One page of books.
#[derive(Debug, Clone, Object)]
pub struct BookPage {
    pub items: Vec<BookResponse>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
    /// Books matching the query, over all pages.
    pub total: u64,
}

impl From<Page<Book>> for BookPage {
    fn from(p: Page<Book>) -> Self {
        BookPage {
            items: p.items.into_iter().map(Into::into).collect(),
            page: p.page,
            per_page: p.per_page,
            total: p.total,
        }
    }
}

// ----- purchases -----

/// Where a purchase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "UPPERCASE")]
pub enum ApiPurchaseStatus {
    /// Waiting for the payment provider's webhook.
    Pending,
    Completed,
    /// Declined; buying again is allowed.
    Failed,
}

impl From<PurchaseStatus> for ApiPurchaseStatus {
    fn from(s: PurchaseStatus) -> Self {
        match s {
            PurchaseStatus::Pending => ApiPurchaseStatus::Pending,
            PurchaseStatus::Completed => ApiPurchaseStatus::Completed,
            PurchaseStatus::Failed => ApiPurchaseStatus::Failed,
        }
    }
}

/// One user's purchase of one book.
#[derive(Debug, Clone, Object)]
pub struct PurchaseResponse {
    pub id: i64,
    pub user_id: i64,
    pub book_id: i64,
    pub price: MoneyBody,
    pub status: ApiPurchaseStatus,
    /// The payment provider's reference, once it has one.
    #[oai(nullable)]
    pub payment_ref: Option<String>,
    pub created_at: Timestamp,
    #[oai(nullable)]
    pub completed_at: Option<Timestamp>,
}

impl From<Purchase> for PurchaseResponse {
    fn from(p: Purchase) -> Self {
        PurchaseResponse {
            id: p.id.get(),
            user_id: p.user_id.get(),
            book_id: p.book_id.get(),
            price: p.price.into(),
            status: p.status.into(),
            payment_ref: p.payment_ref,
            created_at: ts(p.created_at),
            completed_at: ts_opt(p.completed_at),
        }
    }
}

// ----- reviews and ratings -----

/// A review's text.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ReviewRequest {
    /// 1 to 5000 characters after trimming.
    pub text: String,
}

impl Example for ReviewRequest {
    fn example() -> Self {
        ReviewRequest {
            text: "Slow start, unforgettable ending.".into(),
        }
    }
}

/// One user's review of one book.
#[derive(Debug, Clone, Object)]
pub struct ReviewResponse {
    pub id: i64,
    pub book_id: i64,
    pub user_id: i64,
    pub text: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<Review> for ReviewResponse {
    fn from(r: Review) -> Self {
        ReviewResponse {
            id: r.id.get(),
            book_id: r.book_id.get(),
            user_id: r.user_id.get(),
            text: r.text,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

/// A replaced review and the length of the text it replaced.
#[derive(Debug, Clone, Object)]
pub struct ReviewUpdateResponse {
    #[oai(flatten)]
    pub review: ReviewResponse,
    /// Length, in characters, of the previous text.
    pub old_length: u32,
}

impl From<ReviewUpdate> for ReviewUpdateResponse {
    fn from(u: ReviewUpdate) -> Self {
        ReviewUpdateResponse {
            review: u.review.into(),
            old_length: u.old_length,
        }
    }
}

/// One page of reviews.
#[derive(Debug, Clone, Object)]
pub struct ReviewPage {
    pub items: Vec<ReviewResponse>,
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
}

impl From<Page<Review>> for ReviewPage {
    fn from(p: Page<Review>) -> Self {
        ReviewPage {
            items: p.items.into_iter().map(Into::into).collect(),
            page: p.page,
            per_page: p.per_page,
            total: p.total,
        }
    }
}

/// A rating.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RatingRequest {
    /// 1 to 5 stars.
    #[oai(validator(minimum(value = "1"), maximum(value = "5")))]
    pub rating: i64,
}

impl Example for RatingRequest {
    fn example() -> Self {
        RatingRequest { rating: 4 }
    }
}

/// One user's rating of one book.
#[derive(Debug, Clone, Object)]
pub struct RatingResponse {
    pub book_id: i64,
    pub user_id: i64,
    pub rating: u8,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<Rating> for RatingResponse {
    fn from(r: Rating) -> Self {
        RatingResponse {
            book_id: r.book_id.get(),
            user_id: r.user_id.get(),
            rating: r.stars.get(),
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

/// A replaced rating and the value it replaced.
#[derive(Debug, Clone, Object)]
pub struct RatingUpdateResponse {
    #[oai(flatten)]
    pub rating: RatingResponse,
    pub old_rating: u8,
}

impl From<RatingUpdate> for RatingUpdateResponse {
    fn from(u: RatingUpdate) -> Self {
        RatingUpdateResponse {
            rating: u.rating.into(),
            old_rating: u.old.get(),
        }
    }
}

// ----- statistics -----

/// How many current ratings have each number of stars.
#[derive(Debug, Clone, Object)]
pub struct RatingDistribution {
    #[oai(rename = "1")]
    pub one: i64,
    #[oai(rename = "2")]
    pub two: i64,
    #[oai(rename = "3")]
    pub three: i64,
    #[oai(rename = "4")]
    pub four: i64,
    #[oai(rename = "5")]
    pub five: i64,
}

/// Figures over a set of windows. Unique counts are sketch estimates: exact while small,
/// within 2% beyond.
#[derive(Debug, Clone, Object)]
pub struct FiguresResponse {
    pub views: u64,
    pub anonymous_views: u64,
    pub downloads: u64,
    pub purchases: u64,
    pub revenue: MoneyBody,
    /// Reviews that exist.
    pub reviews: i64,
    pub review_updates: u64,
    /// Mean length of current review texts, in characters; null without reviews.
    #[oai(nullable)]
    pub average_review_length: Option<f64>,
    /// Ratings that exist.
    pub ratings: i64,
    /// Rating submissions, creates and updates.
    pub rating_events: u64,
    /// Mean of current ratings; null without ratings.
    #[oai(nullable)]
    pub average_rating: Option<f64>,
    pub rating_distribution: RatingDistribution,
    pub unique_viewers: u64,
    pub unique_downloaders: u64,
    pub unique_purchasers: u64,
    #[oai(nullable)]
    pub first_view_at: Option<Timestamp>,
    #[oai(nullable)]
    pub last_view_at: Option<Timestamp>,
    #[oai(nullable)]
    pub last_purchase_at: Option<Timestamp>,
}

impl FiguresResponse {
    pub fn new(f: BookFigures, currency: Currency) -> Self {
        let [one, two, three, four, five] = f.rating_distribution;
        FiguresResponse {
            average_review_length: f.average_review_length(),
            average_rating: f.average_rating(),
            views: f.views,
            anonymous_views: f.anonymous_views,
            downloads: f.downloads,
            purchases: f.purchases,
            revenue: MoneyBody::cents(f.revenue_cents, currency),
            reviews: f.reviews,
            review_updates: f.review_updates,
            ratings: f.ratings,
            rating_events: f.rating_events,
            rating_distribution: RatingDistribution {
                one,
                two,
                three,
                four,
                five,
            },
            unique_viewers: f.unique_viewers,
            unique_downloaders: f.unique_downloaders,
            unique_purchasers: f.unique_purchasers,
            first_view_at: ts_opt(f.first_view_at),
            last_view_at: ts_opt(f.last_view_at),
            last_purchase_at: ts_opt(f.last_purchase_at),
        }
    }
}

/// The currency figures are in: the one purchases recorded, else the store's.
fn currency_of(recorded: Option<&str>, store: Currency) -> Currency {
    recorded
        .and_then(|c| Currency::parse(c).ok())
        .unwrap_or(store)
}

/// A book's statistics over a range of windows.
#[derive(Debug, Clone, Object)]
pub struct BookStatsResponse {
    pub book_id: i64,
    /// The range asked for; null ends are open.
    #[oai(nullable)]
    pub from: Option<Timestamp>,
    #[oai(nullable)]
    pub to: Option<Timestamp>,
    #[oai(flatten)]
    pub figures: FiguresResponse,
}

impl BookStatsResponse {
    pub fn new(s: BookStats, range: TimeRange, store: Currency) -> Self {
        let currency = currency_of(s.currency.as_deref(), store);
        BookStatsResponse {
            book_id: s.book_id.get(),
            from: ts_opt(range.from),
            to: ts_opt(range.to),
            figures: FiguresResponse::new(s.figures, currency),
        }
    }
}

/// A book's figures in one window.
#[derive(Debug, Clone, Object)]
pub struct BookWindowResponse {
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    #[oai(flatten)]
    pub figures: FiguresResponse,
}

impl BookWindowResponse {
    pub fn new(w: BookWindow, currency: Currency) -> Self {
        BookWindowResponse {
            window_start: ts(w.window_start),
            window_end: ts(w.window_end),
            figures: FiguresResponse::new(w.figures, currency),
        }
    }
}

/// A book's figures per window, oldest first. Windows without activity are absent.
#[derive(Debug, Clone, Object)]
pub struct BookHistoryResponse {
    pub book_id: i64,
    #[oai(nullable)]
    pub from: Option<Timestamp>,
    #[oai(nullable)]
    pub to: Option<Timestamp>,
    pub windows: Vec<BookWindowResponse>,
}

/// The most viewed book.
#[derive(Debug, Clone, Object)]
pub struct TopBookResponse {
    pub book_id: i64,
    pub title: String,
    pub views: u64,
}

/// The genre with the most views.
#[derive(Debug, Clone, Object)]
pub struct TopGenreResponse {
    pub genre: String,
    /// Books of the genre in the catalog.
    pub book_count: u64,
    pub views: u64,
}

/// The system overview over a range of windows.
#[derive(Debug, Clone, Object)]
pub struct OverviewResponse {
    #[oai(nullable)]
    pub from: Option<Timestamp>,
    #[oai(nullable)]
    pub to: Option<Timestamp>,
    /// Every book's figures added up.
    pub totals: FiguresResponse,
    /// Distinct users behind any event.
    pub unique_users: u64,
    pub books_with_activity: u64,
    #[oai(nullable)]
    pub most_popular_book: Option<TopBookResponse>,
    #[oai(nullable)]
    pub top_genre: Option<TopGenreResponse>,
}

impl OverviewResponse {
    pub fn new(o: Overview, range: TimeRange, store: Currency) -> Self {
        let currency = currency_of(o.currency.as_deref(), store);
        OverviewResponse {
            from: ts_opt(range.from),
            to: ts_opt(range.to),
            totals: FiguresResponse::new(o.totals, currency),
            unique_users: o.unique_users,
            books_with_activity: o.books_with_activity,
            most_popular_book: o.most_popular_book.map(|b| TopBookResponse {
                book_id: b.book_id.get(),
                title: b.title,
                views: b.views,
            }),
            top_genre: o.top_genre.map(|g| TopGenreResponse {
                genre: g.genre,
                book_count: g.book_count,
                views: g.views,
            }),
        }
    }
}

/// The overview of one window.
#[derive(Debug, Clone, Object)]
pub struct OverviewWindowResponse {
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub totals: FiguresResponse,
    pub unique_users: u64,
}

impl OverviewWindowResponse {
    pub fn new(w: OverviewWindow, currency: Currency) -> Self {
        OverviewWindowResponse {
            window_start: ts(w.window_start),
            window_end: ts(w.window_end),
            totals: FiguresResponse::new(w.totals, currency),
            unique_users: w.unique_users,
        }
    }
}

/// The overview per window, oldest first.
#[derive(Debug, Clone, Object)]
pub struct OverviewHistoryResponse {
    #[oai(nullable)]
    pub from: Option<Timestamp>,
    #[oai(nullable)]
    pub to: Option<Timestamp>,
    pub windows: Vec<OverviewWindowResponse>,
}

/// How popular books are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SortBy {
    Views,
    Downloads,
    Purchases,
    Revenue,
}

impl From<SortBy> for PopularSort {
    fn from(s: SortBy) -> Self {
        match s {
            SortBy::Views => PopularSort::Views,
            SortBy::Downloads => PopularSort::Downloads,
            SortBy::Purchases => PopularSort::Purchases,
            SortBy::Revenue => PopularSort::Revenue,
        }
    }
}

/// One entry of a popular list.
#[derive(Debug, Clone, Object)]
pub struct PopularBookResponse {
    /// 1 for the top book.
    pub rank: u32,
    pub book_id: i64,
    pub title: String,
    pub views: u64,
    pub downloads: u64,
    pub purchases: u64,
    pub revenue: MoneyBody,
}

impl PopularBookResponse {
    pub fn new(p: PopularBook, store: Currency) -> Self {
        PopularBookResponse {
            rank: p.rank,
            book_id: p.book_id.get(),
            title: p.title,
            views: p.views,
            downloads: p.downloads,
            purchases: p.purchases,
            revenue: p
                .revenue
                .map_or_else(|| MoneyBody::cents(0, store), Into::into),
        }
    }
}

/// The top books by one figure; ties go to the lower book id.
#[derive(Debug, Clone, Object)]
pub struct PopularResponse {
    pub sort_by: SortBy,
    pub limit: u32,
    #[oai(nullable)]
    pub from: Option<Timestamp>,
    #[oai(nullable)]
    pub to: Option<Timestamp>,
    pub items: Vec<PopularBookResponse>,
}
