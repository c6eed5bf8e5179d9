//! The web app's files: embedded in the binary (`assets/`), or read from
//! `admin.web_path`. Every answer has an `ETag` and is revalidated
//! (`Cache-Control: no-cache`), so a browser keeps the files and a new
//! binary's UI shows at the next load; nothing comes from another host.

use std::path::{Component, PathBuf};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The embedded files: name, content type, bytes.
const EMBEDDED: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/chart.js"),
    ),
    ("icon.svg", "image/svg+xml", include_bytes!("assets/icon.svg")),
];

pub(super) struct Assets {
    // `admin.web_path`, when set.
    dir: Option<PathBuf>,
    // The embedded files' ETags, in `EMBEDDED` order.
    etags: Vec<String>,
}

/// FNV-1a, 64 bits: an ETag needs no cryptographic hash.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl Assets {
    pub(super) fn new(web_path: &str) -> Self {
        Assets {
            dir: (!web_path.is_empty()).then(|| PathBuf::from(web_path)),
            etags: EMBEDDED
                .iter()
                .map(|(_, _, b)| format!("\"{:016x}\"", fnv(b)))
                .collect(),
        }
    }

    /// Answers `GET <prefix>/<name>`.
    pub(super) async fn serve(&self, name: &str, headers: &HeaderMap) -> Response {
        let name = if name.is_empty() { "index.html" } else { name };
        let (bytes, kind, etag) = match &self.dir {
            Some(dir) => {
                let relative = PathBuf::from(name);
                // Nothing outside the directory: no `..`, no absolute path.
                if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
                    return StatusCode::NOT_FOUND.into_response();
                }
                match tokio::fs::read(dir.join(&relative)).await {
                    Ok(bytes) => {
                        let etag = format!("\"{:016x}\"", fnv(&bytes));
                        (bytes.into(), content_type(name), etag)
                    }
                    Err(_) => return StatusCode::NOT_FOUND.into_response(),
                }
            }
            None => match EMBEDDED.iter().position(|(n, _, _)| *n == name) {
                Some(i) => {
                    let (_, kind, bytes) = EMBEDDED[i];
                    (axum::body::Bytes::from_static(bytes), kind, self.etags[i].clone())
                }
                None => return StatusCode::NOT_FOUND.into_response(),
            },
        };
        let Ok(etag_value) = HeaderValue::from_str(&etag) else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes());
        let common = [
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        let mut response = (
            common,
            [(header::CONTENT_TYPE, HeaderValue::from_static(kind))],
            bytes,
        )
            .into_response();
        if self.dir.is_none() {
            // crier's own UI loads nothing from another host, and runs no
            // inline script or style (a web app of `web_path` may).
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                ),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_files_with_etags_and_304() {
        let assets = Assets::new("");
        let r = assets.serve("", &HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[header::ETAG].clone();
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            assets.serve("index.html", &again).await.status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            assets.serve("nope.js", &HeaderMap::new()).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn web_path_stays_inside_its_directory() {
        let dir = std::env::temp_dir().join(format!("crier-admin-web-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("js")).unwrap();
        std::fs::write(dir.join("index.html"), "<p>theirs</p>").unwrap();
        std::fs::write(dir.join("js/a.js"), "1").unwrap();
        let assets = Assets::new(dir.to_str().unwrap());
        let r = assets.serve("", &HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            assets.serve("js/a.js", &HeaderMap::new()).await.status(),
            StatusCode::OK
        );
        for escape in ["../etc/passwd", "/etc/passwd", "js/../../x"] {
            assert_eq!(
                assets.serve(escape, &HeaderMap::new()).await.status(),
                StatusCode::NOT_FOUND
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
