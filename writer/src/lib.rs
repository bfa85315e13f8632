//! The write side: `POST /transactions`.
//!
//! A request is validated, committed to PostgreSQL (transaction, balance and outbox entry in
//! one statement), published to Redis, and only then answered with 201, so a read that follows
//! the 201 finds the new views. See [`publisher`] for what happens when Redis is not there.

pub mod publisher;
pub mod recorder;

use std::time::Duration;

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use shared::cache::Cache;
use shared::db::{self, NewRecord, RecordError};
use shared::domain::{IdempotencyKey, NewTransaction, Recorded, Transaction, TransactionId};
use shared::error::{ApiError, JsonObject};
use shared::http::{self, HttpConfig, Routes};
use shared::settings::Settings;
use shared::telemetry::metrics as m;
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::publisher::Publisher;
use crate::recorder::{RecordFailure, Recorder};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub recorder: Recorder,
}

impl AppState {
    /// The state, with the recorder's workers started (see [`Recorder::start`]); they end once
    /// every clone of the state is dropped.
    pub fn start(pool: PgPool, publisher: Publisher, workers: usize) -> (Self, JoinSet<()>) {
        let (recorder, workers) = Recorder::start(pool.clone(), publisher.clone(), workers);
        let state = Self {
            pool,
            publisher,
            recorder,
        };
        (state, workers)
    }
}

/// Every route the writer serves: `POST /transactions`, and `GET /ping` for health checks that
/// bypass the proxy. The route-table test compares them with the public API.
pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/transactions", create_transaction)
        .get("/ping", http::ping)
}

/// The writer's router with the shared middleware. Everything else is a JSON 404 or 405.
pub fn app(state: AppState, config: HttpConfig) -> Router {
    http::with_middleware(routes().into_router().with_state(state), config)
}

/// The optional header that makes a POST safe to retry.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a 201 that replays an earlier request's result instead of applying it again.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

async fn create_transaction(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let new = NewTransaction::try_from(&body)?;
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()?;
    if let Some(replayed) = replay_if_known(&state, key.as_ref(), new).await? {
        return Ok(replayed);
    }
    let record = NewRecord {
        transaction_id: TransactionId::new_random(),
        new,
        idempotency_key: key.clone(),
    };
    // Committed (and published, unless Redis failed) when this returns; see `recorder`.
    match state.recorder.record(record).await {
        Ok(recorded) => Ok(created(recorded.transaction, false)),
        // A concurrent retry with the same key committed first; ours wrote nothing.
        Err(RecordFailure::Statement(RecordError::IdempotencyKeyTaken)) => {
            replay_if_known(&state, key.as_ref(), new)
                .await?
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!(
                        "idempotency key conflict, but no transaction has the key"
                    ))
                })
        }
        Err(error) => Err(error.into()),
    }
}

/// 201 with the transaction and its `Location`; `replayed` marks an idempotent replay.
fn created(transaction: Transaction, replayed: bool) -> Response {
    let location = format!("/transactions/{}", transaction.transaction_id);
    let mut response = (
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(transaction),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// If `key` already created a transaction, the answer to this retry of it: the original
/// transaction if the request is the same, else 422 (a key must not be reused for a different
/// request).
///
/// A replay publishes the account's current state before answering, like a first attempt: the
/// first attempt may have committed and then died before publishing (the very case a client
/// retries), and read-your-writes must hold after the replayed 201 too.
async fn replay_if_known(
    state: &AppState,
    key: Option<&IdempotencyKey>,
    new: NewTransaction,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let earlier = db::find_by_idempotency_key(&state.pool, key).await?;
    let Some(earlier) = earlier else {
        return Ok(None);
    };
    if earlier.account_id != new.account_id || earlier.amount != new.amount {
        return Err(ApiError::Unprocessable(
            "Idempotency-Key was already used with a different request body".into(),
        ));
    }
    let ticket = state.publisher.ticket().await;
    let account = db::load_account(&state.pool, earlier.account_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a transaction without its account")))?;
    let recorded = Recorded {
        transaction: earlier,
        account,
    };
    state.publisher.publish(&recorded, &ticket).await;
    Ok(Some(created(recorded.transaction, true)))
}

/// Everything `main` does: connect, migrate, serve the API and the metrics until SIGTERM,
/// then drain and stop the background tasks.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = m::install(settings.service.name())?;
    publisher::init_metrics();
    // No ping of a pooled connection before each use: it costs a round trip per query (a fifth
    // of the writer's CPU in the benchmark), and every request of the writer queries. After a
    // PostgreSQL restart each pooled connection then fails one request with a 503 (clients
    // retry, with their Idempotency-Key) and is replaced.
    let pool = db::connect(&settings.pool_config(false))?;
    db::migrate_when_available(&pool, Duration::from_secs(60)).await?;
    let cache = Cache::from_settings(&settings)?;
    let (publisher, outbox_cleaner) = Publisher::start(pool.clone(), cache);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let repair = tokio::spawn(publisher::repair_loop(
        pool.clone(),
        publisher.clone(),
        stop_rx.clone(),
    ));

    let (state, mut recorder_workers) =
        AppState::start(pool.clone(), publisher, settings.write_batch_workers);
    let app = app(state, HttpConfig::from(&settings));
    http::serve_until_signal(&settings, app, metrics, stop_tx).await?;

    // The server and its handlers are gone, so the recorder's queue is closed: let the workers
    // answer what they still hold before the outbox cleaner (which they feed) can end.
    while recorder_workers.join_next().await.is_some() {}

    // No request can publish any more: stop the background tasks and flush the outbox
    // deletions that are still queued.
    let repair_ended = repair.await;
    let cleaner_ended = outbox_cleaner.await;
    tracing::info!(
        repair_ok = repair_ended.is_ok(),
        outbox_cleaner_ok = cleaner_ended.is_ok(),
        "writer stopped"
    );
    pool.close().await;
    Ok(())
}
