//! The bookstore scenario every end-to-end run shares: three books, three readers, and each
//! kind of action over HTTP, then the exact figures the admin API must show once the
//! windows close. The embedded run and the Kafka + PostgreSQL run call the same code, so
//! both promise the same numbers.

use std::time::Duration;

use serde_json::{json, Value};

use crate::app::TestApp;

/// The books the scenario created.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioBooks {
    /// Paid (19.99), with a file: four views (two anonymous), two purchases, a download,
    /// two reviews (one updated), two ratings (one updated).
    pub dune: i64,
    /// Free, with a file: one view, a download, a rating.
    pub poems: i64,
    /// Paid (5.00), no file: one view, one purchase.
    pub solaris: i64,
}

/// Runs the whole scenario: actions, then the exact figures within `within`.
pub async fn bookstore_scenario(app: &TestApp, within: Duration) -> anyhow::Result<ScenarioBooks> {
    let books = scenario_actions(app).await?;
    expect_scenario_figures(app, books, within).await?;
    Ok(books)
}

fn f(v: &Value, path: &[&str]) -> Value {
    path.iter().fold(v.clone(), |acc, k| acc[*k].clone())
}

/// The scenario's user actions over HTTP, checking each answer.
pub async fn scenario_actions(app: &TestApp) -> anyhow::Result<ScenarioBooks> {
    let dune = app.create_book("Dune", "Science Fiction", 1999).await?;
    let poems = app.create_book("Poems", "Poetry", 0).await?;
    let solaris = app.create_book("Solaris", "Science Fiction", 500).await?;
    app.upload(dune, b"dune bytes".to_vec()).await?;
    app.upload(poems, b"poem bytes".to_vec()).await?;

    let ann = app.register("ann@example.org", "Ann").await?;
    let bob = app.register("bob@example.org", "Bob").await?;
    let cat = app.register("cat@example.org", "Cat").await?;

    // Views: two logged in and two anonymous of Dune, one each of Poems and Solaris.
    for (token, book) in [
        (Some(&ann), dune),
        (Some(&bob), dune),
        (None, dune),
        (None, dune),
        (Some(&cat), poems),
        (Some(&ann), solaris),
    ] {
        let path = format!("/books/{book}");
        assert_eq!(app.status("GET", &path, token, None).await?, 200, "{path}");
    }

    // Purchases and downloads.
    let (status, _) = app.download(dune, &ann).await?;
    assert_eq!(status, 402, "a paid book is not downloadable before buying");
    for (token, book) in [(&ann, dune), (&bob, dune), (&ann, solaris)] {
        let r = app
            .call(
                "POST",
                &format!("/books/{book}/purchase"),
                Some(token),
                None,
            )
            .await?;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.body["status"], "COMPLETED");
    }
    let path = format!("/books/{dune}/purchase");
    assert_eq!(
        app.status("POST", &path, Some(&ann), None).await?,
        409,
        "bought once"
    );
    assert_eq!(
        app.download(dune, &ann).await?,
        (200, b"dune bytes".to_vec())
    );
    assert_eq!(
        app.download(poems, &cat).await?,
        (200, b"poem bytes".to_vec())
    );

    // Reviews (one updated) and ratings (one updated).
    let review = |text: &str| Some(json!({ "text": text }));
    for (token, text) in [(&ann, "A classic."), (&bob, "Too long for me")] {
        let path = format!("/books/{dune}/reviews");
        assert_eq!(
            app.status("POST", &path, Some(token), review(text)).await?,
            201
        );
    }
    let upd = app
        .call(
            "PUT",
            &format!("/books/{dune}/reviews/my"),
            Some(&ann),
            review("A true classic."),
        )
        .await?;
    assert_eq!(
        (upd.status, upd.body["old_length"].clone()),
        (200, json!(10))
    );
    let rate = |n: i64| Some(json!({ "rating": n }));
    for (token, book, n) in [(&ann, dune, 3), (&bob, dune, 4), (&cat, poems, 2)] {
        let path = format!("/books/{book}/ratings");
        assert_eq!(app.status("POST", &path, Some(token), rate(n)).await?, 201);
    }
    let upd = app
        .call(
            "PUT",
            &format!("/books/{dune}/ratings/my"),
            Some(&ann),
            rate(5),
        )
        .await?;
    assert_eq!(
        (upd.status, upd.body["old_rating"].clone()),
        (200, json!(3))
    );
    Ok(ScenarioBooks {
        dune,
        poems,
        solaris,
    })
}

