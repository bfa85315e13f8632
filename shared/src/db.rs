//! PostgreSQL access: the pool, the migrations and every query of both services.
//!
//! All SQL lives here, with bound parameters only. PostgreSQL is the source of truth; see
//! `migrations/` for the schema and why it looks the way it does.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{
    Account, AccountId, AccountState, IdempotencyKey, NewTransaction, Transaction, TransactionId,
};
use crate::error::ApiError;
use crate::settings::{Service, Settings};

/// The schema, embedded in the binaries. The writer owns it and runs it on start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A pool that connects lazily, so a service starts (and serves what it can from Redis) even
/// while PostgreSQL is down, and reconnects by itself when it returns.
pub fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings
        .database_url
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let statement_timeout = settings.db_statement_timeout.as_millis().to_string();
    let options = options
        .application_name(settings.service.name())
        .options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.db_pool_size)
        .acquire_timeout(settings.db_acquire_timeout)
        // Pinging a connection before handing it out costs a round trip per query (a fifth of
        // the writer's CPU in the benchmark), so the writer, whose every request queries, skips
        // it: after a PostgreSQL restart each pooled connection fails one request with a 503
        // (clients retry, with their Idempotency-Key) and is replaced. The reader queries only
        // on cache misses and listings, so it keeps the ping and recovers without any error.
        .test_before_acquire(settings.service == Service::Reader)
        .connect_lazy_with(options))
}

/// Runs the migrations, retrying while PostgreSQL is not reachable yet (containers and native
/// start-up scripts may start the writer first). Gives up after `patience`.
pub async fn migrate_when_available(pool: &PgPool, patience: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(error)) if is_unavailable(&error) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(error).context("PostgreSQL did not become reachable; is it running and is DATABASE_URL right?");
                }
                tracing::warn!(error = %error, "PostgreSQL not reachable yet; retrying migrations");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error).context("failed to run database migrations"),
        }
    }
}

/// What one `POST /transactions` committed: the transaction and its account right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub transaction: Transaction,
    pub account: AccountState,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The new balance would not fit in a signed 64-bit integer; nothing was written.
    #[error("balance would overflow")]
    BalanceOverflow,
    /// Another transaction already has this idempotency key (a concurrent retry won the race);
    /// nothing was written. Look it up with [`find_by_idempotency_key`].
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The batch this transaction was part of failed as a whole, with this error (one error,
    /// shared by every request of the batch).
    #[error("the batch failed: {0}")]
    Batch(std::sync::Arc<sqlx::Error>),
}

/// SQLSTATE 22003 numeric_value_out_of_range: `bigint + bigint` overflowed.
const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
/// The unique index on `transactions.idempotency_key` (see the migrations).
const IDEMPOTENCY_KEY_INDEX: &str = "transactions_idempotency_key_key";

/// Inserts the transaction, applies it to its account's balance (creating the account on its
/// first transaction) and records it in the outbox: one statement, so one atomic transaction in
/// one round trip. The upsert takes the account's row lock, so concurrent writes to one account
/// queue behind each other and each sees the balance the previous one committed.
///
/// All parts of a statement see the same snapshot; the `REFERENCES accounts` check runs at the
/// end of the statement, after the account row exists.
pub const RECORD_TRANSACTION_SQL: &str = r#"
WITH account AS (
    INSERT INTO accounts AS a (account_id, balance, version)
    VALUES ($2, $3, 1)
    ON CONFLICT (account_id) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance,
            version = a.version + 1,
            updated_at = now()
    RETURNING balance, version
), transaction AS (
    INSERT INTO transactions (transaction_id, account_id, amount, idempotency_key)
    VALUES ($1, $2, $3, $4)
    RETURNING created_at
), outbox AS (
    INSERT INTO publish_outbox (transaction_id) VALUES ($1)
)
SELECT transaction.created_at, account.balance, account.version FROM account, transaction
"#;

pub async fn record_transaction(
    pool: &PgPool,
    transaction_id: TransactionId,
    new: NewTransaction,
    idempotency_key: Option<&IdempotencyKey>,
) -> Result<Recorded, RecordError> {
    let row: RecordedRow = sqlx::query_as(RECORD_TRANSACTION_SQL)
        .bind(transaction_id.as_uuid())
        .bind(new.account_id.as_uuid())
        .bind(new.amount.value())
        .bind(idempotency_key.map(IdempotencyKey::as_str))
        .fetch_one(pool)
        .await
        .map_err(record_error)?;
    Ok(recorded(transaction_id, new, row))
}

/// What a record statement returned for one transaction: its `created_at` and its account's
/// balance and version right after it.
type RecordedRow = (DateTime<Utc>, i64, i64);

fn recorded(
    transaction_id: TransactionId,
    new: NewTransaction,
    (created_at, balance, version): RecordedRow,
) -> Recorded {
    Recorded {
        transaction: Transaction {
            transaction_id,
            account_id: new.account_id,
            amount: new.amount,
            created_at,
        },
        account: AccountState {
            account: Account {
                account_id: new.account_id,
                balance,
            },
            version,
        },
    }
}

