//! The OpenAPI 3.1 document of the HTTP API, generated from the handler and type annotations
//! so it cannot drift from the code, served at `GET /openapi.json`.

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{
    AllOfBuilder, Array, ArrayItems, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Components, ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, Number, OpenApi};

use super::score::MAX_FEATURE_MAGNITUDE;
use super::sessions::MAX_TIMESTAMP_MS;
use super::{enrol, error, faces, health, score, sessions, subjects, whoami};
use crate::auth::policy::{Access, ROUTES};
use crate::fusion::INPUTS;
use crate::store::MAX_NAME_CHARS;

/// The name of the security scheme in the document: the key as a bearer token.
const SCHEME: &str = "api_key";

/// The same key in the `X-API-Key` header, the alternative the server accepts.
const HEADER_SCHEME: &str = "api_key_header";

/// Declares the API-key scheme and, from the route → scope table, each operation's scope and
/// the answers the serving layer can give on it beside the handler's own (key, scope, rate,
/// body, overload, timeout, panic), so a generated client knows every status it may receive.
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
        components.add_security_scheme(
            HEADER_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The same API key as `api_key`, in the `X-API-Key` header instead.",
            ))),
        );
        for (method, route, access) in ROUTES {
            let Some(op) = operation_mut(doc, method, route) else {
                continue;
            };
            // Either scheme carries the key (alternatives), with the operation's scope.
            let scopes: Option<Vec<&str>> = match access {
                Access::Scope(scope) => Some(vec![scope.as_str()]),
                Access::AnyKey => Some(Vec::new()),
                Access::Open | Access::Metrics => None,
            };
            if let Some(scopes) = scopes {
                op.security = Some(vec![
                    SecurityRequirement::new(SCHEME, scopes.clone()),
                    SecurityRequirement::new(HEADER_SCHEME, scopes),
                ]);
            }
            for (status, description) in common_responses(access, op.request_body.is_some()) {
                add_response(op, status, description);
            }
        }
        if let Some(components) = doc.components.as_mut() {
            for body in ["CreateSubject", "RenameSubject"] {
                subject_name_rules(components, body);
            }
            bound_feature_vectors(components);
            bound_timestamps(components);
            exactly_one_of(components, "ScoreRequest", ["features", "batch"]);
        }
    }
}

/// A subject name as `store::validate_name` accepts it: a character other than white space, and
/// no control characters.
const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

/// States the name rules of `store::validate_name` on the `name` property of the object schema
/// `body`, from the store's own bound (the derive takes only literals): 1 to [`MAX_NAME_CHARS`]
/// characters matching [`NAME_PATTERN`].
fn subject_name_rules(components: &mut Components, body: &str) {
    if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(body)
        && let Some(RefOr::T(Schema::Object(name))) = object.properties.get_mut("name")
    {
        name.min_length = Some(1);
        name.max_length = Some(MAX_NAME_CHARS);
        name.pattern = Some(NAME_PATTERN.to_owned());
    }
}

/// States `/v1/score`'s rules on feature vectors that the derive cannot: `features` and each row
/// of `batch` hold exactly [`INPUTS`] numbers, each within ±[`MAX_FEATURE_MAGNITUDE`]
/// (`validate_features`).
fn bound_feature_vectors(components: &mut Components) {
    let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut("ScoreRequest") else {
        return;
    };
    let vector = |v: &mut Array| {
        v.min_items = Some(INPUTS);
        v.max_items = Some(INPUTS);
        if let ArrayItems::RefOrSchema(item) = &mut v.items
            && let RefOr::T(Schema::Object(number)) = item.as_mut()
        {
            number.minimum = Some(Number::Float(-MAX_FEATURE_MAGNITUDE));
            number.maximum = Some(Number::Float(MAX_FEATURE_MAGNITUDE));
        }
    };
    if let Some(RefOr::T(Schema::Array(features))) = object.properties.get_mut("features") {
        vector(features);
    }
    if let Some(RefOr::T(Schema::Array(rows))) = object.properties.get_mut("batch")
        && let ArrayItems::RefOrSchema(row) = &mut rows.items
        && let RefOr::T(Schema::Array(row)) = row.as_mut()
    {
        vector(row);
    }
}

