//! The one error type of the HTTP API and the extractors that produce it.
//!
//! Every failure a client can see is an [`ApiError`], rendered as `{"error": "<message>"}` with
//! `Content-Type: application/json`. Messages name the client's problem; internal causes are
//! logged (with their whole chain) and never sent. What each storage error means to a client is
//! decided here, at the edge, so the storage layer ([`crate::db`]) knows nothing of HTTP.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::db::{self, RecordError};
use crate::domain::{Identifier, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a field is missing or of the wrong type.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such resource, or no such path.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not with this method; `Allow` lists the methods it has.
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// 413: the body is larger than the service accepts.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 415: the body is not declared as JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 422: well-formed, but it cannot be applied (e.g. the balance would overflow).
    #[error("{0}")]
    Unprocessable(String),
    /// 503 with `Retry-After`: a dependency is unreachable or too slow; safe to retry.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 500: a bug or an unexpected failure. Logged with its cause chain; the client only
    /// learns that it happened.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
    /// 500 for a failure already logged, with its cause chain, where it happened: a batch of
    /// writes that failed is logged once by the recorder, not again by each of its requests.
    #[error("internal server error")]
    InternalLogged,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::InternalLogged => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::BadRequest(error.to_string())
    }
}

/// What clients get when PostgreSQL cannot be reached or is too slow.
pub const DATABASE_UNAVAILABLE: &str = "database unavailable, retry later";

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if db::is_unavailable(&error) {
            Self::Unavailable(DATABASE_UNAVAILABLE)
        } else {
            Self::Internal(anyhow::Error::new(error).context("database query failed"))
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::BalanceOverflow => Self::Unprocessable(
                "the account's balance would overflow a signed 64-bit integer; nothing was recorded"
                    .into(),
            ),
            RecordError::Database(error) => error.into(),
            // The writer replays the key's transaction; reaching here is a bug.
            RecordError::IdempotencyKeyTaken | RecordError::UnexpectedRows { .. } => {
                Self::Internal(anyhow::Error::new(error).context("recording a transaction failed"))
            }
        }
    }
}

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: HeaderValue = HeaderValue::from_static("1");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed")
            }
            Self::Unavailable(what) => tracing::warn!(error = what, "dependency unavailable"),
            Self::InternalLogged => tracing::debug!("request failed; its cause was logged once"),
            _ => {}
        }
        let mut response = error_response(self.status(), &self.to_string());
        match self {
            Self::MethodNotAllowed { allow } => {
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, RETRY_AFTER_SECONDS);
            }
            _ => {}
        }
        response
    }
}

/// `{"error": message}` with a JSON content type.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// A request body that is a JSON object, declared as JSON.
///
/// Refuses, each with its own message: a content type other than `application/json` (or
/// `application/<something>+json`; parameters such as `charset` are fine) with 415, a body over
/// the limit with 413, an empty body, malformed JSON, and JSON that is not an object with 400.
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
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(fields)) => Ok(Self(fields)),
            Ok(_) => Err(ValidationError::NotAnObject.into()),
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
    use axum::http::HeaderValue;

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

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let response = ApiError::Internal(anyhow::anyhow!("password=hunter2")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            ApiError::Internal(anyhow::anyhow!("password=hunter2")).to_string(),
            "internal server error"
        );
    }

    #[test]
    fn unavailable_responses_say_when_to_retry() {
        let response = ApiError::Unavailable("database unavailable").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }
}
