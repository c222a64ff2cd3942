//! AdmissionReview v1 in and out: parse the API server's request, answer with the decision of
//! [`super::inject::decide`] (a JSON patch, a warning or a refusal). Pure apart from the resource
//! lookup the caller passes in, so the tests and the benchmark run it without a server.

use std::sync::Arc;

use facekey_crds::FaceKeyDeployment;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::inject::{self, Decision, InjectOptions, NotInjectedReason};

/// Errors reading a review (answered with an `invalid` response, never a panic).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an AdmissionReview of a pod.
    #[error("body is not an AdmissionReview of a Pod: {0}")]
    Parse(#[source] serde_json::Error),
    /// The review has no request.
    #[error("AdmissionReview without a request")]
    NoRequest,
    /// The patch could not be serialised.
    #[error("serialising the JSON patch: {0}")]
    Patch(String),
}

/// A parsed request: what the lookup needs and the request itself.
pub struct Request {
    /// The request (its uid is echoed in the response).
    pub request: AdmissionRequest<Pod>,
    /// Namespace the pod is created in.
    pub namespace: String,
    /// FaceKeyDeployment the pod asks for, if any (and the pod did not opt out).
    pub resource: Option<String>,
}

/// What became of one admission review: the `outcome` label of
/// `facekey_operator_admission_reviews_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// The pod already had it (a reinvocation, or a pod created from an injected spec).
    AlreadyInjected,
    /// The pod carries the opt-out annotation.
    OptedOut,
    /// The pod does not ask for a sidecar, or the request is not a pod CREATE (the
    /// configuration's `matchConditions` keep these from the webhook; counted if they come).
    NotRequested,
    /// The sidecar could not be injected and the pod was admitted unchanged with a warning
    /// (`failurePolicy: Ignore`).
    Skipped,
    /// The sidecar could not be injected and the pod was refused (`failurePolicy: Fail`).
    Refused,
    /// The review could not be answered as asked: an unreadable body, an answer that does not
    /// serialise, or the FaceKeyDeployment unreadable (then answered as an unknown resource is,
    /// under the operator's `--sidecar-unknown-resource`, but counted here: the API server is
    /// failing, not the pod).
    Error,
}

/// The `reason` of an `error` review: an unreadable review, an answer that did not serialise,
/// a FaceKeyDeployment that could not be read.
pub const ERROR_REASONS: [&str; 3] = ["InvalidReview", "AnswerFailed", "LookupFailed"];

impl Outcome {
    /// The outcome of `decision` and, for a pod that did not get its sidecar, why
    /// ([`super::NotInjectedReason`]; empty otherwise): the metric's `reason` label. A failed
    /// lookup is an `error` (`LookupFailed`) whatever its answer.
    pub fn of(decision: &Decision) -> (Self, &'static str) {
        match decision {
            Decision::NotRequested => (Outcome::NotRequested, ""),
            Decision::OptedOut => (Outcome::OptedOut, ""),
            Decision::AlreadyInjected => (Outcome::AlreadyInjected, ""),
            Decision::Inject { .. } => (Outcome::Injected, ""),
            Decision::NotInjected {
                reason: NotInjectedReason::LookupFailed,
                ..
            } => (Outcome::Error, NotInjectedReason::LookupFailed.as_str()),
            Decision::NotInjected { reason, refuse, .. } => (
                if *refuse {
                    Outcome::Refused
                } else {
                    Outcome::Skipped
                },
                reason.as_str(),
            ),
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::OptedOut => "opted_out",
            Outcome::NotRequested => "not_requested",
            Outcome::Skipped => "skipped",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// Parse an AdmissionReview v1 body.
pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body).map_err(ReviewError::Parse)?;
    let request: AdmissionRequest<Pod> = review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let namespace = request
        .namespace
        .clone()
        .or_else(|| {
            request
                .object
                .as_ref()
                .and_then(|p| p.metadata.namespace.clone())
        })
        .unwrap_or_else(|| "default".to_owned());
    let resource = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) => inject::requested_resource(pod).map(str::to_owned),
        _ => None,
    };
    Ok(Request {
        request,
        namespace,
        resource,
    })
}

