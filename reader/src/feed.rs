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

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
use shared::telemetry::error_chain;
use shared::telemetry::metrics as m;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

use crate::AppState;

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

/// A feed's place in the hub.
struct Subscriber {
    account: Option<AccountId>,
    events: mpsc::Sender<Arc<Event>>,
    /// Set when the hub dropped it for a full buffer.
    too_slow: Arc<AtomicBool>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Feeds of every account.
    all: HashMap<u64, Subscriber>,
    /// Feeds of one account, by account.
    by_account: HashMap<AccountId, HashMap<u64, Subscriber>>,
    /// Open feeds (counted from the request, before they subscribe), and per client.
    open: usize,
    per_client: HashMap<Arc<str>, usize>,
    /// The last position handed to subscribers; `None` until the hub first read the head.
    head: Option<i64>,
}

struct HubInner {
    pool: PgPool,
    limits: FeedLimits,
    registry: Mutex<Registry>,
    /// Wakes the hub's task when the first feed opens.
    opened: Notify,
    stop: watch::Receiver<bool>,
}

/// The feeds of one reader instance and the task that feeds them. Cheap to clone.
#[derive(Clone)]
pub struct FeedHub {
    inner: Arc<HubInner>,
}

/// A feed's place under the caps, given back when the feed ends (however it ends).
struct Slot {
    hub: Arc<HubInner>,
    client: Arc<str>,
    account_feed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.hub.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.open -= 1;
        if let Some(count) = registry.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                registry.per_client.remove(&self.client);
            }
        }
        drop(registry);
        m::feed_streams_changed(self.account_feed, -1.0);
    }
}

