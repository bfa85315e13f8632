//! Redis: the read views and the change stream.
//!
//! Key layout (all under `REDIS_KEY_PREFIX`, default `tm:`):
//!
//! | key | type | holds | bound |
//! |---|---|---|---|
//! | `{prefix}account:{epoch}:{account_id}` | hash | `version`, `body` (the account's JSON as served) | TTL `REDIS_VIEW_TTL_SECONDS`, evictable |
//! | `{prefix}transaction:{transaction_id}` | string | the transaction's JSON as served | TTL `REDIS_VIEW_TTL_SECONDS`, evictable |
//! | `{prefix}events` | stream | one `transaction.created` entry per published change | about `REDIS_STREAM_MAX_LEN` entries |
//! | `{prefix}views-generation` | string | `{run_id}:{epoch}`: the generation account views are current under | one key |
//! | `{prefix}views-epoch` | integer | the last epoch claimed | one key |
//!
//! Views are a cache, so they expire and may be evicted: the Redis servers the project starts
//! run `maxmemory-policy volatile-lru`, which evicts only keys with a TTL (the views) and never
//! the stream or the generation. A view that is gone is read from PostgreSQL and filled again.
//!
//! Views hold ready-to-send JSON, so a cache hit costs one round trip and no serialization. This
//! module owns that format end to end: [`AccountView`] and [`TransactionView`] are the one
//! serialization of each view, used by the writer's publish, the reader's fill, and the reader's
//! answer on a miss.
//! Account views are versioned (the account's transaction count) and only a higher version may
//! replace a view, in a Lua script so the compare and the set are atomic: whichever of a writer's
//! publish and a reader's fill lands last, the newest balance wins. Transactions are immutable,
//! so their views never change once set. Redis is never the source of truth: any key may be
//! lost, and the next read refills it from PostgreSQL.
//!
//! Account views are read only under the generation of the Redis process answering (a failover
//! or a restart can lose publishes the old process acknowledged, so a new process starts a new
//! generation in O(1)), and only a publish or fill whose [`Ticket`] matches the generation may
//! create one; see `cache/link.rs` and `docs/ha.md`.
//!
//! The stream is at-least-once: a change may appear twice (e.g. republished after a crash),
//! so consumers deduplicate by `transaction_id`.
//!
//! This is the storage layer: it knows neither settings nor HTTP nor which service runs it. Here:
//! [`Cache`] and its calls; `cache/views.rs` the views' format and keys; `cache/pipeline.rs` the
//! batched view reads; `cache/link.rs` the connection to the master and the views' generation;
//! `cache/lua.rs` the scripts; `cache/tls.rs` the CA and the start-up check of a `rediss://`
//! link; `cache/error.rs` the errors. Every call runs in a `redis` span
//! (debug level) and is timed as `redis_operation_duration_seconds{operation=…}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::Script;
use tokio::sync::mpsc;
use tracing::Instrument;

mod error;
mod link;
mod lua;
mod pipeline;
mod tls;
mod views;
use link::{Link, Links};
pub use link::{SentinelAuth, Target, Ticket};
use lua::{FILL_ACCOUNT_LUA, PUBLISH_LUA};

pub use error::CacheError;
use pipeline::{ViewId, ViewRead};
pub use views::{AccountView, Keys, TransactionView};

use crate::domain::{AccountId, Recorded, TransactionId};
use crate::telemetry::metrics as m;

/// The Redis operations the writer runs on every request (`redis_operation_duration_seconds`).
pub const PUBLISH_OPERATIONS: &[&str] = &[PUBLISH];
/// The Redis operations the reader runs on its read path.
pub const READ_OPERATIONS: &[&str] = &[GET_VIEWS, FILL_ACCOUNT, FILL_TRANSACTION];
const PUBLISH: &str = "publish";
const GET_VIEWS: &str = "get_views";
const FILL_ACCOUNT: &str = "fill_account";
const FILL_TRANSACTION: &str = "fill_transaction";

/// How long views live, and how long the stream is (see [`Retention::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Every view set lives this long (renewed by each publish of its account).
    pub view_ttl: Duration,
    /// The stream is trimmed to about this many entries; consumers that fall further behind
    /// resynchronise from PostgreSQL.
    pub stream_max_len: usize,
}

impl Default for Retention {
    /// Five minutes of views: a client reads its transaction back, and an account's balance
    /// while it is busy, within seconds; an idle account costs one PostgreSQL read per five
    /// minutes. At a sustained 1,000 writes/s that is about 110 MB of transaction views
    /// (≈375 B each) at most. The stream: the last 100,000 changes.
    fn default() -> Self {
        Self {
            view_ttl: Duration::from_secs(300),
            stream_max_len: 100_000,
        }
    }
}

