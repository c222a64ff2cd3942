//! Face vision pipeline: image decoding, MTCNN detection, alignment, embedding, liveness and
//! quality, each in its own module over ONNX Runtime sessions built once at start-up.
//!
//! Entry point: [`Vision::load`] with a [`VisionConfig`], then [`Vision::verify`],
//! [`Vision::enrol`] or [`Vision::liveness_all`] on image bytes. Pure maths (NMS, box
//! regression, similarity transform, quality, crops) lives in modules without ONNX Runtime calls
//! and is unit-tested on its own.
//!
//! Vision only measures; accept/reject is the [`crate::verifier::Verifier`]'s decision:
//!
//! ```no_run
//! use facekey_runtime::decision::Decision;
//! use facekey_runtime::fusion::FusionMlp;
//! use facekey_runtime::verifier::{Verifier, VerifierConfig};
//! use facekey_runtime::vision::{Vision, VisionConfig};
//!
//! fn check(enrolment_jpeg: &[u8], probe_jpeg: &[u8]) -> anyhow::Result<bool> {
//!     // Once at start-up: finds libonnxruntime and the models, verifies checksums.
//!     let vision = Vision::load(VisionConfig::default())?;
//!     let verifier = Verifier::new(FusionMlp::reference()?, VerifierConfig::default());
//!     let template = vision.enrol(enrolment_jpeg)?.embedding; // store this, not the image
//!     let probe = vision.verify(probe_jpeg)?; // box, landmarks, liveness, quality, timings
//!     let score = vision.compare(&probe.embedding, &template); // distance and similarity
//!     let matched = verifier.judge_templates(&[score]).ok_or_else(|| anyhow::anyhow!("no template"))?;
//!     let live = verifier.judge_liveness(probe.liveness.as_ref());
//!     let quality = probe.quality.map_or(0.0, |q| f64::from(q.score));
//!     Ok(verifier.decide(&matched, &live, quality).decision == Decision::Accept)
//! }
//! ```

pub mod align;
pub mod config;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod imgproc;
pub mod landmarks;
pub mod liveness;
pub mod models;
pub mod mtcnn;
pub mod onnx;
pub mod pipeline;
pub mod quality;
pub mod second_opinion;

pub use align::{AlignError, AlignedFace};
pub use config::{
    Combine, DecodeLimits, DetectorConfig, LivenessConfig, LivenessMode, MatchConfig,
    MultiFacePolicy, QualityConfig, RuntimeConfig, VisionConfig,
};
pub use decode::DecodeError;
pub use detect::{BoundingBox, Detection, Landmarks, Point};
pub use embed::{EMBEDDING_DIM, EMBEDDING_MODEL, Embedding, EmbeddingError, MatchScore};
pub use liveness::{DtnScore, LivenessResult, MiniFasScore};
pub use models::ModelError;
pub use onnx::{OrtSetupError, SessionError};
pub use pipeline::{
    AnalyzeOptions, Cancel, FaceAnalysis, FaceLiveness, LivenessReport, ModelTimings, StageTimings,
    Vision,
};
pub use quality::QualityResult;

/// Coarse classes of [`VisionError`], for mapping to HTTP statuses and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image bytes are empty, corrupt or not decodable (400).
    InvalidImage,
    /// The image exceeds the byte or pixel limits (413).
    ImageTooLarge,
    /// The image is not JPEG, PNG or WebP (415).
    UnsupportedFormat,
    /// No face was found (422).
    NoFace,
    /// Several faces and the policy rejects that (422).
    MultipleFaces,
    /// The face could not be aligned (422).
    UnusableFace,
    /// The request was cancelled (client gone, deadline passed) before the work finished.
    Cancelled,
    /// Start-up or inference failure on the server side (500/503).
    Internal,
}

impl ErrorKind {
    /// A stable snake_case code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidImage => "invalid_image",
            Self::ImageTooLarge => "image_too_large",
            Self::UnsupportedFormat => "unsupported_image_format",
            Self::NoFace => "no_face",
            Self::MultipleFaces => "multiple_faces",
            Self::UnusableFace => "unusable_face",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }
}

/// Any failure of the vision pipeline.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// ONNX Runtime could not be found or initialised.
    #[error(transparent)]
    Setup(#[from] OrtSetupError),
    /// A model file is missing, corrupt or unloadable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A model loader thread panicked.
    #[error("a model loader thread panicked")]
    LoaderPanicked,
    /// A model the configuration needs was not loaded (internal inconsistency).
    #[error("model {file} was not loaded")]
    ModelNotLoaded {
        /// The model file.
        file: &'static str,
    },
    /// The image was rejected.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No face in the image.
    #[error("no face found in the image")]
    NoFace,
    /// Several faces and the multi-face policy is `reject`.
    #[error("{count} faces found in the image; send an image with exactly one face")]
    MultipleFaces {
        /// How many faces were found.
        count: usize,
    },
    /// Alignment failed.
    #[error(transparent)]
    Align(#[from] AlignError),
    /// Inference failed.
    #[error(transparent)]
    Inference(#[from] SessionError),
    /// The work was cancelled before the named stage.
    #[error("cancelled before {before}: the client went away or the deadline passed")]
    Cancelled {
        /// The stage that did not run.
        before: &'static str,
    },
}

impl VisionError {
    /// The error's class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Decode(
                DecodeError::Empty | DecodeError::Corrupt { .. } | DecodeError::TruncatedJpeg,
            ) => ErrorKind::InvalidImage,
            Self::Decode(DecodeError::TooManyBytes { .. } | DecodeError::TooManyPixels { .. }) => {
                ErrorKind::ImageTooLarge
            }
            Self::Decode(DecodeError::UnsupportedFormat { .. }) => ErrorKind::UnsupportedFormat,
            Self::NoFace => ErrorKind::NoFace,
            Self::MultipleFaces { .. } => ErrorKind::MultipleFaces,
            Self::Align(_) => ErrorKind::UnusableFace,
            Self::Cancelled { .. } => ErrorKind::Cancelled,
            Self::Setup(_)
            | Self::Model(_)
            | Self::LoaderPanicked
            | Self::ModelNotLoaded { .. }
            | Self::Inference(_) => ErrorKind::Internal,
        }
    }

    /// Whether the caller's input caused the error (as opposed to the server).
    pub fn is_client_error(&self) -> bool {
        self.kind() != ErrorKind::Internal
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        assert_eq!(VisionError::NoFace.kind(), ErrorKind::NoFace);
        assert_eq!(
            VisionError::from(DecodeError::TooManyBytes { size: 2, limit: 1 }).kind(),
            ErrorKind::ImageTooLarge
        );
        assert_eq!(
            VisionError::from(DecodeError::UnsupportedFormat { detected: None }).kind(),
            ErrorKind::UnsupportedFormat
        );
        assert!(VisionError::MultipleFaces { count: 2 }.is_client_error());
        assert!(!VisionError::LoaderPanicked.is_client_error());
        assert_eq!(ErrorKind::NoFace.code(), "no_face");
    }
}
