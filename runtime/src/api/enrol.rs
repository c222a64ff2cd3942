//! Faces of a subject: enrol one (detect the one face of an image and store its embedding, never
//! the image, as a new template) behind the enrolment gates, and delete one.
//!
//! The gates, in order, each a 4xx before anything is stored: the subject exists and has room
//! (`FACEKEY_MAX_FACES_PER_SUBJECT`), the store has room (`FACEKEY_MAX_TEMPLATES`) and the key
//! holds fewer faces than its quota (`FACEKEY_MAX_TEMPLATES_PER_KEY`, checked again exactly when
//! the face is stored); the image holds exactly one face, whatever
//! `FACEKEY_MULTI_FACE` says (verification may pick the largest face of a crowd, an enrolment
//! must not guess whose face it stores); the face is live (`FACEKEY_ENROL_LIVENESS`, judged by
//! the [`crate::verifier::Verifier`] exactly as verification judges it; a spoof is reported as
//! one); its quality reaches `FACEKEY_ENROL_MIN_QUALITY`; and, unless the caller
//! holds `admin`, when the subject already has templates of the serving model it matches the
//! first of them (not only the closest: a chain of faces each close to the one before would walk
//! the subject toward another person), and when it has none the caller's key created the
//! subject (checked before any model work): a stolen `enrol` key cannot add an attacker's face
//! to someone else's subject, nor set the first face of one another key created, or one whose
//! faces are all of an older model or were deleted for re-enrolment.
//!
//! That match gate is a match test like a verification, so it is under the per-subject lockout
//! ([`crate::lockout`]): a subject locked after failed attempts takes no face (429
//! `subject_locked`, whatever the key's scope, before any model work), and a `face_mismatch`
//! counts as a failed attempt against the subject.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use facekey_settings::env;
use serde::Serialize;

use super::blocking::{admit, key_id};
use super::error::{ApiError, ErrorBody};
use super::extract::ApiPath;
use super::faces::{is_admin, observe_timings, request_id};
use super::image_input::ImageInput;
use crate::alerts::SpoofAttempt;
use crate::audit::AuditDetail;
use crate::auth::Caller;
use crate::config::Switch;
use crate::decision::Decision;
use crate::enrolments::Creator;
use crate::state::SharedState;
use crate::store::index::SubjectTemplates;
use crate::store::{NewTemplate, QuotaOf, StoreError};
use crate::verifier::LivenessState;
use crate::vision::{
    AnalyzeOptions, Detection, Embedding, FaceAnalysis, QualityResult, StageTimings, VisionError,
};

/// The route, as spoof events name it.
const ROUTE: &str = "/v1/subjects/{id}/faces";

/// Answer of `POST /v1/subjects/{id}/faces`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnrolResponse {
    /// The subject.
    pub subject_id: String,
    /// The new template's id.
    pub face_id: String,
    /// How many faces the subject now has.
    pub faces: usize,
    /// The enrolled face.
    #[schema(value_type = Object)]
    pub face: Detection,
    /// Its quality.
    #[schema(value_type = Object)]
    pub quality: Option<QualityResult>,
    /// Liveness of the enrolled face: `live`, or `off` when enrolment liveness is off
    /// (`FACEKEY_ENROL_LIVENESS=off`) or liveness is off altogether.
    pub liveness: LivenessState,
    /// Per-stage wall times, milliseconds.
    #[schema(value_type = Object)]
    pub timings_ms: StageTimings,
}

/// Count and log an enrolment refused by a bound of the store.
fn refused(state: &SharedState, enroller: Creator<'_>, e: &StoreError) {
    super::subjects::refused(state, enroller.key_id.unwrap_or("-"), QuotaOf::Templates, e);
}

/// A 422 of an enrolment gate.
fn rejected(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Who enrols: the caller's key, held to `FACEKEY_MAX_TEMPLATES_PER_KEY` unless it holds `admin`
/// ([`crate::config::Config::key_quota`]). No key (authentication off): no enroller, no quota.
fn enroller<'a>(state: &SharedState, caller: Option<&'a Extension<Caller>>) -> Creator<'a> {
    Creator {
        key_id: caller.map(|c| &*c.key_id),
        quota: caller.and_then(|c| state.config.key_quota(QuotaOf::Templates, c)),
    }
}

