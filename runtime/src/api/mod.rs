//! The HTTP API: routes, health and metrics endpoints, and the middleware that records
//! per-route metrics, enforces the body limit and timeout, and turns panics into JSON 500s.

pub mod blocking;
pub mod bodies;
pub mod enrol;
pub mod error;
pub mod extract;
pub mod faces;
pub mod health;
pub mod image_input;
pub mod layers;
pub mod openapi;
pub mod score;
pub mod sessions;
pub mod subjects;
pub mod ui;
pub mod whoami;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use tower::{Layer as _, Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::error::ApiError;
use self::layers::{Envelope, RouteTable, RouteTableError, Routed};
use crate::auth::guard;
use crate::state::SharedState;

/// Every API route: its pattern and handlers. [`router`] routes them and [`app`]'s route table
/// matches the same patterns, so the two cannot disagree.
fn routes() -> Vec<(&'static str, MethodRouter<SharedState>)> {
    vec![
        ("/healthz", get(health::healthz)),
        ("/readyz", get(health::readyz)),
        ("/metrics", get(health::metrics)),
        ("/openapi.json", get(openapi::openapi_json)),
        ("/v1/auth/whoami", get(whoami::whoami)),
        ("/v1/score", post(score::score)),
        ("/v1/subjects", post(subjects::create).get(subjects::list)),
        (
            "/v1/subjects/{id}",
            get(subjects::get)
                .patch(subjects::rename)
                .delete(subjects::delete),
        ),
        ("/v1/subjects/{id}/faces", post(enrol::enrol)),
        (
            "/v1/subjects/{id}/faces/{face_id}",
            delete(enrol::delete_face),
        ),
        (
            "/v1/subjects/{id}/lockout",
            delete(subjects::release_lockout),
        ),
        ("/v1/verify", post(faces::verify)),
        ("/v1/identify", post(faces::identify)),
        ("/v1/liveness", post(faces::liveness)),
        ("/v1/liveness/sessions", post(sessions::open)),
        (
            "/v1/liveness/sessions/{id}",
            get(sessions::get).delete(sessions::close),
        ),
        ("/v1/liveness/sessions/{id}/frames", post(sessions::frames)),
    ]
}

/// The route patterns of [`router`].
pub fn route_patterns() -> Vec<&'static str> {
    routes().into_iter().map(|(pattern, _)| pattern).collect()
}

/// Build the routed API over the shared state, without the per-request layers (those wrap it
/// once in [`app`]: every `Router::layer` wraps each route in one more boxed service that is
/// cloned, with everything below it, on every request).
pub fn router(state: SharedState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (pattern, handlers)| {
            router.route(pattern, handlers)
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The API service the listener serves: [`router`] inside the layers every request passes
/// (outermost first): [`Envelope`] (request id, tracing, request-id echo), CORS (only with
/// origins configured), [`Routed`] (the key guard, the timeout, panics as JSON 500s, the audit
/// event, route metrics), the body limit. The stack is concrete types, so the clone hyper makes
/// for every request copies a few reference counts instead of re-boxing each layer.
pub fn app(
    state: SharedState,
) -> Result<
    impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static,
    RouteTableError,
> {
    let max_body = state.config.max_body_bytes;
    let cors = (!state.config.cors_origins.is_empty()).then(|| cors(&state.config.cors_origins));
    let table = RouteTable::new(&route_patterns())?;
    let routed = Routed::new(
        DefaultBodyLimit::max(max_body).layer(router(state.clone())),
        state,
        table,
    );
    Ok(ServiceBuilder::new()
        .layer_fn(Envelope::new)
        .option_layer(cors)
        .service(routed))
}

/// The health-and-metrics listener's router (`FACEKEY_METRICS_LISTEN`): probes and Prometheus
/// only, no keys, no API.
pub fn operations_router(state: SharedState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::operations_metrics))
        .with_state(state)
}

/// CORS for the configured origins; none configured: no CORS headers, so browsers allow only
/// the bundled UI (same origin).
fn cors(origins: &[String]) -> CorsLayer {
    // `*` (allowed only with FACEKEY_ALLOW_INSECURE) is any origin: tower-http's list refuses a
    // wildcard by panicking, so it must never reach the list.
    let any = origins.iter().any(|o| o.trim() == "*");
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins)
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(guard::API_KEY_HEADER),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::LOCATION,
            // The server's clock, by which a page reads a liveness session's expiry.
            header::DATE,
            HeaderName::from_static("x-request-id"),
        ])
}

/// Unknown routes: a bundled UI file if one matches, else a JSON 404.
async fn not_found(State(state): State<SharedState>, req: Request) -> Response {
    if state.config.ui_enabled
        && let Some(response) = ui::serve(req.method(), req.uri().path())
    {
        return response;
    }
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed(req: Request) -> ApiError {
    method_not_allowed_error(&req)
}

/// 405 `method_not_allowed` for a request whose path has routes, none for its method (the
/// router's fallback, and the key guard's answer to a key that may call none of them).
pub(crate) fn method_not_allowed_error(req: &Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `FACEKEY_CORS_ORIGINS=*` (with `FACEKEY_ALLOW_INSECURE`) made tower-http panic
    /// at start-up; it means any origin.
    #[test]
    fn a_wildcard_origin_is_any_origin_not_a_panic() {
        let _ = cors(&["*".into()]);
        let _ = cors(&["https://a.example".into(), " * ".into()]);
        let _ = cors(&["https://a.example".into()]);
        let _ = cors(&[]);
    }
}
