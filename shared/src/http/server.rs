//! Serving a router: the API listeners (TCP, and a Unix socket for a proxy on this host), the
//! private metrics listener, and graceful shutdown on SIGTERM or Ctrl-C.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use super::error_response;

/// The private listener: `/metrics` for Prometheus and `/health` for orchestrators. nginx
/// never proxies to it.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { error_response(axum::http::StatusCode::NOT_FOUND, "no such path") })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(
                error = crate::telemetry::error_chain(&error),
                "cannot listen for Ctrl-C"
            );
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::error_chain(&error),
                    "cannot listen for SIGTERM"
                );
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// Where and how a service serves; settings fill it.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Which service this is, for log lines and error messages.
    pub service_name: &'static str,
    /// `LISTEN_ADDR`: the API.
    pub listen_addr: std::net::SocketAddr,
    /// `LISTEN_SOCKET`: a Unix socket the API is also served on (for a proxy on this host).
    pub listen_socket: Option<std::path::PathBuf>,
    /// `METRICS_ADDR`: `/metrics` and `/health`, never exposed through the proxy.
    pub metrics_addr: std::net::SocketAddr,
    /// How long in-flight requests may take to finish after the signal.
    pub shutdown_timeout: Duration,
}

/// Everything a service binary does around its router: binds the API and metrics listeners,
/// serves both until SIGTERM or Ctrl-C, then sets `stop` (which background tasks watch),
/// drains in-flight requests within `SHUTDOWN_TIMEOUT_MS` and returns.
pub async fn serve_until_signal(
    config: &ServeConfig,
    app: Router,
    metrics: PrometheusHandle,
    stop: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let name = config.service_name;
    let api_listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| {
            format!(
                "{name}: cannot listen on LISTEN_ADDR {}",
                config.listen_addr
            )
        })?;
    let metrics_listener = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "{name}: cannot listen on METRICS_ADDR {}",
                config.metrics_addr
            )
        })?;
    let socket_listener = match &config.listen_socket {
        Some(path) => Some(
            bind_unix_socket(path)
                .with_context(|| format!("{name}: cannot listen on LISTEN_SOCKET {path:?}"))?,
        ),
        None => None,
    };
    tracing::info!(api = %config.listen_addr, socket = ?config.listen_socket, metrics = %config.metrics_addr, "{name} listening");

    let mut metrics_stop = stop.subscribe();
    let metrics_server = tokio::spawn(serve(
        metrics_listener,
        metrics_router(metrics),
        async move {
            let _ = metrics_stop.wait_for(|stop| *stop).await;
        },
        Duration::from_secs(1),
    ));
    // SIGHUP asks a service to read its API keys again (http/api_keys.rs listens too); whether
    // or not API keys are on, it must never end the process, as its default action would.
    let hangups = tokio::spawn(log_hangups(name));
    let signalled = {
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        }
    };
    // The Unix socket serves the same app and stops with it.
    let socket_server = socket_listener.map(|listener| {
        let mut socket_stop = stop.subscribe();
        tokio::spawn(serve(
            listener,
            app.clone(),
            async move {
                let _ = socket_stop.wait_for(|stop| *stop).await;
            },
            config.shutdown_timeout,
        ))
    });
    let served = serve(api_listener, app, signalled, config.shutdown_timeout).await;
    let _ = stop.send(true);
    hangups.abort();
    if let Some(socket_server) = socket_server {
        match socket_server.await {
            Ok(Err(error)) => {
                tracing::warn!(error = format!("{error:#}"), "socket listener failed")
            }
            Err(error) => tracing::warn!(
                error = crate::telemetry::error_chain(&error),
                "socket listener task failed"
            ),
            Ok(Ok(())) => {}
        }
    }
    if let Some(path) = &config.listen_socket {
        let _ = std::fs::remove_file(path);
    }
    if let Err(error) = metrics_server.await {
        tracing::warn!(
            error = crate::telemetry::error_chain(&error),
            "metrics listener task failed"
        );
    }
    served
}

/// Logs each SIGHUP (and by listening, keeps it from ending the process).
async fn log_hangups(name: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            while hangups.recv().await.is_some() {
                tracing::info!("{name}: SIGHUP received");
            }
        }
        Err(error) => tracing::warn!(
            error = crate::telemetry::error_chain(&error),
            "cannot listen for SIGHUP"
        ),
    }
}

/// Binds `LISTEN_SOCKET`. A socket file left by an earlier run (a crash leaves it) is replaced;
/// anything else at that path is an error. Anyone on the host may connect (mode 0666), as
/// anyone on the host may connect to `LISTEN_ADDR` on the loopback: nginx's workers run as
/// another user.
fn bind_unix_socket(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => anyhow::bail!("{path:?} exists and is not a socket"),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves `app` until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// and returns; if they take longer than `grace`, returns anyway (the caller then exits).
pub async fn serve<L>(
    listener: L,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    // A make-service that clones the router (an `Arc`) per connection. Given the `Router`
    // itself, axum calls `with_state(())` on it for every connection, which rebuilds every
    // route's boxed middleware stack: about 16 KiB and the CPU to build it per connection
    // (measured with 3,000 open connections: 32 KiB each before, 14 KiB after).
    let server =
        axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        });
    let deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.map_err(Into::into),
        () = deadline => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight requests did not finish in time; exiting anyway");
            Ok(())
        }
    }
}
