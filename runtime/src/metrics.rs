//! Prometheus metrics of the runtime, registered in one registry and rendered in the text
//! exposition format at `GET /metrics`.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::baseline::Baseline;
use crate::decision::Decision;
use crate::verifier::LivenessState;
use crate::vision::second_opinion::MatchModels;

/// Buckets for HTTP request latency, in seconds: 0.1 ms to 10 s.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets for model inference and pipeline stages, in seconds: 10 µs to 5 s.
const INFERENCE_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for scores in [0, 1]: twentieths.
const SCORE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95, 1.0,
];

/// Failure to create or render metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (a programming error caught at start-up).
    #[error("cannot register metric: {0}")]
    Register(#[from] prometheus::Error),
    /// The text encoder produced invalid UTF-8 (should not happen).
    #[error("cannot encode metrics: {0}")]
    Encode(String),
}

/// Why the body guards refused a body: the `reason` of `facekey_body_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefusal {
    /// 413: a declared length over the body limit.
    DeclaredTooLarge,
    /// 429 `too_many_uploads`: the key's bodies hold its share of the body memory.
    KeyShare,
    /// 408 `body_too_slow`: the body fell behind the rate floor.
    TooSlow,
}

impl BodyRefusal {
    /// Every reason (each series exists from the start).
    pub const ALL: [Self; 3] = [Self::DeclaredTooLarge, Self::KeyShare, Self::TooSlow];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::DeclaredTooLarge => "declared_too_large",
            Self::KeyShare => "key_share",
            Self::TooSlow => "too_slow",
        }
    }
}

/// Why creating a subject or enrolling a face was refused by a bound of the store: the `reason`
/// of `facekey_subjects_refused_total` and `facekey_templates_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRefusal {
    /// 507 `store_full`: the store holds `FACEKEY_MAX_SUBJECTS` subjects or
    /// `FACEKEY_MAX_TEMPLATES` templates.
    StoreFull,
    /// 507 `key_subject_quota` or `key_template_quota`: the key holds
    /// `FACEKEY_MAX_SUBJECTS_PER_KEY` subjects or `FACEKEY_MAX_TEMPLATES_PER_KEY` templates.
    KeyQuota,
}

impl StoreRefusal {
    /// Every reason (each series exists from the start).
    pub const ALL: [Self; 2] = [Self::StoreFull, Self::KeyQuota];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::StoreFull => "store_full",
            Self::KeyQuota => "key_quota",
        }
    }
}

/// Families an open `/metrics` on the API port leaves out (`FACEKEY_METRICS_AUTH=open` and no
/// `metrics` key presented): each attempt's scores, since a histogram's `_sum` read before and
/// after one's own verification gives its exact score, which answers withhold from keys without
/// `admin` so that nobody can tune a photo against the threshold; and the per-key quota series,
/// which name key ids. The operations listener and keyed scrapes have everything.
pub const PRIVATE_FAMILIES: [&str; 4] = [
    "facekey_match_similarity",
    "facekey_liveness_score",
    "facekey_fused_probability",
    "facekey_key_quota_held",
];

fn encode(families: &[prometheus::proto::MetricFamily]) -> Result<String, MetricsError> {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(families, &mut buf)
        .map_err(MetricsError::Register)?;
    String::from_utf8(buf).map_err(|e| MetricsError::Encode(e.to_string()))
}

