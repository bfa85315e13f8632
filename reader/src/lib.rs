//! The read side: `GET /ping`, `GET /accounts/{id}`, `GET /transactions/{id}` and
//! `GET /transactions`.
//!
//! Account and transaction reads are served from the views in Redis; on a miss (or while Redis
//! is unreachable) they read PostgreSQL and fill the view. The list is streamed straight from
//! PostgreSQL: it is every transaction, so it is neither cached nor held in memory.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use shared::cache::{Cache, CacheError};
use shared::db;
use shared::domain::{AccountId, TransactionId};
use shared::error::{ApiError, PathId};
use shared::http::{self, Limits};
use shared::settings::Settings;
use shared::telemetry::metrics as m;
use sqlx::PgPool;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cache: Cache,
}

pub fn app(state: AppState, limits: Limits) -> Router {
    let routes = Router::new()
        .route("/ping", get(ping).fallback(http::unrouted))
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
    http::with_middleware(routes, limits)
}

/// Liveness: the process is up and serving. Deliberately touches neither PostgreSQL nor Redis,
/// so the proxy's health checks do not flap with them.
async fn ping() -> Response {
    http::json_body(Bytes::from_static(br#"{"status":"ok"}"#))
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
) -> Result<Response, ApiError> {
    if let Some(body) = cached_view("account", state.cache.account_view(account_id).await) {
        return Ok(http::json_body(body));
    }
    let found = m::time_query("load_account", db::load_account(&state.pool, account_id)).await?;
    let account = found
        .ok_or_else(|| ApiError::NotFound(format!("account {account_id} has no transactions")))?;
    let body = serialize(&account.account)?;
    warn_fill_failed(
        "account",
        state
            .cache
            .fill_account(account_id, account.version, &body)
            .await,
    );
    Ok(http::json_body(body))
}

async fn get_transaction(
    State(state): State<AppState>,
    PathId(transaction_id): PathId<TransactionId>,
) -> Result<Response, ApiError> {
    if let Some(body) = cached_view(
        "transaction",
        state.cache.transaction_view(transaction_id).await,
    ) {
        return Ok(http::json_body(body));
    }
    let found = m::time_query(
        "load_transaction",
        db::load_transaction(&state.pool, transaction_id),
    )
    .await?;
    let transaction = found
        .ok_or_else(|| ApiError::NotFound(format!("transaction {transaction_id} not found")))?;
    let body = serialize(&transaction)?;
    warn_fill_failed(
        "transaction",
        state.cache.fill_transaction(transaction_id, &body).await,
    );
    Ok(http::json_body(body))
}

/// Rows are serialized into chunks of about this size before they are sent.
const LIST_CHUNK_BYTES: usize = 32 * 1024;
/// Chunks buffered between the database and the client: memory stays bounded whatever the
/// table's size, and a slow client slows the query down instead of filling memory.
const LIST_CHUNKS_IN_FLIGHT: usize = 4;

/// `GET /transactions`: a JSON array of every transaction, oldest first, streamed from
/// PostgreSQL. The status is decided by the first chunk: if the database cannot be read the
/// client gets a 503 instead of a 200 with a broken body. A failure later on aborts the body,
/// so the client sees an incomplete response, never a silently truncated array.
async fn list_transactions(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (chunks, mut received) = mpsc::channel::<Result<Bytes, sqlx::Error>>(LIST_CHUNKS_IN_FLIGHT);
    tokio::spawn(produce_transaction_list(state.pool, chunks));
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

async fn produce_transaction_list(pool: PgPool, chunks: mpsc::Sender<Result<Bytes, sqlx::Error>>) {
    let mut rows = db::stream_transactions(&pool);
    let mut buffer = Vec::with_capacity(LIST_CHUNK_BYTES + 256);
    buffer.push(b'[');
    let mut first = true;
    while let Some(row) = rows.next().await {
        let transaction = match row {
            Ok(transaction) => transaction,
            Err(error) => {
                let _ = chunks.send(Err(error)).await;
                return;
            }
        };
        if !first {
            buffer.push(b',');
        }
        first = false;
        if let Err(error) = serde_json::to_writer(&mut buffer, &transaction) {
            let _ = chunks.send(Err(sqlx::Error::Decode(Box::new(error)))).await;
            return;
        }
        if buffer.len() >= LIST_CHUNK_BYTES {
            let chunk = Bytes::from(std::mem::replace(
                &mut buffer,
                Vec::with_capacity(LIST_CHUNK_BYTES + 256),
            ));
            if chunks.send(Ok(chunk)).await.is_err() {
                return; // The client went away; dropping `rows` ends the query.
            }
        }
    }
    buffer.push(b']');
    let _ = chunks.send(Ok(Bytes::from(buffer))).await;
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = m::install(settings.service.name())?;
    let state = AppState {
        pool: db::connect(&settings)?,
        cache: Cache::new(
            &settings.redis_url,
            &settings.redis_key_prefix,
            settings.redis_timeout,
        )?,
    };
    let pool = state.pool.clone();
    let (stop, _) = tokio::sync::watch::channel(false);
    let app = app(state, Limits::from(&settings));
    http::serve_until_signal(&settings, app, metrics, stop).await?;
    pool.close().await;
    tracing::info!("reader stopped");
    Ok(())
}
