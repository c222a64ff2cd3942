//! Challenge-response liveness sessions over HTTP (`/v1/liveness/sessions`): open a session
//! with a random challenge, send camera frames in batches and get live feedback, read the
//! verdict, and verify or identify with a passed session instead of (or beside) an image. The
//! rules live in [`crate::challenge`]; this module parses requests, runs frames through admission
//! control and the inference pool, and records metrics and spoof events.
//!
//! Sessions live behind [`SessionStore`]: in this replica's memory
//! ([`crate::challenge::session::Registry`]) with the embedded template store, or in the shared
//! PostgreSQL database ([`crate::challenge::pg::PgSessions`]) when replicas share
//! `FACEKEY_DATABASE_URL`, so any replica serves any call of a session and a restart keeps
//! them. A session store that cannot be reached answers 503 `store_unavailable`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry as PromRegistry};
use serde::{Deserialize, Serialize};

use super::blocking::{Admitted, admit, with_engine};
use super::error::{ApiError, ErrorBody};
use super::extract::{
    ApiPath, is_json_content_type, is_multipart_content_type, parse_json, read_body,
};
use super::faces::{
    LivenessReportItem, MatchReport, Settled, is_admin, match_warnings, request_id,
    settle_verification, verifiable_subject,
};
use super::image_input::{ImageInput, SESSION_FIELD, decode_base64_image};
use crate::alerts::SpoofAttempt;
use crate::audit::AuditDetail;
use crate::auth::Caller;
use crate::challenge::fingerprint::Fingerprint;
use crate::challenge::replay::{Compared, Replayed, nearest_replay};
use crate::challenge::session::{
    BatchResult, Concluded, Registry, SessionError, SessionLimits, SessionState, SessionUse,
    SessionView,
};
use crate::challenge::store::SessionStore;
use crate::challenge::{
    Action, ActionResult, ChallengePolicy, FailReason, FrameFeedback, FrameObservation, Outcome,
};
use crate::config::{Config, Switch};
use crate::decision::Decision;
use crate::engine::Engine;
use crate::state::SharedState;
use crate::verifier::{DecisionPolicy, LivenessState, LivenessVerdict, MatchVerdict, Reason};
use crate::vision::landmarks::{ChallengeModels, observe_frame};
use crate::vision::{AnalyzeOptions, Embedding, QualityResult, VisionConfig, VisionError};

/// Route label of spoof events raised by a failed challenge.
pub const FRAMES_ROUTE: &str = "/v1/liveness/sessions/{id}/frames";
/// Route label of spoof events raised by a verification (a replayed session).
const VERIFY_ROUTE: &str = "/v1/verify";

/// Session metrics (registered with the runtime's registry by [`crate::metrics::Metrics`]).
#[derive(Clone)]
pub struct SessionMetrics {
    /// Sessions opened.
    pub started: IntCounter,
    /// Sessions that passed.
    pub passed: IntCounter,
    /// Sessions that failed, by reason (one count per reason of a failure).
    pub failed: IntCounterVec,
    /// Sessions that expired (also failures with reason `expired`), or that their client closed
    /// in progress, after a usable face was seen: people giving up, or a client probing the
    /// checker's per-frame feedback (which raises no spoof event).
    pub abandoned: IntCounter,
    /// Sessions that ended after a usable face was seen: passed, failed with a face, or
    /// abandoned. What abandoned sessions are a share of: sessions opened and left without a
    /// face (cheap to open by the thousand) do not dilute it.
    pub faced: IntCounter,
    /// Frames received, by whether a usable face was observed (`face`, `no_face`).
    pub frames: IntCounterVec,
    /// Sessions open now (on this replica, or in the shared database; updated when sessions
    /// are opened, end or are swept).
    pub active: IntGauge,
    /// Sessions their client closed (`DELETE`), in any state.
    pub closed: IntCounter,
    /// Passed sessions refused at verify or identify as replays of an accepted one.
    pub replayed: IntCounter,
    /// Sessions that ended in progress (closed by their client, or expired) before a usable
    /// face was seen: people who never started, or a client redrawing challenges.
    pub unperformed: IntCounter,
}

impl SessionMetrics {
    /// Creates the metrics and registers them with `registry`.
    pub fn register(registry: &PromRegistry) -> Result<Self, prometheus::Error> {
        let started = IntCounter::new(
            "facekey_liveness_sessions_started_total",
            "Challenge-liveness sessions opened.",
        )?;
        let passed = IntCounter::new(
            "facekey_liveness_sessions_passed_total",
            "Challenge-liveness sessions that passed.",
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "facekey_liveness_sessions_failed_total",
                "Challenge-liveness sessions that failed, by reason (challenge_incomplete, \
                 expired, duplicate_frames, face_changed, timestamps_not_increasing, \
                 frames_too_fast, clock_mismatch, too_few_usable_frames, passive_liveness_low, \
                 unrequested_action).",
            ),
            &["reason"],
        )?;
        let abandoned = IntCounter::new(
            "facekey_liveness_sessions_abandoned_total",
            "Challenge-liveness sessions that expired, or that their client closed in progress, \
             after a usable face was seen (an expired one is also counted in failed, reason \
             expired): people giving up, or a client probing the per-frame feedback.",
        )?;
        let faced = IntCounter::new(
            "facekey_liveness_sessions_faced_total",
            "Challenge-liveness sessions that ended after a usable face was seen (passed, failed \
             with a face, or abandoned): what abandoned sessions are a share of.",
        )?;
        let frames = IntCounterVec::new(
            Opts::new(
                "facekey_liveness_session_frames_total",
                "Frames received by challenge-liveness sessions, by result (face: a usable face \
                 was observed; no_face: none, or a model failed on it).",
            ),
            &["result"],
        )?;
        let active = IntGauge::new(
            "facekey_liveness_sessions_active",
            "Challenge-liveness sessions open (on this replica, or in the shared database when \
             replicas share one).",
        )?;
        let closed = IntCounter::new(
            "facekey_liveness_sessions_closed_total",
            "Challenge-liveness sessions their client closed (DELETE), in any state; one closed \
             in progress after a usable face was seen is also counted as abandoned.",
        )?;
        let replayed = IntCounter::new(
            "facekey_liveness_sessions_replayed_total",
            "Passed challenge-liveness sessions refused at verify or identify because their \
             frames repeat those of an earlier session accepted for the subject (a replayed \
             recording); each is also a spoof event.",
        )?;
        let unperformed = IntCounter::new(
            "facekey_liveness_sessions_unperformed_total",
            "Challenge-liveness sessions that ended in progress, closed by their client or \
             expired, before a usable face was seen: people who never started, or a client \
             opening sessions until the challenge suits a recording it holds.",
        )?;
        for c in [
            Box::new(started.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(passed.clone()),
            Box::new(failed.clone()),
            Box::new(abandoned.clone()),
            Box::new(faced.clone()),
            Box::new(frames.clone()),
            Box::new(active.clone()),
            Box::new(closed.clone()),
            Box::new(replayed.clone()),
            Box::new(unperformed.clone()),
        ] {
            registry.register(c)?;
        }
        for r in FailReason::ALL {
            failed.with_label_values(&[r.as_str()]);
        }
        for r in ["face", "no_face"] {
            frames.with_label_values(&[r]);
        }
        Ok(Self {
            started,
            passed,
            failed,
            abandoned,
            faced,
            frames,
            active,
            closed,
            replayed,
            unperformed,
        })
    }
}

