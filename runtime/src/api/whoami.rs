//! `GET /v1/auth/whoami`: which key the caller presented and what it may do, for the UI.

use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;

use super::error::ApiError;
use crate::auth::{Caller, Scope};
use crate::state::SharedState;
use crate::store::QuotaOf;

/// Answer of `GET /v1/auth/whoami`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The key's id.
    pub key_id: String,
    /// Its scopes as granted (`admin` includes every other).
    pub scopes: Vec<Scope>,
    /// Its request rate limit, requests per second (`null`: unlimited).
    pub rps: Option<f64>,
    /// What it holds against its store quotas, so a client sees a quota coming before its
    /// writes answer 507.
    pub quotas: KeyQuotas,
}

/// A key's use of its per-key store quotas.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyQuotas {
    /// Subjects it created (`FACEKEY_MAX_SUBJECTS_PER_KEY`).
    pub subjects: QuotaUse,
    /// Faces (templates) it enrolled (`FACEKEY_MAX_TEMPLATES_PER_KEY`).
    pub templates: QuotaUse,
}

/// How much of one quota a key holds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaUse {
    /// How many it holds (in this replica's index).
    pub held: usize,
    /// Its limit; `null` when it has none: an `admin` key (held by the store's bounds only), a
    /// key without `enrol` (it cannot write), or a quota of 0.
    pub limit: Option<usize>,
}

/// `GET /v1/auth/whoami`.
#[utoipa::path(
    get,
    path = "/v1/auth/whoami",
    tag = "access",
    summary = "The presented key's id, scopes, rate limit and quotas",
    responses(
        (status = 200, description = "The key", body = WhoAmI),
        (status = 401, description = "No key or an invalid one", body = super::error::ErrorBody),
    )
)]
pub async fn whoami(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<WhoAmI>, ApiError> {
    let Some(Extension(caller)) = caller else {
        return Err(ApiError::internal("who-am-I reached without a caller"));
    };
    let rps = state
        .api_keys
        .ring()
        .entries()
        .iter()
        .find(|e| e.id() == &*caller.key_id)
        .and_then(|e| e.rps);
    let quota = |of| QuotaUse {
        held: state.enrolments.held(of, &caller.key_id),
        limit: state.config.key_quota(of, &caller),
    };
    Ok(Json(WhoAmI {
        key_id: caller.key_id.to_string(),
        scopes: caller.scopes.iter().copied().collect(),
        rps,
        quotas: KeyQuotas {
            subjects: quota(QuotaOf::Subjects),
            templates: quota(QuotaOf::Templates),
        },
    }))
}
