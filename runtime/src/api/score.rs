//! `POST /v1/score`: the fusion MLP over HTTP, for one feature vector or a batch.

use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use ndarray::Array2;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{parse_json_seed, read_body, require_json_content_type};
use crate::decision::Decision;
use crate::fusion::{INPUTS, Layers};
use crate::state::SharedState;

/// Largest magnitude accepted for a feature; keeps the maths far from overflow.
pub const MAX_FEATURE_MAGNITUDE: f64 = 1e6;

/// Body of `POST /v1/score`: exactly one of `features` or `batch`. The schema of the API
/// document; the handler reads the body with [`ScoreBody`], which takes the same fields but
/// refuses a batch over `FACEKEY_MAX_BATCH` at its first row too many.
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

fn wrong_count(what: &str, got: usize) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_features",
        format!(
            "{what} must hold exactly {INPUTS} numbers [match_similarity, liveness, quality], got {got}"
        ),
    )
}

/// Check one feature vector: three finite numbers of sane magnitude. `what` names it in errors.
pub fn validate_features(values: &[f64], what: &str) -> Result<[f64; INPUTS], ApiError> {
    let arr: [f64; INPUTS] = values
        .try_into()
        .map_err(|_| wrong_count(what, values.len()))?;
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

/// One feature vector as parsed: its first [`INPUTS`] numbers and how many it held, so a row
/// costs the same few bytes whatever its length (checked by [`FeatureRow::validate`], which
/// answers a wrong count as [`validate_features`] does).
#[derive(Debug, Clone, Copy, PartialEq)]
struct FeatureRow {
    values: [f64; INPUTS],
    len: usize,
}

impl FeatureRow {
    fn validate(&self, what: &str) -> Result<[f64; INPUTS], ApiError> {
        if self.len != INPUTS {
            return Err(wrong_count(what, self.len));
        }
        validate_features(&self.values, what)
    }
}

impl<'de> Deserialize<'de> for FeatureRow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(RowVisitor)
    }
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = FeatureRow;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FeatureRow, A::Error> {
        let mut row = FeatureRow {
            values: [0.0; INPUTS],
            len: 0,
        };
        // Numbers past the third are read (a non-number is refused as before) but not kept.
        while let Some(v) = seq.next_element::<f64>()? {
            if let Some(slot) = row.values.get_mut(row.len) {
                *slot = v;
            }
            row.len = row.len.saturating_add(1);
        }
        Ok(row)
    }
}

/// `batch` as parsed: at most `max_batch` rows; the parse fails as the row after them starts,
/// before it is read, so a body of millions of rows costs nothing beyond its bytes.
struct BatchSeed {
    max_batch: usize,
}

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = Option<Vec<FeatureRow>>;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Option<Vec<FeatureRow>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of feature vectors")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let max = self.max_batch;
        let mut rows = Vec::new();
        while rows.len() < max {
            match seq.next_element::<FeatureRow>()? {
                Some(row) => rows.push(row),
                None => return Ok(Some(rows)),
            }
        }
        // Full: another row is refused as it starts (the seed fails without reading it).
        seq.next_element_seed(NoMoreRows { max })?;
        Ok(Some(rows))
    }
}

/// Stands for the row after `max`: fails at once, reading nothing.
struct NoMoreRows {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for NoMoreRows {
    type Value = IgnoredAny;
    fn deserialize<D: serde::Deserializer<'de>>(self, _: D) -> Result<IgnoredAny, D::Error> {
        Err(de::Error::custom(format_args!(
            "batch holds more than {max} rows; the limit is {max} (FACEKEY_MAX_BATCH)",
            max = self.max
        )))
    }
}

/// The body of `POST /v1/score` as the handler reads it: the fields of [`ScoreRequest`]
/// (unknown and repeated fields refused alike), parsed by [`ScoreSeed`] so that neither a
/// batch nor a row costs more than its bound: a batch stops at row `FACEKEY_MAX_BATCH + 1`
/// (422), a row keeps [`INPUTS`] numbers. A `Vec<Vec<f64>>` would hold every row of an 8 MiB
/// body (a million rows, each its own allocation) before its length could be checked.
#[derive(Debug)]
pub struct ScoreBody {
    features: Option<FeatureRow>,
    batch: Option<Vec<FeatureRow>>,
    include_layers: bool,
}

/// Parses a [`ScoreBody`] with the batch bound in force.
struct ScoreSeed {
    max_batch: usize,
}

const SCORE_FIELDS: &[&str] = &["features", "batch", "include_layers"];

