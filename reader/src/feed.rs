//! The live change feed: `GET /events` (every account) and `GET /accounts/{account_id}/events`
//! (one account), as server-sent events.
//!
//! An event's `id` is its transaction's position, `seq` in PostgreSQL, which the record
//! statement draws in commit order (see `shared/src/db/feed.rs` and migration
//! 20261207230001_feed_positions.sql). Everything a feed sends is read from PostgreSQL, the
//! source of truth, so an id stays meaningful across reader instances, writer and reader
//! restarts, and a Redis restart, failover or trim: a client resuming with `Last-Event-ID: N`
//! gets every transaction after position N, once, in commit order.
//!
//! One task per reader instance, the [`FeedHub`], reads the new transactions of the whole
//! ledger (`seq > last`, one indexed query every [`POLL_INTERVAL`] while at least one feed is
//! open, none otherwise) and hands each to the feeds that want it, rendered once. A feed first
//! catches up from PostgreSQL on its own (from its `Last-Event-ID`), then joins the hub and
//! reads the stretch between with one more query, and from then on only takes what the hub
//! hands it, skipping anything at or below what it already sent.
//!
//! Bounded: `FEED_MAX_STREAMS` feeds per instance (503 beyond) and `FEED_MAX_PER_CLIENT` per
//! client (429 beyond); each feed holds at most [`FeedLimits::buffer`] events the client has
//! not read yet, and a feed whose buffer is full is dropped (an `error` event `too_slow`, then
//! the end of the stream): the client resumes with its last id and catches up from PostgreSQL.
//!
//! Here: the routes, the request's checks and the frames; `hub`: the registry under the caps and
//! the polling task; `stream`: one feed's stream, from catching up to live.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use shared::db::{self, FeedRow};
use shared::domain::{AccountId, Transaction};
use shared::http::{error_response, ApiError, ApiKeyId, PathId, Routes};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::AppState;

mod hub;
mod stream;

pub use hub::FeedHub;
use stream::{Feed, Phase};

/// How often the hub looks for new commits while a feed is open: the feed's latency floor.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A comment line this often keeps an idle feed alive through proxies (nginx's read timeout on
/// these paths is far longer).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// How often an idle hub checks whether it is still wanted.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Transactions the hub reads per query.
const HUB_PAGE: i64 = 1_000;
/// Transactions a feed catching up reads per query: what it holds at most besides its buffer
/// (about 30 KiB of rendered events).
const CATCH_UP_PAGE: i64 = 100;
/// How long a feed may wait for PostgreSQL to know its `Last-Event-ID` (a replica behind).
const UNKNOWN_ID_PATIENCE: Duration = Duration::from_secs(5);

/// What a client gets when this instance holds `FEED_MAX_STREAMS` feeds.
pub const TOO_MANY_FEEDS: &str = "too many change feeds are open on this instance, retry later";
/// What a client gets when it holds `FEED_MAX_PER_CLIENT` feeds.
pub const TOO_MANY_CLIENT_FEEDS: &str =
    "this client has too many change feeds open; close one before opening another";

/// The bounds of the feeds on one instance.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// `FEED_MAX_STREAMS`: feeds open at once; one more is answered 503.
    pub max_streams: usize,
    /// `FEED_MAX_PER_CLIENT`: feeds one client may hold at once; one more is answered 429.
    pub max_per_client: usize,
    /// Events a feed holds that its client has not read yet; one more and the feed is dropped.
    pub buffer: usize,
    pub heartbeat: Duration,
}

impl Default for FeedLimits {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            max_per_client: 32,
            buffer: 1_024,
            heartbeat: HEARTBEAT_INTERVAL,
        }
    }
}

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .get("/events", all_events)
        .get("/accounts/{account_id}/events", account_events)
}

async fn all_events(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyId>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open_feed(&state, None, key, &headers).await
}

async fn account_events(
    State(state): State<AppState>,
    PathId(account_id): PathId<AccountId>,
    key: Option<Extension<ApiKeyId>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open_feed(&state, Some(account_id), key, &headers).await
}

