//! Face endpoints: verify a face against a subject (1:1), identify a face among every enrolled
//! subject (1:N), either from an image or a passed liveness session, and passive liveness of
//! every face in an image.
//! Model work and index scans run on the blocking pool; templates come from this replica's
//! index; every decision is the [`crate::verifier::Verifier`]'s.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::blocking::{Admitted, admit, key_id, with_engine};
use super::error::{ApiError, ErrorBody};
use super::image_input::{ImageInput, ImageOrSession, SESSION_FIELD};
use super::sessions::SessionProbe;
use crate::alerts::SpoofAttempt;
use crate::audit::AuditDetail;
use crate::auth::Caller;
use crate::challenge::Action;
use crate::challenge::session::SessionUse;
use crate::decision::Decision;
use crate::enrolments::Enrolments;
use crate::fusion::Layers;
use crate::lockout::LockoutError;
use crate::state::SharedState;
use crate::store::index::{Nearest, SubjectTemplates};
use crate::store::{StoreError, Subject};
use crate::verifier::{
    DecisionPolicy, LivenessState, LivenessVerdict, MatchVerdict, Reason, Verification, Verifier,
};
use crate::vision::second_opinion::MatchModels;
use crate::vision::{
    AnalyzeOptions, Detection, EMBEDDING_MODEL, Embedding, FaceAnalysis, LivenessReport,
    LivenessResult, ModelTimings, QualityResult, StageTimings,
};

/// The request id (`x-request-id`, set by the request-id layer) of a request.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(super) fn parse_flag(input: &ImageInput, name: &str) -> Result<bool, ApiError> {
    match input
        .fields
        .get(name)
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Ok(false),
        Some(v) if v == "true" || v == "1" => Ok(true),
        Some(v) if v == "false" || v == "0" || v.is_empty() => Ok(false),
        Some(v) => Err(ApiError::invalid_request(format!(
            "field `{name}` must be true or false, got {v:?}"
        ))),
    }
}

/// Whether the caller may see scores and diagnostics.
pub(super) fn is_admin(caller: Option<&Extension<Caller>>) -> bool {
    caller.is_some_and(|c| c.is_admin())
}

/// Count the liveness verdict and emit the spoof event (log, counter, alert email) when the
/// face was judged a presentation attack.
fn report_liveness(
    state: &SharedState,
    caller: Option<&Extension<Caller>>,
    headers: &HeaderMap,
    route: &'static str,
    subject: Option<&str>,
    liveness: &LivenessReportItem,
) {
    state.metrics.record_liveness(liveness.state);
    if liveness.state == LivenessState::Spoof {
        SpoofAttempt {
            at: std::time::SystemTime::now(),
            route,
            subject: subject.map(str::to_owned),
            liveness: liveness.score.unwrap_or(0.0),
            threshold: liveness.threshold,
            request_id: request_id(headers),
            key_id: key_id(caller).map(str::to_owned),
        }
        .emit(&state.metrics, state.alerts.as_ref());
    }
}

/// Record stage and model timings of one pipeline run.
pub(super) fn observe_timings(state: &SharedState, stages: &StageTimings, models: &ModelTimings) {
    let m = &state.metrics;
    let stage = |name: &str, d: Duration| {
        if !d.is_zero() {
            m.stage_duration
                .with_label_values(&[name])
                .observe(d.as_secs_f64());
        }
    };
    stage("decode", stages.decode);
    stage("detect", stages.detect);
    stage("align", stages.align);
    stage("embed", stages.embed);
    stage("liveness", stages.liveness);
    stage("quality", stages.quality);
    let model = |name: &str, d: Option<Duration>| {
        if let Some(d) = d.filter(|d| !d.is_zero()) {
            m.inference_duration
                .with_label_values(&[name])
                .observe(d.as_secs_f64());
        }
    };
    model("mtcnn_pnet", Some(models.pnet));
    model("mtcnn_rnet", Some(models.rnet));
    model("mtcnn_onet", Some(models.onet));
    model("dlib_resnet", models.embed);
    model("dtn", models.dtn);
    model("minifas", models.minifas);
    model("faceres", models.faceres);
    model("human_liveness", models.human_liveness);
}

/// The match part of a verification answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchReport {
    /// Euclidean distance of the probe to the closest enrolled template.
    pub distance: f64,
    /// Similarity in [0, 1] derived from the distance (0.5 at dlib's 0.6 distance).
    pub similarity: f64,
    /// Minimum similarity to match.
    pub threshold: f64,
    /// `accept` when `similarity >= threshold`.
    pub decision: Decision,
    /// Templates compared.
    pub templates: usize,
    /// The embedding models the similarity came from: `["dlib", "faceres"]` (the fused
    /// score, `FACEKEY_MATCH_MODELS=dlib+faceres`) or `["dlib"]` (dlib alone: the subject's
    /// closest face was enrolled before faceres-deep, or the server matches on dlib alone).
    #[schema(value_type = Vec<String>, example = json!(["dlib", "faceres"]))]
    pub models: &'static [&'static str],
}

impl From<&MatchVerdict> for MatchReport {
    fn from(m: &MatchVerdict) -> Self {
        Self {
            distance: m.distance,
            similarity: m.similarity,
            threshold: m.threshold,
            decision: m.decision,
            templates: m.templates,
            models: m.models.names(),
        }
    }
}

/// The code of the warning a verification of `subject` carries when it matched on dlib alone
/// while the server fuses dlib and faceres-deep: the subject's closest face predates
/// faceres-deep.
pub const DLIB_ONLY_WARNING: &str = "matched_on_dlib_only";

/// Warnings of a verification of `subject` matched by `models` on a server configured for
/// `configured`.
pub fn match_warnings(subject: &str, configured: MatchModels, models: MatchModels) -> Vec<String> {
    if configured == MatchModels::DlibFaceres && models == MatchModels::Dlib {
        vec![format!(
            "{DLIB_ONLY_WARNING}: the subject's faces were enrolled before faceres-deep, so the \
             match used dlib alone (more false matches); add the face again at \
             /v1/subjects/{subject}/faces to store both embeddings"
        )]
    } else {
        Vec::new()
    }
}

/// The liveness part of an answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LivenessReportItem {
    /// `live`, `spoof`, `unknown` (liveness is on but could not run on this face; never
    /// counts as live) or `off` (liveness configured off: insecure, every face counts as live).
    pub state: LivenessState,
    /// Combined live score in [0, 1], higher is more live; absent unless liveness ran.
    pub score: Option<f64>,
    /// `accept` when the state is `live` (or `off`); `reject` for `spoof` and `unknown`.
    pub decision: Decision,
    /// The threshold used.
    pub threshold: f64,
    /// Whether a liveness score was measured.
    pub checked: bool,
    /// Why liveness could not run (state `unknown`), or why a passed liveness session counts
    /// as a spoof (`replayed_session`: it repeats the frames of an earlier accepted session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Per-model outputs.
    #[schema(value_type = Option<Object>)]
    pub models: Option<LivenessResult>,
}

