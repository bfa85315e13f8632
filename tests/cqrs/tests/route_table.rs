//! One route table. `shared::http::PUBLIC_ROUTES` is the public API; the services' routes,
//! nginx's `$api_allow` and `$api_backend` maps (`nginx/nginx.conf`) and the paths of
//! `reader/openapi.json` must say the same. An endpoint added to only one of them fails here.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use regex_automata::meta::Regex;
use serde_json::Value;
use shared::http::{allowed_methods, PUBLIC_ROUTES};
use shared::testing::{self, send};

const NGINX_CONF: &str = include_str!("../../../nginx/nginx.conf");

type Endpoints = BTreeSet<(String, String)>;

/// (path template, method) of every public endpoint.
fn public_endpoints() -> Endpoints {
    PUBLIC_ROUTES
        .iter()
        .flat_map(|(path, allow)| {
            allow
                .split(", ")
                .map(|method| (path.to_string(), method.to_string()))
        })
        .collect()
}

/// A concrete path for a template: every `{parameter}` becomes a UUID.
fn sample(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Fails with what is in one set and not the other, named.
fn assert_same(what: &str, left_name: &str, left: &Endpoints, right_name: &str, right: &Endpoints) {
    let only_left: Vec<_> = left.difference(right).collect();
    let only_right: Vec<_> = right.difference(left).collect();
    assert!(
        only_left.is_empty() && only_right.is_empty(),
        "{what}: only in {left_name}: {only_left:?}; only in {right_name}: {only_right:?}"
    );
}

#[test]
fn the_openapi_document_has_exactly_the_public_endpoints() {
    let doc: Value = serde_json::from_slice(reader::OPENAPI_JSON).expect("openapi.json is JSON");
    let methods = [
        "get", "head", "post", "put", "patch", "delete", "options", "trace",
    ];
    let documented: Endpoints = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            methods
                .iter()
                .filter(|method| item.contains_key(**method))
                .map(|method| (path.clone(), method.to_uppercase()))
        })
        .collect();
    assert_same(
        "OpenAPI paths",
        "reader/openapi.json",
        &documented,
        "shared::http::PUBLIC_ROUTES",
        &public_endpoints(),
    );
}

/// The entries of an nginx `map … $name { … }` block, in order: (key, value), quotes removed.
fn nginx_map(name: &str) -> Vec<(String, String)> {
    let start = NGINX_CONF
        .lines()
        .position(|line| {
            line.trim_start().starts_with("map ") && line.contains(&format!("${name} {{"))
        })
        .unwrap_or_else(|| panic!("nginx.conf has no map for ${name}"));
    NGINX_CONF
        .lines()
        .skip(start + 1)
        .map(str::trim)
        .take_while(|line| *line != "}")
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let tokens = nginx_tokens(line.trim_end_matches(';'));
            assert_eq!(tokens.len(), 2, "map ${name}: cannot read `{line}`");
            (tokens[0].clone(), tokens[1].clone())
        })
        .collect()
}

/// Splits an nginx directive into its words; a quoted word keeps its spaces.
fn nginx_tokens(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (token, after) = match rest.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').expect("closing quote");
                (&quoted[..end], &quoted[end + 1..])
            }
            None => rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len())),
        };
        tokens.push(token.to_owned());
        rest = after.trim_start();
    }
    tokens
}

/// What nginx's `$api_allow` map gives a request URI: the first matching regex, else default.
fn nginx_allow(entries: &[(String, String)], uri: &str) -> String {
    for (key, value) in entries {
        if let Some(pattern) = key.strip_prefix('~') {
            assert!(
                !pattern.starts_with('*'),
                "case-insensitive `{key}` is not supported here"
            );
            if Regex::new(pattern).expect("nginx regex").is_match(uri) {
                return value.clone();
            }
        } else if key != "default" && key == uri {
            return value.clone();
        }
    }
    entries
        .iter()
        .find(|(key, _)| key == "default")
        .map(|(_, value)| value.clone())
        .unwrap_or_default()
}

#[test]
fn nginx_allows_each_public_path_the_public_methods_and_nothing_else() {
    let entries = nginx_map("api_allow");
    let public: Vec<String> = PUBLIC_ROUTES.iter().map(|(path, _)| sample(path)).collect();
    let not_public = [
        "/",
        "/metrics",
        "/transactions/",
        "/accounts",
        "/accounts/x/y",
        "/pings",
    ];
    for path in public.iter().map(String::as_str).chain(not_public) {
        for uri in [path.to_owned(), format!("{path}?limit=1")] {
            assert_eq!(
                nginx_allow(&entries, &uri),
                allowed_methods(path).unwrap_or_default(),
                "nginx's $api_allow and shared::http::PUBLIC_ROUTES differ for {uri}"
            );
        }
    }
    for (key, value) in entries.iter().filter(|(key, _)| key != "default") {
        let pattern = key.trim_start_matches('~');
        let regex = Regex::new(pattern).expect("nginx regex");
        assert!(
            public.iter().any(|path| regex.is_match(path)),
            "nginx's $api_allow has `{key}` -> \"{value}\", which matches no path of \
             shared::http::PUBLIC_ROUTES"
        );
    }
}

/// Which service nginx's `$api_backend` map sends a method to.
fn backend_of(method: &str) -> String {
    let entries = nginx_map("api_backend");
    entries
        .iter()
        .find(|(key, _)| key == method)
        .or_else(|| entries.iter().find(|(key, _)| key == "default"))
        .map(|(_, backend)| backend.clone())
        .expect("$api_backend has a default")
}

fn served(routes: Vec<(&'static str, Method)>) -> Endpoints {
    routes
        .into_iter()
        .map(|(path, method)| (path.to_owned(), method.to_string()))
        .collect()
}

#[test]
fn each_public_endpoint_is_served_by_the_service_nginx_sends_it_to_and_no_other_is_served() {
    let reader = served(reader::routes().served());
    let writer = served(writer::routes().served());
    for (path, method) in public_endpoints() {
        let backend = backend_of(&method);
        let routes = match backend.as_str() {
            "reader" => &reader,
            "writer" => &writer,
            other => panic!("$api_backend names an unknown upstream {other}"),
        };
        assert!(
            routes.contains(&(path.clone(), method.clone())),
            "{method} {path} is public and nginx sends it to the {backend}, whose routes lack it"
        );
    }
    let public = public_endpoints();
    for (name, routes) in [("reader", &reader), ("writer", &writer)] {
        let extra: Endpoints = routes.difference(&public).cloned().collect();
        assert!(
            extra.is_empty(),
            "the {name} serves endpoints that shared::http::PUBLIC_ROUTES lacks: {extra:?}"
        );
    }
}

/// `served()` is what the routers really do: each endpoint reaches a handler, not the fallback
/// (405 with `Allow`, or 404 "no such path"), even with PostgreSQL and Redis unreachable.
#[tokio::test]
async fn every_served_endpoint_reaches_a_handler() {
    let pool = testing::unreachable_pool();
    let cache = testing::unreachable_cache();
    let reader = cqrs_tests::reader(&pool, cache.clone()).into_router();
    let writer = cqrs_tests::writer(&pool, cache).into_router();
    for (app, routes) in [
        (&reader, reader::routes().served()),
        (&writer, writer::routes().served()),
    ] {
        for (path, method) in routes {
            let uri = sample(path);
            let request = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .body(Body::empty())
                .expect("request");
            let (status, body) = send(app, request).await;
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND
                    && body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("no such path")));
            assert!(!unrouted, "{method} {uri}: {status} {body}");
        }
    }
}
