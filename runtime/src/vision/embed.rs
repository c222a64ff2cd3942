//! dlib ResNet face embeddings (128-d) and their comparison: Euclidean distance and a similarity
//! in `[0, 1]` derived from it.

use std::time::Duration;

use base64::Engine as _;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::align::CHIP_SIZE;
use super::config::MatchConfig;
use super::onnx::{SessionError, SessionPool};
use super::second_opinion::{MatchModels, cosine, fused_match_score};

/// Length of a dlib face descriptor.
pub const EMBEDDING_DIM: usize = 128;

/// Name under which templates record the embedding model that made them; matching uses only
/// templates of this model.
pub const EMBEDDING_MODEL: &str = "dlib_resnet_v1_128d";

/// Name templates record for a face holding both dlib's and faceres-deep's embeddings: the
/// model names joined by `+`, the values concatenated (dlib's 128 first, then faceres-deep's
/// 1024), sealed together as one template.
pub const FUSED_TEMPLATE_MODEL: &str = "dlib_resnet_v1_128d+faceres_deep_1024d";

/// Length of a faceres-deep embedding.
pub const FACERES_DIM: usize = 1024;

/// A 128-d dlib face descriptor (what templates store; never the image), optionally carrying
/// the same face's L2-normalised faceres-deep embedding (1024-d) for the fused match
/// ([`super::second_opinion::MATCH_FUSION`]). Serialises as its template values (dlib's,
/// then faceres-deep's when carried), so a face sealed in a shared session row comes back
/// whole and is matched fused on every replica, as on the one that observed it: packed, the
/// values' little-endian bytes in base64 (6 KB for both models against 13 KB as JSON numbers,
/// the bulk of a sealed frame), and read back from that or from a JSON array of numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Packed", into = "Packed")]
pub struct Embedding {
    dlib: Vec<f32>,
    faceres: Option<Vec<f32>>,
}

/// A vector that is not a valid embedding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddingError {
    /// Wrong number of values.
    #[error("an embedding has {EMBEDDING_DIM} values (faceres-deep {FACERES_DIM}), got {0}")]
    Length(usize),
    /// A NaN or infinite value.
    #[error("embedding contains a non-finite value")]
    NonFinite,
}

impl Embedding {
    /// Validates and wraps a descriptor.
    pub fn new(values: Vec<f32>) -> Result<Self, EmbeddingError> {
        if values.len() != EMBEDDING_DIM {
            return Err(EmbeddingError::Length(values.len()));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(EmbeddingError::NonFinite);
        }
        Ok(Self {
            dlib: values,
            faceres: None,
        })
    }

    /// This embedding carrying `faceres` (faceres-deep's embedding of the same face).
    pub fn with_faceres(mut self, faceres: Vec<f32>) -> Result<Self, EmbeddingError> {
        if faceres.len() != FACERES_DIM {
            return Err(EmbeddingError::Length(faceres.len()));
        }
        if faceres.iter().any(|v| !v.is_finite()) {
            return Err(EmbeddingError::NonFinite);
        }
        self.faceres = Some(faceres);
        Ok(self)
    }

    /// dlib's values.
    pub fn as_slice(&self) -> &[f32] {
        &self.dlib
    }

    /// faceres-deep's embedding, when this face carries one.
    pub fn faceres(&self) -> Option<&[f32]> {
        self.faceres.as_deref()
    }

    /// Euclidean distance of dlib's embeddings.
    pub fn distance(&self, other: &Embedding) -> f32 {
        distance(&self.dlib, &other.dlib)
    }

