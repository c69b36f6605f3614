//! Safe defaults and strict inputs: strict JSON types, price bounds, file names, download
//! headers, sign-in rate limits and hashing bounds, 405's `Allow`, and server timeouts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use folio_http::{serve_with, Argon2Hasher, AuthLimits, Rate, ServeOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn book(title: Value, price_cents: Value) -> Value {
    json!({"title": title, "author": "A", "genre": "G", "price_cents": price_cents})
}

#[tokio::test]
async fn numbers_and_booleans_are_not_strings() {
    let app = spawn_app().await;
    let p = app
        .post_as(&app.admin, "/api/v1/books", &book(json!(123), json!(100)))
        .await
        .problem(400, "field `title` must be a string, got 123");
    assert_eq!(p["type"], "about:blank");
    app.post_as(&app.admin, "/api/v1/books", &book(json!(true), json!(100)))
        .await
        .problem(400, "field `title` must be a string, got true");
    app.post_as(&app.admin, "/api/v1/books", &book(json!("T"), json!("100")))
        .await
        .problem(400, "field `price_cents` must be an integer, got \"100\"");
    app.post_as(&app.admin, "/api/v1/books", &book(json!("T"), json!(1.5)))
        .await
        .problem(400, "field `price_cents` must be an integer, got 1.5");
    let mut with_currency = book(json!("T"), json!(100));
    with_currency["currency"] = json!(840);
    app.post_as(&app.admin, "/api/v1/books", &with_currency)
        .await
        .problem(400, "field `currency` must be a string, got 840");
    let mut null_description = book(json!("T"), json!(100));
    null_description["description"] = Value::Null;
    app.post_as(&app.admin, "/api/v1/books", &null_description)
        .await
        .problem(400, "field `description` must not be null");
    assert_eq!(app.total_books().await, 0, "nothing was stored");

    let id = app.book("Dune", "SF", 100).await;
    let path = format!("/api/v1/books/{id}");
    app.put_as(&app.admin, &path, &book(json!(["x"]), json!(1)))
        .await
        .problem(400, "field `title` must be a string");
    assert_eq!(app.get(&path).await.expect(200)["title"], "Dune");

    app.post(
        "/api/v1/auth/register",
        &json!({"email": "ann@folio.test", "password": 12345678, "display_name": "Ann"}),
    )
    .await
    .problem(400, "field `password` must be a string, got 12345678");
    app.post(
        "/api/v1/auth/login",
        &json!({"email": "ann@folio.test", "password": 12345678}),
    )
    .await
    .problem(400, "field `password` must be a string");
    let (reader, _) = app.reader("bob").await;
    app.post_as(
        &reader,
        &format!("/api/v1/books/{id}/reviews"),
        &json!({"text": 5}),
    )
    .await
    .problem(400, "field `text` must be a string, got 5");
    app.post_as(
        &reader,
        &format!("/api/v1/books/{id}/ratings"),
        &json!({"rating": "5"}),
    )
    .await
    .problem(400, "field `rating` must be an integer");
    assert!(app.outbox().is_empty(), "no review or rating was stored");
}

#[tokio::test]
async fn prices_have_a_maximum() {
    let app = spawn_app().await;
    for cents in [1_000_000_001i64, i64::MAX] {
        app.post_as(&app.admin, "/api/v1/books", &book(json!("T"), json!(cents)))
            .await
            .problem(
                400,
                &format!("field `price_cents` must be at most 1000000000, got {cents}"),
            );
    }
    assert_eq!(app.total_books().await, 0);
    let r = app
        .post_as(
            &app.admin,
            "/api/v1/books",
            &book(json!("T"), json!(1_000_000_000)),
        )
        .await
        .expect(201);
    assert_eq!(r["price"]["amount_cents"], 1_000_000_000);
    let id = r["id"].as_i64().expect("id");
    app.put_as(
        &app.admin,
        &format!("/api/v1/books/{id}"),
        &book(json!("T"), json!(i64::MAX)),
    )
    .await
    .problem(400, "field `price_cents` must be at most 1000000000");
    let shown = app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    assert_eq!(shown["price"]["amount_cents"], 1_000_000_000);
}

#[tokio::test]
async fn file_names_refuse_control_characters_and_separators() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 0).await;
    for bad in [
        "a\u{0}.txt",
        "a\r\nX-Evil: 1",
        "tab\there",
        "..",
        "a\\b",
        "x\u{202e}txt.exe",
    ] {
        app.upload(id, "text/plain", b"x".to_vec(), Some(bad))
            .await
            .problem(422, "file_name must be 1 to 255 bytes");
    }
    let shown = app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    assert_eq!(shown["file"], Value::Null, "nothing was stored");
}

