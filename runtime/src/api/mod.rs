//! The HTTP API: routes, health and metrics endpoints, and the middleware that records
//! per-route metrics, enforces the body limit and timeout, and turns panics into JSON 500s.

pub mod blocking;
pub mod enrol;
pub mod error;
pub mod extract;
pub mod faces;
pub mod health;
pub mod image_input;
pub mod openapi;
pub mod score;
pub mod sessions;
pub mod subjects;
pub mod ui;
pub mod whoami;

use std::any::Any;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use self::error::ApiError;
use crate::auth::guard::{self, guard};
use crate::state::SharedState;

/// Route label for requests that matched no route, so unknown paths cannot explode cardinality.
const UNMATCHED_ROUTE: &str = "unmatched";
/// Route label for files of the bundled UI.
const UI_ROUTE: &str = "ui";

/// Build the full application router over the shared state.
pub fn router(state: SharedState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/auth/whoami", get(whoami::whoami))
        .route("/v1/score", post(score::score))
        .route("/v1/subjects", post(subjects::create).get(subjects::list))
        .route(
            "/v1/subjects/{id}",
            get(subjects::get)
                .patch(subjects::rename)
                .delete(subjects::delete),
        )
        .route("/v1/subjects/{id}/faces", post(enrol::enrol))
        .route(
            "/v1/subjects/{id}/faces/{face_id}",
            delete(enrol::delete_face),
        )
        .route("/v1/verify", post(faces::verify))
        .route("/v1/identify", post(faces::identify))
        .route("/v1/liveness", post(faces::liveness))
        .route("/v1/liveness/sessions", post(sessions::open))
        .route("/v1/liveness/sessions/{id}", get(sessions::get))
        .route("/v1/liveness/sessions/{id}/frames", post(sessions::frames))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        // 5xx answers are logged where they arise (ApiError::internal), so the trace layer's
        // failure line stays at debug: a 503 while models load is not an error.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(cors(&state.config.cors_origins))
        .with_state(state)
}

/// The health-and-metrics listener's router (`FACEKEY_METRICS_LISTEN`): probes and Prometheus
/// only, no keys, no API.
pub fn operations_router(state: SharedState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state)
}

/// CORS for the configured origins; none configured: no CORS headers, so browsers allow only
/// the bundled UI (same origin).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
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
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Answer 503 `timeout` when a request runs longer than the configured limit.
async fn timeout(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let limit = state.config.request_timeout();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "request took longer than {} s (FACEKEY_REQUEST_TIMEOUT_SECS)",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Record request count and latency by matched route, method and status.
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let route = match matched {
        Some(route) => route,
        None if response.extensions().get::<ui::UiResponse>().is_some() => UI_ROUTE.to_owned(),
        None => UNMATCHED_ROUTE.to_owned(),
    };
    let elapsed = start.elapsed().as_secs_f64();
    let m = &state.metrics;
    m.http_duration
        .with_label_values(&[&route])
        .observe(elapsed);
    m.http_requests
        .with_label_values(&[&route, method, response.status().as_str()])
        .inc();
    response
}

/// The method as a metric label: one of the standard methods, else `other`, so made-up methods
/// cannot create new series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", |m| m.as_str())
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {detail}")).into_response()
}
