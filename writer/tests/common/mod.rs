//! Helpers of the writer's integration tests (`write_path.rs`, `idempotency.rs`,
//! `timeouts.rs`, `primary_loss.rs`). Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use axum::http::{header, Request};
use axum::Router;
use serde_json::json;
use shared::cache::Cache;
use shared::testing;
use sqlx::PgPool;
use uuid::Uuid;
use writer::{Application, WriterConfig};

/// The writer with 4 batch workers; its repair loop waits an hour between passes, so the
/// tests that repair run the passes themselves.
pub fn writer_app(pool: PgPool, cache: Cache) -> Router {
    let config = WriterConfig {
        repair_interval: Duration::from_secs(3600),
        ..WriterConfig::new(testing::http_config(), 4)
    };
    Application::build_on(pool, cache, config).into_router()
}

pub fn transaction_body(account_id: Uuid, amount: i64) -> String {
    json!({"account_id": account_id, "amount": amount}).to_string()
}

pub fn post_with_key(key: &str, body: String) -> Request<axum::body::Body> {
    Request::post("/transactions")
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(body.into())
        .expect("request")
}

/// An account's balance, the sum of its transactions and their count.
pub async fn balance_and_sum(pool: &PgPool, account_id: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT a.balance, COALESCE(sum(t.amount), 0)::bigint, count(t.*)
         FROM accounts a LEFT JOIN transactions t USING (account_id)
         WHERE a.account_id = $1 GROUP BY a.balance",
    )
    .bind(account_id)
    .fetch_one(pool)
    .await
    .expect("account exists")
}

/// Holds the row lock of `account` in a transaction of its own until the returned
/// transaction is committed or dropped.
pub async fn lock_account(
    pool: &PgPool,
    account: Uuid,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE")
        .bind(account)
        .execute(&mut *holder)
        .await
        .expect("lock");
    holder
}