/// The checker's policy `config` asks for: [`ChallengePolicy::default`] with
/// `FACEKEY_SESSION_PASSIVE_MIN` as the least passive median (0: no gate).
pub fn policy_of(config: &Config) -> ChallengePolicy {
    ChallengePolicy {
        passive_min_median: (config.session_passive_min > 0.0)
            .then_some(config.session_passive_min as f32),
        ..ChallengePolicy::default()
    }
}

/// The session store and the challenge models.
pub struct SessionService {
    store: Arc<dyn SessionStore>,
    policy: ChallengePolicy,
    models: OnceLock<Arc<ChallengeModels>>,
    require_session: bool,
    sweeper: OnceLock<()>,
}

impl SessionService {
    /// The service the configuration describes (models are loaded with the engine).
    pub fn new(config: &Config) -> Self {
        let limits = SessionLimits {
            ttl: std::time::Duration::from_secs(config.session_ttl_secs),
            max_sessions: config.max_sessions,
            max_per_key: config.max_sessions_per_key,
            max_frames: config.session_max_frames,
            replay_window: std::time::Duration::from_secs(config.session_replay_window_secs),
            ..SessionLimits::default()
        };
        let policy = policy_of(config);
        Self {
            store: Arc::new(Registry::new(limits, policy.clone())),
            policy,
            models: OnceLock::new(),
            require_session: config.require_session == Switch::On,
            sweeper: OnceLock::new(),
        }
    }

    /// The checker's policy: the defaults, with the configured passive-liveness gate.
    pub fn policy(&self) -> ChallengePolicy {
        self.policy.clone()
    }

    /// Loads the landmark and eye models beside the engine; on failure sessions answer 503
    /// `sessions_unavailable` (and the error is logged), the rest of the API is unaffected.
    pub fn load_models(&self, vision: &VisionConfig) {
        match ChallengeModels::load(vision) {
            Ok(m) => {
                let _ = self.models.set(Arc::new(m));
            }
            Err(e) => tracing::error!(
                error = %e,
                "challenge-liveness models could not be loaded; liveness sessions are unavailable"
            ),
        }
    }

    /// Whether `/v1/verify` and `/v1/identify` require a passed session.
    pub fn require_session(&self) -> bool {
        self.require_session
    }

    /// The bounds the configuration sets (for a shared store built at start-up).
    pub fn limits(&self) -> SessionLimits {
        self.store.limits()
    }

    /// Replaces the in-memory registry with a shared store (start-up, before serving).
    pub fn use_store(&mut self, store: Arc<dyn SessionStore>) {
        tracing::info!(store = store.describe(), "liveness sessions store");
        self.store = store;
    }

    /// The session store in force.
    pub fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    fn models(&self) -> Result<Arc<ChallengeModels>, ApiError> {
        self.models.get().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sessions_unavailable",
                "challenge-liveness models are not loaded (still loading, or failed: see the log)",
            )
        })
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let message = e.to_string();
        match e {
            SessionError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "session_not_found", message)
            }
            SessionError::Expired => ApiError::new(StatusCode::GONE, "session_expired", message),
            SessionError::NotPassed(_) => {
                ApiError::new(StatusCode::CONFLICT, "session_not_passed", message)
            }
            SessionError::Used => ApiError::new(StatusCode::CONFLICT, "session_used", message),
            SessionError::SubjectMismatch => {
                ApiError::new(StatusCode::CONFLICT, "session_subject_mismatch", message)
            }
            SessionError::BoundToSubject => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "session_bound_to_subject",
                message,
            ),
            SessionError::Busy => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::CONFLICT, "session_busy", message)
            },
            SessionError::TooManySessions { global, .. } => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    if global {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::TOO_MANY_REQUESTS
                    },
                    "too_many_sessions",
                    message,
                )
            },
            SessionError::TooManyFrames(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_frames", message)
            }
            SessionError::Unavailable(_) => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    message,
                )
            },
            SessionError::Backend(_) => ApiError::internal(message),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The id of the caller's key, which sessions are bound to (401 without one).
pub(super) fn key_of(caller: Option<&Extension<Caller>>) -> Result<String, ApiError> {
    super::blocking::key_id(caller)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "liveness sessions need an API key",
            )
        })
}

/// Records sessions that ended: pass/fail counters, and a spoof event (log, counter, alert
/// email) for every failure with at least one usable face except expiry (a session abandoned
/// before any face was seen, or left to expire, is no evidence of an attack). A session that
/// expired after faces were seen is counted as abandoned and logged on `facekey::security`:
/// one is someone giving up, many are a client tuning a spoof on the feedback
/// (`FaceKeyLivenessSessionsAbandoned`).
async fn record_concluded(
    state: &SharedState,
    ended: &[Concluded],
    headers: &HeaderMap,
    key_id: Option<&str>,
) {
    let m = &state.metrics.sessions;
    for c in ended {
        if c.usable_frames > 0 {
            m.faced.inc();
        }
        match c.outcome {
            Outcome::Passed => m.passed.inc(),
            Outcome::Failed => {
                for r in &c.reasons {
                    m.failed.with_label_values(&[r.as_str()]).inc();
                }
                tracing::info!(session = %c.id, reasons = ?c.reasons, "liveness session failed");
                // A session that never saw a face is no evidence of anything; one left to
                // expire after faces were seen is abandoned (no attack by itself, logged and
                // counted); any other failure with a face is a spoof event.
                if c.usable_frames == 0 && c.reasons.contains(&FailReason::Expired) {
                    // Left to expire without a face: a challenge drawn and not performed.
                    m.unperformed.inc();
                }
                if c.usable_frames > 0 && c.reasons.contains(&FailReason::Expired) {
                    m.abandoned.inc();
                    tracing::warn!(
                        target: "facekey::security",
                        session = %c.id,
                        subject = c.subject.as_deref().unwrap_or("-"),
                        usable_frames = c.usable_frames,
                        "liveness session abandoned after a face was seen"
                    );
                } else if c.usable_frames > 0 {
                    SpoofAttempt {
                        at: SystemTime::now(),
                        route: FRAMES_ROUTE,
                        subject: c.subject.clone(),
                        liveness: f64::from(c.confidence),
                        threshold: state
                            .engine()
                            .map_or(0.5, |e| e.verifier.config().liveness_threshold),
                        request_id: request_id(headers),
                        key_id: key_id.map(str::to_owned),
                    }
                    .emit(&state.metrics, state.alerts.as_ref());
                }
            }
            Outcome::InProgress => {}
        }
    }
    count_active(state).await;
}

/// Sets `facekey_liveness_sessions_active` from the store (this replica's, or the database's).
async fn count_active(state: &SharedState) {
    match state.sessions.store.active().await {
        Ok(n) => state
            .metrics
            .sessions
            .active
            .set(i64::try_from(n).unwrap_or(i64::MAX)),
        Err(e) => tracing::warn!(error = %e, "open liveness sessions not counted"),
    }
}

/// Starts, once, the task that sweeps expired sessions every half TTL (at least every second),
/// on the first session opened or fed through this replica:
/// their failures are counted and the open-sessions gauge follows even when no session is
/// opened. It holds the state weakly and ends when the state is gone.
fn ensure_sweeper(state: &SharedState) {
    state.sessions.sweeper.get_or_init(|| {
        let weak = Arc::downgrade(state);
        let period = (state.sessions.store.limits().ttl / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                match state.sessions.store.sweep().await {
                    Ok(ended) => record_concluded(&state, &ended, &HeaderMap::new(), None).await,
                    Err(e) => tracing::warn!(error = %e, "liveness sessions not swept"),
                }
            }
        });
    });
}

