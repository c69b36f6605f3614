use chrono::{DateTime, Duration, Utc};
use folio_domain::analytics::{Aggregate, Figures, SourceRange};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, PurchaseId, ReviewId, UserId};
use folio_domain::money::Money;
use folio_domain::ports::StatsSink;
use folio_domain::topics::Topic;
use serde_json::{json, Value};

use crate::support::*;

const ENDPOINTS: [&str; 5] = [
    "/api/v1/admin/analytics/books/1",
    "/api/v1/admin/analytics/books/1/history",
    "/api/v1/admin/analytics/overview",
    "/api/v1/admin/analytics/overview/history",
    "/api/v1/admin/analytics/popular",
];

fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

fn meta(secs: i64) -> (EventId, DateTime<Utc>) {
    (EventId::new_at(at(secs)), at(secs))
}

fn view(book: i64, user: Option<i64>, secs: i64) -> Event {
    let (event_id, occurred_at) = meta(secs);
    Event::BookViewed {
        event_id,
        occurred_at,
        book_id: BookId(book),
        user_id: user.map(UserId),
    }
}

fn download(book: i64, user: i64, secs: i64) -> Event {
    let (event_id, occurred_at) = meta(secs);
    Event::BookDownloaded {
        event_id,
        occurred_at,
        book_id: BookId(book),
        user_id: UserId(user),
    }
}

fn purchase(book: i64, user: i64, cents: i64, secs: i64) -> Event {
    let (event_id, occurred_at) = meta(secs);
    Event::BookPurchased {
        event_id,
        occurred_at,
        book_id: BookId(book),
        user_id: UserId(user),
        purchase_id: PurchaseId(book * 100 + user),
        price: Money::new(cents, usd()),
    }
}

fn rated(book: i64, user: i64, rating: u8, old_rating: Option<u8>, secs: i64) -> Event {
    let (event_id, occurred_at) = meta(secs);
    Event::BookRated {
        event_id,
        occurred_at,
        book_id: BookId(book),
        user_id: UserId(user),
        rating,
        old_rating,
    }
}

fn reviewed(book: i64, user: i64, length: u32, secs: i64) -> Event {
    let (event_id, occurred_at) = meta(secs);
    Event::BookReviewed {
        event_id,
        occurred_at,
        book_id: BookId(book),
        user_id: UserId(user),
        review_id: ReviewId(book * 100 + user),
        length,
        old_length: None,
    }
}

/// The aggregate the analytics service would publish for these events of one
/// (window, book, topic, partition 0).
fn agg(book: i64, topic: Topic, window: i64, events: &[Event]) -> Aggregate {
    let mut figures = Figures::default();
    for e in events {
        figures.add(e).expect("one currency");
    }
    let window_start = at(window * 60);
    Aggregate {
        window_start,
        window_end: window_start + Duration::seconds(60),
        book_id: BookId(book),
        source: SourceRange {
            topic,
            partition: 0,
            first_offset: 0,
            next_offset: events.len() as i64,
        },
        figures,
    }
}

/// Two books, two one-minute windows. Users 11, 12, 13.
/// - Dune (`a`, 19.99): window 0: views by 11, 12 and one anonymous; 11 buys; 11 rates 5,
///   12 rates 3; 11 reviews (10 chars). Window 1: views by 11, 13; 11 downloads; 12 buys;
///   12 re-rates 3 → 4; 12 reviews (20 chars).
/// - Odes (`b`, 50.00): window 0: 13 views and buys.
pub async fn seed(app: &TestApp) -> (i64, i64) {
    let a = app.book("Dune", "Science Fiction", 1999).await;
    let b = app.book("Odes", "Poetry", 5000).await;
    let aggs = [
        agg(
            a,
            Topic::BookViews,
            0,
            &[
                view(a, Some(11), 5),
                view(a, Some(12), 10),
                view(a, None, 20),
            ],
        ),
        agg(a, Topic::BookPurchases, 0, &[purchase(a, 11, 1999, 30)]),
        agg(
            a,
            Topic::BookRatings,
            0,
            &[rated(a, 11, 5, None, 31), rated(a, 12, 3, None, 32)],
        ),
        agg(a, Topic::BookReviews, 0, &[reviewed(a, 11, 10, 33)]),
        agg(
            a,
            Topic::BookViews,
            1,
            &[view(a, Some(11), 65), view(a, Some(13), 70)],
        ),
        agg(a, Topic::BookDownloads, 1, &[download(a, 11, 75)]),
        agg(a, Topic::BookPurchases, 1, &[purchase(a, 12, 1999, 80)]),
        agg(a, Topic::BookRatings, 1, &[rated(a, 12, 4, Some(3), 85)]),
        agg(a, Topic::BookReviews, 1, &[reviewed(a, 12, 20, 90)]),
        agg(b, Topic::BookViews, 0, &[view(b, Some(13), 40)]),
        agg(b, Topic::BookPurchases, 0, &[purchase(b, 13, 5000, 45)]),
    ];
    app.store.upsert(&aggs).await.expect("upsert");
    (a, b)
}

