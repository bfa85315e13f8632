//! Read-your-writes across the two services: every read through the reader that follows a 201
//! from the writer reflects that write, on the real PostgreSQL and Redis.

use serde_json::json;
use shared::db;
use shared::domain::AccountId;
use shared::testing::{self, get, post_json, send};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_read_after_a_201_reflects_that_write(pool: PgPool) {
    let cache = testing::isolated_cache();
    let writer = cqrs_tests::writer(&pool, cache.clone()).into_router();
    let reader = cqrs_tests::reader(&pool, cache).into_router();
    let account_id = Uuid::new_v4();
    let mut balance = 0;

    // Read first, so the reader has cached a view that every write must then supersede.
    testing::commit(&pool, account_id, 1, None).await;
    balance += 1;
    let (_, account) = send(&reader, get(&format!("/accounts/{account_id}"))).await;
    assert_eq!(account["balance"], balance);

    for amount in [4, -3, 10, -20, 7, 1, -1, 100, -50, 2] {
        let body = json!({"account_id": account_id, "amount": amount}).to_string();
        let (status, created) = send(&writer, post_json("/transactions", body)).await;
        assert_eq!(status, 201);
        balance += amount;

        let (status, account) = send(&reader, get(&format!("/accounts/{account_id}"))).await;
        assert_eq!(status, 200);
        assert_eq!(account["balance"], balance, "after {amount}");
        let transaction_id = created["transaction_id"].as_str().expect("id");
        let (status, transaction) =
            send(&reader, get(&format!("/transactions/{transaction_id}"))).await;
        assert_eq!(status, 200);
        assert_eq!(transaction, created);
    }
    let account = db::load_account(&pool, AccountId::from(account_id))
        .await
        .expect("query")
        .expect("account");
    assert_eq!(account.account.balance, balance);
}
