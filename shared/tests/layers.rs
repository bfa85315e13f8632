//! The layers of `shared` point only down (see `src/lib.rs`): each module may use the modules
//! below it and none above. Storage (`db`, `cache`), telemetry and domain know neither settings
//! nor the web framework. A `use` that breaks this fails here, naming the file and the line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each layer and the crate modules it may use, top to bottom.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "settings",
        &["settings", "http", "db", "cache", "telemetry", "domain"],
    ),
    ("http", &["http", "db", "cache", "telemetry", "domain"]),
    ("db", &["db", "telemetry", "domain"]),
    ("cache", &["cache", "telemetry", "domain"]),
    ("telemetry", &["telemetry"]),
    ("domain", &["domain"]),
];

/// Crates that belong to the HTTP layer: nothing below it may name them.
const WEB_CRATES: &[&str] = &["axum", "tower", "tower_http", "http_body_util"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ can be listed") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The layer a file of `src/` belongs to: `src/db.rs` and `src/db/*.rs` are `db`.
fn layer_of(relative: &Path) -> Option<&'static str> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS
        .iter()
        .map(|(layer, _)| *layer)
        .find(|layer| *layer == module)
}

/// The crate modules a line names: `crate::db::…` and `crate::{db, domain::X}`.
fn crate_modules(line: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (index, _) in line.match_indices("crate::") {
        let rest = &line[index + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let module: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !module.is_empty() {
                named.insert(module);
            }
        }
    }
    named
}

/// Whether a line names one of the web framework's crates as a path (`axum::…`, `use tower`).
fn names_web_crate(line: &str) -> Option<&'static str> {
    let code = line.split("//").next().unwrap_or_default();
    WEB_CRATES.iter().copied().find(|web| {
        code.match_indices(web).any(|(index, _)| {
            let before = code[..index].chars().last();
            let after = &code[index + web.len()..];
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                && (after.starts_with("::") || after.starts_with(';'))
        })
    })
}

fn violations() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src/").to_path_buf();
        let Some(layer) = layer_of(&relative) else {
            continue; // lib.rs and testing.rs wire and test; they are no layer
        };
        let allowed = LAYERS
            .iter()
            .find(|(name, _)| *name == layer)
            .map(|(_, allowed)| *allowed)
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).expect("a source file can be read");
        for (number, line) in text.lines().enumerate() {
            let place = format!("src/{}:{}", relative.display(), number + 1);
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for module in crate_modules(code) {
                if !allowed.contains(&module.as_str()) {
                    found.push(format!("{place}: {layer} uses crate::{module}"));
                }
            }
            if !["settings", "http"].contains(&layer) {
                if let Some(web) = names_web_crate(code) {
                    found.push(format!("{place}: {layer} names {web}"));
                }
            }
        }
    }
    found
}

#[test]
fn every_layer_uses_only_the_layers_below_it() {
    let found = violations();
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert_eq!(
        crate_modules("use crate::{db::PoolConfig, settings};"),
        ["db".to_owned(), "settings".to_owned()].into()
    );
    assert_eq!(
        crate_modules("    crate::settings::Settings::from_env()"),
        ["settings".to_owned()].into()
    );
    assert_eq!(names_web_crate("use axum::body::Bytes;"), Some("axum"));
    assert_eq!(
        names_web_crate("let x = tower_http::cors::Any;"),
        Some("tower_http")
    );
    assert_eq!(names_web_crate("// axum::Router in a comment"), None);
    assert_eq!(names_web_crate("use bytes::Bytes; // not axum's"), None);
    assert_eq!(layer_of(Path::new("db/record.rs")), Some("db"));
    assert_eq!(layer_of(Path::new("cache.rs")), Some("cache"));
    assert_eq!(layer_of(Path::new("testing.rs")), None);
}
