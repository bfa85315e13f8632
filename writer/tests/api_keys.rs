//! API keys on the writer (`API_KEYS_FILE`), on a real PostgreSQL database (fresh per test) and
//! the real Redis: 401 without a valid key, 403 without the write scope, `GET /ping` open,
//! idempotency keys scoped per API key, a reloaded file used from the next request on; and the
//! retention after which an idempotency key is cleared.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{balance_and_sum, transaction_body};
use sha2::{Digest, Sha256};
use shared::http::ApiKeys;
use shared::testing::{self, error_message, send, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;
use writer::{Application, WriterConfig};

fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A keys file in a fresh temporary folder: `(id, scopes, secret)` each.
fn keys_file(keys: &[(&str, &str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("api-keys-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("keys");
    write_keys(&path, keys);
    path
}

fn write_keys(path: &PathBuf, keys: &[(&str, &str, &str)]) {
    let lines: String = keys
        .iter()
        .map(|(id, scopes, secret)| format!("{id} {scopes} {}\n", sha256_hex(secret)))
        .collect();
    std::fs::write(path, format!("# test keys\n{lines}")).expect("write keys");
}

/// The writer, kept whole (not `into_router`) so that its background tasks, the key expiry
/// among them, run for the whole test.
fn writer_with(pool: PgPool, keys: Option<ApiKeys>, retention: Duration) -> Application {
    let mut http = testing::http_config();
    http.api_keys = keys;
    let config = WriterConfig {
        repair_interval: Duration::from_secs(3600),
        idempotency_key_retention: retention,
        ..WriterConfig::new(http, 2)
    };
    Application::build_on(pool, testing::isolated_cache(), config)
}

async fn transactions_of(pool: &PgPool, account: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM transactions WHERE account_id = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .expect("count")
}

fn post(secret: Option<&str>, idempotency_key: Option<&str>, body: String) -> Request<Body> {
    let mut request =
        Request::post("/transactions").header(header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        request = request.header(header::AUTHORIZATION, format!("Bearer {secret}"));
    }
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    request.body(body.into()).expect("request")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn without_a_valid_write_key_nothing_is_written(pool: PgPool) {
    let path = keys_file(&[
        ("payments", "read,write", "s3cret-w"),
        ("reports", "read", "s3cret-r"),
    ]);
    let writer = writer_with(
        pool.clone(),
        Some(ApiKeys::load(&path).expect("keys")),
        Duration::from_secs(3600),
    );
    let app = writer.router();
    let account = Uuid::new_v4();

    let missing = app
        .clone()
        .oneshot(post(None, None, transaction_body(account, 5)))
        .await
        .expect("infallible");
    assert_eq!(
        missing.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="transactions""#
    );
    let (status, body) = status_and_json(missing).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        error_message(&body).contains("Authorization: Bearer"),
        "{body}"
    );

    let wrong = app
        .clone()
        .oneshot(post(Some("guess"), None, transaction_body(account, 5)))
        .await
        .expect("infallible");
    assert!(wrong.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii")
        .contains("invalid_token"));
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let basic = Request::post("/transactions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Basic czNjcmV0LXc=")
        .body(Body::from(transaction_body(account, 5)))
        .expect("request");
    assert_eq!(send(&app, basic).await.0, StatusCode::UNAUTHORIZED);

    let read_only = app
        .clone()
        .oneshot(post(Some("s3cret-r"), None, transaction_body(account, 5)))
        .await
        .expect("infallible");
    assert!(read_only.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii")
        .contains(r#"scope="write""#));
    let (status, body) = status_and_json(read_only).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error_message(&body).contains("write scope"), "{body}");
    assert_eq!(transactions_of(&pool, account).await, 0);

    let (status, _) = send(
        &app,
        post(Some("s3cret-w"), None, transaction_body(account, 5)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // The scheme is case-insensitive.
    let lower = Request::post("/transactions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "bearer s3cret-w")
        .body(Body::from(transaction_body(account, 2)))
        .expect("request");
    assert_eq!(send(&app, lower).await.0, StatusCode::CREATED);
    assert_eq!(balance_and_sum(&pool, account).await, (7, 7, 2));

    // Health checks stay open.
    assert_eq!(send(&app, testing::get("/ping")).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn each_api_key_has_its_own_idempotency_keys(pool: PgPool) {
    let path = keys_file(&[
        ("alice", "write", "alice-secret"),
        ("bob", "write", "bob-secret"),
    ]);
    let writer = writer_with(
        pool.clone(),
        Some(ApiKeys::load(&path).expect("keys")),
        Duration::from_secs(3600),
    );
    let app = writer.router();
    let account = Uuid::new_v4();

    let (status, alices) = send(
        &app,
        post(
            Some("alice-secret"),
            Some("order-1"),
            transaction_body(account, 10),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Bob picked the same key and body: his own transaction, not a replay of Alice's.
    let bobs = app
        .clone()
        .oneshot(post(
            Some("bob-secret"),
            Some("order-1"),
            transaction_body(account, 10),
        ))
        .await
        .expect("infallible");
    assert!(bobs.headers().get("idempotent-replayed").is_none());
    let (status, bobs) = status_and_json(bobs).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(alices["transaction_id"], bobs["transaction_id"]);
    // Bob reusing the key with another body learns nothing of Alice's: his own key, his 422.
    let (status, _) = send(
        &app,
        post(
            Some("bob-secret"),
            Some("order-1"),
            transaction_body(account, 99),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Alice's retry replays hers.
    let retry = app
        .clone()
        .oneshot(post(
            Some("alice-secret"),
            Some("order-1"),
            transaction_body(account, 10),
        ))
        .await
        .expect("infallible");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let (_, replayed) = status_and_json(retry).await;
    assert_eq!(replayed["transaction_id"], alices["transaction_id"]);
    assert_eq!(balance_and_sum(&pool, account).await, (20, 20, 2));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_changed_keys_file_is_used_from_the_next_request_on(pool: PgPool) {
    let path = keys_file(&[("old", "write", "old-secret")]);
    let keys = ApiKeys::load(&path).expect("keys");
    let writer = writer_with(pool.clone(), Some(keys.clone()), Duration::from_secs(3600));
    let app = writer.router();
    let account = Uuid::new_v4();
    assert_eq!(
        send(
            &app,
            post(Some("old-secret"), None, transaction_body(account, 1))
        )
        .await
        .0,
        StatusCode::CREATED
    );

    write_keys(&path, &[("new", "write", "new-secret")]);
    assert_eq!(keys.reload().expect("reloaded"), 1);
    assert_eq!(
        send(
            &app,
            post(Some("old-secret"), None, transaction_body(account, 1))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            &app,
            post(Some("new-secret"), None, transaction_body(account, 1))
        )
        .await
        .0,
        StatusCode::CREATED
    );

    // A file that does not parse is refused, and the keys in use stay.
    std::fs::write(&path, "new write not-a-digest\n").expect("write");
    let error = format!("{:#}", keys.reload().expect_err("refused"));
    assert!(error.contains("line 1"), "{error}");
    assert_eq!(
        send(
            &app,
            post(Some("new-secret"), None, transaction_body(account, 1))
        )
        .await
        .0,
        StatusCode::CREATED
    );

    // The watcher notices a change of the file by itself (Kubernetes updates a secret in place).
    write_keys(&path, &[("newer", "write", "newer-secret")]);
    let _watcher = keys.reload_on_change();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = send(
            &app,
            post(Some("newer-secret"), None, transaction_body(account, 1)),
        )
        .await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed file was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_idempotency_key_is_cleared_after_its_retention_and_may_be_used_again(pool: PgPool) {
    let writer = writer_with(pool.clone(), None, Duration::from_secs(1));
    let app = writer.router();
    let account = Uuid::new_v4();
    let key = format!("order-{}", Uuid::new_v4());
    let (status, first) = send(&app, post(None, Some(&key), transaction_body(account, 3))).await;
    assert_eq!(status, StatusCode::CREATED);

    // The expiry loop passes every second; the key is older than a second after one pass more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kept: Option<String> = sqlx::query_scalar(
            "SELECT idempotency_key FROM transactions WHERE transaction_id = $1::text::uuid",
        )
        .bind(first["transaction_id"].as_str().expect("id"))
        .fetch_one(&pool)
        .await
        .expect("query");
        if kept.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key was not cleared"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = app
        .clone()
        .oneshot(post(None, Some(&key), transaction_body(account, 3)))
        .await
        .expect("infallible");
    assert!(again.headers().get("idempotent-replayed").is_none());
    assert_eq!(again.status(), StatusCode::CREATED);
    // The transaction stayed; the key now names the new one.
    assert_eq!(balance_and_sum(&pool, account).await, (6, 6, 2));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_body_that_names_a_key_twice_is_refused_naming_the_key(pool: PgPool) {
    let writer = writer_with(pool.clone(), None, Duration::from_secs(3600));
    let app = writer.router();
    let account = Uuid::new_v4();
    let body = format!(r#"{{"account_id":"{account}","amount":1,"amount":500}}"#);
    let (status, json) = send(&app, testing::post_json("/transactions", body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_message(&json).contains(r#"the key "amount" more than once"#),
        "{json}"
    );
    assert_eq!(transactions_of(&pool, account).await, 0);
}
