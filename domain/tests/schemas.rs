//! Keeps `openapi/schemas` (and the AsyncAPI document that names them) in step with the
//! events and aggregates the code actually writes: every field the code writes is in the
//! schema, every field the schema requires is written, and nothing documented is missing.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use folio_domain::analytics::{Aggregate, Figures, Sketch, SourceRange};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, PurchaseId, ReviewId, UserId};
use folio_domain::money::{Currency, Money};
use folio_domain::topics::Topic;
use serde_json::Value;

fn openapi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi")
}

fn schema(name: &str) -> Value {
    let path = openapi_dir().join("schemas").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one object against one schema object: same properties, required ones present.
fn check(what: &str, written: &Value, schema: &Value) {
    let props = keys(&schema["properties"]);
    let written_keys = keys(written);
    assert_eq!(
        written_keys, props,
        "{what}: the fields the code writes differ from the schema's properties"
    );
    let required = strings(&schema["required"]);
    assert!(
        required.is_subset(&written_keys),
        "{what}: schema requires {required:?}, code writes {written_keys:?}"
    );
}

fn t() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

/// One fully populated sample of every event type.
fn samples() -> Vec<Event> {
    let e = EventId::new_at(t());
    let usd = Currency::parse("USD").expect("USD");
    vec![
        Event::BookViewed {
            event_id: e,
            occurred_at: t(),
            book_id: BookId(1),
            user_id: Some(UserId(2)),
        },
        Event::BookDownloaded {
            event_id: e,
            occurred_at: t(),
            book_id: BookId(1),
            user_id: UserId(2),
        },
        Event::BookPurchased {
            event_id: e,
            occurred_at: t(),
            book_id: BookId(1),
            user_id: UserId(2),
            purchase_id: PurchaseId(3),
            price: Money::new(999, usd),
        },
        Event::BookReviewed {
            event_id: e,
            occurred_at: t(),
            book_id: BookId(1),
            user_id: UserId(2),
            review_id: ReviewId(4),
            length: 120,
            old_length: Some(80),
        },
        Event::BookRated {
            event_id: e,
            occurred_at: t(),
            book_id: BookId(1),
            user_id: UserId(2),
            rating: 4,
            old_rating: Some(2),
        },
    ]
}

#[test]
fn event_schemas_match_the_events_the_code_writes() {
    let samples = samples();
    let mut names = BTreeSet::new();
    for e in &samples {
        let name = e.type_name();
        names.insert(name.to_string());
        let written: Value = serde_json::from_slice(&e.encode()).expect("json");
        let s = schema(name);
        check(name, &written, &s);
        assert_eq!(s["properties"]["type"]["const"], Value::from(name));
        assert!(
            s["description"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("`{}`", e.topic().name()))),
            "{name}: the description names its topic"
        );
        if let Some(price) = written.get("price") {
            check("price", price, &s["properties"]["price"]);
        }
    }
    assert_eq!(
        names.len(),
        Topic::EVENTS.len(),
        "one sample per event topic"
    );
}

#[test]
fn aggregate_schema_matches_the_aggregates_the_code_writes() {
    let mut users = Sketch::new();
    users.insert_id(2);
    let a = Aggregate {
        window_start: t(),
        window_end: t() + chrono::Duration::seconds(60),
        book_id: BookId(1),
        source: SourceRange {
            topic: Topic::BookRatings,
            partition: 1,
            first_offset: 10,
            next_offset: 20,
        },
        figures: Figures {
            events: 1,
            anonymous: 0,
            users,
            first_at: Some(t()),
            last_at: Some(t()),
            revenue_cents: 0,
            currency: Some(Currency::parse("USD").expect("USD")),
            reviews_created: 0,
            reviews_updated: 0,
            review_length_delta: 0,
            ratings_created: 1,
            ratings_updated: 0,
            rating_sum_delta: 4,
            rating_distribution_delta: [0, 0, 0, 1, 0],
            submitted_rating_sum: 4,
        },
    };
    let written: Value = serde_json::from_slice(&a.encode()).expect("json");
    let s = schema("aggregate");
    check("aggregate", &written, &s);
    check(
        "aggregate.source",
        &written["source"],
        &s["properties"]["source"],
    );
    check(
        "aggregate.figures",
        &written["figures"],
        &s["properties"]["figures"],
    );
    assert_eq!(Aggregate::decode(&a.encode()), Ok(a));
}

#[test]
fn the_asyncapi_document_names_every_topic_and_schema() {
    let path = openapi_dir().join("asyncapi.yaml");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for topic in Topic::ALL {
        assert!(
            doc.contains(&format!("address: {}", topic.name())),
            "asyncapi.yaml lacks {}",
            topic.name()
        );
    }
    for e in samples() {
        assert!(
            doc.contains(&format!("./schemas/{}.json", e.type_name())),
            "asyncapi.yaml lacks {}",
            e.type_name()
        );
    }
    assert!(doc.contains("./schemas/aggregate.json"));
    let files: BTreeSet<String> = std::fs::read_dir(openapi_dir().join("schemas"))
        .expect("schemas dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect();
    let mut expected: BTreeSet<String> = samples()
        .iter()
        .map(|e| format!("{}.json", e.type_name()))
        .collect();
    expected.insert("aggregate.json".into());
    assert_eq!(
        files, expected,
        "openapi/schemas holds exactly the published schemas"
    );
}
