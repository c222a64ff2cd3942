//! The bundled React UI (`ui/dist`, embedded at build time) served at `/`, with long-lived
//! caching for hashed assets and a restrictive content security policy.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// The UI build output. Release builds embed it; debug builds read it from disk.
#[derive(RustEmbed)]
#[folder = "../ui/dist"]
#[allow_missing = true]
struct Assets;

/// Content security policy for UI pages: only same-origin code and API calls; camera frames
/// and uploaded images are `blob:`/`data:` URLs.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; \
style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; object-src 'none'; \
base-uri 'none'; frame-ancestors 'none'";

/// Shown at `/` when the binary was built before the UI.
const NOT_BUILT: &str = "<!doctype html><title>FaceKey</title><h1>FaceKey runtime</h1>\
<p>The UI is not part of this build. Build it with <code>scripts/build-ui.sh</code> and rebuild the \
runtime, or use the API: <a href=\"/openapi.json\">/openapi.json</a>.</p>";

/// Paths the single-page app handles itself; they all serve `index.html`.
const APP_PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/docs",
    "/verify",
    "/identify",
    "/enrol",
    "/fusion",
    "/metrics-view",
];

/// Marks a response as a UI file, so metrics count it under the `ui` route, not `unmatched`.
#[derive(Debug, Clone, Copy)]
pub struct UiResponse;

/// True when the build carries a UI.
pub fn is_bundled() -> bool {
    Assets::get("index.html").is_some()
}

fn with_headers(mut response: Response, content_type: &str, cache: &'static str) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The camera for this origin's own pages only; nothing else the UI never uses.
    headers.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(self), microphone=(), geolocation=()"),
    );
    response.extensions_mut().insert(UiResponse);
    response
}

/// Serve a UI file for `GET`/`HEAD` `path`, or `None` when there is no such file.
pub fn serve(method: &Method, path: &str) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    if APP_PATHS.contains(&path) {
        return Some(match Assets::get("index.html") {
            Some(file) => with_headers(
                Body::from(file.data.into_owned()).into_response(),
                "text/html; charset=utf-8",
                "no-cache",
            ),
            None => with_headers(
                (StatusCode::OK, NOT_BUILT).into_response(),
                "text/html; charset=utf-8",
                "no-cache",
            ),
        });
    }
    let name = path.trim_start_matches('/');
    if name.is_empty() || name.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return None;
    }
    let file = Assets::get(name)?;
    let mime = file.metadata.mimetype().to_string();
    // Vite puts content-hashed files under assets/: they never change under the same name.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Some(with_headers(
        Body::from(file.data.into_owned()).into_response(),
        &mime,
        cache,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every view the UI routes to (`ROUTES` in ui/src/lib/route.ts) has its URL served as the
    /// app, so a view's link can be shared and reloaded.
    #[test]
    fn every_ui_route_is_served_as_the_app() {
        let source = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/route.ts"),
        )
        .unwrap();
        let list = source
            .split("export const ROUTES = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .expect("ROUTES in route.ts");
        let routes: Vec<String> = list
            .split(',')
            .map(|r| r.trim().trim_matches('"').to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        assert!(routes.len() >= 5, "{routes:?}");
        for route in routes {
            let path = format!("/{route}");
            assert!(APP_PATHS.contains(&path.as_str()), "{path} is not served");
            let served = serve(&Method::GET, &path).expect("served");
            assert_eq!(served.status(), StatusCode::OK, "{path}");
        }
    }
}
