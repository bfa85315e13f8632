//! Which Redis the cache talks to, and whether the views there are current.
//!
//! A [`Link`] is one multiplexed connection to one Redis *process*, with that process's
//! `run_id`. It never reconnects by itself: when a call on it fails to reach Redis, or Redis
//! answers READONLY (the node was demoted to a replica), the link is dropped and the next call
//! opens a new one, asking the Sentinels for the master again when `REDIS_SENTINELS` is set.
//! So a change of process (a failover, a restart) always goes through [`Links::open`], which is
//! where the views are checked.
//!
//! The views are current on a process once the generation key (`{prefix}views-generation`)
//! holds that process's `run_id`. Anything else (the old master's run id, replicated to a
//! promoted replica; no key at all, on a restarted empty Redis) means the views may be older
//! than writes that were acknowledged on another process: their publishes can be lost with the
//! old master. Then [`reset_views`] deletes every account view under the prefix and sets the
//! key to the new run id; until it has, account views are not read (see `docs/ha.md`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisResult,
};
use tokio::sync::{watch, Mutex};
use tracing::Instrument;

use super::Keys;

/// Where the master is: one fixed URL, or whatever the Sentinels say.
pub enum Target {
    Url(Client),
    Sentinels {
        sentinels: Vec<Client>,
        master: String,
        /// The database number and credentials for the master (from `REDIS_URL`).
        node: RedisConnectionInfo,
    },
}

