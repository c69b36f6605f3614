use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use folio_domain::ports::Readiness;
use folio_domain::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

struct Broken;

#[async_trait]
impl Readiness for Broken {
    fn name(&self) -> &'static str {
        "broker"
    }

    async fn check(&self) -> Result<()> {
        Err(Error::Unavailable("broker", "connection refused".into()))
    }
}

#[tokio::test]
async fn health_probes() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/health/live").await.expect(200),
        serde_json::json!({"status": "ok"})
    );
    let ready = app.get("/health/ready").await.expect(200);
    assert_eq!(
        ready,
        serde_json::json!({"status": "ok", "checks": {"database": "ok"}})
    );

    let app = spawn_with(Options {
        readiness: Some(vec![
            Arc::new(folio_memory::MemoryStore::new()),
            Arc::new(Broken),
        ]),
        ..Options::default()
    })
    .await;
    let r = app.get("/health/ready").await;
    let p = r.problem(503, "broker");
    assert_eq!(p["checks"]["database"], "ok");
    assert!(p["checks"]["broker"]
        .as_str()
        .is_some_and(|s| s.contains("connection refused")));
    app.get("/health/live").await.expect(200);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    app.get("/nope").await.problem(404, "/nope");
    app.get("/api/v1/nope").await.problem(404, "/api/v1/nope");
    send(app.cli.delete("/api/v1/auth/login"))
        .await
        .problem(405, "DELETE");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 1999).await;
    app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    app.get("/api/v1/books/999").await.problem(404, "");
    app.get("/nope").await.problem(404, "");
    let r = app.get("/metrics").await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.header("content-type").starts_with("text/plain"));
    let text = r.text();
    for line in [
        r#"http_requests_total{method="GET",route="get_book",status="200"} 2"#,
        r#"http_requests_total{method="GET",route="get_book",status="404"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"http_requests_total{method="POST",route="create_book",status="201"} 1"#,
        r#"http_request_duration_seconds_count{method="GET",route="get_book"} 3"#,
        "folio_test_gauge 42",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn docs_spec_and_dashboard_are_served() {
    let app = spawn_app().await;
    let spec = app.get("/openapi.json").await.expect(200);
    assert_eq!(spec["info"]["title"], "folio bookstore API");
    let docs = app.get("/docs").await;
    assert_eq!(docs.status.as_u16(), 200);
    assert!(docs.text().contains("swagger"), "not Swagger UI");
    let page = app.get("/admin").await;
    assert_eq!(page.status.as_u16(), 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let html = page.text();
    for needle in [
        "const API = \"/api/v1\"",
        "/auth/login",
        "sessionStorage",
        "/admin/analytics/popular?",
        "/admin/analytics/overview/history?",
    ] {
        assert!(html.contains(needle), "dashboard lacks {needle}");
    }
    // Scripts and styles come from the binary (vendored), never from another origin.
    for attr in html
        .split(" src=\"")
        .skip(1)
        .chain(html.split(" href=\"").skip(1))
    {
        assert!(
            attr.starts_with("/admin/assets/") || attr.starts_with("data:,\""),
            "the dashboard loads {:?} from outside the binary",
            attr.split('"').next()
        );
    }
}

#[tokio::test]
async fn serve_answers_until_shutdown() {
    // The same app, served on a real socket.
    let app = spawn_app().await;
    let endpoint = folio_http::app(app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(folio_http::serve_on(
        listener,
        endpoint,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(2),
    ));

    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: folio\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");

    stop.send(()).expect("server running");
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stopped in time")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}
