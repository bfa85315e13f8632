//! `REDIS_SENTINELS` and the credentials the services give the Sentinels.

use super::variables::Env;
use crate::cache::SentinelAuth;

/// `host:port,host:port,…`; each must name a port. Credentials have variables of their own
/// (`REDIS_SENTINEL_USERNAME`, `REDIS_SENTINEL_PASSWORD`: one user for every Sentinel, and a
/// password that can come from a secret while the list stays plain configuration), so an
/// address with `user@` in it is refused rather than half understood.
pub(super) fn parse_sentinels(raw: Option<&str>) -> anyhow::Result<Vec<String>> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(|address| {
            anyhow::ensure!(
                !address.contains('@'),
                "REDIS_SENTINELS: an address is host:port only; the Sentinels' user and password \
                 go in REDIS_SENTINEL_USERNAME and REDIS_SENTINEL_PASSWORD"
            );
            let port = address
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            anyhow::ensure!(
                matches!(port, Some(Ok(_))),
                "REDIS_SENTINELS: `{address}` is not host:port"
            );
            Ok(address.to_owned())
        })
        .collect()
}

/// `REDIS_SENTINEL_USERNAME` and `REDIS_SENTINEL_PASSWORD`; unset: no `AUTH`.
pub(super) fn sentinel_auth<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> anyhow::Result<SentinelAuth> {
    Ok(SentinelAuth {
        username: env.optional("REDIS_SENTINEL_USERNAME")?,
        password: env.optional("REDIS_SENTINEL_PASSWORD")?,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_sentinels;

    #[test]
    fn sentinels_are_a_list_of_host_and_port() {
        assert!(parse_sentinels(None).expect("unset").is_empty());
        let listed = parse_sentinels(Some("127.0.0.1:26379, sentinel-2:26379,")).expect("valid");
        assert_eq!(listed, ["127.0.0.1:26379", "sentinel-2:26379"]);
        let error = parse_sentinels(Some("127.0.0.1")).expect_err("no port");
        assert!(error.to_string().contains("REDIS_SENTINELS"), "{error}");
    }

    #[test]
    fn credentials_in_an_address_are_refused_without_echoing_them() {
        let error = parse_sentinels(Some("ledger:s3cret@127.0.0.1:26379")).expect_err("refused");
        let message = error.to_string();
        assert!(message.contains("REDIS_SENTINEL_PASSWORD"), "{message}");
        assert!(
            !message.contains("s3cret"),
            "the password is echoed: {message}"
        );
    }
}
