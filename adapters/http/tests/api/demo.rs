//! A manual aid, not a check: serves the full app over in-memory adapters with seeded
//! statistics, for looking at the dashboard in a browser.
//!
//! `FOLIO_DEMO_ADDR=127.0.0.1:8099 cargo test -p folio-http --test api demo -- --ignored`
//! then open http://127.0.0.1:8099/admin and sign in as admin@folio.test / admin password.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
#[ignore = "serves until FOLIO_DEMO_SECS (default 120) pass; run by hand"]
async fn demo_server() {
    let addr = std::env::var("FOLIO_DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:8099".into());
    let secs: u64 = std::env::var("FOLIO_DEMO_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let app = spawn_app().await;
    crate::analytics::seed(&app).await;
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("dashboard demo on http://{addr}/admin for {secs} s");
    folio_http::serve_on(
        listener,
        folio_http::app(app.state.clone()),
        tokio::time::sleep(Duration::from_secs(secs)),
        Duration::from_secs(1),
    )
    .await
    .expect("serve");
}
