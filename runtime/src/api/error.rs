//! The API's one error type and the one place where domain errors become HTTP: every failure
//! becomes `{"error":{"code","message"}}` with a 4xx/5xx status, so clients can branch on a
//! stable `code` and humans read the `message`. Domain code (vision, store, engine) returns its
//! own errors; the `From` impls below are their only mapping to statuses and codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::admission::{InferenceShareFull, Overloaded, Refused};
use crate::lockout::LockoutError;
use crate::metrics::MetricsError;
use crate::state::NotReady;
use crate::store::{QuotaOf, StoreError};
use crate::vision::{ErrorKind, VisionError};

/// A request failure with its HTTP status, a stable machine-readable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status to answer with.
    pub status: StatusCode,
    /// Stable snake_case error code, e.g. `invalid_features`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds after which to retry (`Retry-After`), for overload and rate limits.
    pub retry_after: Option<u64>,
}

/// The error code of an error response, in the response's extensions for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// The JSON body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable snake_case code to branch on, e.g. `invalid_features`.
    pub code: &'a str,
    /// Human-readable explanation.
    pub message: &'a str,
}

impl ApiError {
    /// Build an error from its parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the body is not valid JSON.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// 422: valid JSON that does not describe a valid request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 413: the request body is over `FACEKEY_MAX_BODY_BYTES`.
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body exceeds the configured limit (FACEKEY_MAX_BODY_BYTES)",
        )
    }

    /// 404: no such resource or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: the service cannot answer yet (models loading) or any more (shutting down).
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    /// 500: a failure on our side; the message is logged, the client gets a generic one.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() && self.code == "internal" {
            tracing::error!(error = %self.message, "internal error");
            "internal error; see the server log"
        } else {
            self.message.as_str()
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<NotReady> for ApiError {
    fn from(e: NotReady) -> Self {
        ApiError::not_ready(e.to_string())
    }
}

impl From<Overloaded> for ApiError {
    fn from(e: Overloaded) -> Self {
        ApiError {
            retry_after: Some(e.retry_after.as_secs().max(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
        }
    }
}

impl From<InferenceShareFull> for ApiError {
    fn from(e: InferenceShareFull) -> Self {
        ApiError {
            retry_after: Some(e.retry_after.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_inferences",
                e.to_string(),
            )
        }
    }
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::InferenceShare(e) => e.into(),
            Refused::Overloaded(e) => e.into(),
        }
    }
}

impl From<crate::body_budget::BodyMemoryFull> for ApiError {
    fn from(e: crate::body_budget::BodyMemoryFull) -> Self {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
        }
    }
}

impl From<VisionError> for ApiError {
    fn from(e: VisionError) -> Self {
        let kind = e.kind();
        let status = match kind {
            ErrorKind::InvalidImage => StatusCode::BAD_REQUEST,
            ErrorKind::ImageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::NoFace | ErrorKind::MultipleFaces | ErrorKind::UnusableFace => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, kind.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SubjectNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "subject_not_found",
                format!("no subject with id {id:?}"),
            ),
            StoreError::FaceNotFound { subject, face } => ApiError::new(
                StatusCode::NOT_FOUND,
                "face_not_found",
                format!("subject {subject:?} has no face with id {face:?}"),
            ),
            StoreError::TooManyFaces { .. } => {
                ApiError::new(StatusCode::CONFLICT, "too_many_faces", e.to_string())
            }
            StoreError::Full { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_full",
                e.to_string(),
            ),
            // 507 as `store_full`: a quota of what is stored (RFC 4918's use of 507), which
            // waiting does not free, so no 429 and no Retry-After.
            StoreError::KeyQuota { of, .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                match of {
                    QuotaOf::Subjects => "key_subject_quota",
                    QuotaOf::Templates => "key_template_quota",
                },
                e.to_string(),
            ),
            StoreError::Invalid(message) => ApiError::invalid_request(message),
            StoreError::Unavailable(message) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!(
                    "the template store is unavailable ({message}); reads are served, writes \
                     are refused until it returns"
                ),
            ),
            StoreError::Busy(message) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!("the template store could not serve this now ({message}); retry"),
                )
            },
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<LockoutError> for ApiError {
    /// A locked subject is 429 `subject_locked` with `Retry-After`; a ledger that cannot be read
    /// or written refuses the verification (fails closed) as 503 `store_unavailable`.
    fn from(e: LockoutError) -> Self {
        match e {
            LockoutError::Locked(locked) => {
                let secs = locked.retry_after_secs();
                let until = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
                ApiError {
                    retry_after: Some(secs),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "subject_locked",
                        format!(
                            "subject {} is locked after too many failed verifications until {} \
                             (retry in {secs} s)",
                            locked.subject,
                            humantime::format_rfc3339_seconds(until)
                        ),
                    )
                }
            }
            LockoutError::Store(StoreError::Unavailable(message) | StoreError::Busy(message)) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!(
                        "the failed-verification ledger is unavailable ({message}); verification is \
                     refused until it returns"
                    ),
                )
            }
            e @ LockoutError::Full { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
            LockoutError::Store(other) => ApiError::internal(other.to_string()),
        }
    }
}