impl LivenessReportItem {
    fn new(verdict: LivenessVerdict, models: Option<LivenessResult>) -> Self {
        Self {
            state: verdict.state,
            score: verdict.score,
            decision: verdict.decision(),
            threshold: verdict.threshold,
            checked: verdict.score.is_some(),
            reason: verdict.reason,
            models,
        }
    }
}

/// Answer of `POST /v1/verify` to a key without the `admin` scope: the decision only, so the
/// answer cannot guide an attacker towards a passing photo.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyDecision {
    /// The claimed subject.
    pub subject: String,
    /// The final decision.
    pub decision: Decision,
    /// Checks that failed: `no_match`, `spoof`, `liveness_unknown`, `low_probability`,
    /// `replayed_session` (a liveness session repeating an earlier accepted one's frames).
    pub reasons: Vec<Reason>,
    /// The request id (`x-request-id`), to find the request in logs and the audit trail.
    pub request_id: Option<String>,
}

/// Answer of `POST /v1/verify` to an `admin` key: the decision with every score and diagnostic.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// The claimed subject.
    pub subject: String,
    /// The face used (box, confidence, five landmarks).
    #[schema(value_type = Object)]
    pub face: Detection,
    /// How many faces the image held.
    pub faces_detected: usize,
    /// Match against the subject's templates.
    #[serde(rename = "match")]
    pub match_: MatchReport,
    /// Passive liveness.
    pub liveness: LivenessReportItem,
    /// Face quality and its measurements.
    #[schema(value_type = Option<Object>)]
    pub quality: Option<QualityResult>,
    /// The fusion inputs `[match_similarity, liveness, quality]`.
    pub features: [f64; 3],
    /// The fused authentication probability.
    pub probability: f64,
    /// The final decision under the decision policy.
    pub decision: Decision,
    /// The probability threshold.
    pub threshold: f64,
    /// `strict` or `fusion`.
    pub decision_policy: DecisionPolicy,
    /// Checks that failed: `no_match`, `spoof`, `liveness_unknown`, `low_probability`,
    /// `replayed_session` (a liveness session repeating an earlier accepted one's frames).
    pub reasons: Vec<Reason>,
    /// Conditions that did not fail the verification but weaken it, e.g.
    /// `matched_on_dlib_only: ...` (see `match.models`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Fusion weights used.
    pub weights: String,
    /// Fusion layer values, when `include_layers` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Layers>,
    /// Per-stage wall times, milliseconds (fusion included).
    pub timings_ms: VerifyTimings,
    /// Time inside ONNX Runtime per model, milliseconds: the inference floor.
    #[schema(value_type = Object)]
    pub inference_ms: ModelTimings,
}

/// Stage timings of a verification, milliseconds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyTimings {
    /// Pipeline stages.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub stages: StageTimings,
    /// Template matching.
    pub matching: f64,
    /// The fusion MLP.
    pub fusion: f64,
}

/// The embeddings to compare a probe with, or the reason there are none.
pub(super) fn subject_embeddings(
    state: &SharedState,
    subject: &str,
) -> Result<Vec<Embedding>, ApiError> {
    match state.enrolments.index().subject_templates(subject) {
        SubjectTemplates::NotFound => Err(StoreError::SubjectNotFound(subject.to_owned()).into()),
        SubjectTemplates::Found {
            embeddings,
            outdated,
            ..
        } if embeddings.is_empty() && outdated > 0 => Err(ApiError::new(
            StatusCode::CONFLICT,
            "subject_needs_reenrolment",
            format!(
                "subject {subject:?} has {outdated} face(s) enrolled with another embedding model \
                 than the serving one ({EMBEDDING_MODEL}); enrol a new face at \
                 /v1/subjects/{subject}/faces"
            ),
        )),
        SubjectTemplates::Found { embeddings, .. } if embeddings.is_empty() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "subject_has_no_faces",
            format!(
                "subject {subject:?} has no enrolled face; POST one to /v1/subjects/{subject}/faces"
            ),
        )),
        // Each template as the probe's embedding type: dlib's, with faceres-deep's when the
        // template holds it (enrolled since the fused match), so the comparison can fuse.
        SubjectTemplates::Found { templates, .. } => Ok(templates
            .iter()
            .filter_map(|(model, values)| Embedding::from_template(model, values))
            .collect()),
    }
}

/// The embeddings a verification of `subject` compares with, and the place admission control
/// gave its work, after the refusals every route that verifies gives before any model work, in
/// one order: unknown subject (404), no face to match (409), no place (503 `overloaded`, 429
/// `too_many_inferences`), locked (429). `/v1/verify`, verify with a session and opening a
/// session bound to a subject all ask here, so they cannot drift in which refusals they give.
/// The lockout ledger is read within the place: with PostgreSQL that read takes one of the
/// ledger's few connections, and requests failing cheaply after it (a junk image) must not
/// crowd the failures of real attempts out of the shared ledger into one replica's memory.
pub(super) async fn verifiable_subject(
    state: &SharedState,
    subject: &str,
    key: Option<&str>,
) -> Result<(Vec<Embedding>, Admitted), ApiError> {
    let templates = subject_embeddings(state, subject)?;
    let place = admit(state, key).await?;
    state.lockouts.check(subject).await?;
    Ok((templates, place))
}

/// How a decided verification ends for the caller: answered already (a key without `admin`),
/// or the parts the full `admin` answer is built around.
pub(crate) enum Settled {
    /// The whole answer: decision and reasons only.
    Answered(Response),
    /// The caller builds the answer with every score.
    Admin {
        /// The audit trail's record of the attempt.
        detail: AuditDetail,
        /// The request id (`x-request-id`).
        request_id: Option<String>,
    },
}

/// What every verification does once decided, whatever supplied the probe (an image or a
/// liveness session): count the attempt in the subject's lockout ledger (a ledger that cannot
/// count fails the request, so failures are never lost; a success clears them), record it for
/// the audit trail, count the decision and its scores in the metrics, and answer a key without
/// `admin` with the decision and reasons only; a ledger that cannot clear fails it too. A subject
/// locked while this verification ran (by
/// attempts sent beside it) gets 429 `subject_locked` instead of the decision, accept or reject
/// (and the decision is not counted): attempts sent at once reveal no more decisions than the
/// lockout's threshold.
pub(crate) async fn settle_verification(
    state: &SharedState,
    caller: Option<&Extension<Caller>>,
    headers: &HeaderMap,
    subject: &str,
    outcome: &Verification,
    matched: &MatchVerdict,
    live_score: Option<f64>,
) -> Result<Settled, ApiError> {
    let (decision, reasons) = (outcome.decision, &outcome.reasons);
    let mut locked = Vec::new();
    if decision == Decision::Accept {
        match state.lockouts.record_success(subject).await {
            Ok(()) => {}
            Err(e @ LockoutError::Locked(_)) => {
                tracing::warn!(
                    target: "facekey::security",
                    subject = %subject,
                    "a match decided while the subject was locked is refused"
                );
                return Err(e.into());
            }
            // Not known to be unlocked: the accept is not revealed (fail closed).
            Err(e) => return Err(e.into()),
        }
    } else if state.lockouts.record_failure(subject).await?.is_some() {
        // The lock's own event names no caller: this line and the audit event name the one
        // whose attempt caused it.
        tracing::warn!(
            target: "facekey::security",
            subject = %subject,
            key_id = key_id(caller).unwrap_or("-"),
            request_id = request_id(headers).as_deref().unwrap_or("-"),
            "this failed verification locked the subject"
        );
        locked.push(subject.to_owned());
    }
    let m = &state.metrics;
    m.record_decision(decision);
    m.record_scores(
        decision,
        matched.similarity,
        live_score,
        outcome.forward.probability,
    );
    let detail = AuditDetail {
        subject: Some(subject.to_owned()),
        decision: Some(decision),
        reasons: reasons.iter().map(|r| r.as_str().to_owned()).collect(),
        locked,
        ..AuditDetail::default()
    };
    let request_id = request_id(headers);
    if is_admin(caller) {
        return Ok(Settled::Admin { detail, request_id });
    }
    let body = VerifyDecision {
        subject: subject.to_owned(),
        decision,
        reasons: reasons.to_vec(),
        request_id,
    };
    Ok(Settled::Answered(
        (Extension(detail), Json(body)).into_response(),
    ))
}

