//! The change feeds, `GET /events` and `GET /accounts/{account_id}/events`, on the real
//! PostgreSQL (and Redis, or none: the feeds never need it): where a feed starts, resuming
//! exactly after an id (across reconnects and reader instances, with concurrent writers, from
//! far back), one account's feed, and the bounds (caps, slow clients, heartbeats).

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{header, Request, StatusCode};
use reader::FeedLimits;
use shared::db::NewRecord;
use shared::testing::{self, error_message, get, send, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

mod feed_support;
use feed_support::*;

#[tokio::test]
async fn malformed_account_ids_and_last_event_ids_get_400_json_before_any_stream() {
    let app = reader_with(
        testing::unreachable_pool(),
        testing::unreachable_cache(),
        FeedLimits::default(),
    );
    let (status, json) = send(&app, get("/accounts/not-a-uuid/events")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&json).contains("account_id"), "{json}");
    for bad in ["-1", "abc", "1.5", "+3", "99999999999999999999"] {
        let request = Request::get("/events")
            .header("last-event-id", bad)
            .body(axum::body::Body::empty())
            .expect("request");
        let (status, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(error_message(&json).contains("Last-Event-ID"), "{json}");
    }
    // Well-formed, but PostgreSQL is unreachable: 503 JSON, still before the stream.
    let response = app
        .clone()
        .oneshot(feed_request("/events", None, "198.51.100.1"))
        .await
        .expect("infallible");
    let (status, json) = status_and_json(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    error_message(&json);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_feed_starts_with_the_next_commit_and_resumes_exactly_after_an_id(pool: PgPool) {
    let app = reader_app(pool.clone());
    let account = Uuid::new_v4();
    commit_batch(&pool, &[record(account, 1)]).await;
    let mut feed = Sse::open(&app, "/events", None).await;
    commit_batch(&pool, &[record(account, 10), record(account, -3)]).await;
    commit_batch(&pool, &[record(account, 100)]).await;
    let events = feed.take(3).await;
    let amounts: Vec<i64> = events
        .iter()
        .map(|e| e.data["amount"].as_i64().expect("amount"))
        .collect();
    assert_eq!(
        amounts,
        [10, -3, 100],
        "not the commit made before the feed opened"
    );
    let balances: Vec<i64> = events
        .iter()
        .map(|e| e.data["balance"].as_i64().expect("balance"))
        .collect();
    assert_eq!(balances, [11, 8, 108]);
    assert_eq!(events[0].data["account_id"], account.to_string());
    assert!(events[0].data["created_at"].is_string());
    drop(feed);

    // Resumed after the first of them: the other two, then what comes next.
    let mut resumed = Sse::open(&app, "/events", events[0].id).await;
    commit_batch(&pool, &[record(account, 1000)]).await;
    let again = resumed.take(3).await;
    assert_eq!(again[0].id, events[1].id);
    assert_eq!(again[1].id, events[2].id);
    assert_eq!(again[2].data["balance"], 1108);
    let ids: Vec<i64> = again.iter().map(|e| e.id.expect("id")).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_account_feed_never_shows_another_account(pool: PgPool) {
    let app = reader_app(pool.clone());
    let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut feed = Sse::open(&app, &format!("/accounts/{mine}/events"), None).await;
    let mut expected = Vec::new();
    let mut balance = 0;
    for round in 1..=20_i64 {
        commit_batch(
            &pool,
            &[record(other, 5), record(mine, round), record(other, 7)],
        )
        .await;
        balance += round;
        expected.push((round, balance));
    }
    let events = feed.take(20).await;
    for (event, (amount, balance)) in events.iter().zip(&expected) {
        assert_eq!(event.data["account_id"], mine.to_string(), "{event:?}");
        assert_eq!(event.data["amount"], *amount);
        assert_eq!(event.data["balance"], *balance);
    }
    // Resuming the account's feed from its tenth event: the other ten, none of the other's.
    let mut resumed = Sse::open(&app, &format!("/accounts/{mine}/events"), events[9].id).await;
    let rest = resumed.take(10).await;
    let rest_ids: Vec<_> = rest.iter().map(|e| e.id).collect();
    let expected_ids: Vec<_> = events[10..].iter().map(|e| e.id).collect();
    assert_eq!(rest_ids, expected_ids);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn concurrent_writers_and_reconnects_to_other_instances_deliver_every_commit_once_in_order(
    pool: PgPool,
) {
    // Two reader instances; the client reconnects to the other one every few events.
    let readers = [reader_app(pool.clone()), reader_app(pool.clone())];
    let accounts: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let start = ledger(&pool).await.last().map_or(0, |row| row.0);
    const WRITERS: usize = 4;
    const BATCHES: usize = 25;
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (pool, accounts) = (pool.clone(), accounts.clone());
        writers.push(tokio::spawn(async move {
            let mut written = 0;
            for batch in 0..BATCHES {
                let size = 1 + (writer + batch) % 4;
                let records: Vec<NewRecord> = (0..size)
                    .map(|i| {
                        record(
                            accounts[(writer + batch + i) % accounts.len()],
                            1 + i as i64,
                        )
                    })
                    .collect();
                commit_batch(&pool, &records).await;
                written += size;
            }
            written
        }));
    }
    let mut total = 0;
    let mut received = Vec::new();
    let mut last = Some(start);
    let mut instance = 0;
    let mut writers_done = false;
    loop {
        let mut feed = Sse::open(&readers[instance % 2], "/events", last).await;
        instance += 1;
        // Read a few events, then drop the connection (a forced reconnect).
        let chunk = if writers_done {
            total - received.len()
        } else {
            7
        };
        for event in feed.take(chunk).await {
            last = event.id;
            received.push(summary(&event));
        }
        if !writers_done && writers.iter().all(|w| w.is_finished()) {
            for writer in writers.drain(..) {
                total += writer.await.expect("writer");
            }
            writers_done = true;
        }
        if writers_done && received.len() >= total {
            break;
        }
    }
    let committed: Vec<_> = ledger(&pool)
        .await
        .into_iter()
        .filter(|row| row.0 > start)
        .collect();
    assert_eq!(committed.len(), total);
    assert_eq!(
        received, committed,
        "every commit once, in commit order, with its balance"
    );
    // Each account's balances run in the feed's order: commit order is each account's order.
    let mut running: HashMap<Uuid, i64> = HashMap::new();
    let amounts: HashMap<Uuid, i64> =
        sqlx::query_as("SELECT transaction_id, amount FROM transactions")
            .fetch_all(&pool)
            .await
            .expect("amounts")
            .into_iter()
            .collect();
    for (_, transaction, account, balance) in &received {
        let sum = running.entry(*account).or_default();
        *sum += amounts[transaction];
        assert_eq!(Some(*sum), *balance);
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_resume_from_far_back_is_served_from_postgresql_without_redis(pool: PgPool) {
    let account = Uuid::new_v4();
    for _ in 0..6 {
        let batch: Vec<NewRecord> = (0..200).map(|_| record(account, 1)).collect();
        commit_batch(&pool, &batch).await;
    }
    // No Redis at all: the stream (trimmed or gone) plays no part in what a feed sends.
    let app = reader_with(
        pool.clone(),
        testing::unreachable_cache(),
        FeedLimits::default(),
    );
    let first = ledger(&pool).await[0].0;
    let mut feed = Sse::open(&app, &format!("/accounts/{account}/events"), Some(first)).await;
    let events = feed.take(1199).await;
    assert_eq!(events.last().expect("events").data["balance"], 1200);
    let ids: Vec<i64> = events.iter().map(|e| e.id.expect("id")).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    // And it goes on live.
    commit_batch(&pool, &[record(account, 5)]).await;
    assert_eq!(feed.take(1).await[0].data["balance"], 1205);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn ids_the_feed_cannot_serve_end_it_with_an_error_event(pool: PgPool) {
    // A transaction from before the feed existed: no balance, no commit-ordered position.
    let account = Uuid::new_v4();
    sqlx::query("INSERT INTO accounts (account_id, balance, version) VALUES ($1, 3, 1)")
        .bind(account)
        .execute(&pool)
        .await
        .expect("account");
    sqlx::query("INSERT INTO transactions (transaction_id, account_id, amount) VALUES ($1, $2, 3)")
        .bind(Uuid::new_v4())
        .bind(account)
        .execute(&pool)
        .await
        .expect("old transaction");
    commit_batch(&pool, &[record(account, 4)]).await;
    let app = reader_app(pool.clone());

    let mut feed = Sse::open(&app, "/events", Some(0)).await;
    let error = feed.next().await.expect("an error event");
    assert_eq!(error.event, "error");
    assert_eq!(error.data["code"], "history_unavailable");
    assert!(feed.next().await.is_none(), "the stream ends after it");

    let mut feed = Sse::open(&app, "/events", Some(1_000_000)).await;
    let error = feed.next().await.expect("an error event");
    assert_eq!(error.data["code"], "unknown_event_id");
    assert!(feed.next().await.is_none());

    // From the first position with a balance on, it is served.
    let after_old = ledger(&pool).await[0].0;
    let mut feed = Sse::open(&app, "/events", Some(after_old)).await;
    assert_eq!(feed.take(1).await[0].data["balance"], 7);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn feeds_beyond_the_caps_get_429_and_503_json(pool: PgPool) {
    let limits = FeedLimits {
        max_streams: 3,
        max_per_client: 2,
        ..FeedLimits::default()
    };
    let app = reader_with(pool.clone(), testing::isolated_cache(), limits);
    let first = Sse::open_as(&app, "/events", None, "192.0.2.1").await;
    let second = Sse::open_as(&app, "/events", None, "192.0.2.1").await;
    let open = |client: &'static str| {
        let app = app.clone();
        async move {
            status_and_json(
                app.oneshot(feed_request("/events", None, client))
                    .await
                    .expect("infallible"),
            )
            .await
        }
    };
    let (status, json) = open("192.0.2.1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    error_message(&json);
    // Another client (the address nginx appended, not the forged one before it) may.
    let third = Sse::open_as(&app, "/events", None, "192.0.2.2").await;
    let (status, json) = open("192.0.2.3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    error_message(&json);
    // A feed that ends gives its place back.
    drop(first);
    let _again = Sse::open_as(&app, "/events", None, "192.0.2.1").await;
    drop((second, third));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_client_that_does_not_read_is_dropped_with_an_error_event(pool: PgPool) {
    let limits = FeedLimits {
        buffer: 4,
        ..FeedLimits::default()
    };
    let app = reader_with(pool.clone(), testing::isolated_cache(), limits);
    let account = Uuid::new_v4();
    let mut slow = Sse::open(&app, "/events", None).await;
    let mut reading = Sse::open(&app, "/events", None).await;
    // Both join the hub once their bodies are first read.
    commit_batch(&pool, &[record(account, 1)]).await;
    assert_eq!(slow.take(1).await[0].data["balance"], 1);
    assert_eq!(reading.take(1).await[0].data["balance"], 1);
    for round in 0..10 {
        commit_batch(&pool, &[record(account, 1)]).await;
        // The reading client keeps up; the slow one reads nothing meanwhile.
        assert_eq!(reading.take(1).await[0].data["balance"], 2 + round);
    }
    let mut buffered = 0;
    let error = loop {
        let event = slow.next().await.expect("events, then the error");
        if event.event == "transaction" {
            buffered += 1;
            continue;
        }
        break event;
    };
    assert_eq!(error.data["code"], "too_slow");
    assert!(buffered <= 4, "at most its buffer: {buffered}");
    assert!(slow.next().await.is_none());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_idle_feed_sends_heartbeats(pool: PgPool) {
    let limits = FeedLimits {
        heartbeat: Duration::from_millis(200),
        ..FeedLimits::default()
    };
    let app = reader_with(pool.clone(), testing::isolated_cache(), limits);
    let mut feed = Sse::open(&app, "/events", None).await;
    // Read for a while with nothing to send; then a commit still arrives.
    let idle = tokio::time::timeout(Duration::from_millis(900), feed.next()).await;
    assert!(idle.is_err(), "no event while idle: {idle:?}");
    commit_batch(&pool, &[record(Uuid::new_v4(), 1)]).await;
    feed.take(1).await;
    assert!(
        feed.comments.iter().any(|c| c == "heartbeat"),
        "{:?}",
        feed.comments
    );
}

#[tokio::test]
async fn a_browser_on_another_origin_may_resume_a_feed() {
    let app = reader_with(
        testing::unreachable_pool(),
        testing::unreachable_cache(),
        FeedLimits::default(),
    );
    let preflight = Request::options("/events")
        .header(header::ORIGIN, "https://wallet.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "last-event-id")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.oneshot(preflight).await.expect("infallible");
    assert!(response.status().is_success(), "{}", response.status());
    let allowed = response.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .expect("ASCII")
        .to_ascii_lowercase();
    assert!(allowed.contains("last-event-id"), "{allowed}");
}
