//! API keys on the reader (`API_KEYS_FILE`): reads need a key with the read scope, `GET /ping`
//! stays open, and a CORS preflight (which carries no credentials) is answered before the keys.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use reader::{Application, ReaderConfig};
use shared::http::ApiKeys;
use shared::testing::{self, error_message, send};
use sqlx::PgPool;
use uuid::Uuid;

/// SHA-256 of `reader-secret` and of `writer-secret` (`printf %s reader-secret | sha256sum`).
const KEYS: &str = "\
reports read f03319dee240faa729e0cfa7ab5ffd80a1d64a127e3643f239009abff6382914
ingest  write ef80202ea99d7c668a9677d9242456057ac10488311cb8757674490e194a56e1
";

fn get_with(path: &str, authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    request.body(Body::empty()).expect("request")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reads_need_a_key_with_the_read_scope(pool: PgPool) {
    let path = std::env::temp_dir().join(format!("reader-keys-{}", Uuid::new_v4()));
    std::fs::write(&path, KEYS).expect("write keys");
    let mut http = testing::http_config();
    http.api_keys = Some(ApiKeys::load(&path).expect("keys"));
    let app = Application::build_on(pool, testing::isolated_cache(), ReaderConfig::new(http));
    let router = app.router();
    let account = format!("/accounts/{}", Uuid::new_v4());

    let (status, body) = send(&router, get_with(&account, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(error_message(&body).contains("API key"), "{body}");
    let (status, _) = send(&router, get_with(&account, Some("Bearer nope"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send(&router, get_with(&account, Some("Bearer writer-secret"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error_message(&body).contains("read scope"), "{body}");
    // With the read scope the request reaches the handler: this account has no transactions.
    let (status, _) = send(&router, get_with(&account, Some("Bearer reader-secret"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Unknown paths are hidden behind the key too.
    let (status, _) = send(&router, get_with("/nope", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(send(&router, testing::get("/ping")).await.0, StatusCode::OK);
    let preflight = Request::options("/transactions")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
        .body(Body::empty())
        .expect("request");
    let (status, _) = send(&router, preflight).await;
    assert_eq!(status, StatusCode::OK);
    let _ = std::fs::remove_file(&path);
}