/// Everything that can refuse a feed happens here, before the stream starts: a malformed
/// `Last-Event-ID` (400), the caps (503, 429).
async fn open_feed(
    state: &AppState,
    account: Option<AccountId>,
    key: Option<Extension<ApiKeyId>>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let resume = last_event_id(headers)?;
    let client = client_of(key.as_ref().map(|Extension(key)| key), headers);
    let hub = &state.feeds;
    let slot = match hub.open(client, account.is_some()) {
        Ok(slot) => slot,
        Err(Refused::Instance) => return Err(ApiError::Unavailable(TOO_MANY_FEEDS)),
        Err(Refused::Client) => {
            return Ok(error_response(
                StatusCode::TOO_MANY_REQUESTS,
                TOO_MANY_CLIENT_FEEDS,
            ))
        }
    };
    let mut pending = VecDeque::from([Bytes::from_static(b": feed open\n\n")]);
    // Where it starts is decided now, before the answer: a commit the client makes once it has
    // the headers is in its feed.
    let (cursor, phase) = match start_position(&hub.inner.pool, resume).await? {
        Ok(cursor) => (cursor, Phase::CatchUp),
        Err(error) => {
            pending.push_back(error);
            (0, Phase::Ended)
        }
    };
    let feed = Feed {
        hub: hub.clone(),
        account,
        cursor,
        phase,
        pending,
        live: None,
        heartbeat: None,
        stop: hub.inner.stop.clone(),
        _slot: slot,
    };
    let mut response = Body::from_stream(frames(feed)).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response_headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx: never buffer this answer, whatever the location says.
    response_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The body of a feed: its frames, one at a time. Every idle feed holds one of these, so it is
/// kept small: the catch-up's queries (large futures, and brief) are boxed while they run.
fn frames(feed: Feed) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(feed, |mut feed| async move {
        let frame = feed.next_frame().await?;
        Some((Ok(frame), feed))
    })
}

/// Where a feed starts: after `Last-Event-ID`, or after the newest commit; or the error event
/// that ends it at once (an id this ledger does not know).
async fn start_position(
    pool: &PgPool,
    resume: Option<i64>,
) -> Result<Result<i64, Bytes>, ApiError> {
    let waited = tokio::time::Instant::now();
    loop {
        let head = db::feed_head(pool).await?;
        match resume {
            None => return Ok(Ok(head)),
            Some(resume) if resume <= head => return Ok(Ok(resume)),
            // Not (yet) known here: a replica behind, or an id from another ledger.
            Some(_) if waited.elapsed() < UNKNOWN_ID_PATIENCE => {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Some(_) => {
                return Ok(Err(error_event(
                    "unknown_event_id",
                    "Last-Event-ID is not an id of this ledger; start again without it",
                )))
            }
        }
    }
}

/// `Last-Event-ID`: absent or empty (start with the next commit), or a position (≥ 0).
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("x").trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(position) if position >= 0 && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(position))
        }
        _ => Err(ApiError::BadRequest(
            "Last-Event-ID must be the id of an event this feed sent (a whole number)".to_owned(),
        )),
    }
}

/// Who holds a feed, for `FEED_MAX_PER_CLIENT`: the API key when API keys are on, else the
/// address nginx appended to `X-Forwarded-For` (its last entry: the ones before it are the
/// client's to forge), else one shared bucket for direct connections.
fn client_of(key: Option<&ApiKeyId>, headers: &HeaderMap) -> Arc<str> {
    if let Some(ApiKeyId(id)) = key {
        return format!("key:{id}").into();
    }
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .map(str::trim)
        .filter(|address| !address.is_empty() && address.len() <= 64);
    match forwarded {
        Some(address) => format!("addr:{address}").into(),
        None => Arc::from("direct"),
    }
}

enum Refused {
    Instance,
    Client,
}

/// Resolves once `stop` turns true; never if its sender is gone without saying so (a test's
/// router outlives the application it was taken from).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One transaction, rendered once for every feed that sends it.
struct Event {
    position: i64,
    account_id: AccountId,
    frame: Bytes,
}

#[derive(Serialize)]
struct EventData<'a> {
    #[serde(flatten)]
    transaction: &'a Transaction,
    balance: i64,
}

impl Event {
    /// `None` for a transaction recorded before the feed existed (no balance).
    fn of(row: &FeedRow) -> Option<Self> {
        let balance = row.balance?;
        let data = serde_json::to_string(&EventData {
            transaction: &row.transaction,
            balance,
        })
        .ok()?;
        let frame = format!("id: {}\nevent: transaction\ndata: {data}\n\n", row.position);
        Some(Self {
            position: row.position,
            account_id: row.transaction.account_id,
            frame: Bytes::from(frame),
        })
    }
}

/// An `error` event: the feed cannot go on, and says why (`code`) before it ends.
fn error_event(code: &str, message: &str) -> Bytes {
    let data = serde_json::json!({ "code": code, "error": message });
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}