fn usd_cents(cents: i64) -> Value {
    json!({"amount_cents": cents, "currency": "USD"})
}

#[tokio::test]
async fn analytics_needs_an_admin_token() {
    let app = spawn_app().await;
    let (reader, _) = app.reader("ann").await;
    for path in ENDPOINTS {
        app.get(path).await.problem(401, "bearer");
        app.get_as(&reader, path).await.problem(403, "ADMIN");
        app.get_as("garbage", path).await.problem(401, "malformed");
    }
}

#[tokio::test]
async fn book_statistics_come_from_the_stored_aggregates() {
    let app = spawn_app().await;
    let (a, _) = seed(&app).await;
    let s = app
        .get_as(&app.admin, &format!("/api/v1/admin/analytics/books/{a}"))
        .await
        .expect(200);
    assert_eq!(
        s,
        json!({
            "book_id": a, "from": null, "to": null,
            "views": 5, "anonymous_views": 1, "downloads": 1, "purchases": 2,
            "revenue": usd_cents(3998),
            "reviews": 2, "review_updates": 0, "average_review_length": 15.0,
            "ratings": 2, "rating_events": 3, "average_rating": 4.5,
            "rating_distribution": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1},
            "unique_viewers": 3, "unique_downloaders": 1, "unique_purchasers": 2,
            "first_view_at": "2025-03-01T10:00:05Z",
            "last_view_at": "2025-03-01T10:01:10Z",
            "last_purchase_at": "2025-03-01T10:01:20Z",
        })
    );

    // Only the second window: no rating was created there, so the average is null.
    let s = app
        .get_as(
            &app.admin,
            &format!("/api/v1/admin/analytics/books/{a}?from=2025-03-01T10:01:00Z"),
        )
        .await
        .expect(200);
    assert_eq!(s["from"], "2025-03-01T10:01:00Z");
    assert_eq!(s["views"], 2);
    assert_eq!(s["purchases"], 1);
    assert_eq!(s["revenue"], usd_cents(1999));
    assert_eq!(s["average_rating"], Value::Null);
    assert_eq!(s["first_view_at"], "2025-03-01T10:01:05Z");

    let h = app
        .get_as(
            &app.admin,
            &format!("/api/v1/admin/analytics/books/{a}/history?from=2025-03-01T09:00:00Z&to=2025-03-01T11:00:00Z"),
        )
        .await
        .expect(200);
    let windows = h["windows"].as_array().expect("windows");
    let summary: Vec<(&str, &str, u64, i64)> = windows
        .iter()
        .map(|w| {
            (
                w["window_start"].as_str().expect("start"),
                w["window_end"].as_str().expect("end"),
                w["views"].as_u64().expect("views"),
                w["revenue"]["amount_cents"].as_i64().expect("revenue"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("2025-03-01T10:00:00Z", "2025-03-01T10:01:00Z", 3, 1999),
            ("2025-03-01T10:01:00Z", "2025-03-01T10:02:00Z", 2, 1999),
        ]
    );

    // Deleted books keep their statistics; ids that never existed are 404.
    app.delete_as(&app.admin, &format!("/api/v1/books/{a}"))
        .await
        .expect(204);
    app.get_as(&app.admin, &format!("/api/v1/admin/analytics/books/{a}"))
        .await
        .expect(200);
    app.get_as(&app.admin, "/api/v1/admin/analytics/books/999")
        .await
        .problem(404, "book 999");
    app.get_as(&app.admin, "/api/v1/admin/analytics/books/999/history")
        .await
        .problem(404, "book 999");
}

#[tokio::test]
async fn overview_and_its_history() {
    let app = spawn_app().await;
    let (a, _) = seed(&app).await;
    let o = app
        .get_as(&app.admin, "/api/v1/admin/analytics/overview")
        .await
        .expect(200);
    assert_eq!(o["totals"]["views"], 6);
    assert_eq!(o["totals"]["purchases"], 3);
    assert_eq!(o["totals"]["revenue"], usd_cents(8998));
    assert_eq!(o["totals"]["average_rating"], 4.5);
    assert_eq!(o["totals"]["average_review_length"], 15.0);
    assert_eq!(o["unique_users"], 3);
    assert_eq!(o["books_with_activity"], 2);
    assert_eq!(
        o["most_popular_book"],
        json!({"book_id": a, "title": "Dune", "views": 5})
    );
    assert_eq!(
        o["top_genre"],
        json!({"genre": "Science Fiction", "book_count": 1, "views": 5})
    );

    let h = app
        .get_as(&app.admin, "/api/v1/admin/analytics/overview/history")
        .await
        .expect(200);
    let per_window: Vec<(u64, i64, u64)> = h["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| {
            (
                w["totals"]["views"].as_u64().expect("views"),
                w["totals"]["revenue"]["amount_cents"]
                    .as_i64()
                    .expect("revenue"),
                w["unique_users"].as_u64().expect("users"),
            )
        })
        .collect();
    assert_eq!(per_window, [(4, 6999, 3), (2, 1999, 3)]);

    let empty = app
        .get_as(
            &app.admin,
            "/api/v1/admin/analytics/overview?from=2030-01-01T00:00:00Z",
        )
        .await
        .expect(200);
    assert_eq!(empty["totals"]["views"], 0);
    assert_eq!(empty["totals"]["average_rating"], Value::Null);
    assert_eq!(empty["most_popular_book"], Value::Null);
    assert_eq!(empty["totals"]["revenue"], usd_cents(0));
}

