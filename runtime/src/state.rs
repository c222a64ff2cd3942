//! Shared application state: configuration, metrics and the inference engine, which is loaded
//! after the listener is up so health probes answer while models load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::alerts::AlertSender;
use crate::api::error::ApiError;
use crate::config::{Config, WeightsSource};
use crate::fusion::{FusionMlp, WeightsError};
use crate::metrics::Metrics;
use crate::store::TemplateStore;
use crate::vision::{Vision, VisionError};

/// Default authentication threshold when neither the configuration nor the weights set one.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// Why the engine could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The fusion weights are missing or invalid.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The configured built-in weights name does not exist.
    #[error("no built-in fusion weights named {0:?}")]
    UnknownBuiltIn(String),
    /// A model download was requested; the runtime only loads files.
    #[error(
        "FACEKEY_SPOOF_MODEL_URI={0} is not supported: the runtime never downloads models; mount the model \
         (models.spoof.pvc or configMap) and set FACEKEY_SPOOF_MODEL_DIR"
    )]
    ModelUri(String),
    /// ONNX Runtime or a model could not be loaded.
    #[error(transparent)]
    Vision(#[from] VisionError),
}

/// Everything loaded at start-up that requests compute with.
#[derive(Debug)]
pub struct Engine {
    /// The score-fusion MLP.
    pub fusion: FusionMlp,
    /// The authentication decision threshold on the fusion probability.
    pub threshold: f64,
    /// The face pipeline: detection, embedding, liveness, quality.
    pub vision: Vision,
}

impl Engine {
    /// Load the engine described by the configuration.
    pub fn load(config: &Config) -> Result<Self, EngineError> {
        let fusion = match &config.weights {
            WeightsSource::BuiltIn(name) => FusionMlp::built_in(name)
                .ok_or_else(|| EngineError::UnknownBuiltIn(name.clone()))??,
            WeightsSource::File(path) => FusionMlp::from_path(path)?,
        };
        let threshold = config
            .threshold
            .or(fusion.recommended_threshold())
            .unwrap_or(DEFAULT_THRESHOLD);
        if let Some(uri) = &config.spoof_model_uri {
            return Err(EngineError::ModelUri(uri.clone()));
        }
        let vision = Vision::load(config.vision_config())?;
        Ok(Self {
            fusion,
            threshold,
            vision,
        })
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

/// State shared by every request handler.
pub struct AppState {
    /// The configuration the process started with.
    pub config: Config,
    /// The metrics registry.
    pub metrics: Metrics,
    /// Enrolled subjects and templates.
    pub store: Arc<dyn TemplateStore>,
    /// Queue of the spoof alert email task, when email alerts are configured.
    pub alerts: Option<AlertSender>,
    engine: OnceLock<Arc<Engine>>,
    shutting_down: AtomicBool,
}

/// The handle handlers receive.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// New state with no engine loaded yet.
    pub fn new(
        config: Config,
        metrics: Metrics,
        store: Arc<dyn TemplateStore>,
        alerts: Option<AlertSender>,
    ) -> Self {
        Self {
            config,
            metrics,
            store,
            alerts,
            engine: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Install the loaded engine; readiness turns true. A second call is ignored.
    pub fn set_engine(&self, engine: Engine) {
        self.metrics
            .model_info
            .with_label_values(&[engine.fusion.name(), "fusion"])
            .set(1);
        for (model, kind) in loaded_models(&engine.vision) {
            self.metrics
                .model_info
                .with_label_values(&[model, kind])
                .set(1);
        }
        let _ = self.engine.set(Arc::new(engine));
    }

    /// The engine, or 503 `not_ready` while it is still loading.
    pub fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.engine
            .get()
            .cloned()
            .ok_or_else(|| ApiError::not_ready("models are still loading; retry shortly"))
    }

    /// Why the service is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if self.engine.get().is_none() {
            Some("models loading")
        } else {
            None
        }
    }

    /// Mark the process as draining so readiness fails and load balancers stop sending traffic.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}
