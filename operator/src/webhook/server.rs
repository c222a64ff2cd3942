//! The HTTPS server of the mutating webhook: TLS (rustls) with a certificate that can be swapped
//! while serving, HTTP/1.1, one route `POST /mutate-v1-pod` answering AdmissionReview v1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use facekey_crds::FaceKeyDeployment;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tracing::{debug, warn};

use super::events::EventSink;
use super::inject::InjectOptions;
use super::review::{self, Outcome};
use crate::decode::{Decoder, Undecodable, UnknownFields, decode_with};
use crate::events::AdmissionAnswered;
use crate::metrics::Metrics;

/// Path of the mutating webhook (`clientConfig.service.path`).
pub const MUTATE_PATH: &str = "/mutate-v1-pod";
/// Largest AdmissionReview body accepted: the API server stores no object over 1.5 MiB, so a
/// review of a real pod is smaller. A request announcing more is refused (413) unread.
pub const MAX_BODY: usize = 3 << 20;
/// Bodies up to this size (a review of an ordinary pod is a few KiB) are read without taking
/// from [`ServeLimits::max_body_bytes_in_flight`]: the connection bound caps them (1024 x 32 KiB
/// = 32 MiB), and a client announcing large bodies it never sends cannot hold the budget the
/// API server's reviews need.
pub const UNBUDGETED_BODY: usize = 32 << 10;
/// Longest a FaceKeyDeployment read from the API server (before the cache has synced) may take:
/// well within the configuration's `timeoutSeconds: 5`, after which the API server would give up
/// and admit the pod under `failurePolicy: Ignore` whatever the resource's policy.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the webhook's listener allows each client. Any pod in the cluster can reach the port,
/// so a client that trickles headers or a body, or opens connections by the hundred, must not
/// hold the operator's memory (OOM-killed, pods that asked for a sidecar would be admitted
/// without one under `failurePolicy: Ignore`).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Longest a TLS handshake may take before the connection is dropped.
    pub handshake_timeout: Duration,
    /// Longest wait for a request's headers. Each connection serves one request and is closed
    /// after its answer: an idle keep-alive connection closed by this timeout while the API
    /// server (which keeps idle connections 90 s) sends a review on it fails that review, which
    /// Go does not retry (a POST), and the pod is admitted without its sidecar.
    pub header_read_timeout: Duration,
    /// Longest a request's body may take to arrive, its wait for
    /// [`Self::max_body_bytes_in_flight`] included: 408 past it. Bodies are read before a
    /// request takes one of [`Self::max_requests_in_flight`], so one that never comes holds no
    /// place.
    pub body_timeout: Duration,
    /// Longest a request may take, body, place and answer: 408 past it. Below the
    /// configuration's `timeoutSeconds: 5`, after which the API server stops waiting and admits
    /// the pod under `failurePolicy: Ignore`.
    pub request_timeout: Duration,
    /// Connections served at once (idle ones are cheap; this bounds sockets and tasks);
    /// further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one peer address may hold at once; more are closed at once, so a single pod
    /// keeping connections alive cannot take the places the API server needs. The API server
    /// itself calls from one address (or a few, behind konnectivity or SNAT), one connection per
    /// review in flight (each closed after its answer), and a connection it is refused admits
    /// the pod without its sidecar under `failurePolicy: Ignore`: the share is a quarter of
    /// `max_connections`, far above its concurrency at any pod-creation rate the reviews keep up
    /// with, while four addresses are still needed to take every place.
    pub max_connections_per_peer: usize,
    /// Requests answered at once, across connections, their bodies read; more wait within
    /// their request timeout.
    pub max_requests_in_flight: usize,
    /// Bytes of bodies over [`UNBUDGETED_BODY`] held at once, taken by each request's declared
    /// `Content-Length` before its body is read and given back once it is answered (a body
    /// larger than the whole budget takes all of it); more wait within the body timeout.
    pub max_body_bytes_in_flight: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(4),
            max_connections: 1024,
            max_connections_per_peer: 256,
            max_requests_in_flight: 16,
            max_body_bytes_in_flight: 8 * MAX_BODY,
        }
    }
}

/// Connections held per peer address ([`ServeLimits::max_connections_per_peer`]).
#[derive(Clone, Default)]
struct PeerCount(Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>);

/// One connection counted against its peer until dropped.
struct PeerSlot {
    count: PeerCount,
    ip: std::net::IpAddr,
}

