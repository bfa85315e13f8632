//! No client can grow the metrics: nginx passes every method but GET and HEAD to the writer,
//! and every path, so made-up methods and paths must not become new series. Thousands of them
//! leave the series count where it was.

use axum::body::Body;
use axum::http::Request;
use shared::telemetry::metrics;
use shared::testing;
use tower::ServiceExt;
use writer::{Application, WriterConfig};

/// The series `/metrics` exports: its sample lines.
fn series(rendered: &str) -> usize {
    rendered
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count()
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_series() {
    // The one test of this binary, so the recorder may be the global one, as in the writer.
    let handle = metrics::install("writer").expect("the only recorder of this test binary");
    let app = Application::build_on(
        testing::unreachable_pool(),
        testing::unreachable_cache(),
        WriterConfig::new(testing::http_config(), 1),
    )
    .into_router();
    let send = |method: String, path: String| {
        let app = app.clone();
        async move {
            let request = Request::builder()
                .method(method.as_str())
                .uri(path)
                .body(Body::empty())
                .expect("request");
            app.oneshot(request).await.expect("infallible").status()
        }
    };
    // One of each kind first: a made-up method on an API path (405) and on an unknown path
    // (404), so that the series they belong to exist.
    assert_eq!(send("FIRST".into(), "/transactions".into()).await, 405);
    assert_eq!(send("FIRST".into(), "/first".into()).await, 404);
    let before = handle.render();

    for i in 0..2_000 {
        assert_eq!(send(format!("M{i}"), "/transactions".into()).await, 405);
        assert_eq!(send(format!("N{i}"), format!("/made-up/{i}")).await, 404);
    }

    let after = handle.render();
    assert_eq!(series(&after), series(&before), "{after}");
    assert!(
        !after.contains("M1999") && !after.contains("made-up"),
        "{after}"
    );
    assert!(after.contains(r#"method="other""#), "{after}");
}
