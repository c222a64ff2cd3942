//! Every knob of the vision pipeline in one serde + `Default` structure, so the server can fill
//! it from flags, a file or the environment. Vision measures; it holds no accept/reject
//! thresholds (those belong to [`crate::verifier`]). Defaults reproduce the reference pipelines described in
//! `runtime/models/MODELS.md`; those the runtime exposes as settings come from
//! [`facekey_settings::defaults`], so the server, the evaluation and this type agree.

use std::path::PathBuf;

use facekey_settings::defaults;
use serde::{Deserialize, Serialize};

pub use super::decode::DecodeLimits;

/// Configuration of the whole vision pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisionConfig {
    /// ONNX Runtime library and session settings.
    pub runtime: RuntimeConfig,
    /// Image decoding limits.
    pub decode: DecodeLimits,
    /// MTCNN detector settings.
    pub detector: DetectorConfig,
    /// What to do when an image holds several faces.
    pub multi_face: MultiFacePolicy,
    /// Most faces of one image analysed by [`super::Vision::liveness_all`] (the most confident;
    /// default [`defaults::MAX_FACES_PER_IMAGE`]).
    pub max_faces: usize,
    /// Distance-to-similarity mapping.
    pub matching: MatchConfig,
    /// Passive liveness (presentation-attack detection).
    pub liveness: LivenessConfig,
    /// Face-quality scoring.
    pub quality: QualityConfig,
    /// Second-opinion models fused into the match and passive liveness scores (issue 13).
    pub second_opinion: super::second_opinion::SecondOpinionConfig,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            decode: DecodeLimits::default(),
            detector: DetectorConfig::default(),
            multi_face: MultiFacePolicy::default(),
            max_faces: defaults::MAX_FACES_PER_IMAGE,
            matching: MatchConfig::default(),
            liveness: LivenessConfig::default(),
            quality: QualityConfig::default(),
            second_opinion: super::second_opinion::SecondOpinionConfig::default(),
        }
    }
}

/// ONNX Runtime: where the library and models are, and how sessions run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Explicit ONNX Runtime library (`--ort-library`); otherwise `FACEKEY_ORT_LIBRARY`,
    /// `ORT_DYLIB_PATH`, next to the executable, `<repo>/.tools/onnxruntime/`, system loader.
    pub ort_library: Option<PathBuf>,
    /// Explicit models directory (`--models-dir`); otherwise `FACEKEY_MODELS_DIR`, then
    /// `models/` near the executable or `runtime/models/` of the repository.
    pub models_dir: Option<PathBuf>,
    /// Check every model file's SHA-256 against the pinned value at load (default true).
    pub verify_checksums: bool,
    /// ONNX Runtime intra-op threads per session; 0 lets ONNX Runtime pick (one per core, with
    /// spinning). Default 1 ([`defaults::INTRA_THREADS`]): measured on the 2-vCPU target, one thread per inference gave both
    /// the lowest latency (138 ms vs 200 ms with 2 threads and 246 ms with ONNX Runtime's choice
    /// per verification) and the best throughput, since concurrent requests use the other core.
    pub intra_threads: usize,
    /// Sessions per model, i.e. how many requests can run the same model at once (default one
    /// per core, at most 8: [`defaults::sessions_per_model`]). Sessions need exclusive access to
    /// run (`ort` 2.0.0-rc.15 `Session::run` takes `&mut`), so each is behind a mutex; with one
    /// intra-op thread each, one session per core lets concurrent requests use every core.
    pub sessions_per_model: usize,
    /// Run one inference per session at load, so the first request is as fast as the rest
    /// (default true).
    pub warm_up: bool,
    /// Run passive liveness on a second thread while the face is aligned, embedded and scored
    /// for quality (default true): lower latency when cores are idle, the same throughput when
    /// they are not.
    pub parallel_liveness: bool,
    /// Directory holding replacement liveness models (`expo_FaceAntiSpoofing.onnx`,
    /// `fr_liveness.onnx`), e.g. a mounted volume. Their checksums come from a `SHA256SUMS`
    /// file in that directory when it has one; the bundled pins do not apply to them.
    pub spoof_model_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            ort_library: None,
            models_dir: None,
            verify_checksums: true,
            intra_threads: defaults::INTRA_THREADS,
            sessions_per_model: defaults::sessions_per_model(),
            warm_up: true,
            parallel_liveness: true,
            spoof_model_dir: None,
        }
    }
}

