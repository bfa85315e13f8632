//! Every metric both services export, declared here and nowhere else.
//!
//! Names follow Prometheus conventions (base units, `_total` for counters, `_seconds` for
//! durations). Every series also carries `service="writer"|"reader"`, set once as a global
//! label by [`install`]. Routes are labelled with the matched template
//! (`/accounts/{account_id}`), never the raw path, so cardinality stays bounded.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `http_requests_total` | counter | method (a fixed set, else `other`), route, status | requests answered |
//! | `http_request_duration_seconds` | histogram | method, route, status | time to the response head |
//! | `http_requests_in_flight` | gauge | | requests being handled now |
//! | `db_query_duration_seconds` | histogram | query, outcome | one PostgreSQL query |
//! | `redis_operation_duration_seconds` | histogram | operation, outcome | one Redis call |
//! | `cache_lookups_total` | counter | view, result (`hit`, `miss`, `error`, `bypass`) | reader's view lookups (`bypass`: account views skipped while the writer's publishing lags) |
//! | `publish_failures_total` | counter | | writer publishes to Redis that failed (the repair loop retries them) |
//! | `publish_repairs_total` | counter | | changes the repair loop republished |
//! | `publish_backlog_oldest_age_seconds` | gauge | | age of the oldest change not yet in Redis |
//! | `write_batch_size` | histogram | | transactions the writer committed together in one statement (group commit) |
//! | `feed_streams_open` | gauge | feed (`account`, `all`) | reader: change feeds open now |
//! | `feed_events_sent_total` | counter | feed | reader: events written to change feeds |
//! | `feed_lag_seconds` | histogram | | reader: from a transaction's `created_at` to the reader dispatching it to its feeds |
//! | `feed_refusals_total` | counter | reason (`instance_cap`, `client_cap`, `too_slow`) | reader: feeds refused (503, 429) or dropped for not reading |
//! | `build_info` | gauge (always 1) | version | which build is running |

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What renders `/metrics`; [`install`] returns it.
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";
pub const DB_QUERY_DURATION_SECONDS: &str = "db_query_duration_seconds";
pub const REDIS_OPERATION_DURATION_SECONDS: &str = "redis_operation_duration_seconds";
pub const CACHE_LOOKUPS_TOTAL: &str = "cache_lookups_total";
pub const PUBLISH_FAILURES_TOTAL: &str = "publish_failures_total";
pub const PUBLISH_REPAIRS_TOTAL: &str = "publish_repairs_total";
pub const PUBLISH_BACKLOG_OLDEST_AGE_SECONDS: &str = "publish_backlog_oldest_age_seconds";
pub const BUILD_INFO: &str = "build_info";
pub const AUTH_REFUSALS_TOTAL: &str = "http_auth_refusals_total";
pub const WRITE_BATCH_SIZE: &str = "write_batch_size";
pub const FEED_STREAMS_OPEN: &str = "feed_streams_open";
pub const FEED_EVENTS_SENT_TOTAL: &str = "feed_events_sent_total";
pub const FEED_LAG_SECONDS: &str = "feed_lag_seconds";
pub const FEED_REFUSALS_TOTAL: &str = "feed_refusals_total";

/// Histogram buckets, in seconds: resolve 0.5 ms to 5 s. Set explicitly so the exporter
/// renders real histograms (it renders summaries otherwise), which Prometheus can
/// aggregate across instances with `histogram_quantile`.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets of `write_batch_size`: powers of two up to the writer's largest batch.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the global recorder with `service` as a label on every series, publishes
/// `build_info`, and returns the handle that renders `/metrics`.
pub fn install(service: &'static str) -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .add_global_label("service", service)
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(WRITE_BATCH_SIZE.to_owned()),
                BATCH_SIZE_BUCKETS,
            )
        })
        .map_err(|error| anyhow::anyhow!("invalid histogram buckets: {error}"))?
        .install_recorder()
        .map_err(|error| anyhow::anyhow!("could not install the metrics recorder: {error}"))?;
    describe_all();
    ::metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Histograms are drained into their buckets on render and by this upkeep; without it
    // a rarely scraped process would buffer every observation.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The `# HELP` text of every metric (the table above, for Prometheus and `promtool`).
