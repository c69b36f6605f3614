//! Request bodies.
//!
//! [`RawBody`]: the raw bytes of a request, whatever (or whether) its `Content-Type`; for
//! file uploads and payment webhooks, which are read with a size limit.
//!
//! [`JsonBody`]: a JSON request body whose errors name the field that is wrong.
//!
//! Every JSON body is checked against its type's schema BEFORE poem-openapi parses it, and
//! the first missing or mistyped field is named. This does two things poem-openapi's own
//! `Json<T>` does not:
//! - it is strict: poem-openapi reads a number or a boolean into a `String` field
//!   (`{"title":123}` would store "123"); here a string field takes only a JSON string;
//! - it names the field: poem-openapi says "expected input type string, found null
//!   (occurred while parsing RegisterRequest)".

use std::ops::Deref;

use poem::{Body, FromRequest, Request, RequestBody};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::impl_apirequest_for_payload;
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::Value;

/// The raw request body, not yet read. Unlike poem-openapi's `Binary`, a missing
/// `Content-Type` is no error: a webhook sender or a script may well leave it out.
pub struct RawBody(pub Body);

impl<'a> ApiExtractor<'a> for RawBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "*/*",
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                    format: Some("binary"),
                    ..MetaSchema::new("string")
                })),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(RawBody(
            <Body as FromRequest>::from_request(request, body).await?,
        ))
    }
}

/// The largest JSON body accepted: far above any valid request (a book's description is
/// at most 10000 characters), far below what would strain memory.
pub const MAX_JSON_BYTES: usize = 256 * 1024;

/// A JSON request body (`application/json`).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T> Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

fn invalid(reason: impl Into<String>) -> poem::Error {
    ParseRequestPayloadError {
        reason: reason.into(),
    }
    .into()
}

impl<T: ParseFromJSON> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let body = <Body as FromRequest>::from_request(request, body).await?;
        let data = body.into_bytes_limit(MAX_JSON_BYTES).await.map_err(|e| {
            let mut err = poem::Error::from(e);
            err.set_error_message(format!(
                "the JSON body is larger than {MAX_JSON_BYTES} bytes"
            ));
            err
        })?;
        if data.is_empty() {
            return Err(invalid("the body is empty; send a JSON object"));
        }
        let value: Value = serde_json::from_slice(&data)
            .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
        // Strict types first: poem-openapi would coerce a number into a string field.
        if let Some(problem) = diagnose::<T>(&value) {
            return Err(invalid(problem));
        }
        T::parse_from_json(Some(value))
            .map(JsonBody)
            .map_err(|err| invalid(err.into_message()))
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON);

fn resolve(schema: &MetaSchemaRef, registry: &Registry) -> Option<MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(s) => Some((**s).clone()),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name).cloned(),
    }
}

fn describe(ty: &str) -> &str {
    match ty {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "true or false",
        "array" => "an array",
        "object" => "an object",
        other => other,
    }
}

fn fits(value: &Value, schema: &MetaSchema) -> bool {
    let type_ok = match schema.ty {
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    };
    type_ok && (schema.enum_items.is_empty() || schema.enum_items.contains(value))
}

/// Whether a number is outside the schema's `minimum`/`maximum`.
fn out_of_range(name: &str, value: &Value, schema: &MetaSchema) -> Option<String> {
    let n = value.as_f64()?;
    let show = |bound: f64| {
        if bound.fract() == 0.0 && bound.abs() < 1e15 {
            format!("{}", bound as i64)
        } else {
            bound.to_string()
        }
    };
    if let Some(min) = schema.minimum {
        if n < min || (schema.exclusive_minimum == Some(true) && n <= min) {
            return Some(format!(
                "field `{name}` must be at least {}, got {value}",
                show(min)
            ));
        }
    }
    if let Some(max) = schema.maximum {
        if n > max || (schema.exclusive_maximum == Some(true) && n >= max) {
            return Some(format!(
                "field `{name}` must be at most {}, got {value}",
                show(max)
            ));
        }
    }
    None
}

