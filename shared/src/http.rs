//! HTTP plumbing both services share: the public route table (for 404 vs 405), the middleware
//! stack, the metrics listener and serving with graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH, LINK, LOCATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{error_response, ApiError};
use crate::settings::Settings;
use crate::telemetry::metrics as m;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API as clients see it through the proxy, which splits it between the two services
/// (GET and HEAD to the reader, the rest to the writer). Each service answers a method it does
/// not serve on one of these paths with 405 and the *public* `Allow` list, and any other path
/// with 404, so clients get the same answer whichever service nginx picked.
///
/// One route table: the services' [`Routes`], nginx's `$api_allow` map (`nginx/nginx.conf`) and
/// the paths of `reader/openapi.json` must say the same, which `reader/tests/route_table.rs`
/// checks. A new endpoint goes here first.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("/ping", "GET, HEAD"),
    ("/openapi.json", "GET, HEAD"),
    ("/transactions", "GET, HEAD, POST"),
    ("/transactions/{transaction_id}", "GET, HEAD"),
    ("/accounts/{account_id}", "GET, HEAD"),
];

/// The public `Allow` list of a path, if the path is part of the API.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    PUBLIC_ROUTES
        .iter()
        .find(|(template, _)| template_matches(template, path))
        .map(|(_, allow)| *allow)
}

fn template_matches(template: &str, path: &str) -> bool {
    let (mut template_segments, mut path_segments) = (template.split('/'), path.split('/'));
    loop {
        match (template_segments.next(), path_segments.next()) {
            (None, None) => return true,
            (Some(wanted), Some(got)) if wanted.starts_with('{') && !got.is_empty() => {}
            (Some(wanted), Some(got)) if wanted == got => {}
            _ => return false,
        }
    }
}

/// A service's share of the public API. Routes are added only through these methods, which
/// know the method each handler serves, so [`Routes::served`] is what the router really serves
/// and the route-table test can hold it against [`PUBLIC_ROUTES`]. Every path answers the
/// methods it lacks with [`unrouted`] (405 with the public `Allow` list).
pub struct Routes<S> {
    paths: BTreeMap<&'static str, (MethodRouter<S>, Vec<Method>)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self {
            paths: BTreeMap::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `GET` on `path`, and so `HEAD` (axum answers it with the GET handler, without the body).
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(path, get(handler), &[Method::GET, Method::HEAD])
    }

    /// `POST` on `path`.
    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(path, post(handler), &[Method::POST])
    }

    fn add(mut self, path: &'static str, route: MethodRouter<S>, methods: &[Method]) -> Self {
        let (router, served) = self
            .paths
            .remove(path)
            .unwrap_or_else(|| (MethodRouter::new(), Vec::new()));
        let served = served.into_iter().chain(methods.iter().cloned()).collect();
        self.paths.insert(path, (router.merge(route), served));
        self
    }

    /// Another resource's routes added to these.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        for (path, (route, methods)) in other.paths {
            self = self.add(path, route, &methods);
        }
        self
    }

    /// Every (path template, method) these routes serve.
    pub fn served(&self) -> Vec<(&'static str, Method)> {
        self.paths
            .iter()
            .flat_map(|(path, (_, methods))| methods.iter().map(|method| (*path, method.clone())))
            .collect()
    }

    /// The router, each path answering the methods it lacks with [`unrouted`].
    pub fn into_router(self) -> Router<S> {
        self.paths
            .into_iter()
            .fold(Router::new(), |router, (path, (route, _))| {
                router.route(path, route.fallback(unrouted))
            })
    }
}