impl From<MetricsError> for ApiError {
    fn from(e: MetricsError) -> Self {
        ApiError::internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::DecodeError;

    #[test]
    fn domain_errors_map_to_statuses_and_codes() {
        let e = ApiError::from(NotReady);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        );
        let e = ApiError::from(Overloaded {
            reason: crate::admission::OverloadReason::QueueFull,
            in_flight: 2,
            queued: 8,
            retry_after: std::time::Duration::from_secs(1),
        });
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(1))
        );
        let response = e.into_response();
        assert_eq!(response.headers()["retry-after"], "1");
        let e = ApiError::from(VisionError::Cancelled { before: "detect" });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "cancelled")
        );
        let e = ApiError::from(VisionError::NoFace);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "no_face")
        );
        let e = ApiError::from(VisionError::from(DecodeError::TooManyBytes {
            size: 2,
            limit: 1,
        }));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large")
        );
        let e = ApiError::from(StoreError::SubjectNotFound("x".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "subject_not_found")
        );
        let e = ApiError::from(StoreError::TooManyFaces {
            subject: "x".into(),
            limit: 1,
        });
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "too_many_faces"));
        assert!(
            e.message.contains("FACEKEY_MAX_FACES_PER_SUBJECT"),
            "{}",
            e.message
        );
        for (of, code, setting) in [
            (
                QuotaOf::Subjects,
                "key_subject_quota",
                "FACEKEY_MAX_SUBJECTS_PER_KEY = 3",
            ),
            (
                QuotaOf::Templates,
                "key_template_quota",
                "FACEKEY_MAX_TEMPLATES_PER_KEY = 3",
            ),
        ] {
            let e = ApiError::from(StoreError::KeyQuota {
                of,
                key_id: "app".into(),
                held: 3,
                limit: 3,
            });
            assert_eq!(
                (e.status, e.code, e.retry_after),
                (StatusCode::INSUFFICIENT_STORAGE, code, None)
            );
            assert!(
                e.message.contains("\"app\"") && e.message.contains(setting),
                "{}",
                e.message
            );
        }
        let e = ApiError::from(StoreError::FaceNotFound {
            subject: "s".into(),
            face: "f".into(),
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "face_not_found")
        );
        let e = ApiError::from(StoreError::Unavailable("db down".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        // A statement that timed out on a lock: 503 too, to retry at once.
        let e = ApiError::from(StoreError::Busy("rename subject: lock timeout".into()));
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                Some(1)
            )
        );
        let e = ApiError::from(LockoutError::Locked(crate::lockout::Locked {
            subject: "s-1".into(),
            retry_after: std::time::Duration::from_millis(89_500),
        }));
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, "subject_locked", Some(90))
        );
        assert!(e.message.contains("subject s-1 is locked"), "{}", e.message);
        assert!(e.message.contains("retry in 90 s"), "{}", e.message);
        assert_eq!(e.into_response().headers()["retry-after"], "90");
        let e = ApiError::from(LockoutError::Store(StoreError::Unavailable(
            "db down".into(),
        )));
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
        );
        assert!(e.message.contains("db down"), "{}", e.message);
        let e = ApiError::from(LockoutError::Full {
            capacity: 1,
            subject: "s".into(),
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        let e = ApiError::from(StoreError::Invalid("bad".into()));
        // A damaged stored record is the server's fault, never the request's.
        let malformed = ApiError::from(StoreError::Malformed("template t has no embedding".into()));
        assert_eq!(malformed.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        );
    }
}