/// What a cache needs; settings fill it from `REDIS_*`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The Redis, or (with `sentinels`) the database number and credentials of the master.
    pub redis_url: String,
    /// With a `rediss://` URL: the CA (PEM file) to trust instead of the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// `host:port` of each Sentinel; empty: the one Redis at `redis_url`.
    pub sentinels: Vec<String>,
    /// The master's name at the Sentinels.
    pub sentinel_master: String,
    /// What the services log in to the Sentinels with.
    pub sentinel_auth: SentinelAuth,
    /// Every key of this deployment starts with it.
    pub key_prefix: String,
    /// The bound on every call.
    pub timeout: Duration,
    pub retention: Retention,
}

/// A shared, multiplexed Redis connection to the master (see `cache/link.rs`). It is opened on first
/// use, so a service starts even while Redis is down, and opened again (the master resolved
/// again) after a failure. Every call is bounded by `timeout`.
/// Cloning is one reference count: the router clones its state for every request.
#[derive(Clone)]
pub struct Cache(std::sync::Arc<CacheInner>);

pub struct CacheInner {
    links: Links,
    pub keys: Keys,
    timeout: Duration,
    retention: Retention,
    fill_account_script: Script,
    publish_script: Script,
    /// Milliseconds since `epoch` before which calls fail fast (see [`UNAVAILABLE_BACKOFF`]).
    unavailable_until_ms: AtomicU64,
    epoch: Instant,
    /// The queue of view reads, started on first use (see `cache/pipeline.rs`).
    view_reads: std::sync::OnceLock<mpsc::Sender<ViewRead>>,
}

impl std::ops::Deref for Cache {
    type Target = CacheInner;
    fn deref(&self) -> &CacheInner {
        &self.0
    }
}

/// After a timeout or a failure to connect, how long reads and fills fail fast. While Redis is
/// down, a read then goes straight to PostgreSQL instead of waiting `REDIS_TIMEOUT_MS` twice
/// (lookup and fill). Publishes are exempt (see `call`): each one tries, within its timeout.
pub const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(1);

