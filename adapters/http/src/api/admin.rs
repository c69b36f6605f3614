//! The admin's operational views: the genre breakdown (`/admin/analytics/genres`) and the
//! pipeline's health (`/admin/pipeline`). Both need an ADMIN token.
//!
//! The pipeline view joins what the store knows (the newest stored window) with what the
//! composition root measures live ([`PipelineProbe`]: the spool, the ingest, the analytics
//! worker when it shares the process, when events were accepted) and judges it with
//! [`folio_domain::pipeline::assess`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::pipeline::{assess, PipelineInputs};
use folio_domain::services::Bookstore;
use folio_domain::stats::{GenreStats, StoredWindow, TimeRange};
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::models::{MoneyBody, Timestamp};
use super::{ApiTags, BearerAuth};
use crate::problem::Answer;

/// Live figures of the running process, for the pipeline view.
#[async_trait]
pub trait PipelineProbe: Send + Sync {
    /// The spool, ingest, worker and outbox figures, read now.
    async fn figures(&self) -> PipelineFigures;
    /// The oldest accepted event that a stored window ending at `covered_until` does not
    /// cover (see [`folio_domain::pipeline::EventMarks::pending_since`]).
    fn pending_since(&self, covered_until: Option<DateTime<Utc>>) -> Option<DateTime<Utc>>;
    /// The latest event accepted, if known.
    fn last_event(&self) -> Option<DateTime<Utc>>;
}

/// The probe attached to the HTTP state.
pub type SharedProbe = Arc<dyn PipelineProbe>;

/// What the composition root measures. Unknown parts stay `None`.
#[derive(Debug, Clone, Default)]
pub struct PipelineFigures {
    /// The analytics window and grace, when this process knows them (it runs the worker).
    pub window: Option<Duration>,
    pub grace: Option<Duration>,
    pub spool: Option<SpoolStatus>,
    pub ingest: Option<IngestStatus>,
    pub analytics: Option<AnalyticsStatus>,
    /// Purchase, review and rating events waiting in the outbox.
    pub outbox_backlog: Option<u64>,
    /// Events on the event topics `analytics-service-group` has not read, as of each
    /// partition's last commit; `None` when the bus did not say.
    pub analytics_lag: Option<u64>,
}

/// The event spool of this bookstore process.
#[derive(Debug, Clone, Default, Object)]
pub struct SpoolStatus {
    /// Events accepted and not yet acknowledged by the bus.
    pub pending: u64,
    /// Bytes of the spool on disk.
    pub bytes: u64,
    /// True while the spool replays from disk because the bus failed or stalled.
    pub replaying: bool,
    pub accepted: u64,
    pub delivered: u64,
    pub replayed: u64,
    /// Events refused because the spool was full or its disk failed.
    pub refused: u64,
}

/// The statistics ingest of this bookstore process.
#[derive(Debug, Clone, Default, Object)]
pub struct IngestStatus {
    /// Aggregates stored or replaced.
    pub stored: u64,
    /// Aggregates ignored because a stored one covers as many offsets (replays).
    pub ignored: u64,
    /// Undecodable aggregates sent to analytics.dlq.
    pub dead_letters: u64,
}

/// The analytics worker, when it runs in this process.
#[derive(Debug, Clone, Default, Object)]
pub struct AnalyticsStatus {
    pub events_counted: u64,
    pub duplicates: u64,
    /// Late events folded into their window's correction.
    pub late: u64,
    pub aggregates_published: u64,
    pub windows_open: u64,
    /// Records sent to analytics.dlq, whatever the reason.
    pub dead_letters: u64,
    /// Of those, events older than the lateness horizon.
    pub too_late: u64,
}

/// Records sent to analytics.dlq for one reason.
#[derive(Debug, Clone, Object)]
pub struct DeadLetterCount {
    /// `analytics` or `ingest`.
    pub source: String,
    /// `too_late`, `invalid_event` (undecodable or refused by the aggregation) or
    /// `undecodable_aggregate`.
    pub reason: String,
    pub count: u64,
}

/// A stored window's bounds.
#[derive(Debug, Clone, Object)]
pub struct WindowBounds {
    pub window_start: Timestamp,
    pub window_end: Timestamp,
}

