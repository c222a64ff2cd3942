//! Enrolment: create, list (paged), get, rename and delete subjects, and lift a subject's
//! lockout. Writes go to the template
//! store (and reach this replica's index once acknowledged); reads come from the index, so they
//! keep working while the store is unavailable. A subject records the key that created it, and
//! a key without `admin` may hold at most `FACEKEY_MAX_SUBJECTS_PER_KEY` subjects, so one key
//! cannot fill the store for every other.

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use crate::audit::AuditDetail;
use crate::auth::Caller;
use crate::enrolments::Creator;
use crate::metrics::StoreRefusal;
use crate::state::SharedState;
use crate::store::index::PageFilter;
use crate::store::{QuotaOf, StoreError, Subject};
use crate::vision::Embedding;

/// Body of `POST /v1/subjects`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubject {
    /// Display name of the person: 1 to 128 characters once trimmed, no control characters.
    pub name: String,
}

/// Body of `PATCH /v1/subjects/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameSubject {
    /// The new display name (same rules as at creation).
    pub name: String,
}

/// Answer of `GET /v1/subjects`: one page.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubjectList {
    /// Subjects of this page, oldest first (creation time, then id).
    pub subjects: Vec<Subject>,
    /// Cursor of the next page (pass it as `after`); `null` on the last page.
    pub next: Option<String>,
}

/// Default and largest page size of `GET /v1/subjects`.
pub const PAGE_LIMIT: (usize, usize) = (100, 1000);

/// Separates the creation time from the id in a page cursor (neither contains it).
const CURSOR_SEPARATOR: char = '_';

/// The cursor after `subject`: its creation time and id, so it stays a valid position when
/// that subject is deleted before the next page is read.
fn cursor_of(subject: &Subject) -> String {
    format!("{}{CURSOR_SEPARATOR}{}", subject.created_at, subject.id)
}

/// A page request: where to start and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PageQuery {
    after: Option<(String, String)>,
    limit: usize,
    /// Only the subjects this key id created.
    created_by: Option<String>,
    /// Only the subjects holding faces this key id enrolled.
    enrolled_by: Option<String>,
}

/// Parse `limit`, `after`, `created_by` and `enrolled_by` of `GET /v1/subjects`; anything else
/// is a 422
/// `invalid_request`. `after` is a `next` cursor, or (as a convenience) the id of an existing
/// subject.
fn parse_page_query(state: &SharedState, query: Option<&str>) -> Result<PageQuery, ApiError> {
    let mut page = PageQuery {
        after: None,
        limit: PAGE_LIMIT.0,
        created_by: None,
        enrolled_by: None,
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => {
                page.limit = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=PAGE_LIMIT.1).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid_request(format!(
                            "query parameter `limit` must be an integer from 1 to {}, got {value:?}",
                            PAGE_LIMIT.1
                        ))
                    })?;
            }
            "after" => {
                let invalid = || {
                    ApiError::invalid_request(format!(
                        "query parameter `after` must be the `next` cursor of a previous page or \
                         a subject id, got {value:?}"
                    ))
                };
                page.after = Some(match value.split_once(CURSOR_SEPARATOR) {
                    Some((at, id)) if humantime::parse_rfc3339(at).is_ok() && !id.is_empty() => {
                        (at.to_owned(), id.to_owned())
                    }
                    Some(_) => return Err(invalid()),
                    None => {
                        let (subject, _) =
                            state.enrolments.index().get(&value).ok_or_else(invalid)?;
                        (subject.created_at, subject.id)
                    }
                });
            }
            name @ ("created_by" | "enrolled_by") => {
                if value.is_empty() {
                    return Err(ApiError::invalid_request(format!(
                        "query parameter `{name}` must be an API key id"
                    )));
                }
                let value = Some(value.into_owned());
                if name == "created_by" {
                    page.created_by = value;
                } else {
                    page.enrolled_by = value;
                }
            }
            other => {
                return Err(ApiError::invalid_request(format!(
                    "unknown query parameter `{other}`; `limit`, `after`, `created_by` and \
                     `enrolled_by` are accepted"
                )));
            }
        }
    }
    Ok(page)
}