/// Body of `POST /v1/liveness/sessions`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// Bind the session to this subject: only a verification of it may use the session.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub subject: Option<String>,
}

/// Answer of `POST /v1/liveness/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenResponse {
    /// Session id.
    pub id: String,
    /// Actions to perform, in order.
    pub challenge: Vec<Action>,
    /// RFC 3339 expiry time.
    pub expires_at: String,
    /// Frames the session accepts in all.
    pub max_frames: usize,
}

/// `POST /v1/liveness/sessions`: open a challenge session.
#[utoipa::path(
    post,
    path = "/v1/liveness/sessions",
    operation_id = "open_session",
    tag = "liveness",
    summary = "Open a challenge-response liveness session",
    description = "Optional JSON body `{\"subject\": \"<id>\"}`. Answers a random challenge of 2–3 \
distinct actions (`blink`, `turn_left` — the person's own left, `turn_right`, `look_up`, \
`open_mouth`), to perform in order in front of the camera while sending frames. The session is \
bound to the API key that opened it, expires after `FACEKEY_SESSION_TTL_SECS` and is held in this \
replica's memory, or with `FACEKEY_DATABASE_URL` in the shared database (any replica serves any \
call of the session).",
    request_body(content = Option<OpenRequest>, description = "Optional", content_type = "application/json"),
    responses(
        (status = 201, description = "Session opened", body = OpenResponse),
        (status = 404, description = "The bound subject does not exist (`subject_not_found`)", body = ErrorBody),
        (status = 409, description = "The bound subject has no face to match (`subject_has_no_faces`, `subject_needs_reenrolment`)", body = ErrorBody),
        (status = 429, description = "This key holds too many open sessions (`too_many_sessions`: `FACEKEY_MAX_SESSIONS_PER_KEY`, or as many as there are free places, which are kept for keys holding fewer), the bound subject is locked (`subject_locked`, with `Retry-After`), or the key holds its share of the inference places that a bound subject's lockout read takes (`too_many_inferences`, with `Retry-After`)", body = ErrorBody),
        (status = 503, description = "Too many sessions are open (`too_many_sessions`), the session store is unreachable (`store_unavailable`), models are loading, or no inference place is free for a bound subject's lockout read (`overloaded`, with `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn open(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    req: Request,
) -> Result<Response, ApiError> {
    state.engine()?;
    state.sessions.models()?;
    let key = key_of(caller.as_ref())?;
    // Read here rather than by axum's `Bytes` extractor, whose refusals (a chunked body over
    // the limit, a malformed one) are plain text: every error is the API's JSON.
    let body = read_body(req, &state).await?;
    // No body, or JSON `null` (what the document's optional body allows), opens an unbound session.
    let req: OpenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        OpenRequest::default()
    } else {
        parse_json::<Option<OpenRequest>>(&body)?.unwrap_or_default()
    };
    let subject = match req.subject.map(|s| s.trim().to_owned()) {
        Some(s) if s.is_empty() || s.chars().count() > 256 => {
            return Err(ApiError::invalid_request(
                "`subject` must be 1 to 256 characters",
            ));
        }
        other => other,
    };
    if let Some(subject) = &subject {
        // A bound session can only verify this subject: say now, not after the challenge, that
        // it cannot (unknown, no face to match, or locked). The place taken for the ledger's
        // read is given back at once.
        verifiable_subject(&state, subject, Some(&key)).await?;
    }
    let (opened, ended) = state.sessions.store.open(&key, subject.clone()).await?;
    state.metrics.sessions.started.inc();
    // Sessions swept while opening this one may be other keys': no request or key of theirs.
    record_concluded(&state, &ended, &HeaderMap::new(), None).await;
    ensure_sweeper(&state);
    tracing::info!(session = %opened.id, challenge = ?opened.challenge, "liveness session opened");
    let detail = AuditDetail {
        subject,
        session: Some(opened.id.clone()),
        ..AuditDetail::default()
    };
    let body = OpenResponse {
        id: opened.id,
        challenge: opened.challenge,
        expires_at: rfc3339(opened.expires_at),
        max_frames: opened.max_frames,
    };
    Ok((StatusCode::CREATED, Extension(detail), Json(body)).into_response())
}

/// One frame of a JSON frames body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameInput {
    /// Base64 JPEG (PNG and WebP are accepted too).
    #[schema(content_encoding = "base64", min_length = 1)]
    pub image: String,
    /// Client capture time, milliseconds; must increase within the session.
    pub timestamp_ms: u64,
}

/// JSON body of `POST /v1/liveness/sessions/{id}/frames`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FramesRequest {
    /// 1 to 8 frames, in capture order.
    #[schema(min_items = 1, max_items = 8)]
    pub frames: Vec<FrameInput>,
}

/// The frames of a request: encoded image and client timestamp each (JSON or multipart).
pub struct Frames(pub Vec<(Bytes, u64)>);

/// The largest client timestamp taken: 2^53 - 1 ms, the largest integer a JavaScript client
/// (or any JSON reader using doubles) holds exactly; the document states it as the maximum.
pub const MAX_TIMESTAMP_MS: u64 = (1 << 53) - 1;

fn check_timestamp(ms: u64) -> Result<u64, ApiError> {
    if ms > MAX_TIMESTAMP_MS {
        return Err(ApiError::invalid_request(format!(
            "`timestamp_ms` must be at most {MAX_TIMESTAMP_MS}, got {ms}"
        )));
    }
    Ok(ms)
}

fn parse_timestamp(text: &str) -> Result<u64, ApiError> {
    let ms = text.trim().parse::<u64>().map_err(|_| {
        ApiError::invalid_request(format!(
            "`timestamp_ms` must be a non-negative integer, got {:?}",
            text.chars().take(32).collect::<String>()
        ))
    })?;
    check_timestamp(ms)
}

