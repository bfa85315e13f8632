//! Successful JSON answers: pre-serialized bodies, and conditional ones with an `ETag`.

use axum::body::Bytes;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
