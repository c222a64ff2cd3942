//! The access-control middleware: finds the route's required access in the policy table,
//! authenticates the presented key, checks its scope and rate, hands the [`Caller`] to the
//! handler, and writes the audit event of audited actions and of every refusal.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::denied::Verdict;
use super::policy::{self, Access};
use super::scope::{Caller, Scope};
use crate::api::error::{ApiError, ErrorCode};
use crate::audit::{self, AuditDetail, AuditEvent};
use crate::config::MetricsAuth;
use crate::state::SharedState;

/// Header carrying a key for clients that cannot set `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key presented.
    MissingKey,
    /// A key that matches none in force, or a malformed `Authorization` header.
    InvalidKey,
    /// A valid key without the route's scope.
    Forbidden {
        /// The key's id.
        key_id: String,
        /// The scope the route needs.
        needs: Scope,
    },
    /// A valid key over its request rate.
    RateLimited {
        /// The key's id.
        key_id: String,
        /// Seconds to wait.
        retry_after: u64,
    },
}

impl Refusal {
    /// The metric label and audit error code.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingKey => "missing_key",
            Refusal::InvalidKey => "invalid_key",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::RateLimited { .. } => "rate_limited",
        }
    }

    fn key_id(&self) -> Option<String> {
        match self {
            Refusal::MissingKey | Refusal::InvalidKey => None,
            Refusal::Forbidden { key_id, .. } | Refusal::RateLimited { key_id, .. } => {
                Some(key_id.clone())
            }
        }
    }

    fn into_error(self) -> ApiError {
        match self {
            Refusal::MissingKey => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ),
            Refusal::InvalidKey => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API key is not valid (unknown, revoked, or a malformed Authorization header)",
            ),
            Refusal::Forbidden { key_id, needs } => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("key {key_id:?} lacks the `{needs}` scope this route needs"),
            ),
            Refusal::RateLimited {
                key_id,
                retry_after,
            } => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("key {key_id:?} is over its request rate; retry in {retry_after} s"),
                );
                e.retry_after = Some(retry_after);
                e
            }
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, else `X-API-Key`. `Err` for an
/// `Authorization` header that is not a Bearer token.
pub fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Refusal::InvalidKey)?;
        let (scheme, token) = value.split_once(' ').ok_or(Refusal::InvalidKey)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Refusal::InvalidKey);
        }
        return Ok(Some(token.trim()));
    }
    match headers.get(API_KEY_HEADER) {
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| Refusal::InvalidKey),
        None => Ok(None),
    }
}

/// Decide a request: `Ok(None)` for open access, `Ok(Some(caller))` for an authorised key.
pub fn authorize(
    state: &SharedState,
    access: Access,
    headers: &HeaderMap,
) -> Result<Option<Caller>, Refusal> {
    let needs = match access {
        Access::Open => return Ok(None),
        Access::Metrics if state.config.metrics_auth == MetricsAuth::Open => return Ok(None),
        Access::Metrics => Some(Scope::Metrics),
        Access::AnyKey => None,
        Access::Scope(scope) => Some(scope),
    };
    let key = presented_key(headers)?.ok_or(Refusal::MissingKey)?;
    let ring = state.api_keys.ring();
    let entry = ring.authenticate(key).ok_or(Refusal::InvalidKey)?;
    let caller = entry.caller();
    if let Some(needs) = needs
        && !caller.has(needs)
    {
        return Err(Refusal::Forbidden {
            key_id: caller.key_id.to_string(),
            needs,
        });
    }
    state
        .api_keys
        .admit(entry)
        .map_err(|limited| Refusal::RateLimited {
            key_id: caller.key_id.to_string(),
            retry_after: limited.retry_after,
        })?;
    Ok(Some(caller))
}

/// The ids in a request's path, for its audit event: `{id}` (a subject, or a session) and
/// `{face_id}`, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathIds {
    /// The `{id}` parameter of a subject route.
    pub subject: Option<String>,
    /// The `{face_id}` parameter.
    pub face: Option<String>,
    /// The `{id}` parameter of a liveness-session route.
    pub session: Option<String>,
}

/// What an admitted request leaves for after its answer: the audit event to write, if the
/// route is audited and the audit log is on (gathered before the handler consumes the request).
#[derive(Debug, Default)]
pub struct Admitted {
    pending: Option<PendingAudit>,
}

/// The parts of an audit event known before the answer; [`PendingAudit::record`] completes
/// it with the answer's status, error code and the handler's detail. Admitted requests and
/// refusals (action [`audit::DENIED`]) are recorded through it alike.
#[derive(Debug, Clone)]
struct PendingAudit {
    action: &'static str,
    method: Method,
    route: String,
    key_id: Option<String>,
    client: Option<SocketAddr>,
    request_id: Option<String>,
    ids: PathIds,
}

impl PendingAudit {
    fn new(
        action: &'static str,
        route: &str,
        key_id: Option<String>,
        req: &Request,
        ids: PathIds,
    ) -> Self {
        Self {
            action,
            method: req.method().clone(),
            route: route.to_owned(),
            key_id,
            client: client_of(req),
            request_id: crate::api::faces::request_id(req.headers()),
            ids,
        }
    }

    /// Write the event now that `response` is known (the handler's detail wins over the path),
    /// unless [`audit::is_recorded`] leaves it out.
    fn record(self, state: &SharedState, response: &Response) {
        self.record_with(
            state,
            response.status(),
            response.extensions().get::<AuditDetail>(),
            response.extensions().get::<ErrorCode>().map(|c| c.0),
        );
    }