/// The first missing or mistyped top-level field of `value` for `T`'s schema, if any.
fn diagnose<T: Type>(value: &Value) -> Option<String> {
    let mut registry = Registry::new();
    T::register(&mut registry);
    let schema = resolve(&T::schema_ref(), &registry)?;
    let Some(fields) = value.as_object() else {
        return Some(format!("the body must be a JSON object, not {value}"));
    };
    for name in &schema.required {
        if fields.get(*name).is_none_or(Value::is_null) {
            return Some(format!("field `{name}` is required"));
        }
    }
    for (name, field_schema) in &schema.properties {
        let (Some(v), Some(s)) = (fields.get(*name), resolve(field_schema, &registry)) else {
            continue;
        };
        if v.is_null() {
            if s.nullable {
                continue;
            }
            return Some(format!("field `{name}` must not be null"));
        }
        if fits(v, &s) {
            if let Some(problem) = out_of_range(name, v, &s) {
                return Some(problem);
            }
            continue;
        }
        return Some(if s.enum_items.is_empty() {
            format!("field `{name}` must be {}, got {v}", describe(s.ty))
        } else {
            let allowed: Vec<String> = s.enum_items.iter().map(Value::to_string).collect();
            format!(
                "field `{name}` must be one of {}, got {v}",
                allowed.join(", ")
            )
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use poem_openapi::Object;
    use serde_json::json;

    use super::diagnose;

    #[derive(Debug, Object)]
    struct Sample {
        name: String,
        count: i64,
        note: Option<String>,
    }

    #[test]
    fn numbers_and_booleans_are_not_strings() {
        assert_eq!(
            diagnose::<Sample>(&json!({"name": 123, "count": 1})).as_deref(),
            Some("field `name` must be a string, got 123")
        );
        assert_eq!(
            diagnose::<Sample>(&json!({"name": "x", "count": 1, "note": true})).as_deref(),
            Some("field `note` must be a string, got true")
        );
        assert_eq!(
            diagnose::<Sample>(&json!({"name": "x", "count": 1.5})).as_deref(),
            Some("field `count` must be an integer, got 1.5")
        );
    }

    #[derive(Debug, Object)]
    struct Ranged {
        #[oai(validator(minimum(value = "1"), maximum(value = "5")))]
        stars: i64,
        #[oai(default)]
        text: String,
        #[oai(nullable)]
        note: Option<String>,
    }

    #[test]
    fn ranges_and_nulls_follow_the_schema() {
        assert_eq!(
            diagnose::<Ranged>(&json!({"stars": 0})).as_deref(),
            Some("field `stars` must be at least 1, got 0")
        );
        assert_eq!(
            diagnose::<Ranged>(&json!({"stars": 6})).as_deref(),
            Some("field `stars` must be at most 5, got 6")
        );
        assert_eq!(
            diagnose::<Ranged>(&json!({"stars": 3, "text": null})).as_deref(),
            Some("field `text` must not be null")
        );
        assert_eq!(diagnose::<Ranged>(&json!({"stars": 3, "note": null})), None);
    }

    #[test]
    fn names_the_missing_or_mistyped_field() {
        assert_eq!(
            diagnose::<Sample>(&json!({"count": 1})).as_deref(),
            Some("field `name` is required")
        );
        assert_eq!(
            diagnose::<Sample>(&json!({"name": "x", "count": "one"})).as_deref(),
            Some("field `count` must be an integer, got \"one\"")
        );
        assert_eq!(
            diagnose::<Sample>(&json!({"name": "x", "count": 1, "note": 5})).as_deref(),
            Some("field `note` must be a string, got 5")
        );
        assert_eq!(
            diagnose::<Sample>(&json!([1])).as_deref(),
            Some("the body must be a JSON object, not [1]")
        );
        assert_eq!(diagnose::<Sample>(&json!({"name": "x", "count": 1})), None);
    }
}
