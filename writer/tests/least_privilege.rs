//! Least privilege (issue 21): with the roles of `scripts/sql/roles.sql`, the writer migrates
//! as the schema's owner (`MIGRATION_DATABASE_URL`) and serves as `ledger_writer`, which can
//! record and publish and nothing more; `ledger_reader` can only read. A privilege the writer
//! lacks fails its requests with a 500 whose cause is logged, and the writer goes on serving;
//! its next start grants the roles their privileges again.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use shared::settings::{Service, Settings};
use shared::telemetry::{self, EnvFilter, LogFormat};
use shared::testing::{self, post_json, send};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;
use writer::Application;

/// The roles' password in these tests: every test gives the same one (roles belong to the
/// whole server, and the tests run at once), on a test server only.
const TEST_PASSWORD: &str = "least-privilege-test";

/// Held while roles.sql runs (see [`Database::with_roles`]).
static ROLES_SQL: Mutex<()> = Mutex::new(());

/// A fresh database (from `#[sqlx::test]`) with the roles provisioned on it.
struct Database {
    admin: PgPool,
    host: String,
    port: u16,
    name: String,
}

impl Database {
    /// Runs `scripts/sql/roles.sql` with psql, as an operator would, on the test's database.
    async fn with_roles(options: PgConnectOptions) -> Self {
        let name = options.get_database().expect("a test database").to_owned();
        let database = Self {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            admin: PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .expect("the test database answers"),
            name,
        };
        // As the administrator sqlx::test connects as (DATABASE_URL, password included), on
        // the test's database; the roles' passwords on psql's input, as an operator would.
        let server = std::env::var("DATABASE_URL").expect("DATABASE_URL (as for #[sqlx::test])");
        let server = server.split('?').next().unwrap_or_default();
        let admin_url = format!(
            "{}/{}",
            &server[..server.rfind('/').expect("a URL")],
            database.name
        );
        let script = include_str!("../../scripts/sql/roles.sql");
        let passwords: String = ["owner", "writer", "reader"]
            .iter()
            .map(|role| format!("\\set {role}_password '{TEST_PASSWORD}'\n"))
            .collect();
        // One at a time: roles belong to the whole server, and two runs that alter one role
        // at the same moment fail ("tuple concurrently updated").
        let _one_at_a_time = ROLES_SQL.lock().unwrap_or_else(|e| e.into_inner());
        let mut psql = Command::new("psql")
            .args([admin_url.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql runs (apt-get install postgresql-client)");
        psql.stdin
            .take()
            .expect("psql's input")
            .write_all(format!("{passwords}{script}").as_bytes())
            .expect("roles.sql written to psql");
        let ran = psql.wait_with_output().expect("psql ends");
        assert!(
            ran.status.success(),
            "roles.sql failed: {}",
            String::from_utf8_lossy(&ran.stderr)
        );
        database
    }

    /// The URL of this database as `role`, with the password the tests give the roles (where
    /// PostgreSQL trusts local connections it is not even asked for).
    fn url_of(&self, role: &str) -> String {
        format!(
            "postgres://{role}:{TEST_PASSWORD}@{}:{}/{}",
            self.host, self.port, self.name
        )
    }

    async fn pool_of(&self, role: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url_of(role))
            .await
            .unwrap_or_else(|error| panic!("{role} connects: {error}"))
    }

    /// The writer, built as `main` builds it, from settings naming the roles.
    async fn writer(&self, key_prefix: &str) -> Application {
        let writer_url = self.url_of("ledger_writer");
        let owner_url = self.url_of("ledger_owner");
        let redis_url = testing::redis_url();
        let settings = Settings::from_lookup(Service::Writer, |name| match name {
            "DATABASE_URL" => Some(writer_url.clone()),
            "MIGRATION_DATABASE_URL" => Some(owner_url.clone()),
            "REDIS_URL" => Some(redis_url.clone()),
            "REDIS_KEY_PREFIX" => Some(key_prefix.to_owned()),
            _ => None,
        })
        .expect("settings");
        Application::build(&settings)
            .await
            .expect("the writer migrates as the owner and starts")
    }
}

/// The SQLSTATE of a statement's failure (`None` when it succeeded).
async fn sqlstate(pool: &PgPool, sql: &str) -> Option<String> {
    match sqlx::raw_sql(sql).execute(pool).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => error.code().map(|code| code.into_owned()),
        Err(error) => panic!("{sql}: not a database error: {error}"),
    }
}

