//! The public route table and what a service answers off it (404, 405 with `Allow`).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::MatchedPath;
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use super::middleware::method_label;
use super::{json_body, ApiError};
use crate::telemetry::metrics as m;

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
    ("/events", "GET, HEAD"),
    ("/accounts/{account_id}/events", "GET, HEAD"),
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
            method_label(&method),
            "unmatched".to_owned(),
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
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
