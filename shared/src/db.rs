//! PostgreSQL access: the pool, the migrations and every query of both services.
//!
//! All SQL lives here, with bound parameters only. PostgreSQL is the source of truth; see
//! `migrations/` for the schema and why it looks the way it does.
//!
//! This is the storage layer: it knows nothing of HTTP (the API's mapping of these errors is in
//! [`crate::error`]) nor of which service runs it (each service passes its [`PoolConfig`]).
//! Every query function times itself under the query name written beside its SQL
//! (`db_query_duration_seconds{query=…}`).

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{
    Account, AccountId, AccountState, Cursor, IdempotencyKey, NewTransaction, Recorded,
    Transaction, TransactionId,
};
use crate::telemetry::metrics::time_query;

/// The schema, embedded in the binaries. The writer owns it and runs it on start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// What a pool needs; each service fills it from its settings and its own needs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub database_url: String,
    /// Shown in `pg_stat_activity`, so an operator sees which service holds a connection.
    pub application_name: &'static str,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Set as the connections' `statement_timeout`: a server-side limit on any one statement.
    pub statement_timeout: Duration,
    /// Ping a pooled connection before handing it out: one round trip per query, against one
    /// failed request per dead connection after a PostgreSQL restart.
    pub test_before_acquire: bool,
}

/// A pool that connects lazily, so a service starts (and serves what it can from Redis) even
/// while PostgreSQL is down, and reconnects by itself when it returns.
pub fn connect(config: &PoolConfig) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .database_url
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let options = options
        .application_name(config.application_name)
        .options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(config.test_before_acquire)
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
    /// The batch statement answered with a different number of rows than it was given (a bug:
    /// the statement returns one row per input row).
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
    INSERT INTO publish_batches (transaction_ids) VALUES (ARRAY[$1::uuid])
    RETURNING batch_id
)
SELECT transaction.created_at, account.balance, account.version, outbox.batch_id
FROM account, transaction, outbox
"#;

pub async fn record_transaction(
    pool: &PgPool,
    transaction_id: TransactionId,
    new: NewTransaction,
    idempotency_key: Option<&IdempotencyKey>,
) -> Result<Committed<Recorded>, RecordError> {
    let query = sqlx::query_as(RECORD_TRANSACTION_SQL)
        .bind(transaction_id.as_uuid())
        .bind(new.account_id.as_uuid())
        .bind(new.amount.value())
        .bind(idempotency_key.map(IdempotencyKey::as_str));
    let row: RecordedRow = time_query("record_transaction", query.fetch_one(pool))
        .await
        .map_err(record_error)?;
    let outbox = OutboxBatch(row.3);
    Ok(Committed {
        recorded: recorded(transaction_id, new, row),
        outbox,
    })
}

/// The outbox row of one commit (`publish_batches.batch_id`): it lists the commit's
/// transactions until they are all in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBatch(pub i64);

/// What one commit recorded (one transaction, or a batch of them in input order), with its
/// outbox row, to delete once the commit's changes are published.
#[derive(Debug)]
pub struct Committed<T> {
    pub recorded: T,
    pub outbox: OutboxBatch,
}

/// What a record statement returned for one transaction: its `created_at`, its account's
/// balance and version right after it, and its commit's outbox row.
type RecordedRow = (DateTime<Utc>, i64, i64, i64);

fn recorded(
    transaction_id: TransactionId,
    new: NewTransaction,
    (created_at, balance, version, _outbox): RecordedRow,
) -> Recorded {
    let transaction = Transaction {
        transaction_id,
        account_id: new.account_id,
        amount: new.amount,
        created_at,
    };
    with_account_state(transaction, balance, version)
}

