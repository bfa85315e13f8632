//! Optional API keys with scopes (`API_KEYS_FILE`). Off by default: then nothing here runs and
//! the API is the contract's. On, every request but `GET /ping` needs
//! `Authorization: Bearer <secret>` of a key with the scope its method needs: `read` for GET and
//! HEAD, `write` for everything else (CORS preflights are answered before this layer).
//!
//! The file holds one key a line, `<key-id> <scopes> <sha256-hex-of-the-secret>` (`#` starts a
//! comment). Only the secrets' digests are kept, so the file is no secret by itself; a request's
//! secret is hashed and looked up. Secrets are never logged; the key id is, in the request's
//! span, and it scopes the request's idempotency keys. Reloaded on SIGHUP and when the file
//! changes; a file that does not parse is refused and the keys in use stay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error_response;
use crate::telemetry::metrics::AUTH_REFUSALS_TOTAL;

/// How often the file is checked for a change (a Kubernetes secret is updated in place, without
/// a signal).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The id of the API key a request was made with: a request extension, set only with API keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyId(pub Arc<str>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Read,
    Write,
}

#[derive(Debug)]
struct ApiKey {
    id: Arc<str>,
    read: bool,
    write: bool,
}

impl ApiKey {
    fn allows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
        }
    }
}

/// The keys of one version of the file, by the SHA-256 of their secret.
type KeyTable = HashMap<[u8; 32], ApiKey>;

/// The keys in use, shared by every request; [`Self::reload`] swaps them whole.
#[derive(Clone)]
pub struct ApiKeys {
    path: PathBuf,
    table: Arc<RwLock<Arc<KeyTable>>>,
    /// The size and modification time of the file the keys in use were read from.
    loaded: Arc<Mutex<Option<FileStamp>>>,
}

type FileStamp = (u64, SystemTime);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("path", &self.path)
            .field("keys", &self.current().len())
            .finish()
    }
}

impl ApiKeys {
    /// Reads the file; fails naming the line that is wrong.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let stamp = file_stamp(path);
        let table = read_table(path)?;
        tracing::info!(path = %path.display(), keys = table.len(), "API keys loaded");
        Ok(Self {
            path: path.to_owned(),
            table: Arc::new(RwLock::new(Arc::new(table))),
            loaded: Arc::new(Mutex::new(stamp)),
        })
    }

    /// Whether the file is no longer the one the keys were read from (or last tried).
    fn file_changed(&self) -> bool {
        let loaded = *self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file_stamp(&self.path) != loaded
    }

    /// Reads the file again and uses it from the next request on. On error the keys in use stay.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let stamp = file_stamp(&self.path);
        *self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = stamp;
        let table = read_table(&self.path)?;
        let keys = table.len();
        *self
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(table);
        Ok(keys)
    }

    fn current(&self) -> Arc<KeyTable> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reloads on SIGHUP, and when the file's size or modification time changes.
    pub fn reload_on_change(&self) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut hangups =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticks = tokio::time::interval(FILE_CHECK_INTERVAL);
            loop {
                let signalled = async {
                    match hangups.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let reason = tokio::select! {
                    _ = signalled => "SIGHUP",
                    _ = ticks.tick() => {
                        if !keys.file_changed() { continue; }
                        "the file changed"
                    }
                };
                match keys.reload() {
                    Ok(count) => tracing::info!(reason, keys = count, "API keys reloaded"),
                    Err(error) => tracing::error!(
                        reason,
                        error = format!("{error:#}"),
                        "API keys not reloaded; the keys in use stay"
                    ),
                }
            }
        })
    }
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

fn read_table(path: &Path) -> anyhow::Result<KeyTable> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("API_KEYS_FILE: cannot read {}", path.display()))?;
    parse_table(&text).with_context(|| format!("API_KEYS_FILE {}", path.display()))
}

fn parse_table(text: &str) -> anyhow::Result<KeyTable> {
    let mut table = KeyTable::new();
    let mut ids = std::collections::HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let number = index + 1;
        let key = parse_line(line).with_context(|| format!("line {number}"))?;
        let digest = key.1;
        if !ids.insert(key.0.id.clone()) {
            bail!("line {number}: the key id `{}` is used twice", key.0.id);
        }
        if table.insert(digest, key.0).is_some() {
            bail!("line {number}: the same secret is listed twice");
        }
    }
    Ok(table)
}

