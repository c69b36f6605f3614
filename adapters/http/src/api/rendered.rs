//! [`Rendered`]: a JSON answer whose bytes were made before the request, documented as the
//! type they render. The book page keeps its JSON beside the cached book
//! ([`ServedBook`](folio_domain::services::ServedBook)), so a view neither copies the book
//! nor builds a JSON tree; the OpenAPI document and the bytes sent are those of
//! poem-openapi's `Json<T>`.

use std::marker::PhantomData;

use bytes::Bytes;
use poem::http::header;
use poem::{IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::ApiResponse;

/// JSON bytes of a `T`, sent as `Json<T>` would send that value.
pub struct Rendered<T> {
    body: Bytes,
    of: PhantomData<fn() -> T>,
}

impl<T: ToJSON> Rendered<T> {
    /// The JSON `Json<T>` sends for `value`: the same tree, the same serialiser.
    pub fn render(value: &T) -> Vec<u8> {
        // A `serde_json::Value` always serialises.
        serde_json::to_vec(&value.to_json()).unwrap_or_default()
    }

    /// Bytes from [`Rendered::render`].
    pub fn new(body: Bytes) -> Self {
        Rendered {
            body,
            of: PhantomData,
        }
    }
}

impl<T: Type> Payload for Rendered<T> {
    const CONTENT_TYPE: &'static str = Json::<T>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        Json::<T>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T> IntoResponse for Rendered<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(self.body)
    }
}

impl<T: ToJSON> ApiResponse for Rendered<T> {
    fn meta() -> MetaResponses {
        Json::<T>::meta()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}