impl Target {
    /// `sentinels` empty: `redis_url` is the Redis. Otherwise the Sentinels (`host:port`) are
    /// asked for `master`, and only the database number and credentials of `redis_url` apply.
    pub fn new(redis_url: &str, sentinels: &[String], master: &str) -> anyhow::Result<Self> {
        let info = redis_url
            .into_connection_info()
            .map_err(|error| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {error}"))?;
        if sentinels.is_empty() {
            return Ok(Self::Url(Client::open(info)?));
        }
        let sentinels = sentinels
            .iter()
            .map(|address| {
                Client::open(format!("redis://{address}"))
                    .map_err(|error| anyhow::anyhow!("REDIS_SENTINELS: `{address}`: {error}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self::Sentinels {
            sentinels,
            master: master.to_owned(),
            node: info.redis,
        })
    }

    /// A connection to the master, and whether it must be checked to be one (the Sentinels
    /// may name a node that has not taken the role yet, or has just lost it).
    async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<(MultiplexedConnection, bool)> {
        let client = match self {
            Self::Url(client) => {
                let connection = client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?;
                return Ok((connection, false));
            }
            Self::Sentinels {
                sentinels,
                master,
                node,
            } => master_from_sentinels(sentinels, master, node, config).await?,
        };
        let connection = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        Ok((connection, true))
    }
}

/// Asks the Sentinels in turn for the master's address (`SENTINEL GET-MASTER-ADDR-BY-NAME`, as
/// Redis's guidelines for Sentinel clients say): the first that answers is taken.
async fn master_from_sentinels(
    sentinels: &[Client],
    master: &str,
    node: &RedisConnectionInfo,
    config: &AsyncConnectionConfig,
) -> RedisResult<Client> {
    let mut last_error = None;
    for sentinel in sentinels {
        let asked = async {
            let mut connection = sentinel
                .get_multiplexed_async_connection_with_config(config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(master)
                .query_async::<Option<(String, u16)>>(&mut connection)
                .await
        };
        match asked.await {
            Ok(Some((host, port))) => {
                return Client::open(ConnectionInfo {
                    addr: ConnectionAddr::Tcp(host, port),
                    redis: node.clone(),
                })
            }
            Ok(None) => {
                last_error = Some(
                    (
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "the Sentinel does not know the master name",
                    )
                        .into(),
                )
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| (ErrorKind::InvalidClientConfig, "no Sentinel").into()))
}

/// The views' generation as a caller saw it before reading PostgreSQL (or committing): the
/// run id of a Redis process whose views were current then. Only a publish or fill carrying the
/// generation Redis still has may *create* an account view; without it a change may only raise
/// an existing view's version (see `cache::PUBLISH_LUA`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket(pub(super) Option<Arc<str>>);

impl Ticket {
    /// A ticket that creates nothing (a change whose read may predate a lost publish).
    pub fn none() -> Self {
        Self(None)
    }
    pub fn is_valid(&self) -> bool {
        self.0.is_some()
    }
    pub(super) fn as_arg(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

/// One connection to one Redis process.
pub struct Link {
    pub connection: MultiplexedConnection,
    pub run_id: Arc<str>,
    /// False until the generation key holds `run_id`; then true for good.
    current: watch::Sender<bool>,
    /// Set when the link is dropped: a reset still running on it gives up.
    dropped: AtomicBool,
}

impl Link {
    pub fn views_current(&self) -> bool {
        *self.current.borrow()
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.views_current().then(|| Arc::clone(&self.run_id)))
    }

    /// Waits at most `bound` for the views to become current.
    pub async fn wait_current(&self, bound: Duration) {
        let mut current = self.current.subscribe();
        let _ = tokio::time::timeout(bound, current.wait_for(|current| *current)).await;
    }
}

/// The current link, opened on demand.
pub struct Links {
    target: Target,
    keys: Keys,
    timeout: Duration,
    current: RwLock<Option<Arc<Link>>>,
    /// One opening at a time: the calls that fail together do not each open a connection.
    opening: Mutex<()>,
}

impl Links {
    pub fn new(target: Target, keys: Keys, timeout: Duration) -> Self {
        Self {
            target,
            keys,
            timeout,
            current: RwLock::new(None),
            opening: Mutex::new(()),
        }
    }

    /// The link in use, if one is open (no waiting).
    pub fn peek(&self) -> Option<Arc<Link>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The link in use, opening one if there is none. A new link whose views are not current
    /// is returned after at most half the timeout, its reset going on in the background.
    pub async fn get(&self) -> RedisResult<Arc<Link>> {
        if let Some(link) = self.peek() {
            return Ok(link);
        }
        let _opening = self.opening.lock().await;
        if let Some(link) = self.peek() {
            return Ok(link);
        }
        let link = Arc::new(self.open().await?);
        if !link.views_current() {
            tracing::warn!(
                run_id = &*link.run_id,
                "Redis views are not known current on this master; resetting them"
            );
            // A background task of its own, not part of the request that opened the link.
            let span = tracing::info_span!(parent: None, "views_reset", run_id = &*link.run_id);
            tokio::spawn(reset_views(Arc::clone(&link), self.keys.clone()).instrument(span));
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&link));
        link.wait_current(self.timeout / 2).await;
        Ok(link)
    }

    /// Forgets `link` (if it is still the one in use) after a failure that says the process
    /// behind it is gone or no longer the master.
    pub fn drop_link(&self, link: &Arc<Link>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|used| Arc::ptr_eq(used, link)) {
            *current = None;
            link.dropped.store(true, Ordering::Relaxed);
            tracing::info!(
                run_id = &*link.run_id,
                "Redis connection dropped; will resolve the master again"
            );
        }
    }

    async fn open(&self) -> RedisResult<Link> {
        // No response timeout: `Cache::call` bounds every call, and a second timer per command
        // is measurable on the read path.
        let config = AsyncConnectionConfig::new().set_connection_timeout(self.timeout);
        let (mut connection, check_role) = self.target.connect(&config).await?;
        let (info, generation, role): (String, Option<String>, Vec<redis::Value>) = redis::pipe()
            .cmd("INFO")
            .arg("server")
            .cmd("GET")
            .arg(self.keys.generation())
            .cmd("ROLE")
            .query_async(&mut connection)
            .await?;
        let is_master =
            matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master");
        if check_role && !is_master {
            return Err((
                ErrorKind::MasterDown,
                "the node the Sentinels named is not a master",
            )
                .into());
        }
        let run_id: Arc<str> = run_id_of(&info)?.into();
        let current = generation.as_deref() == Some(&*run_id);
        Ok(Link {
            connection,
            run_id,
            current: watch::Sender::new(current),
            dropped: AtomicBool::new(false),
        })
    }
}

/// The server's `run_id` (unique per Redis process) from the text of `INFO server`.
pub(crate) fn run_id_of(info: &str) -> RedisResult<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| (redis::ErrorKind::ParseError, "INFO server has no run_id").into())
}

/// Account views deleted per command during a reset.
const RESET_BATCH: usize = 1_000;

/// Makes the views on `link`'s process current: deletes every account view under the prefix,
/// then sets the generation key to the process's run id. Transaction views are kept: they are
/// immutable and only ever set after their commit, so they cannot be stale. Retries until done
/// or the link is dropped; stops early when another service's reset finished first.
async fn reset_views(link: Arc<Link>, keys: Keys) {
    let started = std::time::Instant::now();
    while !link.dropped.load(Ordering::Relaxed) {
        match reset_once(&link, &keys).await {
            Ok(deleted) => {
                link.current.send_replace(true);
                tracing::warn!(
                    run_id = &*link.run_id,
                    deleted,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Redis views reset; account views are read again"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(
                    error = crate::telemetry::error_chain(&error),
                    "resetting the Redis views failed; retrying"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn reset_once(link: &Link, keys: &Keys) -> RedisResult<usize> {
    let mut connection = link.connection.clone();
    let pattern = format!("{}*", keys.account_prefix());
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let ((next_cursor, batch), generation): ((u64, Vec<String>), Option<String>) =
            redis::pipe()
                .cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(RESET_BATCH)
                .cmd("GET")
                .arg(keys.generation())
                .query_async(&mut connection)
                .await?;
        if generation.as_deref() == Some(&*link.run_id) {
            return Ok(deleted); // another service completed the reset
        }
        if !batch.is_empty() {
            deleted += batch.len();
            redis::cmd("UNLINK")
                .arg(&batch)
                .query_async::<()>(&mut connection)
                .await?;
        }
        if next_cursor == 0 {
            break;
        }
        cursor = next_cursor;
    }
    redis::cmd("SET")
        .arg(keys.generation())
        .arg(&*link.run_id)
        .query_async::<()>(&mut connection)
        .await?;
    Ok(deleted)
}
