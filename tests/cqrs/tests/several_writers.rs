//! Several writers on one database and one Redis: a writer that cannot publish (Redis lost for
//! it, or it died between commit and publish) leaves its changes in the shared outbox, and the
//! other writers' repair passes publish them; passes running at the same time do not conflict.

use std::time::Duration;

use serde_json::json;
use shared::cache::Cache;
use shared::db;
use shared::testing::{self, post_json, send};
use sqlx::PgPool;
use uuid::Uuid;
use writer::publisher;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_writer_that_cannot_publish_is_repaired_by_the_others_without_conflict(pool: PgPool) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = testing::fresh_prefix();
    let live = || Cache::new(&url, &prefix, Duration::from_secs(2)).expect("url");
    let stranded = cqrs_tests::writer(&pool, testing::unreachable_cache()).into_router();
    let healthy = cqrs_tests::writer(&pool, live()).into_router();
    let accounts: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for round in 0..20_i64 {
        for (i, account) in accounts.iter().enumerate() {
            let app = if (round + i as i64) % 2 == 0 {
                &stranded
            } else {
                &healthy
            };
            let body = json!({"account_id": account, "amount": round + 1}).to_string();
            let (status, json) = send(app, post_json("/transactions", body)).await;
            assert_eq!(status, 201, "{json}");
        }
    }
    // The stranded writer's changes wait; once older than the lag limit, readers bypass views.
    sqlx::query("UPDATE publish_batches SET created_at = created_at - interval '1 minute'")
        .execute(&pool)
        .await
        .expect("age the outbox");
    assert!(db::publishing_is_behind(&pool, reader::PUBLISH_LAG_LIMIT)
        .await
        .expect("query"));

    // Two live writers' repair passes at once, on the same rows.
    let (first, second) = (live(), live());
    let (a, b) = tokio::join!(
        publisher::repair_once(&pool, &first),
        publisher::repair_once(&pool, &second)
    );
    let (a, b) = (a.expect("first pass"), b.expect("second pass"));
    assert!(a + b >= 50, "{a} + {b} republished, 50 were pending");

    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM publish_outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(pending, 0);
    assert!(!db::publishing_is_behind(&pool, reader::PUBLISH_LAG_LIMIT)
        .await
        .expect("query"));
    let expected: i64 = (1..=20).sum();
    for account in &accounts {
        assert_eq!(
            testing::cached_account(&first, *account).await,
            json!({"account_id": account, "balance": expected}),
        );
    }
}