/// Every metric the runtime exposes.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Held by a scrape while it sets the gauges read at scrape time and renders them, so two
    /// concurrent scrapes (a Prometheus HA pair) cannot reset each other's series in between.
    scrape: std::sync::Arc<std::sync::Mutex<()>>,
    /// Requests by matched route, method and status code.
    pub http_requests: IntCounterVec,
    /// Request latency by matched route.
    pub http_duration: HistogramVec,
    /// Pure model inference latency by model name.
    pub inference_duration: HistogramVec,
    /// Pipeline stage latency by stage name.
    pub stage_duration: HistogramVec,
    /// Authentication decisions by outcome.
    pub decisions: IntCounterVec,
    /// Faces judged a presentation attack.
    pub spoofs_detected: IntCounter,
    /// Subjects locked after repeated failed verifications.
    pub subject_lockouts: IntCounter,
    /// Audit events that could not be written.
    pub audit_write_failures: IntCounter,
    /// Writes of the embedded mode's subject locks that failed.
    pub lockout_saves_failed: IntCounter,
    /// Writes of the embedded mode's replay record that failed.
    pub replay_record_writes_failed: IntCounter,
    /// Liveness verdicts by state (`live`, `spoof`, `unknown`, `off`).
    pub liveness_checks: IntCounterVec,
    /// Verifications by the embedding models their match score came from (`dlib+faceres`
    /// fused, or `dlib` alone for subjects enrolled before faceres-deep).
    pub verify_match_models: IntCounterVec,
    /// Spoof alert emails by result (`sent`, `failed`, `dropped` when the queue was full).
    pub alert_emails: IntCounterVec,
    /// 1 when the SMTP relay of the alert emails answered and accepted the login at the last
    /// check, 0 when not; the series exists only with SMTP configured (label `smarthost`).
    pub alert_smtp_reachable: IntGaugeVec,
    /// Constant 1, labelled with the build version.
    pub build_info: IntGaugeVec,
    /// Match similarity of verifications and identifications, by final decision.
    pub match_similarity: HistogramVec,
    /// Liveness score of those, by final decision.
    pub liveness_score: HistogramVec,
    /// Fused probability of those, by final decision.
    pub fused_probability: HistogramVec,
    /// The evaluation baseline's error rates.
    pub evaluation_error_rate: GaugeVec,
    /// The evaluation baseline's score quantiles.
    pub evaluation_score_quantile: GaugeVec,
    /// 1 when the served thresholds and liveness mode are those the baseline was measured at.
    pub evaluation_applies: IntGauge,
    /// Inference requests refused by admission control (503 `overloaded`).
    pub admission_rejected: IntCounterVec,
    /// Recent inference service time, seconds (how long an inference holds its place).
    pub inference_service_seconds: Gauge,
    /// Offered load on the inference places (arrival rate x service time / places).
    pub admission_offered_load: Gauge,
    /// Request bodies refused by the body guards, by reason ([`BodyRefusal`]).
    pub body_refused: IntCounterVec,
    /// Subject creations refused by a bound of the store, by reason ([`StoreRefusal`]).
    pub subjects_refused: IntCounterVec,
    /// Enrolments (new templates) refused by a bound of the store, by reason ([`StoreRefusal`]).
    pub templates_refused: IntCounterVec,
    /// What each key held to a per-key quota holds, by key id and quota (set at each scrape).
    pub key_quota_held: IntGaugeVec,
    /// The per-key quotas by quota; 0 when there is none.
    pub key_quota_limit: IntGaugeVec,
    /// Request body bytes reserved now.
    pub body_memory_bytes: IntGauge,
    /// Inferences stopped at a stage boundary because their request went away.
    pub inferences_cancelled: IntCounter,
    /// Inferences running now.
    pub inferences_in_flight: IntGauge,
    /// Requests waiting for an inference place now.
    pub inferences_queued: IntGauge,
    /// 1 while the template store is reachable, 0 while writes are refused.
    pub store_up: IntGauge,
    /// Stored templates this replica's keys do not open, left out of its index.
    pub store_unreadable_templates: IntGauge,
    /// Subjects in this replica's index.
    pub enrolled_subjects: IntGauge,
    /// Templates in this replica's index, of every embedding model (what `FACEKEY_MAX_TEMPLATES`
    /// bounds).
    pub enrolled_templates: IntGauge,
    /// `FACEKEY_MAX_SUBJECTS`: the most subjects the store takes.
    pub enrolled_subjects_limit: IntGauge,
    /// `FACEKEY_MAX_TEMPLATES`: the most templates the store takes.
    pub enrolled_templates_limit: IntGauge,
    /// Subjects holding templates of another embedding model (to re-enrol).
    pub subjects_outdated: IntGauge,
    /// Constant 1 per loaded model, labelled with its name and kind.
    pub model_info: IntGaugeVec,
    /// Refused requests by route and reason (`missing_key`, `invalid_key`, `forbidden`,
    /// `rate_limited`); never the key.
    pub auth_failures: IntCounterVec,
    /// API keys loaded from the keys file now.
    pub api_keys: IntGauge,
    /// Open HTTP connections (both listeners).
    pub http_connections: IntGauge,
    /// 1 while failed verifications are counted in this replica's memory because the shared
    /// lockout ledger is unreachable.
    pub lockout_ledger_local: IntGauge,
    /// Re-reads of the changed keys file by result (`loaded`, `rejected`).
    pub api_key_reloads: IntCounterVec,
    /// Challenge-liveness sessions: started, passed, failed by reason, frames, open now.
    pub sessions: crate::api::sessions::SessionMetrics,
    /// `decisions` of accept and reject, resolved once (no label lookup per request).
    decision_counts: [IntCounter; 2],
    /// `inference_duration` of the fusion model, resolved on first use.
    fusion_duration: OnceLock<Histogram>,
}

