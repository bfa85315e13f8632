//! Idempotent retries of `POST /transactions` on a real PostgreSQL database (fresh per test) and
//! the real Redis: the same `Idempotency-Key` applies a request once, however often and however
//! concurrently it is retried, and a replayed 201 publishes like the first.

mod common;

use axum::http::StatusCode;
use common::{balance_and_sum, post_with_key, transaction_body, writer_app};
use serde_json::json;
use shared::testing::{self, error_message, send, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_retry_with_the_same_idempotency_key_returns_the_original_and_applies_once(pool: PgPool) {
    let app = writer_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();
    let key = format!("order-{}", Uuid::new_v4());

    let first = app
        .clone()
        .oneshot(post_with_key(&key, transaction_body(account_id, 25)))
        .await
        .expect("infallible");
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, original) = status_and_json(first).await;
    assert_eq!(status, StatusCode::CREATED);

    let retry = app
        .clone()
        .oneshot(post_with_key(&key, transaction_body(account_id, 25)))
        .await
        .expect("infallible");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let (status, replayed) = status_and_json(retry).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replayed, original, "same transaction, same body");
    assert_eq!(balance_and_sum(&pool, account_id).await, (25, 25, 1));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reusing_an_idempotency_key_for_a_different_request_is_refused(pool: PgPool) {
    let app = writer_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();
    let (status, _) = send(&app, post_with_key("k-1", transaction_body(account_id, 5))).await;
    assert_eq!(status, StatusCode::CREATED);

    for different in [
        transaction_body(account_id, 6),
        transaction_body(Uuid::new_v4(), 5),
    ] {
        let (status, json) = send(&app, post_with_key("k-1", different)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error_message(&json).contains("Idempotency-Key"));
    }
    assert_eq!(balance_and_sum(&pool, account_id).await, (5, 5, 1));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn concurrent_retries_of_one_key_apply_it_once(pool: PgPool) {
    let app = writer_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();
    let retries = (0..25).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            let response = app
                .oneshot(post_with_key("same-key", transaction_body(account_id, 3)))
                .await
                .expect("infallible");
            status_and_json(response).await
        })
    });
    let answers = futures_util::future::join_all(retries).await;
    let mut ids = std::collections::HashSet::new();
    for answer in answers {
        let (status, json) = answer.expect("task");
        assert_eq!(status, StatusCode::CREATED, "{json}");
        ids.insert(json["transaction_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "every retry got the one transaction");
    assert_eq!(balance_and_sum(&pool, account_id).await, (3, 3, 1));
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_with_400() {
    let app = writer_app(testing::unreachable_pool(), testing::unreachable_cache());
    let long = "k".repeat(256);
    for key in ["", "   ", long.as_str()] {
        let (status, json) = send(
            &app,
            post_with_key(key, transaction_body(Uuid::new_v4(), 1)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}");
        assert!(error_message(&json).contains("Idempotency-Key"));
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_replayed_201_publishes_so_the_next_read_sees_the_write(pool: PgPool) {
    // The first attempt committed, then the writer died before publishing: Redis still holds
    // the account's previous view.
    let cache = testing::isolated_cache();
    let account_id = Uuid::new_v4();
    let before = testing::commit(&pool, account_id, 10, None).await;
    cache
        .publish([&before], &cache.ticket().await)
        .await
        .expect("publish");
    testing::commit(&pool, account_id, 5, Some("lost-answer")).await;

    // The client retries with the same key.
    let app = writer_app(pool.clone(), cache.clone());
    let (status, _) = send(
        &app,
        post_with_key("lost-answer", transaction_body(account_id, 5)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    assert_eq!(
        testing::cached_account(&cache, account_id).await,
        json!({"account_id": account_id, "balance": 15})
    );
}
