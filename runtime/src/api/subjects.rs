//! Enrolment: create, list, get and delete subjects. Writes go to the template store (and reach
//! this replica's index once acknowledged); reads come from the index, so they keep working
//! while the store is unavailable.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use crate::state::SharedState;
use crate::store::{StoreError, Subject};

/// Body of `POST /v1/subjects`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubject {
    /// Display name of the person.
    pub name: String,
}

/// Answer of `GET /v1/subjects`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubjectList {
    /// All subjects, oldest first.
    pub subjects: Vec<Subject>,
}

/// One enrolled face as the API shows it: never the embedding itself.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceSummary {
    /// Template id.
    pub id: String,
    /// Embedding model that produced it (only the serving model's faces are matched).
    pub model: String,
    /// Quality of the enrolled face.
    pub quality: Option<f64>,
    /// Enrolment time.
    pub created_at: String,
}

/// Answer of `GET /v1/subjects/{id}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubjectDetail {
    /// The subject.
    #[serde(flatten)]
    pub subject: Subject,
    /// Its enrolled faces.
    pub templates: Vec<FaceSummary>,
}

/// `POST /v1/subjects`: 201 with the new subject and its `Location`.
#[utoipa::path(
    post,
    path = "/v1/subjects",
    tag = "subjects",
    summary = "Create a subject to enrol faces for",
    request_body = CreateSubject,
    responses(
        (status = 201, description = "Created", body = Subject,
         headers(("location" = String, description = "The subject's URL"))),
        (status = 422, description = "Invalid name", body = ErrorBody),
        (status = 503, description = "Template store unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<SharedState>,
    ApiJson(req): ApiJson<CreateSubject>,
) -> Result<Response, ApiError> {
    let subject = state.enrolments.create_subject(&req.name).await?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/subjects/{}", subject.id)) {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers, Json(subject)).into_response())
}

/// `GET /v1/subjects`.
#[utoipa::path(
    get,
    path = "/v1/subjects",
    tag = "subjects",
    summary = "List enrolled subjects",
    responses((status = 200, description = "All subjects, oldest first", body = SubjectList))
)]
pub async fn list(State(state): State<SharedState>) -> Result<Json<SubjectList>, ApiError> {
    Ok(Json(SubjectList {
        subjects: state.enrolments.index().list(),
    }))
}

/// `GET /v1/subjects/{id}`: the subject and a summary of its faces.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}",
    tag = "subjects",
    summary = "Get a subject and its enrolled faces (never the embeddings)",
    params(("id" = String, Path, description = "Subject id")),
    responses(
        (status = 200, description = "The subject", body = SubjectDetail),
        (status = 404, description = "Unknown subject", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<SubjectDetail>, ApiError> {
    let (subject, templates) = state
        .enrolments
        .index()
        .get(&id)
        .ok_or(StoreError::SubjectNotFound(id))?;
    Ok(Json(SubjectDetail {
        subject,
        templates: templates
            .into_iter()
            .map(|t| FaceSummary {
                id: t.id,
                model: t.model,
                quality: t.quality,
                created_at: t.created_at,
            })
            .collect(),
    }))
}

/// `DELETE /v1/subjects/{id}`: 204, deleting the subject's templates too; 404 if unknown.
#[utoipa::path(
    delete,
    path = "/v1/subjects/{id}",
    tag = "subjects",
    summary = "Delete a subject and all its templates",
    params(("id" = String, Path, description = "Subject id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown subject", body = ErrorBody),
        (status = 503, description = "Template store unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.enrolments.delete_subject(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(StoreError::SubjectNotFound(id).into())
    }
}