impl<'de> DeserializeSeed<'de> for ScoreSeed {
    type Value = ScoreBody;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<ScoreBody, D::Error> {
        deserializer.deserialize_struct("ScoreRequest", SCORE_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for ScoreSeed {
    type Value = ScoreBody;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("struct ScoreRequest")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ScoreBody, A::Error> {
        let mut features = None;
        let mut batch = None;
        let mut include_layers = None;
        while let Some(key) = map.next_key::<String>()? {
            match &*key {
                "features" if features.is_some() => {
                    return Err(de::Error::duplicate_field("features"));
                }
                "features" => features = Some(map.next_value::<Option<FeatureRow>>()?),
                "batch" if batch.is_some() => return Err(de::Error::duplicate_field("batch")),
                "batch" => {
                    batch = Some(map.next_value_seed(BatchSeed {
                        max_batch: self.max_batch,
                    })?);
                }
                "include_layers" if include_layers.is_some() => {
                    return Err(de::Error::duplicate_field("include_layers"));
                }
                "include_layers" => include_layers = Some(map.next_value::<bool>()?),
                other => return Err(de::Error::unknown_field(other, SCORE_FIELDS)),
            }
        }
        Ok(ScoreBody {
            features: features.flatten(),
            batch: batch.flatten(),
            include_layers: include_layers.unwrap_or(false),
        })
    }
}

impl FromRequest<SharedState> for ScoreBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        require_json_content_type(&req)?;
        let max_batch = state.config.max_batch;
        let bytes = read_body(req, state).await?;
        parse_json_seed(&bytes, ScoreSeed { max_batch })
    }
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
    req: ScoreBody,
) -> Result<Json<ScoreAnswer>, ApiError> {
    let engine = state.engine()?;
    let verifier = &engine.verifier;
    let threshold = verifier.threshold();
    let weights = verifier.fusion().name().to_string();
    let timer = state.metrics.fusion_duration();
    match (req.features, req.batch) {
        (Some(features), None) => {
            let x = features.validate("features")?;
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
            // Longer than FACEKEY_MAX_BATCH was refused while parsing (`BatchSeed`).
            let rows = batch
                .iter()
                .enumerate()
                .map(|(i, row)| row.validate(&format!("batch[{i}]")))
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

    fn parse(body: &str, max_batch: usize) -> Result<ScoreBody, ApiError> {
        parse_json_seed(body.as_bytes(), ScoreSeed { max_batch })
    }

    #[test]
    fn bodies_parse_as_the_derived_request_did() {
        let b = parse(r#"{"features":[1,0.5,-1],"include_layers":true}"#, 4).unwrap();
        assert_eq!(b.features.unwrap().validate("f").unwrap(), [1.0, 0.5, -1.0]);
        assert!(b.batch.is_none() && b.include_layers);
        let b = parse(r#"{"batch":[[1,2,3],[4,5,6]],"features":null}"#, 2).unwrap();
        let rows = b.batch.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].validate("r").unwrap(), [4.0, 5.0, 6.0]);
        assert!(b.features.is_none() && !b.include_layers);
        assert!(
            parse(r#"{"batch":[]}"#, 2)
                .unwrap()
                .batch
                .unwrap()
                .is_empty()
        );
        // Rows of the wrong length count their numbers for the same message as before.
        for (row, got) in [("[]", 0), ("[1,2]", 2), ("[1,2,3,4,5]", 5)] {
            let b = parse(&format!(r#"{{"batch":[{row}]}}"#), 2).unwrap();
            let e = b.batch.unwrap()[0].validate("batch[0]").unwrap_err();
            assert_eq!(e.code, "invalid_features");
            assert!(e.message.ends_with(&format!("got {got}")), "{}", e.message);
        }
        // Shape errors stay 422 invalid_request, syntax errors 400 invalid_json.
        for body in [
            r#"{"features":[1,0,0],"x":1}"#,
            r#"{"features":[1,0,0],"features":[1,0,0]}"#,
            r#"{"batch":[[1,2,3]],"batch":[[1,2,3]]}"#,
            r#"{"features":["1",0,0]}"#,
            r#"{"features":[1,2,3,"4"]}"#,
            r#"{"batch":[[1,2,3],[[1]]]}"#,
            r#"{"features":1e999}"#,
            r#"{"include_layers":1}"#,
            "[1,0.5,-1]",
        ] {
            let e = parse(body, 4).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (422, "invalid_request"),
                "{body}: {e:?}"
            );
        }
        assert_eq!(
            parse(r#"{"features":[1,0,0]"#, 4).unwrap_err().code,
            "invalid_json"
        );
        assert_eq!(parse("", 4).unwrap_err().code, "empty_body");
    }

    /// The parse stops as the row after `max_batch` starts: the rest of the body is not read,
    /// so a cut-off (invalid) body is refused for its size, not for its syntax.
    #[test]
    fn a_batch_is_refused_at_its_first_row_too_many() {
        let rows = |n: usize| vec!["[0,0,0]"; n].join(",");
        assert_eq!(
            parse(&format!(r#"{{"batch":[{}]}}"#, rows(4)), 4)
                .unwrap()
                .batch
                .unwrap()
                .len(),
            4
        );
        let e = parse(&format!(r#"{{"batch":[{}]}}"#, rows(5)), 4).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_request"));
        assert!(
            e.message
                .contains("batch holds more than 4 rows; the limit is 4 (FACEKEY_MAX_BATCH)"),
            "{}",
            e.message
        );
        // A million rows and no end: refused at the comma before row 5, 42 characters in.
        let cut = format!(r#"{{"batch":[{},[0,0"#, rows(1_000_000));
        let e = parse(&cut, 4).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (422, "invalid_request"),
            "{}",
            e.message
        );
        assert!(e.message.contains("column 42"), "{}", e.message);
        // Within the limit the same cut-off body is a syntax error.
        assert_eq!(parse(&cut, 2_000_000).unwrap_err().code, "invalid_json");
    }
}
