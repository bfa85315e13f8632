//! The live change feed's reads (reader/src/feed.rs): transactions in commit order, after a
//! position, each with its account's balance right after it.
//!
//! A position is a transaction's `seq`. Since migration 20261207230001 the record statement
//! draws seqs under a lock held to its commit, so they are in commit order and a snapshot that
//! sees one sees every committed lower one: reading `seq > last` again and again never misses a
//! row and never sees one twice.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::transaction_from_row;
use crate::domain::{AccountId, Transaction};
use crate::telemetry::metrics::time_query;

/// A transaction at its position in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    pub position: i64,
    pub transaction: Transaction,
    /// The account's balance right after this transaction; `None` for a transaction recorded
    /// before the feed existed (its position is not in commit order).
    pub balance: Option<i64>,
}

/// A row as [`PAGE_SQL`] selects it.
type FeedSqlRow = (i64, Uuid, Uuid, i64, DateTime<Utc>, Option<i64>);

const HEAD_SQL: &str = "SELECT coalesce(max(seq), 0) FROM transactions";
/// Two fixed statements, as the listings: each keeps a plan that walks its index forwards.
const PAGE_SQL: &str = "SELECT seq, transaction_id, account_id, amount, created_at, balance
    FROM transactions WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3";
const PAGE_ACCOUNT_SQL: &str = "SELECT seq, transaction_id, account_id, amount, created_at, balance
    FROM transactions WHERE account_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4";

/// The newest committed position (0 for an empty ledger): where a feed opened without
/// `Last-Event-ID` starts.
pub async fn feed_head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    time_query("feed_head", sqlx::query_scalar(HEAD_SQL).fetch_one(pool)).await
}

/// At most `limit` transactions with a position in `(after, upto]`, of one account or of all,
/// oldest first.
pub async fn feed_page(
    pool: &PgPool,
    account_id: Option<AccountId>,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<FeedRow>, sqlx::Error> {
    let query = match account_id {
        Some(account_id) => sqlx::query_as(PAGE_ACCOUNT_SQL).bind(account_id.as_uuid()),
        None => sqlx::query_as(PAGE_SQL),
    };
    let rows: Vec<FeedSqlRow> = time_query(
        "feed_page",
        query.bind(after).bind(upto).bind(limit).fetch_all(pool),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(position, transaction_id, account_id, amount, created_at, balance)| FeedRow {
                position,
                transaction: transaction_from_row((transaction_id, account_id, amount, created_at)),
                balance,
            },
        )
        .collect())
}
