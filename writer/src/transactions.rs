//! `POST /transactions`: validate, replay a known `Idempotency-Key`, else record (see
//! [`crate::recorder`]) and answer 201 once the change is committed and published.

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use shared::db::{self, NewRecord, RecordError};
use shared::domain::{IdempotencyKey, NewTransaction, Recorded, Transaction, TransactionId};
use shared::http::{ApiError, ApiKeyId, JsonObject, X_REQUEST_ID};

use crate::recorder::RecordFailure;
use crate::AppState;

/// The optional header that makes a POST safe to retry.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a 201 that replays an earlier request's result instead of applying it again.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub(crate) async fn create_transaction(
    State(state): State<AppState>,
    api_key: Option<Extension<ApiKeyId>>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let new = NewTransaction::try_from(&body)?;
    // With API keys on, each API key has its own namespace of idempotency keys.
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()?
        .map(|key| match &api_key {
            Some(Extension(ApiKeyId(id))) => key.scoped_to(id),
            None => key,
        });
    if let Some(replayed) = replay_if_known(&state, key.as_ref(), new).await? {
        return Ok(replayed);
    }
    let record = NewRecord {
        transaction_id: TransactionId::new_random(),
        new,
        idempotency_key: key.clone(),
    };
    // Set by the middleware before any handler runs (kept from nginx, or made there).
    let request_id = headers
        .get(X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Committed (and published, unless Redis failed) when this returns; see `recorder`.
    match state.recorder.record(record, request_id).await {
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
