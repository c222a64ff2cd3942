//! dlib ResNet face embeddings (128-d) and their comparison: Euclidean distance and a similarity
//! in `[0, 1]` derived from it.

use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::align::CHIP_SIZE;
use super::config::MatchConfig;
use super::onnx::{SessionError, SessionPool};

/// Length of a dlib face descriptor.
pub const EMBEDDING_DIM: usize = 128;

/// Name under which templates record the embedding model that made them; matching uses only
/// templates of this model.
pub const EMBEDDING_MODEL: &str = "dlib_resnet_v1_128d";

/// A 128-d face descriptor (what templates store; never the image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f32>", into = "Vec<f32>")]
pub struct Embedding(Vec<f32>);

/// A vector that is not a valid embedding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddingError {
    /// Wrong number of values.
    #[error("an embedding has {EMBEDDING_DIM} values, got {0}")]
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
        Ok(Self(values))
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Euclidean distance to `other`.
    pub fn distance(&self, other: &Embedding) -> f32 {
        distance(&self.0, &other.0)
    }
}

impl TryFrom<Vec<f32>> for Embedding {
    type Error = EmbeddingError;

    fn try_from(v: Vec<f32>) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Embedding> for Vec<f32> {
    fn from(e: Embedding) -> Self {
        e.0
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
    /// Euclidean distance.
    pub distance: f32,
    /// Similarity in `(0, 1)` (see [`similarity`]).
    pub similarity: f32,
}

/// Measures two embeddings' distance and similarity under `cfg`.
pub fn compare(a: &Embedding, b: &Embedding, cfg: &MatchConfig) -> MatchScore {
    let d = a.distance(b);
    MatchScore {
        distance: d,
        similarity: similarity(d, cfg),
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
        assert!(json.starts_with('['));
        let back: Embedding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        assert!(serde_json::from_str::<Embedding>("[1.0, 2.0]").is_err());
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
