//! `GET /ping` and `GET /openapi.json`: about the service, not the ledger.

use axum::body::Bytes;
use axum::response::Response;
use shared::http::{self, Routes};

use crate::AppState;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .get("/ping", http::ping)
        .get("/openapi.json", openapi)
}

/// The OpenAPI document of the whole API (both services), built into the binary so that the
/// document served always matches the build serving it.
pub const OPENAPI_JSON: &[u8] = include_bytes!("../openapi.json");

async fn openapi() -> Response {
    http::json_body(Bytes::from_static(OPENAPI_JSON))
}
