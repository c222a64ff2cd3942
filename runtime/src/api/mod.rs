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
use std::convert::Infallible;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use self::error::ApiError;
use crate::auth::guard;
use crate::state::SharedState;

/// Route label for requests that matched no route, so unknown paths cannot explode cardinality.
const UNMATCHED_ROUTE: &str = "unmatched";
/// Route label for files of the bundled UI.
const UI_ROUTE: &str = "ui";

/// Build the routed API over the shared state, with the middleware that needs the matched route
/// (per-route metrics, the key guard, the timeout). The route-independent layers are added once
/// around it by [`app`], not here: every `Router::layer` wraps each route in one more boxed
/// service that is cloned, with everything below it, on every request.
pub fn router(state: SharedState) -> Router {
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
        .layer(middleware::from_fn_with_state(state.clone(), per_route))
        .with_state(state)
}

/// The API service the listener serves: [`router`] inside the layers every request passes
/// whatever its route (outermost first): request id, tracing, request-id echo, CORS (only with
/// origins configured), panics as JSON 500s, the body limit. The stack is concrete types, so
/// the clone hyper makes for every request copies a few reference counts instead of re-boxing
/// each layer.
pub fn app(
    state: SharedState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    let max_body = state.config.max_body_bytes;
    let cors = (!state.config.cors_origins.is_empty()).then(|| cors(&state.config.cors_origins));
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // 5xx answers are logged where they arise (ApiError::internal), so the trace layer's
        // failure line stays at debug: a 503 while models load is not an error.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        .layer(PropagateRequestIdLayer::x_request_id())
        .option_layer(cors)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(max_body))
        .service(router(state))
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

/// The middleware that needs the matched route, as one layer (each `Router::layer` costs a
/// boxed clone per request): the key guard ([`guard::admit`]), the request timeout (503
/// `timeout`), the audit event, and request count and latency by route, method and status.
async fn per_route(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let start = Instant::now();
    let response =
        match guard::admit(&state, matched.as_ref().map(MatchedPath::as_str), &mut req).await {
            Ok(admitted) => {
                let response = run_with_timeout(&state, next, req).await;
                admitted.finish(&state, &response);
                response
            }
            Err(refused) => refused,
        };
    let route = match &matched {
        Some(route) => route.as_str(),
        None if response.extensions().get::<ui::UiResponse>().is_some() => UI_ROUTE,
        None => UNMATCHED_ROUTE,
    };
    let elapsed = start.elapsed().as_secs_f64();
    let m = &state.metrics;
    m.http_duration.with_label_values(&[route]).observe(elapsed);
    m.http_requests
        .with_label_values(&[route, method, response.status().as_str()])
        .inc();
    response
}

/// Run the handler, answering 503 `timeout` when it takes longer than the configured limit.
async fn run_with_timeout(state: &SharedState, next: Next, req: Request) -> Response {
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