fn describe_all() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        "Time from request to response head, in seconds."
    );
    describe_gauge!(HTTP_REQUESTS_IN_FLIGHT, "HTTP requests being handled now.");
    describe_histogram!(
        DB_QUERY_DURATION_SECONDS,
        "Duration of one PostgreSQL query, in seconds, by query and outcome."
    );
    describe_histogram!(
        REDIS_OPERATION_DURATION_SECONDS,
        "Duration of one Redis call, in seconds, by operation and outcome."
    );
    describe_counter!(
        CACHE_LOOKUPS_TOTAL,
        "Reader lookups of cached views, by view and result (hit, miss, error, bypass)."
    );
    describe_counter!(
        PUBLISH_FAILURES_TOTAL,
        "Writer publishes to Redis that failed; the outbox repair loop retries them."
    );
    describe_counter!(
        PUBLISH_REPAIRS_TOTAL,
        "Changes the writer's repair loop republished from the outbox."
    );
    describe_gauge!(
        PUBLISH_BACKLOG_OLDEST_AGE_SECONDS,
        "Age in seconds of the oldest committed change not yet published to Redis."
    );
    describe_histogram!(
        WRITE_BATCH_SIZE,
        "Transactions the writer committed together in one statement (group commit)."
    );
    describe_counter!(
        AUTH_REFUSALS_TOTAL,
        "Requests refused for their API key, by reason (missing, invalid, scope); never by key."
    );
    describe_gauge!(
        FEED_STREAMS_OPEN,
        "Change feeds (server-sent events) open now, by feed (account, all)."
    );
    describe_counter!(
        FEED_EVENTS_SENT_TOTAL,
        "Events written to change feeds, by feed (account, all)."
    );
    describe_histogram!(
        FEED_LAG_SECONDS,
        "Seconds from a transaction's created_at to the reader dispatching it to its feeds."
    );
    describe_counter!(
        FEED_REFUSALS_TOTAL,
        "Change feeds refused or dropped, by reason (instance_cap, client_cap, too_slow)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build is running."
    );
}

