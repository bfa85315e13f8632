//! HTTP plumbing both services share, on top of axum: the public route table
//! (`http/routes.rs`), the middleware stack (`http/middleware.rs`), the request extractors
//! (`http/extract.rs`, with `http/unique_keys.rs`), optional API keys (`http/api_keys.rs`),
//! the one error type and its JSON (`http/error.rs`), JSON answers
//! (`http/responses.rs`) and serving with graceful shutdown (`http/server.rs`).
//!
//! This layer sits above storage and telemetry and below settings: it maps storage errors to
//! statuses, and takes its limits as [`HttpConfig`] and [`ServeConfig`], which settings builds.

mod api_keys;
mod error;
mod extract;
mod middleware;
mod responses;
mod routes;
mod server;
mod unique_keys;

use axum::http::HeaderName;

pub use api_keys::{ApiKeyId, ApiKeys};
pub use error::{error_response, ApiError, DATABASE_UNAVAILABLE, OUTCOME_UNKNOWN};
pub use extract::{JsonObject, PathId};
pub use middleware::{with_middleware, HttpConfig};
pub use responses::{conditional_json, json_body};
pub use routes::{allowed_methods, ping, unrouted, Routes, PUBLIC_ROUTES};
pub use server::{metrics_router, serve, serve_until_signal, shutdown_signal, ServeConfig};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