/// `POST /v1/verify`: is this the subject, and is the face live?
#[utoipa::path(
    post,
    path = "/v1/verify",
    tag = "verification",
    summary = "Verify a face against an enrolled subject (1:1)",
    description = "Multipart fields `subject` (id) and `image`, or JSON \
`{\"subject\": \"<id>\", \"image\": \"<base64>\"}`; optional `include_layers` (true/false). \
Runs detection, embedding match, passive liveness, quality and the fusion MLP. With \
`FACEKEY_MATCH_MODELS=dlib+faceres` the match fuses dlib and faceres-deep for faces enrolled \
with both; a subject whose faces hold dlib alone is matched on dlib alone, and the answer says \
so (`match.models` `[\"dlib\"]`, a `warnings` entry `matched_on_dlib_only`). With a passed \
challenge-liveness `session` instead of (or beside) the image, the session's best frame is the \
probe and the challenge confidence the liveness; the session is consumed (one verification or \
identification).",
    request_body(content(
        (super::bodies::VerifyJson = "application/json"),
        (super::bodies::VerifyForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Verified (the decision may be reject)", body = VerifyAnswer),
        (status = 404, description = "Unknown subject (`subject_not_found`), or no such liveness \
session for this key (`session_not_found`)", body = ErrorBody),
        (status = 409, description = "Subject has no enrolled face (`subject_has_no_faces`), or \
only faces of another embedding model (`subject_needs_reenrolment`); the session has not passed \
(`session_not_passed`), was already used (`session_used`) or was opened for another subject \
(`session_subject_mismatch`)", body = ErrorBody),
        (status = 410, description = "The session expired (`session_expired`)", body = ErrorBody),
        (status = 413, description = "Image too large", body = ErrorBody),
        (status = 415, description = "Not JPEG, PNG or WebP", body = ErrorBody),
        (status = 422, description = "No face, several faces, or missing fields; \
`session_required` when the server requires liveness sessions and none was given; \
`session_face_mismatch` when the image beside the session shows another face", body = ErrorBody),
        (status = 429, description = "The subject is locked after repeated failed verifications \
(`subject_locked`, `Retry-After`: seconds left), also when it locked while this verification ran \
(by attempts sent beside it): its decision is then not revealed", body = ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ImageOrSession(input): ImageOrSession,
) -> Response {
    // What the body named, taken before anything can refuse the request: the audit event of a
    // refused verification (unknown subject, locked, no face, sessions required) still says
    // which account it aimed at and with which session.
    let named = AuditDetail::named(
        input.fields.get("subject").map(String::as_str),
        input.fields.get(SESSION_FIELD).map(String::as_str),
    );
    let response = verify_decided(state, caller, headers, input)
        .await
        .into_response();
    with_named_detail(response, named)
}

/// `response` with `named` completing its audit detail (or as its detail, when the handler
/// left none, as every refusal does).
fn with_named_detail(mut response: Response, named: AuditDetail) -> Response {
    let extensions = response.extensions_mut();
    match extensions.get_mut::<AuditDetail>() {
        Some(detail) => detail.complete(named),
        None => {
            extensions.insert(named);
        }
    }
    response
}

/// The work of `POST /v1/verify` (see [`verify`]).
async fn verify_decided(
    state: SharedState,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    input: ImageInput,
) -> Result<Response, ApiError> {
    // Challenge-liveness sessions (issue 13): a `session` field verifies with the session.
    if input.fields.contains_key(SESSION_FIELD) {
        return super::sessions::verify_with_session(state, caller, headers, input).await;
    }
    if state.sessions.require_session() {
        return Err(super::sessions::session_required(
            "verification",
            "open one at /v1/liveness/sessions and send {\"subject\", \"session\"}",
        ));
    }
    let engine = state.engine()?;
    let subject = input.required("subject")?.trim().to_string();
    let include_layers = parse_flag(&input, "include_layers")?;
    let (templates, place) = verifiable_subject(&state, &subject, key_id(caller.as_ref())).await?;
    let image = input.image;
    let analysis: FaceAnalysis = place
        .run(&state, engine.clone(), move |e, c| {
            e.vision.analyze(&image, AnalyzeOptions::FULL, c)
        })
        .await?;
    // The place is for the models: the ledger's and the audit's waits below must not hold it
    // (a slow ledger would otherwise refuse identify and enrol as overloaded too).
    drop(place);
    observe_timings(&state, &analysis.timings, &analysis.inference);

    let verifier = &engine.verifier;
    let t = Instant::now();
    let scores = engine.vision.compare_all(&analysis.embedding, &templates);
    let matched = verifier.judge_templates(&scores).ok_or_else(|| {
        ApiError::internal("templates vanished between the lookup and the comparison")
    })?;
    let matching = t.elapsed();

    let t = Instant::now();
    let liveness = verifier.judge_liveness(analysis.liveness.as_ref());
    let quality = analysis.quality.map_or(0.0, |q| f64::from(q.score));
    let outcome = verifier.decide(&matched, &liveness, quality);
    let fusion = t.elapsed();
    let m = &state.metrics;
    m.stage_duration
        .with_label_values(&["fusion"])
        .observe(fusion.as_secs_f64());
    m.inference_duration
        .with_label_values(&["fusion"])
        .observe(fusion.as_secs_f64());
    let warnings = match_warnings(&subject, engine.vision.match_models(), matched.models);
    if !warnings.is_empty() {
        tracing::info!(subject = %subject, "verification matched on dlib alone: the subject's faces predate faceres-deep");
    }
    let live_score = liveness.score;
    let liveness = LivenessReportItem::new(liveness, analysis.liveness);
    report_liveness(
        &state,
        caller.as_ref(),
        &headers,
        "/v1/verify",
        Some(&subject),
        &liveness,
    );
    let settled = settle_verification(
        &state,
        caller.as_ref(),
        &headers,
        &subject,
        &outcome,
        &matched,
        live_score,
    )
    .await?;
    m.verify_match_models
        .with_label_values(&[matched.models.as_str()])
        .inc();
    let (detail, request_id) = match settled {
        Settled::Answered(response) => return Ok(response),
        Settled::Admin { detail, request_id } => (detail, request_id),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let body = VerifyResponse {
        request_id,
        subject,
        face: analysis.face,
        faces_detected: analysis.faces_detected,
        match_: MatchReport::from(&matched),
        liveness,
        quality: analysis.quality,
        features: outcome.features,
        probability: outcome.forward.probability,
        decision: outcome.decision,
        threshold: verifier.threshold(),
        decision_policy: verifier.config().policy,
        reasons: outcome.reasons,
        warnings,
        weights: verifier.fusion().name().to_string(),
        layers: include_layers.then_some(outcome.forward.layers),
        timings_ms: VerifyTimings {
            stages: analysis.timings,
            matching: ms(matching),
            fusion: ms(fusion),
        },
        inference_ms: analysis.inference,
    };
    Ok((Extension(detail), Json(body)).into_response())
}

/// Default and largest number of identification candidates.
const IDENTIFY_LIMIT: (usize, usize) = (5, 100);

/// Route label of identification spoof events.
const IDENTIFY_ROUTE: &str = "/v1/identify";

fn parse_limit(input: &ImageInput) -> Result<usize, ApiError> {
    let Some(v) = input.fields.get("limit").map(|v| v.trim()) else {
        return Ok(IDENTIFY_LIMIT.0);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=IDENTIFY_LIMIT.1).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid_request(format!(
            "field `limit` must be an integer from 1 to {}, got {v:?}",
            IDENTIFY_LIMIT.1
        ))),
    }
}

/// One of the nearest subjects as identification judged it.
struct Judged {
    subject: Subject,
    matched: MatchVerdict,
    outcome: Verification,
    /// Locked after failed attempts: left out of the answer.
    locked: bool,
}

impl Judged {
    /// Whether the subject is returned as a candidate: matched, accepted, not locked.
    fn accepted(&self) -> bool {
        !self.locked
            && self.matched.decision == Decision::Accept
            && self.outcome.decision == Decision::Accept
    }
}

/// What the lockout made of an identification's judged subjects.
struct Ruled {
    /// The judged subjects that are not locked, nearest first: what the answer is made of.
    judged: Vec<Judged>,
    /// `accept` when an unlocked subject was accepted.
    decision: Decision,
    /// Locked subjects the face matched, withheld from the answer (for the audit trail).
    withheld: Vec<String>,
    /// Subjects a failed attempt was counted against.
    failed: Vec<String>,
    /// Of those, the ones that attempt locked.
    locked: Vec<String>,
}

/// Rule on an identification's judged subjects as the lockout does on verifications of each, so
/// guesses against one subject are bounded whichever route they take. A locked subject is left
/// out of the answer, from the candidates and from the reasons alike, whether or not the face
/// matched it: the answer is then the same as for a face matching nobody locked, so it cannot
/// tell the caller that the face matches a locked account. An accepted subject's failures are
/// cleared as a successful verification clears them, unless it locked meanwhile (then it is left
/// out, as verify then answers 429). The closest subject the face matched (similarity past the
/// match threshold) but did not accept, e.g. as a spoof or on low probability, is counted one
/// failed attempt, as a verification of it with this face would be ([`failure_targets`]),
/// whether or not another subject was accepted: else a decoy subject accepting every probe (one
/// an `enrol` key created with a look-alike face) would let a key try faces against a victim
/// without limit, each acceptance of the victim shown in the answer. When a key created that
/// subject, the closest one that key did not create is counted too, so one key's rejected decoy
/// closer than the victim does not take all the victim's failures. A subject locked by attempts
/// sent beside this one is left out too. A ledger that cannot count or clear fails the request,
/// as in verify.
async fn rule_on_attempts(
    lockouts: &crate::lockout::Lockouts,
    mut judged: Vec<Judged>,
) -> Result<Ruled, ApiError> {
    let mut withheld = Vec::new();
    let lock = |j: &mut Judged, withheld: &mut Vec<String>| {
        j.locked = true;
        if j.matched.decision == Decision::Accept {
            tracing::warn!(
                target: "facekey::security",
                subject = %j.subject.id,
                "identify matched a locked subject; withheld from the answer"
            );
            withheld.push(j.subject.id.clone());
        }
    };
    // Every judged subject is looked up, in one question to the ledger.
    let ids: Vec<&str> = judged.iter().map(|j| j.subject.id.as_str()).collect();
    let locks = lockouts.locked_among(&ids).await?;
    for (j, left) in judged.iter_mut().zip(locks) {
        if left.is_some() {
            lock(j, &mut withheld);
        }
    }
    for j in judged.iter_mut().filter(|j| j.accepted()) {
        match lockouts.record_success(&j.subject.id).await {
            Ok(()) => {}
            Err(LockoutError::Locked(_)) => lock(j, &mut withheld),
            Err(e) => return Err(e.into()),
        }
    }
    let decision = if judged.iter().any(Judged::accepted) {
        Decision::Accept
    } else {
        Decision::Reject
    };
    let mut failed = Vec::new();
    let mut locked_now = Vec::new();
    for i in failure_targets(&judged) {
        let Some(j) = judged.get_mut(i) else { continue };
        match lockouts.record_failure(&j.subject.id).await {
            Ok(locked) => {
                if locked.is_some() {
                    locked_now.push(j.subject.id.clone());
                }
                failed.push(j.subject.id.clone());
            }
            Err(LockoutError::Locked(_)) => lock(j, &mut withheld),
            Err(e) => return Err(e.into()),
        }
    }
    judged.retain(|j| !j.locked);
    Ok(Ruled {
        judged,
        decision,
        withheld,
        failed,
        locked: locked_now,
    })
}

/// The judged subjects an identification's failed attempt is counted against: the closest one
/// the face matched but that was not accepted (nor locked), the first of equals (the judged are
/// nearest first, as the answer's reasons are); and, when a key created that one, also the
/// closest such subject that key did not create. So a rejected decoy, enrolled with a face
/// closer to the probes than the victim's by a key of the attacker's (whether or not it is the
/// key identifying), cannot take the failures meant for a victim another key enrolled. At most
/// two, so one face resembling many subjects cannot count against every look-alike at once (a
/// hundred subjects locked by five requests). Decoys of two keys, or created by the victim's
/// own key (an application enrolling its users with one key), still take them in the victim's
/// place until they lock themselves: then they are left out and the victim is counted.
fn failure_targets(judged: &[Judged]) -> Vec<usize> {
    let closest = |creator: Option<&str>| {
        judged
            .iter()
            .enumerate()
            .filter(|(_, j)| !j.locked && j.matched.decision == Decision::Accept && !j.accepted())
            .filter(|(_, j)| creator.is_none_or(|c| j.subject.created_by.as_deref() != Some(c)))
            .reduce(|best, j| {
                if j.1.matched.similarity > best.1.matched.similarity {
                    j
                } else {
                    best
                }
            })
            .map(|(i, _)| i)
    };
    let Some(first) = closest(None) else {
        return Vec::new();
    };
    let mut targets = vec![first];
    if let Some(creator) = judged[first].subject.created_by.as_deref()
        && let Some(other) = closest(Some(creator))
    {
        targets.push(other);
    }
    targets
}

/// A subject as identification names it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CandidateSubject {
    /// Subject id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// One identified subject.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentifyCandidate {
    /// The subject.
    pub subject: CandidateSubject,
    /// Similarity in [0, 1] of the subject's closest template.
    pub similarity: f64,
    /// Euclidean distance of that template.
    pub distance: f64,
    /// The embedding models the similarity came from (`["dlib", "faceres"]` or `["dlib"]`).
    #[schema(value_type = Vec<String>, example = json!(["dlib", "faceres"]))]
    pub models: &'static [&'static str],
    /// The fused probability for this subject.
    pub probability: f64,
}

