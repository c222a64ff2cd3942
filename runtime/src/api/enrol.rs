//! Enrolment of faces: detect the one face of an image and store its embedding (never the
//! image) as a new template of a subject.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::blocking::with_engine;
use super::error::{ApiError, ErrorBody};
use super::faces::observe_timings;
use super::image_input::ImageInput;
use crate::state::SharedState;
use crate::store::{NewTemplate, StoreError};
use crate::vision::{AnalyzeOptions, Detection, EMBEDDING_MODEL, QualityResult, StageTimings};

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
    /// Per-stage wall times, milliseconds.
    #[schema(value_type = Object)]
    pub timings_ms: StageTimings,
}

/// `POST /v1/subjects/{id}/faces`: detect the face, store its embedding (never the image).
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/faces",
    tag = "subjects",
    summary = "Enrol a face image for a subject",
    description = "Send the image as multipart field `image` or JSON `{\"image\": \"<base64>\"}`. \
Only the face embedding is stored.",
    params(("id" = String, Path, description = "Subject id")),
    responses(
        (status = 201, description = "Enrolled", body = EnrolResponse),
        (status = 404, description = "Unknown subject", body = ErrorBody),
        (status = 409, description = "Subject has the maximum number of faces", body = ErrorBody),
        (status = 413, description = "Image too large", body = ErrorBody),
        (status = 415, description = "Not JPEG, PNG or WebP", body = ErrorBody),
        (status = 422, description = "No face, several faces, or unusable face", body = ErrorBody),
        (status = 503, description = "Template store unavailable", body = ErrorBody),
    )
)]
pub async fn enrol(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    input: ImageInput,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    // Fail fast on an unknown subject before spending inference time.
    if state.enrolments.index().get(&id).is_none() {
        return Err(StoreError::SubjectNotFound(id).into());
    }
    let image = input.image;
    let analysis = with_engine(&state, engine, move |e, c| {
        e.vision.analyze(&image, AnalyzeOptions::ENROL, c)
    })
    .await?;
    observe_timings(&state, &analysis.timings, &analysis.inference);
    let template = NewTemplate {
        model: EMBEDDING_MODEL.to_string(),
        embedding: analysis.embedding.as_slice().to_vec(),
        quality: analysis.quality.map(|q| f64::from(q.score)),
    };
    let (stored, subject) = state.enrolments.add_template(&id, template).await?;
    let faces = subject.faces;
    let body = EnrolResponse {
        subject_id: id,
        face_id: stored.id,
        faces,
        face: analysis.face,
        quality: analysis.quality,
        timings_ms: analysis.timings,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