impl FromRequest<SharedState> for Frames {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_image_bytes;
        let too_many = |n: usize| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_frames",
                format!(
                    "send 1 to {} frames per call, got {n} or more",
                    crate::challenge::session::MAX_FRAMES_PER_CALL
                ),
            )
        };
        let max = crate::challenge::session::MAX_FRAMES_PER_CALL;
        if is_multipart_content_type(&req) {
            let mut multipart = Multipart::from_request(req, state).await.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_multipart",
                    format!("malformed multipart request: {}", e.body_text()),
                )
            })?;
            // Parts pair by position: the i-th `timestamp_ms` belongs to the i-th `frame`, so
            // interleaved parts and the two arrays sent one after the other (as OpenAPI clients
            // send array fields) both work.
            let mut images: Vec<Bytes> = Vec::new();
            let mut timestamps: Vec<u64> = Vec::new();
            let bad = |e: axum::extract::multipart::MultipartError| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::body_too_large()
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_multipart",
                        format!("malformed multipart body: {}", e.body_text()),
                    )
                }
            };
            while let Some(field) = multipart.next_field().await.map_err(bad)? {
                let name = field.name().unwrap_or_default().to_owned();
                match name.as_str() {
                    "timestamp_ms" => {
                        if timestamps.len() >= max {
                            return Err(too_many(timestamps.len() + 1));
                        }
                        let data = field.bytes().await.map_err(bad)?;
                        let text = std::str::from_utf8(&data).map_err(|_| {
                            ApiError::invalid_request("`timestamp_ms` is not UTF-8 text")
                        })?;
                        timestamps.push(parse_timestamp(text)?);
                    }
                    "frame" => {
                        if images.len() >= max {
                            return Err(too_many(images.len() + 1));
                        }
                        let data = field.bytes().await.map_err(bad)?;
                        if data.is_empty() {
                            // As an empty `image` is a missing one on the other routes.
                            return Err(ApiError::invalid_request("a `frame` part is empty"));
                        }
                        if data.len() > limit {
                            return Err(ApiError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "image_too_large",
                                format!("a frame exceeds {limit} bytes (FACEKEY_MAX_IMAGE_BYTES)"),
                            ));
                        }
                        images.push(data);
                    }
                    other => {
                        return Err(ApiError::invalid_request(format!(
                            "unexpected multipart part {other:?}: send `timestamp_ms` and `frame` parts"
                        )));
                    }
                }
            }
            if images.is_empty() {
                return Err(ApiError::invalid_request("no `frame` part in the request"));
            }
            if images.len() != timestamps.len() {
                return Err(ApiError::invalid_request(format!(
                    "each `frame` part needs its `timestamp_ms` part (the i-th of each pair up): \
                     got {} frames and {} timestamps",
                    images.len(),
                    timestamps.len()
                )));
            }
            let frames = images.into_iter().zip(timestamps).collect();
            Ok(Frames(frames))
        } else if is_json_content_type(&req) {
            let body = read_body(req, state).await?;
            let parsed: FramesRequest = parse_json(&body)?;
            if parsed.frames.is_empty() {
                return Err(ApiError::invalid_request("`frames` is empty"));
            }
            if parsed.frames.len() > max {
                return Err(too_many(parsed.frames.len()));
            }
            let frames = parsed
                .frames
                .into_iter()
                .map(|f| {
                    let ms = check_timestamp(f.timestamp_ms)?;
                    decode_base64_image(&f.image, limit).map(|b| (Bytes::from(b), ms))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Frames(frames))
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send application/json `{\"frames\":[{\"image\",\"timestamp_ms\"}]}` or \
                 multipart/form-data with `timestamp_ms` and `frame` parts",
            ))
        }
    }
}

/// One action's result in an answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActionReport {
    /// The action.
    pub action: Action,
    /// Whether it was seen, in order.
    pub passed: bool,
    /// Index of the frame that completed it.
    pub at_frame: Option<usize>,
}

fn action_reports(actions: &[ActionResult]) -> Vec<ActionReport> {
    actions
        .iter()
        .map(|a| ActionReport {
            action: a.action,
            passed: a.passed,
            at_frame: a.at_frame,
        })
        .collect()
}

/// Answer of `POST /v1/liveness/sessions/{id}/frames`: live feedback.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FramesResponse {
    /// `in_progress`, `passed`, `failed` or `expired`.
    pub state: SessionState,
    /// Frames the session has received in all.
    pub frames_received: usize,
    /// Feedback on this call's frames.
    pub frames: Vec<FrameFeedback>,
    /// The action to perform now, if any.
    pub next_action: Option<Action>,
    /// Each action of the challenge.
    pub actions: Vec<ActionReport>,
}

/// `POST /v1/liveness/sessions/{id}/frames`: send frames, get feedback.
#[utoipa::path(
    post,
    path = "/v1/liveness/sessions/{id}/frames",
    operation_id = "send_session_frames",
    tag = "liveness",
    summary = "Send camera frames to a liveness session",
    description = "JSON `{\"frames\":[{\"image\":\"<base64 JPEG>\",\"timestamp_ms\":<client ms>}]}` \
or multipart with `frame` image parts and as many `timestamp_ms` text parts, paired by position \
(interleaved or one after the other); 1 to 8 frames per \
call, one call at a time per session. Frames run through admission control like every inference. \
Answers live feedback; once the session has passed or failed, further frames are not processed \
and the answer reports its final state. A refused call (any 4xx) adds no frame to the session.",
    params(("id" = String, Path, description = "Session id")),
    request_body(content(
        (FramesRequest = "application/json"),
        (super::bodies::FramesForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Feedback", body = FramesResponse),
        (status = 400, description = "A frame that is not a decodable image (`invalid_image`), or a malformed JSON or multipart body", body = ErrorBody),
        (status = 404, description = "No such session for this key (`session_not_found`)", body = ErrorBody),
        (status = 409, description = "Another call for this session is running (`session_busy`)", body = ErrorBody),
        (status = 410, description = "Session expired (`session_expired`)", body = ErrorBody),
        (status = 413, description = "Too many frames in the call or the session (`too_many_frames`), or a frame too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart, or a frame neither JPEG, PNG nor WebP", body = ErrorBody),
        (status = 422, description = "Malformed frames", body = ErrorBody),
        (status = 503, description = "Overloaded, or models loading", body = ErrorBody),
    )
)]
pub async fn frames(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    Frames(frames): Frames,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let models = state.sessions.models()?;
    let key = key_of(caller.as_ref())?;
    let store = state.sessions.store.clone();
    // Shared sessions may have been opened through another replica: sweep here too.
    ensure_sweeper(&state);
    if let Some(done) = store.begin_batch(&key, &id, frames.len()).await? {
        return Ok(Json(frames_response(&done, Vec::new())).into_response());
    }
    // From here until the frames are added, the session is reserved for this call; any other
    // way out (an error, the client gone, the request timeout dropping this future) gives the
    // reservation back, or the session would answer session_busy until it expires.
    let reservation = BatchReservation {
        held: Some((store.clone(), key.clone(), id.clone())),
    };
    let observed = with_engine(&state, engine, Some(&key), move |e, cancel| {
        let mut out: Vec<FrameObservation> = Vec::with_capacity(frames.len());
        for (bytes, ts) in &frames {
            if cancel.is_cancelled() {
                return Err(VisionError::Cancelled { before: "frame" });
            }
            let img = e.vision.decode(bytes)?;
            out.push(observe_frame(&e.vision, &models, &img, *ts));
        }
        Ok(out)
    })
    .await;
    let observed = observed?;
    for f in &observed {
        let result = if f.face.is_some() { "face" } else { "no_face" };
        state
            .metrics
            .sessions
            .frames
            .with_label_values(&[result])
            .inc();
    }
    // Adding the frames releases the reservation whatever it answers.
    reservation.handed_on();
    let result = add_frames_and_report(&state, store, key, id, observed, headers).await?;
    let body = Json(frames_response(&result.view, result.frames));
    let Some(c) = &result.concluded else {
        return Ok(body.into_response());
    };
    // The call that concluded the session carries its verdict into the audit log.
    Ok((Extension(verdict_detail(c)), body).into_response())
}

/// Adds a frames call's observations to `key`'s session `id` and reports the session's end if
/// they concluded it ([`record_concluded`]: the spoof event and alert of a failure, the pass and
/// failure counters), on a task of its own that this call awaits. The store commits the verdict
/// once: a later call only sees the session ended, and the sweeper only ends sessions still in
/// progress, so the report must not be lost with the request. A caller dropped meanwhile (the
/// client gone, an HTTP/2 reset, the request timeout) still gets the session reported, and
/// its verdict audited through the request's [`crate::audit::OnCommit`] (the request's own
/// event could not carry it).
async fn add_frames_and_report(
    state: &SharedState,
    store: Arc<dyn SessionStore>,
    key: String,
    id: String,
    observed: Vec<FrameObservation>,
    headers: HeaderMap,
) -> Result<BatchResult, ApiError> {
    let state = Arc::clone(state);
    let work = async move {
        let result = store.add_frames(&key, &id, observed).await;
        if let Ok(BatchResult {
            concluded: Some(c), ..
        }) = &result
        {
            record_concluded(&state, std::slice::from_ref(c), &headers, Some(&key)).await;
        }
        result
    };
    let committed = |result: &Result<BatchResult, _>| {
        let c = result.as_ref().ok()?.concluded.as_ref()?;
        Some((StatusCode::OK, verdict_detail(c)))
    };
    crate::audit::detached(work, committed)
        .await
        .map_err(|_| ApiError::internal("adding the frames to the session failed"))?
        .map_err(ApiError::from)
}