#[tokio::test]
async fn an_html_upload_downloads_as_an_attachment_never_inline() {
    let app = spawn_app().await;
    let id = app.book("Page", "Web", 0).await;
    let html = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    app.upload(id, "text/html", html.clone(), Some("page.html"))
        .await
        .expect(200);
    let (reader, _) = app.reader("ann").await;
    let r = app
        .get_as(&reader, &format!("/api/v1/books/{id}/download"))
        .await;
    assert_eq!(r.expect_bytes(200), html.as_slice());
    // Not a book format: sent as bytes to save, whatever the uploader said.
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=\"page.html\""
    );
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(
        r.header("content-security-policy"),
        "sandbox; default-src 'none'"
    );

    app.upload(id, "text/plain", b"x".to_vec(), Some("Ünïcode – 1.txt"))
        .await
        .expect(200);
    let r = app
        .get_as(&reader, &format!("/api/v1/books/{id}/download"))
        .await;
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=\"_n_code _ 1.txt\"; filename*=UTF-8''%C3%9Cn%C3%AFcode%20%E2%80%93%201.txt"
    );
}

#[tokio::test]
async fn every_response_says_nosniff() {
    let app = spawn_app().await;
    for r in [
        app.get("/health/live").await,
        app.get("/api/v1/books").await,
        app.get("/api/v1/books/999").await,
        app.get("/admin").await,
    ] {
        assert_eq!(r.header("x-content-type-options"), "nosniff");
    }
}

#[tokio::test]
async fn a_405_lists_the_allowed_methods() {
    let app = spawn_app().await;
    let r = send(app.cli.delete("/api/v1/auth/login")).await;
    r.problem(405, "DELETE is not allowed on /api/v1/auth/login");
    assert_eq!(r.header("allow"), "POST");
    let r = send(app.cli.patch("/api/v1/books/3")).await;
    r.problem(405, "PATCH is not allowed");
    assert_eq!(r.header("allow"), "GET, HEAD, PUT, DELETE");
    let r = send(app.cli.post("/health/live")).await;
    r.problem(405, "POST is not allowed");
    assert_eq!(r.header("allow"), "GET, HEAD");
}

#[tokio::test(start_paused = true)]
async fn sign_in_is_rate_limited_per_account() {
    let app = spawn_app().await;
    app.reader("ann").await;
    let wrong = json!({"email": "ann@folio.test", "password": "not the password"});
    // Registration counted once for ann; four more attempts fit the burst of five.
    for _ in 0..4 {
        app.post("/api/v1/auth/login", &wrong)
            .await
            .problem(401, "e-mail or password is wrong");
    }
    let r = app.post("/api/v1/auth/login", &wrong).await;
    let p = r.problem(
        429,
        "too many sign-in or registration attempts for this account",
    );
    assert_eq!(p["type"], "urn:folio:problem:rate-limited");
    assert_eq!(r.header("retry-after"), "12");
    // The right password is refused too while the account is limited...
    let right = json!({"email": "ANN@folio.test", "password": PASSWORD});
    app.post("/api/v1/auth/login", &right)
        .await
        .problem(429, "for this account");
    // ...other accounts are not affected...
    app.post(
        "/api/v1/auth/login",
        &json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
    )
    .await
    .expect(200);
    // ...and after Retry-After one attempt more is allowed.
    tokio::time::advance(Duration::from_secs(12)).await;
    app.post("/api/v1/auth/login", &right).await.expect(200);
    app.post("/api/v1/auth/login", &right)
        .await
        .problem(429, "retry in 12 s");
}

#[tokio::test]
async fn hashing_beyond_its_queue_is_refused_with_503() {
    // One hash at a time and one waiting: a third sign-in at once is refused, not queued.
    let app = spawn_with(Options {
        hasher: Argon2Hasher::new().with_limits(1, 1),
        ..Options::default()
    })
    .await;
    let app = &app;
    let attempt = |n: u32| {
        let body = json!({"email": format!("nobody{n}@folio.test"), "password": "whatever it is"});
        async move { app.post("/api/v1/auth/login", &body).await }
    };
    let (a, b, c) = tokio::join!(attempt(1), attempt(2), attempt(3));
    let mut statuses = vec![a.status.as_u16(), b.status.as_u16(), c.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [401, 401, 503]);
    let refused = [a, b, c]
        .into_iter()
        .find(|r| r.status.as_u16() == 503)
        .expect("one refused");
    refused.problem(503, "password hashing is unavailable");
    assert_eq!(refused.header("retry-after"), "1");
}