/// One enrolled face as the API shows it: never the embedding itself.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceSummary {
    /// Template id.
    pub id: String,
    /// Embedding model that produced it (only the serving model's faces are matched);
    /// `dlib_resnet_v1_128d+faceres_deep_1024d` for a face holding both embeddings.
    pub model: String,
    /// The embedding models the face holds: `["dlib", "faceres"]` (matched on the fused
    /// score), `["dlib"]` (enrolled before faceres-deep: matched on dlib alone; add the face
    /// again to store both), or empty for a model this server does not match.
    #[serde(default)]
    pub models: Vec<String>,
    /// Quality of the enrolled face.
    pub quality: Option<f64>,
    /// Enrolment time.
    pub created_at: String,
    /// Id of the API key that enrolled it (never the key), which it counts against
    /// (`FACEKEY_MAX_TEMPLATES_PER_KEY`); absent for faces enrolled before enrollers were
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_by: Option<String>,
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
    operation_id = "create_subject",
    tag = "subjects",
    summary = "Create a subject to enrol faces for",
    request_body = CreateSubject,
    responses(
        (status = 201, description = "Created; `created_by` names the key", body = Subject,
         headers(("location" = String, description = "The subject's URL"))),
        (status = 422, description = "Invalid name", body = ErrorBody),
        (status = 503, description = "Template store unavailable", body = ErrorBody),
        (status = 507, description = "`store_full`: the store holds `FACEKEY_MAX_SUBJECTS` \
subjects; or `key_subject_quota`: the key (without `admin`) holds \
`FACEKEY_MAX_SUBJECTS_PER_KEY` subjects it created (deleting one frees a place)", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    ApiJson(req): ApiJson<CreateSubject>,
) -> Result<Response, ApiError> {
    let Extension(caller) = caller.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "creating a subject needs an API key",
        )
    })?;
    let subject = match create_within_bounds(&state, &caller, &req.name).await {
        Ok(subject) => subject,
        Err(e) => {
            refused(&state, &caller.key_id, QuotaOf::Subjects, &e);
            return Err(e.into());
        }
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/subjects/{}", subject.id)) {
        headers.insert(header::LOCATION, v);
    }
    // The route names no subject: the trail records the one created, so it still links the
    // subject to the key that created it after the subject (and its `created_by`) is deleted.
    let detail = AuditDetail::subject(&subject.id);
    Ok((
        StatusCode::CREATED,
        headers,
        Extension(detail),
        Json(subject),
    )
        .into_response())
}

/// Create a subject within the store's bound and, for a key without `admin`, the key's quota.
/// Both are checked against this replica's index, a mirror of the shared store. The store's
/// bound may be passed by a few creations at once, which is all a memory bound needs; the
/// key's quota also counts this replica's creations in progress, so it holds exactly on one
/// replica, and PostgreSQL counts it again inside the write, so it holds across replicas too.
async fn create_within_bounds(
    state: &SharedState,
    caller: &Caller,
    name: &str,
) -> Result<Subject, StoreError> {
    StoreError::check_room(
        "subjects",
        state.enrolments.index().subject_count(),
        state.config.max_subjects,
        facekey_settings::env::MAX_SUBJECTS,
    )?;
    let creator = Creator {
        key_id: Some(&*caller.key_id),
        quota: state.config.key_quota(QuotaOf::Subjects, caller),
    };
    state.enrolments.create_subject(name, creator).await
}

/// Count a subject creation or an enrolment (`of`) refused by a bound, and log a key reaching
/// its quota (a runaway client or a key filling the store) on `facekey::security`.
pub(super) fn refused(state: &SharedState, key_id: &str, of: QuotaOf, e: &StoreError) {
    let reason = match e {
        StoreError::Full { .. } => StoreRefusal::StoreFull,
        StoreError::KeyQuota { held, limit, .. } => {
            tracing::info!(
                target: "facekey::security",
                key_id,
                held,
                limit,
                "refused: the key holds its quota of {}",
                of.held()
            );
            StoreRefusal::KeyQuota
        }
        _ => return,
    };
    state.metrics.record_store_refusal(of, reason);
}

