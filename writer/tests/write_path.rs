//! The write path end to end: validation through the router, and commits on a real PostgreSQL
//! database (fresh per test) with publishes to the real Redis (fresh key prefix per test).

use std::time::Duration;

use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use shared::db;
use shared::domain::AccountId;
use shared::testing::{self, error_message, post_json, send, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;
use writer::publisher;

mod common;

use common::{balance_and_sum, transaction_body, writer_app};

// --- validation: no database needed, every refusal happens before it ---------------------

#[tokio::test]
async fn bad_bodies_are_refused_with_400_and_a_message_naming_the_problem() {
    let app = writer_app(testing::unreachable_pool(), testing::unreachable_cache());
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("{", "not valid JSON"),
        ("[1]", "JSON object"),
        (r#"{"amount": 1}"#, "account_id is required"),
        (
            r#"{"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2"}"#,
            "amount is required",
        ),
        (
            r#"{"account_id": 10, "amount": 1}"#,
            "account_id must be a UUID",
        ),
        (
            r#"{"account_id": "nope", "amount": 1}"#,
            "account_id must be a UUID",
        ),
        (
            r#"{"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2", "amount": 1.5}"#,
            "amount must be an integer",
        ),
        (
            r#"{"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2", "amount": "7"}"#,
            "amount must be an integer",
        ),
        (
            r#"{"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2", "amount": 9223372036854775808}"#,
            "from -9007199254740991 to 9007199254740991",
        ),
        (
            r#"{"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2", "amount": 9007199254740992}"#,
            "from -9007199254740991 to 9007199254740991",
        ),
        (
            r#"{"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2", "amount": 1, "amount": 2}"#,
            r#"the key "amount" more than once"#,
        ),
    ];
    for (body, expected) in cases {
        let (status, json) = send(&app, post_json("/transactions", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "body {body:?}");
        let message = error_message(&json);
        assert!(message.contains(expected), "body {body:?}: got {message:?}");
    }
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_refused_with_415() {
    let app = writer_app(testing::unreachable_pool(), testing::unreachable_cache());
    for content_type in [None, Some("application/xml"), Some("text/plain")] {
        let mut request = Request::post("/transactions");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(r#"{"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2", "amount": 1}"#.into())
            .expect("request");
        let (status, json) = send(&app, request).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        error_message(&json);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = writer_app(testing::unreachable_pool(), testing::unreachable_cache());
    let padding = "x".repeat(20 * 1024);
    let body = format!(
        r#"{{"account_id": "{}", "amount": 1, "pad": "{padding}"}}"#,
        Uuid::new_v4()
    );
    let (status, json) = send(&app, post_json("/transactions", body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    error_message(&json);
}

#[tokio::test]
async fn other_methods_get_405_with_the_public_allow_list() {
    let app = writer_app(testing::unreachable_pool(), testing::unreachable_cache());
    for (method, uri, allow) in [
        ("PUT", "/transactions", "GET, HEAD, POST"),
        ("DELETE", "/transactions", "GET, HEAD, POST"),
        (
            "POST",
            "/accounts/0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2",
            "GET, HEAD",
        ),
        (
            "PATCH",
            "/transactions/0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2",
            "GET, HEAD",
        ),
        ("POST", "/ping", "GET, HEAD"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.headers()[header::ALLOW], allow, "{method} {uri}");
        let (status, json) = status_and_json(response).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        error_message(&json);
    }
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let app = writer_app(testing::unreachable_pool(), testing::unreachable_cache());
    let (status, json) = send(&app, post_json("/nope", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    error_message(&json);
}

#[tokio::test]
async fn an_unreachable_database_gives_a_quick_503_with_retry_after() {
    let app = writer_app(testing::unreachable_pool(), testing::unreachable_cache());
    let started = std::time::Instant::now();
    let response = app
        .oneshot(post_json(
            "/transactions",
            transaction_body(Uuid::new_v4(), 5),
        ))
        .await
        .expect("infallible");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let (status, json) = status_and_json(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_message(&json).contains("database"));
}

// --- commits on a real database ---------------------------------------------------------------

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_transaction_is_committed_with_its_balance_and_answered_with_201(pool: PgPool) {
    let app = writer_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();

    let (status, created) = send(
        &app,
        post_json("/transactions", transaction_body(account_id, 7)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["account_id"], account_id.to_string());
    assert_eq!(created["amount"], 7);
    let transaction_id: Uuid = created["transaction_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let created_at = created["created_at"].as_str().expect("created_at");
    assert!(created_at.ends_with("+00:00"), "{created_at}");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339");

    let (status, _) = send(
        &app,
        post_json("/transactions", transaction_body(account_id, -4)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    assert_eq!(balance_and_sum(&pool, account_id).await, (3, 3, 2));
    let stored = db::load_transaction(&pool, transaction_id.into())
        .await
        .expect("query");
    assert_eq!(stored.expect("stored").amount.value(), 7);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_deposit_that_would_take_the_balance_out_of_range_is_refused_and_changes_nothing(
    pool: PgPool,
) {
    let max = shared::domain::Amount::MAX_SAFE;
    let app = writer_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();
    let (status, _) = send(
        &app,
        post_json("/transactions", transaction_body(account_id, max)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, json) = send(
        &app,
        post_json("/transactions", transaction_body(account_id, 1)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_message(&json).contains("9007199254740991"));

    // Neither the balance nor the transactions nor the outbox moved.
    assert_eq!(balance_and_sum(&pool, account_id).await, (max, max, 1));
    let outbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM publish_outbox o JOIN transactions t USING (transaction_id)
         WHERE t.account_id = $1 AND t.amount = 1",
    )
    .bind(account_id)
    .fetch_one(&pool)
    .await
    .expect("query");
    assert_eq!(outbox, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn concurrent_writes_to_one_account_never_lose_an_update(pool: PgPool) {
    let app = writer_app(pool.clone(), testing::isolated_cache());
    let account_id = Uuid::new_v4();
    let amounts: Vec<i64> = (1..=60)
        .map(|i| if i % 3 == 0 { -i } else { i * 2 })
        .collect();

    let requests = amounts.iter().map(|&amount| {
        let app = app.clone();
        tokio::spawn(async move {
            app.oneshot(post_json(
                "/transactions",
                transaction_body(account_id, amount),
            ))
            .await
            .expect("infallible")
            .status()
        })
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status.expect("task"), StatusCode::CREATED);
    }

    let expected: i64 = amounts.iter().sum();
    assert_eq!(
        balance_and_sum(&pool, account_id).await,
        (expected, expected, amounts.len() as i64)
    );
    let version = db::load_account(&pool, AccountId::from(account_id))
        .await
        .expect("query")
        .expect("account")
        .version;
    assert_eq!(version, amounts.len() as i64);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_commit_is_published_to_redis_before_the_201(pool: PgPool) {
    let cache = testing::isolated_cache();
    let app = writer_app(pool.clone(), cache.clone());
    let account_id = Uuid::new_v4();

    let (_, created) = send(
        &app,
        post_json("/transactions", transaction_body(account_id, 12)),
    )
    .await;

    assert_eq!(
        testing::cached_account(&cache, account_id).await,
        json!({"account_id": account_id, "balance": 12})
    );
    let transaction_id = created["transaction_id"].as_str().expect("id");
    let transaction_view = cache
        .transaction_view(shared::domain::TransactionId::parse(transaction_id).expect("uuid"))
        .await
        .expect("redis")
        .expect("view");
    assert_eq!(
        serde_json::from_slice::<Value>(&transaction_view).expect("json"),
        created
    );

    let mut redis = redis::Client::open(std::env::var("REDIS_URL").expect("REDIS_URL"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let events: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(cache.keys.events())
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .expect("stream");
    assert_eq!(events.ids.len(), 1);
    assert_eq!(
        events.ids[0].get::<String>("transaction_id").as_deref(),
        Some(transaction_id)
    );
    // The transaction view expires (views are a cache); the stream never does (it is trimmed
    // by length), so `volatile-lru` can never evict it.
    let transaction_key = cache
        .keys
        .transaction(shared::domain::TransactionId::parse(transaction_id).expect("uuid"));
    assert!((1..=300).contains(&testing::ttl_of(&transaction_key)));
    assert_eq!(testing::ttl_of(&cache.keys.events()), -1);

    // The published change leaves the outbox (deleted in the background, in batches).
    let mut pending = 1;
    for _ in 0..50 {
        pending = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM publish_outbox")
            .fetch_one(&pool)
            .await
            .expect("query");
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn writes_succeed_while_redis_is_down_and_the_repair_loop_publishes_them_later(pool: PgPool) {
    let app = writer_app(pool.clone(), testing::unreachable_cache());
    let account_id = Uuid::new_v4();
    for amount in [5, 6] {
        let (status, _) = send(
            &app,
            post_json("/transactions", transaction_body(account_id, amount)),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "PostgreSQL is the source of truth"
        );
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM publish_outbox")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(pending, 2);

    // Redis is back. Age the outbox rows past the grace period instead of sleeping.
    sqlx::query("UPDATE publish_batches SET created_at = created_at - interval '1 minute'")
        .execute(&pool)
        .await
        .expect("query");
    let cache = testing::isolated_cache();
    let republished = publisher::repair_once(&pool, &cache).await.expect("repair");
    assert_eq!(republished, 2);

    assert_eq!(
        testing::cached_account(&cache, account_id).await,
        json!({"account_id": account_id, "balance": 11})
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM publish_outbox")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(pending, 0);
}