#[tokio::test]
async fn unknown_and_known_accounts_take_the_same_time() {
    // The real parameters: the point is the cost of Argon2.
    let app = spawn_with(Options {
        hasher: Argon2Hasher::new(),
        auth_limits: AuthLimits {
            per_account: Rate::new(100, Duration::from_secs(1)),
            ..AuthLimits::default()
        },
        ..Options::default()
    })
    .await;
    app.reader("ann").await;
    let app = &app;
    let attempt = |email: &str| {
        let body = json!({"email": email, "password": "not the password"});
        async move {
            let t = Instant::now();
            app.post("/api/v1/auth/login", &body)
                .await
                .problem(401, "e-mail or password is wrong");
            t.elapsed()
        }
    };
    // The first unknown sign-in makes the stand-in hash; the comparison starts after it.
    attempt("nobody@folio.test").await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        known.push(attempt("ann@folio.test").await);
        unknown.push(attempt("nobody@folio.test").await);
    }
    known.sort_unstable();
    unknown.sort_unstable();
    let (known, unknown) = (known[3], unknown[3]);
    eprintln!("login medians: known e-mail {known:?}, unknown e-mail {unknown:?}");
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.6..1.6).contains(&ratio),
        "unknown {unknown:?} vs known {known:?}: timing tells which accounts exist"
    );
}

/// Serves the test app on a real socket with these timeouts.
async fn serve(options: ServeOptions) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = spawn_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_with(
        listener,
        folio_http::app(app.state.clone()),
        async {
            let _ = stopped.await;
        },
        options,
    ));
    (addr, stop)
}

/// Waits for the server to close `conn`, returning what it sent and how long it took.
async fn until_closed(conn: &mut TcpStream) -> (String, Duration) {
    let t = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got))
        .await
        .expect("the server closed the connection within 10 s")
        .ok();
    (String::from_utf8_lossy(&got).into_owned(), t.elapsed())
}

#[tokio::test]
async fn partial_headers_are_closed_after_the_header_read_timeout() {
    let (addr, _stop) = serve(ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(1),
    })
    .await;
    // Half a request line, then nothing.
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /health/li").await.expect("write");
    let (got, took) = until_closed(&mut conn).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert!(!got.contains("200 OK"), "{got}");

    // Trickling a header byte at a time does not extend the deadline.
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let t = Instant::now();
    // 60 bytes, one every 50 ms: three seconds if the server waited for all of them.
    for b in b"GET /health/live HTTP/1.1\r\nHost: folio\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa" {
        if conn.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (got, _) = until_closed(&mut conn).await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "slow headers held for {took:?}"
    );
    assert!(!got.contains("200 OK"), "{got}");

    // A whole request in time is answered.
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: folio\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (got, _) = until_closed(&mut conn).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (addr, _stop) = serve(ServeOptions {
        header_read_timeout: Duration::from_millis(700),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(1),
    })
    .await;
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: folio\r\n\r\n")
        .await
        .expect("write");
    // Kept alive after the answer, then closed when no next request comes.
    let (got, took) = until_closed(&mut conn).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_silent_body_is_closed_after_the_idle_timeout() {
    let (addr, _stop) = serve(ServeOptions {
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(600),
        drain_timeout: Duration::from_secs(1),
    })
    .await;
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: folio\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"em",
    )
    .await
    .expect("write");
    let (_, took) = until_closed(&mut conn).await;
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

/// One HTTP/1.1 request from `from` (a loopback address of its own) on a fresh connection.
async fn post_from(from: &str, to: SocketAddr, path: &str, body: &Value) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind");
    let mut conn = socket.connect(to).await.expect("connect");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: folio\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    until_closed(&mut conn).await.0
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_client_address() {
    let (addr, _stop) = serve(ServeOptions::default()).await;
    // Thirty attempts from one address, each for another account, then 429.
    for n in 0..30 {
        let body = json!({"email": format!("u{n}@folio.test"), "password": "not the password"});
        let got = post_from("127.0.0.7", addr, "/api/v1/auth/login", &body).await;
        assert!(got.starts_with("HTTP/1.1 401"), "{n}: {got}");
    }
    let body = json!({"email": "u99@folio.test", "password": "not the password"});
    let got = post_from("127.0.0.7", addr, "/api/v1/auth/login", &body).await;
    assert!(got.starts_with("HTTP/1.1 429"), "{got}");
    assert!(got.contains("\r\nretry-after: 2\r\n"), "{got}");
    assert!(
        got.contains("content-type: application/problem+json"),
        "{got}"
    );
    assert!(got.contains("from this address"), "{got}");
    // Registration shares the limit; another address does not.
    let register = json!({"email": "new@folio.test", "password": PASSWORD, "display_name": "N"});
    let got = post_from("127.0.0.7", addr, "/api/v1/auth/register", &register).await;
    assert!(got.starts_with("HTTP/1.1 429"), "{got}");
    let got = post_from("127.0.0.8", addr, "/api/v1/auth/register", &register).await;
    assert!(got.starts_with("HTTP/1.1 201"), "{got}");
}
