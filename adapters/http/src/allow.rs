//! The `Allow` header of a 405: which methods a path takes, read from the OpenAPI document
//! the handlers generate (so it cannot drift from the routes) plus the operator endpoints.

use std::sync::OnceLock;

use poem::http::HeaderValue;

/// One path template: literal segments, `None` for a parameter such as `{id}`.
struct Template {
    segments: Vec<Option<String>>,
    allow: HeaderValue,
}

/// Operator endpoints outside the API: all GET (and so HEAD).
const OPERATOR_PATHS: [&str; 5] = [
    "/openapi.json",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/admin",
];

fn templates() -> &'static [Template] {
    static TEMPLATES: OnceLock<Vec<Template>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let doc: serde_json::Value =
            serde_json::from_str(&crate::openapi_json()).unwrap_or_default();
        let mut out: Vec<Template> = Vec::new();
        let mut add = |path: &str, mut methods: Vec<String>| {
            if methods.iter().any(|m| m == "GET") {
                // poem answers HEAD for every GET route.
                methods.push("HEAD".into());
            }
            const ORDER: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
            methods.sort_by_key(|m| ORDER.iter().position(|o| o == m).unwrap_or(ORDER.len()));
            let Ok(allow) = HeaderValue::from_str(&methods.join(", ")) else {
                return;
            };
            let segments = path
                .trim_matches('/')
                .split('/')
                .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                .collect();
            out.push(Template { segments, allow });
        };
        if let Some(paths) = doc["paths"].as_object() {
            for (path, item) in paths {
                let methods = item
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
                    .unwrap_or_default();
                add(path, methods);
            }
        }
        for path in OPERATOR_PATHS {
            add(path, vec!["GET".into()]);
        }
        out
    })
}

/// The `Allow` value for a request path, if it names a known resource.
pub(crate) fn for_path(path: &str) -> Option<HeaderValue> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    templates()
        .iter()
        .find(|t| {
            t.segments.len() == segments.len()
                && t.segments
                    .iter()
                    .zip(&segments)
                    .all(|(want, got)| want.as_deref().is_none_or(|w| w == *got))
        })
        .map(|t| t.allow.clone())
}

#[cfg(test)]
mod tests {
    use super::for_path;

    fn allow(path: &str) -> Option<String> {
        for_path(path).and_then(|v| v.to_str().ok().map(str::to_owned))
    }

    #[test]
    fn lists_the_methods_each_path_takes() {
        assert_eq!(allow("/api/v1/books").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(
            allow("/api/v1/books/7").as_deref(),
            Some("GET, HEAD, PUT, DELETE")
        );
        assert_eq!(allow("/api/v1/books/7/file").as_deref(), Some("PUT"));
        assert_eq!(allow("/api/v1/auth/login").as_deref(), Some("POST"));
        assert_eq!(allow("/health/live").as_deref(), Some("GET, HEAD"));
        assert_eq!(allow("/nowhere"), None);
    }
}