/// `GET /v1/subjects?limit=&after=&created_by=&enrolled_by=`: one page of subjects, oldest
/// first, optionally only those one API key created or enrolled faces into (to find what a key
/// filled its quotas with).
#[utoipa::path(
    get,
    path = "/v1/subjects",
    operation_id = "list_subjects",
    tag = "subjects",
    summary = "List enrolled subjects, a page at a time",
    params(
        ("limit" = Option<usize>, Query, description = "Subjects per page, 1-1000 (default 100)", minimum = 1, maximum = 1000),
        ("after" = Option<String>, Query, min_length = 1,
         description = "The `next` cursor of the previous page (or a subject id): start after it"),
        ("created_by" = Option<String>, Query, min_length = 1,
         description = "Only the subjects created by the API key of this id (`created_by`)"),
        ("enrolled_by" = Option<String>, Query, min_length = 1,
         description = "Only the subjects holding faces enrolled by the API key of this id (their \
`templates[].enrolled_by`)"),
    ),
    responses(
        (status = 200, description = "One page, oldest first; `next` is null on the last",
         body = SubjectList),
        (status = 422, description = "`invalid_request`: bad `limit`, `after`, `created_by`, \
`enrolled_by` or an unknown parameter", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<SharedState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SubjectList>, ApiError> {
    let page = parse_page_query(&state, query.as_deref())?;
    let after = page
        .after
        .as_ref()
        .map(|(at, id)| (at.as_str(), id.as_str()));
    let filter = PageFilter {
        created_by: page.created_by.as_deref(),
        enrolled_by: page.enrolled_by.as_deref(),
    };
    let (subjects, more) = state.enrolments.index().page(after, page.limit, filter);
    let next = subjects.last().filter(|_| more).map(cursor_of);
    Ok(Json(SubjectList { subjects, next }))
}

/// `PATCH /v1/subjects/{id}` `{"name"}`: rename a subject.
#[utoipa::path(
    patch,
    path = "/v1/subjects/{id}",
    operation_id = "rename_subject",
    tag = "subjects",
    summary = "Rename a subject",
    params(("id" = String, Path, description = "Subject id")),
    request_body = RenameSubject,
    responses(
        (status = 200, description = "Renamed", body = Subject),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: invalid name", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn rename(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RenameSubject>,
) -> Result<Json<Subject>, ApiError> {
    Ok(Json(state.enrolments.rename_subject(&id, &req.name).await?))
}

/// `GET /v1/subjects/{id}`: the subject and a summary of its faces.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}",
    operation_id = "get_subject",
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
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SubjectDetail>, ApiError> {
    state.enrolments.catch_up(&id).await;
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
                models: Embedding::template_models(&t.model)
                    .iter()
                    .map(|m| (*m).to_owned())
                    .collect(),
                model: t.model,
                quality: t.quality,
                created_at: t.created_at,
                enrolled_by: t.enrolled_by,
            })
            .collect(),
    }))
}

/// `DELETE /v1/subjects/{id}`: 204, deleting the subject's templates too; 404 if unknown.
#[utoipa::path(
    delete,
    path = "/v1/subjects/{id}",
    operation_id = "delete_subject",
    tag = "subjects",
    summary = "Delete a subject and all its templates",
    params(("id" = String, Path, description = "Subject id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`not_subject_creator`: a key without `admin` may delete \
only the subjects it created", body = ErrorBody),
        (status = 404, description = "Unknown subject", body = ErrorBody),
        (status = 503, description = "Template store unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    // Without `admin`, only the key that created the subject erases it (as only it sets the
    // first face): the application that enrolled a person honours their erasure request. The
    // route needs a key, so a missing caller is a routing mistake: refused, never everyone's.
    let Some(Extension(caller)) = &caller else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "deleting a subject needs an API key",
        ));
    };
    if !caller.is_admin() {
        let Some(created_by) = state.enrolments.creator_of(&id).await? else {
            forget_erased(&state, &id).await;
            return Err(StoreError::SubjectNotFound(id).into());
        };
        if created_by.as_deref() != Some(&*caller.key_id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_subject_creator",
                format!(
                    "subject {id} was not created by this key: only its creator's key or a key \
                     with the admin scope may delete it"
                ),
            ));
        }
    }
    // The deletion and its clean-up run on their own task: a client that goes away (or the
    // request timeout) while the delete waits does not stop the clean-up after it commits.
    let task = {
        let (state, id) = (state.clone(), id.clone());
        tokio::spawn(async move {
            let deleted = state.enrolments.delete_subject(&id).await?;
            forget_erased(&state, &id).await;
            Ok::<_, StoreError>(deleted)
        })
    };
    let deleted = task.await.map_err(|e| {
        tracing::error!(subject = %id, error = %e, "the subject deletion task failed");
        ApiError::internal("the subject deletion did not finish")
    })??;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(StoreError::SubjectNotFound(id).into())
    }
}