    /// The model name a template of this face records ([`EMBEDDING_MODEL`], or
    /// [`FUSED_TEMPLATE_MODEL`] when it carries faceres-deep's embedding).
    pub fn template_model(&self) -> &'static str {
        if self.faceres.is_some() {
            FUSED_TEMPLATE_MODEL
        } else {
            EMBEDDING_MODEL
        }
    }

    /// The values a template of this face stores: dlib's, then faceres-deep's if carried.
    pub fn template_values(&self) -> Vec<f32> {
        let mut v = self.dlib.clone();
        if let Some(f) = &self.faceres {
            v.extend_from_slice(f);
        }
        v
    }

    /// The embedding a stored template holds, from its model name and values; `None` for a
    /// template of another model or of the wrong length (not matched).
    pub fn from_template(model: &str, values: &[f32]) -> Option<Self> {
        match model {
            EMBEDDING_MODEL => Self::new(values.to_vec()).ok(),
            FUSED_TEMPLATE_MODEL if values.len() == EMBEDDING_DIM + FACERES_DIM => {
                let (d, f) = values.split_at(EMBEDDING_DIM);
                Self::new(d.to_vec()).ok()?.with_faceres(f.to_vec()).ok()
            }
            _ => None,
        }
    }

    /// The embedding models a template named `model` holds (`dlib`, `faceres`), in order;
    /// empty for a model this server does not know.
    pub fn template_models(model: &str) -> &'static [&'static str] {
        match model {
            EMBEDDING_MODEL => &["dlib"],
            FUSED_TEMPLATE_MODEL => &["dlib", "faceres"],
            _ => &[],
        }
    }
}

impl TryFrom<Vec<f32>> for Embedding {
    type Error = EmbeddingError;

    fn try_from(mut v: Vec<f32>) -> Result<Self, Self::Error> {
        if v.len() == EMBEDDING_DIM + FACERES_DIM {
            let faceres = v.split_off(EMBEDDING_DIM);
            return Self::new(v)?.with_faceres(faceres);
        }
        Self::new(v)
    }
}

impl From<Embedding> for Vec<f32> {
    fn from(e: Embedding) -> Self {
        e.template_values()
    }
}

/// How an embedding is serialised: its values' little-endian `f32` bytes in base64 (written),
/// or a JSON array of numbers (read too: what releases before 2026-12-07 wrote).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Packed {
    /// Base64 of the little-endian bytes.
    Bytes(String),
    /// The values themselves.
    Values(Vec<f32>),
}