/// MTCNN settings (defaults: PyPI `mtcnn` 1.0.0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Smallest face side searched for, in pixels (default 20). Larger values shrink the
    /// pyramid and speed up detection (e.g. 80 for selfies).
    pub min_face_size: f64,
    /// Pyramid scale step (default 0.709).
    pub scale_factor: f64,
    /// PNet face-probability threshold (default 0.6).
    pub pnet_threshold: f64,
    /// RNet threshold (default 0.7).
    pub rnet_threshold: f64,
    /// ONet threshold (default 0.8).
    pub onet_threshold: f64,
    /// IoU threshold of the per-scale PNet NMS (default 0.5).
    pub pnet_scale_nms: f64,
    /// IoU threshold of the cross-scale PNet NMS (default 0.7).
    pub pnet_nms: f64,
    /// IoU threshold of the RNet NMS (default 0.7).
    pub rnet_nms: f64,
    /// Intersection-over-minimum threshold of the ONet NMS (default 0.7).
    pub onet_nms: f64,
    /// Images whose longer side exceeds this are detected on an area-downscaled copy (boxes and
    /// landmarks mapped back; alignment, embedding and liveness still use the full image), which
    /// bounds detection time (~35 ms at 640x480, growing with the pixel count). Default 1280;
    /// `None` always detects at full resolution like the reference.
    pub max_input_side: Option<u32>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            min_face_size: defaults::MIN_FACE_SIZE,
            scale_factor: 0.709,
            pnet_threshold: 0.6,
            rnet_threshold: 0.7,
            onet_threshold: 0.8,
            pnet_scale_nms: 0.5,
            pnet_nms: 0.7,
            rnet_nms: 0.7,
            onet_nms: 0.7,
            max_input_side: Some(1280),
        }
    }
}

/// Which face a single-face operation uses when the image holds several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MultiFacePolicy {
    /// Use the face with the largest box (default).
    #[default]
    Largest,
    /// Fail with [`super::VisionError::MultipleFaces`].
    Reject,
}

/// The distance-to-similarity mapping of face matching (a measurement; the match threshold on
/// the similarity is the verifier's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// The Euclidean distance that maps to similarity 0.5 (default 0.6, dlib's same-person
    /// threshold, [`defaults::MATCH_DISTANCE`]).
    pub similarity_midpoint: f32,
    /// Steepness `k` of `similarity = 1 / (1 + exp(k (d - midpoint)))` (default 10): the
    /// midpoint maps to 0.5, a typical genuine distance 0.3 to 0.95, an impostor 0.8 to 0.12.
    pub similarity_steepness: f32,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            similarity_midpoint: defaults::MATCH_DISTANCE as f32,
            similarity_steepness: 10.0,
        }
    }
}

/// How two liveness scores are combined (`--liveness-combine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Arithmetic mean of the two scores (default).
    #[default]
    Mean,
    /// The lower score: live only when both models say live.
    Min,
}

/// Which passive liveness model(s) run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "model")]
pub enum LivenessMode {
    /// No passive liveness check (the result reports no score and `live = false`).
    Off,
    /// Deep Tree Network only (~110 ms).
    Dtn,
    /// MiniFASNet-like model only (~4 ms).
    MiniFas,
    /// Both, combined into one score.
    Both {
        /// How the two scores are combined.
        combine: Combine,
    },
}

impl Default for LivenessMode {
    /// The MiniFASNet-like model alone ([`defaults::LIVENESS`]): on the evaluation data the DTN
    /// scored real photos and simulated attacks alike (docs/evaluation.md).
    fn default() -> Self {
        Self::MiniFas
    }
}

