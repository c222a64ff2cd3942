//! Operational endpoints: liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use crate::auth::Scope;
use crate::auth::guard::authorize;
use crate::auth::policy::Access;
use crate::config::{MetricsAuth, Switch};
use crate::state::SharedState;
use crate::store::QuotaOf;

/// `GET /healthz`: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "`{\"status\":\"ok\"}` while the process serves")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once every model is loaded, 503 while loading or shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness",
    responses(
        (status = 200, description = "`{\"status\":\"ready\",\"store\":{\"available\",\"error\",\"backend\"}}`: every model loaded; `store.available` is false while the template store is unreachable, or this replica's index cannot resynchronise from it (reads still served); `store.backend` is `embedded` or `postgresql`, `store.error` the operation that failed (the log has the error)"),
        (status = 503, description = "`{\"status\":\"not_ready\",\"reason\",\"store\"}`: loading or shutting down"),
    ))]
pub async fn readyz(State(state): State<SharedState>) -> Response {
    let health = state.enrolments.health();
    // An unavailable store does not make the replica unready: it still verifies and identifies
    // from its index, and taking every replica out of the Service would stop that too.
    let store = json!({
        "available": health.available,
        // What failed, not the error's text: that names hosts and paths (the log has it).
        "error": health.error.as_deref().map(|e| e.split(':').next().unwrap_or(e).trim()),
        // The kind only: `/readyz` is open, and the database's host, user and name (or the
        // data path) are for the logs.
        "backend": state.enrolments.store_kind(),
    });
    match state.not_ready_reason() {
        None => Json(json!({ "status": "ready", "store": store })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": reason, "store": store })),
        )
            .into_response(),
    }
}

/// Set the per-key quota gauges: the limits, and what each key of the keys file held to a quota
/// (`enrol` without `admin`) holds; keys removed from the file lose their series.
fn key_quotas(state: &SharedState) {
    let m = &state.metrics;
    m.key_quota_held.reset();
    for of in QuotaOf::ALL {
        let limit = state.config.quota(of).unwrap_or(0);
        m.key_quota_limit
            .with_label_values(&[of.label()])
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    for entry in state.api_keys.ring().entries() {
        let caller = entry.caller();
        for of in QuotaOf::ALL {
            if state.config.key_quota(of, &caller).is_some() {
                let held = state.enrolments.held(of, entry.id());
                m.key_quota_held
                    .with_label_values(&[entry.id(), of.label()])
                    .set(i64::try_from(held).unwrap_or(i64::MAX));
            }
        }
    }
}

/// `GET /metrics` on the API port: everything to a `metrics` (or `admin`) key, and, when the
/// route is open (`FACEKEY_METRICS_AUTH=open`), all but the per-attempt scores and per-key
/// series ([`crate::metrics::PRIVATE_FAMILIES`]) to anyone else.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses((status = 200, description = "Text exposition format 0.0.4; when open to anyone, without the per-attempt score histograms and per-key quota series (a `metrics` key, or the operations listener, has every family)", content_type = "text/plain")))]
pub async fn metrics(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Keyed: the guard admitted only a `metrics` key. Open: whoever presents one (the guard's
    // own decision for the `metrics` scope) gets all.
    let keyed = state.config.metrics_auth == MetricsAuth::Key
        || authorize(&state, Access::Scope(Scope::Metrics), &headers).is_ok_and(|c| c.is_some());
    scrape(&state, !keyed)
}

/// `GET /metrics` on the operations listener (`FACEKEY_METRICS_LISTEN`): every family, or the
/// public ones with `FACEKEY_METRICS_LISTEN_PRIVATE=off`.
pub async fn operations_metrics(State(state): State<SharedState>) -> Result<Response, ApiError> {
    scrape(&state, state.config.metrics_listen_private == Switch::Off)
}

fn scrape(state: &SharedState, public: bool) -> Result<Response, ApiError> {
    let text = state.metrics.scrape(public, |m| {
        let stats = state.enrolments.index().stats();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        m.store_up
            .set(i64::from(state.enrolments.health().available));
        m.store_unreadable_templates
            .set(gauge(state.enrolments.unreadable_templates()));
        m.enrolled_subjects.set(gauge(stats.subjects));
        m.enrolled_templates.set(gauge(stats.held_templates));
        m.enrolled_subjects_limit
            .set(gauge(state.config.max_subjects));
        m.enrolled_templates_limit
            .set(gauge(state.config.max_templates));
        m.subjects_outdated.set(gauge(stats.outdated_subjects));
        key_quotas(state);
        let admission = state.admission.stats();
        m.inferences_in_flight.set(gauge(admission.in_flight));
        m.inferences_queued.set(gauge(admission.queued));
        m.inference_service_seconds
            .set(admission.service_time.map_or(0.0, |d| d.as_secs_f64()));
        m.body_memory_bytes
            .set(i64::try_from(state.body_budget.held()).unwrap_or(i64::MAX));
        m.admission_offered_load
            .set(admission.offered_load.unwrap_or(0.0));
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