impl PeerCount {
    /// A slot for `ip`, or `None` when it holds `max` already.
    fn take(&self, ip: std::net::IpAddr, max: usize) -> Option<PeerSlot> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = map.entry(ip).or_default();
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(PeerSlot {
            count: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self
            .count
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = map.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Errors of the TLS setup.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key PEM does not parse.
    #[error("{what}: {message}")]
    Pem {
        /// Which PEM.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// rustls refused the key or configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle (`--webhook-client-ca`) holds no usable CA.
    #[error("webhook client CA: {0}")]
    ClientCa(String),
    /// Binding or accepting failed.
    #[error("listening on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The serving certificate, replaceable while the server runs (rotation): every new handshake
/// gets the current one.
#[derive(Debug, Default)]
pub struct ReloadingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ReloadingCert {
    /// Replace the certificate with `cert_pem` (chain, leaf first) and `key_pem`.
    pub fn set_pem(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Pem {
                    what: "certificate",
                    message: e.to_string(),
                })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                message: "no CERTIFICATE block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "key",
            message: e.to_string(),
        })?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Some(certified);
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// Whether a failed handshake refused the client's certificate (none presented, or one the
/// client CAs did not issue).
fn refused_client_certificate(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_))
    )
}

/// At most one warning a minute for refused client certificates: a scanner must not flood the
/// log, and one line a minute shows a misconfigured API server.
fn client_refusal_due() -> bool {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    now >= last + 60
        && LAST
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
}

/// The CA certificates of a PEM bundle (`--webhook-client-ca`): at least one, every block a
/// certificate.
pub fn client_cas_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    if cas.is_empty() {
        return Err(TlsError::ClientCa("no CERTIFICATE block".into()));
    }
    Ok(cas)
}

/// A rustls server configuration (TLS 1.2 and 1.3, ring, HTTP/1.1) serving `cert`. With
/// `client_cas`, only clients presenting a certificate that chains to one of them complete the
/// handshake (the API server's admission client certificate): no one else can post reviews.
pub fn tls_config(
    cert: Arc<ReloadingCert>,
    client_cas: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_cas {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                roots.add(ca.clone())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Why a FaceKeyDeployment could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The API server answered with an error, or could not be reached.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The API server did not answer within [`LOOKUP_TIMEOUT`].
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// What a lookup of a FaceKeyDeployment found.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// The resource, decoded.
    Found(Arc<FaceKeyDeployment>),
    /// The resource exists, but this operator cannot decode its spec.
    Undecodable(Arc<Undecodable>),
    /// No such resource.
    Missing,
}

impl Lookup {
    /// The decoded resource, if any.
    pub fn found(&self) -> Option<&FaceKeyDeployment> {
        match self {
            Lookup::Found(f) => Some(f),
            _ => None,
        }
    }
}

/// Where the webhook finds FaceKeyDeployments.
#[derive(Clone)]
pub enum Resources {
    /// The operator's watch cache; until it has synced (`synced`), a GET through `client`.
    Watched {
        /// The reflector's store.
        store: Store<FaceKeyDeployment>,
        /// The watch's decoder, which knows the resources left out of `store` as undecodable.
        decoder: Arc<std::sync::Mutex<Decoder>>,
        /// Set once the store has its first full list.
        synced: Arc<AtomicBool>,
        /// For lookups before that.
        client: Client,
    },
    /// A fixed set (tests, benchmark), keyed by `(namespace, name)`.
    Fixed(Arc<HashMap<(String, String), Arc<FaceKeyDeployment>>>),
}

impl Resources {
    /// A fixed set of resources.
    pub fn fixed(items: impl IntoIterator<Item = FaceKeyDeployment>) -> Self {
        Resources::Fixed(Arc::new(
            items
                .into_iter()
                .map(|f| {
                    let key = (
                        f.metadata.namespace.clone().unwrap_or_default(),
                        f.metadata.name.clone().unwrap_or_default(),
                    );
                    (key, Arc::new(f))
                })
                .collect(),
        ))
    }

    /// The FaceKeyDeployment `namespace/name`: decoded, undecodable, or missing. Before the
    /// cache has synced, one untyped GET decoded alone (one unreadable resource must not fail
    /// the lookups of the others, nor the cache's list). A name no FaceKeyDeployment can have
    /// is missing without a lookup: it would otherwise go into the GET's path as it is, and
    /// `verifier/status` would read resource `verifier`. The GET is given [`LOOKUP_TIMEOUT`].
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Lookup, LookupError> {
        if crate::validate::validate_name(name).is_err() {
            return Ok(Lookup::Missing);
        }
        match self {
            Resources::Fixed(map) => Ok(map
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
                .map_or(Lookup::Missing, Lookup::Found)),
            Resources::Watched {
                store,
                decoder,
                synced,
                client,
            } => {
                if synced.load(Ordering::Acquire) {
                    if let Some(f) = store.get(&ObjectRef::new(name).within(namespace)) {
                        return Ok(Lookup::Found(f));
                    }
                    let undecodable = decoder
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .undecodable(namespace, name);
                    return Ok(undecodable.map_or(Lookup::Missing, Lookup::Undecodable));
                }
                let api = crate::decode::api(client.clone(), Some(namespace));
                let found = tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(name))
                    .await
                    .map_err(|_| LookupError::TimedOut(LOOKUP_TIMEOUT))??;
                Ok(match found {
                    None => Lookup::Missing,
                    Some(obj) => match decode_with(obj, UnknownFields::Ignore).resource() {
                        Ok(f) => Lookup::Found(Arc::new(f)),
                        Err(u) => Lookup::Undecodable(Arc::from(u)),
                    },
                })
            }
        }
    }
}