/// The decision for a parsed request and the FaceKeyDeployment it names (as looked up).
pub fn decide(req: &Request, fkd: Option<&FaceKeyDeployment>, options: InjectOptions) -> Decision {
    match (&req.request.operation, &req.request.object) {
        (Operation::Create, Some(pod)) => inject::decide(pod, &req.namespace, fkd, options),
        _ => Decision::NotRequested,
    }
}

/// The AdmissionReview answering `req` with `decision`.
pub fn respond(
    req: &Request,
    decision: &Decision,
) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
    let base = AdmissionResponse::from(&req.request);
    let response = match decision {
        Decision::NotRequested | Decision::OptedOut | Decision::AlreadyInjected => base,
        Decision::Inject { patch, .. } => {
            let patch: json_patch::Patch =
                serde_json::from_value(serde_json::Value::Array(patch.clone()))
                    .map_err(|e| ReviewError::Patch(e.to_string()))?;
            base.with_patch(patch)
                .map_err(|e| ReviewError::Patch(e.to_string()))?
        }
        Decision::NotInjected {
            message, refuse, ..
        } => {
            if *refuse {
                let mut denied = base.deny(message);
                denied.result.code = 403;
                denied.result.reason = "Forbidden".to_owned();
                denied
            } else {
                let mut warned = base;
                warned.warnings = Some(vec![format!("FaceKey sidecar not injected: {message}")]);
                warned
            }
        }
    };
    Ok(response.into_review())
}

/// The review as the API server reads it. `patch` is a byte string, which Kubernetes' JSON
/// carries as base64 (kube's type would write an array of numbers, which Go happens to accept;
/// the standard form is used here).
pub fn to_wire(review: &AdmissionReview<DynamicObject>) -> Result<serde_json::Value, ReviewError> {
    let mut value = serde_json::to_value(review).map_err(|e| ReviewError::Patch(e.to_string()))?;
    let bytes = review.response.as_ref().and_then(|r| r.patch.clone());
    if let (Some(bytes), Some(response)) = (bytes, value.get_mut("response")) {
        response["patch"] = serde_json::to_value(k8s_openapi::ByteString(bytes))
            .map_err(|e| ReviewError::Patch(e.to_string()))?;
    }
    Ok(value)
}

/// The whole review with a synchronous lookup (tests, benchmark, `render`): parse, look up,
/// decide, respond ([`to_wire`] form). Unreadable bodies get an `invalid` response.
pub fn review_with(
    body: &[u8],
    lookup: impl Fn(&str, &str) -> Option<Arc<FaceKeyDeployment>>,
    options: InjectOptions,
) -> (serde_json::Value, Option<Decision>) {
    let (review, decision) = review_typed(body, lookup, options);
    let wire = to_wire(&review).unwrap_or_else(|e| {
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": false, "status": {"message": e.to_string()}}})
    });
    (wire, decision)
}

fn review_typed(
    body: &[u8],
    lookup: impl Fn(&str, &str) -> Option<Arc<FaceKeyDeployment>>,
    options: InjectOptions,
) -> (AdmissionReview<DynamicObject>, Option<Decision>) {
    let req = match parse(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                AdmissionResponse::invalid(e.to_string()).into_review(),
                None,
            );
        }
    };
    let fkd = req
        .resource
        .as_deref()
        .and_then(|name| lookup(&req.namespace, name));
    let decision = decide(&req, fkd.as_deref(), options);
    match respond(&req, &decision) {
        Ok(review) => (review, Some(decision)),
        Err(e) => (
            AdmissionResponse::from(&req.request)
                .deny(e.to_string())
                .into_review(),
            Some(decision),
        ),
    }
}
