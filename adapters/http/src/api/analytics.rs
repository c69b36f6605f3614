//! `/admin/analytics`: statistics for administrators, derived from the aggregates the
//! analytics service publishes. Every endpoint needs an ADMIN token.

use chrono::{DateTime, Utc};
use folio_domain::services::Bookstore;
use folio_domain::stats::TimeRange;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::models::{
    BookHistoryResponse, BookStatsResponse, BookWindowResponse, OverviewHistoryResponse,
    OverviewResponse, OverviewWindowResponse, PopularBookResponse, PopularResponse, SortBy,
    Timestamp,
};
use super::{book_id, ApiTags, BearerAuth};
use crate::problem::Answer;

/// Admin statistics.
pub struct AnalyticsApi;

fn range(
    from: Query<Option<DateTime<Utc>>>,
    to: Query<Option<DateTime<Utc>>>,
) -> folio_domain::Result<TimeRange> {
    TimeRange::new(from.0, to.0)
}

fn default_limit() -> u32 {
    10
}

fn default_sort() -> SortBy {
    SortBy::Views
}

crate::statuses! {
    /// `book_stats`
    BookStats = [400, 401, 403, 404, 422];
    /// `book_history`
    BookHistory = [400, 401, 403, 404, 422];
    /// `overview`
    Overview = [400, 401, 403, 422];
    /// `overview_history`
    OverviewHistory = [400, 401, 403, 422];
    /// `popular`
    Popular = [400, 401, 403, 422];
}

#[OpenApi(prefix_path = "/admin/analytics", tag = "ApiTags::Analytics")]
impl AnalyticsApi {
    /// A book's statistics
    ///
    /// All time by default, or over the windows starting in [from, to). Deleted books keep
    /// their statistics.
    #[oai(path = "/books/:id", method = "get", operation_id = "book_stats")]
    async fn book_stats(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        /// Windows starting at or after this time (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Windows starting before this time (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Answer<Json<BookStatsResponse>, BookStats> {
        let id = book_id(id.0)?;
        let range = range(from, to)?;
        let stats = store.book_stats(auth.0, id, range).await?;
        Ok(Json(BookStatsResponse::new(
            stats,
            range,
            store.config().currency,
        )))
    }

    /// A book's statistics per window
    #[oai(
        path = "/books/:id/history",
        method = "get",
        operation_id = "book_history"
    )]
    async fn book_history(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        /// Windows starting at or after this time (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Windows starting before this time (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Answer<Json<BookHistoryResponse>, BookHistory> {
        let id = book_id(id.0)?;
        let range = range(from, to)?;
        let currency = store.config().currency;
        let windows = store.book_history(auth.0, id, range).await?;
        Ok(Json(BookHistoryResponse {
            book_id: id.get(),
            from: range.from.map(Timestamp),
            to: range.to.map(Timestamp),
            windows: windows
                .into_iter()
                .map(|w| BookWindowResponse::new(w, currency))
                .collect(),
        }))
    }

    /// The system overview
    ///
    /// Totals, unique users, averages, the most viewed book and the top genre.
    #[oai(path = "/overview", method = "get", operation_id = "overview")]
    async fn overview(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        /// Windows starting at or after this time (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Windows starting before this time (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Answer<Json<OverviewResponse>, Overview> {
        let range = range(from, to)?;
        let overview = store.overview(auth.0, range).await?;
        Ok(Json(OverviewResponse::new(
            overview,
            range,
            store.config().currency,
        )))
    }

    /// The overview per window
    #[oai(
        path = "/overview/history",
        method = "get",
        operation_id = "overview_history"
    )]
    async fn overview_history(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        /// Windows starting at or after this time (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Windows starting before this time (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Answer<Json<OverviewHistoryResponse>, OverviewHistory> {
        let range = range(from, to)?;
        let currency = store.config().currency;
        let windows = store.overview_history(auth.0, range).await?;
        Ok(Json(OverviewHistoryResponse {
            from: range.from.map(Timestamp),
            to: range.to.map(Timestamp),
            windows: windows
                .into_iter()
                .map(|w| OverviewWindowResponse::new(w, currency))
                .collect(),
        }))
    }

    /// Popular books
    ///
    /// The top `limit` books (1 to 100) by views, downloads, purchases or revenue.
    #[oai(path = "/popular", method = "get", operation_id = "popular")]
    async fn popular(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        /// How many books, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// The figure to rank by.
        #[oai(default = "default_sort")]
        sort_by: Query<SortBy>,
        /// Windows starting at or after this time (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Windows starting before this time (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Answer<Json<PopularResponse>, Popular> {
        let range = range(from, to)?;
        let currency = store.config().currency;
        let items = store
            .popular(auth.0, sort_by.0.into(), Some(limit.0), range)
            .await?;
        Ok(Json(PopularResponse {
            sort_by: sort_by.0,
            limit: limit.0,
            from: range.from.map(Timestamp),
            to: range.to.map(Timestamp),
            items: items
                .into_iter()
                .map(|p| PopularBookResponse::new(p, currency))
                .collect(),
        }))
    }
}
