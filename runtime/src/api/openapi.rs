//! The OpenAPI 3.1 document of the HTTP API, generated from the handler and type annotations
//! so it cannot drift from the code, served at `GET /openapi.json`.

use axum::Json;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{enrol, error, faces, health, score, sessions, subjects, whoami};
use crate::auth::policy::{Access, ROUTES};

/// The name of the security scheme in the document.
const SCHEME: &str = "api_key";

/// Declares the API-key scheme and, from the route → scope table, each operation's scope.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer <key>` (or `X-API-Key: <key>`). \
                         Scopes: verify, enrol, admin (includes every other), metrics.",
                    ))
                    .build(),
            ),
        );
        for (method, route, access) in ROUTES {
            let scopes: Vec<&str> = match access {
                Access::Scope(scope) => vec![scope.as_str()],
                Access::AnyKey => Vec::new(),
                Access::Open | Access::Metrics => continue,
            };
            let Some(item) = doc.paths.paths.get_mut(*route) else {
                continue;
            };
            let op = match *method {
                axum::http::Method::GET => item.get.as_mut(),
                axum::http::Method::POST => item.post.as_mut(),
                axum::http::Method::PATCH => item.patch.as_mut(),
                axum::http::Method::DELETE => item.delete.as_mut(),
                axum::http::Method::PUT => item.put.as_mut(),
                _ => None,
            };
            if let Some(op) = op {
                op.security = Some(vec![SecurityRequirement::new(SCHEME, scopes)]);
            }
        }
        let _ = HttpMethod::Get;
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "FaceKey runtime API",
        description = "Face verification, liveness and score fusion. Every error is \
`{\"error\":{\"code\",\"message\"}}` with a 4xx/5xx status. Every /v1 route needs an API \
key with the scope its `security` names: 401 `unauthorized` without a valid key, 403 \
`forbidden` without the scope, 429 `rate_limited` (with `Retry-After`) over the key's rate. \
Without `admin`, verify, identify and liveness answer the decision only (no scores).",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        score::score,
        subjects::create,
        subjects::list,
        subjects::get,
        subjects::rename,
        subjects::delete,
        enrol::enrol,
        enrol::delete_face,
        faces::verify,
        faces::identify,
        faces::liveness,
        sessions::open,
        sessions::frames,
        sessions::get,
        health::healthz,
        health::readyz,
        health::metrics,
        whoami::whoami,
    ),
    modifiers(&Security),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    tags(
        (name = "fusion", description = "The 3-4-3-1 score-fusion MLP"),
        (name = "subjects", description = "Enrolment of subjects and their face templates"),
        (name = "verification", description = "1:1 verification and passive liveness"),
        (name = "liveness", description = "Challenge-response liveness sessions: a random \
sequence of actions checked frame by frame; a passed session verifies once at /v1/verify"),
        (name = "operations", description = "Health, readiness and Prometheus metrics"),
        (name = "access", description = "API keys: which key is calling and what it may do"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
