//! The web UI: plain HTML, CSS and JavaScript modules from
//! `crates/daemon/assets/`, embedded in the binary so ironclawd is
//! self-contained. Served without authentication (the page itself holds no
//! data; it asks for a token and calls the API with it):
//!
//! - `GET /` the single page, with a strict Content-Security-Policy and a
//!   fresh nonce per response (xterm.js creates `<style>` elements at run
//!   time; the page gives them this nonce, see `assets/js/terminal.js`);
//! - `GET /assets/{path}` the static files, with ETag revalidation.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $mime:expr) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/api.js", JS),
    asset!("js/app.js", JS),
    asset!("js/chat.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/files.js", JS),
    asset!("js/terminal.js", JS),
    asset!("js/tasks.js", JS),
    asset!("vendor/addon-fit.mjs", JS),
    asset!("vendor/xterm.css", CSS),
    asset!("vendor/xterm.mjs", JS),
];

const INDEX: &str = include_str!("../../assets/index.html");
const NONCE_MARK: &str = "{{CSP_NONCE}}";

/// The page's policy: nothing from outside this origin, no inline script,
/// inline style only with the per-response nonce.
fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; \
         img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/*path", get(asset))
}

fn common_headers(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

async fn index() -> Response {
    let nonce: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let body = INDEX.replace(NONCE_MARK, &nonce);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    common_headers(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// Strong validators, computed once (FNV-1a over each file).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in a.body {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
                format!("\"{h:016x}-{}\"", a.body.len())
            })
            .collect()
    })
}

async fn asset(Path(path): Path<String>, req_headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return Err(ApiError::NotFound(format!("no asset '{path}'")));
    };
    let a = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = req_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, a.body).into_response()
    };
    let h = resp.headers_mut();
    common_headers(h);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    // Revalidate every time (cheap: 304), so a new binary never serves a
    // stale mix of old and new modules.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_type_and_content() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            let ext = a.path.rsplit('.').next().unwrap();
            let want = match ext {
                "js" | "mjs" => JS,
                "css" => CSS,
                "svg" => "image/svg+xml",
                other => panic!("unexpected asset type {other}"),
            };
            assert_eq!(a.mime, want, "{}", a.path);
        }
        assert!(INDEX.contains(NONCE_MARK));
    }

    /// Every module a script imports (`from './x.js'`, `import('/assets/..')`)
    /// and every `/assets/` URL in a stylesheet is embedded too.
    #[test]
    fn scripts_and_styles_reference_only_embedded_assets() {
        for a in ASSETS
            .iter()
            .filter(|a| a.path.starts_with("js/") || a.path == "app.css")
        {
            let text = std::str::from_utf8(a.body).unwrap();
            for (quote, prefix, dir) in [
                ('\'', "'./", "js/"),
                ('\'', "'/assets/", ""),
                (')', "url(/assets/", ""),
            ] {
                for part in text.split(prefix).skip(1) {
                    let rel: String = part.chars().take_while(|c| *c != quote).collect();
                    let path = format!("{dir}{rel}");
                    assert!(
                        ASSETS.iter().any(|x| x.path == path),
                        "{} references {path}, which is not embedded",
                        a.path
                    );
                }
            }
        }
    }

    #[test]
    fn index_references_only_embedded_assets() {
        for part in INDEX.split("/assets/").skip(1) {
            let path: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "index.html links /assets/{path}, which is not embedded"
            );
        }
    }
}
