//! The reads: an account, a transaction, and listings of transactions.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{transaction_from_row, TransactionRow};
use crate::domain::{
    Account, AccountId, AccountState, Cursor, IdempotencyKey, Transaction, TransactionId,
};
use crate::telemetry::metrics::time_query;

pub async fn load_account(
    pool: &PgPool,
    account_id: AccountId,
) -> Result<Option<AccountState>, sqlx::Error> {
    let query = sqlx::query_as("SELECT balance, version FROM accounts WHERE account_id = $1")
        .bind(account_id.as_uuid());
    let row: Option<(i64, i64)> = time_query("load_account", query.fetch_optional(pool)).await?;
    Ok(row.map(|(balance, version)| AccountState {
        account: Account {
            account_id,
            balance,
        },
        version,
    }))
}

/// The transaction an idempotency key created (in its scope), if any.
pub async fn find_by_idempotency_key(
    pool: &PgPool,
    key: &IdempotencyKey,
) -> Result<Option<Transaction>, sqlx::Error> {
    let query = sqlx::query_as(
        "SELECT transaction_id, account_id, amount, created_at FROM transactions
         WHERE idempotency_key = $1 AND idempotency_scope = $2",
    )
    .bind(key.as_str())
    .bind(key.scope());
    let row: Option<TransactionRow> =
        time_query("find_by_idempotency_key", query.fetch_optional(pool)).await?;
    Ok(row.map(transaction_from_row))
}

pub async fn load_transaction(
    pool: &PgPool,
    transaction_id: TransactionId,
) -> Result<Option<Transaction>, sqlx::Error> {
    let query = sqlx::query_as(
        "SELECT transaction_id, account_id, amount, created_at FROM transactions
         WHERE transaction_id = $1",
    )
    .bind(transaction_id.as_uuid());
    let row: Option<TransactionRow> =
        time_query("load_transaction", query.fetch_optional(pool)).await?;
    Ok(row.map(transaction_from_row))
}

/// Which transactions a listing returns. Listings are newest first, keyed by `seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this account's transactions.
    pub account_id: Option<AccountId>,
    /// Only transactions older than this position (the paging cursor).
    pub before: Option<Cursor>,
}

/// Newest first, below a position. Two fixed statements rather than one with
/// `$1 IS NULL OR …`, so that each keeps a plan that walks its index (`transactions_seq_key` or
/// `transactions_account_seq_idx`) backwards.
const LIST_SQL: &str = "SELECT seq, transaction_id, account_id, amount, created_at
    FROM transactions WHERE seq < $1 ORDER BY seq DESC LIMIT $2";
const LIST_ACCOUNT_SQL: &str = "SELECT seq, transaction_id, account_id, amount, created_at
    FROM transactions WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";

/// One page of a client's paged listing: at most `limit` of the transactions `filter` selects,
/// newest first, each with its position (the cursor of the next page).
pub async fn list_page(
    pool: &PgPool,
    filter: ListFilter,
    limit: i64,
) -> Result<Vec<(Cursor, Transaction)>, sqlx::Error> {
    time_query("list_transactions_page", list(pool, filter, limit)).await
}

/// One batch of an unpaged listing, which reads batch after batch (the reader's streamed
/// `GET /transactions`): like [`list_page`], under its own query name.
pub async fn list_batch(
    pool: &PgPool,
    filter: ListFilter,
    limit: i64,
) -> Result<Vec<(Cursor, Transaction)>, sqlx::Error> {
    time_query("list_transactions_batch", list(pool, filter, limit)).await
}

/// Reads the selected rows whole, in one short statement: callers bound the memory with
/// `limit` and never hold a connection between calls.
async fn list(
    pool: &PgPool,
    filter: ListFilter,
    limit: i64,
) -> Result<Vec<(Cursor, Transaction)>, sqlx::Error> {
    let before = filter.before.map_or(i64::MAX, Cursor::seq);
    let query = match filter.account_id {
        Some(account_id) => sqlx::query_as(LIST_ACCOUNT_SQL).bind(account_id.as_uuid()),
        None => sqlx::query_as(LIST_SQL),
    };
    let rows: Vec<(i64, Uuid, Uuid, i64, DateTime<Utc>)> =
        query.bind(before).bind(limit).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(seq, transaction_id, account_id, amount, created_at)| {
            let transaction =
                transaction_from_row((transaction_id, account_id, amount, created_at));
            (Cursor::at(seq), transaction)
        })
        .collect())
}
