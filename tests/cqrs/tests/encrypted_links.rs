//! Encrypted links: a PostgreSQL with `ssl=on` that accepts TLS connections only, and a Redis
//! with a TLS port only, both started by the test on a certificate of a CA it generates
//! (openssl), and the writer and the reader built from settings as `main` builds them. With
//! `sslmode=verify-full` and `rediss://` + `REDIS_CA_FILE` both services connect, verified,
//! and serve a write and its read; given a CA that did not sign the servers' certificate, each
//! refuses to start and names the link. The host name is checked too: the certificate names
//! 127.0.0.1 only, so `localhost` is refused under `verify-full` (and `rediss://`). A Sentinel
//! on a TLS port names the master, and the reader reaches both over TLS, verified.
//!
//! Ports: `TLS_TEST_POSTGRES_PORT`, `TLS_TEST_REDIS_PORT` and `TLS_TEST_SENTINEL_PORT`, by
//! default the `DEFAULT_TLS_TEST_*` of `scripts/lib/defaults.sh` (below the ephemeral range). Everything
//! lives in one folder under the temporary directory, named by the PostgreSQL port, so a run
//! killed before its clean-up is cleaned up by the next one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use shared::cache::{Cache, CacheConfig, Retention};
use shared::settings::{Service, Settings};
use shared::testing::{self, get, post_json, send};
use uuid::Uuid;

/// The whole test, servers included, ends within this.
const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_verify_postgresql_and_redis_and_refuse_a_wrong_ca() {
    tokio::time::timeout(LIMIT, run())
        .await
        .expect("the encrypted-links test ends within its limit");
}

async fn run() {
    let servers = Servers::start().await;
    let right = servers.settings(Some(&servers.ca), Some(&servers.ca), "127.0.0.1");

    // Both services start, verified, and serve a write and its read.
    let writer = writer::Application::build(&right(Service::Writer))
        .await
        .expect("the writer starts on verified links");
    let reader = reader::Application::build(&right(Service::Reader))
        .await
        .expect("the reader starts on verified links");
    let (writer, reader) = (writer.into_router(), reader.into_router());
    let account_id = Uuid::new_v4();
    let body = json!({"account_id": account_id, "amount": 42}).to_string();
    let (status, created) = send(&writer, post_json("/transactions", body)).await;
    assert_eq!(status, 201, "{created}");
    let (status, account) = send(&reader, get(&format!("/accounts/{account_id}"))).await;
    assert_eq!((status.as_u16(), &account["balance"]), (200, &json!(42)));
    let transaction_id = created["transaction_id"].as_str().expect("id");
    let (status, transaction) =
        send(&reader, get(&format!("/transactions/{transaction_id}"))).await;
    assert_eq!((status.as_u16(), &transaction), (200, &created));
    // Every connection of both services is encrypted (the server would refuse plaintext too).
    let encrypted = servers.encrypted_connections().await;
    assert_eq!(
        encrypted,
        [("reader".to_owned(), true), ("writer".to_owned(), true)]
    );
    drop((writer, reader));

    // A CA that did not sign the certificate: each service refuses to start, naming the link.
    let wrong_postgres = servers.settings(Some(&servers.wrong_ca), Some(&servers.ca), "127.0.0.1");
    let wrong_redis = servers.settings(Some(&servers.ca), Some(&servers.wrong_ca), "127.0.0.1");
    for service in [Service::Writer, Service::Reader] {
        let error = build(&wrong_postgres(service)).await;
        assert_refused(&error, "PostgreSQL link", "UnknownIssuer", service);
        let error = build(&wrong_redis(service)).await;
        assert_refused(&error, "Redis link", "UnknownIssuer", service);
    }

    // The right CA, but a host name the certificate does not carry.
    let other_name = servers.settings(Some(&servers.ca), Some(&servers.ca), "localhost");
    let error = build(&other_name(Service::Reader)).await;
    assert_refused(
        &error,
        "PostgreSQL link",
        "not valid for name",
        Service::Reader,
    );
    let redis_by_name = Settings {
        redis_url: format!("rediss://localhost:{}/0", servers.redis_port),
        ..right(Service::Reader)
    };
    let error = build(&redis_by_name).await;
    assert_refused(&error, "Redis link", "not valid for name", Service::Reader);

    // Through a Sentinel over TLS: the Sentinel and the master it names, both verified.
    let sentinel = Settings {
        redis_url: "rediss://unused:1/0".into(),
        redis_sentinels: vec![format!("127.0.0.1:{}", servers.sentinel_port)],
        ..right(Service::Reader)
    };
    let reader = reader::Application::build(&sentinel)
        .await
        .expect("the reader starts through the Sentinel")
        .into_router();
    let (status, account) = send(&reader, get(&format!("/accounts/{account_id}"))).await;
    assert_eq!((status.as_u16(), &account["balance"]), (200, &json!(42)));
    drop(reader);
    let error = build(&Settings {
        redis_ca_file: Some(servers.wrong_ca.clone()),
        ..sentinel
    })
    .await;
    assert_refused(&error, "Redis link", "UnknownIssuer", Service::Reader);

    // A CA for a link that is not TLS is refused rather than ignored.
    let plain = CacheConfig {
        redis_url: "redis://127.0.0.1:6379/0".into(),
        ..right(Service::Reader).cache_config()
    };
    let error = Cache::connect(&plain).err().expect("refused");
    assert!(format!("{error:#}").contains("REDIS_CA_FILE"), "{error:#}");
    drop(servers);
}

