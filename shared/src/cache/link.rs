//! Which Redis the cache talks to, and whether the views there are current.
//!
//! A [`Link`] is one multiplexed connection to one Redis *process*, with that process's
//! `run_id`. It never reconnects by itself: when a call on it fails to reach Redis, or Redis
//! answers READONLY (the node was demoted to a replica), the link is dropped and the next call
//! opens a new one, asking the Sentinels for the master again when `REDIS_SENTINELS` is set.
//! So a change of process (a failover, a restart) always goes through [`Links::open`], which is
//! where the views are checked.
//!
//! Account views live under a generation: `{prefix}views-generation` holds
//! `{run_id}:{epoch}`, and every account view's key carries the epoch
//! (`{prefix}account:{epoch}:{id}`). A link opened on a process whose `run_id` the key does not
//! name (a promoted replica holds the old master's; a restarted or flushed Redis holds an old
//! one or none) may see views older than writes acknowledged on another process, whose
//! publishes were lost with it. So opening the link claims a new generation
//! ([`CLAIM_GENERATION_LUA`]): one `INCR` of `{prefix}views-epoch` and one `SET`, whatever the
//! number of keys. The old epoch's views are never read again and expire by their TTL (or are
//! evicted first, under `volatile-lru`); see `docs/ha.md`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisResult, TlsCertificates,
};
use tokio::sync::Mutex;

use super::Keys;

/// Where the master is: one fixed URL, or whatever the Sentinels say.
pub enum Target {
    Url(Client),
    Sentinels {
        sentinels: Vec<Client>,
        master: String,
        /// The database number and credentials for the master (from `REDIS_URL`).
        node: RedisConnectionInfo,
        /// `rediss://`: the Sentinels and the master are reached over TLS, trusting this.
        tls: Option<Trust>,
    },
}

/// The roots a `rediss://` link trusts: the CA given (PEM), or the system's.
#[derive(Clone)]
pub struct Trust(Option<Vec<u8>>);

/// The user and password the services give each Sentinel (`AUTH`); none: no `AUTH`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SentinelAuth {
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Never prints the password, should settings be logged.
impl std::fmt::Debug for SentinelAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Target {
    /// `sentinels` empty: `redis_url` is the Redis. Otherwise the Sentinels (`host:port`) are
    /// asked for `master`, and only the database number and credentials of `redis_url` apply.
    pub fn new(redis_url: &str, sentinels: &[String], master: &str) -> anyhow::Result<Self> {
        Self::trusting(redis_url, sentinels, master, None)
    }

    /// [`Target::new`] whose `rediss://` links trust `ca` (PEM) instead of the system's roots.
    /// A CA with a `redis://` URL is refused: the operator asked for TLS and would not get it.
    pub fn trusting(
        redis_url: &str,
        sentinels: &[String],
        master: &str,
        ca: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        Self::with_sentinel_auth(redis_url, sentinels, master, ca, &SentinelAuth::default())
    }

