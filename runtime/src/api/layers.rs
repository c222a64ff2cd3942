//! The per-request serving layer around the API router, as two concrete services with
//! hand-written futures instead of a stack of generic middleware (each of which boxed, cloned or
//! wrapped the request, the response or its body once more on every request):
//!
//! - [`Envelope`], outermost: the request id (the client's `x-request-id`, or a new UUID), the
//!   `request` trace span and its debug events (same names, levels and targets as tower-http's
//!   `TraceLayer`, whose filters keep working), and the id's echo on the response.
//! - [`Routed`], inside CORS: finds the route pattern with its own [`RouteTable`] (built from
//!   the router's own route list), then the key guard ([`guard::admit`]), the body checks
//!   ([`crate::body_budget`]: a declared length over the body limit is answered 413
//!   `payload_too_large` unread; an admitted request's body is reserved before it is read, 503
//!   `overloaded` when the budget cannot hold it, 429 `too_many_uploads` when its key holds its
//!   share; a body that falls behind the rate floor is cut off with 408 `body_too_slow`), the
//!   request timeout (503 `timeout`), panics as JSON 500s, the audit event, and request count and
//!   latency by route, method and status through metric handles resolved once per route.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use futures::future::CatchUnwind;
use pin_project_lite::pin_project;
use prometheus::{Histogram, IntCounter};
use tower::Service;
use tracing::Level;

use super::error::ApiError;
use super::ui::UiResponse;
use crate::audit;
use crate::auth::Caller;
use crate::auth::guard::{self, Admitted, PathIds};
use crate::body_budget::{
    self, BodyMemoryFull, BodyRefused, BodyReservation, BodyTooSlow, BodyWatch, KeyShare,
    KeyShareFull, Pace, RateFloor,
};
use crate::metrics::BodyRefusal;
use crate::state::SharedState;

/// The request id header, set on every request and echoed on every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Route label for requests that matched no route, so unknown paths cannot explode cardinality.
const UNMATCHED_ROUTE: &str = "unmatched";
/// Route label for files of the bundled UI.
const UI_ROUTE: &str = "ui";

/// Methods with their own metric label; any other is `other`, so made-up methods cannot create
/// new series.
const KNOWN_METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

/// The method's metric label and its slot in [`RouteMetrics::ok`].
fn method_label(method: &Method) -> (usize, &'static str) {
    KNOWN_METHODS
        .iter()
        .position(|m| m == method)
        .map_or((KNOWN_METHODS.len(), "other"), |i| {
            (i, KNOWN_METHODS[i].as_str())
        })
}

/// A new request id: a random (v4) UUID, formatted on the stack.
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_bytes(id.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Longest client-supplied request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's `x-request-id` is kept: 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// `A-Z a-z 0-9 . _ - :` (UUIDs, ULIDs, trace ids). Anything else is replaced by a fresh id: the
/// id travels into logs, the audit trail and alert mails, so a caller must not put 400 KB or
/// free text there.
pub fn acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// The outermost service: request id, trace span and events, request-id echo.
#[derive(Debug, Clone)]
pub struct Envelope<S> {
    inner: S,
}

impl<S> Envelope<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request> for Envelope<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EnvelopeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(id) if acceptable_request_id(id.as_bytes()) => id.clone(),
            _ => {
                let id = new_request_id();
                req.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let span = tracing::debug_span!(
            target: "tower_http::trace::make_span",
            "request",
            method = %req.method(),
            uri = %req.uri(),
            version = ?req.version(),
        );
        // The clock is read only when a finishing event will be written.
        let timed = tracing::enabled!(target: "tower_http::trace::on_response", Level::DEBUG)
            || tracing::enabled!(target: "tower_http::trace::on_failure", Level::DEBUG);
        let inner = {
            let _entered = span.enter();
            tracing::debug!(target: "tower_http::trace::on_request", "started processing request");
            self.inner.call(req)
        };
        EnvelopeFuture {
            inner,
            span,
            request_id: Some(request_id),
            start: timed.then(Instant::now),
        }
    }
}