/// Builds the service `settings` name and returns why it did not start.
async fn build(settings: &Settings) -> String {
    let started = Instant::now();
    let outcome = match settings.service {
        Service::Writer => writer::Application::build(settings).await.map(drop),
        Service::Reader => reader::Application::build(settings).await.map(drop),
    };
    let error = outcome.expect_err("the service refuses to start");
    // At once: a certificate that does not verify is not waited out like an outage.
    assert!(started.elapsed() < Duration::from_secs(10), "{error:#}");
    format!("{error:#}")
}

/// `error` is a start-up refused on `link` because rustls refused the certificate (`why`).
fn assert_refused(error: &str, link: &str, why: &str, service: Service) {
    assert!(
        error.starts_with(link)
            && error.contains("invalid peer certificate")
            && error.contains(why),
        "{service:?}: expected the {link} to refuse the certificate ({why}), got: {error}"
    );
}

/// The throwaway PostgreSQL and Redis, and the certificates; stopped and removed when dropped.
struct Servers {
    dir: PathBuf,
    postgres_port: u16,
    redis_port: u16,
    sentinel_port: u16,
    ca: PathBuf,
    wrong_ca: PathBuf,
    redis: Child,
    sentinel: Child,
    pg_bin: PathBuf,
}

impl Servers {
    async fn start() -> Self {
        let postgres_port = port("TLS_TEST_POSTGRES_PORT");
        let redis_port = port("TLS_TEST_REDIS_PORT");
        let sentinel_port = port("TLS_TEST_SENTINEL_PORT");
        let dir = std::env::temp_dir().join(format!("ledger-tls-test-{postgres_port}"));
        let pg_bin = pg_bin_dir();
        stop_leftovers(&dir, &pg_bin);
        for port in [postgres_port, redis_port, sentinel_port] {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} is taken; set TLS_TEST_POSTGRES_PORT, _REDIS_PORT, _SENTINEL_PORT"
            );
        }
        std::fs::create_dir_all(&dir).expect("test folder");
        make_certificates(&dir);
        let data = dir.join("pg");
        init_postgres(&pg_bin, &dir, &data, postgres_port);
        as_postgres(&pg_bin.join("pg_ctl"))
            .args(["-D", path(&data), "-l", path(&dir.join("postgres.log"))])
            .args(["-w", "-t", "60", "start"])
            .must();
        let redis = redis_server(&dir, redis_port, "redis", &[]);
        // A Sentinel's configuration must be a file it can rewrite.
        let monitor = format!("sentinel monitor ledger 127.0.0.1 {redis_port} 1\n");
        std::fs::write(dir.join("sentinel.conf"), monitor).expect("sentinel.conf");
        let conf = path(&dir.join("sentinel.conf")).to_owned();
        let sentinel = redis_server(&dir, sentinel_port, "sentinel", &[&conf, "--sentinel"]);
        let servers = Self {
            ca: dir.join("ca.pem"),
            wrong_ca: dir.join("wrong-ca.pem"),
            dir,
            postgres_port,
            redis_port,
            sentinel_port,
            redis,
            sentinel,
            pg_bin,
        };
        servers.wait_for_redis().await;
        servers
    }

    /// Settings of a service on these servers at `host`, trusting the CA files given.
    fn settings(
        &self,
        postgres_ca: Option<&Path>,
        redis_ca: Option<&Path>,
        host: &str,
    ) -> impl Fn(Service) -> Settings {
        let mut vars = HashMap::from([
            (
                "REDIS_URL",
                format!("rediss://{host}:{}/0", self.redis_port),
            ),
            ("REDIS_KEY_PREFIX", testing::fresh_prefix()),
            ("LOG_FORMAT", "text".into()),
        ]);
        if let Some(ca) = postgres_ca {
            let url = self.database_url(host, "verify-full", ca);
            vars.insert("DATABASE_URL", url);
        }
        if let Some(ca) = redis_ca {
            vars.insert("REDIS_CA_FILE", path(ca).to_owned());
        }
        move |service| {
            Settings::from_lookup(service, |name| vars.get(name).cloned()).expect("valid settings")
        }
    }

    fn database_url(&self, host: &str, mode: &str, ca: &Path) -> String {
        let port = self.postgres_port;
        let ca = path(ca);
        format!("postgres://postgres@{host}:{port}/postgres?sslmode={mode}&sslrootcert={ca}")
    }

    /// Whether each service's connections are encrypted, from `pg_stat_ssl`.
    async fn encrypted_connections(&self) -> Vec<(String, bool)> {
        let url = self.database_url("127.0.0.1", "verify-full", &self.ca);
        let pool = sqlx::PgPool::connect(&url)
            .await
            .expect("verified connection");
        let rows = sqlx::query_as(
            "SELECT a.application_name, bool_and(s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name IN ('writer', 'reader') \
             GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .expect("pg_stat_ssl");
        pool.close().await;
        rows
    }

    async fn wait_for_redis(&self) {
        let url = format!("rediss://127.0.0.1:{}/0", self.redis_port);
        let config = CacheConfig {
            redis_url: url,
            ca_file: Some(self.ca.clone()),
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            sentinel_auth: Default::default(),
            key_prefix: testing::fresh_prefix(),
            timeout: Duration::from_secs(1),
            retention: Retention::default(),
        };
        let cache = Cache::connect(&config).expect("valid");
        let started = Instant::now();
        while !cache.views_current() {
            let _ = cache.ticket().await;
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "Redis (TLS) answers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in [&mut self.redis, &mut self.sentinel] {
            let _ = child.kill();
            let _ = child.wait();
        }
        stop_leftovers(&self.dir, &self.pg_bin);
    }
}

