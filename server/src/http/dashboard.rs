//! The release managers' web dashboard: hand-written HTML, CSS and JavaScript modules under
//! `dashboard/`, compiled into the binary so running the server needs no Node, no build step and
//! no files beside it. The page talks to the `/v1/` API with the token the user pastes; nothing
//! here is secret, so the assets are served without authentication.
//!
//! Every response carries a strict Content-Security-Policy: scripts, styles and connections
//! only from this origin, no inline script or style, no framing. The dashboard renders server
//! strings with DOM text APIs, and the policy is the second line of defence if one slips.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// One embedded file: its URL path under `/assets/` (empty for the page itself), its content
/// type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("dashboard/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/watch.js", JS),
    asset!("js/format.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/dialog.js", JS),
    asset!("js/charts.js", JS),
    asset!("js/insights.js", JS),
    asset!("js/vocabulary.js", JS),
    asset!("js/views/signin.js", JS),
    asset!("js/views/list.js", JS),
    asset!("js/views/approvals.js", JS),
    asset!("js/views/migration/page.js", JS),
    asset!("js/views/migration/actions.js", JS),
    asset!("js/views/migration/track.js", JS),
    asset!("js/views/migration/controls.js", JS),
    asset!("js/views/migration/gate.js", JS),
    asset!("js/views/migration/backfill.js", JS),
    asset!("js/views/migration/instances.js", JS),
    asset!("js/views/migration/traffic.js", JS),
    asset!("js/views/migration/usage.js", JS),
    asset!("js/views/migration/mismatches.js", JS),
    asset!("js/views/migration/timeline.js", JS),
    asset!("js/views/migration/plan.js", JS),
    asset!("js/views/migration/audit.js", JS),
];

/// Strong ETags from the content, computed once: a reload revalidates with a 304 instead of
/// downloading again, and a new binary's assets are never served from a stale cache.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..16]))
        .collect()
});

/// `GET /`: the single page; navigation inside it uses the URL fragment (`#/m/KEY`), so the
/// server needs no per-page routes.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /assets/{*path}`.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let (asset, etag) = (&ASSETS[i], &ETAGS[i]);
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Revalidate every time: cheap with the ETag, and a server upgrade shows at once.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // A module missing from ASSETS would 404 in the browser only: check the imports here.
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let spec = line.split(['"', '\'']).nth(1).unwrap();
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for part in spec.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    served.contains(&resolved.as_str()),
                    "{} imports {spec}, which is not embedded",
                    a.path
                );
            }
        }
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        for reference in index.split("/assets/").skip(1) {
            let path = reference.split('"').next().unwrap();
            assert!(served.contains(&path), "index.html references {path}");
        }
    }

    #[test]
    fn every_file_in_the_folder_is_embedded() {
        // A file left out of ASSETS is either dead or a 404 waiting for its first import.
        fn walk(dir: &std::path::Path, root: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, found);
                } else {
                    let relative = path.strip_prefix(root).unwrap();
                    found.push(relative.to_str().unwrap().to_owned());
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/dashboard");
        let mut found = Vec::new();
        walk(&root, &root, &mut found);
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for file in &found {
            assert!(served.contains(&file.as_str()), "{file} is not in ASSETS");
        }
        assert_eq!(found.len(), ASSETS.len(), "an asset is listed twice");
    }
}