pin_project! {
    /// The answer of [`Envelope`]: the inner answer with the request id set.
    pub struct EnvelopeFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        request_id: Option<HeaderValue>,
        start: Option<Instant>,
    }
}

impl<F> Future for EnvelopeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if let Some(id) = this.request_id.take()
            && !response.headers().contains_key(&X_REQUEST_ID)
        {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        // API answers (subject names and enrollers, verdicts, session states) are never stored
        // by a browser's or an intermediary's cache, nor sniffed as another type; the UI's
        // files set their own caching.
        let headers = response.headers_mut();
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if !headers.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
        }
        if let Some(start) = this.start {
            let ms = start.elapsed().as_millis();
            let status = response.status();
            tracing::debug!(
                target: "tower_http::trace::on_response",
                latency = %format_args!("{ms} ms"),
                status = i32::from(status.as_u16()),
                "finished processing request"
            );
            if status.is_server_error() {
                tracing::debug!(
                    target: "tower_http::trace::on_failure",
                    classification = %format_args!("Status code: {status}"),
                    latency = %format_args!("{ms} ms"),
                    "response failed"
                );
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// A route's metric handles, resolved on first use (so only routes that were called have
/// series, as with label lookups per request).
#[derive(Debug)]
struct RouteMetrics {
    label: &'static str,
    duration: OnceLock<Histogram>,
    /// The `200` counter per method slot ([`method_label`]); other statuses are looked up.
    ok: [OnceLock<IntCounter>; KNOWN_METHODS.len() + 1],
}

impl RouteMetrics {
    fn new(label: &'static str) -> Self {
        Self {
            label,
            duration: OnceLock::new(),
            ok: Default::default(),
        }
    }
}

/// A route pattern the table could not hold.
#[derive(Debug, thiserror::Error)]
#[error("route {pattern}: {source}")]
pub struct RouteTableError {
    /// The pattern.
    pattern: String,
    /// Why.
    #[source]
    source: matchit::InsertError,
}

/// The router's route patterns, matched once per request before the router runs (the guard
/// needs the route before the handler), with each route's metric handles.
#[derive(Debug)]
pub struct RouteTable {
    matcher: matchit::Router<usize>,
    /// One per pattern, then the UI's and the unmatched requests'.
    routes: Vec<RouteMetrics>,
}

impl RouteTable {
    /// A table of `patterns`, the ones the router was built with.
    pub fn new(patterns: &[&'static str]) -> Result<Self, RouteTableError> {
        let mut matcher = matchit::Router::new();
        let mut routes = Vec::with_capacity(patterns.len() + 2);
        for &pattern in patterns {
            matcher
                .insert(pattern, routes.len())
                .map_err(|source| RouteTableError {
                    pattern: pattern.to_owned(),
                    source,
                })?;
            routes.push(RouteMetrics::new(pattern));
        }
        routes.push(RouteMetrics::new(UI_ROUTE));
        routes.push(RouteMetrics::new(UNMATCHED_ROUTE));
        Ok(Self { matcher, routes })
    }

    /// The index of the route `path` matches.
    fn find(&self, path: &str) -> Option<usize> {
        self.matcher.at(path).ok().map(|m| *m.value)
    }

    /// The route pattern `path` matches.
    pub fn pattern(&self, path: &str) -> Option<&'static str> {
        self.find(path).map(|i| self.routes[i].label)
    }

    /// The subject, face and session ids in `path`, percent-decoded (none when not UTF-8) and
    /// cut to [`audit::MAX_ID_CHARS`] as ids from bodies are: a request refused before its
    /// handler (no key) would otherwise write an audit line as long as its URL.
    fn path_ids(&self, path: &str) -> PathIds {
        let Ok(m) = self.matcher.at(path) else {
            return PathIds::default();
        };
        let param = |name: &str| {
            m.params.get(name).and_then(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .ok()
                    .map(|s| audit::bounded_id(&s))
            })
        };
        // `{id}` names a liveness session on the session routes, a subject on the others.
        let is_session = self.routes[*m.value]
            .label
            .starts_with("/v1/liveness/sessions/");
        let id = param("id");
        PathIds {
            subject: if is_session { None } else { id.clone() },
            face: param("face_id"),
            session: if is_session { id } else { None },
        }
    }
}

/// The per-route service: guard, timeout, panics, audit and route metrics around `inner`.
#[derive(Clone)]
pub struct Routed<S> {
    inner: S,
    shared: Arc<RoutedShared>,
}

/// The state and route table, behind one reference count (each request's answer holds it).
struct RoutedShared {
    state: SharedState,
    table: RouteTable,
    /// The body limit (`FACEKEY_MAX_BODY_BYTES`): a longer declared body is refused unread.
    max_body: u64,
    /// The bytes one key's bodies may hold at once; `None`: no per-key bound.
    key_share: Option<u64>,
    /// The least pace of a body; `None`: off.
    rate_floor: Option<RateFloor>,
}

impl<S> Routed<S> {
    /// Wrap `inner` (the router built with `table`'s patterns).
    pub fn new(inner: S, state: SharedState, table: RouteTable) -> Self {
        let config = &state.config;
        let max_body = config.max_body_bytes as u64;
        let key_share = body_budget::key_share_bytes(
            config.max_body_memory_bytes as u64,
            max_body,
            config.max_body_memory_per_key_share,
        );
        let rate_floor = RateFloor::new(
            config.min_body_bytes_per_sec,
            Duration::from_secs(config.body_rate_grace_secs),
        );
        Self {
            inner,
            shared: Arc::new(RoutedShared {
                state,
                table,
                max_body,
                key_share,
                rate_floor,
            }),
        }
    }
}

impl<S> Service<Request> for Routed<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RoutedFuture<Scoped<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        let shared = &self.shared;
        let table = &shared.table;
        let route = table.find(req.uri().path());
        let pattern = route.map(|i| table.routes[i].label);
        let method = method_label(req.method());
        let admitted = guard::admit(&shared.state, pattern, &mut req, |req| {
            table.path_ids(req.uri().path())
        });
        let finish = Finish {
            shared: shared.clone(),
            route,
            method,
            start,
        };
        let (inner, ready, admitted, body, watch) = match admitted {
            Err(refused) => (None, Some(*refused), None, None, None),
            Ok(admitted) => match admit_body(shared, &mut req, start) {
                Err(refused) => (None, Some(*refused), Some(admitted), None, None),
                Ok((body, watch)) => {
                    let limit = shared.state.config.request_timeout();
                    let inner = &mut self.inner;
                    // A store write the handler starts may outlive the request: it records
                    // its commit through the request's audit event (see audit::OnCommit).
                    let on_commit = admitted.on_commit(&shared.state);
                    match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
                        Ok(future) => (
                            Some(Deadlined {
                                inner: AssertUnwindSafe(audit::ON_COMMIT.scope(on_commit, future))
                                    .catch_unwind(),
                                deadline: tokio::time::Instant::from_std(start) + limit,
                                timer: None,
                            }),
                            None,
                            Some(admitted),
                            body,
                            watch,
                        ),
                        Err(panic) => (
                            None,
                            Some(panic_response(panic)),
                            Some(admitted),
                            None,
                            None,
                        ),
                    }
                }
            },
        };
        RoutedFuture {
            inner,
            ready,
            admitted,
            finish: Some(finish),
            body,
            watch,
        }
    }
}

