//! The listing, `GET /transactions`, on the real PostgreSQL: streamed whole or paged, its
//! parameters, and its bounds (how many stream at once, for how long).

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::Router;
use reader::{Application, ListLimits, ReaderConfig};
use serde_json::json;
use shared::cache::Cache;
use shared::domain::Recorded;
use shared::testing::{self, error_message, get, send, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

fn reader_app(pool: PgPool, cache: Cache) -> Router {
    Application::build_on(pool, cache, ReaderConfig::new(testing::http_config())).into_router()
}

/// Commits a transaction straight to PostgreSQL, without publishing it to Redis.
async fn commit(pool: &PgPool, account_id: Uuid, amount: i64) -> Recorded {
    testing::commit(pool, account_id, amount, None).await
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_list_streams_every_transaction_newest_first(pool: PgPool) {
    let app = reader_app(pool.clone(), testing::isolated_cache());
    let (status, empty) = send(&app, get("/transactions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!([]));

    // Enough rows to span several chunks of the streamed body.
    let account_id = Uuid::new_v4();
    let mut created = Vec::new();
    for amount in 1..=400 {
        created.push(commit(&pool, account_id, amount).await.transaction);
    }
    let (status, listed) = send(&app, get("/transactions")).await;
    assert_eq!(status, StatusCode::OK);
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), created.len());
    for (listed, created) in listed.iter().zip(created.iter().rev()) {
        assert_eq!(listed, &serde_json::to_value(created).expect("json"));
    }
}

#[tokio::test]
async fn the_list_answers_503_not_a_broken_200_when_the_database_is_down() {
    let app = reader_app(testing::unreachable_pool(), testing::unreachable_cache());
    let (status, json) = send(&app, get("/transactions")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    error_message(&json);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn paging_with_limit_and_the_next_link_walks_every_transaction_once(pool: PgPool) {
    let app = reader_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();
    for amount in 1..=7 {
        commit(&pool, account_id, amount).await;
    }
    let other_account = Uuid::new_v4();
    commit(&pool, other_account, 100).await;

    let mut next = Some(format!("/transactions?account_id={account_id}&limit=3"));
    let mut amounts = Vec::new();
    let mut pages = 0;
    while let Some(uri) = next.take() {
        let response = app.clone().oneshot(get(&uri)).await.expect("infallible");
        next = response.headers().get(header::LINK).map(|link| {
            let link = link.to_str().expect("ascii");
            assert!(link.ends_with(r#">; rel="next""#), "{link}");
            link.trim_start_matches('<')
                .split('>')
                .next()
                .expect("uri")
                .to_owned()
        });
        let (status, page) = status_and_json(response).await;
        assert_eq!(status, StatusCode::OK);
        let page = page.as_array().expect("array").clone();
        assert!(page.len() <= 3);
        // A transaction committed between pages must not shift or repeat later pages.
        if pages == 0 {
            commit(&pool, account_id, 1000).await;
        }
        amounts.extend(page.iter().map(|t| t["amount"].as_i64().expect("amount")));
        pages += 1;
    }
    assert_eq!(
        amounts,
        vec![7, 6, 5, 4, 3, 2, 1],
        "newest first, each once"
    );
    assert_eq!(pages, 3);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn invalid_list_parameters_get_400(pool: PgPool) {
    let app = reader_app(pool, testing::isolated_cache());
    for (query, expected) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=42", "after"),
        ("after=c-1", "after"),
        ("account_id=nope", "account_id"),
    ] {
        let (status, json) = send(&app, get(&format!("/transactions?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(error_message(&json).contains(expected), "{query}: {json}");
    }
}

/// `rows` transactions of one new account, amounts 1..=rows, straight into PostgreSQL.
async fn insert_transactions(pool: &PgPool, rows: i64) {
    let account_id = Uuid::new_v4();
    sqlx::query("INSERT INTO accounts (account_id, balance, version) VALUES ($1, $2, $3)")
        .bind(account_id)
        .bind(rows * (rows + 1) / 2)
        .bind(rows)
        .execute(pool)
        .await
        .expect("account");
    sqlx::query(
        "INSERT INTO transactions (transaction_id, account_id, amount)
         SELECT gen_random_uuid(), $1, i FROM generate_series(1, $2::bigint) AS i",
    )
    .bind(account_id)
    .bind(rows)
    .execute(pool)
    .await
    .expect("transactions");
}

fn reader_with_listings(pool: PgPool, listings: ListLimits) -> Router {
    let config = ReaderConfig {
        listings,
        ..ReaderConfig::new(testing::http_config())
    };
    Application::build_on(pool, testing::isolated_cache(), config).into_router()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn unpaged_listings_beyond_the_cap_get_503_until_one_ends(pool: PgPool) {
    insert_transactions(&pool, 3).await;
    let app = reader_with_listings(pool, ListLimits::new(2, Duration::from_secs(60)));
    let open = |app: Router| async move { app.oneshot(get("/transactions")).await.expect("ok") };
    // Two listings whose bodies are not read yet: both hold their place.
    let first = open(app.clone()).await;
    let second = open(app.clone()).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );

    let refused = open(app.clone()).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    let (_, json) = testing::status_and_json(refused).await;
    assert_eq!(error_message(&json), reader::TOO_MANY_LISTINGS);
    // Paged listings are not capped.
    assert_eq!(
        send(&app, get("/transactions?limit=2")).await.0,
        StatusCode::OK
    );

    // A listing read to its end, or dropped unread, gives its place back.
    let (status, listed) = testing::status_and_json(first).await;
    assert_eq!(
        (status, listed.as_array().map(Vec::len)),
        (StatusCode::OK, Some(3))
    );
    drop(second);
    for _ in 0..2 {
        let (status, listed) = send(&app, get("/transactions")).await;
        assert_eq!(
            (status, listed.as_array().map(Vec::len)),
            (StatusCode::OK, Some(3))
        );
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_unpaged_listing_past_its_deadline_is_cut_off_not_truncated(pool: PgPool) {
    // Far more than the chunks the reader buffers ahead, so the body is still streaming when
    // its client, too slow, comes back for the rest.
    insert_transactions(&pool, 6_000).await;
    let app = reader_with_listings(pool, ListLimits::new(1, Duration::from_millis(300)));
    let response = app.clone().oneshot(get("/transactions")).await.expect("ok");
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = axum::body::to_bytes(response.into_body(), usize::MAX).await;
    assert!(
        read.is_err(),
        "the body ends in an error, not a short array"
    );
    // Its place is free again.
    assert_eq!(
        send(&app, get("/transactions?limit=1")).await.0,
        StatusCode::OK
    );
    let listed = app.oneshot(get("/transactions")).await.expect("ok");
    assert_eq!(listed.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_list_longer_than_one_batch_is_complete_and_in_order(pool: PgPool) {
    let rows: i64 = 4_500; // more than two of the reader's batches
    insert_transactions(&pool, rows).await;
    let app = reader_app(pool, testing::isolated_cache());

    let (status, listed) = send(&app, get("/transactions")).await;
    assert_eq!(status, StatusCode::OK);
    let amounts: Vec<i64> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|transaction| transaction["amount"].as_i64().expect("amount"))
        .collect();
    let expected: Vec<i64> = (1..=rows).rev().collect();
    assert_eq!(amounts, expected, "every row once, newest first");
}