/// Where the namespaced objects that bound a pod (LimitRanges, ResourceQuotas) come from.
#[derive(Clone, Default)]
pub enum Bounds<K: kube::Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// None known (the check is left to the API server).
    #[default]
    None,
    /// A fixed set (tests, benchmark).
    Fixed(Arc<Vec<K>>),
    /// The operator's watch cache of every one it may see, and whether its first list has
    /// arrived.
    Watched(Store<K>, Arc<std::sync::atomic::AtomicBool>),
}

impl<K: kube::Resource + Clone + 'static> Bounds<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// Whether what is known is the whole set: a watch cache before its first list holds
    /// nothing or part of it, and a check against part (a quota judged without the
    /// LimitRange defaults that fill the sidecar) could refuse what the API server admits.
    pub fn ready(&self) -> bool {
        match self {
            Bounds::None | Bounds::Fixed(_) => true,
            Bounds::Watched(_, synced) => synced.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// The objects of `namespace`.
    pub fn of(&self, namespace: &str) -> Vec<K> {
        let mine = |r: &K| r.meta().namespace.as_deref() == Some(namespace);
        match self {
            Bounds::None => Vec::new(),
            Bounds::Fixed(all) => all.iter().filter(|r| mine(r)).cloned().collect(),
            Bounds::Watched(store, _) => store
                .state()
                .iter()
                .filter(|r| mine(r))
                .map(|r| (**r).clone())
                .collect(),
        }
    }
}

/// Where the LimitRanges of a pod's namespace come from.
pub type LimitRanges = Bounds<k8s_openapi::api::core::v1::LimitRange>;

/// Where the ResourceQuotas of a pod's namespace come from.
pub type ResourceQuotas = Bounds<k8s_openapi::api::core::v1::ResourceQuota>;

/// State of the webhook handler.
#[derive(Clone)]
pub struct WebhookState {
    /// The LimitRanges the sidecar must fit ([`super::limit_range`]).
    pub limit_ranges: LimitRanges,
    /// The ResourceQuotas the pod with the sidecar must fit ([`super::quota`]).
    pub resource_quotas: ResourceQuotas,
    /// Where FaceKeyDeployments are looked up.
    pub resources: Resources,
    /// The operator's injection settings.
    pub options: InjectOptions,
    /// Where Events about pods that did not get their sidecar go (None: not published).
    pub events: Option<EventSink>,
    /// Where every answer is counted and timed (`facekey_operator_admission_*`).
    pub metrics: Metrics,
    /// The one namespace this operator serves (`--namespace`), or all. Pods of another
    /// namespace are admitted unchanged: another operator may serve it, and the resource they
    /// name is not in this one's cache (refusing them as unknown would block them).
    pub scope: Option<String>,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn mutate(State(state): State<WebhookState>, body: Bytes) -> Response {
    let started = Instant::now();
    let (response, outcome, reason) = answer(&state, &body).await;
    AdmissionAnswered {
        outcome,
        reason,
        seconds: started.elapsed().as_secs_f64(),
    }
    .emit(&state.metrics);
    response
}

/// The answer to one review, with its outcome and reason for the metrics.
async fn answer(state: &WebhookState, body: &[u8]) -> (Response, Outcome, &'static str) {
    let req = match review::parse(body) {
        Ok(r) => r,
        Err(e) => {
            let invalid = kube::core::admission::AdmissionResponse::invalid(e.to_string());
            let response = match serde_json::to_vec(&invalid.into_review()) {
                Ok(b) => json_response(StatusCode::BAD_REQUEST, b),
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            };
            return (response, Outcome::Error, "InvalidReview");
        }
    };
    // A pod of a namespace this operator does not serve is not its to judge: admitted
    // unchanged (another operator's webhook may inject it), never refused as unknown.
    let out_of_scope = state.scope.as_ref().is_some_and(|ns| *ns != req.namespace);
    let mut failed = None;
    let lookup = match req.resource.as_deref().filter(|_| !out_of_scope) {
        None => Lookup::Missing,
        Some(name) => match state.resources.get(&req.namespace, name).await {
            Ok(f) => f,
            Err(e) => {
                // Whether the resource exists is not known: answered as an unknown one is, so
                // the operator's --sidecar-unknown-resource holds (LookupFailed).
                warn!(namespace = %req.namespace, resource = name, error = %e, "looking up the FaceKeyDeployment failed");
                failed = Some(e);
                Lookup::Missing
            }
        },
    };
    let fkd = lookup.found();
    let decision = if out_of_scope {
        super::inject::Decision::NotRequested
    } else {
        let decision = review::decide(&req, fkd, state.options);
        let decision = match (&lookup, &failed) {
            (Lookup::Undecodable(u), _) => super::inject::undecodable(decision, &req.namespace, u),
            (_, Some(e)) => super::inject::lookup_failed(decision, &req.namespace, &e.to_string()),
            _ => decision,
        };
        // Both caches whole, or neither check: the API server has the last word meanwhile.
        if state.limit_ranges.ready() && state.resource_quotas.ready() {
            super::inject::within_namespace_bounds(
                decision,
                req.request.object.as_ref(),
                &req.namespace,
                fkd,
                &state.limit_ranges.of(&req.namespace),
                &state.resource_quotas.of(&req.namespace),
            )
        } else {
            decision
        }
    };
    if let Some(sink) = &state.events
        && !req.request.dry_run
    {
        // An undecodable resource's placeholder carries its uid, so the Event lists under it.
        let regarding = match &lookup {
            Lookup::Undecodable(u) => Some(&u.placeholder),
            _ => fkd,
        };
        sink.report(&req, regarding, &decision);
    }
    let (mut outcome, mut reason) = Outcome::of(&decision);
    let review = match review::respond(&req, &decision) {
        Ok(r) => r,
        Err(e) => {
            (outcome, reason) = (Outcome::Error, "AnswerFailed");
            kube::core::admission::AdmissionResponse::from(&req.request)
                .deny(e.to_string())
                .into_review()
        }
    };
    match review::to_wire(&review)
        .and_then(|v| serde_json::to_vec(&v).map_err(|e| review::ReviewError::Patch(e.to_string())))
    {
        Ok(b) => (json_response(StatusCode::OK, b), outcome, reason),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Outcome::Error,
            "AnswerFailed",
        ),
    }
}

/// The webhook's router (exposed for tests and the benchmark).
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// `req` with its body read whole within `within`, and the part of the body budget (`budget`
/// bytes in all) it holds until answered: refused at once without a `Content-Length` (411) or
/// with one over [`MAX_BODY`] (413); 408 when the body, or the budget a body over
/// [`UNBUDGETED_BODY`] takes by its declared length, does not come in time.
async fn read_body(
    req: Request<Incoming>,
    body_bytes: &Arc<Semaphore>,
    budget: usize,
    within: Duration,
) -> Result<(Request<axum::body::Body>, Option<OwnedSemaphorePermit>), StatusCode> {
    use hyper::body::Body as _;
    // Exact for a Content-Length, and for a request with neither it nor Transfer-Encoding (no
    // body); unknown for a chunked one.
    let declared = req.body().size_hint().exact();
    let announced = req
        .headers()
        .contains_key(axum::http::header::CONTENT_LENGTH);
    let declared = match declared.map(usize::try_from) {
        None => return Err(StatusCode::LENGTH_REQUIRED),
        Some(Ok(0)) if !announced && req.method() == axum::http::Method::POST => {
            return Err(StatusCode::LENGTH_REQUIRED);
        }
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(_) => return Err(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let (parts, body) = req.into_parts();
    let read = async {
        let held = if declared > UNBUDGETED_BODY {
            let wanted = u32::try_from(declared.min(budget)).unwrap_or(u32::MAX);
            let permit = Arc::clone(body_bytes)
                .acquire_many_owned(wanted)
                .await
                .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
            Some(permit)
        } else {
            None
        };
        let bytes = axum::body::to_bytes(axum::body::Body::new(body), MAX_BODY)
            .await
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        Ok::<_, StatusCode>((bytes, held))
    };
    let (bytes, held) = tokio::time::timeout(within, read)
        .await
        .map_err(|_| StatusCode::REQUEST_TIMEOUT)??;
    Ok((
        Request::from_parts(parts, axum::body::Body::from(bytes)),
        held,
    ))
}

/// Bind `addr` for [`serve_tls`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TlsError> {
    facekey_net::listen_tokio(addr).map_err(|source| TlsError::Io {
        addr: addr.to_string(),
        source,
    })
}

/// Serve `router` over TLS on `listener` until `shutdown` resolves, with the default
/// [`ServeLimits`].
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_tls_with(listener, tls, router, ServeLimits::default(), shutdown).await;
}

/// [`serve_tls`] with the given limits.
pub async fn serve_tls_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let in_flight = Arc::new(Semaphore::new(limits.max_requests_in_flight.max(1)));
    let budget = limits
        .max_body_bytes_in_flight
        .clamp(1, Semaphore::MAX_PERMITS);
    let body_bytes = Arc::new(Semaphore::new(budget));
    let peers = PeerCount::default();
    tokio::pin!(shutdown);
    loop {
        // A connection is accepted only with a permit: past the bound, clients wait in the
        // backlog instead of each holding a task and buffers.
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = peers.take(peer.ip(), limits.max_connections_per_peer.max(1)) else {
            debug!(%peer, "webhook connection refused: the peer holds its share of connections");
            continue;
        };
        // Answers are small: send them at once (no Nagle delay waiting for the client's ACK).
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(%peer, error = %e, "TCP_NODELAY not set");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        let (in_flight, body_bytes) = (Arc::clone(&in_flight), Arc::clone(&body_bytes));
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (router, in_flight) = (router.clone(), Arc::clone(&in_flight));
            let body_bytes = Arc::clone(&body_bytes);
            async move {
                // The body is read first, under its own deadline, and only then a place taken:
                // a client announcing a body it never sends holds no place. The wait for a
                // place counts against the request's own timeout.
                let answer = tokio::time::timeout(limits.request_timeout, async move {
                    let (req, _bytes) =
                        match read_body(req, &body_bytes, budget, limits.body_timeout).await {
                            Ok(read) => read,
                            Err(status) => {
                                debug!(%peer, %status, "webhook request body refused");
                                return Ok(status.into_response());
                            }
                        };
                    let _place = in_flight.acquire_owned().await;
                    router.oneshot(req).await
                })
                .await;
                answer.unwrap_or_else(|_| {
                    debug!(%peer, "webhook request timed out");
                    Ok::<_, Infallible>(StatusCode::REQUEST_TIMEOUT.into_response())
                })
            }
        });
        tokio::spawn(async move {
            let (_permit, _slot) = (permit, slot);
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        if refused_client_certificate(&e) && client_refusal_due() {
                            warn!(
                                %peer, error = %e,
                                "a webhook client was refused for its client certificate \
                                 (--webhook-client-ca); if it is the API server, its \
                                 AdmissionConfiguration sends none or one of another CA, and pods \
                                 are admitted without their sidecar (failurePolicy Ignore)"
                            );
                        } else {
                            debug!(%peer, error = %e, "webhook TLS handshake failed");
                        }
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "webhook TLS handshake timed out");
                        return;
                    }
                };
            // One request per connection: an idle keep-alive connection would be closed by the
            // header timeout while the API server, which keeps them 90 s, may be sending a review
            // on it (lost: a POST is not retried). A handshake per review costs ~1 ms.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(false)
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}