impl From<Embedding> for Packed {
    fn from(e: Embedding) -> Self {
        let bytes: Vec<u8> = e
            .template_values()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Self::Bytes(base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl TryFrom<Packed> for Embedding {
    type Error = EmbeddingError;

    fn try_from(p: Packed) -> Result<Self, Self::Error> {
        let values = match p {
            Packed::Values(v) => v,
            Packed::Bytes(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|_| EmbeddingError::Length(0))?;
                if bytes.len() % 4 != 0 {
                    return Err(EmbeddingError::Length(bytes.len() / 4));
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
        };
        Self::try_from(values)
    }
}

/// Euclidean distance of two equally long vectors (extra values of the longer are ignored).
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Maps a distance to a similarity in `(0, 1)`: `1 / (1 + exp(k (d - t)))` with `t` the match
/// threshold (so `t` maps to exactly 0.5, smaller distances above it) and `k` the steepness.
/// With dlib's `t = 0.6`, `k = 10`: d = 0 → 0.998, 0.3 → 0.95, 0.6 → 0.5, 0.8 → 0.12, 1.0 → 0.018.
pub fn similarity(distance: f32, cfg: &MatchConfig) -> f32 {
    let z = cfg.similarity_steepness * (distance - cfg.similarity_midpoint);
    1.0 / (1.0 + z.exp())
}

/// The measured closeness of a probe to a template (whether that is a match is the
/// verifier's decision, [`crate::verifier`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatchScore {
    /// Euclidean distance of dlib's embeddings.
    pub distance: f32,
    /// Similarity in `(0, 1)`, 0.5 at the match boundary: dlib's ([`similarity`]) or, when
    /// `models` is `dlib+faceres`, the fused score
    /// ([`super::second_opinion::fused_match_score`]).
    pub similarity: f32,
    /// The embedding models the similarity comes from.
    pub models: MatchModels,
}

/// Measures two embeddings' dlib distance and similarity under `cfg` (dlib alone).
pub fn compare(a: &Embedding, b: &Embedding, cfg: &MatchConfig) -> MatchScore {
    let d = a.distance(b);
    MatchScore {
        distance: d,
        similarity: similarity(d, cfg),
        models: MatchModels::Dlib,
    }
}

/// Measures two embeddings under `models`: the fused dlib + faceres-deep score when `models`
/// asks for it and both carry faceres-deep's embedding, else dlib's similarity (a template
/// enrolled before faceres-deep, or `models` = `dlib`); [`MatchScore::models`] says which.
pub fn compare_with(
    a: &Embedding,
    b: &Embedding,
    cfg: &MatchConfig,
    models: MatchModels,
) -> MatchScore {
    let dlib = compare(a, b, cfg);
    match (models, a.faceres(), b.faceres()) {
        (MatchModels::DlibFaceres, Some(fa), Some(fb)) => MatchScore {
            distance: dlib.distance,
            similarity: fused_match_score(f64::from(dlib.distance), f64::from(cosine(fa, fb)))
                as f32,
            models: MatchModels::DlibFaceres,
        },
        _ => dlib,
    }
}

/// Writes an aligned chip as the model's NHWC input: raw 0–255 values (the graph normalises).
pub fn chip_tensor(chip: &RgbImage, out: &mut Vec<f32>) {
    out.clear();
    out.extend(chip.as_raw().iter().map(|&v| f32::from(v)));
}

/// The embedding model over a shared session pool.
#[derive(Debug)]
pub struct Embedder {
    session: SessionPool,
}

impl Embedder {
    /// Wraps the dlib ResNet session.
    pub fn new(session: SessionPool) -> Self {
        Self { session }
    }

    /// Embeds one aligned `CHIP_SIZE x CHIP_SIZE` chip; returns the embedding and the inference
    /// time.
    pub fn embed(&self, chip: &RgbImage) -> Result<(Embedding, Duration), SessionError> {
        let mut input = Vec::with_capacity((CHIP_SIZE * CHIP_SIZE * 3) as usize);
        chip_tensor(chip, &mut input);
        let side = CHIP_SIZE as usize;
        self.session.run(&[1, side, side, 3], &input, |out| {
            let (shape, data) = self.session.output(out, 0)?;
            if shape != [1, EMBEDDING_DIM] {
                return Err(SessionError::Output {
                    model: self.session.name(),
                    detail: format!("expected [1, {EMBEDDING_DIM}], got {shape:?}"),
                });
            }
            Embedding::new(data.to_vec()).map_err(|e| SessionError::Output {
                model: self.session.name(),
                detail: e.to_string(),
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_euclidean() {
        assert_eq!(distance(&[0.0, 0.0], &[3.0, 4.0]), 5.0);
        assert_eq!(distance(&[1.0; 128], &[1.0; 128]), 0.0);
    }

    #[test]
    fn similarity_mapping_anchors() {
        let cfg = MatchConfig::default();
        assert!((similarity(0.6, &cfg) - 0.5).abs() < 1e-6);
        assert!(similarity(0.3, &cfg) > 0.94);
        assert!(similarity(0.8, &cfg) < 0.13);
        assert!(similarity(0.0, &cfg) < 1.0 && similarity(5.0, &cfg) >= 0.0);
        // Monotone decreasing.
        let s: Vec<f32> = (0..20).map(|i| similarity(i as f32 * 0.1, &cfg)).collect();
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn compare_measures_distance_and_similarity() {
        let cfg = MatchConfig::default();
        let a = Embedding::new(vec![0.0; 128]).unwrap();
        let mut v = vec![0.0; 128];
        v[0] = 0.5;
        let b = Embedding::new(v).unwrap();
        let m = compare(&a, &b, &cfg);
        assert!((m.distance - 0.5).abs() < 1e-6);
        assert_eq!(m.similarity, similarity(m.distance, &cfg));
        assert!(m.similarity > 0.5, "closer than the midpoint is above 0.5");
        let mut w = vec![0.0; 128];
        w[1] = 0.7;
        assert!(compare(&a, &Embedding::new(w).unwrap(), &cfg).similarity < 0.5);
    }

    #[test]
    fn embedding_validation_and_serde() {
        assert_eq!(Embedding::new(vec![0.0; 3]), Err(EmbeddingError::Length(3)));
        let mut v = vec![0.0; 128];
        v[5] = f32::NAN;
        assert_eq!(Embedding::new(v), Err(EmbeddingError::NonFinite));
        let e = Embedding::new((0..128).map(|i| i as f32 / 128.0).collect()).unwrap();
        let json = serde_json::to_string(&e).unwrap();
        // Packed: 128 values in 512 bytes of base64 (684 characters with the quotes).
        assert_eq!(json.len(), 2 + 684, "{json}");
        let back: Embedding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        // As a JSON array, what releases before wrote, it reads the same.
        let values: Vec<f32> = e.clone().into();
        let array = serde_json::to_string(&values).unwrap();
        assert_eq!(serde_json::from_str::<Embedding>(&array).unwrap(), e);
        assert!(serde_json::from_str::<Embedding>("[1.0, 2.0]").is_err());
        // Packed bytes that are not an embedding: the wrong length, or a NaN.
        let b64 = |v: &[f32]| {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            format!(
                "{:?}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        };
        assert!(serde_json::from_str::<Embedding>(&b64(&[0.5; 3])).is_err());
        let mut nan = vec![0.0f32; 128];
        nan[7] = f32::NAN;
        assert!(serde_json::from_str::<Embedding>(&b64(&nan)).is_err());
        assert!(serde_json::from_str::<Embedding>("\"not base64!\"").is_err());
    }

    #[test]
    fn templates_carry_both_models_and_compare_fused() {
        let cfg = MatchConfig::default();
        let mut unit = vec![0.0f32; FACERES_DIM];
        unit[0] = 1.0;
        let a = Embedding::new(vec![0.0; 128])
            .unwrap()
            .with_faceres(unit.clone())
            .unwrap();
        assert_eq!(a.template_model(), FUSED_TEMPLATE_MODEL);
        let values = a.template_values();
        assert_eq!(values.len(), 128 + FACERES_DIM);
        let back = Embedding::from_template(FUSED_TEMPLATE_MODEL, &values).unwrap();
        assert_eq!(back, a);
        assert!(Embedding::from_template(FUSED_TEMPLATE_MODEL, &values[..128]).is_none());
        assert!(Embedding::from_template("other", &values[..128]).is_none());
        let legacy = Embedding::from_template(EMBEDDING_MODEL, &values[..128]).unwrap();
        assert_eq!(legacy.faceres(), None);
        assert_eq!(
            Embedding::template_models(FUSED_TEMPLATE_MODEL),
            ["dlib", "faceres"]
        );
        // Serialised, an embedding keeps both models' values (a session sealed in a shared
        // row is matched fused on every replica); dlib's alone read back as dlib alone.
        let json = serde_json::to_value(&a).unwrap();
        let packed = json.as_str().unwrap().len();
        // Both models' values, 4 bytes each, in base64.
        assert_eq!(packed, (128 + FACERES_DIM) * 4 * 4 / 3, "{packed}");
        assert_eq!(serde_json::from_value::<Embedding>(json).unwrap(), a);
        let values = serde_json::Value::from(a.template_values());
        assert_eq!(serde_json::from_value::<Embedding>(values).unwrap(), a);
        let json = serde_json::to_value(Embedding::new(vec![0.0; 128]).unwrap()).unwrap();
        assert_eq!(
            serde_json::from_value::<Embedding>(json).unwrap().faceres(),
            None
        );
        assert!(
            serde_json::from_value::<Embedding>(serde_json::Value::from(vec![0.0f32; 129]))
                .is_err()
        );

        // Same dlib distance 0.5 (dlib alone: a match), faceres-deep orthogonal: fused rejects.
        let mut v = vec![0.0; 128];
        v[0] = 0.5;
        let mut other = vec![0.0f32; FACERES_DIM];
        other[1] = 1.0;
        let b = Embedding::new(v).unwrap().with_faceres(other).unwrap();
        let fused = compare_with(&a, &b, &cfg, MatchModels::DlibFaceres);
        assert_eq!(fused.models, MatchModels::DlibFaceres);
        assert!(fused.similarity < 0.5, "{fused:?}");
        let dlib = compare_with(&a, &b, &cfg, MatchModels::Dlib);
        assert_eq!(dlib.models, MatchModels::Dlib);
        assert!(dlib.similarity > 0.5);
        // A legacy template falls back to dlib alone, visibly.
        let mixed = compare_with(&a, &legacy, &cfg, MatchModels::DlibFaceres);
        assert_eq!(mixed.models, MatchModels::Dlib);
        // Identical faces match fused.
        assert!(compare_with(&a, &a, &cfg, MatchModels::DlibFaceres).similarity > 0.9);
    }

    #[test]
    fn chip_tensor_is_raw_nhwc() {
        let mut chip = RgbImage::new(2, 1);
        chip.put_pixel(1, 0, image::Rgb([1, 2, 255]));
        let mut out = Vec::new();
        chip_tensor(&chip, &mut out);
        assert_eq!(out, vec![0.0, 0.0, 0.0, 1.0, 2.0, 255.0]);
    }
}