/// The body checks of an admitted request, before anything reads its body: a declared length
/// over the body limit is refused (413); the body's room is reserved in the budget, counted
/// against the caller's key (503 when the budget cannot hold it, 429 when the key holds its
/// share); and the body is wrapped to be watched against the rate floor. `Ok` holds the
/// reservation and the watch, both `None` for a request without a body.
fn admit_body(
    shared: &RoutedShared,
    req: &mut Request,
    start: Instant,
) -> Result<(Option<BodyReservation>, Option<BodyWatch>), Box<Response>> {
    let hint = HttpBody::size_hint(req.body());
    if hint.lower() > shared.max_body {
        body_refused(shared, BodyRefusal::DeclaredTooLarge);
        return Err(Box::new(declared_too_large(hint.lower(), shared.max_body)));
    }
    let caller = req.extensions().get::<Caller>();
    let key = shared
        .key_share
        .zip(caller)
        .map(|(bytes, caller)| KeyShare {
            key: &caller.key_id,
            bytes,
        });
    let state = &shared.state;
    let reservation = match state.body_budget.reserve(hint.upper(), key) {
        Ok(reservation) => reservation,
        Err(BodyRefused::Full(full)) => return Err(Box::new(memory_full_refused(state, full))),
        Err(BodyRefused::KeyShare(over)) => {
            body_refused(shared, BodyRefusal::KeyShare);
            return Err(Box::new(key_share_refused(over)));
        }
    };
    let watch = match (&reservation, shared.rate_floor) {
        (Some(reserved), Some(floor)) => {
            // The pace a body must keep to arrive by the timeout is known only from a declared
            // length: a chunked one reserves the body limit, which says nothing of its size.
            let floor = if hint.upper().is_some() {
                floor.for_body(reserved.bytes(), state.config.request_timeout())
            } else {
                floor
            };
            let body = std::mem::take(req.body_mut());
            let (body, watch) =
                body_budget::watch(body, floor, tokio::time::Instant::from_std(start));
            *req.body_mut() = body;
            Some(watch)
        }
        _ => None,
    };
    Ok((reservation, watch))
}

