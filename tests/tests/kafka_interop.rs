//! folio and Kafka's own Java tools agree: records keyed by `kafka-console-producer` (the
//! Java client's default partitioner) sit where folio's partitioner says, and events
//! written by it in folio's documented JSON are counted exactly like folio's own.
//!
//! The tools run from `scripts/kafka-local`'s jars (Java and Maven needed), or inside the
//! broker's container under testcontainers. Without a broker or a database these tests
//! fail, saying how to provide them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chrono::{FixedOffset, SecondsFormat, Utc};
use folio_domain::ids::EventId;
use folio_domain::ports::MessageBus;
use folio_domain::topics::Topic;
use folio_kafka::KafkaBus;
use folio_tests::app::{spawn_app_with, AppOptions, TestApp};
use folio_tests::bus_contract::{partition_of, Member, WITHIN};
use folio_tests::kafka_env::{kafka, postgres};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keyed_by_kafkas_console_producer_sit_where_folio_partitions_them(
) -> anyhow::Result<()> {
    let kafka = kafka().await;
    let cfg = kafka.config("javakeys");
    let bus = KafkaBus::connect(cfg.clone()).await?;
    bus.provision().await?;

    // Decimal ids as folio writes them, and a few other byte strings for good measure.
    let mut keys: Vec<String> = (1..=300).map(|i| i.to_string()).collect();
    keys.extend(
        [
            "user-42",
            "ü",
            "書籍",
            "a b",
            "0",
            "-1",
            "9223372036854775807",
        ]
        .map(String::from),
    );
    let topics = [Topic::BookViews, Topic::BookPurchases];
    let lines = |topic: Topic| -> Vec<(String, String)> {
        keys.iter()
            .map(|k| (k.clone(), format!("{}:{k}", topic.name())))
            .collect()
    };
    let start = Instant::now();
    let (names, inputs) = (topics.map(|t| cfg.topic_name(t)), topics.map(lines));
    let (views, purchases) = tokio::join!(
        kafka.console_produce(&names[0], &inputs[0]),
        kafka.console_produce(&names[1], &inputs[1]),
    );
    views?;
    purchases?;
    println!(
        "the console producer wrote {} records in {:?}",
        2 * keys.len(),
        start.elapsed()
    );

    let mut reader = Member::join(&bus, "reader", "interop", &topics).await?;
    reader
        .poll_until(WITHIN, "every record arrives", |m| {
            m.count() >= 2 * keys.len()
        })
        .await?;
    let mut seen: BTreeMap<(Topic, String), i32> = BTreeMap::new();
    for (tp, records) in &reader.records {
        for r in records {
            let key = String::from_utf8(r.key.clone().context("a keyed record")?)?;
            ensure!(
                r.value == format!("{}:{key}", tp.topic.name()).into_bytes(),
                "{tp}: the value of {key:?}"
            );
            ensure!(
                partition_of(tp.topic, key.as_bytes()) == *tp,
                "Java put key {key:?} on {tp}, folio's partitioner says partition {}",
                partition_of(tp.topic, key.as_bytes()).partition
            );
            ensure!(
                seen.insert((tp.topic, key.clone()), tp.partition).is_none(),
                "{key:?} read twice on {}",
                tp.topic
            );
        }
    }
    ensure!(
        seen.len() == 2 * keys.len(),
        "every key of both topics arrived once"
    );
    for topic in topics {
        let used: std::collections::BTreeSet<i32> = seen
            .iter()
            .filter(|((t, _), _)| *t == topic)
            .map(|(_, p)| *p)
            .collect();
        ensure!(
            used.len() == topic.partitions() as usize,
            "the keys spread over every partition of {topic}: {used:?}"
        );
    }
    reader.leave().await
}

/// A user id by token.
async fn user_id(app: &TestApp, token: &str) -> anyhow::Result<i64> {
    let me = app.call("GET", "/auth/me", Some(token), None).await?;
    me.body["id"].as_i64().context("no id in /auth/me")
}