    /// [`Target::trusting`], logging in to every Sentinel with `auth` (one user for all of
    /// them: Sentinels that watch one master share their users).
    pub fn with_sentinel_auth(
        redis_url: &str,
        sentinels: &[String],
        master: &str,
        ca: Option<Vec<u8>>,
        auth: &SentinelAuth,
    ) -> anyhow::Result<Self> {
        let info = redis_url
            .into_connection_info()
            .map_err(|error| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {error}"))?;
        let tls = matches!(info.addr, ConnectionAddr::TcpTls { .. }).then(|| Trust(ca.clone()));
        anyhow::ensure!(
            ca.is_none() || tls.is_some(),
            "REDIS_CA_FILE is set but REDIS_URL is not a rediss:// (TLS) URL"
        );
        if sentinels.is_empty() {
            return Ok(Self::Url(client(info, tls.as_ref())?));
        }
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        let sentinels = sentinels
            .iter()
            .map(|address| {
                let mut info = format!("{scheme}://{address}").into_connection_info()?;
                info.redis.username = auth.username.clone();
                info.redis.password = auth.password.clone();
                client(info, tls.as_ref())
                    .map_err(|error| anyhow::anyhow!("REDIS_SENTINELS: `{address}`: {error}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self::Sentinels {
            sentinels,
            master: master.to_owned(),
            node: info.redis,
            tls,
        })
    }

    /// Whether the links are TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        match self {
            Self::Url(client) => matches!(
                client.get_connection_info().addr,
                ConnectionAddr::TcpTls { .. }
            ),
            Self::Sentinels { tls, .. } => tls.is_some(),
        }
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
                tls,
            } => master_from_sentinels(sentinels, master, node, tls.as_ref(), config).await?,
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
    tls: Option<&Trust>,
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
                let addr = match tls {
                    Some(_) => ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    },
                    None => ConnectionAddr::Tcp(host, port),
                };
                let redis = node.clone();
                return client(ConnectionInfo { addr, redis }, tls);
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

/// A client for `info`; over TLS (a `rediss://` address), trusting the CA of `tls` if it has one,
/// else the system's roots. The certificate and the host name are always verified (the
/// `#insecure` URL fragment is refused: redis is built without `tls-rustls-insecure`).
fn client(info: ConnectionInfo, tls: Option<&Trust>) -> RedisResult<Client> {
    match tls {
        Some(Trust(Some(ca))) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => Client::open(info),
    }
}

/// The views' generation as a caller saw it before reading PostgreSQL (or committing): the
/// `{run_id}:{epoch}` the views were current under then. Only a publish or fill carrying the
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

/// Lua: the generation of the views on this process. KEYS[1] the generation, KEYS[2] the epoch
/// counter; ARGV[1] the process's run id. The generation is kept while it names this process;
/// otherwise a new epoch starts. Atomic, so services opening links at once agree on one.
pub const CLAIM_GENERATION_LUA: &str = r"
local generation = redis.call('GET', KEYS[1])
local own = ARGV[1] .. ':'
if generation and string.sub(generation, 1, #own) == own then
  return generation
end
generation = own .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], generation)
return generation
";

/// One connection to one Redis process, and the views' generation there.
pub struct Link {
    pub connection: MultiplexedConnection,
    pub run_id: Arc<str>,
    /// `{run_id}:{epoch}`, as the generation key held it when the link was opened.
    generation: Arc<str>,
    /// The epoch in the account views' keys.
    epoch: u64,
}

impl Link {
    pub fn ticket(&self) -> Ticket {
        Ticket(Some(Arc::clone(&self.generation)))
    }

    pub(super) fn generation(&self) -> &str {
        &self.generation
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
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
    claim: redis::Script,
}

impl Links {
    pub fn new(target: Target, keys: Keys, timeout: Duration) -> Self {
        Self {
            target,
            keys,
            timeout,
            current: RwLock::new(None),
            opening: Mutex::new(()),
            claim: redis::Script::new(CLAIM_GENERATION_LUA),
        }
    }

    /// Whether the links are TLS (`rediss://`).
    pub fn use_tls(&self) -> bool {
        self.target.uses_tls()
    }

    /// The link in use, if one is open (no waiting).
    pub fn peek(&self) -> Option<Arc<Link>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The link in use, opening one if there is none.
    pub async fn get(&self) -> RedisResult<Arc<Link>> {
        if let Some(link) = self.peek() {
            return Ok(link);
        }
        let _opening = self.opening.lock().await;
        if let Some(link) = self.peek() {
            return Ok(link);
        }
        let link = Arc::new(self.open().await?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&link));
        Ok(link)
    }

    /// Forgets `link` (if it is still the one in use) after a failure that says the process
    /// behind it is gone or no longer the master, or that its generation was replaced.
    pub fn drop_link(&self, link: &Arc<Link>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|used| Arc::ptr_eq(used, link)) {
            *current = None;
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
        let (info, role): (String, Vec<redis::Value>) = redis::pipe()
            .cmd("INFO")
            .arg("server")
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
        let run_id = run_id_of(&info)?;
        let generation: String = self
            .claim
            .key(self.keys.generation())
            .key(self.keys.epoch())
            .arg(&run_id)
            .invoke_async(&mut connection)
            .await?;
        let epoch = epoch_of(&generation)?;
        tracing::info!(run_id, generation, "Redis link opened");
        Ok(Link {
            connection,
            run_id: run_id.into(),
            generation: generation.into(),
            epoch,
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

/// The epoch of a generation `{run_id}:{epoch}`.
fn epoch_of(generation: &str) -> RedisResult<u64> {
    generation
        .rsplit_once(':')
        .and_then(|(_, epoch)| epoch.parse().ok())
        .ok_or_else(|| {
            (
                redis::ErrorKind::ParseError,
                "a views' generation without an epoch",
            )
                .into()
        })
}