/// A subject identification accepted, as a key without `admin` sees it: no scores.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentifiedSubject {
    /// The subject.
    pub subject: CandidateSubject,
}

/// Answer of `POST /v1/identify` to a key without the `admin` scope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifyDecision {
    /// Subjects the face was accepted as, best first.
    pub candidates: Vec<IdentifiedSubject>,
    /// `accept` when at least one candidate was accepted.
    pub decision: Decision,
    /// Why the best match was rejected.
    pub reasons: Vec<Reason>,
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
}

/// Answer of `POST /v1/identify` to an `admin` key, with scores and diagnostics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentifyResponse {
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// Subjects the face was accepted as, best first (empty when none; at most `limit`).
    pub candidates: Vec<IdentifyCandidate>,
    /// `accept` when at least one candidate was accepted.
    pub decision: Decision,
    /// Why the best match was rejected (`no_match` when nobody matched).
    pub reasons: Vec<Reason>,
    /// The face used.
    #[schema(value_type = Object)]
    pub face: Detection,
    /// How many faces the image held.
    pub faces_detected: usize,
    /// Passive liveness.
    pub liveness: LivenessReportItem,
    /// Face quality.
    #[schema(value_type = Option<Object>)]
    pub quality: Option<QualityResult>,
    /// Templates of the serving model searched (exactly, every one).
    pub templates_searched: usize,
    /// The probability threshold.
    pub threshold: f64,
    /// `strict` or `fusion`.
    pub decision_policy: DecisionPolicy,
    /// Per-stage wall times, milliseconds (`matching` is the index search).
    pub timings_ms: VerifyTimings,
    /// Time inside ONNX Runtime per model, milliseconds.
    #[schema(value_type = Object)]
    pub inference_ms: ModelTimings,
}

