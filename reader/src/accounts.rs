//! `GET /accounts/{account_id}`: an account's balance, from its view in Redis or PostgreSQL.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use shared::cache::AccountView;
use shared::db;
use shared::domain::AccountId;
use shared::http::{self, Routes};
use shared::http::{ApiError, PathId};
use shared::telemetry::metrics as m;

use crate::pause_fence::PAUSED;
use crate::views;
use crate::AppState;

pub fn routes() -> Routes<AppState> {
    Routes::new().get("/accounts/{account_id}", get_account)
}

async fn get_account(
    State(state): State<AppState>,
    PathId(account_id): PathId<AccountId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let trusted =
        state.account_views_trusted.load(Ordering::Relaxed) && state.redis_views.trusted();
    // Taken before anything is read: a fill may create a view only if no failover came between
    // (see `shared::cache::Ticket`).
    let ticket = state.cache.ticket().await;
    if !trusted {
        m::record_cache_lookup(views::ACCOUNT, "bypass");
    } else if let Some(body) =
        views::cached(views::ACCOUNT, state.cache.account_view(account_id).await)
    {
        return Ok(http::conditional_json(&headers, body));
    }
    let account = db::load_account(&state.pool, account_id).await?;
    // Read from PostgreSQL by a reader that was just paused: possibly from a primary that has
    // since lost its lock, so neither its balance nor its "no such account" may be answered
    // (see `pause_fence`).
    if !state.pause_fence.allows_reads() {
        return Err(ApiError::Unavailable(PAUSED));
    }
    let account = account
        .ok_or_else(|| ApiError::NotFound(format!("account {account_id} has no transactions")))?;
    let view = AccountView::new(&account);
    if trusted && ticket.is_valid() {
        views::warn_fill_failed(
            views::ACCOUNT,
            state.cache.fill_account(&view, &ticket).await,
        );
    }
    Ok(http::conditional_json(&headers, view.into_body()))
}