/// Whether the pipeline keeps up, and the figures that say so.
#[derive(Debug, Clone, Object)]
pub struct PipelineResponse {
    /// `ok`, `replaying` (the spool catches up after the bus was away) or `stalled`
    /// (accepted events older than three windows plus grace are in no stored window).
    pub state: String,
    /// One plain sentence for people.
    pub message: String,
    pub now: Timestamp,
    /// The newest window with a stored per-window row.
    #[oai(nullable)]
    pub newest_window: Option<WindowBounds>,
    /// Seconds since the newest stored window ended.
    #[oai(nullable)]
    pub newest_window_age_seconds: Option<f64>,
    /// The oldest accepted view or download no stored window covers yet.
    #[oai(nullable)]
    pub pending_since: Option<Timestamp>,
    /// The latest view or download this process accepted.
    #[oai(nullable)]
    pub last_event_at: Option<Timestamp>,
    pub window_seconds: f64,
    pub grace_seconds: f64,
    /// Where the window length comes from: `config` (this process runs the analytics
    /// worker), `stored` (the newest stored window) or `default` (60 s).
    pub window_source: String,
    /// How old a pending event may get before the pipeline counts as stalled.
    pub stall_after_seconds: f64,
    #[oai(nullable)]
    pub spool: Option<SpoolStatus>,
    #[oai(nullable)]
    pub ingest: Option<IngestStatus>,
    /// Null when the analytics service runs in another process (see its `/metrics`).
    #[oai(nullable)]
    pub analytics: Option<AnalyticsStatus>,
    #[oai(nullable)]
    pub outbox_backlog: Option<u64>,
    /// Events on the five event topics that `analytics-service-group` had not read as of
    /// each partition's last commit: per partition, the high watermark minus the read
    /// position the group's checkpoint records (from the log start where the group never
    /// committed), summed. It is not Kafka's committed lag: folio commits behind what it
    /// has read, by up to the duplicate horizon, so `kafka-consumer-groups.sh` shows more.
    /// The same on the in-process bus and on Kafka; on Kafka it is asked of the brokers at
    /// most every 5 s, and null when they did not answer in time.
    #[oai(nullable)]
    pub analytics_lag: Option<u64>,
    pub dead_letters: Vec<DeadLetterCount>,
}

/// One genre's figures.
#[derive(Debug, Clone, Object)]
pub struct GenreResponse {
    pub genre: String,
    /// Live books of the genre in the catalog.
    pub book_count: u64,
    /// Books of the genre with activity in the range (deleted ones included).
    pub books_with_activity: u64,
    pub views: u64,
    pub downloads: u64,
    pub purchases: u64,
    pub revenue: MoneyBody,
    pub reviews: i64,
    pub ratings: i64,
    /// Mean of current ratings; null without ratings.
    #[oai(nullable)]
    pub average_rating: Option<f64>,
}

/// Every genre with activity in the range, most viewed first.
#[derive(Debug, Clone, Object)]
pub struct GenresResponse {
    #[oai(nullable)]
    pub from: Option<Timestamp>,
    #[oai(nullable)]
    pub to: Option<Timestamp>,
    pub genres: Vec<GenreResponse>,
}

fn genre_response(g: GenreStats, currency: &str) -> GenreResponse {
    GenreResponse {
        average_rating: g.average_rating(),
        revenue: MoneyBody {
            amount_cents: g.revenue_cents,
            currency: currency.to_string(),
        },
        genre: g.genre,
        book_count: g.book_count,
        books_with_activity: g.books_with_activity,
        views: g.views,
        downloads: g.downloads,
        purchases: g.purchases,
        reviews: g.reviews,
        ratings: g.ratings,
    }
}

/// The window length to judge by: this process's configuration, else the newest stored
/// window's length, else the default 60 s; grace likewise defaults to 5 s.
fn window_of(f: &PipelineFigures, newest: Option<StoredWindow>) -> (Duration, &'static str) {
    if let Some(w) = f.window {
        return (w, "config");
    }
    match newest.and_then(|w| (w.window_end - w.window_start).to_std().ok()) {
        Some(w) if !w.is_zero() => (w, "stored"),
        _ => (Duration::from_secs(60), "default"),
    }
}

