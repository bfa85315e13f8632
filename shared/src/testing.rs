//! Helpers for the services' tests (feature `testing`, enabled only in dev-dependencies).
//! Tests run against the real PostgreSQL (a fresh database per test, from `#[sqlx::test]`) and
//! the real Redis (a fresh key prefix per test).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::cache::{Cache, Retention, Target};
use crate::db::{self, NewRecord};
use crate::domain::{IdempotencyKey, NewTransaction, Recorded, TransactionId};
use crate::http::HttpConfig;

/// The limits the services use by default.
pub fn http_config() -> HttpConfig {
    HttpConfig {
        body_limit_bytes: 16 * 1024,
        request_timeout: Duration::from_secs(10),
        cors_allowed_origins: Vec::new(),
        api_keys: None,
    }
}

/// A cache on the real Redis (`REDIS_URL`) under a key prefix no other test uses.
pub fn isolated_cache() -> Cache {
    isolated_cache_with(Retention::default())
}

/// [`isolated_cache`] whose views live as `retention` says.
pub fn isolated_cache_with(retention: Retention) -> Cache {
    let prefix = fresh_prefix();
    let target = Target::new(&redis_url(), &[], "").expect("REDIS_URL is valid");
    Cache::on(target, &prefix, Duration::from_secs(2), retention)
}

/// The real Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// The time to live of `key` on the Redis at [`redis_url`], as `TTL` answers: seconds, -1 for
/// none, -2 for no such key.
pub fn ttl_of(key: &str) -> i64 {
    let client = redis::Client::open(redis_url()).expect("REDIS_URL is valid");
    let mut connection = client.get_connection().expect("Redis at REDIS_URL answers");
    redis::cmd("TTL")
        .arg(key)
        .query(&mut connection)
        .expect("TTL")
}

/// A key prefix no other test uses. It needs nothing set up in Redis: the first link opened
/// under it claims its views' generation.
pub fn fresh_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// Commits one transaction straight to PostgreSQL with the writer's record statement, without
/// publishing it to Redis (as a writer that died between commit and publish leaves it).
pub async fn commit(
    pool: &sqlx::PgPool,
    account_id: uuid::Uuid,
    amount: i64,
    idempotency_key: Option<&str>,
) -> Recorded {
    let record = NewRecord {
        transaction_id: TransactionId::new_random(),
        new: NewTransaction {
            account_id: account_id.into(),
            amount: amount.into(),
        },
        idempotency_key: idempotency_key
            .map(|key| IdempotencyKey::parse(key.as_bytes()).expect("a valid idempotency key")),
    };
    let mut recording = db::record_transactions(pool, &[record])
        .await
        .expect("the statement ran");
    recording
        .outcomes
        .pop()
        .expect("one outcome")
        .expect("recorded")
}

/// A cache whose Redis cannot be reached (nothing listens on port 1).
pub fn unreachable_cache() -> Cache {
    Cache::new("redis://127.0.0.1:1/0", "test:", Duration::from_millis(300)).expect("valid url")
}

/// A pool whose database cannot be reached (nothing listens on port 1): every query fails
/// after a short acquire timeout.
pub fn unreachable_pool() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .expect("valid url")
}

/// Sends one request through a router and returns the status and the JSON body.
pub async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    use tower::ServiceExt;
    status_and_json(app.clone().oneshot(request).await.expect("infallible")).await
}

/// The account view cached in Redis, parsed (panics if there is none).
pub async fn cached_account(cache: &Cache, account_id: uuid::Uuid) -> Value {
    let view = cache
        .account_view(account_id.into())
        .await
        .expect("redis answers")
        .expect("an account view is cached");
    serde_json::from_slice(&view).expect("the view is JSON")
}

pub fn post_json(uri: &str, body: impl Into<String>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.into()))
        .expect("valid request")
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::empty())
        .expect("valid request")
}

/// The response's status and its body parsed as JSON (`Value::Null` for an empty body).
pub async fn status_and_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body can be read")
        .to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("body is JSON")
    };
    (status, json)
}

/// Asserts the shape every error has: `{"error": "<message>"}`, and returns the message.
pub fn error_message(body: &Value) -> &str {
    let message = body["error"]
        .as_str()
        .expect("error body has an `error` string");
    assert!(!message.is_empty(), "error message is empty");
    message
}