/// The audit detail of the call that concluded a session: its verdict.
fn verdict_detail(c: &Concluded) -> AuditDetail {
    AuditDetail {
        subject: c.subject.clone(),
        session: Some(c.id.clone()),
        decision: match c.outcome {
            Outcome::Passed => Some(Decision::Accept),
            Outcome::Failed => Some(Decision::Reject),
            Outcome::InProgress => None,
        },
        reasons: c.reasons.iter().map(|r| r.as_str().to_owned()).collect(),
        ..AuditDetail::default()
    }
}

/// A session's batch reservation ([`SessionStore::begin_batch`]) held by a frames call until its
/// frames are added; dropped before that (an error, the client gone, the request timeout
/// dropping the handler), it releases the reservation.
struct BatchReservation {
    held: Option<(Arc<dyn SessionStore>, String, String)>,
}

impl BatchReservation {
    /// The frames are being added, which releases the reservation itself.
    fn handed_on(mut self) {
        self.held = None;
    }
}

impl Drop for BatchReservation {
    fn drop(&mut self) {
        let Some((store, key, id)) = self.held.take() else {
            return;
        };
        // Drop cannot wait: the release runs as its own task (a memory store's is immediate).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { store.release(&key, &id).await });
        }
    }
}

fn frames_response(view: &SessionView, frames: Vec<FrameFeedback>) -> FramesResponse {
    FramesResponse {
        state: view.state,
        frames_received: view.frames_received,
        frames,
        next_action: if view.state == SessionState::InProgress {
            view.verdict.next_action
        } else {
            None
        },
        actions: action_reports(&view.verdict.actions),
    }
}

/// Diagnostics of a session, for `admin` keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionDetail {
    /// The challenge.
    pub challenge: Vec<Action>,
    /// The subject it is bound to.
    pub subject: Option<String>,
    /// Frames received.
    pub frames_received: usize,
    /// Frames with a usable face.
    pub usable_frames: usize,
    /// Median passive liveness over usable frames.
    pub passive_median: Option<f32>,
    /// Largest embedding distance between two usable frames.
    pub max_face_distance: Option<f32>,
    /// Smallest fingerprint difference between two frames (grey levels).
    pub min_frame_difference: Option<f32>,
    /// Whether a verification or identification used the session.
    pub used: bool,
}

/// `DELETE /v1/liveness/sessions/{id}`: the client gives the session up.
#[utoipa::path(
    delete,
    path = "/v1/liveness/sessions/{id}",
    operation_id = "close_session",
    tag = "liveness",
    summary = "Close a liveness session",
    description = "Ends the session at once, in any state, and erases what it holds (its frames' \
observations, its probe), so that it no longer counts against the key's sessions or \
`FACEKEY_MAX_SESSIONS`; a passed session closed can no longer verify. A session closed in progress \
after a usable face was seen counts as abandoned, like one left to expire \
(`facekey_liveness_sessions_abandoned_total`). With PostgreSQL it is gone on every replica.",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 204, description = "Closed"),
        (status = 404, description = "No such session for this key (`session_not_found`)", body = ErrorBody),
        (status = 503, description = "The session store is unreachable (`store_unavailable`)", body = ErrorBody),
    )
)]
pub async fn close(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let key = key_of(caller.as_ref())?;
    let closed = state.sessions.store.close(&key, &id).await?;
    let m = &state.metrics.sessions;
    m.closed.inc();
    if closed.in_progress && closed.usable_frames == 0 {
        // Opened and closed without a face: a challenge drawn and not performed.
        m.unperformed.inc();
    }
    if closed.in_progress && closed.usable_frames > 0 {
        // Closing is walking away explicitly: counted as abandonment, so that a client probing
        // the feedback cannot hide from FaceKeyLivenessSessionsAbandoned by closing.
        m.faced.inc();
        m.abandoned.inc();
        tracing::warn!(
            target: "facekey::security",
            session = %id,
            subject = closed.subject.as_deref().unwrap_or("-"),
            usable_frames = closed.usable_frames,
            "liveness session closed by its client after a face was seen"
        );
    }
    count_active(&state).await;
    let detail = AuditDetail {
        subject: closed.subject,
        session: Some(id),
        ..AuditDetail::default()
    };
    Ok((StatusCode::NO_CONTENT, Extension(detail)).into_response())
}

/// Answer of `GET /v1/liveness/sessions/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// Session id.
    pub id: String,
    /// `in_progress`, `passed`, `failed` or `expired`.
    pub state: SessionState,
    /// Frames the session has taken so far: a client whose frames call got no answer (a network
    /// failure) compares it with the count before the call to know whether the batch arrived,
    /// rather than sending it again (a resent batch fails the session as a replay).
    pub frames_received: usize,
    /// `true` passed, `false` failed (or expired before passing), `null` in progress.
    pub live: Option<bool>,
    /// Liveness confidence in [0, 1] (the fusion's liveness feature); `null` in progress. To one
    /// decimal for keys without `admin`: a passed session's is `0.7 + 0.3 ×` the median passive
    /// liveness score of its frames, which answers withhold from them (an exact value would be
    /// an oracle to tune a presentation attack against).
    pub confidence: Option<f32>,
    /// Why it failed.
    pub reasons: Vec<FailReason>,
    /// Each action of the challenge.
    pub actions: Vec<ActionReport>,
    /// RFC 3339 expiry time.
    pub expires_at: String,
    /// Diagnostics, for `admin` keys only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<SessionDetail>,
}

/// `GET /v1/liveness/sessions/{id}`: the session's verdict.
#[utoipa::path(
    get,
    path = "/v1/liveness/sessions/{id}",
    operation_id = "get_session",
    tag = "liveness",
    summary = "Read a liveness session's state and verdict",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 404, description = "No such session for this key (`session_not_found`)", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let key = key_of(caller.as_ref())?;
    let view = state.sessions.store.view(&key, &id).await?;
    let v = &view.verdict;
    let admin = is_admin(caller.as_ref());
    let confidence = match view.state {
        SessionState::InProgress => None,
        _ => v.confidence().map(|c| if admin { c } else { coarse(c) }),
    };
    let body = SessionResponse {
        id: view.id.clone(),
        state: view.state,
        frames_received: view.frames_received,
        live: view.live(),
        confidence,
        reasons: v.reasons.clone(),
        actions: action_reports(&v.actions),
        expires_at: rfc3339(view.expires_at),
        detail: admin.then(|| SessionDetail {
            challenge: view.challenge.clone(),
            subject: view.subject.clone(),
            frames_received: view.frames_received,
            usable_frames: v.usable_frames,
            passive_median: v.passive_median,
            max_face_distance: v.max_face_distance,
            min_frame_difference: v.min_frame_difference,
            used: view.used,
        }),
    };
    Ok(Json(body).into_response())
}

/// A session's confidence as keys without `admin` see it: to one decimal.
fn coarse(confidence: f32) -> f32 {
    (confidence * 10.0).round() / 10.0
}

