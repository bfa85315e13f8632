//! TLS to Redis (`rediss://`): the CA the operator gives (`REDIS_CA_FILE`), the check at start
//! that a certificate verifies, and a warning for a plaintext link to another host.

use anyhow::Context;

use super::{Cache, CacheConfig, CacheError, Target};

impl Cache {
    /// With `rediss://`, opens the link once, at start: a handshake that fails (a certificate
    /// the CA does not vouch for, a host name it does not carry, a server that does not speak
    /// TLS) is a configuration error and stops the service. A Redis that does not answer is not:
    /// the service starts and connects when it can, as without TLS.
    pub async fn check_tls(&self) -> anyhow::Result<()> {
        if !self.links.use_tls() {
            return Ok(());
        }
        match tokio::time::timeout(self.timeout, self.links.get()).await {
            Ok(Err(error)) if CacheError::is_tls_failure(&error) => Err(error).context(
                "Redis link: TLS handshake failed; check REDIS_URL and REDIS_CA_FILE against the server's certificate",
            ),
            Ok(Err(error)) => {
                let error = crate::telemetry::error_chain(&error);
                tracing::warn!(error, "Redis not reachable at start; its certificate is checked when it is");
                Ok(())
            }
            Err(_) | Ok(Ok(_)) => Ok(()),
        }
    }
}

/// Logs a warning when the link is plaintext and leaves this host.
pub(super) fn warn_if_plaintext(config: &CacheConfig, target: &Target) {
    let remote = match config.sentinels.as_slice() {
        [] => !local(&config.redis_url),
        // The master is wherever they say; loopback Sentinels name a master on this host.
        sentinels => !sentinels
            .iter()
            .all(|address| local(&format!("redis://{address}"))),
    };
    if remote && !target.uses_tls() {
        tracing::warn!("the Redis link is not encrypted; use a rediss:// REDIS_URL");
    }
}

/// Whether the Redis at `url` is on this machine, where TLS protects nothing.
fn local(url: &str) -> bool {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    match url.into_connection_info().map(|info| info.addr) {
        Ok(ConnectionAddr::Tcp(host, _)) => {
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => true,
    }
}

/// The CA file of `REDIS_CA_FILE`, which must hold at least one PEM certificate (a file without
/// one would trust nothing, and every connection would fail later, less clearly).
pub(super) fn read_ca(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("REDIS_CA_FILE: cannot read {}", path.display()))?;
    let marker: &[u8] = b"-----BEGIN CERTIFICATE-----";
    anyhow::ensure!(
        pem.windows(marker.len()).any(|window| window == marker),
        "REDIS_CA_FILE: {} holds no PEM certificate",
        path.display()
    );
    Ok(pem)
}