#[tokio::test]
async fn popular_books_by_each_figure() {
    let app = spawn_app().await;
    let (a, b) = seed(&app).await;
    let ranking = |v: &Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["book_id"].as_i64().expect("id"))
            .collect()
    };
    let p = app
        .get_as(&app.admin, "/api/v1/admin/analytics/popular")
        .await
        .expect(200);
    assert_eq!(p["sort_by"], "views");
    assert_eq!(p["limit"], 10);
    assert_eq!(ranking(&p), [a, b]);
    assert_eq!(
        p["items"][0],
        json!({"rank": 1, "book_id": a, "title": "Dune", "views": 5, "downloads": 1, "purchases": 2,
               "revenue": usd_cents(3998)})
    );
    let p = app
        .get_as(
            &app.admin,
            "/api/v1/admin/analytics/popular?sort_by=revenue",
        )
        .await
        .expect(200);
    assert_eq!(ranking(&p), [b, a]);
    assert_eq!(p["items"][0]["rank"], 1);
    let p = app
        .get_as(
            &app.admin,
            "/api/v1/admin/analytics/popular?sort_by=downloads&limit=1",
        )
        .await
        .expect(200);
    assert_eq!(ranking(&p), [a]);
    let p = app
        .get_as(
            &app.admin,
            "/api/v1/admin/analytics/popular?sort_by=purchases&to=2025-03-01T10:01:00Z",
        )
        .await
        .expect(200);
    assert_eq!(ranking(&p), [a, b]);
    assert_eq!(p["items"][0]["purchases"], 1);
}

#[tokio::test]
async fn bad_statistics_queries_are_problems() {
    let app = spawn_app().await;
    let admin = &app.admin;
    app.get_as(admin, "/api/v1/admin/analytics/popular?sort_by=likes")
        .await
        .problem(400, "sort_by");
    app.get_as(admin, "/api/v1/admin/analytics/popular?limit=0")
        .await
        .problem(400, "parameter `limit`: verification failed. minimum(1");
    app.get_as(admin, "/api/v1/admin/analytics/popular?limit=101")
        .await
        .problem(400, "parameter `limit`: verification failed. maximum(100");
    app.get_as(admin, "/api/v1/admin/analytics/overview?from=yesterday")
        .await
        .problem(400, "from");
    app.get_as(
        admin,
        "/api/v1/admin/analytics/overview/history?from=2025-03-01T11:00:00Z&to=2025-03-01T10:00:00Z",
    )
    .await
    .problem(422, "before");
}