/// Waits (up to `within`) until the admin API shows the scenario's totals, then checks
/// every figure exactly.
pub async fn expect_scenario_figures(
    app: &TestApp,
    books: ScenarioBooks,
    within: Duration,
) -> anyhow::Result<()> {
    let ScenarioBooks {
        dune,
        poems,
        solaris,
    } = books;
    let overview = app
        .wait_for("/admin/analytics/overview", within, |b| {
            b["totals"]["views"] == 6
                && b["totals"]["purchases"] == 3
                && b["totals"]["rating_events"] == 4
                && b["totals"]["review_updates"] == 1
                && b["totals"]["downloads"] == 2
        })
        .await?;
    let t = &overview["totals"];
    assert_eq!(f(t, &["revenue", "amount_cents"]), json!(4498));
    assert_eq!(f(t, &["revenue", "currency"]), json!("USD"));
    assert_eq!(
        (t["reviews"].clone(), t["ratings"].clone()),
        (json!(2), json!(3))
    );
    let avg = t["average_rating"].as_f64().unwrap_or_default();
    assert!((avg - 11.0 / 3.0).abs() < 1e-9, "average rating {avg}");
    assert_eq!(overview["unique_users"], json!(3));
    assert_eq!(overview["books_with_activity"], json!(3));
    assert_eq!(f(&overview, &["most_popular_book", "book_id"]), json!(dune));
    assert_eq!(f(&overview, &["most_popular_book", "views"]), json!(4));
    assert_eq!(
        f(&overview, &["top_genre", "genre"]),
        json!("Science Fiction")
    );
    assert_eq!(f(&overview, &["top_genre", "views"]), json!(5));
    assert_eq!(f(&overview, &["top_genre", "book_count"]), json!(2));

    let b = app
        .call(
            "GET",
            &format!("/admin/analytics/books/{dune}"),
            Some(&app.admin_token),
            None,
        )
        .await?;
    assert_eq!(b.status, 200);
    let d = &b.body;
    assert_eq!(
        (
            d["views"].clone(),
            d["anonymous_views"].clone(),
            d["unique_viewers"].clone()
        ),
        (json!(4), json!(2), json!(2))
    );
    assert_eq!(
        (d["downloads"].clone(), d["purchases"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(f(d, &["revenue", "amount_cents"]), json!(3998));
    assert_eq!(
        (d["reviews"].clone(), d["average_review_length"].clone()),
        (json!(2), json!(15.0))
    );
    assert_eq!(
        (d["ratings"].clone(), d["average_rating"].clone()),
        (json!(2), json!(4.5))
    );
    assert_eq!(
        d["rating_distribution"],
        json!({"1": 0, "2": 0, "3": 0, "4": 1, "5": 1})
    );
    assert_eq!(d["unique_purchasers"], json!(2));

    assert_eq!(
        popular(app, "views", 3).await?,
        vec![dune, poems, solaris],
        "ties broken by lower id"
    );
    assert_eq!(popular(app, "revenue", 2).await?, vec![dune, solaris]);

    let history = app
        .call(
            "GET",
            "/admin/analytics/overview/history",
            Some(&app.admin_token),
            None,
        )
        .await?;
    let views: i64 = history.body["windows"]
        .as_array()
        .map(|w| w.iter().filter_map(|x| x["totals"]["views"].as_i64()).sum())
        .unwrap_or_default();
    assert_eq!(views, 6, "the windows add up to the total");
    Ok(())
}

/// The book ids of the admin's popular list, in order.
async fn popular(app: &TestApp, sort_by: &str, limit: u32) -> anyhow::Result<Vec<i64>> {
    let path = format!("/admin/analytics/popular?sort_by={sort_by}&limit={limit}");
    let r = app.call("GET", &path, Some(&app.admin_token), None).await?;
    anyhow::ensure!(r.status == 200, "{path}: {r:?}");
    Ok(r.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["book_id"].as_i64()).collect())
        .unwrap_or_default())
}
