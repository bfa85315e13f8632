//! Recording transactions: the one statement behind `POST /transactions` and its errors.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{is_unavailable, with_account_state};
use crate::domain::{IdempotencyKey, NewTransaction, Recorded, Transaction, TransactionId};
use crate::telemetry::metrics::time_query;

/// The one statement that records transactions, a batch at a time (see the file for how).
pub const RECORD_TRANSACTIONS_SQL: &str = include_str!("record_transactions.sql");

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A new balance would not fit in a signed 64-bit integer; nothing was written.
    #[error("balance would overflow")]
    BalanceOverflow,
    /// Another transaction already has this idempotency key (a concurrent retry won the race);
    /// nothing was written. Look it up with [`super::find_by_idempotency_key`].
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    #[error("the record statement failed")]
    Database(#[from] sqlx::Error),
    /// The statement answered with a different number of rows than it was given (a bug, or a
    /// schema changed under it: the statement returns one row per input row).
    #[error("a batch of {sent} transactions returned {returned} rows")]
    UnexpectedRows { sent: usize, returned: usize },
}

impl RecordError {
    /// PostgreSQL refused the statement, so it was rolled back and nothing was written: it is
    /// safe to record the same transactions again. A broken connection leaves the outcome
    /// unknown, so it is not.
    pub fn was_refused(&self) -> bool {
        match self {
            Self::IdempotencyKeyTaken | Self::BalanceOverflow => true,
            Self::Database(error @ sqlx::Error::Database(_)) => !is_unavailable(error),
            Self::Database(_) | Self::UnexpectedRows { .. } => false,
        }
    }

    /// PostgreSQL could not be reached or was too slow; the client may retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(error) if is_unavailable(error))
    }
}

/// SQLSTATE 22003 numeric_value_out_of_range: `bigint + bigint` overflowed.
const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
/// The unique index on `transactions.idempotency_key` (see the migrations).
const IDEMPOTENCY_KEY_INDEX: &str = "transactions_idempotency_key_key";

/// One `POST /transactions` to record: the id it gets, what it asks for, its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub transaction_id: TransactionId,
    pub new: NewTransaction,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The outbox row of one commit (`publish_batches.batch_id`): it lists the commit's
/// transactions until they are all in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBatch(pub i64);

/// What one commit recorded (its transactions, in input order), with its outbox row, to delete
/// once the commit's changes are published.
#[derive(Debug)]
pub struct Committed<T> {
    pub recorded: T,
    pub outbox: OutboxBatch,
}

/// What the statement returns for one transaction: its `created_at`, its account's balance and
/// version right after it, and its commit's outbox row.
type RecordedRow = (DateTime<Utc>, i64, i64, i64);

/// Records `batch` with [`RECORD_TRANSACTIONS_SQL`]: all of it or nothing, in one commit. The
/// results are in the order of `batch`. Anything that makes one row fail (an idempotency key
/// already taken, an overflowing balance) fails the whole statement.
pub async fn record_transactions(
    pool: &PgPool,
    batch: &[NewRecord],
) -> Result<Committed<Vec<Recorded>>, RecordError> {
    let ids: Vec<Uuid> = batch.iter().map(|r| r.transaction_id.as_uuid()).collect();
    let accounts: Vec<Uuid> = batch.iter().map(|r| r.new.account_id.as_uuid()).collect();
    let amounts: Vec<i64> = batch.iter().map(|r| r.new.amount.value()).collect();
    let keys: Vec<Option<&str>> = batch
        .iter()
        .map(|r| r.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .collect();
    let query = sqlx::query_as(RECORD_TRANSACTIONS_SQL)
        .bind(ids)
        .bind(accounts)
        .bind(amounts)
        .bind(keys);
    let rows: Vec<RecordedRow> = time_query("record_transactions", query.fetch_all(pool))
        .await
        .map_err(record_error)?;
    let unexpected = RecordError::UnexpectedRows {
        sent: batch.len(),
        returned: rows.len(),
    };
    if rows.len() != batch.len() {
        return Err(unexpected);
    }
    let Some(outbox) = rows.first().map(|row| OutboxBatch(row.3)) else {
        return Err(unexpected);
    };
    let recorded = batch
        .iter()
        .zip(rows)
        .map(|(record, (created_at, balance, version, _outbox))| {
            let transaction = Transaction {
                transaction_id: record.transaction_id,
                account_id: record.new.account_id,
                amount: record.new.amount,
                created_at,
            };
            with_account_state(transaction, balance, version)
        })
        .collect();
    Ok(Committed { recorded, outbox })
}

fn record_error(error: sqlx::Error) -> RecordError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(NUMERIC_VALUE_OUT_OF_RANGE) => {
            RecordError::BalanceOverflow
        }
        sqlx::Error::Database(db) if db.constraint() == Some(IDEMPOTENCY_KEY_INDEX) => {
            RecordError::IdempotencyKeyTaken
        }
        _ => RecordError::Database(error),
    }
}