/// Answer of `POST /v1/identify` with a liveness session to an `admin` key: the candidates with
/// their scores, and the session's probe and challenge liveness in place of the image analysis.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionIdentifyResponse {
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// Subjects the face was accepted as, best first (empty when none; at most `limit`).
    pub candidates: Vec<IdentifyCandidate>,
    /// `accept` when at least one candidate was accepted.
    pub decision: Decision,
    /// Why the best match was rejected (`no_match` when nobody matched).
    pub reasons: Vec<Reason>,
    /// The session used.
    pub session: String,
    /// The challenge it passed.
    pub challenge: Vec<Action>,
    /// Whether the probe was the image sent beside the session (else the session's best frame).
    pub probe_from_image: bool,
    /// Liveness: the challenge confidence.
    pub liveness: LivenessReportItem,
    /// The probe's quality score.
    pub quality: Option<f32>,
    /// Full quality measurements, when the probe was an image.
    #[schema(value_type = Option<Object>)]
    pub quality_detail: Option<QualityResult>,
    /// Templates of the serving model searched (exactly, every one).
    pub templates_searched: usize,
    /// The probability threshold.
    pub threshold: f64,
    /// `strict` or `fusion`.
    pub decision_policy: DecisionPolicy,
}

/// `POST /v1/identify`: who is this, among every enrolled subject (1:N)?
#[utoipa::path(
    post,
    path = "/v1/identify",
    tag = "verification",
    summary = "Identify a face among all enrolled subjects (1:N)",
    description = "Multipart field `image` or JSON `{\"image\": \"<base64>\"}`, or a passed \
challenge-liveness session as `session` instead of (or beside) the image; optional `limit` \
(1-100, default 5). The probe is compared with every template of the serving embedding model \
(exact search on dlib's embedding); the `limit` nearest subjects are judged on their templates \
as `/v1/verify` judges them (the fused dlib + faceres-deep score where they hold both); those above the match threshold are judged with the same liveness, quality \
and decision policy as `/v1/verify`, and the accepted ones are returned best first. Under the \
per-subject lockout as `/v1/verify` is: a locked subject is never a candidate and reads as no \
match (also in `reasons`), and a rejected identification counts one failed attempt against the \
closest subject the face matched (never against every look-alike at once). With `session` (as for `/v1/verify`: passed, opened by the same key, \
unused, unexpired) the session's best frame is the probe (or the image, when it shows the same \
face) and the challenge confidence the liveness; the session is consumed, so it serves one \
identification or verification. Only a session opened without `subject` identifies: a session \
bound to a subject verifies that subject alone (422 `session_bound_to_subject`, the session \
left unused). With `FACEKEY_REQUIRE_SESSION=on` an identification without a session is refused \
(422 `session_required`).",
    request_body(content(
        (super::bodies::IdentifyJson = "application/json"),
        (super::bodies::IdentifyForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Searched (candidates may be empty)", body = IdentifyAnswer),
        (status = 404, description = "No such liveness session for this key (`session_not_found`)", body = ErrorBody),
        (status = 409, description = "The session has not passed (`session_not_passed`) or was \
already used (`session_used`)", body = ErrorBody),
        (status = 410, description = "The session expired (`session_expired`)", body = ErrorBody),
        (status = 413, description = "Image too large", body = ErrorBody),
        (status = 415, description = "Not JPEG, PNG or WebP", body = ErrorBody),
        (status = 422, description = "No face, several faces, bad limit or missing image; \
`session_required` when the server requires liveness sessions (`FACEKEY_REQUIRE_SESSION=on`) \
and none was given; `session_bound_to_subject` for a session opened for one subject; \
`session_face_mismatch` when the image beside the session shows another face", body = ErrorBody),
    )
)]
pub async fn identify(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ImageOrSession(input): ImageOrSession,
) -> Response {
    // The session the body named, taken before anything can refuse the request: the audit event
    // of a refused identification (not passed, used, expired) still names it, as verify's does.
    let named = AuditDetail::named(None, input.fields.get(SESSION_FIELD).map(String::as_str));
    let response = identify_decided(state, caller, headers, input)
        .await
        .into_response();
    with_named_detail(response, named)
}

/// What an identification searched with: a face analysed in the image, or a passed liveness
/// session's probe.
enum IdentifyProbe {
    /// The image's face, with passive liveness and the pipeline's timings.
    Image(Box<FaceAnalysis>),
    /// A passed session's best frame (or the image beside it) and the challenge's liveness.
    Session(Box<SessionProbe>),
}