#[sqlx::test(migrations = false)]
async fn the_writer_migrates_as_the_owner_then_records_and_publishes_as_the_writer_role(
    _pool: PgPoolOptions,
    options: PgConnectOptions,
) {
    let database = Database::with_roles(options).await;
    let app = database
        .writer(&testing::fresh_prefix())
        .await
        .into_router();

    let account = Uuid::new_v4();
    let body = json!({"account_id": account, "amount": 7}).to_string();
    let (status, created) = send(&app, post_json("/transactions", body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // Everything the migrations made belongs to the owner, the migrations' table included.
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT relname::text, pg_get_userbyid(relowner)::text FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v') ORDER BY 1",
    )
    .fetch_all(&database.admin)
    .await
    .expect("owners");
    let expected: Vec<(String, String)> = [
        "_sqlx_migrations",
        "accounts",
        "publish_batches",
        "publish_outbox",
        "transactions",
    ]
    .iter()
    .map(|table| (table.to_string(), "ledger_owner".to_string()))
    .collect();
    assert_eq!(owners, expected);
    // Published: the commit's outbox row was deleted by the writer role.
    let mut pending = 1;
    for _ in 0..50 {
        pending = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM publish_batches")
            .fetch_one(&database.admin)
            .await
            .expect("count");
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "the writer role deletes published outbox rows");
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE account_id = $1")
        .bind(account)
        .fetch_one(&database.admin)
        .await
        .expect("the account is recorded");
    assert_eq!(balance, 7);
}

#[sqlx::test(migrations = false)]
async fn the_reader_role_only_selects_and_the_writer_role_cannot_delete_or_drop(
    _pool: PgPoolOptions,
    options: PgConnectOptions,
) {
    let database = Database::with_roles(options).await;
    let owner = database.pool_of("ledger_owner").await;
    shared::db::MIGRATOR.run(&owner).await.expect("migrated");
    testing::commit(&owner, Uuid::new_v4(), 5, Some("key")).await;
    let reader = database.pool_of("ledger_reader").await;
    let writer = database.pool_of("ledger_writer").await;

    for table in [
        "accounts",
        "transactions",
        "publish_batches",
        "publish_outbox",
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(sqlstate(&reader, &sql).await, None, "reader: {sql}");
    }
    let denied = Some("42501".to_owned());
    for sql in [
        "INSERT INTO accounts (account_id, balance, version) VALUES (gen_random_uuid(), 1, 1)",
        "UPDATE accounts SET balance = balance + 1",
        "DELETE FROM transactions",
        "UPDATE transactions SET idempotency_key = NULL",
        "INSERT INTO publish_batches (transaction_ids) VALUES ('{00000000-0000-0000-0000-000000000000}')",
        "DELETE FROM publish_batches",
        "CREATE TABLE intruder (a int)",
        "CREATE TEMP TABLE intruder (a int)",
    ] {
        assert_eq!(sqlstate(&reader, sql).await, denied, "reader: {sql}");
    }
    for sql in [
        "DELETE FROM transactions",
        "UPDATE transactions SET amount = amount + 1",
        "TRUNCATE transactions",
        "DROP TABLE transactions",
        "DELETE FROM accounts",
        "UPDATE accounts SET account_id = gen_random_uuid()",
        "ALTER TABLE transactions DROP CONSTRAINT transactions_pkey",
        "CREATE TABLE intruder (a int)",
        "SELECT * FROM _sqlx_migrations",
        "INSERT INTO transactions (transaction_id, account_id, amount, created_at)
         SELECT gen_random_uuid(), account_id, 1, now() - interval '1 year' FROM accounts",
    ] {
        assert_eq!(sqlstate(&writer, sql).await, denied, "writer: {sql}");
    }
    // What the writer does besides recording: forget the idempotency keys past their
    // retention (writer/src/idempotency.rs), as it does it.
    let cleared = shared::db::clear_expired_idempotency_keys(&writer, Duration::ZERO, 10)
        .await
        .expect("the writer role clears expired keys");
    assert_eq!(cleared, 1);
}

/// Log lines, as the services write them, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[sqlx::test(migrations = false)]
async fn a_privilege_the_writer_lacks_is_a_500_with_its_cause_logged_until_a_start_grants_it(
    _pool: PgPoolOptions,
    options: PgConnectOptions,
) {
    // The only test of this binary that installs a subscriber: the recorder's workers log
    // from their own tasks, so it must be the global one.
    let log = Captured::default();
    let sink = log.clone();
    tracing::subscriber::set_global_default(telemetry::subscriber(
        LogFormat::Json,
        EnvFilter::new("info"),
        move || sink.clone(),
    ))
    .expect("the only subscriber of this test binary");
    let database = Database::with_roles(options).await;
    let app = database
        .writer(&testing::fresh_prefix())
        .await
        .into_router();
    // An operator's mistake: the writer lost its INSERT on transactions.
    sqlx::raw_sql("REVOKE INSERT ON transactions FROM ledger_writer")
        .execute(&database.admin)
        .await
        .expect("revoked");

    for _ in 0..2 {
        let body = json!({"account_id": Uuid::new_v4(), "amount": 3}).to_string();
        let (status, error) = send(&app, post_json("/transactions", body)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{error}");
        assert_eq!(
            error,
            json!({"error": "internal server error"}),
            "no cause leaks"
        );
    }

    let bytes = log.0.lock().expect("log buffer").clone();
    let causes: Vec<Value> = String::from_utf8(bytes)
        .expect("UTF-8 log")
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == "ERROR")
        .collect();
    assert!(
        causes.iter().any(|line| line["error"]
            .as_str()
            .is_some_and(|error| error.contains("permission denied for table transactions"))),
        "the cause is logged: {causes:#?}"
    );

    // The next start grants the roles what the migrations say, again (as for roles created
    // after the first migration): the writer records.
    let restarted = database
        .writer(&testing::fresh_prefix())
        .await
        .into_router();
    let body = json!({"account_id": Uuid::new_v4(), "amount": 3}).to_string();
    let (status, created) = send(&restarted, post_json("/transactions", body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}