/// Answer of a session verification to an `admin` key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionVerifyResponse {
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// The claimed subject.
    pub subject: String,
    /// The session used.
    pub session: String,
    /// The challenge it passed.
    pub challenge: Vec<Action>,
    /// Whether the probe was the image sent beside the session (else the session's best frame).
    pub probe_from_image: bool,
    /// Match against the subject's templates.
    #[serde(rename = "match")]
    pub match_: MatchReport,
    /// Liveness: the challenge confidence.
    pub liveness: LivenessReportItem,
    /// The probe's quality score.
    pub quality: Option<f32>,
    /// Full quality measurements, when the probe was an image.
    #[schema(value_type = Option<Object>)]
    pub quality_detail: Option<QualityResult>,
    /// The fusion inputs `[match_similarity, liveness, quality]`.
    pub features: [f64; 3],
    /// The fused authentication probability.
    pub probability: f64,
    /// The final decision.
    pub decision: Decision,
    /// The probability threshold.
    pub threshold: f64,
    /// `strict` or `fusion`.
    pub decision_policy: DecisionPolicy,
    /// Checks that failed.
    pub reasons: Vec<Reason>,
    /// What the answer should not be read without, as for a verification with an image:
    /// `matched_on_dlib_only: ...` (see `match.models`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Fusion weights used.
    pub weights: String,
    /// Fusion layer values, when `include_layers` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<crate::fusion::Layers>,
}

/// 422 `session_required`: the answer of a face decision (verify, identify) made without a
/// passed session when sessions are required; `what` names the decision and `advice` says what
/// to send instead.
pub fn session_required(what: &str, advice: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "session_required",
        format!(
            "this server requires a passed liveness session for {what} \
             (FACEKEY_REQUIRE_SESSION=on): {advice}"
        ),
    )
}

/// The probe a passed liveness session gives one face decision, with the challenge's liveness.
pub(super) struct SessionProbe {
    /// The session's id.
    pub session: String,
    /// The challenge it passed.
    pub challenge: Vec<Action>,
    /// The probe: the session's best frame, or the image sent beside it (the same face).
    pub embedding: Embedding,
    /// Embeddings of frames spread over the session, matched beside the probe.
    pub witnesses: Vec<Embedding>,
    /// Embeddings of the frames that completed the actions, matched beside the probe.
    pub action_frames: Vec<Embedding>,
    /// The probe's quality score.
    pub quality: Option<f32>,
    /// Full quality measurements, when the probe was an image.
    pub quality_detail: Option<QualityResult>,
    /// Whether the probe was the image sent beside the session.
    pub from_image: bool,
    /// The challenge confidence judged against the liveness threshold (the fusion's feature).
    pub liveness: LivenessVerdict,
    /// The fingerprints of the session's frames, for the replay record.
    pub prints: Vec<Fingerprint>,
    /// Per subject, the accepted sessions [`Self::is_replay`] compared the frames with.
    pub compared: HashMap<String, Vec<String>>,
}

impl SessionProbe {
    /// The session's match against a subject's `templates`: the worst of the probe's, the
    /// session frames' typical one and the action frames' typical one
    /// ([`crate::verifier::Verifier::judge_session`]); `None` without templates.
    pub fn judge(&self, engine: &Engine, templates: &[Embedding]) -> Option<MatchVerdict> {
        let scores = |e: &Embedding| engine.vision.compare_all(e, templates);
        let witnesses: Vec<_> = self.witnesses.iter().map(scores).collect();
        let action_frames: Vec<_> = self.action_frames.iter().map(scores).collect();
        engine
            .verifier
            .judge_session(&scores(&self.embedding), &witnesses, &action_frames)
    }

    /// Whether the session's frames repeat those of an earlier session accepted for `subject`
    /// (a replayed recording, [`crate::challenge::replay`]). A replay is reported here: logged
    /// on `facekey::security`, counted, and a spoof event (log, counter, alert email) on
    /// `route`; the caller refuses the decision (`replayed_session`). The record unreachable
    /// answers 503: nothing is decided.
    pub async fn is_replay(
        &mut self,
        state: &SharedState,
        subject: &str,
        route: &'static str,
        caller: Option<&Extension<Caller>>,
        headers: &HeaderMap,
    ) -> Result<bool, ApiError> {
        let earlier = state.sessions.store.accepted_sessions(subject).await?;
        let seen = earlier.iter().map(|a| a.session.clone()).collect();
        self.compared.insert(subject.to_owned(), seen);
        if earlier.is_empty() {
            return Ok(false);
        }
        // At most 64 frames against 8 x 64: milliseconds of arithmetic, off the async workers.
        let prints = self.prints.clone();
        let found = tokio::task::spawn_blocking(move || nearest_replay(&prints, &earlier))
            .await
            .map_err(|e| ApiError::internal(format!("the replay comparison failed: {e}")))?;
        let Some(replayed) = found else {
            return Ok(false);
        };
        self.report_replay(state, subject, &replayed, route, caller, headers);
        Ok(true)
    }

    /// Remembers the session's frames once a decision accepted it for `subjects` (verify: the
    /// verified one; identify: every one it accepted), so that a later session repeating them
    /// is refused, unless they repeat a session remembered for one of them since
    /// [`Self::is_replay`] compared them (two sessions of one recording accepted at the same
    /// moment): then that replay is reported as `is_replay` reports one, and `true` tells the
    /// caller to refuse. 503 when the record cannot be written: the accept is not revealed.
    pub async fn remember_accepted(
        &self,
        state: &SharedState,
        subjects: &[&str],
        route: &'static str,
        caller: Option<&Extension<Caller>>,
        headers: &HeaderMap,
    ) -> Result<bool, ApiError> {
        let checked = subjects
            .iter()
            .map(|&subject| Compared {
                subject: subject.to_owned(),
                sessions: self.compared.get(subject).cloned().unwrap_or_default(),
            })
            .collect();
        let found = state
            .sessions
            .store
            .remember_verified(checked, &self.session, self.prints.clone())
            .await?;
        let Some((subject, replayed)) = found else {
            return Ok(false);
        };
        self.report_replay(state, &subject, &replayed, route, caller, headers);
        Ok(true)
    }

    /// A replay found: logged on `facekey::security`, counted, and a spoof event on `route`.
    fn report_replay(
        &self,
        state: &SharedState,
        subject: &str,
        replayed: &Replayed,
        route: &'static str,
        caller: Option<&Extension<Caller>>,
        headers: &HeaderMap,
    ) {
        tracing::warn!(
            target: "facekey::security",
            session = %self.session,
            earlier_session = %replayed.earlier_session,
            subject = %subject,
            frames = replayed.frames,
            difference = replayed.difference,
            "a liveness session repeats frames of an earlier session accepted for the subject: \
             refused as a replay"
        );
        state.metrics.sessions.replayed.inc();
        SpoofAttempt {
            at: SystemTime::now(),
            route,
            subject: Some(subject.to_owned()),
            liveness: 0.0,
            threshold: self.liveness.threshold,
            request_id: request_id(headers),
            key_id: super::blocking::key_id(caller).map(str::to_owned),
        }
        .emit(&state.metrics, state.alerts.as_ref());
    }

    /// The liveness as a replay leaves it: a spoof at score 0, the fusion's liveness feature.
    pub fn replayed(&mut self) {
        self.liveness.state = LivenessState::Spoof;
        self.liveness.score = Some(0.0);
        self.liveness.reason = Some(Reason::ReplayedSession.as_str().to_owned());
    }

