//! Two bookstore instances on one PostgreSQL (docs/contract.md §4, issue "PostgreSQL for
//! production"): uniqueness holds under races, no update is lost, a retried webhook
//! completes a purchase once, and both outbox relays together publish each event once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use folio_domain::events::Event;
use folio_domain::ports::MessageBus;
use folio_domain::topics::{Topic, TopicPartition};
use folio_memory::{MemoryBus, SimulatedPayments};
use folio_runtime::bookstore::Payments;
use folio_tests::app::{spawn_app_with, AppOptions, TestApp};
use folio_tests::kafka_env::postgres;
use futures_util::future::join_all;
use serde_json::json;

const WEBHOOK_SECRET: &str = "test-webhook-secret";

fn events_on(bus: &MemoryBus, topic: Topic) -> Vec<Event> {
    (0..topic.partitions())
        .flat_map(|p| bus.records(TopicPartition::new(topic, p)))
        .filter_map(|r| Event::decode(&r.value).ok())
        .collect()
}

async fn webhook(app: &TestApp, body: &str) -> anyhow::Result<u16> {
    let sig = SimulatedPayments::sign(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
    let resp = app
        .client
        .post(app.url("/payments/webhook"))
        .header("X-Folio-Signature", sig)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_race_on_one_database_without_breaking_uniqueness() -> anyhow::Result<()> {
    let pg = postgres().await;
    let url = pg.fresh_schema().await?;
    let bus = MemoryBus::new();
    let shared: Arc<dyn MessageBus> = Arc::new(bus.clone());
    let options = || AppOptions {
        database_url: Some(url.clone()),
        bus: Some(shared.clone()),
        payments: Payments::Webhook,
        ..AppOptions::default()
    };
    // Both start together: migrations and the admin account race too.
    let (a, b) = tokio::join!(spawn_app_with(options()), spawn_app_with(options()));
    let (a, b) = (a?, b?);

    // One e-mail, registered on both at once: exactly one wins.
    let body =
        json!({"email": "ann@example.org", "password": "reader-password", "display_name": "Ann"});
    let (ra, rb) = tokio::join!(
        a.call("POST", "/auth/register", None, Some(body.clone())),
        b.call("POST", "/auth/register", None, Some(body.clone()))
    );
    let mut statuses = vec![ra?.status, rb?.status];
    statuses.sort();
    assert_eq!(statuses, vec![201, 409]);
    let ann = a.login("ann@example.org", "reader-password").await?;

    // One purchase per user and book, whichever instance is asked.
    let book = a.create_book("Dune", "Science Fiction", 1999).await?;
    let path = format!("/books/{book}/purchase");
    let (pa, pb) = tokio::join!(
        a.call("POST", &path, Some(&ann), None),
        b.call("POST", &path, Some(&ann), None)
    );
    let (pa, pb) = (pa?, pb?);
    let mut statuses = vec![pa.status, pb.status];
    statuses.sort();
    assert_eq!(statuses, vec![202, 409], "{pa:?} {pb:?}");
    let pending = if pa.status == 202 { pa } else { pb };
    let purchase_id = pending.body["id"].as_i64().unwrap_or_default();
    assert_eq!(pending.body["status"], "PENDING");

    // The provider retries its webhook on both instances at once: all succeed, one event.
    let note = format!(
        r#"{{"purchase_id":{purchase_id},"payment_ref":"sim-{purchase_id}","status":"succeeded"}}"#
    );
    let calls: Vec<_> = (0..10)
        .map(|i| {
            if i % 2 == 0 {
                webhook(&a, &note)
            } else {
                webhook(&b, &note)
            }
        })
        .collect();
    for status in join_all(calls).await {
        assert_eq!(status?, 200);
    }

    // Ratings: one per user and book; concurrent updates lose nothing.
    let rate = |n: i64| Some(json!({ "rating": n }));
    let rpath = format!("/books/{book}/ratings");
    let (ra, rb) = tokio::join!(
        a.call("POST", &rpath, Some(&ann), rate(1)),
        b.call("POST", &rpath, Some(&ann), rate(2))
    );
    let mut statuses = vec![ra?.status, rb?.status];
    statuses.sort();
    assert_eq!(statuses, vec![201, 409]);
    let mine = format!("/books/{book}/ratings/my");
    let updates: Vec<_> = (0..12)
        .map(|i| {
            let (app, n) = if i % 2 == 0 {
                (&a, 1 + (i % 5))
            } else {
                (&b, 1 + ((i + 2) % 5))
            };
            app.call("PUT", &mine, Some(&ann), rate(n))
        })
        .collect();
    for r in join_all(updates).await {
        assert_eq!(r?.status, 200);
    }

    // Both relays run; wait until the outbox has drained onto the bus.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = events_on(&bus, Topic::BookRatings).len();
        if n >= 13 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let purchases = events_on(&bus, Topic::BookPurchases);
    assert_eq!(
        purchases.len(),
        1,
        "the purchase was completed and published once: {purchases:?}"
    );
    let ratings = events_on(&bus, Topic::BookRatings);
    let ids: BTreeSet<String> = ratings.iter().map(|e| e.event_id().to_string()).collect();
    assert_eq!(
        (ratings.len(), ids.len()),
        (13, 13),
        "each rating event published exactly once"
    );
    // No lost update: the changes chain from the first value to the stored one, so the
    // analytics' rating-sum delta is exact.
    let mut sum = 0i64;
    let mut by_old: BTreeMap<Option<u8>, u64> = BTreeMap::new();
    for e in &ratings {
        if let Event::BookRated {
            rating, old_rating, ..
        } = e
        {
            sum += i64::from(*rating) - i64::from(old_rating.unwrap_or(0));
            *by_old.entry(*old_rating).or_default() += 1;
        }
    }
    assert_eq!(by_old.get(&None), Some(&1), "one create");
    let stored = a.call("GET", &format!("/books/{book}"), None, None).await?;
    assert_eq!(stored.status, 200);
    let final_rating = {
        let r = a.call("PUT", &mine, Some(&ann), rate(3)).await?;
        r.body["old_rating"].as_i64().unwrap_or_default()
    };
    assert_eq!(sum, final_rating, "the deltas add up to the stored rating");

    a.stop().await?;
    b.stop().await
}

/// The book page cache is versioned by the catalog's revision on the shared database: a
/// change through one instance shows on that instance at once and on the other within
/// its refresh (`FOLIO_BOOK_CACHE_REFRESH`), never later, and never the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_book_changed_through_one_instance_shows_on_the_other_within_the_refresh(
) -> anyhow::Result<()> {
    use folio_domain::services::DEFAULT_BOOK_PAGE_REFRESH;
    let pg = postgres().await;
    let url = pg.fresh_schema().await?;
    let bus: Arc<dyn MessageBus> = Arc::new(MemoryBus::new());
    let options = || AppOptions {
        database_url: Some(url.clone()),
        bus: Some(bus.clone()),
        ..AppOptions::default()
    };
    let a = spawn_app_with(options()).await?;
    let b = spawn_app_with(options()).await?;
    let book = a.create_book("Dune", "SF", 1999).await?;
    let page = format!("/books/{book}");
    async fn shown(app: &TestApp, page: &str) -> anyhow::Result<(u16, String)> {
        let r = app.call("GET", page, None, None).await?;
        Ok((
            r.status,
            r.body["title"].as_str().unwrap_or_default().to_string(),
        ))
    }
    // Both hold the page now.
    assert_eq!(shown(&a, &page).await?, (200, "Dune".into()));
    assert_eq!(shown(&b, &page).await?, (200, "Dune".into()));
    let past_refresh = DEFAULT_BOOK_PAGE_REFRESH + std::time::Duration::from_millis(50);

    for (n, new_title) in ["Dune Messiah", "Children of Dune"].into_iter().enumerate() {
        let r = a
            .call(
                "PUT",
                &page,
                Some(&a.admin_token),
                Some(json!({"title": new_title, "author": "A. Author", "genre": "SF", "description": "", "price_cents": 1999, "currency": "USD"})),
            )
            .await?;
        assert_eq!(r.status, 200, "edit {n}: {r:?}");
        // The writer shows its own change at once.
        assert_eq!(shown(&a, &page).await?, (200, new_title.into()), "edit {n}");
        tokio::time::sleep(past_refresh).await;
        assert_eq!(
            shown(&b, &page).await?,
            (200, new_title.into()),
            "edit {n}, on b"
        );
    }
    // An upload through b: a shows the file within the refresh.
    b.upload(book, b"not really an epub".to_vec()).await?;
    tokio::time::sleep(past_refresh).await;
    let r = a.call("GET", &page, None, None).await?;
    assert_eq!(r.body["file"]["size_bytes"], 18, "{r:?}");
    // A removal through b: both answer 404 after the refresh.
    let r = b.call("DELETE", &page, Some(&b.admin_token), None).await?;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(shown(&b, &page).await?.0, 404);
    tokio::time::sleep(past_refresh).await;
    assert_eq!(shown(&a, &page).await?.0, 404);
    Ok(())
}