/// Creates counters at zero, so that dashboards show 0 rather than "no data" and
/// `increase()` sees the first event after a restart. Each service calls it (after
/// [`install`]) for the counters it moves only on rare events.
pub fn counters_at_zero(names: &[&'static str]) {
    for &name in names {
        ::metrics::counter!(name).absolute(0);
    }
}

/// Records one answered request (the HTTP middleware calls it for every request).
///
/// `method` is one of a fixed set (the HTTP layer maps any other to `other`) and `route` a
/// template of the route table or `unmatched`: no label value comes from the client.
pub fn record_http(method: &'static str, route: String, status: u16, took: Duration) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ];
    ::metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    ::metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, &labels).record(took.as_secs_f64());
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

pub fn record_db_query(query: &'static str, took: Duration, ok: bool) {
    ::metrics::histogram!(DB_QUERY_DURATION_SECONDS, "query" => query, "outcome" => outcome(ok))
        .record(took.as_secs_f64());
}

pub fn record_redis_call(operation: &'static str, took: Duration, ok: bool) {
    let registered = HOT_SERIES
        .get()
        .and_then(|hot| hot.redis_calls.get(&(operation, ok)));
    match registered {
        Some(histogram) => histogram.record(took.as_secs_f64()),
        None => redis_call_histogram(operation, ok).record(took.as_secs_f64()),
    }
}

fn redis_call_histogram(operation: &'static str, ok: bool) -> ::metrics::Histogram {
    ::metrics::histogram!(
        REDIS_OPERATION_DURATION_SECONDS,
        "operation" => operation,
        "outcome" => outcome(ok)
    )
}

/// The reader's lookup of a cached view: `result` is `hit`, `miss`, `error` or `bypass`.
pub fn record_cache_lookup(view: &'static str, result: &'static str) {
    let registered = HOT_SERIES
        .get()
        .and_then(|hot| hot.cache_lookups.get(&(view, result)));
    match registered {
        Some(counter) => counter.increment(1),
        None => cache_lookup_counter(view, result).increment(1),
    }
}

fn cache_lookup_counter(view: &'static str, result: &'static str) -> ::metrics::Counter {
    ::metrics::counter!(CACHE_LOOKUPS_TOTAL, "view" => view, "result" => result)
}

/// Handles of the series recorded on every read, registered once at start-up. Recording
/// through a macro with labels builds the series key and looks it up in the registry each
/// time, which showed on the reader's hottest path. Other series use the macros.
struct HotSeries {
    redis_calls: HashMap<(&'static str, bool), ::metrics::Histogram>,
    cache_lookups: HashMap<(&'static str, &'static str), ::metrics::Counter>,
}

static HOT_SERIES: OnceLock<HotSeries> = OnceLock::new();

/// Registers the hot series of a service (after [`install`]): the Redis operations it calls
/// on every request and the views it looks up (which also makes the lookups exported as 0
/// from the start). Each service names its own; call once.
pub fn register_hot_series(redis_operations: &[&'static str], cache_views: &[&'static str]) {
    let mut hot = HotSeries {
        redis_calls: HashMap::new(),
        cache_lookups: HashMap::new(),
    };
    for &operation in redis_operations {
        for ok in [true, false] {
            hot.redis_calls
                .insert((operation, ok), redis_call_histogram(operation, ok));
        }
    }
    for &view in cache_views {
        for result in ["hit", "miss", "error", "bypass"] {
            let counter = cache_lookup_counter(view, result);
            counter.absolute(0);
            hot.cache_lookups.insert((view, result), counter);
        }
    }
    let _ = HOT_SERIES.set(hot);
}

pub fn record_write_batch(size: usize) {
    ::metrics::histogram!(WRITE_BATCH_SIZE).record(size as f64);
}

pub fn record_publish_failure() {
    ::metrics::counter!(PUBLISH_FAILURES_TOTAL).increment(1);
}

pub fn record_publish_repairs(count: u64) {
    ::metrics::counter!(PUBLISH_REPAIRS_TOTAL).increment(count);
}

pub fn set_publish_backlog_age(seconds: f64) {
    ::metrics::gauge!(PUBLISH_BACKLOG_OLDEST_AGE_SECONDS).set(seconds);
}

/// Times a database query future and records it under `query` (the storage layer calls it
/// around each query, beside its SQL). The query runs in a `db` span (debug level: free unless
/// `RUST_LOG` asks for it), inside the span of the request or task it serves.
pub async fn time_query<T, E>(
    query: &'static str,
    run: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let started = Instant::now();
    let result = run.instrument(tracing::debug_span!("db", query)).await;
    record_db_query(query, started.elapsed(), result.is_ok());
    result
}

/// The `feed` label of the change feeds: one account's, or every account's.
fn feed_label(account_feed: bool) -> &'static str {
    if account_feed {
        "account"
    } else {
        "all"
    }
}

/// The reasons of `feed_refusals_total`.
pub const FEED_REFUSAL_REASONS: &[&str] = &["instance_cap", "client_cap", "too_slow"];

/// The reader's feed series at zero, so dashboards show 0 rather than no data.
pub fn feed_metrics_at_zero() {
    for account_feed in [true, false] {
        ::metrics::gauge!(FEED_STREAMS_OPEN, "feed" => feed_label(account_feed)).set(0.0);
        ::metrics::counter!(FEED_EVENTS_SENT_TOTAL, "feed" => feed_label(account_feed)).absolute(0);
    }
    for &reason in FEED_REFUSAL_REASONS {
        ::metrics::counter!(FEED_REFUSALS_TOTAL, "reason" => reason).absolute(0);
    }
}

/// A change feed opened (`+1`) or ended (`-1`).
pub fn feed_streams_changed(account_feed: bool, delta: f64) {
    ::metrics::gauge!(FEED_STREAMS_OPEN, "feed" => feed_label(account_feed)).increment(delta);
}

pub fn feed_event_sent(account_feed: bool) {
    ::metrics::counter!(FEED_EVENTS_SENT_TOTAL, "feed" => feed_label(account_feed)).increment(1);
}

/// `reason`: one of [`FEED_REFUSAL_REASONS`].
pub fn feed_refused(reason: &'static str) {
    ::metrics::counter!(FEED_REFUSALS_TOTAL, "reason" => reason).increment(1);
}

/// How long after its `created_at` a transaction was handed to the feeds.
pub fn record_feed_lag(created_at: chrono::DateTime<chrono::Utc>) {
    let lag = (chrono::Utc::now() - created_at)
        .to_std()
        .unwrap_or_default();
    ::metrics::histogram!(FEED_LAG_SECONDS).record(lag.as_secs_f64());
}