/// The subject's serving-model embeddings (the ones a new face must match), failing fast on an
/// unknown subject, one without room, a full store or an enroller at its quota before any
/// inference is spent.
fn check_subject(
    state: &SharedState,
    id: &str,
    enroller: Creator<'_>,
) -> Result<Vec<Embedding>, StoreError> {
    let index = state.enrolments.index();
    let (subject, _) = index
        .get(id)
        .ok_or_else(|| StoreError::SubjectNotFound(id.to_owned()))?;
    let limit = state.config.max_faces_per_subject;
    if subject.faces >= limit {
        return Err(StoreError::TooManyFaces {
            subject: id.to_owned(),
            limit,
        });
    }
    // Against this replica's index (a mirror of the shared store): replicas enrolling at the same
    // moment may pass the bound by a few, which is all a memory bound needs.
    StoreError::check_room(
        "templates",
        index.held_template_count(),
        state.config.max_templates,
        facekey_settings::env::MAX_TEMPLATES,
    )?;
    state.enrolments.check_quota(QuotaOf::Templates, enroller)?;
    Ok(match index.subject_templates(id) {
        // As verify compares: fused where the templates hold faceres-deep's embedding.
        SubjectTemplates::Found { templates, .. } => templates
            .iter()
            .filter_map(|(model, values)| Embedding::from_template(model, values))
            .collect(),
        SubjectTemplates::NotFound => Vec::new(),
    })
}

/// A subject without a face of the serving model takes its first one only from the key that
/// created it or an `admin` key: with no face to match, that face decides who the subject is.
/// The route needs a key, so a missing caller is a routing mistake: refused, never everyone's.
fn check_first_face(
    state: &SharedState,
    id: &str,
    caller: Option<&Extension<Caller>>,
) -> Result<(), ApiError> {
    let Some(caller) = caller else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "setting a subject's first face needs an API key",
        ));
    };
    let created_by = state
        .enrolments
        .index()
        .get(id)
        .and_then(|(subject, _)| subject.created_by);
    if caller.is_admin() || created_by.as_deref() == Some(&*caller.key_id) {
        return Ok(());
    }
    // The creator's key id is not named: it is another tenant's, and only the audit trail
    // (and an admin reading the subject) may tell who that is.
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "not_subject_creator",
        format!(
            "subject {id} has no face of the serving model to match this one against, so its \
             first face decides who it is: only the key that created it or a key with the \
             admin scope may enrol it"
        ),
    ))
}

/// Exactly one face: several are refused whatever the multi-face policy.
fn check_one_face(analysis: &FaceAnalysis) -> Result<(), ApiError> {
    if analysis.faces_detected > 1 {
        return Err(VisionError::MultipleFaces {
            count: analysis.faces_detected,
        }
        .into());
    }
    Ok(())
}

/// The face must be judged live (state `live`; `off` when liveness is configured off). A spoof
/// is counted and reported like one seen by verification.
fn check_liveness(
    state: &SharedState,
    verdict: &crate::verifier::LivenessVerdict,
    headers: &HeaderMap,
    subject: &str,
    key_id: Option<&str>,
) -> Result<(), ApiError> {
    state.metrics.record_liveness(verdict.state);
    match verdict.state {
        LivenessState::Live | LivenessState::Off => Ok(()),
        LivenessState::Spoof => {
            SpoofAttempt {
                at: std::time::SystemTime::now(),
                route: ROUTE,
                subject: Some(subject.to_owned()),
                liveness: verdict.score.unwrap_or(0.0),
                threshold: verdict.threshold,
                request_id: request_id(headers),
                key_id: key_id.map(str::to_owned),
            }
            .emit(&state.metrics, state.alerts.as_ref());
            Err(rejected(
                "enrol_not_live",
                format!(
                    "the face was judged a presentation attack (not live); enrol a live capture \
                     ({}=off admits ID photos)",
                    env::ENROL_LIVENESS
                ),
            ))
        }
        LivenessState::Unknown => Err(rejected(
            "enrol_liveness_unknown",
            format!(
                "liveness could not be checked on this face ({}); try another image",
                verdict
                    .reason
                    .as_deref()
                    .unwrap_or("no liveness score was measured")
            ),
        )),
    }
}