    /// [`Self::record`] from the answer's parts: its status, the handler's detail and the error
    /// code.
    fn record_with(
        self,
        state: &SharedState,
        status: axum::http::StatusCode,
        detail: Option<&AuditDetail>,
        error: Option<&'static str>,
    ) {
        if !audit::is_recorded(self.action, status.is_success(), detail) {
            return;
        }
        let mut event = AuditEvent::new(self.action, &self.method, &self.route, status.as_u16())
            .client(self.client)
            .detail(detail);
        event.key_id = self.key_id;
        event.request_id = self.request_id;
        event.subject = event.subject.or(self.ids.subject);
        event.face = event.face.or(self.ids.face);
        event.session = event.session.or(self.ids.session);
        event.error = error;
        state.audit.record(&event);
    }
}

/// Decide a request on its matched `route` before it runs: `Ok` with the caller put into the
/// request's extensions, or the refusal's answer (counted, logged and audited here). Called by
/// the API's per-route layer, so the key check, the timeout and the route metrics are one
/// layer. `path_ids` is only called when an audit event is to be written.
pub fn admit(
    state: &SharedState,
    route: Option<&str>,
    req: &mut Request,
    path_ids: impl FnOnce(&Request) -> PathIds,
) -> Result<Admitted, Box<Response>> {
    let access = policy::required(req.method(), route);
    if access == Access::Open {
        return Ok(Admitted::default());
    }
    let route_label = route.unwrap_or_default();
    match authorize(state, access, req.headers()) {
        Ok(caller) => {
            let pending = match audit::action(req.method(), route_label) {
                Some(action) if state.audit.enabled() => Some(PendingAudit::new(
                    action,
                    route_label,
                    caller.as_ref().map(|c| c.key_id.to_string()),
                    req,
                    path_ids(req),
                )),
                _ => None,
            };
            if let Some(c) = caller {
                req.extensions_mut().insert(c);
            }
            Ok(Admitted { pending })
        }
        // A key without admin asked for a method the route does not have: the router would
        // answer 405 to an admin; saying 405 (not "needs admin") tells the caller the truth
        // and still runs no handler (a handler missing from the policy table needs admin).
        Err(Refusal::Forbidden { .. })
            if route.is_some_and(|r| policy::other_method_only(req.method(), r)) =>
        {
            Err(Box::new(
                crate::api::method_not_allowed_error(req).into_response(),
            ))
        }
        Err(refusal) => Err(Box::new(refuse(state, route_label, req, refusal, path_ids))),
    }
}

impl Admitted {
    /// Write the audit event of an admitted request, now that its answer is known.
    pub fn finish(self, state: &SharedState, response: &Response) {
        if let Some(pending) = self.pending {
            pending.record(state, response);
        }
    }

    /// The hook a store write that outlives this request records its commit through
    /// ([`audit::OnCommit`]): the request's event again, with the write's status and ids and
    /// the reason [`audit::COMMITTED_AFTER_REQUEST`]. `None` when the request is not audited.
    pub fn on_commit(&self, state: &SharedState) -> Option<audit::OnCommit> {
        let pending = self.pending.clone()?;
        let state = state.clone();
        Some(audit::OnCommit(std::sync::Arc::new(
            move |status, mut detail: AuditDetail| {
                detail
                    .reasons
                    .push(audit::COMMITTED_AFTER_REQUEST.to_owned());
                pending
                    .clone()
                    .record_with(&state, status, Some(&detail), None);
            },
        )))
    }
}

/// The answer to a refused request, counted, logged and audited (the logging and auditing
/// within the client's allowance: [`crate::auth::denied`]).
fn refuse(
    state: &SharedState,
    route: &str,
    req: &Request,
    refusal: Refusal,
    path_ids: impl FnOnce(&Request) -> PathIds,
) -> Response {
    let client = client_of(req);
    let reason = refusal.reason();
    let key_id = refusal.key_id();
    state
        .metrics
        .auth_failures
        .with_label_values(&[route, reason])
        .inc();
    let unauthorized = matches!(refusal, Refusal::MissingKey | Refusal::InvalidKey);
    let mut response = refusal.into_error().into_response();
    if unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"facekey\""),
        );
    }
    // Every refusal is counted; a client's refusals past its allowance a second are not
    // logged or audited one by one, so a flood cannot fill the trail.
    let shown = client.map(|c| c.to_string());
    match state.denied.check(
        client.map(|c| c.ip()),
        key_id.as_deref(),
        std::time::Instant::now(),
    ) {
        Verdict::Suppress => return response,
        Verdict::Record { suppressed_before } if suppressed_before > 0 => tracing::warn!(
            target: "facekey::security",
            client = shown.as_deref().unwrap_or("-"),
            refused = suppressed_before,
            per_second = crate::auth::denied::PER_SECOND,
            "refused requests of this client past its allowance a second were counted, not \
             logged or audited one by one"
        ),
        Verdict::Record { .. } => {}
    }
    tracing::info!(
        target: "facekey::security",
        route = %route,
        reason,
        key_id = key_id.as_deref().unwrap_or("-"),
        client = shown.as_deref().unwrap_or("-"),
        "request refused"
    );
    if state.audit.enabled() {
        PendingAudit::new(audit::DENIED, route, key_id, req, path_ids(req))
            .record(state, &response);
    }
    response
}

/// The peer address of the connection a request came on.
fn client_of(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
