//! The web app (`web/`, built by `scripts/build-web.sh` into `web/dist`),
//! embedded into the binary: release builds carry the files, so serving
//! it needs no Node. Debug builds read `web/dist` from disk.
//!
//! Any GET that is not an API path and names no file gets `index.html`
//! (the app routes in the browser).

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "../web/dist"]
#[allow_missing = true]
struct Assets;

/// The page's Content-Security-Policy: scripts only from here; frames for
/// preview tabs (pods' own hosts) and URL tabs; never framed itself.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
    font-src 'self' data:; connect-src 'self' ws: wss:; frame-src http: https:; frame-ancestors 'none'; base-uri 'self'; \
    object-src 'none'; form-action 'self'";

/// Whether the web app was built into (or, in a debug build, is beside) this binary.
pub fn available() -> bool {
    Assets::get("index.html").is_some()
}

/// Paths that belong to the API, never to the app.
fn is_api_path(path: &str) -> bool {
    [
        "/api/",
        "/graphql",
        "/.well-known/",
        "/healthz",
        "/readyz",
        "/metrics",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// Answers a request that no route took: an asset, the app, or `None`
/// (the caller answers 404).
pub fn serve(method: &Method, uri: &Uri) -> Option<Response> {
    if (method != Method::GET && method != Method::HEAD) || is_api_path(uri.path()) {
        return None;
    }
    let path = uri.path().trim_start_matches('/');
    if let Some(file) = (!path.is_empty()).then(|| Assets::get(path)).flatten() {
        let mime = file.metadata.mimetype().to_owned();
        // Vite names built assets by their content hash: cache for ever.
        let cache = if path.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let mut r = (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, cache.to_owned()),
            ],
            Body::from(file.data.into_owned()),
        )
            .into_response();
        secure(&mut r);
        return Some(r);
    }
    // An asset that is not there is a 404, not the app.
    if path.starts_with("assets/")
        || path
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.'))
    {
        return None;
    }
    let mut r = match Assets::get("index.html") {
        Some(index) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
            Body::from(index.data.into_owned()),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
            "The web app is not part of this build. Build it with `bash scripts/build-web.sh` (needs Node 20), then rebuild pinacle.\n",
        )
            .into_response(),
    };
    secure(&mut r);
    Some(r)
}

fn secure(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_never_fall_back_to_the_app() {
        let get = |p: &str| serve(&Method::GET, &p.parse().unwrap());
        assert!(get("/api/v1/nope").is_none());
        assert!(get("/graphql").is_none());
        assert!(get("/assets/missing-abc123.js").is_none());
        assert!(serve(&Method::POST, &"/pods/x".parse().unwrap()).is_none());
        // app routes get the page (or, unbuilt, a 503 that says how to build it)
        let page = get("/pods/demo").unwrap();
        assert!(
            page.status() == StatusCode::OK || page.status() == StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
    }
}