/// The dead-letter counts by reason, from whichever parts this process sees.
fn dead_letters(f: &PipelineFigures) -> Vec<DeadLetterCount> {
    let mut out = Vec::new();
    let mut push = |source: &str, reason: &str, count: u64| {
        out.push(DeadLetterCount {
            source: source.into(),
            reason: reason.into(),
            count,
        });
    };
    if let Some(a) = &f.analytics {
        push("analytics", "too_late", a.too_late);
        push(
            "analytics",
            "invalid_event",
            a.dead_letters.saturating_sub(a.too_late),
        );
    }
    if let Some(i) = &f.ingest {
        push("ingest", "undecodable_aggregate", i.dead_letters);
    }
    out
}

crate::statuses! {
    /// `genres`
    Genres = [400, 401, 403, 422];
    /// `pipeline`
    Pipeline = [401, 403];
}

/// Admin views of genres and of the pipeline.
pub struct AdminApi;

#[OpenApi(tag = "ApiTags::Analytics")]
impl AdminApi {
    /// Statistics per genre
    ///
    /// Views, downloads, purchases, revenue, reviews and ratings of each genre with
    /// activity over the windows starting in [from, to), most viewed first. Unique counts
    /// are not split by genre.
    #[oai(
        path = "/admin/analytics/genres",
        method = "get",
        operation_id = "genres"
    )]
    async fn genres(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        /// Windows starting at or after this time (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Windows starting before this time (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Answer<Json<GenresResponse>, Genres> {
        let range = TimeRange::new(from.0, to.0)?;
        let currency = store.config().currency;
        let genres = store.genres(auth.0, range).await?;
        Ok(Json(GenresResponse {
            from: range.from.map(Timestamp),
            to: range.to.map(Timestamp),
            genres: genres
                .into_iter()
                .map(|g| genre_response(g, currency.as_str()))
                .collect(),
        }))
    }

    /// The pipeline's health
    ///
    /// The newest stored window and its age, the event spool, the statistics ingest, the
    /// analytics worker when it shares this process, dead letters by reason, and a verdict:
    /// `stalled` when views or downloads accepted more than three windows plus grace ago
    /// are in no stored window.
    #[oai(path = "/admin/pipeline", method = "get", operation_id = "pipeline")]
    async fn pipeline(
        &self,
        store: Data<&Bookstore>,
        probe: Data<&Option<SharedProbe>>,
        auth: BearerAuth,
    ) -> Answer<Json<PipelineResponse>, Pipeline> {
        let newest = store.newest_window(auth.0).await?;
        let now = store.now();
        let probe = probe.0.as_ref();
        let figures = match probe {
            Some(p) => p.figures().await,
            None => PipelineFigures::default(),
        };
        let pending = probe.and_then(|p| p.pending_since(newest.map(|w| w.window_end)));
        let (window, window_source) = window_of(&figures, newest);
        let grace = figures.grace.unwrap_or(Duration::from_secs(5));
        let spool = figures.spool.clone().unwrap_or_default();
        let verdict = assess(PipelineInputs {
            now,
            newest,
            pending_since: pending,
            window,
            grace,
            replaying: spool.replaying,
            spooled: spool.pending,
        });
        Ok(Json(PipelineResponse {
            state: verdict.state.name().into(),
            message: verdict.message,
            now: Timestamp(now),
            newest_window: newest.map(|w| WindowBounds {
                window_start: Timestamp(w.window_start),
                window_end: Timestamp(w.window_end),
            }),
            newest_window_age_seconds: verdict.newest_window_age.map(|d| d.as_secs_f64()),
            pending_since: verdict.pending_since.map(Timestamp),
            last_event_at: probe.and_then(|p| p.last_event()).map(Timestamp),
            window_seconds: window.as_secs_f64(),
            grace_seconds: grace.as_secs_f64(),
            window_source: window_source.into(),
            stall_after_seconds: verdict.threshold.as_secs_f64(),
            dead_letters: dead_letters(&figures),
            spool: figures.spool,
            ingest: figures.ingest,
            analytics: figures.analytics,
            outbox_backlog: figures.outbox_backlog,
            analytics_lag: figures.analytics_lag,
        }))
    }
}
