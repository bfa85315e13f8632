//! PostgreSQL access: the pool, the migrations and every query of both services.
//!
//! All SQL lives in this module, with bound parameters only: [`record`] writes transactions,
//! [`reads`] reads accounts and transactions, [`outbox`] tracks what is not yet in Redis,
//! [`feed`] reads the live change feed's transactions in commit order.
//! PostgreSQL is the source of truth; see `shared/migrations/` for the schema and why it looks
//! the way it does.
//!
//! This is the storage layer: it knows neither settings nor HTTP (the API's mapping of these
//! errors is in `http::error`) nor which service runs it (each service passes its
//! [`PoolConfig`]). Every query function times itself under the query name written beside its
//! SQL (`db_query_duration_seconds{query=…}`), in a `db` span.

mod feed;
mod outbox;
mod reads;
mod record;

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;
use uuid::Uuid;

pub use feed::{feed_head, feed_page, FeedRow};
pub use outbox::{
    mark_published, oldest_unpublished_age, publishing_is_behind, unpublished, Committed,
};
pub use reads::{
    find_by_idempotency_key, list_batch, list_page, load_account, load_transaction, ListFilter,
};
pub use record::{
    clear_expired_idempotency_keys, record_transactions, NewRecord, OutboxBatch, RecordError,
    Recording, RECORD_TRANSACTIONS_SQL,
};

use crate::domain::{Account, AccountState, Recorded, Transaction};

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
    /// Set as the connections' `lock_timeout`: the longest a statement waits for a row lock
    /// another session holds (a concurrent batch whose commit is slow), well under the
    /// request timeout; then it is rolled back, and its requests get 503 with nothing written.
    pub lock_timeout: Duration,
    /// Ping a pooled connection before handing it out: one round trip per query, against one
    /// failed request per dead connection after a PostgreSQL restart.
    pub test_before_acquire: bool,
}

/// A pool that connects lazily, so a service starts (and serves what it can from Redis) even
/// while PostgreSQL is down, and reconnects by itself when it returns.
pub fn connect(config: &PoolConfig) -> anyhow::Result<PgPool> {
    let mut options: PgConnectOptions = config
        .database_url
        .parse()
        .context("not a valid PostgreSQL URL")?;
    // TLS only when asked for. sqlx's default, `prefer`, would encrypt unverified whenever the
    // server offers TLS: a cost on every query (Debian's cluster offers it on loopback) and no
    // defence against whoever answers in the server's place.
    let prefer = matches!(options.get_ssl_mode(), PgSslMode::Prefer);
    if prefer && !names_ssl_mode(&config.database_url) {
        options = options.ssl_mode(PgSslMode::Disable);
    }
    let verified = matches!(
        options.get_ssl_mode(),
        PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    let host = options.get_host();
    if !verified && options.get_socket().is_none() && !is_loopback(host) {
        tracing::warn!(
            host,
            "the PostgreSQL link is not verified; add sslmode=verify-full to DATABASE_URL"
        );
    }
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let lock_timeout = config.lock_timeout.as_millis().to_string();
    let options = options.application_name(config.application_name).options([
        ("statement_timeout", statement_timeout.as_str()),
        ("lock_timeout", lock_timeout.as_str()),
    ]);
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
            // Waiting would not help: the handshake fails the same way every time.
            Err(sqlx::migrate::MigrateError::Execute(error)) if is_tls_failure(pool, &error) => {
                return Err(error).context(TLS_FAILED);
            }
            Err(sqlx::migrate::MigrateError::Execute(error)) if is_unavailable(&error) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(error).context("PostgreSQL did not become reachable; is it running and is its URL (MIGRATION_DATABASE_URL, else DATABASE_URL) right?");
                }
                tracing::warn!(
                    error = crate::telemetry::error_chain(&error),
                    "PostgreSQL not reachable yet; retrying migrations"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error).context("failed to run database migrations"),
        }
    }
}

/// Whether the URL's query sets `sslmode` (sqlx also reads `ssl-mode`).
fn names_ssl_mode(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.starts_with("sslmode=") || pair.starts_with("ssl-mode="))
    })
}

/// A host on this machine, where TLS protects nothing.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

const TLS_FAILED: &str = "PostgreSQL link: TLS handshake failed; check DATABASE_URL's sslmode \
     and sslrootcert against the server's certificate";

/// When `DATABASE_URL` requires TLS (`sslmode` `require`, `verify-ca` or `verify-full`), opens
/// one connection at start: a handshake that fails is a configuration error and stops the
/// service. A PostgreSQL that does not answer is not: the service starts and connects when it
/// can, as without TLS. (The writer's migrations check the same on their first connection.)
pub async fn check_tls(pool: &PgPool) -> anyhow::Result<()> {
    if !requires_tls(pool) {
        return Ok(());
    }
    match pool.acquire().await {
        Err(error) if is_tls_failure(pool, &error) => Err(error).context(TLS_FAILED),
        Err(error) => {
            let error = crate::telemetry::error_chain(&error);
            tracing::warn!(
                error,
                "PostgreSQL not reachable at start; its certificate is checked when it is"
            );
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// `require`, `verify-ca` or `verify-full`: sqlx then never falls back to plaintext.
fn requires_tls(pool: &PgPool) -> bool {
    matches!(
        pool.connect_options().get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    )
}

/// A failed TLS set-up on a pool that requires TLS: the server declined it (`Tls`), rustls
/// refused its certificate (an I/O error of kind `InvalidData`), or `sslrootcert` cannot be
/// read (sqlx reads it as it connects).
fn is_tls_failure(pool: &PgPool, error: &sqlx::Error) -> bool {
    use std::io::ErrorKind;
    requires_tls(pool)
        && match error {
            sqlx::Error::Tls(_) => true,
            sqlx::Error::Io(io) => matches!(
                io.kind(),
                ErrorKind::InvalidData | ErrorKind::NotFound | ErrorKind::PermissionDenied
            ),
            _ => false,
        }
}

/// Grants the services' roles what the migrations say they may do
/// (`ledger_grant_privileges`, shared/migrations/20261207000002_role_privileges.sql), again:
/// for roles created after the migration that granted ran (an operator that creates them
/// later, CloudNativePG reconciling its managed roles after the writer first migrated). Run
/// as the schema's owner; grants nothing to a role that does not exist.
pub async fn grant_role_privileges(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT ledger_grant_privileges()")
        .execute(pool)
        .await?;
    Ok(())
}

/// A transaction as the queries select it.
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
            // (57014 is a statement timeout, 57P01 an admin shutdown); 55P03: a lock not
            // granted within lock_timeout.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "55P03"
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl_mode(url: &str) -> PgSslMode {
        let config = PoolConfig {
            database_url: url.into(),
            application_name: "test",
            max_connections: 1,
            acquire_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(1),
            test_before_acquire: false,
        };
        connect(&config)
            .expect("a valid URL")
            .connect_options()
            .get_ssl_mode()
    }

    #[tokio::test]
    async fn tls_only_when_the_url_asks_for_it() {
        let url = "postgres://postgres@db.example:5432/ledger";
        assert!(matches!(ssl_mode(url), PgSslMode::Disable));
        let prefer = ssl_mode(&format!("{url}?sslmode=prefer"));
        assert!(matches!(prefer, PgSslMode::Prefer));
        let verified = ssl_mode(&format!("{url}?application_name=x&sslmode=verify-full"));
        assert!(matches!(verified, PgSslMode::VerifyFull));
    }
}