/// The 413 of a request whose declared length is over the body limit, answered before a byte of
/// it is read or reserved (the same code as a body found too long while read).
fn declared_too_large(declared: u64, limit: u64) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::body_too_large().code,
        format!(
            "the request declares a body of {declared} bytes, over the limit of {limit} bytes \
             (FACEKEY_MAX_BODY_BYTES)"
        ),
    )
    .into_response()
}

/// The 503 `overloaded` of a request whose body the whole budget cannot hold now.
fn memory_full_refused(state: &SharedState, full: BodyMemoryFull) -> Response {
    state
        .metrics
        .admission_rejected
        .with_label_values(&[body_budget::REFUSAL_LABEL])
        .inc();
    tracing::debug!(
        wanted = full.wanted,
        held = full.held,
        "request body refused: body memory full"
    );
    ApiError::from(full).into_response()
}

/// The 429 of a request whose key's bodies already hold the key's share of the body budget:
/// the budget still has room for other keys, so this is the caller's limit, not the service's
/// overload.
fn key_share_refused(over: KeyShareFull) -> Response {
    tracing::info!(
        target: "facekey::security",
        key_id = %over.key,
        wanted = over.wanted,
        held = over.held,
        share = over.share,
        "request body refused: the key holds its share of the body memory"
    );
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            over.to_string(),
        )
    }
    .into_response()
}

/// The 408 of a request whose body fell behind the rate floor. Its handler, with the body, is
/// dropped before this is sent, so the reservation goes back at once; hyper closes an HTTP/1.1
/// connection whose body was not read to its end.
fn too_slow_response(slow: BodyTooSlow) -> Response {
    tracing::debug!(
        received = slow.received,
        elapsed_ms = u64::try_from(slow.elapsed.as_millis()).unwrap_or(u64::MAX),
        "request body cut off: too slow"
    );
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_too_slow",
        slow.to_string(),
    )
    .into_response()
}

/// Count a body refused by the guards (`facekey_body_refused_total`).
fn body_refused(shared: &RoutedShared, reason: BodyRefusal) {
    shared
        .state
        .metrics
        .body_refused
        .with_label_values(&[reason.label()])
        .inc();
}