impl LivenessMode {
    /// A readable name, for reports and model descriptions.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Off => "no passive liveness",
            Self::Dtn => "DTN only",
            Self::MiniFas => "MiniFASNet-like model only",
            Self::Both {
                combine: Combine::Mean,
            } => "both PAD models, mean",
            Self::Both {
                combine: Combine::Min,
            } => "both PAD models, minimum",
        }
    }

    /// Whether the Deep Tree Network runs.
    pub fn uses_dtn(&self) -> bool {
        matches!(self, Self::Dtn | Self::Both { .. })
    }

    /// Whether the MiniFASNet-like model runs.
    pub fn uses_minifas(&self) -> bool {
        matches!(self, Self::MiniFas | Self::Both { .. })
    }
}

/// Passive liveness settings. Every model score is mapped to `[0, 1]`, higher = more live, with
/// the model's own decision threshold at 0.5; the threshold applied is the verifier's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LivenessConfig {
    /// Models and combination (default the MiniFASNet-like model alone).
    pub mode: LivenessMode,
    /// The DTN spoof score at which the source app switches to "spoof" (default 0.2); the DTN
    /// live score is `2^(-spoof / this)`, so this value maps to 0.5.
    pub dtn_spoof_threshold: f32,
    /// Crop side of the MiniFASNet-like model relative to the face box (default 2.7).
    pub minifas_crop_scale: f32,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            mode: LivenessMode::default(),
            dtn_spoof_threshold: 0.2,
            minifas_crop_scale: 2.7,
        }
    }
}

/// Face-quality scoring (each sub-score in `[0, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Face box short side (pixels) scoring 0 (default 20, MTCNN's minimum).
    pub min_face_size: f32,
    /// Face box short side (pixels) scoring 1 (default 100).
    pub target_face_size: f32,
    /// Variance of the Laplacian on the aligned chip that scores 0.5 (default 100); the score
    /// is `v / (v + this)`.
    pub sharpness_midpoint: f32,
    /// Absolute yaw (degrees) scoring 0 (default 45).
    pub max_yaw_degrees: f32,
    /// Absolute roll (degrees) scoring 0 (default 45).
    pub max_roll_degrees: f32,
    /// Mean luma band (0–255) scoring 1 for exposure (default 70–190).
    pub luma_band: [f32; 2],
    /// Fraction of clipped pixels (luma ≤ 5 or ≥ 250) that scores 0 (default 0.3).
    pub max_clipped_fraction: f32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            min_face_size: 20.0,
            target_face_size: 100.0,
            sharpness_midpoint: 100.0,
            max_yaw_degrees: 45.0,
            max_roll_degrees: 45.0,
            luma_band: [70.0, 190.0],
            max_clipped_fraction: 0.3,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_gives_defaults() {
        let c: VisionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, VisionConfig::default());
    }

    #[test]
    fn round_trips_through_json() {
        let mut c = VisionConfig::default();
        c.liveness.mode = LivenessMode::Both {
            combine: Combine::Min,
        };
        c.multi_face = MultiFacePolicy::Reject;
        c.detector.min_face_size = 80.0;
        let s = serde_json::to_string(&c).unwrap();
        let back: VisionConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn liveness_mode_json_shapes() {
        let m: LivenessMode = serde_json::from_str(r#"{"model":"dtn"}"#).unwrap();
        assert_eq!(m, LivenessMode::Dtn);
        let m: LivenessMode = serde_json::from_str(r#"{"model":"both","combine":"min"}"#).unwrap();
        assert_eq!(
            m,
            LivenessMode::Both {
                combine: Combine::Min
            }
        );
        assert!(m.uses_dtn() && m.uses_minifas());
        assert!(!LivenessMode::MiniFas.uses_dtn());
        assert!(!LivenessMode::Off.uses_minifas());
    }

    #[test]
    fn unknown_fields_rejected() {
        assert!(serde_json::from_str::<VisionConfig>(r#"{"detektor":{}}"#).is_err());
    }
}
