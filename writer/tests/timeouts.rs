//! A POST is never left to time out while its transaction may still commit: one that no batch
//! took within its start deadline is answered 503 with nothing written, and a batch waits for a
//! row lock at most `lock_timeout`, then is rolled back (503, nothing written).

use std::time::{Duration, Instant};

use serde_json::json;
use shared::http::DATABASE_UNAVAILABLE;
use shared::testing::{self, error_message, post_json, send};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;
use writer::recorder::WRITER_BUSY;
use writer::{Application, WriterConfig};

mod common;
use common::lock_account;

fn post(account: Uuid, amount: i64) -> axum::http::Request<axum::body::Body> {
    post_json(
        "/transactions",
        json!({"account_id": account, "amount": amount}).to_string(),
    )
}

async fn transactions_of(pool: &PgPool, account: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM transactions WHERE account_id = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_post_no_batch_took_in_time_is_503_with_nothing_written(pool: PgPool) {
    let (blocked, queued) = (Uuid::new_v4(), Uuid::new_v4());
    testing::commit(&pool, blocked, 1, None).await;
    let config = WriterConfig {
        start_deadline: Duration::from_millis(200),
        ..WriterConfig::new(testing::http_config(), 1)
    };
    let app = Application::build_on(pool.clone(), testing::isolated_cache(), config).into_router();

    // The one batch worker waits on the lock with the first POST; the second waits in the
    // queue past its start deadline.
    let holder = lock_account(&pool, blocked).await;
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post(blocked, 5)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post(queued, 7)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.commit().await.expect("release the lock");

    let (status, body) = first.await.expect("first");
    assert_eq!(status, 201, "{body}");
    let (status, body) = second.await.expect("second");
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_message(&body), WRITER_BUSY);
    assert_eq!(
        transactions_of(&pool, queued).await,
        0,
        "nothing was written"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_batch_waits_for_a_row_lock_at_most_lock_timeout(pool: PgPool) {
    let account = Uuid::new_v4();
    testing::commit(&pool, account, 1, None).await;
    // The writer's pool as the services set it: lock_timeout on every connection.
    let options = (*pool.connect_options())
        .clone()
        .options([("lock_timeout", "300")]);
    let writer_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("pool");
    let app = Application::build_on(
        writer_pool,
        testing::isolated_cache(),
        WriterConfig::new(testing::http_config(), 1),
    )
    .into_router();

    let holder = lock_account(&pool, account).await;
    let started = Instant::now();
    let (status, body) = send(&app, post(account, 5)).await;
    let waited = started.elapsed();
    drop(holder);

    assert_eq!(status, 503, "{body}");
    assert_eq!(error_message(&body), DATABASE_UNAVAILABLE);
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    assert_eq!(
        transactions_of(&pool, account).await,
        1,
        "nothing was written"
    );
}
