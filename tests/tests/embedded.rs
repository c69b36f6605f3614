//! End to end on embedded defaults: a scenario over HTTP, then exact figures in the admin
//! API once the windows close.

use std::time::Duration;

use folio_tests::app::spawn_app;
use folio_tests::scenario::bookstore_scenario;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_over_http_shows_exact_figures_in_the_admin_api() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    bookstore_scenario(&app, Duration::from_secs(20)).await?;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_refuse_anonymous_and_user_tokens_and_bad_input_stores_nothing(
) -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let ann = app.register("ann@example.org", "Ann").await?;
    for path in [
        "/admin/analytics/overview",
        "/admin/analytics/popular",
        "/admin/analytics/books/1/history",
    ] {
        let anon = app.call("GET", path, None, None).await?;
        assert_eq!(anon.status, 401, "{path}");
        assert!(
            anon.content_type.starts_with("application/problem+json"),
            "{path}: {}",
            anon.content_type
        );
        assert_eq!(anon.body["status"], json!(401));
        let user = app.call("GET", path, Some(&ann), None).await?;
        assert_eq!(user.status, 403, "{path}");
        assert_eq!(user.body["status"], json!(403));
    }
    // Two of the domain's rules broken at once (a blank title, a foreign currency): 422
    // naming both. A negative price breaks the schema itself: 400 naming the field.
    let bad = app
        .call("POST", "/books", Some(&app.admin_token), Some(json!({"title": "", "author": "X", "genre": "Y", "price_cents": 5, "currency": "EUR"})))
        .await?;
    assert_eq!(bad.status, 422, "{bad:?}");
    let detail = bad.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("title") && detail.contains("currency"),
        "names the problems: {detail}"
    );
    let negative = app
        .call("POST", "/books", Some(&app.admin_token), Some(json!({"title": "T", "author": "X", "genre": "Y", "price_cents": -5, "currency": "USD"})))
        .await?;
    assert_eq!(negative.status, 400, "{negative:?}");
    assert!(
        negative.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("price_cents")),
        "{negative:?}"
    );
    let list = app.call("GET", "/books", None, None).await?;
    assert_eq!(list.body["total"], json!(0), "nothing stored");
    app.stop().await
}
