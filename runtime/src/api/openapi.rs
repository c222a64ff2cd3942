//! The OpenAPI 3.1 document of the HTTP API, generated from the handler and type annotations
//! so it cannot drift from the code, served at `GET /openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use super::{enrol, error, faces, health, score, subjects};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "FaceKey runtime API",
        description = "Face verification, liveness and score fusion. Every error is \
`{\"error\":{\"code\",\"message\"}}` with a 4xx/5xx status.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        score::score,
        subjects::create,
        subjects::list,
        subjects::get,
        subjects::delete,
        enrol::enrol,
        faces::verify,
        faces::identify,
        faces::liveness,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    tags(
        (name = "fusion", description = "The 3-4-3-1 score-fusion MLP"),
        (name = "subjects", description = "Enrolment of subjects and their face templates"),
        (name = "verification", description = "1:1 verification and passive liveness"),
        (name = "operations", description = "Health, readiness and Prometheus metrics"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