impl Metrics {
    /// Create and register all metrics in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "facekey_http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "facekey_http_request_duration_seconds",
                "HTTP request latency by route, from first byte in to response head out.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )?;
        let inference_duration = HistogramVec::new(
            HistogramOpts::new(
                "facekey_inference_duration_seconds",
                "Pure model inference latency by model.",
            )
            .buckets(INFERENCE_BUCKETS.to_vec()),
            &["model"],
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "facekey_stage_duration_seconds",
                "Verification pipeline stage latency by stage.",
            )
            .buckets(INFERENCE_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "facekey_decisions_total",
                "Authentication decisions by outcome.",
            ),
            &["outcome"],
        )?;
        let spoofs_detected = IntCounter::new(
            "facekey_spoof_detected_total",
            "Faces the liveness check judged a presentation attack.",
        )?;
        let subject_lockouts = IntCounter::new(
            "facekey_subject_lockouts_total",
            "Subjects locked after too many failed verifications within the lockout window (one \
             event per lock: security log line, this counter, the alert email).",
        )?;
        let audit_write_failures = IntCounter::new(
            "facekey_audit_write_failures_total",
            "Audit events that could not be written to the audit sink (a full disk, a closed \
             stdout); the request was answered anyway and each failure is logged.",
        )?;
        let lockout_saves_failed = IntCounter::new(
            "facekey_lockout_saves_failed_total",
            "Writes of the subject locks to the data directory (embedded mode) that failed: the \
             locks hold until this replica restarts, not after it; each failure is logged.",
        )?;
        let replay_record_writes_failed = IntCounter::new(
            "facekey_replay_record_writes_failed_total",
            "Writes of the replay record of accepted liveness sessions to the data directory \
             (embedded mode) that failed: the record holds in memory until this replica \
             restarts, not after; each failure is logged.",
        )?;
        let liveness_checks = IntCounterVec::new(
            Opts::new(
                "facekey_liveness_checks_total",
                "Liveness verdicts by state: live, spoof, unknown (on but could not run; never \
                 counts as live), off (liveness disabled).",
            ),
            &["state"],
        )?;
        let verify_match_models = IntCounterVec::new(
            Opts::new(
                "facekey_verify_match_models_total",
                "Verifications by the embedding models of their match score: dlib+faceres \
                 (fused) or dlib (alone: the subject's faces predate faceres-deep; re-enrol).",
            ),
            &["models"],
        )?;
        let alert_emails = IntCounterVec::new(
            Opts::new(
                "facekey_alert_emails_total",
                "Alert emails (spoof attempts and lockouts) by result: sent, failed (each failed \
                 attempt), dropped (events not queued: queue full, or the alert task closed).",
            ),
            &["result"],
        )?;
        let alert_smtp_reachable = IntGaugeVec::new(
            Opts::new(
                "facekey_alert_smtp_reachable",
                "1 when the SMTP relay of the alert emails answered, spoke TLS and accepted the \
                 login at the last check (at start-up, every 10 minutes and with each email), 0 \
                 when not; only with SMTP configured.",
            ),
            &["smarthost"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "facekey_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )?;
        let model_info = IntGaugeVec::new(
            Opts::new(
                "facekey_model_info",
                "Loaded models; the value is 1 while loaded.",
            ),
            &["model", "kind"],
        )?;
        let score_histogram = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(SCORE_BUCKETS.to_vec()),
                &["decision"],
            )
        };
        let match_similarity = score_histogram(
            "facekey_match_similarity",
            "Match similarity of each verification (and each identification's best match), by the \
             final decision; compare with facekey_evaluation_score_quantile to see drift.",
        )?;
        let liveness_score = score_histogram(
            "facekey_liveness_score",
            "Combined passive liveness score of each verification and identification that measured \
             one, by the final decision.",
        )?;
        let fused_probability = score_histogram(
            "facekey_fused_probability",
            "Fused authentication probability of each verification (and identification best \
             match), by the final decision.",
        )?;
        let evaluation_error_rate = GaugeVec::new(
            Opts::new(
                "facekey_evaluation_error_rate",
                "Error rates the offline evaluation measured (runtime/eval/results/baseline.json, \
                 simulated data): pipeline checks without weights/policy, fused decisions with them.",
            ),
            &["measure", "weights", "policy"],
        )?;
        let evaluation_score_quantile = GaugeVec::new(
            Opts::new(
                "facekey_evaluation_score_quantile",
                "Score quantiles the offline evaluation measured per population (genuine, impostor, \
                 attack), the baseline for the live score histograms.",
            ),
            &["score", "population", "weights", "percentile"],
        )?;
        let evaluation_applies = IntGauge::new(
            "facekey_evaluation_applies",
            "1 when the served match and liveness thresholds and liveness mode are those the \
             evaluation baseline was measured at, 0 otherwise.",
        )?;
        let admission_rejected = IntCounterVec::new(
            Opts::new(
                "facekey_admission_rejected_total",
                "Requests answered 503 overloaded, by reason: queue_full (running and waiting \
                 inference places full), over_capacity (every place running and the offered \
                 load above FACEKEY_QUEUE_MAX_LOAD), wait_predicted (the wait for a place \
                 predicted beyond the bound), waited_too_long (the bound ran out while \
                 waiting), body_memory (request bodies held at once at \
                 FACEKEY_MAX_BODY_MEMORY_BYTES); and inference_share, answered 429 \
                 too_many_inferences (the key already held its share of the running places \
                 while other keys asked for them, and got no more).",
            ),
            &["reason"],
        )?;
        let inference_service_seconds = Gauge::new(
            "facekey_inference_service_seconds",
            "Recent inference service time: moving average of how long an inference holds its \
             place (0 before the first); with the queue it predicts the wait for a place.",
        )?;
        let body_refused = IntCounterVec::new(
            Opts::new(
                "facekey_body_refused_total",
                "Request bodies refused by the body guards, by reason: declared_too_large \
                 (413, a Content-Length over FACEKEY_MAX_BODY_BYTES), key_share (429 \
                 too_many_uploads, the key's bodies held its share of the body memory), \
                 too_slow (408 body_too_slow, under FACEKEY_MIN_BODY_BYTES_PER_SEC).",
            ),
            &["reason"],
        )?;
        let subjects_refused = IntCounterVec::new(
            Opts::new(
                "facekey_subjects_refused_total",
                "Subject creations refused with 507, by reason: store_full (the store holds \
                 FACEKEY_MAX_SUBJECTS subjects), key_quota (key_subject_quota: the creating key \
                 holds FACEKEY_MAX_SUBJECTS_PER_KEY).",
            ),
            &["reason"],
        )?;
        let templates_refused = IntCounterVec::new(
            Opts::new(
                "facekey_templates_refused_total",
                "Enrolments (new faces) refused with 507, by reason: store_full (the store holds \
                 FACEKEY_MAX_TEMPLATES templates), key_quota (key_template_quota: the enrolling \
                 key holds FACEKEY_MAX_TEMPLATES_PER_KEY).",
            ),
            &["reason"],
        )?;
        let key_quota_held = IntGaugeVec::new(
            Opts::new(
                "facekey_key_quota_held",
                "What each API key held to a per-key quota (enrol scope, no admin) holds, by \
                 key_id and quota: subjects it created, templates (faces) it enrolled.",
            ),
            &["key_id", "quota"],
        )?;
        let key_quota_limit = IntGaugeVec::new(
            Opts::new(
                "facekey_key_quota_limit",
                "The per-key quota by quota (FACEKEY_MAX_SUBJECTS_PER_KEY, \
                 FACEKEY_MAX_TEMPLATES_PER_KEY); 0 when there is none. Beyond it a key's writes \
                 answer 507 key_subject_quota / key_template_quota.",
            ),
            &["quota"],
        )?;
        let body_memory_bytes = IntGauge::new(
            "facekey_body_memory_bytes",
            "Request body bytes reserved now by requests being handled (each its declared \
             length, or the body limit when it declares none); FACEKEY_MAX_BODY_MEMORY_BYTES \
             bounds them.",
        )?;
        let admission_offered_load = Gauge::new(
            "facekey_admission_offered_load",
            "Offered load on the inference places: arrival rate (2 s time constant) x service \
             time / in-flight places; above FACEKEY_QUEUE_MAX_LOAD requests are not queued.",
        )?;
        let inferences_cancelled = IntCounter::new(
            "facekey_inferences_cancelled_total",
            "Inferences stopped at a stage boundary because their request went away (client \
             disconnected or the request timeout answered).",
        )?;
        let inferences_in_flight = IntGauge::new(
            "facekey_inferences_in_flight",
            "Inferences (verify, identify, enrol, liveness) running now.",
        )?;
        let inferences_queued = IntGauge::new(
            "facekey_inferences_queued",
            "Requests waiting for an inference place now.",
        )?;
        let store_up = IntGauge::new(
            "facekey_store_up",
            "1 while the template store is reachable; 0 while writes are refused (reads are served \
             from the index).",
        )?;
        let store_unreadable_templates = IntGauge::new(
            "facekey_store_unreadable_templates",
            "Stored templates that no template key of this replica opens (sealed with a key its \
             key file lacks, or damaged): left out of its index, never matched.",
        )?;
        let enrolled_subjects = IntGauge::new(
            "facekey_enrolled_subjects",
            "Enrolled subjects in this replica's template index.",
        )?;
        let enrolled_templates = IntGauge::new(
            "facekey_enrolled_templates",
            "Templates in this replica's index, of every embedding model (FACEKEY_MAX_TEMPLATES bounds them; 1:N search scans the serving model's).",
        )?;
        let enrolled_subjects_limit = IntGauge::new(
            "facekey_enrolled_subjects_limit",
            "The most subjects the store takes (FACEKEY_MAX_SUBJECTS); creating more answers 507.",
        )?;
        let enrolled_templates_limit = IntGauge::new(
            "facekey_enrolled_templates_limit",
            "The most templates the store takes (FACEKEY_MAX_TEMPLATES); enrolling more answers 507.",
        )?;
        let subjects_outdated = IntGauge::new(
            "facekey_subjects_outdated_templates",
            "Subjects holding templates of another embedding model than the serving one; those are \
             not matched until the subject is re-enrolled.",
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "facekey_auth_failures_total",
                "Requests refused by access control, by route and reason (missing_key, \
                 invalid_key, forbidden, rate_limited).",
            ),
            &["route", "reason"],
        )?;
        let api_keys = IntGauge::new("facekey_api_keys", "API keys loaded from the keys file.")?;
        let http_connections = IntGauge::new(
            "facekey_http_connections",
            "Open HTTP connections (at most FACEKEY_MAX_CONNECTIONS per listener).",
        )?;
        let lockout_ledger_local = IntGauge::new(
            "facekey_lockout_ledger_local",
            "1 while failed verifications are counted in this replica's memory because the shared \
             lockout ledger (PostgreSQL) is unreachable; 0 otherwise.",
        )?;
        let api_key_reloads = IntCounterVec::new(
            Opts::new(
                "facekey_api_key_reloads_total",
                "Re-reads of the changed API keys file, by result (loaded, rejected: the old keys \
                 stay in force).",
            ),
            &["result"],
        )?;
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(auth_failures.clone()),
            Box::new(api_keys.clone()),
            Box::new(lockout_ledger_local.clone()),
            Box::new(http_connections.clone()),
            Box::new(api_key_reloads.clone()),
            Box::new(match_similarity.clone()),
            Box::new(liveness_score.clone()),
            Box::new(fused_probability.clone()),
            Box::new(evaluation_error_rate.clone()),
            Box::new(evaluation_score_quantile.clone()),
            Box::new(evaluation_applies.clone()),
            Box::new(admission_rejected.clone()),
            Box::new(body_refused.clone()),
            Box::new(subjects_refused.clone()),
            Box::new(templates_refused.clone()),
            Box::new(key_quota_held.clone()),
            Box::new(key_quota_limit.clone()),
            Box::new(inference_service_seconds.clone()),
            Box::new(admission_offered_load.clone()),
            Box::new(body_memory_bytes.clone()),
            Box::new(inferences_cancelled.clone()),
            Box::new(inferences_in_flight.clone()),
            Box::new(inferences_queued.clone()),
            Box::new(store_up.clone()),
            Box::new(store_unreadable_templates.clone()),
            Box::new(enrolled_subjects.clone()),
            Box::new(enrolled_templates.clone()),
            Box::new(enrolled_subjects_limit.clone()),
            Box::new(enrolled_templates_limit.clone()),
            Box::new(subjects_outdated.clone()),
            Box::new(http_duration.clone()),
            Box::new(inference_duration.clone()),
            Box::new(stage_duration.clone()),
            Box::new(decisions.clone()),
            Box::new(spoofs_detected.clone()),
            Box::new(subject_lockouts.clone()),
            Box::new(audit_write_failures.clone()),
            Box::new(lockout_saves_failed.clone()),
            Box::new(replay_record_writes_failed.clone()),
            Box::new(liveness_checks.clone()),
            Box::new(verify_match_models.clone()),
            Box::new(alert_emails.clone()),
            Box::new(alert_smtp_reachable.clone()),
            Box::new(build_info.clone()),
            Box::new(model_info.clone()),
        ] {
            registry.register(c)?;
        }
        let sessions = crate::api::sessions::SessionMetrics::register(&registry)?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let decision_counts = [Decision::Accept, Decision::Reject]
            .map(|d| decisions.with_label_values(&[d.as_str()]));
        for d in [Decision::Accept, Decision::Reject] {
            for h in [&match_similarity, &liveness_score, &fused_probability] {
                h.with_label_values(&[d.as_str()]);
            }
        }
        for state in [
            LivenessState::Live,
            LivenessState::Spoof,
            LivenessState::Unknown,
            LivenessState::Off,
        ] {
            liveness_checks.with_label_values(&[state.as_str()]);
        }
        for m in [MatchModels::Dlib, MatchModels::DlibFaceres] {
            verify_match_models.with_label_values(&[m.as_str()]);
        }
        for result in ["loaded", "rejected"] {
            api_key_reloads.with_label_values(&[result]);
        }
        // Every keyed route's refusals of requests without a valid key start at 0, so the
        // first burst against a route is a rise `rate()` sees (`FaceKeyAuthFailureBurst`).
        for (_, route, access) in crate::auth::policy::ROUTES {
            if matches!(
                access,
                crate::auth::policy::Access::Scope(_) | crate::auth::policy::Access::AnyKey
            ) {
                for reason in ["missing_key", "invalid_key"] {
                    auth_failures.with_label_values(&[route, reason]);
                }
            }
        }
        for reason in crate::admission::OverloadReason::LABELS {
            admission_rejected.with_label_values(&[reason]);
        }
        admission_rejected.with_label_values(&[crate::body_budget::REFUSAL_LABEL]);
        admission_rejected.with_label_values(&[crate::admission::InferenceShareFull::LABEL]);
        for reason in BodyRefusal::ALL {
            body_refused.with_label_values(&[reason.label()]);
        }
        for reason in StoreRefusal::ALL {
            subjects_refused.with_label_values(&[reason.label()]);
            templates_refused.with_label_values(&[reason.label()]);
        }
        Ok(Self {
            scrape: std::sync::Arc::default(),
            registry,
            auth_failures,
            api_keys,
            lockout_ledger_local,
            http_connections,
            api_key_reloads,
            http_requests,
            http_duration,
            inference_duration,
            stage_duration,
            decisions,
            spoofs_detected,
            subject_lockouts,
            audit_write_failures,
            lockout_saves_failed,
            replay_record_writes_failed,
            liveness_checks,
            verify_match_models,
            alert_emails,
            alert_smtp_reachable,
            build_info,
            match_similarity,
            liveness_score,
            fused_probability,
            evaluation_error_rate,
            evaluation_score_quantile,
            evaluation_applies,
            admission_rejected,
            body_refused,
            subjects_refused,
            templates_refused,
            key_quota_held,
            key_quota_limit,
            inference_service_seconds,
            admission_offered_load,
            body_memory_bytes,
            inferences_cancelled,
            inferences_in_flight,
            inferences_queued,
            store_up,
            store_unreadable_templates,
            enrolled_subjects,
            enrolled_templates,
            enrolled_subjects_limit,
            enrolled_templates_limit,
            subjects_outdated,
            model_info,
            sessions,
            decision_counts,
            fusion_duration: OnceLock::new(),
        })
    }

    /// Count one subject creation (`of` subjects) or enrolment (`of` templates) refused by a
    /// bound of the store.
    pub fn record_store_refusal(&self, of: crate::store::QuotaOf, reason: StoreRefusal) {
        let counter = match of {
            crate::store::QuotaOf::Subjects => &self.subjects_refused,
            crate::store::QuotaOf::Templates => &self.templates_refused,
        };
        counter.with_label_values(&[reason.label()]).inc();
    }

    /// Count one authentication decision.
    pub fn record_decision(&self, decision: Decision) {
        let i = match decision {
            Decision::Accept => 0,
            Decision::Reject => 1,
        };
        self.decision_counts[i].inc();
    }

    /// The fusion model's `inference_duration` histogram (`/v1/score`'s per-request timer).
    pub fn fusion_duration(&self) -> &Histogram {
        self.fusion_duration
            .get_or_init(|| self.inference_duration.with_label_values(&["fusion"]))
    }

    /// Record the scores behind one final decision.
    pub fn record_scores(
        &self,
        decision: Decision,
        similarity: f64,
        liveness: Option<f64>,
        probability: f64,
    ) {
        let d = [decision.as_str()];
        self.match_similarity
            .with_label_values(&d)
            .observe(similarity);
        if let Some(l) = liveness {
            self.liveness_score.with_label_values(&d).observe(l);
        }
        self.fused_probability
            .with_label_values(&d)
            .observe(probability);
    }

    /// Expose the evaluation baseline, and whether it applies to the served settings.
    pub fn set_baseline(&self, baseline: &Baseline, applies: bool) {
        for r in &baseline.rates {
            self.evaluation_error_rate
                .with_label_values(&[
                    r.measure.as_str(),
                    r.weights.as_deref().unwrap_or(""),
                    r.policy.as_deref().unwrap_or(""),
                ])
                .set(r.value());
        }
        for q in &baseline.quantiles {
            self.evaluation_score_quantile
                .with_label_values(&[
                    q.score.as_str(),
                    q.population.as_str(),
                    q.weights.as_deref().unwrap_or(""),
                    &format!("{}", (q.quantile * 100.0).round()),
                ])
                .set(q.value);
        }
        self.evaluation_applies.set(i64::from(applies));
    }

    /// Count one liveness verdict.
    pub fn record_liveness(&self, state: LivenessState) {
        self.liveness_checks
            .with_label_values(&[state.as_str()])
            .inc();
    }

    /// Set the scrape-time gauges (`fill`) and render, one scrape at a time: every family, or
    /// for a `public` scrape all but [`PRIVATE_FAMILIES`].
    pub fn scrape(&self, public: bool, fill: impl FnOnce(&Self)) -> Result<String, MetricsError> {
        let _one_at_a_time = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fill(self);
        let mut families = self.registry.gather();
        if public {
            families.retain(|f| !PRIVATE_FAMILIES.contains(&f.name()));
        }
        encode(&families)
    }

    /// Render all metrics in the Prometheus text format.
    pub fn render(&self) -> Result<String, MetricsError> {
        encode(&self.registry.gather())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_families() {
        let m = Metrics::new().unwrap();
        m.record_decision(Decision::Accept);
        m.record_liveness(LivenessState::Unknown);
        m.inference_duration
            .with_label_values(&["fusion"])
            .observe(0.001);
        m.http_duration
            .with_label_values(&["/v1/score"])
            .observe(0.002);
        let text = m.render().unwrap();
        assert!(
            text.contains("facekey_decisions_total{outcome=\"accept\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("facekey_decisions_total{outcome=\"reject\"} 0"),
            "{text}"
        );
        assert!(text.contains("facekey_inference_duration_seconds_count{model=\"fusion\"} 1"));
        assert!(text.contains("facekey_build_info{version=\""));
        assert!(text.contains("facekey_liveness_checks_total{state=\"unknown\"} 1"));
        assert!(text.contains("facekey_liveness_checks_total{state=\"off\"} 0"));
        assert!(text.contains("# TYPE facekey_http_request_duration_seconds histogram"));
        // Refusals without a valid key start at 0 on keyed routes, none on open ones.
        assert!(
            text.contains(
                "facekey_auth_failures_total{reason=\"missing_key\",route=\"/v1/verify\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains(
            "facekey_auth_failures_total{reason=\"invalid_key\",route=\"/v1/auth/whoami\"} 0"
        ));
        assert!(!text.contains("route=\"/healthz\""), "{text}");
    }
}
