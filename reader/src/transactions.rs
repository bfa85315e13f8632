//! `GET /transactions/{transaction_id}` (one transaction, from its view in Redis or PostgreSQL)
//! and `GET /transactions` (the list: one page, or every transaction streamed).

mod list_stream;

pub use list_stream::{ListLimits, TOO_MANY_LISTINGS};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use shared::cache::TransactionView;
use shared::db::{self, ListFilter};
use shared::domain::{ListQuery, TransactionId};
use shared::http::{self, Routes};
use shared::http::{ApiError, PathId};
use sqlx::PgPool;

use crate::views;
use crate::AppState;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .get("/transactions", list_transactions)
        .get("/transactions/{transaction_id}", get_transaction)
}

async fn get_transaction(
    State(state): State<AppState>,
    PathId(transaction_id): PathId<TransactionId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(body) = views::cached(
        views::TRANSACTION,
        state.cache.transaction_view(transaction_id).await,
    ) {
        return Ok(http::conditional_json(&headers, body));
    }
    let transaction = db::load_transaction(&state.pool, transaction_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("transaction {transaction_id} not found")))?;
    let view = TransactionView::new(&transaction);
    views::warn_fill_failed(
        views::TRANSACTION,
        state.cache.fill_transaction(&view).await,
    );
    Ok(http::conditional_json(&headers, view.into_body()))
}

/// Query parameters of `GET /transactions` as they come, all optional; parsed into a
/// [`ListQuery`], with the other domain parsing.
#[derive(Debug, Deserialize)]
struct ListParams {
    account_id: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /transactions`: a JSON array, newest first.
///
/// - no `limit`: every selected transaction, streamed (see [`list_stream`]);
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
        None => list_stream::respond(state.pool, filter, &state.listings).await,
    }
}

async fn list_page(pool: &PgPool, filter: ListFilter, limit: i64) -> Result<Response, ApiError> {
    // One extra row tells whether there is a next page.
    let mut rows = db::list_page(pool, filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let page: Vec<_> = rows.iter().map(|(_, transaction)| transaction).collect();
    let body = serde_json::to_vec(&page).map_err(|error| ApiError::Internal(error.into()))?;
    let mut response = http::json_body(body.into());
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
