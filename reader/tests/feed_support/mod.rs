//! What the feed tests (`reader/tests/feed.rs`) share: a reader on a test database, a client
//! of its server-sent events, and ways to commit and read back the ledger.

use std::time::Duration;

use axum::body::BodyDataStream;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use reader::{Application, FeedLimits, ReaderConfig};
use serde_json::Value;
use shared::cache::Cache;
use shared::db::{self, NewRecord};
use shared::domain::{NewTransaction, TransactionId};
use shared::testing::{self};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// Generous: a loaded 2-core machine runs several test binaries at once.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn reader_with(pool: PgPool, cache: Cache, feeds: FeedLimits) -> Router {
    let config = ReaderConfig {
        feeds,
        ..ReaderConfig::new(testing::http_config())
    };
    Application::build_on(pool, cache, config).into_router()
}

pub fn reader_app(pool: PgPool) -> Router {
    reader_with(pool, testing::isolated_cache(), FeedLimits::default())
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<i64>,
    pub event: String,
    pub data: Value,
}

/// A client of one feed: parses the body's events as they arrive.
pub struct Sse {
    pub body: BodyDataStream,
    pub buffer: String,
    pub comments: Vec<String>,
}

pub fn feed_request(
    uri: &str,
    last_event_id: Option<i64>,
    client: &str,
) -> Request<axum::body::Body> {
    let mut request = Request::get(uri)
        .header(header::ACCEPT, "text/event-stream")
        .header("x-forwarded-for", format!("203.0.113.9, {client}"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    request.body(axum::body::Body::empty()).expect("request")
}

impl Sse {
    pub async fn open(app: &Router, uri: &str, last_event_id: Option<i64>) -> Self {
        Self::open_as(app, uri, last_event_id, "198.51.100.1").await
    }

    pub async fn open_as(
        app: &Router,
        uri: &str,
        last_event_id: Option<i64>,
        client: &str,
    ) -> Self {
        let response = app
            .clone()
            .oneshot(feed_request(uri, last_event_id, client))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        Self {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
            comments: Vec::new(),
        }
    }

    /// The next event (comments are kept aside); `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        self.comments.push(comment.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse().expect("numeric id"));
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        event = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if event.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("JSON data");
                return Some(Event { id, event, data });
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("the feed sends within the wait")?
                .expect("body chunk");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next `n` events, all `transaction` events.
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let event = self.next().await.expect("the feed goes on");
            assert_eq!(event.event, "transaction", "{event:?}");
            events.push(event);
        }
        events
    }
}

pub fn record(account_id: Uuid, amount: i64) -> NewRecord {
    NewRecord {
        transaction_id: TransactionId::new_random(),
        new: NewTransaction {
            account_id: account_id.into(),
            amount: amount.into(),
        },
        idempotency_key: None,
    }
}

/// Commits a batch with the writer's record statement (not published: the feed needs no Redis).
pub async fn commit_batch(pool: &PgPool, batch: &[NewRecord]) {
    let recording = db::record_transactions(pool, batch)
        .await
        .expect("the statement ran");
    assert!(recording.outcomes.iter().all(Result::is_ok));
}

/// Every transaction of the ledger in commit order: (position, transaction id, account, balance).
pub async fn ledger(pool: &PgPool) -> Vec<(i64, Uuid, Uuid, Option<i64>)> {
    sqlx::query_as("SELECT seq, transaction_id, account_id, balance FROM transactions ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("ledger")
}

pub fn summary(event: &Event) -> (i64, Uuid, Uuid, Option<i64>) {
    let uuid =
        |field: &str| Uuid::parse_str(event.data[field].as_str().expect(field)).expect(field);
    (
        event.id.expect("an id"),
        uuid("transaction_id"),
        uuid("account_id"),
        event.data["balance"].as_i64(),
    )
}