/// One `POST /transactions` to record: the id it gets, what it asks for, its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub transaction_id: TransactionId,
    pub new: NewTransaction,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// [`RECORD_TRANSACTION_SQL`] for many transactions at once: one statement, one commit, one
/// round trip for the whole batch (group commit). Each account's row is updated once, with the
/// sum of its amounts, and accounts are locked in `account_id` order so that concurrent batches
/// cannot deadlock. For every input row (`$1..$4`, in order) it returns the transaction's
/// `created_at` and its account's balance and version *right after that transaction*, as if the
/// batch had been applied one by one in input order.
///
/// Anything that makes one row fail (an idempotency key already taken, an overflowing balance)
/// fails the whole statement; the caller then records the batch one by one, so each request gets
/// its own answer.
pub const RECORD_TRANSACTIONS_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[]) WITH ORDINALITY
        AS i (transaction_id, account_id, amount, idempotency_key, n)
), totals AS (
    SELECT account_id, sum(amount)::bigint AS amount, count(*) AS applied
    FROM input GROUP BY account_id
), account AS (
    INSERT INTO accounts AS a (account_id, balance, version)
    SELECT account_id, amount, applied FROM totals ORDER BY account_id
    ON CONFLICT (account_id) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance,
            version = a.version + EXCLUDED.version,
            updated_at = now()
    RETURNING account_id, balance, version
), transaction AS (
    INSERT INTO transactions (transaction_id, account_id, amount, idempotency_key)
    SELECT transaction_id, account_id, amount, idempotency_key FROM input ORDER BY n
    RETURNING transaction_id, created_at
), outbox AS (
    INSERT INTO publish_outbox (transaction_id) SELECT transaction_id FROM input
), later AS (
    -- What the same account's later rows of this batch add on top of each row.
    SELECT n, transaction_id, account_id,
           coalesce(sum(amount) OVER after_this, 0) AS amount,
           count(*) OVER after_this AS applied
    FROM input
    WINDOW after_this AS (PARTITION BY account_id ORDER BY n
                          ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
)
SELECT transaction.created_at,
       (account.balance - later.amount)::bigint AS balance,
       account.version - later.applied AS version
FROM later
JOIN account USING (account_id)
JOIN transaction USING (transaction_id)
ORDER BY later.n
"#;

/// Records a batch with [`RECORD_TRANSACTIONS_SQL`]: all of it or nothing. The results are in
/// the order of `batch`.
pub async fn record_transactions(
    pool: &PgPool,
    batch: &[NewRecord],
) -> Result<Vec<Recorded>, RecordError> {
    let ids: Vec<Uuid> = batch.iter().map(|r| r.transaction_id.as_uuid()).collect();
    let accounts: Vec<Uuid> = batch.iter().map(|r| r.new.account_id.as_uuid()).collect();
    let amounts: Vec<i64> = batch.iter().map(|r| r.new.amount.value()).collect();
    let keys: Vec<Option<&str>> = batch
        .iter()
        .map(|r| r.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .collect();
    let rows: Vec<RecordedRow> = sqlx::query_as(RECORD_TRANSACTIONS_SQL)
        .bind(ids)
        .bind(accounts)
        .bind(amounts)
        .bind(keys)
        .fetch_all(pool)
        .await
        .map_err(record_error)?;
    if rows.len() != batch.len() {
        return Err(RecordError::Database(sqlx::Error::Protocol(format!(
            "a batch of {} transactions returned {} rows",
            batch.len(),
            rows.len()
        ))));
    }
    Ok(batch
        .iter()
        .zip(rows)
        .map(|(record, row)| recorded(record.transaction_id, record.new, row))
        .collect())
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

pub async fn load_account(
    pool: &PgPool,
    account_id: AccountId,
) -> Result<Option<AccountState>, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT balance, version FROM accounts WHERE account_id = $1")
            .bind(account_id.as_uuid())
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(balance, version)| AccountState {
        account: Account {
            account_id,
            balance,
        },
        version,
    }))
}

type TransactionRow = (Uuid, Uuid, i64, DateTime<Utc>);

fn transaction_from_row(
    (transaction_id, account_id, amount, created_at): TransactionRow,
) -> Transaction {
    Transaction {
        transaction_id: transaction_id.into(),
        account_id: account_id.into(),
        amount: amount.into(),
        created_at,
    }
}

/// The transaction an idempotency key created, if any.
pub async fn find_by_idempotency_key(
    pool: &PgPool,
    key: &IdempotencyKey,
) -> Result<Option<Transaction>, sqlx::Error> {
    let row: Option<TransactionRow> = sqlx::query_as(
        "SELECT transaction_id, account_id, amount, created_at FROM transactions
         WHERE idempotency_key = $1",
    )
    .bind(key.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(transaction_from_row))
}

