//! Request extractors that refuse with an [`ApiError`] (our JSON), never axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};

use super::unique_keys::UniqueKeys;
use super::ApiError;
use crate::domain::{Identifier, ValidationError};

/// A request body that is a JSON object, declared as JSON.
///
/// Refuses, each with its own message: a content type other than `application/json` (or
/// `application/<something>+json`; parameters such as `charset` are fine) with 415, a body over
/// the limit with 413, an empty body, malformed JSON, an object that repeats a key (at any depth;
/// see `unique_keys`), and JSON that is not an object with 400.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !declares_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "request body is empty; expected a JSON object".into(),
            ));
        }
        match serde_json::from_slice::<UniqueKeys>(&body) {
            Ok(UniqueKeys(Value::Object(fields))) => Ok(Self(fields)),
            Ok(_) => Err(ValidationError::NotAnObject.into()),
            Err(error) if error.is_data() => {
                Err(ApiError::BadRequest(format!("request body {error}")))
            }
            // serde_json's message says where the syntax broke; it describes the client's own
            // input, so it is safe to pass on.
            Err(error) => Err(ApiError::BadRequest(format!(
                "request body is not valid JSON: {error}"
            ))),
        }
    }
}

fn declares_json(headers: &HeaderMap) -> bool {
    let Some(Ok(content_type)) = headers.get(CONTENT_TYPE).map(HeaderValue::to_str) else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", subtype)) => subtype == "json" || subtype.ends_with("+json"),
        _ => false,
    }
}

/// An id taken from the path (`/accounts/{account_id}`, `/transactions/{transaction_id}`);
/// anything that is not a UUID is a 400 that names the parameter.
pub struct PathId<T>(pub T);

impl<S: Send + Sync, T: Identifier> FromRequestParts<S> for PathId<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // A segment that is not valid UTF-8 after percent-decoding is not a UUID either.
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ValidationError::NotAUuid(T::FIELD))?;
        Ok(Self(T::parse(&raw)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn json_content_types_are_recognised_with_or_without_parameters() {
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "application/merge-patch+json",
        ] {
            assert!(declares_json(&with_content_type(accepted)), "{accepted}");
        }
    }

    #[test]
    fn other_content_types_are_not_json() {
        for refused in ["application/xml", "text/plain", "text/json", "json", ""] {
            assert!(!declares_json(&with_content_type(refused)), "{refused}");
        }
        assert!(!declares_json(&HeaderMap::new()));
    }
}