impl FeedHub {
    /// The hub and its task, which ends when `stop` turns true.
    pub fn start(pool: PgPool, limits: FeedLimits, stop: watch::Receiver<bool>) -> Self {
        let hub = Self {
            inner: Arc::new(HubInner {
                pool,
                limits,
                registry: Mutex::new(Registry::default()),
                opened: Notify::new(),
                stop,
            }),
        };
        let task = hub.clone();
        tokio::spawn(async move { task.run().await }.instrument(tracing::info_span!("feed_hub")));
        hub
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds open on this instance now.
    pub fn open_feeds(&self) -> usize {
        self.registry().open
    }

    fn open(&self, client: Arc<str>, account_feed: bool) -> Result<Slot, Refused> {
        let limits = self.inner.limits;
        let mut registry = self.registry();
        if registry.open >= limits.max_streams {
            m::feed_refused("instance_cap");
            return Err(Refused::Instance);
        }
        let count = registry.per_client.entry(client.clone()).or_insert(0);
        if *count >= limits.max_per_client {
            m::feed_refused("client_cap");
            return Err(Refused::Client);
        }
        *count += 1;
        registry.open += 1;
        drop(registry);
        m::feed_streams_changed(account_feed, 1.0);
        self.inner.opened.notify_one();
        Ok(Slot {
            hub: self.inner.clone(),
            client,
            account_feed,
        })
    }

    /// Joins the hub: from now on every transaction after the returned position that the feed
    /// wants is handed to it. `None` until the hub has read the ledger's head.
    fn subscribe(&self, account: Option<AccountId>) -> Option<(i64, Live)> {
        let (events, receiver) = mpsc::channel(self.inner.limits.buffer);
        let too_slow = Arc::new(AtomicBool::new(false));
        let mut registry = self.registry();
        let head = registry.head?;
        let id = registry.next_id;
        registry.next_id += 1;
        let subscriber = Subscriber {
            account,
            events,
            too_slow: too_slow.clone(),
        };
        match account {
            Some(account) => {
                registry
                    .by_account
                    .entry(account)
                    .or_default()
                    .insert(id, subscriber);
            }
            None => {
                registry.all.insert(id, subscriber);
            }
        }
        Some((
            head,
            Live {
                events: receiver,
                too_slow,
                id,
            },
        ))
    }

    fn unsubscribe(&self, account: Option<AccountId>, id: u64) {
        let mut registry = self.registry();
        match account {
            Some(account) => {
                if let Some(feeds) = registry.by_account.get_mut(&account) {
                    feeds.remove(&id);
                    if feeds.is_empty() {
                        registry.by_account.remove(&account);
                    }
                }
            }
            None => {
                registry.all.remove(&id);
            }
        }
    }

    /// The hub's last position, if it has one.
    fn head(&self) -> Option<i64> {
        self.registry().head
    }

    /// Reads new commits while any feed is open; sleeps on `opened` otherwise. Ends on `stop`,
    /// or once every clone of the hub is gone (it holds the hub only while it works).
    async fn run(self) {
        let weak = Arc::downgrade(&self.inner);
        let mut stop = self.inner.stop.clone();
        drop(self);
        // Logged once per outage, not at every poll.
        let mut failing = false;
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let hub = FeedHub { inner };
            if hub.registry().open == 0 {
                // Idle: no query at all until a feed opens (or a while passed, to see whether
                // the hub is still wanted).
                tokio::select! {
                    () = hub.inner.opened.notified() => {}
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                    () = stopped(&mut stop) => return,
                }
                continue;
            }
            let full_page = match hub.poll().await {
                Ok(full_page) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("change feed reads new commits again");
                    }
                    full_page
                }
                Err(error) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            error = error_chain(&error),
                            "change feed cannot read new commits; retrying every poll"
                        );
                    }
                    false
                }
            };
            drop(hub);
            if !full_page {
                tokio::select! {
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }

    /// One read of the new commits, handed to the feeds. True when it read a full page (more
    /// may be waiting).
    async fn poll(&self) -> Result<bool, sqlx::Error> {
        let Some(head) = self.head() else {
            let head = db::feed_head(&self.inner.pool).await?;
            self.registry().head = Some(head);
            return Ok(false);
        };
        let rows = db::feed_page(&self.inner.pool, None, head, i64::MAX, HUB_PAGE).await?;
        let full_page = rows.len() as i64 == HUB_PAGE;
        let events: Vec<Arc<Event>> = rows
            .iter()
            .filter_map(|row| {
                m::record_feed_lag(row.transaction.created_at);
                let event = Event::of(row);
                if event.is_none() {
                    tracing::warn!(
                        position = row.position,
                        "a transaction without a balance was recorded after the feed began \
                         (a writer of an earlier version?); feeds skip it"
                    );
                }
                event.map(Arc::new)
            })
            .collect();
        let mut registry = self.registry();
        for event in &events {
            dispatch(&mut registry.all, event);
            if let Some(feeds) = registry.by_account.get_mut(&event.account_id) {
                dispatch(feeds, event);
                if feeds.is_empty() {
                    registry.by_account.remove(&event.account_id);
                }
            }
        }
        if let Some(last) = rows.last() {
            registry.head = Some(last.position);
        }
        Ok(full_page)
    }
}