    /// The liveness part of an answer: the challenge confidence (no per-model outputs).
    pub fn liveness_report(&self) -> LivenessReportItem {
        LivenessReportItem {
            state: self.liveness.state,
            score: self.liveness.score,
            decision: self.liveness.decision(),
            threshold: self.liveness.threshold,
            checked: true,
            reason: self.liveness.reason.clone(),
            models: None,
        }
    }
}

/// Consumes the passed `session` of `key` for one face decision, `purpose`, and gives its probe:
/// the one path verify and identify take, so their session rules cannot drift. The session must
/// have passed, belong to the key, not be used, and be opened for the verified subject or for
/// none (identify: for none); it is consumed before any model work, but after admission control
/// gave the work its place (`place`, or one taken here for the image), so that a refusal (503
/// `overloaded`, 429 `too_many_inferences`) leaves the session for the retry. A non-empty
/// `image` beside it is the probe when it shows the same face (422 `session_face_mismatch`
/// otherwise, counted as a failed attempt against a verified subject); the liveness is the
/// challenge confidence.
pub(super) async fn take_session_probe(
    state: &SharedState,
    engine: &Arc<Engine>,
    key: &str,
    session: String,
    image: &Bytes,
    purpose: SessionUse<'_>,
    place: Option<&Admitted>,
) -> Result<SessionProbe, ApiError> {
    let own;
    let place = match (place, image.is_empty()) {
        (Some(p), _) => Some(p),
        (None, true) => None,
        (None, false) => {
            own = admit(state, Some(key)).await?;
            Some(&own)
        }
    };
    let probe = state
        .sessions
        .store
        .take_probe(key, &session, purpose)
        .await?;
    let same_face = state.sessions.store.policy().same_face_max_distance;
    let (embedding, quality, quality_detail, from_image) = match place {
        Some(place) if !image.is_empty() => {
            let image = image.clone();
            let a = place
                .run(state, engine.clone(), move |e, c| {
                    e.vision.analyze(&image, AnalyzeOptions::ENROL, c)
                })
                .await?;
            if a.embedding.distance(&probe.embedding) > same_face {
                // Another face swapped in beside a passed session: a failed attempt against the
                // subject, as a verification with that face would be.
                if let SessionUse::Verify(subject) = purpose {
                    state.lockouts.record_failure(subject).await?;
                }
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "session_face_mismatch",
                    "the image shows another face than the liveness session",
                ));
            }
            let quality = beside_quality(a.quality.map(|q| q.score), probe.quality);
            (a.embedding, quality, a.quality, true)
        }
        _ => (probe.embedding, probe.quality, None, false),
    };
    let threshold = engine.verifier.config().liveness_threshold;
    let confidence = f64::from(probe.confidence);
    let liveness = LivenessVerdict {
        state: if Decision::at_least(confidence, threshold) == Decision::Accept {
            LivenessState::Live
        } else {
            LivenessState::Spoof
        },
        score: Some(confidence),
        threshold,
        reason: None,
    };
    Ok(SessionProbe {
        session,
        challenge: probe.challenge,
        embedding,
        witnesses: probe.witnesses,
        action_frames: probe.action_frames,
        quality,
        quality_detail,
        from_image,
        liveness,
        prints: probe.prints,
        compared: HashMap::new(),
    })
}

/// The quality feature of a verification whose image was sent beside its session: the lower of
/// the image's and the session's best frame's. The image only has to be within the same-face
/// bound of the session (which some different faces meet), so a sharp photo sent beside it must
/// not raise the fused probability; the match is already the worst of the image's and the
/// session's frames' for the same reason.
fn beside_quality(image: Option<f32>, session: Option<f32>) -> Option<f32> {
    match (image, session) {
        (Some(i), Some(s)) => Some(i.min(s)),
        (i, s) => i.or(s),
    }
}