/// What a deleted subject leaves outside the template store: its lockout and counted failures,
/// the frames and probe its liveness sessions captured and the replay record of its accepted
/// sessions, gone with it rather than at their expiry. Run on a 404 too: a deletion whose commit's answer was lost (503) is retried and
/// finds no subject, and its clean-up must still happen. Best effort: the subject is gone
/// either way, so a failure is logged, not answered. Only for an id as the store spells it (a
/// UUID lower case with hyphens): another spelling names no subject here, while the lockout
/// counts every spelling of an id together, so its clean-up would lift a living subject's lock
/// for anyone allowed to ask for a deletion.
async fn forget_erased(state: &SharedState, id: &str) {
    if uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() != id) {
        return;
    }
    state.lockouts.forget(id).await;
    if let Err(e) = state.sessions.store().forget_subject(id).await {
        tracing::warn!(subject = %id, error = %e, "deleting the liveness sessions and replay record of a deleted subject failed; the sessions expire at their TTL, the record at FACEKEY_SESSION_REPLAY_WINDOW_SECS");
    }
}

/// Answer of `DELETE /v1/subjects/{id}/lockout`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LockoutReleased {
    /// The subject.
    pub subject: String,
    /// Whether it was locked: the lock is lifted. `false`: it was not, and any failed attempts
    /// counted against it are forgotten.
    pub was_locked: bool,
    /// Seconds that were left on the lock (`null` when it was not locked).
    pub seconds_left: Option<u64>,
}

/// `DELETE /v1/subjects/{id}/lockout`: lift the subject's lockout and forget its failed
/// attempts, on every replica (with PostgreSQL). An administrator's decision: a successful
/// verification never lifts a lock by itself. Logged on `facekey::security` and audited
/// (`subject.unlock`).
#[utoipa::path(
    delete,
    path = "/v1/subjects/{id}/lockout",
    operation_id = "release_lockout",
    tag = "subjects",
    summary = "Lift a subject's lockout and forget its failed attempts",
    params(("id" = String, Path, description = "Subject id")),
    responses(
        (status = 200, description = "Released (or there was nothing to release)", body = LockoutReleased),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the shared lockout ledger does not \
answer (a lock there stays in force)", body = ErrorBody),
    )
)]
pub async fn release_lockout(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<LockoutReleased>, ApiError> {
    // In the store too when this replica's index lacks it: a subject another replica created
    // a moment ago can already be locked (its failures count on the shared ledger).
    if state.enrolments.creator_of(&id).await?.is_none() {
        return Err(StoreError::SubjectNotFound(id).into());
    }
    let left = state.lockouts.release(&id).await?;
    Ok(Json(LockoutReleased {
        subject: id,
        was_locked: left.is_some(),
        seconds_left: left.map(|d| d.as_secs()),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A deletion retried after its commit's answer was lost finds no subject (404); what the
    /// subject left in the lockout ledger goes all the same, as on the first, answered try.
    #[tokio::test]
    async fn a_delete_that_finds_no_subject_still_forgets_its_lockout() {
        let mut config = Config::for_tests();
        config.lockout_attempts = 1;
        let server = crate::server::Server::bind(config).await.unwrap();
        let state = server.state();
        state.lockouts.record_failure("erased").await.unwrap();
        assert!(state.lockouts.check("erased").await.is_err(), "locked");
        // No caller (a route mistakenly left open) is refused, never taken for an admin.
        let answer = delete(State(state.clone()), None, ApiPath("erased".to_owned())).await;
        assert_eq!(
            answer.err().map(|e| e.status),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert!(
            state.lockouts.check("erased").await.is_err(),
            "still locked"
        );
        let admin = Caller {
            key_id: "admin".into(),
            scopes: std::sync::Arc::new([crate::auth::Scope::Admin].into()),
        };
        let answer = delete(
            State(state.clone()),
            Some(Extension(admin)),
            ApiPath("erased".to_owned()),
        )
        .await;
        assert_eq!(answer.err().map(|e| e.status), Some(StatusCode::NOT_FOUND));
        assert!(
            state.lockouts.check("erased").await.is_ok(),
            "the lock left by the erased subject is gone"
        );
    }
}
