//! `GET /api/v1`: what the API offers, read from its own OpenAPI document so it never
//! drifts from the handlers.

use std::sync::OnceLock;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;

use super::ApiTags;
use crate::problem::Answer;

/// One operation of the API.
#[derive(Debug, Clone, Object)]
pub struct OperationLink {
    pub method: String,
    /// The full path (under `/api/v1`), `{id}` standing for a path parameter.
    pub path: String,
    pub operation_id: String,
    pub summary: String,
    /// True when it needs a bearer token (ADMIN for `/admin/...`).
    pub needs_token: bool,
}

/// The API's index: where its documents are, and every operation.
#[derive(Debug, Clone, Object)]
pub struct ApiIndex {
    pub name: String,
    pub version: String,
    /// Swagger UI.
    pub docs: String,
    /// The OpenAPI document.
    pub openapi: String,
    /// The admin dashboard.
    pub dashboard: String,
    pub operations: Vec<OperationLink>,
}

/// The operations listed in an OpenAPI document, in its order.
fn operations(spec: &Value) -> Vec<OperationLink> {
    let mut out = Vec::new();
    let Some(paths) = spec.get("paths").and_then(Value::as_object) else {
        return out;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let text = |k: &str| op.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let needs_token = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| {
                    !s.is_empty()
                        && !s
                            .iter()
                            .any(|o| o.as_object().is_some_and(|o| o.is_empty()))
                });
            out.push(OperationLink {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                operation_id: text("operationId"),
                summary: text("summary"),
                needs_token,
            });
        }
    }
    out
}

fn index() -> &'static ApiIndex {
    static INDEX: OnceLock<ApiIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let spec: Value = serde_json::from_str(&super::service().spec()).unwrap_or(Value::Null);
        ApiIndex {
            name: "folio bookstore API".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            docs: "/docs".into(),
            openapi: "/openapi.json".into(),
            dashboard: "/admin".into(),
            operations: operations(&spec),
        }
    })
}

crate::statuses! {
    /// `api_index`
    ApiIndexStatuses = [];
}

/// The index.
pub struct IndexApi;

#[OpenApi(tag = "ApiTags::Index")]
impl IndexApi {
    /// The API's index
    ///
    /// Where the documentation is, and every operation with its method, path and summary.
    #[oai(path = "/", method = "get", operation_id = "api_index")]
    async fn api_index(&self) -> Answer<Json<ApiIndex>, ApiIndexStatuses> {
        Ok(Json(index().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_lists_every_operation_of_the_document() {
        let spec: Value = serde_json::from_str(&crate::api::service().spec()).unwrap_or_default();
        let ops = operations(&spec);
        let count = spec["paths"].as_object().map_or(0, |p| {
            p.values()
                .filter_map(Value::as_object)
                .map(|o| o.len())
                .sum()
        });
        assert_eq!(ops.len(), count);
        let find = |id: &str| ops.iter().find(|o| o.operation_id == id).cloned();
        let list = find("list_books").map(|o| (o.method, o.path, o.needs_token));
        assert_eq!(list, Some(("GET".into(), "/api/v1/books".into(), false)));
        let popular = find("popular").map(|o| (o.method, o.path, o.needs_token));
        assert_eq!(
            popular,
            Some(("GET".into(), "/api/v1/admin/analytics/popular".into(), true))
        );
        let view = find("get_book").map(|o| (o.path, o.needs_token));
        assert_eq!(view, Some(("/api/v1/books/{id}".into(), false)));
    }
}
