//! What account and transaction reads share: looking a view up in Redis and filling it, with
//! the outcome counted (`cache_lookups_total{view, result}`).

use axum::body::Bytes;
use shared::cache::CacheError;
use shared::telemetry::{error_chain, metrics as m};

pub const ACCOUNT: &str = "account";
pub const TRANSACTION: &str = "transaction";
/// Every view the reader looks up (its lookup series are created at start-up).
pub const NAMES: &[&str] = &[ACCOUNT, TRANSACTION];

/// Counts the outcome of a view lookup. A Redis failure is a miss: the caller falls back to
/// PostgreSQL, which is always right.
pub fn cached(view: &'static str, lookup: Result<Option<Bytes>, CacheError>) -> Option<Bytes> {
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
            tracing::warn!(
                error = error_chain(&error),
                view,
                "Redis lookup failed; reading PostgreSQL"
            );
            None
        }
    }
}

/// A failed fill costs only a later miss; the read itself has its answer.
pub fn warn_fill_failed(view: &'static str, result: Result<(), CacheError>) {
    if let Err(error) = result {
        tracing::warn!(
            error = error_chain(&error),
            view,
            "could not fill the view in Redis"
        );
    }
}
