//! The test app: the real HTTP stack over a `Bookstore` wired from folio-memory's fakes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, TimeZone, Utc};
use folio_domain::events::Event;
use folio_domain::money::Currency;
use folio_domain::ports::Readiness;
use folio_domain::services::{Bookstore, BookstoreDeps, StoreConfig};
use folio_http::{app, Argon2Hasher, AuthLimits, HmacTokens, HttpState};
use folio_memory::{ManualClock, MemoryStore, PaymentMode, RecordingPublisher, SimulatedPayments};
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, StatusCode};
use poem::test::{TestClient, TestRequestBuilder};
use poem::{Endpoint, EndpointExt};
use poem_openapi::OperationId;
use serde_json::{json, Value};

pub const WEBHOOK_SECRET: &[u8] = b"webhook secret for tests";
pub const ADMIN_EMAIL: &str = "admin@folio.test";
pub const ADMIN_PASSWORD: &str = "admin password";
pub const PASSWORD: &str = "reader password";

pub type Client = TestClient<BoxEndpoint<'static>>;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0)
        .single()
        .expect("valid time")
}

pub fn usd() -> Currency {
    Currency::parse("USD").expect("valid currency")
}

pub struct TestApp {
    pub cli: Client,
    /// What the app was built from, to build another over the same store.
    pub state: HttpState,
    pub store: MemoryStore,
    pub events: Arc<RecordingPublisher>,
    pub clock: Arc<ManualClock>,
    pub admin: String,
}