/// A book's admin statistics without the fields that name the book or a time.
fn comparable(stats: &Value) -> Value {
    let mut v = stats.clone();
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.ends_with("_at") && k != "book_id" && k != "title");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_by_the_console_producer_count_exactly_like_folios_own() -> anyhow::Result<()>
{
    let kafka = kafka().await;
    let pg = postgres().await;
    let cfg = kafka.config("javaevents");
    let bus: Arc<dyn MessageBus> = Arc::new(KafkaBus::connect(cfg.clone()).await?);
    let app = spawn_app_with(AppOptions {
        bus: Some(bus),
        database_url: Some(pg.fresh_schema().await?),
        ..AppOptions::default()
    })
    .await?;
    let ours = app.create_book("Dune", "Science Fiction", 1999).await?;
    let theirs = app
        .create_book("Dune, written by Java", "Science Fiction", 1999)
        .await?;
    app.upload(ours, b"dune".to_vec()).await?;
    let ann_token = app.register("ann@example.org", "Ann").await?;
    let bob_token = app.register("bob@example.org", "Bob").await?;
    let (ann, bob) = (
        user_id(&app, &ann_token).await?,
        user_id(&app, &bob_token).await?,
    );

    // folio's own: the same actions over HTTP on `ours`.
    let path = |p: &str| format!("/books/{ours}{p}");
    for (method, p, token, body, status) in [
        ("GET", path(""), Some(&ann_token), None, 200),
        ("GET", path(""), None, None, 200),
        ("GET", path(""), Some(&bob_token), None, 200),
        ("POST", path("/purchase"), Some(&ann_token), None, 201),
        (
            "POST",
            path("/reviews"),
            Some(&ann_token),
            Some(json!({"text": "A classic."})),
            201,
        ),
        (
            "PUT",
            path("/reviews/my"),
            Some(&ann_token),
            Some(json!({"text": "A true classic."})),
            200,
        ),
        (
            "POST",
            path("/ratings"),
            Some(&ann_token),
            Some(json!({"rating": 3})),
            201,
        ),
        (
            "PUT",
            path("/ratings/my"),
            Some(&ann_token),
            Some(json!({"rating": 5})),
            200,
        ),
        (
            "POST",
            path("/ratings"),
            Some(&bob_token),
            Some(json!({"rating": 4})),
            201,
        ),
    ] {
        let r = app
            .call(method, &p, token.map(String::as_str), body)
            .await?;
        ensure!(r.status == status, "{method} {p}: {r:?}");
    }
    ensure!(app.download(ours, &ann_token).await?.0 == 200);
    let done = |b: &Value| {
        b["views"] == 3
            && b["downloads"] == 1
            && b["purchases"] == 1
            && b["review_updates"] == 1
            && b["rating_events"] == 3
    };
    let mine = app
        .wait_for(
            &format!("/admin/analytics/books/{ours}"),
            Duration::from_secs(30),
            done,
        )
        .await?;

    // The same actions on `theirs`, written by Kafka's console producer in the documented
    // JSON (any RFC 3339 offset is accepted; this one is +02:00).
    let at = Utc::now()
        .with_timezone(&FixedOffset::east_opt(2 * 3600).context("an offset")?)
        .to_rfc3339_opts(SecondsFormat::Millis, false);
    let id = || EventId::new_at(Utc::now()).to_string();
    let book = theirs;
    let by_topic: Vec<(Topic, Vec<(String, Value)>)> = vec![
        (
            Topic::BookViews,
            vec![
                (
                    book.to_string(),
                    json!({"type": "book_viewed", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": ann}),
                ),
                (
                    book.to_string(),
                    json!({"type": "book_viewed", "event_id": id(), "occurred_at": at, "book_id": book}),
                ),
                (
                    book.to_string(),
                    json!({"type": "book_viewed", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": bob}),
                ),
            ],
        ),
        (
            Topic::BookPurchases,
            vec![(
                ann.to_string(),
                json!({"type": "book_purchased", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": ann, "purchase_id": 900_001, "price": {"amount_cents": 1999, "currency": "USD"}}),
            )],
        ),
        (
            Topic::BookDownloads,
            vec![(
                ann.to_string(),
                json!({"type": "book_downloaded", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": ann}),
            )],
        ),
        (
            Topic::BookReviews,
            vec![
                (
                    book.to_string(),
                    json!({"type": "book_reviewed", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": ann, "review_id": 900_002, "length": 10}),
                ),
                (
                    book.to_string(),
                    json!({"type": "book_reviewed", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": ann, "review_id": 900_002, "length": 15, "old_length": 10}),
                ),
            ],
        ),
        (
            Topic::BookRatings,
            vec![
                (
                    book.to_string(),
                    json!({"type": "book_rated", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": ann, "rating": 3}),
                ),
                (
                    book.to_string(),
                    json!({"type": "book_rated", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": ann, "rating": 5, "old_rating": 3}),
                ),
                (
                    book.to_string(),
                    json!({"type": "book_rated", "event_id": id(), "occurred_at": at, "book_id": book, "user_id": bob, "rating": 4}),
                ),
            ],
        ),
    ];
    let start = Instant::now();
    let runs = by_topic.iter().map(|(topic, events)| {
        let lines: Vec<(String, String)> = events
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let name = cfg.topic_name(*topic);
        let kafka = &kafka;
        async move { kafka.console_produce(&name, &lines).await }
    });
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    println!(
        "the console producer wrote 10 events in {:?}",
        start.elapsed()
    );

    let java = app
        .wait_for(
            &format!("/admin/analytics/books/{theirs}"),
            Duration::from_secs(30),
            done,
        )
        .await?;
    ensure!(
        comparable(&java) == comparable(&mine),
        "the console producer's events count like folio's own:\n{java:#}\nvs\n{mine:#}"
    );
    ensure!(
        java["average_rating"] == json!(4.5) && java["unique_viewers"] == json!(2),
        "{java:#}"
    );
    let overview = app
        .wait_for("/admin/analytics/overview", Duration::from_secs(10), |b| {
            b["totals"]["views"] == 6
        })
        .await?;
    ensure!(
        overview["totals"]["revenue"]["amount_cents"] == json!(3998)
            && overview["totals"]["rating_events"] == json!(6)
            && overview["unique_users"] == json!(2),
        "the overview adds both books up: {overview:#}"
    );
    app.stop().await
}