/// Hands `event` to each feed; a feed whose buffer is full, or whose client is gone, is
/// removed from the hub (a full one learns why).
fn dispatch(feeds: &mut HashMap<u64, Subscriber>, event: &Arc<Event>) {
    feeds.retain(|_, feed| {
        debug_assert!(feed
            .account
            .is_none_or(|account| account == event.account_id));
        match feed.events.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                feed.too_slow.store(true, Ordering::Relaxed);
                m::feed_refused("too_slow");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

enum Phase {
    /// Catch up from PostgreSQL alone, up to about the hub's position.
    CatchUp,
    /// Join the hub, then read from PostgreSQL up to the position it joined at.
    Bridge { upto: i64 },
    /// Take what the hub hands over.
    Live,
    /// The stream ends once `pending` is sent.
    Ended,
}

struct Live {
    events: mpsc::Receiver<Arc<Event>>,
    too_slow: Arc<AtomicBool>,
    id: u64,
}

/// One client's feed: the state of its stream.
struct Feed {
    hub: FeedHub,
    account: Option<AccountId>,
    /// Every transaction of the feed at or below this position has been sent (or skipped as
    /// not the feed's account).
    cursor: i64,
    phase: Phase,
    pending: VecDeque<Bytes>,
    live: Option<Live>,
    heartbeat: Option<tokio::time::Interval>,
    stop: watch::Receiver<bool>,
    _slot: Slot,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(live) = &self.live {
            self.hub.unsubscribe(self.account, live.id);
        }
    }
}

impl Feed {
    /// The next bytes to send; `None` ends the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if *self.stop.borrow() {
                return None;
            }
            match self.phase {
                Phase::Ended => return None,
                Phase::CatchUp => match self.hub.head() {
                    // The hub reads the ledger's head within a poll of the first feed opening.
                    None => tokio::time::sleep(POLL_INTERVAL).await,
                    Some(upto) => {
                        if upto <= self.cursor || Box::pin(self.read_up_to(upto)).await {
                            self.join();
                        }
                    }
                },
                Phase::Bridge { upto } => {
                    if upto <= self.cursor || Box::pin(self.read_up_to(upto)).await {
                        self.phase = Phase::Live;
                    }
                }
                Phase::Live => return self.live_frame().await,
            }
        }
    }

    /// Reads the feed's transactions in `(cursor, upto]` a page at a time into `pending`. True
    /// once it reached `upto`.
    async fn read_up_to(&mut self, upto: i64) -> bool {
        let page = db::feed_page(
            &self.hub.inner.pool,
            self.account,
            self.cursor,
            upto,
            CATCH_UP_PAGE,
        )
        .await;
        let rows = match page {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(error = error_chain(&error), "change feed cannot catch up");
                self.end_with(
                    "unavailable",
                    "the ledger cannot be read now; reconnect later with the last id received",
                );
                return false;
            }
        };
        let reached = (rows.len() as i64) < CATCH_UP_PAGE;
        for row in &rows {
            match Event::of(row) {
                Some(event) => self.send(&event),
                None => {
                    self.end_with(
                        "history_unavailable",
                        "Last-Event-ID is older than the feed's history; read the account (or \
                         page GET /transactions) and start again without it",
                    );
                    return false;
                }
            }
        }
        if reached {
            self.cursor = self.cursor.max(upto);
        }
        reached
    }

    fn send(&mut self, event: &Event) {
        if event.position > self.cursor {
            self.cursor = event.position;
            self.pending.push_back(event.frame.clone());
            m::feed_event_sent(self.account.is_some());
        }
    }

    /// Joins the hub (which knows its position: the feed waited for it in `CatchUp`).
    fn join(&mut self) {
        if let Some((upto, live)) = self.hub.subscribe(self.account) {
            self.live = Some(live);
            self.phase = Phase::Bridge { upto };
        }
    }

    async fn live_frame(&mut self) -> Option<Bytes> {
        let period = self.hub.inner.limits.heartbeat;
        let heartbeat = self.heartbeat.get_or_insert_with(|| {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        let live = self.live.as_mut()?;
        loop {
            tokio::select! {
                event = live.events.recv() => match event {
                    Some(event) => {
                        if event.position > self.cursor {
                            self.cursor = event.position;
                            m::feed_event_sent(self.account.is_some());
                            return Some(event.frame.clone());
                        }
                    }
                    None => {
                        if live.too_slow.load(Ordering::Relaxed) {
                            self.phase = Phase::Ended;
                            return Some(error_event(
                                "too_slow",
                                "this client read the feed too slowly and was dropped; \
                                 reconnect with the last id received to catch up",
                            ));
                        }
                        return None;
                    }
                },
                _ = heartbeat.tick() => return Some(Bytes::from_static(b": heartbeat\n\n")),
                () = stopped(&mut self.stop) => return None,
            }
        }
    }

    fn end_with(&mut self, code: &str, message: &str) {
        self.pending.push_back(error_event(code, message));
        self.phase = Phase::Ended;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle feed holds besides its connection: its body stream (with the future of
    /// its next frame inline) and its channel.
    #[tokio::test]
    async fn an_idle_feed_is_small() {
        let (_stop, stopped) = watch::channel(false);
        let hub = FeedHub::start(
            shared::testing::unreachable_pool(),
            FeedLimits::default(),
            stopped.clone(),
        );
        let slot = hub.open(Arc::from("test"), false).ok().expect("a slot");
        let feed = Feed {
            hub: hub.clone(),
            account: None,
            cursor: 0,
            phase: Phase::Live,
            pending: VecDeque::new(),
            live: None,
            heartbeat: None,
            stop: stopped,
            _slot: slot,
        };
        let body = frames(feed);
        let size = std::mem::size_of_val(&body);
        assert!(size < 2_048, "a feed's body stream is {size} bytes");
    }
}