impl Cache {
    /// A cache on the one Redis at `redis_url`, with the default [`Retention`].
    pub fn new(redis_url: &str, key_prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self::on(
            Target::new(redis_url, &[], "")?,
            key_prefix,
            timeout,
            Retention::default(),
        ))
    }

    /// A cache on a service's Redis: the master the Sentinels name, if there are any, else the
    /// one at the URL.
    pub fn connect(config: &CacheConfig) -> anyhow::Result<Self> {
        let ca = config.ca_file.as_deref().map(tls::read_ca).transpose()?;
        let target = Target::with_sentinel_auth(
            &config.redis_url,
            &config.sentinels,
            &config.sentinel_master,
            ca,
            &config.sentinel_auth,
        )?;
        tls::warn_if_plaintext(config, &target);
        Ok(Self::on(
            target,
            &config.key_prefix,
            config.timeout,
            config.retention,
        ))
    }

    pub fn on(target: Target, key_prefix: &str, timeout: Duration, retention: Retention) -> Self {
        let keys = Keys::new(key_prefix);
        Self(std::sync::Arc::new(CacheInner {
            links: Links::new(target, keys.clone(), timeout),
            keys,
            timeout,
            retention,
            fill_account_script: Script::new(FILL_ACCOUNT_LUA),
            publish_script: Script::new(PUBLISH_LUA),
            unavailable_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            view_reads: std::sync::OnceLock::new(),
        }))
    }

    fn marked_unavailable(&self) -> bool {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        now_ms < self.unavailable_until_ms.load(Ordering::Relaxed)
    }

    /// The views' generation now, to be taken *before* reading PostgreSQL or committing, and
    /// passed to the publish or fill of what was read (see [`Ticket`]). Free while a link is
    /// open; otherwise opens one (claiming a generation), within the timeout. No ticket while
    /// Redis is unavailable.
    pub async fn ticket(&self) -> Ticket {
        if let Some(link) = self.links.peek() {
            return link.ticket();
        }
        if self.marked_unavailable() {
            return Ticket::none();
        }
        match tokio::time::timeout(self.timeout, self.links.get()).await {
            Ok(Ok(link)) => link.ticket(),
            _ => Ticket::none(),
        }
    }

    /// Whether a link to Redis is open: then its account views are current (a link claims its
    /// generation as it opens).
    pub fn views_current(&self) -> bool {
        self.links.peek().is_some()
    }

    /// The seconds a view lives, as the scripts take it.
    fn ttl_arg(&self) -> u64 {
        self.retention.view_ttl.as_secs().max(1)
    }

    /// Whether the account views behind the open link may be served now (docs/ha.md,
    /// "Simulated hosts and partitions"): the process still answers as a master, the views'
    /// generation there is still the link's, and, where it counts its good replicas
    /// (`min-replicas-to-write`), it has one. A master cut off by a partition keeps answering
    /// reads of views that writes elsewhere have overtaken, and a node demoted and
    /// resynchronised since serves whatever it was given: such a link is dropped (the next call
    /// asks the Sentinels again) and `false` returned. `true` when no link is open (a read opens one, checked as it opens). An error
    /// reaching Redis is returned: the caller decides (the reader stops trusting views).
    pub async fn views_fit(&self) -> Result<bool, CacheError> {
        let Some(link) = self.links.peek() else {
            return Ok(true);
        };
        let check = async {
            let (role, generation, replication): (Vec<redis::Value>, Option<String>, String) =
                redis::pipe()
                    .cmd("ROLE")
                    .cmd("GET")
                    .arg(self.keys.generation())
                    .cmd("INFO")
                    .arg("replication")
                    .query_async(&mut link.connection.clone())
                    .await?;
            Ok::<_, CacheError>((role, generation, replication))
        };
        let (role, generation, replication) = tokio::time::timeout(self.timeout, check)
            .await
            .map_err(|_| CacheError::Timeout)??;
        let is_master =
            matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master");
        if !is_master || generation.as_deref() != Some(link.generation()) {
            self.links.drop_link(&link);
            return Ok(false);
        }
        Ok(has_good_replicas(&replication))
    }

    /// Runs one Redis operation with the timeout and records its duration and outcome.
    /// `fail_fast`: fail at once while Redis is marked unavailable (reads and fills); a publish
    /// passes `false` and always tries: a write that skipped a Redis that is back would leave
    /// the view a reader just refilled older than the write it acknowledged.
    async fn call<T>(
        &self,
        operation: &'static str,
        fail_fast: bool,
        run: impl AsyncFnOnce(&Link) -> redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        let started = Instant::now();
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if fail_fast && self.marked_unavailable() {
            m::record_redis_call(operation, started.elapsed(), false);
            return Err(CacheError::Unavailable);
        }
        let mut used = None;
        let attempt = async {
            let link = used.insert(self.links.get().await?);
            Ok::<_, CacheError>(run(link).await?)
        };
        let span = tracing::debug_span!("redis", operation);
        let result = match tokio::time::timeout(self.timeout, attempt.instrument(span)).await {
            Ok(result) => result,
            Err(_) => Err(CacheError::Timeout),
        };
        if let Err(error) = &result {
            // A timeout too: a master that hangs keeps its connections open, and only asking
            // the Sentinels again finds the one that replaced it.
            if let (true, Some(link)) = (error.means_new_link(), &used) {
                self.links.drop_link(link);
            }
            // A connection that broke under a call (a restart, a failover) is only dropped: the
            // next call opens a new one at once. Failing to open one, or a Redis that does not
            // answer in time, marks it unavailable.
            let open_failed = used.is_none() || matches!(error, CacheError::Timeout);
            if error.means_unreachable() && open_failed {
                let until = now_ms + UNAVAILABLE_BACKOFF.as_millis() as u64;
                self.unavailable_until_ms.store(until, Ordering::Relaxed);
            }
        }
        m::record_redis_call(operation, started.elapsed(), result.is_ok());
        result
    }

    /// Publishes committed changes, in order, in one round trip: for each, its account view,
    /// its transaction view and a stream entry (see `PUBLISH_LUA` in `cache/lua.rs`). `ticket`: taken before
    /// the changes were committed (or their state read).
    pub async fn publish<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Recorded>,
        ticket: &Ticket,
    ) -> Result<(), CacheError> {
        let views: Vec<(AccountView, TransactionView)> = changes
            .into_iter()
            .map(
                |Recorded {
                     transaction,
                     account,
                 }| {
                    (AccountView::new(account), TransactionView::new(transaction))
                },
            )
            .collect();
        self.call(PUBLISH, false, async |link: &Link| {
            let mut invocation = self.publish_script.prepare_invoke();
            invocation
                .key(self.keys.events())
                .key(self.keys.generation())
                .arg(self.retention.stream_max_len)
                .arg(ticket.as_arg())
                .arg(link.generation())
                .arg(self.ttl_arg());
            for (account, transaction) in &views {
                invocation
                    .key(self.keys.account(link.epoch(), account.account_id))
                    .key(self.keys.transaction(transaction.transaction_id))
                    .arg(account.version)
                    .arg(&account.body[..])
                    .arg(&transaction.body[..])
                    .arg(transaction.transaction_id.to_string())
                    .arg(account.account_id.to_string());
            }
            generation_checked(
                invocation
                    .invoke_async::<i64>(&mut link.connection.clone())
                    .await,
            )
        })
        .await
        .map(drop)
    }

    /// The cached JSON of an account, if any.
    pub async fn account_view(&self, id: AccountId) -> Result<Option<Bytes>, CacheError> {
        self.read_view(ViewId::Account(id)).await
    }

    /// Caches an account view read from PostgreSQL, unless a newer one is already there.
    /// `ticket`: taken before the read (see [`Cache::ticket`]).
    pub async fn fill_account(
        &self,
        view: &AccountView,
        ticket: &Ticket,
    ) -> Result<(), CacheError> {
        self.call(FILL_ACCOUNT, true, async |link: &Link| {
            generation_checked(
                self.fill_account_script
                    .key(self.keys.account(link.epoch(), view.account_id))
                    .key(self.keys.generation())
                    .arg(view.version)
                    .arg(&view.body[..])
                    .arg(ticket.as_arg())
                    .arg(link.generation())
                    .arg(self.ttl_arg())
                    .invoke_async::<i64>(&mut link.connection.clone())
                    .await,
            )
        })
        .await
        .map(drop)
    }

    /// The cached JSON of a transaction, if any.
    pub async fn transaction_view(&self, id: TransactionId) -> Result<Option<Bytes>, CacheError> {
        self.read_view(ViewId::Transaction(id)).await
    }

    /// Caches a transaction view read from PostgreSQL. Transactions never change, so there is
    /// nothing to order.
    pub async fn fill_transaction(&self, view: &TransactionView) -> Result<(), CacheError> {
        let key = self.keys.transaction(view.transaction_id);
        self.call(FILL_TRANSACTION, true, async |link: &Link| {
            redis::cmd("SET")
                .arg(key)
                .arg(&view.body[..])
                .arg("EX")
                .arg(self.ttl_arg())
                .query_async::<()>(&mut link.connection.clone())
                .await
        })
        .await
    }
}

