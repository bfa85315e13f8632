//! What can go wrong talking to Redis, and what each failure says about the next call.

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis call timed out")]
    Timeout,
    /// A recent call timed out or lost its connection; calls fail fast for a moment instead of
    /// each waiting for its own timeout.
    #[error("redis marked unavailable after a recent failure")]
    Unavailable,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The pipeline this read was sent in failed; every read in it shares the error.
    #[error("the pipeline of view reads failed")]
    Pipeline(#[source] std::sync::Arc<CacheError>),
    /// Redis answered a pipeline with a different number of replies than it was sent.
    #[error("{answers} answers to {reads} reads")]
    PipelineAnswers { reads: usize, answers: usize },
    /// The task that sends the view reads has stopped (the cache is being dropped).
    #[error("the view reader stopped")]
    ViewReaderStopped,
}

impl CacheError {
    /// Redis could not be reached or did not answer (as opposed to refusing one command, e.g.
    /// when it is out of memory, which says nothing about the next call).
    pub(super) fn means_unreachable(&self) -> bool {
        match self {
            Self::Timeout | Self::Unavailable => true,
            Self::Redis(error) => {
                error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
            }
            Self::Pipeline(error) => error.means_unreachable(),
            Self::PipelineAnswers { .. } | Self::ViewReaderStopped => false,
        }
    }

    /// A TLS handshake failed: rustls refuses a certificate (or a server that does not speak
    /// TLS) with an I/O error of kind `InvalidData`, which plain TCP never reports.
    pub(super) fn is_tls_failure(error: &redis::RedisError) -> bool {
        use std::error::Error;
        error
            .source()
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
    }

    /// The connection in use leads nowhere useful: Redis is unreachable through it, or the
    /// process behind it is no longer the master, or a master that lost its replicas
    /// (`NOREPLICAS`: `min-replicas-to-write`, docs/ha.md), which is what an old master cut off
    /// by a partition answers while the Sentinels promote another. The master is resolved again.
    pub(super) fn means_new_link(&self) -> bool {
        use redis::ErrorKind::{MasterDown, MasterNameNotFoundBySentinel, ReadOnly};
        self.means_unreachable()
            || matches!(self, Self::Redis(error)
                if matches!(error.kind(), ReadOnly | MasterDown | MasterNameNotFoundBySentinel)
                    || error.code() == Some("NOREPLICAS"))
    }
}

#[cfg(test)]
mod tests {
    use super::CacheError;

    /// What redis-rs makes of a reply that starts with `code` (as Redis sends it, also from
    /// inside a script: "NOREPLICAS Not enough good replicas to write. script: ...").
    fn server_error(code: &str, detail: &str) -> CacheError {
        CacheError::Redis(redis::make_extension_error(
            code.to_owned(),
            Some(detail.to_owned()),
        ))
    }

    #[test]
    fn a_master_without_its_replicas_is_left_for_the_one_the_sentinels_name() {
        let refused = server_error("NOREPLICAS", "Not enough good replicas to write.");
        assert!(refused.means_new_link());
        // Refusing writes says nothing about reaching it: no fail-fast pause for reads.
        assert!(!refused.means_unreachable());
        assert!(!server_error("BUSYGROUP", "Consumer Group name already exists").means_new_link());
    }
}