impl IdentifyProbe {
    /// The liveness verdict the fusion takes.
    fn liveness(&self, verifier: &Verifier) -> LivenessVerdict {
        match self {
            Self::Image(a) => verifier.judge_liveness(a.liveness.as_ref()),
            Self::Session(p) => p.liveness.clone(),
        }
    }

    /// The quality feature (0 when unmeasured).
    fn quality(&self) -> f64 {
        match self {
            Self::Image(a) => a.quality.map_or(0.0, |q| f64::from(q.score)),
            Self::Session(p) => p.quality.map_or(0.0, f64::from),
        }
    }
}

/// The `limit` subjects nearest to `probe` in this replica's index (exact search over every
/// serving-model template), how many templates were searched, and how long it took.
fn search(
    enrolments: &Enrolments,
    probe: &Embedding,
    limit: usize,
) -> (Vec<Nearest>, usize, Duration) {
    let t = Instant::now();
    let index = enrolments.index();
    let nearest = index.nearest(probe.as_slice(), limit);
    (nearest, index.template_count(), t.elapsed())
}

/// The work of `POST /v1/identify` (see [`identify`]).
async fn identify_decided(
    state: SharedState,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    input: ImageInput,
) -> Result<Response, ApiError> {
    let with_session = input.fields.contains_key(SESSION_FIELD);
    // A still image proves no liveness that a required session would: without a session
    // identify refuses rather than be the way around the requirement.
    if !with_session && state.sessions.require_session() {
        return Err(super::sessions::session_required(
            "identification",
            "open one (without a subject) at /v1/liveness/sessions and send {\"session\"}, \
             with or without the image",
        ));
    }
    let engine = state.engine()?;
    let limit = parse_limit(&input)?;
    let enrolments = state.enrolments.clone();
    // The search over every template is CPU work like the models': it runs on the inference
    // pool within an admitted place (the image's analysis's, when there is one), so admission
    // control counts it.
    let (probe, nearest, searched, matching) = if with_session {
        // With a passed session, as verify takes one: consumed before the search, once the
        // search (and the image's analysis) has its place, so a refusal leaves the session.
        let key = super::sessions::key_of(caller.as_ref())?;
        let session = input.required(SESSION_FIELD)?.trim().to_string();
        let place = admit(&state, Some(&key)).await?;
        let probe = super::sessions::take_session_probe(
            &state,
            &engine,
            &key,
            session,
            &input.image,
            SessionUse::Identify,
            Some(&place),
        )
        .await?;
        let embedding = probe.embedding.clone();
        let (nearest, searched, matching) = place
            .run(&state, engine.clone(), move |_, _| {
                Ok(search(&enrolments, &embedding, limit))
            })
            .await?;
        (
            IdentifyProbe::Session(Box::new(probe)),
            nearest,
            searched,
            matching,
        )
    } else {
        let image = input.image;
        let (analysis, (nearest, searched, matching)) = with_engine(
            &state,
            engine.clone(),
            key_id(caller.as_ref()),
            move |e, c| {
                let analysis: FaceAnalysis = e.vision.analyze(&image, AnalyzeOptions::FULL, c)?;
                let found = search(&enrolments, &analysis.embedding, limit);
                Ok((analysis, found))
            },
        )
        .await?;
        observe_timings(&state, &analysis.timings, &analysis.inference);
        (
            IdentifyProbe::Image(Box::new(analysis)),
            nearest,
            searched,
            matching,
        )
    };

    let t = Instant::now();
    let verifier = &engine.verifier;
    let liveness = probe.liveness(verifier);
    let quality = probe.quality();
    let judged: Vec<Judged> = nearest
        .into_iter()
        .map(|n| {
            // The candidates come ranked by dlib distance (the index holds dlib's part);
            // each is judged on its templates as verify judges them (fused when they hold
            // faceres-deep's embedding).
            let fused = subject_embeddings(&state, &n.subject.id)
                .ok()
                .and_then(|templates| match &probe {
                    // A session matches as verify matches it: its frames too.
                    IdentifyProbe::Session(p) => p.judge(&engine, &templates),
                    IdentifyProbe::Image(a) => verifier
                        .judge_templates(&engine.vision.compare_all(&a.embedding, &templates)),
                });
            // Its templates gone since the search (deleted meanwhile): no match. The index's
            // dlib-only distance is no verdict (a face just revoked would still identify, and a
            // session's witnesses would be skipped).
            let matched =
                fused.unwrap_or_else(|| verifier.judge_match(f64::from(n.distance), 0.0, 0));
            let outcome = verifier.decide(&matched, &liveness, quality);
            Judged {
                subject: n.subject,
                matched,
                outcome,
                locked: false,
            }
        })
        .collect();
    let mut judged = judged;
    let mut probe = probe;
    if let IdentifyProbe::Session(p) = &mut probe {
        // A session repeating the frames of a session accepted for a subject it would identify
        // is a replayed recording: then no subject is identified with it (a look-alike or a
        // second enrolment of the same person included), the most similar takes the failed
        // attempt, and the spoof event is raised once. Otherwise every accepted subject
        // remembers its frames (a later verification of any of them with the recording is a
        // replay), before the lockout ledger records the outcome, as verify does.
        let mut replayed = false;
        for j in judged.iter().filter(|j| j.accepted()) {
            let id = &j.subject.id;
            if p.is_replay(&state, id, IDENTIFY_ROUTE, caller.as_ref(), &headers)
                .await?
            {
                replayed = true;
                break;
            }
        }
        let accepted: Vec<&str> = judged
            .iter()
            .filter(|j| j.accepted())
            .map(|j| j.subject.id.as_str())
            .collect();
        if !replayed && !accepted.is_empty() {
            // False unless the same recording, accepted at this moment for one of them in
            // another session, was remembered first.
            replayed = p
                .remember_accepted(&state, &accepted, IDENTIFY_ROUTE, caller.as_ref(), &headers)
                .await?;
        }
        if replayed {
            p.replayed();
            for j in &mut judged {
                j.outcome.refuse(Reason::Spoof);
                j.outcome.refuse(Reason::ReplayedSession);
            }
        }
    }
    let ruled = rule_on_attempts(&state.lockouts, judged).await?;
    let decision = ruled.decision;
    let fusion = t.elapsed();
    state.metrics.record_decision(decision);
    if let Some(best) = ruled.judged.first() {
        state.metrics.record_scores(
            decision,
            best.matched.similarity,
            liveness.score,
            best.outcome.forward.probability,
        );
    }
    state
        .metrics
        .stage_duration
        .with_label_values(&["search"])
        .observe(matching.as_secs_f64());
    // The reasons are the nearest unlocked subject's (locked ones are gone from the list).
    let reasons = match ruled.judged.first() {
        _ if decision == Decision::Accept => Vec::new(),
        None => vec![Reason::NoMatch],
        Some(best) => best.outcome.reasons.clone(),
    };
    let candidates: Vec<IdentifyCandidate> = ruled
        .judged
        .into_iter()
        .filter(Judged::accepted)
        .map(|j| IdentifyCandidate {
            subject: CandidateSubject {
                id: j.subject.id,
                name: j.subject.name,
            },
            similarity: j.matched.similarity,
            distance: j.matched.distance,
            models: j.matched.models.names(),
            probability: j.outcome.forward.probability,
        })
        .collect();
    let session = match &probe {
        IdentifyProbe::Session(p) => Some(p.session.clone()),
        IdentifyProbe::Image(_) => None,
    };
    let detail = AuditDetail {
        session,
        decision: Some(decision),
        reasons: reasons.iter().map(|r| r.as_str().to_owned()).collect(),
        candidates: candidates.iter().map(|c| c.subject.id.clone()).collect(),
        withheld_locked: ruled.withheld,
        failed_attempts: ruled.failed,
        locked: ruled.locked,
        ..AuditDetail::default()
    };
    let request_id = request_id(&headers);
    // The liveness answer and its metrics: passive liveness (a spoof is an event, as in
    // verify), or the challenge's, counted as verify with a session counts it.
    let liveness = match &probe {
        IdentifyProbe::Image(analysis) => {
            let liveness = LivenessReportItem::new(liveness, analysis.liveness.clone());
            report_liveness(
                &state,
                caller.as_ref(),
                &headers,
                IDENTIFY_ROUTE,
                None,
                &liveness,
            );
            liveness
        }
        IdentifyProbe::Session(p) => {
            state.metrics.record_liveness(p.liveness.state);
            p.liveness_report()
        }
    };
    if !is_admin(caller.as_ref()) {
        let body = IdentifyDecision {
            candidates: candidates
                .into_iter()
                .map(|c| IdentifiedSubject { subject: c.subject })
                .collect(),
            decision,
            reasons,
            request_id,
        };
        return Ok((Extension(detail), Json(body)).into_response());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let response = match probe {
        IdentifyProbe::Image(analysis) => Json(IdentifyResponse {
            request_id,
            reasons,
            candidates,
            decision,
            face: analysis.face,
            faces_detected: analysis.faces_detected,
            liveness,
            quality: analysis.quality,
            templates_searched: searched,
            threshold: verifier.threshold(),
            decision_policy: verifier.config().policy,
            timings_ms: VerifyTimings {
                stages: analysis.timings,
                matching: ms(matching),
                fusion: ms(fusion),
            },
            inference_ms: analysis.inference,
        })
        .into_response(),
        IdentifyProbe::Session(p) => Json(SessionIdentifyResponse {
            request_id,
            candidates,
            decision,
            reasons,
            session: p.session,
            challenge: p.challenge,
            probe_from_image: p.from_image,
            liveness,
            quality: p.quality,
            quality_detail: p.quality_detail,
            templates_searched: searched,
            threshold: verifier.threshold(),
            decision_policy: verifier.config().policy,
        })
        .into_response(),
    };
    Ok((Extension(detail), response).into_response())
}

/// One face of a liveness answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LivenessFace {
    /// Box, confidence, landmarks.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub face: Detection,
    /// Its liveness.
    pub liveness: LivenessReportItem,
}