pub struct Options {
    pub payments: PaymentMode,
    pub readiness: Option<Vec<Arc<dyn Readiness>>>,
    pub pipeline: Option<folio_http::api::SharedProbe>,
    pub auth_limits: AuthLimits,
    pub hasher: Argon2Hasher,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            payments: PaymentMode::Immediate,
            readiness: None,
            pipeline: None,
            auth_limits: AuthLimits::default(),
            hasher: Argon2Hasher::fast_for_tests(),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(opts: Options) -> TestApp {
    let store = MemoryStore::new();
    let events = Arc::new(RecordingPublisher::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let s = Arc::new(store.clone());
    let bookstore = Bookstore::new(BookstoreDeps {
        config: StoreConfig {
            currency: usd(),
            book_page_refresh: folio_domain::services::DEFAULT_BOOK_PAGE_REFRESH,
        },
        clock: clock.clone(),
        users: s.clone(),
        books: s.clone(),
        files: s.clone(),
        purchases: s.clone(),
        reviews: s.clone(),
        ratings: s.clone(),
        stats: s.clone(),
        events: events.clone(),
        payments: Arc::new(SimulatedPayments::new(WEBHOOK_SECRET, opts.payments)),
        hasher: Arc::new(opts.hasher),
        tokens: Arc::new(HmacTokens::new(b"token secret for the tests".to_vec()).expect("secret")),
    });
    bookstore
        .ensure_admin(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("admin");
    let readiness = opts
        .readiness
        .unwrap_or_else(|| vec![s.clone() as Arc<dyn Readiness>]);
    let state = HttpState {
        bookstore,
        readiness,
        extra_metrics: Some(Arc::new(|| {
            "# TYPE folio_test_gauge gauge\nfolio_test_gauge 42\n".to_string()
        })),
        pipeline: opts.pipeline,
        auth_limits: opts.auth_limits,
    };
    let cli = TestClient::new(declared_statuses_only(app(state.clone())));
    let mut app = TestApp {
        cli,
        state,
        store,
        events,
        clock,
        admin: String::new(),
    };
    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        )
        .await;
    app.admin = r.expect(200)["token"].as_str().expect("token").to_string();
    app
}

/// The statuses each operation's OpenAPI responses list, by operation id.
fn declared() -> &'static HashMap<String, Vec<u16>> {
    static DECLARED: OnceLock<HashMap<String, Vec<u16>>> = OnceLock::new();
    DECLARED.get_or_init(|| {
        let doc: Value = serde_json::from_str(&folio_http::openapi_json()).expect("spec");
        let mut out = HashMap::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("path item").values() {
                let statuses = op["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                    .map(|k| k.parse().expect("every response has an exact status"))
                    .collect();
                let id = op["operationId"].as_str().expect("operation id");
                out.insert(id.to_string(), statuses);
            }
        }
        out
    })
}

/// Wraps the app so that every answer an operation gives must be one its OpenAPI document
/// lists: each API test then also checks the document against what the code does.
fn declared_statuses_only(ep: BoxEndpoint<'static>) -> BoxEndpoint<'static> {
    ep.around(|ep, req| async move {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let resp = ep.call(req).await?;
        if let Some(op) = resp.data::<OperationId>() {
            let status = resp.status().as_u16();
            let listed = &declared()[op.0];
            assert!(
                listed.contains(&status),
                "{method} {path} ({op}) answered {status}, which its OpenAPI responses {listed:?} do not list"
            );
        }
        Ok(resp)
    })
    .boxed()
}

/// A response read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Asserts the status and returns the JSON body (null when empty).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an RFC 9457 problem with this status whose detail mentions `detail_has`.
    #[track_caller]
    pub fn problem(&self, status: u16, detail_has: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            "application/problem+json",
            "body: {}",
            self.text()
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{p}");
        assert!(p["type"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        let detail = p["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail: {p}"));
        assert!(
            detail.contains(detail_has),
            "detail {detail:?} does not mention {detail_has:?}"
        );
        assert!(
            p["instance"].as_str().is_some_and(|i| i.starts_with('/')),
            "{p}"
        );
        if status == 401 {
            assert!(
                self.header("www-authenticate").starts_with("Bearer"),
                "401 without WWW-Authenticate"
            );
        }
        p
    }
}

pub async fn send(rb: TestRequestBuilder<'_, BoxEndpoint<'static>>) -> Reply {
    let resp = rb.send().await.0;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().into_vec().await.expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

impl TestApp {
    pub async fn get(&self, path: &str) -> Reply {
        send(self.cli.get(path)).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        send(self.cli.get(path).header("authorization", bearer(token))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        send(self.cli.post(path).body_json(body)).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> Reply {
        send(
            self.cli
                .post(path)
                .header("authorization", bearer(token))
                .body_json(body),
        )
        .await
    }

    pub async fn put_as(&self, token: &str, path: &str, body: &Value) -> Reply {
        send(
            self.cli
                .put(path)
                .header("authorization", bearer(token))
                .body_json(body),
        )
        .await
    }

    pub async fn delete_as(&self, token: &str, path: &str) -> Reply {
        send(self.cli.delete(path).header("authorization", bearer(token))).await
    }

    /// Registers a reader and returns (token, user id).
    pub async fn reader(&self, name: &str) -> (String, i64) {
        let r = self
            .post(
                "/api/v1/auth/register",
                &json!({"email": format!("{name}@folio.test"), "password": PASSWORD, "display_name": name}),
            )
            .await;
        let v = r.expect(201);
        (
            v["token"].as_str().expect("token").to_string(),
            v["user_id"].as_i64().expect("user id"),
        )
    }

    /// Adds a book as the admin and returns its id.
    pub async fn book(&self, title: &str, genre: &str, price_cents: i64) -> i64 {
        let r = self
            .post_as(
                &self.admin,
                "/api/v1/books",
                &json!({"title": title, "author": "A. Author", "genre": genre, "price_cents": price_cents}),
            )
            .await;
        r.expect(201)["id"].as_i64().expect("id")
    }

    pub async fn upload(
        &self,
        id: i64,
        content_type: &str,
        bytes: Vec<u8>,
        file_name: Option<&str>,
    ) -> Reply {
        let mut rb = self
            .cli
            .put(format!("/api/v1/books/{id}/file"))
            .header("authorization", bearer(&self.admin))
            .content_type(content_type)
            .body(bytes);
        if let Some(name) = file_name {
            rb = rb.query("file_name", &name);
        }
        send(rb).await
    }

    pub async fn total_books(&self) -> u64 {
        self.get("/api/v1/books").await.expect(200)["total"]
            .as_u64()
            .expect("total")
    }

    /// Events published straight to the bus (views, downloads).
    pub fn bus_events(&self) -> Vec<Event> {
        self.events.events()
    }

    pub fn views(&self) -> Vec<Event> {
        self.bus_events()
            .into_iter()
            .filter(|e| matches!(e, Event::BookViewed { .. }))
            .collect()
    }

    pub fn downloads(&self) -> Vec<Event> {
        self.bus_events()
            .into_iter()
            .filter(|e| matches!(e, Event::BookDownloaded { .. }))
            .collect()
    }

    /// Events written to the outbox (purchases, reviews, ratings).
    pub fn outbox(&self) -> Vec<Event> {
        self.store.outbox_events()
    }

    /// The event publisher heard of every event written to the outbox, once, at the
    /// event's own time (so the pipeline view marks them), and of nothing else.
    #[track_caller]
    pub fn assert_outbox_heard(&self, events: usize) {
        let written: Vec<_> = self.outbox().iter().map(|e| e.meta().occurred_at).collect();
        assert_eq!(written.len(), events, "events in the outbox");
        assert_eq!(self.events.outboxed_at(), written);
    }
}

impl Reply {
    /// Asserts the status and returns the raw body.
    #[track_caller]
    pub fn expect_bytes(&self, status: u16) -> &[u8] {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        &self.body
    }
}
