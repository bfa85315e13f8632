//! The middleware every service's router runs in: metrics, JSON 404/405, CORS, request ids,
//! a span per request, a request timeout, a body limit and a panic guard.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LINK, LOCATION, RETRY_AFTER,
};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::api_keys::require_api_key;
use super::{unrouted, ApiError, ApiKeys, X_REQUEST_ID};
use crate::telemetry::metrics::{self as m, HTTP_REQUESTS_IN_FLIGHT};

/// What the shared middleware needs; settings fill it.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// Origins browsers may call from; empty means any (`*`).
    pub cors_allowed_origins: Vec<HeaderValue>,
    /// `API_KEYS_FILE`'s keys; `None`: no API keys (the contract's behaviour).
    pub api_keys: Option<ApiKeys>,
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
            AUTHORIZATION,
            CONTENT_TYPE,
            IF_NONE_MATCH,
            X_REQUEST_ID,
            HeaderName::from_static("idempotency-key"),
            // An EventSource resuming a change feed from another origin sends it.
            HeaderName::from_static("last-event-id"),
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
/// request ids (kept from nginx, or made here), a span per request, API keys when they are on,
/// a request timeout, a body limit, and a panic guard that still answers with a JSON 500.
pub fn with_middleware(routes: Router, config: HttpConfig) -> Router {
    let routes = routes
        .route_layer(middleware::from_fn(track_http))
        .fallback(unrouted);
    // Inside CORS (a preflight carries no credentials) and the span (which records the key id);
    // absent, not skipped, without API keys: no cost per request.
    let routes = match config.api_keys {
        Some(keys) => routes.layer(middleware::from_fn_with_state(keys, require_api_key)),
        None => routes,
    };
    routes
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
                    api_key = tracing::field::Empty,
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
        // The writer answers every POST it has taken within this limit (writer/src/startup.rs,
        // start_deadline), so this should not reach a POST whose transaction may still commit;
        // if it ever does, the message says how to retry safely.
        Err(_) => ApiError::Unavailable(
            "request timed out, retry later (a POST may still have been recorded: retry it with the same Idempotency-Key)",
        )
        .into_response(),
    }
}

/// Middleware (`route_layer`) that counts and times every routed request.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let in_flight = ::metrics::gauge!(HTTP_REQUESTS_IN_FLIGHT);
    in_flight.increment(1.0);
    let response = next.run(request).await;
    in_flight.decrement(1.0);
    m::record_http(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// The `method` label of a request: the methods HTTP defines, and `other` for anything else a
/// client sends (nginx passes every method but GET and HEAD to the writer, so a made-up method
/// must not become a new series).
pub(super) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_method_is_labelled_other() {
        assert_eq!(method_label(&Method::POST), "POST");
        for made_up in ["FOO", "get", "PROPFIND", "X-1234"] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("a valid token");
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }
}