/// A transaction with its account's balance and version (right after it, or current).
fn with_account_state(transaction: Transaction, balance: i64, version: i64) -> Recorded {
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
    INSERT INTO publish_batches (transaction_ids)
    SELECT array_agg(transaction_id ORDER BY n) FROM input
    RETURNING batch_id
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
       account.version - later.applied AS version,
       outbox.batch_id
FROM later
JOIN account USING (account_id)
JOIN transaction USING (transaction_id)
CROSS JOIN outbox
ORDER BY later.n
"#;

/// Records a batch with [`RECORD_TRANSACTIONS_SQL`]: all of it or nothing. The results are in
/// the order of `batch`.
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
    if rows.len() != batch.len() {
        return Err(RecordError::UnexpectedRows {
            sent: batch.len(),
            returned: rows.len(),
        });
    }
    let Some(outbox) = rows.first().map(|row| OutboxBatch(row.3)) else {
        return Err(RecordError::UnexpectedRows {
            sent: 0,
            returned: 0,
        });
    };
    let recorded = batch
        .iter()
        .zip(rows)
        .map(|(record, row)| recorded(record.transaction_id, record.new, row))
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
    let query = sqlx::query_as(
        "SELECT transaction_id, account_id, amount, created_at FROM transactions
         WHERE idempotency_key = $1",
    )
    .bind(key.as_str());
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

/// Removes the outbox rows of commits whose changes are all in Redis. Committed without waiting
/// for the WAL flush (`synchronous_commit = off`): a delete lost in a crash only leaves a row
/// the repair loop republishes (harmless, views are versioned), and not waiting keeps these
/// commits from taking turns at the disk with the writes clients wait for. One round trip:
/// the ids are integers, written into the statement.
pub async fn mark_published(pool: &PgPool, batches: &[OutboxBatch]) -> Result<(), sqlx::Error> {
    if batches.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = batches.iter().map(|batch| batch.0.to_string()).collect();
    let sql = format!(
        "BEGIN; SET LOCAL synchronous_commit = off; \
         DELETE FROM publish_batches WHERE batch_id IN ({}); COMMIT;",
        ids.join(",")
    );
    time_query("mark_published", sqlx::raw_sql(&sql).execute(pool)).await?;
    Ok(())
}

/// Commits still in the outbox that are older than `grace` (younger ones are most likely being
/// published right now by the requests that made them), oldest first, at most `limit` of them,
/// each with its transactions and their accounts' *current* states: publishing that is always
/// correct, whatever was missed in between.
pub async fn unpublished(
    pool: &PgPool,
    grace: Duration,
    limit: i64,
) -> Result<Vec<Committed<Vec<Recorded>>>, sqlx::Error> {
    let query = sqlx::query_as(
        "WITH overdue AS (
             SELECT batch_id, transaction_ids, created_at FROM publish_batches
             WHERE created_at < now() - make_interval(secs => $1)
             ORDER BY created_at, batch_id
             LIMIT $2
         )
         SELECT o.batch_id, t.transaction_id, t.account_id, t.amount, t.created_at,
                a.balance, a.version
         FROM overdue o
         CROSS JOIN LATERAL unnest(o.transaction_ids) WITH ORDINALITY AS u (transaction_id, n)
         JOIN transactions t ON t.transaction_id = u.transaction_id
         JOIN accounts a ON a.account_id = t.account_id
         ORDER BY o.created_at, o.batch_id, u.n",
    )
    .bind(grace.as_secs_f64())
    .bind(limit);
    type Row = (i64, Uuid, Uuid, i64, DateTime<Utc>, i64, i64);
    let rows: Vec<Row> = time_query("unpublished", query.fetch_all(pool)).await?;
    let mut commits: Vec<Committed<Vec<Recorded>>> = Vec::new();
    for (batch_id, transaction_id, account_id, amount, created_at, balance, version) in rows {
        let transaction = transaction_from_row((transaction_id, account_id, amount, created_at));
        let recorded = with_account_state(transaction, balance, version);
        match commits.last_mut() {
            Some(commit) if commit.outbox.0 == batch_id => commit.recorded.push(recorded),
            _ => commits.push(Committed {
                recorded: vec![recorded],
                outbox: OutboxBatch(batch_id),
            }),
        }
    }
    Ok(commits)
}

/// Whether some committed change has waited longer than `older_than` to be published: the
/// writer cannot reach Redis, so account views there may be older than acknowledged writes.
pub async fn publishing_is_behind(
    pool: &PgPool,
    older_than: Duration,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM publish_batches
                        WHERE created_at < now() - make_interval(secs => $1))",
    )
    .bind(older_than.as_secs_f64());
    time_query("publishing_is_behind", query.fetch_one(pool)).await
}

/// Age in seconds of the oldest change not yet published to Redis (0 when none is pending).
pub async fn oldest_unpublished_age(pool: &PgPool) -> Result<f64, sqlx::Error> {
    let query = sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM publish_batches",
    );
    time_query("oldest_unpublished_age", query.fetch_one(pool)).await
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
