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
    /// A new balance would leave ±(2^53 - 1) (`Amount::MAX_SAFE`, what JSON clients hold
    /// exactly); this transaction was not written.
    #[error("balance would leave the JSON-safe range")]
    BalanceOutOfRange,
    /// Another transaction already has this idempotency key (a retry, or a concurrent retry
    /// that won the race); this transaction was not written. Look it up with [`super::find_by_idempotency_key`].
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    #[error("the record statement failed")]
    Database(#[from] sqlx::Error),
    /// The statement answered with a different number of rows than it was given (a bug, or a
    /// schema changed under it: the statement returns one row per input row).
    #[error("a batch of {sent} transactions returned {returned} rows")]
    UnexpectedRows { sent: usize, returned: usize },
    /// A row's answer is not one the statement gives: an unknown outcome, or `recorded`
    /// without what it recorded (a bug, or a schema or trigger changed under it).
    #[error("the record statement answered row {row} with `{outcome}` and not what it recorded")]
    UnexpectedOutcome { row: usize, outcome: String },
}

impl RecordError {
    /// PostgreSQL refused the statement, so it was rolled back and nothing was written: it is
    /// safe to record the same transactions again. A broken connection leaves the outcome
    /// unknown, so it is not.
    pub fn was_refused(&self) -> bool {
        match self {
            Self::IdempotencyKeyTaken | Self::BalanceOutOfRange => true,
            Self::Database(error @ sqlx::Error::Database(_)) => !is_unavailable(error),
            Self::Database(_) | Self::UnexpectedRows { .. } | Self::UnexpectedOutcome { .. } => {
                false
            }
        }
    }

    /// PostgreSQL could not be reached or was too slow; the client may retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(error) if is_unavailable(error))
    }

    /// The statement may have committed: the connection broke (or the server went away) while
    /// it ran. Everything else that fails a statement rolls it back: a pool that gave no
    /// connection never sent it, a timeout or a refusal cancels it.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Database(error) if Self::outcome_unknown_of(error))
    }

    pub fn outcome_unknown_of(error: &sqlx::Error) -> bool {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            // 08: connection exception; 57P01-57P03: the server shut down or is restarting.
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        }
    }
}

/// SQLSTATE 22003 numeric_value_out_of_range: `bigint + bigint` overflowed (the statement's
/// exactness guard).
const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
/// The unique index on `transactions (idempotency_scope, idempotency_key)` (see the migrations).
const IDEMPOTENCY_KEY_INDEX: &str = "transactions_idempotency_scope_key";

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

/// What one statement did with a batch: an outcome per transaction, in input order, and the
/// commit's outbox row (none when every transaction was refused).
#[derive(Debug)]
pub struct Recording {
    pub outcomes: Vec<Result<Recorded, RecordError>>,
    pub outbox: Option<OutboxBatch>,
}

/// What the statement returns for one transaction: its outcome, the exactness guard, and when
/// recorded its `created_at`, its account's balance and version right after it, and its
/// commit's outbox row.
type RecordedRow = (
    String,
    i64,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// Records `batch` with [`RECORD_TRANSACTIONS_SQL`], in one commit: each transaction is recorded
/// or refused on its own (an idempotency key already taken, an overflowing balance), in the
/// order of `batch`. The statement as a whole fails, writing nothing, when PostgreSQL refuses it
/// (a concurrent batch took a key first, a deadlock, a refusal the set-based check could not
/// decide exactly: see the file); then record the transactions one at a time.
pub async fn record_transactions(
    pool: &PgPool,
    batch: &[NewRecord],
) -> Result<Recording, RecordError> {
    let ids: Vec<Uuid> = batch.iter().map(|r| r.transaction_id.as_uuid()).collect();
    let accounts: Vec<Uuid> = batch.iter().map(|r| r.new.account_id.as_uuid()).collect();
    let amounts: Vec<i64> = batch.iter().map(|r| r.new.amount.value()).collect();
    let keys: Vec<Option<&str>> = batch
        .iter()
        .map(|r| r.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .collect();
    let scopes: Vec<&str> = batch
        .iter()
        .map(|r| r.idempotency_key.as_ref().map_or("", IdempotencyKey::scope))
        .collect();
    let query = sqlx::query_as(RECORD_TRANSACTIONS_SQL)
        .bind(ids)
        .bind(accounts)
        .bind(amounts)
        .bind(keys)
        .bind(scopes);
    let rows: Vec<RecordedRow> = time_query("record_transactions", query.fetch_all(pool))
        .await
        .map_err(record_error)?;
    if rows.len() != batch.len() {
        return Err(RecordError::UnexpectedRows {
            sent: batch.len(),
            returned: rows.len(),
        });
    }
    let mut outbox = None;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (row, (record, (outcome, _guard, created_at, balance, version, batch_id))) in
        batch.iter().zip(rows).enumerate()
    {
        outcomes.push(
            match (outcome.as_str(), created_at, balance, version, batch_id) {
                ("recorded", Some(created_at), Some(balance), Some(version), Some(batch_id)) => {
                    outbox = Some(OutboxBatch(batch_id));
                    let transaction = Transaction {
                        transaction_id: record.transaction_id,
                        account_id: record.new.account_id,
                        amount: record.new.amount,
                        created_at,
                    };
                    Ok(with_account_state(transaction, balance, version))
                }
                ("key_taken", ..) => Err(RecordError::IdempotencyKeyTaken),
                ("balance_overflow", ..) => Err(RecordError::BalanceOutOfRange),
                // What was committed is then unknown: the whole batch fails, not this row.
                _ => return Err(RecordError::UnexpectedOutcome { row, outcome }),
            },
        );
    }
    Ok(Recording { outcomes, outbox })
}

fn record_error(error: sqlx::Error) -> RecordError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(NUMERIC_VALUE_OUT_OF_RANGE) => {
            RecordError::BalanceOutOfRange
        }
        sqlx::Error::Database(db) if db.constraint() == Some(IDEMPOTENCY_KEY_INDEX) => {
            RecordError::IdempotencyKeyTaken
        }
        _ => RecordError::Database(error),
    }
}

/// Clears the idempotency keys of up to `limit` transactions recorded more than `retention`
/// ago (their keys may be used again); returns how many. Rows another writer is clearing at the
/// same time are skipped.
pub async fn clear_expired_idempotency_keys(
    pool: &PgPool,
    retention: std::time::Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let query = sqlx::query(
        "UPDATE transactions SET idempotency_key = NULL
         WHERE transaction_id IN (
             SELECT transaction_id FROM transactions
             WHERE idempotency_key IS NOT NULL
               AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(retention.as_secs_f64())
    .bind(limit);
    let done = time_query("clear_expired_idempotency_keys", query.execute(pool)).await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Amount;

    #[test]
    fn the_statement_keeps_balances_in_the_range_of_amounts() {
        let bounds = format!("BETWEEN -{0} AND {0}", Amount::MAX_SAFE);
        assert_eq!(RECORD_TRANSACTIONS_SQL.matches(&bounds).count(), 3);
        assert!(!RECORD_TRANSACTIONS_SQL.contains("9223372036854775808"));
    }
}
