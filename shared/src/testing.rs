//! Helpers for the services' tests (feature `testing`, enabled only in dev-dependencies).
//! Tests run against the real PostgreSQL (a fresh database per test, from `#[sqlx::test]`) and
//! the real Redis (a fresh key prefix per test).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::cache::{run_id_of, Cache, Keys};
use crate::db::{self, NewRecord};
use crate::domain::{IdempotencyKey, NewTransaction, Recorded, TransactionId};
use crate::http::HttpConfig;

/// The limits the services use by default.
pub fn http_config() -> HttpConfig {
    HttpConfig {
        body_limit_bytes: 16 * 1024,
        request_timeout: Duration::from_secs(10),
        cors_allowed_origins: Vec::new(),
    }
}

/// A cache on the real Redis (`REDIS_URL`) under a key prefix no other test uses.
pub fn isolated_cache() -> Cache {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = fresh_prefix(&url);
    Cache::new(&url, &prefix, Duration::from_secs(2)).expect("REDIS_URL is valid")
}

/// A key prefix no other test uses, on the Redis at `url`, with its views marked current.
///
/// A prefix nobody has used holds no views, so its views are current on this Redis: record
/// that, as a finished reset would. Otherwise the first link's reset scans the whole shared
/// keyspace for views that cannot be there, and on a Redis holding a benchmark's hundreds of
/// thousands of keys that outlasts the link's wait, so a test's first publish or fill could
/// not create views.
pub fn fresh_prefix(url: &str) -> String {
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    mark_views_current(url, &prefix);
    prefix
}

fn mark_views_current(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("REDIS_URL is valid");
    let mut connection = client.get_connection().expect("Redis at REDIS_URL answers");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut connection)
        .expect("INFO server");
    let run_id = run_id_of(&info).expect("INFO server has a run_id");
    redis::cmd("SET")
        .arg(Keys::new(prefix).generation())
        .arg(run_id)
        .query::<()>(&mut connection)
        .expect("SET the views' generation");
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
    let mut committed = db::record_transactions(pool, &[record])
        .await
        .expect("committed");
    committed.recorded.pop().expect("one transaction recorded")
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
