//! `GET /v1/auth/whoami`: which key the caller presented and what it may do, for the UI.

use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;

use super::error::ApiError;
use crate::auth::{Caller, Scope};
use crate::state::SharedState;

/// Answer of `GET /v1/auth/whoami`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The key's id.
    pub key_id: String,
    /// Its scopes as granted (`admin` includes every other).
    pub scopes: Vec<Scope>,
    /// Its request rate limit, requests per second (`null`: unlimited).
    pub rps: Option<f64>,
}

/// `GET /v1/auth/whoami`.
#[utoipa::path(
    get,
    path = "/v1/auth/whoami",
    tag = "access",
    summary = "The presented key's id, scopes and rate limit",
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
    Ok(Json(WhoAmI {
        key_id: caller.key_id.to_string(),
        scopes: caller.scopes.iter().copied().collect(),
        rps,
    }))
}