/// What [`RoutedFuture`] needs once the answer is known.
struct Finish {
    shared: Arc<RoutedShared>,
    route: Option<usize>,
    method: (usize, &'static str),
    start: Instant,
}

impl Finish {
    /// Write the audit event and count the request.
    fn record(self, admitted: Option<Admitted>, response: &Response) {
        let state = &self.shared.state;
        if let Some(admitted) = admitted {
            admitted.finish(state, response);
        }
        let routes = &self.shared.table.routes;
        let index = self.route.unwrap_or_else(|| {
            let ui = response.extensions().get::<UiResponse>().is_some();
            routes.len() - if ui { 2 } else { 1 }
        });
        let route = &routes[index];
        let m = &state.metrics;
        route
            .duration
            .get_or_init(|| m.http_duration.with_label_values(&[route.label]))
            .observe(self.start.elapsed().as_secs_f64());
        let (slot, method) = self.method;
        let status = response.status();
        if status == StatusCode::OK {
            route.ok[slot]
                .get_or_init(|| {
                    m.http_requests
                        .with_label_values(&[route.label, method, "200"])
                })
                .inc();
        } else {
            m.http_requests
                .with_label_values(&[route.label, method, status.as_str()])
                .inc();
        }
    }
}

type Guarded<F> = Deadlined<CatchUnwind<AssertUnwindSafe<F>>>;

/// A handler future run with its request's [`audit::OnCommit`] in the task-local (`None` when
/// the request is not audited).
pub type Scoped<F> = tokio::task::futures::TaskLocalFuture<Option<audit::OnCommit>, F>;

/// The request timeout ran out.
#[derive(Debug)]
pub struct TimedOut;

pin_project! {
    /// A handler's future bounded by the request deadline. The timer is made only when the
    /// handler is not ready at its first poll: most cheap routes answer at once, and then no
    /// timer is created, registered or cancelled for them (boxed, so that the slow path alone
    /// pays for it).
    pub struct Deadlined<F> {
        #[pin]
        inner: F,
        deadline: tokio::time::Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: Future> Future for Deadlined<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let deadline = *this.deadline;
        this.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
            .as_mut()
            .poll(cx)
            .map(|()| Err(TimedOut))
    }
}

pin_project! {
    /// The answer of [`Routed`]: the handler's, the refusal's, a timeout's, a panic's, or the
    /// 408 of a body that fell behind the rate floor.
    pub struct RoutedFuture<F> {
        #[pin]
        inner: Option<Guarded<F>>,
        ready: Option<Response>,
        admitted: Option<Admitted>,
        finish: Option<Finish>,
        // The request body's room in the body budget, given back with the answer (or when the
        // request is dropped: a client that goes away gives it back too).
        body: Option<BodyReservation>,
        // The body's pace, watched while the handler waits and the body is still arriving.
        watch: Option<BodyWatch>,
    }

    impl<F> PinnedDrop for RoutedFuture<F> {
        // Dropped before its answer (the client went away, an HTTP/2 stream was reset, the
        // server stopped): counted and audited as 499 `client_gone`, so a write the store went
        // on to acknowledge (store writes finish on their own task) still has its audit event
        // with the key, route and ids, and the request counts in the metrics.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(finish) = this.finish.take() {
                finish.record(this.admitted.take(), &client_gone_response());
            }
        }
    }
}

/// The answer recorded for a request whose client went away before it was answered (nginx's
/// 499 "client closed request"; never sent).
fn client_gone_response() -> Response {
    let status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(
        status,
        "client_gone",
        "the client went away before the answer",
    )
    .into_response()
}

impl<F> Future for RoutedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match (this.ready.take(), this.inner.as_mut().as_pin_mut()) {
            (Some(response), _) => response,
            (None, Some(inner)) => match inner.poll(cx) {
                Poll::Ready(Ok(Ok(Ok(response)))) => response,
                Poll::Ready(Ok(Err(panic))) => panic_response(panic),
                Poll::Ready(Err(TimedOut)) => timeout_response(this.finish.as_ref()),
                Poll::Pending => {
                    let pace = match this.watch.as_mut() {
                        Some(watch) => ready!(watch.poll(cx)),
                        None => return Poll::Pending,
                    };
                    *this.watch = None;
                    let Pace::TooSlow(slow) = pace else {
                        return Poll::Pending;
                    };
                    // The handler and the body go now; the reservation below.
                    this.inner.set(None);
                    if let Some(finish) = this.finish.as_ref() {
                        body_refused(&finish.shared, BodyRefusal::TooSlow);
                    }
                    too_slow_response(slow)
                }
            },
            (None, None) => ApiError::internal("request polled after its answer").into_response(),
        };
        if let Some(finish) = this.finish.take() {
            finish.record(this.admitted.take(), &response);
        }
        this.body.take();
        this.watch.take();
        Poll::Ready(Ok(response))
    }
}