/// States the frames routes' bound on client timestamps ([`MAX_TIMESTAMP_MS`], what a JSON
/// reader holds exactly) on the JSON frame and on each multipart `timestamp_ms` part.
fn bound_timestamps(components: &mut Components) {
    let max = usize::try_from(MAX_TIMESTAMP_MS).ok().map(Number::UInt);
    if let Some(RefOr::T(Schema::Object(frame))) = components.schemas.get_mut("FrameInput")
        && let Some(RefOr::T(Schema::Object(ms))) = frame.properties.get_mut("timestamp_ms")
    {
        ms.maximum = max.clone();
    }
    if let Some(RefOr::T(Schema::Object(form))) = components.schemas.get_mut("FramesForm")
        && let Some(RefOr::T(Schema::Array(list))) = form.properties.get_mut("timestamp_ms")
        && let ArrayItems::RefOrSchema(item) = &mut list.items
        && let RefOr::T(Schema::Object(ms)) = item.as_mut()
    {
        ms.maximum = max;
    }
}

/// Makes the object schema `name` accept exactly one of `fields` as an array (a handler's rule
/// the derive cannot state): `allOf` the object and a `oneOf` of each field required.
fn exactly_one_of(components: &mut Components, name: &str, fields: [&str; 2]) {
    let Some(object) = components.schemas.remove(name) else {
        return;
    };
    let present = |field: &str| {
        ObjectBuilder::new()
            .property(field, ObjectBuilder::new().schema_type(Type::Array))
            .required(field)
            .build()
    };
    let choice = OneOfBuilder::new()
        .item(present(fields[0]))
        .item(present(fields[1]))
        .build();
    let description = match &object {
        RefOr::T(Schema::Object(o)) => o.description.clone(),
        _ => None,
    };
    let combined = AllOfBuilder::new()
        .item(object)
        .item(Schema::OneOf(choice))
        .description(description)
        .build();
    components
        .schemas
        .insert(name.to_owned(), RefOr::T(Schema::AllOf(combined)));
}

/// The documented operation for `method` on `route`, if any.
fn operation_mut<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    method: &axum::http::Method,
    route: &str,
) -> Option<&'a mut Operation> {
    let item = doc.paths.paths.get_mut(route)?;
    match *method {
        axum::http::Method::GET => item.get.as_mut(),
        axum::http::Method::POST => item.post.as_mut(),
        axum::http::Method::PATCH => item.patch.as_mut(),
        axum::http::Method::DELETE => item.delete.as_mut(),
        axum::http::Method::PUT => item.put.as_mut(),
        _ => None,
    }
}

/// The answers the serving layer gives on a route with this access, beside its handler's:
/// `(status, description)`, each with the error body.
fn common_responses(access: &Access, has_body: bool) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match access {
        Access::Scope(_) | Access::AnyKey => {
            out.push(("401", "`unauthorized`: no API key, or not a valid one"));
            out.push((
                "429",
                "`rate_limited`: over the key's request rate (`Retry-After`: seconds)",
            ));
        }
        Access::Metrics => out.push((
            "401",
            "`unauthorized`: with `FACEKEY_METRICS_AUTH=key`, no valid key holding `metrics`",
        )),
        Access::Open => {}
    }
    if matches!(access, Access::Scope(_)) {
        out.push((
            "403",
            "`forbidden`: the key lacks the scope this operation needs",
        ));
    }
    if has_body {
        out.push(("400", "`invalid_json`: the body is not well-formed JSON"));
        out.push((
            "408",
            "`body_too_slow`: the body arrived slower than `FACEKEY_MIN_BODY_BYTES_PER_SEC` \
             after `FACEKEY_BODY_RATE_GRACE_SECS`",
        ));
        out.push((
            "413",
            "`payload_too_large`: the body (or its declared `Content-Length`) exceeds the \
             request size limit",
        ));
        if matches!(access, Access::Scope(_) | Access::AnyKey) {
            out.push((
                "429",
                "`too_many_uploads`: the key's bodies being received already hold its share \
                 of `FACEKEY_MAX_BODY_MEMORY_BYTES`; on operations that run the models, also \
                 `too_many_inferences`: no inference place was given to the key, which already \
                 holds its share while other keys ask for places too (`Retry-After`)",
            ));
        }
        out.push((
            "415",
            "`unsupported_media_type`: neither `application/json` nor a form this operation reads",
        ));
        out.push((
            "422",
            "`invalid_request`: a field is missing, of the wrong type or out of range",
        ));
        out.push((
            "503",
            "`overloaded`: the request bodies being received already hold \
             `FACEKEY_MAX_BODY_MEMORY_BYTES`, or no inference place is free (`Retry-After`)",
        ));
    }
    out.push((
        "503",
        "`timeout`: no answer within `FACEKEY_REQUEST_TIMEOUT_SECS`",
    ));
    out.push((
        "500",
        "`internal`: an unexpected error (a handler panic included)",
    ));
    out
}

