//! Shared application state: configuration, metrics, the enrolments (template store and index)
//! and the inference engine, which is loaded after the listener is up so health probes answer
//! while models load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::admission::Admission;
use crate::alerts::AlertSender;
use crate::audit::Audit;
use crate::auth::ApiKeys;
use crate::baseline::Baseline;
use crate::body_budget::BodyBudget;
use crate::config::Config;
use crate::engine::{Engine, loaded_models};
use crate::enrolments::Enrolments;
use crate::lockout::Lockouts;
use crate::metrics::Metrics;

/// The engine is not loaded yet: the service answers 503 until it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("models are still loading; retry shortly")]
pub struct NotReady;

/// State shared by every request handler.
pub struct AppState {
    /// The configuration the process started with.
    pub config: Config,
    /// The metrics registry.
    pub metrics: Metrics,
    /// Enrolled subjects and templates: the durable store and this replica's index.
    pub enrolments: Arc<Enrolments>,
    /// Queue of the spoof alert email task, when email alerts are configured.
    pub alerts: Option<AlertSender>,
    /// Bounds the inferences running and waiting.
    pub admission: Admission,
    /// Bounds the request body bytes held at once.
    pub body_budget: BodyBudget,
    /// Per-subject lockout after failed verifications.
    pub lockouts: Lockouts,
    /// The API keys in force.
    pub api_keys: Arc<ApiKeys>,
    /// The audit trail.
    pub audit: Audit,
    /// Challenge-liveness sessions of this replica.
    pub sessions: crate::api::sessions::SessionService,
    /// How many refused requests of each client are logged and audited.
    pub denied: crate::auth::denied::DeniedLog,
    engine: OnceLock<Arc<Engine>>,
    shutting_down: AtomicBool,
}

/// Who may call the API, and where their calls are recorded.
pub struct AccessControl {
    /// The API keys.
    pub api_keys: Arc<ApiKeys>,
    /// The audit trail.
    pub audit: Audit,
}

/// The handle handlers receive.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// New state with no engine loaded yet.
    pub fn new(
        config: Config,
        metrics: Metrics,
        enrolments: Arc<Enrolments>,
        alerts: Option<AlertSender>,
        access: AccessControl,
        lockouts: Lockouts,
    ) -> Self {
        let admission = Admission::new(config.admission_limits());
        let body_budget = BodyBudget::new(
            config.max_body_memory_bytes as u64,
            config.max_body_bytes as u64,
        );
        let sessions = crate::api::sessions::SessionService::new(&config);
        Self {
            sessions,
            config,
            metrics,
            enrolments,
            alerts,
            admission,
            body_budget,
            lockouts,
            api_keys: access.api_keys,
            audit: access.audit,
            denied: crate::auth::denied::DeniedLog::default(),
            engine: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Install the loaded engine; readiness turns true. A second call is ignored.
    pub fn set_engine(&self, engine: Engine) {
        self.sessions.load_models(engine.vision.config());
        self.metrics
            .model_info
            .with_label_values(&[engine.verifier.fusion().name(), "fusion"])
            .set(1);
        for (model, kind) in loaded_models(&engine.vision) {
            self.metrics
                .model_info
                .with_label_values(&[model, kind])
                .set(1);
        }
        match Baseline::recorded() {
            Ok(baseline) => {
                let v = engine.verifier.config();
                let applies = baseline.applies_to(
                    v.match_threshold,
                    v.liveness_threshold,
                    engine.vision.config().liveness.mode,
                );
                if !applies {
                    tracing::info!(
                        "the evaluation baseline was measured at other thresholds or another \
                         liveness mode; facekey_evaluation_applies is 0"
                    );
                }
                self.metrics.set_baseline(&baseline, applies);
            }
            Err(e) => tracing::warn!(error = %e, "evaluation baseline not exposed"),
        }
        let _ = self.engine.set(Arc::new(engine));
    }

    /// The engine, or [`NotReady`] while it is still loading.
    pub fn engine(&self) -> Result<Arc<Engine>, NotReady> {
        self.engine.get().cloned().ok_or(NotReady)
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