/// The face's quality must reach the configured minimum.
fn check_quality(quality: Option<&QualityResult>, minimum: f64) -> Result<(), ApiError> {
    let score = quality.map_or(0.0, |q| f64::from(q.score));
    if score < minimum {
        return Err(rejected(
            "low_quality",
            format!(
                "face quality {score:.3} is below the enrolment minimum {minimum} ({}); use a \
                 sharper, larger, frontal, evenly lit face",
                env::ENROL_MIN_QUALITY
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/subjects/{id}/faces`: detect the face, check the gates, store its embedding
/// (never the image).
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/faces",
    operation_id = "enrol_face",
    tag = "subjects",
    summary = "Enrol a face image for a subject",
    description = "Send the image as multipart field `image` or JSON `{\"image\": \"<base64>\"}`. \
Only the face embedding is stored. The image must show exactly one face, live \
(`FACEKEY_ENROL_LIVENESS`) and of quality at least `FACEKEY_ENROL_MIN_QUALITY`; a face added to \
a subject that already has faces must match the first of them unless the key holds `admin`; \
a face that does not (`face_mismatch`) counts as a failed attempt against the subject's \
lockout, and a locked subject takes no face. A subject without a face of the serving model \
takes its first from the key that created it or an `admin` key only (`not_subject_creator`).",
    params(("id" = String, Path, description = "Subject id")),
    request_body(content(
        (super::bodies::ImageJson = "application/json"),
        (super::bodies::ImageForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Enrolled", body = EnrolResponse),
        (status = 403, description = "`not_subject_creator`: the subject has no face of the \
serving model and the key (without `admin`) did not create it", body = ErrorBody),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
        (status = 409, description = "`too_many_faces`: the subject has \
`FACEKEY_MAX_FACES_PER_SUBJECT` faces", body = ErrorBody),
        (status = 413, description = "Image too large", body = ErrorBody),
        (status = 415, description = "Not JPEG, PNG or WebP", body = ErrorBody),
        (status = 507, description = "`store_full`: the store holds `FACEKEY_MAX_TEMPLATES` \
templates; or `key_template_quota`: the key (without `admin`) holds \
`FACEKEY_MAX_TEMPLATES_PER_KEY` faces it enrolled (deleting one frees a place)", body = ErrorBody),
        (status = 422, description = "`no_face`; `multiple_faces` (always refused for \
enrolment); `unusable_face`; `enrol_not_live` (judged a presentation attack); \
`enrol_liveness_unknown` (liveness could not run on the face); `low_quality` (below \
`FACEKEY_ENROL_MIN_QUALITY`); `face_mismatch` (does not match the subject's first face; an \
`admin` key overrides)", body = ErrorBody),
        (status = 429, description = "`subject_locked`: the subject is locked after repeated \
failed attempts (`Retry-After`: seconds left); no face is added whatever the key's scope", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn enrol(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    input: ImageInput,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let enroller = enroller(&state, caller.as_ref());
    state.enrolments.catch_up(&id).await;
    state
        .enrolments
        .check_all_faces_readable(&id)
        .inspect_err(|e| refused(&state, enroller, e))?;
    let enrolled =
        check_subject(&state, &id, enroller).inspect_err(|e| refused(&state, enroller, e))?;
    if enrolled.is_empty() {
        check_first_face(&state, &id, caller.as_ref())?;
    }
    // A locked subject takes no face: the match gate below is a match test like a verification,
    // and a locked subject must not gain a face an attacker could then verify with. The ledger
    // is read within the work's admitted place, as a verification reads it
    // ([`super::faces::verifiable_subject`]).
    let place = admit(&state, key_id(caller.as_ref())).await?;
    state.lockouts.check(&id).await?;
    // With liveness off altogether (FACEKEY_LIVENESS=off, the insecure mode) no model runs and
    // every face counts as live, as in verification.
    let options = AnalyzeOptions {
        liveness: state.config.enrol_liveness == Switch::On
            && engine.verifier.config().check_liveness,
        quality: true,
    };
    let image = input.image;
    let analysis = place
        .run(&state, engine.clone(), move |e, c| {
            e.vision.analyze(&image, options, c)
        })
        .await?;
    // Not held through the ledger's and the store's writes below.
    drop(place);
    observe_timings(&state, &analysis.timings, &analysis.inference);
    check_one_face(&analysis)?;
    let liveness = if options.liveness {
        let verdict = engine.verifier.judge_liveness(analysis.liveness.as_ref());
        check_liveness(&state, &verdict, &headers, &id, enroller.key_id)?;
        verdict.state
    } else {
        LivenessState::Off
    };
    check_quality(analysis.quality.as_ref(), state.config.enrol_min_quality)?;
    let admin = is_admin(caller.as_ref());
    if !enrolled.is_empty() && !admin {
        let scores = engine.vision.compare_all(&analysis.embedding, &enrolled);
        if let Some(m) = engine.verifier.judge_first_template(&scores)
            && m.decision == Decision::Reject
        {
            // A failed attempt against the subject, as a verification with this face would be;
            // one decided after the subject locked (by attempts sent beside it) answers 429.
            state.lockouts.record_failure(&id).await?;
            return Err(rejected(
                "face_mismatch",
                format!(
                    "the face does not match the first of the subject's {} enrolled face(s); a \
                     key with the admin scope can add it anyway",
                    m.templates
                ),
            ));
        }
    }
    // Locked while the models ran (by attempts sent beside this one): still no face added.
    state.lockouts.check(&id).await?;
    // dlib's embedding, with faceres-deep's when the server fuses them (one sealed template).
    let template = NewTemplate {
        model: analysis.embedding.template_model().to_string(),
        embedding: analysis.embedding.template_values(),
        quality: analysis.quality.map(|q| f64::from(q.score)),
        enrolled_by: None,
    };
    let (stored, subject) = state
        .enrolments
        .add_template(&id, template, enroller)
        .await
        .inspect_err(|e| refused(&state, enroller, e))?;
    let detail = AuditDetail {
        face: Some(stored.id.clone()),
        ..AuditDetail::default()
    };
    let body = EnrolResponse {
        subject_id: id,
        face_id: stored.id,
        faces: subject.faces,
        face: analysis.face,
        quality: analysis.quality,
        liveness,
        timings_ms: analysis.timings,
    };
    Ok((StatusCode::CREATED, Extension(detail), Json(body)).into_response())
}

/// `DELETE /v1/subjects/{id}/faces/{face_id}`: 204; the template is gone from every replica's
/// index once acknowledged.
#[utoipa::path(
    delete,
    path = "/v1/subjects/{id}/faces/{face_id}",
    tag = "subjects",
    summary = "Delete one enrolled face of a subject",
    params(
        ("id" = String, Path, description = "Subject id"),
        ("face_id" = String, Path, description = "Face (template) id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`subject_not_found` or `face_not_found`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn delete_face(
    State(state): State<SharedState>,
    ApiPath((id, face_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.enrolments.delete_template(&id, &face_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A first face set without a caller (a route mistakenly left open) is refused, never
    /// taken for everyone's.
    #[tokio::test]
    async fn a_first_face_without_a_caller_is_refused() {
        let server = crate::server::Server::bind(crate::config::Config::for_tests())
            .await
            .unwrap();
        let refused = check_first_face(&server.state(), "someone", None).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn the_quality_gate_names_score_minimum_and_setting() {
        assert!(check_quality(None, 0.0).is_ok());
        let e = check_quality(None, 0.4).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "low_quality")
        );
        assert!(
            e.message.contains("0.000")
                && e.message.contains("0.4")
                && e.message.contains(env::ENROL_MIN_QUALITY),
            "{}",
            e.message
        );
    }
}