/// The session part of `POST /v1/verify`: `input` has a `session` field. The subject's
/// refusals (unknown, no face, locked) come first, then the session is consumed
/// ([`take_session_probe`]) and the probe matched against the subject's templates.
pub async fn verify_with_session(
    state: SharedState,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    input: ImageInput,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let key = key_of(caller.as_ref())?;
    let subject = input.required("subject")?.trim().to_string();
    let session = input.required(SESSION_FIELD)?.trim().to_string();
    let include_layers = super::faces::parse_flag(&input, "include_layers")?;
    let (templates, place) = verifiable_subject(&state, &subject, Some(&key)).await?;
    let probe = take_session_probe(
        &state,
        &engine,
        &key,
        session,
        &input.image,
        SessionUse::Verify(&subject),
        Some(&place),
    )
    .await?;
    // Held while the session is consumed (a refusal before leaves it for the retry), not
    // through the replay record's and the ledger's writes below.
    drop(place);
    let mut probe = probe;
    let replay = probe
        .is_replay(&state, &subject, VERIFY_ROUTE, caller.as_ref(), &headers)
        .await?;
    if replay {
        probe.replayed();
    }
    let verifier = &engine.verifier;
    let matched = probe.judge(&engine, &templates).ok_or_else(|| {
        ApiError::internal("templates vanished between the lookup and the comparison")
    })?;
    let quality = probe.quality.map_or(0.0, f64::from);
    let mut outcome = verifier.decide(&matched, &probe.liveness, quality);
    if replay {
        outcome.refuse(Reason::ReplayedSession);
    }
    if outcome.decision == Decision::Accept
        && probe
            .remember_accepted(&state, &[&subject], VERIFY_ROUTE, caller.as_ref(), &headers)
            .await?
    {
        // The same recording, verified at this moment in another session, was remembered
        // first: decided again as the replay it is.
        probe.replayed();
        outcome = verifier.decide(&matched, &probe.liveness, quality);
        outcome.refuse(Reason::ReplayedSession);
    }
    let liveness = &probe.liveness;
    let settled = settle_verification(
        &state,
        caller.as_ref(),
        &headers,
        &subject,
        &outcome,
        &matched,
        liveness.score,
    )
    .await?;
    state.metrics.record_liveness(liveness.state);
    state
        .metrics
        .verify_match_models
        .with_label_values(&[matched.models.as_str()])
        .inc();
    let (detail, request_id) = match settled {
        Settled::Answered(response) => return Ok(response),
        Settled::Admin { detail, request_id } => (detail, request_id),
    };
    let warnings = match_warnings(&subject, engine.vision.match_models(), matched.models);
    let body = SessionVerifyResponse {
        request_id,
        subject,
        liveness: probe.liveness_report(),
        session: probe.session,
        challenge: probe.challenge,
        probe_from_image: probe.from_image,
        match_: MatchReport::from(&matched),
        quality: probe.quality,
        quality_detail: probe.quality_detail,
        features: outcome.features,
        probability: outcome.forward.probability,
        decision: outcome.decision,
        threshold: verifier.threshold(),
        decision_policy: verifier.config().policy,
        reasons: outcome.reasons,
        warnings,
        weights: verifier.fusion().name().to_string(),
        layers: include_layers.then_some(outcome.forward.layers),
    };
    Ok((Extension(detail), Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    /// A sharp image beside a session cannot raise the quality feature above the session's
    /// best frame's (it used to replace it), nor can a missing quality hide the other.
    #[test]
    fn an_image_beside_a_session_gives_the_lower_quality() {
        assert_eq!(beside_quality(Some(0.95), Some(0.6)), Some(0.6));
        assert_eq!(beside_quality(Some(0.5), Some(0.6)), Some(0.5));
        assert_eq!(beside_quality(None, Some(0.6)), Some(0.6));
        assert_eq!(beside_quality(Some(0.7), None), Some(0.7));
        assert_eq!(beside_quality(None, None), None);
    }

    /// `FACEKEY_SESSION_PASSIVE_MIN` reaches the checker: off (no gate) by default, a least
    /// passive median once set, which the session store the service opens sessions in applies.
    #[test]
    fn the_passive_gate_comes_from_the_configuration() {
        let off = Config::for_tests();
        assert_eq!(SessionService::new(&off).policy().passive_min_median, None);
        let gated = Config::parse_from(["facekey-runtime", "--session-passive-min", "0.6"]);
        let service = SessionService::new(&gated);
        assert_eq!(service.policy().passive_min_median, Some(0.6));
        assert_eq!(service.store.policy().passive_min_median, Some(0.6));
        assert!(
            Config::try_parse_from(["facekey-runtime", "--session-passive-min", "1.5"]).is_err(),
            "out of [0, 1]"
        );
    }

    /// A session store in memory whose answer to added frames comes late (a COMMIT whose
    /// answer is slow or lost), after the frames were added.
    struct LateAnswers {
        inner: Registry,
        after: Duration,
    }

    #[async_trait::async_trait]
    impl SessionStore for LateAnswers {
        fn limits(&self) -> SessionLimits {
            SessionStore::limits(&self.inner)
        }
        fn policy(&self) -> &ChallengePolicy {
            SessionStore::policy(&self.inner)
        }
        fn describe(&self) -> &'static str {
            "late"
        }
        async fn open(
            &self,
            key: &str,
            subject: Option<String>,
        ) -> Result<(crate::challenge::session::Opened, Vec<Concluded>), SessionError> {
            SessionStore::open(&self.inner, key, subject).await
        }
        async fn begin_batch(
            &self,
            key: &str,
            id: &str,
            n: usize,
        ) -> Result<Option<SessionView>, SessionError> {
            SessionStore::begin_batch(&self.inner, key, id, n).await
        }
        async fn release(&self, key: &str, id: &str) {
            SessionStore::release(&self.inner, key, id).await;
        }
        async fn add_frames(
            &self,
            key: &str,
            id: &str,
            batch: Vec<FrameObservation>,
        ) -> Result<BatchResult, SessionError> {
            let result = SessionStore::add_frames(&self.inner, key, id, batch).await;
            tokio::time::sleep(self.after).await;
            result
        }
        async fn view(&self, key: &str, id: &str) -> Result<SessionView, SessionError> {
            SessionStore::view(&self.inner, key, id).await
        }
        async fn take_probe(
            &self,
            key: &str,
            id: &str,
            purpose: SessionUse<'_>,
        ) -> Result<crate::challenge::session::PassedProbe, SessionError> {
            SessionStore::take_probe(&self.inner, key, id, purpose).await
        }
        async fn sweep(&self) -> Result<Vec<Concluded>, SessionError> {
            SessionStore::sweep(&self.inner).await
        }
        async fn close(
            &self,
            key: &str,
            id: &str,
        ) -> Result<crate::challenge::session::Closed, SessionError> {
            SessionStore::close(&self.inner, key, id).await
        }
        async fn active(&self) -> Result<usize, SessionError> {
            SessionStore::active(&self.inner).await
        }
        async fn forget_subject(&self, subject: &str) -> Result<usize, SessionError> {
            SessionStore::forget_subject(&self.inner, subject).await
        }

        async fn accepted_sessions(
            &self,
            subject: &str,
        ) -> Result<Vec<crate::challenge::replay::AcceptedSession>, SessionError> {
            SessionStore::accepted_sessions(&self.inner, subject).await
        }

        async fn remember_verified(
            &self,
            checked: Vec<Compared>,
            session: &str,
            prints: Vec<Fingerprint>,
        ) -> Result<Option<(String, Replayed)>, SessionError> {
            SessionStore::remember_verified(&self.inner, checked, session, prints).await
        }
    }

    /// A frame with a usable (synthetic) face.
    fn frame_with_a_face() -> FrameObservation {
        use crate::challenge::{EyeState, FaceObservation, Fingerprint};
        FrameObservation {
            timestamp_ms: 10_000,
            received_ms: None,
            face: Some(FaceObservation {
                bbox: crate::vision::detect::BoundingBox {
                    x: 0.0,
                    y: 0.0,
                    width: 100.0,
                    height: 100.0,
                },
                landmarks: crate::challenge::signals::tests::face(0.0, 0.0, 0.0, 1.0),
                eyes: Some(EyeState {
                    left_open: 0.95,
                    right_open: 0.95,
                }),
                embedding: Some(
                    Embedding::new((0..128).map(|k| (k as f32 * 0.1).sin() * 0.08).collect())
                        .unwrap(),
                ),
                liveness: Some(0.7),
                quality: Some(0.8),
            }),
            unusable: None,
            fingerprint: Some(Fingerprint::try_from((0..=255).collect::<Vec<u8>>()).unwrap()),
        }
    }

    /// The frames call that fails a session commits the verdict in the store; a caller dropped
    /// before the store's answer came (the client gone, the request timeout) still gets the
    /// failure reported: the spoof event, the failure counter and the verdict's audit event.
    #[tokio::test]
    async fn a_failure_concluded_after_its_caller_went_away_is_still_reported() {
        let server = crate::server::Server::bind(Config::for_tests())
            .await
            .unwrap();
        let state = server.state();
        let store: Arc<dyn SessionStore> = Arc::new(LateAnswers {
            inner: Registry::new(state.sessions.limits(), state.sessions.policy()),
            after: Duration::from_millis(300),
        });
        let (opened, _) = store.open("k", None).await.unwrap();
        assert!(
            store
                .begin_batch("k", &opened.id, 2)
                .await
                .unwrap()
                .is_none()
        );
        // The same frame twice: a replay, which fails the session at once.
        let frame = frame_with_a_face();
        let batch = vec![frame.clone(), frame];
        let audited = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook = {
            let audited = Arc::clone(&audited);
            crate::audit::OnCommit(Arc::new(move |status, detail: AuditDetail| {
                audited.lock().unwrap().push((status, detail));
            }))
        };
        let call = add_frames_and_report(
            &state,
            Arc::clone(&store),
            "k".into(),
            opened.id.clone(),
            batch,
            HeaderMap::new(),
        );
        let dropped = crate::audit::ON_COMMIT
            .scope(
                Some(hook),
                tokio::time::timeout(Duration::from_millis(20), call),
            )
            .await;
        assert!(
            dropped.is_err(),
            "the store answered before the caller went away"
        );
        // The session failed, whoever reports it.
        let view = store.view("k", &opened.id).await.unwrap();
        assert_eq!(view.state, SessionState::Failed);
        let failed = || {
            state
                .metrics
                .sessions
                .failed
                .with_label_values(&[FailReason::DuplicateFrames.as_str()])
                .get()
        };
        for _ in 0..500 {
            if state.metrics.spoofs_detected.get() > 0 && !audited.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state.metrics.spoofs_detected.get(), 1, "no spoof event");
        assert_eq!(failed(), 1, "the failure was not counted");
        let audited = audited.lock().unwrap().clone();
        assert_eq!(audited.len(), 1, "{audited:?}");
        let (status, detail) = &audited[0];
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(detail.session.as_deref(), Some(opened.id.as_str()));
        assert_eq!(detail.decision, Some(Decision::Reject));
        assert!(
            detail
                .reasons
                .contains(&FailReason::DuplicateFrames.as_str().to_owned()),
            "{detail:?}"
        );
        let _ = std::fs::remove_dir_all(&state.config.data_dir);
    }
}
