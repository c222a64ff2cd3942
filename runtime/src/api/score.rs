//! `POST /v1/score`: the fusion MLP over HTTP, for one feature vector or a batch.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::ApiJson;
use crate::decision::Decision;
use crate::fusion::{INPUTS, Layers};
use crate::state::SharedState;

/// Largest magnitude accepted for a feature; keeps the maths far from overflow.
pub const MAX_FEATURE_MAGNITUDE: f64 = 1e6;

/// Body of `POST /v1/score`: exactly one of `features` or `batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// One feature vector `[match_similarity, liveness, quality]`.
    #[serde(default)]
    #[schema(min_items = 3, max_items = 3, example = json!([1.0, 0.5, -1.0]))]
    pub features: Option<Vec<f64>>,
    /// Several feature vectors scored in one call (at most `FACEKEY_MAX_BATCH`).
    #[serde(default)]
    #[schema(min_items = 1)]
    pub batch: Option<Vec<Vec<f64>>>,
    /// Return every layer's values (z1, a1, z2, a2, z3) with each result.
    #[serde(default)]
    pub include_layers: bool,
}

/// One scored feature vector.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreResult {
    /// Authentication probability, `sigmoid(z3)`.
    pub probability: f64,
    /// `accept` when `probability >= threshold`.
    pub decision: Decision,
    /// Intermediate layer values, when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Layers>,
}

/// Answer to a single-vector request.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreResponse {
    /// The result fields, inline.
    #[serde(flatten)]
    pub result: ScoreResult,
    /// The decision threshold used.
    pub threshold: f64,
    /// Name of the fusion weights that scored it.
    pub weights: String,
}

/// Answer to a batch request: results in request order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchScoreResponse {
    /// One result per input row.
    pub results: Vec<ScoreResult>,
    /// The decision threshold used.
    pub threshold: f64,
    /// Name of the fusion weights that scored them.
    pub weights: String,
}

/// Check one feature vector: three finite numbers of sane magnitude. `what` names it in errors.
pub fn validate_features(values: &[f64], what: &str) -> Result<[f64; INPUTS], ApiError> {
    let arr: [f64; INPUTS] = values.try_into().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_features",
            format!(
                "{what} must hold exactly {INPUTS} numbers [match_similarity, liveness, quality], got {}",
                values.len()
            ),
        )
    })?;
    if let Some(i) = arr
        .iter()
        .position(|v| !v.is_finite() || v.abs() > MAX_FEATURE_MAGNITUDE)
    {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_features",
            format!(
                "{what}[{i}] must be a finite number with magnitude at most {MAX_FEATURE_MAGNITUDE:e}"
            ),
        ));
    }
    Ok(arr)
}

/// Either answer shape of `/v1/score`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ScoreAnswer {
    /// For `features`.
    Single(ScoreResponse),
    /// For `batch`.
    Batch(BatchScoreResponse),
}

/// Handler of `POST /v1/score`.
#[utoipa::path(
    post,
    path = "/v1/score",
    tag = "fusion",
    summary = "Fuse three features into an authentication probability",
    description = "Runs the 3-4-3-1 score-fusion MLP (ReLU, ReLU, sigmoid) on one feature vector \
`[match_similarity, liveness, quality]` or on a batch. `decision` is `accept` when \
`probability >= threshold`.",
    request_body = ScoreRequest,
    responses(
        (status = 200, description = "Scored", body = ScoreAnswer),
        (status = 400, description = "Not JSON", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Not application/json", body = super::error::ErrorBody),
        (status = 422, description = "Wrong feature count, non-finite value, or wrong shape", body = super::error::ErrorBody),
        (status = 503, description = "Models still loading", body = super::error::ErrorBody),
    )
)]
pub async fn score(
    State(state): State<SharedState>,
    ApiJson(req): ApiJson<ScoreRequest>,
) -> Result<Json<ScoreAnswer>, ApiError> {
    let engine = state.engine()?;
    let verifier = &engine.verifier;
    let threshold = verifier.threshold();
    let weights = verifier.fusion().name().to_string();
    let timer = state.metrics.fusion_duration();
    match (req.features, req.batch) {
        (Some(features), None) => {
            let x = validate_features(&features, "features")?;
            let start = Instant::now();
            let forward = verifier.fusion().forward(&x);
            timer.observe(start.elapsed().as_secs_f64());
            let decision = verifier.fused_decision(forward.probability);
            state.metrics.record_decision(decision);
            Ok(Json(ScoreAnswer::Single(ScoreResponse {
                result: ScoreResult {
                    probability: forward.probability,
                    decision,
                    layers: req.include_layers.then_some(forward.layers),
                },
                threshold,
                weights,
            })))
        }
        (None, Some(batch)) => {
            if batch.is_empty() {
                return Err(ApiError::invalid_request(
                    "batch must hold at least one row",
                ));
            }
            if batch.len() > state.config.max_batch {
                return Err(ApiError::invalid_request(format!(
                    "batch holds {} rows; the limit is {} (FACEKEY_MAX_BATCH)",
                    batch.len(),
                    state.config.max_batch
                )));
            }
            let rows = batch
                .iter()
                .enumerate()
                .map(|(i, row)| validate_features(row, &format!("batch[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let start = Instant::now();
            let scored: Vec<(f64, Option<Layers>)> = if req.include_layers {
                rows.iter()
                    .map(|x| {
                        let f = verifier.fusion().forward(x);
                        (f.probability, Some(f.layers))
                    })
                    .collect()
            } else {
                let xs = Array2::from_shape_vec((rows.len(), INPUTS), rows.concat())
                    .map_err(|e| ApiError::internal(format!("batch shape: {e}")))?;
                verifier
                    .fusion()
                    .probabilities(&xs)
                    .iter()
                    .map(|&p| (p, None))
                    .collect()
            };
            timer.observe(start.elapsed().as_secs_f64());
            let results = scored
                .into_iter()
                .map(|(probability, layers)| {
                    let decision = verifier.fused_decision(probability);
                    state.metrics.record_decision(decision);
                    ScoreResult {
                        probability,
                        decision,
                        layers,
                    }
                })
                .collect();
            Ok(Json(ScoreAnswer::Batch(BatchScoreResponse {
                results,
                threshold,
                weights,
            })))
        }
        (Some(_), Some(_)) => Err(ApiError::invalid_request(
            "send either `features` or `batch`, not both",
        )),
        (None, None) => Err(ApiError::invalid_request(
            "missing `features` (one vector of 3 numbers) or `batch` (a list of them)",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn feature_validation() {
        assert_eq!(
            validate_features(&[1.0, 0.5, -1.0], "f").unwrap(),
            [1.0, 0.5, -1.0]
        );
        let e = validate_features(&[1.0, 0.5], "features").unwrap_err();
        assert_eq!(e.code, "invalid_features");
        assert!(e.message.contains("got 2"));
        let e = validate_features(&[1.0, f64::NAN, 0.0], "batch[3]").unwrap_err();
        assert!(e.message.contains("batch[3][1]"), "{}", e.message);
        assert!(validate_features(&[1.0, 0.0, 2e6], "f").is_err());
        assert!(validate_features(&[f64::INFINITY, 0.0, 0.0], "f").is_err());
    }
}
