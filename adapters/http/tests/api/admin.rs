//! The admin's operational views: genres, the pipeline's health, the API index, the
//! dashboard's assets and the title search it uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_http::api::{AnalyticsStatus, IngestStatus, PipelineFigures, PipelineProbe, SpoolStatus};
use serde_json::{json, Value};

use crate::analytics::seed;
use crate::support::*;

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn usd_cents(cents: i64) -> Value {
    json!({"amount_cents": cents, "currency": "USD"})
}

#[tokio::test]
async fn genres_add_up_their_books_most_viewed_first() {
    let app = spawn_app().await;
    let (reader, _) = app.reader("ann").await;
    app.get("/api/v1/admin/analytics/genres")
        .await
        .problem(401, "bearer");
    app.get_as(&reader, "/api/v1/admin/analytics/genres")
        .await
        .problem(403, "ADMIN");
    seed(&app).await;
    let g = app
        .get_as(&app.admin, "/api/v1/admin/analytics/genres")
        .await
        .expect(200);
    assert_eq!(
        g,
        json!({
            "from": null, "to": null,
            "genres": [
                {"genre": "Science Fiction", "book_count": 1, "books_with_activity": 1,
                 "views": 5, "downloads": 1, "purchases": 2, "revenue": usd_cents(3998),
                 "reviews": 2, "ratings": 2, "average_rating": 4.5},
                {"genre": "Poetry", "book_count": 1, "books_with_activity": 1,
                 "views": 1, "downloads": 0, "purchases": 1, "revenue": usd_cents(5000),
                 "reviews": 0, "ratings": 0, "average_rating": null},
            ]
        })
    );
    // Only the second window: Poetry had nothing there.
    let late = app
        .get_as(
            &app.admin,
            "/api/v1/admin/analytics/genres?from=2025-03-01T10:01:00Z",
        )
        .await
        .expect(200);
    let rows: Vec<(String, u64, u64)> = late["genres"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            (
                g["genre"].as_str().unwrap_or("").to_string(),
                g["views"].as_u64().unwrap_or(0),
                g["purchases"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(rows, vec![("Science Fiction".to_string(), 2, 1)]);
    app.get_as(
        &app.admin,
        "/api/v1/admin/analytics/genres?from=2025-03-01T10:01:00Z&to=2025-03-01T10:00:00Z",
    )
    .await
    .problem(422, "before");
}

/// A probe with fixed figures: a 60 s window, 5 s grace, and views pending since `pending`.
struct FixedProbe {
    pending: Option<DateTime<Utc>>,
    replaying: bool,
}

#[async_trait]
impl PipelineProbe for FixedProbe {
    async fn figures(&self) -> PipelineFigures {
        PipelineFigures {
            window: Some(Duration::from_secs(60)),
            grace: Some(Duration::from_secs(5)),
            spool: Some(SpoolStatus {
                pending: 3,
                bytes: 4096,
                replaying: self.replaying,
                accepted: 10,
                delivered: 7,
                replayed: 0,
                refused: 0,
            }),
            ingest: Some(IngestStatus {
                stored: 11,
                ignored: 1,
                dead_letters: 2,
            }),
            analytics: Some(AnalyticsStatus {
                events_counted: 20,
                duplicates: 1,
                late: 0,
                aggregates_published: 12,
                windows_open: 1,
                dead_letters: 5,
                too_late: 4,
            }),
            outbox_backlog: Some(0),
            analytics_lag: Some(6),
        }
    }

    fn pending_since(&self, covered_until: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        self.pending
            .filter(|p| covered_until.is_none_or(|c| *p >= c))
    }

    fn last_event(&self) -> Option<DateTime<Utc>> {
        self.pending
    }
}

async fn pipeline_app(pending: Option<DateTime<Utc>>, replaying: bool) -> TestApp {
    spawn_with(Options {
        pipeline: Some(Arc::new(FixedProbe { pending, replaying })),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn the_pipeline_view_says_plainly_when_it_stalls() {
    // The seed's newest window is [10:01, 10:02); views wait since 10:02:30.
    let app = pipeline_app(Some(at(150)), false).await;
    let (reader, _) = app.reader("ann").await;
    app.get("/api/v1/admin/pipeline")
        .await
        .problem(401, "bearer");
    app.get_as(&reader, "/api/v1/admin/pipeline")
        .await
        .problem(403, "ADMIN");
    seed(&app).await;

    app.clock.set(at(150 + 185));
    let ok = app
        .get_as(&app.admin, "/api/v1/admin/pipeline")
        .await
        .expect(200);
    assert_eq!(
        ok,
        json!({
            "state": "ok",
            "message": "OK: recent events are on their way into the next windows.",
            "now": "2025-03-01T10:05:35Z",
            "newest_window": {"window_start": "2025-03-01T10:01:00Z",
                              "window_end": "2025-03-01T10:02:00Z"},
            "newest_window_age_seconds": 215.0,
            "pending_since": "2025-03-01T10:02:30Z",
            "last_event_at": "2025-03-01T10:02:30Z",
            "window_seconds": 60.0, "grace_seconds": 5.0, "window_source": "config",
            "stall_after_seconds": 185.0,
            "spool": {"pending": 3, "bytes": 4096, "replaying": false, "accepted": 10,
                      "delivered": 7, "replayed": 0, "refused": 0},
            "ingest": {"stored": 11, "ignored": 1, "dead_letters": 2},
            "analytics": {"events_counted": 20, "duplicates": 1, "late": 0,
                          "aggregates_published": 12, "windows_open": 1,
                          "dead_letters": 5, "too_late": 4},
            "outbox_backlog": 0,
            "analytics_lag": 6,
            "dead_letters": [
                {"source": "analytics", "reason": "too_late", "count": 4},
                {"source": "analytics", "reason": "invalid_event", "count": 1},
                {"source": "ingest", "reason": "undecodable_aggregate", "count": 2},
            ],
        })
    );

    app.clock.set(at(150 + 186));
    let stalled = app
        .get_as(&app.admin, "/api/v1/admin/pipeline")
        .await
        .expect(200);
    assert_eq!(stalled["state"], "stalled");
    assert_eq!(
        stalled["message"],
        "Stalled: events accepted 3 min 6 s ago are not in the statistics yet, and the newest \
         stored window ended 3 min 36 s ago (2025-03-01 10:02:00 UTC). Expected within \
         3 min 5 s (3 windows + grace). Is the analytics service running and the bus \
         reachable?"
    );
}

#[tokio::test]
async fn the_pipeline_view_reports_a_replaying_spool_and_works_without_a_probe() {
    let app = pipeline_app(None, true).await;
    seed(&app).await;
    let r = app
        .get_as(&app.admin, "/api/v1/admin/pipeline")
        .await
        .expect(200);
    assert_eq!(r["state"], "replaying");
    assert_eq!(
        r["message"],
        "Catching up: the event spool is replaying 3 events from disk after the bus was away \
         or slow; figures lag until it is done."
    );

    // Without a probe (another process runs everything else): the store's view only, the
    // window length read from the newest stored window.
    let bare = spawn_app().await;
    let empty = bare
        .get_as(&bare.admin, "/api/v1/admin/pipeline")
        .await
        .expect(200);
    assert_eq!(
        (
            &empty["state"],
            &empty["message"],
            &empty["window_source"],
            &empty["newest_window"]
        ),
        (
            &json!("ok"),
            &json!("OK: no events yet."),
            &json!("default"),
            &Value::Null
        )
    );
    seed(&bare).await;
    let seeded = bare
        .get_as(&bare.admin, "/api/v1/admin/pipeline")
        .await
        .expect(200);
    assert_eq!(
        (
            &seeded["window_source"],
            &seeded["window_seconds"],
            &seeded["spool"],
            &seeded["dead_letters"]
        ),
        (&json!("stored"), &json!(60.0), &Value::Null, &json!([]))
    );
}

#[tokio::test]
async fn the_api_root_lists_its_operations_and_the_site_root_leads_to_the_dashboard() {
    let app = spawn_app().await;
    for path in ["/api/v1", "/api/v1/"] {
        let index = app.get(path).await.expect(200);
        assert_eq!(
            (&index["docs"], &index["openapi"], &index["dashboard"]),
            (&json!("/docs"), &json!("/openapi.json"), &json!("/admin"))
        );
        let ops = index["operations"].as_array().cloned().unwrap_or_default();
        let login = ops.iter().find(|o| o["operation_id"] == "login");
        assert_eq!(
            login,
            Some(&json!({"method": "POST", "path": "/api/v1/auth/login",
                         "operation_id": "login", "summary": "Sign in",
                         "needs_token": false}))
        );
        assert!(
            ops.iter()
                .any(|o| o["path"] == "/api/v1/admin/pipeline" && o["needs_token"] == true),
            "{ops:?}"
        );
    }
    let home = app.get("/").await;
    assert_eq!(
        (home.status.as_u16(), home.header("location")),
        (303, "/admin")
    );
    let slash = app.get("/admin/").await;
    assert_eq!(slash.status.as_u16(), 200);
    assert!(slash
        .text()
        .contains("<title>folio · admin dashboard</title>"));
    for (name, kind) in [
        ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("uPlot.min.css", "text/css; charset=utf-8"),
        ("uPlot.LICENSE", "text/plain; charset=utf-8"),
    ] {
        let r = app.get(&format!("/admin/assets/{name}")).await;
        assert_eq!(
            (r.status.as_u16(), r.header("content-type")),
            (200, kind),
            "{name}"
        );
    }
    let lic = app.get("/admin/assets/uPlot.LICENSE").await.text();
    assert!(lic.starts_with("The MIT License (MIT)"), "{lic}");
    let missing = app.get("/admin/assets/nothing.js").await;
    assert_eq!(missing.status.as_u16(), 404);
}

#[tokio::test]
async fn books_are_found_by_a_part_of_their_title() {
    let app = spawn_app().await;
    let dune = app.book("Dune", "Science Fiction", 1999).await;
    let messiah = app.book("Dune Messiah", "Science Fiction", 1999).await;
    app.book("Odes", "Poetry", 500).await;
    let ids = |v: &Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["id"].as_i64())
            .collect()
    };
    let found = app.get("/api/v1/books?title=dUNE").await.expect(200);
    assert_eq!(
        (found["total"].clone(), ids(&found)),
        (json!(2), vec![dune, messiah])
    );
    let one = app
        .get("/api/v1/books?title=%20mess%20&genre=Science%20Fiction")
        .await
        .expect(200);
    assert_eq!(ids(&one), vec![messiah]);
    let none = app
        .get("/api/v1/books?title=mess&genre=Poetry")
        .await
        .expect(200);
    assert_eq!((none["total"].clone(), ids(&none)), (json!(0), vec![]));
    let blank = app.get("/api/v1/books?title=%20").await.expect(200);
    assert_eq!(blank["total"], 3);
    let long = "x".repeat(301);
    app.get(&format!("/api/v1/books?title={long}"))
        .await
        .problem(422, "title must be at most 300 characters");
}
