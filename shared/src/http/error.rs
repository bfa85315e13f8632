//! The one error type of the HTTP API, and what each failure means to a client.
//!
//! Every failure a client can see is an [`ApiError`], rendered as `{"error": "<message>"}` with
//! `Content-Type: application/json`. Messages name the client's problem; internal causes are
//! logged (with their whole chain, inside the request's span) and never sent. What each storage
//! error means to a client is decided here, at the edge, so storage (`db`, `cache`) knows
//! nothing of HTTP.

use axum::http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::db::{self, RecordError};
use crate::domain::ValidationError;

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
    /// 422: well-formed, but it cannot be applied (e.g. the balance would leave its range).
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

/// What clients get when PostgreSQL cannot be reached or is too slow (and nothing was written).
pub const DATABASE_UNAVAILABLE: &str = "database unavailable, retry later";

/// What a POST gets when the database connection broke while its transaction was being
/// committed: it may have been recorded, so a blind retry could apply it twice.
pub const OUTCOME_UNKNOWN: &str = "the database connection broke while this transaction was being \
     recorded, so it may have been recorded: retry only with the same Idempotency-Key (which \
     never applies it twice), or look for it before sending it again";

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
            RecordError::BalanceOutOfRange => Self::Unprocessable(
                "the account's balance would leave -9007199254740991 to 9007199254740991 (2^53 - 1, \
                 the largest integer every JSON client holds exactly); nothing was recorded"
                    .into(),
            ),
            RecordError::Database(ref cause) if RecordError::outcome_unknown_of(cause) => {
                Self::Unavailable(OUTCOME_UNKNOWN)
            }
            RecordError::Database(error) => error.into(),
            // The writer replays the key's transaction; reaching here is a bug.
            RecordError::IdempotencyKeyTaken
            | RecordError::UnexpectedRows { .. }
            | RecordError::UnexpectedOutcome { .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;

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