/// A face's liveness as a key without `admin` sees it: the verdict, no scores.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LivenessStateOnly {
    /// `live`, `spoof`, `unknown` or `off`.
    pub state: LivenessState,
    /// `accept` for `live` (and `off`), `reject` otherwise.
    pub decision: Decision,
}

/// One face of a liveness answer without `admin`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LivenessFaceDecision {
    /// Box, confidence, landmarks.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub face: Detection,
    /// Its liveness verdict.
    pub liveness: LivenessStateOnly,
}

/// Answer of `POST /v1/liveness` to a key without the `admin` scope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LivenessDecision {
    /// How many faces the image held.
    pub faces_detected: usize,
    /// The analysed faces and their verdicts.
    pub faces: Vec<LivenessFaceDecision>,
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
}

/// Answer of `POST /v1/liveness` to an `admin` key, with scores per model.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LivenessResponse {
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// How many faces the image held.
    pub faces_detected: usize,
    /// The analysed faces, at most `FACEKEY_MAX_FACES_PER_IMAGE`, by descending detection
    /// confidence (empty when none).
    pub faces: Vec<LivenessFace>,
    /// Per-stage wall times, milliseconds.
    #[schema(value_type = Object)]
    pub timings_ms: StageTimings,
    /// Time inside ONNX Runtime per model, milliseconds.
    #[schema(value_type = Object)]
    pub inference_ms: ModelTimings,
}

/// The answer of `POST /v1/verify` as the document describes it: every score and diagnostic for
/// an `admin` key (with an image, or with a liveness session), the decision alone for others
/// (only the decision form has exactly its fields, and only the session form has `session`, so
/// an answer matches one of the three).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum VerifyAnswer {
    /// To an `admin` key.
    Full(Box<VerifyResponse>),
    /// To any other key.
    Decision(VerifyDecision),
    /// To an `admin` key, verifying with a liveness session.
    Session(Box<super::sessions::SessionVerifyResponse>),
}

/// The answer of `POST /v1/identify` by the key's scope and probe (see [`VerifyAnswer`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IdentifyAnswer {
    /// To an `admin` key.
    Full(Box<IdentifyResponse>),
    /// To any other key.
    Decision(IdentifyDecision),
    /// To an `admin` key, identifying with a liveness session.
    Session(Box<SessionIdentifyResponse>),
}

/// The answer of `POST /v1/liveness` by the key's scope (see [`VerifyAnswer`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LivenessAnswer {
    /// To an `admin` key.
    Full(Box<LivenessResponse>),
    /// To any other key.
    Decision(LivenessDecision),
}

