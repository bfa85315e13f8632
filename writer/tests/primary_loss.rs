//! A write whose PostgreSQL connection dies mid-statement (a primary killed or demoted, whose
//! sessions HAProxy cuts): its outcome is unknown to the writer, so it answers 503 with
//! `Retry-After`, says that it may have been recorded (retry only with the same key), and does
//! not retry; the client's retry under the same `Idempotency-Key` commits it exactly once.

use std::time::{Duration, Instant};

use axum::http::{header, Request, StatusCode};
use serde_json::json;
use shared::http::OUTCOME_UNKNOWN;
use shared::testing::{self, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;
use writer::{Application, WriterConfig};

mod common;
use common::lock_account;

fn post_with_key(key: &str, account: Uuid, amount: i64) -> Request<axum::body::Body> {
    Request::post("/transactions")
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(
            json!({"account_id": account, "amount": amount})
                .to_string()
                .into(),
        )
        .expect("request")
}

async fn count_and_balance(pool: &PgPool, account: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(t.*), a.balance FROM accounts a JOIN transactions t USING (account_id)
         WHERE a.account_id = $1 GROUP BY a.balance",
    )
    .bind(account)
    .fetch_one(pool)
    .await
    .expect("query")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_write_whose_connection_dies_mid_statement_is_a_503_and_its_retry_commits_once(
    pool: PgPool,
) {
    let app = Application::build_on(
        pool.clone(),
        testing::isolated_cache(),
        WriterConfig::new(testing::http_config(), 1),
    )
    .into_router();
    let account = Uuid::new_v4();
    let first = app
        .clone()
        .oneshot(post_with_key("first", account, 1))
        .await;
    assert_eq!(first.expect("infallible").status(), StatusCode::CREATED);

    // Hold the account's row so the next write waits inside its statement, then kill the
    // backend running it.
    let blocker = lock_account(&pool, account).await;
    let key = format!("order-{}", Uuid::new_v4());
    let pending = tokio::spawn(app.clone().oneshot(post_with_key(&key, account, 5)));
    let started = Instant::now();
    let terminated = loop {
        let killed: Option<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' LIMIT 1",
        )
        .fetch_optional(&pool)
        .await
        .expect("query");
        if let Some(killed) = killed {
            break killed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the write never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(terminated);
    let response = pending.await.expect("task").expect("infallible");
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Not "retry later": it may have committed, so the answer says how to retry safely.
    assert_eq!(testing::error_message(&body), OUTCOME_UNKNOWN);
    blocker.rollback().await.expect("rollback");
    assert_eq!(
        count_and_balance(&pool, account).await,
        (1, 1),
        "nothing committed"
    );

    // The client retries under its key: committed now, once; a second retry replays it.
    let retry = app.clone().oneshot(post_with_key(&key, account, 5)).await;
    let retry = retry.expect("infallible");
    assert!(retry.headers().get("idempotent-replayed").is_none());
    let (status, original) = status_and_json(retry).await;
    assert_eq!(status, StatusCode::CREATED, "{original}");
    let again = app.clone().oneshot(post_with_key(&key, account, 5)).await;
    let again = again.expect("infallible");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (status, replayed) = status_and_json(again).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replayed, original);
    assert_eq!(count_and_balance(&pool, account).await, (2, 6));
}