/// A script's answer, with -1 (the link's generation is no longer the server's) as an error
/// that has the link opened again.
fn generation_checked(answer: redis::RedisResult<i64>) -> redis::RedisResult<i64> {
    match answer {
        Ok(-1) => Err((
            redis::ErrorKind::MasterDown,
            "the views' generation changed under this connection",
        )
            .into()),
        other => other,
    }
}

/// From `INFO replication`: false when the master counts its replicas that acknowledged
/// recently (`min_slaves_good_slaves`, shown only under `min-replicas-to-write`) and has none.
fn has_good_replicas(replication: &str) -> bool {
    replication
        .lines()
        .find_map(|line| line.strip_prefix("min_slaves_good_slaves:"))
        .is_none_or(|count| count.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_that_counts_no_good_replica_has_lost_them() {
        assert!(has_good_replicas(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
        ));
        assert!(has_good_replicas(
            "role:master\r\nmin_slaves_good_slaves:2\r\n"
        ));
        assert!(!has_good_replicas(
            "role:master\r\nmin_slaves_good_slaves:0\r\n"
        ));
    }

    #[tokio::test]
    async fn after_a_timeout_calls_fail_fast_instead_of_each_waiting_for_its_own() {
        // A "Redis" that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = silent.local_addr().expect("address");
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let cache = Cache::new(
            &format!("redis://{address}/0"),
            "test:",
            Duration::from_millis(300),
        )
        .expect("valid url");
        let id = AccountId::from(uuid::Uuid::new_v4());

        let started = Instant::now();
        let first = cache.account_view(id).await;
        assert!(
            first.as_ref().is_err_and(CacheError::means_unreachable),
            "{first:?}"
        );
        assert!(
            first
                .as_ref()
                .is_err_and(|error| crate::telemetry::error_chain(error).contains("timed out")),
            "{first:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));

        let started = Instant::now();
        let second = cache.account_view(id).await;
        assert!(matches!(second, Err(CacheError::Unavailable)), "{second:?}");
        assert!(started.elapsed() < Duration::from_millis(100));
        held.abort();
    }
}
