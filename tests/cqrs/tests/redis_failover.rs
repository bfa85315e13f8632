//! Redis failover and restart on real processes: a master, a replica and a Sentinel started by
//! the test on free ports (each killed when its guard drops), the writer and reader in this
//! process on a fresh PostgreSQL database. The promoted replica misses a publish the old master
//! acknowledged; the reader must never serve the older balance it still holds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{json, Value};
use shared::cache::{Cache, Retention, Target};
use shared::testing::{get, post_json, send};
use sqlx::PgPool;
use uuid::Uuid;

const MASTER_NAME: &str = "ledger";

/// A redis-server process, killed (SIGKILL) when dropped.
struct Process {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tm-redis-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Starts redis-server with `config` (lines of a config file) on a free port, and waits until it
/// answers PING.
async fn start_redis(config: &[String], sentinel: bool) -> Process {
    let dir = TempDir::new();
    let port = free_port();
    let mut lines = vec![
        format!("port {port}"),
        "bind 127.0.0.1".into(),
        format!("dir {}", dir.0.display()),
    ];
    lines.extend(config.iter().cloned());
    launch(dir, port, &lines, sentinel).await
}

/// A node's data: no persistence, as in the topology.
fn node_config() -> Vec<String> {
    vec!["save \"\"".into(), "appendonly no".into()]
}

async fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    query_within(Duration::from_secs(2), port, args).await
}

/// [`query`] for a command that takes longer (a SAVE of a million keys).
async fn query_within<T: redis::FromRedisValue>(
    limit: Duration,
    port: u16,
    args: &[&str],
) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(limit);
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async(&mut connection).await
}

