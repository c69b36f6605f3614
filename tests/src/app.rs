//! `spawn_app()`: a whole folio (both roles) on a random port, with its own database and
//! bus, for end-to-end tests that speak HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use folio_domain::analytics::StopFlag;
use folio_domain::ports::MessageBus;
use folio_memory::SystemClock;
use folio_runtime::bookstore::{BookstoreArgs, Payments, Retention, RunningBookstore, Starter};
use folio_runtime::AnalyticsArgs;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub const ADMIN_EMAIL: &str = "admin@folio.test";
pub const ADMIN_PASSWORD: &str = "admin-password";

/// A running folio and an HTTP client for it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    bookstore: Option<RunningBookstore>,
    analytics_stop: StopFlag,
    analytics: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
    _data: tempfile::TempDir,
}

/// How to build the app.
pub struct AppOptions {
    pub window: Duration,
    pub grace: Duration,
    /// `None`: a fresh SQLite file in a temp dir.
    pub database_url: Option<String>,
    /// `None`: a fresh in-process bus.
    pub bus: Option<Arc<dyn MessageBus>>,
    pub payments: Payments,
    /// Run the analytics role too (default); `false`: the bookstore alone.
    pub analytics: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            window: Duration::from_secs(2),
            grace: Duration::from_secs(1),
            database_url: None,
            bus: None,
            payments: Payments::Immediate,
            analytics: true,
        }
    }
}

/// Starts folio with 2-second windows on the in-process bus and SQLite.
pub async fn spawn_app() -> anyhow::Result<TestApp> {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(opts: AppOptions) -> anyhow::Result<TestApp> {
    let (dir, database_url) = match opts.database_url {
        Some(url) => (None, url),
        None => {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("folio.db").display()
            );
            (Some(dir), url)
        }
    };
    let bus = opts
        .bus
        .unwrap_or_else(|| Arc::new(folio_memory::MemoryBus::new()));
    bus.provision().await?;
    let analytics_args = AnalyticsArgs {
        analytics_window: opts.window,
        analytics_grace: opts.grace,
        lateness_horizon: folio_domain::analytics::window::DEFAULT_LATENESS_HORIZON,
    };
    let spec = analytics_args.spec()?;
    let clock = Arc::new(SystemClock);
    let stop = StopFlag::new();
    let (analytics, stats) = if opts.analytics {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let worker = tokio::spawn(folio_runtime::analytics::run(
            bus.clone(),
            clock.clone(),
            spec,
            stop.clone(),
            Some(tx),
        ));
        (Some(worker), rx.await.ok())
    } else {
        (None, None)
    };
    // The bookstore's own folder (its event spool), apart from any database file.
    let data = tempfile::tempdir()?;
    let args = BookstoreArgs {
        database_url,
        http_addr: "127.0.0.1:0".into(),
        drain_timeout: std::time::Duration::from_secs(10),
        admin_email: ADMIN_EMAIL.into(),
        admin_password: Some(ADMIN_PASSWORD.into()),
        token_secret: Some("test-token-secret-of-some-length".into()),
        webhook_secret: Some("test-webhook-secret".into()),
        payments: opts.payments,
        currency: "USD".into(),
        stats_retention: Retention::default(),
        data_dir: data.path().to_path_buf(),
        spool_limit: folio_spool::DEFAULT_LIMIT_BYTES,
        book_cache_refresh: folio_domain::services::DEFAULT_BOOK_PAGE_REFRESH,
    };
    let running = Starter::start(&args, bus, clock, stats).await?;
    let base = format!("http://{}/api/v1", running.http_addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut app = TestApp {
        base,
        client,
        admin_token: String::new(),
        bookstore: Some(running),
        analytics_stop: stop,
        analytics,
        _dir: dir,
        _data: data,
    };
    app.admin_token = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    Ok(app)
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// [`call`](Self::call) for its status alone; the token as the scenario holds it.
    pub async fn status(
        &self,
        method: &str,
        path: &str,
        token: Option<&String>,
        body: Option<Value>,
    ) -> anyhow::Result<u16> {
        let token = token.map(String::as_str);
        Ok(self.call(method, path, token, body).await?.status)
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let r = self
            .call(
                "POST",
                "/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await?;
        anyhow::ensure!(r.status == 200, "login failed: {r:?}");
        r.body["token"]
            .as_str()
            .map(String::from)
            .context("no token")
    }

    pub async fn register(&self, email: &str, name: &str) -> anyhow::Result<String> {
        let r = self
            .call(
                "POST",
                "/auth/register",
                None,
                Some(json!({"email": email, "password": "reader-password", "display_name": name})),
            )
            .await?;
        anyhow::ensure!(r.status == 201, "register failed: {r:?}");
        r.body["token"]
            .as_str()
            .map(String::from)
            .context("no token")
    }

    /// Creates a book as the admin and returns its id.
    pub async fn create_book(
        &self,
        title: &str,
        genre: &str,
        price_cents: i64,
    ) -> anyhow::Result<i64> {
        let r = self
            .call(
                "POST",
                "/books",
                Some(&self.admin_token),
                Some(json!({"title": title, "author": "A. Author", "genre": genre, "description": "", "price_cents": price_cents, "currency": "USD"})),
            )
            .await?;
        anyhow::ensure!(r.status == 201, "create book failed: {r:?}");
        r.body["id"].as_i64().context("no id")
    }

    /// Uploads a book's file as the admin.
    pub async fn upload(&self, book: i64, bytes: Vec<u8>) -> anyhow::Result<()> {
        let resp = self
            .client
            .put(self.url(&format!("/books/{book}/file?file_name=book-{book}.epub")))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/epub+zip")
            .body(bytes)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "upload failed: {}",
            resp.status()
        );
        Ok(())
    }

    /// Downloads a book's file: status and bytes.
    pub async fn download(&self, book: i64, token: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let resp = self
            .client
            .get(self.url(&format!("/books/{book}/download")))
            .bearer_auth(token)
            .send()
            .await?;
        Ok((resp.status().as_u16(), resp.bytes().await?.to_vec()))
    }

    /// Polls an admin endpoint until `done` holds for its body, or fails after `within`.
    pub async fn wait_for(
        &self,
        path: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self
                .call("GET", path, Some(&self.admin_token), None)
                .await?;
            if r.status == 200 && done(&r.body) {
                return Ok(r.body);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{path} did not reach the expected figures within {within:?}; last: {}",
                    r.body
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops both roles cleanly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(b) = self.bookstore.as_mut() {
            b.stop_intake().await?;
        }
        self.analytics_stop.stop();
        if let Some(a) = self.analytics.take() {
            a.await??;
        }
        if let Some(b) = self.bookstore.take() {
            b.stop().await?;
        }
        Ok(())
    }
}