/// Documents `status` on `op` with the error body; where the handler already documents it, its
/// description gains this one.
fn add_response(op: &mut Operation, status: &str, description: &str) {
    use std::collections::btree_map::Entry;
    match op.responses.responses.entry(status.to_owned()) {
        Entry::Vacant(slot) => {
            slot.insert(RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            ));
        }
        Entry::Occupied(mut slot) => {
            if let RefOr::T(response) = slot.get_mut()
                && !response.description.contains(description)
            {
                response.description = format!("{}; or {description}", response.description);
            }
        }
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
        subjects::release_lockout,
        enrol::enrol,
        enrol::delete_face,
        faces::verify,
        faces::identify,
        faces::liveness,
        sessions::open,
        sessions::frames,
        sessions::get,
        sessions::close,
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
sequence of actions checked frame by frame; a passed session serves one decision, a verification \
at /v1/verify or (opened without a subject) an identification at /v1/identify"),
        (name = "operations", description = "Health, readiness and Prometheus metrics"),
        (name = "access", description = "API keys: which key is calling and what it may do"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`: the document serialised once, at the first request. The route needs no
/// key, so building the whole document on every request would be free work for any caller.
pub async fn openapi_json() -> impl axum::response::IntoResponse {
    static DOCUMENT: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        // Serialising the generated document cannot fail; an empty object would show it did.
        axum::body::Bytes::from(
            serde_json::to_vec(&ApiDoc::openapi()).unwrap_or_else(|_| b"{}".to_vec()),
        )
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn operation_ids_are_unique_and_every_routed_operation_is_documented() {
        let doc = ApiDoc::openapi();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.patch, &item.delete, &item.put]
                .into_iter()
                .flatten()
            {
                let id = op.operation_id.clone().unwrap();
                assert!(ids.insert(id.clone()), "operationId {id} repeats ({path})");
            }
        }
        let mut doc = doc;
        for (method, route, _) in ROUTES {
            if *route != "/openapi.json" {
                assert!(
                    operation_mut(&mut doc, method, route).is_some(),
                    "{method} {route} undocumented"
                );
            }
        }
    }

    #[test]
    fn post_processed_rules_are_in_the_document() {
        // The post-processing finds the shapes it rewrites; if utoipa changed them, the rules
        // would silently vanish from the document.
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let score = &doc["components"]["schemas"]["ScoreRequest"];
        let object = &score["allOf"][0]["properties"];
        assert_eq!(object["features"]["minItems"], 3);
        assert_eq!(object["features"]["items"]["maximum"], 1e6);
        assert_eq!(object["batch"]["items"]["maxItems"], 3);
        assert_eq!(object["batch"]["items"]["items"]["minimum"], -1e6);
        assert_eq!(score["allOf"][1]["oneOf"][1]["required"][0], "batch");
        for body in ["CreateSubject", "RenameSubject"] {
            let name = &doc["components"]["schemas"][body]["properties"]["name"];
            assert_eq!(name["maxLength"], MAX_NAME_CHARS, "{body}");
            assert_eq!(name["minLength"], 1, "{body}");
            assert_eq!(name["pattern"], NAME_PATTERN, "{body}");
        }
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["FrameInput"]["properties"]["timestamp_ms"]["maximum"],
            MAX_TIMESTAMP_MS
        );
        assert_eq!(
            schemas["FramesForm"]["properties"]["timestamp_ms"]["items"]["maximum"],
            MAX_TIMESTAMP_MS
        );
        let verify = &doc["paths"]["/v1/verify"]["post"];
        assert_eq!(verify["security"][1]["api_key_header"][0], "verify");
        // Identify takes a session beside or instead of the image, as verify does, and its
        // answer has a session form.
        for body in ["IdentifyJson", "IdentifyForm"] {
            let schema = &schemas[body];
            assert!(schema["properties"]["session"].is_object(), "{body}");
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            assert!(!required.contains(&"image".into()), "{body}: {required:?}");
        }
        assert_eq!(
            schemas["IdentifyAnswer"]["oneOf"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(
            doc["components"]["schemas"]["VerifyDecision"]["additionalProperties"],
            false
        );
    }

    #[test]
    fn keyed_operations_document_the_serving_layer_answers() {
        let doc = ApiDoc::openapi();
        let verify = doc.paths.paths["/v1/verify"].post.as_ref().unwrap();
        for status in [
            "400", "401", "403", "408", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(verify.responses.responses.contains_key(status), "{status}");
        }
        let busy = &verify.responses.responses["429"];
        let RefOr::T(busy) = busy else {
            panic!("429 is a reference")
        };
        assert!(
            busy.description.contains("too_many_uploads"),
            "{}",
            busy.description
        );
        assert!(verify.request_body.is_some(), "verify has no request body");
        let healthz = doc.paths.paths["/healthz"].get.as_ref().unwrap();
        assert!(!healthz.responses.responses.contains_key("401"));
        assert!(healthz.security.is_none());
    }
}