async fn wait_until<F: AsyncFnMut() -> bool>(
    what: &str,
    limit: Duration,
    mut condition: F,
) -> Duration {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The writer's and the reader's routers (their background tasks end with them).
fn apps(pool: &PgPool, cache: &Cache) -> (Router, Router) {
    let writer = cqrs_tests::writer(pool, cache.clone()).into_router();
    let reader = cqrs_tests::reader(pool, cache.clone()).into_router();
    (writer, reader)
}

async fn post(writer: &Router, account: Uuid, amount: i64) {
    let body = json!({"account_id": account, "amount": amount}).to_string();
    let (status, json) = send(writer, post_json("/transactions", body)).await;
    assert_eq!(status, 201, "{json}");
}

async fn balance(reader: &Router, account: Uuid) -> i64 {
    let (status, json) = send(reader, get(&format!("/accounts/{account}"))).await;
    assert_eq!(status, 200, "{json}");
    json["balance"].as_i64().expect("balance")
}

/// The account view's body as `node` holds it under its current generation, parsed, if any.
async fn raw_view(node: u16, prefix: &str, account: Uuid) -> Option<Value> {
    let generation: Option<String> = query(node, &["GET", &format!("{prefix}views-generation")])
        .await
        .ok()?;
    let (_run_id, epoch) = generation?
        .rsplit_once(':')
        .map(|(r, e)| (r.to_owned(), e.to_owned()))?;
    let key = format!("{prefix}account:{epoch}:{account}");
    let body: Option<String> = query(node, &["HGET", &key, "body"]).await.ok()?;
    body.map(|body| serde_json::from_str(&body).expect("JSON view"))
}

/// A master, its replica and one Sentinel (quorum 1, master down after 0.5 s) that knows both.
async fn start_master_replica_and_sentinel() -> (Process, Process, Process) {
    let master = start_redis(&node_config(), false).await;
    let mut replica_config = node_config();
    replica_config.push(format!("replicaof 127.0.0.1 {}", master.port));
    let replica = start_redis(&replica_config, false).await;
    let sentinel = start_redis(
        &[
            format!("sentinel monitor {MASTER_NAME} 127.0.0.1 {} 1", master.port),
            format!("sentinel down-after-milliseconds {MASTER_NAME} 500"),
            format!("sentinel failover-timeout {MASTER_NAME} 5000"),
        ],
        true,
    )
    .await;
    // The Sentinel must know the replica before the master dies.
    wait_until(
        "the Sentinel sees the replica",
        Duration::from_secs(15),
        async || {
            let replicas: redis::RedisResult<Vec<Vec<String>>> =
                query(sentinel.port, &["SENTINEL", "REPLICAS", MASTER_NAME]).await;
            replicas.is_ok_and(|replicas| !replicas.is_empty())
        },
    )
    .await;
    (master, replica, sentinel)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn after_a_sentinel_failover_the_reader_never_serves_a_view_the_new_master_missed(
    pool: PgPool,
) {
    let (master, replica, sentinel) = start_master_replica_and_sentinel().await;

    // The first Sentinel listed is down: the services ask the next.
    let sentinels = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", sentinel.port),
    ];
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let target = Target::new("redis://ignored:1/0", &sentinels, MASTER_NAME).expect("target");
    let cache = Cache::on(
        target,
        &prefix,
        Duration::from_millis(500),
        Retention::default(),
    );
    let (writer, reader) = apps(&pool, &cache);
    let account = Uuid::new_v4();

    post(&writer, account, 10).await;
    assert_eq!(balance(&reader, account).await, 10);
    wait_until(
        "the replica has the view",
        Duration::from_secs(5),
        async || {
            raw_view(replica.port, &prefix, account)
                .await
                .is_some_and(|view| view["balance"] == 10)
        },
    )
    .await;

    // Cut replication for good (the replica can no longer authenticate to the master), so the
    // next publish is acknowledged by the master alone; then the master dies.
    cut_replication(&master, &replica).await;
    post(&writer, account, 5).await;
    assert_eq!(
        raw_view(master.port, &prefix, account).await.expect("view")["balance"],
        15
    );
    let killed = Instant::now();
    drop(master);
    // What the replica about to be promoted holds: the older balance.
    assert_eq!(
        raw_view(replica.port, &prefix, account)
            .await
            .expect("view")["balance"],
        10
    );

    // Read all along, while the Sentinel notices, promotes, and the services follow.
    let reads = tokio::spawn(read_until(reader.clone(), account, 18));
    wait_for_master(&sentinel, replica.port).await;
    let promoted = killed.elapsed();
    // The reads going on open a link to the new master, which starts a new generation.
    wait_until("the services follow", Duration::from_secs(10), async || {
        cache.views_current()
    })
    .await;
    let followed = killed.elapsed();
    // A write now is published on the new master.
    post(&writer, account, 3).await;
    assert_eq!(
        raw_view(replica.port, &prefix, account)
            .await
            .expect("published")["balance"],
        18,
        "the write after the failover is published to the new master"
    );
    let seen = reads.await.expect("reads");
    assert!(!seen.contains(&10), "a stale balance was served: {seen:?}");
    assert!(seen.iter().all(|b| [15, 18].contains(b)), "{seen:?}");
    assert!(cache.views_current());
    assert_eq!(balance(&reader, account).await, 18);
    println!(
        "redis failover: the Sentinel named the new master {promoted:?} after kill -9 of the old, the services used its views {followed:?} after; {} reads meanwhile, none stale",
        seen.len()
    );
    drop(sentinel);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_redis_restarted_from_an_old_snapshot_starts_a_new_generation_of_views(pool: PgPool) {
    let first = start_redis(&snapshot_config(), false).await;
    let port = first.port;
    let url = format!("redis://127.0.0.1:{port}/0");
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let cache = Cache::new(&url, &prefix, Duration::from_millis(500)).expect("url");
    let (writer, reader) = apps(&pool, &cache);
    let account = Uuid::new_v4();
    post(&writer, account, 10).await;
    let _: () = query(port, &["SAVE"])
        .await
        .expect("snapshot at balance 10");
    post(&writer, account, 5).await;
    assert_eq!(balance(&reader, account).await, 15);

    // The process dies and a new one loads the old snapshot on the same port.
    let second = restart_from_snapshot(first).await;
    assert_eq!(
        raw_view(port, &prefix, account).await.expect("view")["balance"],
        10,
        "the restarted Redis holds the older view"
    );
    let mut reads = 0;
    wait_until("a new generation", Duration::from_secs(10), async || {
        assert_eq!(balance(&reader, account).await, 15, "after {reads} reads");
        reads += 1;
        cache.views_current()
    })
    .await;
    // The old generation's view is not read (and perhaps filled again since, from PostgreSQL).
    let view = raw_view(port, &prefix, account).await;
    assert!(
        view.as_ref().is_none_or(|view| view["balance"] == 15),
        "{view:?}"
    );
    assert_eq!(balance(&reader, account).await, 15);
    assert_eq!(
        raw_view(port, &prefix, account)
            .await
            .expect("filled again")["balance"],
        15
    );
    drop(second);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_new_generation_over_a_million_keys_serves_current_views_within_a_second(pool: PgPool) {
    const KEYS: usize = 1_000_000;
    let first = start_redis(&snapshot_config(), false).await;
    let port = first.port;
    let url = format!("redis://127.0.0.1:{port}/0");
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let cache = Cache::new(&url, &prefix, Duration::from_millis(500)).expect("url");
    let (writer, reader) = apps(&pool, &cache);
    let account = Uuid::new_v4();
    post(&writer, account, 10).await;
    // A million account views of this generation, as a busy deployment holds.
    let fill = "for i = 1, tonumber(ARGV[2]) do redis.call('HSET', ARGV[1] .. i, 'version', 1, 'body', '{}') end";
    let generation: String = query(port, &["GET", &format!("{prefix}views-generation")])
        .await
        .expect("a generation");
    let (_, epoch) = generation.rsplit_once(':').expect("run_id:epoch");
    for chunk in 0..10 {
        let key_prefix = format!("{prefix}account:{epoch}:filler-{chunk}-");
        let _: () = query_within(
            Duration::from_secs(30),
            port,
            &["EVAL", fill, "0", &key_prefix, &(KEYS / 10).to_string()],
        )
        .await
        .expect("fill");
    }
    let _: () = query_within(Duration::from_secs(60), port, &["SAVE"])
        .await
        .expect("snapshot");
    post(&writer, account, 5).await;

    // A new process loads the snapshot: the views there may miss the last write.
    let second = restart_from_snapshot(first).await;
    let keys: i64 = query(port, &["DBSIZE"]).await.expect("DBSIZE");
    assert!(keys > KEYS as i64, "{keys} keys");
    let changed = Instant::now();
    let current = wait_until(
        "reads served from the new generation",
        Duration::from_secs(5),
        async || {
            assert_eq!(balance(&reader, account).await, 15);
            raw_view(port, &prefix, account)
                .await
                .is_some_and(|view| view["balance"] == 15)
        },
    )
    .await;
    assert!(
        current < Duration::from_secs(1),
        "views current {current:?} after the change"
    );
    println!(
        "generation change over {keys} keys: reads current from Redis {:?} after it answered",
        changed.elapsed()
    );
    drop(second);
}

/// A Redis that keeps a snapshot (`SAVE`) and no append-only log.
fn snapshot_config() -> Vec<String> {
    vec!["dbfilename snapshot.rdb".into(), "appendonly no".into()]
}

/// Kills `first` (started with [`snapshot_config`]) and starts a new process on its port that
/// loads its last snapshot.
async fn restart_from_snapshot(first: Process) -> Process {
    let dir = TempDir::new();
    std::fs::copy(
        first._dir.0.join("snapshot.rdb"),
        dir.0.join("snapshot.rdb"),
    )
    .expect("keep the snapshot");
    let port = first.port;
    drop(first);
    let mut lines = vec![
        format!("port {port}"),
        "bind 127.0.0.1".into(),
        format!("dir {}", dir.0.display()),
    ];
    lines.extend(snapshot_config());
    launch(dir, port, &lines, false).await
}

/// Writes `lines` as the configuration of a redis-server (a Sentinel with `sentinel`) in
/// `dir`, starts it, and waits until it answers PING on `port`.
async fn launch(dir: TempDir, port: u16, lines: &[String], sentinel: bool) -> Process {
    let file = dir.0.join("redis.conf");
    std::fs::write(&file, lines.join("\n") + "\n").expect("config");
    let mut command = Command::new("redis-server");
    command.arg(&file);
    if sentinel {
        command.arg("--sentinel");
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let process = Process {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while query::<String>(port, &["PING"]).await.is_err() {
        assert!(Instant::now() < deadline, "redis on {port} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process
}

/// Reads the account's balance every few milliseconds until it is `last` (at most 20 s), and
/// returns every balance read.
async fn read_until(reader: Router, account: Uuid, last: i64) -> Vec<i64> {
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let balance = balance(&reader, account).await;
        seen.push(balance);
        if balance == last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

/// Stops `replica` from replicating `master` for good: it can no longer authenticate.
async fn cut_replication(master: &Process, replica: &Process) {
    let _: () = query(
        replica.port,
        &["CONFIG", "SET", "masterauth", "not-the-password"],
    )
    .await
    .expect("masterauth");
    let _: i64 = query(master.port, &["CLIENT", "KILL", "TYPE", "replica"])
        .await
        .expect("client kill");
}

/// Waits until the Sentinel names the node on `port` as the master.
async fn wait_for_master(sentinel: &Process, port: u16) {
    let expected = port.to_string();
    wait_until(
        "the Sentinel names the replica master",
        Duration::from_secs(20),
        async || {
            let address: redis::RedisResult<(String, String)> = query(
                sentinel.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            )
            .await;
            address.is_ok_and(|(_, port)| port == expected)
        },
    )
    .await;
}