fn parse_line(line: &str) -> anyhow::Result<(ApiKey, [u8; 32])> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, scopes, digest] = fields[..] else {
        bail!("expected `<key-id> <scopes> <sha256-hex-of-the-secret>`");
    };
    let id_ok = id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !id_ok {
        bail!("the key id must be 1 to 64 of A-Z a-z 0-9 . _ -");
    }
    let (mut read, mut write) = (false, false);
    for scope in scopes.split(',') {
        match scope {
            "read" if !read => read = true,
            "write" if !write => write = true,
            _ => bail!("scopes must be `read`, `write` or `read,write`, got `{scopes}`"),
        }
    }
    let key = ApiKey {
        id: id.into(),
        read,
        write,
    };
    Ok((key, parse_digest(digest)?))
}

fn parse_digest(hex: &str) -> anyhow::Result<[u8; 32]> {
    let nibble = |b: u8| (b as char).to_digit(16);
    let bytes = hex.as_bytes();
    let mut digest = [0u8; 32];
    if bytes.len() != 64 {
        bail!("the secret's SHA-256 must be 64 hex digits");
    }
    for (i, pair) in bytes.chunks(2).enumerate() {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => digest[i] = (high * 16 + low) as u8,
            _ => bail!("the secret's SHA-256 must be 64 hex digits"),
        }
    }
    Ok(digest)
}

/// Middleware: lets a request through with its [`ApiKeyId`], or answers 401/403 JSON.
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/ping" {
        return next.run(request).await;
    }
    let needed = match *request.method() {
        Method::GET | Method::HEAD => Scope::Read,
        _ => Scope::Write,
    };
    let Some(secret) = bearer_secret(&request) else {
        return refuse(Refusal::Missing);
    };
    let digest: [u8; 32] = Sha256::digest(secret).into();
    let table = keys.current();
    let Some(key) = table.get(&digest) else {
        return refuse(Refusal::Invalid);
    };
    tracing::Span::current().record("api_key", &*key.id);
    if !key.allows(needed) {
        return refuse(Refusal::Scope(needed));
    }
    request.extensions_mut().insert(ApiKeyId(key.id.clone()));
    next.run(request).await
}

/// The secret of `Authorization: Bearer <secret>` (the scheme is case-insensitive).
fn bearer_secret(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let secret = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !secret.is_empty()).then_some(secret)
}

enum Refusal {
    Missing,
    Invalid,
    Scope(Scope),
}

fn refuse(refusal: Refusal) -> Response {
    let (reason, status, message, challenge) = match refusal {
        Refusal::Missing => (
            "missing",
            StatusCode::UNAUTHORIZED,
            "this API needs an API key: send Authorization: Bearer <secret>",
            r#"Bearer realm="transactions""#,
        ),
        Refusal::Invalid => (
            "invalid",
            StatusCode::UNAUTHORIZED,
            "the API key is not valid",
            r#"Bearer realm="transactions", error="invalid_token""#,
        ),
        Refusal::Scope(Scope::Read) => (
            "scope",
            StatusCode::FORBIDDEN,
            "this API key may not read: it lacks the read scope",
            r#"Bearer realm="transactions", error="insufficient_scope", scope="read""#,
        ),
        Refusal::Scope(Scope::Write) => (
            "scope",
            StatusCode::FORBIDDEN,
            "this API key may not write: it lacks the write scope",
            r#"Bearer realm="transactions", error="insufficient_scope", scope="write""#,
        ),
    };
    ::metrics::counter!(AUTH_REFUSALS_TOTAL, "reason" => reason).increment(1);
    let mut response = error_response(status, message).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn a_file_of_keys_parses_with_comments_and_blank_lines() {
        let table = parse_table(&format!(
            "# id scopes sha256\n\nreporting read {DIGEST}  # a comment\npayments read,write {}\n",
            "0".repeat(64)
        ))
        .expect("valid");
        assert_eq!(table.len(), 2);
        let reporting = table.get(&parse_digest(DIGEST).expect("hex")).expect("key");
        assert_eq!(&*reporting.id, "reporting");
        assert!(reporting.allows(Scope::Read) && !reporting.allows(Scope::Write));
    }

    #[test]
    fn a_wrong_line_is_refused_by_its_number() {
        for (text, expected) in [
            (format!("a read {DIGEST}\nb reed {DIGEST}"), "line 2"),
            (format!("a read,read {DIGEST}"), "scopes"),
            (format!("a read {}", &DIGEST[1..]), "64 hex"),
            (format!("a read {}z", &DIGEST[1..]), "64 hex"),
            (
                format!("a read {DIGEST}\na write {}", "0".repeat(64)),
                "used twice",
            ),
            (format!("a read {DIGEST}\nb write {DIGEST}"), "listed twice"),
            (format!("a b/c read {DIGEST}"), "expected"),
            (format!("a/b read {DIGEST}"), "key id"),
        ] {
            let error = format!("{:#}", parse_table(&text).expect_err(&text));
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