/// Liveness: the process is up and serving. Deliberately touches neither PostgreSQL nor Redis,
/// so health checks do not flap with them.
pub async fn ping() -> Response {
    json_body(Bytes::from_static(br#"{"status":"ok"}"#))
}

/// What a service answers for a method or path it has no handler for: 405 with the public
/// `Allow` list where the path is part of the API, else 404.
pub async fn unrouted(matched: Option<MatchedPath>, method: Method, uri: Uri) -> Response {
    let started = Instant::now();
    let error = match allowed_methods(uri.path()) {
        Some(allow) => ApiError::MethodNotAllowed { allow },
        None => ApiError::NotFound(format!("no such path: {}", uri.path())),
    };
    let response = error.into_response();
    // Routed requests are counted by `track_http`; requests no route matched are not.
    if matched.is_none() {
        m::record_http(
            method.to_string(),
            "unmatched".to_owned(),
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
}

/// A 200 whose body is JSON that is already serialized (e.g. a view from Redis).
pub fn json_body(body: Bytes) -> Response {
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// A 200 with a JSON view and its `ETag`, or a bodiless 304 when the client's `If-None-Match`
/// already names that tag. The tag is a hash of the exact bytes served, so it changes exactly
/// when the representation does, and every reader instance computes the same one.
pub fn conditional_json(request_headers: &HeaderMap, body: Bytes) -> Response {
    let etag = etag_of(&body);
    let matches = request_headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag);
    let etag = HeaderValue::from_str(&etag).expect("hex in quotes is a valid header value");
    if matches {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response();
    }
    let mut response = json_body(body);
    response.headers_mut().insert(ETAG, etag);
    response
}

/// `"<16 hex digits>"`: FNV-1a (64 bit) of the body. Not cryptographic; a tag only has to
/// change when the bytes do.
fn etag_of(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

/// What the shared middleware needs from the settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// Origins browsers may call from; empty means any (`*`).
    pub cors_allowed_origins: Vec<HeaderValue>,
}

impl From<&Settings> for HttpConfig {
    fn from(settings: &Settings) -> Self {
        Self {
            body_limit_bytes: settings.body_limit_bytes,
            request_timeout: settings.request_timeout,
            cors_allowed_origins: settings.cors_allowed_origins.clone(),
        }
    }
}

/// `CorsLayer` answers every `OPTIONS` as a preflight; only real preflights (with `Origin` and
/// `Access-Control-Request-Method`) may reach it. Any other `OPTIONS` gets what any other
/// unsupported method gets: 405 with the public `Allow` list, or 404.
async fn refuse_plain_options(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let is_preflight = headers.contains_key(axum::http::header::ORIGIN)
        && headers.contains_key(axum::http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if request.method() == Method::OPTIONS && !is_preflight {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        return unrouted(None, method, uri).await;
    }
    next.run(request).await
}

/// CORS for browser clients. Preflights (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) are answered here, before routing, so the writer answers the
/// preflight of `POST /transactions` that nginx sends it. Plain `OPTIONS` requests still get 405
/// (see [`refuse_plain_options`]).
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::HEAD, Method::POST])
        .allow_headers([
            CONTENT_TYPE,
            IF_NONE_MATCH,
            X_REQUEST_ID,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            LOCATION,
            ETAG,
            LINK,
            RETRY_AFTER,
            X_REQUEST_ID,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600));
    if origins.is_empty() {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer.allow_origin(AllowOrigin::list(origins.iter().cloned()))
    }
}

/// Wraps a service's routes in the shared middleware: metrics per matched route, JSON 404/405, CORS,
/// request ids (kept from nginx, or made here), a span per request, a request timeout, a body
/// limit, and a panic guard that still answers with a JSON 500.
pub fn with_middleware(routes: Router, config: HttpConfig) -> Router {
    routes
        .route_layer(middleware::from_fn(m::track_http))
        .fallback(unrouted)
        .layer(middleware::from_fn_with_state(
            config.request_timeout,
            request_timeout,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(cors(&config.cors_allowed_origins))
        .layer(middleware::from_fn(refuse_plain_options))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(X_REQUEST_ID)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
}

/// Answers 503 when a request's handler has not produced a response in time. (A streamed body
/// is not limited: it is producing.)
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable("request timed out, retry later").into_response(),
    }
}

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
            tracing::error!(%error, "cannot listen for Ctrl-C");
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
                tracing::error!(%error, "cannot listen for SIGTERM");
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

/// Everything a service binary does around its router: binds the API and metrics listeners,
/// serves both until SIGTERM or Ctrl-C, then sets `stop` (which background tasks watch),
/// drains in-flight requests within `SHUTDOWN_TIMEOUT_MS` and returns.
pub async fn serve_until_signal(
    settings: &Settings,
    app: Router,
    metrics: PrometheusHandle,
    stop: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let name = settings.service.name();
    let api_listener = TcpListener::bind(settings.listen_addr)
        .await
        .with_context(|| {
            format!(
                "{name}: cannot listen on LISTEN_ADDR {}",
                settings.listen_addr
            )
        })?;
    let metrics_listener = TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "{name}: cannot listen on METRICS_ADDR {}",
                settings.metrics_addr
            )
        })?;
    let socket_listener = match &settings.listen_socket {
        Some(path) => Some(
            bind_unix_socket(path)
                .with_context(|| format!("{name}: cannot listen on LISTEN_SOCKET {path:?}"))?,
        ),
        None => None,
    };
    tracing::info!(api = %settings.listen_addr, socket = ?settings.listen_socket, metrics = %settings.metrics_addr, "{name} listening");

    let mut metrics_stop = stop.subscribe();
    let metrics_server = tokio::spawn(serve(
        metrics_listener,
        metrics_router(metrics),
        async move {
            let _ = metrics_stop.wait_for(|stop| *stop).await;
        },
        Duration::from_secs(1),
    ));
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
            settings.shutdown_timeout,
        ))
    });
    let served = serve(api_listener, app, signalled, settings.shutdown_timeout).await;
    let _ = stop.send(true);
    if let Some(socket_server) = socket_server {
        match socket_server.await {
            Ok(Err(error)) => tracing::warn!(%error, "socket listener failed"),
            Err(error) => tracing::warn!(%error, "socket listener task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(path) = &settings.listen_socket {
        let _ = std::fs::remove_file(path);
    }
    if let Err(error) = metrics_server.await {
        tracing::warn!(%error, "metrics listener task failed");
    }
    served
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
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_are_recognised_with_their_allowed_methods() {
        assert_eq!(allowed_methods("/transactions"), Some("GET, HEAD, POST"));
        assert_eq!(allowed_methods("/transactions/anything"), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/accounts/x"), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/ping"), Some("GET, HEAD"));
    }

    #[test]
    fn a_matching_if_none_match_gives_a_bodiless_304_with_the_same_tag() {
        let body = Bytes::from_static(br#"{"balance":1}"#);
        let fresh = conditional_json(&HeaderMap::new(), body.clone());
        assert_eq!(fresh.status(), StatusCode::OK);
        let etag = fresh.headers()[ETAG].clone();

        for header in [
            etag.to_str().expect("ascii").to_owned(),
            format!("W/{}, \"x\"", etag.to_str().expect("ascii")),
            "*".to_owned(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(
                IF_NONE_MATCH,
                HeaderValue::from_str(&header).expect("header"),
            );
            let cached = conditional_json(&headers, body.clone());
            assert_eq!(cached.status(), StatusCode::NOT_MODIFIED, "{header}");
            assert_eq!(cached.headers()[ETAG], etag);
        }

        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, etag);
        let changed = conditional_json(&headers, Bytes::from_static(br#"{"balance":2}"#));
        assert_eq!(changed.status(), StatusCode::OK);
    }

    #[test]
    fn other_paths_are_not_part_of_the_api() {
        for path in [
            "/",
            "/metrics",
            "/transactions/",
            "/accounts",
            "/accounts/x/y",
            "/pings",
        ] {
            assert_eq!(allowed_methods(path), None, "{path}");
        }
    }
}
