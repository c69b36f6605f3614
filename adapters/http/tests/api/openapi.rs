//! Keeps `openapi/openapi.json` equal to the document the code generates (docs/architecture.md).
//! Run with `FOLIO_BLESS=1` to rewrite the file after an intended API change.

use std::path::PathBuf;

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json")
}

#[test]
fn openapi_json_is_up_to_date() {
    let generated = folio_http::openapi_json();
    let path = spec_path();
    if std::env::var_os("FOLIO_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write openapi.json");
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "{} is out of date with the code. Run `FOLIO_BLESS=1 cargo test -p folio-http --test api openapi` \
         to regenerate it, then review and commit the diff.",
        path.display()
    );
}

#[test]
fn openapi_json_is_deterministic_and_complete() {
    let a = folio_http::openapi_json();
    assert_eq!(a, folio_http::openapi_json());
    let doc: serde_json::Value = serde_json::from_str(&a).expect("valid JSON");
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/me",
        "/api/v1/books",
        "/api/v1/books/{id}",
        "/api/v1/books/{id}/file",
        "/api/v1/books/{id}/purchase",
        "/api/v1/payments/webhook",
        "/api/v1/books/{id}/download",
        "/api/v1/books/{id}/reviews",
        "/api/v1/books/{id}/reviews/my",
        "/api/v1/books/{id}/ratings",
        "/api/v1/books/{id}/ratings/my",
        "/api/v1/admin/analytics/books/{id}",
        "/api/v1/admin/analytics/books/{id}/history",
        "/api/v1/admin/analytics/overview",
        "/api/v1/admin/analytics/overview/history",
        "/api/v1/admin/analytics/popular",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
}
