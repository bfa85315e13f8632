//! The log tells the whole story of a failed request: the request id a client gets with a 500
//! leads, with one search of the log, to the line that says what went wrong. Here the cause is
//! logged by the recorder's worker, outside the request, inside the span of the batch that
//! served it, in the services' own JSON log format.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use shared::telemetry::{self, EnvFilter, LogFormat};
use shared::testing::{self, status_and_json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;
use writer::{Application, WriterConfig};

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

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8(bytes)
            .expect("log lines are UTF-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The amount the test's trigger swallows.
const SWALLOWED: i64 = 424_242;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_request_id_of_a_500_finds_its_cause_in_the_log(pool: PgPool) {
    // The one test of this binary, so the subscriber may be the global one: the recorder's
    // workers log from their own tasks.
    let log = Captured::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(telemetry::subscriber(
        LogFormat::Json,
        EnvFilter::new("info"),
        move || writer.clone(),
    ))
    .expect("the only subscriber of this test binary");
    // A fault PostgreSQL does not refuse: the transaction's row silently vanishes, so the
    // statement answers `recorded` without the transaction and the batch's outcome is a bug,
    // not a refusal (nothing to retry, a 500 for its requests, the cause logged once by the
    // worker).
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION swallow() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER swallow BEFORE INSERT ON transactions
             FOR EACH ROW WHEN (NEW.amount = {SWALLOWED}) EXECUTE FUNCTION swallow();"
    ))
    .execute(&pool)
    .await
    .expect("trigger created");
    let app = Application::build_on(
        pool.clone(),
        testing::isolated_cache(),
        WriterConfig::new(testing::http_config(), 1),
    )
    .into_router();

    let request_id = format!("test-{}", Uuid::new_v4());
    let request: Request<axum::body::Body> = Request::post("/transactions")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", &request_id)
        .body(
            json!({"account_id": Uuid::new_v4(), "amount": SWALLOWED})
                .to_string()
                .into(),
        )
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        json!({"error": "internal server error"}),
        "no cause leaks"
    );

    // One grep for the id: the line of the batch that failed, with its whole cause.
    let found: Vec<Value> = log
        .lines()
        .iter()
        .filter(|line| line.contains(&request_id))
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    let cause = found
        .iter()
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line names {request_id}: {found:#?}"));
    assert_eq!(cause["message"], "recording a batch failed", "{cause:#}");
    assert_eq!(
        cause["error"],
        "the record statement answered row 0 with `recorded` and not what it recorded",
        "{cause:#}"
    );
    let batch = cause["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|span| span["name"] == "write_batch"))
        .unwrap_or_else(|| panic!("the line is in its batch's span: {cause:#}"));
    assert_eq!(batch["request_ids"], request_id.as_str());
}
