//! FaceKey's offline evaluation lab: evaluates the runtime's verification pipeline on data
//! simulated from the sample images, and fits a second fusion-weights file. A crate of its own
//! beside the runtime (which never calls it), depending on the runtime's library: vision
//! measures, the runtime's [`facekey_runtime::verifier::Verifier`] decides, and the defaults
//! come from the same settings catalogue as the server's ([`facekey_settings`]).
//!
//! No real presentation attacks and no labelled same-person photo pairs exist in this project, so
//! everything here is built from the few sample photos in `runtime/testdata/faces/`:
//!
//! - genuine pairs: a face against degraded copies of its own photo ([`degrade`]);
//! - impostor pairs: faces of different people;
//! - presentation attacks: printed-photo and screen-replay *simulations* ([`attacks`]) over a
//!   synthetic background, placed with a perspective warp ([`geometry`]).
//!
//! [`collect`] runs the real pipeline over them and produces [`features::FeatureRow`]s,
//! [`metrics`] turns rows into error rates, [`report`] into markdown, and [`fit`] fits the
//! 3-4-3-1 fusion MLP on them. The image transforms are pure functions of their input and a seed.
//! Recorded results live in `runtime/eval/results/` (data), apart from this code.

pub mod attacks;
pub mod collect;
pub mod degrade;
pub mod enrolment;
pub mod eyes;
pub mod features;
pub mod fit;
pub mod geometry;
pub mod glasses;
pub mod imageops;
pub mod metrics;
pub mod report;
pub mod rng;
pub mod sequences;
pub mod zfusion;

use std::path::PathBuf;

use facekey_runtime::fusion::WeightsError;
use facekey_runtime::vision::VisionError;

/// Any failure of the evaluation tooling.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Image encoding or decoding inside a transform failed.
    #[error("{context}: {source}")]
    Image {
        /// Which step failed.
        context: String,
        /// The codec error.
        #[source]
        source: image::ImageError,
    },
    /// The vision pipeline failed on an image.
    #[error("{context}: {source}")]
    Vision {
        /// Which image or step failed.
        context: String,
        /// The pipeline error.
        #[source]
        source: VisionError,
    },
    /// A features CSV file is malformed.
    #[error("{path}: line {line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Fusion weights could not be loaded.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The data is unusable for the requested step (e.g. no positive rows to fit).
    #[error("{0}")]
    Data(String),
    /// A JSON document could not be produced.
    #[error("{context}: {source}")]
    Json {
        /// What was being serialised.
        context: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}