pub async fn load_transaction(
    pool: &PgPool,
    transaction_id: TransactionId,
) -> Result<Option<Transaction>, sqlx::Error> {
    let row: Option<TransactionRow> = sqlx::query_as(
        "SELECT transaction_id, account_id, amount, created_at FROM transactions
         WHERE transaction_id = $1",
    )
    .bind(transaction_id.as_uuid())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(transaction_from_row))
}

/// Which transactions a listing returns. Listings are newest first, keyed by `seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this account's transactions.
    pub account_id: Option<AccountId>,
    /// Only transactions older than this position (the paging cursor).
    pub before_seq: Option<i64>,
    /// At most this many.
    pub limit: Option<i64>,
}

/// The transactions a filter selects, newest first, each with its `seq` (the cursor for the
/// next page), row by row as PostgreSQL sends them: memory stays flat however many there are.
/// Holds one pool connection until the stream ends or is dropped.
///
/// Two fixed statements rather than one with `$1 IS NULL OR …`, so that each keeps a plan that
/// walks its index (`transactions_seq_key` or `transactions_account_seq_idx`) backwards.
pub fn stream_transactions(
    pool: &PgPool,
    filter: ListFilter,
) -> impl Stream<Item = Result<(i64, Transaction), sqlx::Error>> + '_ {
    let before = filter.before_seq.unwrap_or(i64::MAX);
    let query = match filter.account_id {
        Some(account_id) => sqlx::query_as::<_, (i64, Uuid, Uuid, i64, DateTime<Utc>)>(
            "SELECT seq, transaction_id, account_id, amount, created_at FROM transactions
             WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(account_id.as_uuid()),
        None => sqlx::query_as(
            "SELECT seq, transaction_id, account_id, amount, created_at FROM transactions
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
        ),
    };
    query.bind(before).bind(filter.limit).fetch(pool).map_ok(
        |(seq, transaction_id, account_id, amount, created_at)| {
            let transaction =
                transaction_from_row((transaction_id, account_id, amount, created_at));
            (seq, transaction)
        },
    )
}

/// Removes published changes from the outbox.
pub async fn mark_published(pool: &PgPool, transaction_ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM publish_outbox WHERE transaction_id = ANY($1)")
        .bind(transaction_ids)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Changes still in the outbox that are older than `grace` (younger ones are most likely being
/// published right now by the request that made them), oldest first, with each account's
/// *current* state: publishing that is always correct, whatever was missed in between.
pub async fn unpublished(
    pool: &PgPool,
    grace: Duration,
    limit: i64,
) -> Result<Vec<Recorded>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, i64, DateTime<Utc>, i64, i64)> = sqlx::query_as(
        "SELECT t.transaction_id, t.account_id, t.amount, t.created_at, a.balance, a.version
         FROM publish_outbox o
         JOIN transactions t USING (transaction_id)
         JOIN accounts a ON a.account_id = t.account_id
         WHERE o.created_at < now() - make_interval(secs => $1)
         ORDER BY o.created_at
         LIMIT $2",
    )
    .bind(grace.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(transaction_id, account_id, amount, created_at, balance, version)| {
                let transaction =
                    transaction_from_row((transaction_id, account_id, amount, created_at));
                Recorded {
                    account: AccountState {
                        account: Account {
                            account_id: transaction.account_id,
                            balance,
                        },
                        version,
                    },
                    transaction,
                }
            },
        )
        .collect())
}

/// Whether some committed change has waited longer than `older_than` to be published: the
/// writer cannot reach Redis, so account views there may be older than acknowledged writes.
pub async fn publishing_is_behind(
    pool: &PgPool,
    older_than: Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM publish_outbox
                        WHERE created_at < now() - make_interval(secs => $1))",
    )
    .bind(older_than.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Age in seconds of the oldest change not yet published to Redis (0 when none is pending).
pub async fn oldest_unpublished_age(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM publish_outbox",
    )
    .fetch_one(pool)
    .await
}

/// Connection-level failures, timeouts and server shutdowns: the client may retry (503).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57: operator intervention
            // (57014 is a statement timeout, 57P01 an admin shutdown).
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57")
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            ApiError::Unavailable("database unavailable, retry later")
        } else {
            ApiError::Internal(anyhow::Error::new(error).context("database query failed"))
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::BalanceOverflow => ApiError::Unprocessable(
                "the account's balance would overflow a signed 64-bit integer; nothing was recorded"
                    .into(),
            ),
            RecordError::IdempotencyKeyTaken => ApiError::Internal(anyhow::anyhow!(
                "idempotency key conflict must be resolved by the caller"
            )),
            RecordError::Database(error) => error.into(),
            RecordError::Batch(error) if is_unavailable(&error) => {
                ApiError::Unavailable("database unavailable, retry later")
            }
            RecordError::Batch(error) => {
                ApiError::Internal(anyhow::anyhow!("recording a batch failed: {error}"))
            }
        }
    }
}
