//! The read side: `GET /ping`, `GET /accounts/{id}`, `GET /transactions/{id}` and
//! `GET /transactions`.
//!
//! Account and transaction reads are served from the views in Redis; on a miss (or while Redis
//! is unreachable) they read PostgreSQL and fill the view. The list is streamed straight from
//! PostgreSQL: it is every transaction, so it is neither cached nor held in memory.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_TYPE, LINK};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde::Deserialize;
use shared::cache::{self, AccountView, Cache, CacheError, TransactionView};
use shared::db::{self, ListFilter};
use shared::domain::{AccountId, ListQuery, TransactionId};
use shared::error::{ApiError, PathId};
use shared::http::{self, HttpConfig};
use shared::settings::Settings;
use shared::telemetry::metrics as m;
use sqlx::PgPool;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cache: Cache,
    /// False while the writer is behind with publishing (see [`watch_publishing`]): account
    /// views in Redis may then be older than acknowledged writes, so account reads go to
    /// PostgreSQL and fill nothing.
    pub account_views_trusted: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(pool: PgPool, cache: Cache) -> Self {
        Self {
            pool,
            cache,
            account_views_trusted: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// A change older than this still in the outbox means publishing is failing (published rows
/// leave the outbox within milliseconds).
pub const PUBLISH_LAG_LIMIT: Duration = Duration::from_secs(1);
/// How often the reader checks.
pub const PUBLISH_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Keeps `trusted` in step with the writer's outbox until `stop`. When the writer cannot publish
/// (Redis unreachable for it, or it died between commit and publish), its changes wait in the
/// outbox; a view the reader filled, or one that survived in Redis, could then be older than a
/// write the client already got a 201 for. While that lasts, account reads bypass Redis.
/// Transaction views never change, so they are always safe to serve.
pub async fn watch_publishing(
    pool: PgPool,
    trusted: Arc<AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match db::publishing_is_behind(&pool, PUBLISH_LAG_LIMIT).await {
            Ok(behind) => {
                if trusted.swap(!behind, Ordering::Relaxed) == behind {
                    tracing::warn!(
                        behind,
                        "writer publishing lag changed; account views in Redis {}",
                        if behind { "bypassed" } else { "used again" }
                    );
                }
            }
            // PostgreSQL down: no write can be acknowledged, so nothing new can go stale.
            Err(error) => tracing::debug!(%error, "cannot check the publish backlog"),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(PUBLISH_CHECK_INTERVAL) => {}
        }
    }
}

pub fn app(state: AppState, config: HttpConfig) -> Router {
    let routes = Router::new()
        .route("/ping", get(ping).fallback(http::unrouted))
        .route("/openapi.json", get(openapi).fallback(http::unrouted))
        .route(
            "/transactions",
            get(list_transactions).fallback(http::unrouted),
        )
        .route(
            "/transactions/{transaction_id}",
            get(get_transaction).fallback(http::unrouted),
        )
        .route(
            "/accounts/{account_id}",
            get(get_account).fallback(http::unrouted),
        )
        .with_state(state);
    http::with_middleware(routes, config)
}

/// Liveness: the process is up and serving. Deliberately touches neither PostgreSQL nor Redis,
/// so the proxy's health checks do not flap with them.
async fn ping() -> Response {
    http::json_body(Bytes::from_static(br#"{"status":"ok"}"#))
}

/// The OpenAPI document of the whole API (both services), built into the binary so that the
/// document served always matches the build serving it.
pub const OPENAPI_JSON: &[u8] = include_bytes!("../openapi.json");

async fn openapi() -> Response {
    http::json_body(Bytes::from_static(OPENAPI_JSON))
}

/// Looks a view up in Redis and counts the outcome. A Redis failure is a miss: the caller
/// falls back to PostgreSQL, which is always right.
fn cached_view(view: &'static str, lookup: Result<Option<Bytes>, CacheError>) -> Option<Bytes> {
    match lookup {
        Ok(Some(body)) => {
            m::record_cache_lookup(view, "hit");
            Some(body)
        }
        Ok(None) => {
            m::record_cache_lookup(view, "miss");
            None
        }
        Err(error) => {
            m::record_cache_lookup(view, "error");
            tracing::warn!(%error, view, "Redis lookup failed; reading PostgreSQL");
            None
        }
    }
}

fn warn_fill_failed(view: &'static str, result: Result<(), CacheError>) {
    if let Err(error) = result {
        tracing::warn!(%error, view, "could not fill the view in Redis");
    }
}

fn serialize(view: &impl serde::Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(view)
        .map(Bytes::from)
        .map_err(|error| ApiError::Internal(error.into()))
}

async fn get_account(
    State(state): State<AppState>,
    PathId(account_id): PathId<AccountId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let trusted = state.account_views_trusted.load(Ordering::Relaxed);
    if !trusted {
        m::record_cache_lookup("account", "bypass");
    } else if let Some(body) = cached_view("account", state.cache.account_view(account_id).await) {
        return Ok(http::conditional_json(&headers, body));
    }
    let found = db::load_account(&state.pool, account_id).await?;
    let account = found
        .ok_or_else(|| ApiError::NotFound(format!("account {account_id} has no transactions")))?;
    let view = AccountView::new(&account);
    if trusted {
        warn_fill_failed("account", state.cache.fill_account(&view).await);
    }
    Ok(http::conditional_json(&headers, view.into_body()))
}

async fn get_transaction(
    State(state): State<AppState>,
    PathId(transaction_id): PathId<TransactionId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(body) = cached_view(
        "transaction",
        state.cache.transaction_view(transaction_id).await,
    ) {
        return Ok(http::conditional_json(&headers, body));
    }
    let found = db::load_transaction(&state.pool, transaction_id).await?;
    let transaction = found
        .ok_or_else(|| ApiError::NotFound(format!("transaction {transaction_id} not found")))?;
    let view = TransactionView::new(&transaction);
    warn_fill_failed("transaction", state.cache.fill_transaction(&view).await);
    Ok(http::conditional_json(&headers, view.into_body()))
}

/// Query parameters of `GET /transactions` as they come, all optional; parsed into a
/// [`ListQuery`].
#[derive(Debug, Deserialize)]
pub struct ListParams {
    account_id: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /transactions`: a JSON array, newest first.
///
/// - no `limit`: every selected transaction, streamed (see [`stream_list`]);
/// - `limit=N`: one page of at most N, and a `Link: <…>; rel="next"` header when there may be
///   more. Pages are keyed by position, not offset: transactions committed while a client pages
///   through appear at the front of a new listing and never shift or repeat later pages.
async fn list_transactions(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|_| {
        ApiError::BadRequest("query string is malformed; see the API's documentation".into())
    })?;
    let query = ListQuery::parse(
        params.account_id.as_deref(),
        params.limit.as_deref(),
        params.after.as_deref(),
    )?;
    let filter = ListFilter {
        account_id: query.account_id,
        before: query.after,
    };
    match query.limit {
        Some(limit) => list_page(&state.pool, filter, limit.value()).await,
        None => stream_list(state.pool, filter).await,
    }
}

async fn list_page(pool: &PgPool, filter: ListFilter, limit: i64) -> Result<Response, ApiError> {
    // One extra row tells whether there is a next page.
    let mut rows = db::list_page(pool, filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let page: Vec<_> = rows.iter().map(|(_, transaction)| transaction).collect();
    let mut response = http::json_body(serialize(&page)?);
    if let (true, Some((last, _))) = (more, rows.last()) {
        let mut next = format!("/transactions?limit={limit}&after={last}");
        if let Some(account_id) = filter.account_id {
            next.push_str(&format!("&account_id={account_id}"));
        }
        let link = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
            .map_err(|error| ApiError::Internal(error.into()))?;
        response.headers_mut().insert(LINK, link);
    }
    Ok(response)
}

/// Rows are serialized into chunks of about this size before they are sent.
const LIST_CHUNK_BYTES: usize = 32 * 1024;
/// Chunks buffered between the database and the client: memory stays bounded whatever the
/// table's size, and a slow client slows the query down instead of filling memory.
const LIST_CHUNKS_IN_FLIGHT: usize = 4;

/// Streams the whole selection from PostgreSQL, batch by batch (see [`LIST_BATCH_ROWS`]).
/// The status is decided by the first chunk: if
/// the database cannot be read the client gets a 503 instead of a 200 with a broken body. A
/// failure later on aborts the body, so the client sees an incomplete response, never a silently
/// truncated array.
async fn stream_list(pool: PgPool, filter: ListFilter) -> Result<Response, ApiError> {
    let (chunks, mut received) = mpsc::channel::<Result<Bytes, sqlx::Error>>(LIST_CHUNKS_IN_FLIGHT);
    tokio::spawn(produce_transaction_list(pool, filter, chunks));
    let first = match received.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(error)) => return Err(error.into()),
        None => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "list producer ended early"
            )))
        }
    };
    let rest = futures_util::stream::unfold(received, |mut received| async move {
        let chunk = received.recv().await?;
        let chunk = chunk.map_err(|error| {
            tracing::error!(%error, "listing transactions failed mid-stream; aborting the body");
            io::Error::other("database stream failed")
        });
        Some((chunk, received))
    });
    let body = futures_util::stream::once(async { Ok::<_, io::Error>(first) }).chain(rest);
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Rows read per statement. Each batch is its own short query whose rows are read at once, so a
/// listing of any length is never cut by `DB_STATEMENT_TIMEOUT_MS`, and a slow client holds a
/// little memory (one batch) but no database connection.
const LIST_BATCH_ROWS: i64 = 2_000;

async fn produce_transaction_list(
    pool: PgPool,
    filter: ListFilter,
    chunks: mpsc::Sender<Result<Bytes, sqlx::Error>>,
) {
    let mut buffer = Vec::with_capacity(LIST_CHUNK_BYTES + 256);
    buffer.push(b'[');
    let mut first = true;
    let mut position = filter;
    loop {
        let rows = match db::list_batch(&pool, position, LIST_BATCH_ROWS).await {
            Ok(rows) => rows,
            Err(error) => {
                let _ = chunks.send(Err(error)).await;
                return;
            }
        };
        for (_, transaction) in &rows {
            if !first {
                buffer.push(b',');
            }
            first = false;
            if let Err(error) = serde_json::to_writer(&mut buffer, transaction) {
                let _ = chunks.send(Err(sqlx::Error::Decode(Box::new(error)))).await;
                return;
            }
            if buffer.len() >= LIST_CHUNK_BYTES {
                let chunk = Bytes::from(std::mem::replace(
                    &mut buffer,
                    Vec::with_capacity(LIST_CHUNK_BYTES + 256),
                ));
                if chunks.send(Ok(chunk)).await.is_err() {
                    return; // The client went away.
                }
            }
        }
        // Newest first: the next batch starts below the oldest row of this one. Rows committed
        // meanwhile have higher positions and are not part of this listing.
        match rows.last() {
            Some((last, _)) if rows.len() as i64 == LIST_BATCH_ROWS => {
                position.before = Some(*last);
            }
            _ => break,
        }
    }
    buffer.push(b']');
    let _ = chunks.send(Ok(Bytes::from(buffer))).await;
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = m::install(settings.service.name())?;
    m::register_hot_series(cache::READ_OPERATIONS, &["account", "transaction"]);
    // The reader queries only on cache misses and listings, so it keeps the ping of a pooled
    // connection before each use and recovers from a PostgreSQL restart without any error.
    let state = AppState::new(
        db::connect(&settings.pool_config(true))?,
        Cache::new(
            &settings.redis_url,
            &settings.redis_key_prefix,
            settings.redis_timeout,
        )?,
    );
    let pool = state.pool.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_publishing(
        pool.clone(),
        state.account_views_trusted.clone(),
        stopped,
    ));
    let app = app(state, HttpConfig::from(&settings));
    http::serve_until_signal(&settings, app, metrics, stop).await?;
    let watcher_ended = watcher.await;
    tracing::info!(
        publish_watcher_ok = watcher_ended.is_ok(),
        "background tasks stopped"
    );
    pool.close().await;
    tracing::info!("reader stopped");
    Ok(())
}