/// The 503 of a request over `FACEKEY_REQUEST_TIMEOUT_SECS`.
fn timeout_response(finish: Option<&Finish>) -> Response {
    let limit = finish.map_or(Duration::ZERO, |f| f.shared.state.config.request_timeout());
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        format!(
            "request took longer than {} s (FACEKEY_REQUEST_TIMEOUT_SECS)",
            limit.as_secs()
        ),
    )
    .into_response()
}

/// A handler's panic as a JSON 500 (the message is logged, not sent).
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {detail}")).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn route_table_matches_patterns_and_decodes_ids() {
        let t = RouteTable::new(&[
            "/v1/score",
            "/v1/subjects/{id}",
            "/v1/subjects/{id}/faces/{face_id}",
            "/v1/liveness/sessions/{id}/frames",
        ])
        .unwrap();
        // On a session route `{id}` is the session.
        let ids = t.path_ids("/v1/liveness/sessions/s-1/frames");
        assert_eq!((ids.subject, ids.session.as_deref()), (None, Some("s-1")));
        assert_eq!(t.pattern("/v1/score"), Some("/v1/score"));
        assert_eq!(t.pattern("/v1/subjects/a%20b"), Some("/v1/subjects/{id}"));
        assert_eq!(t.pattern("/v1/nothing"), None);
        assert_eq!(t.pattern("/v1/score/"), None);
        let ids = t.path_ids("/v1/subjects/a%20b/faces/f-1");
        assert_eq!(ids.subject.as_deref(), Some("a b"));
        assert_eq!(ids.face.as_deref(), Some("f-1"));
        assert_eq!(t.path_ids("/v1/subjects/%FF").subject, None);
        // Cut as ids from bodies are, in characters.
        let long = "%C3%A9".repeat(60_000);
        let ids = t.path_ids(&format!("/v1/subjects/{long}/faces/{long}"));
        let chars = |id: Option<String>| id.map(|s| (s.chars().count(), s.starts_with("éé")));
        assert_eq!(chars(ids.subject), Some((audit::MAX_ID_CHARS, true)));
        assert_eq!(chars(ids.face), Some((audit::MAX_ID_CHARS, true)));
        let ids = t.path_ids(&format!("/v1/liveness/sessions/{long}/frames"));
        assert_eq!(chars(ids.session), Some((audit::MAX_ID_CHARS, true)));
        assert!(RouteTable::new(&["/a/{x}", "/a/{y}"]).is_err());
    }

    #[test]
    fn the_route_table_holds_every_routed_and_every_policy_pattern() {
        let patterns = super::super::route_patterns();
        let t = RouteTable::new(&patterns).unwrap();
        for p in &patterns {
            assert_eq!(t.pattern(p), Some(*p), "{p}");
        }
        for (method, route, _) in crate::auth::policy::ROUTES {
            assert!(patterns.contains(route), "{method} {route} is not routed");
        }
    }

    /// A handler ready at once is answered without a timer; one still running at the deadline
    /// is cut off with `TimedOut`, and one finishing before it is answered.
    #[tokio::test]
    async fn the_deadline_arms_a_timer_only_for_handlers_that_wait() {
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut ready = std::pin::pin!(Deadlined {
            inner: std::future::ready(7),
            deadline: soon,
            timer: None,
        });
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(matches!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
        assert!(ready.timer.is_none(), "no timer for an answer at once");
        let started = std::time::Instant::now();
        let stuck = Deadlined {
            inner: std::future::pending::<()>(),
            deadline: soon,
            timer: None,
        };
        assert!(matches!(stuck.await, Err(TimedOut)));
        assert!(started.elapsed() >= Duration::from_millis(40));
        let in_time = Deadlined {
            inner: tokio::time::sleep(Duration::from_millis(5)),
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
            timer: None,
        };
        assert!(matches!(in_time.await, Ok(())));
    }

    #[test]
    fn request_ids_are_uuids_and_methods_have_bounded_labels() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.to_str().unwrap()).is_ok());
        assert_eq!(method_label(&Method::POST).1, "POST");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), (KNOWN_METHODS.len(), "other"));
    }
}