/// redis-server on a TLS port only (`args` first: a Sentinel's configuration file); it speaks
/// TLS to the master too (`tls-replication`), as a Sentinel must when the master has no
/// plaintext port.
fn redis_server(dir: &Path, port: u16, name: &str, args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(args)
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--dir", path(dir)])
        .args(["--pidfile", path(&dir.join(format!("{name}.pid")))])
        .args(["--tls-cert-file", path(&dir.join("server.pem"))])
        .args(["--tls-key-file", path(&dir.join("server.key"))])
        .args(["--tls-ca-cert-file", path(&dir.join("ca.pem"))])
        .args(["--tls-auth-clients", "no", "--tls-replication", "yes"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server runs (with TLS support)")
}

/// Stops what a run left in `dir` (PostgreSQL, Redis) and removes it.
fn stop_leftovers(dir: &Path, pg_bin: &Path) {
    let data = dir.join("pg");
    if data.join("postmaster.pid").exists() {
        let _ = as_postgres(&pg_bin.join("pg_ctl"))
            .args(["-D", path(&data), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }
    for name in ["redis.pid", "sentinel.pid"] {
        if let Ok(pid) = std::fs::read_to_string(dir.join(name)) {
            let _ = Command::new("kill")
                .arg(pid.trim())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A CA, a server certificate it signs for 127.0.0.1 only, and a second CA that signs nothing.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for (name, subject) in [
        ("ca", "/CN=ledger test CA"),
        ("wrong-ca", "/CN=unrelated CA"),
    ] {
        openssl(dir, &["req", "-x509", "-days", "2", "-subj", subject])
            .args(ec)
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .must();
    }
    openssl(dir, &["req", "-subj", "/CN=127.0.0.1"])
        .args(ec)
        .args(["-keyout", "server.key", "-out", "server.csr"])
        .must();
    let extensions = "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                      keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n";
    std::fs::write(dir.join("server.ext"), extensions).expect("extensions file");
    openssl(dir, &["x509", "-req", "-in", "server.csr", "-days", "2"])
        .args(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
        .args(["-extfile", "server.ext", "-out", "server.pem"])
        .must();
}

fn openssl(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("openssl");
    command.current_dir(dir).args(args);
    command
}

trait MustSucceed {
    fn must(&mut self);
}

impl MustSucceed for Command {
    /// Runs the command; panics with its output unless it succeeds.
    fn must(&mut self) {
        let output = self.output().expect("the command runs");
        assert!(
            output.status.success(),
            "{self:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// initdb (no fsync: the cluster is thrown away), TLS on, TLS-only access from loopback.
fn init_postgres(pg_bin: &Path, dir: &Path, data: &Path, port: u16) {
    // PostgreSQL's key must belong to the user the server runs as.
    let key = dir.join("pg-server.key");
    std::fs::copy(dir.join("server.key"), &key).expect("copy the key");
    std::fs::create_dir(data).expect("data folder");
    if is_root() {
        Command::new("chown")
            .args(["postgres:postgres", path(&key), path(data), path(dir)])
            .must();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    as_postgres(&pg_bin.join("initdb"))
        .args(["-D", path(data), "-U", "postgres", "-A", "trust", "-N"])
        .args(["-E", "UTF8", "--no-instructions"])
        .must();
    let conf = format!(
        "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
         ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        dir.join("server.pem").display(),
        key.display()
    );
    append(&data.join("postgresql.conf"), &conf);
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust\n",
    )
    .expect("pg_hba.conf");
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .expect("open");
    file.write_all(text.as_bytes()).expect("append");
}

/// A PostgreSQL server tool, run as the `postgres` user when the test runs as root (the server
/// refuses root).
fn as_postgres(tool: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(tool);
        command
    } else {
        Command::new(tool)
    }
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// The newest PostgreSQL's server binaries (`PG_BIN_DIR` overrides).
fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return dir.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries under /usr/lib/postgresql (install postgresql)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
        .1
}

/// `NAME` from the environment, else `DEFAULT_NAME` from `scripts/lib/defaults.sh`.
fn port(name: &str) -> u16 {
    let default = format!("DEFAULT_{name}=");
    std::env::var(name)
        .ok()
        .or_else(|| {
            include_str!("../../../scripts/lib/defaults.sh")
                .lines()
                .find_map(|line| line.strip_prefix(&default).map(str::to_owned))
        })
        .unwrap_or_else(|| panic!("{default} in scripts/lib/defaults.sh"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is a port"))
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