/// `POST /v1/liveness`: passive liveness of every face in an image.
#[utoipa::path(
    post,
    path = "/v1/liveness",
    tag = "verification",
    summary = "Passive liveness (anti-spoofing) of every face in an image",
    description = "Multipart field `image` or JSON `{\"image\": \"<base64>\"}`. A face whose \
score is below the threshold is reported as a spoof attempt (metric, log, alert email).",
    request_body(content(
        (super::bodies::ImageJson = "application/json"),
        (super::bodies::ImageForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Faces and their liveness", body = LivenessAnswer),
        (status = 413, description = "Image too large", body = ErrorBody),
        (status = 415, description = "Not JPEG, PNG or WebP", body = ErrorBody),
        (status = 422, description = "Missing image", body = ErrorBody),
    )
)]
pub async fn liveness(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    input: ImageInput,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let image = input.image;
    let report: LivenessReport = with_engine(
        &state,
        engine.clone(),
        key_id(caller.as_ref()),
        move |e, c| e.vision.liveness_all_until(&image, c),
    )
    .await?;
    observe_timings(&state, &report.timings, &report.inference);
    let faces: Vec<LivenessFace> = report
        .faces
        .into_iter()
        .map(|f| LivenessFace {
            face: f.face,
            liveness: LivenessReportItem::new(
                engine.verifier.judge_liveness(Some(&f.liveness)),
                Some(f.liveness),
            ),
        })
        .collect();
    for f in &faces {
        report_liveness(
            &state,
            caller.as_ref(),
            &headers,
            "/v1/liveness",
            None,
            &f.liveness,
        );
    }
    let request_id = request_id(&headers);
    if !is_admin(caller.as_ref()) {
        let body = LivenessDecision {
            faces_detected: report.faces_detected,
            faces: faces
                .into_iter()
                .map(|f| LivenessFaceDecision {
                    face: f.face,
                    liveness: LivenessStateOnly {
                        state: f.liveness.state,
                        decision: f.liveness.decision,
                    },
                })
                .collect(),
            request_id,
        };
        return Ok(Json(body).into_response());
    }
    Ok(Json(LivenessResponse {
        request_id,
        faces_detected: report.faces_detected,
        faces,
        timings_ms: report.timings,
        inference_ms: report.inference,
    })
    .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fusion::Forward;

    /// A judged subject: matched past the threshold or not, accepted by the fusion or not.
    fn judged(id: &str, similarity: f64, matched: bool, accepted: bool) -> Judged {
        let decision = |yes: bool| {
            if yes {
                Decision::Accept
            } else {
                Decision::Reject
            }
        };
        Judged {
            subject: Subject {
                id: id.to_owned(),
                name: id.to_owned(),
                faces: 1,
                outdated_faces: 0,
                face_models: Default::default(),
                created_at: "2026-01-01T00:00:00Z".to_owned(),
                created_by: None,
            },
            matched: MatchVerdict {
                distance: 1.0 - similarity,
                similarity,
                threshold: 0.5,
                decision: decision(matched),
                templates: 1,
                models: MatchModels::Dlib,
            },
            outcome: Verification {
                features: [similarity, 0.9, 0.9],
                forward: Forward {
                    probability: if accepted { 0.9 } else { 0.1 },
                    layers: Layers {
                        z1: Default::default(),
                        a1: Default::default(),
                        z2: Default::default(),
                        a2: Default::default(),
                        z3: 0.0,
                    },
                },
                decision: decision(accepted),
                reasons: Vec::new(),
            },
            locked: false,
        }
    }

    #[test]
    fn the_failure_goes_to_the_closest_matched_subject_not_accepted() {
        // Nobody accepted: the closest matched subject, not one that did not match.
        let all = [
            judged("far", 0.55, true, false),
            judged("unmatched", 0.45, false, false),
            judged("near", 0.7, true, false),
            judged("tied", 0.7, true, false),
        ];
        assert_eq!(failure_targets(&all), vec![2]);
        // A decoy accepted beside the victim does not shield the victim.
        let decoy = [
            judged("decoy", 0.95, true, true),
            judged("victim", 0.8, true, false),
        ];
        assert_eq!(failure_targets(&decoy), vec![1]);
        // Everyone matched accepted, or nobody matched: nobody is counted.
        let accepted = [judged("a", 0.9, true, true), judged("b", 0.4, false, false)];
        assert_eq!(failure_targets(&accepted), Vec::<usize>::new());
        // A locked subject is not counted again.
        let mut locked = [judged("locked", 0.8, true, false)];
        locked[0].locked = true;
        assert_eq!(failure_targets(&locked), Vec::<usize>::new());
    }

    /// A judged subject created by `key`.
    fn created(mut j: Judged, key: &str) -> Judged {
        j.subject.created_by = Some(key.to_owned());
        j
    }

    #[test]
    fn a_rejected_decoy_of_another_key_does_not_shield_the_victim() {
        // The decoys (one key) are closer and rejected: the closest and the victim (another
        // key) both take a failure, whichever key identifies.
        let crowd = [
            created(judged("decoy", 0.95, true, false), "attacker"),
            created(judged("other-decoy", 0.9, true, false), "attacker"),
            created(judged("victim", 0.8, true, false), "app"),
            judged("legacy", 0.7, true, false),
        ];
        assert_eq!(failure_targets(&crowd), vec![0, 2]);
        // A subject created before creators were recorded counts as another key's.
        let legacy = [
            created(judged("decoy", 0.95, true, false), "attacker"),
            judged("legacy", 0.7, true, false),
        ];
        assert_eq!(failure_targets(&legacy), vec![0, 1]);
        // The closest without a recorded creator: one failure (no key to tell apart).
        let unknown = [
            judged("legacy", 0.95, true, false),
            created(judged("b", 0.9, true, false), "app"),
        ];
        assert_eq!(failure_targets(&unknown), vec![0]);
        // Only one key's subjects matched: one failure, not a second of its own.
        let own = [
            created(judged("a", 0.95, true, false), "app"),
            created(judged("b", 0.9, true, false), "app"),
        ];
        assert_eq!(failure_targets(&own), vec![0]);
    }

    /// Identification's lockout ruling, against a real ledger: the victim behind an accepted
    /// decoy is counted, locks at the threshold, and is then withheld from the answer.
    #[tokio::test]
    async fn a_decoy_accepted_beside_a_victim_does_not_spare_the_victim_its_failures() {
        let lockouts = three_attempt_lockouts();
        for round in 1..=3 {
            let ruled = rule_on_attempts(
                &lockouts,
                vec![
                    judged("decoy", 0.95, true, true),
                    judged("victim", 0.8, true, false),
                ],
            )
            .await
            .unwrap();
            assert_eq!(ruled.decision, Decision::Accept);
            assert_eq!(ruled.failed, vec!["victim".to_owned()], "round {round}");
        }
        assert!(
            lockouts.check("victim").await.is_err(),
            "three failures did not lock"
        );
        assert!(lockouts.check("decoy").await.is_ok());
    }

    /// A lockout of three attempts on an in-memory ledger.
    fn three_attempt_lockouts() -> crate::lockout::Lockouts {
        use crate::lockout::{Lockouts, MemoryLedger, Policy};
        Lockouts::new(
            Policy {
                attempts: 3,
                window: Duration::from_secs(900),
                lock: Duration::from_secs(600),
                max_lock: Duration::ZERO,
            },
            std::sync::Arc::new(MemoryLedger::new()),
            crate::metrics::Metrics::new().unwrap(),
            None,
        )
    }

    /// The same against a real ledger, with the caller's own decoy rejected and closer than the
    /// victim: the victim still locks at the threshold.
    #[tokio::test]
    async fn a_rejected_decoy_closer_than_the_victim_does_not_spare_it_its_failures() {
        let lockouts = three_attempt_lockouts();
        for round in 1..=3 {
            let ruled = rule_on_attempts(
                &lockouts,
                vec![
                    created(judged("decoy", 0.95, true, false), "attacker"),
                    created(judged("victim", 0.8, true, false), "app"),
                ],
            )
            .await
            .unwrap();
            assert_eq!(ruled.decision, Decision::Reject);
            assert_eq!(
                ruled.failed,
                vec!["decoy".to_owned(), "victim".to_owned()],
                "round {round}"
            );
        }
        assert!(
            lockouts.check("victim").await.is_err(),
            "three failures did not lock the victim"
        );
    }
}
