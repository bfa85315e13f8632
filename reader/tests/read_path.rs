//! The read path: path validation through the router, cache misses, fills and expiry on the real
//! PostgreSQL and Redis, ETags and CORS. The listing has its own file, `listings.rs`.

use axum::http::{header, Request, StatusCode};
use axum::Router;
use reader::{Application, ReaderConfig};
use serde_json::{json, Value};
use std::time::Duration;

use shared::cache::{AccountView, Cache, Retention, TransactionView};
use shared::domain::{Account, AccountId, AccountState, Recorded, Transaction, TransactionId};
use shared::testing::{self, error_message, get, post_json, send, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

fn reader(pool: PgPool, cache: Cache) -> Application {
    let config = ReaderConfig::new(testing::http_config());
    Application::build_on(pool, cache, config)
}

fn reader_app(pool: PgPool, cache: Cache) -> Router {
    reader(pool, cache).into_router()
}

/// Commits a transaction straight to PostgreSQL, without publishing it to Redis.
async fn commit(pool: &PgPool, account_id: Uuid, amount: i64) -> Recorded {
    testing::commit(pool, account_id, amount, None).await
}

#[tokio::test]
async fn ids_in_paths_that_are_not_uuids_get_400_naming_the_parameter() {
    let app = reader_app(testing::unreachable_pool(), testing::unreachable_cache());
    for (uri, field) in [
        ("/accounts/not-a-uuid", "account_id"),
        ("/accounts/123", "account_id"),
        ("/transactions/0afd02d3-6c59-46e7-b7bc", "transaction_id"),
        ("/transactions/%FF%FE", "transaction_id"),
    ] {
        let (status, json) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(error_message(&json).contains(field), "{uri}: {json}");
    }
}

#[tokio::test]
async fn ping_answers_without_touching_the_database_or_redis() {
    let app = reader_app(testing::unreachable_pool(), testing::unreachable_cache());
    let (status, json) = send(&app, get("/ping")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({"status": "ok"}));
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_404_and_405() {
    let app = reader_app(testing::unreachable_pool(), testing::unreachable_cache());
    let (status, json) = send(&app, get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    error_message(&json);

    let response = app
        .clone()
        .oneshot(post_json(
            "/accounts/0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2",
            "{}",
        ))
        .await
        .expect("infallible");
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    let (status, json) = status_and_json(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    error_message(&json);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn unknown_accounts_and_transactions_are_404(pool: PgPool) {
    let app = reader_app(pool, testing::isolated_cache());
    for uri in [
        format!("/accounts/{}", Uuid::new_v4()),
        format!("/transactions/{}", Uuid::new_v4()),
    ] {
        let (status, json) = send(&app, get(&uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        error_message(&json);
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_cache_miss_reads_postgres_and_fills_the_view(pool: PgPool) {
    let cache = testing::isolated_cache();
    let app = reader_app(pool.clone(), cache.clone());
    let account_id = Uuid::new_v4();
    let recorded = commit(&pool, account_id, 40).await;
    let transaction_id = recorded.transaction.transaction_id;
    assert!(cache
        .account_view(account_id.into())
        .await
        .expect("redis")
        .is_none());

    let (status, account) = send(&app, get(&format!("/accounts/{account_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(account, json!({"account_id": account_id, "balance": 40}));
    let (status, transaction) = send(&app, get(&format!("/transactions/{transaction_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(transaction["amount"], 40);

    // Both views are now in Redis, exactly as served.
    let cached = cache
        .account_view(account_id.into())
        .await
        .expect("redis")
        .expect("filled");
    assert_eq!(
        serde_json::from_slice::<Value>(&cached).expect("json"),
        account
    );
    let cached = cache
        .transaction_view(transaction_id)
        .await
        .expect("redis")
        .expect("filled");
    assert_eq!(
        serde_json::from_slice::<Value>(&cached).expect("json"),
        transaction
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn views_expire_and_a_read_after_that_refills_them_from_postgres(pool: PgPool) {
    let cache = testing::isolated_cache_with(Retention {
        view_ttl: Duration::from_secs(1),
        stream_max_len: 100,
    });
    let app = reader_app(pool.clone(), cache.clone());
    let account_id = Uuid::new_v4();
    let transaction_id = commit(&pool, account_id, 40)
        .await
        .transaction
        .transaction_id;
    let account_uri = format!("/accounts/{account_id}");
    let transaction_uri = format!("/transactions/{transaction_id}");
    for _ in 0..2 {
        // A read fills both views (the first time, and again after they expired) ...
        assert_eq!(send(&app, get(&account_uri)).await.1["balance"], 40);
        assert_eq!(send(&app, get(&transaction_uri)).await.1["amount"], 40);
        let account = cache.account_view(account_id.into()).await.expect("redis");
        let transaction = cache.transaction_view(transaction_id).await.expect("redis");
        assert!(account.is_some() && transaction.is_some());
        // ... which are gone once their time to live has passed.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let account = cache.account_view(account_id.into()).await.expect("redis");
        let transaction = cache.transaction_view(transaction_id).await.expect("redis");
        assert!(account.is_none() && transaction.is_none());
    }
    // What Redis must keep for correctness has no time to live, so it is never evicted.
    assert_eq!(testing::ttl_of(&cache.keys.generation()), -1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reads_fall_back_to_postgres_while_redis_is_down(pool: PgPool) {
    let app = reader_app(pool.clone(), testing::unreachable_cache());
    let account_id = Uuid::new_v4();
    commit(&pool, account_id, 9).await;
    let (status, account) = send(&app, get(&format!("/accounts/{account_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(account["balance"], 9);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_older_account_view_never_replaces_a_newer_one(pool: PgPool) {
    let cache = testing::isolated_cache();
    let account_id = Uuid::new_v4();
    let first = commit(&pool, account_id, 1).await;
    let second = commit(&pool, account_id, 2).await;
    assert_eq!(second.account.version, first.account.version + 1);

    // The newer change is published first; the older one (a slow reader's fill, or a
    // republished change) arrives after it.
    cache
        .publish([&second], &cache.ticket().await)
        .await
        .expect("publish");
    cache
        .publish([&first], &cache.ticket().await)
        .await
        .expect("publish");
    cache
        .fill_account(&AccountView::new(&first.account), &cache.ticket().await)
        .await
        .expect("fill");

    assert_eq!(
        testing::cached_account(&cache, account_id).await,
        json!({"account_id": account_id, "balance": 3})
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reads_carry_an_etag_and_answer_304_when_it_still_matches(pool: PgPool) {
    let app = reader_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();
    commit(&pool, account_id, 5).await;
    let uri = format!("/accounts/{account_id}");

    let first = app.clone().oneshot(get(&uri)).await.expect("infallible");
    let etag = first.headers()[header::ETAG].clone();
    let revalidate = || {
        Request::get(&uri)
            .header(header::IF_NONE_MATCH, etag.clone())
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let (status, body) =
        status_and_json(app.clone().oneshot(revalidate()).await.expect("ok")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(body, Value::Null, "a 304 has no body");

    // The balance moves on: the old tag no longer matches (the writer's publish updates Redis;
    // here the view is simply filled again from PostgreSQL after the key is gone).
    let cache = testing::isolated_cache();
    let app = reader_app(pool.clone(), cache);
    commit(&pool, account_id, 1).await;
    let (status, body) = status_and_json(app.oneshot(revalidate()).await.expect("ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["balance"], 6);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn transaction_reads_carry_an_etag_from_the_cache_too(pool: PgPool) {
    let app = reader_app(pool.clone(), testing::isolated_cache());
    let recorded = commit(&pool, Uuid::new_v4(), 5).await;
    let uri = format!("/transactions/{}", recorded.transaction.transaction_id);

    // The first read misses and fills the view; the second is served from Redis.
    let from_database = app.clone().oneshot(get(&uri)).await.expect("infallible");
    let from_cache = app.clone().oneshot(get(&uri)).await.expect("infallible");
    let etag = from_database.headers()[header::ETAG].clone();
    assert_eq!(from_cache.headers()[header::ETAG], etag);

    let revalidate = Request::get(&uri)
        .header(header::IF_NONE_MATCH, etag)
        .body(axum::body::Body::empty())
        .expect("request");
    let (status, _) = status_and_json(app.oneshot(revalidate).await.expect("ok")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn a_plain_options_request_is_a_405_not_a_preflight() {
    let app = reader_app(testing::unreachable_pool(), testing::unreachable_cache());
    let options = Request::builder()
        .method("OPTIONS")
        .uri("/transactions")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.clone().oneshot(options).await.expect("infallible");
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD, POST");
    let (status, json) = status_and_json(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    error_message(&json);

    let options = Request::builder()
        .method("OPTIONS")
        .uri("/nope")
        .header(header::ORIGIN, "http://localhost:3000")
        .body(axum::body::Body::empty())
        .expect("request");
    let (status, _) = status_and_json(app.oneshot(options).await.expect("infallible")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cors_preflights_are_answered_for_browser_clients() {
    let app = reader_app(testing::unreachable_pool(), testing::unreachable_cache());
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/transactions")
        .header(header::ORIGIN, "http://localhost:3000")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type, idempotency-key",
        )
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.oneshot(preflight).await.expect("infallible");
    assert!(response.status().is_success());
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let methods = response.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("ascii");
    assert!(methods.contains("POST"), "{methods}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn account_reads_bypass_redis_while_the_writer_cannot_publish(pool: PgPool) {
    let cache = testing::isolated_cache();
    let account_id = Uuid::new_v4();
    let first = commit(&pool, account_id, 10).await;
    cache
        .publish([&first], &cache.ticket().await)
        .await
        .expect("publish");
    sqlx::query("DELETE FROM publish_batches")
        .execute(&pool)
        .await
        .expect("first change published");
    // The next write commits, but its publish failed: Redis still says 10, and the outbox row
    // is older than the lag limit.
    commit(&pool, account_id, 5).await;
    sqlx::query("UPDATE publish_batches SET created_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .expect("age the outbox row");

    let reader = reader(pool.clone(), cache.clone());
    tokio::time::sleep(reader::PUBLISH_CHECK_INTERVAL * 2).await;
    let app = reader.router();
    let (_, account) = send(&app, get(&format!("/accounts/{account_id}"))).await;
    assert_eq!(account["balance"], 15, "PostgreSQL, not the stale view");

    // The repair loop caught up: views are used again.
    sqlx::query("DELETE FROM publish_batches")
        .execute(&pool)
        .await
        .expect("repaired");
    tokio::time::sleep(reader::PUBLISH_CHECK_INTERVAL * 2).await;
    assert!(reader
        .state()
        .account_views_trusted
        .load(std::sync::atomic::Ordering::Relaxed));
    reader.stop().await;
}

#[tokio::test]
async fn concurrent_view_lookups_each_get_their_own_answer() {
    // Lookups that arrive together share one Redis pipeline; each must still get the answer to
    // its own key: account views, transaction views and misses mixed.
    let cache = testing::isolated_cache();
    let mut expected = Vec::new();
    for i in 0..150_i64 {
        let account = AccountId::from(Uuid::new_v4());
        let transaction = TransactionId::from(Uuid::new_v4());
        let account_view = AccountView::new(&AccountState {
            account: Account {
                account_id: account,
                balance: i,
            },
            version: 1,
        });
        let transaction_view = TransactionView::new(&Transaction {
            transaction_id: transaction,
            account_id: account,
            amount: i.into(),
            created_at: chrono::Utc::now(),
        });
        cache
            .fill_account(&account_view, &cache.ticket().await)
            .await
            .expect("fill account");
        cache
            .fill_transaction(&transaction_view)
            .await
            .expect("fill transaction");
        expected.push((
            account,
            transaction,
            account_view.into_body(),
            transaction_view.into_body(),
        ));
    }

    let lookups = expected
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, (account, transaction, a, t))| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let missing = AccountId::from(Uuid::new_v4());
                let (got_account, got_transaction, got_missing) = tokio::join!(
                    cache.account_view(account),
                    cache.transaction_view(transaction),
                    cache.account_view(missing),
                );
                assert_eq!(
                    got_account.expect("account lookup").as_deref(),
                    Some(&a[..]),
                    "{i}"
                );
                assert_eq!(
                    got_transaction.expect("transaction lookup").as_deref(),
                    Some(&t[..]),
                    "{i}"
                );
                assert_eq!(got_missing.expect("missing lookup"), None, "{i}");
            })
        });
    for lookup in futures_util::future::join_all(lookups).await {
        lookup.expect("every lookup got its own answer");
    }
}
