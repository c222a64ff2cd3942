//! The inference engine: the vision pipeline that measures faces and the verifier that decides,
//! loaded once at start-up from the configuration and shared by every request.

use crate::config::Config;
use crate::fusion::{FusionMlp, WeightsError};
use crate::verifier::Verifier;
use crate::vision::{Vision, VisionError};

/// Why the engine could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The fusion weights are missing, unknown or invalid.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A model download was requested; the runtime only loads files.
    #[error(
        "{uri_env}={0} is not supported: the runtime never downloads models; mount the model \
         (models.spoof.pvc or configMap) and set {dir_env}",
        uri_env = facekey_settings::env::SPOOF_MODEL_URI,
        dir_env = facekey_settings::env::SPOOF_MODEL_DIR
    )]
    ModelUri(String),
    /// ONNX Runtime or a model could not be loaded.
    #[error(transparent)]
    Vision(#[from] VisionError),
}

/// Everything loaded at start-up that requests compute with.
#[derive(Debug)]
pub struct Engine {
    /// The face pipeline: detection, embedding, liveness, quality (measurements).
    pub vision: Vision,
    /// Thresholds, policy and fusion weights (decisions).
    pub verifier: Verifier,
}

impl Engine {
    /// Load the engine described by the configuration.
    pub fn load(config: &Config) -> Result<Self, EngineError> {
        let fusion = FusionMlp::load(&config.weights)?;
        if let Some(uri) = &config.spoof_model_uri {
            return Err(EngineError::ModelUri(uri.clone()));
        }
        let verifier = Verifier::new(fusion, config.verifier_config());
        if !verifier.config().check_liveness {
            tracing::warn!(
                "INSECURE: passive liveness is off ({}=off); every face counts as live and a \
                 printed photo of an enrolled person will be accepted",
                facekey_settings::env::LIVENESS
            );
        }
        let vision = Vision::load(config.vision_config())?;
        Ok(Self { vision, verifier })
    }
}

/// The ONNX models the pipeline runs, by metric name and kind.
pub fn loaded_models(vision: &Vision) -> Vec<(&'static str, &'static str)> {
    let mut models = vec![
        ("mtcnn_pnet", "detection"),
        ("mtcnn_rnet", "detection"),
        ("mtcnn_onet", "detection"),
        ("dlib_resnet", "embedding"),
    ];
    let mode = vision.config().liveness.mode;
    if mode.uses_dtn() {
        models.push(("dtn", "liveness"));
    }
    if mode.uses_minifas() {
        models.push(("minifas", "liveness"));
    }
    models
}
